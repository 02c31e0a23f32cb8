//! The RA's refusals as sentences a citizen can act on. The API names the
//! field and the rule for programs; the page says what happened and what
//! to do next, in the citizen's language. The mapping reads the RA's
//! refusal (its field, and the words of its rule where the field is
//! shared), so a refusal it does not know still gets the generic sentence
//! with the rule beside it, never raw JSON.

use axum::http::StatusCode;
use muhr_ra::citizen::service::CitizenError;

/// What the page is told about a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status, as the API would answer.
    pub status: StatusCode,
    /// The field and rule, as the API names them.
    pub field: String,
    /// See `field`.
    pub rule: String,
    /// The message key of the sentence.
    pub sentence: &'static str,
    /// Seconds to wait, for a rate limit.
    pub retry_after: Option<u64>,
}

/// The sentence for a refusal of the RA.
pub fn of(e: &CitizenError) -> Refusal {
    let r = |status, field: &str, rule: &str, sentence| Refusal {
        status,
        field: field.to_string(),
        rule: rule.to_string(),
        sentence,
        retry_after: None,
    };
    match e {
        CitizenError::Refused(f) => {
            let sentence = if f.rule.contains("deceased") {
                "refused_deceased"
            } else if f.field == "csr" && f.rule.contains("purpose") {
                "refused_key_purpose"
            } else if f.field == "reason" {
                "refused_state"
            } else {
                "refused_generic"
            };
            r(
                StatusCode::UNPROCESSABLE_ENTITY,
                &f.field,
                &f.rule,
                sentence,
            )
        }
        CitizenError::NotFound(why) => r(StatusCode::NOT_FOUND, "serial", why, "refused_not_yours"),
        CitizenError::Conflict(why) => {
            let sentence = if why.contains("ID token has already been used") {
                "refused_login_again"
            } else {
                "refused_state"
            };
            r(StatusCode::CONFLICT, "-", why, sentence)
        }
        CitizenError::Forbidden(why) => {
            let sentence = if why.contains("renewals in a row") {
                "refused_renewals_used"
            } else {
                "refused_generic"
            };
            r(StatusCode::FORBIDDEN, "signature", why, sentence)
        }
        CitizenError::TooMany(wait) => Refusal {
            retry_after: Some(wait.as_secs() + 1),
            ..r(
                StatusCode::TOO_MANY_REQUESTS,
                "-",
                &format!("too many requests; retry in {} s", wait.as_secs() + 1),
                "refused_rate_limit",
            )
        },
        CitizenError::Unavailable(why) => {
            tracing::warn!(error = %why, "portal request: unavailable");
            Refusal {
                retry_after: Some(5),
                ..r(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "-",
                    "temporarily unavailable; retry later",
                    "unavailable",
                )
            }
        }
        CitizenError::Internal(why) => {
            tracing::error!(error = %why, "portal request failed");
            r(
                StatusCode::INTERNAL_SERVER_ERROR,
                "-",
                "internal error; retry",
                "unavailable",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(field: &str, rule: &str) -> CitizenError {
        CitizenError::Refused(muhr_ca::FieldError {
            field: field.into(),
            rule: rule.into(),
        })
    }

    #[test]
    fn each_refusal_the_ra_gives_has_its_sentence() {
        let cases = [
            (
                refused("token.pinfl", "the population registry records this person as deceased"),
                "refused_deceased",
            ),
            (
                refused("csr", "this key already holds a individual-auth certificate (serial 0A): each purpose needs its own key"),
                "refused_key_purpose",
            ),
            (
                CitizenError::Conflict("this ID token has already been used to issue a certificate: log in to the identity system again for another".into()),
                "refused_login_again",
            ),
            (
                CitizenError::Forbidden("certificate 0A is already the result of 2 renewals in a row: authenticate with the identity system and request a new certificate".into()),
                "refused_renewals_used",
            ),
            (
                CitizenError::TooMany(std::time::Duration::from_secs(7)),
                "refused_rate_limit",
            ),
            (CitizenError::NotFound("you hold no certificate with serial 0A".into()), "refused_not_yours"),
            (CitizenError::Unavailable("database".into()), "unavailable"),
            (refused("profile", "one of individual-auth"), "refused_generic"),
        ];
        for (e, key) in cases {
            assert_eq!(of(&e).sentence, key, "{e:?}");
        }
        assert_eq!(
            of(&CitizenError::TooMany(std::time::Duration::from_secs(7))).retry_after,
            Some(8)
        );
    }
}

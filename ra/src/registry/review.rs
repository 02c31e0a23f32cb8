//! After a name change's grace period: the person's certificates that still
//! name them otherwise are revoked (`affiliationChanged`), against the
//! names of the newest change (a change reverted in the meantime revokes
//! nothing). Run by every node; a review is ended by one transaction that
//! deletes it, so two nodes never both act on it.

use der::Decode;
use muhr_store::{AuditEvent, StoreError};
use serde_json::json;
use x509_cert::Certificate;

use super::apply::RegistryEvents;
use muhr_store::notices::{NewNotice, NoticeKind};
use muhr_store::registry_events::NameReview;

/// RFC 5280: the subject's name or other information changed.
const AFFILIATION_CHANGED: i64 = 3;

/// Surname (2.5.4.4), name (2.5.4.41), givenName (2.5.4.42), commonName (2.5.4.3).
const SURNAME: &str = "2.5.4.4";
const NAME: &str = "2.5.4.41";
const GIVEN_NAME: &str = "2.5.4.42";
const COMMON_NAME: &str = "2.5.4.3";

/// A review's result.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reviewed {
    /// Reviews ended.
    pub reviews: usize,
    /// Certificates revoked.
    pub revoked: Vec<String>,
}

impl RegistryEvents {
    /// Ends the name reviews due at `now` (Unix seconds), at most `limit`.
    pub async fn review_names(&self, now: i64, limit: i64) -> Result<Reviewed, StoreError> {
        let mut done = Reviewed::default();
        for review in self.store().due_name_reviews(now, limit).await? {
            let mut stale = Vec::new();
            let summaries = self.store().certificates_of_person(&review.pinfl).await?;
            let bytes = self
                .store()
                .certificate_bytes_of_person(&review.pinfl)
                .await?;
            for s in summaries
                .iter()
                .filter(|s| s.status == "issued" && s.revocation != "revoked" && s.not_after >= now)
            {
                let Some((_, _, _, der)) = bytes.iter().find(|b| b.0 == s.serial && b.2) else {
                    continue;
                };
                if names_differ(der, &review) {
                    stale.push(s.serial.clone());
                }
            }
            let refs: Vec<&str> = stale.iter().map(String::as_str).collect();
            let event = AuditEvent {
                actor: "ra:registry".into(),
                action: "registry.name_review".into(),
                object: format!("registry-event/{}", review.event),
                details: json!({ "pinfl": review.pinfl, "revoked": stale, "reason": "affiliationChanged" }),
            };
            if let Some(revoked) = self
                .store()
                .finish_name_review(&review, &refs, AFFILIATION_CHANGED, &event, |serial| {
                    NewNotice {
                        key: format!("registry:{}:{serial}", review.event),
                        pinfl: review.pinfl.clone(),
                        serial: Some(serial.to_string()),
                        kind: NoticeKind::Revoked,
                        reason: Some("affiliationChanged".into()),
                        on_date: super::decide::utc_date(now),
                    }
                })
                .await?
            {
                done.reviews += 1;
                done.revoked.extend(revoked);
            }
        }
        Ok(done)
    }
}

/// Whether a certificate names the person otherwise than `review`: any of
/// its surname, name, givenName or commonName attributes differs from the
/// new names, ignoring case (a name written in capitals is the same name).
/// A certificate that does not parse is left alone and logged.
pub fn names_differ(der: &[u8], review: &NameReview) -> bool {
    let cert = match Certificate::from_der(der) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "stored certificate does not parse; left to operators");
            return false;
        }
    };
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let full = norm(&format!(
        "{} {} {}",
        review.surname,
        review.given_name,
        review.patronymic.as_deref().unwrap_or("")
    ));
    let surname = norm(&review.surname);
    let given = norm(&review.given_name);
    for rdn in cert.tbs_certificate().subject().iter_rdn() {
        for atv in rdn.iter() {
            let Some(value) = muhr_pkix::dn_text::value_text(&atv.value) else {
                continue;
            };
            let value = norm(value);
            let expected = match atv.oid.to_string().as_str() {
                SURNAME => &surname,
                NAME | GIVEN_NAME => &given,
                COMMON_NAME => &full,
                _ => continue,
            };
            if &value != expected {
                return true;
            }
        }
    }
    false
}

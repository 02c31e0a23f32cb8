//! Sessions: a random cookie whose SHA-256 names a row in the database
//! (so every node sees a logout at once, and a copy of the table opens
//! nothing), a fixed lifetime, and a CSRF token that every state-changing
//! request must echo.

use axum::http::{HeaderMap, HeaderValue, header};
use muhr_ra::citizen::oidc::Citizen;

/// The session cookie's name: `__Host-` when Secure, which a browser
/// accepts only from https, for the whole host, and never from a subdomain.
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-muhr_session"
    } else {
        "muhr_session"
    }
}

/// The pre-login cookie: binds the callback to the browser that started
/// the login (SameSite=Lax, as the provider's redirect back is a cross-site
/// navigation that a Strict cookie would not follow).
pub fn login_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-muhr_login"
    } else {
        "muhr_login"
    }
}

/// A cookie's value from the request, if sent once (a repeated name is
/// ignored: it is what a cookie-tossing attacker would send).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=')
                && k == name
            {
                if found.is_some() {
                    return None;
                }
                found = Some(val.to_string());
            }
        }
    }
    found
}

/// A `Set-Cookie` value: HttpOnly, Path=/, the given SameSite and lifetime
/// (0: delete), Secure when `secure`.
pub fn set_cookie(
    name: &str,
    value: &str,
    same_site: &str,
    max_age: i64,
    secure: bool,
) -> HeaderValue {
    let mut c =
        format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age}");
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// SHA-256 hex of a secret the browser holds: what the database keeps.
pub fn digest(secret: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        secret.as_bytes(),
    ))
}

/// Constant-time equality of two secrets.
pub fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// A live session, as a handler sees it.
#[derive(Clone, Debug)]
pub struct Live {
    /// SHA-256 of the cookie, the session's key.
    pub id_hash: String,
    /// Who logged in.
    pub citizen: Citizen,
    /// The CSRF token the page carries.
    pub csrf: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The session the request's cookie names, if live.
pub async fn find(
    store: &muhr_store::Store,
    headers: &HeaderMap,
    secure: bool,
) -> Result<Option<Live>, muhr_store::StoreError> {
    let Some(id) = cookie(headers, session_cookie_name(secure)) else {
        return Ok(None);
    };
    if id.len() > 128 {
        return Ok(None);
    }
    let id_hash = digest(&id);
    let Some(s) = store.portal_session(&id_hash).await? else {
        return Ok(None);
    };
    match serde_json::from_str::<Citizen>(&s.citizen) {
        Ok(citizen) => Ok(Some(Live {
            id_hash,
            citizen,
            csrf: s.csrf,
            expires_at: s.expires_at,
        })),
        Err(e) => {
            tracing::error!(error = %e, "portal: a session's identity does not read back");
            Ok(None)
        }
    }
}

/// Whether a state-changing request carries this session's CSRF token
/// (header `X-CSRF-Token` for the page's calls, or the form's `csrf`
/// field) and was not sent by another site (`Sec-Fetch-Site`, when the
/// browser says).
pub fn csrf_ok(live: &Live, headers: &HeaderMap, form_token: Option<&str>) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .or(form_token);
    sent.is_some_and(|t| same(t, &live.csrf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tossed_duplicate_cookie_is_ignored() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; muhr_session=x; b=2".parse().unwrap());
        assert_eq!(cookie(&h, "muhr_session").as_deref(), Some("x"));
        h.append(header::COOKIE, "muhr_session=attacker".parse().unwrap());
        assert_eq!(cookie(&h, "muhr_session"), None);
    }

    #[test]
    fn csrf_needs_the_token_and_a_same_origin_request() {
        let live = Live {
            id_hash: "h".into(),
            citizen: serde_json::from_value(serde_json::json!({
                "subject": "s", "pinfl": "31505851234567", "surname": "A", "given_name": "B",
                "patronymic": null, "tin": null, "birth_date": null, "assurance": "high",
                "token": null
            }))
            .unwrap(),
            csrf: "token-1".into(),
            expires_at: 0,
        };
        let mut h = HeaderMap::new();
        assert!(!csrf_ok(&live, &h, None), "no token");
        assert!(
            !csrf_ok(&live, &h, Some("token-2")),
            "another session's token"
        );
        assert!(csrf_ok(&live, &h, Some("token-1")));
        h.insert("x-csrf-token", "token-1".parse().unwrap());
        assert!(csrf_ok(&live, &h, None));
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(
            !csrf_ok(&live, &h, None),
            "a cross-site request with a leaked token"
        );
    }
}

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
    /// Who logged in, as the identity provider's signature on the login's
    /// ID token says (checked again for this request).
    pub citizen: Citizen,
    /// The login's ID token and nonce: issuance checks them again, now.
    pub login: Login,
    /// The CSRF token the page carries.
    pub csrf: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// What a session keeps of its login, sealed in the database.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Login {
    /// The ID token as the provider issued it.
    pub id_token: String,
    /// The nonce the login sent.
    pub nonce: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Login { .. }")
    }
}

/// The AES-256-GCM key of one session: derived from the cookie's value,
/// which only the browser holds (the database keeps its SHA-256, another
/// derivation).
fn sealing_key(cookie_value: &str) -> aws_lc_rs::aead::LessSafeKey {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"muhr portal session sealing key v1\0");
    ctx.update(cookie_value.as_bytes());
    let key = ctx.finish();
    // A 32-byte key always makes an AES-256 key.
    let unbound = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, key.as_ref())
        .unwrap_or_else(|_| unreachable!("a SHA-256 digest is an AES-256 key"));
    aws_lc_rs::aead::LessSafeKey::new(unbound)
}

fn aad(pinfl: &str) -> String {
    format!("portal_sessions.sealed|{pinfl}")
}

/// Seals `login` for the session whose cookie is `cookie_value`, bound to
/// the person's PINFL (the row's `pinfl` column).
pub fn seal(cookie_value: &str, pinfl: &str, login: &Login) -> Result<String, String> {
    use base64::Engine;
    let mut nonce = [0u8; 12];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "random generator failed".to_string())?;
    let mut data = serde_json::to_vec(login).map_err(|e| e.to_string())?;
    sealing_key(cookie_value)
        .seal_in_place_append_tag(
            aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
            aws_lc_rs::aead::Aad::from(aad(pinfl).as_bytes()),
            &mut data,
        )
        .map_err(|_| "sealing failed".to_string())?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

/// Opens what [`seal`] made, with the same cookie and PINFL; None for
/// anything else.
pub fn open(cookie_value: &str, pinfl: &str, sealed: &str) -> Option<Login> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .ok()?;
    if raw.len() < 12 + 16 {
        return None;
    }
    let (nonce, data) = raw.split_at(12);
    let mut data = data.to_vec();
    let plain = sealing_key(cookie_value)
        .open_in_place(
            aws_lc_rs::aead::Nonce::try_assume_unique_for_key(nonce).ok()?,
            aws_lc_rs::aead::Aad::from(aad(pinfl).as_bytes()),
            &mut data,
        )
        .ok()?;
    serde_json::from_slice(plain).ok()
}

/// `iat` and `auth_time` of a JWT, read without checking it (the caller
/// checks the signature over exactly these claims next).
fn token_times(token: &str) -> Option<(i64, i64)> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let n = |k: &str| v.get(k).and_then(|x| x.as_f64()).map(|f| f as i64);
    Some((n("iat")?, n("auth_time")?))
}

/// The session row the request's cookie names, live in the database (not
/// ended, not expired), without checking its login: for logout, which must
/// end a session even while the provider's keys are away.
pub async fn row(
    store: &muhr_store::Store,
    headers: &HeaderMap,
    secure: bool,
) -> Result<Option<(String, muhr_store::portal::Session)>, muhr_store::StoreError> {
    let Some(id) = cookie(headers, session_cookie_name(secure)) else {
        return Ok(None);
    };
    if id.len() > 128 {
        return Ok(None);
    }
    let id_hash = digest(&id);
    Ok(store.portal_session(&id_hash).await?.map(|s| (id_hash, s)))
}

/// The session the request's cookie names, if live. Its identity is the
/// identity provider's word, never the row's: the sealed login must open
/// with the cookie (and the row's PINFL), its ID token must carry the
/// provider's signature and this login's nonce, checked as of the token's
/// own issue time, and the session ends `session_minutes` after the
/// token's `iat` and `auth_time` whatever the row says. So a row written
/// by hand needs a genuine ID token younger than that. A person the
/// registry records as deceased has no session.
pub async fn find(
    citizens: &muhr_ra::citizen::service::Citizens,
    headers: &HeaderMap,
    secure: bool,
    session_seconds: i64,
) -> Result<Option<Live>, String> {
    let store = citizens.ca().store();
    let Some((id_hash, s)) = row(store, headers, secure)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let Some(id) = cookie(headers, session_cookie_name(secure)) else {
        return Ok(None);
    };
    let Some(login) = open(&id, &s.pinfl, &s.sealed) else {
        tracing::warn!("portal: a session row does not open with its cookie");
        return Ok(None);
    };
    let Some((iat, auth_time)) = token_times(&login.id_token) else {
        return Ok(None);
    };
    let leeway = citizens.config().oidc.leeway_seconds as i64;
    if muhr_store::now_secs() > iat.min(auth_time).saturating_add(session_seconds + leeway) {
        return Ok(None);
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(iat.max(0) as u64);
    let citizen = match citizens
        .verifier
        .verify_login(&login.id_token, at, &login.nonce)
        .await
    {
        Ok(c) if c.pinfl == s.pinfl => c,
        Ok(_) => {
            tracing::warn!("portal: a session row names another person than its ID token");
            return Ok(None);
        }
        Err(muhr_ra::citizen::oidc::TokenError::Unavailable(why)) => return Err(why),
        Err(e) => {
            tracing::warn!(error = ?e, "portal: a session's ID token does not check out");
            return Ok(None);
        }
    };
    if !store
        .deaths(&[citizen.pinfl.as_str()])
        .await
        .map_err(|e| e.to_string())?
        .is_empty()
    {
        return Ok(None);
    }
    Ok(Some(Live {
        id_hash,
        citizen,
        login,
        csrf: s.csrf,
        expires_at: s.expires_at,
    }))
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
    fn a_sealed_login_opens_only_with_its_cookie() {
        let login = Login {
            id_token: "eyJ.a.b".into(),
            nonce: "n-1".into(),
        };
        let sealed = seal("cookie-1", "31505851234567", &login).unwrap();
        assert_eq!(
            open("cookie-1", "31505851234567", &sealed)
                .unwrap()
                .id_token,
            "eyJ.a.b"
        );
        assert!(
            open("cookie-2", "31505851234567", &sealed).is_none(),
            "another cookie"
        );
        assert!(
            open("cookie-1", "41505851234566", &sealed).is_none(),
            "the row's PINFL changed"
        );
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(
            open(
                "cookie-1",
                "31505851234567",
                std::str::from_utf8(&tampered).unwrap()
            )
            .is_none()
        );
        assert!(
            !sealed.contains("eyJ"),
            "the token is not readable in the row"
        );
    }

    #[test]
    fn csrf_needs_the_token_and_a_same_origin_request() {
        let live = Live {
            login: Login {
                id_token: String::new(),
                nonce: String::new(),
            },
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

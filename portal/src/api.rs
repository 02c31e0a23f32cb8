//! The calls the portal's page makes: the same acts as the citizens' JSON
//! API, authenticated by the session instead of a bearer token, each with
//! the session's CSRF token, and each refusal with its sentence.

// A refused call's answer is the error: built once per refusal, never copied.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use muhr_ca::revocation::Reason;
use muhr_ra::citizen::service::CitizenError;
use muhr_store::Transition;
use serde_json::json;

use crate::Portal;
use crate::i18n::Lang;
use crate::sentences::{self, Refusal};
use crate::session::{self, Live};

/// A refusal: the API's error object and the sentence for the page.
fn refusal(p: &Portal, lang: Lang, r: Refusal) -> Response {
    let mut resp = (
        r.status,
        Json(json!({
            "error": {"field": r.field, "rule": r.rule},
            "sentence": p.messages.get(lang, r.sentence),
        })),
    )
        .into_response();
    if let Some(s) = r.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

fn refused(
    p: &Portal,
    lang: Lang,
    status: StatusCode,
    field: &str,
    rule: &str,
    key: &'static str,
) -> Response {
    refusal(
        p,
        lang,
        Refusal {
            status,
            field: field.into(),
            rule: rule.into(),
            sentence: key,
            retry_after: None,
        },
    )
}

/// The session and its CSRF check, the address's rate limit, and a JSON
/// body: what every call needs before it acts.
async fn caller(
    p: &Portal,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(Live, Lang), Response> {
    let lang = Lang::of(headers);
    if let Err(e) = p.citizens.limit_address(&muhr_ra::citizen::http::rate_key(
        p.citizens.config().rate_limits.trust_forwarded_for,
        headers,
        Some(peer),
    )) {
        return Err(refusal(p, lang, sentences::of(&e)));
    }
    let live = match session::find(&p.citizens, headers, p.secure(), p.session_seconds()).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            return Err(refused(
                p,
                lang,
                StatusCode::UNAUTHORIZED,
                "session",
                "no live session: log in",
                "session_expired",
            ));
        }
        Err(e) => {
            return Err(refusal(
                p,
                lang,
                sentences::of(&CitizenError::Unavailable(e)),
            ));
        }
    };
    if !session::csrf_ok(&live, headers, None) {
        return Err(refused(
            p,
            lang,
            StatusCode::FORBIDDEN,
            "x-csrf-token",
            "the session's CSRF token is required (X-CSRF-Token), from this site",
            "forbidden",
        ));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            let t = t
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            t == "application/json"
        });
    if !json {
        return Err(refused(
            p,
            lang,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type",
            "application/json",
            "refused_generic",
        ));
    }
    Ok((live, lang))
}

fn body<T: serde::de::DeserializeOwned>(
    p: &Portal,
    lang: Lang,
    bytes: &Bytes,
) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(|e| {
        refused(
            p,
            lang,
            StatusCode::BAD_REQUEST,
            "body",
            &e.to_string(),
            "refused_generic",
        )
    })
}

fn certificate(
    p: &Portal,
    serial: &str,
    der: &[u8],
    status: StatusCode,
    extra: serde_json::Value,
) -> Response {
    let ca = p.citizens.ca();
    let mut v = json!({
        "serial": serial,
        "der": base64::engine::general_purpose::STANDARD.encode(der),
        "chain": [
            base64::engine::general_purpose::STANDARD.encode(&ca.issuing.der),
            base64::engine::general_purpose::STANDARD.encode(&ca.root.der),
        ],
    });
    if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    (status, Json(v)).into_response()
}

/// `POST /portal/api/certificates` `{csr, profile}`: issuance with the
/// identity of this session's login. One login issues one certificate (the
/// ID token is used once), and only while the ID token is current.
pub(crate) async fn issue(
    State(p): State<Arc<Portal>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let (live, lang) = match caller(&p, peer, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        csr: String,
        profile: String,
    }
    let b: Body = match body(&p, lang, &bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    // Issuance needs the login's ID token valid now, checked again by the
    // provider's keys: the session row alone never issues.
    let who = match p
        .citizens
        .verifier
        .verify_login(
            &live.login.id_token,
            std::time::SystemTime::now(),
            &live.login.nonce,
        )
        .await
    {
        Ok(w) if w.pinfl == live.citizen.pinfl => w,
        _ => {
            return refused(
                &p,
                lang,
                StatusCode::CONFLICT,
                "session",
                "the login's ID token is no longer current: log in again to be issued a certificate",
                "refused_login_again",
            );
        }
    };
    match p.citizens.issue(&who, &b.csr, &b.profile).await {
        Ok(c) => certificate(
            &p,
            &c.serial,
            &c.der,
            if c.replayed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            },
            json!({"profile": c.profile}),
        ),
        Err(e) => refusal(&p, lang, sentences::of(&e)),
    }
}

/// `POST /portal/api/certificates/{serial}/suspend`.
pub(crate) async fn suspend(
    State(p): State<Arc<Portal>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(serial): Path<String>,
) -> Response {
    let (live, lang) = match caller(&p, peer, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    changed(
        &p,
        lang,
        p.citizens
            .change(&live.citizen, &serial, Transition::Suspend)
            .await,
    )
}

/// Reasons a citizen may give, as the API allows them.
const CITIZEN_REASONS: [Reason; 4] = [
    Reason::Unspecified,
    Reason::KeyCompromise,
    Reason::Superseded,
    Reason::CessationOfOperation,
];

/// `POST /portal/api/certificates/{serial}/revoke` `{reason}`.
pub(crate) async fn revoke(
    State(p): State<Arc<Portal>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(serial): Path<String>,
    bytes: Bytes,
) -> Response {
    let (live, lang) = match caller(&p, peer, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        reason: String,
    }
    let b: Body = match body(&p, lang, &bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let reason = match b.reason.parse::<Reason>() {
        Ok(r) if CITIZEN_REASONS.contains(&r) => r,
        _ => {
            let names: Vec<&str> = CITIZEN_REASONS.iter().map(|r| r.name()).collect();
            return refused(
                &p,
                lang,
                StatusCode::UNPROCESSABLE_ENTITY,
                "reason",
                &format!("one of {}", names.join(", ")),
                "refused_generic",
            );
        }
    };
    changed(
        &p,
        lang,
        p.citizens
            .change(
                &live.citizen,
                &serial,
                Transition::Revoke {
                    reason: reason.code(),
                },
            )
            .await,
    )
}

fn changed(p: &Portal, lang: Lang, r: Result<muhr_store::Status, CitizenError>) -> Response {
    match r {
        Ok(s) => Json(json!({
            "serial": s.serial,
            "revocation": s.revocation,
            "reason": s.reason.and_then(Reason::from_code).map(|r| r.name()),
        }))
        .into_response(),
        Err(e) => refusal(p, lang, sentences::of(&e)),
    }
}

/// `POST /portal/api/renewal/challenge` `{serial}`: for one of this
/// person's own certificates.
pub(crate) async fn renewal_challenge(
    State(p): State<Arc<Portal>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let (live, lang) = match caller(&p, peer, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        serial: String,
    }
    let b: Body = match body(&p, lang, &bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let serial = b.serial.to_ascii_uppercase();
    let mine = match p.store().certificate_summary(&serial).await {
        Ok(s) => s.is_some_and(|s| s.pinfl.as_deref() == Some(live.citizen.pinfl.as_str())),
        Err(e) => {
            return refusal(
                &p,
                lang,
                sentences::of(&CitizenError::Unavailable(e.to_string())),
            );
        }
    };
    if !mine {
        return refusal(
            &p,
            lang,
            sentences::of(&CitizenError::NotFound(format!(
                "you hold no certificate with serial {serial}"
            ))),
        );
    }
    match p.citizens.renewal_challenge(&serial).await {
        Ok((challenge, expires_at)) => (
            StatusCode::CREATED,
            Json(json!({"challenge": challenge, "expires_at": expires_at})),
        )
            .into_response(),
        Err(e) => refusal(&p, lang, sentences::of(&e)),
    }
}

/// `POST /portal/api/renewal` `{signature}`: the CMC request the page
/// signed with the current key (base64 DER), as the API's renewal.
pub(crate) async fn renew(
    State(p): State<Arc<Portal>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let (live, lang) = match caller(&p, peer, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        signature: String,
    }
    let b: Body = match body(&p, lang, &bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let sig = match muhr_validation::cms::from_text(&b.signature) {
        Ok(s) => s,
        Err(rule) => {
            return refused(
                &p,
                lang,
                StatusCode::BAD_REQUEST,
                "signature",
                &rule,
                "refused_generic",
            );
        }
    };
    // Only a certificate of the session's person, and only by its own key
    // (the RA's rule).
    match p.citizens.renew_for(&live.citizen.pinfl, &sig).await {
        Ok(r) => certificate(
            &p,
            &r.certificate.serial,
            &r.certificate.der,
            if r.certificate.replayed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            },
            json!({"renewed": r.renewed, "renewals": r.renewals}),
        ),
        Err(e) => refusal(&p, lang, sentences::of(&e)),
    }
}

//! Relying parties' routes on the public listener: login challenges, login
//! by signature, signature verification, and the assertion keys.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use muhr_store::rp::RelyingParty;
use serde_json::json;

use crate::login::{Login, LoginError};
use crate::relying::{RelyingParties, RpError};
use muhr_http::answer::json_error;
use muhr_validation::trust::Problem;

/// What the relying parties' routes share; cloned per request (two `Arc`s).
#[derive(Clone)]
pub struct RpApi {
    /// Challenges and logins; its trust also serves signature verification.
    pub login: Arc<Login>,
    /// Authenticates the party behind each request and names the party of a TLS login.
    pub parties: Arc<RelyingParties>,
}

/// Largest document (a signed PDF, or a detached signature's content) a
/// verification request may carry: 20 MiB, a long contract with scanned
/// annexes. Documents relying parties verify are rarely larger, and the
/// limit bounds each request's memory (see [`MAX_VERIFY_BODY`]).
pub const MAX_VERIFY_DOCUMENT: usize = 20 << 20;

/// Largest verification request: the document in base64 (four bytes for
/// three) inside JSON, with 1 MiB for the signature and the JSON around it
/// (27.7 MiB). A PDF request then holds about 70 MiB at most: the body,
/// freed once parsed, or the document, plus one signature's copy of the
/// bytes it covers at a time (`pdf::signatures_one_by_one`) and the CMS
/// check's own copy of them.
pub const MAX_VERIFY_BODY: usize = MAX_VERIFY_DOCUMENT / 3 * 4 + (1 << 20);

/// The relying parties' routes of the public listener: challenges, login
/// by signature and signature verification, each behind HTTP Basic (401
/// with `WWW-Authenticate` without valid credentials), and the assertion
/// keys at `/.well-known/jwks.json`, open to anyone.
pub fn router(api: RpApi) -> Router {
    let login = Router::new()
        .route("/api/v1/auth/challenges", post(challenge))
        .route("/api/v1/auth/login", post(login))
        .layer(DefaultBodyLimit::max(64 << 10));
    let verify = Router::new()
        .route("/api/v1/signatures/verify", post(verify))
        .layer(DefaultBodyLimit::max(MAX_VERIFY_BODY));
    // The party is authenticated before its body's type is judged.
    login
        .merge(verify)
        .route_layer(middleware::from_fn(muhr_http::answer::require_json))
        .route_layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .route("/.well-known/jwks.json", get(jwks))
        .route_layer(middleware::from_fn_with_state(
            api.parties.store().clone(),
            muhr_http::answer::unavailable_not_internal,
        ))
        .with_state(api)
}

/// The login route of the mutual-TLS listener: the TLS client certificate
/// proves the person, the relying party's challenge names the party and
/// makes the login fresh. No relying-party credentials: the request comes
/// from the citizen's browser.
pub fn tls_router(api: RpApi) -> Router {
    Router::new()
        .route("/api/v1/auth/tls-login", post(tls_login))
        .route_layer(middleware::from_fn_with_state(
            4 << 10,
            muhr_http::answer::limit_body,
        ))
        .route_layer(middleware::from_fn(muhr_http::answer::require_json))
        .route_layer(middleware::from_fn_with_state(
            api.parties.store().clone(),
            muhr_http::answer::unavailable_not_internal,
        ))
        .layer(DefaultBodyLimit::max(4 << 10))
        .with_state(api)
}

async fn tls_login(
    State(api): State<RpApi>,
    peer: Option<Extension<muhr_http::clients::PeerCertificate>>,
    bytes: Bytes,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        challenge: String,
    }
    let Some(Extension(peer)) = peer else {
        return json_error(
            StatusCode::UNAUTHORIZED,
            "certificate",
            "a TLS client certificate is required",
        );
    };
    let b: Body = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "body", &e.to_string()),
    };
    let cert = match <x509_cert::Certificate as der::Decode>::from_der(&peer.0) {
        Ok(c) => c,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "certificate",
                &format!("the client certificate does not parse: {e}"),
            );
        }
    };
    logged_in(
        api.login
            .with_tls(&api.parties, &b.challenge, &cert, &peer.0)
            .await,
        "certificate",
    )
}

fn logged_in(result: Result<crate::login::LoggedIn, LoginError>, field: &str) -> Response {
    match result {
        Ok(l) => Json(json!({
            "assertion": l.assertion,
            "token_type": "JWT",
            "claims": l.claims,
        }))
        .into_response(),
        Err(LoginError::Refused(r)) => refused(StatusCode::UNAUTHORIZED, field, &r),
        Err(LoginError::Internal(why)) => internal(&why),
    }
}

async fn authenticate(State(api): State<RpApi>, mut req: Request, next: Next) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match api.parties.authenticate(auth).await {
        Ok(rp) => {
            req.extensions_mut().insert(rp);
            next.run(req).await
        }
        Err(RpError::Unauthorized(why)) => {
            let mut r = json_error(StatusCode::UNAUTHORIZED, "authorization", &why);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"muhr relying parties\""),
            );
            r
        }
        Err(RpError::Internal(why)) => internal(&why),
    }
}

fn internal(why: &str) -> Response {
    tracing::error!(error = %why, "relying-party request failed");
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "-",
        "internal error; retry",
    )
}

fn refused(status: StatusCode, field: &str, reasons: &[Problem]) -> Response {
    let rule = reasons
        .iter()
        .map(|p| p.detail.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    (
        status,
        Json(json!({
            "error": { "field": field, "rule": rule },
            "reasons": reasons,
        })),
    )
        .into_response()
}

async fn challenge(State(api): State<RpApi>, Extension(rp): Extension<RelyingParty>) -> Response {
    match api.login.challenge(&rp) {
        Ok((challenge, expires_at)) => (
            StatusCode::CREATED,
            Json(json!({
                "challenge": challenge,
                "expires_at": expires_at,
                "expires_in": api.login.challenge_lifetime().as_secs(),
            })),
        )
            .into_response(),
        Err(LoginError::Internal(why)) => internal(&why),
        Err(LoginError::Refused(r)) => refused(StatusCode::UNAUTHORIZED, "challenge", &r),
    }
}

async fn login(
    State(api): State<RpApi>,
    Extension(rp): Extension<RelyingParty>,
    bytes: Bytes,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        signature: String,
        /// The challenge, for a detached signature.
        challenge: Option<String>,
    }
    let b: Body = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "body", &e.to_string()),
    };
    let sig = match muhr_validation::cms::from_text(&b.signature) {
        Ok(s) => s,
        Err(rule) => return json_error(StatusCode::BAD_REQUEST, "signature", &rule),
    };
    logged_in(
        api.login
            .with_signature(&rp, &sig, b.challenge.as_deref())
            .await,
        "signature",
    )
}

async fn verify(
    State(api): State<RpApi>,
    Extension(rp): Extension<RelyingParty>,
    bytes: Bytes,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        /// A CMS signature (base64 DER or PEM).
        signature: Option<String>,
        /// base64 of the signed content, for a detached signature.
        content: Option<String>,
        /// base64 of a signed PDF, instead of `signature`.
        pdf: Option<String>,
    }
    let b: Body = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "body", &e.to_string()),
    };
    // Freed before the document is decoded: a request holds the JSON or
    // the document, not both.
    drop(bytes);
    let trust = &api.login.trust;
    let answer = match (b.signature, b.pdf) {
        (Some(_), Some(_)) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "pdf",
                "either signature (a CMS signature) or pdf (a signed PDF), not both",
            );
        }
        (None, None) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "signature",
                "a signature (a CMS signature) or a pdf (a signed PDF) is required",
            );
        }
        (None, Some(text)) => {
            if b.content.is_some() {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "content",
                    "a PDF carries its signed content: send the pdf alone",
                );
            }
            let decoded = STANDARD.decode(text.trim());
            drop(text);
            let pdf = match decoded {
                Ok(p) => p,
                Err(_) => {
                    return json_error(StatusCode::BAD_REQUEST, "pdf", "base64 of the signed PDF");
                }
            };
            if pdf.len() > MAX_VERIFY_DOCUMENT {
                return json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "pdf",
                    &format!("at most {MAX_VERIFY_DOCUMENT} bytes"),
                );
            }
            muhr_validation::signatures::verify_pdf(trust, &pdf)
                .await
                .map(|v| Json(v).into_response())
        }
        (Some(signature), None) => {
            let sig = match muhr_validation::cms::from_text(&signature) {
                Ok(s) => s,
                Err(rule) => return json_error(StatusCode::BAD_REQUEST, "signature", &rule),
            };
            let content = match b.content.as_deref().map(|c| STANDARD.decode(c.trim())) {
                None => None,
                Some(Ok(c)) => Some(c),
                Some(Err(_)) => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        "content",
                        "base64 of the signed content",
                    );
                }
            };
            muhr_validation::signatures::verify(trust, &sig, content.as_deref())
                .await
                .map(|v| Json(v).into_response())
        }
    };
    match answer {
        Ok(response) => {
            let store = trust.store();
            if let Err(e) = store
                .meter(&rp.id, &month(muhr_store::now_secs()), "verification")
                .await
            {
                return internal(&format!("database: {e}"));
            }
            response
        }
        Err(why) => internal(&why),
    }
}

async fn jwks(State(api): State<RpApi>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(api.login.assertions.jwks()),
    )
        .into_response()
}

/// YYYY-MM (UTC) of a Unix time: the metering period.
pub fn month(unix: i64) -> String {
    der::DateTime::from_unix_duration(std::time::Duration::from_secs(unix.max(0) as u64))
        .map(|d| format!("{:04}-{:02}", d.year(), d.month()))
        .unwrap_or_else(|_| "0000-00".into())
}

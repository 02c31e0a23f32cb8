//! Citizens' routes, on the public listener (behind the reverse proxy): a
//! bearer ID token from the identity system authenticates every request.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use muhr_ca::revocation::Reason;
use muhr_store::Transition;
use serde_json::json;

use crate::citizen::oidc::{Citizen, TokenError};
use crate::citizen::service::{CitizenError, Citizens, origin};
use muhr_http::answer::json_error;

/// Reasons a citizen may give for revoking their own certificate; the others
/// speak for a CA or an employer.
const CITIZEN_REASONS: [Reason; 4] = [
    Reason::Unspecified,
    Reason::KeyCompromise,
    Reason::Superseded,
    Reason::CessationOfOperation,
];

/// The citizens' routes, for the public listener; mounted only when
/// `[citizens]` is configured. Issuing, listing, suspending and
/// revoking need a bearer ID token; renewal and its challenge are
/// authenticated by the renewal's signature. Bodies up to 64 KiB.
pub fn router(citizens: Arc<Citizens>) -> Router {
    Router::new()
        .route("/api/v1/certificates", post(issue))
        .route("/api/v1/me/certificates", get(mine))
        .route("/api/v1/me/notices", get(my_notices))
        .route("/api/v1/me/certificates/{serial}/suspend", post(suspend))
        .route("/api/v1/me/certificates/{serial}/revoke", post(revoke))
        // The token is checked before the body's type is judged.
        .route_layer(middleware::from_fn(muhr_http::answer::require_json))
        .route_layer(middleware::from_fn_with_state(
            citizens.clone(),
            authenticate,
        ))
        // Renewal is authenticated by the signature it carries, not a token.
        .route(
            "/api/v1/certificates/renew",
            post(renew).layer(middleware::from_fn(muhr_http::answer::require_json)),
        )
        .route(
            "/api/v1/certificates/renew/challenge",
            post(renewal_challenge).layer(middleware::from_fn(muhr_http::answer::require_json)),
        )
        .route_layer(middleware::from_fn_with_state(
            citizens.ca().store().clone(),
            muhr_http::answer::unavailable_not_internal,
        ))
        .layer(DefaultBodyLimit::max(64 << 10))
        .with_state(citizens)
}

fn limit(c: &Citizens, peer: SocketAddr, headers: &HeaderMap) -> Result<(), CitizenError> {
    c.limit_address(&rate_key(
        c.config().rate_limits.trust_forwarded_for,
        headers,
        Some(peer),
    ))
}

/// A one-time challenge for renewing a certificate: the renewal request
/// echoes it (CMC recipientNonce).
async fn renewal_challenge(
    State(c): State<Arc<Citizens>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Err(e) = limit(&c, peer, &headers) {
        return error_response(e);
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        /// The certificate to renew, hex.
        serial: String,
    }
    let b: Body = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "body", &e),
    };
    match c.renewal_challenge(&b.serial).await {
        Ok((challenge, expires_at)) => (
            StatusCode::CREATED,
            Json(json!({ "challenge": challenge, "expires_at": expires_at })),
        )
            .into_response(),
        Err(e) => error_response(e),
    }
}

async fn renew(
    State(c): State<Arc<Citizens>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Err(e) = limit(&c, peer, &headers) {
        return error_response(e);
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        /// base64 of a DER CMS SignedData carrying the CMC PKIData, or its PEM.
        signature: String,
    }
    let b: Body = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "body", &e),
    };
    let sig = match muhr_validation::cms::from_text(&b.signature) {
        Ok(s) => s,
        Err(rule) => return json_error(StatusCode::BAD_REQUEST, "signature", &rule),
    };
    match c.renew(&sig).await {
        Ok(r) => {
            let ca = c.ca();
            let cert = &r.certificate;
            (
                if cert.replayed {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                Json(json!({
                    "serial": cert.serial,
                    "profile": cert.profile,
                    "der": base64::engine::general_purpose::STANDARD.encode(&cert.der),
                    "pem": pem(&cert.der),
                    "chain": [ca.issuing.pem(), ca.root.pem()],
                    "replayed": cert.replayed,
                    "renewed": r.renewed,
                    "renewals": r.renewals,
                    "renewals_left": crate::citizen::renew::MAX_RENEWALS.saturating_sub(r.renewals),
                })),
            )
                .into_response()
        }
        Err(e) => error_response(e),
    }
}

/// The last `X-Forwarded-For` entry: the one the proxy in front added.
fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())
        .map(str::to_string)
}

fn client_address(trust_forwarded_for: bool, req: &Request) -> String {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a);
    rate_key(trust_forwarded_for, req.headers(), peer)
}

/// The key one client's requests are counted under: the address the proxy
/// forwarded (when trusted) or the peer's, with any port taken off, and an
/// IPv6 address counted by its /64. Every rate-limited path uses it.
pub fn rate_key(
    trust_forwarded_for: bool,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> String {
    let forwarded = trust_forwarded_for
        .then(|| forwarded_for(headers))
        .flatten()
        .and_then(|v| {
            v.parse::<std::net::IpAddr>()
                .ok()
                .or_else(|| v.parse::<SocketAddr>().ok().map(|s| s.ip()))
        });
    match forwarded.or(peer.map(|p| p.ip())) {
        Some(ip) => muhr_http::ratelimit::client_key(ip).to_string(),
        None => "unknown".into(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized(error: &str, rule: &str) -> Response {
    let mut r = json_error(StatusCode::UNAUTHORIZED, "authorization", rule);
    let challenge = format!(
        "Bearer error=\"{error}\", error_description=\"{}\"",
        rule.replace(['"', '\\'], "'")
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

async fn authenticate(State(c): State<Arc<Citizens>>, mut req: Request, next: Next) -> Response {
    if let Err(e) = c.limit_address(&client_address(
        c.config().rate_limits.trust_forwarded_for,
        &req,
    )) {
        return error_response(e);
    }
    let Some(token) = bearer(req.headers()) else {
        return unauthorized(
            "invalid_request",
            "an ID token from the identity system is required (Authorization: Bearer)",
        );
    };
    match c.authenticate(token).await {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err(TokenError::Invalid(why)) => unauthorized("invalid_token", &why),
        Err(TokenError::Assurance(why)) => unauthorized("insufficient_user_authentication", &why),
        Err(TokenError::Unavailable(why)) => {
            tracing::error!(error = %why, "citizen refused: no identity provider keys");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "authorization",
                "the identity provider's keys are unavailable; retry later",
            )
        }
    }
}

fn error_response(e: CitizenError) -> Response {
    match e {
        CitizenError::Refused(f) => json_error(StatusCode::UNPROCESSABLE_ENTITY, &f.field, &f.rule),
        CitizenError::NotFound(why) => json_error(StatusCode::NOT_FOUND, "serial", &why),
        CitizenError::Conflict(why) => json_error(StatusCode::CONFLICT, "-", &why),
        CitizenError::Forbidden(why) => json_error(StatusCode::FORBIDDEN, "signature", &why),
        CitizenError::TooMany(wait) => {
            let mut r = json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "-",
                &format!("too many requests; retry in {} s", wait.as_secs() + 1),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs() + 1));
            r
        }
        CitizenError::Unavailable(why) => {
            tracing::warn!(error = %why, "citizen request: unavailable");
            let mut r = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "-",
                "temporarily unavailable; retry the same request later",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
        CitizenError::Internal(why) => {
            tracing::error!(error = %why, "citizen request failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "-",
                "internal error; retry",
            )
        }
    }
}

use muhr_pkix::pem::certificate as pem;

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

async fn issue(
    State(c): State<Arc<Citizens>>,
    Extension(who): Extension<Citizen>,
    bytes: Bytes,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        csr: String,
        profile: String,
    }
    let b: Body = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "body", &e),
    };
    match c.issue(&who, &b.csr, &b.profile).await {
        Ok(cert) => {
            let ca = c.ca();
            let status = if cert.replayed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (
                status,
                Json(json!({
                    "serial": cert.serial,
                    "profile": cert.profile,
                    "der": base64::engine::general_purpose::STANDARD.encode(&cert.der),
                    "pem": pem(&cert.der),
                    "chain": [ca.issuing.pem(), ca.root.pem()],
                    "replayed": cert.replayed,
                })),
            )
                .into_response()
        }
        Err(e) => error_response(e),
    }
}

async fn mine(State(c): State<Arc<Citizens>>, Extension(who): Extension<Citizen>) -> Response {
    match c.certificates(&who).await {
        Ok(list) => Json(json!({
            "pinfl": who.pinfl,
            "certificates": list.iter().map(|s| json!({
                "serial": s.serial,
                "profile": s.profile,
                "subject": s.subject,
                "not_before": s.not_before,
                "not_after": s.not_after,
                "issued_by": origin(s.job.as_deref()),
                "state": s.status,
                "revocation": s.revocation,
                "revocation_reason": s.revocation_reason
                    .and_then(Reason::from_code)
                    .map(|r| r.name()),
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => error_response(e),
    }
}

/// The caller's notices, newest first: the same fields the notification
/// system receives, and whether it has them yet.
async fn my_notices(
    State(c): State<Arc<Citizens>>,
    Extension(who): Extension<Citizen>,
) -> Response {
    match c.notices(&who).await {
        Ok(list) => Json(json!({
            "pinfl": who.pinfl,
            "notices": list.iter().map(|n| json!({
                "id": n.key,
                "kind": n.kind,
                "serial": n.serial,
                "reason": n.reason,
                "date": n.on_date,
                "created_at": n.created_at.div_euclid(1_000_000),
                "delivered": n.state == "delivered",
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => error_response(e),
    }
}

fn changed(s: muhr_store::Status) -> Response {
    Json(json!({
        "serial": s.serial,
        "revocation": s.revocation,
        "revoked_at": s.revoked_at,
        "reason": s.reason.and_then(Reason::from_code).map(|r| r.name()),
    }))
    .into_response()
}

async fn suspend(
    State(c): State<Arc<Citizens>>,
    Extension(who): Extension<Citizen>,
    Path(serial): Path<String>,
) -> Response {
    match c.change(&who, &serial, Transition::Suspend).await {
        Ok(s) => changed(s),
        Err(e) => error_response(e),
    }
}

async fn revoke(
    State(c): State<Arc<Citizens>>,
    Extension(who): Extension<Citizen>,
    Path(serial): Path<String>,
    bytes: Bytes,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        reason: String,
    }
    let b: Body = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "body", &e),
    };
    let reason: Reason = match b.reason.parse() {
        Ok(r) if CITIZEN_REASONS.contains(&r) => r,
        _ => {
            let names: Vec<&str> = CITIZEN_REASONS.iter().map(|r| r.name()).collect();
            return json_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reason",
                &format!("one of {}", names.join(", ")),
            );
        }
    };
    match c
        .change(
            &who,
            &serial,
            Transition::Revoke {
                reason: reason.code(),
            },
        )
        .await
    {
        Ok(s) => changed(s),
        Err(e) => error_response(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(forwarded: &[&str], peer: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder();
        for f in forwarded {
            b = b.header("x-forwarded-for", *f);
        }
        let mut r = b.body(axum::body::Body::empty()).unwrap();
        if let Some(p) = peer {
            r.extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(p.parse().unwrap()));
        }
        r
    }

    #[test]
    fn client_address_trusts_only_the_proxys_entry_when_told() {
        let r = request(&["6.6.6.6, 10.0.0.1", "192.0.2.7"], Some("127.0.0.1:5000"));
        assert_eq!(client_address(true, &r), "192.0.2.7");
        assert_eq!(
            client_address(false, &r),
            "127.0.0.1",
            "spoofable header ignored"
        );
        let r = request(&[], Some("[::1]:5000"));
        assert_eq!(client_address(true, &r), "::");
        assert_eq!(client_address(false, &request(&[], None)), "unknown");
        // One subscriber's IPv6 /64 is one client, whichever of its
        // addresses it rotates through, directly or through the proxy.
        for a in ["2001:db8:1:2::1", "2001:db8:1:2:ffff:1:2:3"] {
            let r = request(&[], Some(&format!("[{a}]:443")));
            assert_eq!(client_address(false, &r), "2001:db8:1:2::");
            let r = request(&[a], Some("127.0.0.1:5000"));
            assert_eq!(client_address(true, &r), "2001:db8:1:2::");
        }
        // A proxy that writes the port too.
        let r = request(&["192.0.2.7:5678"], Some("127.0.0.1:5000"));
        assert_eq!(client_address(true, &r), "192.0.2.7");
        let r = request(&["[2001:db8::5]:443"], Some("127.0.0.1:5000"));
        assert_eq!(client_address(true, &r), "2001:db8::");
    }
}

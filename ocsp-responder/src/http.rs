//! `POST /ocsp` and `GET /ocsp/{base64 request}` (RFC 6960 appendix A, RFC 5019).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;

use crate::Responder;
use crate::response::Answer;

/// Larger requests are refused before parsing.
const MAX_REQUEST: usize = 16 * 1024;

/// The OCSP routes, `POST /ocsp` and `GET /ocsp/{base64}`, for the public
/// listener. Every answer is HTTP 200 with an OCSP body, refusals included;
/// bodies over 16 KiB are answered `malformedRequest`.
pub fn router(responder: Arc<Responder>) -> Router {
    Router::new()
        .route("/ocsp", post(by_post))
        .route("/ocsp/{*request}", get(by_get))
        .layer(DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(responder)
}

/// A body over the limit (or one that cannot be read) is an OCSP
/// `malformedRequest`, like any other request the responder cannot parse:
/// OCSP clients read OCSP responses, not HTTP error pages.
async fn by_post(
    State(r): State<Arc<Responder>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match body {
        Ok(body) => reply(r.respond(&body).await),
        Err(_) => reply(r.respond(&[]).await),
    }
}

async fn by_get(State(r): State<Arc<Responder>>, Path(encoded): Path<String>) -> Response {
    match decode_get(&encoded) {
        Some(der) => reply(r.respond(&der).await),
        None => reply(r.respond(&[]).await),
    }
}

/// The request of a GET path (already percent-decoded): standard or URL-safe
/// base64, white space ignored; `None` when it is not base64 or too large.
pub(crate) fn decode_get(encoded: &str) -> Option<Vec<u8>> {
    let cleaned: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
    if cleaned.len() > MAX_REQUEST * 4 / 3 + 4 {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(&cleaned)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&cleaned))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&cleaned))
        .ok()
}

/// RFC 9110 IMF-fixdate (`Last-Modified`, `Expires`).
pub fn httpdate(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let Ok(dt) = der::DateTime::from_unix_duration(Duration::from_secs(unix.max(0) as u64)) else {
        return String::new();
    };
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(unix / 86400).rem_euclid(7) as usize],
        dt.day(),
        MONTHS[dt.month() as usize - 1],
        dt.year(),
        dt.hour(),
        dt.minutes(),
        dt.seconds()
    )
}

/// A cache entry for a freshly signed response, validators included.
pub(crate) fn cached(der: Vec<u8>, this_update: i64, next_update: i64) -> crate::Cached {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    let value =
        |s: String| HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""));
    crate::Cached {
        etag: value(format!("\"{}\"", hex::encode(&digest.as_ref()[..12]))),
        last_modified: value(httpdate(this_update)),
        expires: value(httpdate(next_update)),
        der: der.into(),
        this_update,
        next_update,
    }
}

fn reply(a: Answer) -> Response {
    let mut resp = (StatusCode::OK, a.der).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/ocsp-response"),
    );
    match a.cache {
        Some(c) => {
            let max_age = (c.next_update - muhr_store::now_secs()).max(0);
            if let Ok(v) = HeaderValue::from_str(&format!(
                "public, max-age={max_age}, no-transform, must-revalidate"
            )) {
                h.insert(header::CACHE_CONTROL, v);
            }
            h.insert(header::LAST_MODIFIED, c.last_modified.clone());
            h.insert(header::EXPIRES, c.expires.clone());
            h.insert(header::ETAG, c.etag.clone());
        }
        None => {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    resp
}

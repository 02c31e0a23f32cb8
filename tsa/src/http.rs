//! `POST /tsa` (RFC 3161 3.4, time-stamp protocol over HTTP).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::Tsa;
use crate::asn1::FailureInfo;

/// A TimeStampReq is about a hundred bytes; larger bodies are refused
/// before parsing.
const MAX_REQUEST: usize = 8 * 1024;

/// The route for the public listener. Every answer is HTTP 200 with a
/// `application/timestamp-reply` body, refusals included: clients read
/// TimeStampResp, not HTTP error pages.
pub fn router(tsa: Arc<Tsa>) -> Router {
    Router::new()
        .route("/tsa", post(stamp))
        .layer(DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(tsa)
}

/// The request's Content-Type alone: a copy of every header per token
/// showed in the profile.
struct ContentType(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for ContentType {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(header::CONTENT_TYPE).cloned()))
    }
}

async fn stamp(
    State(tsa): State<Arc<Tsa>>,
    ContentType(content_type): ContentType,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let reply = match body {
        Err(_) => tsa.refuse(FailureInfo::BadDataFormat, "the request body is too large"),
        Ok(_)
            if content_type
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    !v.trim()
                        .to_ascii_lowercase()
                        .starts_with("application/timestamp-query")
                }) =>
        {
            tsa.refuse(
                FailureInfo::BadDataFormat,
                "the content type is not application/timestamp-query",
            )
        }
        Ok(body) => tsa.respond(&body).await,
    };
    (
        [
            (header::CONTENT_TYPE, "application/timestamp-reply"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        reply,
    )
        .into_response()
}

//! What every service answers when it refuses: one JSON shape naming the
//! field and the rule, and the body rules checked before a handler runs.

use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The one refusal shape, `{"error": {"field", "rule"}}` with `status`:
/// `field` names what was wrong (a body field, `body`, `client`, or `-` when
/// nothing the caller sent is at fault) and `rule` says, for a person, what
/// it must be.
pub fn json_error(status: StatusCode, field: &str, rule: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "field": field, "rule": rule } })),
    )
        .into_response()
}

/// Every JSON API takes its body as `application/json` (or a `+json` type):
/// a body sent as anything else is refused before it is parsed (415), so
/// that a form or a text field can never be read as a request. The body is
/// drained first (up to 64 KiB): over HTTP/2 an answer to an unread body
/// resets the stream and the client never sees the refusal (a larger one
/// gets the reset: nobody is owed more reading for a wrong content type). Placed inside
/// the authentication layers: only a known caller's body is read.
pub async fn require_json(req: Request, next: Next) -> Response {
    use axum::body::HttpBody;
    let has_body = !req.body().is_end_stream() && req.body().size_hint().exact() != Some(0);
    if req.method() == axum::http::Method::POST && has_body {
        let essence = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            let _ = axum::body::to_bytes(req.into_body(), 64 << 10).await;
            return json_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type",
                "send the body as application/json",
            );
        }
    }
    next.run(req).await
}

/// Reads the whole body before anything answers, refusing one over `max`
/// with the JSON 413 every refusal uses. A body over the limit is still read
/// (and thrown away) up to twice the limit: over HTTP/2 an answer to a body
/// left unread resets the stream, and clients then show a transport error
/// instead of the 413. Past that, the stream is reset: nobody is owed that
/// much reading.
pub async fn limit_body(State(max): State<usize>, req: Request, next: Next) -> Response {
    use http_body_util::BodyExt;
    let (parts, mut body) = req.into_parts();
    let cap = max.saturating_mul(2).max(1 << 20);
    let (mut kept, mut seen) = (Vec::new(), 0usize);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "body",
                "the request body could not be read",
            );
        };
        if let Some(data) = frame.data_ref() {
            seen += data.len();
            if seen > cap {
                break;
            }
            if seen <= max {
                kept.extend_from_slice(data);
            }
        }
    }
    if seen > max {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            &format!("the request body is larger than {max} bytes"),
        );
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(kept)))
        .await
}

/// A request that failed while the database cannot be reached is answered
/// 503 with `Retry-After`, not 500: the client should come back, and the
/// failure was not the request's. Deep layers report failures as text; this
/// asks the database itself (within half a second) when a 500 is about to
/// leave, so every route gets it without each error type carrying it.
pub async fn unavailable_not_internal(
    State(store): State<muhr_store::Store>,
    req: Request,
    next: Next,
) -> Response {
    let r = next.run(req).await;
    if r.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return r;
    }
    let reachable = matches!(
        tokio::time::timeout(Duration::from_millis(500), store.ping()).await,
        Ok(Ok(()))
    );
    if reachable {
        return r;
    }
    let mut r = json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "-",
        "the database is unavailable; retry later",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    r
}

//! `POST /api/v1/registry/events`, for the `registry` client: a batch of
//! events, each checked before any is applied, applied in one transaction,
//! answered one result per event.

use axum::Json;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::apply::{Applied, RegistryEvents};
use super::event::Event;
use muhr_http::answer::json_error;

/// Reads a request body: `{"events": [...]}` with 1 to `max` events; the
/// error names the event and the field.
pub fn parse_batch(events: &RegistryEvents, body: &[u8]) -> Result<Vec<Event>, (String, String)> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ("body".into(), format!("not JSON: {e}")))?;
    let Some(obj) = v.as_object() else {
        return Err((
            "body".into(),
            "must be an object {\"events\": [...]}".into(),
        ));
    };
    if let Some(k) = obj.keys().find(|k| *k != "events") {
        return Err((
            k.clone(),
            "unknown field (the body has only `events`)".into(),
        ));
    }
    let Some(list) = obj.get("events").and_then(Value::as_array) else {
        return Err(("events".into(), "required: an array of events".into()));
    };
    let max = events.config().batch;
    if list.is_empty() || list.len() > max {
        return Err(("events".into(), format!("1 to {max} events per request")));
    }
    let mut parsed = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let ev = Event::parse(events.rules(), &format!("events[{i}]"), e)
            .map_err(|e| (e.field, e.rule))?;
        parsed.push(ev);
    }
    Ok(parsed)
}

/// One result per event, as the API and the file command's report give it.
pub fn results_json(applied: &Applied) -> Value {
    let results: Vec<Value> = applied
        .answers
        .iter()
        .map(|a| match (&a.record, &a.conflict) {
            (_, Some(why)) => json!({ "id": a.id, "outcome": "conflict", "detail": why }),
            (Some(r), None) => json!({
                "id": r.id,
                "kind": r.kind,
                "outcome": r.outcome,
                "serials": r.serials,
                "detail": r.detail,
                "replayed": a.replayed,
            }),
            (None, None) => json!({ "id": a.id, "outcome": "conflict" }),
        })
        .collect();
    json!({ "results": results })
}

/// The handler: 200 with the results; 400 naming the field of a bad event
/// (nothing applied); 409 when an id is recorded with other content
/// (nothing applied); 503 when the database is out of reach.
pub async fn post_events(events: &RegistryEvents, actor: &str, body: Bytes) -> Response {
    let batch = match parse_batch(events, &body) {
        Ok(b) => b,
        Err((field, rule)) => return json_error(StatusCode::BAD_REQUEST, &field, &rule),
    };
    match events.apply(&batch, actor).await {
        Ok(applied) => {
            let status = if applied.answers.iter().any(|a| a.conflict.is_some()) {
                StatusCode::CONFLICT
            } else {
                StatusCode::OK
            };
            (status, Json(results_json(&applied))).into_response()
        }
        Err(e) if e.is_unavailable() => {
            tracing::warn!(error = %e, "registry events: database unavailable");
            let mut r = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "-",
                "the database is unavailable; send the same events again",
            );
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "registry events failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "-",
                "internal error; send the same events again",
            )
        }
    }
}

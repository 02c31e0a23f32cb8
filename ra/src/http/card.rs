//! The personalization line's routes: a card, a batch of cards, and a
//! card job's state for operators.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use muhr_pkix::pem::certificate as pem;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::operator::audit_read;
use super::{Api, internal};
use crate::card::CardRequest;
use crate::card::personalize::{CardError, CardOutcome, Personalizer};
use crate::http::operator::summary_json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::{Extension, Json};
use muhr_http::answer::json_error;
use muhr_http::clients::Caller;

pub(crate) fn outcome_json(p: &Personalizer, o: &CardOutcome) -> Value {
    let certs: serde_json::Map<String, Value> = o
        .certificates
        .iter()
        .map(|c| {
            (
                c.role.clone(),
                json!({
                    "serial": c.serial,
                    "profile": c.profile,
                    "der": base64::engine::general_purpose::STANDARD.encode(&c.der),
                    "pem": pem(&c.der),
                }),
            )
        })
        .collect();
    let ca = p.ca();
    json!({
        "request_id": o.request_id,
        "replayed": o.replayed,
        "certificates": certs,
        "chain": [ca.issuing.pem(), ca.root.pem()],
        "superseded": o.superseded,
    })
}

pub(crate) fn error_parts(e: &CardError) -> (StatusCode, Value) {
    let (status, field, rule) = match e {
        CardError::Refused(r) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            r.error.field.clone(),
            r.error.rule.clone(),
        ),
        CardError::Conflict(why) => (StatusCode::CONFLICT, "request_id".into(), why.clone()),
        CardError::InProgress => (
            StatusCode::SERVICE_UNAVAILABLE,
            "request_id".into(),
            "another request is still working on this card job; retry".into(),
        ),
        CardError::Unavailable(why) => {
            tracing::warn!(error = %why, "card issuance unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "-".into(),
                "the key store or the database is unavailable; retry with the same request_id"
                    .into(),
            )
        }
        CardError::Internal(why) => {
            tracing::error!(error = %why, "card issuance failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "-".into(),
                "internal error; retry with the same request_id".into(),
            )
        }
    };
    (status, json!({ "error": { "field": field, "rule": rule } }))
}

pub(crate) fn parse_card(v: Value) -> Result<CardRequest, (StatusCode, Value)> {
    serde_json::from_value(v).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            json!({ "error": { "field": "body", "rule": e.to_string() } }),
        )
    })
}

pub(crate) async fn card(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                json!({ "error": { "field": "body", "rule": format!("not JSON: {e}") } }),
            )
        })
        .and_then(parse_card);
    let request = match parsed {
        Ok(r) => r,
        Err((status, body)) => return (status, Json(body)).into_response(),
    };
    match api.personalizer.submit(&caller.name, request).await {
        Ok(o) => (StatusCode::OK, Json(outcome_json(&api.personalizer, &o))).into_response(),
        Err(e) => {
            let (status, body) = error_parts(&e);
            let mut r = (status, Json(body)).into_response();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            r
        }
    }
}

pub(crate) async fn batch(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        cards: Vec<Value>,
    }
    let batch: Batch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "body", &e.to_string()),
    };
    let max = api.personalizer.rules().config.max_batch;
    if batch.cards.is_empty() || batch.cards.len() > max {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "cards",
            &format!("1 to {max} cards per batch (got {})", batch.cards.len()),
        );
    }
    // Cards go in at once, so they share groups; but a person's cards go in
    // the batch's order, each after the one before has its answer, so the
    // later card is the one that supersedes.
    let mut tasks = tokio::task::JoinSet::new();
    let mut before: HashMap<String, oneshot::Receiver<()>> = HashMap::new();
    for (i, v) in batch.cards.into_iter().enumerate() {
        let p = api.personalizer.clone();
        let client = caller.name.clone();
        let (done, next) = oneshot::channel();
        let after = match v.pointer("/person/pinfl").and_then(Value::as_str) {
            Some(pinfl) => before.insert(pinfl.to_string(), next),
            None => None,
        };
        tasks.spawn(async move {
            if let Some(after) = after {
                // An error only means the card before has gone: it has an answer.
                let _ = after.await;
            }
            let r = match parse_card(v) {
                Ok(req) => p.submit(&client, req).await.map_err(|e| error_parts(&e)),
                Err(e) => Err(e),
            };
            let _ = done.send(());
            (i, r)
        });
    }
    let mut results: Vec<Value> = Vec::new();
    let mut slots: Vec<Option<Value>> = Vec::new();
    let (mut issued, mut failed) = (0u64, 0u64);
    while let Some(joined) = tasks.join_next().await {
        let Ok((i, r)) = joined else {
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "-", "a card task failed");
        };
        let v = match r {
            Ok(o) => {
                issued += 1;
                let mut v = outcome_json(&api.personalizer, &o);
                v["status"] = json!(200);
                v
            }
            Err((status, mut body)) => {
                failed += 1;
                body["status"] = json!(status.as_u16());
                body
            }
        };
        if slots.len() <= i {
            slots.resize(i + 1, None);
        }
        slots[i] = Some(v);
    }
    for (i, s) in slots.into_iter().enumerate() {
        let mut v = s.unwrap_or(json!({ "status": 500 }));
        v["index"] = json!(i);
        results.push(v);
    }
    Json(json!({ "succeeded": issued, "failed": failed, "results": results })).into_response()
}

pub(crate) async fn card_job(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path((client, request_id)): Path<(String, String)>,
) -> Response {
    let job = format!("{client}/{request_id}");
    if let Err(r) = audit_read(&api, &caller, "card_job.read", &job).await {
        return r;
    }
    let store = api.personalizer.ca().store();
    let row = match store.job(&job).await {
        Ok(Some(r)) => r,
        Ok(None) => return json_error(StatusCode::NOT_FOUND, "request_id", "no such card job"),
        Err(e) => return internal(e),
    };
    let certs = match store.job_certificates(&job).await {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    let mut certificates = Vec::new();
    let mut history = Vec::new();
    for c in &certs {
        match store.certificate_summary(&c.intent.serial).await {
            Ok(Some(s)) => certificates.push(summary_json(&s)),
            Ok(None) => {}
            Err(e) => return internal(e),
        }
        match store.audit_of(&c.intent.serial).await {
            Ok(events) => {
                for (at, actor, action, details) in events {
                    history.push(json!({
                        "at_us": at, "actor": actor, "action": action, "object": c.intent.serial,
                        "details": serde_json::from_str::<Value>(&details).unwrap_or(Value::Null),
                    }));
                }
            }
            Err(e) => return internal(e),
        }
    }
    history.sort_by_key(|h| h["at_us"].as_i64().unwrap_or(0));
    Json(json!({
        "job": row.job,
        "state": row.state,
        "pinfl": row.pinfl,
        "document": row.document,
        "district": row.district,
        "created_at_us": row.created_at,
        "finished_at_us": row.finished_at,
        "certificates": certificates,
        "history": history,
    }))
    .into_response()
}

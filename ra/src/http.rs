//! The RA's HTTP API, mounted on the mutual-TLS listener. Every route names the
//! role it needs; the listener puts the client's certificate into the request
//! and [`Registry`] turns it into a [`Caller`] (or a 403 that writes nothing).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use muhr_store::AuditEvent;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::card::CardRequest;
use crate::card::personalize::{CardError, CardOutcome, Personalizer};
use muhr_http::answer::{json_error, limit_body, require_json, unavailable_not_internal};
use muhr_http::clients::{Caller, PeerCertificate, Registry, Role};

#[derive(Clone)]
pub struct Api {
    pub personalizer: Arc<Personalizer>,
    pub registry: Arc<Registry>,
    /// Life of the complete CRLs an operator asks for.
    pub crl_validity: Duration,
}

/// The largest body the RA's machine API takes (a batch of cards).
const MAX_BODY: usize = 16 << 20;

pub fn router(api: Api) -> Router {
    let line = Router::new()
        .route("/api/v1/personalization/cards", post(card))
        .route("/api/v1/personalization/batches", post(batch))
        // Layers run last-added first: the caller is known before its body
        // is read or judged.
        .route_layer(middleware::from_fn_with_state(MAX_BODY, limit_body))
        .route_layer(middleware::from_fn(require_json))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_line));
    let operator = Router::new()
        .route("/api/v1/operator/certificates/{serial}", get(certificate))
        .route(
            "/api/v1/operator/certificates/{serial}/revoke",
            post(revoke),
        )
        .route(
            "/api/v1/operator/certificates/{serial}/suspend",
            post(suspend),
        )
        .route(
            "/api/v1/operator/certificates/{serial}/restore",
            post(restore),
        )
        .route(
            "/api/v1/operator/persons/{pinfl}/certificates",
            get(person_certificates),
        )
        .route(
            "/api/v1/operator/card-jobs/{client}/{request_id}",
            get(card_job),
        )
        .route("/api/v1/operator/crl", post(crl_now))
        .route_layer(middleware::from_fn_with_state(MAX_BODY, limit_body))
        .route_layer(middleware::from_fn(require_json))
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            require_operator,
        ));
    Router::new()
        .merge(line)
        .merge(operator)
        .route("/openapi.json", get(openapi))
        .route_layer(middleware::from_fn_with_state(
            api.personalizer.ca().store().clone(),
            unavailable_not_internal,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC
        .get_or_init(|| muhr_http::openapi::openapi_for("mtls", false))
        .clone();
    ([(header::CONTENT_TYPE, "application/json")], doc).into_response()
}

async fn require_line(State(api): State<Api>, req: Request, next: Next) -> Response {
    authorize(api, Role::PersonalizationLine, req, next).await
}

async fn require_operator(State(api): State<Api>, req: Request, next: Next) -> Response {
    authorize(api, Role::Operator, req, next).await
}

async fn authorize(api: Api, role: Role, mut req: Request, next: Next) -> Response {
    let caller = api
        .registry
        .caller(req.extensions().get::<PeerCertificate>())
        .await;
    let refusal = match caller {
        Ok(c) if c.role == role => {
            req.extensions_mut().insert(c);
            return next.run(req).await;
        }
        Ok(c) => format!(
            "client {} has role {}; this needs {}",
            c.name,
            c.role.as_str(),
            role.as_str()
        ),
        Err(why) => why,
    };
    // Read what the client is sending before answering: over HTTP/2 an answer
    // to an unread body resets the stream, and the client sees no 403 at all.
    // At most 1 MiB of it: a caller who is refused is owed no more reading.
    let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
    if refusal == muhr_http::clients::REGISTRY_UNAVAILABLE {
        let mut r = json_error(StatusCode::SERVICE_UNAVAILABLE, "client", &refusal);
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        return r;
    }
    json_error(StatusCode::FORBIDDEN, "client", &refusal)
}

use muhr_pkix::pem::certificate as pem;

fn outcome_json(p: &Personalizer, o: &CardOutcome) -> Value {
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

fn error_parts(e: &CardError) -> (StatusCode, Value) {
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

fn parse_card(v: Value) -> Result<CardRequest, (StatusCode, Value)> {
    serde_json::from_value(v).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            json!({ "error": { "field": "body", "rule": e.to_string() } }),
        )
    })
}

async fn card(
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

async fn batch(
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

async fn audit_read(
    api: &Api,
    caller: &Caller,
    action: &str,
    object: &str,
) -> Result<(), Response> {
    let event = AuditEvent {
        actor: caller.actor(),
        action: action.into(),
        object: object.into(),
        details: json!({}),
    };
    api.personalizer
        .ca()
        .store()
        .audit(&[&event])
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "audit append failed: read refused");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "-",
                "audit chain unavailable",
            )
        })
}

fn summary_json(s: &muhr_store::ra::CertificateSummary) -> Value {
    json!({
        "serial": s.serial,
        "profile": s.profile,
        "subject": s.subject,
        "not_before": s.not_before,
        "not_after": s.not_after,
        "state": s.status,
        "revocation": s.revocation,
        "revocation_reason": s.revocation_reason
            .and_then(muhr_ca::revocation::Reason::from_code)
            .map(|r| r.name()),
        "card_job": s.job,
        "role": s.role,
    })
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "operator request failed");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "-", "internal error")
}

async fn certificate(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(serial): Path<String>,
) -> Response {
    let serial = serial.to_ascii_uppercase();
    if let Err(r) = audit_read(&api, &caller, "certificate.read", &serial).await {
        return r;
    }
    match api
        .personalizer
        .ca()
        .store()
        .certificate_summary(&serial)
        .await
    {
        Ok(Some(s)) => Json(summary_json(&s)).into_response(),
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            "serial",
            "no certificate with this serial",
        ),
        Err(e) => internal(e),
    }
}

async fn person_certificates(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(pinfl): Path<String>,
) -> Response {
    if let Err(e) = api.personalizer.rules().identity.pinfl("pinfl", &pinfl) {
        return json_error(StatusCode::UNPROCESSABLE_ENTITY, &e.field, &e.rule);
    }
    if let Err(r) = audit_read(&api, &caller, "person.read", &pinfl).await {
        return r;
    }
    match api
        .personalizer
        .ca()
        .store()
        .certificates_of_person(&pinfl)
        .await
    {
        Ok(list) => Json(json!({
            "pinfl": pinfl,
            "certificates": list.iter().map(summary_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => internal(e),
    }
}

async fn card_job(
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

async fn change(api: &Api, caller: &Caller, serial: &str, t: muhr_store::Transition) -> Response {
    let serial = serial.to_ascii_uppercase();
    // Operators act on people's certificates (they name a PINFL), never on
    // the infrastructure's: the OCSP signer, the TLS server, the lines' and
    // other operators' credentials (one operator revoking the others would
    // end dual control), let alone a CA.
    match api
        .personalizer
        .ca()
        .store()
        .certificate_summary(&serial)
        .await
    {
        Ok(Some(s)) if s.pinfl.is_none() => {
            let rule = if api
                .personalizer
                .ca()
                .profiles()
                .get(&s.profile)
                .is_some_and(|p| p.kind == muhr_policies::Kind::Ca)
            {
                muhr_ca::dual_control::CA_CERTIFICATE.to_string()
            } else {
                format!(
                    "is a {} certificate, not a person's: operators act on people's \
                     certificates only (the CA administrator withdraws this one from the CLI)",
                    s.profile
                )
            };
            return json_error(StatusCode::FORBIDDEN, "serial", &rule);
        }
        Ok(_) => {}
        Err(e) => return internal(e),
    }
    match api
        .personalizer
        .ca()
        .change_status(&serial, t, &caller.actor())
        .await
    {
        Ok(s) => Json(json!({
            "serial": s.serial,
            "revocation": s.revocation,
            "revoked_at": s.revoked_at,
            "reason": s.reason
                .and_then(muhr_ca::revocation::Reason::from_code)
                .map(|r| r.name()),
        }))
        .into_response(),
        Err(muhr_ca::IssueError::Refused(f)) if f.rule.starts_with("no certificate") => {
            json_error(StatusCode::NOT_FOUND, &f.field, &f.rule)
        }
        // Operators act on end-entity certificates only; a CA's status
        // changes under dual control, from the CLI.
        Err(muhr_ca::IssueError::Refused(f)) if f.rule == muhr_ca::dual_control::CA_CERTIFICATE => {
            json_error(StatusCode::FORBIDDEN, &f.field, &f.rule)
        }
        Err(muhr_ca::IssueError::Refused(f)) if f.field == "reason" => {
            json_error(StatusCode::UNPROCESSABLE_ENTITY, &f.field, &f.rule)
        }
        Err(muhr_ca::IssueError::Refused(f)) => json_error(StatusCode::CONFLICT, &f.field, &f.rule),
        Err(e) => internal(e),
    }
}

async fn revoke(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(serial): Path<String>,
    body: Bytes,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        reason: String,
    }
    let b: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "body", &e.to_string()),
    };
    let reason: muhr_ca::revocation::Reason = match b.reason.parse() {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, "reason", &e.to_string()),
    };
    change(
        &api,
        &caller,
        &serial,
        muhr_store::Transition::Revoke {
            reason: reason.code(),
        },
    )
    .await
}

async fn suspend(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(serial): Path<String>,
) -> Response {
    change(&api, &caller, &serial, muhr_store::Transition::Suspend).await
}

async fn restore(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(serial): Path<String>,
) -> Response {
    change(&api, &caller, &serial, muhr_store::Transition::Restore).await
}

/// Complete CRLs of the issuing CA, now (deltas follow every change anyway).
async fn crl_now(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    let ca = api.personalizer.ca();
    let event = AuditEvent {
        actor: caller.actor(),
        action: "crl.generate".into(),
        object: ca.issuing.name.clone(),
        details: json!({}),
    };
    if let Err(e) = ca.store().audit(&[&event]).await {
        return internal(e);
    }
    match muhr_ca::crl::generate(ca.store(), &ca.issuing, api.crl_validity).await {
        Ok(crls) => Json(json!({
            "crls": crls.iter().map(|c| json!({
                "number": c.number,
                "shard": c.shard,
                "entries": c.entries,
                "next_update": c.next_update,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => internal(e),
    }
}

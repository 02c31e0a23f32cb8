//! The operators' routes: look-ups, status changes of people's
//! certificates, CRLs on demand.

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use muhr_store::AuditEvent;
use serde_json::{Value, json};

use super::{Api, internal};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use muhr_http::answer::json_error;
use muhr_http::clients::Caller;

pub(crate) async fn audit_read(
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

pub(crate) fn summary_json(s: &muhr_store::people::CertificateSummary) -> Value {
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

pub(crate) async fn certificate(
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

pub(crate) async fn person_certificates(
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

pub(crate) async fn change(
    api: &Api,
    caller: &Caller,
    serial: &str,
    t: muhr_store::Transition,
) -> Response {
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
        // The holder is told: an operator acted on their certificate.
        .change_status_notifying(&serial, t, &caller.actor())
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

pub(crate) async fn revoke(
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

pub(crate) async fn suspend(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(serial): Path<String>,
) -> Response {
    change(&api, &caller, &serial, muhr_store::Transition::Suspend).await
}

pub(crate) async fn restore(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(serial): Path<String>,
) -> Response {
    change(&api, &caller, &serial, muhr_store::Transition::Restore).await
}

/// Complete CRLs of the issuing CA, now (deltas follow every change anyway).
pub(crate) async fn crl_now(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
) -> Response {
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

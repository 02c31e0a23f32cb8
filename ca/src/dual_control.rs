//! Dual control for the acts that take a CA out of service or bring it
//! back: suspending, restoring or revoking a CA certificate. One registered
//! operator requests the act, a second, different one approves it, and the
//! act happens in the transaction that records the approval. Each side signs
//! the same statement with their operator credential (the caller checks
//! those signatures and that the credentials are registered operators: see
//! [`Operator`]); the signatures are kept with the request as evidence, and
//! the audit chain names both people.
//!
//! The operator API never reaches this: its callers act on end-entity
//! certificates only.

use muhr_store::Transition;
use muhr_store::approvals::{Approval, Approver};

use crate::{Ca, IssueError, StatusPlan, refused};

/// The refusal for a CA certificate on a single person's path.
pub const CA_CERTIFICATE: &str = "is a CA certificate: its status changes only under dual \
control (`muhr revoke|suspend|restore SERIAL --operator-p12 FILE` by one operator, then \
`muhr approve ID --operator-p12 FILE` by another)";

/// How long a request waits for its second person.
pub const REQUEST_SECONDS: i64 = 24 * 3600;

/// An operator whose credential signed the statement: the caller has
/// verified the signature and that the certificate is a registered,
/// unrevoked operator credential issued by this CA.
pub struct Operator {
    /// Serial of the operator's credential certificate.
    pub serial: String,
    /// The operator's name, from the credential: the audit actor is
    /// `operator:NAME`. The approver must differ from the requester in both
    /// name and serial.
    pub name: String,
    /// CMS SignedData over [`statement`].
    pub signature: Vec<u8>,
}

impl Operator {
    fn actor(&self) -> String {
        format!("operator:{}", self.name)
    }
}

/// The act a request names, in the words both operators sign.
pub struct Act {
    /// The request's id ([`new_id`]).
    pub id: String,
    /// The audit action it becomes: `certificate.revoke`, `certificate.suspend`
    /// or `certificate.restore`.
    pub action: String,
    /// The CA certificate's serial.
    pub serial: String,
    /// The RFC 5280 reason name: the revocation reason, `certificateHold` for
    /// a suspension, None for a restoration.
    pub reason: Option<String>,
    /// When it was asked for and until when it may be approved (Unix
    /// seconds): signed too, so a lapsed request cannot be revived.
    pub requested_at: i64,
    /// Unix seconds; [`REQUEST_SECONDS`] after `requested_at` when made by
    /// [`Ca::ca_status_act`].
    pub expires_at: i64,
}

/// What each operator signs: every field of the act, one per line, so no
/// signature made for one act can be presented for another.
pub fn statement(act: &Act) -> String {
    format!(
        "muhr dual control v1\nrequest: {}\naction: {}\ncertificate: {}\nreason: {}\n\
         requested at: {}\nexpires at: {}\n",
        act.id,
        act.action,
        act.serial,
        act.reason.as_deref().unwrap_or("-"),
        act.requested_at,
        act.expires_at
    )
}

/// A fresh request id: 16 random bytes in hex.
pub fn new_id() -> Result<String, IssueError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| IssueError::Internal("no randomness".into()))?;
    Ok(hex::encode(b))
}

fn transition_of(a: &Approval) -> Result<Transition, IssueError> {
    match a.action.as_str() {
        "certificate.suspend" => Ok(Transition::Suspend),
        "certificate.restore" => Ok(Transition::Restore),
        "certificate.revoke" => {
            let p: serde_json::Value = serde_json::from_str(&a.params)
                .map_err(|e| IssueError::Internal(format!("approval {}: {e}", a.id)))?;
            let name = p["reason"].as_str().unwrap_or_default();
            let r: crate::revocation::Reason = name
                .parse()
                .map_err(|e| IssueError::Internal(format!("approval {}: {e}", a.id)))?;
            Ok(Transition::Revoke { reason: r.code() })
        }
        other => Err(refused(
            "approval",
            format!(
                "approval {} is for {other}, which this command does not carry out",
                a.id
            ),
        )),
    }
}

impl Ca {
    /// The act a status change of CA certificate `serial` would be, with a
    /// fresh id: what the requesting operator signs.
    pub async fn ca_status_act(&self, serial: &str, t: Transition) -> Result<Act, IssueError> {
        let plan = self.status_plan(serial, t).await?;
        if !plan.ca_certificate {
            return Err(refused(
                "serial",
                format!("{serial} is not a CA certificate: change its status without approval"),
            ));
        }
        let now = muhr_store::now_secs();
        Ok(Act {
            id: new_id()?,
            action: plan.action.to_string(),
            serial: serial.to_string(),
            reason: plan.reason.map(str::to_string),
            requested_at: now,
            expires_at: now + REQUEST_SECONDS,
        })
    }

    /// Records `act`, requested and signed by `by`; nothing changes yet.
    pub async fn request_ca_status_change(
        &self,
        act: &Act,
        by: &Operator,
    ) -> Result<Approval, IssueError> {
        let a = Approval {
            id: act.id.clone(),
            action: act.action.clone(),
            object: act.serial.clone(),
            params: serde_json::json!({ "reason": act.reason }).to_string(),
            requested_by: by.serial.clone(),
            requester_name: by.name.clone(),
            request_sig: by.signature.clone(),
            requested_at: act.requested_at,
            expires_at: act.expires_at,
            state: "pending".into(),
            approved_by: None,
            approver_name: None,
            approved_at: None,
        };
        let event = muhr_store::AuditEvent {
            actor: by.actor(),
            action: "approval.request".into(),
            object: act.serial.clone(),
            details: serde_json::json!({
                "approval": act.id,
                "act": act.action,
                "reason": act.reason,
                "operator_certificate": by.serial,
            }),
        };
        self.store
            .request_approval(&a, &by.signature, &event)
            .await?;
        Ok(a)
    }

    /// The request `id` as recorded, and the act it names.
    pub async fn approval(&self, id: &str) -> Result<(Approval, Act), IssueError> {
        let a = self
            .store
            .approval(id)
            .await?
            .ok_or_else(|| refused("approval", format!("no approval request {id}")))?;
        let reason = serde_json::from_str::<serde_json::Value>(&a.params)
            .ok()
            .and_then(|p| p["reason"].as_str().map(str::to_string));
        let act = Act {
            id: a.id.clone(),
            action: a.action.clone(),
            serial: a.object.clone(),
            reason,
            requested_at: a.requested_at,
            expires_at: a.expires_at,
        };
        Ok((a, act))
    }

    /// Approves request `a` as `by` and carries it out, all in one
    /// transaction; refused when `by` requested it, or it is not pending.
    pub async fn approve_ca_status_change(
        &self,
        a: &Approval,
        by: &Operator,
    ) -> Result<muhr_store::Status, IssueError> {
        if a.state != "pending" {
            return Err(refused(
                "approval",
                format!("approval {} was already {}", a.id, a.state),
            ));
        }
        if a.requested_by == by.serial || a.requester_name == by.name {
            return Err(refused(
                "approval",
                format!(
                    "{} requested it: a second, different operator must approve",
                    by.name
                ),
            ));
        }
        if a.expires_at <= muhr_store::now_secs() {
            return Err(refused(
                "approval",
                format!("approval {} has lapsed: request it again", a.id),
            ));
        }
        let t = transition_of(a)?;
        let plan: StatusPlan = self.status_plan(&a.object, t).await?;
        if !plan.ca_certificate {
            return Err(refused(
                "approval",
                "the approval names a certificate that is not a CA's",
            ));
        }
        let grant = muhr_store::AuditEvent {
            actor: by.actor(),
            action: "approval.grant".into(),
            object: a.object.clone(),
            details: serde_json::json!({
                "approval": a.id,
                "act": a.action,
                "operator_certificate": by.serial,
            }),
        };
        let act = plan.event(
            &format!("operator:{}+operator:{}", a.requester_name, by.name),
            serde_json::json!({ "approval": a.id }),
        );
        let approver = Approver {
            serial: &by.serial,
            name: &by.name,
            signature: &by.signature,
        };
        match self
            .store
            .approve_status_change(a, &approver, t, &[&grant, &act])
            .await
        {
            Ok(s) => Ok(s),
            Err(muhr_store::StoreError::Conflict(why)) => Err(refused("approval", why)),
            Err(e) => Err(e.into()),
        }
    }
}

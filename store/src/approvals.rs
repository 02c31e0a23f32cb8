//! Dual control: acts that one person must not be able to do alone are
//! recorded as a request and carried out only in the transaction that
//! records a second, different person's approval. The database's CHECK
//! constraints repeat the "different person" rule, so even a caller that
//! skipped the check in code could not store a self-approval.

use sqlx::Row;

use crate::audit::{self, AuditEvent};
use crate::status::{Status, Transition, transition_in};
use crate::{Result, Store, StoreError, now_secs};

/// A request waiting for (or having had) its second person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// The request's id, which the second operator names to approve it.
    pub id: String,
    /// The act asked for, as audit actions name it (`certificate.suspend`,
    /// `certificate.restore`, `certificate.revoke`).
    pub action: String,
    /// What the act is on: for a status change, the certificate's serial.
    pub object: String,
    /// JSON: what the act needs besides its object (a revocation reason).
    pub params: String,
    /// The requesting operator credential's serial, and its name.
    pub requested_by: String,
    /// The requesting operator's name: the approver's must differ too.
    pub requester_name: String,
    /// The requester's CMS signature over the act's statement.
    pub request_sig: Vec<u8>,
    /// When it was requested (Unix seconds).
    pub requested_at: i64,
    /// Until when it may be approved (Unix seconds); after that it lapses.
    pub expires_at: i64,
    /// `pending` or `approved`. [`Store::request_approval`] stores `pending`
    /// whatever this says.
    pub state: String,
    /// The approving operator credential's serial; `None` while pending.
    pub approved_by: Option<String>,
    /// The approving operator's name; `None` while pending.
    pub approver_name: Option<String>,
    /// When it was approved (Unix seconds); `None` while pending.
    pub approved_at: Option<i64>,
}

/// The second person: their credential's serial and name, and their
/// signature over the request's statement.
pub struct Approver<'a> {
    /// Their operator credential's serial: must differ from the requester's.
    pub serial: &'a str,
    /// Their operator name: must differ from the requester's.
    pub name: &'a str,
    /// Their CMS signature over the request's statement, kept as evidence.
    pub signature: &'a [u8],
}

impl Store {
    /// Records a request; `signature` is the requester's over its statement.
    pub async fn request_approval(
        &self,
        a: &Approval,
        signature: &[u8],
        event: &AuditEvent,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO approvals (id, action, object, params, requested_by, requester_name, \
             request_sig, requested_at, expires_at, state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending')",
        )
        .bind(&a.id)
        .bind(&a.action)
        .bind(&a.object)
        .bind(&a.params)
        .bind(&a.requested_by)
        .bind(&a.requester_name)
        .bind(signature)
        .bind(a.requested_at)
        .bind(a.expires_at)
        .execute(&mut *tx)
        .await?;
        audit::append(self.backend(), &mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The request `id` as recorded, approved or not; `None` for an unknown id.
    pub async fn approval(&self, id: &str) -> Result<Option<Approval>> {
        let row = sqlx::query(
            "SELECT id, action, object, params, requested_by, requester_name, request_sig, requested_at, \
             expires_at, state, approved_by, approver_name, approved_at \
             FROM approvals WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Approval {
                id: r.try_get("id")?,
                action: r.try_get("action")?,
                object: r.try_get("object")?,
                params: r.try_get("params")?,
                requested_by: r.try_get("requested_by")?,
                requester_name: r.try_get("requester_name")?,
                request_sig: r.try_get("request_sig")?,
                requested_at: r.try_get("requested_at")?,
                expires_at: r.try_get("expires_at")?,
                state: r.try_get("state")?,
                approved_by: r.try_get("approved_by")?,
                approver_name: r.try_get("approver_name")?,
                approved_at: r.try_get("approved_at")?,
            })
        })
        .transpose()
    }

    /// Approves request `a` (as read by the caller, who checked what it
    /// asks) and carries out its status change, in one transaction with
    /// `events`: the request is used once, by a different person, before it
    /// lapses, or nothing happens.
    pub async fn approve_status_change(
        &self,
        a: &Approval,
        by: &Approver<'_>,
        t: Transition,
        events: &[&AuditEvent],
    ) -> Result<Status> {
        let mut tx = self.pool.begin().await?;
        let now = now_secs();
        let done = sqlx::query(
            "UPDATE approvals SET state = 'approved', approved_by = $2, approver_name = $3, \
             approval_sig = $4, approved_at = $5 \
             WHERE id = $1 AND state = 'pending' AND expires_at > $5 \
             AND requested_by <> $2 AND requester_name <> $3 AND action = $6 AND object = $7",
        )
        .bind(&a.id)
        .bind(by.serial)
        .bind(by.name)
        .bind(by.signature)
        .bind(now)
        .bind(&a.action)
        .bind(&a.object)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done != 1 {
            return Err(StoreError::Conflict(format!(
                "approval {} is not pending, has lapsed, or was requested by the same person",
                a.id
            )));
        }
        let Some(status) = transition_in(&mut tx, &a.object, t).await? else {
            return Err(StoreError::Conflict(format!(
                "certificate {} no longer allows this change",
                a.object
            )));
        };
        audit::append(self.backend(), &mut tx, events).await?;
        tx.commit().await?;
        Ok(status)
    }
}

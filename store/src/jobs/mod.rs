//! The personalization line's card jobs: idempotency and supersession.
//!
//! A card job is claimed (`pending`) before its certificates are asked for and
//! finished (`done`) after they are committed. Exactly-once does not rest on the
//! claim: the certificates carry (job, role), unique in the database, so two
//! processes racing on one job can never both issue a role. The claim's lease only
//! spares a second process the wasted work while the first is still alive.

use sqlx::Row;

use crate::{CertificateRecord, Result, Store};

/// Bound parameters in a statement that takes a whole group at once, well
/// under PostgreSQL's 65,535: a larger group goes through the chunked path.
const ONE_STATEMENT_PARAMS: usize = 30_000;

/// Column types of the group statements' VALUES lists on PostgreSQL: a job
/// claimed (job, body_hash, pinfl, document, district), a certificate stored
/// (serial, der), a job finished (job, pinfl, document, district,
/// certificates, latency_us, ord).
const CLAIM_CASTS: &[&str] = &["text", "bytea", "text", "text", "text"];
const STORED_CASTS: &[&str] = &["text", "bytea"];
const FINISHED_CASTS: &[&str] = &["text", "text", "text", "text", "bigint", "bigint", "bigint"];

use muhr_pkix::reason::SUPERSEDED;

/// What a new card job claims.
#[derive(Clone, Debug)]
pub struct JobClaim {
    /// `CLIENT/REQUEST_ID`: the caller's request id, scoped by client name.
    pub job: String,
    /// SHA-256 of the request that made the job: a retry under the same id
    /// with another body is a different request.
    pub body_hash: Vec<u8>,
    /// The card holder's PINFL.
    pub pinfl: String,
    /// The identity document's number (e.g. AA1234567).
    pub document: String,
    /// The district office that issued the card (SOATO code).
    pub district: String,
}

/// A card job as stored in `card_jobs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRow {
    /// `CLIENT/REQUEST_ID`, as in [`JobClaim::job`].
    pub job: String,
    /// SHA-256 of the request that made the job.
    pub body_hash: Vec<u8>,
    /// The card holder's PINFL.
    pub pinfl: String,
    /// The identity document's number.
    pub document: String,
    /// The district office that issued the card (SOATO code).
    pub district: String,
    /// `pending` (claimed) or `done` (its certificates committed).
    pub state: String,
    /// The process holding the claim, or the last one that did.
    pub owner: String,
    /// Until when the owner's claim holds (Unix seconds); 0 once released,
    /// so another process may take the job over at once.
    pub lease_until: i64,
    /// When the job was claimed (Unix microseconds).
    pub created_at: i64,
    /// When it was finished (Unix microseconds); `None` while pending.
    pub finished_at: Option<i64>,
}

/// A job's claim: ours now, or the row another request made first.
#[derive(Clone, Debug)]
pub enum Claim {
    /// This call claimed the job: its certificates are the caller's to issue.
    New,
    /// Another request claimed it first: its row as read afterwards.
    Existing(JobRow),
}

/// A job whose certificates are all committed.
#[derive(Clone, Debug)]
pub struct FinishedJob {
    /// `CLIENT/REQUEST_ID`, as in [`JobClaim::job`].
    pub job: String,
    /// The card holder's PINFL: the job becomes this person's current card.
    pub pinfl: String,
    /// The identity document's number, recorded with the person's card.
    pub document: String,
    /// The district office that issued the card (SOATO code), for the report.
    pub district: String,
    /// How many certificates the card got, for the report.
    pub certificates: i64,
    /// How long the request took, in microseconds, for the report.
    pub latency_us: i64,
}

/// Whether finishing a card revokes the person's previous card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Supersede {
    /// Revoke the previous card's certificates (reason `superseded`).
    Revoke,
    /// Leave them as they are; the new card only becomes the current one.
    Keep,
}

fn job_from_row(r: &sqlx::any::AnyRow) -> Result<JobRow> {
    Ok(JobRow {
        job: r.try_get("job")?,
        body_hash: r.try_get("body_hash")?,
        pinfl: r.try_get("pinfl")?,
        document: r.try_get("document")?,
        district: r.try_get("district")?,
        state: r.try_get("state")?,
        owner: r.try_get("owner")?,
        lease_until: r.try_get("lease_until")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

macro_rules! job_columns {
    () => {
        "job, body_hash, pinfl, document, district, state, owner, lease_until, created_at, finished_at"
    };
}

// After the macro: the submodules use it.
mod claim;
mod finish;

impl Store {
    /// The card job `job`; `None` if it was never claimed.
    pub async fn job(&self, job: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM card_jobs WHERE job = $1"
        ))
        .bind(job)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Every certificate (pending or issued) recorded for a job.
    pub async fn job_certificates(&self, job: &str) -> Result<Vec<CertificateRecord>> {
        let rows = sqlx::query(
            "SELECT serial, issuer, profile, subject, pinfl, not_before, not_after, tbs, crl_shard, der, \
             job, job_role, status, created_at, issued_at FROM certificates WHERE job = $1 ORDER BY job_role",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(CertificateRecord {
                    intent: crate::certificates::intent_from_row(row)?,
                    der: row.try_get("der")?,
                    status: row.try_get("status")?,
                    created_at: row.try_get("created_at")?,
                    issued_at: row.try_get("issued_at")?,
                })
            })
            .collect()
    }
}

//! Revocation state and its change feed.
//!
//! A status change is one transaction: the certificate row (updated first, so
//! concurrent changes to one certificate queue), a `status_changes` row that
//! responders follow, and the audit entry.

use sqlx::Row;

use crate::{AuditEvent, Result, Store, StoreError, audit, now_micros};

/// A change of revocation state, as [`Store::change_status`] applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// To revoked, from good or suspended; final.
    Revoke {
        /// RFC 5280 reason code.
        reason: i64,
    },
    /// good → suspended (certificateHold).
    Suspend,
    /// suspended → good.
    Restore,
}

/// Revocation status as relying parties see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Upper-case hex.
    pub serial: String,
    /// The issuing CA's name.
    pub issuer: String,
    /// `good`, `suspended` or `revoked`.
    pub revocation: String,
    /// When it was revoked or suspended (Unix seconds); `None` while good.
    pub revoked_at: Option<i64>,
    /// RFC 5280 reason code (6 while suspended); `None` while good.
    pub reason: Option<i64>,
}

/// One entry of a CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// Upper-case hex.
    pub serial: String,
    /// When it was revoked or suspended (Unix seconds).
    pub revoked_at: i64,
    /// RFC 5280 reason code, if any.
    pub reason: Option<i64>,
    /// The CRL shard the certificate names (`None`: the CA's whole CRL).
    pub crl_shard: Option<i64>,
}

/// A certificate whose status changed since some moment, as it stands now:
/// what a delta CRL lists (`revocation` 'good' means restored: removeFromCRL).
#[derive(Clone, Debug)]
pub struct Changed {
    /// Upper-case hex.
    pub serial: String,
    /// As it stands now: `good` (restored), `suspended` or `revoked`.
    pub revocation: String,
    /// When it was revoked or suspended (Unix seconds); `None` once restored.
    pub revoked_at: Option<i64>,
    /// RFC 5280 reason code; `None` once restored.
    pub reason: Option<i64>,
    /// The CRL shard the certificate names (`None`: the CA's whole CRL).
    pub crl_shard: Option<i64>,
    /// Unix seconds of the latest change.
    pub changed_at: i64,
}

pub use muhr_pkix::reason::CERTIFICATE_HOLD;

impl Store {
    /// Applies `t` to certificate `serial` with its audit entry; returns the new status.
    /// Refuses (Conflict) a transition the current state does not allow.
    pub async fn change_status(
        &self,
        serial: &str,
        t: Transition,
        event: &AuditEvent,
    ) -> Result<Status> {
        self.change_status_noticed(serial, t, event, None).await
    }

    /// [`Store::change_status`], recording `notice` for the holder in the
    /// same transaction when the change is made (never when it is refused).
    pub async fn change_status_noticed(
        &self,
        serial: &str,
        t: Transition,
        event: &AuditEvent,
        notice: Option<&crate::notices::NewNotice>,
    ) -> Result<Status> {
        let mut tx = self.pool.begin().await?;
        let Some(status) = transition_in(&mut tx, serial, t).await? else {
            drop(tx);
            let current = self.status(serial).await?;
            let why = match (current, t) {
                (None, _) => format!("no certificate with serial {serial}"),
                (Some(s), _) if s.revocation == "revoked" => {
                    format!("certificate {serial} is already revoked (final)")
                }
                (Some(s), Transition::Suspend) => format!(
                    "certificate {serial} is {}, only a good certificate can be suspended",
                    s.revocation
                ),
                (Some(s), Transition::Restore) => format!(
                    "certificate {serial} is {}, only a suspended certificate can be restored",
                    s.revocation
                ),
                (Some(s), _) => format!("certificate {serial} is {}", s.revocation),
            };
            return Err(StoreError::Conflict(why));
        };
        if let Some(n) = notice {
            crate::notices::queue_in(&mut tx, std::slice::from_ref(n)).await?;
        }
        audit::append(self.backend(), &mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(status)
    }

    /// The status of an issued certificate; `None` for a serial never issued.
    pub async fn status(&self, serial: &str) -> Result<Option<Status>> {
        let row = sqlx::query(
            "SELECT serial, issuer, revocation, revoked_at, revocation_reason FROM certificates \
             WHERE serial = $1 AND status = 'issued'",
        )
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(status_from_row).transpose()
    }

    /// A certificate's status as `issuer` issued it: a serial of another
    /// issuer (the issuing CA's own, asked of the issuing CA) is none of its
    /// business, and gets `None`, which the responder answers `unknown`.
    pub async fn status_under(&self, issuer: &str, serial: &str) -> Result<Option<Status>> {
        let row = sqlx::query(
            "SELECT serial, issuer, revocation, revoked_at, revocation_reason FROM certificates \
             WHERE serial = $1 AND issuer = $2 AND status = 'issued'",
        )
        .bind(serial)
        .bind(issuer)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(status_from_row).transpose()
    }

    /// The newest change id (0 when nothing ever changed): a cheap "has anything changed?".
    pub async fn last_status_change(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS id FROM status_changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    /// How many certificates of `issuer` are revoked or suspended (benchmarks, metrics).
    pub async fn count_not_good(&self, issuer: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM certificates WHERE issuer = $1 AND revocation <> 'good'",
        )
        .bind(issuer)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Certificates of `issuer` whose status changed at or after `since`
    /// (Unix seconds) and that are not expired at `not_expired_at`, in serial
    /// order, as they stand now.
    pub async fn changed_since(
        &self,
        issuer: &str,
        since: i64,
        not_expired_at: i64,
    ) -> Result<Vec<Changed>> {
        let rows = sqlx::query(
            "SELECT c.serial, c.revocation, c.revoked_at, c.revocation_reason, c.crl_shard, ch.last_at \
             FROM certificates c JOIN \
             (SELECT serial, MAX(at) AS last_at FROM status_changes WHERE issuer = $1 AND at >= $2 GROUP BY serial) ch \
             ON ch.serial = c.serial \
             WHERE c.status = 'issued' AND c.not_after >= $3 ORDER BY c.serial",
        )
        .bind(issuer)
        .bind(since.saturating_mul(1_000_000))
        .bind(not_expired_at)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Changed {
                    serial: r.try_get("serial")?,
                    revocation: r.try_get("revocation")?,
                    revoked_at: r.try_get("revoked_at")?,
                    reason: r.try_get("revocation_reason")?,
                    crl_shard: r.try_get("crl_shard")?,
                    changed_at: r.try_get::<i64, _>("last_at")? / 1_000_000,
                })
            })
            .collect()
    }
}

fn status_from_row(row: &sqlx::any::AnyRow) -> Result<Status> {
    Ok(Status {
        serial: row.try_get("serial")?,
        issuer: row.try_get("issuer")?,
        revocation: row.try_get("revocation")?,
        revoked_at: row.try_get("revoked_at")?,
        reason: row.try_get("revocation_reason")?,
    })
}

impl Store {
    /// Status changes after `after` (by feed id), oldest first, at most `limit`.
    pub async fn status_changes_since(&self, after: i64, limit: i64) -> Result<Vec<(i64, String)>> {
        let rows =
            sqlx::query("SELECT id, serial FROM status_changes WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("serial")?)))
            .collect()
    }
}

/// Revokes many certificates in one statement per [`crate::rows::CHUNK`] and
/// feeds their changes; those already revoked (or not issued) are left out of
/// the answer, as [`transition_in`] answers `None` for them.
pub(crate) async fn revoke_many_in(
    tx: &mut crate::Tx<'_>,
    serials: &[&str],
    reason: i64,
) -> Result<Vec<Status>> {
    change_many_in(tx, serials, "revoked", reason, false).await
}

/// As [`revoke_many_in`], certificates still being issued included: their
/// intent is recorded, they are not stored yet, and they will be stored
/// revoked (storing a certificate leaves its revocation as it is). What a
/// registry event does, so that a certificate under way when a death is
/// recorded is not stored valid afterwards.
pub(crate) async fn revoke_many_in_flight(
    tx: &mut crate::Tx<'_>,
    serials: &[&str],
    reason: i64,
) -> Result<Vec<Status>> {
    change_many_in(tx, serials, "revoked", reason, true).await
}

/// Suspends many good certificates as [`revoke_many_in_flight`] revokes;
/// those not good are left out of the answer.
pub(crate) async fn suspend_many_in_flight(
    tx: &mut crate::Tx<'_>,
    serials: &[&str],
) -> Result<Vec<Status>> {
    change_many_in(tx, serials, "suspended", CERTIFICATE_HOLD, true).await
}

async fn change_many_in(
    tx: &mut crate::Tx<'_>,
    serials: &[&str],
    to: &str,
    reason: i64,
    pending_too: bool,
) -> Result<Vec<Status>> {
    let statuses = if pending_too {
        "status IN ('pending', 'issued')"
    } else {
        "status = 'issued'"
    };
    let now = crate::now_secs();
    let from = if to == "revoked" {
        "revocation <> 'revoked'"
    } else {
        "revocation = 'good'"
    };
    let mut changed = Vec::with_capacity(serials.len());
    for chunk in serials.chunks(crate::rows::CHUNK) {
        let sql = format!(
            "UPDATE certificates SET revocation = '{to}', revocation_reason = $1, revoked_at = $2 \
             WHERE serial IN ({}) AND {statuses} AND {from} \
             RETURNING serial, issuer, revocation, revoked_at, revocation_reason",
            crate::rows::list(chunk.len(), 3)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(reason).bind(now);
        for serial in chunk {
            q = q.bind(*serial);
        }
        let mut statuses = q
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(status_from_row)
            .collect::<Result<Vec<_>>>()?;
        statuses.sort_by(|a, b| a.serial.cmp(&b.serial));
        changed.extend(statuses);
    }
    let at = now_micros();
    for chunk in changed.chunks(crate::rows::CHUNK) {
        let sql = format!(
            "INSERT INTO status_changes (serial, issuer, revocation, revoked_at, reason, at) VALUES {}",
            crate::rows::values(crate::Backend::Sqlite, chunk.len(), 6, 1, &[])
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for st in chunk {
            q = q
                .bind(&st.serial)
                .bind(&st.issuer)
                .bind(&st.revocation)
                .bind(st.revoked_at)
                .bind(st.reason)
                .bind(at);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(changed)
}

/// Applies `t` inside the caller's transaction and feeds the change to
/// responders; `None` when the certificate's state does not allow it.
pub(crate) async fn transition_in(
    tx: &mut crate::Tx<'_>,
    serial: &str,
    t: Transition,
) -> Result<Option<Status>> {
    let now = crate::now_secs();
    let (sql, reason, at): (&str, Option<i64>, Option<i64>) = match t {
        Transition::Revoke { reason } => (
            "UPDATE certificates SET revocation = 'revoked', revocation_reason = $1, revoked_at = $2 \
                 WHERE serial = $3 AND status = 'issued' AND revocation <> 'revoked'",
            Some(reason),
            Some(now),
        ),
        Transition::Suspend => (
            "UPDATE certificates SET revocation = 'suspended', revocation_reason = $1, revoked_at = $2 \
                 WHERE serial = $3 AND status = 'issued' AND revocation = 'good'",
            Some(CERTIFICATE_HOLD),
            Some(now),
        ),
        Transition::Restore => (
            "UPDATE certificates SET revocation = 'good', revocation_reason = $1, revoked_at = $2 \
                 WHERE serial = $3 AND status = 'issued' AND revocation = 'suspended'",
            None,
            None,
        ),
    };
    let r = sqlx::query(sql)
        .bind(reason)
        .bind(at)
        .bind(serial)
        .execute(&mut **tx)
        .await?;
    if r.rows_affected() != 1 {
        return Ok(None);
    }
    let row = sqlx::query(
            "SELECT serial, issuer, revocation, revoked_at, revocation_reason FROM certificates WHERE serial = $1",
        )
        .bind(serial)
        .fetch_one(&mut **tx)
        .await?;
    let status = status_from_row(&row)?;
    sqlx::query(
            "INSERT INTO status_changes (serial, issuer, revocation, revoked_at, reason, at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&status.serial)
        .bind(&status.issuer)
        .bind(&status.revocation)
        .bind(status.revoked_at)
        .bind(status.reason)
        .bind(now_micros())
        .execute(&mut **tx)
        .await?;
    Ok(Some(status))
}

/// One entry of a certificate's status history, as the change feed has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// When the change was committed, Unix microseconds.
    pub at_micros: i64,
    /// The status from then on: `good`, `suspended` or `revoked`.
    pub revocation: String,
    /// The RFC 5280 reason code, when revoked or suspended.
    pub reason: Option<i64>,
}

impl Store {
    /// Every status change of `serial`, oldest first: what judging a
    /// signature at a proven past time needs, since the certificate's row
    /// keeps only the latest (a suspension later turned into a revocation
    /// leaves no trace there).
    pub async fn status_history(&self, serial: &str) -> Result<Vec<HistoryEntry>> {
        let rows = sqlx::query(
            "SELECT at, revocation, reason FROM status_changes WHERE serial = $1 ORDER BY id",
        )
        .bind(serial)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HistoryEntry {
                    at_micros: r.try_get("at")?,
                    revocation: r.try_get("revocation")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }
}

//! The notices outbox: what a person is to be told about their certificates
//! (expiring soon, suspended, restored, revoked, a name the registry
//! changed), recorded in the transaction of its cause and delivered later by
//! a worker (the `muhr-notices` crate) to the notification system.
//!
//! A notice's key names its cause, so a cause recorded twice (a retried
//! event, two nodes scanning for expiring certificates) makes one notice.
//! Delivery is leased: a worker claims due notices by moving their next
//! attempt to the lease's end in one conditional statement (on PostgreSQL
//! with `FOR UPDATE SKIP LOCKED`), so two workers never hold one notice at
//! the same time, and a worker that dies gives its notices back when the
//! lease runs out.

use sqlx::Row;

use crate::audit::{self, AuditEvent};
use crate::{Backend, Result, Store, StoreError, Tx, now_micros, now_secs, rows};

/// What a notice is about; the closed list the table's CHECK repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    /// A certificate's notAfter is near (one notice per configured threshold).
    Expiring,
    /// Suspended (certificateHold) by someone other than the holder.
    Suspended,
    /// A suspension was lifted.
    Restored,
    /// Revoked by someone other than the holder, or because of a registry
    /// event (death, an invalidated document, a changed name).
    Revoked,
    /// The registry changed the person's name: certificates with the old
    /// name will be revoked after the grace period; new ones are to be asked for.
    NameChanged,
}

impl NoticeKind {
    /// The name stored, listed and sent in the notice's JSON.
    pub fn name(self) -> &'static str {
        match self {
            NoticeKind::Expiring => "expiring",
            NoticeKind::Suspended => "suspended",
            NoticeKind::Restored => "restored",
            NoticeKind::Revoked => "revoked",
            NoticeKind::NameChanged => "name_changed",
        }
    }

    /// Every kind, in the order documentation lists them.
    pub const ALL: [NoticeKind; 5] = [
        NoticeKind::Expiring,
        NoticeKind::Suspended,
        NoticeKind::Restored,
        NoticeKind::Revoked,
        NoticeKind::NameChanged,
    ];
}

impl std::fmt::Display for NoticeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for NoticeKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        NoticeKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = NoticeKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown notice kind {s:?}: one of {}", names.join(", "))
            })
    }
}

/// A notice to record. Only what the person must be told: no name, no
/// address, no document number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotice {
    /// The cause, unique: the same cause never makes two notices. By
    /// convention `revoked:SERIAL`, `suspended:SERIAL:MICROS`,
    /// `restored:SERIAL:MICROS`, `expiring-DAYS:SERIAL`,
    /// `registry:EVENT_ID:SERIAL` (or `registry:EVENT_ID` when it names no
    /// certificate). The receiver deduplicates by it.
    pub key: String,
    /// The person told.
    pub pinfl: String,
    /// The certificate it is about (upper-case hex); `None` when it is about
    /// the person (a changed name).
    pub serial: Option<String>,
    /// What happened.
    pub kind: NoticeKind,
    /// The RFC 5280 reason name of a revocation or suspension
    /// (`keyCompromise`, `certificateHold`...), if any.
    pub reason: Option<String>,
    /// `YYYY-MM-DD` (UTC): the day it is about (the change, the notAfter,
    /// the registry's date).
    pub on_date: String,
}

/// A notice as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The cause; the notice's id for the receiver.
    pub key: String,
    /// The person told.
    pub pinfl: String,
    /// The certificate it is about, if any.
    pub serial: Option<String>,
    /// `expiring`, `suspended`, `restored`, `revoked` or `name_changed`.
    pub kind: String,
    /// The RFC 5280 reason name, if any.
    pub reason: Option<String>,
    /// `YYYY-MM-DD`: the day it is about.
    pub on_date: String,
    /// When it was recorded (Unix microseconds).
    pub created_at: i64,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Deliveries started (a claim counts one).
    pub attempts: i64,
    /// When a worker may take it next (Unix seconds).
    pub next_attempt_at: i64,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When the receiver accepted it (Unix seconds).
    pub delivered_at: Option<i64>,
}

/// The states a notice goes through, for listing.
pub const STATES: [&str; 3] = ["pending", "delivered", "failed"];

const COLUMNS: &str = "key, pinfl, serial, kind, reason, on_date, created_at, state, attempts, \
                       next_attempt_at, last_error, delivered_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Notice> {
    Ok(Notice {
        key: r.try_get("key")?,
        pinfl: r.try_get("pinfl")?,
        serial: r.try_get("serial")?,
        kind: r.try_get("kind")?,
        reason: r.try_get("reason")?,
        on_date: r.try_get("on_date")?,
        created_at: r.try_get("created_at")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

/// Records `notices` inside the caller's transaction, due at once; a key
/// already recorded (by this cause's earlier run, or another node) is left
/// as it is. One statement per [`rows::CHUNK`] notices.
pub(crate) async fn queue_in(tx: &mut Tx<'_>, notices: &[NewNotice]) -> Result<()> {
    let now_us = now_micros();
    let now = now_secs();
    for chunk in notices.chunks(rows::CHUNK) {
        let sql = format!(
            "INSERT INTO notices (key, pinfl, serial, kind, reason, on_date, created_at, state, \
             attempts, next_attempt_at) VALUES {} ON CONFLICT (key) DO NOTHING",
            rows::values(Backend::Sqlite, chunk.len(), 10, 1, &[])
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for n in chunk {
            q = q
                .bind(&n.key)
                .bind(&n.pinfl)
                .bind(n.serial.clone())
                .bind(n.kind.name())
                .bind(n.reason.clone())
                .bind(&n.on_date)
                .bind(now_us)
                .bind("pending")
                .bind(0i64)
                .bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// `YYYY-MM-DD` (UTC) of the Unix-seconds column `col`, in each engine's SQL.
fn sql_date(backend: Backend, col: &str) -> String {
    match backend {
        Backend::Sqlite => format!("strftime('%Y-%m-%d', {col}, 'unixepoch')"),
        Backend::Postgres => {
            format!("to_char(to_timestamp({col}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
        }
    }
}

/// Certificates read per transaction of the expiry scan.
const SCAN_PAGE: i64 = 1000;

impl Store {
    /// Records `notices` in a transaction of their own (causes that have no
    /// transaction to join); keys already recorded are left as they are.
    pub async fn queue_notices(&self, notices: &[NewNotice]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        queue_in(&mut tx, notices).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes up to `limit` due notices for `owner` until `lease_secs` from
    /// now, counting an attempt for each. A notice held by a live lease is
    /// never handed to a second owner: the claim is one conditional
    /// statement (PostgreSQL skips rows another claim has locked, and
    /// re-checks the rest; SQLite runs one writer at a time). A notice whose
    /// owner died comes due again when its lease ends.
    pub async fn claim_notices(
        &self,
        owner: &str,
        limit: i64,
        lease_secs: i64,
    ) -> Result<Vec<Notice>> {
        let now = now_secs();
        let until = now.saturating_add(lease_secs.max(1));
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE notices SET lease_owner = $1, lease_until = $2, next_attempt_at = $2, \
             attempts = attempts + 1 \
             WHERE key IN (SELECT key FROM notices WHERE state = 'pending' AND next_attempt_at <= $3 \
             ORDER BY next_attempt_at LIMIT $4{lock}) \
             AND state = 'pending' AND next_attempt_at <= $3 RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(until)
            .bind(now)
            .bind(limit.max(1))
            .fetch_all(&self.pool)
            .await?;
        let mut claimed = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
        claimed.sort_by(|a, b| (a.created_at, &a.key).cmp(&(b.created_at, &b.key)));
        Ok(claimed)
    }

    /// The receiver accepted notice `key`: it is done. `false` when `owner`
    /// no longer holds it (its lease ran out and another worker took it).
    pub async fn notice_delivered(&self, key: &str, owner: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE notices SET state = 'delivered', delivered_at = $1, lease_owner = NULL, \
             lease_until = NULL, last_error = NULL \
             WHERE key = $2 AND lease_owner = $3 AND state = 'pending'",
        )
        .bind(now_secs())
        .bind(key)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// An attempt at notice `key` failed with `error` (which must hold no
    /// secret): it is tried again at `retry_at` (Unix seconds), or, with
    /// `None`, it is `failed` and stays so until an operator puts it back.
    /// `false` when `owner` no longer holds it.
    pub async fn notice_attempt_failed(
        &self,
        key: &str,
        owner: &str,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<bool> {
        let error: String = error.chars().take(500).collect();
        let r =
            match retry_at {
                Some(at) => sqlx::query(
                    "UPDATE notices SET next_attempt_at = $1, last_error = $2, lease_owner = NULL, \
                     lease_until = NULL WHERE key = $3 AND lease_owner = $4 AND state = 'pending'",
                )
                .bind(at)
                .bind(&error)
                .bind(key)
                .bind(owner)
                .execute(&self.pool)
                .await?,
                None => {
                    sqlx::query(
                        "UPDATE notices SET state = 'failed', last_error = $1, lease_owner = NULL, \
                     lease_until = NULL WHERE key = $2 AND lease_owner = $3 AND state = 'pending'",
                    )
                    .bind(&error)
                    .bind(key)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?
                }
            };
        Ok(r.rows_affected() == 1)
    }

    /// Notice `key`; `None` when there is none.
    pub async fn notice(&self, key: &str) -> Result<Option<Notice>> {
        let sql = format!("SELECT {COLUMNS} FROM notices WHERE key = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Notices for operators, newest first, at most `limit`: in `state`
    /// (`pending`, `delivered`, `failed`) and of person `pinfl` when given.
    pub async fn notices(
        &self,
        state: Option<&str>,
        pinfl: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Notice>> {
        if let Some(s) = state
            && !STATES.contains(&s)
        {
            return Err(StoreError::Conflict(format!(
                "unknown notice state {s:?}: one of {}",
                STATES.join(", ")
            )));
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM notices WHERE ($1 IS NULL OR state = $1) \
             AND ($2 IS NULL OR pinfl = $2) ORDER BY created_at DESC, key LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(state)
            .bind(pinfl)
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Person `pinfl`'s notices, newest first, at most `limit`: what the
    /// citizens' API shows them. Nobody else's, whatever the caller asks.
    pub async fn notices_of_person(&self, pinfl: &str, limit: i64) -> Result<Vec<Notice>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM notices WHERE pinfl = $1 ORDER BY created_at DESC, key LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pinfl)
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Puts failed notice `key` back to pending, due now, its attempts
    /// counted afresh, with `event` in the audit chain. Refuses (Conflict)
    /// a key that is unknown or not failed: a delivered notice is never sent
    /// twice by this, and a pending one is already on its way.
    pub async fn retry_notice(&self, key: &str, event: &AuditEvent) -> Result<Notice> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE notices SET state = 'pending', attempts = 0, next_attempt_at = $1, \
             lease_owner = NULL, lease_until = NULL WHERE key = $2 AND state = 'failed' \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_secs())
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            drop(tx);
            return Err(StoreError::Conflict(match self.notice(key).await? {
                None => format!("no notice with key {key:?}"),
                Some(n) => format!(
                    "notice {key:?} is {}, only a failed notice can be retried",
                    n.state
                ),
            }));
        };
        let notice = from_row(&row)?;
        audit::append(self.backend, &mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(notice)
    }

    /// Queues an `expiring` notice (key `expiring-DAYS:SERIAL`) for every
    /// person's issued certificate not revoked (a suspended one may yet be
    /// restored) whose notAfter is within each of `thresholds_days` of `now`
    /// (Unix seconds) and still ahead, and
    /// returns how many were queued. Incremental: each threshold keeps a
    /// cursor in (notAfter, serial) order, so a scan reads only certificates
    /// that entered its window since the last scan, a page at a time, each
    /// page in one transaction with the cursor's move; concurrent scans of
    /// one threshold queue behind its cursor row. A certificate already
    /// inside a smaller threshold's window when first seen gets only that
    /// threshold's notice. The first scan of a threshold starts at `now`:
    /// certificates already expired are never announced.
    pub async fn queue_expiry_notices(&self, now: i64, thresholds_days: &[u32]) -> Result<u64> {
        let mut days: Vec<i64> = thresholds_days.iter().map(|d| i64::from(*d)).collect();
        days.sort_unstable();
        days.dedup();
        let mut queued = 0u64;
        for (i, d) in days.iter().enumerate() {
            // Below this, the next smaller threshold announces the certificate.
            let floor = i
                .checked_sub(1)
                .map(|j| now.saturating_add(days[j].saturating_mul(86_400)))
                .unwrap_or(now);
            let upper = now.saturating_add(d.saturating_mul(86_400));
            loop {
                let (n, more) = self.expiry_page(*d, now, floor, upper).await?;
                queued += n;
                if !more {
                    break;
                }
            }
        }
        Ok(queued)
    }

    /// One page of the expiry scan for threshold `days`: returns the notices
    /// queued and whether more certificates may be in the window.
    async fn expiry_page(
        &self,
        days: i64,
        now: i64,
        floor: i64,
        upper: i64,
    ) -> Result<(u64, bool)> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO notice_expiry_cursors (days, scanned_to, scanned_serial, updated_at) \
             VALUES ($1, $2, NULL, $2) ON CONFLICT (days) DO NOTHING",
        )
        .bind(days)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Read by an update of itself: the row's lock is taken as it is read,
        // so two scans of one threshold run one after the other.
        let cursor = sqlx::query(
            "UPDATE notice_expiry_cursors SET days = days WHERE days = $1 \
             RETURNING scanned_to, scanned_serial",
        )
        .bind(days)
        .fetch_one(&mut *tx)
        .await?;
        let at: i64 = cursor.try_get("scanned_to")?;
        let serial: Option<String> = cursor.try_get("scanned_serial")?;
        if at >= upper && serial.is_none() {
            return Ok((0, false));
        }
        let date = sql_date(self.backend, "not_after");
        // After the cursor: past its notAfter, or at it and past its serial.
        let after = match serial {
            Some(_) => "(not_after > $1 OR (not_after = $1 AND serial > $4))",
            None => "not_after > $1",
        };
        let sql = format!(
            "SELECT serial, pinfl, not_after, status, revocation, {date} AS on_date \
             FROM certificates WHERE pinfl IS NOT NULL AND not_after >= $1 AND {after} \
             AND not_after <= $2 ORDER BY not_after, serial LIMIT $3"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at).bind(upper);
        q = match serial {
            Some(s) => q.bind(SCAN_PAGE).bind(s),
            None => q.bind(SCAN_PAGE),
        };
        let page = q.fetch_all(&mut *tx).await?;
        let mut notices = Vec::new();
        let mut last: Option<(i64, String)> = None;
        for r in &page {
            let serial: String = r.try_get("serial")?;
            let not_after: i64 = r.try_get("not_after")?;
            let status: String = r.try_get("status")?;
            let revocation: String = r.try_get("revocation")?;
            if status == "issued" && revocation != "revoked" && not_after > floor {
                notices.push(NewNotice {
                    key: format!("expiring-{days}:{serial}"),
                    pinfl: r.try_get("pinfl")?,
                    serial: Some(serial.clone()),
                    kind: NoticeKind::Expiring,
                    reason: None,
                    on_date: r.try_get("on_date")?,
                });
            }
            last = Some((not_after, serial));
        }
        let more = page.len() as i64 == SCAN_PAGE;
        let (to, to_serial) = match (more, last) {
            (true, Some((a, s))) => (a, Some(s)),
            _ => (upper, None),
        };
        queue_in(&mut tx, &notices).await?;
        sqlx::query(
            "UPDATE notice_expiry_cursors SET scanned_to = $1, scanned_serial = $2, updated_at = $3 \
             WHERE days = $4",
        )
        .bind(to)
        .bind(to_serial)
        .bind(now_secs())
        .bind(days)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((notices.len() as u64, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_unknown_is_refused() {
        for k in NoticeKind::ALL {
            assert_eq!(k.name().parse::<NoticeKind>(), Ok(k));
        }
        assert!("deleted".parse::<NoticeKind>().is_err());
    }
}

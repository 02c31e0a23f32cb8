//! Revocation state and its change feed, and the CRLs signed from it.
//!
//! A status change is one transaction: the certificate row (updated first, so
//! concurrent changes to one certificate queue), a `status_changes` row that
//! responders follow, and the audit entry.

use sqlx::Row;

use crate::{AuditEvent, Result, Store, StoreError, audit, now_micros};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// To revoked, from good or suspended; final.
    Revoke { reason: i64 },
    /// good → suspended (certificateHold).
    Suspend,
    /// suspended → good.
    Restore,
}

/// Revocation status as relying parties see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub serial: String,
    pub issuer: String,
    pub revocation: String,
    pub revoked_at: Option<i64>,
    pub reason: Option<i64>,
}

/// One entry of a CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    pub serial: String,
    pub revoked_at: i64,
    pub reason: Option<i64>,
    pub crl_shard: Option<i64>,
}

/// A certificate whose status changed since some moment, as it stands now:
/// what a delta CRL lists (`revocation` 'good' means restored: removeFromCRL).
#[derive(Clone, Debug)]
pub struct Changed {
    pub serial: String,
    pub revocation: String,
    pub revoked_at: Option<i64>,
    pub reason: Option<i64>,
    pub crl_shard: Option<i64>,
    /// Unix seconds of the latest change.
    pub changed_at: i64,
}

#[derive(Clone, Debug)]
pub struct StoredCrl {
    pub issuer: String,
    /// 'full' (complete for its scope) or 'delta'.
    pub kind: String,
    /// `None`: the whole CA; `Some(n)`: shard n.
    pub shard: Option<i64>,
    /// Deltas: the number of the complete CRL they extend.
    pub base_number: Option<i64>,
    pub number: i64,
    pub this_update: i64,
    pub next_update: i64,
    pub entries: i64,
    pub der: Vec<u8>,
}

/// RFC 5280 certificateHold.
pub const CERTIFICATE_HOLD: i64 = 6;

impl Store {
    /// Applies `t` to certificate `serial` with its audit entry; returns the new status.
    /// Refuses (Conflict) a transition the current state does not allow.
    pub async fn change_status(
        &self,
        serial: &str,
        t: Transition,
        event: &AuditEvent,
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

    /// The next CRL number for `issuer` (numbers never repeat, across kinds).
    pub async fn next_crl_number(&self, issuer: &str) -> Result<i64> {
        let row =
            sqlx::query("SELECT COALESCE(MAX(number), 0) + 1 AS n FROM crls WHERE issuer = $1")
                .bind(issuer)
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get("n")?)
    }

    /// Stores signed CRLs in one transaction, with one audit entry naming
    /// them (every use of a CA key is in the chain); a number already taken
    /// (another node was faster) is a Conflict and stores none, and those
    /// signatures are never published.
    pub async fn save_crls(&self, crls: &[StoredCrl]) -> Result<()> {
        let Some(first) = crls.first() else {
            return Ok(());
        };
        let event = AuditEvent {
            actor: format!("ca:{}", first.issuer),
            action: "crl.sign".into(),
            object: first.issuer.clone(),
            details: serde_json::json!({
                "crls": crls.iter().map(|c| serde_json::json!({
                    "number": c.number,
                    "kind": c.kind,
                    "shard": c.shard,
                    "base_number": c.base_number,
                    "entries": c.entries,
                    "this_update": c.this_update,
                    "next_update": c.next_update,
                })).collect::<Vec<_>>(),
            }),
        };
        let mut tx = self.pool.begin().await?;
        for crl in crls {
            let r = sqlx::query(
                "INSERT INTO crls (issuer, kind, shard, base_number, number, this_update, next_update, entries, der) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&crl.issuer)
            .bind(&crl.kind)
            .bind(crl.shard.unwrap_or(-1))
            .bind(crl.base_number)
            .bind(crl.number)
            .bind(crl.this_update)
            .bind(crl.next_update)
            .bind(crl.entries)
            .bind(&crl.der)
            .execute(&mut *tx)
            .await;
            match r {
                Ok(_) => {}
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                    return Err(StoreError::Conflict(format!(
                        "CRL number {} of {} already exists",
                        crl.number, crl.issuer
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        crate::audit::append(self.backend(), &mut tx, &[&event]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest CRL of one kind and scope (`shard` `None`: the whole CA).
    pub async fn latest_crl(
        &self,
        issuer: &str,
        kind: &str,
        shard: Option<i64>,
    ) -> Result<Option<StoredCrl>> {
        self.newest_crl(issuer, kind, shard, true).await
    }

    /// As `latest_crl` without the DER (empty): what schedulers need, without
    /// moving 53 MB out of the database each time they look.
    pub async fn latest_crl_info(
        &self,
        issuer: &str,
        kind: &str,
        shard: Option<i64>,
    ) -> Result<Option<StoredCrl>> {
        self.newest_crl(issuer, kind, shard, false).await
    }

    async fn newest_crl(
        &self,
        issuer: &str,
        kind: &str,
        shard: Option<i64>,
        with_der: bool,
    ) -> Result<Option<StoredCrl>> {
        let sql = if with_der {
            "SELECT issuer, kind, shard, base_number, number, this_update, next_update, entries, der \
             FROM crls WHERE issuer = $1 AND kind = $2 AND shard = $3 ORDER BY number DESC LIMIT 1"
        } else {
            "SELECT issuer, kind, shard, base_number, number, this_update, next_update, entries \
             FROM crls WHERE issuer = $1 AND kind = $2 AND shard = $3 ORDER BY number DESC LIMIT 1"
        };
        let row = sqlx::query(sql)
            .bind(issuer)
            .bind(kind)
            .bind(shard.unwrap_or(-1))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let shard: i64 = r.try_get("shard")?;
            Ok(StoredCrl {
                issuer: r.try_get("issuer")?,
                kind: r.try_get("kind")?,
                shard: (shard >= 0).then_some(shard),
                base_number: r.try_get("base_number")?,
                number: r.try_get("number")?,
                this_update: r.try_get("this_update")?,
                next_update: r.try_get("next_update")?,
                entries: r.try_get("entries")?,
                der: if with_der {
                    r.try_get("der")?
                } else {
                    Vec::new()
                },
            })
        })
        .transpose()
    }

    /// Drops CRLs made before `before` that a newer CRL of the same kind and
    /// scope replaces. The newest of each is always kept (it is served, and
    /// numbering continues from it).
    pub async fn prune_crls(&self, before: i64) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM crls WHERE this_update < $1 AND number < \
             (SELECT MAX(n.number) FROM crls n WHERE n.issuer = crls.issuer AND n.kind = crls.kind AND n.shard = crls.shard)",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Records that `issuer` assigns certificates to `shards` CRL shards from
    /// now on (idempotent).
    pub async fn record_crl_shards(&self, issuer: &str, shards: i64) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO crl_shard_counts (issuer, shards, first_used) VALUES ($1, $2, $3)",
        )
        .bind(issuer)
        .bind(shards)
        .bind(crate::now_secs())
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The largest shard count `issuer` ever used: CRLs are due for shards
    /// 0..that, whatever the configuration says today.
    pub async fn crl_shard_count(&self, issuer: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(shards), 0) AS n FROM crl_shard_counts WHERE issuer = $1",
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

impl Store {
    /// Benchmarks only: `n` certificates of `issuer` with random serials and
    /// no certificate body, inserted in large transactions; one in
    /// `revoked_every` is revoked (keyCompromise), the others good.
    /// `crl_shard` assigns each serial its CRL shard, as issuance would.
    /// Returns the serials.
    pub async fn insert_synthetic(
        &self,
        issuer: &str,
        n: usize,
        not_after: i64,
        revoked_every: usize,
        crl_shard: impl Fn(&[u8]) -> Option<i64>,
    ) -> Result<Vec<String>> {
        const ROWS: usize = 500;
        let now = crate::now_secs();
        let mut all = Vec::with_capacity(n);
        let mut left = n;
        while left > 0 {
            let mut tx = self.pool.begin().await?;
            for _ in 0..(left.min(50_000) / ROWS).max(1) {
                let rows = left.min(ROWS);
                if rows == 0 {
                    break;
                }
                let mut sql = String::from(
                    "INSERT INTO certificates (serial, issuer, profile, subject, not_before, not_after, tbs, \
                     crl_shard, status, created_at, revocation, revoked_at, revocation_reason) VALUES ",
                );
                let mut serials = Vec::with_capacity(rows);
                for i in 0..rows {
                    let mut b = [0u8; 20];
                    synthetic_serial_bytes(&mut b);
                    b[0] = (b[0] & 0x3f) | 0x40;
                    serials.push((hex::encode_upper(b), crl_shard(&b)));
                    let p = i * 3;
                    if i > 0 {
                        sql.push(',');
                    }
                    let revoked = revoked_every > 0 && (all.len() + i) % revoked_every == 0;
                    let state = if revoked {
                        format!("'revoked', {now}, 1")
                    } else {
                        "'good', NULL, NULL".to_string()
                    };
                    sql.push_str(&format!(
                        "(${}, ${}, 'bench', 'CN=bench', {now}, {not_after}, $1, ${}, 'issued', {now}, {state})",
                        p + 2,
                        p + 3,
                        p + 4
                    ));
                }
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(Vec::<u8>::new());
                for (s, shard) in &serials {
                    q = q.bind(s.clone()).bind(issuer.to_string()).bind(*shard);
                }
                q.execute(&mut *tx).await?;
                all.extend(serials.into_iter().map(|(s, _)| s));
                left -= rows;
            }
            tx.commit().await?;
        }
        Ok(all)
    }
}

fn synthetic_serial_bytes(b: &mut [u8]) {
    use sha2::Digest;
    // Uniqueness, not secrecy, is what synthetic serials need.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let c = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = format!(
        "{c}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let h = sha2::Sha256::digest(seed.as_bytes());
    b.copy_from_slice(&h[..b.len()]);
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

/// A delegated OCSP signer: certificate and the label of its key.
#[derive(Clone, Debug)]
pub struct OcspSigner {
    pub serial: String,
    pub issuer: String,
    pub key_label: String,
    pub key_spec: String,
    pub not_before: i64,
    pub not_after: i64,
    pub der: Vec<u8>,
}

impl Store {
    pub async fn save_ocsp_signer(&self, s: &OcspSigner) -> Result<()> {
        sqlx::query(
            "INSERT INTO ocsp_signers (serial, issuer, key_label, key_spec, not_before, not_after, der, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.serial)
        .bind(&s.issuer)
        .bind(&s.key_label)
        .bind(&s.key_spec)
        .bind(s.not_before)
        .bind(s.not_after)
        .bind(&s.der)
        .bind(crate::now_secs())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The signer of `issuer` valid longest, if any is valid now.
    pub async fn current_ocsp_signer(&self, issuer: &str) -> Result<Option<OcspSigner>> {
        let now = crate::now_secs();
        let row = sqlx::query(
            "SELECT serial, issuer, key_label, key_spec, not_before, not_after, der FROM ocsp_signers \
             WHERE issuer = $1 AND not_before <= $2 AND not_after > $2 ORDER BY not_after DESC LIMIT 1",
        )
        .bind(issuer)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(OcspSigner {
                serial: r.try_get("serial")?,
                issuer: r.try_get("issuer")?,
                key_label: r.try_get("key_label")?,
                key_spec: r.try_get("key_spec")?,
                not_before: r.try_get("not_before")?,
                not_after: r.try_get("not_after")?,
                der: r.try_get("der")?,
            })
        })
        .transpose()
    }

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

/// Being the one node that does a periodic job (CRL generation) in a
/// multi-node deployment: a PostgreSQL session advisory lock, held by a
/// connection taken out of the pool, released when that connection closes
/// (this value dropped, or the process gone). SQLite is single-node: always leader.
pub struct Leadership {
    conn: Option<sqlx::AnyConnection>,
}

impl Leadership {
    /// Whether the lock is still held (its connection still answers).
    pub async fn alive(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(c) => sqlx::query("SELECT 1").execute(&mut *c).await.is_ok(),
        }
    }
}

impl Store {
    /// Tries to become the leader for `job`; `None` when another node is.
    pub async fn try_leadership(&self, job: &str) -> Result<Option<Leadership>> {
        if self.backend == crate::Backend::Sqlite {
            return Ok(Some(Leadership { conn: None }));
        }
        // A stable 63-bit key per job name (FNV-1a).
        let key = job.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }) >> 1;
        let mut conn = self.pool.acquire().await?.detach();
        let row = sqlx::query("SELECT pg_try_advisory_lock($1) AS ok")
            .bind(key as i64)
            .fetch_one(&mut conn)
            .await?;
        let ok: bool = row.try_get("ok")?;
        Ok(ok.then_some(Leadership { conn: Some(conn) }))
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
    let now = crate::now_secs();
    let mut changed = Vec::with_capacity(serials.len());
    for chunk in serials.chunks(crate::rows::CHUNK) {
        let sql = format!(
            "UPDATE certificates SET revocation = 'revoked', revocation_reason = $1, revoked_at = $2 \
             WHERE serial IN ({}) AND status = 'issued' AND revocation <> 'revoked' \
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

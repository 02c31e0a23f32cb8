//! The audit chain: an append-only list of CA acts in which each entry's hash
//! covers the previous entry's hash and the entry's own fields. Changing,
//! removing or reordering any entry breaks every hash after it, and
//! `verify` names the first entry where the chain no longer holds.

use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row};

use crate::{Result, Tx, now_micros};

/// One act to record. `object` names what was acted on (a serial, a CA name);
/// `details` is JSON with whatever else a reader needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Who acted: `operator:NAME`, `ca:root`, `ra-client:NAME` and the like.
    pub actor: String,
    /// What was done, dotted: `certificate.issue`, `certificate.revoke`,
    /// `crl.sign`.
    pub action: String,
    /// What was acted on: a serial, a CA name, a card job.
    pub object: String,
    /// Whatever else a reader needs; stored as JSON text, which the entry's
    /// hash covers.
    pub details: serde_json::Value,
}

/// Every field, length-prefixed, so no two different entries hash the same input.
pub fn entry_hash(
    prev: &[u8],
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    object: &str,
    details: &str,
) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"muhr-audit-v1");
    h.update((prev.len() as u32).to_be_bytes());
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    for field in [actor, action, object, details] {
        h.update((field.len() as u32).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().to_vec()
}

/// Appends `events` inside the caller's transaction. The head is read by an
/// update of itself, which takes the write lock (SQLite) or the row lock
/// (PostgreSQL) as it reads: concurrent appenders queue instead of forking.
/// Callers append last, just before they commit, so the lock is held briefly
/// (the key ceremony, once, is the exception).
pub(crate) async fn append(
    backend: crate::Backend,
    tx: &mut Tx<'_>,
    events: &[&AuditEvent],
) -> Result<()> {
    append_at(backend, tx, None, events).await
}

/// An entry's column types, for VALUES lists on PostgreSQL.
const AUDIT_CASTS: &[&str] = &[
    "bigint", "bigint", "text", "text", "text", "text", "bytea", "bytea",
];

/// The chain's head as a transaction that holds its lock read it.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    pub seq: i64,
    pub hash: Vec<u8>,
}

/// [`append`] after `head`, when the caller's transaction has already locked
/// and read it (in a statement that did other work as well); with `None` the
/// head is locked and read here.
pub(crate) async fn append_at(
    backend: crate::Backend,
    tx: &mut Tx<'_>,
    head: Option<Head>,
    events: &[&AuditEvent],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let Head {
        mut seq,
        hash: mut prev,
    } = match head {
        Some(h) => h,
        None => {
            let row =
                sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
                    .fetch_one(&mut **tx)
                    .await?;
            Head {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
            }
        }
    };
    let at = now_micros();
    // Hashes are chained here; the rows go in one statement per chunk.
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        seq += 1;
        let details = e.details.to_string();
        let hash = entry_hash(&prev, seq, at, &e.actor, &e.action, &e.object, &details);
        rows.push((
            seq,
            e,
            details,
            std::mem::replace(&mut prev, hash.clone()),
            hash,
        ));
    }
    let chunks: Vec<_> = rows.chunks(crate::rows::CHUNK).collect();
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        // On PostgreSQL the last rows and the new head go in one statement:
        // one round trip fewer inside a transaction that holds the head's
        // lock. Its rows are padded with NULL ones (see `rows::padded`),
        // which the statement leaves out.
        let merged = i == last && backend == crate::Backend::Postgres;
        let columns = "seq, at, actor, action, object, details, prev_hash, hash";
        let (sql, padding) = if merged {
            let n = crate::rows::padded(chunk.len());
            let values = crate::rows::values(backend, n, 8, 1, AUDIT_CASTS);
            let sql = format!(
                "WITH ins AS (INSERT INTO audit_log ({columns}) SELECT {columns} \
                 FROM (VALUES {values}) AS v ({columns}) WHERE seq IS NOT NULL) \
                 UPDATE audit_head SET seq = ${}, hash = ${} WHERE id = 1",
                n * 8 + 1,
                n * 8 + 2
            );
            (sql, n - chunk.len())
        } else {
            let values = crate::rows::values(crate::Backend::Sqlite, chunk.len(), 8, 1, &[]);
            (
                format!("INSERT INTO audit_log ({columns}) VALUES {values}"),
                0,
            )
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (seq, e, details, prev_hash, hash) in chunk {
            q = q
                .bind(*seq)
                .bind(at)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.object)
                .bind(details)
                .bind(prev_hash)
                .bind(hash);
        }
        q = crate::rows::bind_nulls(q, padding, AUDIT_CASTS);
        if merged {
            q = q.bind(seq).bind(&prev);
        }
        q.execute(&mut **tx).await?;
    }
    if backend != crate::Backend::Postgres {
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(&prev)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// What is wrong with the chain, at the first place it breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditFinding {
    /// The entry's fields no longer produce its stored hash.
    Changed {
        /// The entry that was changed.
        seq: i64,
    },
    /// The entry does not follow the one before it (an entry was removed or moved).
    Broken {
        /// The entry found next.
        seq: i64,
        /// The seq that should have come next: equal to `seq` when the entry
        /// is in place but does not chain to the one before.
        expected_seq: i64,
    },
    /// The chain ends before the head says it should.
    Truncated {
        /// The last entry found.
        last_seq: i64,
        /// Where the chain should end: the head's seq, or that of a signed
        /// checkpoint past the last entry.
        head_seq: i64,
    },
    /// A signed checkpoint names a hash the chain does not have at its seq.
    CheckpointMismatch {
        /// The checkpoint's seq: the entry whose hash differs.
        seq: i64,
    },
    /// Entries past the head: written without the head (appending moves
    /// both in one transaction), so not by Muhr.
    BeyondHead {
        /// The head's seq.
        head_seq: i64,
        /// The highest seq stored.
        last_seq: i64,
    },
}

impl std::fmt::Display for AuditFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditFinding::Changed { seq } => write!(
                f,
                "audit entry {seq} was changed: its content does not match its hash"
            ),
            AuditFinding::Broken { seq, .. } if *seq < 1 => write!(
                f,
                "audit entry {seq} lies before the chain's start (entry 1): it was written \
                 around Muhr"
            ),
            AuditFinding::Broken { seq, expected_seq } if seq != expected_seq => write!(
                f,
                "audit entry {expected_seq} is missing or out of order: the next entry found is {seq}"
            ),
            AuditFinding::Broken { seq, .. } => write!(
                f,
                "audit entry {seq} does not follow entry {}: an entry was removed, replaced or reordered",
                seq - 1
            ),
            AuditFinding::Truncated { last_seq, head_seq } if last_seq == head_seq => write!(
                f,
                "the chain's head does not name entry {head_seq}'s hash: the head or the \
                 last entry was rewritten"
            ),
            AuditFinding::Truncated { last_seq, head_seq } => write!(
                f,
                "audit entries {}..={head_seq} were removed: the chain ends at {last_seq}",
                last_seq + 1
            ),
            AuditFinding::CheckpointMismatch { seq } => write!(
                f,
                "the signed checkpoint at entry {seq} does not match the chain: \
                 entries up to {seq} were rewritten"
            ),
            AuditFinding::BeyondHead { head_seq, last_seq } => write!(
                f,
                "audit entries {}..={last_seq} lie past the chain's head ({head_seq}): \
                 they were written around Muhr",
                head_seq + 1
            ),
        }
    }
}

/// What [`Store::verify_audit`](crate::Store::verify_audit) found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    /// How many entries hold, from the first: the whole chain when there is no
    /// finding, else those before the break.
    pub entries: i64,
    /// The first break; `None` when the chain holds up to its head.
    pub finding: Option<AuditFinding>,
}

/// One stored entry, as `muhr audit export` writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix microseconds.
    pub at: i64,
    /// Who acted, as in [`AuditEvent::actor`].
    pub actor: String,
    /// What was done, as in [`AuditEvent::action`].
    pub action: String,
    /// What was acted on, as in [`AuditEvent::object`].
    pub object: String,
    /// The event's details, as the JSON text that was hashed.
    pub details: String,
    /// The previous entry's hash (32 zero bytes for the first entry).
    pub prev_hash: Vec<u8>,
    /// SHA-256 over `prev_hash` and this entry's fields (see [`entry_hash`]).
    pub hash: Vec<u8>,
}

impl Entry {
    /// Whether the entry's fields give its hash, after `prev`.
    pub fn holds_after(&self, prev: &[u8]) -> bool {
        self.prev_hash == prev
            && entry_hash(
                prev,
                self.seq,
                self.at,
                &self.actor,
                &self.action,
                &self.object,
                &self.details,
            ) == self.hash
    }
}

/// A signed checkpoint of the chain's head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last entry it vouches for.
    pub seq: i64,
    /// Unix seconds, by the signer's clock.
    pub at: i64,
    /// The chain's hash at `seq`.
    pub hash: Vec<u8>,
    /// Which audit key signed: SHA-256 of its SubjectPublicKeyInfo, hex.
    pub key_id: String,
    /// The checkpoint before this one (0 and 32 zero bytes for the first).
    pub prev_seq: i64,
    /// That checkpoint's hash. It is signed too, so deleting a checkpoint
    /// breaks the checkpoints' own chain.
    pub prev_hash: Vec<u8>,
    /// The audit key's signature over every field above (muhr-ca's
    /// `audit_anchor::statement`). The store keeps it; callers check it.
    pub signature: Vec<u8>,
}

/// Walks the whole chain in pages, so a chain of tens of millions of entries
/// is checked in constant memory; every checkpoint's hash must be the
/// chain's at its seq (their signatures are the caller's to check).
pub(crate) async fn verify(
    pool: &AnyPool,
    checkpoints: &std::collections::BTreeMap<i64, Vec<u8>>,
) -> Result<AuditReport> {
    const PAGE: i64 = 5000;
    // The head is read first and the chain verified up to it: an entry and
    // the head move in one transaction, so every entry up to the head read
    // here is committed, and entries appended while the chain is read (a
    // live node keeps appending) are not mistaken for a moved head.
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(pool)
        .await?;
    let head_seq: i64 = head.try_get("seq")?;
    let head_hash: Vec<u8> = head.try_get("hash")?;
    let mut prev = vec![0u8; 32];
    let mut expected_seq = 1i64;
    loop {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, object, details, prev_hash, hash FROM audit_log \
             WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3",
        )
        .bind(expected_seq)
        .bind(head_seq)
        .bind(PAGE)
        .fetch_all(pool)
        .await?;
        let n = rows.len() as i64;
        for row in rows {
            let seq: i64 = row.try_get("seq")?;
            let stored_prev: Vec<u8> = row.try_get("prev_hash")?;
            let hash: Vec<u8> = row.try_get("hash")?;
            if seq != expected_seq || stored_prev != prev {
                return Ok(AuditReport {
                    entries: expected_seq - 1,
                    finding: Some(AuditFinding::Broken { seq, expected_seq }),
                });
            }
            let computed = entry_hash(
                &prev,
                seq,
                row.try_get("at")?,
                &row.try_get::<String, _>("actor")?,
                &row.try_get::<String, _>("action")?,
                &row.try_get::<String, _>("object")?,
                &row.try_get::<String, _>("details")?,
            );
            if computed != hash {
                return Ok(AuditReport {
                    entries: expected_seq - 1,
                    finding: Some(AuditFinding::Changed { seq }),
                });
            }
            if checkpoints.get(&seq).is_some_and(|c| *c != hash) {
                return Ok(AuditReport {
                    entries: expected_seq - 1,
                    finding: Some(AuditFinding::CheckpointMismatch { seq }),
                });
            }
            prev = hash;
            expected_seq += 1;
        }
        if n < PAGE {
            break;
        }
    }
    let last_seq = expected_seq - 1;
    // A checkpoint beyond the chain's end: entries it vouched for are gone.
    if let Some((&seq, _)) = checkpoints.range(last_seq + 1..).next() {
        return Ok(AuditReport {
            entries: last_seq,
            finding: Some(AuditFinding::Truncated {
                last_seq,
                head_seq: seq,
            }),
        });
    }
    if head_seq != last_seq || head_hash != prev {
        return Ok(AuditReport {
            entries: last_seq,
            finding: Some(AuditFinding::Truncated { last_seq, head_seq }),
        });
    }
    // The last entry, then the head again: a live node's head only moves
    // forward, so it covers every entry that existed a moment before.
    let bounds = sqlx::query("SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM audit_log")
        .fetch_one(pool)
        .await?;
    let (min_seq, max_seq): (Option<i64>, Option<i64>) =
        (bounds.try_get("lo")?, bounds.try_get("hi")?);
    // The chain starts at 1: a row numbered below it is history planted
    // where the walk never looks (operators' look-ups would show it).
    if let Some(lo) = min_seq.filter(|lo| *lo < 1) {
        return Ok(AuditReport {
            entries: last_seq,
            finding: Some(AuditFinding::Broken {
                seq: lo,
                expected_seq: 1,
            }),
        });
    }
    let head_now: i64 = sqlx::query("SELECT seq FROM audit_head WHERE id = 1")
        .fetch_one(pool)
        .await?
        .try_get("seq")?;
    if let Some(m) = max_seq.filter(|m| *m > head_now) {
        return Ok(AuditReport {
            entries: last_seq,
            finding: Some(AuditFinding::BeyondHead {
                head_seq: head_now,
                last_seq: m,
            }),
        });
    }
    Ok(AuditReport {
        entries: last_seq,
        finding: None,
    })
}

impl crate::Store {
    /// Appends events to the audit chain on their own.
    pub async fn audit(&self, events: &[&AuditEvent]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        append(self.backend(), &mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Walks the chain; `checkpoints` (seq → hash) must agree with it.
    pub async fn verify_audit(
        &self,
        checkpoints: &std::collections::BTreeMap<i64, Vec<u8>>,
    ) -> Result<AuditReport> {
        verify(&self.pool, checkpoints).await
    }

    /// The chain's head: the last entry's seq and hash (0 and zeros when
    /// empty).
    pub async fn audit_head(&self) -> Result<(i64, Vec<u8>)> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("seq")?, row.try_get("hash")?))
    }

    /// Stores a signed checkpoint if it directly follows the newest one
    /// (its `prev_seq`); false when another node checkpointed meanwhile.
    /// Checkpointers are serialised by the audit head's lock, so the
    /// checkpoints form one chain however many nodes sign.
    pub async fn save_checkpoint(&self, c: &Checkpoint) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let last: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM audit_checkpoints")
            .fetch_one(&mut *tx)
            .await?
            .try_get("seq")?;
        if last != c.prev_seq || c.seq <= last {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, at, hash, key_id, prev_seq, prev_hash, signature) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(c.seq)
        .bind(c.at)
        .bind(&c.hash)
        .bind(&c.key_id)
        .bind(c.prev_seq)
        .bind(&c.prev_hash)
        .bind(&c.signature)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every checkpoint, oldest first (one per thousand entries or minute).
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.checkpoints_after(-1, i64::MAX).await
    }

    /// Checkpoints with seq > `after`, at most `limit`, oldest first.
    pub async fn checkpoints_after(&self, after: i64, limit: i64) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query(
            "SELECT seq, at, hash, key_id, prev_seq, prev_hash, signature FROM audit_checkpoints \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Checkpoint {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    hash: r.try_get("hash")?,
                    key_id: r.try_get("key_id")?,
                    prev_seq: r.try_get("prev_seq")?,
                    prev_hash: r.try_get("prev_hash")?,
                    signature: r.try_get("signature")?,
                })
            })
            .collect()
    }

    /// The newest checkpoint.
    pub async fn last_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let row = sqlx::query("SELECT MAX(seq) AS seq FROM audit_checkpoints")
            .fetch_one(&self.pool)
            .await?;
        match row.try_get::<Option<i64>, _>("seq")? {
            Some(seq) => Ok(self.checkpoints_after(seq - 1, 1).await?.pop()),
            None => Ok(None),
        }
    }

    /// The last entry recorded before `micros` (Unix microseconds), if any.
    pub async fn last_audit_entry_before(&self, micros: i64) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MAX(seq) AS seq FROM audit_log WHERE at < $1")
            .bind(micros)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("seq")?)
    }

    /// Entries with seq in `from..=to`, oldest first (for export).
    pub async fn audit_entries(&self, from: i64, to: i64) -> Result<Vec<Entry>> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, object, details, prev_hash, hash FROM audit_log \
             WHERE seq >= $1 AND seq <= $2 ORDER BY seq",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Entry {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    object: r.try_get("object")?,
                    details: r.try_get("details")?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }
}

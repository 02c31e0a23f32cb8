//! Durable state of Muhr: certificates (from intent to issued), the CA registry and
//! the audit chain, on SQLite (embedded default, WAL, synchronous=FULL) or
//! PostgreSQL (production), through one sqlx `Any` pool.
//!
//! Both engines run the same SQL: `$N` placeholders, times as integers, blobs.
//! Only the DDL differs, so each backend has its own migrations folder.
//!
//! It must never decide: it records what the CA and the services ask, keeps
//! the constraints that make a decision atomic (one certificate per job and
//! role, one profile per person's key), and reads back. It never signs.

#![forbid(unsafe_code)]

pub mod approvals;
pub mod audit;
pub mod ra;
pub mod redact;
pub mod rp;
pub mod status;

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

mod rows;
mod scan;

pub use audit::{AuditEvent, AuditFinding, Checkpoint};
pub use status::{Changed, Leadership, OcspSigner, Revoked, Status, StoredCrl, Transition};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Names only the URL's scheme: the rest may hold a password.
    #[error("unsupported database URL scheme {0:?}: use sqlite://PATH or postgres://...")]
    Url(String),
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// A query that did not finish in the time its caller allows: counted
    /// as the database being unavailable.
    pub fn timed_out() -> Self {
        StoreError::Db(sqlx::Error::PoolTimedOut)
    }

    /// The database could not be reached or did not answer in time: the same
    /// request may succeed later, unchanged (clients get 503, not 500).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(e) => match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed => true,
                // PostgreSQL: connection exceptions (08), shutting down
                // (57P01-57P03), too many connections (53300).
                sqlx::Error::Database(d) => d
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300"),
                _ => false,
            },
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// See [`Store::benchmark_leftovers`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BenchmarkLeftovers {
    pub synthetic: i64,
    pub issued: Vec<String>,
    pub relying_parties: Vec<String>,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Typed connections for bulk reads (see `scan`), opened on first use.
    scan: scan::Pools,
}

/// A certificate whose to-be-signed bytes are fixed, before the key signs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    pub serial: String,
    pub issuer: String,
    pub profile: String,
    pub subject: String,
    pub pinfl: Option<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub tbs: Vec<u8>,
    /// The CRL shard written into the certificate's CRL distribution point
    /// (`None`: the CA's whole CRL).
    pub crl_shard: Option<i64>,
    /// The RA card job this certificate belongs to, if any.
    pub job: Option<JobLink>,
}

/// A certificate's place in an RA card job: at most one certificate per
/// (job, role), enforced by the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobLink {
    pub job: String,
    pub role: String,
}

#[derive(Clone, Debug)]
pub struct CertificateRecord {
    pub intent: Intent,
    pub der: Option<Vec<u8>>,
    pub status: String,
    pub created_at: i64,
    pub issued_at: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct Authority {
    pub name: String,
    pub key_label: String,
    pub key_spec: String,
    pub der: Vec<u8>,
}

/// Prepared statements kept per PostgreSQL connection, unless the URL says
/// otherwise (`statement-cache-capacity`). A multi-row statement has one text
/// per row count, so a group-committing service uses a few hundred texts;
/// with sqlx's default of 100 the cache thrashed and most statements were
/// prepared again each time (a parse and an extra round trip): PostgreSQL's
/// CPU per card issued fell by a fifth at 2,000, for about 10–15 MB per
/// server process.
const STATEMENT_CACHE: usize = 2000;

fn with_statement_cache(url: &str) -> String {
    if url.contains("statement-cache-capacity=") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}statement-cache-capacity={STATEMENT_CACHE}")
}

/// How long a query waits for a pooled connection (including opening one)
/// before it fails: a database outage answers within this, not in 30 s.
pub const DEFAULT_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Idle time after which a pooled connection is pinged before use.
const IDLE_PING: std::time::Duration = std::time::Duration::from_secs(1);

pub fn now_secs() -> i64 {
    unix_secs(SystemTime::now())
}

/// Now in Unix microseconds: the resolution of recorded events.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A time in Unix seconds; 0 before 1970.
pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// As [`Store::connect`], with the longest a query waits for a connection:
    /// while the database is down, requests fail after this (503 to clients)
    /// instead of sqlx's default 30 s.
    pub async fn connect_with(url: &str, acquire_timeout: std::time::Duration) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            let scheme = url
                .split_once(':')
                .map(|(s, _)| s)
                .filter(|s| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                })
                .unwrap_or("(none)");
            return Err(StoreError::Url(scheme.to_string()));
        };
        let options: AnyConnectOptions = match backend {
            Backend::Postgres => with_statement_cache(url).parse()?,
            Backend::Sqlite => url.parse()?,
        };
        // A connection is pinged before use only when it has sat idle: a
        // busy service then pays no extra round trip per query (sqlx's
        // default pings on every acquire, which on PostgreSQL doubled the
        // round trips of a short read), while a quiet one still finds out
        // that the server restarted before handing a dead connection to a
        // request.
        let mut pool = AnyPoolOptions::new()
            .acquire_timeout(acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_PING {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            });
        if backend == Backend::Sqlite {
            pool = pool.max_connections(8).after_connect(|conn, _| {
                Box::pin(async move {
                    // FULL: a commit is on disk before it returns, so a certificate
                    // handed to a client survives a power cut, not only a crash.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            });
        } else {
            pool = pool.max_connections(16);
        }
        let pool = pool.connect_with(options).await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Self {
            pool,
            backend,
            scan: scan::Pools::new(url),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Commits intents before any key signs them: after a crash, a serial is
    /// never reused and the to-be-signed bytes can be signed again as they were.
    ///
    /// Returns, per intent, whether it was recorded: `false` means its card job
    /// already has a certificate in that role (another request got there first),
    /// so this one must not be signed.
    pub async fn record_intents(&self, intents: &[Intent]) -> Result<Vec<bool>> {
        let mut tx = self.pool.begin().await?;
        let recorded = self.record_intents_in(&mut tx, intents).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    pub(crate) async fn record_intents_in(
        &self,
        tx: &mut Tx<'_>,
        intents: &[Intent],
    ) -> Result<Vec<bool>> {
        let now = now_secs();
        let mut inserted = std::collections::HashSet::new();
        for chunk in intents.chunks(rows::CHUNK) {
            let insert = format!(
                "INSERT INTO certificates (serial, issuer, profile, subject, pinfl, not_before, \
                 not_after, tbs, crl_shard, job, job_role, status, created_at) \
                 SELECT column1, column2, column3, column4, column5, column6, column7, column8, \
                 column9, column10, column11, 'pending', $1 FROM (VALUES {}) AS v WHERE true \
                 ON CONFLICT (job, job_role) DO NOTHING RETURNING serial",
                rows::values(self.backend, chunk.len(), 11, 2, INTENT_CASTS,)
            );
            // PostgreSQL writes the pending rows in the same statement (one
            // round trip); SQLite, in process, in a second one.
            let sql = match self.backend {
                Backend::Postgres => format!(
                    "WITH ins AS ({insert}) INSERT INTO pending_certificates (serial, created_at) \
                     SELECT serial, $1 FROM ins RETURNING serial"
                ),
                Backend::Sqlite => insert,
            };
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
            for i in chunk {
                q = bind_intent(q, i);
            }
            match q.fetch_all(&mut **tx).await {
                Ok(rows) => {
                    let serials = rows
                        .iter()
                        .map(|r| r.try_get::<String, _>("serial"))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    if self.backend == Backend::Sqlite && !serials.is_empty() {
                        let sql = format!(
                            "INSERT INTO pending_certificates (serial, created_at) VALUES {}",
                            rows::values(self.backend, serials.len(), 2, 1, &[])
                        );
                        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                        for serial in &serials {
                            q = q.bind(serial).bind(now);
                        }
                        q.execute(&mut **tx).await?;
                    }
                    inserted.extend(serials);
                }
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict(format!(
                        "a serial among {} intents is already used",
                        chunk.len()
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(intents
            .iter()
            .map(|i| inserted.contains(&i.serial))
            .collect())
    }

    /// Stores signed certificates and their audit entries in one transaction.
    pub async fn complete_issuance(&self, issued: &[(String, Vec<u8>, AuditEvent)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        self.complete_issuance_in(&mut tx, issued).await?;
        let events: Vec<&AuditEvent> = issued.iter().map(|(_, _, e)| e).collect();
        audit::append(self.backend(), &mut tx, &events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The certificates' rows only: the caller appends their audit entries,
    /// with whatever else its transaction records, in one append.
    pub(crate) async fn complete_issuance_in(
        &self,
        tx: &mut Tx<'_>,
        issued: &[(String, Vec<u8>, AuditEvent)],
    ) -> Result<()> {
        let now = now_secs();
        for chunk in issued.chunks(rows::CHUNK) {
            // The recorded bytes go: the certificate holds them now.
            let update = format!(
                "UPDATE certificates SET der = v.column2, tbs = $2, status = 'issued', issued_at = $1 \
                 FROM (VALUES {}) AS v WHERE certificates.serial = v.column1 \
                 AND certificates.status = 'pending'",
                rows::values(self.backend, chunk.len(), 2, 3, &["text", "bytea"])
            );
            let sql = match self.backend {
                Backend::Postgres => format!(
                    "WITH done AS ({update} RETURNING certificates.serial), \
                     gone AS (DELETE FROM pending_certificates WHERE serial IN (SELECT serial FROM done)) \
                     SELECT COUNT(*) AS n FROM done"
                ),
                Backend::Sqlite => update,
            };
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .bind(Vec::<u8>::new());
            for (serial, der, _) in chunk {
                q = q.bind(serial).bind(der);
            }
            let stored = match self.backend {
                Backend::Postgres => q.fetch_one(&mut **tx).await?.try_get::<i64, _>("n")? as u64,
                Backend::Sqlite => {
                    let n = q.execute(&mut **tx).await?.rows_affected();
                    let sql = format!(
                        "DELETE FROM pending_certificates WHERE serial IN ({})",
                        rows::list(chunk.len(), 1)
                    );
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for (serial, _, _) in chunk {
                        q = q.bind(serial);
                    }
                    q.execute(&mut **tx).await?;
                    n
                }
            };
            if stored != chunk.len() as u64 {
                return Err(StoreError::Conflict(format!(
                    "{} of {} certificates are no longer pending issuance",
                    chunk.len() as u64 - stored,
                    chunk.len()
                )));
            }
        }
        Ok(())
    }

    /// Intents recorded at least `min_age_secs` ago and never completed. The age
    /// keeps one process from finishing another's issuance that is still under
    /// way (several nodes may share a database); a live issuance takes
    /// milliseconds, so an old pending intent belongs to a process that died.
    pub async fn pending_intents(&self, min_age_secs: i64) -> Result<Vec<Intent>> {
        let rows = sqlx::query(
            "SELECT c.serial, c.issuer, c.profile, c.subject, c.pinfl, c.not_before, c.not_after, \
             c.tbs, c.crl_shard, c.job, c.job_role FROM pending_certificates p \
             JOIN certificates c ON c.serial = p.serial \
             WHERE c.status = 'pending' AND p.created_at <= $1 ORDER BY p.created_at",
        )
        .bind(now_secs() - min_age_secs)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(intent_from_row).collect()
    }

    pub async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>> {
        let row = sqlx::query(
            "SELECT serial, issuer, profile, subject, pinfl, not_before, not_after, tbs, crl_shard, der, \
             job, job_role, status, created_at, issued_at FROM certificates WHERE serial = $1",
        )
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(CertificateRecord {
            intent: intent_from_row(&row)?,
            der: row.try_get("der")?,
            status: row.try_get("status")?,
            created_at: row.try_get("created_at")?,
            issued_at: row.try_get("issued_at")?,
        }))
    }

    /// Counts certificates by status, for metrics and tests.
    pub async fn count_certificates(&self, status: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM certificates WHERE status = $1")
            .bind(status)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Certificates by profile and status, for `/metrics`.
    pub async fn certificate_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT profile, status, COUNT(*) AS n FROM certificates GROUP BY profile, status ORDER BY profile, status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("profile")?, r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    pub async fn authority(&self, name: &str) -> Result<Option<Authority>> {
        let row =
            sqlx::query("SELECT name, key_label, key_spec, der FROM authorities WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(Authority {
                name: r.try_get("name")?,
                key_label: r.try_get("key_label")?,
                key_spec: r.try_get("key_spec")?,
                der: r.try_get("der")?,
            })
        })
        .transpose()
    }

    pub async fn authority_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM authorities")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Records the CAs made by a key ceremony, with its audit entry, at once.
    pub async fn save_authorities(&self, cas: &[Authority], event: &AuditEvent) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        audit::append(self.backend(), &mut tx, &[event]).await?;
        for ca in cas {
            let r = sqlx::query(
                "INSERT INTO authorities (name, key_label, key_spec, der, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&ca.name)
            .bind(&ca.key_label)
            .bind(&ca.key_spec)
            .bind(&ca.der)
            .bind(now_secs())
            .execute(&mut *tx)
            .await;
            if let Err(e) = r {
                if is_unique_violation(&e) {
                    return Err(StoreError::Conflict(format!(
                        "CA {:?} already exists",
                        ca.name
                    )));
                }
                return Err(e.into());
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Appends events to the audit chain on their own.
    pub async fn audit(&self, events: &[&AuditEvent]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        audit::append(self.backend(), &mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Walks the chain; `checkpoints` (seq → hash) must agree with it.
    pub async fn verify_audit(
        &self,
        checkpoints: &std::collections::BTreeMap<i64, Vec<u8>>,
    ) -> Result<audit::AuditReport> {
        audit::verify(&self.pool, checkpoints).await
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
    pub async fn save_checkpoint(&self, c: &audit::Checkpoint) -> Result<bool> {
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
    pub async fn checkpoints(&self) -> Result<Vec<audit::Checkpoint>> {
        self.checkpoints_after(-1, i64::MAX).await
    }

    /// Checkpoints with seq > `after`, at most `limit`, oldest first.
    pub async fn checkpoints_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<audit::Checkpoint>> {
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
                Ok(audit::Checkpoint {
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
    pub async fn last_checkpoint(&self) -> Result<Option<audit::Checkpoint>> {
        let row = sqlx::query("SELECT MAX(seq) AS seq FROM audit_checkpoints")
            .fetch_one(&self.pool)
            .await?;
        match row.try_get::<Option<i64>, _>("seq")? {
            Some(seq) => Ok(self.checkpoints_after(seq - 1, 1).await?.pop()),
            None => Ok(None),
        }
    }

    /// Claims the database for benchmarks: true when it already carries the
    /// benchmark marker, or had no certificate and no CA at all and carries
    /// it now; false for a database holding real certificates, which is
    /// never marked.
    pub async fn claim_for_benchmark(&self) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let marked = sqlx::query("SELECT COUNT(*) AS n FROM benchmark_marker")
            .fetch_one(&mut *tx)
            .await?
            .try_get::<i64, _>("n")?
            > 0;
        if marked {
            return Ok(true);
        }
        let used = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM certificates) + (SELECT COUNT(*) FROM authorities) AS n",
        )
        .fetch_one(&mut *tx)
        .await?
        .try_get::<i64, _>("n")?;
        if used > 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO benchmark_marker (id, created_at) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(now_secs())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// What benchmark commands of earlier versions (run inside the product
    /// binary) may have left in a real installation: the number of
    /// synthetic status-only rows (profile `bench`, never signed), the
    /// certificates issued by the benchmarks' actors (`bench`, and the
    /// `benchNNN-line` personalization clients with their own credentials)
    /// that are not revoked, and the benchmark relying parties still
    /// enabled (`bench-NNN`).
    pub async fn benchmark_leftovers(&self) -> Result<BenchmarkLeftovers> {
        let synthetic = sqlx::query(
            "SELECT COUNT(*) AS n FROM certificates WHERE profile = 'bench' AND der IS NULL",
        )
        .fetch_one(&self.pool)
        .await?
        .try_get::<i64, _>("n")?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let line_client = |name: &str| {
            name.strip_prefix("bench")
                .and_then(|r| r.strip_suffix("-line"))
                .is_some_and(digits)
        };
        let mut issued = Vec::new();
        for r in sqlx::query(
            "SELECT a.actor, c.serial FROM audit_log a JOIN certificates c ON c.serial = a.object \
             WHERE a.action = 'certificate.issue' AND (a.actor = 'bench' OR a.actor LIKE 'ra-client:bench%') \
             AND c.revocation <> 'revoked' ORDER BY c.serial",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let actor: String = r.try_get("actor")?;
            if actor == "bench"
                || actor
                    .strip_prefix("ra-client:")
                    .is_some_and(line_client)
            {
                issued.push(r.try_get("serial")?);
            }
        }
        for r in sqlx::query(
            "SELECT k.name, k.serial FROM ra_clients k JOIN certificates c ON c.serial = k.serial \
             WHERE k.name LIKE 'bench%' AND c.revocation <> 'revoked'",
        )
        .fetch_all(&self.pool)
        .await?
        {
            if line_client(&r.try_get::<String, _>("name")?) {
                issued.push(r.try_get("serial")?);
            }
        }
        issued.sort();
        issued.dedup();
        let mut relying_parties = Vec::new();
        for r in sqlx::query(
            "SELECT id, name FROM relying_parties WHERE name LIKE 'bench-%' AND disabled_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let name: String = r.try_get("name")?;
            if name.strip_prefix("bench-").is_some_and(digits) {
                relying_parties.push(r.try_get("id")?);
            }
        }
        Ok(BenchmarkLeftovers {
            synthetic,
            issued,
            relying_parties,
        })
    }

    /// Deletes the synthetic rows (never signed, so nothing was handed out),
    /// with `event` in the same transaction.
    pub async fn delete_synthetic_rows(&self, event: &AuditEvent) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        // Through the change feed, so responders drop what they remember
        // of these serials (they then answer unknown).
        sqlx::query(
            "INSERT INTO status_changes (serial, issuer, revocation, revoked_at, reason, at) \
             SELECT serial, issuer, 'good', NULL, NULL, $1 FROM certificates \
             WHERE profile = 'bench' AND der IS NULL",
        )
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query("DELETE FROM certificates WHERE profile = 'bench' AND der IS NULL")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        audit::append(self.backend(), &mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Whether muhr-bench made this database.
    pub async fn is_benchmark_database(&self) -> Result<bool> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM benchmark_marker")
            .fetch_one(&self.pool)
            .await?
            .try_get::<i64, _>("n")?
            > 0)
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
    pub async fn audit_entries(&self, from: i64, to: i64) -> Result<Vec<audit::Entry>> {
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
                Ok(audit::Entry {
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

    /// Direct pool access for tests and tools that inspect the database.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// The types of an intent's columns as [`bind_intent`] binds them, for
/// VALUES lists on PostgreSQL.
pub(crate) const INTENT_CASTS: &[&str] = &[
    "text", "text", "text", "text", "text", "bigint", "bigint", "bytea", "bigint", "text", "text",
];

/// Binds an intent's columns: serial, issuer, profile, subject, pinfl,
/// not_before, not_after, tbs, crl_shard, job, job_role.
pub(crate) fn bind_intent<'q>(q: rows::Query<'q>, i: &'q Intent) -> rows::Query<'q> {
    q.bind(&i.serial)
        .bind(&i.issuer)
        .bind(&i.profile)
        .bind(&i.subject)
        .bind(i.pinfl.clone())
        .bind(i.not_before)
        .bind(i.not_after)
        .bind(&i.tbs)
        .bind(i.crl_shard)
        .bind(i.job.as_ref().map(|j| j.job.clone()))
        .bind(i.job.as_ref().map(|j| j.role.clone()))
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.is_unique_violation(),
        _ => false,
    }
}

fn intent_from_row(row: &sqlx::any::AnyRow) -> Result<Intent> {
    Ok(Intent {
        serial: row.try_get("serial")?,
        issuer: row.try_get("issuer")?,
        profile: row.try_get("profile")?,
        subject: row.try_get("subject")?,
        pinfl: row.try_get("pinfl")?,
        not_before: row.try_get("not_before")?,
        not_after: row.try_get("not_after")?,
        tbs: row.try_get("tbs")?,
        crl_shard: row.try_get("crl_shard")?,
        job: match (
            row.try_get::<Option<String>, _>("job")?,
            row.try_get::<Option<String>, _>("job_role")?,
        ) {
            (Some(job), Some(role)) => Some(JobLink { job, role }),
            _ => None,
        },
    })
}

pub(crate) type Tx<'a> = Transaction<'a, Any>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_cache_added_unless_set() {
        assert_eq!(
            with_statement_cache("postgres://u@h/db"),
            format!("postgres://u@h/db?statement-cache-capacity={STATEMENT_CACHE}")
        );
        assert_eq!(
            with_statement_cache("postgres://u@h/db?sslmode=require"),
            format!("postgres://u@h/db?sslmode=require&statement-cache-capacity={STATEMENT_CACHE}")
        );
        let own = "postgres://u@h/db?statement-cache-capacity=50";
        assert_eq!(with_statement_cache(own), own);
    }
}

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
#![deny(missing_docs)]

pub mod approvals;
pub mod audit;
pub mod authorities;
pub mod benchmark;
pub mod certificates;
pub mod clients;
pub mod crls;
pub mod jobs;
pub mod leadership;
pub mod notices;
pub mod ocsp_signers;
pub mod outcomes;
pub mod people;
pub mod portal;
pub mod redact;
pub mod registry;
pub mod registry_events;
pub mod rp;
pub mod status;
pub mod timestamps;

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

mod rows;
mod scan;

pub use audit::{AuditEvent, AuditFinding, Checkpoint};
pub use authorities::Authority;
pub use benchmark::BenchmarkLeftovers;
pub use certificates::{CertificateRecord, Intent, IssueOnce};
pub(crate) use certificates::{INTENT_CASTS, bind_intent};
pub use crls::StoredCrl;
pub use leadership::Leadership;
pub use ocsp_signers::{OcspSigner, SignerRole, TsaSigner};
pub use status::{Changed, Revoked, Status, Transition};

/// What went wrong in the store. [`StoreError::is_unavailable`] tells an
/// outage, worth retrying unchanged, from the rest.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query or connection failed; [`StoreError::is_unavailable`] says whether
    /// the database was out of reach.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The schema could not be brought up to date when connecting.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Names only the URL's scheme: the rest may hold a password.
    #[error("unsupported database URL scheme {0:?}: use sqlite://PATH or postgres://...")]
    Url(String),
    /// What was asked contradicts what is stored (a serial, CRL number or name
    /// already taken, a state that does not allow the change). The text says
    /// what, for the caller's refusal.
    #[error("{0}")]
    Conflict(String),
    /// The database would acknowledge commits a crash can lose; the text
    /// names the setting (or table) and where it came from.
    #[error("{0}")]
    Unflushed(String),
}

/// The result of every store operation.
pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// A query that did not finish in the time its caller allows: counted
    /// as the database being unavailable.
    pub fn timed_out() -> Self {
        StoreError::Db(sqlx::Error::PoolTimedOut)
    }

    /// Another transaction got in the way (a PostgreSQL deadlock or
    /// serialization failure, a unique key taken meanwhile, a busy SQLite):
    /// nothing was written, and the same transaction may go through again.
    pub fn is_contention(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(d)) => d
                .code()
                .is_some_and(|c| matches!(&*c, "40P01" | "40001" | "23505" | "5" | "517")),
            _ => false,
        }
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

/// The database engine behind a [`Store`], chosen by the URL's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded, single node: `sqlite:PATH`.
    Sqlite,
    /// Production, shared by several nodes: `postgres://` or `postgresql://`.
    Postgres,
}

impl Backend {
    /// The engine's name as logs and status reports show it.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The durable state every service shares. Cloning is cheap: clones share
/// one pool (and, for bulk reads, one set of typed connections).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Typed connections for bulk reads (see `scan`), opened on first use.
    scan: scan::Pools,
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

/// Refuses a PostgreSQL session that would acknowledge a commit a crash can
/// lose. Muhr hands out a certificate, and sends a time-stamp token, only
/// once its row is committed; with `fsync`, `full_page_writes` or
/// `synchronous_commit` off, or with one of its tables or sequences
/// unlogged (emptied by crash recovery), rows already answered for are
/// lost, so such a database is refused, not used. `synchronous_commit` is
/// pinned for the session at the value checked, so a later reload or
/// `ALTER SYSTEM` cannot lower it for sessions already open; `fsync` and
/// `full_page_writes` are server-wide and cannot be pinned, and like a
/// table made unlogged they are seen by the next connection the pool opens.
/// This stops a misconfiguration, not a hostile database superuser.
async fn flushes_commits(conn: &mut sqlx::AnyConnection) -> Result<()> {
    let row = sqlx::query(
        "SELECT current_setting('fsync') AS fsync, \
         current_setting('full_page_writes') AS full_page_writes, \
         setting AS synchronous_commit, source \
         FROM pg_settings WHERE name = 'synchronous_commit'",
    )
    .fetch_one(&mut *conn)
    .await?;
    let get = |name: &str| row.try_get::<String, _>(name);
    if let Some(why) = unflushed_commits(
        &get("fsync")?,
        &get("full_page_writes")?,
        &get("synchronous_commit")?,
        &get("source")?,
    ) {
        return Err(StoreError::Unflushed(why));
    }
    // The value just checked, now the session's own.
    sqlx::query("SELECT set_config('synchronous_commit', $1, false)")
        .bind(get("synchronous_commit")?)
        .execute(&mut *conn)
        .await?;
    let unlogged: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c \
         WHERE c.relpersistence = 'u' AND c.relkind IN ('r', 'p', 'S') \
         AND pg_table_is_visible(c.oid) ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    if !unlogged.is_empty() {
        return Err(StoreError::Unflushed(format!(
            "PostgreSQL table(s) or sequence(s) {} are UNLOGGED: crash recovery empties \
             them, and with them rows Muhr has answered for; ALTER TABLE (or SEQUENCE) ... \
             SET LOGGED",
            unlogged.join(", ")
        )));
    }
    Ok(())
}

/// Why these PostgreSQL settings let a commit be acknowledged before it is
/// safely on disk, if they do. `local`, `remote_write`, `on` and
/// `remote_apply` all flush the primary's WAL first.
fn unflushed_commits(
    fsync: &str,
    full_page_writes: &str,
    synchronous_commit: &str,
    source: &str,
) -> Option<String> {
    if fsync != "on" {
        return Some(format!(
            "PostgreSQL runs with fsync = {fsync}: a commit may be lost in a crash after Muhr \
             has answered for it; set fsync = on"
        ));
    }
    if full_page_writes != "on" {
        return Some(format!(
            "PostgreSQL runs with full_page_writes = {full_page_writes}: a power cut can leave \
             pages Muhr committed torn beyond recovery; set full_page_writes = on"
        ));
    }
    if !["on", "local", "remote_write", "remote_apply"].contains(&synchronous_commit) {
        return Some(format!(
            "PostgreSQL acknowledges commits before flushing them (synchronous_commit = \
             {synchronous_commit}, \
             set by: {source}; postgresql.conf, ALTER SYSTEM, the role, the database, the URL's \
             options or PGOPTIONS): a crash would lose certificates and logged tokens already \
             handed out; set it to on"
        ));
    }
    None
}

/// Now in Unix seconds: the unit of certificate, CRL, lease and challenge
/// times (audit entries and the change feed use microseconds).
pub fn now_secs() -> i64 {
    unix_secs(SystemTime::now())
}

/// Now in Unix microseconds: the resolution of recorded events.
pub fn now_micros() -> i64 {
    unix_micros(SystemTime::now())
}

/// A time in Unix microseconds; 0 before 1970.
pub fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
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
        let refusal = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
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
            // Looked at on every connection the pool opens, so a setting
            // changed on the server while Muhr runs is seen by the next
            // one; each pins the value it was checked with. The pool
            // retries a refused connection until its timeout and then says
            // only that it timed out: the refusal is kept to say why.
            let slot = refusal.clone();
            pool = pool.max_connections(16).after_connect(move |conn, _| {
                let slot = slot.clone();
                Box::pin(async move {
                    flushes_commits(conn).await.map_err(|e| match e {
                        StoreError::Db(e) => e,
                        other => {
                            let why = other.to_string();
                            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                            sqlx::Error::Configuration(why.into())
                        }
                    })
                })
            });
        }
        let pool = match pool.connect_with(options).await {
            Ok(pool) => pool,
            Err(e) => {
                let why = refusal.lock().unwrap_or_else(|p| p.into_inner()).take();
                return Err(why.map_or(StoreError::Db(e), StoreError::Unflushed));
            }
        };
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

    /// The engine this store runs on, for logs and status reports.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A trivial query, for health checks. Beyond the wait for a connection it
    /// has no deadline of its own: callers wrap it in theirs.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool at shutdown: waits for connections in use to come back
    /// and closes them. Queries after this fail.
    pub async fn close(&self) {
        self.pool.close().await;
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

    /// Direct pool access for tests and tools that inspect the database.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.is_unique_violation(),
        _ => false,
    }
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

    #[test]
    fn a_server_that_answers_commits_before_flushing_them_is_named() {
        for sync in ["on", "local", "remote_write", "remote_apply"] {
            assert_eq!(
                unflushed_commits("on", "on", sync, "default"),
                None,
                "{sync}"
            );
        }
        let off = unflushed_commits("on", "on", "off", "user").unwrap();
        assert!(
            off.contains("synchronous_commit = off, set by: user"),
            "{off}"
        );
        let fsync = unflushed_commits("off", "on", "on", "default").unwrap();
        assert!(fsync.contains("fsync = off"), "{fsync}");
        let torn = unflushed_commits("on", "off", "on", "default").unwrap();
        assert!(torn.contains("full_page_writes = off"), "{torn}");
    }
}

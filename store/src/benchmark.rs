//! The marker of a benchmark database and the clean-up of rows earlier
//! versions' benchmarks left: a database holding real certificates is never
//! written by a benchmark.

use sqlx::Row;

use crate::audit::{self, AuditEvent};
use crate::now_micros;
use crate::now_secs;
use crate::{Result, Store};

/// See [`Store::benchmark_leftovers`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BenchmarkLeftovers {
    /// Synthetic status-only rows (profile `bench`, never signed).
    pub synthetic: i64,
    /// Serials, sorted, of certificates the benchmarks' actors issued that are
    /// not revoked.
    pub issued: Vec<String>,
    /// Ids of benchmark relying parties (`bench-NNN`) still enabled.
    pub relying_parties: Vec<String>,
}

/// What a database is, read before anything is written to it (no
/// migration, no marker): see [`probe_for_benchmark`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchmarkProbe {
    /// No schema, or one with no certificate and no CA: a benchmark may take it.
    Empty,
    /// It carries the benchmark marker.
    Benchmark,
    /// It holds certificates or a CA and no marker: never a benchmark's.
    Real,
}

/// Looks at the database at `url` with one connection and reads only:
/// a benchmark pointed at a real installation by mistake must refuse before
/// migrating it (a newer benchmark's migrations would leave the product
/// binary unable to start on it).
pub async fn probe_for_benchmark(url: &str) -> Result<BenchmarkProbe> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let options: sqlx::any::AnyConnectOptions = url.parse()?;
    let mut conn = sqlx::AnyConnection::connect_with(&options).await?;
    // Only "no such table" means absent; any other error (permissions, a
    // timeout, a damaged file) refuses, as a benchmark must never guess.
    let absent = |e: &sqlx::Error| {
        let m = e.to_string();
        m.contains("no such table") || m.contains("does not exist")
    };
    let marked = match sqlx::query("SELECT COUNT(*) AS n FROM benchmark_marker")
        .fetch_one(&mut conn)
        .await
    {
        Ok(r) => r.try_get::<i64, _>("n")? > 0,
        Err(e) if absent(&e) => false,
        Err(e) => return Err(e.into()),
    };
    if marked {
        return Ok(BenchmarkProbe::Benchmark);
    }
    let mut used = 0i64;
    for sql in [
        "SELECT COUNT(*) AS n FROM certificates",
        "SELECT COUNT(*) AS n FROM authorities",
    ] {
        match sqlx::query(sql).fetch_one(&mut conn).await {
            Ok(r) => used += r.try_get::<i64, _>("n")?,
            Err(e) if absent(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let _ = conn.close().await;
    Ok(if used > 0 {
        BenchmarkProbe::Real
    } else {
        BenchmarkProbe::Empty
    })
}

impl Store {
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

impl Store {
    /// Benchmarks only: a card for each `(pinfl, document)` of `holders` (a
    /// finished card job, the person's current card) with two certificates
    /// of `issuer` (roles auth and sign, no certificate body), as registry
    /// events find them. Returns the serials, two per holder.
    pub async fn insert_synthetic_holders(
        &self,
        issuer: &str,
        holders: &[(String, String)],
        not_after: i64,
    ) -> Result<Vec<String>> {
        const ROWS: usize = 200;
        let now = crate::now_secs();
        let mut all = Vec::with_capacity(holders.len() * 2);
        for group in holders.chunks(20_000) {
            let mut tx = self.pool.begin().await?;
            for chunk in group.chunks(ROWS) {
                let mut certs = String::from(
                    "INSERT INTO certificates (serial, issuer, profile, subject, pinfl, not_before, not_after, \
                     tbs, status, created_at, revocation, job, job_role) VALUES ",
                );
                let mut jobs = String::from(
                    "INSERT INTO card_jobs (job, body_hash, pinfl, document, district, state, owner, \
                     lease_until, created_at, finished_at) VALUES ",
                );
                let mut cards = String::from(
                    "INSERT INTO person_cards (pinfl, job, document, updated_at) VALUES ",
                );
                let mut serials = Vec::new();
                for (i, _) in chunk.iter().enumerate() {
                    let sep = if i > 0 { "," } else { "" };
                    // $1 empty bytes; per holder: pinfl, document, job, serial auth, serial sign, issuer.
                    let p = 2 + i * 6;
                    certs.push_str(&format!(
                        "{sep}(${a}, ${iss}, 'bench', 'CN=bench', ${pin}, {now}, {not_after}, $1, 'issued', {now}, 'good', ${job}, 'auth'), \
                         (${b}, ${iss}, 'bench', 'CN=bench', ${pin}, {now}, {not_after}, $1, 'issued', {now}, 'good', ${job}, 'sign')",
                        a = p + 3,
                        b = p + 4,
                        iss = p + 5,
                        pin = p,
                        job = p + 2
                    ));
                    jobs.push_str(&format!(
                        "{sep}(${job}, $1, ${pin}, ${doc}, '1726269', 'done', 'bench', 0, {now}, {now})",
                        job = p + 2,
                        pin = p,
                        doc = p + 1
                    ));
                    cards.push_str(&format!(
                        "{sep}(${pin}, ${job}, ${doc}, {now})",
                        pin = p,
                        job = p + 2,
                        doc = p + 1
                    ));
                    let mut pair = Vec::new();
                    for _ in 0..2 {
                        let mut b = [0u8; 20];
                        synthetic_serial_bytes(&mut b);
                        b[0] = (b[0] & 0x3f) | 0x40;
                        pair.push(hex::encode_upper(b));
                    }
                    serials.push(pair);
                }
                for sql in [certs, jobs, cards] {
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(Vec::<u8>::new());
                    for ((pinfl, document), pair) in chunk.iter().zip(&serials) {
                        q = q
                            .bind(pinfl.clone())
                            .bind(document.clone())
                            .bind(format!("bench/{pinfl}"))
                            .bind(pair[0].clone())
                            .bind(pair[1].clone())
                            .bind(issuer.to_string());
                    }
                    q.execute(&mut *tx).await?;
                }
                all.extend(serials.into_iter().flatten());
            }
            tx.commit().await?;
        }
        Ok(all)
    }
}

impl Store {
    /// Benchmarks only: how many of `serials` have more than one status
    /// change (an event applied twice would make a second).
    pub async fn serials_changed_more_than_once(&self, serials: &[String]) -> Result<i64> {
        let mut twice = 0;
        for chunk in serials.chunks(crate::rows::CHUNK) {
            let sql = format!(
                "SELECT COUNT(*) AS n FROM (SELECT serial FROM status_changes WHERE serial IN ({}) \
                 GROUP BY serial HAVING COUNT(*) > 1) t",
                crate::rows::list(chunk.len(), 1)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for s in chunk {
                q = q.bind(s.as_str());
            }
            twice += q.fetch_one(&self.pool).await?.try_get::<i64, _>("n")?;
        }
        Ok(twice)
    }
}

impl Store {
    /// Benchmarks only: gathers the planner's statistics after synthetic
    /// rows were loaded, as a production database has them (autovacuum
    /// would, minutes later).
    ///
    /// PostgreSQL only: statistics SQLite gathered now would describe the
    /// tables the benchmark is about to fill as empty, and its planner, which
    /// never updates them by itself, would then scan them whole.
    pub async fn analyze_for_benchmark(&self) -> Result<()> {
        if self.backend() == crate::Backend::Postgres {
            sqlx::query("ANALYZE").execute(&self.pool).await?;
        }
        Ok(())
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

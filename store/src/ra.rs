//! What the registration authority keeps: its mutual-TLS clients, card jobs
//! (idempotency and supersession), the population-registry extract and the
//! outcomes the pilot report counts.
//!
//! A card job is claimed (`pending`) before its certificates are asked for and
//! finished (`done`) after they are committed. Exactly-once does not rest on the
//! claim: the certificates carry (job, role), unique in the database, so two
//! processes racing on one job can never both issue a role. The claim's lease only
//! spares a second process the wasted work while the first is still alive.

use sqlx::Row;

use crate::audit::{self, AuditEvent};
use crate::now_micros;
use crate::status;
use crate::{Backend, CertificateRecord, Intent, Result, Store, Tx, now_secs, rows};

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

/// RFC 5280 reason `superseded`.
const SUPERSEDED: i64 = 4;

/// A credential on the mutual-TLS listener, with its certificate's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaClient {
    pub serial: String,
    pub name: String,
    pub role: String,
    /// `good`, `suspended` or `revoked`.
    pub revocation: String,
    pub not_after: i64,
}

/// What a new card job claims.
#[derive(Clone, Debug)]
pub struct JobClaim {
    pub job: String,
    pub body_hash: Vec<u8>,
    pub pinfl: String,
    pub document: String,
    pub district: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRow {
    pub job: String,
    pub body_hash: Vec<u8>,
    pub pinfl: String,
    pub document: String,
    pub district: String,
    pub state: String,
    pub owner: String,
    pub lease_until: i64,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// A job's claim: ours now, or the row another request made first.
#[derive(Clone, Debug)]
pub enum Claim {
    New,
    Existing(JobRow),
}

/// A job whose certificates are all committed.
#[derive(Clone, Debug)]
pub struct FinishedJob {
    pub job: String,
    pub pinfl: String,
    pub document: String,
    pub district: String,
    pub certificates: i64,
    pub latency_us: i64,
}

/// Whether finishing a card revokes the person's previous card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Supersede {
    Revoke,
    Keep,
}

/// One line of `muhr registry import`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryPerson {
    pub pinfl: String,
    pub surname: String,
    pub given_name: String,
    pub patronymic: Option<String>,
    pub birth_date: String,
    pub deceased_on: Option<String>,
}

/// One answered personalization request, for the pilot report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub at: i64,
    pub district: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub certificates: i64,
    pub latency_us: i64,
}

/// A certificate as an operator sees it in a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateSummary {
    pub serial: String,
    pub profile: String,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    pub status: String,
    pub revocation: String,
    /// When it was revoked or suspended (Unix seconds).
    pub revoked_at: Option<i64>,
    pub revocation_reason: Option<i64>,
    pub pinfl: Option<String>,
    pub job: Option<String>,
    pub role: Option<String>,
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

macro_rules! summary_columns {
    () => {
        "serial, profile, subject, pinfl, not_before, not_after, status, revocation, revoked_at, revocation_reason, job, job_role"
    };
}

fn summary_from_row(r: &sqlx::any::AnyRow) -> Result<CertificateSummary> {
    Ok(CertificateSummary {
        serial: r.try_get("serial")?,
        profile: r.try_get("profile")?,
        subject: r.try_get("subject")?,
        not_before: r.try_get("not_before")?,
        not_after: r.try_get("not_after")?,
        status: r.try_get("status")?,
        revocation: r.try_get("revocation")?,
        revoked_at: r.try_get("revoked_at")?,
        revocation_reason: r.try_get("revocation_reason")?,
        pinfl: r.try_get("pinfl")?,
        job: r.try_get("job")?,
        role: r.try_get("job_role")?,
    })
}

impl Store {
    /// Registers a credential (its certificate is already issued), audited.
    pub async fn add_ra_client(
        &self,
        serial: &str,
        name: &str,
        role: &str,
        event: &AuditEvent,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO ra_clients (serial, name, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(serial)
        .bind(name)
        .bind(role)
        .bind(now_secs())
        .execute(&mut *tx)
        .await?;
        audit::append(self.backend(), &mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The registered client holding the certificate `serial`, if any.
    pub async fn ra_client(&self, serial: &str) -> Result<Option<RaClient>> {
        let row = sqlx::query(
            "SELECT c.serial, c.name, c.role, cert.revocation, cert.not_after FROM ra_clients c \
             JOIN certificates cert ON cert.serial = c.serial WHERE c.serial = $1",
        )
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(RaClient {
                serial: r.try_get("serial")?,
                name: r.try_get("name")?,
                role: r.try_get("role")?,
                revocation: r.try_get("revocation")?,
                not_after: r.try_get("not_after")?,
            })
        })
        .transpose()
    }

    /// Claims new jobs and records the intents of their certificates, in one
    /// transaction: a job is never claimed without its intents, nor an intent
    /// recorded for a job another request holds. A job that exists is returned
    /// as it is, and its intents are left out (`false`); an intent without a
    /// job is recorded as [`Store::record_intents`] would.
    pub async fn claim_jobs_recording(
        &self,
        claims: &[JobClaim],
        owner: &str,
        lease_secs: i64,
        intents: &[Intent],
    ) -> Result<(Vec<Claim>, Vec<bool>)> {
        if self.backend() == Backend::Postgres
            && !claims.is_empty()
            && !intents.is_empty()
            && claims.len() * 5 + intents.len() * 11 <= ONE_STATEMENT_PARAMS
        {
            return self
                .claim_jobs_recording_pg(claims, owner, lease_secs, intents)
                .await;
        }
        let mut tx = self.pool.begin().await?;
        let claimed = self
            .claim_jobs_in(&mut tx, claims, owner, lease_secs)
            .await?;
        let ours: std::collections::HashSet<&str> = claims
            .iter()
            .zip(&claimed)
            .filter(|(_, c)| matches!(c, Claim::New))
            .map(|(c, _)| c.job.as_str())
            .collect();
        let keep: Vec<bool> = intents
            .iter()
            .map(|i| i.job.as_ref().is_none_or(|j| ours.contains(j.job.as_str())))
            .collect();
        let kept: Vec<Intent> = intents
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(i, _)| i.clone())
            .collect();
        let mut recorded = self.record_intents_in(&mut tx, &kept).await?.into_iter();
        tx.commit().await?;
        let recorded = keep
            .into_iter()
            .map(|k| k && recorded.next().unwrap_or(false))
            .collect();
        Ok((claimed, recorded))
    }

    async fn claim_jobs_in(
        &self,
        tx: &mut Tx<'_>,
        claims: &[JobClaim],
        owner: &str,
        lease_secs: i64,
    ) -> Result<Vec<Claim>> {
        let now = now_micros();
        let lease_until = now_secs() + lease_secs;
        let mut new = std::collections::HashSet::new();
        for chunk in claims.chunks(rows::CHUNK) {
            let sql = format!(
                "INSERT INTO card_jobs (job, body_hash, pinfl, document, district, state, owner, \
                 lease_until, created_at) VALUES {} ON CONFLICT (job) DO NOTHING RETURNING job",
                rows::values(Backend::Sqlite, chunk.len(), 9, 1, &[])
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for c in chunk {
                q = q
                    .bind(&c.job)
                    .bind(&c.body_hash)
                    .bind(&c.pinfl)
                    .bind(&c.document)
                    .bind(&c.district)
                    .bind("pending")
                    .bind(owner)
                    .bind(lease_until)
                    .bind(now);
            }
            for r in q.fetch_all(&mut **tx).await? {
                new.insert(r.try_get::<String, _>("job")?);
            }
        }
        resolve_claims(tx, claims, new).await
    }

    /// [`Store::claim_jobs_recording`] on PostgreSQL: claims, intents and
    /// pending rows in one statement, which commits on its own. Three round
    /// trips fewer than a transaction around two statements, and PostgreSQL
    /// makes a statement as atomic as a transaction: a job is still never
    /// claimed without its intents. Rows another request made first are read
    /// afterwards (they exist already, committed, and only ever move on).
    async fn claim_jobs_recording_pg(
        &self,
        claims: &[JobClaim],
        owner: &str,
        lease_secs: i64,
        intents: &[Intent],
    ) -> Result<(Vec<Claim>, Vec<bool>)> {
        const FIRST: usize = 5;
        let (nc, ni) = (rows::padded(claims.len()), rows::padded(intents.len()));
        let claim_values = rows::values(Backend::Postgres, nc, 5, FIRST, CLAIM_CASTS);
        let intent_values = rows::values(
            Backend::Postgres,
            ni,
            11,
            FIRST + nc * 5,
            crate::INTENT_CASTS,
        );
        // An intent is recorded when it belongs to no job, or to a job this
        // statement claimed.
        let sql = format!(
            "WITH c (job, body_hash, pinfl, document, district) AS (VALUES {claim_values}), \
             claimed AS (INSERT INTO card_jobs (job, body_hash, pinfl, document, district, state, \
               owner, lease_until, created_at) \
               SELECT job, body_hash, pinfl, document, district, 'pending', $2, $3, $1 FROM c \
               WHERE job IS NOT NULL ON CONFLICT (job) DO NOTHING RETURNING job), \
             i (serial, issuer, profile, subject, pinfl, not_before, not_after, tbs, crl_shard, \
               job, job_role) AS (VALUES {intent_values}), \
             ins AS (INSERT INTO certificates (serial, issuer, profile, subject, pinfl, not_before, \
               not_after, tbs, crl_shard, job, job_role, status, created_at) \
               SELECT serial, issuer, profile, subject, pinfl, not_before, not_after, tbs, \
               crl_shard, job, job_role, 'pending', $4 FROM i \
               WHERE serial IS NOT NULL AND (i.job IS NULL OR i.job IN (SELECT job FROM claimed)) \
               ON CONFLICT (job, job_role) DO NOTHING RETURNING serial), \
             pend AS (INSERT INTO pending_certificates (serial, created_at) \
               SELECT serial, $4 FROM ins RETURNING serial) \
             SELECT 'job' AS kind, job AS name FROM claimed \
             UNION ALL SELECT 'serial', serial FROM pend"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_micros())
            .bind(owner)
            .bind(now_secs() + lease_secs)
            .bind(now_secs());
        for c in claims {
            q = q
                .bind(&c.job)
                .bind(&c.body_hash)
                .bind(&c.pinfl)
                .bind(&c.document)
                .bind(&c.district);
        }
        q = rows::bind_nulls(q, nc - claims.len(), CLAIM_CASTS);
        for i in intents {
            q = crate::bind_intent(q, i);
        }
        q = rows::bind_nulls(q, ni - intents.len(), crate::INTENT_CASTS);
        let mut conn = self.pool.acquire().await?;
        let rows = match q.fetch_all(&mut *conn).await {
            Ok(rows) => rows,
            Err(e) if crate::is_unique_violation(&e) => {
                return Err(crate::StoreError::Conflict(format!(
                    "a serial among {} intents is already used",
                    intents.len()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let mut new = std::collections::HashSet::new();
        let mut inserted = std::collections::HashSet::new();
        for r in rows {
            let name: String = r.try_get("name")?;
            if r.try_get::<String, _>("kind")? == "job" {
                new.insert(name);
            } else {
                inserted.insert(name);
            }
        }
        let claimed = resolve_claims(&mut conn, claims, new).await?;
        let recorded = intents
            .iter()
            .map(|i| inserted.contains(&i.serial))
            .collect();
        Ok((claimed, recorded))
    }

    /// Takes over a pending job whose lease ran out (its owner died or stalled).
    pub async fn take_over_job(&self, job: &str, owner: &str, lease_secs: i64) -> Result<bool> {
        let now = now_secs();
        let r = sqlx::query(
            "UPDATE card_jobs SET owner = $1, lease_until = $2 \
             WHERE job = $3 AND state = 'pending' AND lease_until < $4",
        )
        .bind(owner)
        .bind(now + lease_secs)
        .bind(job)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Extends the leases this owner holds on `jobs` while it still works on
    /// them, so that nobody takes over a job whose holder is alive. A job
    /// released, finished or already taken over is left alone. Returns how
    /// many leases were extended.
    pub async fn renew_job_leases(
        &self,
        jobs: &[String],
        owner: &str,
        lease_secs: i64,
    ) -> Result<u64> {
        let mut renewed = 0;
        for chunk in jobs.chunks(500) {
            let list = (0..chunk.len())
                .map(|i| format!("${}", i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "UPDATE card_jobs SET lease_until = $1 WHERE owner = $2 AND state = 'pending' \
                 AND lease_until > 0 AND job IN ({list})"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now_secs() + lease_secs)
                .bind(owner);
            for j in chunk {
                q = q.bind(j);
            }
            renewed += q.execute(&self.pool).await?.rows_affected();
        }
        Ok(renewed)
    }

    /// Ends a claim early (its request failed part way) so a retry need not
    /// wait for the lease.
    pub async fn release_job(&self, job: &str) -> Result<()> {
        sqlx::query("UPDATE card_jobs SET lease_until = 0 WHERE job = $1 AND state = 'pending'")
            .bind(job)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

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
                    intent: crate::intent_from_row(row)?,
                    der: row.try_get("der")?,
                    status: row.try_get("status")?,
                    created_at: row.try_get("created_at")?,
                    issued_at: row.try_get("issued_at")?,
                })
            })
            .collect()
    }

    /// Marks jobs done, counts them for the report and makes each the person's
    /// current card, all in one transaction. With [`Supersede::Revoke`] the
    /// certificates of the person's previous card are revoked (`superseded`) in
    /// that same transaction. A job someone else already finished is skipped.
    /// Returns the serials revoked, per job.
    pub async fn finish_jobs(
        &self,
        jobs: &[FinishedJob],
        supersede: Supersede,
        actor: &str,
    ) -> Result<Vec<Vec<String>>> {
        let mut tx = self.pool.begin().await?;
        let (revoked, events) = self.finish_jobs_in(&mut tx, jobs, supersede, actor).await?;
        let refs: Vec<&AuditEvent> = events.iter().collect();
        audit::append(self.backend(), &mut tx, &refs).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Stores signed certificates and finishes their jobs in one transaction
    /// (see [`Store::complete_issuance`] and [`Store::finish_jobs`]), with one
    /// audit append for both: a group of cards costs one commit here, and a
    /// job is done exactly when its certificates are.
    pub async fn complete_issuance_finishing(
        &self,
        issued: &[(String, Vec<u8>, AuditEvent)],
        jobs: &[FinishedJob],
        supersede: Supersede,
        actor: &str,
    ) -> Result<Vec<Vec<String>>> {
        let mut tx = self.pool.begin().await?;
        let one_statement = self.backend() == Backend::Postgres
            && !issued.is_empty()
            && !jobs.is_empty()
            && issued.len() * 2 + jobs.len() * 7 <= ONE_STATEMENT_PARAMS;
        let (revoked, events, head) = if one_statement {
            self.complete_finishing_pg(&mut tx, issued, jobs, supersede, actor)
                .await?
        } else {
            self.complete_issuance_in(&mut tx, issued).await?;
            let (revoked, events) = self.finish_jobs_in(&mut tx, jobs, supersede, actor).await?;
            (revoked, events, None)
        };
        let refs: Vec<&AuditEvent> = issued
            .iter()
            .map(|(_, _, e)| e)
            .chain(events.iter())
            .collect();
        audit::append_at(self.backend(), &mut tx, head, &refs).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Returns the serials revoked per job, and the audit entries the caller
    /// appends.
    async fn finish_jobs_in(
        &self,
        tx: &mut Tx<'_>,
        jobs: &[FinishedJob],
        supersede: Supersede,
        actor: &str,
    ) -> Result<(Vec<Vec<String>>, Vec<AuditEvent>)> {
        let now = now_micros();
        // Which of these jobs this call finishes (others were finished elsewhere).
        let mut finishing = std::collections::HashSet::new();
        for chunk in jobs.chunks(rows::CHUNK) {
            let sql = format!(
                "UPDATE card_jobs SET state = 'done', finished_at = $1 \
                 WHERE state = 'pending' AND job IN ({}) RETURNING job",
                rows::list(chunk.len(), 2)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
            for j in chunk {
                q = q.bind(&j.job);
            }
            for r in q.fetch_all(&mut **tx).await? {
                finishing.insert(r.try_get::<String, _>("job")?);
            }
        }
        let done: Vec<&FinishedJob> = jobs.iter().filter(|j| finishing.remove(&j.job)).collect();
        for chunk in done.chunks(rows::CHUNK) {
            let sql = format!(
                "INSERT INTO card_outcomes (at, district, outcome, reason, certificates, latency_us) VALUES {}",
                rows::values(Backend::Sqlite, chunk.len(), 6, 1, &[])
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for j in chunk {
                q = q
                    .bind(now)
                    .bind(&j.district)
                    .bind("issued")
                    .bind(None::<String>)
                    .bind(j.certificates)
                    .bind(j.latency_us);
            }
            q.execute(&mut **tx).await?;
        }
        let mut current: std::collections::HashMap<String, String> = Default::default();
        let pinfls: Vec<&str> = {
            let mut seen = std::collections::HashSet::new();
            done.iter()
                .map(|j| j.pinfl.as_str())
                .filter(|p| seen.insert(*p))
                .collect()
        };
        for chunk in pinfls.chunks(rows::CHUNK) {
            let sql = format!(
                "SELECT pinfl, job FROM person_cards WHERE pinfl IN ({})",
                rows::list(chunk.len(), 1)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for p in chunk {
                q = q.bind(*p);
            }
            for r in q.fetch_all(&mut **tx).await? {
                current.insert(r.try_get("pinfl")?, r.try_get("job")?);
            }
        }
        let (replaced, last) = successions(&done, current);
        for chunk in last.chunks(rows::CHUNK) {
            let sql = format!(
                "INSERT INTO person_cards (pinfl, job, document, updated_at) VALUES {} \
                 ON CONFLICT (pinfl) DO UPDATE SET job = excluded.job, document = excluded.document, \
                 updated_at = excluded.updated_at",
                rows::values(Backend::Sqlite, chunk.len(), 4, 1, &[])
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for j in chunk {
                q = q
                    .bind(&j.pinfl)
                    .bind(&j.job)
                    .bind(&j.document)
                    .bind(now_secs());
            }
            q.execute(&mut **tx).await?;
        }
        supersede_in(tx, jobs, &done, replaced, supersede, actor).await
    }

    /// [`Store::complete_issuance_finishing`] on PostgreSQL, up to the audit
    /// append: the certificates stored, the jobs finished and counted, each
    /// person's card read and replaced, and the audit head locked, in one
    /// statement (one round trip where the general path takes six). The head
    /// is locked last, after every row this transaction writes, as the
    /// general path does, so two groups never wait on each other in a cycle
    /// through it; people's cards are locked in PINFL order. Supersession, when
    /// there is any, follows in its own statements. Returns the head with the
    /// rest.
    async fn complete_finishing_pg(
        &self,
        tx: &mut Tx<'_>,
        issued: &[(String, Vec<u8>, AuditEvent)],
        jobs: &[FinishedJob],
        supersede: Supersede,
        actor: &str,
    ) -> Result<(Vec<Vec<String>>, Vec<AuditEvent>, Option<audit::Head>)> {
        const FIRST: usize = 4;
        // A job listed twice (two requests with one id in one group) is
        // finished and counted once, as its first listing.
        let mut seen = std::collections::HashSet::new();
        let distinct: Vec<&FinishedJob> = jobs.iter().filter(|j| seen.insert(&j.job)).collect();
        // Padding rows are all NULL, and a NULL serial or job matches nothing.
        let (ni, nj) = (rows::padded(issued.len()), rows::padded(distinct.len()));
        let certificate_values = rows::values(Backend::Postgres, ni, 2, FIRST, STORED_CASTS);
        let job_values = rows::values(Backend::Postgres, nj, 7, FIRST + ni * 2, FINISHED_CASTS);
        // The UNION's branches run in order, which orders the locks; the
        // DELETE and the outcomes' INSERT take none another group waits for,
        // and run at the end.
        let sql = format!(
            "WITH v (serial, der) AS (VALUES {certificate_values}), \
             done AS (UPDATE certificates SET der = v.der, tbs = $2, status = 'issued', \
               issued_at = $1 FROM v WHERE certificates.serial = v.serial \
               AND certificates.status = 'pending' RETURNING certificates.serial), \
             gone AS (DELETE FROM pending_certificates WHERE serial IN (SELECT serial FROM done)), \
             j (job, pinfl, document, district, certificates, latency_us, ord) AS \
               (VALUES {job_values}), \
             fin AS (UPDATE card_jobs SET state = 'done', finished_at = $3 FROM j \
               WHERE card_jobs.job = j.job AND card_jobs.state = 'pending' \
               RETURNING card_jobs.job), \
             counted AS (INSERT INTO card_outcomes (at, district, outcome, reason, certificates, \
               latency_us) SELECT $3, district, 'issued', NULL, certificates, latency_us FROM j \
               WHERE job IN (SELECT job FROM fin)), \
             prev AS (SELECT pinfl, job FROM person_cards WHERE pinfl IN \
               (SELECT pinfl FROM j WHERE job IN (SELECT job FROM fin)) ORDER BY pinfl FOR UPDATE), \
             cards AS (INSERT INTO person_cards (pinfl, job, document, updated_at) \
               SELECT DISTINCT ON (pinfl) pinfl, job, document, $1 FROM j \
               WHERE job IN (SELECT job FROM fin) ORDER BY pinfl, ord DESC \
               ON CONFLICT (pinfl) DO UPDATE SET job = excluded.job, \
               document = excluded.document, updated_at = excluded.updated_at RETURNING pinfl), \
             head AS (SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE) \
             SELECT 'stored' AS kind, NULL::text AS a, NULL::text AS b, \
               (SELECT count(*) FROM done) AS n, NULL::bytea AS h \
             UNION ALL SELECT 'finished', job, NULL, NULL, NULL FROM fin \
             UNION ALL SELECT 'current', pinfl, job, NULL, NULL FROM prev \
             UNION ALL SELECT 'cards', NULL, NULL, count(*), NULL FROM cards \
             UNION ALL SELECT 'head', NULL, NULL, seq, hash FROM head"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_secs())
            .bind(Vec::<u8>::new())
            .bind(now_micros());
        for (serial, der, _) in issued {
            q = q.bind(serial).bind(der);
        }
        q = rows::bind_nulls(q, ni - issued.len(), STORED_CASTS);
        for (ord, j) in distinct.iter().enumerate() {
            q = q
                .bind(&j.job)
                .bind(&j.pinfl)
                .bind(&j.document)
                .bind(&j.district)
                .bind(j.certificates)
                .bind(j.latency_us)
                .bind(ord as i64);
        }
        q = rows::bind_nulls(q, nj - distinct.len(), FINISHED_CASTS);
        let mut stored = 0;
        let mut finishing = std::collections::HashSet::new();
        let mut current: std::collections::HashMap<String, String> = Default::default();
        let mut head = None;
        for r in q.fetch_all(&mut **tx).await? {
            let kind: String = r.try_get("kind")?;
            match kind.as_str() {
                "stored" => stored = r.try_get::<i64, _>("n")?,
                "finished" => {
                    finishing.insert(r.try_get::<String, _>("a")?);
                }
                "current" => {
                    current.insert(r.try_get("a")?, r.try_get("b")?);
                }
                "head" => {
                    head = Some(audit::Head {
                        seq: r.try_get("n")?,
                        hash: r.try_get("h")?,
                    })
                }
                _ => {}
            }
        }
        if stored != issued.len() as i64 {
            return Err(crate::StoreError::Conflict(format!(
                "{} of {} certificates are no longer pending issuance",
                issued.len() as i64 - stored,
                issued.len()
            )));
        }
        let head = head.ok_or_else(|| {
            crate::StoreError::Conflict("the audit chain has no head".to_string())
        })?;
        let done: Vec<&FinishedJob> = distinct
            .into_iter()
            .filter(|j| finishing.contains(&j.job))
            .collect();
        let (replaced, _) = successions(&done, current);
        let (revoked, events) = supersede_in(tx, jobs, &done, replaced, supersede, actor).await?;
        Ok((revoked, events, Some(head)))
    }

    /// Counts a refused or failed request for the pilot report.
    pub async fn record_outcome(
        &self,
        district: &str,
        outcome: &str,
        reason: &str,
        latency_us: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO card_outcomes (at, district, outcome, reason, certificates, latency_us) \
             VALUES ($1, $2, $3, $4, 0, $5)",
        )
        .bind(now_micros())
        .bind(district)
        .bind(outcome)
        .bind(reason)
        .bind(latency_us)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Outcomes with `from <= at < to` (Unix microseconds).
    pub async fn outcomes(&self, from: i64, to: i64) -> Result<Vec<Outcome>> {
        let rows = sqlx::query(
            "SELECT at, district, outcome, reason, certificates, latency_us FROM card_outcomes \
             WHERE at >= $1 AND at < $2 ORDER BY at",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Outcome {
                    at: r.try_get("at")?,
                    district: r.try_get("district")?,
                    outcome: r.try_get("outcome")?,
                    reason: r.try_get("reason")?,
                    certificates: r.try_get("certificates")?,
                    latency_us: r.try_get("latency_us")?,
                })
            })
            .collect()
    }

    /// Loads (or replaces) registry rows in one transaction, audited as one act.
    pub async fn import_registry(
        &self,
        people: &[RegistryPerson],
        event: &AuditEvent,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let now = now_secs();
        for p in people {
            sqlx::query(
                "INSERT INTO population_registry (pinfl, surname, given_name, patronymic, birth_date, \
                 deceased_on, imported_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (pinfl) DO UPDATE SET surname = excluded.surname, \
                 given_name = excluded.given_name, patronymic = excluded.patronymic, \
                 birth_date = excluded.birth_date, deceased_on = excluded.deceased_on, \
                 imported_at = excluded.imported_at",
            )
            .bind(&p.pinfl)
            .bind(&p.surname)
            .bind(&p.given_name)
            .bind(p.patronymic.clone())
            .bind(&p.birth_date)
            .bind(p.deceased_on.clone())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        audit::append(self.backend(), &mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn registry_person(&self, pinfl: &str) -> Result<Option<RegistryPerson>> {
        Ok(self.registry_people(&[pinfl]).await?.pop())
    }

    /// What the registry holds on any of these people, in one query per
    /// `rows::CHUNK` of them (a group of cards asks once, not per card).
    pub async fn registry_people(&self, pinfls: &[&str]) -> Result<Vec<RegistryPerson>> {
        let mut people = Vec::new();
        for chunk in pinfls.chunks(rows::CHUNK) {
            let sql = format!(
                "SELECT pinfl, surname, given_name, patronymic, birth_date, deceased_on \
                 FROM population_registry WHERE pinfl IN ({})",
                rows::list(rows::padded(chunk.len()), 1)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for p in chunk {
                q = q.bind(*p);
            }
            q = rows::bind_nulls(q, rows::padded(chunk.len()) - chunk.len(), &["text"]);
            for r in q.fetch_all(&self.pool).await? {
                people.push(RegistryPerson {
                    pinfl: r.try_get("pinfl")?,
                    surname: r.try_get("surname")?,
                    given_name: r.try_get("given_name")?,
                    patronymic: r.try_get("patronymic")?,
                    birth_date: r.try_get("birth_date")?,
                    deceased_on: r.try_get("deceased_on")?,
                });
            }
        }
        Ok(people)
    }

    /// A person's certificates, newest first, for operators.
    pub async fn certificates_of_person(&self, pinfl: &str) -> Result<Vec<CertificateSummary>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            summary_columns!(),
            " FROM certificates WHERE pinfl = $1 ORDER BY not_before DESC, serial"
        ))
        .bind(pinfl)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(summary_from_row).collect()
    }

    /// Every certificate of a person with its profile and its bytes: the
    /// signed certificate, or the to-be-signed one while pending. The RA
    /// reads the keys out of them (a person has a handful).
    pub async fn certificate_bytes_of_person(
        &self,
        pinfl: &str,
    ) -> Result<Vec<(String, String, bool, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT serial, profile, der IS NOT NULL AS signed, COALESCE(der, tbs) AS bytes \
             FROM certificates WHERE pinfl = $1",
        )
        .bind(pinfl)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let signed: bool = r
                    .try_get::<bool, _>("signed")
                    .or_else(|_| r.try_get::<i64, _>("signed").map(|v| v != 0))?;
                Ok((
                    r.try_get("serial")?,
                    r.try_get("profile")?,
                    signed,
                    r.try_get("bytes")?,
                ))
            })
            .collect()
    }

    pub async fn certificate_summary(&self, serial: &str) -> Result<Option<CertificateSummary>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            summary_columns!(),
            " FROM certificates WHERE serial = $1"
        ))
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(summary_from_row).transpose()
    }

    /// Audit entries about one object (a job, a serial), oldest first.
    pub async fn audit_of(&self, object: &str) -> Result<Vec<(i64, String, String, String)>> {
        let rows = sqlx::query(
            "SELECT at, actor, action, details FROM audit_log WHERE object = $1 ORDER BY seq",
        )
        .bind(object)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("at")?,
                    r.try_get("actor")?,
                    r.try_get("action")?,
                    r.try_get("details")?,
                ))
            })
            .collect()
    }
}

/// Each claim, in order: the first claim of a job in `new` (inserted by this
/// call) is ours; any other is the row that already exists, read here.
async fn resolve_claims(
    conn: &mut sqlx::AnyConnection,
    claims: &[JobClaim],
    mut new: std::collections::HashSet<String>,
) -> Result<Vec<Claim>> {
    // The first claim of a job inserted here is new; any other is existing.
    let mut out: Vec<Option<Claim>> = claims
        .iter()
        .map(|c| new.remove(&c.job).then_some(Claim::New))
        .collect();
    let existing: Vec<&str> = claims
        .iter()
        .zip(&out)
        .filter(|(_, o)| o.is_none())
        .map(|(c, _)| c.job.as_str())
        .collect();
    let mut rows_by_job = std::collections::HashMap::new();
    for chunk in existing.chunks(rows::CHUNK) {
        let sql = format!(
            concat!(
                "SELECT ",
                job_columns!(),
                " FROM card_jobs WHERE job IN ({})"
            ),
            rows::list(chunk.len(), 1)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for j in chunk {
            q = q.bind(*j);
        }
        for r in q.fetch_all(&mut *conn).await? {
            let row = job_from_row(&r)?;
            rows_by_job.insert(row.job.clone(), row);
        }
    }
    for (c, o) in claims.iter().zip(out.iter_mut()) {
        if o.is_none() {
            let row = rows_by_job.get(&c.job).cloned().ok_or_else(|| {
                crate::StoreError::Conflict(format!("card job {} vanished", c.job))
            })?;
            *o = Some(Claim::Existing(row));
        }
    }
    Ok(out.into_iter().map(|o| o.expect("filled")).collect())
}

/// For finished jobs in order, given each person's card before them: the job
/// each one replaced (none for a first card, or a job finished again), and each
/// person's last job, which becomes their card.
fn successions<'a>(
    done: &[&'a FinishedJob],
    mut current: std::collections::HashMap<String, String>,
) -> (Vec<Option<String>>, Vec<&'a FinishedJob>) {
    let mut replaced = Vec::with_capacity(done.len());
    let mut last: std::collections::HashMap<&str, &FinishedJob> = Default::default();
    for j in done {
        let prev = current.insert(j.pinfl.clone(), j.job.clone());
        replaced.push(prev.filter(|p| *p != j.job));
        last.insert(j.pinfl.as_str(), j);
    }
    (replaced, last.into_values().collect())
}

/// Revokes (`superseded`) the certificates of the cards `done` replaced, when
/// `supersede` says so. Returns the serials revoked per job of `jobs`, and
/// their audit entries.
async fn supersede_in(
    tx: &mut Tx<'_>,
    jobs: &[FinishedJob],
    done: &[&FinishedJob],
    replaced: Vec<Option<String>>,
    supersede: Supersede,
    actor: &str,
) -> Result<(Vec<Vec<String>>, Vec<AuditEvent>)> {
    let superseding: std::collections::HashMap<String, &str> = match supersede {
        Supersede::Revoke => done
            .iter()
            .zip(replaced)
            .filter_map(|(j, prev)| prev.map(|p| (p, j.job.as_str())))
            .collect(),
        Supersede::Keep => Default::default(),
    };
    let mut previous: std::collections::HashMap<String, String> = Default::default();
    let prev_jobs: Vec<&String> = superseding.keys().collect();
    for chunk in prev_jobs.chunks(rows::CHUNK) {
        let sql = format!(
            "SELECT serial, job FROM certificates WHERE job IN ({}) \
             AND status = 'issued' AND revocation <> 'revoked'",
            rows::list(chunk.len(), 1)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in chunk {
            q = q.bind(*p);
        }
        for r in q.fetch_all(&mut **tx).await? {
            previous.insert(r.try_get("serial")?, r.try_get("job")?);
        }
    }
    let serials: Vec<&str> = previous.keys().map(String::as_str).collect();
    let revoked = status::revoke_many_in(tx, &serials, SUPERSEDED).await?;
    let mut events = Vec::with_capacity(revoked.len());
    let mut revoked_by_job: std::collections::HashMap<&str, Vec<String>> = Default::default();
    for st in revoked {
        let Some((prev, by)) = previous
            .get(&st.serial)
            .and_then(|p| superseding.get(p).map(|by| (p, *by)))
        else {
            continue;
        };
        events.push(AuditEvent {
            actor: actor.to_string(),
            action: "certificate.revoke".into(),
            object: st.serial.clone(),
            details: serde_json::json!({
                "reason": "superseded",
                "card_job": prev,
                "superseded_by": by,
            }),
        });
        revoked_by_job.entry(by).or_default().push(st.serial);
    }
    let revoked = jobs
        .iter()
        .map(|j| revoked_by_job.remove(j.job.as_str()).unwrap_or_default())
        .collect();
    Ok((revoked, events))
}

//! Claiming card jobs with their certificates' intents, in the CA's first
//! commit, and the leases that spare a second process wasted work.

use sqlx::Row;

use super::*;
use crate::now_micros;
use crate::{Backend, Intent, Result, Store, Tx, now_secs, rows};

impl Store {
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
            .map(|i| {
                i.once
                    .as_ref()
                    .is_none_or(|o| ours.contains(o.key.as_str()))
            })
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

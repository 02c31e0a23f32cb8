//! Finishing card jobs with their certificates, in the CA's second commit,
//! and superseding each person's previous card.

use sqlx::Row;

use super::*;
use crate::audit::{self, AuditEvent};
use crate::now_micros;
use crate::status;
use crate::{Backend, Result, Store, Tx, now_secs, rows};

impl Store {
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

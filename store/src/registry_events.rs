//! Population-registry events (deaths, lost and invalidated documents, name
//! changes) as the store keeps them: each event once, by the id its source
//! gave it, with the certificate changes it caused, in one transaction.
//!
//! The store does not decide what an event does. A batch is opened
//! ([`Store::open_event_batch`]): its people are locked, in PINFL order, and
//! what the store knows of them is read. The RA decides from those facts and
//! hands back a [`Plan`], which [`EventBatch::commit`] writes with the status
//! changes, the audit entries and the answers. If another node recorded one
//! of the batch's events in between, nothing is written
//! ([`Committed::Raced`]) and the caller opens the batch again, which then
//! finds the event recorded: the primary key, not a lock in memory, is what
//! applies an event once.

use std::collections::{BTreeSet, HashMap};

use sqlx::Row;

use crate::audit::{self, AuditEvent};
use crate::status;
use crate::{Backend, Result, Store, Tx, now_micros, now_secs, rows};

/// An event as recorded: what a retry of the same id is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The id the source gave it.
    pub id: String,
    /// SHA-256 of the event as parsed: the same id with other content is a
    /// conflict, not a retry.
    pub body_hash: Vec<u8>,
    /// `person.deceased`, `document.lost`, ...
    pub kind: String,
    /// Whose event it is.
    pub pinfl: String,
    /// The source's order.
    pub seq: i64,
    /// `applied`, `no_change`, `unknown_person`, `unknown_document`,
    /// `replaced`, `stale` or `refused`.
    pub outcome: String,
    /// The certificates it revoked or suspended.
    pub serials: Vec<String>,
    /// Why, when nothing or not everything was applied.
    pub detail: Option<String>,
}

/// One of a person's certificates, issued or under way (its intent
/// recorded), as an event may change it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonCertificate {
    /// Upper-case hex.
    pub serial: String,
    /// The identity document of the card it was issued with; `None` for a
    /// certificate issued remotely.
    pub document: Option<String>,
    /// `good`, `suspended` or `revoked`.
    pub revocation: String,
    /// Past its notAfter: no event changes it.
    pub expired: bool,
}

/// What the store knows of one person of a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersonFacts {
    /// Listed by the registry extract, or holding any certificate or card:
    /// an event about anybody else is reported as about an unknown person.
    pub known: bool,
    /// The seq of the newest name change applied (0: none).
    pub names_seq: i64,
    /// The date of death a `person.deceased` event recorded (the extract's
    /// own date is not this: see [`Store::deaths`]).
    pub deceased_on: Option<String>,
    /// The document of the person's current card.
    pub current_document: Option<String>,
    /// Every issued certificate, revoked and expired ones included (they tell
    /// a replaced card from an unknown one).
    pub certificates: Vec<PersonCertificate>,
}

/// A batch's facts, read under the lock of its people.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Events of the batch already recorded, by id.
    pub recorded: HashMap<String, RecordedEvent>,
    /// By PINFL, every person of the batch.
    pub people: HashMap<String, PersonFacts>,
    /// The transaction's time (Unix seconds): revocations carry it.
    pub now: i64,
}

/// Registry state to keep for a person after the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateUpdate {
    /// Whose.
    pub pinfl: String,
    /// The newest name change applied.
    pub names_seq: i64,
    /// The date of death, once recorded.
    pub deceased_on: Option<String>,
}

/// A name review: once `due_at` has passed, certificates naming the person
/// otherwise than these names are revoked (`affiliationChanged`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameReview {
    /// Whose.
    pub pinfl: String,
    /// Unix seconds.
    pub due_at: i64,
    /// The event that changed the names.
    pub event: String,
    /// The new surname.
    pub surname: String,
    /// The new given name.
    pub given_name: String,
    /// The new patronymic, if any.
    pub patronymic: Option<String>,
}

/// What the RA decided for a batch.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Who applies the batch (`ra-client:NAME`, `operator:NAME`).
    pub actor: String,
    /// One per new event of the batch: its answer, recorded.
    pub events: Vec<RecordedEvent>,
    /// Certificates to revoke, with the RFC 5280 reason code.
    pub revoke: Vec<(String, i64)>,
    /// Certificates to suspend (certificateHold).
    pub suspend: Vec<String>,
    /// Registry state to keep.
    pub state: Vec<StateUpdate>,
    /// Name reviews to schedule (replacing the person's pending one).
    pub reviews: Vec<NameReview>,
    /// Audit entries.
    pub audit: Vec<AuditEvent>,
    /// Notices to the people whose certificates the events changed.
    pub notices: Vec<crate::notices::NewNotice>,
    /// Documents reported lost, stolen or invalidated: (document, PINFL,
    /// kind, event id). The first report of a document stands.
    pub block: Vec<(String, String, String, String)>,
}

/// How a commit ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Committed {
    /// Everything was written. The serials whose status changed.
    Done(Vec<String>),
    /// Another node recorded one of the events first: nothing was written;
    /// open the batch again.
    Raced,
}

/// An open batch: its people are locked until it commits or is dropped.
pub struct EventBatch {
    tx: Tx<'static>,
    backend: Backend,
    /// What the store knows; the RA decides from it.
    pub facts: Facts,
}

/// Rows per statement here. PostgreSQL: a batch's thousand events in one
/// round trip per table (10,000 parameters for the widest, far under its
/// limit). SQLite has no round trips, and binding costs grow faster than the
/// parameter count: its statements stay at [`rows::CHUNK`] rows.
fn big(backend: Backend) -> usize {
    match backend {
        Backend::Postgres => 1000,
        Backend::Sqlite => rows::CHUNK,
    }
}

/// The first key of the advisory locks on people ("muhr" in ASCII), apart
/// from any other advisory lock.
const REGISTRY_LOCK_CLASS: i32 = 0x6d75_6872;

const EVENT_COLUMNS: &str =
    "id, body_hash, kind, pinfl, seq, outcome, serials, detail, actor, applied_at";

impl Store {
    /// Opens a batch of events `(id, pinfl)`: locks their people and reads
    /// what is known of them and which events are already recorded.
    pub async fn open_event_batch(&self, events: &[(&str, &str)]) -> Result<EventBatch> {
        let mut tx = self.pool.begin().await?;
        let now = now_secs();
        let pinfls: Vec<&str> = events
            .iter()
            .map(|(_, p)| *p)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut people: HashMap<String, PersonFacts> = HashMap::new();
        // The lock, taken in PINFL order so two batches sharing people queue
        // instead of deadlocking. PostgreSQL: a transaction advisory lock
        // per person (nothing written for the many people an event finds
        // nothing about), then their state is read. SQLite has one writer:
        // an upsert of the people's rows takes the write lock at once.
        for chunk in pinfls.chunks(big(self.backend())) {
            let rows = match self.backend() {
                Backend::Postgres => {
                    let sql = format!(
                        "SELECT pg_advisory_xact_lock({REGISTRY_LOCK_CLASS}, hashtext(v.p)) \
                         FROM (VALUES {}) AS v (p) ORDER BY hashtext(v.p)",
                        rows::values(Backend::Postgres, chunk.len(), 1, 1, &["text"])
                    );
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for p in chunk {
                        q = q.bind(*p);
                    }
                    q.execute(&mut *tx).await?;
                    let sql = format!(
                        "SELECT pinfl, names_seq, deceased_on FROM registry_state WHERE pinfl IN ({})",
                        rows::list(chunk.len(), 1)
                    );
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for p in chunk {
                        q = q.bind(*p);
                    }
                    q.fetch_all(&mut *tx).await?
                }
                Backend::Sqlite => {
                    let sql = format!(
                        "INSERT INTO registry_state (pinfl, names_seq, deceased_on, updated_at) VALUES {} \
                         ON CONFLICT (pinfl) DO UPDATE SET updated_at = excluded.updated_at \
                         RETURNING pinfl, names_seq, deceased_on",
                        rows::values(Backend::Sqlite, chunk.len(), 4, 1, &[])
                    );
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for p in chunk {
                        q = q.bind(*p).bind(0i64).bind(None::<String>).bind(now);
                    }
                    q.fetch_all(&mut *tx).await?
                }
            };
            for r in rows {
                let pinfl: String = r.try_get("pinfl")?;
                people.insert(
                    pinfl,
                    PersonFacts {
                        names_seq: r.try_get("names_seq")?,
                        deceased_on: r.try_get("deceased_on")?,
                        ..Default::default()
                    },
                );
            }
        }
        let ids: Vec<&str> = events
            .iter()
            .map(|(id, _)| *id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut recorded = HashMap::new();
        for chunk in ids.chunks(big(self.backend())) {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM registry_events WHERE id IN ({})",
                rows::list(chunk.len(), 1)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&mut *tx).await? {
                let e = event_from_row(&r)?;
                recorded.insert(e.id.clone(), e);
            }
        }
        for chunk in pinfls.chunks(big(self.backend())) {
            let list = rows::list(chunk.len(), 1);
            let bind = |sql: String| {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for p in chunk {
                    q = q.bind(*p);
                }
                q
            };
            let certs = bind(format!(
                // The card's document through a lookup per certificate found:
                // as a join, PostgreSQL hashed the whole card_jobs table
                // for every batch.
                "SELECT c.serial, c.pinfl, c.revocation, c.not_after, \
                 (SELECT j.document FROM card_jobs j WHERE j.job = c.job) AS document \
                 FROM certificates c \
                 WHERE c.pinfl IN ({list}) AND c.status IN ('pending', 'issued') ORDER BY c.serial"
            ))
            .fetch_all(&mut *tx)
            .await?;
            for r in certs {
                let pinfl: String = r.try_get("pinfl")?;
                let not_after: i64 = r.try_get("not_after")?;
                let p = people.entry(pinfl).or_default();
                p.known = true;
                p.certificates.push(PersonCertificate {
                    serial: r.try_get("serial")?,
                    document: r.try_get("document")?,
                    revocation: r.try_get("revocation")?,
                    expired: not_after < now,
                });
            }
            for r in bind(format!(
                "SELECT pinfl, document FROM person_cards WHERE pinfl IN ({list})"
            ))
            .fetch_all(&mut *tx)
            .await?
            {
                let pinfl: String = r.try_get("pinfl")?;
                let p = people.entry(pinfl).or_default();
                p.known = true;
                p.current_document = Some(r.try_get("document")?);
            }
            // The extract only makes a person known here: its date of death
            // is not the events' record (a later extract without it must not
            // bring the person back), so a death event always writes its own.
            for r in bind(format!(
                "SELECT pinfl FROM population_registry WHERE pinfl IN ({list})"
            ))
            .fetch_all(&mut *tx)
            .await?
            {
                let pinfl: String = r.try_get("pinfl")?;
                people.entry(pinfl).or_default().known = true;
            }
        }
        Ok(EventBatch {
            tx,
            backend: self.backend(),
            facts: Facts {
                recorded,
                people,
                now,
            },
        })
    }

    /// A recorded event, for operators and for answering a retry.
    pub async fn registry_event(&self, id: &str) -> Result<Option<RecordedEvent>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM registry_events WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    /// Events that found nobody or were refused, newest first, at most
    /// `limit`: what operators follow up.
    pub async fn unmatched_registry_events(&self, limit: i64) -> Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM registry_events \
             WHERE outcome IN ('unknown_person', 'unknown_document', 'refused') \
             ORDER BY applied_at DESC LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// How many events are recorded, by outcome (reports, tests).
    pub async fn registry_event_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT outcome, COUNT(*) AS n FROM registry_events GROUP BY outcome ORDER BY outcome",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("outcome")?, r.try_get("n")?)))
            .collect()
    }

    /// The dates of death recorded for any of `pinfls`, by an event or by the
    /// registry extract: issuance to them is refused.
    pub async fn deaths(&self, pinfls: &[&str]) -> Result<HashMap<String, String>> {
        let mut dead = HashMap::new();
        for chunk in pinfls.chunks(rows::CHUNK) {
            let n = rows::padded(chunk.len());
            let list = rows::list(n, 1);
            let sql = format!(
                "SELECT pinfl, deceased_on FROM registry_state \
                 WHERE pinfl IN ({list}) AND deceased_on IS NOT NULL \
                 UNION ALL SELECT pinfl, deceased_on FROM population_registry \
                 WHERE pinfl IN ({list}) AND deceased_on IS NOT NULL"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for p in chunk {
                q = q.bind(*p);
            }
            q = rows::bind_nulls(q, n - chunk.len(), &["text"]);
            for r in q.fetch_all(&self.pool).await? {
                dead.entry(r.try_get("pinfl")?)
                    .or_insert(r.try_get("deceased_on")?);
            }
        }
        Ok(dead)
    }

    /// Certificates not revoked, issued or under way, of people whose death
    /// was recorded at or after `since` (Unix seconds): those whose
    /// issuance checked for a death just before it was recorded. At most
    /// `limit`, as (serial, PINFL).
    pub async fn live_certificates_of_the_recently_dead(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT c.serial, c.pinfl FROM registry_state s JOIN certificates c ON c.pinfl = s.pinfl \
             WHERE s.deceased_on IS NOT NULL AND s.updated_at >= $1 \
             AND c.status IN ('pending', 'issued') AND c.revocation <> 'revoked' AND c.not_after >= $2 \
             ORDER BY c.serial LIMIT $3",
        )
        .bind(since)
        .bind(now_secs())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("serial")?, r.try_get("pinfl")?)))
            .collect()
    }

    /// Revokes `serials` (issued or under way) with `reason`, the audit
    /// entry and a `notice` for each certificate revoked, in one
    /// transaction; answers the serials revoked (not those revoked before).
    pub async fn revoke_noticed(
        &self,
        serials: &[&str],
        reason: i64,
        event: &AuditEvent,
        notice: impl Fn(&str) -> crate::notices::NewNotice,
    ) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let changed = status::revoke_many_in_flight(&mut tx, serials, reason).await?;
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let notices: Vec<_> = changed.iter().map(|s| notice(&s.serial)).collect();
        crate::notices::queue_in(&mut tx, &notices).await?;
        audit::append(self.backend(), &mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(changed.into_iter().map(|s| s.serial).collect())
    }

    /// Which of `documents` the registry reported lost, stolen or
    /// invalidated, with the event's kind.
    pub async fn blocked_documents(&self, documents: &[&str]) -> Result<HashMap<String, String>> {
        let mut blocked = HashMap::new();
        for chunk in documents.chunks(rows::CHUNK) {
            let n = rows::padded(chunk.len());
            let sql = format!(
                "SELECT document, kind FROM blocked_documents WHERE document IN ({})",
                rows::list(n, 1)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for d in chunk {
                q = q.bind(*d);
            }
            q = rows::bind_nulls(q, n - chunk.len(), &["text"]);
            for r in q.fetch_all(&self.pool).await? {
                blocked.insert(r.try_get("document")?, r.try_get("kind")?);
            }
        }
        Ok(blocked)
    }

    /// Name reviews due at `now` (Unix seconds), oldest first, at most `limit`.
    pub async fn due_name_reviews(&self, now: i64, limit: i64) -> Result<Vec<NameReview>> {
        let rows = sqlx::query(
            "SELECT pinfl, due_at, event, surname, given_name, patronymic FROM name_reviews \
             WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NameReview {
                    pinfl: r.try_get("pinfl")?,
                    due_at: r.try_get("due_at")?,
                    event: r.try_get("event")?,
                    surname: r.try_get("surname")?,
                    given_name: r.try_get("given_name")?,
                    patronymic: r.try_get("patronymic")?,
                })
            })
            .collect()
    }

    /// Ends a name review: revokes `serials` (`affiliationChanged`) with the
    /// audit entry and a `notice` for each certificate it revoked, and
    /// removes the review, in one transaction. A review
    /// replaced by a newer name change since it was read (another event) is
    /// left alone and `None` is answered.
    pub async fn finish_name_review(
        &self,
        review: &NameReview,
        serials: &[&str],
        reason: i64,
        event: &AuditEvent,
        notice: impl Fn(&str) -> crate::notices::NewNotice,
    ) -> Result<Option<Vec<String>>> {
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM name_reviews WHERE pinfl = $1 AND event = $2")
            .bind(&review.pinfl)
            .bind(&review.event)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() != 1 {
            return Ok(None);
        }
        let changed = status::revoke_many_in_flight(&mut tx, serials, reason).await?;
        let notices: Vec<_> = changed.iter().map(|s| notice(&s.serial)).collect();
        crate::notices::queue_in(&mut tx, &notices).await?;
        audit::append(self.backend(), &mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(Some(changed.into_iter().map(|s| s.serial).collect()))
    }
}

impl EventBatch {
    /// Writes the plan: the events first (if another node recorded one of
    /// them since the batch was opened, nothing is written), then the status
    /// changes and their feed, the people's state, the name reviews and the
    /// audit entries, in one transaction.
    pub async fn commit(mut self, plan: &Plan) -> Result<Committed> {
        let at = now_micros();
        let tx = &mut self.tx;
        for chunk in plan.events.chunks(big(self.backend)) {
            let sql = format!(
                "INSERT INTO registry_events ({EVENT_COLUMNS}) VALUES {} \
                 ON CONFLICT (id) DO NOTHING RETURNING id",
                rows::values(Backend::Sqlite, chunk.len(), 10, 1, &[])
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                q = q
                    .bind(&e.id)
                    .bind(&e.body_hash)
                    .bind(&e.kind)
                    .bind(&e.pinfl)
                    .bind(e.seq)
                    .bind(&e.outcome)
                    .bind(e.serials.join(" "))
                    .bind(e.detail.clone())
                    .bind(&plan.actor)
                    .bind(at);
            }
            if q.fetch_all(&mut **tx).await?.len() != chunk.len() {
                return Ok(Committed::Raced);
            }
        }
        let mut changed = Vec::new();
        let mut by_reason: HashMap<i64, Vec<&str>> = HashMap::new();
        for (serial, reason) in &plan.revoke {
            by_reason.entry(*reason).or_default().push(serial);
        }
        let mut reasons: Vec<_> = by_reason.into_iter().collect();
        reasons.sort();
        for (reason, serials) in reasons {
            for s in status::revoke_many_in_flight(tx, &serials, reason).await? {
                changed.push(s.serial);
            }
        }
        let suspend: Vec<&str> = plan.suspend.iter().map(String::as_str).collect();
        for s in status::suspend_many_in_flight(tx, &suspend).await? {
            changed.push(s.serial);
        }
        for chunk in plan.state.chunks(big(self.backend)) {
            let sql = format!(
                "INSERT INTO registry_state (pinfl, names_seq, deceased_on, updated_at) VALUES {} \
                 ON CONFLICT (pinfl) DO UPDATE SET names_seq = excluded.names_seq, \
                 deceased_on = excluded.deceased_on, updated_at = excluded.updated_at",
                rows::values(Backend::Sqlite, chunk.len(), 4, 1, &[])
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for s in chunk {
                q = q
                    .bind(&s.pinfl)
                    .bind(s.names_seq)
                    .bind(s.deceased_on.clone())
                    .bind(at / 1_000_000);
            }
            q.execute(&mut **tx).await?;
        }
        for chunk in plan.reviews.chunks(rows::CHUNK) {
            let sql = format!(
                "INSERT INTO name_reviews (pinfl, due_at, event, surname, given_name, patronymic) \
                 VALUES {} ON CONFLICT (pinfl) DO UPDATE SET due_at = excluded.due_at, \
                 event = excluded.event, surname = excluded.surname, \
                 given_name = excluded.given_name, patronymic = excluded.patronymic",
                rows::values(Backend::Sqlite, chunk.len(), 6, 1, &[])
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(&r.pinfl)
                    .bind(r.due_at)
                    .bind(&r.event)
                    .bind(&r.surname)
                    .bind(&r.given_name)
                    .bind(r.patronymic.clone());
            }
            q.execute(&mut **tx).await?;
        }
        crate::notices::queue_in(tx, &plan.notices).await?;
        for chunk in plan.block.chunks(big(self.backend)) {
            let sql = format!(
                "INSERT INTO blocked_documents (document, pinfl, kind, event, at) VALUES {} \
                 ON CONFLICT (document) DO NOTHING",
                rows::values(Backend::Sqlite, chunk.len(), 5, 1, &[])
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (document, pinfl, kind, event) in chunk {
                q = q
                    .bind(document)
                    .bind(pinfl)
                    .bind(kind)
                    .bind(event)
                    .bind(at / 1_000_000);
            }
            q.execute(&mut **tx).await?;
        }
        let audit: Vec<&AuditEvent> = plan.audit.iter().collect();
        audit::append(self.backend, tx, &audit).await?;
        self.tx.commit().await?;
        Ok(Committed::Done(changed))
    }
}

fn event_from_row(r: &sqlx::any::AnyRow) -> Result<RecordedEvent> {
    let serials: String = r.try_get("serials")?;
    Ok(RecordedEvent {
        id: r.try_get("id")?,
        body_hash: r.try_get("body_hash")?,
        kind: r.try_get("kind")?,
        pinfl: r.try_get("pinfl")?,
        seq: r.try_get("seq")?,
        outcome: r.try_get("outcome")?,
        serials: serials.split_whitespace().map(str::to_string).collect(),
        detail: r.try_get("detail")?,
    })
}

//! Issuing a card's certificates: idempotent, exactly once, with group commit.
//!
//! Cards arriving together (concurrent requests, or a batch) are handled as one
//! group, in the CA's two commits (see [`crate::card::jobs`]): one claims
//! the cards' jobs and records every certificate's intent, one stores the
//! signed certificates, finishes the jobs and supersedes previous cards. A
//! group of a hundred cards costs two commits, not two hundred, and nothing is
//! handed out before its commit.
//!
//! Exactly once rests on the database: each certificate carries its job and
//! role, unique together. A retry of a job that is still pending waits while its
//! lease is live, then takes the job over and finishes whatever is missing:
//! signs recorded intents as recorded, issues roles never recorded, and
//! finishes the job.
//!
//! Longer than 600 lines on purpose: a group's path (claim, record, sign,
//! finish, supersede, take over a stale job) reads as one sequence, and
//! every step shares the group's private state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muhr_ca::{Ca, IssueError, Request};
use muhr_store::jobs::{Claim, FinishedJob, JobClaim, JobRow, Supersede};
use muhr_store::{IssueOnce, Store};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::card::jobs::{Job, JobRecording};

use crate::card::config::SupersedeMode;
use crate::card::request::{CardRequest, Date, Refusal, Rules, ValidCard};

/// A claimed job is left alone by other requests for this long; its holder
/// renews it every third of that while it works (`hold_leases`).
const LEASE_SECS: i64 = 5;
/// Most cards handled as one group.
const MAX_GROUP: usize = 256;
/// Groups under way at once: while one waits for a commit, the other signs.
/// More made smaller groups, not more throughput: with 64 lines at once and
/// four groups in flight, the fourth often held one card and paid every
/// commit for it (PostgreSQL + SoftHSM: about 1,750 certificates/s at four,
/// about 1,970/s at two, p99 186 ms against 110 ms).
const GROUPS_IN_FLIGHT: usize = 2;
/// How long a retry waits for a job another request is working on.
const WAIT: Duration = Duration::from_secs(30);
/// The task renewing a group's leases; it stops when this is dropped, also
/// when the group's task panics or is cancelled.
struct HeldLeases(tokio::task::JoinHandle<()>);

impl Drop for HeldLeases {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The longest a process renews the leases of one group's jobs.
const MAX_HOLD: Duration = Duration::from_secs(600);

/// One certificate of an issued card, as the line gets it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardCertificate {
    /// The role it was issued for: a key name in the request's `keys`.
    pub role: String,
    /// Upper-case hex.
    pub serial: String,
    /// The profile the role is issued under.
    pub profile: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

/// A card's certificates, new or repeated for a retry (200 on the API).
#[derive(Debug, Clone)]
pub struct CardOutcome {
    /// The line's id for the card job, as it sent it.
    pub request_id: String,
    /// In role order.
    pub certificates: Vec<CardCertificate>,
    /// True when the job was finished earlier and this answer repeats it.
    pub replayed: bool,
    /// Serials of the person's previous card revoked by this one.
    pub superseded: Vec<String>,
}

/// Why a card got no certificates. The HTTP layer turns each variant into
/// one status.
#[derive(Debug, Clone)]
pub enum CardError {
    /// A check failed: 422, with the refusal's field and rule.
    Refused(Refusal),
    /// The request id was used with another body.
    Conflict(String),
    /// Another request is still working on this job; retry later.
    InProgress,
    /// The key store or the database is down. What was signed before it
    /// went stays recorded with the job (a card may have its auth
    /// certificate and not yet its sign certificate); the same request,
    /// retried once it is back, finishes the card without issuing anything
    /// twice.
    Unavailable(String),
    /// A bug or a record that does not add up: 500. The log has the cause;
    /// a retry with the same request id is safe.
    Internal(String),
}

impl From<muhr_store::StoreError> for CardError {
    fn from(e: muhr_store::StoreError) -> Self {
        if e.is_unavailable() {
            CardError::Unavailable(format!("database: {e}"))
        } else {
            CardError::Internal(format!("database: {e}"))
        }
    }
}

struct Work {
    card: ValidCard,
    job: String,
    actor: String,
    started: Instant,
    reply: oneshot::Sender<Result<CardOutcome, CardError>>,
}

/// Issues the line's cards: each checked card goes to a worker that
/// handles the cards arriving together as one group. One per process,
/// made by [`Personalizer::start`] inside a Tokio runtime.
pub struct Personalizer {
    ca: Arc<Ca>,
    store: Store,
    rules: Arc<Rules>,
    /// This process, as the owner of the jobs it claims.
    owner: String,
    queue: mpsc::Sender<Work>,
}

impl Personalizer {
    /// Starts the group worker.
    pub fn start(ca: Arc<Ca>, rules: Arc<Rules>) -> Arc<Self> {
        let (queue, rx) = mpsc::channel(4 * MAX_GROUP);
        // Tells processes apart (pid alone repeats across restarts); not a secret.
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = Arc::new(Self {
            store: ca.store().clone(),
            ca,
            rules,
            owner: format!("{}-{started:x}", std::process::id()),
            queue,
        });
        tokio::spawn(p.clone().run(rx));
        p
    }

    /// The checks and settings cards are judged by (the batch route reads
    /// `max_batch` here).
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The CA it asks for certificates; the routes take its chain and store
    /// from it.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Checks one card request and issues its certificates (or repeats the
    /// answer a finished job gave). `client` scopes the request id.
    pub async fn submit(
        &self,
        client: &str,
        request: CardRequest,
    ) -> Result<CardOutcome, CardError> {
        let started = Instant::now();
        let district = request.document.issuing_office.clone();
        let card = match self.rules.check(request, Date::today()) {
            Ok(c) => c,
            Err(r) => return Err(self.refuse(&district, r, started).await),
        };
        let (reply, answer) = oneshot::channel();
        let work = Work {
            job: format!("{client}/{}", card.request.request_id),
            actor: format!("ra-client:{client}"),
            card,
            started,
            reply,
        };
        self.queue
            .send(work)
            .await
            .map_err(|_| CardError::Internal("the issuance worker stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(CardError::Internal("the issuance worker stopped".into())))
    }

    async fn refuse(&self, district: &str, r: Refusal, started: Instant) -> CardError {
        let district = if self.rules.districts.name(district).is_some() {
            district
        } else {
            "unknown"
        };
        if let Err(e) = self
            .store
            .record_outcome(district, "refused", &r.reason, micros(started))
            .await
        {
            tracing::warn!(error = %e, "could not count a refusal for the pilot report");
        }
        CardError::Refused(r)
    }

    async fn fail(&self, w: &Work, cause: &str) {
        if let Err(e) = self
            .store
            .record_outcome(&w.card.district, "failed", cause, micros(w.started))
            .await
        {
            tracing::warn!(error = %e, "could not count a failure for the pilot report");
        }
    }

    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Work>) {
        let permits = Arc::new(Semaphore::new(GROUPS_IN_FLIGHT));
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let Some(first) = rx.recv().await else { return };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(w) => group.push(w),
                    Err(_) => break,
                }
            }
            let me = self.clone();
            tokio::spawn(async move {
                me.process(group).await;
                drop(permit);
            });
        }
    }

    fn supersede(&self) -> Supersede {
        match self.rules.config.supersede {
            SupersedeMode::Revoke => Supersede::Revoke,
            SupersedeMode::Keep => Supersede::Keep,
        }
    }

    fn requests(&self, w: &Work, roles: Option<&[String]>) -> Vec<Request> {
        w.card
            .keys
            .iter()
            .filter(|(role, _, _)| roles.is_none_or(|r| r.contains(role)))
            .map(|(role, profile, key)| Request {
                profile: profile.clone(),
                fields: w.card.fields.clone(),
                public_key: key.clone(),
                not_after_limit: Some(w.card.not_after_limit),
                alt_names: Vec::new(),
                actor: w.actor.clone(),
                once: Some(IssueOnce {
                    key: w.job.clone(),
                    role: role.clone(),
                }),
            })
            .collect()
    }

    fn finished(w: &Work, certificates: usize) -> FinishedJob {
        FinishedJob {
            job: w.job.clone(),
            pinfl: w.card.request.person.pinfl.clone(),
            document: w.card.request.document.number.clone(),
            district: w.card.district.clone(),
            certificates: certificates as i64,
            latency_us: micros(w.started),
        }
    }

    /// Refuses the cards of people the registry records as deceased (by its
    /// extract or a `person.deceased` event) and cards whose document it
    /// reported lost, stolen or invalidated, asking once for the whole
    /// group; the rest go on.
    async fn living(&self, group: Vec<Work>) -> Vec<Work> {
        let pinfls: Vec<&str> = group
            .iter()
            .map(|w| w.card.request.person.pinfl.as_str())
            .collect();
        let documents: Vec<&str> = group
            .iter()
            .map(|w| w.card.request.document.number.as_str())
            .collect();
        let facts = match self.store.deaths(&pinfls).await {
            Ok(dead) => self
                .store
                .blocked_documents(&documents)
                .await
                .map(|blocked| (dead, blocked)),
            Err(e) => Err(e),
        };
        let (deceased, blocked) = match facts {
            Ok((dead, blocked)) => (
                dead.into_keys()
                    .collect::<std::collections::HashSet<String>>(),
                blocked,
            ),
            Err(e) => {
                for w in group {
                    self.fail(&w, "database").await;
                    let _ = w.reply.send(Err(e.clone_error()));
                }
                return Vec::new();
            }
        };
        let mut living = Vec::with_capacity(group.len());
        for w in group {
            if deceased.contains(&w.card.request.person.pinfl) {
                let refusal = self
                    .refuse(&w.card.district, Refusal::deceased(), w.started)
                    .await;
                let _ = w.reply.send(Err(refusal));
            } else if let Some(kind) = blocked.get(&w.card.request.document.number) {
                let refusal = self
                    .refuse(&w.card.district, Refusal::document_blocked(kind), w.started)
                    .await;
                let _ = w.reply.send(Err(refusal));
            } else {
                living.push(w);
            }
        }
        living
    }

    async fn process(self: Arc<Self>, group: Vec<Work>) {
        let group = self.living(group).await;
        if group.is_empty() {
            return;
        }
        let jobs = group
            .iter()
            .map(|w| Job {
                claim: JobClaim {
                    job: w.job.clone(),
                    body_hash: w.card.body_hash.clone(),
                    pinfl: w.card.request.person.pinfl.clone(),
                    document: w.card.request.document.number.clone(),
                    district: w.card.district.clone(),
                },
                certificates: w.card.keys.len(),
                started: w.started,
            })
            .collect();
        let recording = JobRecording::new(
            jobs,
            &self.owner,
            LEASE_SECS,
            self.supersede(),
            "ra:personalization",
        );
        let requests: Vec<Request> = group.iter().flat_map(|w| self.requests(w, None)).collect();
        let held = self.hold_leases(group.iter().map(|w| w.job.clone()).collect());
        let mut results = self
            .ca
            .issue_many_recording(requests, &recording)
            .await
            .into_iter();
        drop(held);
        let mut claimed = recording.claimed().map(Vec::into_iter);
        let mut finished = recording.finished();
        for w in group {
            let card: Vec<_> = results.by_ref().take(w.card.keys.len()).collect();
            let claim = claimed.as_mut().and_then(Iterator::next);
            if let Some(Claim::Existing(row)) = claim {
                // The CA signed nothing for it: its answer is the job's.
                let me = self.clone();
                tokio::spawn(async move {
                    let r = me.existing(&w, row).await;
                    let _ = w.reply.send(r);
                });
                continue;
            }
            let mut certs = Vec::new();
            let mut error = None;
            for ((role, _, _), r) in w.card.keys.iter().zip(card) {
                match r {
                    Ok(i) => certs.push(CardCertificate {
                        role: role.clone(),
                        serial: i.serial,
                        profile: i.profile,
                        der: i.der,
                    }),
                    Err(e) => error = Some(issue_error(e)),
                }
            }
            match (error, finished.remove(&w.job)) {
                (None, Some(superseded)) => {
                    let _ = w.reply.send(Ok(CardOutcome {
                        request_id: w.card.request.request_id.clone(),
                        certificates: certs,
                        replayed: false,
                        superseded,
                    }));
                }
                (error, _) => {
                    // What was issued stays tied to the job: a retry finishes it.
                    let err = error.unwrap_or_else(|| {
                        CardError::Internal(format!("card job {} was not finished", w.job))
                    });
                    tracing::warn!(job = %w.job, error = ?err, "card job not finished");
                    self.fail(&w, failure_cause(&err)).await;
                    if claim.is_some() {
                        let _ = self.store.release_job(&w.job).await;
                    }
                    let _ = w.reply.send(Err(err));
                }
            }
        }
    }

    /// A job that existed before this request: the same body gets the same
    /// answer (waiting while another request holds it), another body a 409.
    async fn existing(&self, w: &Work, mut row: JobRow) -> Result<CardOutcome, CardError> {
        if row.body_hash != w.card.body_hash {
            return Err(CardError::Conflict(format!(
                "request_id {:?} was already used for a card job with a different request body",
                w.card.request.request_id
            )));
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if row.state == "done" {
                return self.replay(w).await;
            }
            if row.lease_until < muhr_store::now_secs()
                && self
                    .store
                    .take_over_job(&w.job, &self.owner, LEASE_SECS)
                    .await?
            {
                return self.complete(w).await;
            }
            if Instant::now() > deadline {
                return Err(CardError::InProgress);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            row = self
                .store
                .job(&w.job)
                .await?
                .ok_or_else(|| CardError::Internal(format!("card job {} vanished", w.job)))?;
        }
    }

    async fn replay(&self, w: &Work) -> Result<CardOutcome, CardError> {
        let records = self.store.job_certificates(&w.job).await?;
        let mut certs = Vec::new();
        for (role, _, _) in &w.card.keys {
            let rec = records
                .iter()
                .find(|r| r.intent.once.as_ref().is_some_and(|j| &j.role == role))
                .and_then(|r| r.der.clone().map(|der| (r, der)));
            let Some((rec, der)) = rec else {
                return Err(CardError::Internal(format!(
                    "finished card job {} has no {role} certificate",
                    w.job
                )));
            };
            certs.push(CardCertificate {
                role: role.clone(),
                serial: rec.intent.serial.clone(),
                profile: rec.intent.profile.clone(),
                der,
            });
        }
        Ok(CardOutcome {
            request_id: w.card.request.request_id.clone(),
            certificates: certs,
            replayed: true,
            superseded: Vec::new(),
        })
    }

    /// Keeps this process's leases on `jobs` alive while it works on them:
    /// a slow group (a busy HSM, a long commit) is never taken over by a
    /// retry of one of its cards, which would roll the whole group back. A
    /// process that stops renews nothing, and its jobs are taken over one
    /// lease later. Renewal ends after `MAX_HOLD` whatever happens: a group
    /// stuck for ten minutes has a holder as good as gone.
    fn hold_leases(&self, jobs: Vec<String>) -> HeldLeases {
        let store = self.store.clone();
        let owner = self.owner.clone();
        HeldLeases(tokio::spawn(async move {
            let started = Instant::now();
            let every = Duration::from_millis(LEASE_SECS as u64 * 1000 / 3);
            loop {
                tokio::time::sleep(every).await;
                if started.elapsed() > MAX_HOLD {
                    tracing::warn!(
                        jobs = jobs.len(),
                        "card jobs held too long; their leases now run out"
                    );
                    return;
                }
                if let Err(e) = store.renew_job_leases(&jobs, &owner, LEASE_SECS).await {
                    tracing::warn!(error = %e, "renewing card job leases failed; will retry");
                }
            }
        }))
    }

    /// Finishes a job another request left pending (it died, or failed part
    /// way): nothing already recorded is issued again.
    async fn complete(&self, w: &Work) -> Result<CardOutcome, CardError> {
        let held = self.hold_leases(vec![w.job.clone()]);
        let r = self.complete_held(w).await;
        drop(held);
        r
    }

    async fn complete_held(&self, w: &Work) -> Result<CardOutcome, CardError> {
        for _round in 0..3 {
            let records = self.store.job_certificates(&w.job).await?;
            let mut certs: BTreeMap<String, CardCertificate> = BTreeMap::new();
            let mut missing = Vec::new();
            for (role, _, _) in &w.card.keys {
                let rec = records
                    .iter()
                    .find(|r| r.intent.once.as_ref().is_some_and(|j| &j.role == role));
                match rec {
                    Some(r) if r.der.is_some() => {
                        certs.insert(role.clone(), card_cert(role, &r.intent, r.der.clone()));
                    }
                    Some(r) => {
                        let i = self
                            .ca
                            .finish_intent(r.intent.clone(), &w.actor)
                            .await
                            .map_err(issue_error)?;
                        certs.insert(role.clone(), card_cert(role, &r.intent, Some(i.der)));
                    }
                    None => missing.push(role.clone()),
                }
            }
            let mut raced = false;
            if !missing.is_empty() {
                let results = self.ca.issue_many(self.requests(w, Some(&missing))).await;
                for (role, r) in missing.iter().zip(results) {
                    match r {
                        Ok(i) => {
                            certs.insert(
                                role.clone(),
                                CardCertificate {
                                    role: role.clone(),
                                    serial: i.serial,
                                    profile: i.profile,
                                    der: i.der,
                                },
                            );
                        }
                        Err(IssueError::AlreadyIssued { .. }) => raced = true,
                        Err(e) => return Err(issue_error(e)),
                    }
                }
            }
            if raced {
                continue;
            }
            let revoked = self
                .store
                .finish_jobs(
                    &[Self::finished(w, certs.len())],
                    self.supersede(),
                    "ra:personalization",
                )
                .await?;
            let certificates = w
                .card
                .keys
                .iter()
                .filter_map(|(role, _, _)| certs.remove(role))
                .collect();
            return Ok(CardOutcome {
                request_id: w.card.request.request_id.clone(),
                certificates,
                replayed: false,
                superseded: revoked.into_iter().next().unwrap_or_default(),
            });
        }
        Err(CardError::InProgress)
    }
}

fn card_cert(role: &str, intent: &muhr_store::Intent, der: Option<Vec<u8>>) -> CardCertificate {
    CardCertificate {
        role: role.to_string(),
        serial: intent.serial.clone(),
        profile: intent.profile.clone(),
        der: der.unwrap_or_default(),
    }
}

fn issue_error(e: IssueError) -> CardError {
    match e {
        IssueError::Refused(f) => CardError::Refused(Refusal::from(f)),
        IssueError::AlreadyIssued { .. } => CardError::InProgress,
        IssueError::Key(k) if k.is_unavailable() => CardError::Unavailable(k.to_string()),
        IssueError::Store(s) => CardError::from(s),
        other => CardError::Internal(other.to_string()),
    }
}

fn failure_cause(e: &CardError) -> &'static str {
    match e {
        CardError::Refused(_) => "refused by the CA",
        CardError::Conflict(_) => "conflict",
        CardError::InProgress => "in progress elsewhere",
        CardError::Unavailable(_) => "unavailable",
        CardError::Internal(_) => "internal",
    }
}

fn micros(started: Instant) -> i64 {
    started.elapsed().as_micros() as i64
}

trait CloneError {
    fn clone_error(&self) -> CardError;
}

impl CloneError for muhr_store::StoreError {
    fn clone_error(&self) -> CardError {
        if self.is_unavailable() {
            CardError::Unavailable(format!("database: {self}"))
        } else {
            CardError::Internal(format!("database: {self}"))
        }
    }
}

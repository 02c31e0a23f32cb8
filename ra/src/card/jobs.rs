//! A group's card jobs, kept in the CA's two commits (see
//! [`muhr_ca::recording`]): claimed in the transaction that records their
//! certificates' intents, finished — previous cards superseded with them — in
//! the one that stores the certificates. A group of cards costs two commits,
//! and a job is claimed exactly when its intents are, done exactly when its
//! certificates are.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use muhr_ca::recording::{Completed, Recording};
use muhr_store::jobs::{Claim, FinishedJob, JobClaim, Supersede};
use muhr_store::{Intent, Store, StoreError};

/// One card of the group.
pub(crate) struct Job {
    pub claim: JobClaim,
    /// How many certificates finish it.
    pub certificates: usize,
    pub started: Instant,
}

pub(crate) struct JobRecording {
    claims: Vec<JobClaim>,
    jobs: Vec<(usize, Instant)>,
    owner: String,
    lease_secs: i64,
    supersede: Supersede,
    actor: &'static str,
    claimed: Mutex<Option<Vec<Claim>>>,
    /// Finished jobs, with the serials of the previous cards they revoked.
    finished: Mutex<HashMap<String, Vec<String>>>,
}

impl JobRecording {
    pub fn new(
        jobs: Vec<Job>,
        owner: &str,
        lease_secs: i64,
        supersede: Supersede,
        actor: &'static str,
    ) -> Self {
        let (claims, jobs) = jobs
            .into_iter()
            .map(|j| (j.claim, (j.certificates, j.started)))
            .unzip();
        Self {
            claims,
            jobs,
            owner: owner.to_string(),
            lease_secs,
            supersede,
            actor,
            claimed: Mutex::new(None),
            finished: Mutex::new(HashMap::new()),
        }
    }

    /// Each job's claim, in the order given; `None` when the CA never reached
    /// the recording (every request refused) or it failed.
    pub fn claimed(&self) -> Option<Vec<Claim>> {
        self.claimed.lock().map(|mut c| c.take()).unwrap_or(None)
    }

    /// The jobs finished, each with the serials it superseded.
    pub fn finished(&self) -> HashMap<String, Vec<String>> {
        self.finished
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default()
    }
}

impl Recording for JobRecording {
    async fn record(&self, store: &Store, intents: &[Intent]) -> Result<Vec<bool>, StoreError> {
        let (claimed, recorded) = store
            .claim_jobs_recording(&self.claims, &self.owner, self.lease_secs, intents)
            .await?;
        if let Ok(mut c) = self.claimed.lock() {
            *c = Some(claimed);
        }
        Ok(recorded)
    }

    /// Finishes the jobs all of whose certificates are here; a job missing
    /// one stays pending, for a retry to complete.
    async fn complete(
        &self,
        store: &Store,
        issued: &[Completed],
        intents: &[&Intent],
    ) -> Result<(), StoreError> {
        let mut signed: HashMap<&str, usize> = HashMap::new();
        for i in intents {
            if let Some(once) = &i.once {
                *signed.entry(once.key.as_str()).or_default() += 1;
            }
        }
        let finishing: Vec<FinishedJob> = self
            .claims
            .iter()
            .zip(&self.jobs)
            .filter(|(c, (n, _))| signed.get(c.job.as_str()) == Some(n))
            .map(|(c, (n, started))| FinishedJob {
                job: c.job.clone(),
                pinfl: c.pinfl.clone(),
                document: c.document.clone(),
                district: c.district.clone(),
                certificates: *n as i64,
                latency_us: started.elapsed().as_micros() as i64,
            })
            .collect();
        let revoked = store
            .complete_issuance_finishing(issued, &finishing, self.supersede, self.actor)
            .await?;
        if let Ok(mut f) = self.finished.lock() {
            f.extend(finishing.into_iter().map(|j| j.job).zip(revoked));
        }
        Ok(())
    }
}

//! Applying a batch of events: open it (its people locked), decide, commit;
//! again from the start when another node recorded one of its events first
//! or the database chose this transaction to break a deadlock.

use muhr_policies::identity::IdentityRules;
use muhr_store::registry_events::Committed;
use muhr_store::{Store, StoreError};

use super::RegistryConfig;
use super::decide::{Answer, decide};
use super::event::Event;

/// Applies registry events; shared by the API, the file command and the
/// registry import.
pub struct RegistryEvents {
    store: Store,
    rules: IdentityRules,
    config: RegistryConfig,
}

/// A batch applied.
#[derive(Debug)]
pub struct Applied {
    /// One per event, in the batch's order.
    pub answers: Vec<Answer>,
    /// Certificates whose status changed (revoked or suspended).
    pub changed: Vec<String>,
}

/// How many times a batch is opened again before the error is returned.
const ATTEMPTS: usize = 8;

impl RegistryEvents {
    /// Over `store`, checking events with `rules`.
    pub fn new(store: Store, rules: IdentityRules, config: RegistryConfig) -> Self {
        Self {
            store,
            rules,
            config,
        }
    }

    /// The rules events are checked with.
    pub fn rules(&self) -> &IdentityRules {
        &self.rules
    }

    /// The configuration in force.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The store events are applied to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Applies `events` (already checked) in one transaction, as `actor`.
    /// Each event is applied once, whoever else applies it: a retry gets the
    /// first answer (`replayed`). When any event's id is recorded with other
    /// content, nothing of the batch is applied and the answers say which
    /// ([`Answer::conflict`]).
    pub async fn apply(&self, events: &[Event], actor: &str) -> Result<Applied, StoreError> {
        let grace = i64::from(self.config.name_grace_days) * 86_400;
        let keys: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.id.as_str(), e.pinfl.as_str()))
            .collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let batch = self.store.open_event_batch(&keys).await?;
                let (plan, answers) = decide(events, &batch.facts, grace, actor);
                if answers.iter().any(|a| a.conflict.is_some()) {
                    // An id reused with other content is the sender's error:
                    // the batch changes nothing (dropping it rolls back).
                    return Ok((Committed::Done(Vec::new()), answers));
                }
                Ok::<_, StoreError>((batch.commit(&plan).await?, answers))
            }
            .await;
            match result {
                Ok((Committed::Done(changed), answers)) => {
                    return Ok(Applied { answers, changed });
                }
                Ok((Committed::Raced, _)) if attempt < ATTEMPTS => {
                    tracing::info!(
                        "another node recorded some of these registry events first; reading them again"
                    );
                }
                Err(e) if attempt < ATTEMPTS && e.is_contention() => {
                    tracing::info!(error = %e, "registry batch conflicted with another transaction; again");
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt as u64)).await;
                }
                Ok((Committed::Raced, _)) => {
                    return Err(StoreError::Conflict(
                        "registry events kept being recorded by another node; retry".into(),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

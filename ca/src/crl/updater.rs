//! Keeps every CA's CRLs fresh while `muhr serve` runs.
//!
//! - Delta CRLs follow the change feed in the database (whoever wrote the
//!   change: a CLI command, another node): within about a second of a change,
//!   and again when half their lifetime has passed.
//! - Complete CRLs (whole and shards) are made at least every `refresh`, and
//!   after a change once the newest is `complete_min` old, so that a
//!   revocation storm over a million-entry CRL costs one regeneration per
//!   `complete_min`, not one per change. A new complete CRL is followed by new
//!   deltas on it.
//! - With several nodes on one PostgreSQL database, only the holder of the
//!   `crl-updater` advisory lock generates; the others serve what it stored
//!   and take over if it goes away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::{Authority, Ca, IssueError};

/// When [`run`] makes CRLs; `muhr serve` fills it from the `[crl]` configuration.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Lifetime of a complete CRL (nextUpdate minus thisUpdate). Replaced CRLs
    /// of any kind made longer ago than this are pruned.
    pub validity: Duration,
    /// Longest time between complete CRLs, with changes or without.
    pub refresh: Duration,
    /// Shortest time between complete CRLs made because of changes.
    pub complete_min: Duration,
    /// Lifetime of a delta CRL; a delta is remade at half of it even with no
    /// change.
    pub delta_validity: Duration,
}

/// Change-feed positions each CA's CRLs already reflect.
#[derive(Default, Clone, Copy)]
struct Seen {
    complete: Option<i64>,
    delta: Option<i64>,
}

/// The updater's loop: every second, whatever is due (see the module
/// documentation). Never returns; only CAs whose key is loaded get CRLs.
/// Failures are logged and tried again.
pub async fn run(ca: Arc<Ca>, schedule: Schedule) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leader: Option<muhr_store::Leadership> = None;
    let mut seen: HashMap<String, Seen> = HashMap::new();
    loop {
        tick.tick().await;
        let alive = match leader.as_mut() {
            Some(l) => l.alive().await,
            None => false,
        };
        if !alive {
            leader = ca
                .store()
                .try_leadership("crl-updater")
                .await
                .unwrap_or(None);
            if leader.is_none() {
                continue;
            }
            tracing::info!("this node now generates the CRLs");
            seen.clear();
        }
        let last = match ca.store().last_status_change().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "CRL updater: cannot read the change feed");
                continue;
            }
        };
        for authority in [&ca.issuing, &ca.root] {
            if authority.signer.is_none() {
                continue;
            }
            let s = seen.entry(authority.name.clone()).or_default();
            match update(&ca, authority, schedule, last, *s).await {
                Ok(now_seen) => *s = now_seen,
                Err(e) => {
                    tracing::warn!(ca = %authority.name, error = %e, "CRL generation failed; will retry")
                }
            }
        }
    }
}

/// Makes whatever CRLs of `authority` are due; returns the feed positions
/// they now reflect.
async fn update(
    ca: &Ca,
    authority: &Authority,
    schedule: Schedule,
    last: i64,
    seen: Seen,
) -> Result<Seen, IssueError> {
    let store = ca.store();
    let now = muhr_store::now_secs();
    let secs = |d: Duration| d.as_secs() as i64;
    let whole = store.latest_crl_info(&authority.name, "full", None).await?;
    let shards = store.crl_shard_count(&authority.name).await?;
    let shards_missing = shards > 0
        && store
            .latest_crl_info(&authority.name, "full", Some(shards - 1))
            .await?
            .is_none();
    let complete_due = match &whole {
        None => true,
        Some(w) => {
            let age = now - w.this_update;
            shards_missing
                || age >= secs(schedule.refresh)
                || (seen.complete != Some(last) && age >= secs(schedule.complete_min))
        }
    };
    if complete_due {
        let crls = super::generate(store, authority, schedule.validity).await?;
        let entries = crls.first().map(|c| c.entries).unwrap_or(0);
        tracing::info!(ca = %authority.name, crls = crls.len(), entries, "complete CRLs generated");
        let deltas = super::delta::generate(store, authority, schedule.delta_validity).await?;
        tracing::debug!(ca = %authority.name, deltas = deltas.len(), "delta CRLs generated");
        let pruned = store.prune_crls(now - secs(schedule.validity)).await?;
        if pruned > 0 {
            tracing::info!(pruned, "old CRLs removed");
        }
        return Ok(Seen {
            complete: Some(last),
            delta: Some(last),
        });
    }
    let delta = store
        .latest_crl_info(&authority.name, "delta", None)
        .await?;
    let delta_due = match (&delta, &whole) {
        (Some(d), Some(w)) => {
            seen.delta != Some(last)
                || d.base_number != Some(w.number)
                || now - d.this_update >= secs(schedule.delta_validity) / 2
        }
        _ => true,
    };
    if delta_due {
        let deltas = super::delta::generate(store, authority, schedule.delta_validity).await?;
        let entries = deltas.first().map(|c| c.entries).unwrap_or(0);
        tracing::info!(ca = %authority.name, deltas = deltas.len(), entries, "delta CRLs generated");
    }
    Ok(Seen {
        complete: seen.complete,
        delta: Some(last),
    })
}

//! Complete CRLs: the whole CRL of a CA and, when it shards, one CRL per shard,
//! all made in one pass over its revoked and suspended certificates. Each
//! entry is encoded once and appended to the whole list and to its shard's.
//!
//! Suspended certificates carry certificateHold and are gone from the next
//! complete CRL once restored (the delta says removeFromCRL meanwhile).

use std::time::{Duration, SystemTime};

use muhr_store::{Store, StoredCrl};

use super::entries::EntryEncoder;
use super::sign::{CrlSigner, Draft, ext, internal};
use super::{Scope, idp, url};
use crate::{Authority, IssueError};

const PAGE: i64 = 20_000;

/// Serial ranges read side by side: stored serials are upper-case hex of
/// positive 20-octet integers, and Muhr's own begin with 4 to 7 (see
/// `serial`), so "6" halves them. Any other serial still falls in exactly one
/// range.
const READ_RANGES: [(&str, Option<&str>); 2] = [("", Some("6")), ("6", None)];

/// What one complete CRL collects while the entries stream past.
struct Collecting {
    scope: Scope,
    entries_der: Vec<u8>,
    count: i64,
}

/// Builds, signs, verifies and stores the complete CRLs of `ca`: the whole
/// CRL first, then shards 0..n for every shard a certificate was ever
/// assigned to.
pub async fn generate(
    store: &Store,
    ca: &Authority,
    validity: Duration,
) -> Result<Vec<StoredCrl>, IssueError> {
    super::again_if_number_taken(&ca.name, || generate_once(store, ca, validity)).await
}

async fn generate_once(
    store: &Store,
    ca: &Authority,
    validity: Duration,
) -> Result<Vec<StoredCrl>, IssueError> {
    let signer = CrlSigner::of(ca)?;
    let scopes = super::scopes(store, ca).await?;
    let shards = scopes.len() - 1;
    let template = ca.urls.crl.clone();
    if shards > 0 && template.is_none() {
        return Err(IssueError::Internal(format!(
            "the {} CA shards its CRLs but has no CRL URL to name them by",
            ca.name
        )));
    }
    let now = crate::build::whole_seconds(SystemTime::now());
    let this_update = muhr_store::unix_secs(now);
    let next_update = this_update + validity.as_secs() as i64;
    let first_number = store.next_crl_number(&ca.name).await?;

    let mut lists: Vec<Collecting> = scopes
        .into_iter()
        .map(|scope| Collecting {
            scope,
            entries_der: Vec::new(),
            count: 0,
        })
        .collect();

    // Two readers take disjoint serial ranges, each reading its next page
    // while the last one waits to be encoded; the encoder takes pages in
    // whatever order they come (RFC 5280 does not order CRL entries).
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    for (after, before) in READ_RANGES {
        let (store, issuer, tx) = (store.clone(), ca.name.clone(), tx.clone());
        tokio::spawn(async move {
            let mut after = after.to_string();
            loop {
                let page = store
                    .revoked_page(&issuer, this_update, &after, before, PAGE)
                    .await;
                let next = match &page {
                    Ok(p) if p.len() as i64 == PAGE => p.last().map(|r| r.serial.clone()),
                    _ => None,
                };
                if tx.send(page).await.is_err() {
                    return;
                }
                match next {
                    Some(n) => after = n,
                    None => return,
                }
            }
        });
    }
    drop(tx);
    let mut encoder = EntryEncoder::default();
    let mut one = Vec::with_capacity(128);
    while let Some(page) = rx.recv().await {
        for r in &page? {
            one.clear();
            encoder.encode(&r.serial, r.revoked_at, r.reason, &mut one)?;
            let shard = r
                .crl_shard
                .and_then(|s| usize::try_from(s).ok())
                .filter(|s| *s < shards);
            for i in std::iter::once(0).chain(shard.map(|s| s + 1)) {
                lists[i].entries_der.extend_from_slice(&one);
                lists[i].count += 1;
            }
        }
    }

    // Sign every list; the whole CRL is by far the largest, so the shards
    // are signed on the other core meanwhile.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, list) in lists.into_iter().enumerate() {
        let number = first_number + i as i64;
        let mut extensions = Vec::new();
        if let Some(t) = &template {
            if let Scope::Shard(_) = list.scope {
                extensions.push(
                    idp::issuing_distribution_point(&url(t, &ca.name, list.scope, false))
                        .map_err(internal("issuing distribution point"))?,
                );
            }
            extensions.push(ext(&idp::freshest_crl(&url(
                t, &ca.name, list.scope, true,
            ))
            .map_err(internal("freshest CRL"))?)?);
        }
        let signer = signer.clone();
        let issuer = ca.name.clone();
        tasks.spawn(async move {
            let count = list.count;
            let der = signer
                .sign(Draft {
                    number,
                    this_update,
                    next_update,
                    entries_der: list.entries_der,
                    count,
                    extensions,
                })
                .await?;
            Ok::<_, IssueError>(StoredCrl {
                issuer,
                kind: "full".into(),
                shard: list.scope.shard(),
                base_number: None,
                number,
                this_update,
                next_update,
                entries: count,
                der,
            })
        });
    }
    let mut crls = Vec::new();
    while let Some(done) = tasks.join_next().await {
        crls.push(done.map_err(internal("CRL signing task"))??);
    }
    crls.sort_by_key(|c| c.number);
    store.save_crls(&crls).await?;
    Ok(crls)
}

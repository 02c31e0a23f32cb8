//! Delta CRLs (RFC 5280 5.2.4): for each scope, the certificates whose status
//! changed since that scope's newest complete CRL was made, as they stand now.
//! Revoked and suspended ones are listed with their reason; restored ones with
//! removeFromCRL. The Delta CRL Indicator names the complete CRL (the base);
//! a shard's delta carries the same Issuing Distribution Point as its base.
//!
//! Changes are found by time, not by position in the change feed: feed ids
//! are handed out before commit, so a change could commit after a later id was
//! read. Looking back [`IN_FLIGHT`] before the base was made catches any change
//! the base's reading missed; listing a change the base already had is
//! harmless, since the entry states the current status.

use std::time::{Duration, SystemTime};

use der::asn1::Uint;
use muhr_store::{Store, StoredCrl};
use x509_cert::ext::pkix::crl::BaseCrlNumber;

use super::entries::{EntryEncoder, REMOVE_FROM_CRL};
use super::sign::{CrlSigner, Draft, ext, internal};
use super::{Scope, idp, url};
use crate::{Authority, IssueError};

/// Longer than any status change transaction can take.
pub const IN_FLIGHT: i64 = 60;

/// Builds, signs and stores a delta CRL for every scope of `ca` that has a
/// complete CRL. Returns them (none before the first complete CRL).
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
    let mut bases = Vec::new();
    for scope in super::scopes(store, ca).await? {
        if let Some(base) = store
            .latest_crl_info(&ca.name, "full", scope.shard())
            .await?
        {
            bases.push((scope, base));
        }
    }
    let Some(since) = bases.iter().map(|(_, b)| b.this_update).min() else {
        return Ok(Vec::new());
    };
    let this_update = muhr_store::unix_secs(crate::build::whole_seconds(SystemTime::now()));
    let next_update = this_update + validity.as_secs() as i64;
    let changed = store
        .changed_since(&ca.name, since - IN_FLIGHT, this_update)
        .await?;
    let first_number = store.next_crl_number(&ca.name).await?;
    let mut encoder = EntryEncoder::default();
    let mut crls = Vec::new();
    for (i, (scope, base)) in bases.into_iter().enumerate() {
        let mut entries_der = Vec::new();
        let mut count = 0;
        for c in changed.iter().filter(|c| {
            c.changed_at >= base.this_update - IN_FLIGHT
                && (scope == Scope::Whole || Scope::from_shard(c.crl_shard) == Some(scope))
        }) {
            let (at, reason) = match c.revocation.as_str() {
                "good" => (c.changed_at, Some(REMOVE_FROM_CRL)),
                _ => (c.revoked_at.unwrap_or(c.changed_at), c.reason),
            };
            encoder.encode(&c.serial, at, reason, &mut entries_der)?;
            count += 1;
        }
        let mut indicator = ext(&BaseCrlNumber(
            Uint::new(&base.number.to_be_bytes()).map_err(internal("base CRL number"))?,
        ))?;
        indicator.critical = true;
        let mut extensions = vec![indicator];
        if let (Scope::Shard(_), Some(t)) = (scope, &ca.urls.crl) {
            extensions.push(
                idp::issuing_distribution_point(&url(t, &ca.name, scope, false))
                    .map_err(internal("issuing distribution point"))?,
            );
        }
        let number = first_number + i as i64;
        let der = signer
            .sign(Draft {
                number,
                this_update,
                next_update,
                entries_der,
                count,
                extensions,
            })
            .await?;
        let crl = StoredCrl {
            issuer: ca.name.clone(),
            kind: "delta".into(),
            shard: scope.shard(),
            base_number: Some(base.number),
            number,
            this_update,
            next_update,
            entries: count,
            der,
        };
        crls.push(crl);
    }
    store.save_crls(&crls).await?;
    Ok(crls)
}

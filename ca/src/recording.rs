//! Where an issuance's two commits go.
//!
//! The CA commits twice for a group of certificates: the intents before the
//! key signs, the certificates after. A caller whose own records must change
//! with those (the RA's card jobs: claimed with the intents, finished with the
//! certificates) joins the same two transactions through [`Recording`] instead
//! of paying two commits of its own, and its records can never disagree with
//! the certificates'. The order stays the CA's: nothing is signed before its
//! intent is committed, nothing handed out before its certificate is.

use std::future::Future;

use muhr_store::{AuditEvent, Intent, Store, StoreError};

/// A signed certificate as it is stored: serial, DER, audit entry.
pub type Completed = (String, Vec<u8>, AuditEvent);

/// A caller's own records, joining the CA's two issuance commits (see the
/// module documentation). [`Plain`] records the CA's alone.
pub trait Recording: Sync {
    /// Commits the intents, or those of them the caller still wants; answers
    /// per intent whether it was recorded. One that was not is not signed.
    fn record(
        &self,
        store: &Store,
        intents: &[Intent],
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send;

    /// Commits the signed certificates; `intents[i]` is what `issued[i]` was
    /// signed from.
    fn complete(
        &self,
        store: &Store,
        issued: &[Completed],
        intents: &[&Intent],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The CA's records alone.
pub struct Plain;

impl Recording for Plain {
    async fn record(&self, store: &Store, intents: &[Intent]) -> Result<Vec<bool>, StoreError> {
        store.record_intents(intents).await
    }

    async fn complete(
        &self,
        store: &Store,
        issued: &[Completed],
        _intents: &[&Intent],
    ) -> Result<(), StoreError> {
        store.complete_issuance(issued).await
    }
}

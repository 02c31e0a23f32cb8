//! The population registry's events: deaths, lost, stolen and invalidated
//! documents, name changes. The other half of the registry data the RA
//! checks at issuance: what the registry learns after a certificate is
//! issued changes the certificate.
//!
//! An event is checked ([`event`]), decided against what the store knows of
//! its person ([`decide`]) and applied once, by its source's id
//! ([`apply`]), from the `registry` client's API ([`http`]) or a file.
//! Certificates naming an old name are revoked by [`review`] once the grace
//! period after a name change has passed.
//!
//! It must never apply an event twice, nor let an event about one person
//! touch another person's certificates.

pub mod apply;
pub mod decide;
pub mod event;
pub mod http;
pub mod review;

use serde::Deserialize;

/// `[registry]`: how events are applied.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Days a certificate naming a person's old name stays valid after the
    /// registry reports a name change: time to get new ones.
    pub name_grace_days: u32,
    /// Largest number of events applied in one transaction (the API's
    /// largest request, a file's batches).
    pub batch: usize,
    /// Batches a file is applied in at once, each person's events always in
    /// the same one (default: 4 on PostgreSQL, 1 on SQLite, which has one
    /// writer).
    pub lanes: Option<usize>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            name_grace_days: 30,
            batch: 1000,
            lanes: None,
        }
    }
}

impl RegistryConfig {
    /// The lanes a file is applied in on `backend`.
    pub fn lanes_for(&self, backend: muhr_store::Backend) -> usize {
        self.lanes.unwrap_or(match backend {
            muhr_store::Backend::Postgres => 4,
            muhr_store::Backend::Sqlite => 1,
        })
    }

    /// Refuses values that cannot work.
    pub fn check(&self) -> Result<(), String> {
        if self.batch == 0 || self.batch > 10_000 {
            return Err("registry.batch: 1 to 10000 events".into());
        }
        if self.lanes.is_some_and(|l| l == 0 || l > 16) {
            return Err("registry.lanes: 1 to 16".into());
        }
        if self.name_grace_days > 3650 {
            return Err("registry.name_grace_days: at most 3650".into());
        }
        Ok(())
    }
}

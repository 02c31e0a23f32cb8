//! The `[personalization]` section of the configuration file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// What a card gets and where cards may come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersonalizationConfig {
    /// Certificate role on the card (the key name in the request's `keys`) →
    /// the profile it is issued under. Every role is required in each request.
    pub roles: BTreeMap<String, String>,
    /// District codes or prefixes (a four-digit region such as `1726`, Tashkent
    /// city) whose offices auto-issue. Others are refused as `not in pilot`.
    pub pilot_districts: Vec<String>,
    /// The district list (SOATO codes and names); default: the compiled-in one.
    pub districts_file: Option<PathBuf>,
    /// What a new card does to the person's previous card's certificates.
    pub supersede: SupersedeMode,
    /// Most cards in one `POST /api/v1/personalization/batches`.
    pub max_batch: usize,
}

/// What a new card does to the certificates of the person's previous card
/// (`supersede`, written in lowercase). Default: `revoke`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SupersedeMode {
    /// Revoke them (`superseded`) in the transaction that finishes the new card.
    Revoke,
    /// Leave them valid (a person may hold two cards).
    Keep,
}

impl Default for PersonalizationConfig {
    fn default() -> Self {
        Self {
            roles: BTreeMap::from([
                ("auth".to_string(), "individual-auth".to_string()),
                ("sign".to_string(), "individual-sign".to_string()),
            ]),
            pilot_districts: vec!["1726".into()],
            districts_file: None,
            supersede: SupersedeMode::Revoke,
            max_batch: 1000,
        }
    }
}

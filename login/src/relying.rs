//! Relying parties (state bodies, banks) and how they prove who they are:
//! HTTP Basic with the id and secret `muhr rp add` printed once.
//!
//! A login rate of thousands per second must not cost a database read each
//! for the caller's credentials, so a relying party once read is kept for
//! `cache_seconds`: disabling one takes at most that long to bite.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use muhr_store::rp::RelyingParty;
use muhr_store::{AuditEvent, Store};
use sha2::{Digest, Sha256};

/// The classes a relying party is registered in (`--class`); the usage
/// report bills the commercial ones.
pub const CLASSES: [&str; 2] = ["state", "commercial"];

/// Why a relying party was not accepted.
#[derive(Debug)]
pub enum RpError {
    /// No or bad credentials (401).
    Unauthorized(String),
    /// The database could not be read (500, or 503 while it is unreachable).
    Internal(String),
}

/// A relying party's credential, to be handed over once.
pub struct Credential {
    /// The public id, `rp-` and 12 base64url characters: the Basic user name,
    /// and what challenges and usage name the party by.
    pub id: String,
    /// The Basic password, 43 base64url characters. Only its SHA-256 is
    /// stored: lost, it cannot be shown again.
    pub secret: String,
}

/// The registry of relying parties: registration, disabling, and the
/// check of each request's credentials, with what it read kept in memory for
/// `cache_seconds`.
pub struct RelyingParties {
    store: Store,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Option<RelyingParty>)>>,
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn random(n: usize) -> Result<String, String> {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| "random generator failed".to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

impl RelyingParties {
    /// The database the parties are kept in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A registry over `store`; a party read is trusted from memory for
    /// `cache_seconds` (0: every request reads the database).
    pub fn new(store: Store, cache_seconds: u64) -> Self {
        Self {
            store,
            ttl: Duration::from_secs(cache_seconds),
            cache: Mutex::default(),
        }
    }

    /// Registers a relying party; the secret exists only in the answer.
    pub async fn add(&self, name: &str, class: &str, actor: &str) -> Result<Credential, String> {
        let name = name.trim();
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err("--name: 1 to 128 printable characters".into());
        }
        if !CLASSES.contains(&class) {
            return Err(format!("--class: one of {}", CLASSES.join(", ")));
        }
        let id = format!("rp-{}", random(9)?);
        let secret = random(32)?;
        let rp = RelyingParty {
            id: id.clone(),
            name: name.to_string(),
            class: class.to_string(),
            secret_hash: hash(&secret),
            disabled: false,
        };
        self.store
            .add_relying_party(
                &rp,
                &AuditEvent {
                    actor: actor.to_string(),
                    action: "rp.add".into(),
                    object: id.clone(),
                    details: serde_json::json!({ "name": name, "class": class }),
                },
            )
            .await
            .map_err(|e| match e.to_string() {
                m if m.contains("UNIQUE") || m.contains("unique") => {
                    format!("--name: a relying party named {name:?} exists already")
                }
                m => format!("database: {m}"),
            })?;
        Ok(Credential { id, secret })
    }

    /// The relying party an `Authorization: Basic` header names, if its
    /// secret is right and it is not disabled.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<RelyingParty, RpError> {
        let bad = |why: &str| RpError::Unauthorized(why.to_string());
        let header = authorization.ok_or_else(|| {
            bad("relying-party credentials are required (Authorization: Basic id:secret)")
        })?;
        let (scheme, value) = header
            .split_once(' ')
            .ok_or_else(|| bad("malformed Authorization"))?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(bad("relying parties authenticate with HTTP Basic"));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| bad("malformed Basic credentials"))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| bad("malformed Basic credentials"))?;
        let rp = self
            .lookup(id)
            .await?
            .ok_or_else(|| bad("unknown relying party or wrong secret"))?;
        if aws_lc_rs::constant_time::verify_slices_are_equal(&rp.secret_hash, &hash(secret))
            .is_err()
        {
            return Err(bad("unknown relying party or wrong secret"));
        }
        if rp.disabled {
            return Err(bad("this relying party is disabled"));
        }
        Ok(rp)
    }

    /// The relying party `id`, known and not disabled: for a TLS login,
    /// where the party is named by its challenge, not by credentials.
    pub async fn active(&self, id: &str) -> Result<RelyingParty, RpError> {
        match self.lookup(id).await? {
            None => Err(RpError::Unauthorized(format!("no relying party {id:?}"))),
            Some(rp) if rp.disabled => Err(RpError::Unauthorized(format!(
                "relying party {id:?} is disabled"
            ))),
            Some(rp) => Ok(rp),
        }
    }

    /// `muhr rp disable`: the party's credentials and challenges stop
    /// working (within the cache's lifetime on running servers).
    pub async fn disable(&self, id: &str, actor: &str) -> Result<(), String> {
        let done = self
            .store
            .disable_relying_party(
                id,
                &AuditEvent {
                    actor: actor.to_string(),
                    action: "rp.disable".into(),
                    object: id.to_string(),
                    details: serde_json::json!({}),
                },
            )
            .await
            .map_err(|e| format!("database: {e}"))?;
        if done {
            return Ok(());
        }
        match self.store.relying_party(id).await {
            Ok(Some(_)) => Err(format!("--id: relying party {id} is disabled already")),
            Ok(None) => Err(format!("--id: no relying party {id}")),
            Err(e) => Err(format!("database: {e}")),
        }
    }

    async fn lookup(&self, id: &str) -> Result<Option<RelyingParty>, RpError> {
        if id.len() > 64 {
            return Ok(None);
        }
        let now = Instant::now();
        if let Some((at, rp)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(id)
            && now.duration_since(*at) < self.ttl
        {
            return Ok(rp.clone());
        }
        let rp = self
            .store
            .relying_party(id)
            .await
            .map_err(|e| RpError::Internal(format!("database: {e}")))?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Unknown ids are cached too (a flood of made-up ids stays off the
        // database), but the map is bounded.
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(id.to_string(), (now, rp.clone()));
        Ok(rp)
    }
}

/// The registry behind an `Arc`, the form it is shared in.
pub type Shared = Arc<RelyingParties>;

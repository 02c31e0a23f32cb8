//! Who may call the RA: mutual-TLS clients whose certificate (issued by Muhr
//! under the `ra-client` profile) is registered with a role. TLS proves the
//! holder has the key of a certificate our issuing CA made; the registry says
//! what that certificate may do. A revoked, suspended or expired credential,
//! or one never registered, may do nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use der::Decode;
use muhr_store::Store;
use x509_cert::Certificate;

/// How long a registry answer is reused: a revocation takes effect within it.
const FRESH: Duration = Duration::from_secs(1);

/// What a registered client may call. Each RA route needs exactly one role;
/// a caller with the other one is refused 403.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A card personalization line: submits cards and batches.
    PersonalizationLine,
    /// An operator: reads, revokes, suspends and restores certificates,
    /// reads card jobs and asks for a CRL.
    Operator,
    /// The population registry's adapter: posts registry events, nothing
    /// else.
    Registry,
}

impl Role {
    /// The name stored in the registry and accepted by `FromStr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PersonalizationLine => "personalization-line",
            Role::Operator => "operator",
            Role::Registry => "registry",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "personalization-line" => Ok(Role::PersonalizationLine),
            "operator" => Ok(Role::Operator),
            "registry" => Ok(Role::Registry),
            _ => Err(format!(
                "unknown role {s:?} (roles: personalization-line, operator, registry)"
            )),
        }
    }
}

/// Why a caller is not known when the registry could not be read: the
/// client is not refused, only asked to come back.
pub const REGISTRY_UNAVAILABLE: &str = "client registry unavailable; retry later";

/// The client's leaf certificate (DER), put into each request by the listener.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Vec<u8>);

/// An authorized caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The name it was registered under, the certificate's CN.
    pub name: String,
    /// What it may call.
    pub role: Role,
    /// Its certificate's serial, upper-case hex as [`muhr_pkix::serial::to_hex`] writes it.
    pub serial: String,
}

impl Caller {
    /// The audit chain's name for this caller.
    pub fn actor(&self) -> String {
        format!("ra-client:{}", self.name)
    }
}

/// A registry answer and when it was read.
type Cached = (Instant, Result<Caller, String>);

/// Turns a client certificate into a [`Caller`], reading the store's
/// `ra_clients` table. Answers, refusals included, are reused for up to a
/// second per certificate; one instance is shared by every request.
pub struct Registry {
    store: Store,
    /// By the certificate's DER: a connection's every request brings the same
    /// bytes, and decoding them each time cost more than the lookup.
    cache: Mutex<HashMap<Vec<u8>, Cached>>,
}

impl Registry {
    /// An empty cache over `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The caller a client certificate stands for, or why it stands for none
    /// ([`REGISTRY_UNAVAILABLE`] when the database cannot say: a 503, not a 403).
    pub async fn caller(&self, peer: Option<&PeerCertificate>) -> Result<Caller, String> {
        let Some(peer) = peer else {
            return Err("no client certificate".into());
        };
        if let Some((at, answer)) = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(peer.0.as_slice()).cloned())
            && at.elapsed() < FRESH
        {
            return answer;
        }
        let cert = Certificate::from_der(&peer.0)
            .map_err(|e| format!("client certificate does not parse: {e}"))?;
        let serial = muhr_pkix::serial::to_hex(cert.tbs_certificate().serial_number());
        let answer = match self.store.ra_client(&serial).await {
            Err(e) => {
                tracing::warn!(error = %e, "client registry unavailable");
                return Err(REGISTRY_UNAVAILABLE.into());
            }
            Ok(None) => Err(format!(
                "client certificate {serial} is not registered (muhr client add)"
            )),
            Ok(Some(c)) if c.revocation != "good" => {
                Err(format!("client certificate {serial} is {}", c.revocation))
            }
            Ok(Some(c)) if c.not_after < muhr_store::now_secs() => {
                Err(format!("client certificate {serial} has expired"))
            }
            Ok(Some(c)) => c
                .role
                .parse()
                .map(|role| Caller {
                    name: c.name,
                    role,
                    serial: serial.clone(),
                })
                .map_err(|e: String| format!("client {serial}: {e}")),
        };
        if let Ok(mut c) = self.cache.lock() {
            if c.len() > 10_000 {
                c.clear();
            }
            c.insert(peer.0.clone(), (Instant::now(), answer.clone()));
        }
        answer
    }
}

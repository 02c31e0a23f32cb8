//! The OCSP responder (RFC 6960, RFC 5019 profile) for one issuing CA.
//!
//! - Requests without a nonce get pre-signed responses from a cache, each valid
//!   `validity` and re-signed after `refresh`; any status change in the database
//!   (the `status_changes` feed, whoever wrote it) drops the affected entries
//!   within `FEED_POLL`.
//! - Requests with a nonce (RFC 8954, 1-32 octets) are signed live and echo it.
//! - If signing fails, the last good cached response is served while it is
//!   within its nextUpdate (stale-if-error); otherwise `tryLater`. A status the
//!   database cannot confirm is never answered `good`.
//! - Responses are signed by the delegated OCSP signer (its own key and
//!   certificate, see `muhr_ca::ocsp_signer`), never by the CA key.
//!
//! It must never write a certificate's status, and never signs with the CA
//! key: it reads the store and answers.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod bounded;
mod http;
mod request;
mod response;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use muhr_hsm::{KeySigner, KeyStore};
use muhr_store::Store;

use bounded::Bounded;

pub use http::{httpdate, router};

/// Entry points for `cargo fuzz` (ocsp-responder/fuzz): the request path with
/// no database behind it.
#[doc(hidden)]
pub mod fuzz {
    /// Parses `data` as a POST body and, decoded as base64, as a GET path.
    pub fn request(data: &[u8]) {
        let issuer = crate::IssuerHashes {
            name: "issuing".into(),
            sha1: ([1; 20], [2; 20]),
            sha256: ([3; 32], [4; 32]),
        };
        let _ = crate::request::parse(data, 16, &issuer);
        if let Ok(text) = std::str::from_utf8(data)
            && let Some(der) = crate::http::decode_get(text)
        {
            let _ = crate::request::parse(&der, 16, &issuer);
        }
    }
}
pub use request::{HashAlg, Query};

/// How often the `status_changes` feed is read: the longest a cached
/// response outlives a revocation in the database, while the feed is up.
pub const FEED_POLL: Duration = Duration::from_millis(200);

/// Why the responder could not be built or could not load its signer.
/// Answering never fails with it: request problems become OCSP statuses.
#[derive(Debug, thiserror::Error)]
pub enum ResponderError {
    /// The database could not be read.
    #[error("database: {0}")]
    Store(#[from] muhr_store::StoreError),
    /// The signer's key could not be opened, or its stored key spec is not understood.
    #[error("key store: {0}")]
    Key(#[from] muhr_hsm::HsmError),
    /// Anything else in the way of serving: no such CA in the database, a
    /// certificate that does not parse, a failed background task.
    #[error("{0}")]
    Setup(String),
}

/// The responder's tuning; the default is one hour of validity, re-signed
/// after half an hour, 16 requests per message and 512 MiB of cache.
#[derive(Clone, Debug)]
pub struct Config {
    /// nextUpdate - thisUpdate of every response.
    pub validity: Duration,
    /// A cached response older than this is signed again.
    pub refresh: Duration,
    /// Most single requests accepted in one OCSP request.
    pub max_requests: usize,
    /// Memory for caches: half for pre-signed responses, a quarter each for
    /// statuses and for request encodings. Least recently used goes first.
    pub cache_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            validity: Duration::from_secs(3600),
            refresh: Duration::from_secs(1800),
            max_requests: 16,
            cache_bytes: 512 << 20,
        }
    }
}

/// The issuing CA as CertIDs name it.
struct IssuerHashes {
    name: String,
    sha1: ([u8; 20], [u8; 20]),
    sha256: ([u8; 32], [u8; 32]),
}

/// The delegated signer in use.
pub(crate) struct Signer {
    key: Arc<dyn KeySigner>,
    /// The signer's certificate, included in every response.
    cert_der: Vec<u8>,
    serial: String,
    /// byKey: SHA-1 of the signer's public key.
    responder_id: muhr_pkix::ocsp::ResponderId,
    algorithm: spki::AlgorithmIdentifierOwned,
}

/// Hash algorithm of the CertID and the serial: one pre-signed response each.
pub(crate) type CacheKey = (HashAlg, Vec<u8>);

/// The per-serial key and response a request encoding last resolved to.
pub(crate) type ByBytes = (CacheKey, Arc<Cached>);

/// A pre-signed response with its HTTP validators computed once.
pub(crate) struct Cached {
    pub(crate) der: axum::body::Bytes,
    pub(crate) this_update: i64,
    pub(crate) next_update: i64,
    pub(crate) etag: axum::http::HeaderValue,
    pub(crate) last_modified: axum::http::HeaderValue,
    pub(crate) expires: axum::http::HeaderValue,
}

impl Responder {
    /// Prometheus text for `/metrics`: the counters and the caches' size.
    pub fn render_metrics(&self) -> String {
        let mut out = self.counters.render();
        out.push_str("# HELP muhr_ocsp_cache_bytes Memory held by the OCSP caches (estimated).\n# TYPE muhr_ocsp_cache_bytes gauge\n");
        let sizes = [
            ("responses", {
                let m = self.cache.read().unwrap_or_else(|p| p.into_inner());
                (m.weight(), m.len())
            }),
            ("statuses", {
                let m = self.statuses.read().unwrap_or_else(|p| p.into_inner());
                (m.weight(), m.len())
            }),
            ("requests", {
                let m = self.by_bytes.read().unwrap_or_else(|p| p.into_inner());
                (m.weight(), m.len())
            }),
        ];
        for (cache, (bytes, _)) in sizes {
            out.push_str(&format!(
                "muhr_ocsp_cache_bytes{{cache=\"{cache}\"}} {bytes}\n"
            ));
        }
        out.push_str("# HELP muhr_ocsp_cache_entries Entries in the OCSP caches.\n# TYPE muhr_ocsp_cache_entries gauge\n");
        for (cache, (_, entries)) in sizes {
            out.push_str(&format!(
                "muhr_ocsp_cache_entries{{cache=\"{cache}\"}} {entries}\n"
            ));
        }
        out
    }
}

impl Counters {
    /// Prometheus text for `/metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            ("requests", "OCSP requests received.", &self.requests),
            (
                "cache_hits",
                "Answered from pre-signed responses.",
                &self.cache_hits,
            ),
            ("signed", "Responses signed.", &self.signed),
            (
                "stale_served",
                "Cached responses served because a fresh one could not be made (stale-if-error).",
                &self.stale_served,
            ),
            ("malformed", "malformedRequest answers.", &self.malformed),
            (
                "unauthorized",
                "unauthorized answers (another issuer).",
                &self.unauthorized,
            ),
            ("try_later", "tryLater answers.", &self.try_later),
        ] {
            out.push_str(&format!(
                "# HELP muhr_ocsp_{name}_total {help}\n# TYPE muhr_ocsp_{name}_total counter\nmuhr_ocsp_{name}_total {}\n",
                v.load(std::sync::atomic::Ordering::Relaxed)
            ));
        }
        out
    }
}

/// Totals since the process started, each exported as
/// `muhr_ocsp_<name>_total`. Updated with relaxed ordering: for metrics
/// only, never for decisions.
#[derive(Default)]
pub struct Counters {
    /// Every OCSP request received, whatever its answer.
    pub requests: AtomicU64,
    /// Answered with a fresh pre-signed response, without signing.
    pub cache_hits: AtomicU64,
    /// Responses signed: cacheable ones, and live ones (a nonce, or several
    /// certificates in one request).
    pub signed: AtomicU64,
    /// Cached responses served past their refresh time because a fresh one
    /// could not be made (stale-if-error).
    pub stale_served: AtomicU64,
    /// `malformedRequest` answers.
    pub malformed: AtomicU64,
    /// `unauthorized` answers: a CertID naming another issuer.
    pub unauthorized: AtomicU64,
    /// `tryLater` answers: the database or the signer failed (or no signer
    /// is loaded) and no cached response was still within its nextUpdate.
    pub try_later: AtomicU64,
}

/// The responder for one issuing CA, shared by every request behind an
/// `Arc`. Build it with [`Responder::new`], load a signer with
/// [`Responder::reload_signer`], spawn [`Responder::follow`], then mount
/// [`router`].
pub struct Responder {
    store: Store,
    keys: Arc<dyn KeyStore>,
    issuer: IssuerHashes,
    signer: RwLock<Option<Arc<Signer>>>,
    cache: RwLock<Bounded<CacheKey, Arc<Cached>>>,
    /// Exact request bytes of cacheable requests → their cache entry.
    by_bytes: RwLock<Bounded<Vec<u8>, ByBytes>>,
    /// Statuses read from the database, dropped by the change feed like responses.
    statuses: RwLock<Bounded<Vec<u8>, Option<muhr_store::Status>>>,
    /// Bumped whenever the change feed drops entries: a response or status
    /// read before a bump is not cached after it (it may predate the change).
    generation: AtomicU64,
    /// When the change feed was last read successfully (Unix seconds).
    feed_ok_at: std::sync::atomic::AtomicI64,
    /// Until when (Unix seconds) a status look-up is not tried for a serial
    /// whose signed response can be served: the last one timed out or
    /// failed. Spares a database in trouble one waiting request per serial.
    db_suspect_until: std::sync::atomic::AtomicI64,
    config: Config,
    /// What the responder has answered, for `/metrics`.
    pub counters: Counters,
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    d.as_ref().try_into().expect("SHA-1 is 20 bytes")
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

impl Responder {
    /// A responder for the CA named `issuer` (its certificate is read from the
    /// database). Call [`Responder::reload_signer`] before serving.
    pub async fn new(
        store: Store,
        keys: Arc<dyn KeyStore>,
        issuer: &str,
        config: Config,
    ) -> Result<Self, ResponderError> {
        use der::{Decode, Encode};
        let ca = store.authority(issuer).await?.ok_or_else(|| {
            ResponderError::Setup(format!(
                "no {issuer} CA in the database: run `muhr ca init`"
            ))
        })?;
        let cert = x509_cert::Certificate::from_der(&ca.der)
            .map_err(|e| ResponderError::Setup(e.to_string()))?;
        let name = cert
            .tbs_certificate()
            .subject()
            .to_der()
            .map_err(|e| ResponderError::Setup(e.to_string()))?;
        let key = cert
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes();
        Ok(Self {
            store,
            keys,
            issuer: IssuerHashes {
                name: issuer.to_string(),
                sha1: (sha1(&name), sha1(key)),
                sha256: (sha256(&name), sha256(key)),
            },
            signer: RwLock::new(None),
            cache: RwLock::new(Bounded::new(config.cache_bytes / 2)),
            by_bytes: RwLock::new(Bounded::new(config.cache_bytes / 4)),
            statuses: RwLock::new(Bounded::new(config.cache_bytes / 4)),
            generation: AtomicU64::new(0),
            feed_ok_at: std::sync::atomic::AtomicI64::new(0),
            db_suspect_until: std::sync::atomic::AtomicI64::new(0),
            config,
            counters: Counters::default(),
        })
    }

    /// Loads the newest valid delegated signer if it differs from the one in
    /// use; returns whether one is loaded.
    pub async fn reload_signer(&self) -> Result<bool, ResponderError> {
        use der::Decode;
        let Some(rec) = self.store.current_ocsp_signer(&self.issuer.name).await? else {
            return Ok(self
                .signer
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .is_some());
        };
        if self
            .signer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|s| s.serial == rec.serial)
        {
            return Ok(true);
        }
        let spec = rec.key_spec.parse().map_err(ResponderError::Key)?;
        let keys = self.keys.clone();
        let label = rec.key_label.clone();
        let key = tokio::task::spawn_blocking(move || keys.open(&label, spec))
            .await
            .map_err(|e| ResponderError::Setup(e.to_string()))??;
        let cert = x509_cert::Certificate::from_der(&rec.der)
            .map_err(|e| ResponderError::Setup(e.to_string()))?;
        let key_hash = sha1(
            cert.tbs_certificate()
                .subject_public_key_info()
                .subject_public_key
                .raw_bytes(),
        );
        let algorithm = key.signature_algorithm();
        let responder_id = muhr_pkix::ocsp::ResponderId::ByKey(
            der::asn1::OctetString::new(key_hash.to_vec())
                .map_err(|e| ResponderError::Setup(e.to_string()))?,
        );
        let signer = Arc::new(Signer {
            key,
            cert_der: rec.der.clone(),
            serial: rec.serial.clone(),
            responder_id,
            algorithm,
        });
        *self.signer.write().unwrap_or_else(|p| p.into_inner()) = Some(signer);
        // Responses signed by the previous signer stay valid until their nextUpdate.
        tracing::info!(serial = %rec.serial, "OCSP responder signing with a new delegated signer");
        Ok(true)
    }

    pub(crate) fn signer(&self) -> Option<Arc<Signer>> {
        self.signer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Follows the change feed (dropping cached responses of changed serials)
    /// and picks up renewed signers. Runs until the process ends.
    pub async fn follow(self: Arc<Self>) {
        let mut last = match self.store.last_status_change().await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "OCSP: cannot read the change feed; dropping the whole cache on recovery");
                -1
            }
        };
        let mut tick = tokio::time::interval(FEED_POLL);
        let mut since_reload = Duration::ZERO;
        loop {
            tick.tick().await;
            since_reload += FEED_POLL;
            if since_reload >= Duration::from_secs(10) {
                since_reload = Duration::ZERO;
                if let Err(e) = self.reload_signer().await {
                    tracing::warn!(error = %e, "OCSP: reloading the signer failed");
                }
            }
            if last < 0 {
                match self.store.last_status_change().await {
                    Ok(id) => {
                        self.cache
                            .write()
                            .unwrap_or_else(|p| p.into_inner())
                            .clear();
                        last = id;
                    }
                    Err(_) => continue,
                }
            }
            match self.store.status_changes_since(last, 10_000).await {
                Ok(changes) => {
                    if !changes.is_empty() {
                        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
                        let mut statuses = self.statuses.write().unwrap_or_else(|p| p.into_inner());
                        self.generation
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        for (id, serial) in changes {
                            if let Ok(bytes) = hex::decode(&serial) {
                                for alg in HashAlg::ALL {
                                    cache.remove(&(alg, bytes.clone()));
                                }
                                statuses.remove(&bytes);
                            }
                            last = id;
                        }
                    }
                    self.feed_ok_at
                        .store(muhr_store::now_secs(), std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "OCSP: cannot read the change feed"),
            }
        }
    }
}

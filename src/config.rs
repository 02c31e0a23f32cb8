//! The configuration file (TOML). Every field has a development default, so
//! running with no file at all gives a working CA in `./muhr-data`.
//!
//! Secrets are never written in this file: it names where they come from (an
//! environment variable or a file), and only that name appears in messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub database: Database,
    #[serde(default)]
    pub key_store: KeyStoreConfig,
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub urls: Urls,
    #[serde(default)]
    pub issuance: Issuance,
    #[serde(default)]
    pub policies: Policies,
    #[serde(default)]
    pub crl: CrlConfig,
    #[serde(default)]
    pub ocsp: OcspConfig,
    #[serde(default)]
    pub identity: muhr_policies::identity::IdentityRules,
    #[serde(default)]
    pub ceremony: CeremonyConfig,
    #[serde(default)]
    pub personalization: muhr_ra::PersonalizationConfig,
    /// Remote issuance to citizens; without it the citizen routes are absent.
    pub citizens: Option<muhr_ra::citizen::service::CitizensConfig>,
    /// Login by certificate and the relying parties' services.
    #[serde(default)]
    pub login: muhr_login::login::LoginConfig,
    #[serde(default)]
    pub audit: AuditConfig,
}

/// The audit chain's anchoring (`ca/src/audit_anchor.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Label of the audit key (ECDSA P-256) in the key store.
    pub key: String,
    /// A checkpoint is signed after this many entries...
    pub checkpoint_entries: i64,
    /// ...and at least this often while entries are appended.
    pub checkpoint_seconds: u64,
    /// `muhr audit verify` fails when entries older than this are not
    /// vouched for by a signed checkpoint.
    pub anchor_grace_seconds: u64,
}

impl AuditConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1_000_000).contains(&self.checkpoint_entries) {
            return Err("audit.checkpoint_entries: between 1 and 1000000".into());
        }
        if !(1..=3600).contains(&self.checkpoint_seconds) {
            return Err("audit.checkpoint_seconds: between 1 and 3600".into());
        }
        if self.anchor_grace_seconds > 86_400 {
            return Err("audit.anchor_grace_seconds: at most 86400".into());
        }
        if self.anchor_grace_seconds > 0 && self.anchor_grace_seconds < self.checkpoint_seconds {
            return Err(
                "audit.anchor_grace_seconds: at least audit.checkpoint_seconds (or 0 to require \
                 every entry anchored)"
                    .into(),
            );
        }
        Ok(())
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            key: "muhr-audit".into(),
            checkpoint_entries: 1000,
            checkpoint_seconds: 60,
            anchor_grace_seconds: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// `sqlite://FILE` (relative paths are inside the data directory) or `postgres://...`.
    pub url: Option<String>,
    /// Name of an environment variable holding the URL (it may hold a password).
    pub url_env: Option<String>,
    /// How long a request waits for a database connection before it is
    /// answered 503: during an outage, answers come this fast (default 2000).
    pub acquire_timeout_ms: u64,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            url: Some("sqlite://muhr.db".into()),
            url_env: None,
            acquire_timeout_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum Backend {
    Software,
    Pkcs11,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyStoreConfig {
    pub backend: Backend,
    /// Software: directory of encrypted PKCS#8 files (relative to the data dir).
    pub dir: Option<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
    pub passphrase_env: Option<String>,
    /// Development only: create a random passphrase file when it is missing.
    pub generate_passphrase: bool,
    /// PKCS#11: the module, the token and where the user PIN comes from.
    pub module: Option<PathBuf>,
    pub token_label: Option<String>,
    pub pin_env: Option<String>,
    pub pin_file: Option<PathBuf>,
    pub sessions: Option<usize>,
    /// PKCS#11: sign with a session copy of the key kept in the module (default
    /// true; a module that refuses the copy is used through the token object).
    pub copy_keys_to_session: Option<bool>,
    /// PKCS#11: while the token is down (removed, device error), how often
    /// Muhr re-initialises the module and tries to log in again (default 2 s).
    pub retry_seconds: Option<u64>,
}

impl Default for KeyStoreConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Software,
            dir: None,
            passphrase_file: Some("keys/passphrase".into()),
            passphrase_env: None,
            generate_passphrase: false,
            module: None,
            token_label: None,
            pin_env: None,
            pin_file: None,
            sessions: None,
            copy_keys_to_session: None,
            retry_seconds: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: String,
    /// The RA's mutual-TLS listener (personalization line, operators).
    pub listen_mtls: String,
    /// The mTLS listener's certificate chain and key (PEM files). Without them
    /// the CA issues one (`tls-server` profile) for `tls_names`, kept in
    /// DATA/tls and renewed when it has less than 30 days left.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_names: Vec<String>,
    /// Time and count limits of both listeners (`[server.limits]`).
    pub limits: Limits,
}

/// What one client may hold of a listener. Every limit is finite: the
/// defaults are what a national service on one machine can afford.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The TLS handshake, and a request's headers, must arrive within this.
    pub header_read_timeout_seconds: u64,
    /// A connection with no request in progress and no bytes moving is closed.
    pub idle_timeout_seconds: u64,
    /// A request not answered within this gets a 503 with Retry-After.
    pub request_timeout_seconds: u64,
    /// A connection this old finishes what is in progress and is closed
    /// (HTTP/2: GOAWAY): nobody holds a connection forever.
    pub max_connection_age_seconds: u64,
    /// Connections open at once on the public listener...
    pub max_connections: usize,
    /// ...and on the mutual-TLS listener (machines and operators: fewer).
    pub max_connections_mtls: usize,
    /// Connections open at once from one client address, on each listener.
    pub max_connections_per_address: usize,
    /// HTTP/2 streams in progress at once on one connection.
    pub http2_max_streams: u32,
    /// Request headers (HTTP/1 buffer, HTTP/2 header list), in bytes.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            request_timeout_seconds: 60,
            max_connection_age_seconds: 600,
            max_connections: 8192,
            max_connections_mtls: 1024,
            max_connections_per_address: 256,
            http2_max_streams: 128,
            max_header_bytes: 16 * 1024,
        }
    }
}

impl Limits {
    pub fn validate(&self) -> Result<(), String> {
        let range = |name: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("server.limits.{name}: between {lo} and {hi}"))
            }
        };
        range(
            "header_read_timeout_seconds",
            self.header_read_timeout_seconds,
            1,
            300,
        )?;
        range("idle_timeout_seconds", self.idle_timeout_seconds, 1, 3600)?;
        range(
            "request_timeout_seconds",
            self.request_timeout_seconds,
            1,
            3600,
        )?;
        range(
            "max_connection_age_seconds",
            self.max_connection_age_seconds,
            10,
            86_400,
        )?;
        range(
            "max_connections",
            self.max_connections as u64,
            16,
            1_000_000,
        )?;
        range(
            "max_connections_mtls",
            self.max_connections_mtls as u64,
            16,
            1_000_000,
        )?;
        range(
            "max_connections_per_address",
            self.max_connections_per_address as u64,
            1,
            1_000_000,
        )?;
        range(
            "http2_max_streams",
            self.http2_max_streams as u64,
            1,
            10_000,
        )?;
        range(
            "max_header_bytes",
            self.max_header_bytes as u64,
            4096,
            1 << 20,
        )?;
        Ok(())
    }
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_seconds)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }
    pub fn max_connection_age(&self) -> Duration {
        Duration::from_secs(self.max_connection_age_seconds)
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            listen_mtls: "127.0.0.1:8443".into(),
            tls_cert: None,
            tls_key: None,
            tls_names: vec!["localhost".into(), "127.0.0.1".into()],
            limits: Limits::default(),
        }
    }
}

/// URLs written into certificates. `{base}` is `base`; `{ca}` the CA's name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Urls {
    pub base: String,
    pub crl: String,
    pub ocsp: String,
    pub ca_issuers: String,
}

impl Default for Urls {
    fn default() -> Self {
        Self {
            base: format!("http://{DEFAULT_LISTEN}"),
            crl: "{base}/crl/{crl}.crl".into(),
            ocsp: "{base}/ocsp".into(),
            ca_issuers: "{base}/ca/{ca}.cer".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Issuance {
    pub backdate_seconds: u64,
    /// At start, intents left pending at least this long are signed and stored
    /// (a younger one may be another node's issuance still under way).
    pub recovery_min_age_seconds: u64,
    /// certificatePolicies OIDs per profile.
    pub policy_oids: BTreeMap<String, Vec<String>>,
}

impl Default for Issuance {
    fn default() -> Self {
        // The development CA asserts no certificate policy: a policy OID is a
        // promise made in a registered CP/CPS, which a development CA has not got.
        // Configurations name theirs (see examples/production.toml).
        Self {
            backdate_seconds: 300,
            recovery_min_age_seconds: 30,
            policy_oids: BTreeMap::new(),
        }
    }
}

/// CRLs: lifetimes, refresh and shards. `muhr serve` makes delta CRLs within
/// a second of any status change, whichever process made it, and complete
/// CRLs on a schedule and soon after changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrlConfig {
    /// nextUpdate - thisUpdate of complete CRLs.
    pub validity_hours: u64,
    /// Complete CRLs are made again at least this often even when nothing changed.
    pub refresh_minutes: u64,
    /// After a change, complete CRLs are made again once the newest is at
    /// least this old (deltas carry the change meanwhile). A complete CRL of a
    /// million entries costs about 2.5 s of one core.
    pub complete_min_seconds: u64,
    /// nextUpdate - thisUpdate of delta CRLs; they are also made again when
    /// half of it has passed.
    pub delta_validity_minutes: u64,
    /// End-entity certificates of the issuing CA are spread over this many
    /// CRL shards (0: none; all point to the whole CRL). The shard is written
    /// into each certificate when it is issued: changing this number affects
    /// only certificates issued afterwards, and CRLs keep being made for every
    /// shard ever used.
    pub shards: u32,
}

impl Default for CrlConfig {
    fn default() -> Self {
        Self {
            validity_hours: 24,
            refresh_minutes: 60,
            complete_min_seconds: 60,
            delta_validity_minutes: 60,
            shards: 16,
        }
    }
}

/// The OCSP responder and its delegated signer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OcspConfig {
    /// nextUpdate - thisUpdate of each response.
    pub validity_seconds: u64,
    /// A pre-signed response older than this is signed again.
    pub refresh_seconds: u64,
    /// Most certificates asked about in one request.
    pub max_requests: usize,
    /// Memory for the responder's caches (pre-signed responses, statuses,
    /// request encodings); least recently used goes first.
    pub cache_mb: usize,
    /// Key kind of the delegated signer (its own key, never the CA's).
    pub signer_key: String,
    /// `muhr serve` makes a new signer when the current one has less left.
    pub renew_days_before: u64,
}

impl Default for OcspConfig {
    fn default() -> Self {
        Self {
            validity_seconds: 3600,
            refresh_seconds: 1800,
            max_requests: 16,
            cache_mb: 512,
            signer_key: "ecdsa-p256".into(),
            renew_days_before: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// A directory of profile files replacing the built-in set.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    pub profile: String,
    pub key_label: String,
    pub key: String,
    pub common_name: String,
    pub organization: String,
    pub country: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CeremonyConfig {
    pub root: CaConfig,
    pub issuing: CaConfig,
}

impl Default for CeremonyConfig {
    fn default() -> Self {
        let ca = |profile: &str, label: &str, key: &str, cn: &str| CaConfig {
            profile: profile.into(),
            key_label: label.into(),
            key: key.into(),
            common_name: cn.into(),
            organization: "Muhr Development".into(),
            country: "UZ".into(),
        };
        Self {
            root: ca(
                "root-ca",
                "muhr-root",
                "ecdsa-p384",
                "Muhr Development Root CA",
            ),
            issuing: ca(
                "issuing-ca",
                "muhr-issuing",
                "ecdsa-p256",
                "Muhr Development Issuing CA",
            ),
        }
    }
}

impl Config {
    /// What runs with no configuration file: everything default, plus a
    /// generated passphrase for the software keys.
    pub fn development() -> Self {
        let mut c = Self::default();
        c.key_store.generate_passphrase = true;
        c
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let c: Self =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        c.audit
            .validate()
            .and_then(|_| c.server.limits.validate())
            .and_then(|_| {
                if (100..=60_000).contains(&c.database.acquire_timeout_ms) {
                    Ok(())
                } else {
                    Err("database.acquire_timeout_ms: between 100 and 60000".into())
                }
            })
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(c)
    }
}

/// Reads a secret from the environment variable or file the configuration names.
pub fn secret(
    what: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Zeroizing<String>, String> {
    if let Some(var) = env {
        return std::env::var(var)
            .map(Zeroizing::new)
            .map_err(|_| format!("{what}: environment variable {var} is not set"));
    }
    if let Some(path) = file {
        let s = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("{what}: {}: {e}", path.display()))?,
        );
        return Ok(Zeroizing::new(s.trim_end_matches(['\n', '\r']).to_string()));
    }
    Err(format!(
        "{what}: configure an environment variable or a file to read it from"
    ))
}

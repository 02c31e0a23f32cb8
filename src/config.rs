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

/// The whole file (`--config`, or `MUHR_CONFIG`). An unknown key is
/// refused, so a misspelt one is never silently ignored.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the database, keys, CRLs and TLS files live; `--data` overrides
    /// it, and without either it is `./muhr-data`.
    pub data_dir: Option<PathBuf>,
    /// `[database]`.
    #[serde(default)]
    pub database: Database,
    /// `[key_store]`: where every key Muhr signs with is kept.
    #[serde(default)]
    pub key_store: KeyStoreConfig,
    /// `[server]`: the two listeners.
    #[serde(default)]
    pub server: Server,
    /// `[urls]`: the URLs written into certificates.
    #[serde(default)]
    pub urls: Urls,
    /// `[issuance]`.
    #[serde(default)]
    pub issuance: Issuance,
    /// `[policies]`: where the certificate profiles come from.
    #[serde(default)]
    pub policies: Policies,
    /// `[crl]`.
    #[serde(default)]
    pub crl: CrlConfig,
    /// `[ocsp]`.
    #[serde(default)]
    pub ocsp: OcspConfig,
    /// `[tsa]`: the time-stamping authority (docs/time-stamping.md).
    #[serde(default)]
    pub tsa: TsaConfig,
    /// `[identity]`: the checks on a person's data and the facts they rest on.
    #[serde(default)]
    pub identity: muhr_policies::identity::IdentityRules,
    /// `[ceremony]`: the CAs `muhr ca init` creates.
    #[serde(default)]
    pub ceremony: CeremonyConfig,
    /// `[personalization]`: what a card gets, where cards may come from, and
    /// the district list.
    #[serde(default)]
    pub personalization: muhr_ra::PersonalizationConfig,
    /// `[registry]`: how the population registry's events are applied.
    #[serde(default)]
    pub registry: muhr_ra::registry::RegistryConfig,
    /// Remote issuance to citizens; without it the citizen routes are absent.
    pub citizens: Option<muhr_ra::citizen::service::CitizensConfig>,
    /// `[portal]`: the citizens' web page (docs/portal.md); needs `[citizens]`.
    pub portal: Option<muhr_portal::PortalConfig>,
    /// Login by certificate and the relying parties' services.
    #[serde(default)]
    pub login: muhr_login::login::LoginConfig,
    /// `[audit]`: the audit chain's signed checkpoints.
    #[serde(default)]
    pub audit: AuditConfig,
    /// `[notices]`: the notification system's webhook. Without it notices
    /// are still recorded (citizens see them) but not delivered.
    pub notices: Option<muhr_notices::NoticesConfig>,
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
    /// Refuses values out of range, naming the key; [`Config::load`] calls it.
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

/// `[database]`: which database, and how long a request waits for it.
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

/// `key_store.backend`: what holds the keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum Backend {
    /// `software` (the default): encrypted files under a passphrase. For
    /// development and tests; a production CA keeps its keys in an HSM.
    Software,
    /// `pkcs11`: a token (an HSM, or SoftHSM) through its PKCS#11 module.
    Pkcs11,
}

/// `[key_store]`: where the CA, OCSP signer, audit and assertion keys are
/// kept, and where the secret that unlocks them comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyStoreConfig {
    /// `software` (default) or `pkcs11`.
    pub backend: Backend,
    /// Software: directory of encrypted PKCS#8 files (relative to the data dir).
    pub dir: Option<PathBuf>,
    /// Software: file holding the passphrase, relative to the data directory
    /// (default `keys/passphrase`). Refused when others can read it.
    pub passphrase_file: Option<PathBuf>,
    /// Software: environment variable holding the passphrase; when set, it
    /// is used instead of `passphrase_file`.
    pub passphrase_env: Option<String>,
    /// Development only: create a random passphrase file when it is missing.
    pub generate_passphrase: bool,
    /// PKCS#11: the module, the token and where the user PIN comes from.
    pub module: Option<PathBuf>,
    /// PKCS#11: the token's label; required with `pkcs11`.
    pub token_label: Option<String>,
    /// PKCS#11: environment variable holding the user PIN; when set, it is
    /// used instead of `pin_file`.
    pub pin_env: Option<String>,
    /// PKCS#11: file holding the user PIN, relative to the working directory.
    /// Refused when others can read it.
    pub pin_file: Option<PathBuf>,
    /// PKCS#11: logged-in sessions that sign side by side (default 4, held to
    /// 1 to 64).
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

/// `[server]`: the public listener, the RA's mutual-TLS listener and the
/// limits of both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// The public listener, plain HTTP (default [`DEFAULT_LISTEN`]); `--listen`
    /// overrides it.
    pub listen: String,
    /// The RA's mutual-TLS listener (personalization line, operators).
    pub listen_mtls: String,
    /// The mTLS listener's certificate chain and key (PEM files). Without them
    /// the CA issues one (`tls-server` profile) for `tls_names`, kept in
    /// DATA/tls and renewed when it has less than 30 days left.
    pub tls_cert: Option<PathBuf>,
    /// The key for `tls_cert` (PKCS#8 PEM); set both or neither. Refused when
    /// others can read it.
    pub tls_key: Option<PathBuf>,
    /// Host names or IP addresses of the certificate the CA issues when
    /// `tls_cert` is not set; the first is also its common name.
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
    /// Refuses values out of range, naming the key; [`Config::load`] calls it.
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
    /// `header_read_timeout_seconds` as a [`Duration`].
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_seconds)
    }
    /// `idle_timeout_seconds` as a [`Duration`].
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }
    /// `request_timeout_seconds` as a [`Duration`].
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }
    /// `max_connection_age_seconds` as a [`Duration`].
    pub fn max_connection_age(&self) -> Duration {
        Duration::from_secs(self.max_connection_age_seconds)
    }
}

/// The public listener's default address; also the host of the default
/// `urls.base`.
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
    /// Muhr's public address as relying parties reach it (a trailing `/` is
    /// dropped). Default `http://` + [`DEFAULT_LISTEN`]: set it in production.
    pub base: String,
    /// The CRL distribution point. It must contain `{crl}`, which becomes
    /// each CRL's name: whole, shard and delta CRLs each need their own URL.
    pub crl: String,
    /// The OCSP responder (authorityInfoAccess).
    pub ocsp: String,
    /// Where the issuer's certificate is fetched (authorityInfoAccess caIssuers).
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

/// `[issuance]`: what the configuration decides for every certificate, and
/// the recovery of interrupted issuance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Issuance {
    /// notBefore is set this far before the moment of issuance, so that
    /// relying parties whose clocks run behind accept a new certificate
    /// (default 300).
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

/// `[tsa]`: the time-stamping authority (RFC 3161) on the public listener
/// (`POST /tsa`), in `muhr serve` and alone in `muhr tsa`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TsaConfig {
    /// Serve `POST /tsa` in `muhr serve`, and make the TSA certificate.
    /// Off unless turned on: a TSA promises a registered policy and a clock
    /// kept synchronised, both the operator's to provide.
    pub enabled: bool,
    /// The policy tokens are issued under, unless a request names another
    /// of `allowed_policies`. The default, 1.3.6.1.4.1.32473.3161.1, sits in the
    /// example arc (X.660): a development TSA promises nothing. Production
    /// names the OID its registered TSA policy gives.
    pub policy: String,
    /// Further policies a request may name.
    pub allowed_policies: Vec<String>,
    /// The accuracy tokens state, in milliseconds (at least 1000: genTime
    /// is in whole seconds). The clock must be within it less half a
    /// second, or requests get timeNotAvailable.
    pub accuracy_ms: u64,
    /// Key kind of the TSA key (its own key, only for tokens).
    pub signer_key: String,
    /// `muhr serve` certifies a new TSA key when the current certificate
    /// has less left than this (the certificate lives 24 months: the key
    /// stamps for about a year, and the certificate still verifies its
    /// tokens a year after).
    pub renew_days_before: u64,
    /// The TSA certificate's commonName.
    pub name: String,
    /// The TSA certificate's organizationName, when not empty.
    pub organization: String,
    /// `[tsa.clock]`: how the clock is checked.
    pub clock: TsaClock,
}

/// `[tsa.clock]`: where the TSA learns that its clock is right.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TsaClock {
    /// `kernel`: the kernel's synchronisation state and maximum error
    /// (adjtimex), as chrony or ntpd keep them; `ntp`: ask `ntp_servers`.
    pub source: String,
    /// NTP servers, `host:port`, asked every `ntp_interval_seconds`.
    pub ntp_servers: Vec<String>,
    /// Between NTP polls; an answer counts for three intervals.
    pub ntp_interval_seconds: u64,
}

impl Default for TsaClock {
    fn default() -> Self {
        Self {
            source: "kernel".into(),
            ntp_servers: Vec::new(),
            ntp_interval_seconds: 16,
        }
    }
}

impl Default for TsaConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            policy: "1.3.6.1.4.1.32473.3161.1".into(),
            allowed_policies: Vec::new(),
            accuracy_ms: 1000,
            signer_key: "ecdsa-p256".into(),
            renew_days_before: 365,
            name: "Muhr Time-Stamping Authority".into(),
            organization: String::new(),
            clock: TsaClock::default(),
        }
    }
}

impl TsaConfig {
    /// The TSA's settings, or which key is wrong.
    pub fn validate(&self) -> Result<muhr_tsa::Config, String> {
        let oid = |key: &str, s: &str| {
            s.parse::<const_oid::ObjectIdentifier>()
                .map_err(|_| format!("tsa.{key}: {s:?} is not a dotted OID"))
        };
        let default = oid("policy", &self.policy)?;
        let allowed = self
            .allowed_policies
            .iter()
            .map(|p| oid("allowed_policies", p))
            .collect::<Result<Vec<_>, _>>()?;
        if !(1000..=60_000).contains(&self.accuracy_ms) {
            return Err("tsa.accuracy_ms: between 1000 and 60000".into());
        }
        self.signer_key
            .parse::<muhr_hsm::KeySpec>()
            .map_err(|e| format!("tsa.signer_key: {e}"))?;
        if !(1..=700).contains(&self.renew_days_before) {
            return Err("tsa.renew_days_before: between 1 and 700".into());
        }
        if self.name.trim().is_empty() || self.name.chars().count() > 64 {
            return Err("tsa.name: 1 to 64 characters".into());
        }
        if self.organization.chars().count() > 64 {
            return Err("tsa.organization: at most 64 characters".into());
        }
        self.clock_source()?;
        Ok(muhr_tsa::Config {
            policies: muhr_tsa::request::Policies { default, allowed },
            accuracy: std::time::Duration::from_millis(self.accuracy_ms),
        })
    }

    /// The clock check `[tsa.clock]` describes.
    pub fn clock_source(&self) -> Result<muhr_tsa::clock::ClockSource, String> {
        match self.clock.source.as_str() {
            "kernel" => Ok(muhr_tsa::clock::ClockSource::Kernel),
            "ntp" => {
                if self.clock.ntp_servers.is_empty() {
                    return Err("tsa.clock.ntp_servers: at least one host:port".into());
                }
                if !(1..=1024).contains(&self.clock.ntp_interval_seconds) {
                    return Err("tsa.clock.ntp_interval_seconds: between 1 and 1024".into());
                }
                Ok(muhr_tsa::clock::ClockSource::Ntp {
                    servers: self.clock.ntp_servers.clone(),
                    interval: std::time::Duration::from_secs(self.clock.ntp_interval_seconds),
                    timeout: std::time::Duration::from_secs(2),
                })
            }
            other => Err(format!(
                "tsa.clock.source: {other:?} is neither kernel nor ntp"
            )),
        }
    }

    /// The TSA certificate's subject fields.
    pub fn subject(&self) -> std::collections::BTreeMap<String, String> {
        let mut f =
            std::collections::BTreeMap::from([("common_name".to_string(), self.name.clone())]);
        if !self.organization.is_empty() {
            f.insert("organization.name".into(), self.organization.clone());
        }
        f
    }
}

/// `[policies]`: the certificate profiles.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// A directory of profile files replacing the built-in set.
    pub dir: Option<PathBuf>,
}

/// One CA made at the key ceremony. A table that is given needs every key;
/// one left out takes its development default (see [`CeremonyConfig`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// The certificate profile it is issued under (`root-ca`, `issuing-ca`).
    pub profile: String,
    /// Label of its key in the key store.
    pub key_label: String,
    /// Key kind: `ecdsa-p256`, `ecdsa-p384`, `rsa-BITS` or `rsa-pss-BITS`
    /// (BITS 2048, 3072 or 4096).
    pub key: String,
    /// The subject's commonName.
    pub common_name: String,
    /// The subject's organizationName; the mTLS listener's certificate
    /// carries the issuing CA's.
    pub organization: String,
    /// The subject's countryName, two letters.
    pub country: String,
}

/// `[ceremony]`: the two CAs `muhr ca init` creates. The defaults make the
/// development CAs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CeremonyConfig {
    /// `[ceremony.root]`: the self-signed root (default ECDSA P-384).
    pub root: CaConfig,
    /// `[ceremony.issuing]`: certified by the root; it signs end-entity
    /// certificates (default ECDSA P-256).
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

    /// Reads and checks the file: an unknown key, a malformed value or one
    /// out of range is refused, the message starting with the file's path.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let c: Self =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        c.audit
            .validate()
            .and_then(|_| c.server.limits.validate())
            .and_then(|_| c.notices.as_ref().map_or(Ok(()), |n| n.validate()))
            .and_then(|_| c.registry.check())
            .and_then(|_| c.tsa.validate().map(|_| ()))
            .and_then(|_| match (&c.portal, &c.citizens) {
                (Some(_), None) => Err("portal: needs [citizens] (its identity provider and \
                                        profiles)"
                    .into()),
                (Some(p), Some(_)) => p.validate(),
                _ => Ok(()),
            })
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

//! Puts the configured pieces together: data directory, database, key store,
//! profiles and, on demand, the CA. Each command asks for what it needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use const_oid::ObjectIdentifier;
use muhr_ca::audit_anchor::AuditSigner;
use muhr_ca::ceremony::{CaSpec, Ceremony};
use muhr_ca::{Ca, IssuancePolicy, UrlTemplates};
use muhr_hsm::KeyStore;
use muhr_hsm::pkcs11::{Pkcs11Config, Pkcs11Store};
use muhr_hsm::software::SoftwareStore;
use muhr_policies::Profiles;
use muhr_store::Store;
use zeroize::Zeroizing;

use crate::Fail;
use crate::config::{Backend, Config, secret};

/// An opened installation: what every command that works on one needs. The
/// CA is opened only on demand, by [`App::ca`].
pub struct App {
    /// As loaded from `--config`, or the development defaults.
    pub config: Config,
    /// `--data`, else the configuration's `data_dir`, else [`DEFAULT_DATA_DIR`].
    pub data_dir: PathBuf,
    /// No configuration file: development defaults, created on first use.
    pub dev: bool,
    /// The database (`[database]`).
    pub store: Store,
    /// The key store (`[key_store]`), software or PKCS#11.
    pub keys: Arc<dyn KeyStore>,
    /// The certificate profiles: `policies.dir`, else the built-in set.
    pub profiles: Arc<Profiles>,
    /// URLs, policy OIDs, backdating and CRL shards from the configuration,
    /// checked against the profiles.
    pub policy: IssuancePolicy,
}

/// The data directory when neither `--data` nor `data_dir` names one.
pub const DEFAULT_DATA_DIR: &str = "./muhr-data";

impl App {
    /// Opens the installation: `config_path` is `--config` (None: development
    /// defaults), `data_override` is `--data`. Refuses a data directory, or a
    /// secret outside it, that others can read; makes the directory (mode
    /// 0700) when it is missing; opens the key store and the database.
    pub async fn load(
        config_path: Option<&Path>,
        data_override: Option<&Path>,
    ) -> Result<Self, Fail> {
        Self::load_inner(config_path, data_override, false).await
    }

    /// As [`App::load`], for `muhr-bench`: before it writes anything (a
    /// migration, a key, a passphrase file), it refuses a database that
    /// holds real certificates, and a data directory that is not empty and
    /// not a benchmark's (`--data REAL --database EMPTY` would otherwise
    /// put benchmark keys beside the real ones). A directory it accepts
    /// gets the [`BENCHMARK_MARKER`] file.
    pub async fn load_for_benchmark(
        config_path: Option<&Path>,
        data_override: Option<&Path>,
    ) -> Result<Self, Fail> {
        Self::load_inner(config_path, data_override, true).await
    }

    async fn load_inner(
        config_path: Option<&Path>,
        data_override: Option<&Path>,
        benchmark: bool,
    ) -> Result<Self, Fail> {
        let (config, dev) = match config_path {
            Some(p) => (Config::load(p).map_err(Fail::invalid)?, false),
            None => (Config::development(), true),
        };
        let data_dir = data_override
            .map(Path::to_path_buf)
            .or_else(|| config.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        refuse_shared_secrets(&config, &data_dir)?;
        if benchmark {
            refuse_real_for_benchmark(&config, &data_dir).await?;
        }
        if data_dir.exists() {
            refuse_shared(&data_dir)?;
        } else {
            std::fs::create_dir_all(&data_dir).map_err(|e| {
                Fail::invalid(format!("data directory {}: {e}", data_dir.display()))
            })?;
            owner_only(&data_dir, 0o700)?;
        }
        let profiles = match &config.policies.dir {
            Some(dir) => Profiles::load_dir(dir),
            None => Profiles::builtin(),
        }
        .map_err(|e| Fail::invalid(format!("invalid certificate profile: {e}")))?;
        let policy = policy(&config, &profiles)?;
        let keys = key_store(&config, &data_dir)?;
        let url = database_url(&config, &data_dir)?;
        let wait = std::time::Duration::from_millis(config.database.acquire_timeout_ms);
        let store = Store::connect_with(&url, wait)
            .await
            .map_err(|e| Fail::invalid(format!("database: {e}")))?;
        Ok(Self {
            config,
            data_dir,
            dev,
            store,
            keys,
            profiles: Arc::new(profiles),
            policy,
        })
    }

    /// The two CAs of `[ceremony]`, as the key ceremony takes them; fails on
    /// an unknown key kind.
    pub fn ceremony(&self) -> Result<Ceremony, Fail> {
        let spec = |c: &crate::config::CaConfig| -> Result<CaSpec, Fail> {
            Ok(CaSpec {
                profile: c.profile.clone(),
                key_label: c.key_label.clone(),
                key_spec: c
                    .key
                    .parse()
                    .map_err(|e: muhr_hsm::HsmError| Fail::invalid(format!("ceremony: {e}")))?,
                common_name: c.common_name.clone(),
                organization: c.organization.clone(),
                country: c.country.clone(),
            })
        };
        Ok(Ceremony {
            root: spec(&self.config.ceremony.root)?,
            issuing: spec(&self.config.ceremony.issuing)?,
        })
    }

    /// Runs the key ceremony.
    pub async fn init_ca(&self, actor: &str) -> Result<muhr_ca::ceremony::Outcome, Fail> {
        let ceremony = self.ceremony()?;
        muhr_ca::ceremony::init(
            &self.store,
            self.keys.as_ref(),
            &self.profiles,
            &self.policy,
            &ceremony,
            &self.data_dir,
            actor,
        )
        .await
        .map_err(Fail::from)
    }

    /// Opens the CA. With no configuration and no CA yet, creates the
    /// development CA first and says so. Finishes any interrupted issuance.
    pub async fn ca(&self) -> Result<Ca, Fail> {
        if self.dev
            && self
                .store
                .authority_count()
                .await
                .map_err(|e| Fail::internal(e.to_string()))?
                == 0
        {
            self.init_ca("dev-default").await?;
            self.audit_signer(true, "dev-default").await?;
            eprintln!(
                "muhr: no configuration given: created a development CA in {} (software keys, SQLite). Not for production.",
                self.data_dir.display()
            );
        }
        let ca = Ca::open(
            self.store.clone(),
            self.keys.as_ref(),
            self.profiles.clone(),
            self.policy.clone(),
        )
        .await?;
        let min_age = Duration::from_secs(self.config.issuance.recovery_min_age_seconds);
        let recovered = ca.recover(min_age).await?;
        if recovered > 0 {
            tracing::info!(
                recovered,
                "finished certificates left pending by an interrupted run"
            );
        }
        Ok(ca)
    }
}

impl App {
    /// This node's record of the checkpoints it signed.
    pub fn local_checkpoints(&self) -> PathBuf {
        self.data_dir.join("audit").join("checkpoints.jsonl")
    }

    /// Where the ceremony leaves the audit key's public half, for offline
    /// verifiers of an export.
    pub fn audit_public_key_file(&self) -> PathBuf {
        self.data_dir.join("ca").join("audit-key.pem")
    }

    /// The audit key's signer: opened, or, with `create`, made now (a key
    /// generation is itself an audited act). None when the key is absent
    /// and not to be made.
    pub async fn audit_signer(
        &self,
        create: bool,
        actor: &str,
    ) -> Result<Option<Arc<AuditSigner>>, Fail> {
        let label = &self.config.audit.key;
        let spec = muhr_ca::audit_anchor::KEY_SPEC;
        let key = match self.keys.open(label, spec) {
            Ok(k) => k,
            Err(muhr_hsm::HsmError::NotFound(_)) if create => {
                // A chain already anchored to a key this store lacks needs
                // that key brought here, not a second one: two keys would
                // make two anchors that refuse each other.
                if let Some(c) = self
                    .store
                    .last_checkpoint()
                    .await
                    .map_err(|e| Fail::internal(e.to_string()))?
                {
                    return Err(Fail::invalid(format!(
                        "refused: the audit chain is anchored to audit key {} (checkpoint at \
                         entry {}), which is not in this key store: give this node that key \
                         rather than making another",
                        c.key_id, c.seq
                    )));
                }
                let k = self
                    .keys
                    .generate(label, spec)
                    .map_err(|e| Fail::internal(format!("audit key {label:?}: {e}")))?;
                let key_id = muhr_ca::audit_anchor::key_id(k.public_key())?;
                self.store
                    .audit(&[&muhr_store::AuditEvent {
                        actor: actor.to_string(),
                        action: "key.generate".into(),
                        object: label.clone(),
                        details: serde_json::json!({
                            "purpose": "audit checkpoints",
                            "spec": spec.to_string(),
                            "key_id": key_id,
                        }),
                    }])
                    .await
                    .map_err(|e| Fail::internal(e.to_string()))?;
                tracing::info!(%label, %key_id, "made the audit key");
                k
            }
            Err(muhr_hsm::HsmError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(Fail::internal(format!("audit key {label:?}: {e}"))),
        };
        let pem_path = self.audit_public_key_file();
        if !pem_path.exists() {
            let der =
                der::Encode::to_der(key.public_key()).map_err(|e| Fail::internal(e.to_string()))?;
            let pem = muhr_pkix::pem::encode("PUBLIC KEY", &der);
            if let Some(dir) = pem_path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Fail::internal(format!("{}: {e}", dir.display())))?;
            }
            std::fs::write(&pem_path, pem)
                .map_err(|e| Fail::internal(format!("{}: {e}", pem_path.display())))?;
        }
        Ok(Some(Arc::new(AuditSigner::new(
            key,
            Some(self.local_checkpoints()),
        )?)))
    }

    /// Signs a checkpoint of the chain now, when this node has the audit
    /// key; what a command that appended entries does before it exits.
    pub async fn anchor_audit(&self) {
        match self.audit_signer(false, "").await {
            Ok(Some(s)) => {
                if let Err(e) = s.checkpoint(&self.store).await {
                    tracing::warn!(error = %e, "audit checkpoint failed");
                }
            }
            Ok(None) => tracing::warn!(
                key = %self.config.audit.key,
                "no audit key here: the entries just appended are anchored by the next node that has it"
            ),
            Err(e) => tracing::warn!(error = %e.message, "audit key unavailable"),
        }
    }
}

fn policy(config: &Config, profiles: &Profiles) -> Result<IssuancePolicy, Fail> {
    let mut policy_oids = std::collections::BTreeMap::new();
    for (profile, oids) in &config.issuance.policy_oids {
        if profiles.get(profile).is_none() {
            return Err(Fail::invalid(format!(
                "issuance.policy_oids names unknown profile {profile:?}"
            )));
        }
        let parsed = oids
            .iter()
            .map(|o| {
                ObjectIdentifier::new(o).map_err(|_| {
                    Fail::invalid(format!(
                        "issuance.policy_oids.{profile}: {o:?} is not an OID"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        policy_oids.insert(profile.clone(), parsed);
    }
    if config.crl.shards > 4096 {
        return Err(Fail::invalid(format!(
            "crl.shards: {} is more than 4096 CRL shards",
            config.crl.shards
        )));
    }
    if !config.urls.crl.contains("{crl}") {
        return Err(Fail::invalid(format!(
            "urls.crl: {:?} must contain {{crl}}, which becomes each CRL's name \
             (issuing, issuing-7, issuing-delta, ...): whole, shard and delta CRLs each need their own URL",
            config.urls.crl
        )));
    }
    let base = config.urls.base.trim_end_matches('/');
    let url = |t: &str| Some(t.replace("{base}", base));
    Ok(IssuancePolicy {
        urls: UrlTemplates {
            crl: url(&config.urls.crl),
            ocsp: url(&config.urls.ocsp),
            ca_issuers: url(&config.urls.ca_issuers),
        },
        policy_oids,
        backdate: Duration::from_secs(config.issuance.backdate_seconds),
        crl_shards: config.crl.shards,
    })
}

/// The file that marks a data directory as a benchmark's own.
pub const BENCHMARK_MARKER: &str = "MUHR-BENCH";

/// See [`App::load_for_benchmark`].
async fn refuse_real_for_benchmark(config: &Config, data_dir: &Path) -> Result<(), Fail> {
    let marked_dir = data_dir.join(BENCHMARK_MARKER).is_file();
    let empty_dir = std::fs::read_dir(data_dir).map_or(true, |mut d| d.next().is_none());
    let url = database_url_unchecked(config, data_dir)?;
    // A SQLite file that does not exist yet is a new database: nothing to
    // read, and connecting would create it before the directory check.
    let sqlite_file = sqlite_path(&url, data_dir);
    // An immutable read skips the write-ahead log: a database with one not
    // yet checkpointed (in use, or a benchmark killed mid-run) is read
    // read-only instead, which reads the log (SQLite may then make its
    // shared-memory file beside it; nothing of the data is written).
    let url = match &sqlite_file {
        Some(p) if std::fs::metadata(format!("{}-wal", p.display())).is_ok_and(|m| m.len() > 0) => {
            format!("sqlite://{}?mode=ro", p.display())
        }
        _ => url,
    };
    let probe = match sqlite_file {
        Some(p) if !p.exists() => muhr_store::benchmark::BenchmarkProbe::Empty,
        _ => muhr_store::benchmark::probe_for_benchmark(&url)
            .await
            .map_err(|e| Fail::invalid(format!("database: {e}")))?,
    };
    use muhr_store::benchmark::BenchmarkProbe::*;
    match probe {
        Real => {
            return Err(Fail::invalid(
                "refused: this database holds real certificates (it was not made by \
                 muhr-bench); benchmarks run only on a database of their own",
            ));
        }
        Empty if !empty_dir && !marked_dir => {
            return Err(Fail::invalid(format!(
                "refused: the data directory {} is not empty and was not made by muhr-bench; \
                 benchmarks run only in a directory of their own",
                data_dir.display()
            )));
        }
        _ => {}
    }
    if !marked_dir {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| Fail::invalid(format!("data directory {}: {e}", data_dir.display())))?;
        owner_only(data_dir, 0o700)?;
        std::fs::write(
            data_dir.join(BENCHMARK_MARKER),
            "made by muhr-bench: a throw-away installation; muhr refuses its database\n",
        )
        .map_err(|e| Fail::invalid(format!("data directory {}: {e}", data_dir.display())))?;
    }
    Ok(())
}

/// The SQLite file a `sqlite://` URL names, relative paths under the data directory.
fn sqlite_path(url: &str, data_dir: &Path) -> Option<PathBuf> {
    let path = url.strip_prefix("sqlite://")?;
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    Some(if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        data_dir.join(path)
    })
}

/// The URL as configured (`url`, or the variable `url_env` names).
fn configured_url(config: &Config) -> Result<String, Fail> {
    match &config.database.url_env {
        Some(var) => std::env::var(var).map_err(|_| {
            Fail::invalid(format!(
                "database.url_env: environment variable {var} is not set"
            ))
        }),
        None => config
            .database
            .url
            .clone()
            .ok_or_else(|| Fail::invalid("database: set url or url_env")),
    }
}

/// The configured URL for the benchmark's probe, without creating or
/// checking anything.
fn database_url_unchecked(config: &Config, data_dir: &Path) -> Result<String, Fail> {
    let url = configured_url(config)?;
    // SQLite is opened read-only and immutable: the probe writes nothing,
    // not even the WAL's shared-memory file. (A WAL not yet checkpointed is
    // not read; the data directory's own check still refuses a real one.)
    Ok(match sqlite_path(&url, data_dir) {
        Some(full) => format!("sqlite://{}?mode=ro&immutable=true", full.display()),
        None => url,
    })
}

fn database_url(config: &Config, data_dir: &Path) -> Result<String, Fail> {
    let url = configured_url(config)?;
    if let Some(path) = url.strip_prefix("sqlite://") {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let full = if Path::new(path).is_absolute() {
            PathBuf::from(path)
        } else {
            data_dir.join(path)
        };
        sqlite_owner_only(&full)?;
        let query = if query.is_empty() {
            "mode=rwc".to_string()
        } else {
            query.to_string()
        };
        return Ok(format!("sqlite://{}?{query}", full.display()));
    }
    Ok(url)
}

/// Every file and folder this process makes is its owner's alone (umask
/// 077): the database and its journals, keys, TLS keys, CRLs, audit
/// checkpoints, PKCS#12 files. Called first thing in `main`.
pub fn private_files() {
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Refuses a data directory that others can read or enter, or that holds
/// such a file or folder (links followed, to any depth), naming the command
/// that closes it (as OpenSSH does with its keys): the directory holds
/// people's personal data, software keys and the login challenge key.
/// Nothing is changed silently: an operator who opened it did so for a
/// reason worth hearing.
fn refuse_shared(dir: &Path) -> Result<(), Fail> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| -> Result<u32, Fail> {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .map_err(|e| Fail::invalid(format!("{}: {e}", p.display())))
    };
    let refuse = |p: &Path, m: u32| {
        Fail::invalid(format!(
            "refused: {} is readable by others (mode {m:o}); the data directory holds \
             personal data and keys. Close it with: chmod -R go-rwx {}",
            p.display(),
            dir.display()
        ))
    };
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = mode(&d)?;
        if m & 0o077 != 0 {
            return Err(refuse(&d, m));
        }
        // A link back up the tree is looked at once.
        let Ok(real) = std::fs::canonicalize(&d) else {
            continue;
        };
        if !seen.insert(real) {
            continue;
        }
        let entries =
            std::fs::read_dir(&d).map_err(|e| Fail::invalid(format!("{}: {e}", d.display())))?;
        for e in entries.flatten() {
            let p = e.path();
            match std::fs::metadata(&p) {
                Ok(md) if md.is_dir() => stack.push(p),
                Ok(md) => {
                    let m = md.permissions().mode() & 0o777;
                    if m & 0o077 != 0 {
                        return Err(refuse(&p, m));
                    }
                }
                // A dangling link holds nothing.
                Err(_) => {}
            }
        }
    }
    Ok(())
}

/// Refuses a configured secret (PIN, passphrase, TLS key, an SQLite
/// database) kept outside the data directory where others can read it.
fn refuse_shared_secrets(config: &Config, data_dir: &Path) -> Result<(), Fail> {
    use std::os::unix::fs::PermissionsExt;
    let ks = &config.key_store;
    // Each path resolved as the code that reads it does: the passphrase
    // file and an SQLite database relative to the data directory, the PIN
    // file and the TLS key relative to the working directory.
    let in_data = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            data_dir.join(p)
        }
    };
    let mut files: Vec<PathBuf> = [ks.pin_file.as_deref(), config.server.tls_key.as_deref()]
        .into_iter()
        .flatten()
        .map(Path::to_path_buf)
        .collect();
    files.extend(ks.passphrase_file.as_deref().map(in_data));
    let url = match &config.database.url_env {
        Some(var) => std::env::var(var).ok(),
        None => config.database.url.clone(),
    };
    if let Some(url) = url
        && let Some(path) = url.strip_prefix("sqlite://")
    {
        let path = path.split('?').next().unwrap_or(path);
        if !path.is_empty() && !path.starts_with(':') {
            let db = in_data(Path::new(path));
            for suffix in ["-wal", "-shm", "-journal"] {
                files.push(PathBuf::from(format!("{}{suffix}", db.display())));
            }
            files.push(db);
        }
    }
    // What is inside the data directory, its own check covers.
    let data = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    for f in files.into_iter().filter(|f| {
        !std::fs::canonicalize(f)
            .unwrap_or_else(|_| f.clone())
            .starts_with(&data)
    }) {
        if let Ok(md) = std::fs::metadata(&f) {
            let m = md.permissions().mode() & 0o777;
            if m & 0o077 != 0 {
                return Err(Fail::invalid(format!(
                    "refused: {} is readable by others (mode {m:o}) and holds a secret or \
                     personal data. Close it with: chmod go-rwx {}",
                    f.display(),
                    f.display()
                )));
            }
        }
    }
    Ok(())
}

/// Sets `path`'s permission bits (Unix): the data directory holds people's
/// personal data and the login challenge key.
fn owner_only(path: &Path, mode: u32) -> Result<(), Fail> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Fail::invalid(format!("{}: {e}", path.display())))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// An SQLite database, and the journal files SQLite makes beside it with
/// the database's own permissions, readable by their owner only: the file
/// is made 0600 before SQLite first opens it, and an older one is made so.
fn sqlite_owner_only(db: &Path) -> Result<(), Fail> {
    if !db.exists() {
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Fail::invalid(format!("{}: {e}", dir.display())))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(db) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Fail::invalid(format!("{}: {e}", db.display()))),
        }
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let f = PathBuf::from(format!("{}{suffix}", db.display()));
        if f.exists() {
            owner_only(&f, 0o600)?;
        }
    }
    Ok(())
}

fn key_store(config: &Config, data_dir: &Path) -> Result<Arc<dyn KeyStore>, Fail> {
    let ks = &config.key_store;
    let rel = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            data_dir.join(p)
        }
    };
    match ks.backend {
        Backend::Software => {
            let dir = rel(ks.dir.as_deref().unwrap_or(Path::new("keys")));
            let file = ks.passphrase_file.as_deref().map(rel);
            if ks.generate_passphrase
                && let Some(f) = &file
                && !f.exists()
            {
                create_passphrase(f)?;
            }
            let pass = secret(
                "key_store passphrase",
                ks.passphrase_env.as_deref(),
                file.as_deref(),
            )
            .map_err(Fail::invalid)?;
            Ok(Arc::new(
                SoftwareStore::new(dir, pass).map_err(|e| Fail::invalid(e.to_string()))?,
            ))
        }
        Backend::Pkcs11 => {
            let pin = secret(
                "key_store PIN",
                ks.pin_env.as_deref(),
                ks.pin_file.as_deref(),
            )
            .map_err(Fail::invalid)?;
            let store = Pkcs11Store::new(Pkcs11Config {
                module: ks
                    .module
                    .clone()
                    .unwrap_or_else(|| "/usr/lib/softhsm/libsofthsm2.so".into()),
                token_label: ks
                    .token_label
                    .clone()
                    .ok_or_else(|| Fail::invalid("key_store.token_label is required for pkcs11"))?,
                pin,
                sessions: ks.sessions.unwrap_or(4),
                copy_keys_to_session: ks.copy_keys_to_session.unwrap_or(true),
                key_recheck: KEY_RECHECK,
                retry: std::time::Duration::from_secs(ks.retry_seconds.unwrap_or(2).clamp(1, 300)),
            })
            .map_err(|e| Fail::invalid(e.to_string()))?;
            Ok(Arc::new(store))
        }
    }
}

/// How stale a session's knowledge that the CA key is still in the token may be.
const KEY_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Development only: a random passphrase for the software key store, owner-readable.
fn create_passphrase(path: &Path) -> Result<(), Fail> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(bytes.as_mut()).map_err(|_| Fail::internal("random generator failed"))?;
    let text = Zeroizing::new(hex::encode(bytes.as_ref()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Fail::invalid(format!("{}: {e}", dir.display())))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Fail::invalid(format!("{}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Fail::invalid(format!("{}: {e}", path.display())))
}

/// The district list: the configured file, else the compiled-in one.
pub fn districts(config: &Config) -> Result<muhr_policies::Districts, Fail> {
    match &config.personalization.districts_file {
        Some(p) => muhr_policies::Districts::load(p),
        None => muhr_policies::Districts::builtin(),
    }
    .map_err(|e| Fail::invalid(format!("districts: {e}")))
}

impl App {
    /// The RA's rules, checked against the loaded profiles.
    pub fn ra_rules(&self) -> Result<muhr_ra::Rules, Fail> {
        muhr_ra::Rules::new(
            self.config.identity.clone(),
            districts(&self.config)?,
            self.config.personalization.clone(),
            self.profiles.clone(),
        )
        .map_err(Fail::invalid)
    }
}

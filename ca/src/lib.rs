//! The certification authority: it signs what it is given, after recording the
//! intent and linting the result. Deciding *whether* someone gets a certificate
//! (identity, policy, idempotency) is the RA's business; here a request is
//! already approved, and the only refusals are for requests no profile allows.
//!
//! Issuance, for each certificate:
//! 1. build the to-be-signed bytes from the profile (subject, extensions, URLs);
//! 2. lint them (RFC 5280 and the profile); a finding stops everything;
//! 3. commit the intent (serial, profile, subject, TBS) to the database;
//! 4. sign with the key store; verify the signature with the issuer's public key;
//! 5. commit the certificate together with its audit entry, then return it.
//!
//! A crash between 3 and 5 leaves a pending intent; [`Ca::recover`] signs the
//! recorded bytes again at the next start, so nothing is lost or issued twice.
//!
//! It must never decide who a person is or whether they may have a
//! certificate, and knows nothing of cards or citizens: a caller that needs
//! something recorded with the certificates passes it as opaque data
//! ([`recording`], [`muhr_store::JobLink`]). It touches keys only through
//! `muhr_hsm`.

#![forbid(unsafe_code)]

pub mod alt_name;
pub mod audit_anchor;
pub mod build;
pub mod ceremony;
pub mod crl;
pub mod csr;
pub mod dual_control;
pub mod goodkey;

pub mod lint;
pub mod metrics;
pub mod ocsp_signer;
pub mod recording;
pub mod revocation;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use muhr_hsm::{KeySigner, KeySpec, KeyStore};
use muhr_policies::{Kind, Profile, Profiles};
use muhr_store::{AuditEvent, Intent, Store};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;

use build::{IssuerUrls, IssuerView, TbsInput};
pub use metrics::Metrics;
pub use muhr_policies::identity::FieldError;
pub use recording::Recording;

/// Names of the two authorities a ceremony creates.
pub const ROOT: &str = "root";
pub const ISSUING: &str = "issuing";

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The request cannot be satisfied as it is; nothing was written.
    #[error("{0}")]
    Refused(#[from] FieldError),
    #[error("database: {0}")]
    Store(#[from] muhr_store::StoreError),
    #[error("key store: {0}")]
    Key(#[from] muhr_hsm::HsmError),
    /// The request's card job already has a certificate in this role, recorded
    /// by another request; this one signed nothing.
    #[error("card job {job} already has its {role} certificate")]
    AlreadyIssued { job: String, role: String },
    #[error("{0}")]
    Internal(String),
}

/// A status change, checked and ready to record.
pub(crate) struct StatusPlan {
    serial: String,
    ca_certificate: bool,
    action: &'static str,
    reason: Option<&'static str>,
    profile: String,
    issuer: String,
}

impl StatusPlan {
    fn event(&self, actor: &str, extra: serde_json::Value) -> AuditEvent {
        let mut details = serde_json::json!({
            "reason": self.reason,
            "profile": self.profile,
            "issuer": self.issuer,
        });
        if let (Some(d), serde_json::Value::Object(x)) = (details.as_object_mut(), extra) {
            d.extend(x);
        }
        AuditEvent {
            actor: actor.to_string(),
            action: self.action.into(),
            object: self.serial.clone(),
            details,
        }
    }
}

fn refused(field: &str, rule: impl Into<String>) -> IssueError {
    IssueError::Refused(FieldError {
        field: field.to_string(),
        rule: rule.into(),
    })
}

/// Where relying parties find CRLs, OCSP and CA certificates. `{ca}` in a
/// template is replaced by the issuing CA's name; `{crl}` in the CRL template
/// by a CRL's name (`crl::name`), which begins with the CA's name.
#[derive(Clone, Debug, Default)]
pub struct UrlTemplates {
    pub crl: Option<String>,
    pub ocsp: Option<String>,
    pub ca_issuers: Option<String>,
}

impl UrlTemplates {
    pub fn for_ca(&self, ca: &str) -> IssuerUrls {
        let fill = |t: &Option<String>| t.as_ref().map(|t| t.replace("{ca}", ca));
        IssuerUrls {
            ca: ca.to_string(),
            crl: fill(&self.crl),
            ocsp: fill(&self.ocsp),
            ca_issuers: fill(&self.ca_issuers),
        }
    }
}

/// What the configuration decides about issuance.
#[derive(Clone, Debug, Default)]
pub struct IssuancePolicy {
    pub urls: UrlTemplates,
    /// certificatePolicies OIDs per profile name.
    pub policy_oids: BTreeMap<String, Vec<ObjectIdentifier>>,
    /// How far notBefore is set back to tolerate relying parties' clock skew.
    pub backdate: Duration,
    /// CRL shards the issuing CA spreads its certificates over (0: none;
    /// they all point to the whole CRL).
    pub crl_shards: u32,
}

/// A CA certificate and, when loaded, its key.
pub struct Authority {
    pub name: String,
    pub certificate: Certificate,
    pub der: Vec<u8>,
    pub key_id: Vec<u8>,
    pub signer: Option<Arc<dyn KeySigner>>,
    pub urls: IssuerUrls,
}

impl Authority {
    pub fn from_der(
        name: &str,
        der: Vec<u8>,
        signer: Option<Arc<dyn KeySigner>>,
        urls: IssuerUrls,
    ) -> Result<Self, String> {
        let certificate =
            Certificate::from_der(&der).map_err(|e| format!("CA certificate {name}: {e}"))?;
        let key_id = certificate
            .tbs_certificate()
            .get_extension::<SubjectKeyIdentifier>()
            .ok()
            .flatten()
            .map(|(_, ski)| ski.0.as_bytes().to_vec())
            .unwrap_or_else(|| {
                build::key_identifier(certificate.tbs_certificate().subject_public_key_info())
            });
        if let Some(s) = &signer
            && s.public_key() != certificate.tbs_certificate().subject_public_key_info()
        {
            return Err(format!(
                "key {:?} does not match the {name} CA certificate",
                s.label()
            ));
        }
        Ok(Self {
            name: name.to_string(),
            certificate,
            der,
            key_id,
            signer,
            urls,
        })
    }

    fn view(&self) -> Result<IssuerView<'_>, IssueError> {
        let tbs = self.certificate.tbs_certificate();
        let signer = self.signer.as_ref().ok_or_else(|| {
            IssueError::Internal(format!("the {} CA key is not loaded", self.name))
        })?;
        Ok(IssuerView {
            name: tbs.subject().clone(),
            key_id: self.key_id.clone(),
            spki: tbs.subject_public_key_info(),
            signature_algorithm: signer.signature_algorithm(),
            not_before: tbs.validity().not_before.to_system_time(),
            not_after: tbs.validity().not_after.to_system_time(),
            urls: &self.urls,
        })
    }

    pub fn pem(&self) -> String {
        muhr_pkix::pem::certificate(&self.der)
    }
}

/// An approved request for one certificate.
#[derive(Clone, Debug)]
pub struct Request {
    pub profile: String,
    /// Subject fields, already checked (see [`muhr_policies::identity`]).
    pub fields: BTreeMap<String, String>,
    pub public_key: SubjectPublicKeyInfoOwned,
    /// The certificate must not outlive this (e.g. the identity document).
    pub not_after_limit: Option<SystemTime>,
    /// subjectAltName entries, for profiles that allow them.
    pub alt_names: Vec<alt_name::AltName>,
    /// Who asked, for the audit chain ("cli:root", "line:LINE-01").
    pub actor: String,
    /// The RA card job and role this certificate is for: the database lets
    /// each (job, role) be issued once.
    pub job: Option<muhr_store::JobLink>,
}

#[derive(Clone, Debug)]
pub struct Issued {
    pub serial: String,
    pub profile: String,
    pub der: Vec<u8>,
}

impl Issued {
    /// The certificate decoded. Decoded on demand: the personalization line
    /// and most callers only pass the DER on, and decoding every certificate
    /// issued cost more than its encoding.
    pub fn certificate(&self) -> der::Result<Certificate> {
        Certificate::from_der(&self.der)
    }

    pub fn pem(&self) -> String {
        muhr_pkix::pem::certificate(&self.der)
    }
}

/// A certificate fully decided, waiting for the key.
struct Prepared {
    intent: Intent,
    profile: String,
    signer: Arc<dyn KeySigner>,
    issuer_spki: SubjectPublicKeyInfoOwned,
    actor: String,
}

/// A to-be-signed certificate and what the database records about it.
pub(crate) struct PreparedTbs {
    pub tbs: Vec<u8>,
    pub serial: x509_cert::serial_number::SerialNumber,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub subject: String,
    pub crl_shard: Option<u32>,
}

/// Shared by normal issuance and the key ceremony. `crl_shards` is how many
/// CRL shards the issuer spreads its certificates over (0: none).
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare(
    profile: &Profile,
    fields: &BTreeMap<String, String>,
    public_key: SubjectPublicKeyInfoOwned,
    issuer: Option<&IssuerView<'_>>,
    self_signer: Option<&Arc<dyn KeySigner>>,
    policy: &IssuancePolicy,
    not_after_limit: Option<SystemTime>,
    crl_shards: u32,
    alt_names: &[alt_name::AltName],
) -> Result<PreparedTbs, IssueError> {
    for n in alt_names {
        if !profile.subject_alt_names.contains(&n.kind()) {
            return Err(refused(
                "alt_names",
                format!("profile {} does not allow {n:?}", profile.name),
            ));
        }
    }
    if !profile.subject_alt_names.is_empty() && alt_names.is_empty() {
        return Err(refused(
            "alt_names",
            format!(
                "profile {} needs at least one subjectAltName ({:?})",
                profile.name, profile.subject_alt_names
            ),
        ));
    }
    goodkey::check(&public_key, &profile.keys).map_err(|rule| refused("public_key", rule))?;
    let subject = build::subject_name(profile, fields)?;
    let now = build::whole_seconds(SystemTime::now());
    let mut not_before = now.checked_sub(policy.backdate).unwrap_or(now);
    let mut not_after = build::add_validity(not_before, profile.validity)
        .ok_or_else(|| IssueError::Internal("validity overflows".into()))?;
    if let Some(i) = issuer {
        not_before = not_before.max(i.not_before);
        not_after = not_after.min(i.not_after);
    }
    if let Some(limit) = not_after_limit {
        not_after = not_after.min(build::whole_seconds(limit));
    }
    if not_after <= now {
        return Err(refused(
            "not_after",
            "the certificate would already be expired",
        ));
    }
    let oids = policy
        .policy_oids
        .get(&profile.name)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let serial = muhr_pkix::serial::generate().map_err(IssueError::Internal)?;
    let crl_shard = crl::shard::of(serial.as_bytes(), crl_shards);
    let extensions = build::extensions(profile, &public_key, issuer, oids, crl_shard, alt_names)
        .map_err(|e| IssueError::Internal(format!("extensions: {e}")))?;
    let subject_text = muhr_pkix::dn_text::to_string(&subject);
    let tbs = build::to_be_signed(TbsInput {
        serial: serial.clone(),
        not_before,
        not_after,
        subject,
        subject_key: public_key,
        extensions,
        issuer,
        self_signature_algorithm: self_signer.map(|s| s.signature_algorithm()),
    })
    .map_err(IssueError::Internal)?;
    let findings = lint::lint(&tbs, profile, issuer);
    if !findings.is_empty() {
        return Err(IssueError::Internal(format!(
            "lint refused the certificate: {}",
            findings.join("; ")
        )));
    }
    Ok(PreparedTbs {
        tbs,
        serial,
        not_before,
        not_after,
        subject: subject_text,
        crl_shard,
    })
}

pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

type SignTask = tokio::task::JoinHandle<Result<Vec<u8>, IssueError>>;

/// Starts signing recorded TBS bytes on the blocking pool (the key store may
/// block on an HSM), checking the signature before building the certificate.
fn spawn_sign(
    signer: Arc<dyn KeySigner>,
    issuer_spki: SubjectPublicKeyInfoOwned,
    tbs: Vec<u8>,
    metrics: Option<Arc<Metrics>>,
) -> SignTask {
    tokio::task::spawn_blocking(move || sign_one(&*signer, &issuer_spki, &tbs, metrics.as_deref()))
}

/// Signs, checks the signature and assembles the certificate.
fn sign_one(
    signer: &dyn KeySigner,
    issuer_spki: &SubjectPublicKeyInfoOwned,
    tbs: &[u8],
    metrics: Option<&Metrics>,
) -> Result<Vec<u8>, IssueError> {
    let started = Instant::now();
    let sig = signer.sign(tbs)?;
    if let Some(m) = metrics {
        m.signing.observe(started.elapsed());
    }
    let alg = signer.signature_algorithm();
    muhr_hsm::verify::verify_signature(issuer_spki, &alg, tbs, &sig).map_err(|e| {
        IssueError::Internal(format!(
            "the key store returned a signature that does not verify ({e}); nothing issued"
        ))
    })?;
    build::assemble(tbs, &alg, &sig).map_err(|e| IssueError::Internal(format!("assembling: {e}")))
}

/// Signs a group's certificates in as many blocking tasks as the key signs at
/// once, each going through its share in order, and returns the results in
/// the order given. One task per certificate woke a thread for each, most of
/// them only to wait for a session another held.
async fn sign_all(
    items: Vec<(Arc<dyn KeySigner>, SubjectPublicKeyInfoOwned, Vec<u8>)>,
    metrics: Arc<Metrics>,
) -> Vec<Result<Vec<u8>, IssueError>> {
    let Some((first, _, _)) = items.first() else {
        return Vec::new();
    };
    let lanes = first.parallelism().clamp(1, items.len());
    let per_lane = items.len().div_ceil(lanes);
    let mut tasks = Vec::with_capacity(lanes);
    let mut items = items.into_iter();
    loop {
        let lane: Vec<_> = items.by_ref().take(per_lane).collect();
        if lane.is_empty() {
            break;
        }
        let n = lane.len();
        let m = metrics.clone();
        let task = tokio::task::spawn_blocking(move || {
            lane.into_iter()
                .map(|(signer, spki, tbs)| sign_one(&*signer, &spki, &tbs, Some(&m)))
                .collect::<Vec<_>>()
        });
        tasks.push((n, task));
    }
    let mut out = Vec::new();
    for (n, task) in tasks {
        match task.await {
            Ok(results) => out.extend(results),
            Err(e) => {
                out.extend((0..n).map(|_| Err(IssueError::Internal(format!("signing task: {e}")))))
            }
        }
    }
    out
}

async fn finish_sign(task: SignTask) -> Result<Vec<u8>, IssueError> {
    task.await
        .map_err(|e| IssueError::Internal(format!("signing task: {e}")))?
}

fn issue_event(actor: &str, intent: &Intent, der: &[u8]) -> AuditEvent {
    use sha2::Digest;
    AuditEvent {
        actor: actor.to_string(),
        action: "certificate.issue".into(),
        object: intent.serial.clone(),
        details: serde_json::json!({
            "issuer": intent.issuer,
            "profile": intent.profile,
            "subject": intent.subject,
            "not_before": intent.not_before,
            "not_after": intent.not_after,
            "sha256": hex::encode(sha2::Sha256::digest(der)),
        }),
    }
}

pub struct Ca {
    store: Store,
    profiles: Arc<Profiles>,
    policy: IssuancePolicy,
    pub root: Authority,
    pub issuing: Authority,
    pub metrics: Arc<Metrics>,
}

impl Ca {
    /// Loads the CAs a ceremony created and opens the issuing key.
    pub async fn open(
        store: Store,
        keys: &dyn KeyStore,
        profiles: Arc<Profiles>,
        policy: IssuancePolicy,
    ) -> Result<Self, IssueError> {
        let load = |name: &'static str| {
            let store = store.clone();
            async move {
                store.authority(name).await?.ok_or_else(|| {
                    IssueError::Internal(format!(
                        "no {name} CA in the database: run `muhr ca init` first"
                    ))
                })
            }
        };
        let root = load(ROOT).await?;
        let issuing = load(ISSUING).await?;
        let spec: KeySpec = issuing.key_spec.parse()?;
        let signer = keys.open(&issuing.key_label, spec)?;
        // The root key signs only the root CRL; an installation may keep it
        // elsewhere (offline), so its absence is not an error here.
        let root_signer = match keys.open(&root.key_label, root.key_spec.parse()?) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::info!(error = %e, "root CA key not available: the root CRL cannot be signed here");
                None
            }
        };
        let root = Authority::from_der(ROOT, root.der, root_signer, policy.urls.for_ca(ROOT))
            .map_err(IssueError::Internal)?;
        let issuing = Authority::from_der(
            ISSUING,
            issuing.der,
            Some(signer),
            policy.urls.for_ca(ISSUING),
        )
        .map_err(IssueError::Internal)?;
        if policy.crl_shards > 0 {
            if policy.urls.crl.is_none() {
                return Err(IssueError::Internal(
                    "CRL shards need a CRL URL to name them by".into(),
                ));
            }
            // Before the first certificate names a shard, so that CRLs are
            // made for every shard any certificate may point to.
            store
                .record_crl_shards(ISSUING, i64::from(policy.crl_shards))
                .await?;
        }
        Ok(Self {
            store,
            profiles,
            policy,
            root,
            issuing,
            metrics: Arc::new(Metrics::default()),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    fn prepare_request(&self, req: Request) -> Result<Prepared, IssueError> {
        let profile = self.profiles.get(&req.profile).ok_or_else(|| {
            let known: Vec<&str> = self.profiles.names().collect();
            refused(
                "profile",
                format!(
                    "unknown profile {:?} (known: {})",
                    req.profile,
                    known.join(", ")
                ),
            )
        })?;
        if profile.kind == Kind::Ca {
            return Err(refused(
                "profile",
                format!(
                    "{} certificates are made only by the key ceremony",
                    profile.name
                ),
            ));
        }
        let issuer = self.issuing.view()?;
        let pinfl = req.fields.get("pinfl").cloned();
        let p = prepare(
            profile,
            &req.fields,
            req.public_key,
            Some(&issuer),
            None,
            &self.policy,
            req.not_after_limit,
            self.policy.crl_shards,
            &req.alt_names,
        )?;
        Ok(Prepared {
            intent: Intent {
                serial: muhr_pkix::serial::to_hex(&p.serial),
                issuer: ISSUING.to_string(),
                profile: profile.name.clone(),
                subject: p.subject,
                pinfl,
                not_before: unix(p.not_before),
                not_after: unix(p.not_after),
                tbs: p.tbs,
                crl_shard: p.crl_shard.map(i64::from),
                job: req.job,
            },
            profile: profile.name.clone(),
            signer: self
                .issuing
                .signer
                .clone()
                .expect("view() checked the signer"),
            issuer_spki: issuer.spki.clone(),
            actor: req.actor,
        })
    }

    /// Issues one certificate. See the module documentation for the steps.
    pub async fn issue(&self, req: Request) -> Result<Issued, IssueError> {
        self.issue_many(vec![req])
            .await
            .pop()
            .expect("one result per request")
    }

    /// Issues several certificates with one commit for their intents and one for
    /// the results. Each request succeeds or fails on its own; a database failure
    /// fails them all (and nothing is handed out).
    pub async fn issue_many(&self, reqs: Vec<Request>) -> Vec<Result<Issued, IssueError>> {
        self.issue_many_recording(reqs, &recording::Plain).await
    }

    /// [`Ca::issue_many`], with the caller's records joining the two commits
    /// (see [`recording`]).
    pub async fn issue_many_recording(
        &self,
        reqs: Vec<Request>,
        recording: &impl Recording,
    ) -> Vec<Result<Issued, IssueError>> {
        let started = Instant::now();
        let mut results: Vec<Option<Result<Issued, IssueError>>> = Vec::with_capacity(reqs.len());
        let mut prepared = Vec::new();
        for (i, req) in reqs.into_iter().enumerate() {
            match self.prepare_request(req) {
                Ok(p) => {
                    prepared.push((i, p));
                    results.push(None);
                }
                Err(e) => {
                    if let IssueError::Refused(f) = &e {
                        self.metrics.refused(&f.field);
                    }
                    results.push(Some(Err(e)));
                }
            }
        }
        let fail_all = |results: &mut Vec<Option<Result<Issued, IssueError>>>,
                        prepared: &[(usize, Prepared)],
                        msg: String| {
            for (i, _) in prepared {
                results[*i] = Some(Err(IssueError::Internal(msg.clone())));
            }
        };
        if !prepared.is_empty() {
            let intents: Vec<Intent> = prepared.iter().map(|(_, p)| p.intent.clone()).collect();
            let recorded = match recording.record(&self.store, &intents).await {
                Ok(r) => r,
                Err(e) => {
                    fail_all(&mut results, &prepared, format!("recording intent: {e}"));
                    return results.into_iter().map(|r| r.expect("filled")).collect();
                }
            };
            // A job's role recorded by someone else: this request signs nothing.
            let mut kept = Vec::with_capacity(prepared.len());
            for ((i, p), recorded) in prepared.into_iter().zip(recorded) {
                if recorded {
                    kept.push((i, p));
                } else {
                    let link = p.intent.job.clone().unwrap_or(muhr_store::JobLink {
                        job: String::new(),
                        role: String::new(),
                    });
                    results[i] = Some(Err(IssueError::AlreadyIssued {
                        job: link.job,
                        role: link.role,
                    }));
                }
            }
            let prepared = kept;
            let items = prepared
                .iter()
                .map(|(_, p)| {
                    (
                        p.signer.clone(),
                        p.issuer_spki.clone(),
                        p.intent.tbs.clone(),
                    )
                })
                .collect();
            let signed = sign_all(items, self.metrics.clone()).await;
            let mut done = Vec::new();
            let mut commit = Vec::new();
            let mut signed_from: Vec<&Intent> = Vec::new();
            for ((i, p), s) in prepared.iter().zip(signed) {
                match s {
                    Ok(der) => {
                        signed_from.push(&p.intent);
                        commit.push((
                            p.intent.serial.clone(),
                            der.clone(),
                            issue_event(&p.actor, &p.intent, &der),
                        ));
                        done.push((
                            *i,
                            Issued {
                                serial: p.intent.serial.clone(),
                                profile: p.profile.clone(),
                                der,
                            },
                        ));
                    }
                    Err(e) => results[*i] = Some(Err(e)),
                }
            }
            let outcome = recording.complete(&self.store, &commit, &signed_from).await;
            if let Err(muhr_store::StoreError::Conflict(why)) = &outcome {
                // Another request finished one of these very intents first
                // (a retry that found it pending and signed it, as
                // `finish_intent` does): what it stored is what was handed
                // out. Nothing of this commit was stored.
                for (i, issued) in done {
                    results[i] = Some(self.stored_instead(issued, why).await);
                }
            } else if let Err(e) = outcome {
                for (i, _) in &done {
                    results[*i] = Some(Err(IssueError::Internal(format!(
                        "storing certificate: {e}"
                    ))));
                }
            } else {
                let per = started.elapsed() / (done.len().max(1) as u32);
                for (i, issued) in done {
                    self.metrics.issued(&issued.profile);
                    self.metrics.issuance.observe(per);
                    results[i] = Some(Ok(issued));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every request has a result"))
            .collect()
    }

    /// The certificate another request stored for `issued`'s serial (the
    /// one handed out, signed from the same recorded bytes).
    async fn stored_instead(&self, issued: Issued, why: &str) -> Result<Issued, IssueError> {
        match self
            .store
            .certificate(&issued.serial)
            .await?
            .and_then(|r| r.der)
        {
            Some(der) => Ok(Issued { der, ..issued }),
            None => Err(IssueError::Internal(format!("storing certificate: {why}"))),
        }
    }

    /// Finishes intents left pending by a crash: the recorded bytes are signed
    /// again, so the certificate is exactly the one that was being issued.
    ///
    /// Only intents at least `min_age` old are taken (see
    /// [`Store::pending_intents`]); `muhr` passes 30 seconds.
    pub async fn recover(&self, min_age: Duration) -> Result<usize, IssueError> {
        let pending = self.store.pending_intents(min_age.as_secs() as i64).await?;
        let mut n = 0;
        for intent in pending {
            if intent.issuer != ISSUING {
                tracing::warn!(serial = %intent.serial, issuer = %intent.issuer, "pending intent of a CA whose key is not loaded; left pending");
                continue;
            }
            let serial = intent.serial.clone();
            self.finish_intent(intent, "recovery").await?;
            tracing::info!(%serial, "finished a certificate left pending by an interrupted issuance");
            n += 1;
        }
        Ok(n)
    }

    /// Signs a recorded intent exactly as recorded and stores the certificate.
    /// Used by recovery and by an RA retry that finds its job's intent pending.
    /// If another process finished it meanwhile, returns that certificate.
    pub async fn finish_intent(&self, intent: Intent, actor: &str) -> Result<Issued, IssueError> {
        let profile = self.profiles.get(&intent.profile).ok_or_else(|| {
            IssueError::Internal(format!(
                "pending certificate {} names unknown profile {}",
                intent.serial, intent.profile
            ))
        })?;
        let findings = lint::lint(&intent.tbs, profile, Some(&self.issuing.view()?));
        if !findings.is_empty() {
            return Err(IssueError::Internal(format!(
                "pending certificate {} no longer passes lint: {}",
                intent.serial,
                findings.join("; ")
            )));
        }
        let signer = self.issuing.signer.clone().expect("issuing key loaded");
        let spki = self
            .issuing
            .certificate
            .tbs_certificate()
            .subject_public_key_info()
            .clone();
        let der = finish_sign(spawn_sign(signer, spki, intent.tbs.clone(), None)).await?;
        let event = issue_event(actor, &intent, &der);
        match self
            .store
            .complete_issuance(&[(intent.serial.clone(), der.clone(), event)])
            .await
        {
            Ok(()) => {
                self.metrics.issued(&intent.profile);
                Ok(Issued {
                    serial: intent.serial,
                    profile: intent.profile,
                    der,
                })
            }
            Err(muhr_store::StoreError::Conflict(_)) => {
                let stored = self
                    .store
                    .certificate(&intent.serial)
                    .await?
                    .and_then(|r| r.der)
                    .ok_or_else(|| {
                        IssueError::Internal(format!(
                            "certificate {} is neither pending nor issued",
                            intent.serial
                        ))
                    })?;
                Ok(Issued {
                    serial: intent.serial,
                    profile: intent.profile,
                    der: stored,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Revokes, suspends or restores an end-entity certificate, with its
    /// audit entry. A CA certificate is refused: one person must never be
    /// able to take a CA out of service (or bring it back), so its status
    /// changes only through [`dual_control`].
    pub async fn change_status(
        &self,
        serial: &str,
        transition: muhr_store::Transition,
        actor: &str,
    ) -> Result<muhr_store::Status, IssueError> {
        let plan = self.status_plan(serial, transition).await?;
        if plan.ca_certificate {
            return Err(refused("serial", dual_control::CA_CERTIFICATE));
        }
        match self
            .store
            .change_status(
                serial,
                transition,
                &plan.event(actor, serde_json::json!({})),
            )
            .await
        {
            Ok(s) => Ok(s),
            Err(muhr_store::StoreError::Conflict(why)) => Err(refused("serial", why)),
            Err(e) => Err(e.into()),
        }
    }

    /// What a status change of `serial` would be: the checks every path
    /// shares (the certificate exists, the reason fits it).
    pub(crate) async fn status_plan(
        &self,
        serial: &str,
        transition: muhr_store::Transition,
    ) -> Result<StatusPlan, IssueError> {
        let record = self
            .store
            .certificate(serial)
            .await?
            .ok_or_else(|| refused("serial", format!("no certificate with serial {serial}")))?;
        let ca_certificate = self
            .profiles
            .get(&record.intent.profile)
            .is_some_and(|p| p.kind == Kind::Ca);
        let (action, reason) = match transition {
            muhr_store::Transition::Revoke { reason } => {
                let r = revocation::Reason::from_code(reason).ok_or_else(|| {
                    refused("reason", format!("{reason} is not an RFC 5280 reason code"))
                })?;
                r.check_for_revoke(ca_certificate)
                    .map_err(|rule| refused("reason", rule))?;
                ("certificate.revoke", Some(r.name()))
            }
            muhr_store::Transition::Suspend => ("certificate.suspend", Some("certificateHold")),
            muhr_store::Transition::Restore => ("certificate.restore", None),
        };
        Ok(StatusPlan {
            serial: serial.to_string(),
            ca_certificate,
            action,
            reason,
            profile: record.intent.profile,
            issuer: record.intent.issuer,
        })
    }

    /// The chain a client needs besides its own certificate, leaf-side first.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.issuing.pem(), self.root.pem())
    }
}

/// Encodes a `Certificate` back to DER (for callers holding only the parsed form).
pub fn certificate_der(c: &Certificate) -> Result<Vec<u8>, der::Error> {
    c.to_der()
}

#[cfg(test)]
mod sign_all_tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    use const_oid::db::rfc5912;
    use spki::AlgorithmIdentifierOwned;

    /// Signs in three lanes; refuses one message and signs another wrongly.
    struct Key {
        pair: EcdsaKeyPair,
        spki: SubjectPublicKeyInfoOwned,
        refuse: Vec<u8>,
        forge: Vec<u8>,
    }

    impl KeySigner for Key {
        fn label(&self) -> &str {
            "lanes"
        }
        fn spec(&self) -> KeySpec {
            KeySpec::EcdsaP256
        }
        fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
            &self.spki
        }
        fn parallelism(&self) -> usize {
            3
        }
        fn sign(&self, message: &[u8]) -> muhr_hsm::Result<Vec<u8>> {
            if message == self.refuse {
                return Err(muhr_hsm::HsmError::Crypto("refused".into()));
            }
            let signed = if message == self.forge {
                b"something else".as_slice()
            } else {
                message
            };
            let sig = self.pair.sign(&SystemRandom::new(), signed).expect("sign");
            Ok(sig.as_ref().to_vec())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lanes_keep_order_and_each_result_its_own() {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let spki = SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: rfc5912::ID_EC_PUBLIC_KEY,
                parameters: Some(der::asn1::Any::encode_from(&rfc5912::SECP_256_R_1).unwrap()),
            },
            subject_public_key: der::asn1::BitString::from_bytes(pair.public_key().as_ref())
                .unwrap(),
        };
        let tbs: Vec<Vec<u8>> = (0..8u8)
            .map(|i| {
                der::asn1::OctetString::new(vec![i; 3 + i as usize])
                    .unwrap()
                    .to_der()
                    .unwrap()
            })
            .collect();
        let key: Arc<dyn KeySigner> = Arc::new(Key {
            pair,
            spki: spki.clone(),
            refuse: tbs[2].clone(),
            forge: tbs[5].clone(),
        });
        let items = tbs
            .iter()
            .map(|t| (key.clone(), spki.clone(), t.clone()))
            .collect();
        let metrics = Arc::new(Metrics::default());
        let out = sign_all(items, metrics).await;
        assert_eq!(out.len(), tbs.len());
        for (i, (r, t)) in out.iter().zip(&tbs).enumerate() {
            match (i, r) {
                (2, Err(IssueError::Key(e))) => assert!(e.to_string().contains("refused"), "{e}"),
                (5, Err(IssueError::Internal(e))) => assert!(e.contains("does not verify"), "{e}"),
                (2 | 5, other) => panic!("certificate {i}: {other:?}"),
                (_, Ok(der)) => {
                    // SEQUENCE { tbs, algorithm, signature }, under 128 bytes
                    // here (a two-byte header): this item's TBS first.
                    assert!(
                        der.len() < 128 && der[2..].starts_with(t),
                        "certificate {i}"
                    );
                }
                (_, Err(e)) => panic!("certificate {i}: {e:?}"),
            }
        }
        assert!(
            sign_all(Vec::new(), Arc::new(Metrics::default()))
                .await
                .is_empty()
        );
    }
}

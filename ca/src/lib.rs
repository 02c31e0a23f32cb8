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
//! ([`recording`], [`muhr_store::IssueOnce`]). It touches keys only through
//! `muhr_hsm`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod alt_name;
pub mod audit_anchor;
pub mod build;
pub mod ceremony;
pub mod crl;
pub mod csr;
pub mod dual_control;
pub mod goodkey;
mod issue;

pub mod lint;
pub mod metrics;
pub mod ocsp_signer;
pub mod recording;
pub mod revocation;
mod sign;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use const_oid::ObjectIdentifier;
use der::Decode;
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
/// The issuing CA: it signs every end-entity certificate, the delegated
/// OCSP signer's among them. Both names key the CAs in the database.
pub const ISSUING: &str = "issuing";

/// Why an issuance, a status change or the ceremony failed. `Refused` and
/// `AlreadyIssued` are about the request; the others are not the requester's
/// doing.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The request cannot be satisfied as it is; nothing was written.
    #[error("{0}")]
    Refused(#[from] FieldError),
    /// The database failed, or refused a write as conflicting.
    #[error("database: {0}")]
    Store(#[from] muhr_store::StoreError),
    /// The key store failed: a key missing, an HSM error, a signing error.
    #[error("key store: {0}")]
    Key(#[from] muhr_hsm::HsmError),
    /// The request's [`Request::once`] key already has a certificate in this
    /// role, recorded by another request; this one signed nothing.
    #[error("{key} already has its {role} certificate")]
    AlreadyIssued {
        /// The caller's key for the unit of work ([`muhr_store::IssueOnce::key`]).
        key: String,
        /// The role that key already has a certificate in.
        role: String,
    },
    /// A fault of the CA, its configuration or its data, not of the request
    /// (a lint finding, an unloaded key, a CRL URL missing); the text says which.
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
    /// The holder's PINFL, when the certificate names a person.
    pinfl: Option<String>,
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
    /// Template for CRL distribution points and Freshest CRL (RFC 5280
    /// 4.2.1.13, 4.2.1.15). None: certificates name no CRL, and CRL shards
    /// cannot be used.
    pub crl: Option<String>,
    /// OCSP responder URL for Authority Information Access (RFC 5280
    /// 4.2.2.1). None: certificates name no responder.
    pub ocsp: Option<String>,
    /// Where the issuer's certificate is published (AIA caIssuers). None:
    /// left out.
    pub ca_issuers: Option<String>,
}

impl UrlTemplates {
    /// The URLs of the CA named `ca`: `{ca}` filled in, `{crl}` left for
    /// [`crl::url`] to fill per CRL.
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
    /// Where certificates send relying parties for status and the issuer.
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
    /// [`ROOT`] or [`ISSUING`]: the name the database, the URL templates and
    /// the CRL names use.
    pub name: String,
    /// The CA certificate, decoded.
    pub certificate: Certificate,
    /// The same certificate, as stored and served.
    pub der: Vec<u8>,
    /// Subject key identifier: the certificate's own, else computed (RFC 7093
    /// method 1). What certificates and CRLs it signs carry as authority key
    /// identifier.
    pub key_id: Vec<u8>,
    /// The CA key; None when the key store lacks it (a root kept offline).
    /// Without it this CA signs nothing here, CRLs included.
    pub signer: Option<Arc<dyn KeySigner>>,
    /// This CA's URLs, resolved from [`UrlTemplates::for_ca`].
    pub urls: IssuerUrls,
}

impl Authority {
    /// Decodes a CA certificate and, when a key is given, checks that it is
    /// the certificate's key. Errors are text naming the CA.
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

    /// The certificate as PEM (`CERTIFICATE`), as `muhr serve` publishes it.
    pub fn pem(&self) -> String {
        muhr_pkix::pem::certificate(&self.der)
    }
}

/// An approved request for one certificate.
#[derive(Clone, Debug)]
pub struct Request {
    /// Name of the profile to issue under. CA profiles are refused: only the
    /// [`ceremony`] makes CA certificates.
    pub profile: String,
    /// Subject fields, already checked (see [`muhr_policies::identity`]).
    pub fields: BTreeMap<String, String>,
    /// The subject's key, checked for known weaknesses and against the
    /// profile's allowed kinds ([`goodkey`]). Proof of possession is the
    /// caller's to check ([`csr::Parsed::verify`]).
    pub public_key: SubjectPublicKeyInfoOwned,
    /// The certificate must not outlive this (e.g. the identity document).
    pub not_after_limit: Option<SystemTime>,
    /// subjectAltName entries, for profiles that allow them.
    pub alt_names: Vec<alt_name::AltName>,
    /// Who asked, for the audit chain ("cli:root", "line:LINE-01").
    pub actor: String,
    /// What the caller wants issued once: opaque here, recorded with the
    /// intent; the database lets each (key, role) be issued once.
    pub once: Option<muhr_store::IssueOnce>,
}

/// A certificate signed and committed with its audit entry: safe to hand out.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Upper-case hex, no separators: how the database and the CLI name it.
    pub serial: String,
    /// The profile it was issued under.
    pub profile: String,
    /// The certificate, exactly as stored.
    pub der: Vec<u8>,
}

impl Issued {
    /// The certificate decoded. Decoded on demand: the personalization line
    /// and most callers only pass the DER on, and decoding every certificate
    /// issued cost more than its encoding.
    pub fn certificate(&self) -> der::Result<Certificate> {
        Certificate::from_der(&self.der)
    }

    /// The certificate as PEM (`CERTIFICATE`).
    pub fn pem(&self) -> String {
        muhr_pkix::pem::certificate(&self.der)
    }
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

/// The CA as a running process sees it: the two authorities, the database
/// and the profiles. Opened with [`Ca::open`] once a ceremony has run.
pub struct Ca {
    store: Store,
    profiles: Arc<Profiles>,
    policy: IssuancePolicy,
    /// The root CA. Its key may be absent (kept offline); then the root CRL
    /// is not made here.
    pub root: Authority,
    /// The issuing CA; [`Ca::open`] fails unless its key is loaded.
    pub issuing: Authority,
    /// This process's issuance counters, for `/metrics`; shared with the
    /// signing tasks.
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

    /// The database the CA writes, for callers that read its records (CRLs,
    /// statuses, the audit chain).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The profiles the CA issues under, as loaded at [`Ca::open`].
    pub fn profiles(&self) -> &Profiles {
        &self.profiles
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
        self.change_end_entity_status(serial, transition, actor, false)
            .await
    }

    /// [`Ca::change_status`] made by someone other than the holder (an
    /// operator, the CA administrator): the holder gets a notice (kind
    /// `suspended`, `restored` or `revoked`, with the reason name) in the
    /// same transaction as the change. A certificate that names no person
    /// gets none. The holder's own acts use [`Ca::change_status`]: nobody
    /// needs telling what they just did.
    pub async fn change_status_notifying(
        &self,
        serial: &str,
        transition: muhr_store::Transition,
        actor: &str,
    ) -> Result<muhr_store::Status, IssueError> {
        self.change_end_entity_status(serial, transition, actor, true)
            .await
    }

    async fn change_end_entity_status(
        &self,
        serial: &str,
        transition: muhr_store::Transition,
        actor: &str,
        notify: bool,
    ) -> Result<muhr_store::Status, IssueError> {
        let plan = self.status_plan(serial, transition).await?;
        if plan.ca_certificate {
            return Err(refused("serial", dual_control::CA_CERTIFICATE));
        }
        let notice = plan.pinfl.as_ref().filter(|_| notify).map(|pinfl| {
            use muhr_store::notices::{NewNotice, NoticeKind};
            let now = muhr_store::now_micros();
            // A revocation is final: one per certificate. A suspension or a
            // restoration can happen again, each its own notice.
            let (kind, key) = match transition {
                muhr_store::Transition::Revoke { .. } => {
                    (NoticeKind::Revoked, format!("revoked:{}", plan.serial))
                }
                muhr_store::Transition::Suspend => (
                    NoticeKind::Suspended,
                    format!("suspended:{}:{now}", plan.serial),
                ),
                muhr_store::Transition::Restore => (
                    NoticeKind::Restored,
                    format!("restored:{}:{now}", plan.serial),
                ),
            };
            let (y, m, d) =
                muhr_policies::identity::civil_from_days(now.div_euclid(86_400_000_000));
            NewNotice {
                key,
                pinfl: pinfl.clone(),
                serial: Some(plan.serial.clone()),
                kind,
                reason: plan.reason.map(str::to_string),
                on_date: format!("{y:04}-{m:02}-{d:02}"),
            }
        });
        match self
            .store
            .change_status_noticed(
                serial,
                transition,
                &plan.event(actor, serde_json::json!({})),
                notice.as_ref(),
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
            pinfl: record.intent.pinfl,
        })
    }

    /// The chain a client needs besides its own certificate, leaf-side first.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.issuing.pem(), self.root.pem())
    }
}

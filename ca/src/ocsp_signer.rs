//! The delegated signers: the OCSP signer (RFC 6960 4.2.2.2) and the
//! time-stamping authority (RFC 3161). Each has a key of its own in the key
//! store and a certificate from the issuing CA under its own profile, so the
//! responder and the TSA never need the CA key. A process that holds the CA
//! key (`muhr serve`) renews them well before they expire, with a new key
//! each time; responders and TSAs pick up the newest.

use std::collections::BTreeMap;
use std::time::Duration;

use muhr_hsm::{KeySpec, KeyStore};
use muhr_store::{OcspSigner, SignerRole};

use crate::{Ca, ISSUING, IssueError, Request};

/// The profile delegated OCSP signer certificates are issued under; the
/// profile configuration must define it.
pub const PROFILE: &str = "ocsp-signer";

/// The profile TSA certificates are issued under (critical timeStamping).
pub const TSA_PROFILE: &str = "tsa";

/// What differs between the delegated signers.
struct Kind {
    role: SignerRole,
    profile: &'static str,
    label_prefix: &'static str,
    purpose: &'static str,
}

const OCSP: Kind = Kind {
    role: SignerRole::Ocsp,
    profile: PROFILE,
    label_prefix: "muhr-ocsp",
    purpose: "delegated OCSP signer",
};

const TSA: Kind = Kind {
    role: SignerRole::Tsa,
    profile: TSA_PROFILE,
    label_prefix: "muhr-tsa",
    purpose: "time-stamping authority",
};

impl Ca {
    /// Returns a signer with at least `min_remaining` of validity left, making
    /// a new key and certificate when the current one is older than that.
    pub async fn ensure_ocsp_signer(
        &self,
        keys: &dyn KeyStore,
        spec: KeySpec,
        min_remaining: Duration,
        actor: &str,
    ) -> Result<OcspSigner, IssueError> {
        let fields =
            BTreeMap::from([("common_name".to_string(), "Muhr OCSP Responder".to_string())]);
        self.ensure_signer(&OCSP, keys, spec, min_remaining, fields, actor)
            .await
    }

    /// As [`Ca::ensure_ocsp_signer`], for the time-stamping authority:
    /// `fields` name it (`common_name`, `organization.name`). The old key
    /// stops stamping once the new one is certified, while its certificate,
    /// still valid, keeps verifying the tokens it made.
    pub async fn ensure_tsa_signer(
        &self,
        keys: &dyn KeyStore,
        spec: KeySpec,
        min_remaining: Duration,
        fields: BTreeMap<String, String>,
        actor: &str,
    ) -> Result<OcspSigner, IssueError> {
        self.ensure_signer(&TSA, keys, spec, min_remaining, fields, actor)
            .await
    }

    async fn ensure_signer(
        &self,
        kind: &Kind,
        keys: &dyn KeyStore,
        spec: KeySpec,
        min_remaining: Duration,
        fields: BTreeMap<String, String>,
        actor: &str,
    ) -> Result<OcspSigner, IssueError> {
        let now = muhr_store::now_secs();
        if let Some(s) = self.store().current_signer(kind.role, ISSUING).await?
            && s.not_after - now >= min_remaining.as_secs() as i64
        {
            return Ok(s);
        }
        let mut id = [0u8; 4];
        aws_lc_rs::rand::fill(&mut id)
            .map_err(|_| IssueError::Internal("random generator failed".into()))?;
        let label = format!("{}-{now}-{}", kind.label_prefix, hex::encode(id));
        let key = tokio::task::block_in_place(|| keys.generate(&label, spec))?;
        // The key is recorded before it is certified: a key made and never
        // used still shows in the chain.
        self.store()
            .audit(&[&muhr_store::AuditEvent {
                actor: actor.to_string(),
                action: "key.generate".into(),
                object: label.clone(),
                details: serde_json::json!({
                    "purpose": kind.purpose,
                    "spec": spec.to_string(),
                    "key_id": crate::audit_anchor::key_id(key.public_key())?,
                }),
            }])
            .await?;
        let issued = self
            .issue(Request {
                alt_names: Vec::new(),
                profile: kind.profile.into(),
                fields,
                public_key: key.public_key().clone(),
                not_after_limit: None,
                actor: actor.to_string(),
                once: None,
            })
            .await?;
        let certificate = issued.certificate().map_err(|e| {
            IssueError::Internal(format!("the {}'s certificate: {e}", kind.purpose))
        })?;
        let validity = certificate.tbs_certificate().validity();
        let signer = OcspSigner {
            serial: issued.serial.clone(),
            issuer: ISSUING.into(),
            key_label: label,
            key_spec: spec.to_string(),
            not_before: muhr_store::unix_secs(validity.not_before.to_system_time()),
            not_after: muhr_store::unix_secs(validity.not_after.to_system_time()),
            der: issued.der,
        };
        self.store().save_signer(kind.role, &signer).await?;
        tracing::info!(serial = %signer.serial, label = %signer.key_label, purpose = kind.purpose, "new delegated signer");
        Ok(signer)
    }
}

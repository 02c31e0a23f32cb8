//! The delegated OCSP signer (RFC 6960 4.2.2.2): a key of its own in the key
//! store and a short-lived `ocsp-signer` certificate from the issuing CA, so the
//! responder never needs the CA key. A process that holds the CA key (`muhr
//! serve`) renews it well before it expires; responders pick up the newest.

use std::collections::BTreeMap;
use std::time::Duration;

use muhr_hsm::{KeySpec, KeyStore};
use muhr_store::OcspSigner;

use crate::{Ca, ISSUING, IssueError, Request};

/// The profile delegated OCSP signer certificates are issued under; the
/// profile configuration must define it.
pub const PROFILE: &str = "ocsp-signer";

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
        let now = muhr_store::now_secs();
        if let Some(s) = self.store().current_ocsp_signer(ISSUING).await?
            && s.not_after - now >= min_remaining.as_secs() as i64
        {
            return Ok(s);
        }
        let mut id = [0u8; 4];
        aws_lc_rs::rand::fill(&mut id)
            .map_err(|_| IssueError::Internal("random generator failed".into()))?;
        let label = format!("muhr-ocsp-{now}-{}", hex::encode(id));
        let key = tokio::task::block_in_place(|| keys.generate(&label, spec))?;
        // The key is recorded before it is certified: a key made and never
        // used still shows in the chain.
        self.store()
            .audit(&[&muhr_store::AuditEvent {
                actor: actor.to_string(),
                action: "key.generate".into(),
                object: label.clone(),
                details: serde_json::json!({
                    "purpose": "delegated OCSP signer",
                    "spec": spec.to_string(),
                    "key_id": crate::audit_anchor::key_id(key.public_key())?,
                }),
            }])
            .await?;
        let issued = self
            .issue(Request {
                alt_names: Vec::new(),
                profile: PROFILE.into(),
                fields: BTreeMap::from([(
                    "common_name".to_string(),
                    "Muhr OCSP Responder".to_string(),
                )]),
                public_key: key.public_key().clone(),
                not_after_limit: None,
                actor: actor.to_string(),
                once: None,
            })
            .await?;
        let certificate = issued
            .certificate()
            .map_err(|e| IssueError::Internal(format!("the OCSP signer's certificate: {e}")))?;
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
        self.store().save_ocsp_signer(&signer).await?;
        tracing::info!(serial = %signer.serial, label = %signer.key_label, "new delegated OCSP signer");
        Ok(signer)
    }
}

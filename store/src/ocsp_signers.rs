//! The delegated signers, a key each apart from every CA key: OCSP's
//! (`ocsp_signers`) and the time-stamping authority's (`tsa_signers`).
//! Certificate and key label, newest valid first.

use sqlx::Row;

use crate::{Result, Store};

/// A delegated signer: certificate and the label of its key.
#[derive(Clone, Debug)]
pub struct OcspSigner {
    /// Its certificate's serial.
    pub serial: String,
    /// The name of the CA it answers for, which issued its certificate.
    pub issuer: String,
    /// The label of its key in the key store, apart from every CA key.
    pub key_label: String,
    /// The key's kind as muhr-hsm's `KeySpec` writes it.
    pub key_spec: String,
    /// Start of its certificate's validity (Unix seconds).
    pub not_before: i64,
    /// End of its certificate's validity (Unix seconds).
    pub not_after: i64,
    /// Its certificate, DER.
    pub der: Vec<u8>,
}

/// A time-stamping authority's signer: the same record as OCSP's.
pub type TsaSigner = OcspSigner;

/// Whose signer: each has its own table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignerRole {
    /// The delegated OCSP signer (RFC 6960 4.2.2.2).
    Ocsp,
    /// The time-stamping authority (RFC 3161).
    Tsa,
}

impl SignerRole {
    fn table(self) -> &'static str {
        match self {
            SignerRole::Ocsp => "ocsp_signers",
            SignerRole::Tsa => "tsa_signers",
        }
    }
}

impl Store {
    /// Records a new signer once its certificate is issued. Not audited here:
    /// the key's generation and the certificate's issuance are.
    pub async fn save_ocsp_signer(&self, s: &OcspSigner) -> Result<()> {
        self.save_signer(SignerRole::Ocsp, s).await
    }

    /// The OCSP signer of `issuer` valid longest, if any is valid now.
    pub async fn current_ocsp_signer(&self, issuer: &str) -> Result<Option<OcspSigner>> {
        self.current_signer(SignerRole::Ocsp, issuer).await
    }

    /// Records a new signer of `role` (see [`Store::save_ocsp_signer`]).
    pub async fn save_signer(&self, role: SignerRole, s: &OcspSigner) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (serial, issuer, key_label, key_spec, not_before, not_after, der, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            role.table()
        )))
        .bind(&s.serial)
        .bind(&s.issuer)
        .bind(&s.key_label)
        .bind(&s.key_spec)
        .bind(s.not_before)
        .bind(s.not_after)
        .bind(&s.der)
        .bind(crate::now_secs())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The signer of `role` for `issuer` valid longest, if any is valid now
    /// and not revoked or suspended: a revoked newest one gives None (its
    /// key is not to sign again, and no older one stands in), and `muhr
    /// serve` makes a new one in its place.
    pub async fn current_signer(
        &self,
        role: SignerRole,
        issuer: &str,
    ) -> Result<Option<OcspSigner>> {
        let now = crate::now_secs();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT s.serial, s.issuer, s.key_label, s.key_spec, s.not_before, s.not_after, s.der, \
             (SELECT c.revocation FROM certificates c WHERE c.serial = s.serial) AS revocation \
             FROM {} s WHERE s.issuer = $1 AND s.not_before <= $2 AND s.not_after > $2 \
             ORDER BY s.not_after DESC LIMIT 1",
            role.table()
        )))
        .bind(issuer)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        // The newest only: when it is revoked, an older one (retired at the
        // last renewal, maybe destroyed, maybe just as exposed) is no
        // fallback.
        if let Some(r) = &row {
            let revocation: Option<String> = r.try_get("revocation")?;
            if revocation.as_deref().is_some_and(|v| v != "good") {
                return Ok(None);
            }
        }
        row.map(|r| {
            Ok(OcspSigner {
                serial: r.try_get("serial")?,
                issuer: r.try_get("issuer")?,
                key_label: r.try_get("key_label")?,
                key_spec: r.try_get("key_spec")?,
                not_before: r.try_get("not_before")?,
                not_after: r.try_get("not_after")?,
                der: r.try_get("der")?,
            })
        })
        .transpose()
    }
}

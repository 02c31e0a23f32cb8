//! The delegated OCSP signers: certificate and key label, newest valid first.

use sqlx::Row;

use crate::{Result, Store};

/// A delegated OCSP signer: certificate and the label of its key.
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

impl Store {
    /// Records a new signer once its certificate is issued. Not audited here:
    /// the key's generation and the certificate's issuance are.
    pub async fn save_ocsp_signer(&self, s: &OcspSigner) -> Result<()> {
        sqlx::query(
            "INSERT INTO ocsp_signers (serial, issuer, key_label, key_spec, not_before, not_after, der, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
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

    /// The signer of `issuer` valid longest, if any is valid now.
    pub async fn current_ocsp_signer(&self, issuer: &str) -> Result<Option<OcspSigner>> {
        let now = crate::now_secs();
        let row = sqlx::query(
            "SELECT serial, issuer, key_label, key_spec, not_before, not_after, der FROM ocsp_signers \
             WHERE issuer = $1 AND not_before <= $2 AND not_after > $2 ORDER BY not_after DESC LIMIT 1",
        )
        .bind(issuer)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
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

//! The CA registry: each CA's certificate and where its key lives.

use sqlx::Row;

use crate::StoreError;
use crate::audit::{self, AuditEvent};
use crate::is_unique_violation;
use crate::now_secs;
use crate::{Result, Store};

/// A CA of this installation, as the key ceremony recorded it.
#[derive(Clone, Debug)]
pub struct Authority {
    /// The CA's name (`root`, `issuing`), as certificates' `issuer` records it.
    pub name: String,
    /// The label of its private key in the key store.
    pub key_label: String,
    /// The key's kind as muhr-hsm's `KeySpec` writes it (`ecdsa-p384`,
    /// `rsa-pss-3072`).
    pub key_spec: String,
    /// The CA's certificate, DER.
    pub der: Vec<u8>,
}

impl Store {
    /// The CA `name`; `None` until the key ceremony made it.
    pub async fn authority(&self, name: &str) -> Result<Option<Authority>> {
        let row =
            sqlx::query("SELECT name, key_label, key_spec, der FROM authorities WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(Authority {
                name: r.try_get("name")?,
                key_label: r.try_get("key_label")?,
                key_spec: r.try_get("key_spec")?,
                der: r.try_get("der")?,
            })
        })
        .transpose()
    }

    /// How many CAs are recorded: 0 before the key ceremony, which refuses to
    /// run twice.
    pub async fn authority_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM authorities")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Records the CAs made by a key ceremony, with its audit entry, at once.
    pub async fn save_authorities(&self, cas: &[Authority], event: &AuditEvent) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        audit::append(self.backend(), &mut tx, &[event]).await?;
        for ca in cas {
            let r = sqlx::query(
                "INSERT INTO authorities (name, key_label, key_spec, der, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&ca.name)
            .bind(&ca.key_label)
            .bind(&ca.key_spec)
            .bind(&ca.der)
            .bind(now_secs())
            .execute(&mut *tx)
            .await;
            if let Err(e) = r {
                if is_unique_violation(&e) {
                    return Err(StoreError::Conflict(format!(
                        "CA {:?} already exists",
                        ca.name
                    )));
                }
                return Err(e.into());
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

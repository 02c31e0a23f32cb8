//! The mutual-TLS callers' registry: which certificate may act as the
//! personalization line or as an operator.

use sqlx::Row;

use crate::audit::{self, AuditEvent};
use crate::now_secs;
use crate::{Result, Store};

/// A credential on the mutual-TLS listener, with its certificate's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaClient {
    /// The credential's certificate serial.
    pub serial: String,
    /// The client's name; one name may hold several credentials over time.
    pub name: String,
    /// `personalization-line` or `operator`.
    pub role: String,
    /// `good`, `suspended` or `revoked`.
    pub revocation: String,
    /// When the credential's certificate expires (Unix seconds).
    pub not_after: i64,
}

impl Store {
    /// Registers a credential (its certificate is already issued), audited.
    pub async fn add_ra_client(
        &self,
        serial: &str,
        name: &str,
        role: &str,
        event: &AuditEvent,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO ra_clients (serial, name, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(serial)
        .bind(name)
        .bind(role)
        .bind(now_secs())
        .execute(&mut *tx)
        .await?;
        audit::append(self.backend(), &mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The registered client holding the certificate `serial`, if any.
    pub async fn ra_client(&self, serial: &str) -> Result<Option<RaClient>> {
        let row = sqlx::query(
            "SELECT c.serial, c.name, c.role, cert.revocation, cert.not_after FROM ra_clients c \
             JOIN certificates cert ON cert.serial = c.serial WHERE c.serial = $1",
        )
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(RaClient {
                serial: r.try_get("serial")?,
                name: r.try_get("name")?,
                role: r.try_get("role")?,
                revocation: r.try_get("revocation")?,
                not_after: r.try_get("not_after")?,
            })
        })
        .transpose()
    }
}

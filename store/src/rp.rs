//! Relying parties, their login challenges and what they used each month.

use sqlx::Row;

use crate::{AuditEvent, Result, Store, audit, now_secs};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelyingParty {
    pub id: String,
    pub name: String,
    /// `state` (free of charge) or `commercial` (billed by contract).
    pub class: String,
    pub secret_hash: Vec<u8>,
    pub disabled: bool,
}

/// What consuming a challenge found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumed {
    /// Issued to this relying party, unexpired, unused: now used.
    Fresh,
    /// Never issued, or issued to another relying party.
    Unknown,
    Expired,
    /// Used already: a replay.
    Used,
}

/// One line of a monthly usage report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub rp: String,
    pub name: String,
    pub class: String,
    pub logins: i64,
    pub verifications: i64,
}

fn rp_from_row(r: &sqlx::any::AnyRow) -> Result<RelyingParty> {
    Ok(RelyingParty {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        class: r.try_get("class")?,
        secret_hash: r.try_get("secret_hash")?,
        disabled: r.try_get::<Option<i64>, _>("disabled_at")?.is_some(),
    })
}

impl Store {
    /// Registers a relying party, audited; refuses a name already taken.
    pub async fn add_relying_party(&self, rp: &RelyingParty, event: &AuditEvent) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO relying_parties (id, name, class, secret_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&rp.id)
        .bind(&rp.name)
        .bind(&rp.class)
        .bind(&rp.secret_hash)
        .bind(now_secs())
        .execute(&mut *tx)
        .await?;
        audit::append(&mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn relying_party(&self, id: &str) -> Result<Option<RelyingParty>> {
        let row = sqlx::query(
            "SELECT id, name, class, secret_hash, disabled_at FROM relying_parties WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rp_from_row).transpose()
    }

    /// Records a challenge issued to `rp`, valid until `expires_at`.
    pub async fn add_challenge(&self, challenge: &str, rp: &str, expires_at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO auth_challenges (challenge, rp, kind, created_at, expires_at) \
             VALUES ($1, $2, 'cms', $3, $4)",
        )
        .bind(challenge)
        .bind(rp)
        .bind(now_secs())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uses `challenge` for a login by the certificate `serial`, once. The
    /// conditional UPDATE is the single-use guarantee: of two logins racing
    /// with one challenge, one changes the row and the other finds it used.
    pub async fn consume_challenge(
        &self,
        challenge: &str,
        rp: &str,
        serial: &str,
        now: i64,
    ) -> Result<Consumed> {
        let done = sqlx::query(
            "UPDATE auth_challenges SET used_at = $1, serial = $2 \
             WHERE challenge = $3 AND rp = $4 AND used_at IS NULL AND expires_at >= $1",
        )
        .bind(now)
        .bind(serial)
        .bind(challenge)
        .bind(rp)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Consumed::Fresh);
        }
        let row = sqlx::query(
            "SELECT expires_at, used_at FROM auth_challenges WHERE challenge = $1 AND rp = $2",
        )
        .bind(challenge)
        .bind(rp)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => Consumed::Unknown,
            Some(r) if r.try_get::<Option<i64>, _>("used_at")?.is_some() => Consumed::Used,
            Some(_) => Consumed::Expired,
        })
    }

    /// Records a login over mutual TLS (no challenge): a row born used, so
    /// logins of both kinds are metered alike.
    pub async fn record_tls_login(&self, id: &str, rp: &str, serial: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO auth_challenges (challenge, rp, kind, created_at, expires_at, used_at, serial) \
             VALUES ($1, $2, 'tls', $3, $3, $3, $4)",
        )
        .bind(id)
        .bind(rp)
        .bind(now)
        .bind(serial)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Counts one use of `kind` by `rp` in `month` (YYYY-MM).
    pub async fn meter(&self, rp: &str, month: &str, kind: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO rp_usage (rp, month, kind, count) VALUES ($1, $2, $3, 1) \
             ON CONFLICT (rp, month, kind) DO UPDATE SET count = rp_usage.count + 1",
        )
        .bind(rp)
        .bind(month)
        .bind(kind)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every relying party's logins and verifications in `month`, whose
    /// bounds are `[from, to)` in Unix seconds.
    pub async fn usage(&self, month: &str, from: i64, to: i64) -> Result<Vec<Usage>> {
        let rows = sqlx::query(
            "SELECT p.id, p.name, p.class, \
               (SELECT COUNT(*) FROM auth_challenges c \
                 WHERE c.rp = p.id AND c.used_at >= $1 AND c.used_at < $2) AS logins, \
               CAST(COALESCE((SELECT SUM(u.count) FROM rp_usage u \
                 WHERE u.rp = p.id AND u.month = $3 AND u.kind = 'verification'), 0) AS BIGINT) \
               AS verifications \
             FROM relying_parties p ORDER BY p.class DESC, p.name",
        )
        .bind(from)
        .bind(to)
        .bind(month)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Usage {
                    rp: r.try_get("id")?,
                    name: r.try_get("name")?,
                    class: r.try_get("class")?,
                    logins: r.try_get("logins")?,
                    verifications: r.try_get("verifications")?,
                })
            })
            .collect()
    }

    /// Forgets challenges never used and expired before `before`; used ones
    /// are the login record and stay.
    pub async fn prune_challenges(&self, before: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM auth_challenges WHERE used_at IS NULL AND expires_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}

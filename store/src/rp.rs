//! Relying parties, their login challenges and what they used each month.

use std::collections::HashSet;

use sqlx::Row;

use crate::{AuditEvent, Result, Store, audit, now_secs};

/// A state body or business that logs citizens in and verifies signatures
/// through Muhr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelyingParty {
    /// Its id (`rp-…`), made when it is registered; other tables refer to it.
    pub id: String,
    /// Its name, unique among relying parties.
    pub name: String,
    /// `state` (free of charge) or `commercial` (billed by contract).
    pub class: String,
    /// SHA-256 of its 32-byte secret; the secret itself is never stored.
    pub secret_hash: Vec<u8>,
    /// Whether it was disabled. Registering ignores this: a new party is
    /// always stored enabled.
    pub disabled: bool,
}

/// A login that used a challenge (kind `cms` or `tls`) by the certificate
/// `serial`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChallengeUse {
    /// The challenge as the relying party presented it: its use is single.
    pub challenge: String,
    /// The relying party's id.
    pub rp: String,
    /// `cms` (a signed challenge) or `tls` (a client-certificate login).
    pub kind: &'static str,
    /// When the challenge expires (Unix seconds).
    pub expires_at: i64,
    /// The certificate the user logged in with.
    pub serial: String,
    /// When the login happened (Unix seconds), recorded as the row's creation
    /// and use.
    pub now: i64,
    /// `serial` is one of this CA's certificates, and the login stands only
    /// if it is neither revoked nor suspended when the login is recorded:
    /// the status is read by the recording statement itself.
    pub require_good: bool,
}

/// One line of a monthly usage report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    /// The relying party's id.
    pub rp: String,
    /// Its name.
    pub name: String,
    /// `state` or `commercial`.
    pub class: String,
    /// Logins recorded in the month.
    pub logins: i64,
    /// Signature verifications metered in the month.
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
        audit::append(self.backend(), &mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Disables a relying party, audited. False when there is no such
    /// party or it was disabled already (nothing is written then).
    pub async fn disable_relying_party(&self, id: &str, event: &AuditEvent) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE relying_parties SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL",
        )
        .bind(now_secs())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        audit::append(self.backend(), &mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The relying party `id`, enabled or not; `None` if there is none.
    pub async fn relying_party(&self, id: &str) -> Result<Option<RelyingParty>> {
        let row = sqlx::query(
            "SELECT id, name, class, secret_hash, disabled_at FROM relying_parties WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rp_from_row).transpose()
    }

    /// The key login challenges are MACed with: the stored one, or
    /// `fresh` when none is stored yet (the first node to start wins a
    /// race, and every node then reads the same key).
    pub async fn login_challenge_key(&self, fresh: &[u8]) -> Result<Vec<u8>> {
        sqlx::query(
            "INSERT INTO login_challenge_key (id, secret, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(fresh)
        .bind(now_secs())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT secret FROM login_challenge_key WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("secret")?)
    }

    /// Consumes a one-time `proof` for `binding` (what it is used for):
    /// true when this is its first use, or a retry with the same binding;
    /// false when it was used for something else. `expires_at` must be the
    /// last moment the proof is accepted anywhere (its expiry plus any
    /// tolerated skew): rows are dropped five minutes after it.
    pub async fn use_proof(&self, proof: &str, binding: &str, expires_at: i64) -> Result<bool> {
        let now = now_secs();
        sqlx::query("DELETE FROM used_proofs WHERE expires_at < $1")
            .bind(now - 300)
            .execute(&self.pool)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO used_proofs (proof, binding, used_at, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (proof) DO NOTHING",
        )
        .bind(proof)
        .bind(binding)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(true);
        }
        let row = sqlx::query("SELECT binding FROM used_proofs WHERE proof = $1")
            .bind(proof)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<String, _>("binding")? == binding,
            None => false,
        })
    }

    /// Records logins that used challenges, in one statement and one
    /// commit (the login path's group commit). Returns the challenges that
    /// were recorded now: one already recorded, or repeated within `uses`,
    /// is recorded once and its other uses are replays; a use whose
    /// certificate must be good and is not (or is unknown) is not recorded.
    /// The challenge is the primary key, so of two logins racing with one
    /// challenge, on any nodes, exactly one is recorded.
    pub async fn use_challenges(&self, uses: &[ChallengeUse]) -> Result<HashSet<String>> {
        let mut seen = HashSet::new();
        let fresh: Vec<&ChallengeUse> = uses
            .iter()
            .filter(|u| seen.insert(u.challenge.as_str()))
            .collect();
        if fresh.is_empty() {
            return Ok(HashSet::new());
        }
        // One statement: the status read and the insert see the same
        // snapshot, so a revocation committed before it refuses the login,
        // and there is no separate read per login. (SQLite needs the WHERE
        // clause to tell the upsert's ON CONFLICT from a join.)
        let mut sql = String::from(
            "WITH v (challenge, rp, kind, used, expires_at, serial, require_good) AS (VALUES ",
        );
        for i in 0..fresh.len() {
            let b = i * 7;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7
            ));
        }
        sql.push_str(
            ") INSERT INTO auth_challenges \
             (challenge, rp, kind, created_at, expires_at, used_at, serial) \
             SELECT challenge, rp, kind, used, expires_at, used, serial FROM v \
             WHERE require_good = 0 OR EXISTS (SELECT 1 FROM certificates c \
             WHERE c.serial = v.serial AND c.revocation = 'good') \
             ON CONFLICT (challenge) DO NOTHING RETURNING challenge",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for u in &fresh {
            q = q
                .bind(u.challenge.as_str())
                .bind(u.rp.as_str())
                .bind(u.kind)
                .bind(u.now)
                .bind(u.expires_at)
                .bind(u.serial.as_str())
                .bind(i64::from(u.require_good));
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("challenge")?))
            .collect()
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
}

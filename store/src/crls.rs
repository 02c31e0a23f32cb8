//! The signed CRLs, their numbers (never repeated per CA) and the shard
//! counts ever in force.

use sqlx::Row;

use crate::AuditEvent;
use crate::{Result, Store, StoreError};

/// A signed CRL as stored, with what schedulers need to know about it
/// without parsing it.
#[derive(Clone, Debug)]
pub struct StoredCrl {
    /// The name of the CA that signed it.
    pub issuer: String,
    /// 'full' (complete for its scope) or 'delta'.
    pub kind: String,
    /// `None`: the whole CA; `Some(n)`: shard n.
    pub shard: Option<i64>,
    /// Deltas: the number of the complete CRL they extend.
    pub base_number: Option<i64>,
    /// Its CRL number: per issuer, across kinds and shards, never repeated.
    pub number: i64,
    /// When it was made (Unix seconds).
    pub this_update: i64,
    /// When the next one is due (Unix seconds).
    pub next_update: i64,
    /// How many certificates it lists.
    pub entries: i64,
    /// The signed CRL, DER; empty when read by [`Store::latest_crl_info`].
    pub der: Vec<u8>,
}

impl Store {
    /// The next CRL number for `issuer` (numbers never repeat, across kinds).
    pub async fn next_crl_number(&self, issuer: &str) -> Result<i64> {
        let row =
            sqlx::query("SELECT COALESCE(MAX(number), 0) + 1 AS n FROM crls WHERE issuer = $1")
                .bind(issuer)
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get("n")?)
    }

    /// Stores signed CRLs in one transaction, with one audit entry naming
    /// them (every use of a CA key is in the chain); a number already taken
    /// (another node was faster) is a Conflict and stores none, and those
    /// signatures are never published.
    pub async fn save_crls(&self, crls: &[StoredCrl]) -> Result<()> {
        let Some(first) = crls.first() else {
            return Ok(());
        };
        let event = AuditEvent {
            actor: format!("ca:{}", first.issuer),
            action: "crl.sign".into(),
            object: first.issuer.clone(),
            details: serde_json::json!({
                "crls": crls.iter().map(|c| serde_json::json!({
                    "number": c.number,
                    "kind": c.kind,
                    "shard": c.shard,
                    "base_number": c.base_number,
                    "entries": c.entries,
                    "this_update": c.this_update,
                    "next_update": c.next_update,
                })).collect::<Vec<_>>(),
            }),
        };
        let mut tx = self.pool.begin().await?;
        for crl in crls {
            let r = sqlx::query(
                "INSERT INTO crls (issuer, kind, shard, base_number, number, this_update, next_update, entries, der) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&crl.issuer)
            .bind(&crl.kind)
            .bind(crl.shard.unwrap_or(-1))
            .bind(crl.base_number)
            .bind(crl.number)
            .bind(crl.this_update)
            .bind(crl.next_update)
            .bind(crl.entries)
            .bind(&crl.der)
            .execute(&mut *tx)
            .await;
            match r {
                Ok(_) => {}
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                    return Err(StoreError::Conflict(format!(
                        "CRL number {} of {} already exists",
                        crl.number, crl.issuer
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        crate::audit::append(self.backend(), &mut tx, &[&event]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest CRL of one kind and scope (`shard` `None`: the whole CA).
    pub async fn latest_crl(
        &self,
        issuer: &str,
        kind: &str,
        shard: Option<i64>,
    ) -> Result<Option<StoredCrl>> {
        self.newest_crl(issuer, kind, shard, true).await
    }

    /// As `latest_crl` without the DER (empty): what schedulers need, without
    /// moving 53 MB out of the database each time they look.
    pub async fn latest_crl_info(
        &self,
        issuer: &str,
        kind: &str,
        shard: Option<i64>,
    ) -> Result<Option<StoredCrl>> {
        self.newest_crl(issuer, kind, shard, false).await
    }

    async fn newest_crl(
        &self,
        issuer: &str,
        kind: &str,
        shard: Option<i64>,
        with_der: bool,
    ) -> Result<Option<StoredCrl>> {
        let sql = if with_der {
            "SELECT issuer, kind, shard, base_number, number, this_update, next_update, entries, der \
             FROM crls WHERE issuer = $1 AND kind = $2 AND shard = $3 ORDER BY number DESC LIMIT 1"
        } else {
            "SELECT issuer, kind, shard, base_number, number, this_update, next_update, entries \
             FROM crls WHERE issuer = $1 AND kind = $2 AND shard = $3 ORDER BY number DESC LIMIT 1"
        };
        let row = sqlx::query(sql)
            .bind(issuer)
            .bind(kind)
            .bind(shard.unwrap_or(-1))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let shard: i64 = r.try_get("shard")?;
            Ok(StoredCrl {
                issuer: r.try_get("issuer")?,
                kind: r.try_get("kind")?,
                shard: (shard >= 0).then_some(shard),
                base_number: r.try_get("base_number")?,
                number: r.try_get("number")?,
                this_update: r.try_get("this_update")?,
                next_update: r.try_get("next_update")?,
                entries: r.try_get("entries")?,
                der: if with_der {
                    r.try_get("der")?
                } else {
                    Vec::new()
                },
            })
        })
        .transpose()
    }

    /// Drops CRLs made before `before` that a newer CRL of the same kind and
    /// scope replaces. The newest of each is always kept (it is served, and
    /// numbering continues from it).
    pub async fn prune_crls(&self, before: i64) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM crls WHERE this_update < $1 AND number < \
             (SELECT MAX(n.number) FROM crls n WHERE n.issuer = crls.issuer AND n.kind = crls.kind AND n.shard = crls.shard)",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Records that `issuer` assigns certificates to `shards` CRL shards from
    /// now on (idempotent).
    pub async fn record_crl_shards(&self, issuer: &str, shards: i64) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO crl_shard_counts (issuer, shards, first_used) VALUES ($1, $2, $3)",
        )
        .bind(issuer)
        .bind(shards)
        .bind(crate::now_secs())
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The largest shard count `issuer` ever used: CRLs are due for shards
    /// 0..that, whatever the configuration says today.
    pub async fn crl_shard_count(&self, issuer: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(shards), 0) AS n FROM crl_shard_counts WHERE issuer = $1",
        )
        .bind(issuer)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}

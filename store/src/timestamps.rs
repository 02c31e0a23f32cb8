//! The time-stamp token log: every token the TSA hands out, written before
//! the reply leaves, so a token shown years later can be confirmed as one
//! this TSA made (and a forged one with a valid-looking serial is not).

use sqlx::Row;

use crate::{Result, Store, rows};

/// One token as logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// The token's serialNumber, upper-case hex.
    pub serial: String,
    /// genTime, Unix seconds.
    pub gen_time: i64,
    /// The policy it was issued under, dotted.
    pub policy: String,
    /// The imprint's hash algorithm: `sha256`, `sha384`, `sha512`.
    pub hash_algorithm: String,
    /// The imprint as stamped.
    pub imprint: Vec<u8>,
    /// The request's nonce, upper-case hex of its DER INTEGER content.
    pub nonce: Option<String>,
    /// The serial of the TSA certificate that signed it.
    pub signer_serial: String,
    /// SHA-256 of the whole TimeStampToken (the ContentInfo) as sent.
    pub token_sha256: Vec<u8>,
}

const COLUMNS: &str =
    "serial, gen_time, policy, hash_algorithm, imprint, nonce, signer_serial, token_sha256";

impl Store {
    /// Logs tokens made together, in one transaction: all or none. A
    /// serial already logged fails the whole call (its tokens are never
    /// sent), which is what makes serials unique across nodes.
    pub async fn log_timestamp_tokens(&self, tokens: &[TokenRecord]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in tokens.chunks(rows::CHUNK) {
            let sql = format!(
                "INSERT INTO timestamp_tokens ({COLUMNS}) VALUES {}",
                rows::values(
                    self.backend(),
                    chunk.len(),
                    8,
                    1,
                    &["", "", "", "", "bytea", "", "", "bytea"]
                )
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for t in chunk {
                q = q
                    .bind(&t.serial)
                    .bind(t.gen_time)
                    .bind(&t.policy)
                    .bind(&t.hash_algorithm)
                    .bind(&t.imprint)
                    .bind(&t.nonce)
                    .bind(&t.signer_serial)
                    .bind(&t.token_sha256);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The logged token with this serial (upper-case hex), if any.
    pub async fn timestamp_token(&self, serial: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM timestamp_tokens WHERE serial = $1"
        )))
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(TokenRecord {
                serial: r.try_get("serial")?,
                gen_time: r.try_get("gen_time")?,
                policy: r.try_get("policy")?,
                hash_algorithm: r.try_get("hash_algorithm")?,
                imprint: r.try_get("imprint")?,
                nonce: r.try_get("nonce")?,
                signer_serial: r.try_get("signer_serial")?,
                token_sha256: r.try_get("token_sha256")?,
            })
        })
        .transpose()
    }

    /// How many tokens are logged, for `/metrics` and tests.
    pub async fn timestamp_token_count(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM timestamp_tokens")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }
}

//! The time-stamp token log: every token the TSA hands out, written before
//! the reply leaves, so a token shown years later can be confirmed as one
//! this TSA made (and a forged one with a valid-looking serial is not).
//!
//! Tokens are written by commit group, one row per group
//! (`timestamp_token_batches`), and a token's serial names its row
//! ([`LogPlace`]): the row per token that logging cost before was a third of
//! a token's price on two cores, while confirming a token still reads one
//! row by its key. Tokens logged before 0020 stay in `timestamp_tokens`, one
//! row each, and are read from there.

use der::asn1::{OctetString, OctetStringRef, Utf8StringRef};
use der::{Decode, Encode};
use sqlx::Row;

use crate::{Result, Store, StoreError, rows};

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

/// Where a token is logged: its writer's stream, the batch (commit group)
/// and its place in the batch. The token's serial is made from it, so the
/// serial alone finds the row, and serials are unique across nodes because
/// streams are numbered by the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogPlace {
    /// The writer's stream ([`Store::new_timestamp_stream`]).
    pub stream: u32,
    /// The batch within the stream, counted from 0.
    pub batch: u32,
    /// The token's place in the batch.
    pub index: u16,
    /// The stream's 64 random bits: should a stream number come round
    /// again (a database restored from a backup, a replica promoted without
    /// the last rows), serials still differ, and a lookup does not take the
    /// other stream's token for this one.
    pub salt: [u8; 8],
}

/// The first octet of a serial made from a [`LogPlace`]: positive, and
/// unlike the 0x40 of the serials logged one row per token before.
const PLACE_SERIAL: u8 = 0x41;

impl LogPlace {
    /// The token's serialNumber: 0x41, stream, batch, index and the
    /// stream's salt, big-endian (19 octets, a positive INTEGER).
    pub fn serial(&self) -> [u8; 19] {
        let mut b = [0u8; 19];
        b[0] = PLACE_SERIAL;
        b[1..5].copy_from_slice(&self.stream.to_be_bytes());
        b[5..9].copy_from_slice(&self.batch.to_be_bytes());
        b[9..11].copy_from_slice(&self.index.to_be_bytes());
        b[11..].copy_from_slice(&self.salt);
        b
    }

    /// The place a serial names, when it is one made by [`LogPlace::serial`].
    pub fn from_serial(serial: &[u8]) -> Option<Self> {
        let b: &[u8; 19] = serial.try_into().ok()?;
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&b[11..]);
        (b[0] == PLACE_SERIAL).then(|| Self {
            stream: u32::from_be_bytes([b[1], b[2], b[3], b[4]]),
            batch: u32::from_be_bytes([b[5], b[6], b[7], b[8]]),
            index: u16::from_be_bytes([b[9], b[10]]),
            salt,
        })
    }

    fn row_id(stream: u32, batch: u32) -> i64 {
        (i64::from(stream) << 32) | i64::from(batch)
    }
}

/// The tokens of one commit group, by their index in it.
#[derive(Clone, Debug)]
pub struct TokenBatch {
    /// The writer's stream.
    pub stream: u32,
    /// The batch's number in the stream.
    pub batch: u32,
    /// The stream's salt ([`LogPlace::salt`]).
    pub salt: [u8; 8],
    /// Each token with its index; `serial` is not stored (the place is).
    pub tokens: Vec<(u16, TokenRecord)>,
}

/// One token inside a batch row's `records` (DER, SEQUENCE OF this).
#[derive(Clone, Debug, PartialEq, Eq, der::Sequence)]
struct LoggedToken {
    index: u16,
    gen_time: i64,
    policy: String,
    hash_algorithm: String,
    imprint: OctetString,
    signer_serial: String,
    token_sha256: OctetString,
    nonce: Option<String>,
}

/// A [`LoggedToken`] encoded from the record in place: the writer
/// encodes every token of a batch, and copying each one's strings first
/// showed in the profile.
#[derive(der::Sequence)]
struct LoggedTokenRef<'a> {
    index: u16,
    gen_time: i64,
    policy: Utf8StringRef<'a>,
    hash_algorithm: Utf8StringRef<'a>,
    imprint: &'a OctetStringRef,
    signer_serial: Utf8StringRef<'a>,
    token_sha256: &'a OctetStringRef,
    nonce: Option<Utf8StringRef<'a>>,
}

fn encode_batch(tokens: &[(u16, TokenRecord)]) -> std::result::Result<Vec<u8>, der::Error> {
    tokens
        .iter()
        .map(|(index, t)| {
            Ok(LoggedTokenRef {
                index: *index,
                gen_time: t.gen_time,
                policy: Utf8StringRef::new(&t.policy)?,
                hash_algorithm: Utf8StringRef::new(&t.hash_algorithm)?,
                imprint: OctetStringRef::new(&t.imprint)?,
                signer_serial: Utf8StringRef::new(&t.signer_serial)?,
                token_sha256: OctetStringRef::new(&t.token_sha256)?,
                nonce: t.nonce.as_deref().map(Utf8StringRef::new).transpose()?,
            })
        })
        .collect::<der::Result<Vec<_>>>()?
        .to_der()
}

fn corrupt(e: der::Error) -> StoreError {
    StoreError::Db(sqlx::Error::Decode(
        format!("timestamp_token_batches.records: {e}").into(),
    ))
}

impl Store {
    /// Numbers a new token log writer: its serials cannot meet another's.
    pub async fn new_timestamp_stream(&self) -> Result<u32> {
        let id: i64 = sqlx::query(
            "INSERT INTO timestamp_token_streams (started_at) VALUES ($1) RETURNING id",
        )
        .bind(crate::now_secs())
        .fetch_one(&self.pool)
        .await?
        .try_get("id")?;
        u32::try_from(id)
            .map_err(|_| StoreError::Conflict("the token log has run out of stream numbers".into()))
    }

    /// Logs commit groups, one row each, in one transaction: all or none.
    /// A batch already logged fails the whole call (its tokens are never
    /// sent).
    pub async fn log_timestamp_batches(&self, batches: &[TokenBatch]) -> Result<()> {
        let mut encoded = Vec::with_capacity(batches.len());
        for b in batches.iter().filter(|b| !b.tokens.is_empty()) {
            let times = b.tokens.iter().map(|(_, t)| t.gen_time);
            encoded.push((
                LogPlace::row_id(b.stream, b.batch),
                b.salt.to_vec(),
                b.tokens.len() as i64,
                times.clone().min().unwrap_or(0),
                times.max().unwrap_or(0),
                encode_batch(&b.tokens).map_err(corrupt)?,
            ));
        }
        if encoded.is_empty() {
            return Ok(());
        }
        // One statement is atomic by itself: a commit group that fits in one
        // (nearly always) costs one round trip to the database, not three.
        let mut tx = match encoded.len() > rows::CHUNK {
            true => Some(self.pool.begin().await?),
            false => None,
        };
        for chunk in encoded.chunks(rows::CHUNK) {
            let sql = format!(
                "INSERT INTO timestamp_token_batches \
                 (id, salt, tokens, first_gen_time, last_gen_time, records) VALUES {}",
                rows::values(
                    self.backend(),
                    chunk.len(),
                    6,
                    1,
                    &["", "bytea", "", "", "", "bytea"]
                )
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, salt, n, first, last, records) in chunk {
                q = q
                    .bind(id)
                    .bind(salt)
                    .bind(n)
                    .bind(first)
                    .bind(last)
                    .bind(records);
            }
            match tx.as_mut() {
                Some(tx) => q.execute(&mut **tx).await?,
                None => q.execute(&self.pool).await?,
            };
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        Ok(())
    }

    /// The logged token with this serial (upper-case hex), if any: from its
    /// batch row for serials that name one, else from the per-token log.
    pub async fn timestamp_token(&self, serial: &str) -> Result<Option<TokenRecord>> {
        let place = hex::decode(serial)
            .ok()
            .and_then(|b| LogPlace::from_serial(&b));
        match place {
            Some(p) => self.batched_token(serial, p).await,
            None => self.unbatched_token(serial).await,
        }
    }

    async fn batched_token(&self, serial: &str, p: LogPlace) -> Result<Option<TokenRecord>> {
        let Some(row) =
            sqlx::query("SELECT salt, records FROM timestamp_token_batches WHERE id = $1")
                .bind(LogPlace::row_id(p.stream, p.batch))
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        // Another life of the same stream number: not this token's row.
        let salt: Vec<u8> = row.try_get("salt")?;
        if salt != p.salt {
            return Ok(None);
        }
        let records: Vec<u8> = row.try_get("records")?;
        let logged = Vec::<LoggedToken>::from_der(&records).map_err(corrupt)?;
        Ok(logged
            .into_iter()
            .find(|t| t.index == p.index)
            .map(|t| TokenRecord {
                serial: serial.to_ascii_uppercase(),
                gen_time: t.gen_time,
                policy: t.policy,
                hash_algorithm: t.hash_algorithm,
                imprint: t.imprint.into_bytes().into_vec(),
                nonce: t.nonce,
                signer_serial: t.signer_serial,
                token_sha256: t.token_sha256.into_bytes().into_vec(),
            }))
    }

    async fn unbatched_token(&self, serial: &str) -> Result<Option<TokenRecord>> {
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
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM timestamp_tokens) AS one, \
             (SELECT CAST(COALESCE(SUM(tokens), 0) AS BIGINT) FROM timestamp_token_batches) AS batched",
        )
        .fetch_one(&self.pool)
        .await?;
        let one: i64 = row.try_get("one")?;
        let batched: i64 = row.try_get("batched")?;
        Ok(one + batched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u8, nonce: bool) -> TokenRecord {
        TokenRecord {
            serial: String::new(),
            gen_time: 1_800_000_000 + i64::from(i),
            policy: "1.3.6.1.4.1.32473.3161.1".into(),
            hash_algorithm: "sha384".into(),
            imprint: vec![i; 48],
            nonce: nonce.then(|| format!("{i:02X}7F")),
            signer_serial: "4A0B".into(),
            token_sha256: vec![i ^ 0x5a; 32],
        }
    }

    #[test]
    fn a_serial_names_its_place_and_nothing_else_does() {
        let p = LogPlace {
            stream: 0x0102_0304,
            batch: u32::MAX,
            index: 0xfffe,
            salt: [0x9c; 8],
        };
        let s = p.serial();
        assert_eq!(s[0], 0x41, "positive, and not the older 0x40 form");
        assert_eq!(LogPlace::from_serial(&s), Some(p));
        // The per-token log's serials (16 octets, 0x40) and wrong lengths
        // name no batch.
        let mut old = [0u8; 16];
        old[0] = 0x40;
        assert_eq!(LogPlace::from_serial(&old), None);
        assert_eq!(LogPlace::from_serial(&s[..18]), None);
        let mut other = s;
        other[0] = 0x40;
        assert_eq!(LogPlace::from_serial(&other), None);
        assert_ne!(
            LogPlace::row_id(1, 0),
            LogPlace::row_id(0, u32::MAX),
            "streams never share a row"
        );
    }

    #[test]
    fn a_batch_reads_back_token_by_token() {
        let tokens: Vec<_> = (0..40u8)
            .map(|i| (u16::from(i) * 3, record(i, i % 2 == 0)))
            .collect();
        let der = encode_batch(&tokens).unwrap();
        let back = Vec::<LoggedToken>::from_der(&der).unwrap();
        assert_eq!(back.len(), 40);
        for ((index, t), l) in tokens.iter().zip(&back) {
            assert_eq!(l.index, *index);
            assert_eq!(l.gen_time, t.gen_time);
            assert_eq!(l.nonce, t.nonce);
            assert_eq!(l.imprint.as_bytes(), t.imprint.as_slice());
            assert_eq!(l.token_sha256.as_bytes(), t.token_sha256.as_slice());
            assert_eq!(
                (&l.policy, &l.hash_algorithm, &l.signer_serial),
                (&t.policy, &t.hash_algorithm, &t.signer_serial)
            );
        }
    }
}

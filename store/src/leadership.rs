//! One node does each periodic job (CRL generation) in a multi-node
//! deployment.

use sqlx::Row;

use crate::{Result, Store};

/// Being the one node that does a periodic job (CRL generation) in a
/// multi-node deployment: a PostgreSQL session advisory lock, held by a
/// connection taken out of the pool, released when that connection closes
/// (this value dropped, or the process gone). SQLite is single-node: always leader.
pub struct Leadership {
    conn: Option<sqlx::AnyConnection>,
}

impl Leadership {
    /// Whether the lock is still held (its connection still answers).
    pub async fn alive(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(c) => sqlx::query("SELECT 1").execute(&mut *c).await.is_ok(),
        }
    }
}

impl Store {
    /// Tries to become the leader for `job`; `None` when another node is.
    pub async fn try_leadership(&self, job: &str) -> Result<Option<Leadership>> {
        if self.backend == crate::Backend::Sqlite {
            return Ok(Some(Leadership { conn: None }));
        }
        // A stable 63-bit key per job name (FNV-1a).
        let key = job.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }) >> 1;
        let mut conn = self.pool.acquire().await?.detach();
        let row = sqlx::query("SELECT pg_try_advisory_lock($1) AS ok")
            .bind(key as i64)
            .fetch_one(&mut conn)
            .await?;
        let ok: bool = row.try_get("ok")?;
        Ok(ok.then_some(Leadership { conn: Some(conn) }))
    }
}

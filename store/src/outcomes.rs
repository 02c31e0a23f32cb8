//! The answered personalization requests the pilot report counts; they
//! hold no personal data.

use sqlx::Row;

use crate::now_micros;
use crate::{Result, Store};

/// One answered personalization request, for the pilot report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// When it was answered (Unix microseconds).
    pub at: i64,
    /// The district office the request came from (SOATO code).
    pub district: String,
    /// `issued`, `refused` or `failed`.
    pub outcome: String,
    /// Refusals: the rule; failures: a short cause; `None` when issued.
    pub reason: Option<String>,
    /// Certificates issued (0 unless `issued`).
    pub certificates: i64,
    /// How long the answer took, in microseconds.
    pub latency_us: i64,
}

impl Store {
    /// Counts a refused or failed request for the pilot report.
    pub async fn record_outcome(
        &self,
        district: &str,
        outcome: &str,
        reason: &str,
        latency_us: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO card_outcomes (at, district, outcome, reason, certificates, latency_us) \
             VALUES ($1, $2, $3, $4, 0, $5)",
        )
        .bind(now_micros())
        .bind(district)
        .bind(outcome)
        .bind(reason)
        .bind(latency_us)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Outcomes with `from <= at < to` (Unix microseconds).
    pub async fn outcomes(&self, from: i64, to: i64) -> Result<Vec<Outcome>> {
        let rows = sqlx::query(
            "SELECT at, district, outcome, reason, certificates, latency_us FROM card_outcomes \
             WHERE at >= $1 AND at < $2 ORDER BY at",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Outcome {
                    at: r.try_get("at")?,
                    district: r.try_get("district")?,
                    outcome: r.try_get("outcome")?,
                    reason: r.try_get("reason")?,
                    certificates: r.try_get("certificates")?,
                    latency_us: r.try_get("latency_us")?,
                })
            })
            .collect()
    }
}

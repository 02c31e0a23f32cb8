//! Certificates from intent to issued: the to-be-signed bytes committed
//! before the key signs, the signed certificate and its audit entry after.

use sqlx::Row;

use crate::audit::{self, AuditEvent};
use crate::now_secs;
use crate::{Result, Store, rows};

/// A certificate whose to-be-signed bytes are fixed, before the key signs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    /// Upper-case hex, as OpenSSL prints it; unique across all CAs.
    pub serial: String,
    /// The issuing CA's name (`root`, `issuing`).
    pub issuer: String,
    /// The certificate profile it was built from.
    pub profile: String,
    /// The subject as an RFC 4514 string, for people and logs.
    pub subject: String,
    /// The holder's PINFL; `None` when the certificate names no person.
    pub pinfl: Option<String>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// The DER TBSCertificate the key is to sign. Emptied once the signed
    /// certificate is stored, since that holds it.
    pub tbs: Vec<u8>,
    /// The CRL shard written into the certificate's CRL distribution point
    /// (`None`: the CA's whole CRL).
    pub crl_shard: Option<i64>,
    /// What the caller wants issued once, if anything (the RA's card
    /// jobs and citizens' keys use it).
    pub once: Option<IssueOnce>,
}

/// A certificate the caller wants issued once: at most one certificate per
/// (key, role), enforced by the database. Opaque to the CA, which records
/// it with the intent; the RA keys its card jobs and citizens' keys with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueOnce {
    /// The caller's key for one unit of work (stored as `job`).
    pub key: String,
    /// The certificate's role in it.
    pub role: String,
}

/// A certificate's row: what was recorded before signing, and how far
/// issuance got.
#[derive(Clone, Debug)]
pub struct CertificateRecord {
    /// The intent as recorded (`tbs` is empty once issued).
    pub intent: Intent,
    /// The signed certificate, DER; `None` while pending (and for the
    /// benchmarks' synthetic rows).
    pub der: Option<Vec<u8>>,
    /// `pending` or `issued`.
    pub status: String,
    /// When the intent was recorded (Unix seconds).
    pub created_at: i64,
    /// When the signed certificate was stored (Unix seconds); `None` while
    /// pending.
    pub issued_at: Option<i64>,
}

/// The types of an intent's columns as [`bind_intent`] binds them, for
/// VALUES lists on PostgreSQL.
pub(crate) const INTENT_CASTS: &[&str] = &[
    "text", "text", "text", "text", "text", "bigint", "bigint", "bytea", "bigint", "text", "text",
];

/// Binds an intent's columns: serial, issuer, profile, subject, pinfl,
/// not_before, not_after, tbs, crl_shard, job, job_role.
pub(crate) fn bind_intent<'q>(q: rows::Query<'q>, i: &'q Intent) -> rows::Query<'q> {
    q.bind(&i.serial)
        .bind(&i.issuer)
        .bind(&i.profile)
        .bind(&i.subject)
        .bind(i.pinfl.clone())
        .bind(i.not_before)
        .bind(i.not_after)
        .bind(&i.tbs)
        .bind(i.crl_shard)
        .bind(i.once.as_ref().map(|o| o.key.clone()))
        .bind(i.once.as_ref().map(|o| o.role.clone()))
}

pub(crate) fn intent_from_row(row: &sqlx::any::AnyRow) -> Result<Intent> {
    Ok(Intent {
        serial: row.try_get("serial")?,
        issuer: row.try_get("issuer")?,
        profile: row.try_get("profile")?,
        subject: row.try_get("subject")?,
        pinfl: row.try_get("pinfl")?,
        not_before: row.try_get("not_before")?,
        not_after: row.try_get("not_after")?,
        tbs: row.try_get("tbs")?,
        crl_shard: row.try_get("crl_shard")?,
        once: match (
            row.try_get::<Option<String>, _>("job")?,
            row.try_get::<Option<String>, _>("job_role")?,
        ) {
            (Some(key), Some(role)) => Some(IssueOnce { key, role }),
            _ => None,
        },
    })
}

impl Store {
    /// Commits intents before any key signs them: after a crash, a serial is
    /// never reused and the to-be-signed bytes can be signed again as they were.
    ///
    /// Returns, per intent, whether it was recorded: `false` means its card job
    /// already has a certificate in that role (another request got there first),
    /// so this one must not be signed.
    pub async fn record_intents(&self, intents: &[Intent]) -> Result<Vec<bool>> {
        let mut tx = self.pool.begin().await?;
        let recorded = self.record_intents_in(&mut tx, intents).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// Stores signed certificates and their audit entries in one transaction.
    pub async fn complete_issuance(&self, issued: &[(String, Vec<u8>, AuditEvent)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        self.complete_issuance_in(&mut tx, issued).await?;
        let events: Vec<&AuditEvent> = issued.iter().map(|(_, _, e)| e).collect();
        audit::append(self.backend(), &mut tx, &events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Intents recorded at least `min_age_secs` ago and never completed. The age
    /// keeps one process from finishing another's issuance that is still under
    /// way (several nodes may share a database); a live issuance takes
    /// milliseconds, so an old pending intent belongs to a process that died.
    pub async fn pending_intents(&self, min_age_secs: i64) -> Result<Vec<Intent>> {
        let rows = sqlx::query(
            "SELECT c.serial, c.issuer, c.profile, c.subject, c.pinfl, c.not_before, c.not_after, \
             c.tbs, c.crl_shard, c.job, c.job_role FROM pending_certificates p \
             JOIN certificates c ON c.serial = p.serial \
             WHERE c.status = 'pending' AND p.created_at <= $1 ORDER BY p.created_at",
        )
        .bind(now_secs() - min_age_secs)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(intent_from_row).collect()
    }

    /// The certificate `serial`, pending or issued; `None` for a serial never
    /// recorded.
    pub async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>> {
        let row = sqlx::query(
            "SELECT serial, issuer, profile, subject, pinfl, not_before, not_after, tbs, crl_shard, der, \
             job, job_role, status, created_at, issued_at FROM certificates WHERE serial = $1",
        )
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(CertificateRecord {
            intent: intent_from_row(&row)?,
            der: row.try_get("der")?,
            status: row.try_get("status")?,
            created_at: row.try_get("created_at")?,
            issued_at: row.try_get("issued_at")?,
        }))
    }

    /// Counts certificates by status, for metrics and tests.
    pub async fn count_certificates(&self, status: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM certificates WHERE status = $1")
            .bind(status)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Certificates by profile and status, for `/metrics`.
    pub async fn certificate_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT profile, status, COUNT(*) AS n FROM certificates GROUP BY profile, status ORDER BY profile, status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("profile")?, r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }
}

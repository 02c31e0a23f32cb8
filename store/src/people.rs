//! A person's certificates and an object's audit trail as operators look
//! them up.

use sqlx::Row;

use crate::{Result, Store};

/// A certificate as an operator sees it in a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateSummary {
    /// Upper-case hex.
    pub serial: String,
    /// The certificate profile it was built from.
    pub profile: String,
    /// The subject as an RFC 4514 string.
    pub subject: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// `pending` or `issued`.
    pub status: String,
    /// `good`, `suspended` or `revoked`.
    pub revocation: String,
    /// When it was revoked or suspended (Unix seconds).
    pub revoked_at: Option<i64>,
    /// RFC 5280 reason code (6, certificateHold, while suspended); `None`
    /// while good.
    pub revocation_reason: Option<i64>,
    /// The holder's PINFL; `None` when the certificate names no person.
    pub pinfl: Option<String>,
    /// The [`IssueOnce`](crate::IssueOnce) key it was issued under (a card
    /// job), if any.
    pub job: Option<String>,
    /// Its role under that key (`auth`, `sign`), if any.
    pub role: Option<String>,
}

macro_rules! summary_columns {
    () => {
        "serial, profile, subject, pinfl, not_before, not_after, status, revocation, revoked_at, revocation_reason, job, job_role"
    };
}

fn summary_from_row(r: &sqlx::any::AnyRow) -> Result<CertificateSummary> {
    Ok(CertificateSummary {
        serial: r.try_get("serial")?,
        profile: r.try_get("profile")?,
        subject: r.try_get("subject")?,
        not_before: r.try_get("not_before")?,
        not_after: r.try_get("not_after")?,
        status: r.try_get("status")?,
        revocation: r.try_get("revocation")?,
        revoked_at: r.try_get("revoked_at")?,
        revocation_reason: r.try_get("revocation_reason")?,
        pinfl: r.try_get("pinfl")?,
        job: r.try_get("job")?,
        role: r.try_get("job_role")?,
    })
}

impl Store {
    /// A person's certificates, newest first, for operators.
    pub async fn certificates_of_person(&self, pinfl: &str) -> Result<Vec<CertificateSummary>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            summary_columns!(),
            " FROM certificates WHERE pinfl = $1 ORDER BY not_before DESC, serial"
        ))
        .bind(pinfl)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(summary_from_row).collect()
    }

    /// Every certificate of a person with its profile and its bytes: the
    /// signed certificate, or the to-be-signed one while pending. The RA
    /// reads the keys out of them (a person has a handful).
    pub async fn certificate_bytes_of_person(
        &self,
        pinfl: &str,
    ) -> Result<Vec<(String, String, bool, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT serial, profile, der IS NOT NULL AS signed, COALESCE(der, tbs) AS bytes \
             FROM certificates WHERE pinfl = $1",
        )
        .bind(pinfl)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let signed: bool = r
                    .try_get::<bool, _>("signed")
                    .or_else(|_| r.try_get::<i64, _>("signed").map(|v| v != 0))?;
                Ok((
                    r.try_get("serial")?,
                    r.try_get("profile")?,
                    signed,
                    r.try_get("bytes")?,
                ))
            })
            .collect()
    }

    /// One certificate as operators see it, pending or issued; `None` for an
    /// unknown serial.
    pub async fn certificate_summary(&self, serial: &str) -> Result<Option<CertificateSummary>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            summary_columns!(),
            " FROM certificates WHERE serial = $1"
        ))
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(summary_from_row).transpose()
    }

    /// Audit entries about one object (a job, a serial), oldest first.
    pub async fn audit_of(&self, object: &str) -> Result<Vec<(i64, String, String, String)>> {
        let rows = sqlx::query(
            "SELECT at, actor, action, details FROM audit_log WHERE object = $1 ORDER BY seq",
        )
        .bind(object)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("at")?,
                    r.try_get("actor")?,
                    r.try_get("action")?,
                    r.try_get("details")?,
                ))
            })
            .collect()
    }
}

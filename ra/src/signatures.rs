//! The signature verification service: is this CMS signature over this
//! content valid, who made it, when (by their own claim), and what has
//! become of the certificate since.
//!
//! The verdict judges the certificate at the signing time: a certificate
//! revoked after a document was signed leaves the signature valid (the
//! status now is reported beside it). Without a time-stamp the signing time
//! is the signer's claim; a signature with none is judged as of now.

use std::time::SystemTime;

use serde::Serialize;

use crate::trust::{Assessment, Problem, Purpose, Trust};

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub valid: bool,
    pub reasons: Vec<Problem>,
    /// Unix seconds, as the signer claimed it.
    pub signing_time: Option<i64>,
    pub attached: Option<bool>,
    pub signer: Option<Assessment>,
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Judges `signature` over `content` (when detached). Only a failure to
/// reach the database is an error; everything about the input is a verdict.
pub async fn verify(
    trust: &Trust,
    signature: &[u8],
    content: Option<&[u8]>,
) -> Result<Verdict, String> {
    let v = match crate::cms::verify(signature, content) {
        Ok(v) => v,
        Err(e) => {
            return Ok(Verdict {
                valid: false,
                reasons: vec![Problem {
                    code: e.code,
                    detail: e.detail,
                }],
                signing_time: None,
                attached: None,
                signer: None,
            });
        }
    };
    let now = SystemTime::now();
    let mut reasons = Vec::new();
    let at = match v.signing_time {
        Some(t) if t > now + std::time::Duration::from_secs(300) => {
            reasons.push(Problem {
                code: "signed_in_future",
                detail: format!("the claimed signing time {} is in the future", secs(t)),
            });
            now
        }
        Some(t) => t,
        None => now,
    };
    let a = trust
        .assess(&v.signer, &v.signer_der, Purpose::Document, at)
        .await?;
    reasons.extend(a.problems.iter().cloned());
    Ok(Verdict {
        valid: reasons.is_empty(),
        reasons,
        signing_time: v.signing_time.map(secs),
        attached: Some(v.attached),
        signer: Some(a),
    })
}

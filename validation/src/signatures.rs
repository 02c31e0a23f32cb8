//! The signature verification service: is this CMS signature over this
//! content valid, who made it, and may it be relied on now.
//!
//! The law gives a signature force at its signing time only when that time
//! can be proven (`../shared/domain.md`). The signer's own `signingTime`
//! attribute proves nothing: a holder whose key was stolen, or who reported
//! it compromised, could claim any time before the revocation. So a
//! signature is judged at the moment of verification unless a proof of
//! existence says otherwise; the claimed time is shown, labelled as a claim.
//! Muhr accepts no proof of existence yet (time-stamp tokens come with the
//! time-stamping authority), so today every signature is judged now: a
//! certificate revoked or suspended for any reason invalidates every
//! signature it made, which is what keyCompromise demands and the safe side
//! for every other reason.

use std::time::SystemTime;

use serde::Serialize;

use crate::trust::{Assessment, Problem, Purpose, Trust};

/// Where the time the certificate was judged at came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// No proof of existence: the signature is judged as of now.
    VerificationTime,
}

/// The verification service's answer, sent as JSON to relying parties and
/// printed by `muhr verify`: its fields are part of the API.
#[derive(Debug, Serialize)]
pub struct Verdict {
    /// True exactly when `reasons` is empty.
    pub valid: bool,
    /// Every reason the signature is not accepted: one CMS failure (a
    /// [`crate::cms::CmsError`] code), or the signer certificate's problems.
    pub reasons: Vec<Problem>,
    /// Unix seconds the signer's certificate was judged at.
    pub judged_at: i64,
    /// Where `judged_at` came from; today always the verification time.
    pub judged_at_source: TimeSource,
    /// Why that time, in a sentence for the relying party.
    pub judged_at_why: &'static str,
    /// Unix seconds from the signer's signingTime attribute: a claim, never
    /// used to judge anything.
    pub claimed_signing_time: Option<i64>,
    /// Whether the message carried its content; None when the CMS check
    /// failed.
    pub attached: Option<bool>,
    /// The signer's certificate as assessed; None when the CMS check failed
    /// (no certificate is assessed then).
    pub signer: Option<Assessment>,
}

const NO_PROOF: &str = "no proof of existence (time-stamp token) accompanies the signature, \
so it is judged at the time of verification; a claimed signing time proves nothing";

use muhr_store::unix_secs as secs;

/// Judges `signature` over `content` (when detached). Only a failure to
/// reach the database is an error; everything about the input is a verdict.
pub async fn verify(
    trust: &Trust,
    signature: &[u8],
    content: Option<&[u8]>,
) -> Result<Verdict, String> {
    let now = SystemTime::now();
    let v = match crate::cms::verify(signature, content) {
        Ok(v) => v,
        Err(e) => {
            return Ok(Verdict {
                valid: false,
                reasons: vec![Problem {
                    code: e.code,
                    detail: e.detail,
                }],
                judged_at: secs(now),
                judged_at_source: TimeSource::VerificationTime,
                judged_at_why: NO_PROOF,
                claimed_signing_time: None,
                attached: None,
                signer: None,
            });
        }
    };
    let a = trust
        .assess(&v.signer, &v.signer_der, Purpose::Document, now)
        .await?;
    let reasons = a.problems.clone();
    Ok(Verdict {
        valid: reasons.is_empty(),
        reasons,
        judged_at: secs(now),
        judged_at_source: TimeSource::VerificationTime,
        judged_at_why: NO_PROOF,
        claimed_signing_time: v.signing_time.map(secs),
        attached: Some(v.attached),
        signer: Some(a),
    })
}

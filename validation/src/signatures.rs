//! The signature verification service: is this CMS signature over this
//! content valid, who made it, and may it be relied on now.
//!
//! The law gives a signature force at its signing time only when that time
//! can be proven (`../shared/domain.md`). The signer's own `signingTime`
//! attribute proves nothing: a holder whose key was stolen, or who reported
//! it compromised, could claim any time before the revocation. So a
//! signature is judged at the moment of verification unless a proof of
//! existence says otherwise; the claimed time is shown, labelled as a claim.
//!
//! The proof Muhr accepts is a signature time-stamp (CAdES-T): a token from
//! a trusted TSA over the signature value ([`crate::timestamp`]). With one,
//! the certificate is judged at the token's time (genTime plus its
//! accuracy): revoked or suspended later, the signature stands. Except for
//! keyCompromise, at any time: the key may have been in other hands well
//! before anyone reported it, and whoever held it could have had a token
//! made over a signature the holder never made. Without a valid token,
//! every signature is judged now.

use std::time::SystemTime;

use serde::Serialize;

use crate::timestamp::TimeStampReport;
use crate::trust::{Assessment, Problem, Purpose, Trust};

/// Where the time the certificate was judged at came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// No proof of existence: the signature is judged as of now.
    VerificationTime,
    /// A valid signature time-stamp: judged at its genTime plus accuracy.
    TimeStamp,
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
    /// Where `judged_at` came from.
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
    /// The signature time-stamp, when the signature carries one: the one
    /// used, or the first refused when none is valid (a refused token does
    /// not invalidate the signature; it is judged now instead).
    pub time_stamp: Option<TimeStampReport>,
}

const NO_PROOF: &str = "no proof of existence (time-stamp token) accompanies the signature, \
so it is judged at the time of verification; a claimed signing time proves nothing";

const BAD_PROOF: &str = "the signature's time-stamp proves nothing (see time_stamp), \
so it is judged at the time of verification";

const PROVEN: &str = "a valid time-stamp token over the signature value proves it existed then \
(genTime plus the token's accuracy); a revocation after it leaves the signature standing, \
except for keyCompromise";

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
                time_stamp: None,
            });
        }
    };
    // The earliest valid token is the proof; failing any, the first shown.
    let mut time_stamp: Option<TimeStampReport> = None;
    for token in &v.time_stamp_tokens {
        let r = crate::timestamp::verify(trust, token, &v.signature).await?;
        let better = match (&time_stamp, r.proof()) {
            (None, _) => true,
            (Some(old), Some(p)) => old.proof().is_none_or(|o| p < o),
            (Some(_), None) => false,
        };
        if better {
            time_stamp = Some(r);
        }
    }
    let proof = time_stamp
        .as_ref()
        .and_then(TimeStampReport::proof)
        .map(|p| p.min(now));
    let (at, source, why) = match (proof, &time_stamp) {
        (Some(p), _) => (p, TimeSource::TimeStamp, PROVEN),
        (None, Some(_)) => (now, TimeSource::VerificationTime, BAD_PROOF),
        (None, None) => (now, TimeSource::VerificationTime, NO_PROOF),
    };
    let mut a = match source {
        TimeSource::TimeStamp => {
            trust
                .assess_proven(&v.signer, &v.signer_der, Purpose::Document, at)
                .await?
        }
        TimeSource::VerificationTime => {
            trust
                .assess(&v.signer, &v.signer_der, Purpose::Document, at)
                .await?
        }
    };
    if source == TimeSource::TimeStamp
        && a.revocation_reason == Some("keyCompromise")
        && !a.problems.iter().any(|p| p.code == "revoked")
    {
        a.problems.push(Problem {
            code: "revoked",
            detail: format!(
                "revoked for keyCompromise at {}: whoever held the key may have made this \
                 signature and had it time-stamped before the revocation",
                a.revoked_at.unwrap_or(0)
            ),
        });
    }
    let reasons = a.problems.clone();
    Ok(Verdict {
        valid: reasons.is_empty(),
        reasons,
        judged_at: secs(at),
        judged_at_source: source,
        judged_at_why: why,
        claimed_signing_time: v.signing_time.map(secs),
        attached: Some(v.attached),
        signer: Some(a),
        time_stamp,
    })
}

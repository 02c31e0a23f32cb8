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
//!
//! A signed PDF ([`verify_pdf`]) is judged signature by signature, each as
//! a detached CMS signature over the bytes its `/ByteRange` covers
//! ([`crate::pdf`]), each document time-stamp as a proof that its revision
//! existed, then as a whole by the rules on [`PdfVerdict`]
//! (`docs/pdf-signatures.md`).

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

/// Signature time-stamps read per signature; more are ignored.
pub const MAX_TOKENS: usize = 4;

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
    // A few are read at most: each costs a signature check and reads.
    for token in v.time_stamp_tokens.iter().take(MAX_TOKENS) {
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

/// What a PDF signature dictionary is, by its `/SubFilter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PdfSignatureKind {
    /// `adbe.pkcs7.detached` or `ETSI.CAdES.detached` (PAdES): someone's
    /// signature over the revision it covers, judged as [`verify`] judges a
    /// detached CMS signature (PAdES-B-T through its signature time-stamp).
    Signature,
    /// `ETSI.RFC3161`: a TSA's token over the revision it covers, proving
    /// when that revision existed and nothing about who wrote it.
    DocumentTimeStamp,
    /// Any other `/SubFilter` (`adbe.pkcs7.sha1`, `adbe.x509.rsa_sha1`…)
    /// or none: not checked, so never valid.
    Unsupported,
}

/// One signature dictionary of a PDF and what it proves: part of the API.
#[derive(Debug, Serialize)]
pub struct PdfSignatureReport {
    /// The signature field's name, for display (it is not necessarily
    /// signed by this signature).
    pub field: Option<String>,
    /// `/SubFilter` as written.
    pub sub_filter: Option<String>,
    /// What the `/SubFilter` makes of it.
    pub kind: PdfSignatureKind,
    /// `[a, b, c, d]`: bytes `a..a+b` and `c..c+d` are covered.
    pub byte_range: [u64; 4],
    /// Nothing follows the covered bytes: the file is exactly the revision
    /// this entry covers.
    pub covers_whole_file: bool,
    /// Bytes were added after this entry's revision (later signatures,
    /// form filling, or anyone's new revision: what a reader shows may
    /// differ from what was signed). Always `!covers_whole_file`.
    pub changed_after: bool,
    /// How many revisions (`%%EOF` markers) follow the covered bytes.
    pub later_revisions: usize,
    /// True exactly when `problems` is empty: the entry is valid for the
    /// bytes it covers. Whether the file is still those bytes is
    /// `changed_after`, judged for the document in [`PdfVerdict`].
    pub valid: bool,
    /// Why the entry is not valid: the verdict's reasons, the time-stamp
    /// report's problems, or `unsupported`.
    pub problems: Vec<Problem>,
    /// For a signature: the verdict over the bytes it covers.
    pub verdict: Option<Verdict>,
    /// For a document time-stamp: what its token proves about the bytes it
    /// covers.
    pub time_stamp: Option<TimeStampReport>,
}

/// The verification service's answer for a PDF: part of the API.
///
/// The document is valid exactly when `problems` is empty, that is when:
/// - its signatures could be read (else the [`crate::pdf::PdfError`] code:
///   `not_pdf`, `malformed`, `bad_byte_range`, `bad_contents`,
///   `too_many_signatures`);
/// - it carries at least one signature (`no_signature`; document
///   time-stamps alone prove when a document existed, not that anyone
///   signed it);
/// - every signature and document time-stamp in it is valid for the bytes
///   it covers (`signature_not_valid`, `time_stamp_not_valid`; an
///   unsupported `/SubFilter` is not valid);
/// - a signature covers the whole file (`changed_after_signing`): what a
///   reader shows is exactly what the last signer signed. A signature
///   followed by later revisions stays acceptable only because a later
///   valid signature covers them (a counter-signature). A document
///   time-stamp does not: anyone can have one made (Muhr's own TSA is
///   public), so a page changed after signing and then time-stamped would
///   otherwise pass. This also means a PAdES-B-LTA file whose last revision
///   is validation data and a document time-stamp is reported changed: what
///   a later revision changes is not analysed (`docs/pdf-signatures.md`).
///
/// What a later signer's revision changed is not analysed either (DocMDP
/// and field locks are not checked): a counter-signature vouches for the
/// file as it is under the counter-signer's name, and each earlier
/// signature is reported `changed_after` for the relying party to see.
#[derive(Debug, Serialize)]
pub struct PdfVerdict {
    /// True exactly when `problems` is empty.
    pub valid: bool,
    /// Every reason the document is not accepted (see the type's doc).
    pub problems: Vec<Problem>,
    /// Every signature dictionary, in file order (revision order).
    pub signatures: Vec<PdfSignatureReport>,
}

/// Judges every signature and document time-stamp in `pdf`, and the
/// document as a whole ([`PdfVerdict`]). Only a failure to reach the
/// database is an error; everything about the input is a verdict.
pub async fn verify_pdf(trust: &Trust, pdf: &[u8]) -> Result<PdfVerdict, String> {
    let sigs = match crate::pdf::signatures_one_by_one(pdf) {
        Ok(s) => s,
        Err(e) => {
            return Ok(PdfVerdict {
                valid: false,
                problems: vec![Problem {
                    code: e.code,
                    detail: e.detail,
                }],
                signatures: Vec::new(),
            });
        }
    };
    let mut reports = Vec::new();
    // One signature's copy of the signed bytes at a time.
    for sig in sigs {
        reports.push(pdf_signature(trust, sig).await?);
    }
    let mut problems = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        if r.valid {
            continue;
        }
        let (code, what) = match r.kind {
            PdfSignatureKind::DocumentTimeStamp => ("time_stamp_not_valid", "document time-stamp"),
            _ => ("signature_not_valid", "signature"),
        };
        let why = r
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.code, p.detail))
            .collect::<Vec<_>>()
            .join("; ");
        problems.push(Problem {
            code,
            detail: format!("{what} {} ({}): {why}", i + 1, name(r)),
        });
    }
    let last_signature = reports
        .iter()
        .rfind(|r| r.kind != PdfSignatureKind::DocumentTimeStamp);
    match last_signature {
        None => problems.push(Problem {
            code: "no_signature",
            detail: if reports.is_empty() {
                "the document carries no signature".into()
            } else {
                "the document carries only document time-stamps: they prove when it existed, \
                 not that anyone signed it"
                    .into()
            },
        }),
        Some(last) if !last.covers_whole_file => {
            // Revisions are appended: what follows the last signature's
            // range is everything in the reports after it.
            let stamped = reports
                .iter()
                .rev()
                .take_while(|r| r.kind == PdfSignatureKind::DocumentTimeStamp)
                .count();
            problems.push(Problem {
                code: "changed_after_signing",
                detail: format!(
                    "bytes were added after the last signature ({}), in {} later revision(s): \
                     they may change what a reader shows, and no signature covers them{}",
                    name(last),
                    last.later_revisions,
                    if stamped > 0 {
                        " (a document time-stamp proves when bytes existed, not who wrote them)"
                    } else {
                        ""
                    }
                ),
            });
        }
        Some(_) => {}
    }
    Ok(PdfVerdict {
        valid: problems.is_empty(),
        problems,
        signatures: reports,
    })
}

/// How a report is named in a problem's detail.
fn name(r: &PdfSignatureReport) -> String {
    match &r.field {
        Some(f) => format!("field {f:?}"),
        None => "unnamed field".into(),
    }
}

async fn pdf_signature(
    trust: &Trust,
    sig: crate::pdf::PdfSignature,
) -> Result<PdfSignatureReport, String> {
    let kind = match sig.sub_filter.as_deref() {
        Some("adbe.pkcs7.detached" | "ETSI.CAdES.detached") => PdfSignatureKind::Signature,
        Some("ETSI.RFC3161") => PdfSignatureKind::DocumentTimeStamp,
        _ => PdfSignatureKind::Unsupported,
    };
    let (problems, verdict, time_stamp) = match kind {
        PdfSignatureKind::Signature => {
            let v = verify(trust, &sig.cms, Some(&sig.signed)).await?;
            (v.reasons.clone(), Some(v), None)
        }
        PdfSignatureKind::DocumentTimeStamp => {
            // The token's imprint is the hash of the covered bytes, so the
            // datum is those bytes, as for a signature value.
            let mut t = crate::timestamp::verify(trust, &sig.cms, &sig.signed).await?;
            for p in &mut t.problems {
                if p.code == "timestamp_mismatch" {
                    p.detail = "the document time-stamp's imprint is not the hash of the \
                                bytes its /ByteRange covers"
                        .into();
                }
            }
            (t.problems.clone(), None, Some(t))
        }
        PdfSignatureKind::Unsupported => {
            let detail = match &sig.sub_filter {
                Some(s) if s == "adbe.pkcs7.sha1" => {
                    "/SubFilter adbe.pkcs7.sha1 signs a SHA-1 hash of the document, which can be \
                     forged: not checked"
                        .to_string()
                }
                Some(s) => format!(
                    "/SubFilter {s} is not supported (adbe.pkcs7.detached, ETSI.CAdES.detached \
                     and ETSI.RFC3161 are)"
                ),
                None => "the signature dictionary has no /SubFilter: its format is unknown".into(),
            };
            (
                vec![Problem {
                    code: "unsupported",
                    detail,
                }],
                None,
                None,
            )
        }
    };
    Ok(PdfSignatureReport {
        field: sig.field,
        sub_filter: sig.sub_filter,
        kind,
        byte_range: sig.byte_range,
        covers_whole_file: sig.covers_whole_file,
        changed_after: !sig.covers_whole_file,
        later_revisions: sig.later_revisions,
        valid: problems.is_empty(),
        problems,
        verdict,
        time_stamp,
    })
}

//! Whether a certificate that made a signature can be believed: issued by
//! this CA, within its validity, allowed the key usage, and not revoked or
//! suspended at the moment that matters.
//!
//! Muhr's own certificates have their status read from the database the
//! responder serves, which is fresher than any OCSP answer (and costs one
//! indexed read). Certificates of the external CAs the operator configured
//! are checked by their OCSP responder or CRL ([`crate::external`]); any
//! other issuer is "untrusted_issuer".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use der::{Decode, Encode};
use muhr_ca::Ca;
use muhr_policies::Profile;
use serde::Serialize;
use x509_cert::Certificate;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, KeyUsages};

/// What the signature is for; it decides the key usage required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Logging in (CMS or TLS): a certificate made for authentication,
    /// digitalSignature and the clientAuth extended key usage. A signing
    /// certificate never logs in: a relying party asking its user to "sign
    /// this" must not get a login out of it, nor a login a signature.
    Login,
    /// Proof of holding a current certificate (renewal): digitalSignature.
    Authentication,
    /// A document signature: nonRepudiation or digitalSignature.
    Document,
    /// A time-stamp token: timeStamping as the only extended key usage
    /// (RFC 3161 2.3), digitalSignature or nonRepudiation.
    TimeStamping,
}

/// One reason a signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// A stable code to act on. [`Trust`] gives `untrusted_issuer`,
    /// `unknown_certificate`, `not_yet_valid`, `expired`, `wrong_purpose`,
    /// `wrong_key_usage`, `revoked`, `suspended` and `status_unavailable`;
    /// a verdict adds the [`crate::cms::CmsError`] codes, and login its own.
    pub code: &'static str,
    /// What exactly is wrong, in a sentence for people; not to be matched on.
    pub detail: String,
}

/// Everything known about the signer's certificate.
#[derive(Debug, Clone, Serialize)]
pub struct Assessment {
    /// The certificate's serial, upper-case hex.
    pub serial: String,
    /// The profile this CA issued it under; None for an external CA's
    /// certificate, or one missing from this CA's records.
    pub profile: Option<String>,
    /// The subject DN as text (`muhr_pkix::dn_text`).
    pub subject: String,
    /// Identity fields read back from the subject through the profile's
    /// templates: pinfl, surname, given_name, patronymic, tin,
    /// organization.name, organization.tin, organization.title.
    pub identity: BTreeMap<String, String>,
    /// The issue-once key recorded with the certificate (an RA card job,
    /// `renewal:<serial>` for a renewal); None when it has none, and for
    /// external CAs' certificates.
    pub job: Option<String>,
    /// The configured external CA that issued the certificate; None for
    /// this CA's own.
    pub external_ca: Option<String>,
    /// good, suspended, revoked (now); `unknown` for a foreign certificate.
    pub status_now: String,
    /// The status at the moment checked (`at`), when it differs in meaning
    /// from now: good, suspended, revoked.
    pub status_at: String,
    /// When it was revoked or suspended, Unix seconds; None when it is not
    /// (or its status is unknown).
    pub revoked_at: Option<i64>,
    /// The RFC 5280 reason's name (`keyCompromise`, ...); None when not
    /// revoked or when no reason was given.
    pub revocation_reason: Option<&'static str>,
    /// Everything that stands against relying on it; empty when it may be.
    pub problems: Vec<Problem>,
}

impl Assessment {
    /// True when nothing stands against the certificate (no problems).
    pub fn valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The latest revocation time that counts for a judgement at `at`. A
/// judgement of now counts every revocation, even one stamped a little
/// ahead by a node (or an external CA) whose clock runs fast. A proven
/// time (a time-stamp's) is a bound already: a revocation after it does
/// not count, however recent.
fn judged_until(at: SystemTime, proven: bool) -> i64 {
    if !proven && at + std::time::Duration::from_secs(300) >= SystemTime::now() {
        i64::MAX
    } else {
        secs(at)
    }
}

use muhr_store::unix_secs as secs;

/// Decides whether a signer's certificate may be believed: this CA's (status
/// from the store) and the configured external CAs' (status from their OCSP
/// or CRL). One instance is shared by login, renewal and the verification
/// service; it remembers the certificates of ours it has already seen.
pub struct Trust {
    ca: Arc<Ca>,
    external: crate::external::External,
    /// Certificates already seen to be ours, by the SHA-256 of their DER
    /// (to-be-signed, algorithm and signature), with what never changes
    /// about them: a citizen
    /// who logs in many times costs one signature check and one record
    /// read, not one per login. Only certificates that verified under our
    /// CA keys and are in the records are kept.
    known: std::sync::Mutex<std::collections::HashMap<[u8; 32], Arc<Known>>>,
}

/// What stays true of one of our certificates: its record's profile and
/// job, and the identity read back from its subject.
struct Known {
    profile: String,
    job: Option<String>,
    subject: String,
    identity: BTreeMap<String, String>,
}

/// Entries of the known-certificate memo before it starts over (a few
/// hundred bytes each).
const KNOWN_MEMO: usize = 200_000;

/// Whether [`Trust`] reads the status of our own certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusRead {
    Now,
    /// The caller confirms it where it records the act.
    Deferred,
    /// Read now, and judged at a proven time (see [`Trust::assess_proven`]).
    Proven,
}

impl Trust {
    /// Trusts this CA's certificates only.
    pub fn new(ca: Arc<Ca>) -> Self {
        Self::with_external(ca, crate::external::External::none())
    }

    /// Trusts this CA's certificates and those of the external CAs.
    pub fn with_external(ca: Arc<Ca>, external: crate::external::External) -> Self {
        Self {
            ca,
            external,
            known: Default::default(),
        }
    }

    /// The database the CA's records are read from, for the services
    /// built on this trust (login records challenge uses and usage in it).
    /// The CA itself is not handed out: nothing above validation may issue
    /// or change a certificate through it.
    pub fn store(&self) -> &muhr_store::Store {
        self.ca.store()
    }

    /// Checks `cert` as it stood at `at` (the signing time, or now); the
    /// status now is reported beside it.
    /// `der` is `cert`'s DER encoding, as it arrived (certificates seen
    /// before are recognised by it).
    pub async fn assess(
        &self,
        cert: &Certificate,
        der: &[u8],
        purpose: Purpose,
        at: SystemTime,
    ) -> Result<Assessment, String> {
        self.assess_with(cert, der, purpose, at, StatusRead::Now)
            .await
    }

    /// As [`Trust::assess`] at `proven`, a time a proof of existence (a
    /// time-stamp) vouches for: a revocation after it does not count
    /// however recent it is, where [`Trust::assess`] counts every
    /// revocation of the last minutes in case a node's clock ran fast.
    pub async fn assess_proven(
        &self,
        cert: &Certificate,
        der: &[u8],
        purpose: Purpose,
        proven: SystemTime,
    ) -> Result<Assessment, String> {
        self.assess_with(cert, der, purpose, proven, StatusRead::Proven)
            .await
    }

    /// As [`Trust::assess`] at `now`, except that the status of this CA's
    /// own certificates is not read here: such an assessment says `good`,
    /// and the caller must confirm it in the statement that records the act
    /// (a login: `require_good` in [`muhr_store::rp::ChallengeUse`]), which
    /// is both fresher and one read fewer. External CAs' certificates are
    /// checked in full, as their status comes from elsewhere.
    pub async fn assess_now_status_deferred(
        &self,
        cert: &Certificate,
        der: &[u8],
        purpose: Purpose,
        now: SystemTime,
    ) -> Result<Assessment, String> {
        self.assess_with(cert, der, purpose, now, StatusRead::Deferred)
            .await
    }

    async fn assess_with(
        &self,
        cert: &Certificate,
        der: &[u8],
        purpose: Purpose,
        at: SystemTime,
        read: StatusRead,
    ) -> Result<Assessment, String> {
        let tbs = cert.tbs_certificate();
        let serial = muhr_pkix::serial::to_hex(tbs.serial_number());
        let mut problems = Vec::new();
        let mut problem =
            |code: &'static str, detail: String| problems.push(Problem { code, detail });
        // The whole encoding: everything the signature check covers.
        let digest: [u8; 32] = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
            .as_ref()
            .try_into()
            .map_err(|_| "SHA-256 is 32 bytes".to_string())?;
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned();
        let issued_here = known.is_some() || self.issued_here(cert);
        let proven = read == StatusRead::Proven;
        if !issued_here && let Some((i, anchor)) = self.external.issuer_of(cert) {
            return Ok(self
                .assess_external(cert, purpose, at, proven, i, anchor)
                .await);
        }
        // The record: read when the status is wanted now, or when the
        // certificate is not yet known.
        let summary = if issued_here && (read != StatusRead::Deferred || known.is_none()) {
            self.ca
                .store()
                .certificate_summary(&serial)
                .await
                .map_err(|e| format!("database: {e}"))?
        } else {
            None
        };
        if known.is_none()
            && let Some(s) = &summary
        {
            let k = Arc::new(Known {
                profile: s.profile.clone(),
                job: s.job.clone(),
                subject: muhr_pkix::dn_text::to_string(tbs.subject()),
                identity: self
                    .ca
                    .profiles()
                    .get(&s.profile)
                    .map(|p| identity(cert, p))
                    .unwrap_or_default(),
            });
            let mut m = self.known.lock().unwrap_or_else(|p| p.into_inner());
            if m.len() >= KNOWN_MEMO {
                m.clear();
            }
            m.insert(digest, k.clone());
            known = Some(k);
        }
        if !issued_here {
            problem(
                "untrusted_issuer",
                format!(
                    "not issued by this CA ({})",
                    muhr_pkix::dn_text::to_string(tbs.issuer())
                ),
            );
        } else if known.is_none() {
            // Signed with our key yet absent from the database: never
            // believed, whatever the signature says.
            problem(
                "unknown_certificate",
                format!("serial {serial} is not in this CA's records"),
            );
        }
        for p in certificate_problems(cert, purpose, at) {
            problem(p.code, p.detail);
        }
        let (status_now, revoked_at, reason) = match (&summary, &known) {
            (Some(s), _) => (
                s.revocation.clone(),
                s.revoked_at,
                s.revocation_reason
                    .and_then(muhr_ca::revocation::Reason::from_code)
                    .map(|r| r.name()),
            ),
            // Deferred: the recording statement refuses it unless good.
            (None, Some(_)) => ("good".to_string(), None, None),
            (None, None) => ("unknown".to_string(), None, None),
        };
        // A revocation or suspension after `at` leaves a signature made
        // before it standing; one before `at` does not. Suspensions lifted
        // since are not replayed: the current state decides.
        let mut status_at = match revoked_at {
            Some(t) if t <= judged_until(at, proven) => status_now.clone(),
            _ if known.is_some() => "good".to_string(),
            _ => "unknown".to_string(),
        };
        let mut since = revoked_at;
        // At a proven past time the row is not enough: it keeps only the
        // latest change, and a suspension turned into a revocation (a
        // stolen card replaced) or lifted since leaves no trace there. The
        // change feed has every change: the last one before that second
        // decides (one in the same second counts, to be safe).
        if proven && known.is_some() {
            let history = self
                .ca
                .store()
                .status_history(&serial)
                .await
                .map_err(|e| format!("database: {e}"))?;
            let cutoff = (secs(at) + 1).saturating_mul(1_000_000);
            if let Some(h) = history.iter().rev().find(|h| h.at_micros < cutoff) {
                status_at = h.revocation.clone();
                since = Some(h.at_micros / 1_000_000);
            }
        }
        match status_at.as_str() {
            "revoked" => problem(
                "revoked",
                format!(
                    "revoked ({}) at {}",
                    reason.unwrap_or("unspecified"),
                    since.unwrap_or(0)
                ),
            ),
            "suspended" => problem("suspended", format!("suspended at {}", since.unwrap_or(0))),
            _ => {}
        }
        Ok(Assessment {
            serial,
            profile: known.as_ref().map(|k| k.profile.clone()),
            subject: match &known {
                Some(k) => k.subject.clone(),
                None => muhr_pkix::dn_text::to_string(tbs.subject()),
            },
            identity: known
                .as_ref()
                .map(|k| k.identity.clone())
                .unwrap_or_default(),
            job: known.as_ref().and_then(|k| k.job.clone()),
            external_ca: None,
            status_now,
            status_at,
            revoked_at,
            revocation_reason: reason,
            problems,
        })
    }

    /// A certificate of a configured external CA: validity and key usage as
    /// for ours, the status from that CA's OCSP responder or CRL, the
    /// identity from the attributes configured for it.
    async fn assess_external(
        &self,
        cert: &Certificate,
        purpose: Purpose,
        at: SystemTime,
        proven: bool,
        i: usize,
        anchor: &crate::external::Anchor,
    ) -> Assessment {
        use crate::external::Status;
        let tbs = cert.tbs_certificate();
        let mut problems = certificate_problems(cert, purpose, at);
        let mut identity = anchor.identity(cert);
        if let Some(p) = identity.get("pinfl")
            && muhr_policies::identity::IdentityRules::default()
                .pinfl("pinfl", p)
                .is_err()
        {
            // Not a PINFL by the country's rules: not an identity to assert.
            tracing::warn!(ca = %anchor.name, "external certificate with a malformed PINFL");
            identity.remove("pinfl");
        }
        let (status_now, revoked_at, reason) = match self.external.status(i, cert).await {
            Ok((Status::Good, _)) => ("good", None, None),
            Ok((Status::Revoked { at: t, reason }, _)) => (
                if reason.map(i64::from) == Some(muhr_pkix::reason::CERTIFICATE_HOLD) {
                    "suspended"
                } else {
                    "revoked"
                },
                Some(secs(t)),
                reason
                    .and_then(|r| muhr_ca::revocation::Reason::from_code(i64::from(r)))
                    .map(|r| r.name()),
            ),
            Ok((Status::Unknown, _)) => {
                problems.push(Problem {
                    code: "unknown_certificate",
                    detail: format!("{} does not know this certificate", anchor.name),
                });
                ("unknown", None, None)
            }
            Err(why) => {
                problems.push(Problem {
                    code: "status_unavailable",
                    detail: format!("the status from {} could not be had: {why}", anchor.name),
                });
                ("unknown", None, None)
            }
        };
        let status_at = match revoked_at {
            Some(t) if t <= judged_until(at, proven) => status_now,
            Some(_) => "good",
            None => status_now,
        };
        match status_at {
            "revoked" => problems.push(Problem {
                code: "revoked",
                detail: format!(
                    "revoked ({}) at {} by {}",
                    reason.unwrap_or("unspecified"),
                    revoked_at.unwrap_or(0),
                    anchor.name
                ),
            }),
            "suspended" => problems.push(Problem {
                code: "suspended",
                detail: format!(
                    "suspended at {} by {}",
                    revoked_at.unwrap_or(0),
                    anchor.name
                ),
            }),
            _ => {}
        }
        Assessment {
            serial: muhr_pkix::serial::to_hex(tbs.serial_number()),
            profile: None,
            subject: muhr_pkix::dn_text::to_string(tbs.subject()),
            identity,
            job: None,
            external_ca: Some(anchor.name.clone()),
            status_now: status_now.to_string(),
            status_at: status_at.to_string(),
            revoked_at,
            revocation_reason: reason,
            problems,
        }
    }

    /// Issued by the issuing CA (or the root) whose key signed it.
    fn issued_here(&self, cert: &Certificate) -> bool {
        let Ok(tbs_der) = cert.tbs_certificate().to_der() else {
            return false;
        };
        [&self.ca.issuing, &self.ca.root].iter().any(|a| {
            let issuer = a.certificate.tbs_certificate();
            issuer.subject() == cert.tbs_certificate().issuer()
                && cert.signature().as_bytes().is_some_and(|sig| {
                    muhr_hsm::verify::verify_signature(
                        issuer.subject_public_key_info(),
                        cert.signature_algorithm(),
                        &tbs_der,
                        sig,
                    )
                    .is_ok()
                })
        })
    }
}

/// What the certificate itself allows: validity at `at`, and the key usage
/// the purpose needs.
fn certificate_problems(cert: &Certificate, purpose: Purpose, at: SystemTime) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |code: &'static str, detail: String| problems.push(Problem { code, detail });
    let v = cert.tbs_certificate().validity();
    let (nb, na) = (v.not_before.to_system_time(), v.not_after.to_system_time());
    if at < nb {
        problem(
            "not_yet_valid",
            format!("the certificate was not yet valid then (from {})", secs(nb)),
        );
    }
    if at > na {
        problem(
            "expired",
            format!("the certificate had expired then (on {})", secs(na)),
        );
    }
    if let Some(why) = extended_key_usage_refuses(cert, purpose) {
        problem("wrong_purpose", why);
    }
    if !key_usage_allows(cert, purpose) {
        problem(
            "wrong_key_usage",
            match purpose {
                Purpose::Login | Purpose::Authentication => {
                    "the key may not be used for authentication (no digitalSignature)"
                }
                Purpose::Document => {
                    "the key may not sign documents (neither nonRepudiation nor digitalSignature)"
                }
                Purpose::TimeStamping => {
                    "the key may not sign time-stamps (neither nonRepudiation nor digitalSignature)"
                }
            }
            .into(),
        );
    }
    problems
}

fn key_usage_allows(cert: &Certificate, purpose: Purpose) -> bool {
    let Some(ext) = cert.tbs_certificate().extensions().and_then(|e| {
        e.iter()
            .find(|e| e.extn_id == <KeyUsage as der::oid::AssociatedOid>::OID)
    }) else {
        // RFC 5280 4.2.1.3: without the extension the key is not restricted.
        return true;
    };
    let Ok(ku) = KeyUsage::from_der(ext.extn_value.as_bytes()) else {
        return false;
    };
    match purpose {
        Purpose::Login | Purpose::Authentication => ku.0.contains(KeyUsages::DigitalSignature),
        Purpose::Document | Purpose::TimeStamping => {
            ku.0.contains(KeyUsages::NonRepudiation) || ku.0.contains(KeyUsages::DigitalSignature)
        }
    }
}

const CLIENT_AUTH: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
const TIME_STAMPING: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
const ANY_EKU: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("2.5.29.37.0");
/// emailProtection (S/MIME) and id-kp-documentSigning (RFC 9336): the
/// extended key usages that name signing documents.
const DOCUMENT_EKUS: [der::oid::ObjectIdentifier; 2] = [
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4"),
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.36"),
];

/// Why the certificate's extended key usage rules out `purpose`, if it does.
/// A login needs clientAuth stated; a document signature is refused from a
/// certificate whose extended key usage names other purposes only (an
/// authentication certificate: clientAuth).
fn extended_key_usage_refuses(cert: &Certificate, purpose: Purpose) -> Option<String> {
    let ext = cert.tbs_certificate().extensions().and_then(|e| {
        e.iter()
            .find(|e| e.extn_id == <ExtendedKeyUsage as der::oid::AssociatedOid>::OID)
    });
    let ekus = match ext.map(|e| ExtendedKeyUsage::from_der(e.extn_value.as_bytes())) {
        None => None,
        Some(Ok(e)) => Some(e.0),
        Some(Err(_)) => return Some("the extended key usage extension does not parse".into()),
    };
    match (purpose, ekus) {
        (Purpose::Login, None) => Some(
            "the certificate is not made for authentication (no clientAuth extended key usage): \
             log in with the authentication certificate"
                .into(),
        ),
        (Purpose::Login, Some(e)) if !e.contains(&CLIENT_AUTH) => Some(
            "the certificate is not made for authentication (clientAuth is not among its \
             extended key usages)"
                .into(),
        ),
        (Purpose::TimeStamping, e) if e.as_deref() != Some(&[TIME_STAMPING][..]) => Some(
            "not a time-stamping certificate (timeStamping must be its only extended key usage)"
                .into(),
        ),
        (Purpose::Document, Some(e))
            if !e.iter().any(|o| *o == ANY_EKU || DOCUMENT_EKUS.contains(o)) =>
        {
            Some(
                "the certificate is made for other purposes than signing documents (its \
                 extended key usage): sign with the signing certificate"
                    .into(),
            )
        }
        _ => None,
    }
}

/// Reads the identity fields back out of a subject through the templates
/// the profile wrote them with: an attribute `{pinfl}` gives the PINFL, then
/// `{surname} {given_name} {patronymic}` gives the patronymic once the other
/// two are known.
pub fn identity(cert: &Certificate, profile: &Profile) -> BTreeMap<String, String> {
    let values: Vec<(&muhr_policies::SubjectAttribute, String)> = profile
        .subject
        .iter()
        .filter_map(|a| attribute(cert, &a.oid).map(|v| (a, v)))
        .collect();
    let mut known = BTreeMap::new();
    loop {
        let before = known.len();
        for (a, v) in &values {
            if let Some((field, value)) = a.value.extract(v, &known) {
                known.insert(field, value);
            }
        }
        if known.len() == before {
            break;
        }
    }
    known.retain(|_, v: &mut String| !v.is_empty());
    known
}

/// The first value of `oid` in `cert`'s subject, as text; None when there
/// is none or it is not one of the string types names use.
pub fn attribute(cert: &Certificate, oid: &der::oid::ObjectIdentifier) -> Option<String> {
    cert.tbs_certificate()
        .subject()
        .iter()
        .find(|atv| atv.oid == *oid)
        .and_then(|atv| muhr_pkix::dn_text::value_text(&atv.value).map(str::to_string))
}

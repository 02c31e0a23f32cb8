//! Time-stamp tokens as proofs of existence (RFC 3161 2.4.2, RFC 5816): a
//! token from a trusted TSA over a signature value proves the signature
//! existed at the token's time, so its certificate is judged then.
//!
//! A token is believed only when all of these hold: its CMS signature
//! checks out over a TSTInfo; its signing-certificate attribute names the
//! certificate that signed (so a token cannot be passed off under another
//! TSA's name); that certificate is a TSA certificate (timeStamping, only
//! and critical) issued by a trusted CA, valid at genTime and not revoked
//! before it, nor ever for keyCompromise (a stolen TSA key can stamp any
//! time); the imprint is the hash of the datum; and, for this CA's own TSA,
//! the token is in the token log exactly as it was sent (a token made with
//! the TSA key outside the TSA is in no log).

use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use const_oid::db::rfc5912;
use der::{Decode, Encode};
use muhr_tsa::asn1::{
    ID_AA_SIGNING_CERTIFICATE, ID_AA_SIGNING_CERTIFICATE_V2, ID_CT_TST_INFO, SigningCertificate,
    SigningCertificateV2, TstInfo,
};
use serde::Serialize;

use crate::trust::{Assessment, Problem, Purpose, Trust};

/// What a token proves, or why it proves nothing.
#[derive(Debug, Clone, Serialize)]
pub struct TimeStampReport {
    /// True exactly when `problems` is empty: `proven_at` may be relied on.
    pub valid: bool,
    /// Everything that stands against the token.
    pub problems: Vec<Problem>,
    /// genTime, Unix seconds; None when the token could not be read.
    pub gen_time: Option<i64>,
    /// The accuracy the token states, milliseconds (0 when it states none).
    pub accuracy_ms: Option<u64>,
    /// The latest moment the datum is proven to have existed: genTime plus
    /// the accuracy, Unix seconds.
    pub proven_at: Option<i64>,
    /// The token's serial, upper-case hex.
    pub serial: Option<String>,
    /// The policy it was issued under.
    pub policy: Option<String>,
    /// The TSA's certificate as assessed at genTime.
    pub tsa: Option<Assessment>,
    /// For this CA's own TSA: whether its token log holds this token as
    /// sent. None for another CA's TSA.
    pub logged: Option<bool>,
}

fn problem(code: &'static str, detail: impl Into<String>) -> Problem {
    Problem {
        code,
        detail: detail.into(),
    }
}

impl TimeStampReport {
    fn refused(p: Problem) -> Self {
        Self {
            valid: false,
            problems: vec![p],
            gen_time: None,
            accuracy_ms: None,
            proven_at: None,
            serial: None,
            policy: None,
            tsa: None,
            logged: None,
        }
    }

    /// When the datum is proven to have existed, if it is.
    pub fn proof(&self) -> Option<SystemTime> {
        self.proven_at
            .filter(|_| self.valid)
            .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
    }
}

/// Checks `token` (a DER ContentInfo) as a proof that `datum` existed. Only
/// a failure to reach the database is an error.
pub async fn verify(trust: &Trust, token: &[u8], datum: &[u8]) -> Result<TimeStampReport, String> {
    let v = match crate::cms::verify(token, None) {
        Ok(v) => v,
        Err(e) => {
            return Ok(TimeStampReport::refused(problem(
                "timestamp_invalid",
                format!("the time-stamp token's signature: {e}"),
            )));
        }
    };
    if v.content_type != ID_CT_TST_INFO {
        return Ok(TimeStampReport::refused(problem(
            "timestamp_invalid",
            format!("the token's content is {}, not a TSTInfo", v.content_type),
        )));
    }
    let info = match TstInfo::from_der(&v.content) {
        Ok(i) => i,
        Err(e) => {
            return Ok(TimeStampReport::refused(problem(
                "timestamp_invalid",
                format!("the token's TSTInfo does not parse: {e}"),
            )));
        }
    };
    let gen_time = info.gen_time.to_system_time();
    let accuracy = info
        .accuracy
        .map(|a| {
            Duration::from_secs(a.seconds.unwrap_or(0).into())
                + Duration::from_millis(a.millis.unwrap_or(0).into())
                + Duration::from_micros(a.micros.unwrap_or(0).into())
        })
        .unwrap_or_default();
    // The datum existed by genTime give or take the accuracy: the latest
    // moment is the one proven. A micro rounds up to a whole second.
    let whole = accuracy.as_secs() + u64::from(accuracy.subsec_nanos() > 0);
    let proven = gen_time + Duration::from_secs(whole);
    let mut problems = Vec::new();
    if info.version != 1 {
        problems.push(problem(
            "timestamp_invalid",
            format!("TSTInfo version {}", info.version),
        ));
    }
    let imprint = &info.message_imprint;
    let alg = match imprint.hash_algorithm.oid {
        o if o == rfc5912::ID_SHA_256 => Some(&digest::SHA256),
        o if o == rfc5912::ID_SHA_384 => Some(&digest::SHA384),
        o if o == rfc5912::ID_SHA_512 => Some(&digest::SHA512),
        _ => None,
    };
    match alg {
        None => problems.push(problem(
            "timestamp_invalid",
            format!(
                "the imprint's hash {} is not SHA-2",
                imprint.hash_algorithm.oid
            ),
        )),
        Some(a) if digest::digest(a, datum).as_ref() != imprint.hashed_message.as_bytes() => {
            problems.push(problem(
                "timestamp_mismatch",
                "the time-stamp token is over other data than this signature's value",
            ))
        }
        Some(_) => {}
    }
    if let Err(why) = binds_certificate(token, &v.signer_der) {
        problems.push(problem("timestamp_invalid", why));
    }
    if !muhr_tsa::is_tsa_certificate(&v.signer) {
        problems.push(problem(
            "timestamp_untrusted",
            "the token's signer is not a TSA certificate (timeStamping, alone and critical)",
        ));
    }
    let tsa = trust
        .assess_proven(&v.signer, &v.signer_der, Purpose::TimeStamping, gen_time)
        .await?;
    for p in &tsa.problems {
        problems.push(problem(
            "timestamp_untrusted",
            format!("the TSA certificate: {}: {}", p.code, p.detail),
        ));
    }
    // Another CA the operator trusts for logins is not thereby trusted to
    // say what time it is: its tokens could revive signatures of this CA's
    // revoked certificates, and no log here confirms them.
    if let Some(other) = &tsa.external_ca {
        problems.push(problem(
            "timestamp_untrusted",
            format!("the token is from {other}'s TSA: only this CA's TSA is trusted for time"),
        ));
    }
    if gen_time > SystemTime::now() + Duration::from_secs(300) {
        problems.push(problem(
            "timestamp_invalid",
            "the token's genTime is in the future",
        ));
    }
    if tsa.revocation_reason == Some("keyCompromise") && tsa.status_at == "good" {
        problems.push(problem(
            "timestamp_untrusted",
            format!(
                "the TSA key was revoked for keyCompromise (at {}): its tokens prove no time",
                tsa.revoked_at.unwrap_or(0)
            ),
        ));
    }
    let serial = hex::encode_upper(info.serial_number.as_bytes());
    // Every certificate of this CA's records (whatever its profile) that
    // stamped must have logged the token.
    let logged = if tsa.external_ca.is_none() && tsa.profile.is_some() {
        let sent = digest::digest(&digest::SHA256, token);
        let record = trust
            .store()
            .timestamp_token(&serial)
            .await
            .map_err(|e| format!("database: {e}"))?;
        let ok = record.is_some_and(|r| {
            r.token_sha256 == sent.as_ref()
                && r.gen_time == muhr_store::unix_secs(gen_time)
                && r.imprint == imprint.hashed_message.as_bytes()
        });
        if !ok {
            problems.push(problem(
                "timestamp_not_logged",
                format!("this TSA's token log has no token {serial} as shown"),
            ));
        }
        Some(ok)
    } else {
        None
    };
    Ok(TimeStampReport {
        valid: problems.is_empty(),
        problems,
        gen_time: Some(muhr_store::unix_secs(gen_time)),
        accuracy_ms: Some(accuracy.as_millis() as u64),
        proven_at: Some(muhr_store::unix_secs(proven)),
        serial: Some(serial),
        policy: Some(info.policy.to_string()),
        tsa: Some(tsa),
        logged,
    })
}

/// RFC 5816 / RFC 5035: the signed attributes name the signer's
/// certificate by hash (v2, or the SHA-1 v1 of older TSAs).
pub(crate) fn binds_certificate(token: &[u8], signer_der: &[u8]) -> Result<(), String> {
    let sd = crate::cms::decode(token).map_err(|e| e.to_string())?;
    let si = sd
        .signer_infos
        .0
        .iter()
        .next()
        .ok_or("the token has no signer")?;
    let attrs = si.signed_attrs.as_ref().ok_or("no signed attributes")?;
    let value = |oid| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.iter().next())
            .map(|v| v.to_der())
            .transpose()
            .map_err(|e| e.to_string())
    };
    if let Some(der) = value(ID_AA_SIGNING_CERTIFICATE_V2)? {
        let sc = SigningCertificateV2::from_der(&der)
            .map_err(|e| format!("signingCertificateV2: {e}"))?;
        let first = sc
            .certs
            .first()
            .ok_or("signingCertificateV2 names no certificate")?;
        let alg = match first.hash_algorithm.as_ref().map(|a| a.oid) {
            None => &digest::SHA256,
            Some(o) if o == rfc5912::ID_SHA_256 => &digest::SHA256,
            Some(o) if o == rfc5912::ID_SHA_384 => &digest::SHA384,
            Some(o) if o == rfc5912::ID_SHA_512 => &digest::SHA512,
            Some(o) => return Err(format!("signingCertificateV2 hashes with {o}")),
        };
        return if digest::digest(alg, signer_der).as_ref() == first.cert_hash.as_bytes() {
            Ok(())
        } else {
            Err(
                "the signing-certificate attribute names another certificate than the signer's"
                    .into(),
            )
        };
    }
    if let Some(der) = value(ID_AA_SIGNING_CERTIFICATE)? {
        let sc =
            SigningCertificate::from_der(&der).map_err(|e| format!("signingCertificate: {e}"))?;
        let first = sc
            .certs
            .first()
            .ok_or("signingCertificate names no certificate")?;
        return if digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, signer_der).as_ref()
            == first.cert_hash.as_bytes()
        {
            Ok(())
        } else {
            Err(
                "the signing-certificate attribute names another certificate than the signer's"
                    .into(),
            )
        };
    }
    Err("the token does not name its TSA certificate (no signing-certificate attribute)".into())
}

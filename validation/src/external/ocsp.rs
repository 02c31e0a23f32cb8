//! Asking another CA's OCSP responder about one certificate (RFC 6960, the
//! RFC 5019 profile: SHA-1 CertID, one request, POST).
//!
//! The answer is believed only when it is signed by that CA, or by a
//! responder certificate the CA issued for OCSPSigning and valid now, names
//! the certificate asked about, and is current (thisUpdate not in the future
//! beyond a small skew, nextUpdate not past; without nextUpdate, thisUpdate
//! no older than the CA's `max_age_without_next_update_seconds`: RFC 6960
//! §4.2.2.1 reads a missing nextUpdate as "newer information is always
//! available", which makes an old answer without one the easiest to
//! replay). The messages are `muhr_pkix::ocsp`'s typed ASN.1.

use std::time::SystemTime;

use der::asn1::{GeneralizedTime, OctetString};
use der::{Decode as _, Encode as _};
use muhr_pkix::ocsp::{
    BasicOcspResponse, CertId, CertStatus, ID_PKIX_OCSP_BASIC, ID_SHA1, OcspRequest, OcspResponse,
    OcspResponseStatus, Request, ResponderId, TbsRequest, Version,
};
use x509_cert::Certificate;

use super::{Anchor, Status, current};

const ID_KP_OCSP_SIGNING: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");

/// An OCSP answer about one certificate, and until when it may be reused.
pub struct Answer {
    /// What the responder said about the certificate asked about.
    pub status: Status,
    /// nextUpdate, or, for an answer without one, the end of the age it
    /// may reach.
    pub fresh_until: SystemTime,
}

fn cert_id(anchor: &Anchor, serial: &[u8]) -> Result<CertId, String> {
    let sha1 = |b: &[u8]| {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, b)
            .as_ref()
            .to_vec()
    };
    let tbs = anchor.certificate.tbs_certificate();
    let name = tbs.subject().to_der().map_err(|e| e.to_string())?;
    let key = tbs.subject_public_key_info().subject_public_key.raw_bytes();
    let e = |e: der::Error| e.to_string();
    Ok(CertId {
        hash_algorithm: spki::AlgorithmIdentifierOwned {
            // RFC 5019: the hash every responder knows.
            oid: ID_SHA1,
            parameters: Some(der::asn1::Null.into()),
        },
        issuer_name_hash: OctetString::new(sha1(&name)).map_err(e)?,
        issuer_key_hash: OctetString::new(sha1(key)).map_err(e)?,
        serial_number: x509_cert::serial_number::SerialNumber::new(serial).map_err(e)?,
    })
}

/// The DER request for the certificate `serial` (its content octets) of
/// `anchor`.
pub fn request(anchor: &Anchor, serial: &[u8]) -> Result<Vec<u8>, String> {
    OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id(anchor, serial)?,
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(|e| e.to_string())
}

fn time(t: &GeneralizedTime) -> SystemTime {
    t.to_system_time()
}

/// Reads and checks a response to [`request`].
pub fn answer(
    anchor: &Anchor,
    serial: &[u8],
    der: &[u8],
    now: SystemTime,
) -> Result<Answer, String> {
    let resp = OcspResponse::from_der(der).map_err(|e| format!("not an OCSP response: {e}"))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(format!("responder said {:?}", resp.response_status));
    }
    let bytes = resp.response_bytes.ok_or("no response bytes")?;
    if bytes.response_type != ID_PKIX_OCSP_BASIC {
        return Err(format!(
            "response type {} is not basic",
            bytes.response_type
        ));
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| format!("basic response: {e}"))?;
    check_signature(anchor, &basic, now)?;
    let want = cert_id(anchor, serial)?;
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| r.cert_id == want)
        .ok_or("the response is about another certificate")?;
    let fresh_until = current(
        "response",
        time(&single.this_update),
        single.next_update.as_ref().map(time),
        anchor.max_age_without_next_update,
        now,
    )?;
    let status = match &single.cert_status {
        CertStatus::Good(_) => Status::Good,
        CertStatus::Unknown(_) => Status::Unknown,
        CertStatus::Revoked(info) => Status::Revoked {
            at: time(&info.revocation_time),
            reason: info.revocation_reason.map(|r| r as u8),
        },
    };
    Ok(Answer {
        status,
        fresh_until,
    })
}

/// The signer is the CA itself or a certificate it issued for OCSPSigning.
fn check_signature(
    anchor: &Anchor,
    basic: &BasicOcspResponse,
    now: SystemTime,
) -> Result<(), String> {
    let tbs = basic
        .tbs_response_data
        .to_der()
        .map_err(|e| e.to_string())?;
    let alg = &basic.signature_algorithm;
    let sig = basic
        .signature
        .as_bytes()
        .ok_or("the signature has unused bits")?;
    let verifies = |spki: &spki::SubjectPublicKeyInfoOwned| {
        muhr_hsm::verify::verify_signature(spki, alg, &tbs, sig).is_ok()
    };
    if names(&basic.tbs_response_data.responder_id, &anchor.certificate)
        && verifies(
            anchor
                .certificate
                .tbs_certificate()
                .subject_public_key_info(),
        )
    {
        return Ok(());
    }
    for c in basic.certs.iter().flatten() {
        if names(&basic.tbs_response_data.responder_id, c)
            && anchor.issued(c)
            && anchor.within_validity(c, now)
            && has_ocsp_signing(c)
            && verifies(c.tbs_certificate().subject_public_key_info())
        {
            return Ok(());
        }
    }
    Err("the response is not signed by the CA or a responder it authorised".into())
}

fn names(id: &ResponderId, cert: &Certificate) -> bool {
    let tbs = cert.tbs_certificate();
    match id {
        ResponderId::ByName(n) => n
            .to_der()
            .ok()
            .zip(tbs.subject().to_der().ok())
            .is_some_and(|(a, b)| a == b),
        ResponderId::ByKey(k) => {
            let key = tbs.subject_public_key_info().subject_public_key.raw_bytes();
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, key).as_ref()
                == k.as_bytes()
        }
    }
}

fn has_ocsp_signing(c: &Certificate) -> bool {
    use x509_cert::ext::pkix::ExtendedKeyUsage;
    c.tbs_certificate()
        .extensions()
        .and_then(|e| {
            e.iter()
                .find(|e| e.extn_id == <ExtendedKeyUsage as der::oid::AssociatedOid>::OID)
        })
        .and_then(|e| ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .is_some_and(|eku| eku.0.contains(&ID_KP_OCSP_SIGNING))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use muhr_pkix::ocsp::{ResponseBytes, ResponseData, SingleResponse};

    use super::*;
    use crate::external::SKEW;
    use crate::external::testing::{TestCa, ecdsa_sha256};

    const SERIAL: &[u8] = &[0x20, 0x01];
    const HOUR: Duration = Duration::from_secs(3600);

    /// A "good" answer about `SERIAL`, signed by the CA itself.
    fn response(ca: &TestCa, this_update: SystemTime, next_update: Option<SystemTime>) -> Vec<u8> {
        let gt = |t: SystemTime| GeneralizedTime::from_system_time(t).unwrap();
        let data = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByName(ca.certificate.tbs_certificate().subject().clone()),
            produced_at: gt(SystemTime::now()),
            responses: vec![SingleResponse {
                cert_id: cert_id(&ca.anchor(), SERIAL).unwrap(),
                cert_status: CertStatus::Good(der::asn1::Null),
                this_update: gt(this_update),
                next_update: next_update.map(gt),
                single_extensions: None,
            }],
            response_extensions: None,
        };
        let tbs = data.to_der().unwrap();
        let basic = BasicOcspResponse {
            tbs_response_data: data,
            signature_algorithm: ecdsa_sha256(),
            signature: der::asn1::BitString::from_bytes(&ca.sign(&tbs)).unwrap(),
            certs: None,
        };
        OcspResponse {
            response_status: OcspResponseStatus::Successful,
            response_bytes: Some(ResponseBytes {
                response_type: ID_PKIX_OCSP_BASIC,
                response: OctetString::new(basic.to_der().unwrap()).unwrap(),
            }),
        }
        .to_der()
        .unwrap()
    }

    #[test]
    fn current_answer_with_next_update_is_used_until_then() {
        let ca = TestCa::new("OCSP CA");
        let now = SystemTime::now();
        let der = response(&ca, now - HOUR, Some(now + HOUR));
        let a = answer(&ca.anchor(), SERIAL, &der, now).unwrap();
        assert_eq!(a.status, Status::Good);
        let late = (now + HOUR).duration_since(a.fresh_until).unwrap();
        assert!(late < Duration::from_secs(1), "{late:?}");
        // Asked about another certificate, the same answer says nothing.
        assert!(answer(&ca.anchor(), &[0x20, 0x02], &der, now).is_err());
    }

    #[test]
    fn old_answer_without_next_update_replayed_is_refused() {
        let ca = TestCa::new("OCSP CA");
        let now = SystemTime::now();
        let der = response(&ca, now - 2 * HOUR, None);
        let e = answer(&ca.anchor(), SERIAL, &der, now).err().unwrap();
        assert!(e.contains("no nextUpdate") && e.contains("3600"), "{e}");
    }

    #[test]
    fn fresh_answer_without_next_update_is_used_for_the_max_age_only() {
        let ca = TestCa::new("OCSP CA");
        let now = SystemTime::now();
        let this_update = now - Duration::from_secs(60);
        let der = response(&ca, this_update, None);
        let a = answer(&ca.anchor(), SERIAL, &der, now).unwrap();
        assert_eq!(a.status, Status::Good);
        let early = (this_update + HOUR).duration_since(a.fresh_until).unwrap();
        assert!(early < Duration::from_secs(1), "{early:?}");
    }

    #[test]
    fn answer_dated_in_the_future_is_refused() {
        let ca = TestCa::new("OCSP CA");
        let now = SystemTime::now();
        let der = response(&ca, now + 2 * SKEW, None);
        let e = answer(&ca.anchor(), SERIAL, &der, now).err().unwrap();
        assert!(e.contains("in the future"), "{e}");
    }

    #[test]
    fn answer_signed_by_another_key_of_the_same_name_is_refused() {
        let ca = TestCa::new("OCSP CA");
        let impostor = TestCa::new("OCSP CA");
        let now = SystemTime::now();
        let der = response(&impostor, now, Some(now + HOUR));
        let e = answer(&ca.anchor(), SERIAL, &der, now).err().unwrap();
        assert!(e.contains("not signed by the CA"), "{e}");
    }
}

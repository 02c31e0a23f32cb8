//! Adding a signature time-stamp to a CMS signature (CAdES-BASELINE-T, ETSI
//! EN 319 122-1): a token over the signature value, kept as the unsigned
//! attribute id-aa-signatureTimeStampToken. The signed attributes are not
//! touched, so the signature itself still verifies as before.

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{CertificateSet, SignedData, UnsignedAttributes};
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{ContextSpecific, ObjectIdentifier};
use der::asn1::{Int, OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use der::{Sequence, TagMode, TagNumber};
use muhr_tsa::asn1::{
    FailureInfo, ID_CT_TST_INFO, MessageImprint, TimeStampReq, TimeStampResp, TstInfo, status,
};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::AuthorityInfoAccessSyntax;
use x509_cert::ext::pkix::name::GeneralName;

use crate::cms::ID_AA_SIGNATURE_TIME_STAMP_TOKEN;

/// A request for a token over the only signer's signature value in `cms`:
/// SHA-256, a fresh 64-bit nonce, the TSA certificate asked for.
pub fn request(cms: &[u8]) -> Result<(Vec<u8>, Int), String> {
    let sd = crate::cms::decode(cms).map_err(|e| e.to_string())?;
    let si = only_signer(&sd)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, si.signature.as_bytes());
    let nonce = fresh_nonce()?;
    let req = TimeStampReq {
        version: 1,
        message_imprint: MessageImprint {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: rfc5912::ID_SHA_256,
                parameters: None,
            },
            hashed_message: OctetString::new(digest.as_ref()).map_err(|e| e.to_string())?,
        },
        req_policy: None,
        nonce: Some(nonce.clone()),
        cert_req: true,
        extensions: None,
    };
    Ok((req.to_der().map_err(|e| e.to_string())?, nonce))
}

/// 62 random bits as a positive INTEGER of 8 octets with no leading zero
/// octet: DER's INTEGER is minimal, and a TSA reading DER refuses anything
/// else.
fn fresh_nonce() -> Result<Int, String> {
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "random generator failed".to_string())?;
    nonce[0] = (nonce[0] & 0x3f) | 0x40;
    Int::new(&nonce).map_err(|e| e.to_string())
}

fn only_signer(sd: &SignedData) -> Result<&cms::signed_data::SignerInfo, String> {
    let mut it = sd.signer_infos.0.iter();
    match (it.next(), it.next()) {
        (Some(si), None) => Ok(si),
        _ => Err("exactly one signer is supported".into()),
    }
}

/// The token out of a TSA's `reply` to the request that had `nonce`, after
/// checking it answers that request: granted, a TSTInfo over this
/// signature value, the nonce echoed.
pub fn token_from_reply(cms: &[u8], reply: &[u8], nonce: &Int) -> Result<Vec<u8>, String> {
    let resp = TimeStampResp::from_der(reply)
        .map_err(|e| format!("the TSA's reply is not a TimeStampResp: {e}"))?;
    if resp.status.status != status::GRANTED && resp.status.status != 1 {
        let info = resp
            .status
            .fail_info
            .as_ref()
            .and_then(FailureInfo::from_bits)
            .map(FailureInfo::name)
            .unwrap_or("unspecified");
        let text = resp.status.status_string.unwrap_or_default().join("; ");
        return Err(format!("the TSA refused: {info} ({text})"));
    }
    let token = resp
        .time_stamp_token
        .ok_or("the TSA granted but sent no token")?
        .to_der()
        .map_err(|e| e.to_string())?;
    let v = crate::cms::verify(&token, None)
        .map_err(|e| format!("the token's signature does not check out: {e}"))?;
    if v.content_type != ID_CT_TST_INFO {
        return Err("the token does not hold a TSTInfo".into());
    }
    let info = TstInfo::from_der(&v.content).map_err(|e| format!("TSTInfo: {e}"))?;
    if !muhr_tsa::is_tsa_certificate(&v.signer) {
        return Err(
            "the token is not signed by a TSA certificate (timeStamping, alone and \
                    critical)"
                .into(),
        );
    }
    crate::timestamp::binds_certificate(&token, &v.signer_der)?;
    if info.nonce.as_ref() != Some(nonce) {
        return Err("the token does not echo this request's nonce (a replayed reply?)".into());
    }
    let sd = crate::cms::decode(cms).map_err(|e| e.to_string())?;
    let signature = only_signer(&sd)?.signature.as_bytes();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, signature);
    if info.message_imprint.hash_algorithm.oid != rfc5912::ID_SHA_256
        || info.message_imprint.hashed_message.as_bytes() != digest.as_ref()
    {
        return Err("the token is over other data than this signature".into());
    }
    Ok(token)
}

/// `cms` with `token` added as its signer's signature time-stamp.
pub fn add_token(cms: &[u8], token: &[u8]) -> Result<Vec<u8>, String> {
    let e = |e: der::Error| e.to_string();
    let mut sd = crate::cms::decode_wire(cms).map_err(|e| e.to_string())?;
    if sd.signer_infos.0.len() != 1 {
        return Err("exactly one signer is supported".into());
    }
    let mut infos = sd.signer_infos.0.into_vec();
    let si = &mut infos[0];
    let attr = Attribute {
        oid: ID_AA_SIGNATURE_TIME_STAMP_TOKEN,
        values: SetOfVec::try_from(vec![Any::from_der(token).map_err(e)?]).map_err(e)?,
    };
    let mut attrs: Vec<Attribute> = si
        .unsigned_attrs
        .take()
        .map(|a| a.into_vec())
        .unwrap_or_default();
    attrs.push(attr);
    si.unsigned_attrs = Some(UnsignedAttributes::try_from(attrs).map_err(e)?);
    sd.signer_infos = cms::signed_data::SignerInfos::try_from(infos).map_err(e)?;
    ContentInfo {
        content_type: rfc5911::ID_SIGNED_DATA,
        content: Any::encode_from(&sd).map_err(e)?,
    }
    .to_der()
    .map_err(e)
}

/// id-ri-ocsp-response (RFC 5940): an OCSPResponse among a SignedData's
/// revocation values.
pub const ID_RI_OCSP_RESPONSE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.16.2");

const ID_AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");

/// `OtherRevocationInfoFormat` as RFC 5652 10.2.1 declares it.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
struct OtherRevocationInfoFormat {
    other_rev_info_format: ObjectIdentifier,
    other_rev_info: Any,
}

/// A certificate whose status a CAdES-LT signature must carry, with its
/// issuer and the OCSP responder that answers for it.
#[derive(Clone, Debug)]
pub struct StatusNeeded {
    /// The certificate: the signer's, or a TSA's.
    pub certificate: Certificate,
    /// Its issuer, among the certificates at hand.
    pub issuer: Certificate,
    /// The id-ad-ocsp URL of its authorityInfoAccess.
    pub ocsp_url: String,
}

/// The certificates the message and its tokens carry.
fn carried(sd: &SignedData) -> Vec<Certificate> {
    sd.certificates
        .iter()
        .flat_map(|s| s.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => Some(c.clone()),
            CertificateChoices::Other(_) => None,
        })
        .collect()
}

fn ocsp_url(c: &Certificate) -> Option<String> {
    let (_, aia) = c
        .tbs_certificate()
        .get_extension::<AuthorityInfoAccessSyntax>()
        .ok()
        .flatten()?;
    aia.0.iter().find_map(|a| match &a.access_location {
        GeneralName::UniformResourceIdentifier(u) if a.access_method == ID_AD_OCSP => {
            Some(u.to_string())
        }
        _ => None,
    })
}

/// What a CAdES-LT signature needs beyond a CAdES-T one: the status of the
/// signer's certificate and of each signature time-stamp's TSA
/// certificate, from their OCSP responders. Issuers are looked up among
/// the certificates carried and `extra` (the signer's chain).
pub fn status_needed(cms: &[u8], extra: &[Certificate]) -> Result<Vec<StatusNeeded>, String> {
    let sd = crate::cms::decode(cms).map_err(|e| e.to_string())?;
    let si = only_signer(&sd)?;
    let mut pool = carried(&sd);
    pool.extend(extra.iter().cloned());
    let cms::signed_data::SignerIdentifier::IssuerAndSerialNumber(sid) = &si.sid else {
        return Err("the signer is named by key identifier: not supported here".into());
    };
    let signer = pool
        .iter()
        .find(|c| {
            c.tbs_certificate().issuer() == &sid.issuer
                && c.tbs_certificate().serial_number() == &sid.serial_number
        })
        .cloned()
        .ok_or("the signer's certificate is not carried")?;
    let mut wanted = vec![signer];
    for a in si.unsigned_attrs.iter().flat_map(|a| a.iter()) {
        if a.oid != crate::cms::ID_AA_SIGNATURE_TIME_STAMP_TOKEN {
            continue;
        }
        for t in a.values.iter() {
            let token = t.to_der().map_err(|e| e.to_string())?;
            let tv = crate::cms::verify(&token, None)
                .map_err(|e| format!("a signature time-stamp: {e}"))?;
            pool.push(tv.signer.clone());
            pool.extend(tv.others.iter().cloned());
            wanted.push(tv.signer);
        }
    }
    wanted
        .into_iter()
        .map(|c| {
            let tbs = c.tbs_certificate();
            let issuer = pool
                .iter()
                .find(|i| i.tbs_certificate().subject() == tbs.issuer())
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "the issuer of {} is not at hand",
                        muhr_pkix::dn_text::to_string(tbs.subject())
                    )
                })?;
            let ocsp_url = ocsp_url(&c).ok_or_else(|| {
                format!(
                    "{} names no OCSP responder",
                    muhr_pkix::dn_text::to_string(tbs.subject())
                )
            })?;
            Ok(StatusNeeded {
                certificate: c,
                issuer,
                ocsp_url,
            })
        })
        .collect()
}

/// `cms` with `certificates` added to those it carries (each once) and
/// `ocsp_responses` (DER OCSPResponses) as revocation values (RFC 5940):
/// what CAdES-BASELINE-LT keeps so the signature can be validated later
/// without asking anyone.
pub fn add_validation_data(
    cms: &[u8],
    certificates: &[Certificate],
    ocsp_responses: &[Vec<u8>],
) -> Result<Vec<u8>, String> {
    let e = |e: der::Error| e.to_string();
    let mut sd = crate::cms::decode_wire(cms).map_err(|e| e.to_string())?;
    let mut certs: Vec<CertificateChoices> = sd
        .certificates
        .take()
        .map(|s| s.0.into_vec())
        .unwrap_or_default();
    let mut seen: Vec<Vec<u8>> = certs
        .iter()
        .map(|c| c.to_der())
        .collect::<Result<_, _>>()
        .map_err(e)?;
    for c in certificates {
        let der = c.to_der().map_err(e)?;
        if !seen.contains(&der) {
            seen.push(der);
            certs.push(CertificateChoices::Certificate(c.clone()));
        }
    }
    sd.certificates = Some(CertificateSet(SetOfVec::try_from(certs).map_err(e)?));
    let mut crls = sd.crls.take().unwrap_or_default();
    for r in ocsp_responses {
        let other = OtherRevocationInfoFormat {
            other_rev_info_format: ID_RI_OCSP_RESPONSE,
            other_rev_info: Any::from_der(r).map_err(e)?,
        };
        // RevocationInfoChoice: other [1] IMPLICIT OtherRevocationInfoFormat.
        let choice = ContextSpecific {
            tag_number: TagNumber(1),
            tag_mode: TagMode::Implicit,
            value: other,
        };
        let any = Any::encode_from(&choice).map_err(e)?;
        if !crls.contains(&any) {
            crls.push(any);
        }
    }
    // DER orders a SET OF by the elements' encodings (X.690 11.6).
    let mut keyed = crls
        .into_iter()
        .map(|a| a.to_der().map(|d| (d, a)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let crls: Vec<Any> = keyed.into_iter().map(|(_, a)| a).collect();
    // RFC 5652 5.1: version 5 once a RevocationInfoChoice of type other
    // is present.
    if !crls.is_empty() {
        sd.version = cms::content_info::CmsVersion::V5;
    }
    sd.crls = (!crls.is_empty()).then_some(crls);
    ContentInfo {
        content_type: rfc5911::ID_SIGNED_DATA,
        content: Any::encode_from(&sd).map_err(e)?,
    }
    .to_der()
    .map_err(e)
}

/// Checks that the TSA certificate in `token` was issued (signed) by one of
/// `chain`: the signer's own CA. A token that crossed a network in the
/// clear could otherwise come from a TSA someone made up on the way.
pub fn tsa_issued_by(token: &[u8], chain: &[Certificate]) -> Result<(), String> {
    let v = crate::cms::verify(token, None).map_err(|e| e.to_string())?;
    let tbs = v.signer.tbs_certificate();
    let tbs_der = tbs.to_der().map_err(|e| e.to_string())?;
    let sig = v
        .signer
        .signature()
        .as_bytes()
        .ok_or("the TSA certificate's signature is not whole bytes")?;
    let issued = chain.iter().any(|ca| {
        ca.tbs_certificate().subject() == tbs.issuer()
            && muhr_hsm::verify::verify_signature(
                ca.tbs_certificate().subject_public_key_info(),
                v.signer.signature_algorithm(),
                &tbs_der,
                sig,
            )
            .is_ok()
    });
    if issued {
        Ok(())
    } else {
        Err(format!(
            "the TSA certificate ({}) is not issued by the CA of the signing certificate",
            muhr_pkix::dn_text::to_string(tbs.subject())
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A nonce with a leading zero octet is not DER: the TSA refused such a
    /// request as badDataFormat once in 256 before nonces were made minimal.
    #[test]
    fn every_nonce_reads_back_as_der() {
        for _ in 0..5000 {
            let n = fresh_nonce().unwrap();
            let der = n.to_der().unwrap();
            assert_eq!(Int::from_der(&der).unwrap(), n);
            assert_eq!(n.as_bytes().len(), 8);
        }
    }
}

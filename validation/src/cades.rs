//! Adding a signature time-stamp to a CMS signature (CAdES-BASELINE-T, ETSI
//! EN 319 122-1): a token over the signature value, kept as the unsigned
//! attribute id-aa-signatureTimeStampToken. The signed attributes are not
//! touched, so the signature itself still verifies as before.

use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, UnsignedAttributes};
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{Int, OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use muhr_tsa::asn1::{
    FailureInfo, ID_CT_TST_INFO, MessageImprint, TimeStampReq, TimeStampResp, TstInfo, status,
};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;

use crate::cms::ID_AA_SIGNATURE_TIME_STAMP_TOKEN;

/// A request for a token over the only signer's signature value in `cms`:
/// SHA-256, a fresh 64-bit nonce, the TSA certificate asked for.
pub fn request(cms: &[u8]) -> Result<(Vec<u8>, Int), String> {
    let sd = crate::cms::decode(cms).map_err(|e| e.to_string())?;
    let si = only_signer(&sd)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, si.signature.as_bytes());
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "random generator failed".to_string())?;
    nonce[0] &= 0x7f;
    let nonce = Int::new(&nonce).map_err(|e| e.to_string())?;
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
    let mut sd = crate::cms::decode(cms).map_err(|e| e.to_string())?;
    only_signer(&sd)?;
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

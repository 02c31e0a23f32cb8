//! PKCS#10 requests: only their public key and proof of possession matter. The
//! subject a requester wrote is ignored; the subject comes from verified data.

use der::asn1::{AnyRef, BitStringRef};
use der::{Decode, Encode, Sequence};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::request::CertReq;

/// The outer structure, kept as raw TLVs so the signature is checked over the
/// exact bytes the requester signed.
#[derive(Sequence)]
struct RawCertReq<'a> {
    info: AnyRef<'a>,
    algorithm: AlgorithmIdentifierOwned,
    signature: BitStringRef<'a>,
}

/// Parses a CSR (PEM or DER) and verifies its self-signature.
pub fn verify(input: &[u8]) -> Result<SubjectPublicKeyInfoOwned, String> {
    let der = if input.trim_ascii_start().starts_with(b"-----BEGIN") {
        let (label, der) =
            der::pem::decode_vec(input).map_err(|e| format!("malformed PEM: {e}"))?;
        if label != "CERTIFICATE REQUEST" && label != "NEW CERTIFICATE REQUEST" {
            return Err(format!("PEM label {label:?} is not CERTIFICATE REQUEST"));
        }
        der
    } else {
        input.to_vec()
    };
    let req = CertReq::from_der(&der).map_err(|e| format!("malformed PKCS#10 request: {e}"))?;
    let raw = RawCertReq::from_der(&der).map_err(|e| format!("malformed PKCS#10 request: {e}"))?;
    let info = raw.info.to_der().map_err(|e| e.to_string())?;
    let sig = raw
        .signature
        .as_bytes()
        .ok_or("request signature has unused bits")?;
    let spki = req.info.public_key.clone();
    muhr_hsm::verify::verify_signature(&spki, &raw.algorithm, &info, sig)
        .map_err(|e| format!("proof of possession failed: {e}"))?;
    Ok(spki)
}

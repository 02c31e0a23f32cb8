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

/// A parsed request whose proof of possession is not checked yet, so that an
/// unacceptable key (RSA-1024, say) is reported as such rather than as a
/// signature the verifier refuses to even try.
pub struct Parsed {
    der: Vec<u8>,
    /// The requested key. It is proven held only once [`Parsed::verify`] passes.
    pub public_key: SubjectPublicKeyInfoOwned,
}

/// Parses a CSR, PEM or DER.
pub fn parse(input: &[u8]) -> Result<Parsed, String> {
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
    Ok(Parsed {
        public_key: req.info.public_key,
        der,
    })
}

impl Parsed {
    /// Verifies the request's self-signature over the exact bytes signed.
    pub fn verify(&self) -> Result<(), String> {
        let raw = RawCertReq::from_der(&self.der)
            .map_err(|e| format!("malformed PKCS#10 request: {e}"))?;
        let info = raw.info.to_der().map_err(|e| e.to_string())?;
        let sig = raw
            .signature
            .as_bytes()
            .ok_or("request signature has unused bits")?;
        muhr_hsm::verify::verify_signature(&self.public_key, &raw.algorithm, &info, sig)
            .map_err(|e| format!("proof of possession failed: {e}"))
    }
}

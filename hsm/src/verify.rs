//! Signature verification for any public key Muhr meets: CSR proof of possession,
//! and the check that a fresh signature from the key store verifies before a
//! certificate is handed out (an HSM fault must not become a broken certificate).

use aws_lc_rs::signature::{self, VerificationAlgorithm};
use const_oid::db::rfc5912;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::algorithm::is_pss_sha256;

/// Why a signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The key and signature algorithm are not a pair Muhr verifies. Holds the
    /// signature algorithm's OID, or the key algorithm when that is unknown.
    #[error("unsupported signature algorithm {0} for this key")]
    Unsupported(String),
    /// The signature does not match the message and key, or the key is malformed.
    #[error("signature does not verify")]
    Invalid,
}

fn pick(
    spki: &SubjectPublicKeyInfoOwned,
    alg: &AlgorithmIdentifierOwned,
) -> Result<&'static dyn VerificationAlgorithm, VerifyError> {
    let unsupported = || VerifyError::Unsupported(alg.oid.to_string());
    let key_alg = spki.algorithm.oid;
    if key_alg == rfc5912::ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok())
            .ok_or_else(unsupported)?;
        let p256 = curve == rfc5912::SECP_256_R_1;
        let p384 = curve == rfc5912::SECP_384_R_1;
        return Ok(match alg.oid {
            o if o == rfc5912::ECDSA_WITH_SHA_256 && p256 => &signature::ECDSA_P256_SHA256_ASN1,
            o if o == rfc5912::ECDSA_WITH_SHA_384 && p256 => &signature::ECDSA_P256_SHA384_ASN1,
            o if o == rfc5912::ECDSA_WITH_SHA_256 && p384 => &signature::ECDSA_P384_SHA256_ASN1,
            o if o == rfc5912::ECDSA_WITH_SHA_384 && p384 => &signature::ECDSA_P384_SHA384_ASN1,
            _ => return Err(unsupported()),
        });
    }
    if key_alg == rfc5912::RSA_ENCRYPTION {
        return Ok(match alg.oid {
            o if o == rfc5912::SHA_256_WITH_RSA_ENCRYPTION => {
                &signature::RSA_PKCS1_2048_8192_SHA256
            }
            o if o == rfc5912::SHA_384_WITH_RSA_ENCRYPTION => {
                &signature::RSA_PKCS1_2048_8192_SHA384
            }
            o if o == rfc5912::SHA_512_WITH_RSA_ENCRYPTION => {
                &signature::RSA_PKCS1_2048_8192_SHA512
            }
            o if o == rfc5912::ID_RSASSA_PSS && is_pss_sha256(alg.parameters.as_ref()) => {
                &signature::RSA_PSS_2048_8192_SHA256
            }
            _ => return Err(unsupported()),
        });
    }
    Err(VerifyError::Unsupported(format!("key algorithm {key_alg}")))
}

/// Verifies `sig` over `message` with the key in `spki` under algorithm `alg`.
pub fn verify_signature(
    spki: &SubjectPublicKeyInfoOwned,
    alg: &AlgorithmIdentifierOwned,
    message: &[u8],
    sig: &[u8],
) -> Result<(), VerifyError> {
    let algorithm = pick(spki, alg)?;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or(VerifyError::Invalid)?;
    signature::UnparsedPublicKey::new(algorithm, key)
        .verify(message, sig)
        .map_err(|_| VerifyError::Invalid)
}

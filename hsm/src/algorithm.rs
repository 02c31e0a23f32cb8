//! Key kinds and the signature schemes Muhr uses with them.
//!
//! A key's kind fixes its signature scheme, so configuration names one string
//! (`ecdsa-p256`, `rsa-3072`, `rsa-pss-2048`, ...) and everything else follows.

use std::fmt;
use std::str::FromStr;

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912;
use der::asn1::{Any, UintRef};
use der::{Decode, Encode, Sequence};
use spki::AlgorithmIdentifierOwned;

use crate::HsmError;

/// A key's kind and size, written in configuration as `ecdsa-p256`,
/// `rsa-3072` or `rsa-pss-2048`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// ECDSA on P-256, signing over SHA-256.
    EcdsaP256,
    /// ECDSA on P-384, signing over SHA-384.
    EcdsaP384,
    /// RSA with PKCS#1 v1.5 signatures over SHA-256.
    Rsa {
        /// Modulus size: 2048, 3072 or 4096 when parsed from a name.
        bits: u32,
    },
    /// RSA with RSASSA-PSS signatures (SHA-256, MGF1-SHA-256, 32-byte salt).
    RsaPss {
        /// Modulus size: 2048, 3072 or 4096 when parsed from a name.
        bits: u32,
    },
}

impl KeySpec {
    /// The AlgorithmIdentifier of this kind's signatures, as X.509 writes it:
    /// no parameters for ECDSA (RFC 5758), NULL for PKCS#1 v1.5 and the
    /// SHA-256 parameters for PSS (RFC 4055).
    pub fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        match self {
            KeySpec::EcdsaP256 => AlgorithmIdentifierOwned {
                oid: rfc5912::ECDSA_WITH_SHA_256,
                parameters: None,
            },
            KeySpec::EcdsaP384 => AlgorithmIdentifierOwned {
                oid: rfc5912::ECDSA_WITH_SHA_384,
                parameters: None,
            },
            KeySpec::Rsa { .. } => AlgorithmIdentifierOwned {
                oid: rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            KeySpec::RsaPss { .. } => AlgorithmIdentifierOwned {
                oid: rfc5912::ID_RSASSA_PSS,
                parameters: Some(pss_sha256_params()),
            },
        }
    }

    /// The named curve's OID; `None` for RSA.
    pub fn curve(&self) -> Option<ObjectIdentifier> {
        match self {
            KeySpec::EcdsaP256 => Some(rfc5912::SECP_256_R_1),
            KeySpec::EcdsaP384 => Some(rfc5912::SECP_384_R_1),
            _ => None,
        }
    }

    /// The modulus size of either RSA kind; `None` for ECDSA.
    pub fn rsa_bits(&self) -> Option<u32> {
        match self {
            KeySpec::Rsa { bits } | KeySpec::RsaPss { bits } => Some(*bits),
            _ => None,
        }
    }

    /// Size in bytes of one ECDSA scalar, used to split a raw `r‖s` signature.
    pub fn ec_scalar_len(&self) -> Option<usize> {
        match self {
            KeySpec::EcdsaP256 => Some(32),
            KeySpec::EcdsaP384 => Some(48),
            _ => None,
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::EcdsaP256 => f.write_str("ecdsa-p256"),
            KeySpec::EcdsaP384 => f.write_str("ecdsa-p384"),
            KeySpec::Rsa { bits } => write!(f, "rsa-{bits}"),
            KeySpec::RsaPss { bits } => write!(f, "rsa-pss-{bits}"),
        }
    }
}

impl FromStr for KeySpec {
    type Err = HsmError;
    fn from_str(s: &str) -> Result<Self, HsmError> {
        let bad = || {
            HsmError::Config(format!(
                "unknown key kind {s:?}: expected ecdsa-p256, ecdsa-p384, rsa-BITS or rsa-pss-BITS (BITS 2048, 3072 or 4096)"
            ))
        };
        let rsa_bits = |b: &str| -> Result<u32, HsmError> {
            match b.parse::<u32>() {
                Ok(bits @ (2048 | 3072 | 4096)) => Ok(bits),
                _ => Err(bad()),
            }
        };
        match s {
            "ecdsa-p256" => Ok(KeySpec::EcdsaP256),
            "ecdsa-p384" => Ok(KeySpec::EcdsaP384),
            _ => {
                if let Some(b) = s.strip_prefix("rsa-pss-") {
                    Ok(KeySpec::RsaPss { bits: rsa_bits(b)? })
                } else if let Some(b) = s.strip_prefix("rsa-") {
                    Ok(KeySpec::Rsa { bits: rsa_bits(b)? })
                } else {
                    Err(bad())
                }
            }
        }
    }
}

/// RSASSA-PSS-params (RFC 4055) for SHA-256 / MGF1-SHA-256 / salt 32.
#[derive(Clone, Debug, Sequence)]
struct RsaPssParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    hash: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT")]
    mask_gen: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
    salt_len: u32,
}

fn pss_sha256_params() -> Any {
    let sha256 = AlgorithmIdentifierOwned {
        oid: rfc5912::ID_SHA_256,
        parameters: Some(Any::null()),
    };
    let params = RsaPssParams {
        hash: sha256.clone(),
        mask_gen: AlgorithmIdentifierOwned {
            oid: rfc5912::ID_MGF_1,
            parameters: Some(Any::encode_from(&sha256).expect("static structure encodes")),
        },
        salt_len: 32,
    };
    Any::encode_from(&params).expect("static structure encodes")
}

/// Whether `params` are exactly the PSS parameters Muhr signs and accepts.
pub fn is_pss_sha256(params: Option<&Any>) -> bool {
    params.is_some_and(|p| p == &pss_sha256_params())
}

/// ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } (RFC 3279).
#[derive(Sequence)]
struct EcdsaSigValue<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// HSMs return ECDSA signatures as raw `r‖s`; X.509 wants them DER-encoded.
pub fn ecdsa_raw_to_der(raw: &[u8], scalar_len: usize) -> crate::Result<Vec<u8>> {
    if raw.len() != 2 * scalar_len {
        return Err(HsmError::Crypto(format!(
            "ECDSA signature of {} bytes, expected {}",
            raw.len(),
            2 * scalar_len
        )));
    }
    let (r, s) = raw.split_at(scalar_len);
    let value = EcdsaSigValue {
        r: UintRef::new(r).map_err(|e| HsmError::Crypto(e.to_string()))?,
        s: UintRef::new(s).map_err(|e| HsmError::Crypto(e.to_string()))?,
    };
    value.to_der().map_err(|e| HsmError::Crypto(e.to_string()))
}

/// RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } (RFC 8017).
#[derive(Sequence)]
pub struct RsaPublicKey<'a> {
    /// The modulus n, big-endian.
    pub modulus: UintRef<'a>,
    /// The public exponent e, big-endian.
    pub public_exponent: UintRef<'a>,
}

impl<'a> RsaPublicKey<'a> {
    /// Decodes the DER inside an RSA SubjectPublicKeyInfo's BIT STRING,
    /// borrowing from it.
    pub fn parse(der: &'a [u8]) -> der::Result<Self> {
        Self::from_der(der)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_specs_round_trip_through_their_names() {
        for name in [
            "ecdsa-p256",
            "ecdsa-p384",
            "rsa-2048",
            "rsa-3072",
            "rsa-4096",
            "rsa-pss-2048",
        ] {
            assert_eq!(KeySpec::from_str(name).unwrap().to_string(), name);
        }
        for bad in ["rsa-1024", "ecdsa-p521", "rsa-", "ed25519", "rsa-pss-1000"] {
            assert!(KeySpec::from_str(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn raw_ecdsa_signature_becomes_minimal_der() {
        let mut raw = vec![0u8; 64];
        raw[31] = 1; // r = 1
        raw[32] = 0x80; // s has its top bit set: needs a leading zero
        let der = ecdsa_raw_to_der(&raw, 32).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..8], &[0x02, 0x21, 0x00]);
        assert!(ecdsa_raw_to_der(&raw[..63], 32).is_err());
    }
}

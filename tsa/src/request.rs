//! Reading a TimeStampReq and deciding whether it may be stamped (RFC 3161
//! 2.4.1). Every refusal names the PKIFailureInfo bit a client acts on;
//! nothing here panics on any input (it is fuzzed).

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912;
use der::Decode;
use der::asn1::Int;

use crate::asn1::{FailureInfo, MessageImprint, TimeStampReq};

/// A request that may be stamped, with what the token will say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The imprint, as the request gave it.
    pub imprint: MessageImprint,
    /// `sha256`, `sha384` or `sha512`: the imprint's algorithm, for the log.
    pub hash_name: &'static str,
    /// The policy the token is issued under.
    pub policy: ObjectIdentifier,
    /// Echoed in the token.
    pub nonce: Option<Int>,
    /// The TSA certificate goes in the token.
    pub cert_req: bool,
}

/// Why a request is not stamped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {why}", info.name())]
pub struct Rejected {
    /// The PKIFailureInfo bit of the reply.
    pub info: FailureInfo,
    /// A sentence for the requester (the reply's statusString).
    pub why: String,
}

pub(crate) fn reject(info: FailureInfo, why: impl Into<String>) -> Rejected {
    Rejected {
        info,
        why: why.into(),
    }
}

/// The policies a TSA issues under: the default, and the others a request
/// may ask for by name.
#[derive(Clone, Debug)]
pub struct Policies {
    /// Used when the request names none.
    pub default: ObjectIdentifier,
    /// Besides the default, the ones a request may name.
    pub allowed: Vec<ObjectIdentifier>,
}

/// The longest nonce echoed: RFC 3161 leaves it unbounded, and an echo of
/// any length would let a requester make the TSA sign its chosen bytes in
/// bulk. Clients send 64 bits (OpenSSL) to 160 bits.
pub const MAX_NONCE_BYTES: usize = 32;

/// Reads `body` as a DER TimeStampReq and checks it against `policies`.
pub fn parse(body: &[u8], policies: &Policies) -> Result<Accepted, Rejected> {
    let req = TimeStampReq::from_der(body).map_err(|e| {
        reject(
            FailureInfo::BadDataFormat,
            format!("not a DER TimeStampReq: {e}"),
        )
    })?;
    if req.version != 1 {
        return Err(reject(
            FailureInfo::BadRequest,
            format!("version {} is not v1", req.version),
        ));
    }
    let alg = &req.message_imprint.hash_algorithm;
    let (hash_name, len) = match alg.oid {
        o if o == rfc5912::ID_SHA_256 => ("sha256", 32),
        o if o == rfc5912::ID_SHA_384 => ("sha384", 48),
        o if o == rfc5912::ID_SHA_512 => ("sha512", 64),
        o => {
            return Err(reject(
                FailureInfo::BadAlg,
                format!("imprint hash {o} is not stamped: use SHA-256, SHA-384 or SHA-512"),
            ));
        }
    };
    // RFC 5754 3: SHA-2 identifiers have absent parameters; NULL is
    // tolerated because older encoders write it.
    if alg.parameters.as_ref().is_some_and(|p| !p.is_null()) {
        return Err(reject(
            FailureInfo::BadAlg,
            "the imprint's hash algorithm carries parameters",
        ));
    }
    let got = req.message_imprint.hashed_message.as_bytes().len();
    if got != len {
        return Err(reject(
            FailureInfo::BadDataFormat,
            format!("a {hash_name} imprint is {len} bytes, not {got}"),
        ));
    }
    let policy = match req.req_policy {
        None => policies.default,
        Some(p) if p == policies.default || policies.allowed.contains(&p) => p,
        Some(p) => {
            return Err(reject(
                FailureInfo::UnacceptedPolicy,
                format!("policy {p} is not one this TSA issues under"),
            ));
        }
    };
    if let Some(n) = &req.nonce
        && n.as_bytes().len() > MAX_NONCE_BYTES
    {
        return Err(reject(
            FailureInfo::BadRequest,
            format!("the nonce is longer than {MAX_NONCE_BYTES} bytes"),
        ));
    }
    // RFC 3161 2.4.1: an extension the TSA does not recognise, critical or
    // not, is refused; none is recognised.
    if let Some(e) = req.extensions.as_ref().and_then(|e| e.first()) {
        return Err(reject(
            FailureInfo::UnacceptedExtension,
            format!("extension {} is not supported", e.extn_id),
        ));
    }
    Ok(Accepted {
        imprint: req.message_imprint,
        hash_name,
        policy,
        nonce: req.nonce,
        cert_req: req.cert_req,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Encode;
    use der::asn1::OctetString;
    use spki::AlgorithmIdentifierOwned;

    const POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.860.3.2.1.1");
    const OTHER: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.860.3.2.1.2");

    fn policies() -> Policies {
        Policies {
            default: POLICY,
            allowed: vec![OTHER],
        }
    }

    fn req(oid: ObjectIdentifier, len: usize) -> TimeStampReq {
        TimeStampReq {
            version: 1,
            message_imprint: MessageImprint {
                hash_algorithm: AlgorithmIdentifierOwned {
                    oid,
                    parameters: None,
                },
                hashed_message: OctetString::new(vec![7; len]).unwrap(),
            },
            req_policy: None,
            nonce: Some(Int::new(&[1, 2, 3]).unwrap()),
            cert_req: true,
            extensions: None,
        }
    }

    fn parsed(r: &TimeStampReq) -> Result<Accepted, Rejected> {
        parse(&r.to_der().unwrap(), &policies())
    }

    #[test]
    fn sha2_imprints_are_accepted_with_the_default_policy() {
        for (oid, len) in [
            (rfc5912::ID_SHA_256, 32),
            (rfc5912::ID_SHA_384, 48),
            (rfc5912::ID_SHA_512, 64),
        ] {
            let a = parsed(&req(oid, len)).unwrap();
            assert_eq!(a.policy, POLICY);
            assert!(a.cert_req);
            assert_eq!(a.nonce.unwrap().as_bytes(), [1, 2, 3]);
        }
    }

    #[test]
    fn sha1_and_md5_imprints_are_refused_as_bad_alg() {
        for oid in [
            rfc5912::ID_SHA_1,
            ObjectIdentifier::new_unwrap("1.2.840.113549.2.5"),
        ] {
            assert_eq!(parsed(&req(oid, 20)).unwrap_err().info, FailureInfo::BadAlg);
        }
    }

    #[test]
    fn an_imprint_of_the_wrong_length_is_bad_data_format() {
        let e = parsed(&req(rfc5912::ID_SHA_256, 20)).unwrap_err();
        assert_eq!(e.info, FailureInfo::BadDataFormat);
        assert!(e.why.contains("32 bytes"), "{e}");
    }

    #[test]
    fn a_policy_not_offered_is_unaccepted_and_an_offered_one_is_used() {
        let mut r = req(rfc5912::ID_SHA_256, 32);
        r.req_policy = Some(ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99.1"));
        assert_eq!(parsed(&r).unwrap_err().info, FailureInfo::UnacceptedPolicy);
        r.req_policy = Some(OTHER);
        assert_eq!(parsed(&r).unwrap().policy, OTHER);
    }

    #[test]
    fn any_extension_even_non_critical_is_unaccepted() {
        let mut r = req(rfc5912::ID_SHA_256, 32);
        r.extensions = Some(vec![x509_cert::ext::Extension {
            extn_id: ObjectIdentifier::new_unwrap("1.2.3.4"),
            critical: false,
            extn_value: OctetString::new(vec![5, 0]).unwrap(),
        }]);
        assert_eq!(
            parsed(&r).unwrap_err().info,
            FailureInfo::UnacceptedExtension
        );
    }

    #[test]
    fn a_huge_nonce_chosen_by_an_attacker_is_not_echoed() {
        let mut r = req(rfc5912::ID_SHA_256, 32);
        r.nonce = Some(Int::new(&[0x11; 200]).unwrap());
        assert_eq!(parsed(&r).unwrap_err().info, FailureInfo::BadRequest);
    }

    #[test]
    fn garbage_truncation_and_trailing_bytes_are_bad_data_format() {
        let good = req(rfc5912::ID_SHA_256, 32).to_der().unwrap();
        for bad in [
            &b""[..],
            b"\x30",
            b"hello",
            &good[..good.len() - 1],
            &[good.as_slice(), b"\x00"].concat(),
        ] {
            assert_eq!(
                parse(bad, &policies()).unwrap_err().info,
                FailureInfo::BadDataFormat
            );
        }
        let mut v2 = req(rfc5912::ID_SHA_256, 32);
        v2.version = 2;
        assert_eq!(parsed(&v2).unwrap_err().info, FailureInfo::BadRequest);
    }
}

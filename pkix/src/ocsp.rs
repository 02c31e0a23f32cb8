//! OCSP messages (RFC 6960 §4 and its ASN.1 module, Appendix B.1) as typed
//! ASN.1 on the same `der` / `x509-cert` / `spki` generation as the rest of
//! Muhr.
//!
//! Defined here rather than taken from `x509-ocsp`, whose latest release
//! (0.2.1) is built on the previous generation of those crates: using it
//! meant compiling two of each and bridging values through DER bytes. These
//! are declarations only, derived with `der`'s macros, so the encoding rules
//! (explicit and implicit tags, DEFAULT v1 left out in DER) come from the
//! ASN.1 as written in the RFC, never from hand-assembled bytes. The
//! responder and the client of other CAs' responders build their logic on
//! them.

use der::asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString};
use der::{Choice, Encode, Enumerated, Sequence};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::ext::Extensions;
use x509_cert::ext::pkix::CrlReason;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;

/// id-pkix-ocsp-basic: the only response type RFC 6960 requires.
pub const ID_PKIX_OCSP_BASIC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");

/// id-pkix-ocsp-nonce (RFC 8954).
pub const ID_PKIX_OCSP_NONCE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");

/// id-sha1, the CertID hash every responder knows (RFC 5019).
pub const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");

/// id-sha256 (RFC 5754), the other CertID hash Muhr's responder answers.
pub const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

/// `Version ::= INTEGER { v1(0) }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Enumerated)]
#[asn1(type = "INTEGER")]
#[repr(u8)]
pub enum Version {
    /// The only version defined.
    #[default]
    V1 = 0,
}

/// `OCSPRequest`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct OcspRequest {
    /// What is asked.
    pub tbs_request: TbsRequest,
    /// A requester's signature; Muhr neither needs nor checks one.
    #[asn1(context_specific = "0", optional = "true", tag_mode = "EXPLICIT")]
    pub optional_signature: Option<Signature>,
}

/// `TBSRequest`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct TbsRequest {
    /// Always v1; left out of the encoding (DEFAULT).
    #[asn1(
        context_specific = "0",
        default = "Default::default",
        tag_mode = "EXPLICIT"
    )]
    pub version: Version,
    /// Who asks, when the requester says.
    #[asn1(context_specific = "1", optional = "true", tag_mode = "EXPLICIT")]
    pub requestor_name: Option<GeneralName>,
    /// One entry per certificate asked about.
    pub request_list: Vec<Request>,
    /// The nonce, among others.
    #[asn1(context_specific = "2", optional = "true", tag_mode = "EXPLICIT")]
    pub request_extensions: Option<Extensions>,
}

/// `Signature` (of a request).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct Signature {
    /// How it was signed.
    pub signature_algorithm: AlgorithmIdentifierOwned,
    /// The signature value.
    pub signature: BitString,
    /// Certificates to help find the signer's.
    #[asn1(context_specific = "0", optional = "true", tag_mode = "EXPLICIT")]
    pub certs: Option<Vec<Certificate>>,
}

/// `Request`: one certificate asked about.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct Request {
    /// Which certificate.
    pub req_cert: CertId,
    /// Per-certificate extensions.
    #[asn1(context_specific = "0", optional = "true", tag_mode = "EXPLICIT")]
    pub single_request_extensions: Option<Extensions>,
}

/// `CertID`: a certificate named by hashes of its issuer and its serial.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct CertId {
    /// The hash of the two issuer fields.
    pub hash_algorithm: AlgorithmIdentifierOwned,
    /// Hash of the issuer's DER-encoded name.
    pub issuer_name_hash: OctetString,
    /// Hash of the issuer's public key (the BIT STRING's value).
    pub issuer_key_hash: OctetString,
    /// The certificate's serial number.
    pub serial_number: SerialNumber,
}

/// `OCSPResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct OcspResponse {
    /// Whether there is an answer.
    pub response_status: OcspResponseStatus,
    /// The answer, present only when `successful`.
    #[asn1(context_specific = "0", optional = "true", tag_mode = "EXPLICIT")]
    pub response_bytes: Option<ResponseBytes>,
}

impl OcspResponse {
    /// A response that is only a status: every one but `successful`.
    pub fn status(status: OcspResponseStatus) -> Self {
        Self {
            response_status: status,
            response_bytes: None,
        }
    }

    /// A successful response carrying the DER of a BasicOCSPResponse.
    pub fn basic(basic_der: Vec<u8>) -> der::Result<Self> {
        Ok(Self {
            response_status: OcspResponseStatus::Successful,
            response_bytes: Some(ResponseBytes {
                response_type: ID_PKIX_OCSP_BASIC,
                response: OctetString::new(basic_der)?,
            }),
        })
    }

    /// The DER of an error response (status only); an error status always
    /// encodes, so this never fails.
    pub fn status_der(status: OcspResponseStatus) -> Vec<u8> {
        Self::status(status).to_der().unwrap_or_default()
    }
}

/// `OCSPResponseStatus` (value 4 is not used).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enumerated)]
#[repr(u32)]
pub enum OcspResponseStatus {
    /// The response has valid confirmations.
    Successful = 0,
    /// The request does not conform to the OCSP syntax.
    MalformedRequest = 1,
    /// The responder reached an inconsistent internal state.
    InternalError = 2,
    /// Try again later.
    TryLater = 3,
    /// The request must be signed.
    SigRequired = 5,
    /// The request is for a CA this responder does not serve.
    Unauthorized = 6,
}

/// `ResponseBytes`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct ResponseBytes {
    /// [`ID_PKIX_OCSP_BASIC`] for every response Muhr reads or writes.
    pub response_type: ObjectIdentifier,
    /// The DER of the response of that type.
    pub response: OctetString,
}

/// `BasicOCSPResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct BasicOcspResponse {
    /// What is signed.
    pub tbs_response_data: ResponseData,
    /// How.
    pub signature_algorithm: AlgorithmIdentifierOwned,
    /// The signature over the DER of `tbs_response_data`.
    pub signature: BitString,
    /// The responder's certificate, when it is not the CA.
    #[asn1(context_specific = "0", optional = "true", tag_mode = "EXPLICIT")]
    pub certs: Option<Vec<Certificate>>,
}

/// `ResponseData`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct ResponseData {
    /// Always v1; left out of the encoding (DEFAULT).
    #[asn1(
        context_specific = "0",
        default = "Default::default",
        tag_mode = "EXPLICIT"
    )]
    pub version: Version,
    /// Who signed.
    pub responder_id: ResponderId,
    /// When the response was signed.
    pub produced_at: GeneralizedTime,
    /// One per certificate asked about.
    pub responses: Vec<SingleResponse>,
    /// The nonce echoed, among others.
    #[asn1(context_specific = "1", optional = "true", tag_mode = "EXPLICIT")]
    pub response_extensions: Option<Extensions>,
}

/// `ResponderID` (explicit tags: the RFC's module is EXPLICIT TAGS).
#[derive(Clone, Debug, PartialEq, Eq, Choice)]
pub enum ResponderId {
    /// The responder certificate's subject.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", constructed = "true")]
    ByName(Name),
    /// SHA-1 of the responder's public key (the BIT STRING's value).
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", constructed = "true")]
    ByKey(OctetString),
}

/// `SingleResponse`: the status of one certificate.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SingleResponse {
    /// The certificate, as asked.
    pub cert_id: CertId,
    /// Its status.
    pub cert_status: CertStatus,
    /// When the status was known to be correct.
    pub this_update: GeneralizedTime,
    /// When newer information will be available.
    #[asn1(context_specific = "0", optional = "true", tag_mode = "EXPLICIT")]
    pub next_update: Option<GeneralizedTime>,
    /// Per-certificate extensions.
    #[asn1(context_specific = "1", optional = "true", tag_mode = "EXPLICIT")]
    pub single_extensions: Option<Extensions>,
}

/// `CertStatus` (implicit tags, as the RFC writes them).
#[derive(Clone, Debug, PartialEq, Eq, Choice)]
pub enum CertStatus {
    /// Not revoked (which says nothing of whether it was ever issued).
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Good(Null),
    /// Revoked or on hold.
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    Revoked(RevokedInfo),
    /// The responder does not know the certificate.
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT")]
    Unknown(Null),
}

/// `RevokedInfo`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct RevokedInfo {
    /// When it was revoked or suspended.
    pub revocation_time: GeneralizedTime,
    /// Why, when a reason was given.
    #[asn1(context_specific = "0", optional = "true", tag_mode = "EXPLICIT")]
    pub revocation_reason: Option<CrlReason>,
}

#[cfg(test)]
mod tests {
    use der::Decode;

    use super::*;

    /// A request as `openssl ocsp -reqout` writes it (SHA-1 CertID, a nonce):
    /// the version is left out, as DER demands of a DEFAULT value.
    fn request() -> OcspRequest {
        let nonce = OctetString::new(vec![7u8; 16]).unwrap();
        OcspRequest {
            tbs_request: TbsRequest {
                version: Version::V1,
                requestor_name: None,
                request_list: vec![Request {
                    req_cert: CertId {
                        hash_algorithm: AlgorithmIdentifierOwned {
                            oid: ID_SHA1,
                            parameters: Some(Null.into()),
                        },
                        issuer_name_hash: OctetString::new(vec![1u8; 20]).unwrap(),
                        issuer_key_hash: OctetString::new(vec![2u8; 20]).unwrap(),
                        serial_number: SerialNumber::new(&[0x4a, 0x01]).unwrap(),
                    },
                    single_request_extensions: None,
                }],
                request_extensions: Some(vec![x509_cert::ext::Extension {
                    extn_id: ID_PKIX_OCSP_NONCE,
                    critical: false,
                    extn_value: OctetString::new(nonce.to_der().unwrap()).unwrap(),
                }]),
            },
            optional_signature: None,
        }
    }

    #[test]
    fn request_round_trips_without_an_explicit_default_version() {
        let der = request().to_der().unwrap();
        // SEQUENCE { SEQUENCE (tbsRequest) { SEQUENCE OF Request ... } }:
        // the tbsRequest's first element is the list, not a [0] version.
        assert_eq!(der[0], 0x30);
        let tbs = der::asn1::AnyRef::from_der(&der[2..]).unwrap();
        assert_eq!(tbs.value()[0], 0x30, "no [0] version before the list");
        assert_eq!(OcspRequest::from_der(&der).unwrap(), request());
    }

    #[test]
    fn statuses_encode_as_the_rfc_numbers_them() {
        for (s, n) in [
            (OcspResponseStatus::Successful, 0u8),
            (OcspResponseStatus::MalformedRequest, 1),
            (OcspResponseStatus::InternalError, 2),
            (OcspResponseStatus::TryLater, 3),
            (OcspResponseStatus::SigRequired, 5),
            (OcspResponseStatus::Unauthorized, 6),
        ] {
            assert_eq!(
                OcspResponse::status_der(s),
                vec![0x30, 0x03, 0x0a, 0x01, n],
                "{s:?}"
            );
        }
        // 4 is not a status: a response claiming it is refused.
        assert!(OcspResponse::from_der(&[0x30, 0x03, 0x0a, 0x01, 4]).is_err());
    }

    #[test]
    fn cert_status_tags_are_implicit_and_responder_id_tags_explicit() {
        assert_eq!(CertStatus::Good(Null).to_der().unwrap(), [0x80, 0x00]);
        assert_eq!(CertStatus::Unknown(Null).to_der().unwrap(), [0x82, 0x00]);
        let t = GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(0)).unwrap();
        let revoked = CertStatus::Revoked(RevokedInfo {
            revocation_time: t,
            revocation_reason: Some(CrlReason::KeyCompromise),
        })
        .to_der()
        .unwrap();
        // [1] constructed, then the GeneralizedTime directly (no SEQUENCE
        // header), then [0] EXPLICIT ENUMERATED 1.
        assert_eq!(revoked[0], 0xa1);
        assert_eq!(revoked[2], 0x18);
        assert_eq!(
            &revoked[revoked.len() - 5..],
            [0xa0, 0x03, 0x0a, 0x01, 0x01]
        );
        assert_eq!(
            CertStatus::from_der(&revoked).unwrap().to_der().unwrap(),
            revoked
        );
        let by_key = ResponderId::ByKey(OctetString::new(vec![9u8; 20]).unwrap())
            .to_der()
            .unwrap();
        assert_eq!(&by_key[..4], [0xa2, 22, 0x04, 20]);
    }
}

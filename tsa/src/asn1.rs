//! The time-stamp protocol's messages (RFC 3161 2.4 and Appendix C, with
//! RFC 5816's ESSCertIDv2) as typed ASN.1 on the same `der` / `cms` /
//! `x509-cert` generation as the rest of Muhr.
//!
//! Declared here rather than taken from `x509-tsp`, whose only release
//! (0.1) sits on the previous generation of those crates. These are
//! declarations only: tags, OPTIONAL and DEFAULT come from the RFC's module
//! (IMPLICIT TAGS), never from hand-assembled bytes.

use der::asn1::{BitString, GeneralizedTime, Int, ObjectIdentifier, OctetString};
use der::{Any, Sequence};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::Extensions;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::name::GeneralNames;
use x509_cert::serial_number::SerialNumber;

/// id-ct-TSTInfo: the content type of a token's encapsulated content.
pub const ID_CT_TST_INFO: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");

/// id-aa-signingCertificateV2 (RFC 5035): binds the token's signature to
/// the TSA certificate, so a token cannot be passed off as another TSA's.
pub const ID_AA_SIGNING_CERTIFICATE_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");

/// id-aa-signingCertificate (RFC 2634): the SHA-1 form, read but never made.
pub const ID_AA_SIGNING_CERTIFICATE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.12");

/// id-aa-signatureTimeStampToken (RFC 3161 Appendix A): the unsigned
/// attribute of a SignerInfo that carries a token over its signature value.
pub const ID_AA_SIGNATURE_TIME_STAMP_TOKEN: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.14");

/// `MessageImprint`: the hash of the datum being stamped.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct MessageImprint {
    /// How the datum was hashed.
    pub hash_algorithm: AlgorithmIdentifierOwned,
    /// The hash.
    pub hashed_message: OctetString,
}

/// `TimeStampReq`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct TimeStampReq {
    /// v1 (1), the only version.
    pub version: u8,
    /// What is to be stamped.
    pub message_imprint: MessageImprint,
    /// The policy the requester wants the token issued under.
    pub req_policy: Option<ObjectIdentifier>,
    /// Echoed in the token so the requester can match its reply.
    pub nonce: Option<Int>,
    /// The TSA's certificate is to be carried in the token.
    #[asn1(default = "Default::default")]
    pub cert_req: bool,
    /// None are understood; a critical one is refused.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub extensions: Option<Extensions>,
}

/// `PKIStatusInfo` (RFC 3161 2.4.2, from RFC 4210).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct PkiStatusInfo {
    /// 0 granted, 2 rejection, among others.
    pub status: u8,
    /// Sentences for people.
    pub status_string: Option<Vec<String>>,
    /// Why a request was rejected.
    pub fail_info: Option<BitString>,
}

/// `TimeStampResp`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct TimeStampResp {
    /// Granted or rejected, and why.
    pub status: PkiStatusInfo,
    /// The token (a CMS ContentInfo) when granted.
    pub time_stamp_token: Option<Any>,
}

/// `Accuracy`: how far genTime may be from the true time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Sequence)]
pub struct Accuracy {
    /// Whole seconds.
    pub seconds: Option<u32>,
    /// 1..999 milliseconds.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub millis: Option<u16>,
    /// 1..999 microseconds.
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub micros: Option<u16>,
}

/// `TSTInfo`: what the TSA attests.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct TstInfo {
    /// v1 (1).
    pub version: u8,
    /// The policy the token was issued under.
    pub policy: ObjectIdentifier,
    /// The request's imprint, unchanged.
    pub message_imprint: MessageImprint,
    /// Unique among all tokens of this TSA.
    pub serial_number: Int,
    /// When the TSA saw the imprint.
    pub gen_time: GeneralizedTime,
    /// How far `gen_time` may be off.
    pub accuracy: Option<Accuracy>,
    /// Tokens are ordered by genTime alone: never claimed.
    #[asn1(default = "Default::default")]
    pub ordering: bool,
    /// The request's nonce, echoed.
    pub nonce: Option<Int>,
    /// The TSA's name (its certificate's subject).
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub tsa: Option<GeneralName>,
    /// None are written.
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub extensions: Option<Extensions>,
}

/// `IssuerSerial` (RFC 5035).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct IssuerSerial {
    /// The issuer's name, as a directoryName.
    pub issuer: GeneralNames,
    /// The certificate's serial.
    pub serial_number: SerialNumber,
}

/// `ESSCertIDv2` (RFC 5035 5.4.1.1).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct EssCertIdV2 {
    /// Left out when it is SHA-256 (the DEFAULT).
    pub hash_algorithm: Option<AlgorithmIdentifierOwned>,
    /// The hash of the whole certificate.
    pub cert_hash: OctetString,
    /// Which certificate, should the hash need a name.
    pub issuer_serial: Option<IssuerSerial>,
}

/// `SigningCertificateV2` (RFC 5035 5.4.1.1).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SigningCertificateV2 {
    /// The signer's certificate first.
    pub certs: Vec<EssCertIdV2>,
    /// Never written.
    pub policies: Option<Vec<Any>>,
}

/// `ESSCertID` (RFC 2634): SHA-1 of the certificate, as older TSAs write.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct EssCertId {
    /// SHA-1 of the whole certificate.
    pub cert_hash: OctetString,
    /// Which certificate.
    pub issuer_serial: Option<IssuerSerial>,
}

/// `SigningCertificate` (RFC 2634).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SigningCertificate {
    /// The signer's certificate first.
    pub certs: Vec<EssCertId>,
    /// Never read.
    pub policies: Option<Vec<Any>>,
}

/// PKIStatus values (RFC 4210).
pub mod status {
    /// The token is in the reply.
    pub const GRANTED: u8 = 0;
    /// No token, and `failInfo` says why.
    pub const REJECTION: u8 = 2;
}

/// A `PKIFailureInfo` bit (RFC 3161 2.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureInfo {
    /// An imprint hash Muhr does not stamp (only SHA-2 is).
    BadAlg = 0,
    /// A request that is not permitted or not supported.
    BadRequest = 2,
    /// Not DER, or not a TimeStampReq.
    BadDataFormat = 5,
    /// The clock is not known to be right.
    TimeNotAvailable = 14,
    /// A policy this TSA does not issue under.
    UnacceptedPolicy = 15,
    /// A critical extension nobody here understands.
    UnacceptedExtension = 16,
    /// The key store, the token log or something else on this side failed.
    SystemFailure = 25,
}

impl FailureInfo {
    /// The named bit as DER writes it: no trailing zero bits (X.690 11.2.2).
    pub fn bits(self) -> BitString {
        let n = self as usize;
        let mut bytes = vec![0u8; n / 8 + 1];
        bytes[n / 8] = 0x80 >> (n % 8);
        BitString::new((7 - n % 8) as u8, bytes).expect("fewer than 8 unused bits")
    }

    /// Which bit a reply carries, if exactly one is set.
    pub fn from_bits(b: &BitString) -> Option<Self> {
        let set: Vec<usize> = b
            .bits()
            .enumerate()
            .filter(|(_, on)| *on)
            .map(|(i, _)| i)
            .collect();
        let [one] = set.as_slice() else { return None };
        [
            Self::BadAlg,
            Self::BadRequest,
            Self::BadDataFormat,
            Self::TimeNotAvailable,
            Self::UnacceptedPolicy,
            Self::UnacceptedExtension,
            Self::SystemFailure,
        ]
        .into_iter()
        .find(|f| *f as usize == *one)
    }

    /// The name RFC 3161 gives it, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadAlg => "badAlg",
            Self::BadRequest => "badRequest",
            Self::BadDataFormat => "badDataFormat",
            Self::TimeNotAvailable => "timeNotAvailable",
            Self::UnacceptedPolicy => "unacceptedPolicy",
            Self::UnacceptedExtension => "unacceptedExtension",
            Self::SystemFailure => "systemFailure",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::{Decode, Encode};

    #[test]
    fn failure_bits_are_minimal_der() {
        // timeNotAvailable (14): two bytes, one unused bit.
        let b = FailureInfo::TimeNotAvailable.bits();
        assert_eq!(b.to_der().unwrap(), [0x03, 0x03, 0x01, 0x00, 0x02]);
        assert_eq!(
            FailureInfo::from_bits(&b),
            Some(FailureInfo::TimeNotAvailable)
        );
        let b = FailureInfo::BadAlg.bits();
        assert_eq!(b.to_der().unwrap(), [0x03, 0x02, 0x07, 0x80]);
        let b = FailureInfo::SystemFailure.bits();
        assert_eq!(FailureInfo::from_bits(&b), Some(FailureInfo::SystemFailure));
    }

    #[test]
    fn accuracy_round_trips_with_implicit_tags() {
        let a = Accuracy {
            seconds: Some(1),
            millis: Some(500),
            micros: None,
        };
        let der = a.to_der().unwrap();
        assert_eq!(der, [0x30, 0x07, 0x02, 0x01, 0x01, 0x80, 0x02, 0x01, 0xf4]);
        assert_eq!(Accuracy::from_der(&der).unwrap(), a);
    }
}

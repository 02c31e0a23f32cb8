//! Making a time-stamp token: a CMS SignedData over a TSTInfo (RFC 3161
//! 2.4.2), signed by the TSA key with the signing-certificate-v2 attribute
//! (RFC 5816) that binds the signature to the TSA certificate.

use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::digest;
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::CmsVersion;
use cms::signed_data::SignerIdentifier;
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{GeneralizedTime, Int, OctetString, OctetStringRef, SetOfVec};
use der::{Any, AnyRef, Decode, Encode};
use muhr_hsm::{KeySigner, KeySpec};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::name::GeneralName;

use crate::asn1::{
    Accuracy, EssCertIdV2, FailureInfo, ID_AA_SIGNING_CERTIFICATE_V2, ID_CT_TST_INFO, IssuerSerial,
    PkiStatusInfo, SigningCertificateV2, TimeStampResp, TstInfo, status,
};
use crate::request::Accepted;

/// The TSA key with its certificate, and what every token repeats about
/// them, encoded once.
pub struct Stamper {
    key: Arc<dyn KeySigner>,
    cert: Certificate,
    /// The certificate's serial, upper-case hex (the token log names it).
    pub serial: String,
    /// End of the certificate's validity, Unix seconds.
    pub not_after: i64,
    digest: &'static digest::Algorithm,
    name: GeneralName,
    /// What every token repeats, DER encoded once (a token's own encoding
    /// then costs a few copies, not a walk through the certificate).
    fixed: Fixed,
}

/// The DER of a token's parts that depend only on the TSA certificate.
struct Fixed {
    certificate: Vec<u8>,
    /// The contentType attribute (id-ct-TSTInfo).
    content_type: Vec<u8>,
    /// The signingCertificateV2 attribute.
    signing_certificate: Vec<u8>,
    sid: Vec<u8>,
    digest_alg: Vec<u8>,
    /// SET OF DigestAlgorithmIdentifier, the digest algorithm alone.
    digest_algs: Vec<u8>,
    signature_alg: Vec<u8>,
}

/// SignerInfo (RFC 5652 5.3), its fixed fields as their DER.
#[derive(der::Sequence)]
struct SignerInfoRef<'a> {
    version: CmsVersion,
    sid: AnyRef<'a>,
    digest_alg: AnyRef<'a>,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    signed_attrs: SetOfVec<AnyRef<'a>>,
    signature_algorithm: AnyRef<'a>,
    signature: &'a OctetStringRef,
}

/// EncapsulatedContentInfo (RFC 5652 5.2) around a TSTInfo's DER.
#[derive(der::Sequence)]
struct EncapsulatedRef<'a> {
    econtent_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    econtent: &'a OctetStringRef,
}

/// SignedData (RFC 5652 5.1) of a token.
#[derive(der::Sequence)]
struct SignedDataRef<'a> {
    version: CmsVersion,
    digest_algorithms: AnyRef<'a>,
    encap_content_info: EncapsulatedRef<'a>,
    /// `CertificateSet`: a SET OF, tagged implicitly; one certificate.
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    certificates: Option<SetOfVec<AnyRef<'a>>>,
    signer_infos: SetOfVec<AnyRef<'a>>,
}

/// ContentInfo (RFC 5652 3): the token.
#[derive(der::Sequence)]
struct TokenRef<'a> {
    content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    content: SignedDataRef<'a>,
}

/// A granted TimeStampResp around a token's DER.
#[derive(der::Sequence)]
struct GrantedRef<'a> {
    status: PkiStatusInfo,
    time_stamp_token: AnyRef<'a>,
}

/// A granted TimeStampResp around the token being made: encoded in one
/// pass with it, not the token first and then again inside the reply.
#[derive(der::Sequence)]
struct GrantedTokenRef<'a> {
    status: PkiStatusInfo,
    time_stamp_token: TokenRef<'a>,
}

/// The hash a key's signatures are made over: the digest the SignerInfo
/// names must be the one the key hashes with.
fn hash_of(spec: KeySpec) -> (ObjectIdentifier, &'static digest::Algorithm) {
    match spec {
        KeySpec::EcdsaP384 => (rfc5912::ID_SHA_384, &digest::SHA384),
        _ => (rfc5912::ID_SHA_256, &digest::SHA256),
    }
}

fn der_err(e: der::Error) -> String {
    e.to_string()
}

impl Stamper {
    /// Pairs `key` with its certificate, refusing a certificate that is not
    /// for this key or not a TSA certificate.
    pub fn new(key: Arc<dyn KeySigner>, cert_der: &[u8]) -> Result<Self, String> {
        let cert = Certificate::from_der(cert_der)
            .map_err(|e| format!("the TSA certificate does not parse: {e}"))?;
        let tbs = cert.tbs_certificate();
        if tbs.subject_public_key_info() != key.public_key() {
            return Err(format!(
                "the TSA certificate is not for key {:?}",
                key.label()
            ));
        }
        if !crate::is_tsa_certificate(&cert) {
            return Err(
                "the certificate's only extended key usage is not a critical \
                 timeStamping (RFC 3161 2.3)"
                    .into(),
            );
        }
        let (oid, digest) = hash_of(key.spec());
        let cert_hash = digest::digest(&digest::SHA256, cert_der);
        let issuer_serial = IssuerSerial {
            issuer: vec![GeneralName::DirectoryName(tbs.issuer().clone())],
            serial_number: tbs.serial_number().clone(),
        };
        let ess = SigningCertificateV2 {
            certs: vec![EssCertIdV2 {
                hash_algorithm: None,
                cert_hash: OctetString::new(cert_hash.as_ref()).map_err(der_err)?,
                issuer_serial: Some(issuer_serial),
            }],
            policies: None,
        };
        let signing_certificate = Attribute {
            oid: ID_AA_SIGNING_CERTIFICATE_V2,
            values: SetOfVec::try_from(vec![Any::encode_from(&ess).map_err(der_err)?])
                .map_err(der_err)?,
        };
        let digest_alg = AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        };
        let content_type = Attribute {
            oid: rfc5911::ID_CONTENT_TYPE,
            values: SetOfVec::try_from(vec![Any::encode_from(&ID_CT_TST_INFO).map_err(der_err)?])
                .map_err(der_err)?,
        };
        let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        });
        let fixed = Fixed {
            certificate: cert_der.to_vec(),
            content_type: content_type.to_der().map_err(der_err)?,
            signing_certificate: signing_certificate.to_der().map_err(der_err)?,
            sid: sid.to_der().map_err(der_err)?,
            digest_algs: SetOfVec::try_from(vec![digest_alg.clone()])
                .map_err(der_err)?
                .to_der()
                .map_err(der_err)?,
            digest_alg: digest_alg.to_der().map_err(der_err)?,
            signature_alg: key.signature_algorithm().to_der().map_err(der_err)?,
        };
        Ok(Self {
            serial: muhr_pkix::serial::to_hex(tbs.serial_number()),
            not_after: tbs
                .validity()
                .not_after
                .to_system_time()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
            name: GeneralName::DirectoryName(tbs.subject().clone()),
            digest,
            fixed,
            key,
            cert,
        })
    }

    /// Whether the key signs without waiting on a device (`KeySigner::is_quick`).
    pub fn is_quick(&self) -> bool {
        self.key.is_quick()
    }

    /// The TSA certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// The TSTInfo for `req`, stamped `gen_time` (whole seconds).
    pub fn tst_info(
        &self,
        req: &Accepted,
        serial: Int,
        gen_time: SystemTime,
        accuracy: Option<Accuracy>,
    ) -> Result<TstInfo, String> {
        Ok(TstInfo {
            version: 1,
            policy: req.policy,
            message_imprint: req.imprint.clone(),
            serial_number: serial,
            gen_time: GeneralizedTime::from_system_time(gen_time).map_err(der_err)?,
            accuracy,
            ordering: false,
            nonce: req.nonce.clone(),
            tsa: Some(self.name.clone()),
            extensions: None,
        })
    }

    /// The token (a DER ContentInfo) for `info`; blocking, as the key may be
    /// in an HSM. `with_certificate` carries the TSA certificate (certReq).
    pub fn sign(&self, info: &TstInfo, with_certificate: bool) -> Result<Vec<u8>, SignError> {
        self.sign_reply(info, with_certificate)
            .map(|(reply, token)| reply[token].to_vec())
    }

    /// The granted TimeStampResp for `info` and where its token lies in it;
    /// blocking, as [`Stamper::sign`].
    pub fn sign_reply(
        &self,
        info: &TstInfo,
        with_certificate: bool,
    ) -> Result<(Vec<u8>, std::ops::Range<usize>), SignError> {
        fn any(der: &[u8]) -> Result<AnyRef<'_>, SignError> {
            AnyRef::from_der(der).map_err(|e| SignError::Encoding(e.to_string()))
        }
        let e = |e: der::Error| SignError::Encoding(e.to_string());
        let content = info.to_der().map_err(e)?;
        let message_digest = digest::digest(self.digest, &content);
        let message_digest = Attribute {
            oid: rfc5911::ID_MESSAGE_DIGEST,
            values: SetOfVec::try_from(vec![
                Any::encode_from(&OctetStringRef::new(message_digest.as_ref()).map_err(e)?)
                    .map_err(e)?,
            ])
            .map_err(e)?,
        }
        .to_der()
        .map_err(e)?;
        // DER orders a SET OF by encoding; SetOfVec sorts.
        let signed_attrs = SetOfVec::try_from(vec![
            any(&self.fixed.content_type)?,
            any(&message_digest)?,
            any(&self.fixed.signing_certificate)?,
        ])
        .map_err(e)?;
        let signature = self
            .key
            .sign(&signed_attrs.to_der().map_err(e)?)
            .map_err(SignError::Key)?;
        let signer_info = SignerInfoRef {
            version: CmsVersion::V1,
            sid: any(&self.fixed.sid)?,
            digest_alg: any(&self.fixed.digest_alg)?,
            signed_attrs,
            signature_algorithm: any(&self.fixed.signature_alg)?,
            signature: OctetStringRef::new(&signature).map_err(e)?,
        }
        .to_der()
        .map_err(e)?;
        let certificates = if with_certificate {
            Some(SetOfVec::try_from(vec![any(&self.fixed.certificate)?]).map_err(e)?)
        } else {
            None
        };
        let token = TokenRef {
            content_type: rfc5911::ID_SIGNED_DATA,
            content: SignedDataRef {
                // RFC 5652 5.1: v3, as the content is not id-data.
                version: CmsVersion::V3,
                digest_algorithms: any(&self.fixed.digest_algs)?,
                encap_content_info: EncapsulatedRef {
                    econtent_type: ID_CT_TST_INFO,
                    econtent: OctetStringRef::new(&content).map_err(e)?,
                },
                certificates,
                signer_infos: SetOfVec::try_from(vec![any(&signer_info)?]).map_err(e)?,
            },
        };
        let token_len = usize::try_from(token.encoded_len().map_err(e)?)
            .map_err(|_| SignError::Encoding("a token's length does not fit in memory".into()))?;
        let reply = GrantedTokenRef {
            status: granted_status(),
            time_stamp_token: token,
        }
        .to_der()
        .map_err(e)?;
        let (start, end) = (reply.len() - token_len, reply.len());
        Ok((reply, start..end))
    }
}

fn granted_status() -> PkiStatusInfo {
    PkiStatusInfo {
        status: status::GRANTED,
        status_string: None,
        fail_info: None,
    }
}

/// Why a token could not be signed: the requester gets systemFailure.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key store refused or is down.
    #[error("TSA key: {0}")]
    Key(muhr_hsm::HsmError),
    /// A value did not encode (never expected).
    #[error("encoding: {0}")]
    Encoding(String),
}

/// A granted reply around `token` (a DER ContentInfo).
pub fn granted(token: &[u8]) -> Result<Vec<u8>, String> {
    GrantedRef {
        status: granted_status(),
        time_stamp_token: AnyRef::from_der(token).map_err(der_err)?,
    }
    .to_der()
    .map_err(der_err)
}

/// A rejection: the failure bit and a sentence. Encoding a fixed small
/// structure cannot fail; should it, the reply is the bare status.
pub fn rejection(info: FailureInfo, why: &str) -> Vec<u8> {
    let full = TimeStampResp {
        status: PkiStatusInfo {
            status: status::REJECTION,
            status_string: Some(vec![why.chars().take(512).collect()]),
            fail_info: Some(info.bits()),
        },
        time_stamp_token: None,
    };
    full.to_der().unwrap_or_else(|_| {
        // SEQUENCE { SEQUENCE { INTEGER 2 } }, typed all the same.
        TimeStampResp {
            status: PkiStatusInfo {
                status: status::REJECTION,
                status_string: None,
                fail_info: None,
            },
            time_stamp_token: None,
        }
        .to_der()
        .unwrap_or_default()
    })
}

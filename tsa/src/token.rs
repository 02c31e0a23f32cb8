//! Making a time-stamp token: a CMS SignedData over a TSTInfo (RFC 3161
//! 2.4.2), signed by the TSA key with the signing-certificate-v2 attribute
//! (RFC 5816) that binds the signature to the TSA certificate.

use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::digest;
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier, SignerInfo,
    SignerInfos,
};
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{GeneralizedTime, Int, OctetString, SetOfVec};
use der::{Any, Decode, Encode};
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
    digest_alg: AlgorithmIdentifierOwned,
    digest: &'static digest::Algorithm,
    signing_certificate: Attribute,
    sid: SignerIdentifier,
    name: GeneralName,
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
        Ok(Self {
            serial: muhr_pkix::serial::to_hex(tbs.serial_number()),
            not_after: tbs
                .validity()
                .not_after
                .to_system_time()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            }),
            name: GeneralName::DirectoryName(tbs.subject().clone()),
            digest_alg: AlgorithmIdentifierOwned {
                oid,
                parameters: None,
            },
            digest,
            signing_certificate,
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
        let e = |e: der::Error| SignError::Encoding(e.to_string());
        let content = info.to_der().map_err(e)?;
        let attr = |oid: ObjectIdentifier, value: Any| -> Result<Attribute, SignError> {
            Ok(Attribute {
                oid,
                values: SetOfVec::try_from(vec![value]).map_err(e)?,
            })
        };
        let message_digest = digest::digest(self.digest, &content);
        let signed_attrs: SignedAttributes = SetOfVec::try_from(vec![
            attr(
                rfc5911::ID_CONTENT_TYPE,
                Any::encode_from(&ID_CT_TST_INFO).map_err(e)?,
            )?,
            attr(
                rfc5911::ID_MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(message_digest.as_ref()).map_err(e)?)
                    .map_err(e)?,
            )?,
            self.signing_certificate.clone(),
        ])
        .map_err(e)?;
        let signature = self
            .key
            .sign(&signed_attrs.to_der().map_err(e)?)
            .map_err(SignError::Key)?;
        let info = SignerInfo {
            version: CmsVersion::V1,
            sid: self.sid.clone(),
            digest_alg: self.digest_alg.clone(),
            signed_attrs: Some(signed_attrs),
            signature_algorithm: self.key.signature_algorithm(),
            signature: OctetString::new(signature).map_err(e)?,
            unsigned_attrs: None,
        };
        let certificates = if with_certificate {
            Some(
                vec![CertificateChoices::Certificate(self.cert.clone())]
                    .try_into()
                    .map_err(e)?,
            )
        } else {
            None
        };
        let sd = SignedData {
            // RFC 5652 5.1: v3, as the content is not id-data.
            version: CmsVersion::V3,
            digest_algorithms: SetOfVec::try_from(vec![self.digest_alg.clone()]).map_err(e)?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_CT_TST_INFO,
                econtent: Some(
                    Any::encode_from(&OctetString::new(content).map_err(e)?).map_err(e)?,
                ),
            },
            certificates,
            crls: None,
            signer_infos: SignerInfos::try_from(vec![info]).map_err(e)?,
        };
        ContentInfo {
            content_type: rfc5911::ID_SIGNED_DATA,
            content: Any::encode_from(&sd).map_err(e)?,
        }
        .to_der()
        .map_err(e)
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
    TimeStampResp {
        status: PkiStatusInfo {
            status: status::GRANTED,
            status_string: None,
            fail_info: None,
        },
        time_stamp_token: Some(Any::from_der(token).map_err(der_err)?),
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

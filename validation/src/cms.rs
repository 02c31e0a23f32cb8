//! CMS SignedData (RFC 5652): the signature a citizen's key makes over a
//! document, a login challenge or a renewal request.
//!
//! The `cms` crate has the types but no verifier, so the checks are here:
//! one signer; its certificate among those the message carries; signed
//! attributes required (content type, message digest; signing time read when
//! present); the digest recomputed over the content; the signature checked
//! over the signed attributes DER-encoded as a SET (RFC 5652 5.4). Trust in
//! the certificate is the caller's business ([`crate::trust`]).
//!
//! Only DER is read: the signed attributes must be DER anyway, and a BER
//! message (indefinite lengths) is refused with a clear reason rather than
//! half-understood.

use std::time::SystemTime;

use aws_lc_rs::digest;
use base64::Engine;
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier, SignerInfo,
    SignerInfos,
};
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::time::Time;

/// id-aa-signatureTimeStampToken (RFC 3161 Appendix A).
pub const ID_AA_SIGNATURE_TIME_STAMP_TOKEN: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.14");

/// Why a message is not a valid signature, as a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct CmsError {
    /// `malformed`, `unsupported`, `no_content`, `content_changed`,
    /// `no_signer_certificate`, `bad_signature`.
    pub code: &'static str,
    /// What exactly failed, in a sentence for people; not to be matched on.
    pub detail: String,
}

fn fail(code: &'static str, detail: impl Into<String>) -> CmsError {
    CmsError {
        code,
        detail: detail.into(),
    }
}

/// A signature whose bytes check out: the content it covers is the content
/// given, and the signer certificate's key made it.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The certificate the SignerIdentifier names, among those carried. Its
    /// key made the signature; whether it may be believed is
    /// [`crate::trust`]'s question.
    pub signer: Certificate,
    /// `signer` DER-encoded, as [`crate::trust::Trust::assess`] takes it.
    pub signer_der: Vec<u8>,
    /// The other certificates the message carried (intermediates, maybe).
    pub others: Vec<Certificate>,
    /// The encapsulated content's type (signed: it is in the signed
    /// attributes): id-data for documents and logins.
    pub content_type: ObjectIdentifier,
    /// The signer's own claim (signingTime), not a time-stamp.
    pub signing_time: Option<SystemTime>,
    /// The content the signature covers: the message's own when attached,
    /// else the caller's detached copy.
    pub content: Vec<u8>,
    /// The message carried the content (attached) rather than relying on
    /// the caller's copy (detached).
    pub attached: bool,
    /// The signature value: what a signature time-stamp covers.
    pub signature: Vec<u8>,
    /// The signature time-stamp tokens (unsigned attribute
    /// id-aa-signatureTimeStampToken), each a DER ContentInfo, unchecked.
    pub time_stamp_tokens: Vec<Vec<u8>>,
}

/// SignedData as it travels, its `crls` kept as opaque values. The `cms`
/// crate (0.3.0-pre.1) declares OtherRevocationInfoFormat's first field an
/// AlgorithmIdentifier where RFC 5652 10.2.1 has an OBJECT IDENTIFIER, so
/// it can neither read nor write the OCSP responses a CAdES-LT signature
/// carries there (RFC 5940); everything else is its types.
#[derive(Clone, Debug, PartialEq, Eq, der::Sequence)]
pub struct SignedDataWire {
    /// 1 for id-data content, 3 otherwise (RFC 5652 5.1).
    pub version: CmsVersion,
    /// The digests the signers used.
    pub digest_algorithms: SetOfVec<AlgorithmIdentifierOwned>,
    /// What was signed, or only its type when detached.
    pub encap_content_info: EncapsulatedContentInfo,
    /// Certificates carried for whoever verifies.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub certificates: Option<cms::signed_data::CertificateSet>,
    /// RevocationInfoChoices, each as it was encoded.
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub crls: Option<Vec<Any>>,
    /// The signers.
    pub signer_infos: SignerInfos,
}

/// Reads a CMS message in DER or PEM (`CMS`, `PKCS7`), revocation values
/// and all.
pub fn decode_wire(input: &[u8]) -> Result<SignedDataWire, CmsError> {
    let der_bytes;
    let bytes = if input.trim_ascii_start().starts_with(b"-----BEGIN") {
        let (label, d) = der::pem::decode_vec(input.trim_ascii())
            .map_err(|e| fail("malformed", format!("PEM: {e}")))?;
        if !matches!(label, "CMS" | "PKCS7" | "PKCS #7 SIGNED DATA") {
            return Err(fail("malformed", format!("PEM label {label:?} is not CMS")));
        }
        der_bytes = d;
        &der_bytes[..]
    } else {
        input
    };
    let ci = ContentInfo::from_der(bytes).map_err(|e| {
        fail(
            "malformed",
            format!("not a DER-encoded CMS ContentInfo ({e})"),
        )
    })?;
    if ci.content_type != rfc5911::ID_SIGNED_DATA {
        return Err(fail(
            "malformed",
            format!("content type {} is not signedData", ci.content_type),
        ));
    }
    ci.content
        .decode_as::<SignedDataWire>()
        .map_err(|e| fail("malformed", format!("SignedData: {e}")))
}

/// Reads a CMS message in DER or PEM (`CMS`, `PKCS7`); the revocation
/// values it may carry are left out (see [`SignedDataWire`]).
pub fn decode(input: &[u8]) -> Result<SignedData, CmsError> {
    let w = decode_wire(input)?;
    Ok(SignedData {
        version: w.version,
        digest_algorithms: w.digest_algorithms,
        encap_content_info: w.encap_content_info,
        certificates: w.certificates,
        crls: None,
        signer_infos: w.signer_infos,
    })
}

/// Checks `input` as a signature over `detached` (or over the content it
/// carries).
pub fn verify(input: &[u8], detached: Option<&[u8]>) -> Result<Verified, CmsError> {
    let mut sd = decode(input)?;
    let carried = sd.certificates.take();
    let mut signers = sd.signer_infos.0.iter();
    let (Some(si), None) = (signers.next(), signers.next()) else {
        return Err(fail(
            "unsupported",
            format!(
                "exactly one signer is supported; this message has {}",
                sd.signer_infos.0.len()
            ),
        ));
    };
    let content = content(&sd.encap_content_info, detached)?;
    let certs: Vec<Certificate> = carried
        .map(|s| s.0.into_vec())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => Some(c),
            CertificateChoices::Other(_) => None,
        })
        .collect();
    let index = certs
        .iter()
        .position(|c| identifies(&si.sid, c))
        .ok_or_else(|| {
            fail(
                "no_signer_certificate",
                "the message does not carry the signer's certificate",
            )
        })?;
    let mut others = certs;
    let signer = others.remove(index);
    let signed_attrs = si.signed_attrs.as_ref().ok_or_else(|| {
        fail(
            "unsupported",
            "signed attributes (content type, message digest) are required",
        )
    })?;
    let content_type: ObjectIdentifier = single(signed_attrs, rfc5911::ID_CONTENT_TYPE)?
        .ok_or_else(|| fail("malformed", "no content-type signed attribute"))?;
    if content_type != sd.encap_content_info.econtent_type {
        return Err(fail(
            "malformed",
            "the content-type attribute differs from the encapsulated content type",
        ));
    }
    let claimed: OctetString = single(signed_attrs, rfc5911::ID_MESSAGE_DIGEST)?
        .ok_or_else(|| fail("malformed", "no message-digest signed attribute"))?;
    let signing_time =
        single::<Time>(signed_attrs, rfc5911::ID_SIGNING_TIME)?.map(|t| t.to_system_time());
    let computed = digest::digest(digest_algorithm(&si.digest_alg)?, &content);
    if claimed.as_bytes() != computed.as_ref() {
        return Err(fail(
            "content_changed",
            "the content's digest differs from the one signed",
        ));
    }
    let message = signed_attrs
        .to_der()
        .map_err(|e| fail("malformed", format!("signed attributes: {e}")))?;
    let algorithm = signature_algorithm(&si.signature_algorithm, &si.digest_alg)?;
    let spki = signer.tbs_certificate().subject_public_key_info();
    muhr_hsm::verify::verify_signature(spki, &algorithm, &message, si.signature.as_bytes())
        .map_err(|e| match e {
            muhr_hsm::verify::VerifyError::Invalid => fail(
                "bad_signature",
                "the signature does not verify with the signer certificate's key",
            ),
            muhr_hsm::verify::VerifyError::Unsupported(a) => {
                fail("unsupported", format!("signature algorithm {a}"))
            }
        })?;
    let signer_der = signer
        .to_der()
        .map_err(|e| fail("malformed", format!("signer certificate: {e}")))?;
    let time_stamp_tokens = si
        .unsigned_attrs
        .iter()
        .flat_map(|a| a.iter())
        .filter(|a| a.oid == ID_AA_SIGNATURE_TIME_STAMP_TOKEN)
        .flat_map(|a| a.values.iter())
        .map(|v| v.to_der())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail("malformed", format!("signature time-stamp: {e}")))?;
    Ok(Verified {
        signature: si.signature.as_bytes().to_vec(),
        time_stamp_tokens,
        signer,
        signer_der,
        others,
        signing_time,
        content_type,
        attached: sd.encap_content_info.econtent.is_some(),
        content,
    })
}

fn content(eci: &EncapsulatedContentInfo, detached: Option<&[u8]>) -> Result<Vec<u8>, CmsError> {
    let attached = eci
        .econtent
        .as_ref()
        .map(|a| {
            a.decode_as::<OctetString>()
                .map(|o| o.as_bytes().to_vec())
                .map_err(|e| fail("malformed", format!("encapsulated content: {e}")))
        })
        .transpose()?;
    match (attached, detached) {
        (Some(a), Some(d)) if a.as_slice() != d => Err(fail(
            "content_changed",
            "the content given differs from the content the message carries",
        )),
        (Some(a), _) => Ok(a),
        (None, Some(d)) => Ok(d.to_vec()),
        (None, None) => Err(fail(
            "no_content",
            "a detached signature needs its content alongside",
        )),
    }
}

fn identifies(sid: &SignerIdentifier, c: &Certificate) -> bool {
    let tbs = c.tbs_certificate();
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(i) => {
            &i.issuer == tbs.issuer() && &i.serial_number == tbs.serial_number()
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => tbs
            .get_extension::<SubjectKeyIdentifier>()
            .ok()
            .flatten()
            .is_some_and(|(_, own)| own == *ski),
    }
}

/// The one value of a signed attribute that must occur at most once.
fn single<T: for<'a> Decode<'a, Error = der::Error>>(
    attrs: &SignedAttributes,
    oid: ObjectIdentifier,
) -> Result<Option<T>, CmsError> {
    let mut found = attrs.iter().filter(|a| a.oid == oid);
    let Some(a) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() || a.values.len() != 1 {
        return Err(fail(
            "malformed",
            format!("signed attribute {oid} must occur once with one value"),
        ));
    }
    a.values
        .iter()
        .next()
        .map(|v| v.to_der().and_then(|d| T::from_der(&d)))
        .transpose()
        .map_err(|e| fail("malformed", format!("signed attribute {oid}: {e}")))
}

fn digest_algorithm(
    alg: &AlgorithmIdentifierOwned,
) -> Result<&'static digest::Algorithm, CmsError> {
    Ok(match alg.oid {
        o if o == rfc5912::ID_SHA_256 => &digest::SHA256,
        o if o == rfc5912::ID_SHA_384 => &digest::SHA384,
        o if o == rfc5912::ID_SHA_512 => &digest::SHA512,
        o => return Err(fail("unsupported", format!("digest algorithm {o}"))),
    })
}

/// CMS lets a signer name only the key's algorithm (rsaEncryption,
/// id-ecPublicKey) next to the digest; X.509 verification wants the pair.
fn signature_algorithm(
    sig: &AlgorithmIdentifierOwned,
    digest_alg: &AlgorithmIdentifierOwned,
) -> Result<AlgorithmIdentifierOwned, CmsError> {
    let d = digest_alg.oid;
    let pair = |sha256, sha384, sha512| -> Result<ObjectIdentifier, CmsError> {
        match d {
            o if o == rfc5912::ID_SHA_256 => Ok(sha256),
            o if o == rfc5912::ID_SHA_384 => Ok(sha384),
            o if o == rfc5912::ID_SHA_512 => Ok(sha512),
            o => Err(fail("unsupported", format!("digest algorithm {o}"))),
        }
    };
    let oid = if sig.oid == rfc5912::RSA_ENCRYPTION {
        pair(
            rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
            rfc5912::SHA_384_WITH_RSA_ENCRYPTION,
            rfc5912::SHA_512_WITH_RSA_ENCRYPTION,
        )?
    } else if sig.oid == rfc5912::ID_EC_PUBLIC_KEY {
        pair(
            rfc5912::ECDSA_WITH_SHA_256,
            rfc5912::ECDSA_WITH_SHA_384,
            rfc5912::ECDSA_WITH_SHA_512,
        )?
    } else {
        return Ok(sig.clone());
    };
    Ok(AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    })
}

/// Signs a message with the signer's key.
pub type SignFn<'a> = dyn Fn(&[u8]) -> Result<Vec<u8>, String> + 'a;

/// What [`sign`] needs from a key: its certificate and a way to sign.
pub struct Signer<'a> {
    /// The signer's certificate: carried in the message and named as its
    /// signer by issuer and serial.
    pub certificate: &'a Certificate,
    /// The certificate chain to carry besides the signer's (may be empty).
    pub chain: &'a [Certificate],
    /// The X.509 AlgorithmIdentifier of the signatures `sign` makes.
    pub algorithm: AlgorithmIdentifierOwned,
    /// Signs a message (hashing it with SHA-256 as the algorithm says).
    pub sign: &'a SignFn<'a>,
}

/// A SignedData over `content` with SHA-256, content type, message digest
/// and signing time as signed attributes; `attached` carries the content.
pub fn sign(
    signer: &Signer<'_>,
    content: &[u8],
    attached: bool,
    now: SystemTime,
) -> Result<Vec<u8>, String> {
    sign_typed(signer, rfc5911::ID_DATA, content, attached, now)
}

/// As [`sign`], for content of type `content_type` (a CMC PKIData, say).
pub fn sign_typed(
    signer: &Signer<'_>,
    content_type: ObjectIdentifier,
    content: &[u8],
    attached: bool,
    now: SystemTime,
) -> Result<Vec<u8>, String> {
    let e = |e: der::Error| e.to_string();
    let sha256 = AlgorithmIdentifierOwned {
        oid: rfc5912::ID_SHA_256,
        parameters: None,
    };
    let attr = |oid: ObjectIdentifier, value: Any| -> Result<Attribute, String> {
        Ok(Attribute {
            oid,
            values: SetOfVec::try_from(vec![value]).map_err(e)?,
        })
    };
    let digest = digest::digest(&digest::SHA256, content);
    let signed_attrs: SignedAttributes = SetOfVec::try_from(vec![
        attr(
            rfc5911::ID_CONTENT_TYPE,
            Any::encode_from(&content_type).map_err(e)?,
        )?,
        attr(
            rfc5911::ID_MESSAGE_DIGEST,
            Any::encode_from(&OctetString::new(digest.as_ref()).map_err(e)?).map_err(e)?,
        )?,
        attr(
            rfc5911::ID_SIGNING_TIME,
            Any::encode_from(&Time::try_from(muhr_ca::build::whole_seconds(now)).map_err(e)?)
                .map_err(e)?,
        )?,
    ])
    .map_err(e)?;
    let signature = (signer.sign)(&signed_attrs.to_der().map_err(e)?)?;
    let tbs = signer.certificate.tbs_certificate();
    let info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        }),
        digest_alg: sha256.clone(),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: signer.algorithm.clone(),
        signature: OctetString::new(signature).map_err(e)?,
        unsigned_attrs: None,
    };
    let certificates = std::iter::once(signer.certificate)
        .chain(signer.chain)
        .map(|c| CertificateChoices::Certificate(c.clone()))
        .collect::<Vec<_>>();
    let sd = SignedData {
        // RFC 5652 5.1: version 3 when the content is not id-data.
        version: if content_type == rfc5911::ID_DATA {
            CmsVersion::V1
        } else {
            CmsVersion::V3
        },
        digest_algorithms: SetOfVec::try_from(vec![sha256]).map_err(e)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: content_type,
            econtent: attached
                .then(|| Any::encode_from(&OctetString::new(content)?))
                .transpose()
                .map_err(e)?,
        },
        certificates: Some(certificates.try_into().map_err(e)?),
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

/// A CMS message as the JSON carries it: PEM text, or base64 of the DER.
pub fn from_text(s: &str) -> Result<Vec<u8>, String> {
    if s.trim_start().starts_with("-----BEGIN") {
        return Ok(s.as_bytes().to_vec());
    }
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| "base64 of a DER CMS SignedData, or its PEM".to_string())
}

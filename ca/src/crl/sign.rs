//! Assembling and signing a TBSCertList, whatever its scope or kind. The
//! signature comes from the key store and is verified before anyone sees it.

use std::time::Duration;

use der::asn1::{OctetString, Uint};
use der::{DateTime, Encode};
use x509_cert::certificate::Version;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlNumber};
use x509_cert::time::Time;

use std::sync::Arc;

use muhr_hsm::KeySigner;
use x509_cert::name::Name;

use crate::{Authority, IssueError};

pub(super) fn internal<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> IssueError {
    move |e| IssueError::Internal(format!("{what}: {e}"))
}

pub(super) fn time(unix: i64) -> Result<Time, IssueError> {
    let dt = DateTime::from_unix_duration(Duration::from_secs(unix.max(0) as u64))
        .map_err(internal("time"))?;
    Ok(Time::from(dt))
}

pub(super) fn ext<T: const_oid::AssociatedOid + Encode>(
    value: &T,
) -> Result<Extension, IssueError> {
    Ok(Extension {
        extn_id: T::OID,
        critical: false,
        extn_value: OctetString::new(value.to_der().map_err(internal("extension"))?)
            .map_err(internal("extension"))?,
    })
}

/// TBSCertList with its revokedCertificates already encoded: each entry is a
/// typed `RevokedCert` encoded as it is read, so a CRL of a million entries
/// never holds a million structures at once.
#[derive(der::Sequence)]
struct TbsCertListEncoded<'a> {
    version: Version,
    signature: spki::AlgorithmIdentifierOwned,
    issuer: x509_cert::name::Name,
    this_update: Time,
    next_update: Option<Time>,
    revoked_certificates: Option<der::asn1::AnyRef<'a>>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    crl_extensions: Option<Vec<Extension>>,
}

/// CertificateList with the TBS kept as the exact bytes that were signed.
#[derive(der::Sequence)]
struct SignedCrl<'a> {
    tbs: der::asn1::AnyRef<'a>,
    algorithm: spki::AlgorithmIdentifierOwned,
    signature: der::asn1::BitString,
}

/// A CRL before signing.
pub(super) struct Draft {
    pub number: i64,
    pub this_update: i64,
    pub next_update: i64,
    /// The concatenated DER of the entries (the SEQUENCE's contents).
    pub entries_der: Vec<u8>,
    pub count: i64,
    /// Extensions beyond the authority key identifier and CRL number, which
    /// every CRL carries.
    pub extensions: Vec<Extension>,
}

/// What signing a CA's CRLs needs, owned so that it can move to the blocking
/// pool.
#[derive(Clone)]
pub(super) struct CrlSigner {
    signer: Arc<dyn KeySigner>,
    issuer: Name,
    key_id: Vec<u8>,
    spki: spki::SubjectPublicKeyInfoOwned,
}

impl CrlSigner {
    pub fn of(ca: &Authority) -> Result<Self, IssueError> {
        let signer = ca
            .signer
            .clone()
            .ok_or_else(|| IssueError::Internal(format!("the {} CA key is not loaded", ca.name)))?;
        let tbs = ca.certificate.tbs_certificate();
        Ok(Self {
            signer,
            issuer: tbs.subject().clone(),
            key_id: ca.key_id.clone(),
            spki: tbs.subject_public_key_info().clone(),
        })
    }

    /// Signs `draft` in the blocking pool (the key store may be an HSM).
    pub async fn sign(&self, draft: Draft) -> Result<Vec<u8>, IssueError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.sign_now(draft))
            .await
            .map_err(internal("CRL signing task"))?
    }

    /// Returns the CertificateList's DER.
    fn sign_now(&self, draft: Draft) -> Result<Vec<u8>, IssueError> {
        let alg = self.signer.signature_algorithm();
        let mut extensions = vec![
            ext(&AuthorityKeyIdentifier {
                key_identifier: Some(
                    OctetString::new(self.key_id.clone()).map_err(internal("AKI"))?,
                ),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            })?,
            ext(&CrlNumber(
                Uint::new(&draft.number.to_be_bytes()).map_err(internal("CRL number"))?,
            ))?,
        ];
        extensions.extend(draft.extensions);
        let revoked = if draft.count == 0 {
            None
        } else {
            Some(
                der::asn1::AnyRef::new(der::Tag::Sequence, &draft.entries_der)
                    .map_err(internal("CRL entries"))?,
            )
        };
        let tbs_der = TbsCertListEncoded {
            version: Version::V2,
            signature: alg.clone(),
            issuer: self.issuer.clone(),
            this_update: time(draft.this_update)?,
            next_update: Some(time(draft.next_update)?),
            revoked_certificates: revoked,
            crl_extensions: Some(extensions),
        }
        .to_der()
        .map_err(internal("encoding the CRL"))?;
        drop(draft.entries_der);
        let sig = self.signer.sign(&tbs_der)?;
        muhr_hsm::verify::verify_signature(&self.spki, &alg, &tbs_der, &sig).map_err(|e| {
            IssueError::Internal(format!(
                "the key store returned a CRL signature that does not verify ({e})"
            ))
        })?;
        SignedCrl {
            tbs: der::asn1::AnyRef::try_from(tbs_der.as_slice()).map_err(internal("CRL"))?,
            algorithm: alg,
            signature: der::asn1::BitString::from_bytes(&sig).map_err(internal("signature"))?,
        }
        .to_der()
        .map_err(internal("encoding the CRL"))
    }
}

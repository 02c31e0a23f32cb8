//! Full CRLs (RFC 5280 5): every revoked or suspended, unexpired certificate of
//! one CA, with CRL number and authority key identifier; suspended entries carry
//! certificateHold and disappear from the next CRL once restored.
//!
//! The TBSCertList is built as a typed structure, signed by the CA key through
//! the key store, and the signature verified before the CRL is stored.

use std::time::{Duration, SystemTime};

use der::asn1::{OctetString, Uint};
use der::{DateTime, Encode};
use muhr_store::{Revoked, Store, StoredCrl};
use x509_cert::certificate::Version;
use x509_cert::crl::RevokedCert;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::crl::CrlReason;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlNumber};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;

use crate::{Authority, IssueError};

fn internal<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> IssueError {
    move |e| IssueError::Internal(format!("{what}: {e}"))
}

fn time(unix: i64) -> Result<Time, IssueError> {
    let dt = DateTime::from_unix_duration(Duration::from_secs(unix.max(0) as u64))
        .map_err(internal("time"))?;
    Ok(Time::from(dt))
}

fn ext<T: const_oid::AssociatedOid + Encode>(value: &T) -> Result<Extension, IssueError> {
    Ok(Extension {
        extn_id: T::OID,
        critical: false,
        extn_value: OctetString::new(value.to_der().map_err(internal("extension"))?)
            .map_err(internal("extension"))?,
    })
}

fn reason_enum(code: i64) -> Option<CrlReason> {
    Some(match code {
        1 => CrlReason::KeyCompromise,
        2 => CrlReason::CaCompromise,
        3 => CrlReason::AffiliationChanged,
        4 => CrlReason::Superseded,
        5 => CrlReason::CessationOfOperation,
        6 => CrlReason::CertificateHold,
        8 => CrlReason::RemoveFromCRL,
        9 => CrlReason::PrivilegeWithdrawn,
        10 => CrlReason::AaCompromise,
        // unspecified (0): RFC 5280 5.3.1 says leave the extension out.
        _ => return None,
    })
}

/// Encodes CRL entries, reusing the encoded reason extensions and times that
/// repeat across entries (a million entries share a handful of each).
#[derive(Default)]
struct EntryEncoder {
    reasons: std::collections::HashMap<i64, Option<Extension>>,
    times: std::collections::HashMap<i64, Time>,
}

impl EntryEncoder {
    fn entry(&mut self, r: &Revoked) -> Result<RevokedCert, IssueError> {
        let serial = hex::decode(&r.serial).map_err(internal("stored serial"))?;
        let extension = match r.reason {
            Some(code) => match self.reasons.get(&code) {
                Some(e) => e.clone(),
                None => {
                    let e = reason_enum(code).map(|reason| ext(&reason)).transpose()?;
                    self.reasons.insert(code, e.clone());
                    e
                }
            },
            None => None,
        };
        let revocation_date = match self.times.get(&r.revoked_at) {
            Some(t) => *t,
            None => {
                let t = time(r.revoked_at)?;
                self.times.insert(r.revoked_at, t);
                t
            }
        };
        Ok(RevokedCert {
            serial_number: SerialNumber::new(&serial).map_err(internal("stored serial"))?,
            revocation_date,
            crl_entry_extensions: extension.map(|e| vec![e]),
        })
    }
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

const PAGE: i64 = 20_000;

/// Builds, signs, verifies and stores the next full CRL of `ca`.
pub async fn generate(
    store: &Store,
    ca: &Authority,
    validity: Duration,
) -> Result<StoredCrl, IssueError> {
    let signer = ca
        .signer
        .clone()
        .ok_or_else(|| IssueError::Internal(format!("the {} CA key is not loaded", ca.name)))?;
    let now = crate::build::whole_seconds(SystemTime::now());
    let this_update = crate::unix(now);
    let next_update = this_update + validity.as_secs() as i64;
    let number = store.next_crl_number(&ca.name).await?;

    // Entries, encoded page by page; the next page is read while this one is
    // encoded, so the database and the encoder work at the same time.
    let fetch = |after: String| {
        let store = store.clone();
        let issuer = ca.name.clone();
        tokio::spawn(async move { store.revoked_page(&issuer, this_update, &after, PAGE).await })
    };
    let mut entries_der = Vec::new();
    let mut count = 0i64;
    let mut encoder = EntryEncoder::default();
    let mut pending = fetch(String::new());
    loop {
        let page = pending
            .await
            .map_err(internal("reading revoked certificates"))??;
        let full = page.len() as i64 == PAGE;
        let next = match page.last() {
            Some(last) if full => Some(fetch(last.serial.clone())),
            _ => None,
        };
        for r in &page {
            encoder
                .entry(r)?
                .encode_to_vec(&mut entries_der)
                .map_err(internal("encoding a CRL entry"))?;
        }
        count += page.len() as i64;
        match next {
            Some(n) => pending = n,
            None => break,
        }
    }

    let alg = signer.signature_algorithm();
    let extensions = vec![
        ext(&AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(ca.key_id.clone()).map_err(internal("AKI"))?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        })?,
        ext(&CrlNumber(
            Uint::new(&number.to_be_bytes()).map_err(internal("CRL number"))?,
        ))?,
    ];
    let issuer = ca.certificate.tbs_certificate().subject().clone();
    let (this, next) = (time(this_update)?, time(next_update)?);
    let spki = ca
        .certificate
        .tbs_certificate()
        .subject_public_key_info()
        .clone();
    let der = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, IssueError> {
        let revoked = if count == 0 {
            None
        } else {
            Some(
                der::asn1::AnyRef::new(der::Tag::Sequence, &entries_der)
                    .map_err(internal("CRL entries"))?,
            )
        };
        let tbs_der = TbsCertListEncoded {
            version: Version::V2,
            signature: alg.clone(),
            issuer,
            this_update: this,
            next_update: Some(next),
            revoked_certificates: revoked,
            crl_extensions: Some(extensions),
        }
        .to_der()
        .map_err(internal("encoding the CRL"))?;
        drop(entries_der);
        let sig = signer.sign(&tbs_der)?;
        muhr_hsm::verify::verify_signature(&spki, &alg, &tbs_der, &sig).map_err(|e| {
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
    })
    .await
    .map_err(internal("CRL signing task"))??;
    let crl = StoredCrl {
        issuer: ca.name.clone(),
        kind: "full".into(),
        number,
        this_update,
        next_update,
        entries: count,
        der,
    };
    store.save_crl(&crl).await?;
    Ok(crl)
}

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
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
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

fn entry(r: &Revoked) -> Result<RevokedCert, IssueError> {
    let serial = hex::decode(&r.serial).map_err(internal("stored serial"))?;
    let extensions = match r.reason.and_then(reason_enum) {
        Some(reason) => Some(vec![ext(&reason)?]),
        None => None,
    };
    Ok(RevokedCert {
        serial_number: SerialNumber::new(&serial).map_err(internal("stored serial"))?,
        revocation_date: time(r.revoked_at)?,
        crl_entry_extensions: extensions,
    })
}

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
    let revoked = store.revoked(&ca.name, this_update).await?;
    let number = store.next_crl_number(&ca.name).await?;
    let entries = revoked.iter().map(entry).collect::<Result<Vec<_>, _>>()?;
    let count = entries.len() as i64;
    let tbs = TbsCertList {
        version: Version::V2,
        signature: signer.signature_algorithm(),
        issuer: ca.certificate.tbs_certificate().subject().clone(),
        this_update: time(this_update)?,
        next_update: Some(time(next_update)?),
        revoked_certificates: (!entries.is_empty()).then_some(entries),
        crl_extensions: Some(vec![
            ext(&AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(ca.key_id.clone()).map_err(internal("AKI"))?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            })?,
            ext(&CrlNumber(
                Uint::new(&number.to_be_bytes()).map_err(internal("CRL number"))?,
            ))?,
        ]),
    };
    let spki = ca
        .certificate
        .tbs_certificate()
        .subject_public_key_info()
        .clone();
    let der = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, IssueError> {
        let tbs_der = tbs.to_der().map_err(internal("encoding the CRL"))?;
        let sig = signer.sign(&tbs_der)?;
        let alg = signer.signature_algorithm();
        muhr_hsm::verify::verify_signature(&spki, &alg, &tbs_der, &sig).map_err(|e| {
            IssueError::Internal(format!(
                "the key store returned a CRL signature that does not verify ({e})"
            ))
        })?;
        CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: alg,
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

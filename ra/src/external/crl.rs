//! Another CA's complete CRL, fetched from the configured URL, checked
//! (signed by that CA, same issuer, nextUpdate not past) and kept as an
//! index from serial to revocation. Delta CRLs and partitioned CRLs are not
//! read: the configured CRL must be the CA's whole list.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use der::{Decode, Encode};
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::crl::CrlReason;

use super::{Anchor, Status};

const SKEW: Duration = Duration::from_secs(300);

/// The revoked serials (content octets) of one CRL.
pub struct Index {
    revoked: HashMap<Vec<u8>, (SystemTime, Option<u8>)>,
    pub next_update: Option<SystemTime>,
}

impl Index {
    /// Revoked when listed; otherwise good (the CRL vouches for every
    /// certificate of its issuer).
    pub fn status(&self, serial: &[u8]) -> Status {
        match self.revoked.get(serial) {
            Some((at, reason)) => Status::Revoked {
                at: *at,
                reason: *reason,
            },
            None => Status::Good,
        }
    }
}

/// Parses and checks a CRL (DER, or PEM) of `anchor`.
pub fn read(anchor: &Anchor, bytes: &[u8], now: SystemTime) -> Result<Index, String> {
    let der;
    let bytes = if bytes.starts_with(b"-----BEGIN") {
        der = der::pem::decode_vec(bytes)
            .map_err(|e| format!("CRL PEM: {e}"))?
            .1;
        &der[..]
    } else {
        bytes
    };
    let crl = CertificateList::<x509_cert::certificate::Rfc5280>::from_der(bytes)
        .map_err(|e| format!("not a CRL: {e}"))?;
    let tbs = &crl.tbs_cert_list;
    if tbs.issuer != *anchor.certificate.tbs_certificate().subject() {
        return Err("the CRL is of another issuer".into());
    }
    let tbs_der = tbs.to_der().map_err(|e| e.to_string())?;
    let sig = crl
        .signature
        .as_bytes()
        .ok_or("CRL signature has unused bits")?;
    muhr_hsm::verify::verify_signature(
        anchor
            .certificate
            .tbs_certificate()
            .subject_public_key_info(),
        &crl.signature_algorithm,
        &tbs_der,
        sig,
    )
    .map_err(|e| format!("the CRL's signature: {e}"))?;
    if tbs.this_update.to_system_time() > now + SKEW {
        return Err("the CRL's thisUpdate is in the future".into());
    }
    let next_update = tbs.next_update.map(|t| t.to_system_time());
    if next_update.is_some_and(|n| n < now) {
        return Err("the CRL is stale (nextUpdate has passed)".into());
    }
    let mut revoked = HashMap::new();
    for r in tbs.revoked_certificates.iter().flatten() {
        let reason = r
            .crl_entry_extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == <CrlReason as der::oid::AssociatedOid>::OID)
            .and_then(|e| CrlReason::from_der(e.extn_value.as_bytes()).ok())
            .map(|r| r as u8);
        revoked.insert(
            r.serial_number.as_bytes().to_vec(),
            (r.revocation_date.to_system_time(), reason),
        );
    }
    Ok(Index {
        revoked,
        next_update,
    })
}

//! Checks a to-be-signed certificate against RFC 5280 and its profile before any
//! key signs it. A finding here means a bug or a misconfiguration, never bad user
//! input (that is refused earlier), so issuance stops and nothing is signed.

use std::collections::BTreeSet;
use std::time::SystemTime;

use const_oid::AssociatedOid;
use const_oid::db::rfc5280 as oids;
use der::{Decode, Encode};
use muhr_policies::{KeyUsageBit, Kind, Profile};
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};
use x509_cert::time::Time;

use crate::build::{IssuerView, OCSP_NOCHECK, add_validity};

fn to_time(t: &Time) -> SystemTime {
    t.to_system_time()
}

/// Returns every rule the certificate breaks (empty: it may be signed).
pub fn lint(tbs_der: &[u8], profile: &Profile, issuer: Option<&IssuerView<'_>>) -> Vec<String> {
    let mut f = Vec::new();
    let tbs = match TbsCertificate::from_der(tbs_der) {
        Ok(t) => t,
        Err(e) => return vec![format!("TBSCertificate does not decode: {e}")],
    };
    if tbs.version() != Version::V3 {
        f.push("version must be v3 (extensions are present)".into());
    }
    let serial = tbs.serial_number().as_bytes();
    if serial.is_empty() || serial.len() > 20 {
        f.push(format!(
            "serial is {} octets; 1 to 20 allowed (RFC 5280 4.1.2.2)",
            serial.len()
        ));
    }
    if serial.first().is_some_and(|b| b & 0x80 != 0) {
        f.push("serial must be positive".into());
    }
    if serial.iter().all(|b| *b == 0) {
        f.push("serial must not be zero".into());
    }
    if serial.len() < 17 {
        f.push("serial carries fewer than 128 random bits".into());
    }
    if tbs.subject().is_empty() {
        f.push("subject is empty".into());
    }
    let nb = to_time(&tbs.validity().not_before);
    let na = to_time(&tbs.validity().not_after);
    for t in [&tbs.validity().not_before, &tbs.validity().not_after] {
        let year = t.to_date_time().year();
        let utc = matches!(t, Time::UtcTime(_));
        if utc != (year < 2050) {
            f.push(format!(
                "{year} must be encoded as {}",
                if year < 2050 {
                    "UTCTime"
                } else {
                    "GeneralizedTime"
                }
            ));
        }
    }
    if nb >= na {
        f.push("notBefore is not before notAfter".into());
    }
    if add_validity(nb, profile.validity).is_none_or(|limit| na > limit) {
        f.push(format!(
            "validity exceeds the profile's {}",
            profile.validity
        ));
    }
    match issuer {
        Some(i) => {
            if nb < i.not_before || na > i.not_after {
                f.push("validity is not inside the issuer's".into());
            }
            if tbs.issuer().to_der().ok() != i.name.to_der().ok() {
                f.push("issuer name differs from the issuing CA's subject".into());
            }
            if tbs.signature() != &i.signature_algorithm {
                f.push("signature algorithm differs from the issuing key's".into());
            }
        }
        None => {
            if tbs.issuer().to_der().ok() != tbs.subject().to_der().ok() {
                f.push("a self-signed certificate must have issuer = subject".into());
            }
        }
    }

    let exts = tbs.extensions().map(|e| e.as_slice()).unwrap_or_default();
    let mut seen = BTreeSet::new();
    for e in exts {
        if !seen.insert(e.extn_id) {
            f.push(format!("extension {} appears twice", e.extn_id));
        }
        let may_be_critical = e.extn_id == KeyUsage::OID || e.extn_id == BasicConstraints::OID;
        if e.critical && !may_be_critical {
            f.push(format!("extension {} must not be critical", e.extn_id));
        }
    }
    let find = |oid| exts.iter().find(|e| e.extn_id == oid);

    match find(KeyUsage::OID) {
        None => f.push("keyUsage is missing".into()),
        Some(e) if !e.critical => f.push("keyUsage must be critical".into()),
        Some(e) => match KeyUsage::from_der(e.extn_value.as_bytes()) {
            Err(_) => f.push("keyUsage does not decode".into()),
            Ok(ku) => {
                let want = |b: KeyUsageBit| profile.key_usage.contains(&b);
                let pairs = [
                    (KeyUsageBit::DigitalSignature, KeyUsages::DigitalSignature),
                    (KeyUsageBit::NonRepudiation, KeyUsages::NonRepudiation),
                    (KeyUsageBit::KeyEncipherment, KeyUsages::KeyEncipherment),
                    (KeyUsageBit::DataEncipherment, KeyUsages::DataEncipherment),
                    (KeyUsageBit::KeyAgreement, KeyUsages::KeyAgreement),
                    (KeyUsageBit::KeyCertSign, KeyUsages::KeyCertSign),
                    (KeyUsageBit::CrlSign, KeyUsages::CRLSign),
                ];
                for (bit, flag) in pairs {
                    if want(bit) != ku.0.contains(flag) {
                        f.push(format!("keyUsage {bit:?} does not match the profile"));
                    }
                }
                if ku.0.contains(KeyUsages::EncipherOnly) || ku.0.contains(KeyUsages::DecipherOnly)
                {
                    f.push("keyUsage encipherOnly/decipherOnly are never issued".into());
                }
            }
        },
    }
    let bc = find(BasicConstraints::OID).map(|e| {
        (
            e.critical,
            BasicConstraints::from_der(e.extn_value.as_bytes()),
        )
    });
    match (profile.kind, bc) {
        (Kind::Ca, None) => f.push("a CA certificate needs basicConstraints".into()),
        (Kind::Ca, Some((critical, Ok(bc)))) => {
            if !critical || !bc.ca {
                f.push("a CA's basicConstraints must be critical with cA TRUE".into());
            }
            if bc.path_len_constraint != profile.path_len {
                f.push("pathLenConstraint does not match the profile".into());
            }
        }
        (_, Some((_, Err(_)))) => f.push("basicConstraints does not decode".into()),
        (Kind::EndEntity, Some((_, Ok(bc)))) if bc.ca => {
            f.push("an end-entity certificate must not be a CA".into());
        }
        _ => {}
    }
    let eku = find(ExtendedKeyUsage::OID)
        .and_then(|e| ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok());
    if eku.map(|e| e.0).unwrap_or_default() != profile.extended_key_usage {
        f.push("extendedKeyUsage does not match the profile".into());
    }
    let ski = find(SubjectKeyIdentifier::OID)
        .and_then(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok());
    match ski {
        None => f.push("subjectKeyIdentifier is missing".into()),
        Some(ski) => {
            let expected = crate::build::key_identifier(tbs.subject_public_key_info());
            if ski.0.as_bytes() != expected.as_slice() {
                f.push("subjectKeyIdentifier does not identify the subject key".into());
            }
        }
    }
    let aki = find(AuthorityKeyIdentifier::OID)
        .and_then(|e| AuthorityKeyIdentifier::from_der(e.extn_value.as_bytes()).ok())
        .and_then(|a| a.key_identifier);
    match (aki, issuer) {
        (None, Some(_)) => f.push("authorityKeyIdentifier is missing".into()),
        (Some(aki), Some(i)) if aki.as_bytes() != i.key_id.as_slice() => {
            f.push("authorityKeyIdentifier does not identify the issuer key".into());
        }
        _ => {}
    }
    let has = |oid| find(oid).is_some();
    if issuer.is_some() {
        if profile.crl_distribution_point
            && issuer.is_some_and(|i| i.urls.crl.is_some())
            && !has(oids::ID_CE_CRL_DISTRIBUTION_POINTS)
        {
            f.push("cRLDistributionPoints is missing".into());
        }
        if (profile.aia_ocsp || profile.aia_ca_issuers)
            && issuer.is_some_and(|i| i.urls.ocsp.is_some() || i.urls.ca_issuers.is_some())
            && !has(oids::ID_PE_AUTHORITY_INFO_ACCESS)
        {
            f.push("authorityInfoAccess is missing".into());
        }
    }
    if profile.ocsp_no_check != has(OCSP_NOCHECK) {
        f.push("id-pkix-ocsp-nocheck does not match the profile".into());
    }
    f
}

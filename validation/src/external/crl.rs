//! Another CA's complete CRL, fetched from the configured URL, checked and
//! kept as an index from serial to revocation.
//!
//! A CRL vouches for every certificate of its issuer that it does not list,
//! so one is believed only when it is that CA's whole, current list
//! (RFC 5280 §6.3.3):
//! - signed by the CA, with the CA as issuer;
//! - no Issuing Distribution Point: such a CRL covers only part of the
//!   CA's certificates (some reasons, only end entities, one distribution
//!   point) or speaks for another issuer (indirect). Working out whether a
//!   certificate falls inside that scope is what §6.3.3 (b) asks; Muhr is
//!   configured with the one complete CRL instead, and refuses any scoped
//!   one rather than reading a partition as the whole list;
//! - no Delta CRL Indicator: a delta lists only the changes since a base
//!   CRL, so a certificate absent from it may well be revoked;
//! - no critical extension, in the CRL or in an entry, that is not
//!   understood (RFC 5280 §5.2, §5.3): its issuer said that ignoring it
//!   would misread the list. Understood: CRL Number and Authority Key
//!   Identifier; reason code and invalidity date in entries;
//! - a CRL Number, which conforming issuers must include (§5.2.3): it is
//!   what lets [`super::External`] refuse an older CRL replayed after a
//!   newer one;
//! - current: thisUpdate not ahead of our clock beyond `super::SKEW`, nextUpdate
//!   not past, and, when nextUpdate is absent, thisUpdate no older than the
//!   CA's `max_age_without_next_update_seconds`.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use const_oid::db::rfc5280::{
    ID_CE_AUTHORITY_KEY_IDENTIFIER, ID_CE_CRL_NUMBER, ID_CE_CRL_REASONS, ID_CE_DELTA_CRL_INDICATOR,
    ID_CE_INVALIDITY_DATE, ID_CE_ISSUING_DISTRIBUTION_POINT,
};
use der::{Decode, Encode};
use x509_cert::crl::CertificateList;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::crl::CrlReason;

use super::{Anchor, Status, current};

/// A CRL Number: a non-negative integer of at most 20 octets (RFC 5280
/// §5.2.3), kept as its big-endian magnitude so numbers of any length in
/// that range compare as numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlNumber(Vec<u8>);

impl CrlNumber {
    fn new(magnitude: &[u8]) -> Result<Self, String> {
        let start = magnitude
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(magnitude.len());
        let bytes = &magnitude[start..];
        if bytes.len() > 20 {
            return Err("the CRL number is longer than 20 octets".into());
        }
        Ok(Self(bytes.to_vec()))
    }
}

impl Ord for CrlNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        // Without leading zeros, a longer magnitude is a larger number.
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for CrlNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for CrlNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("0x0");
        }
        f.write_str("0x")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The revoked serials (content octets) of one CRL.
pub struct Index {
    revoked: HashMap<Vec<u8>, (SystemTime, Option<u8>)>,
    /// The CRL Number: [`super::External`] refuses a CRL whose number is
    /// lower than the highest already accepted from that CA.
    pub number: CrlNumber,
    /// nextUpdate, or, for a CRL without one, the end of the age it may
    /// reach: the list is not used past this.
    pub fresh_until: SystemTime,
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
    let number = crl_number(tbs.crl_extensions.as_deref().unwrap_or_default())?;
    let this_update = tbs.this_update.to_system_time();
    let next_update = tbs.next_update.map(|t| t.to_system_time());
    let fresh_until = current(
        "CRL",
        this_update,
        next_update,
        anchor.max_age_without_next_update,
        now,
    )?;
    let mut revoked = HashMap::new();
    for r in tbs.revoked_certificates.iter().flatten() {
        let extensions = r.crl_entry_extensions.as_deref().unwrap_or_default();
        if let Some(e) = extensions
            .iter()
            .find(|e| e.critical && !ENTRY_EXTENSIONS.contains(&e.extn_id))
        {
            return Err(format!(
                "the entry for serial {} has a critical extension {} that is not understood \
                 (RFC 5280 §5.3: the CRL cannot be used)",
                r.serial_number, e.extn_id
            ));
        }
        let reason = extensions
            .iter()
            .find(|e| e.extn_id == ID_CE_CRL_REASONS)
            .and_then(|e| CrlReason::from_der(e.extn_value.as_bytes()).ok())
            .map(|r| r as u8);
        revoked.insert(
            r.serial_number.as_bytes().to_vec(),
            (r.revocation_date.to_system_time(), reason),
        );
    }
    Ok(Index {
        revoked,
        number,
        fresh_until,
    })
}

/// Entry extensions read (or safely ignored) here.
const ENTRY_EXTENSIONS: [der::oid::ObjectIdentifier; 2] =
    [ID_CE_CRL_REASONS, ID_CE_INVALIDITY_DATE];

/// Checks the CRL's own extensions (see the module's rules) and returns its
/// number.
fn crl_number(extensions: &[Extension]) -> Result<CrlNumber, String> {
    let mut seen = HashSet::new();
    let mut number = None;
    for e in extensions {
        if !seen.insert(e.extn_id) {
            return Err(format!("the CRL has extension {} twice", e.extn_id));
        }
        if e.extn_id == ID_CE_ISSUING_DISTRIBUTION_POINT {
            return Err(
                "the CRL has an Issuing Distribution Point: it covers only part \
                 of the CA's certificates, and the configured CRL must be the complete one"
                    .into(),
            );
        }
        if e.extn_id == ID_CE_DELTA_CRL_INDICATOR {
            return Err(
                "the CRL is a delta CRL (it lists only changes since a base CRL); \
                 the configured CRL must be the complete one"
                    .into(),
            );
        }
        if e.extn_id == ID_CE_CRL_NUMBER {
            let n = x509_cert::ext::pkix::CrlNumber::from_der(e.extn_value.as_bytes())
                .map_err(|err| format!("the CRL number: {err}"))?;
            number = Some(CrlNumber::new(n.0.as_bytes())?);
        } else if e.critical && e.extn_id != ID_CE_AUTHORITY_KEY_IDENTIFIER {
            return Err(format!(
                "the CRL has a critical extension {} that is not understood \
                 (RFC 5280 §5.2: the CRL cannot be used)",
                e.extn_id
            ));
        }
    }
    number.ok_or_else(|| {
        "the CRL has no CRL number (RFC 5280 §5.2.3 requires one; without it a replayed \
         older CRL cannot be told apart)"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::SKEW;
    use crate::external::testing::{CrlSpec, TestCa, ext};
    use std::time::Duration;

    const HOUR: Duration = Duration::from_secs(3600);

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn refused(ca: &TestCa, spec: CrlSpec) -> String {
        match read(&ca.anchor(), &ca.crl(spec), now()) {
            Ok(_) => panic!("the CRL was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_complete_crl_with_understood_extensions_is_read() {
        let ca = TestCa::new("Complete CA");
        let spec = CrlSpec {
            revoked: vec![vec![0x10, 0x02]],
            extensions: vec![ca.aki(), ext(ID_CE_CRL_NUMBER, false, &[0x02, 0x01, 0x07])],
            entry_extensions: vec![
                ext(ID_CE_CRL_REASONS, false, &[0x0a, 0x01, 0x01]),
                ext(
                    ID_CE_INVALIDITY_DATE,
                    false,
                    &der::asn1::GeneralizedTime::from_system_time(now() - HOUR)
                        .unwrap()
                        .to_der()
                        .unwrap(),
                ),
                // Unknown but not critical: may be ignored.
                ext("1.3.6.1.4.1.99999.1".parse().unwrap(), false, &[0x05, 0x00]),
            ],
            ..CrlSpec::fresh(7)
        };
        let index = read(&ca.anchor(), &ca.crl(spec), now()).unwrap();
        assert_eq!(index.number, CrlNumber::new(&[7]).unwrap());
        assert!(matches!(
            index.status(&[0x10, 0x02]),
            Status::Revoked {
                reason: Some(1),
                ..
            }
        ));
        assert_eq!(index.status(&[0x10, 0x03]), Status::Good);
    }

    #[test]
    fn partition_posing_as_the_complete_crl_by_issuing_distribution_point_is_refused() {
        let ca = TestCa::new("Partitioned CA");
        // IssuingDistributionPoint { onlyContainsUserCerts TRUE }: a list
        // of end-entity certificates only, marked critical as §5.2.5 asks.
        let mut spec = CrlSpec::fresh(3);
        spec.extensions.push(ext(
            ID_CE_ISSUING_DISTRIBUTION_POINT,
            true,
            &[0x30, 0x03, 0x81, 0x01, 0xff],
        ));
        let e = refused(&ca, spec);
        assert!(e.contains("Issuing Distribution Point"), "{e}");
    }

    #[test]
    fn delta_crl_posing_as_the_complete_crl_is_refused() {
        let ca = TestCa::new("Delta CA");
        let mut spec = CrlSpec::fresh(9);
        // BaseCRLNumber 8: only what changed since CRL 8.
        spec.extensions
            .push(ext(ID_CE_DELTA_CRL_INDICATOR, true, &[0x02, 0x01, 0x08]));
        let e = refused(&ca, spec);
        assert!(e.contains("delta CRL"), "{e}");
    }

    #[test]
    fn crl_with_an_unknown_critical_extension_is_refused() {
        let ca = TestCa::new("Critical CA");
        let mut spec = CrlSpec::fresh(3);
        spec.extensions.push(ext(
            "1.3.6.1.4.1.99999.2".parse().unwrap(),
            true,
            &[0x05, 0x00],
        ));
        let e = refused(&ca, spec);
        assert!(
            e.contains("1.3.6.1.4.1.99999.2") && e.contains("critical"),
            "{e}"
        );
    }

    #[test]
    fn crl_entry_with_an_unknown_critical_extension_is_refused() {
        let ca = TestCa::new("Indirect CA");
        // certificateIssuer (critical, §5.3.3): the entry is about another
        // CA's certificate, as in an indirect CRL.
        let spec = CrlSpec {
            revoked: vec![vec![0x42]],
            entry_extensions: vec![ext(
                "2.5.29.29".parse().unwrap(),
                true,
                &[0x30, 0x06, 0x82, 0x04, b'x', b'.', b'u', b'z'],
            )],
            ..CrlSpec::fresh(3)
        };
        let e = refused(&ca, spec);
        assert!(e.contains("2.5.29.29") && e.contains("entry"), "{e}");
    }

    #[test]
    fn crl_without_a_crl_number_is_refused() {
        let ca = TestCa::new("Unnumbered CA");
        let mut spec = CrlSpec::fresh(1);
        spec.extensions.clear();
        let e = refused(&ca, spec);
        assert!(e.contains("no CRL number"), "{e}");
    }

    #[test]
    fn crl_with_two_crl_numbers_is_refused() {
        let ca = TestCa::new("Twice CA");
        let mut spec = CrlSpec::fresh(1);
        spec.extensions
            .push(ext(ID_CE_CRL_NUMBER, false, &[0x02, 0x01, 0x09]));
        let e = refused(&ca, spec);
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn old_crl_without_next_update_replayed_is_refused() {
        let ca = TestCa::new("Undated CA");
        let spec = CrlSpec {
            this_update: now() - 2 * HOUR,
            next_update: None,
            ..CrlSpec::fresh(4)
        };
        let e = refused(&ca, spec);
        assert!(e.contains("no nextUpdate") && e.contains("3600"), "{e}");
    }

    #[test]
    fn fresh_crl_without_next_update_is_accepted_for_the_max_age_only() {
        let ca = TestCa::new("Undated CA");
        let this_update = now() - Duration::from_secs(600);
        let spec = CrlSpec {
            this_update,
            next_update: None,
            ..CrlSpec::fresh(4)
        };
        let index = read(&ca.anchor(), &ca.crl(spec), now()).unwrap();
        // Whole seconds: the CRL's time has no fraction.
        let want = this_update + HOUR;
        let got = index.fresh_until;
        assert!(
            got <= want && want.duration_since(got).unwrap() < Duration::from_secs(1),
            "{got:?} vs {want:?}"
        );
    }

    #[test]
    fn crl_dated_in_the_future_is_refused() {
        let ca = TestCa::new("Future CA");
        let spec = CrlSpec {
            this_update: now() + 2 * SKEW,
            ..CrlSpec::fresh(4)
        };
        let e = refused(&ca, spec);
        assert!(e.contains("in the future"), "{e}");
    }

    #[test]
    fn stale_crl_is_refused() {
        let ca = TestCa::new("Stale CA");
        let spec = CrlSpec {
            this_update: now() - 3 * HOUR,
            next_update: Some(now() - HOUR),
            ..CrlSpec::fresh(4)
        };
        let e = refused(&ca, spec);
        assert!(e.contains("stale"), "{e}");
    }

    #[test]
    fn crl_signed_by_another_key_of_the_same_name_is_refused() {
        let ca = TestCa::new("Example CA");
        let impostor = TestCa::new("Example CA");
        let e = match read(&ca.anchor(), &impostor.crl(CrlSpec::fresh(5)), now()) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        };
        assert!(e.contains("signature"), "{e}");
    }

    #[test]
    fn crl_numbers_compare_as_numbers() {
        let n = |b: &[u8]| CrlNumber::new(b).unwrap();
        assert!(n(&[0x01, 0x00]) > n(&[0xff]));
        assert!(n(&[0x00, 0x05]) == n(&[0x05]));
        assert!(n(&[]) < n(&[0x01]));
        assert!(CrlNumber::new(&[1; 21]).is_err());
    }
}

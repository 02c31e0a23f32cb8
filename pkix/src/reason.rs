//! Revocation reasons as the store keeps them (RFC 5280 §5.3.1 codes) and
//! as CRLs and OCSP responses carry them.

use x509_cert::ext::pkix::CrlReason;

/// `superseded`: a newer card replaced the certificate.
pub const SUPERSEDED: i64 = 4;
/// `certificateHold`: a suspension, which a restore lifts.
pub const CERTIFICATE_HOLD: i64 = 6;
/// `removeFromCRL`: a delta CRL's entry for a certificate restored from hold.
pub const REMOVE_FROM_CRL: i64 = 8;

/// The reason of code `code`; `None` for a code RFC 5280 does not define
/// (7 is unused).
pub fn from_code(code: i64) -> Option<CrlReason> {
    Some(match code {
        0 => CrlReason::Unspecified,
        1 => CrlReason::KeyCompromise,
        2 => CrlReason::CaCompromise,
        3 => CrlReason::AffiliationChanged,
        4 => CrlReason::Superseded,
        5 => CrlReason::CessationOfOperation,
        6 => CrlReason::CertificateHold,
        8 => CrlReason::RemoveFromCRL,
        9 => CrlReason::PrivilegeWithdrawn,
        10 => CrlReason::AaCompromise,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_code_maps_to_its_own_number_and_seven_to_none() {
        for code in 0..=10 {
            match super::from_code(code) {
                Some(r) => assert_eq!(r as i64, code),
                None => assert_eq!(code, 7),
            }
        }
        assert!(super::from_code(11).is_none() && super::from_code(-1).is_none());
    }
}

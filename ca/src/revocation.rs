//! Revocation reasons (RFC 5280 5.3.1) and which of them an operator may give.
//!
//! Suspension and restoration are their own acts (`certificateHold` is set by
//! suspending, `removeFromCRL` only appears in delta CRLs), so `revoke` refuses
//! those two reasons and points at the right command.

use std::fmt;
use std::str::FromStr;

/// A CRLReason (RFC 5280 5.3.1). `Display` and `FromStr` use the RFC's
/// names; the store keeps the codes ([`Reason::code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Code 0: no reason given.
    Unspecified,
    /// Code 1: the subject's private key is known or suspected to be exposed.
    KeyCompromise,
    /// Code 2: a CA's key is compromised; for CA certificates only.
    CaCompromise,
    /// Code 3: the subject's name or other information changed.
    AffiliationChanged,
    /// Code 4: replaced by another certificate.
    Superseded,
    /// Code 5: no longer needed for its purpose.
    CessationOfOperation,
    /// Code 6: suspended. Set by suspending, never given to `revoke`.
    CertificateHold,
    /// Code 8: a suspension lifted. Appears only in delta CRLs.
    RemoveFromCrl,
    /// Code 9: a privilege the certificate asserted was withdrawn.
    PrivilegeWithdrawn,
    /// Code 10: an attribute authority's key is compromised. Muhr runs none,
    /// so `revoke` refuses it.
    AaCompromise,
}

const ALL: [(Reason, &str, i64); 10] = [
    (Reason::Unspecified, "unspecified", 0),
    (Reason::KeyCompromise, "keyCompromise", 1),
    (Reason::CaCompromise, "cACompromise", 2),
    (Reason::AffiliationChanged, "affiliationChanged", 3),
    (Reason::Superseded, "superseded", 4),
    (Reason::CessationOfOperation, "cessationOfOperation", 5),
    (Reason::CertificateHold, "certificateHold", 6),
    (Reason::RemoveFromCrl, "removeFromCRL", 8),
    (Reason::PrivilegeWithdrawn, "privilegeWithdrawn", 9),
    (Reason::AaCompromise, "aACompromise", 10),
];

impl Reason {
    /// The RFC 5280 code, as the store keeps it and CRLs carry it (7 is unused).
    pub fn code(self) -> i64 {
        ALL.iter()
            .find(|(r, _, _)| *r == self)
            .map(|(_, _, c)| *c)
            .expect("every reason is listed")
    }

    /// The reason of a stored code; None for 7 and codes RFC 5280 does not define.
    pub fn from_code(code: i64) -> Option<Self> {
        ALL.iter().find(|(_, _, c)| *c == code).map(|(r, _, _)| *r)
    }

    /// The RFC 5280 name (`keyCompromise`), as audit entries record it.
    pub fn name(self) -> &'static str {
        ALL.iter()
            .find(|(r, _, _)| *r == self)
            .map(|(_, n, _)| *n)
            .expect("every reason is listed")
    }

    /// Whether `muhr revoke` accepts this reason for a certificate of the given kind.
    pub fn check_for_revoke(self, ca_certificate: bool) -> Result<(), String> {
        match self {
            Reason::CertificateHold => {
                Err("certificateHold is set by suspending: use `muhr suspend`".into())
            }
            Reason::RemoveFromCrl => {
                Err("removeFromCRL is set by restoring: use `muhr restore`".into())
            }
            Reason::AaCompromise => {
                Err("aACompromise applies to attribute authorities, which Muhr does not run".into())
            }
            Reason::CaCompromise if !ca_certificate => {
                Err("cACompromise applies to CA certificates only".into())
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Reason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALL.iter()
            .find(|(_, n, _)| n.eq_ignore_ascii_case(s))
            .map(|(r, _, _)| *r)
            .ok_or_else(|| {
                let names: Vec<&str> = ALL.iter().map(|(_, n, _)| *n).collect();
                format!(
                    "unknown reason {s:?} (RFC 5280 names: {})",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes() {
        for (r, n, c) in ALL {
            assert_eq!(n.parse::<Reason>().unwrap(), r);
            assert_eq!(Reason::from_code(c), Some(r));
            assert_eq!(r.code(), c);
        }
        assert_eq!(
            "KEYCOMPROMISE".parse::<Reason>().unwrap(),
            Reason::KeyCompromise
        );
        assert!(
            "stolen"
                .parse::<Reason>()
                .unwrap_err()
                .contains("keyCompromise")
        );
        assert_eq!(Reason::from_code(7), None);
        assert!(
            Reason::CertificateHold
                .check_for_revoke(false)
                .unwrap_err()
                .contains("muhr suspend")
        );
        assert!(Reason::CaCompromise.check_for_revoke(false).is_err());
        assert!(Reason::CaCompromise.check_for_revoke(true).is_ok());
        assert!(Reason::KeyCompromise.check_for_revoke(false).is_ok());
    }
}

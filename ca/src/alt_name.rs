//! subjectAltName entries: DNS names and IP addresses of Muhr's own TLS
//! servers. Checked strictly, since a relying TLS client matches them
//! byte for byte (RFC 6125).

use std::net::IpAddr;

use der::asn1::{Ia5String, OctetString};
use muhr_policies::AltNameKind;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// One subjectAltName entry. Make it with [`AltName::parse`]: the variants
/// themselves check nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AltName {
    /// A DNS name: lower-case LDH labels, no wildcard, no trailing dot.
    Dns(String),
    /// An IPv4 or IPv6 address, written as its 4 or 16 octets.
    Ip(IpAddr),
}

impl AltName {
    /// An IP address if it reads as one, else a DNS name: lower-case LDH
    /// labels of 1 to 63 characters, 253 in all, no wildcards.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AltName::Ip(ip));
        }
        let ok_label = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if s.is_empty() || s.len() > 253 || !s.split('.').all(ok_label) {
            return Err(format!(
                "{s:?} is neither an IP address nor a DNS name (lower-case letters, digits and hyphens in labels of 1-63, no wildcard)"
            ));
        }
        Ok(AltName::Dns(s.to_string()))
    }

    /// Which kind it is, to check against the profile's `subject_alt_names`.
    pub fn kind(&self) -> AltNameKind {
        match self {
            AltName::Dns(_) => AltNameKind::Dns,
            AltName::Ip(_) => AltNameKind::Ip,
        }
    }

    fn general_name(&self) -> der::Result<GeneralName> {
        Ok(match self {
            AltName::Dns(d) => GeneralName::DnsName(Ia5String::new(d)?),
            AltName::Ip(IpAddr::V4(a)) => GeneralName::IpAddress(OctetString::new(a.octets())?),
            AltName::Ip(IpAddr::V6(a)) => GeneralName::IpAddress(OctetString::new(a.octets())?),
        })
    }
}

/// The extension for `names` (none when empty).
pub fn extension(names: &[AltName]) -> der::Result<Option<SubjectAltName>> {
    if names.is_empty() {
        return Ok(None);
    }
    let names = names
        .iter()
        .map(AltName::general_name)
        .collect::<der::Result<Vec<_>>>()?;
    Ok(Some(SubjectAltName(names)))
}

#[cfg(test)]
mod tests {
    use super::AltName;

    #[test]
    fn parses_names_and_addresses() {
        assert_eq!(
            AltName::parse("localhost"),
            Ok(AltName::Dns("localhost".into()))
        );
        assert_eq!(
            AltName::parse("ra.muhr.uz"),
            Ok(AltName::Dns("ra.muhr.uz".into()))
        );
        assert!(matches!(AltName::parse("127.0.0.1"), Ok(AltName::Ip(_))));
        assert!(matches!(AltName::parse("::1"), Ok(AltName::Ip(_))));
        for bad in [
            "",
            "*.muhr.uz",
            "Muhr.uz",
            "-a.uz",
            "a..uz",
            "a_b.uz",
            "ra.muhr.uz.",
        ] {
            assert!(AltName::parse(bad).is_err(), "{bad}");
        }
    }
}

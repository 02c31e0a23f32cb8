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
        // extendedKeyUsage only where the profile says (a TSA's, RFC 3161
        // 2.3); the check against the profile is below.
        let may_be_critical = e.extn_id == KeyUsage::OID
            || e.extn_id == BasicConstraints::OID
            || (e.extn_id == ExtendedKeyUsage::OID && profile.extended_key_usage_critical);
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
    if find(ExtendedKeyUsage::OID)
        .is_some_and(|e| e.critical != profile.extended_key_usage_critical)
    {
        f.push("extendedKeyUsage's criticality does not match the profile".into());
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
    if !profile.subject_alt_names.is_empty() && !has(oids::ID_CE_SUBJECT_ALT_NAME) {
        f.push("subjectAltName is missing".into());
    }
    if profile.subject_alt_names.is_empty() && has(oids::ID_CE_SUBJECT_ALT_NAME) {
        f.push("subjectAltName is not in the profile".into());
    }
    if profile.ocsp_no_check != has(OCSP_NOCHECK) {
        f.push("id-pkix-ocsp-nocheck does not match the profile".into());
    }
    f
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    use der::Decode;
    use muhr_policies::Profiles;
    use spki::SubjectPublicKeyInfoOwned;
    use x509_cert::ext::Extension;

    use super::lint;
    use crate::build::{self, IssuerUrls, IssuerView, TbsInput};

    fn key() -> SubjectPublicKeyInfoOwned {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, doc.as_ref()).unwrap();
        SubjectPublicKeyInfoOwned::from_der(kp.public_key().as_der().unwrap().as_ref()).unwrap()
    }

    fn person() -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "pinfl".into(),
                muhr_policies::identity::with_check_digit("3150585123456"),
            ),
            ("surname".into(), "IVANOV".into()),
            ("given_name".into(), "IVAN".into()),
            ("common_name".into(), "ra.muhr.uz".into()),
            ("organization.name".into(), "Muhr".into()),
        ])
    }

    struct Fixture {
        profiles: Profiles,
        issuer_key: SubjectPublicKeyInfoOwned,
        urls: IssuerUrls,
        now: SystemTime,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                profiles: Profiles::builtin().unwrap(),
                issuer_key: key(),
                urls: IssuerUrls {
                    ca: "issuing".into(),
                    crl: Some("http://x/crl/{crl}.crl".into()),
                    ocsp: Some("http://x/ocsp".into()),
                    ca_issuers: Some("http://x/ca".into()),
                },
                now: build::whole_seconds(SystemTime::now()),
            }
        }

        fn issuer(&self) -> IssuerView<'_> {
            IssuerView {
                name: "CN=Issuer,O=Test,C=UZ".parse().unwrap(),
                key_id: build::key_identifier(&self.issuer_key),
                spki: &self.issuer_key,
                signature_algorithm: muhr_hsm::KeySpec::EcdsaP256.signature_algorithm(),
                not_before: self.now - Duration::from_secs(3600),
                not_after: self.now + Duration::from_secs(5 * 365 * 86400),
                urls: &self.urls,
            }
        }

        /// A TBS for `profile`, with `tweak` applied to its inputs.
        fn tbs(&self, profile: &str, tweak: impl FnOnce(&mut TbsInput<'_>)) -> Vec<u8> {
            let p = self.profiles.get(profile).unwrap();
            let issuer = self.issuer();
            let subject_key = key();
            let extensions =
                build::extensions(p, &subject_key, Some(&issuer), &[], Some(3), &[]).unwrap();
            let mut input = TbsInput {
                serial: muhr_pkix::serial::generate().unwrap(),
                not_before: self.now,
                not_after: build::add_validity(self.now, p.validity).unwrap(),
                subject: build::subject_name(p, &person()).unwrap(),
                subject_key,
                extensions,
                issuer: None,
                self_signature_algorithm: None,
            };
            tweak(&mut input);
            let issuer = self.issuer();
            input.issuer = Some(&issuer);
            build::to_be_signed(input).unwrap()
        }

        fn findings(&self, profile: &str, tbs: &[u8]) -> Vec<String> {
            lint(
                tbs,
                self.profiles.get(profile).unwrap(),
                Some(&self.issuer()),
            )
        }
    }

    fn has(findings: &[String], needle: &str) -> bool {
        findings.iter().any(|f| f.contains(needle))
    }

    #[test]
    fn a_well_built_certificate_passes() {
        let f = Fixture::new();
        for p in ["individual-sign", "individual-auth"] {
            assert_eq!(f.findings(p, &f.tbs(p, |_| {})), Vec::<String>::new());
        }
    }

    #[test]
    fn tls_servers_carry_their_names() {
        use crate::alt_name::AltName;
        let f = Fixture::new();
        let bare = f.tbs("tls-server", |_| {});
        assert!(has(
            &f.findings("tls-server", &bare),
            "subjectAltName is missing"
        ));
        let named = f.tbs("tls-server", |i| {
            let names = [
                AltName::parse("localhost").unwrap(),
                AltName::parse("127.0.0.1").unwrap(),
            ];
            let san = crate::alt_name::extension(&names).unwrap().unwrap();
            i.extensions.push(x509_cert::ext::Extension {
                extn_id: <x509_cert::ext::pkix::SubjectAltName as const_oid::AssociatedOid>::OID,
                critical: false,
                extn_value: der::asn1::OctetString::new(der::Encode::to_der(&san).unwrap())
                    .unwrap(),
            });
        });
        assert_eq!(f.findings("tls-server", &named), Vec::<String>::new());
        assert!(has(
            &f.findings("individual-auth", &named),
            "subjectAltName is not in the profile"
        ));
    }

    #[test]
    fn issuance_asks_for_the_names_a_profile_needs() {
        use crate::alt_name::AltName;
        let f = Fixture::new();
        let issuer = f.issuer();
        let policy = crate::IssuancePolicy::default();
        let go = |profile: &str, names: &[AltName]| {
            crate::prepare(
                f.profiles.get(profile).unwrap(),
                &person(),
                key(),
                Some(&issuer),
                None,
                &policy,
                None,
                0,
                names,
            )
        };
        let names = [
            AltName::parse("localhost").unwrap(),
            AltName::parse("127.0.0.1").unwrap(),
        ];
        let tbs = go("tls-server", &names).unwrap().tbs;
        let tbs = x509_cert::certificate::TbsCertificate::from_der(&tbs).unwrap();
        let (_, san) = tbs
            .get_extension::<x509_cert::ext::pkix::SubjectAltName>()
            .unwrap()
            .unwrap();
        assert_eq!(san.0.len(), 2);
        for (profile, names) in [("tls-server", &[][..]), ("individual-auth", &names[..])] {
            match go(profile, names) {
                Err(crate::IssueError::Refused(e)) => assert_eq!(e.field, "alt_names"),
                Err(e) => panic!("{profile}: {e}"),
                Ok(_) => panic!("{profile}: accepted"),
            }
        }
    }

    #[test]
    fn each_rule_fires() {
        let f = Fixture::new();
        // Extensions of one profile linted against another: usages differ.
        let auth = f.tbs("individual-auth", |_| {});
        let found = f.findings("individual-sign", &auth);
        assert!(
            has(&found, "keyUsage NonRepudiation does not match"),
            "{found:?}"
        );
        assert!(has(&found, "extendedKeyUsage does not match"), "{found:?}");

        let late = f.tbs("individual-sign", |i| {
            i.not_after = f.now + Duration::from_secs(10 * 365 * 86400)
        });
        let found = f.findings("individual-sign", &late);
        assert!(has(&found, "not inside the issuer's"), "{found:?}");
        assert!(has(&found, "exceeds the profile's 24 months"), "{found:?}");

        let backwards = f.tbs("individual-sign", |i| i.not_after = i.not_before);
        assert!(has(
            &f.findings("individual-sign", &backwards),
            "notBefore is not before notAfter"
        ));

        let short_serial = f.tbs("individual-sign", |i| {
            i.serial = x509_cert::serial_number::SerialNumber::new(&[0x01, 0x02]).unwrap()
        });
        assert!(has(
            &f.findings("individual-sign", &short_serial),
            "fewer than 128 random bits"
        ));

        let no_aki = f.tbs("individual-sign", |i| i.extensions.retain(|e| e.extn_id != <x509_cert::ext::pkix::AuthorityKeyIdentifier as const_oid::AssociatedOid>::OID));
        assert!(has(
            &f.findings("individual-sign", &no_aki),
            "authorityKeyIdentifier is missing"
        ));

        let duplicate = f.tbs("individual-sign", |i| {
            let first = i.extensions[0].clone();
            i.extensions.push(first);
        });
        assert!(has(
            &f.findings("individual-sign", &duplicate),
            "appears twice"
        ));

        let critical_ski = f.tbs("individual-sign", |i| {
            for e in &mut i.extensions {
                if e.extn_id
                    == <x509_cert::ext::pkix::SubjectKeyIdentifier as const_oid::AssociatedOid>::OID
                {
                    e.critical = true;
                }
            }
        });
        assert!(has(
            &f.findings("individual-sign", &critical_ski),
            "must not be critical"
        ));

        let ca = f.tbs("individual-sign", |i| {
            i.extensions.push(Extension {
                extn_id: const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS,
                critical: true,
                extn_value: der::asn1::OctetString::new(
                    der::Encode::to_der(&x509_cert::ext::pkix::BasicConstraints {
                        ca: true,
                        path_len_constraint: None,
                    })
                    .unwrap(),
                )
                .unwrap(),
            })
        });
        assert!(has(&f.findings("individual-sign", &ca), "must not be a CA"));

        let empty_subject = f.tbs("individual-sign", |i| {
            i.subject = x509_cert::name::Name::default()
        });
        assert!(has(
            &f.findings("individual-sign", &empty_subject),
            "subject is empty"
        ));

        assert!(has(
            &lint(
                b"\x30\x00",
                f.profiles.get("individual-sign").unwrap(),
                None
            ),
            "does not decode"
        ));
    }
}

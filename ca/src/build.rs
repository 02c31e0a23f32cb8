//! Turns a profile, subject fields, a public key and an issuer into a
//! to-be-signed certificate. Every choice here comes from the profile or the
//! configuration; nothing about a certificate's content is decided in code.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use const_oid::{AssociatedOid, ObjectIdentifier};
use der::asn1::{Any, Ia5String, Null, OctetString, PrintableStringRef, SetOfVec, Utf8StringRef};
use der::{DateTime, Encode};
use muhr_policies::{Encoding, KeyUsageBit, Kind, Profile, Validity};
use sha2::Digest;
use spki::{AlgorithmIdentifierOwned, EncodePublicKey, SubjectPublicKeyInfoOwned};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CertificatePolicies, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectKeyIdentifier,
    certpolicy::PolicyInformation,
};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity as CertValidity};

use crate::crl::{Scope, idp};
use muhr_policies::identity::FieldError;

/// id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1): written for profiles with
/// `ocsp_no_check` (the delegated OCSP signer), so relying parties do not
/// ask the responder about its own certificate. Lint checks for it too.
pub const OCSP_NOCHECK: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.5");
const AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
const AD_CA_ISSUERS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2");

/// URLs written into certificates, already resolved for the issuing CA.
#[derive(Clone, Debug, Default)]
pub struct IssuerUrls {
    /// The CA's name, which starts the name of each of its CRLs.
    pub ca: String,
    /// CRL URL template: `{crl}` becomes a CRL's name (see `crl::name`).
    pub crl: Option<String>,
    /// OCSP responder URL, for Authority Information Access (RFC 5280 4.2.2.1).
    pub ocsp: Option<String>,
    /// URL of the CA's own certificate, for AIA caIssuers.
    pub ca_issuers: Option<String>,
}

/// Everything about the issuer that shapes a certificate it signs.
pub struct IssuerView<'a> {
    /// The issuer's subject: the certificate's issuer name.
    pub name: Name,
    /// Its subject key identifier, written as the authority key identifier.
    pub key_id: Vec<u8>,
    /// Its public key, which the signature is verified with.
    pub spki: &'a SubjectPublicKeyInfoOwned,
    /// The algorithm its key signs with, written into the TBS.
    pub signature_algorithm: AlgorithmIdentifierOwned,
    /// Its own validity: a certificate it signs is clipped to fit within it.
    pub not_before: SystemTime,
    /// End of its validity; see `not_before`.
    pub not_after: SystemTime,
    /// Where its certificates point for CRLs, OCSP and the CA certificate.
    pub urls: &'a IssuerUrls,
}

impl IssuerUrls {
    /// The URL of this CA's CRL of `scope` (`delta`: its delta CRL).
    pub fn crl_url(&self, scope: crate::crl::Scope, delta: bool) -> Option<String> {
        self.crl
            .as_deref()
            .map(|t| crate::crl::url(t, &self.ca, scope, delta))
    }
}

/// RFC 7093 method 1: the leftmost 160 bits of SHA-256 of the key's BIT STRING.
pub fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    let bits = spki.subject_public_key.raw_bytes();
    sha2::Sha256::digest(bits)[..20].to_vec()
}

/// The subject Name of `profile` for `fields`, in the profile's attribute order.
pub fn subject_name(
    profile: &Profile,
    fields: &BTreeMap<String, String>,
) -> Result<Name, FieldError> {
    let mut rdns = Vec::new();
    for attr in &profile.subject {
        let Some(value) = attr.value.render(fields) else {
            if attr.required {
                let missing: Vec<&str> = attr
                    .value
                    .fields()
                    .filter(|f| !fields.contains_key(*f))
                    .collect();
                return Err(FieldError {
                    field: missing
                        .first()
                        .copied()
                        .unwrap_or(attr.name.as_str())
                        .to_string(),
                    rule: format!(
                        "required by profile {} (subject attribute {})",
                        profile.name, attr.name
                    ),
                });
            }
            continue;
        };
        let field = attr
            .value
            .fields()
            .next()
            .unwrap_or(attr.name.as_str())
            .to_string();
        if value.chars().count() > attr.max_length {
            return Err(FieldError {
                field,
                rule: format!(
                    "{} may be at most {} characters",
                    attr.name, attr.max_length
                ),
            });
        }
        let encoded = match attr.encoding {
            Encoding::Utf8 => Utf8StringRef::new(&value).and_then(|s| Any::encode_from(&s)),
            Encoding::Printable => {
                PrintableStringRef::new(&value).and_then(|s| Any::encode_from(&s))
            }
            Encoding::Ia5 => Ia5String::new(&value).and_then(|s| Any::encode_from(&s)),
        }
        .map_err(|_| FieldError {
            field,
            rule: format!(
                "{:?} cannot be written as a {:?} string",
                value, attr.encoding
            ),
        })?;
        let atv = AttributeTypeAndValue {
            oid: attr.oid,
            value: encoded,
        };
        let set = SetOfVec::try_from(vec![atv]).expect("one element is a valid SET OF");
        rdns.push(RelativeDistinguishedName::from(set));
    }
    // Through DER so that Name's own decoding rules check what we built.
    let seq = RdnSequence::from(rdns);
    seq.to_der()
        .and_then(|d| <Name as der::Decode>::from_der(&d))
        .map_err(|e| FieldError {
            field: "subject".into(),
            rule: format!("cannot encode the subject: {e}"),
        })
}

fn add_months(dt: DateTime, months: u32) -> Option<DateTime> {
    let total = u32::from(dt.month()) - 1 + months;
    let year = dt.year() as u32 + total / 12;
    let month = (total % 12 + 1) as u8;
    let year = u16::try_from(year).ok()?;
    let day = dt
        .day()
        .min(muhr_policies::identity::days_in_month(year, month));
    DateTime::new(year, month, day, dt.hour(), dt.minutes(), dt.seconds()).ok()
}

/// `start` plus a profile lifetime, in calendar terms for months and years.
pub fn add_validity(start: SystemTime, v: Validity) -> Option<SystemTime> {
    let dt = DateTime::from_system_time(start).ok()?;
    let end = match v {
        Validity::Hours(h) => return start.checked_add(Duration::from_secs(u64::from(h) * 3600)),
        Validity::Days(d) => return start.checked_add(Duration::from_secs(u64::from(d) * 86400)),
        Validity::Months(m) => add_months(dt, m)?,
        Validity::Years(y) => add_months(dt, y * 12)?,
    };
    Some(end.to_system_time())
}

/// Truncates to whole seconds: certificates carry no fractions.
pub fn whole_seconds(t: SystemTime) -> SystemTime {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs())
}

fn ext<T: AssociatedOid + Encode>(critical: bool, value: &T) -> der::Result<Extension> {
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

fn uri(s: &str) -> der::Result<GeneralName> {
    Ok(GeneralName::UniformResourceIdentifier(Ia5String::new(s)?))
}

/// The extensions `profile` prescribes, in a fixed order.
pub fn extensions(
    profile: &Profile,
    subject_key: &SubjectPublicKeyInfoOwned,
    issuer: Option<&IssuerView<'_>>,
    policy_oids: &[ObjectIdentifier],
    crl_shard: Option<u32>,
    alt_names: &[crate::alt_name::AltName],
) -> der::Result<Vec<Extension>> {
    let mut out = Vec::new();
    if profile.kind == Kind::Ca {
        out.push(ext(
            true,
            &BasicConstraints {
                ca: true,
                path_len_constraint: profile.path_len,
            },
        )?);
    }
    let mut usages = flagset::FlagSet::<KeyUsages>::default();
    for k in &profile.key_usage {
        usages |= match k {
            KeyUsageBit::DigitalSignature => KeyUsages::DigitalSignature,
            KeyUsageBit::NonRepudiation => KeyUsages::NonRepudiation,
            KeyUsageBit::KeyEncipherment => KeyUsages::KeyEncipherment,
            KeyUsageBit::DataEncipherment => KeyUsages::DataEncipherment,
            KeyUsageBit::KeyAgreement => KeyUsages::KeyAgreement,
            KeyUsageBit::KeyCertSign => KeyUsages::KeyCertSign,
            KeyUsageBit::CrlSign => KeyUsages::CRLSign,
        };
    }
    out.push(ext(true, &KeyUsage(usages))?);
    if !profile.extended_key_usage.is_empty() {
        out.push(ext(
            profile.extended_key_usage_critical,
            &ExtendedKeyUsage(profile.extended_key_usage.clone()),
        )?);
    }
    let ski = key_identifier(subject_key);
    out.push(ext(
        false,
        &SubjectKeyIdentifier(OctetString::new(ski.clone())?),
    )?);
    let aki = issuer.map(|i| i.key_id.clone()).unwrap_or(ski);
    out.push(ext(
        false,
        &AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(aki)?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        },
    )?);
    // Not critical: every subject here has attributes (RFC 5280 4.2.1.6).
    if let Some(san) = crate::alt_name::extension(alt_names)? {
        out.push(ext(false, &san)?);
    }
    if !policy_oids.is_empty() {
        let policies = policy_oids
            .iter()
            .map(|oid| PolicyInformation {
                policy_identifier: *oid,
                policy_qualifiers: None,
            })
            .collect();
        out.push(ext(false, &CertificatePolicies(policies))?);
    }
    if let Some(issuer) = issuer {
        let scope = crl_shard.map_or(Scope::Whole, Scope::Shard);
        if profile.crl_distribution_point
            && let Some(crl) = issuer.urls.crl_url(scope, false)
        {
            out.push(ext(false, &idp::crl_distribution_points(&crl)?)?);
        }
        if profile.freshest_crl
            && let Some(delta) = issuer.urls.crl_url(scope, true)
        {
            out.push(ext(false, &idp::freshest_crl(&delta)?)?);
        }
        let mut access = Vec::new();
        if profile.aia_ocsp
            && let Some(ocsp) = &issuer.urls.ocsp
        {
            access.push(AccessDescription {
                access_method: AD_OCSP,
                access_location: uri(ocsp)?,
            });
        }
        if profile.aia_ca_issuers
            && let Some(ca) = &issuer.urls.ca_issuers
        {
            access.push(AccessDescription {
                access_method: AD_CA_ISSUERS,
                access_location: uri(ca)?,
            });
        }
        if !access.is_empty() {
            out.push(ext(false, &AuthorityInfoAccessSyntax(access))?);
        }
    }
    if profile.ocsp_no_check {
        out.push(Extension {
            extn_id: OCSP_NOCHECK,
            critical: false,
            extn_value: OctetString::new(Null.to_der()?)?,
        });
    }
    Ok(out)
}

/// A builder "profile" that hands x509-cert exactly what Muhr's profile decided.
struct Plan {
    issuer: Name,
    subject: Name,
    extensions: Vec<Extension>,
}

impl BuilderProfile for Plan {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _spk: spki::SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: spki::SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(self.extensions.clone())
    }
}

/// The issuer's public half, as x509-cert's builder wants to see a signer.
#[derive(Clone)]
struct IssuerKey {
    spki: SubjectPublicKeyInfoOwned,
    alg: AlgorithmIdentifierOwned,
}

#[derive(Clone)]
struct IssuerPublic(SubjectPublicKeyInfoOwned);

impl EncodePublicKey for IssuerPublic {
    fn to_public_key_der(&self) -> spki::Result<der::Document> {
        Ok(der::Document::encode_msg(&self.0)?)
    }
}

impl signature::Keypair for IssuerKey {
    type VerifyingKey = IssuerPublic;
    fn verifying_key(&self) -> IssuerPublic {
        IssuerPublic(self.spki.clone())
    }
}

impl spki::DynSignatureAlgorithmIdentifier for IssuerKey {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(self.alg.clone())
    }
}

/// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue },
/// with the TBS kept as the exact bytes that were recorded and signed.
#[derive(der::Sequence)]
struct SignedParts<'a> {
    tbs: der::asn1::AnyRef<'a>,
    algorithm: AlgorithmIdentifierOwned,
    signature: der::asn1::BitString,
}

/// Joins recorded to-be-signed bytes and their signature into a certificate's DER.
pub fn assemble(
    tbs_der: &[u8],
    algorithm: &AlgorithmIdentifierOwned,
    signature: &[u8],
) -> der::Result<Vec<u8>> {
    use der::Decode;
    SignedParts {
        tbs: der::asn1::AnyRef::from_der(tbs_der)?,
        algorithm: algorithm.clone(),
        signature: der::asn1::BitString::from_bytes(signature)?,
    }
    .to_der()
}

/// What [`to_be_signed`] encodes. Every choice is already made; nothing
/// here is checked against a profile (that is [`crate::lint`]'s job).
pub struct TbsInput<'a> {
    /// A fresh serial ([`muhr_pkix::serial::generate`]).
    pub serial: SerialNumber,
    /// Start of validity, in whole seconds ([`whole_seconds`]).
    pub not_before: SystemTime,
    /// End of validity, in whole seconds.
    pub not_after: SystemTime,
    /// The subject ([`subject_name`]); also the issuer when self-signed.
    pub subject: Name,
    /// The subject's key; also the verifying key when self-signed.
    pub subject_key: SubjectPublicKeyInfoOwned,
    /// Written in this order ([`extensions`]).
    pub extensions: Vec<Extension>,
    /// `None` for a self-signed certificate.
    pub issuer: Option<&'a IssuerView<'a>>,
    /// For a self-signed certificate: its own key's algorithm.
    pub self_signature_algorithm: Option<AlgorithmIdentifierOwned>,
}

/// Encodes the TBSCertificate; returns its DER.
pub fn to_be_signed(input: TbsInput<'_>) -> Result<Vec<u8>, String> {
    let issuer_name = input
        .issuer
        .map(|i| i.name.clone())
        .unwrap_or_else(|| input.subject.clone());
    let issuer_key = match input.issuer {
        Some(i) => IssuerKey {
            spki: i.spki.clone(),
            alg: i.signature_algorithm.clone(),
        },
        None => IssuerKey {
            spki: input.subject_key.clone(),
            alg: input
                .self_signature_algorithm
                .ok_or("a self-signed certificate needs its signature algorithm")?,
        },
    };
    let time = |t: SystemTime| -> Result<Time, String> {
        Ok(Time::from(
            DateTime::from_system_time(t).map_err(|e| e.to_string())?,
        ))
    };
    let validity = CertValidity::new(time(input.not_before)?, time(input.not_after)?);
    let plan = Plan {
        issuer: issuer_name,
        subject: input.subject,
        extensions: input.extensions,
    };
    let mut builder = CertificateBuilder::new(plan, input.serial, validity, input.subject_key)
        .map_err(|e| e.to_string())?;
    builder.finalize(&issuer_key).map_err(|e| e.to_string())
}

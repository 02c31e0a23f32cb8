//! Certificate profiles are data: TOML files under `policies/profiles/`, one per
//! profile, validated when loaded. Code reads the validated [`Profile`] and never
//! carries its own list of attributes, usages or OIDs.
//!
//! A bad profile stops start-up with an error naming the file, the field and the
//! rule it breaks, so an operator's typo never reaches a certificate.
//!
//! [`identity`] holds the rules a person's data must meet (PINFL, names,
//! TIN): policy, shared by the RA that applies it and the validation that
//! reads certificates back.
//!
//! It must never touch a key, the database or the network: profiles and
//! rules are data and pure functions.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod districts;
mod duration;
pub mod identity;
mod profiles;
mod template;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use const_oid::ObjectIdentifier;
use serde::Deserialize;

pub use districts::Districts;
pub use duration::Validity;
pub use profiles::Profiles;
pub use template::Template;

/// Profiles shipped with Muhr, compiled in so the binary runs from any directory.
pub const BUILTIN: &[(&str, &str)] = &[
    ("root-ca.toml", include_str!("../profiles/root-ca.toml")),
    (
        "issuing-ca.toml",
        include_str!("../profiles/issuing-ca.toml"),
    ),
    (
        "ocsp-signer.toml",
        include_str!("../profiles/ocsp-signer.toml"),
    ),
    (
        "individual-auth.toml",
        include_str!("../profiles/individual-auth.toml"),
    ),
    (
        "individual-sign.toml",
        include_str!("../profiles/individual-sign.toml"),
    ),
    (
        "legal-entity-sign.toml",
        include_str!("../profiles/legal-entity-sign.toml"),
    ),
    ("ra-client.toml", include_str!("../profiles/ra-client.toml")),
    ("tsa.toml", include_str!("../profiles/tsa.toml")),
    (
        "tls-server.toml",
        include_str!("../profiles/tls-server.toml"),
    ),
];

/// The law (ZRU-793) caps a certificate's life at 24 months.
pub const END_ENTITY_MAX_MONTHS: u32 = 24;

/// Why a profile or district file was refused. Start-up stops on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: field `{field}`: {rule}")]
pub struct PolicyError {
    /// The file as it was given: a built-in name (`individual-sign.toml`) or a
    /// path on disk; the directory when a directory could not be read.
    pub file: String,
    /// The field at fault, in the file's own terms (`key_usage`,
    /// `subject[2].oid`). When the file could not be read or parsed it names
    /// no real field: `(directory)`, `-` or `(syntax)`.
    pub field: String,
    /// The rule broken, in words an operator can act on.
    pub rule: String,
}

/// What a profile's certificates are: it decides which key usages, subject
/// fields, lifetimes and extensions the profile may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A certification authority (root or subordinate): keyCertSign, cRLSign.
    Ca,
    /// Everything else: people, organisations' employees, OCSP responders.
    EndEntity,
}

/// One keyUsage bit (RFC 5280 4.2.1.3), written in a profile by its RFC name.
/// Ordered as the bits are numbered, so a sorted list is in bit order.
/// encipherOnly and decipherOnly are not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyUsageBit {
    /// Bit 0: signatures other than on certificates and CRLs, such as logging in.
    DigitalSignature,
    /// Bit 1, also called contentCommitment: the signature with legal force
    /// on a document.
    NonRepudiation,
    /// Bit 2: the key encrypts other keys (RSA key transport).
    KeyEncipherment,
    /// Bit 3: the key encrypts user data directly.
    DataEncipherment,
    /// Bit 4: the key takes part in key agreement (ECDH).
    KeyAgreement,
    /// Bit 5: the key signs certificates. CA profiles only, and required there.
    KeyCertSign,
    /// Bit 6 (`cRLSign`): the key signs CRLs. CA profiles only.
    CrlSign,
}

impl FromStr for KeyUsageBit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "digitalSignature" => Self::DigitalSignature,
            "nonRepudiation" | "contentCommitment" => Self::NonRepudiation,
            "keyEncipherment" => Self::KeyEncipherment,
            "dataEncipherment" => Self::DataEncipherment,
            "keyAgreement" => Self::KeyAgreement,
            "keyCertSign" => Self::KeyCertSign,
            "cRLSign" => Self::CrlSign,
            _ => {
                return Err(format!(
                    "unknown key usage {s:?} (RFC 5280 names: digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment, keyAgreement, keyCertSign, cRLSign)"
                ));
            }
        })
    }
}

/// Subject key kinds a profile can accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on NIST P-256 (secp256r1).
    EcdsaP256,
    /// ECDSA on NIST P-384 (secp384r1).
    EcdsaP384,
    /// RSA with a modulus of this many bits. A profile can name only 2048,
    /// 3072 or 4096.
    Rsa(u32),
}

impl FromStr for KeyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ecdsa-p256" => Ok(Self::EcdsaP256),
            "ecdsa-p384" => Ok(Self::EcdsaP384),
            _ => match s.strip_prefix("rsa-").and_then(|b| b.parse::<u32>().ok()) {
                Some(b @ (2048 | 3072 | 4096)) => Ok(Self::Rsa(b)),
                _ => Err(format!(
                    "unknown key kind {s:?} (ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096)"
                )),
            },
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EcdsaP256 => f.write_str("ecdsa-p256"),
            Self::EcdsaP384 => f.write_str("ecdsa-p384"),
            Self::Rsa(b) => write!(f, "rsa-{b}"),
        }
    }
}

/// ASN.1 string type of a subject attribute's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF8String: any script. The default when a profile names none.
    Utf8,
    /// PrintableString: ASCII letters, digits, space and `'()+,-./:=?` only.
    /// For country codes, serial numbers, PINFL and TIN.
    Printable,
    /// IA5String: any 7-bit ASCII.
    Ia5,
}

/// One attribute of a profile's subject Name, written as an RDN of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectAttribute {
    /// Short name for messages (`CN`, `PINFL`); not written to the certificate.
    pub name: String,
    /// Attribute type written to the certificate; unique within a subject.
    pub oid: ObjectIdentifier,
    /// What the value is made of: fixed text and request fields.
    pub value: Template,
    /// ASN.1 string type of the value; a value the type cannot hold refuses
    /// the request.
    pub encoding: Encoding,
    /// When true, a request that gives none of the template's fields is
    /// refused. When false, such a request leaves the attribute out.
    pub required: bool,
    /// Longest rendered value, in characters (1 to 1024); a longer one
    /// refuses the request.
    pub max_length: usize,
}

/// One validated certificate profile: what a certificate issued under it
/// contains, and what a request for it must bring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// What requests and the command line call the profile. Always the file's
    /// stem: lowercase letters, digits and '-'.
    pub name: String,
    /// The file it was read from, as given: a built-in name or a path.
    pub file: String,
    /// Free text for operators; empty when the file gives none. Not written
    /// to certificates.
    pub description: String,
    /// CA or end entity.
    pub kind: Kind,
    /// Lifetime counted from notBefore. At most [`END_ENTITY_MAX_MONTHS`] for
    /// an end entity; the issuer's own notAfter still caps it.
    pub validity: Validity,
    /// keyUsage bits, in bit order, never empty and never repeated. Written as
    /// a critical extension.
    pub key_usage: Vec<KeyUsageBit>,
    /// extendedKeyUsage purposes (RFC 5280 4.2.1.12) in the file's order,
    /// never repeated. Empty leaves the extension out.
    pub extended_key_usage: Vec<ObjectIdentifier>,
    /// The extendedKeyUsage extension is marked critical: a relying party
    /// that does not understand it must refuse the certificate rather than
    /// use the key for anything else. RFC 3161 2.3 demands it of a TSA.
    pub extended_key_usage_critical: bool,
    /// pathLenConstraint of a CA's basicConstraints (RFC 5280 4.2.1.9): how
    /// many CAs may follow below it. `None` means no limit, and is the only
    /// value an end-entity profile has.
    pub path_len: Option<u8>,
    /// Kinds of public key a request may bring; never empty.
    pub keys: Vec<KeyKind>,
    /// Subject attributes, in the order they are written. At least one is
    /// required, so a subject is never empty.
    pub subject: Vec<SubjectAttribute>,
    /// Write cRLDistributionPoints (RFC 5280 4.2.1.13) pointing at the
    /// issuer's CRL. Left out when no CRL URL is configured, and on a
    /// self-signed certificate.
    pub crl_distribution_point: bool,
    /// Freshest CRL (RFC 5280 4.2.1.15): where the delta CRL is.
    pub freshest_crl: bool,
    /// Name the issuer's OCSP responder in authorityInfoAccess (RFC 5280
    /// 4.2.2.1). Left out when no OCSP URL is configured.
    pub aia_ocsp: bool,
    /// Name where the issuer's certificate can be fetched (caIssuers) in
    /// authorityInfoAccess. Left out when no such URL is configured.
    pub aia_ca_issuers: bool,
    /// Write id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1), so relying parties do
    /// not ask about this OCSP signer's own revocation. OCSPSigning profiles only.
    pub ocsp_no_check: bool,
    /// Kinds of subjectAltName a request may carry. When not empty, at least
    /// one is required: a TLS server is found by its alternative names
    /// (RFC 6125), never by its common name.
    pub subject_alt_names: Vec<AltNameKind>,
}

/// A subjectAltName kind a profile allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AltNameKind {
    /// A DNS host name (dNSName).
    Dns,
    /// An IPv4 or IPv6 address (iPAddress).
    Ip,
}

impl Profile {
    /// Fields a request must provide for this profile (from its required attributes).
    pub fn required_fields(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .subject
            .iter()
            .filter(|a| a.required)
            .flat_map(|a| a.value.fields())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Request fields a subject template may name, by profile kind.
pub const END_ENTITY_FIELDS: &[&str] = &[
    "pinfl",
    "surname",
    "given_name",
    "patronymic",
    "tin",
    "organization.name",
    "organization.tin",
    "organization.title",
    "common_name",
];
/// Fields a CA profile's subject may name: the CA's own description, given
/// at the key ceremony, never a person's data.
pub const CA_FIELDS: &[&str] = &["common_name", "organization", "country", "locality"];

/// id-kp-timeStamping (RFC 3161 2.3).
pub const TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");

/// Standard extended key usage names; anything else is written as a dotted OID.
const EKU_NAMES: &[(&str, &str)] = &[
    ("serverAuth", "1.3.6.1.5.5.7.3.1"),
    ("clientAuth", "1.3.6.1.5.5.7.3.2"),
    ("codeSigning", "1.3.6.1.5.5.7.3.3"),
    ("emailProtection", "1.3.6.1.5.5.7.3.4"),
    ("timeStamping", "1.3.6.1.5.5.7.3.8"),
    ("OCSPSigning", "1.3.6.1.5.5.7.3.9"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttribute {
    name: String,
    oid: String,
    value: String,
    #[serde(default = "default_encoding")]
    encoding: Encoding,
    #[serde(default)]
    required: bool,
    #[serde(default = "default_max_length")]
    max_length: usize,
}

fn default_encoding() -> Encoding {
    Encoding::Utf8
}
fn default_max_length() -> usize {
    128
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    #[serde(default)]
    description: String,
    kind: Kind,
    validity: String,
    key_usage: Vec<String>,
    #[serde(default)]
    extended_key_usage: Vec<String>,
    #[serde(default)]
    extended_key_usage_critical: bool,
    path_len: Option<u8>,
    keys: Vec<String>,
    subject: Vec<RawAttribute>,
    #[serde(default)]
    crl_distribution_point: bool,
    #[serde(default)]
    freshest_crl: bool,
    #[serde(default)]
    aia_ocsp: bool,
    #[serde(default)]
    aia_ca_issuers: bool,
    #[serde(default)]
    ocsp_no_check: bool,
    #[serde(default)]
    subject_alt_names: Vec<AltNameKind>,
}

/// Parses and validates one profile file.
pub fn parse(file: &str, text: &str) -> Result<Profile, PolicyError> {
    let err = |field: &str, rule: String| PolicyError {
        file: file.to_string(),
        field: field.to_string(),
        rule,
    };
    let raw: RawProfile = toml::from_str(text).map_err(|e| {
        let field = e
            .message()
            .split('`')
            .nth(1)
            .unwrap_or("(syntax)")
            .to_string();
        err(&field, e.message().to_string())
    })?;
    let stem = Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if raw.name != stem {
        return Err(err(
            "name",
            format!("must match the file name ({stem:?}), found {:?}", raw.name),
        ));
    }
    if raw.name.is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(err("name", "lowercase letters, digits and '-' only".into()));
    }
    let validity: Validity = raw.validity.parse().map_err(|e| err("validity", e))?;
    if raw.kind == Kind::EndEntity && !validity.within_months(END_ENTITY_MAX_MONTHS) {
        return Err(err(
            "validity",
            format!(
                "an end-entity certificate may be valid for at most {END_ENTITY_MAX_MONTHS} months (ZRU-793); the profile asks for {validity}"
            ),
        ));
    }
    let mut key_usage = raw
        .key_usage
        .iter()
        .map(|k| k.parse::<KeyUsageBit>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err("key_usage", e))?;
    key_usage.sort_unstable();
    if key_usage.windows(2).any(|w| w[0] == w[1]) {
        return Err(err("key_usage", "a usage is listed twice".into()));
    }
    if key_usage.is_empty() {
        return Err(err(
            "key_usage",
            "at least one key usage is required".into(),
        ));
    }
    let is_ca_usage =
        |k: &KeyUsageBit| matches!(k, KeyUsageBit::KeyCertSign | KeyUsageBit::CrlSign);
    match raw.kind {
        Kind::Ca if !key_usage.contains(&KeyUsageBit::KeyCertSign) => {
            return Err(err(
                "key_usage",
                "a CA profile must include keyCertSign".into(),
            ));
        }
        Kind::EndEntity if key_usage.iter().any(is_ca_usage) => {
            return Err(err(
                "key_usage",
                "keyCertSign and cRLSign are for CA profiles only".into(),
            ));
        }
        _ => {}
    }
    if raw.path_len.is_some() && raw.kind != Kind::Ca {
        return Err(err(
            "path_len",
            "only a CA profile has a path length".into(),
        ));
    }
    let mut extended_key_usage = Vec::new();
    for e in &raw.extended_key_usage {
        let oid = EKU_NAMES
            .iter()
            .find(|(n, _)| n == e)
            .map(|(_, o)| *o)
            .unwrap_or(e);
        let oid = ObjectIdentifier::new(oid).map_err(|_| {
            err(
                "extended_key_usage",
                format!("{e:?} is neither a known name nor a dotted OID"),
            )
        })?;
        if extended_key_usage.contains(&oid) {
            return Err(err("extended_key_usage", format!("{e:?} is listed twice")));
        }
        extended_key_usage.push(oid);
    }
    let keys = raw
        .keys
        .iter()
        .map(|k| k.parse::<KeyKind>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err("keys", e))?;
    if keys.is_empty() {
        return Err(err("keys", "at least one key kind is required".into()));
    }
    if raw.subject.is_empty() {
        return Err(err(
            "subject",
            "a subject needs at least one attribute".into(),
        ));
    }
    let allowed = match raw.kind {
        Kind::Ca => CA_FIELDS,
        Kind::EndEntity => END_ENTITY_FIELDS,
    };
    let mut subject = Vec::new();
    for (i, a) in raw.subject.into_iter().enumerate() {
        let field = format!("subject[{i}]");
        let oid = ObjectIdentifier::new(&a.oid).map_err(|_| {
            err(
                &format!("{field}.oid"),
                format!("{:?} is not a dotted OID", a.oid),
            )
        })?;
        if subject.iter().any(|s: &SubjectAttribute| s.oid == oid) {
            return Err(err(
                &format!("{field}.oid"),
                format!("{oid} appears twice in the subject"),
            ));
        }
        let value =
            Template::parse(&a.value, allowed).map_err(|e| err(&format!("{field}.value"), e))?;
        if !(1..=1024).contains(&a.max_length) {
            return Err(err(
                &format!("{field}.max_length"),
                "must be 1 to 1024".into(),
            ));
        }
        subject.push(SubjectAttribute {
            name: a.name,
            oid,
            value,
            encoding: a.encoding,
            required: a.required,
            max_length: a.max_length,
        });
    }
    if !subject.iter().any(|a| a.required) {
        return Err(err(
            "subject",
            "at least one attribute must be required, or a subject could be empty".into(),
        ));
    }
    if raw.freshest_crl && !raw.crl_distribution_point {
        return Err(err(
            "freshest_crl",
            "a delta CRL extends a complete CRL: set crl_distribution_point too".into(),
        ));
    }
    if raw.ocsp_no_check
        && !extended_key_usage.contains(&ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9"))
    {
        return Err(err(
            "ocsp_no_check",
            "only an OCSPSigning profile may carry id-pkix-ocsp-nocheck".into(),
        ));
    }
    if raw.extended_key_usage_critical && extended_key_usage.is_empty() {
        return Err(err(
            "extended_key_usage_critical",
            "there is no extended key usage to mark critical".into(),
        ));
    }
    // RFC 3161 2.3: a time-stamping key does nothing else, and says so in a
    // critical extension; a key that stamps and also logs in or signs
    // documents would let one compromise forge both.
    if extended_key_usage.contains(&TIME_STAMPING)
        && (extended_key_usage.len() != 1 || !raw.extended_key_usage_critical)
    {
        return Err(err(
            "extended_key_usage",
            "timeStamping must be the only extended key usage, and critical \
             (extended_key_usage_critical = true; RFC 3161 2.3)"
                .into(),
        ));
    }
    const SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
    if extended_key_usage.contains(&SERVER_AUTH) && raw.subject_alt_names.is_empty() {
        return Err(err(
            "subject_alt_names",
            "a serverAuth certificate is found by its subjectAltName (RFC 6125): allow dns or ip"
                .into(),
        ));
    }
    if raw.kind == Kind::Ca && !raw.subject_alt_names.is_empty() {
        return Err(err(
            "subject_alt_names",
            "CA certificates carry no subjectAltName here".into(),
        ));
    }
    Ok(Profile {
        name: raw.name,
        file: file.to_string(),
        description: raw.description,
        kind: raw.kind,
        validity,
        key_usage,
        extended_key_usage,
        extended_key_usage_critical: raw.extended_key_usage_critical,
        path_len: raw.path_len,
        keys,
        subject,
        crl_distribution_point: raw.crl_distribution_point,
        freshest_crl: raw.freshest_crl,
        aia_ocsp: raw.aia_ocsp,
        aia_ca_issuers: raw.aia_ca_issuers,
        ocsp_no_check: raw.ocsp_no_check,
        subject_alt_names: raw.subject_alt_names,
    })
}

#[cfg(test)]
mod tests;

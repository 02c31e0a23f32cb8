//! One card job as the personalization line sends it, and every check that
//! decides whether it may become certificates. Checks that need no database run
//! here; the registry check needs one and runs in [`crate::card::personalize`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use muhr_ca::FieldError;
use muhr_policies::identity::{IdentityRules, SubjectRequest};
use muhr_policies::{Districts, Profiles};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spki::SubjectPublicKeyInfoOwned;

use crate::card::config::PersonalizationConfig;

/// One card job as the line sends it: the body of
/// `POST /api/v1/personalization/cards`, or one of a batch's `cards`.
/// Unknown fields are refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CardRequest {
    /// The line's unique id for this card job: a retry sends the same one.
    pub request_id: String,
    /// Who the card is for.
    pub person: Person,
    /// The identity card being personalized.
    pub document: Document,
    /// Certificate role → PKCS#10 request (PEM) made on the card chip.
    pub keys: BTreeMap<String, String>,
}

/// The card holder: checked by the identity rules, then made into the
/// certificates' subject.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Person {
    /// Personal identification number: 14 digits, the birth date among them.
    pub pinfl: String,
    /// Family name.
    pub surname: String,
    /// Given name.
    pub given_name: String,
    /// Absent or empty: the subject has none.
    #[serde(default)]
    pub patronymic: Option<String>,
    /// YYYY-MM-DD; must agree with the date the PINFL encodes.
    pub birth_date: String,
    /// Taxpayer identification number (9 digits, an individual's), when
    /// the person has one.
    #[serde(default)]
    pub tin: Option<String>,
}

/// The identity card: the certificates on it live no longer than it does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Two Latin capitals and seven digits, e.g. AA1234567.
    pub number: String,
    /// YYYY-MM-DD; not in the future, not before the birth date.
    pub issued_on: String,
    /// YYYY-MM-DD; after `issued_on` and not yet reached.
    pub expires_on: String,
    /// SOATO code of the district office that issued the card.
    pub issuing_office: String,
}

/// A refused request: the field, the rule, and the short reason the pilot
/// report counts it under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The field and the rule it broke, as the 422 answer gives them.
    pub error: FieldError,
    /// What the pilot report counts it under: `invalid FIELD`,
    /// `not in pilot`, `unknown district` or `deceased`.
    pub reason: String,
}

impl Refusal {
    /// `field` breaks `rule`; counted as `invalid FIELD`.
    pub fn new(field: &str, rule: impl Into<String>) -> Self {
        Self {
            reason: format!("invalid {field}"),
            error: FieldError {
                field: field.to_string(),
                rule: rule.into(),
            },
        }
    }

    fn with_reason(mut self, reason: &str) -> Self {
        self.reason = reason.to_string();
        self
    }

    /// The office's district is known but does not issue with cards yet
    /// (`pilot_districts`).
    pub fn not_in_pilot(district: &str, name: &str) -> Self {
        Self::new(
            "document.issuing_office",
            format!(
                "not in pilot: district {district} ({name}) does not issue certificates with cards yet"
            ),
        )
        .with_reason("not in pilot")
    }

    /// The population registry records the person as deceased. Found by
    /// [`crate::card::personalize`], which asks the database.
    pub fn deceased() -> Self {
        Self::new(
            "person.pinfl",
            "the population registry records this person as deceased",
        )
        .with_reason("deceased")
    }
}

impl Refusal {
    /// The registry reported the card's document lost, stolen or
    /// invalidated (`kind`, the event's): the card is not personalized.
    pub fn document_blocked(kind: &str) -> Self {
        Self::new(
            "document.number",
            format!(
                "the population registry reported this document {}",
                kind.trim_start_matches("document.")
            ),
        )
        .with_reason("document reported")
    }
}

impl From<FieldError> for Refusal {
    fn from(e: FieldError) -> Self {
        let reason = format!("invalid {}", e.field);
        Self { error: e, reason }
    }
}

/// A request that passed every check that needs no database.
#[derive(Debug, Clone)]
pub struct ValidCard {
    /// The request as the line sent it.
    pub request: CardRequest,
    /// SHA-256 of the request re-encoded canonically: a retry must match it.
    pub body_hash: Vec<u8>,
    /// The subject's fields, from the person's data.
    pub fields: BTreeMap<String, String>,
    /// Role → (profile, public key), in role order.
    pub keys: Vec<(String, String, SubjectPublicKeyInfoOwned)>,
    /// The document's expiry: no certificate outlives it.
    pub not_after_limit: SystemTime,
    /// The issuing office's SOATO code: a known district, in the pilot.
    pub district: String,
}

/// Everything a check needs, loaded once.
pub struct Rules {
    /// How PINFLs, names and TINs are checked and become subject fields.
    pub identity: IdentityRules,
    /// The known districts (SOATO codes and names).
    pub districts: Districts,
    /// The `[personalization]` section.
    pub config: PersonalizationConfig,
    /// The loaded profiles; every role's profile is among them.
    pub profiles: std::sync::Arc<Profiles>,
}

impl Rules {
    /// Checks that configuration names real profiles for each role.
    pub fn new(
        identity: IdentityRules,
        districts: Districts,
        config: PersonalizationConfig,
        profiles: std::sync::Arc<Profiles>,
    ) -> Result<Self, String> {
        if config.roles.is_empty() {
            return Err("personalization.roles: a card needs at least one certificate role".into());
        }
        for (role, profile) in &config.roles {
            if profiles.get(profile).is_none() {
                return Err(format!(
                    "personalization.roles.{role}: unknown profile {profile:?}"
                ));
            }
        }
        for p in &config.pilot_districts {
            if p.is_empty() || p.len() > 7 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "personalization.pilot_districts: {p:?} is not a SOATO code or prefix"
                ));
            }
        }
        if config.max_batch == 0 {
            return Err("personalization.max_batch: must be at least 1".into());
        }
        Ok(Self {
            identity,
            districts,
            config,
            profiles,
        })
    }

    /// Whether `district` starts with one of `pilot_districts`.
    pub fn in_pilot(&self, district: &str) -> bool {
        self.config
            .pilot_districts
            .iter()
            .any(|p| district.starts_with(p.as_str()))
    }

    /// Every check on one request that needs no database, in the order a
    /// reader of the error would fix them.
    pub fn check(&self, request: CardRequest, today: Date) -> Result<ValidCard, Refusal> {
        let id = &request.request_id;
        if id.is_empty()
            || id.len() > 128
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(Refusal::new(
                "request_id",
                "1 to 128 characters: letters, digits, '-', '_', '.', ':'",
            ));
        }
        let p = &request.person;
        let pinfl = self
            .identity
            .pinfl("person.pinfl", &p.pinfl)
            .map_err(Refusal::from)?;
        let birth = Date::parse("person.birth_date", &p.birth_date)?;
        if (birth.year, birth.month, birth.day) != pinfl.birth {
            return Err(Refusal::new(
                "person.birth_date",
                format!(
                    "{} is not the date of birth the PINFL encodes ({:04}-{:02}-{:02})",
                    p.birth_date, pinfl.birth.0, pinfl.birth.1, pinfl.birth.2
                ),
            ));
        }
        let subject = SubjectRequest {
            pinfl: p.pinfl.clone(),
            surname: p.surname.clone(),
            given_name: p.given_name.clone(),
            patronymic: p.patronymic.clone(),
            tin: p.tin.clone(),
            organization: None,
        };
        let fields = self.identity.subject_fields(&subject).map_err(|e| {
            Refusal::from(FieldError {
                field: format!("person.{}", e.field),
                rule: e.rule,
            })
        })?;

        let d = &request.document;
        let n = d.number.as_bytes();
        if n.len() != 9
            || !n[..2].iter().all(u8::is_ascii_uppercase)
            || !n[2..].iter().all(u8::is_ascii_digit)
        {
            return Err(Refusal::new(
                "document.number",
                "two Latin capital letters and seven digits, e.g. AA1234567",
            ));
        }
        let issued = Date::parse("document.issued_on", &d.issued_on)?;
        let expires = Date::parse("document.expires_on", &d.expires_on)?;
        if issued > today {
            return Err(Refusal::new("document.issued_on", "is in the future"));
        }
        if issued < birth {
            return Err(Refusal::new(
                "document.issued_on",
                "is before the person's date of birth",
            ));
        }
        if expires <= issued {
            return Err(Refusal::new(
                "document.expires_on",
                "must be after document.issued_on",
            ));
        }
        if expires <= today {
            return Err(Refusal::new(
                "document.expires_on",
                "the document has expired",
            ));
        }
        let district = d.issuing_office.clone();
        let Some(district_name) = self.districts.name(&district) else {
            return Err(Refusal::new(
                "document.issuing_office",
                format!("{district:?} is not a known district (SOATO code)"),
            )
            .with_reason("unknown district"));
        };
        if !self.in_pilot(&district) {
            return Err(Refusal::not_in_pilot(&district, district_name));
        }

        for role in request.keys.keys() {
            if !self.config.roles.contains_key(role) {
                let known: Vec<&str> = self.config.roles.keys().map(String::as_str).collect();
                return Err(Refusal::new(
                    &format!("keys.{role}"),
                    format!(
                        "not a certificate role of a card (roles: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        let mut keys: Vec<(String, String, SubjectPublicKeyInfoOwned)> = Vec::new();
        for (role, profile_name) in &self.config.roles {
            let field = format!("keys.{role}");
            let csr = request.keys.get(role).ok_or_else(|| {
                Refusal::new(&field, "required: a PKCS#10 request made on the card")
            })?;
            let profile = self
                .profiles
                .get(profile_name)
                .ok_or_else(|| Refusal::new(&field, "its profile is not loaded"))?;
            let parsed =
                muhr_ca::csr::parse(csr.as_bytes()).map_err(|e| Refusal::new(&field, e))?;
            muhr_ca::goodkey::check(&parsed.public_key, &profile.keys)
                .map_err(|e| Refusal::new(&field, e))?;
            parsed.verify().map_err(|e| Refusal::new(&field, e))?;
            if let Some((other, _, _)) = keys.iter().find(|(_, _, k)| *k == parsed.public_key) {
                return Err(Refusal::new(
                    &field,
                    format!("the same key as keys.{other}: each role needs its own key"),
                ));
            }
            muhr_ca::build::subject_name(profile, &fields).map_err(|e| {
                Refusal::from(FieldError {
                    field: format!("person.{}", e.field),
                    rule: e.rule,
                })
            })?;
            keys.push((role.clone(), profile_name.clone(), parsed.public_key));
        }

        let body_hash = Sha256::digest(serde_json::to_vec(&request).unwrap_or_default()).to_vec();
        Ok(ValidCard {
            not_after_limit: expires.to_system_time(),
            district,
            body_hash,
            fields,
            keys,
            request,
        })
    }
}

/// A calendar date (UTC), as the API writes it: YYYY-MM-DD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// 1800 to 9999 when parsed.
    pub year: u16,
    /// 1 to 12.
    pub month: u8,
    /// 1 to the month's last day.
    pub day: u8,
}

impl Date {
    /// Reads YYYY-MM-DD; a malformed or impossible date is refused as
    /// `field`.
    pub fn parse(field: &str, s: &str) -> Result<Self, Refusal> {
        let bad = || Refusal::new(field, format!("{s:?} is not a date (YYYY-MM-DD)"));
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| -> Result<u16, Refusal> {
            let part = &s[r];
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse().map_err(|_| bad())
        };
        let (year, month, day) = (num(0..4)?, num(5..7)? as u8, num(8..10)? as u8);
        if !(1800..=9999).contains(&year)
            || !(1..=12).contains(&month)
            || day == 0
            || day > muhr_policies::identity::days_in_month(year, month)
        {
            return Err(bad());
        }
        Ok(Self { year, month, day })
    }

    /// Today in UTC: what a document's dates are checked against.
    pub fn today() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// The UTC date `t` falls on; a time before 1970 gives 1970-01-01.
    pub fn from_system_time(t: SystemTime) -> Self {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let dt = der::DateTime::from_unix_duration(Duration::from_secs(secs - secs % 86400))
            .unwrap_or(der::DateTime::INFINITY);
        Self {
            year: dt.year(),
            month: dt.month(),
            day: dt.day(),
        }
    }

    /// Midnight UTC at the start of this date.
    pub fn to_system_time(self) -> SystemTime {
        der::DateTime::new(self.year, self.month, self.day, 0, 0, 0)
            .map(|d| d.to_system_time())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

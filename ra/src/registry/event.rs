//! One registry event as the adapter or a file sends it, checked field by
//! field before anything is applied: a batch with one bad event changes
//! nothing, and the answer names the event and the field.

use muhr_policies::identity::{FieldError, IdentityRules};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::card::request::Date;

/// A checked event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Unique at the source: a retry carries the same id.
    pub id: String,
    /// The source's order: a name change older than one applied changes
    /// nothing.
    pub seq: i64,
    /// Whose event it is.
    pub pinfl: String,
    /// What happened.
    pub kind: Kind,
}

/// What happened to the person or the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `person.deceased`: every certificate is revoked (cessationOfOperation)
    /// and issuance stops.
    Deceased {
        /// Date of death, YYYY-MM-DD.
        date: String,
    },
    /// `document.lost`: the card's certificates are suspended.
    Lost {
        /// The card's document number.
        document: String,
    },
    /// `document.stolen`: as lost.
    Stolen {
        /// The card's document number.
        document: String,
    },
    /// `document.invalidated`: the card's certificates are revoked
    /// (privilegeWithdrawn).
    Invalidated {
        /// The card's document number.
        document: String,
        /// The registry's reason, kept in the audit entry.
        reason: String,
    },
    /// `person.data_changed`: certificates naming the old name are revoked
    /// after the grace period.
    DataChanged {
        /// The new surname.
        surname: String,
        /// The new given name.
        given_name: String,
        /// The new patronymic; `None` when the person has none.
        patronymic: Option<String>,
    },
    /// `person.pinfl_changed`: must never happen; refused and reported.
    PinflChanged {
        /// The PINFL the source claims the person now has.
        new_pinfl: String,
    },
}

impl Kind {
    /// The event kind as the feed names it.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Deceased { .. } => "person.deceased",
            Kind::Lost { .. } => "document.lost",
            Kind::Stolen { .. } => "document.stolen",
            Kind::Invalidated { .. } => "document.invalidated",
            Kind::DataChanged { .. } => "person.data_changed",
            Kind::PinflChanged { .. } => "person.pinfl_changed",
        }
    }
}

/// Every kind the feed may carry.
pub const KINDS: [&str; 6] = [
    "person.deceased",
    "document.lost",
    "document.stolen",
    "document.invalidated",
    "person.data_changed",
    "person.pinfl_changed",
];

/// The wire form: every field any kind has; which ones a kind needs is
/// checked after.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    id: String,
    seq: i64,
    kind: String,
    pinfl: String,
    date: Option<String>,
    document: Option<String>,
    reason: Option<String>,
    surname: Option<String>,
    given_name: Option<String>,
    patronymic: Option<String>,
    new_pinfl: Option<String>,
}

/// Longest id accepted: ids are primary keys and appear in audit entries.
pub const MAX_ID: usize = 128;

impl Event {
    /// Reads one event from JSON; `at` names it in errors (`events[3]`,
    /// `line 17`).
    pub fn parse(
        rules: &IdentityRules,
        at: &str,
        json: &serde_json::Value,
    ) -> Result<Event, FieldError> {
        let w: Wire = serde_json::from_value(json.clone()).map_err(|e| FieldError {
            field: at.to_string(),
            rule: e.to_string(),
        })?;
        let field = |name: &str| format!("{at}.{name}");
        let fail = |name: &str, rule: String| FieldError {
            field: field(name),
            rule,
        };
        // No ':' either: notices are keyed `registry:ID:SERIAL`, and an id
        // holding one could take another event's notice key.
        if w.id.is_empty()
            || w.id.len() > MAX_ID
            || !w.id.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        {
            return Err(fail(
                "id",
                format!("1 to {MAX_ID} printable ASCII characters, no spaces and no ':'"),
            ));
        }
        if w.seq < 1 {
            return Err(fail("seq", "a positive integer".into()));
        }
        let checked = rules.pinfl(&field("pinfl"), &w.pinfl)?;
        let pinfl = checked.digits.clone();
        // Which optional fields a kind takes; any other one present is refused,
        // so a misspelt kind or a field sent to the wrong kind is never ignored.
        let allowed: &[&str] = match w.kind.as_str() {
            "person.deceased" => &["date"],
            "document.lost" | "document.stolen" => &["document"],
            "document.invalidated" => &["document", "reason"],
            "person.data_changed" => &["surname", "given_name", "patronymic"],
            "person.pinfl_changed" => &["new_pinfl"],
            other => {
                return Err(fail(
                    "kind",
                    format!("unknown kind {other:?} (kinds: {})", KINDS.join(", ")),
                ));
            }
        };
        for (name, present) in [
            ("date", w.date.is_some()),
            ("document", w.document.is_some()),
            ("reason", w.reason.is_some()),
            ("surname", w.surname.is_some()),
            ("given_name", w.given_name.is_some()),
            ("patronymic", w.patronymic.is_some()),
            ("new_pinfl", w.new_pinfl.is_some()),
        ] {
            if present && !allowed.contains(&name) {
                return Err(fail(name, format!("is not a field of {}", w.kind)));
            }
        }
        let required = |name: &str, v: &Option<String>| -> Result<String, FieldError> {
            v.clone()
                .ok_or_else(|| fail(name, format!("is required for {}", w.kind)))
        };
        let document = |v: &Option<String>| -> Result<String, FieldError> {
            let d = required("document", v)?;
            let b = d.as_bytes();
            if b.len() != 9
                || !b[..2].iter().all(u8::is_ascii_uppercase)
                || !b[2..].iter().all(u8::is_ascii_digit)
            {
                return Err(fail(
                    "document",
                    "two Latin capital letters and seven digits, e.g. AA1234567".into(),
                ));
            }
            Ok(d)
        };
        let kind = match w.kind.as_str() {
            "person.deceased" => {
                let date = required("date", &w.date)?;
                let f = field("date");
                let d = Date::parse(&f, &date).map_err(|r| r.error)?;
                // Today in Tashkent (UTC+5) is tomorrow in UTC for five
                // hours: a day of slack, never more.
                let tomorrow = Date::from_system_time(
                    std::time::SystemTime::now() + std::time::Duration::from_secs(86_400),
                );
                if d > tomorrow {
                    return Err(fail("date", "is in the future".into()));
                }
                if (d.year, d.month, d.day) < checked.birth {
                    return Err(fail(
                        "date",
                        "is before the date of birth the PINFL encodes".into(),
                    ));
                }
                Kind::Deceased { date }
            }
            "document.lost" => Kind::Lost {
                document: document(&w.document)?,
            },
            "document.stolen" => Kind::Stolen {
                document: document(&w.document)?,
            },
            "document.invalidated" => Kind::Invalidated {
                document: document(&w.document)?,
                reason: reason_text(&field("reason"), &required("reason", &w.reason)?)?,
            },
            "person.data_changed" => Kind::DataChanged {
                surname: rules.name(&field("surname"), &required("surname", &w.surname)?)?,
                given_name: rules.name(
                    &field("given_name"),
                    &required("given_name", &w.given_name)?,
                )?,
                patronymic: match &w.patronymic {
                    Some(p) if !p.trim().is_empty() => Some(rules.name(&field("patronymic"), p)?),
                    _ => None,
                },
            },
            _ => {
                let new = required("new_pinfl", &w.new_pinfl)?;
                // Checked like any PINFL, so the refusal quotes a real one.
                let new = rules.pinfl(&field("new_pinfl"), &new)?.digits;
                Kind::PinflChanged { new_pinfl: new }
            }
        };
        Ok(Event {
            id: w.id,
            seq: w.seq,
            pinfl,
            kind,
        })
    }

    /// SHA-256 over the event as parsed (every field, length-prefixed): the
    /// same event sent as other JSON (spacing, field order) is the same
    /// event; another event under a used id is a conflict.
    pub fn body_hash(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        let mut put = |s: &str| {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        };
        put(&self.id);
        put(&self.seq.to_string());
        put(&self.pinfl);
        put(self.kind.name());
        match &self.kind {
            Kind::Deceased { date } => put(date),
            Kind::Lost { document } | Kind::Stolen { document } => put(document),
            Kind::Invalidated { document, reason } => {
                put(document);
                put(reason);
            }
            Kind::DataChanged {
                surname,
                given_name,
                patronymic,
            } => {
                put(surname);
                put(given_name);
                put(patronymic.as_deref().unwrap_or("\u{0}none"));
            }
            Kind::PinflChanged { new_pinfl } => put(new_pinfl),
        }
        h.finalize().to_vec()
    }
}

/// The registry's reason for invalidating a document: free text kept in
/// the audit entry, printable, at most 256 characters.
fn reason_text(field: &str, s: &str) -> Result<String, FieldError> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > 256 || s.chars().any(char::is_control) {
        return Err(FieldError {
            field: field.to_string(),
            rule: "1 to 256 printable characters".into(),
        });
    }
    Ok(s.to_string())
}

//! The person (or employee) a certificate is for, as a request states it, and the
//! checks that decide whether the request may become a subject at all.
//!
//! Rules come from `../shared/domain.md`. Where a fact is unverified (the century
//! encoded in the PINFL's first digit) it is a field of [`IdentityRules`] that
//! configuration can change, not a constant buried in a check.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A validation failure, naming the request field and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct FieldError {
    /// The request field at fault, as the request names it (`pinfl`,
    /// `organization.tin`).
    pub field: String,
    /// The rule broken, in words the requester can act on.
    pub rule: String,
}

fn fail(field: &str, rule: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        rule: rule.into(),
    }
}

/// The organisation an employee's certificate is issued for.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    /// Registered name: free text, at most 64 characters.
    pub name: String,
    /// The organisation's TIN: nine digits, starting with 2 or 3.
    pub tin: String,
    /// The employee's job title; `None` or blank leaves it out.
    #[serde(default)]
    pub title: Option<String>,
}

/// The subject JSON accepted by `muhr issue --subject`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SubjectRequest {
    /// The 14-digit personal identification number; see [`IdentityRules::pinfl`].
    pub pinfl: String,
    /// Family name, as on the identity document.
    pub surname: String,
    /// First name.
    pub given_name: String,
    /// Father's name; `None` or blank for a person who has none.
    #[serde(default)]
    pub patronymic: Option<String>,
    /// The person's own TIN (nine digits, starting with 4 to 7), when known.
    #[serde(default)]
    pub tin: Option<String>,
    /// The employer, for an employee's certificate; `None` for a private person.
    #[serde(default)]
    pub organization: Option<Organization>,
}

/// The checks on a person's data, with the facts they rest on as
/// configuration. A key left out of the configuration takes its default.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdentityRules {
    /// Century of birth by the PINFL's first digit (domain.md marks this unverified).
    #[serde(default = "default_centuries")]
    pub pinfl_centuries: BTreeMap<String, u16>,
    /// Longest accepted name part, in characters.
    #[serde(default = "default_name_max")]
    pub name_max_chars: usize,
}

fn default_centuries() -> BTreeMap<String, u16> {
    [
        ("1", 1800),
        ("2", 1800),
        ("3", 1900),
        ("4", 1900),
        ("5", 2000),
        ("6", 2000),
    ]
    .into_iter()
    .map(|(d, c)| (d.to_string(), c))
    .collect()
}

fn default_name_max() -> usize {
    64
}

impl Default for IdentityRules {
    fn default() -> Self {
        Self {
            pinfl_centuries: default_centuries(),
            name_max_chars: default_name_max(),
        }
    }
}

/// A PINFL that passed every check, with the date of birth it encodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinfl {
    /// The 14 digits, as given.
    pub digits: String,
    /// Date of birth as (year, month, day): a real date, not in the future.
    pub birth: (u16, u8, u8),
}

impl IdentityRules {
    /// Shape, check digit (weights 7, 3, 1, ... mod 10: ICAO 9303), a real date of
    /// birth not in the future, non-zero district and sequence.
    pub fn pinfl(&self, field: &str, s: &str) -> Result<Pinfl, FieldError> {
        if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail(field, "must be exactly 14 digits"));
        }
        let d: Vec<u32> = s.bytes().map(|b| u32::from(b - b'0')).collect();
        let sum: u32 = d[..13]
            .iter()
            .zip([7, 3, 1].iter().cycle())
            .map(|(a, w)| a * w)
            .sum();
        if sum % 10 != d[13] {
            return Err(fail(
                field,
                format!(
                    "check digit is {}, the 7-3-1 rule gives {}",
                    d[13],
                    sum % 10
                ),
            ));
        }
        let century = *self.pinfl_centuries.get(&s[..1]).ok_or_else(|| {
            fail(
                field,
                format!("first digit {} encodes no known sex and century", &s[..1]),
            )
        })?;
        let day = (d[1] * 10 + d[2]) as u8;
        let month = (d[3] * 10 + d[4]) as u8;
        let year = century + (d[5] * 10 + d[6]) as u16;
        if !valid_date(year, month, day) {
            return Err(fail(
                field,
                format!("digits 2-7 ({}) are not a real date of birth", &s[1..7]),
            ));
        }
        // Compared as calendar dates, never through a Unix-time type: those
        // start in 1970, and a PINFL encodes births from the 1800s on.
        if (year, month, day) > today_utc() {
            return Err(fail(field, "the date of birth it encodes is in the future"));
        }
        if &s[7..10] == "000" {
            return Err(fail(field, "district code (digits 8-10) must not be 000"));
        }
        if &s[10..13] == "000" {
            return Err(fail(
                field,
                "sequence number (digits 11-13) must not be 000",
            ));
        }
        Ok(Pinfl {
            digits: s.to_string(),
            birth: (year, month, day),
        })
    }

    /// A name part: letters (any script, incl. the Uzbek ʻ and ʼ), spaces, hyphens,
    /// apostrophes and dots; no control characters; bounded length.
    pub fn name(&self, field: &str, s: &str) -> Result<String, FieldError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(fail(field, "must not be empty"));
        }
        if s.chars().count() > self.name_max_chars {
            return Err(fail(
                field,
                format!("longer than {} characters", self.name_max_chars),
            ));
        }
        if let Some(c) = s.chars().find(|c| {
            !(c.is_alphabetic()
                || matches!(c, ' ' | '-' | '\'' | '.' | 'ʻ' | 'ʼ' | '‘' | '’' | '`'))
        }) {
            return Err(fail(
                field,
                format!("character {c:?} is not allowed in a name"),
            ));
        }
        if !s.chars().any(char::is_alphabetic) {
            return Err(fail(field, "must contain a letter"));
        }
        Ok(s.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// Free text such as an organisation name or a job title: printable, bounded.
    pub fn text(&self, field: &str, s: &str) -> Result<String, FieldError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(fail(field, "must not be empty"));
        }
        if s.chars().count() > 64 {
            return Err(fail(field, "longer than 64 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(fail(field, "control characters are not allowed"));
        }
        Ok(s.to_string())
    }

    /// TIN: 9 digits; individuals start with 4-7, legal entities with 2 or 3.
    /// Its check digit algorithm is not published, so only the shape is checked.
    pub fn tin(&self, field: &str, s: &str, legal_entity: bool) -> Result<String, FieldError> {
        if s.len() != 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail(field, "must be exactly 9 digits"));
        }
        let first = s.as_bytes()[0];
        let ok = if legal_entity {
            matches!(first, b'2' | b'3')
        } else {
            (b'4'..=b'7').contains(&first)
        };
        if !ok {
            let what = if legal_entity {
                "a legal entity's TIN starts with 2 or 3"
            } else {
                "an individual's TIN starts with 4, 5, 6 or 7"
            };
            return Err(fail(field, what));
        }
        Ok(s.to_string())
    }

    /// Checks a request and flattens it into the fields profile templates name.
    pub fn subject_fields(
        &self,
        req: &SubjectRequest,
    ) -> Result<BTreeMap<String, String>, FieldError> {
        let mut f = BTreeMap::new();
        f.insert("pinfl".into(), self.pinfl("pinfl", &req.pinfl)?.digits);
        f.insert("surname".into(), self.name("surname", &req.surname)?);
        f.insert(
            "given_name".into(),
            self.name("given_name", &req.given_name)?,
        );
        if let Some(p) = req.patronymic.as_deref().filter(|p| !p.trim().is_empty()) {
            f.insert("patronymic".into(), self.name("patronymic", p)?);
        }
        if let Some(t) = &req.tin {
            f.insert("tin".into(), self.tin("tin", t, false)?);
        }
        if let Some(o) = &req.organization {
            f.insert(
                "organization.name".into(),
                self.text("organization.name", &o.name)?,
            );
            f.insert(
                "organization.tin".into(),
                self.tin("organization.tin", &o.tin, true)?,
            );
            if let Some(t) = o.title.as_deref().filter(|t| !t.trim().is_empty()) {
                f.insert(
                    "organization.title".into(),
                    self.text("organization.title", t)?,
                );
            }
        }
        Ok(f)
    }
}

/// Today's date in UTC. A birth "today" in Tashkent (UTC+5) may still be
/// tomorrow in UTC for five hours; a PINFL is assigned at birth registration,
/// days later, so the difference never refuses a real person.
fn today_utc() -> (u16, u8, u8) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    civil_from_days((secs / 86_400) as i64)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), for any day count this program will meet.
pub fn civil_from_days(days: i64) -> (u16, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y.clamp(0, i64::from(u16::MAX)) as u16, m, d)
}

fn valid_date(y: u16, m: u8, d: u8) -> bool {
    (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)
}

/// Days in month `m` of year `y`, leap years included. `m` must be 1 to 12:
/// any other value is counted as February.
pub fn days_in_month(y: u16, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        _ => 28,
    }
}

/// Builds a valid PINFL from its first 13 digits (tests and fixtures).
pub fn with_check_digit(first13: &str) -> String {
    let sum: u32 = first13
        .bytes()
        .map(|b| u32::from(b - b'0'))
        .zip([7, 3, 1].iter().cycle())
        .map(|(a, w)| a * w)
        .sum();
    format!("{first13}{}", sum % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinfl_rules() {
        let r = IdentityRules::default();
        let good = with_check_digit("3150585123456");
        assert_eq!(r.pinfl("pinfl", &good).unwrap().birth, (1985, 5, 15));
        let last = good.as_bytes()[13] - b'0';
        let bad = format!("{}{}", &good[..13], (last + 1) % 10);
        assert!(
            r.pinfl("pinfl", &bad)
                .unwrap_err()
                .rule
                .contains("check digit")
        );
        assert!(
            r.pinfl("pinfl", "123")
                .unwrap_err()
                .rule
                .contains("14 digits")
        );
        let feb30 = with_check_digit("3300285123456");
        assert!(
            r.pinfl("pinfl", &feb30)
                .unwrap_err()
                .rule
                .contains("date of birth")
        );
        let future = with_check_digit("6010199123456");
        assert!(
            r.pinfl("pinfl", &future)
                .unwrap_err()
                .rule
                .contains("future")
        );
        let district0 = with_check_digit("3150585000456");
        assert!(
            r.pinfl("pinfl", &district0)
                .unwrap_err()
                .rule
                .contains("district")
        );
        let century = with_check_digit("9150585123456");
        assert!(
            r.pinfl("pinfl", &century)
                .unwrap_err()
                .rule
                .contains("first digit")
        );
    }

    /// The 1970 floor: every one of these people was refused once, because
    /// the date went through a Unix-time type.
    #[test]
    fn pinfl_births_before_1970_and_across_centuries_are_accepted() {
        let r = IdentityRules::default();
        for (pinfl, birth) in [
            ("31505651260019", (1965, 5, 15)),
            ("42902481260013", (1948, 2, 29)),
        ] {
            assert_eq!(r.pinfl("pinfl", pinfl).unwrap().birth, birth, "{pinfl}");
        }
        for (first13, birth) in [
            ("3010125172626", (1925, 1, 1)),
            ("4290248172600", (1948, 2, 29)),
            ("3311269173012", (1969, 12, 31)),
            ("4311299172619", (1999, 12, 31)),
            ("5010100172600", (2000, 1, 1)),
            ("6290200172600", (2000, 2, 29)),
            ("5290224172600", (2024, 2, 29)),
            ("1311299172600", (1899, 12, 31)),
            ("2010100172600", (1800, 1, 1)),
        ] {
            let p = with_check_digit(first13);
            assert_eq!(r.pinfl("pinfl", &p).unwrap().birth, birth, "{p}");
        }
        // 1900 and 2100 are not leap years; 2000 is.
        for bad in ["3290200172600", "5290297172600"] {
            let p = with_check_digit(bad);
            if bad.starts_with('5') {
                // 2097 is in the future as well as not a leap year: either
                // rule refuses it, and a date that does not exist is named.
                assert!(r.pinfl("pinfl", &p).is_err(), "{p}");
            } else {
                assert!(
                    r.pinfl("pinfl", &p).unwrap_err().rule.contains("real date"),
                    "{p}"
                );
            }
        }
    }

    #[test]
    fn civil_from_days_agrees_with_the_time_crate_from_1800_to_2200() {
        let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1).unwrap();
        for days in -62_000..84_000i64 {
            let d = epoch + time::Duration::days(days);
            assert_eq!(
                civil_from_days(days),
                (d.year() as u16, u8::from(d.month()), d.day()),
                "day {days}"
            );
        }
    }

    /// An independent statement of the rule (ICAO 9303 weights written out,
    /// dates judged by the `time` crate), against the one Muhr uses, over
    /// random PINFLs of every century digit, real and impossible dates.
    #[test]
    fn pinfl_rule_agrees_with_an_independent_implementation_over_random_pinfls() {
        fn independent(s: &str) -> Option<(i32, u8, u8)> {
            let b = s.as_bytes();
            if b.len() != 14 || !b.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let v = |i: usize| i32::from(b[i] - b'0');
            let weights = [7, 3, 1, 7, 3, 1, 7, 3, 1, 7, 3, 1, 7];
            let check: i32 = (0..13).map(|i| v(i) * weights[i]).sum::<i32>() % 10;
            if check != v(13) {
                return None;
            }
            let century = match v(0) {
                1 | 2 => 1800,
                3 | 4 => 1900,
                5 | 6 => 2000,
                _ => return None,
            };
            let month = time::Month::try_from((v(3) * 10 + v(4)) as u8).ok()?;
            let date = time::Date::from_calendar_date(
                century + v(5) * 10 + v(6),
                month,
                (v(1) * 10 + v(2)) as u8,
            )
            .ok()?;
            if date > time::OffsetDateTime::now_utc().date() {
                return None;
            }
            if &s[7..10] == "000" || &s[10..13] == "000" {
                return None;
            }
            Some((date.year(), u8::from(date.month()), date.day()))
        }
        // splitmix64, seeded from the clock and printed so a failure can be
        // replayed with MUHR_PINFL_SEED.
        let seed = std::env::var("MUHR_PINFL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("MUHR_PINFL_SEED={seed}");
        let mut state = seed;
        let mut next = move |n: u64| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        };
        let r = IdentityRules::default();
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..200_000 {
            // Mostly plausible dates (day 1-31, month 1-12) so that many pass;
            // some wholly random digits; a correct check digit most of the time.
            let first13 = if next(4) == 0 {
                (0..13).map(|_| char::from(b'0' + next(10) as u8)).collect()
            } else {
                format!(
                    "{}{:02}{:02}{:02}{:03}{:03}",
                    1 + next(7),
                    1 + next(31),
                    1 + next(12),
                    next(100),
                    next(1000),
                    next(1000)
                )
            };
            let pinfl = if next(5) == 0 {
                format!("{first13}{}", next(10))
            } else {
                with_check_digit(&first13)
            };
            let ours = r.pinfl("pinfl", &pinfl).ok().map(|p| {
                let (y, m, d) = p.birth;
                (i32::from(y), m, d)
            });
            assert_eq!(ours, independent(&pinfl), "{pinfl} (seed {seed})");
            if ours.is_some() {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both outcomes must be common, or the test proves little.
        assert!(
            accepted > 50_000 && refused > 50_000,
            "{accepted} {refused}"
        );
    }

    #[test]
    fn names_and_tins() {
        let r = IdentityRules::default();
        assert_eq!(r.name("surname", "  Oʻktamov ").unwrap(), "Oʻktamov");
        assert_eq!(r.name("surname", "ИВАНОВ").unwrap(), "ИВАНОВ");
        assert!(r.name("surname", "").is_err());
        assert!(r.name("surname", "Ivan\u{0}").is_err());
        assert!(r.name("surname", "R2D2").is_err());
        assert!(r.name("surname", &"A".repeat(65)).is_err());
        assert!(r.tin("tin", "412345678", false).is_ok());
        assert!(r.tin("tin", "212345678", false).is_err());
        assert!(r.tin("organization.tin", "212345678", true).is_ok());
        assert!(r.tin("organization.tin", "21234567", true).is_err());
    }

    #[test]
    fn unknown_subject_fields_are_refused() {
        let e = serde_json::from_str::<SubjectRequest>(
            r#"{"pinfl":"1","surname":"A","given_name":"B","nickname":"C"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("nickname"));
    }
}

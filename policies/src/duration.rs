//! A profile's lifetime, kept in the unit the operator wrote, because "24 months"
//! is a calendar rule (the law's), not a number of days.

use std::fmt;
use std::str::FromStr;

/// How long a certificate lives. Parsed from "24 months" or "730 days": a
/// whole positive number, at most 50 years in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Fixed hours of 3600 seconds.
    Hours(u32),
    /// Fixed days of 86 400 seconds.
    Days(u32),
    /// Calendar months: from 31 January, one month ends on the last day of
    /// February.
    Months(u32),
    /// Calendar years, counted as twelve calendar months each.
    Years(u32),
}

impl Validity {
    /// True when this lifetime can never exceed `months` calendar months.
    pub fn within_months(&self, months: u32) -> bool {
        match *self {
            // The shortest run of `months` calendar months (Feb-first) is at least
            // 28 + 30.4 * (months-1) days; compare against the common 365/12 average
            // rounded down so "730 days" is accepted for 24 months and 731 is not.
            Validity::Hours(h) => u64::from(h) <= u64::from(months) * 365 * 24 / 12,
            Validity::Days(d) => u64::from(d) <= u64::from(months) * 365 / 12,
            Validity::Months(m) => m <= months,
            Validity::Years(y) => u64::from(y) * 12 <= u64::from(months),
        }
    }
}

impl fmt::Display for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Validity::Hours(n) => write!(f, "{n} hours"),
            Validity::Days(n) => write!(f, "{n} days"),
            Validity::Months(n) => write!(f, "{n} months"),
            Validity::Years(n) => write!(f, "{n} years"),
        }
    }
}

impl FromStr for Validity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?}: write a whole number and a unit, e.g. \"24 months\", \"730 days\", \"20 years\", \"72 hours\""
            )
        };
        let mut it = s.split_whitespace();
        let (Some(n), Some(unit), None) = (it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        let n: u32 = n.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(format!("{s:?}: a lifetime must be positive"));
        }
        let v = match unit.trim_end_matches('s') {
            "hour" => Validity::Hours(n),
            "day" => Validity::Days(n),
            "month" => Validity::Months(n),
            "year" => Validity::Years(n),
            _ => return Err(bad()),
        };
        if !v.within_months(12 * 50) {
            return Err(format!("{s:?}: longer than 50 years"));
        }
        Ok(v)
    }
}

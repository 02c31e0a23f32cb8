//! The pilot report: per district and in total, what the ministry weighs before
//! a nationwide rollout. Built from `card_outcomes`, which holds no personal data.

use std::collections::BTreeMap;

use muhr_store::outcomes::Outcome;
use serde::Serialize;

/// One row of the pilot report: a district's figures, or the total.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Figures {
    /// SOATO code; `unknown` for refusals naming no known district, `total`
    /// on the total row.
    pub district: String,
    /// The district's name; empty when it has none, and on the total row.
    pub name: String,
    /// Every answered card job: issued, refused or failed (a replay is not a new request).
    pub cards_requested: u64,
    /// Card jobs that got all their certificates.
    pub cards_issued: u64,
    /// Certificates on those cards.
    pub certificates_issued: u64,
    /// Refused card jobs per reason, such as `not in pilot` or
    /// `invalid person.pinfl`.
    pub refusals: BTreeMap<String, u64>,
    /// Card jobs neither issued nor refused: a conflict, the database or
    /// key store down, a refusal by the CA, an internal error.
    pub failures: u64,
    /// Issuance latency of the cards issued, milliseconds.
    pub p50_ms: Option<f64>,
    /// As `p50_ms`, at the 99th percentile. Both are None when no card was
    /// issued.
    pub p99_ms: Option<f64>,
    #[serde(skip)]
    latencies: Vec<i64>,
}

impl Figures {
    fn add(&mut self, o: &Outcome) {
        self.cards_requested += 1;
        match o.outcome.as_str() {
            "issued" => {
                self.cards_issued += 1;
                self.certificates_issued += o.certificates.max(0) as u64;
                self.latencies.push(o.latency_us);
            }
            "refused" => {
                *self
                    .refusals
                    .entry(o.reason.clone().unwrap_or_default())
                    .or_default() += 1
            }
            _ => self.failures += 1,
        }
    }

    fn finish(&mut self) {
        self.latencies.sort_unstable();
        self.p50_ms = percentile(&self.latencies, 50.0);
        self.p99_ms = percentile(&self.latencies, 99.0);
    }

    /// Refusals of every reason together: the CSV's `refusals` column.
    pub fn refusals_total(&self) -> u64 {
        self.refusals.values().sum()
    }
}

/// Nearest-rank percentile, in milliseconds.
fn percentile(sorted_us: &[i64], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let v = sorted_us[rank.clamp(1, sorted_us.len()) - 1];
    Some((v as f64 / 1000.0 * 10.0).round() / 10.0)
}

/// The pilot report over a period, as `muhr report pilot` prints it (CSV
/// or JSON).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// The period's first day, as the caller gave it (YYYY-MM-DD).
    pub from: String,
    /// The period's last day, as the caller gave it (YYYY-MM-DD).
    pub to: String,
    /// One row per district with an answered card job, by SOATO code.
    pub districts: Vec<Figures>,
    /// All districts together.
    pub total: Figures,
}

/// `name` gives a district's name for its code (`unknown` has none).
pub fn build(
    from: &str,
    to: &str,
    outcomes: &[Outcome],
    name: impl Fn(&str) -> Option<String>,
) -> Report {
    let mut by: BTreeMap<String, Figures> = BTreeMap::new();
    let mut total = Figures {
        district: "total".into(),
        ..Default::default()
    };
    for o in outcomes {
        by.entry(o.district.clone())
            .or_insert_with(|| Figures {
                district: o.district.clone(),
                name: name(&o.district).unwrap_or_default(),
                ..Default::default()
            })
            .add(o);
        total.add(o);
    }
    let mut districts: Vec<Figures> = by.into_values().collect();
    for d in &mut districts {
        d.finish();
    }
    total.finish();
    Report {
        from: from.into(),
        to: to.into(),
        districts,
        total,
    }
}

impl Report {
    /// One row per district and a total row; refusal reasons become columns.
    pub fn csv(&self) -> String {
        let mut reasons: Vec<&String> = self.total.refusals.keys().collect();
        reasons.sort();
        let mut out = String::from(
            "district,name,cards_requested,cards_issued,certificates_issued,refusals,failures,p50_ms,p99_ms",
        );
        for r in &reasons {
            out.push_str(&format!(",refused: {}", csv_field(r)));
        }
        out.push('\n');
        let ms = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for f in self.districts.iter().chain(std::iter::once(&self.total)) {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}",
                csv_field(&f.district),
                csv_field(&f.name),
                f.cards_requested,
                f.cards_issued,
                f.certificates_issued,
                f.refusals_total(),
                f.failures,
                ms(f.p50_ms),
                ms(f.p99_ms)
            ));
            for r in &reasons {
                out.push_str(&format!(",{}", f.refusals.get(*r).copied().unwrap_or(0)));
            }
            out.push('\n');
        }
        out
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(district: &str, outcome: &str, reason: Option<&str>, ms: i64) -> Outcome {
        Outcome {
            at: 0,
            district: district.into(),
            outcome: outcome.into(),
            reason: reason.map(Into::into),
            certificates: if outcome == "issued" { 2 } else { 0 },
            latency_us: ms * 1000,
        }
    }

    #[test]
    fn figures_per_district_and_total() {
        let mut rows: Vec<Outcome> = (1..=100).map(|i| o("1726269", "issued", None, i)).collect();
        rows.push(o("1726269", "refused", Some("invalid person.pinfl"), 1));
        rows.push(o("1718401", "refused", Some("not in pilot"), 1));
        rows.push(o("1726266", "failed", Some("internal"), 1));
        let r = build("a", "b", &rows, |c| {
            (c == "1726269").then(|| "Chilonzor".into())
        });
        assert_eq!(r.districts.len(), 3);
        let ch = r
            .districts
            .iter()
            .find(|d| d.district == "1726269")
            .unwrap();
        assert_eq!(ch.name, "Chilonzor");
        assert_eq!(ch.cards_requested, 101);
        assert_eq!(ch.cards_issued, 100);
        assert_eq!(ch.certificates_issued, 200);
        assert_eq!(ch.p50_ms, Some(50.0));
        assert_eq!(ch.p99_ms, Some(99.0));
        assert_eq!(r.total.cards_requested, 103);
        assert_eq!(r.total.failures, 1);
        assert_eq!(r.total.refusals.get("not in pilot"), Some(&1));
        let csv = r.csv();
        assert!(
            csv.lines()
                .next()
                .unwrap()
                .ends_with(",refused: invalid person.pinfl,refused: not in pilot")
        );
        assert!(
            csv.contains("\ntotal,,103,100,200,2,1,50,99,1,1\n"),
            "{csv}"
        );
    }
}

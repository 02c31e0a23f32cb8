//! Counters and a latency histogram for `/metrics`, in the Prometheus text format.
//! Kept in-process and lock-light: issuance touches them once per certificate.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS_SECONDS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];

/// A latency histogram with fixed buckets from 50 µs to 1 s, rendered in
/// the Prometheus histogram format.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_SECONDS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Counts one duration into every bucket it fits (buckets are cumulative).
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS_SECONDS.iter().enumerate() {
            if s <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS_SECONDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// This process's issuance counters ([`crate::Ca::metrics`]). Nothing is
/// persisted: they start from zero when the process does.
#[derive(Default)]
pub struct Metrics {
    issued: Mutex<BTreeMap<String, u64>>,
    refused: Mutex<BTreeMap<String, u64>>,
    /// Time per signature in [`crate::Ca::issue_many`] and the calls built on
    /// it; recovery and the ceremony are not timed.
    pub signing: Histogram,
    /// Request to committed certificate; for a group, its time divided by its size.
    pub issuance: Histogram,
}

impl Metrics {
    /// Counts one certificate issued under `profile` (recovered ones included).
    pub fn issued(&self, profile: &str) {
        *self
            .issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(profile.to_string())
            .or_default() += 1;
    }

    /// Counts one request refused, by the request field that failed.
    pub fn refused(&self, field: &str) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(field.to_string())
            .or_default() += 1;
    }

    /// All of it in the Prometheus text format, for `/metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP muhr_certificates_issued_total Certificates issued by this process, by profile.\n# TYPE muhr_certificates_issued_total counter"
        );
        for (p, n) in self.issued.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "muhr_certificates_issued_total{{profile=\"{p}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP muhr_issuance_refused_total Requests refused, by the field that failed.\n# TYPE muhr_issuance_refused_total counter"
        );
        for (f, n) in self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(out, "muhr_issuance_refused_total{{field=\"{f}\"}} {n}");
        }
        self.signing.render(
            "muhr_signing_seconds",
            "Time the key store takes to sign one certificate.",
            &mut out,
        );
        self.issuance.render(
            "muhr_issuance_seconds",
            "Time from request to committed certificate.",
            &mut out,
        );
        out
    }
}

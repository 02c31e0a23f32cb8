//! Token buckets keyed by a string (a PINFL, a client address). Each node
//! counts on its own: with N nodes behind a balancer a caller gets up to N
//! times the configured rate, which these limits (abuse brakes, not quotas)
//! tolerate; billing-grade counting is the usage meter's job.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys remembered; beyond it, full buckets (idle callers) are dropped.
const MAX_KEYS: usize = 100_000;

pub struct RateLimiter {
    capacity: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `count` acts per `period`, in bursts of up to `count`. A count of 0
    /// turns the limit off.
    pub fn new(count: u32, period: Duration) -> Self {
        Self {
            capacity: count as f64,
            per_second: count as f64 / period.as_secs_f64().max(1e-9),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long until one is free.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.capacity == 0.0 {
            return Ok(());
        }
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() >= MAX_KEYS && !b.contains_key(key) {
            let (cap, rate) = (self.capacity, self.per_second);
            b.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < cap
            });
        }
        let (tokens, at) = b.entry(key.to_string()).or_insert((self.capacity, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_second)
            .min(self.capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((1.0 - *tokens) / self.per_second).max(0.001),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills() {
        let l = RateLimiter::new(3, Duration::from_secs(60));
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.take("a", t).is_ok());
        }
        let wait = l.take("a", t).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(l.take("b", t).is_ok(), "keys are independent");
        assert!(l.take("a", t + Duration::from_secs(20)).is_ok());
        assert!(l.take("a", t + Duration::from_secs(21)).is_err());
        assert!(
            RateLimiter::new(0, Duration::from_secs(1))
                .take("x", t)
                .is_ok()
        );
    }
}

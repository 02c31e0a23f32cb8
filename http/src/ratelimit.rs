//! Token buckets keyed by a string (a PINFL, a client address). Each node
//! counts on its own: with N nodes behind a balancer a caller gets up to N
//! times the configured rate, which these limits (abuse brakes, not quotas)
//! tolerate; billing-grade counting is the usage meter's job.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The unit one client is counted in: an IPv4 address, or an IPv6 /64 (one
/// subscriber's allocation: counting its 2^64 addresses apart would make any
/// per-address limit meaningless). IPv4-mapped IPv6 counts as IPv4.
pub fn client_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Most keys remembered, over all shards.
const MAX_KEYS: usize = 100_000;
/// Independent locks: callers with different keys rarely wait for each other.
const SHARDS: usize = 64;

struct Shard {
    buckets: HashMap<String, (f64, Instant)>,
    swept: Instant,
}

/// Memory and time stay bounded whatever callers do:
/// - each shard drops the buckets that have filled up again (idle callers)
///   once per refill time, so the map shrinks back after a burst of keys,
///   at a cost spread over that time instead of paid on every request;
/// - a shard that is full of active callers makes room for a new key by
///   forgetting one other key (whichever the table yields first). That is
///   lenient: the forgotten caller starts again with a full bucket. The
///   strict alternative, making newcomers share one bucket, would let one
///   flood of fresh addresses refuse every citizen not yet in the table.
///   No request ever scans the map.
pub struct RateLimiter {
    capacity: f64,
    per_second: f64,
    /// How long an empty bucket takes to fill.
    refill: Duration,
    per_shard: usize,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
}

impl RateLimiter {
    /// `count` acts per `period`, in bursts of up to `count`. A count of 0
    /// turns the limit off.
    pub fn new(count: u32, period: Duration) -> Self {
        Self::with_max_keys(count, period, MAX_KEYS)
    }

    /// As [`RateLimiter::new`], remembering at most about `max_keys` keys.
    pub fn with_max_keys(count: u32, period: Duration, max_keys: usize) -> Self {
        let now = Instant::now();
        Self {
            capacity: count as f64,
            per_second: count as f64 / period.as_secs_f64().max(1e-9),
            refill: period.max(Duration::from_secs(1)),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        swept: now,
                    })
                })
                .collect(),
        }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).buckets.len())
            .sum()
    }

    /// True when no key is remembered now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes one token for `key`, or says how long until one is free.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.capacity == 0.0 {
            return Ok(());
        }
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        let mut shard = self.shards[i].lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(shard.swept) >= self.refill {
            let (cap, rate) = (self.capacity, self.per_second);
            shard.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < cap
            });
            shard.swept = now;
        }
        if !shard.buckets.contains_key(key)
            && shard.buckets.len() >= self.per_shard
            && let Some(other) = shard.buckets.keys().next().cloned()
        {
            shard.buckets.remove(&other);
        }
        let bucket = shard
            .buckets
            .entry(key.to_string())
            .or_insert((self.capacity, now));
        self.spend(bucket, now)
    }

    fn spend(&self, bucket: &mut (f64, Instant), now: Instant) -> Result<(), Duration> {
        let (tokens, at) = bucket;
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

    #[test]
    fn a_flood_of_fresh_addresses_neither_grows_the_table_nor_locks_out_newcomers() {
        let l = RateLimiter::with_max_keys(5, Duration::from_secs(60), 640);
        let t = Instant::now();
        // Far more distinct keys than the table holds: memory stays bounded.
        for n in 0..100_000 {
            let _ = l.take(&format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255), t);
        }
        assert!(l.len() <= 640, "{}", l.len());
        // A citizen arriving during the flood is served, not refused for
        // the flood's sake.
        assert!(l.take("citizen", t).is_ok());
        // One caller hammering is still limited while the flood goes on.
        let mut refused = 0;
        for n in 0..50 {
            let _ = l.take(&format!("flood-{n}"), t);
            if l.take("hammer", t).is_err() {
                refused += 1;
            }
        }
        assert!(refused > 0, "the hammering caller was never limited");
        // Idle callers are forgotten once their buckets have filled again.
        let later = t + Duration::from_secs(61);
        for n in 0..64 * 16 {
            let _ = l.take(&format!("fresh-{n}"), later);
        }
        let kept = l.len();
        assert!(kept <= 640, "{kept}");
        for n in 0..700 {
            assert!(
                !l.shards
                    .iter()
                    .any(|s| s.lock().unwrap().buckets.contains_key(&format!(
                        "10.{}.{}.{}",
                        n >> 16,
                        (n >> 8) & 255,
                        n & 255
                    ))),
                "an idle caller was remembered"
            );
        }
    }
}

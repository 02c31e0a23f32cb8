//! `[notices]`: where notices go, how they are signed, and how hard Muhr
//! tries.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[notices]` of the configuration file. Without it notices are still
/// recorded (and shown to citizens) but nobody delivers them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticesConfig {
    /// The notification system's endpoint: `https://`, or `http://` only to
    /// this machine (notices carry PINFLs). It may carry `user:password@`,
    /// which is sent as HTTP Basic authentication and never logged.
    pub webhook_url: String,
    /// CA certificates (PEM) trusted for the webhook's TLS besides the
    /// system's, for a notification system under a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Sign with HMAC-SHA256 under the secret in this file (at least 32
    /// bytes; a trailing newline is not part of it). Refused when others can
    /// read it. Exactly one of `hmac_key_file` and `es256_key`.
    #[serde(default)]
    pub hmac_key_file: Option<PathBuf>,
    /// Sign with ES256 under this key of the key store (ECDSA P-256; made on
    /// first use, its public half printed by `muhr notices public-key`).
    #[serde(default)]
    pub es256_key: Option<String>,
    /// The key id sent in `X-Muhr-Key-Id`, so the receiver can hold two keys
    /// while one replaces the other. Default: `hmac-1` for HMAC, the key's
    /// RFC 7638 thumbprint for ES256.
    #[serde(default)]
    pub key_id: Option<String>,
    /// Days before notAfter at which the holder is told (default 30 and 7).
    #[serde(default = "default_expiry_days")]
    pub expiry_days: Vec<u32>,
    /// Attempts before a notice is left `failed` for an operator (default 12).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait after the first failed attempt; each further failure doubles it
    /// (default 30 s)...
    #[serde(default = "default_backoff_min")]
    pub backoff_min_seconds: u64,
    /// ...up to this (default 6 hours).
    #[serde(default = "default_backoff_max")]
    pub backoff_max_seconds: u64,
    /// A delivery not answered within this counts as failed (default 10 s).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    /// Connecting to the webhook may take this long (default 5 s).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// How often the worker looks for due notices when it found none
    /// (default 5 s).
    #[serde(default = "default_poll")]
    pub poll_seconds: u64,
    /// Notices taken and sent at once (default 32).
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// How often the expiry scan runs (default 60 minutes).
    #[serde(default = "default_scan_minutes")]
    pub scan_minutes: u64,
}

fn default_expiry_days() -> Vec<u32> {
    vec![30, 7]
}
fn default_max_attempts() -> u32 {
    12
}
fn default_backoff_min() -> u64 {
    30
}
fn default_backoff_max() -> u64 {
    6 * 3600
}
fn default_request_timeout() -> u64 {
    10
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_poll() -> u64 {
    5
}
fn default_batch() -> u32 {
    32
}
fn default_scan_minutes() -> u64 {
    60
}

/// The expiry thresholds used when `[notices]` is absent: certificates are
/// still announced to their holders through the citizens' API.
pub const DEFAULT_EXPIRY_DAYS: [u32; 2] = [30, 7];

/// The expiry scan's period when `[notices]` is absent.
pub const DEFAULT_SCAN: Duration = Duration::from_secs(3600);

impl NoticesConfig {
    /// A configuration with every default, for `webhook_url`, signed with
    /// the HMAC key in `hmac_key_file`.
    pub fn new(webhook_url: &str, hmac_key_file: PathBuf) -> Self {
        Self {
            webhook_url: webhook_url.to_string(),
            ca_file: None,
            hmac_key_file: Some(hmac_key_file),
            es256_key: None,
            key_id: None,
            expiry_days: default_expiry_days(),
            max_attempts: default_max_attempts(),
            backoff_min_seconds: default_backoff_min(),
            backoff_max_seconds: default_backoff_max(),
            request_timeout_seconds: default_request_timeout(),
            connect_timeout_seconds: default_connect_timeout(),
            poll_seconds: default_poll(),
            batch: default_batch(),
            scan_minutes: default_scan_minutes(),
        }
    }

    /// Refuses what cannot work, naming the key (`notices.KEY`). The URL's
    /// password never appears in the message.
    pub fn validate(&self) -> Result<(), String> {
        crate::worker::Target::parse(&self.webhook_url)?;
        match (&self.hmac_key_file, &self.es256_key) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(
                    "notices: set exactly one of hmac_key_file and es256_key (how notices are signed)"
                        .into(),
                );
            }
        }
        if let Some(id) = &self.key_id
            && (id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err("notices.key_id: 1 to 128 printable ASCII characters".into());
        }
        if self.expiry_days.is_empty()
            || self.expiry_days.len() > 10
            || self.expiry_days.iter().any(|d| !(1..=365).contains(d))
        {
            return Err("notices.expiry_days: 1 to 10 thresholds, each 1 to 365 days".into());
        }
        let range = |name: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("notices.{name}: between {lo} and {hi}"))
            }
        };
        range("max_attempts", u64::from(self.max_attempts), 1, 1000)?;
        range("backoff_min_seconds", self.backoff_min_seconds, 1, 86_400)?;
        range(
            "backoff_max_seconds",
            self.backoff_max_seconds,
            self.backoff_min_seconds,
            7 * 86_400,
        )?;
        range(
            "request_timeout_seconds",
            self.request_timeout_seconds,
            1,
            300,
        )?;
        range(
            "connect_timeout_seconds",
            self.connect_timeout_seconds,
            1,
            300,
        )?;
        range("poll_seconds", self.poll_seconds, 1, 3600)?;
        range("batch", u64::from(self.batch), 1, 1000)?;
        range("scan_minutes", self.scan_minutes, 1, 24 * 60)?;
        Ok(())
    }

    /// How long a worker holds the notices it took: longer than any one
    /// delivery can take, so that a live worker's notice is never taken by
    /// another; a dead worker's come back after this.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds + self.connect_timeout_seconds + 60)
    }

    /// The wait before attempt `attempts + 1` after `attempts` failed ones:
    /// `backoff_min_seconds` doubled per further failure, at most
    /// `backoff_max_seconds`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(40);
        let secs = self
            .backoff_min_seconds
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_max_seconds);
        Duration::from_secs(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<NoticesConfig, String> {
        let text = format!(
            "webhook_url = \"https://notify.example.uz/hook\"\nhmac_key_file = \"k\"\n{extra}"
        );
        let c: NoticesConfig = toml_like(&text)?;
        c.validate().map(|_| c)
    }

    /// The crate has no TOML parser of its own: the fields above are read
    /// the way the binary's configuration reads them, through serde, here
    /// from JSON built out of `key = value` lines.
    fn toml_like(text: &str) -> Result<NoticesConfig, String> {
        let mut map = serde_json::Map::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line.split_once(" = ").ok_or("bad line")?;
            let v: serde_json::Value = serde_json::from_str(v).map_err(|e| e.to_string())?;
            map.insert(k.trim().to_string(), v);
        }
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_refusals() {
        let c = config("").unwrap();
        assert_eq!(c.expiry_days, vec![30, 7]);
        assert_eq!(c.max_attempts, 12);
        assert!(config("es256_key = \"k\"").is_err(), "two signing keys");
        assert!(config("expiry_days = []").is_err());
        assert!(config("expiry_days = [0]").is_err());
        assert!(config("backoff_max_seconds = 1").is_err());
        assert!(config("surprise = 1").is_err(), "unknown keys are refused");
        let plain = NoticesConfig::new("http://notify.example.uz/hook", "k".into());
        assert!(plain.validate().is_err(), "plain http off this machine");
        let local = NoticesConfig::new("http://127.0.0.1:9/hook", "k".into());
        assert!(local.validate().is_ok());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut c = NoticesConfig::new("https://n.example/h", "k".into());
        c.backoff_min_seconds = 30;
        c.backoff_max_seconds = 100;
        let waits: Vec<u64> = (1..=5).map(|a| c.backoff(a).as_secs()).collect();
        assert_eq!(waits, [30, 60, 100, 100, 100]);
        assert_eq!(c.backoff(u32::MAX).as_secs(), 100);
    }
}

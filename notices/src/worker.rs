//! Delivery: take due notices under a lease, POST each to the webhook,
//! record the answer; and the periodic expiry scan.

use std::sync::Arc;
use std::time::Duration;

use muhr_store::notices::Notice;
use muhr_store::{Store, StoreError};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::{NoticesConfig, Signer};

/// The webhook: its URL without the user information, which goes into an
/// `Authorization: Basic` header instead, and a form of it safe for logs.
pub(crate) struct Target {
    url: reqwest::Url,
    basic: Option<(String, Option<Zeroizing<String>>)>,
    shown: String,
}

impl Target {
    /// Refuses a URL that is not `https://` (or `http://` to this machine).
    /// Messages show the URL without its user information.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut url = reqwest::Url::parse(text).map_err(|e| {
            format!(
                "notices.webhook_url {:?}: {e}",
                muhr_store::redact::redact(text)
            )
        })?;
        let basic = (!url.username().is_empty()).then(|| {
            (
                percent_decode(url.username()).to_string(),
                url.password().map(percent_decode),
            )
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        // Logs name the endpoint, never its query (which may hold a token).
        let shown = format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        ) + url.path();
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(format!(
                    "notices.webhook_url {shown}: must be https (plain http only to this machine): \
                     notices carry PINFLs"
                ));
            }
        }
        if url.host().is_none() {
            return Err(format!("notices.webhook_url {shown}: no host"));
        }
        Ok(Self { url, basic, shown })
    }
}

/// A percent-encoded URL component decoded (user names and passwords may
/// hold `@`, `:` or `/` that way); invalid sequences are kept as written.
fn percent_decode(s: &str) -> Zeroizing<String> {
    let b = s.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(b.len()));
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    Zeroizing::new(String::from_utf8_lossy(&out).into_owned())
}

/// What one round of [`Worker::deliver_due`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Accepted by the receiver (2xx) and marked delivered.
    pub delivered: usize,
    /// Refused, timed out or unreachable: tried again after the backoff.
    pub retrying: usize,
    /// Out of attempts: left `failed` for an operator.
    pub failed: usize,
}

/// The delivery worker. Cheap to clone: clones share one HTTP client.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    http: reqwest::Client,
    target: Target,
    signer: Signer,
    config: NoticesConfig,
    /// This worker's name on its leases: random, so two processes (or two
    /// workers of one) never take each other's leases for their own.
    owner: String,
}

/// The notice as the receiver gets it: nothing beyond what the notice holds.
#[derive(serde::Serialize)]
struct Message<'a> {
    id: &'a str,
    kind: &'a str,
    pinfl: &'a str,
    serial: Option<&'a str>,
    reason: Option<&'a str>,
    date: &'a str,
    created_at: i64,
}

/// `key` as a header value: printable ASCII as it is, anything else (and
/// `%`) percent-encoded, so a registry event id in any script still fits.
fn header_safe(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An error's text and its causes, without the URL (reqwest names it) and
/// with any password masked: it is logged and stored.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    muhr_store::redact::redact(&text)
}

impl Worker {
    /// Checks `config` and makes the HTTP client (no redirects: a 3xx is a
    /// failed attempt, never a notice sent somewhere else).
    pub fn new(store: Store, config: NoticesConfig, signer: Signer) -> Result<Self, String> {
        config.validate()?;
        let target = Target::parse(&config.webhook_url)?;
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.request_timeout_seconds))
            .connect_timeout(Duration::from_secs(config.connect_timeout_seconds));
        if let Some(f) = &config.ca_file {
            let pem =
                std::fs::read(f).map_err(|e| format!("notices.ca_file {}: {e}", f.display()))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("notices.ca_file {}: {e}", f.display()))?
            {
                http = http.add_root_certificate(c);
            }
        }
        let mut id = [0u8; 8];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| "random generator failed")?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                http: http.build().map_err(|e| format!("HTTP client: {e}"))?,
                target,
                signer,
                config,
                owner: format!("notices-{}-{}", std::process::id(), hex::encode(id)),
            }),
        })
    }

    /// The webhook as logs show it: no user information, no query.
    pub fn endpoint(&self) -> &str {
        &self.inner.target.shown
    }

    /// The settings it runs with.
    pub fn config(&self) -> &NoticesConfig {
        &self.inner.config
    }

    /// Takes up to `batch` due notices and sends them side by side; returns
    /// what became of them. Fails only when the database does (the notices
    /// taken then come back when their lease runs out).
    pub async fn deliver_due(&self) -> Result<Outcome, StoreError> {
        let c = &self.inner.config;
        let claimed = self
            .inner
            .store
            .claim_notices(
                &self.inner.owner,
                i64::from(c.batch),
                c.lease().as_secs() as i64,
            )
            .await?;
        let mut tasks = tokio::task::JoinSet::new();
        for n in claimed {
            let w = self.clone();
            tasks.spawn(async move { w.deliver(n).await });
        }
        let mut out = Outcome::default();
        let mut first_error = None;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(Some(true))) => out.delivered += 1,
                Ok(Ok(Some(false))) => out.retrying += 1,
                Ok(Ok(None)) => out.failed += 1,
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => tracing::error!(error = %e, "a notice delivery task failed"),
            }
        }
        match first_error {
            Some(e) if out == Outcome::default() => Err(e),
            Some(e) => {
                tracing::warn!(error = %e, "recording a notice's delivery failed; it is sent again after its lease");
                Ok(out)
            }
            None => Ok(out),
        }
    }

    /// Sends one notice and records the answer: `Some(true)` delivered,
    /// `Some(false)` to be retried, `None` failed for good.
    async fn deliver(&self, n: Notice) -> Result<Option<bool>, StoreError> {
        let inner = &self.inner;
        let result = self.send(&n).await;
        let store = &inner.store;
        match result {
            Ok(()) => {
                if !store.notice_delivered(&n.key, &inner.owner).await? {
                    // Our lease ran out and another worker holds it now: it
                    // will send it again, and the receiver drops the repeat.
                    tracing::warn!(notice = %n.key, "notice delivered after its lease ran out");
                }
                Ok(Some(true))
            }
            Err(why) => {
                let attempts = u32::try_from(n.attempts).unwrap_or(u32::MAX);
                if attempts >= inner.config.max_attempts {
                    store
                        .notice_attempt_failed(&n.key, &inner.owner, &why, None)
                        .await?;
                    tracing::warn!(notice = %n.key, attempts, error = %why, endpoint = %inner.target.shown,
                        "notice not delivered after its last attempt: failed (muhr notices retry KEY)");
                    Ok(None)
                } else {
                    let wait = inner.config.backoff(attempts);
                    // Up to a quarter more, so notices that failed together
                    // do not all come back in the same second.
                    let mut r = [0u8; 4];
                    let _ = aws_lc_rs::rand::fill(&mut r);
                    let jitter = u64::from(u32::from_le_bytes(r)) % (wait.as_secs() / 4 + 1);
                    let at =
                        muhr_store::now_secs().saturating_add((wait.as_secs() + jitter) as i64);
                    store
                        .notice_attempt_failed(&n.key, &inner.owner, &why, Some(at))
                        .await?;
                    tracing::info!(notice = %n.key, attempts, error = %why, retry_in_s = wait.as_secs() + jitter,
                        endpoint = %inner.target.shown, "notice not delivered; will retry");
                    Ok(Some(false))
                }
            }
        }
    }

    /// One POST. `Err` says why it did not count as delivered, in words
    /// that hold no secret.
    async fn send(&self, n: &Notice) -> Result<(), String> {
        let inner = &self.inner;
        let body = serde_json::to_vec(&Message {
            id: &n.key,
            kind: &n.kind,
            pinfl: &n.pinfl,
            serial: n.serial.as_deref(),
            reason: n.reason.as_deref(),
            date: &n.on_date,
            created_at: n.created_at.div_euclid(1_000_000),
        })
        .map_err(|e| format!("encoding: {e}"))?;
        let timestamp = muhr_store::now_secs();
        let signature = inner.signer.sign(timestamp, &body).await?;
        let mut headers = HeaderMap::new();
        let value = |s: &str| HeaderValue::from_str(s).map_err(|e| format!("header: {e}"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("muhr/", env!("CARGO_PKG_VERSION"))),
        );
        headers.insert("x-muhr-notice-id", value(&header_safe(&n.key))?);
        headers.insert("x-muhr-timestamp", value(&timestamp.to_string())?);
        headers.insert("x-muhr-key-id", value(inner.signer.key_id())?);
        headers.insert("x-muhr-signature", value(&signature)?);
        headers.insert("x-muhr-attempt", value(&n.attempts.to_string())?);
        let mut request = inner
            .http
            .post(inner.target.url.clone())
            .headers(headers)
            .body(body);
        if let Some((user, password)) = &inner.target.basic {
            request = request.basic_auth(user, password.as_ref().map(|p| p.as_str()));
        }
        let response = request.send().await.map_err(|e| describe(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }

    /// Delivers until `stop` turns true: a full batch is followed at once by
    /// the next, otherwise the worker waits `poll_seconds`. A database
    /// outage is logged once and waited out.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let poll = Duration::from_secs(self.inner.config.poll_seconds);
        let mut db_was_ok = true;
        tracing::info!(endpoint = %self.inner.target.shown, key_id = %self.inner.signer.key_id(), "notices: delivering");
        loop {
            if *stop.borrow() {
                return;
            }
            let wait = match self.deliver_due().await {
                Ok(o) => {
                    db_was_ok = true;
                    let taken = o.delivered + o.retrying + o.failed;
                    if taken >= self.inner.config.batch as usize {
                        Duration::ZERO
                    } else {
                        poll
                    }
                }
                Err(e) => {
                    if db_was_ok {
                        tracing::warn!(error = %e, "notices: the outbox cannot be read; retrying");
                    }
                    db_was_ok = false;
                    poll
                }
            };
            if wait > Duration::ZERO {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// Queues expiry notices for `thresholds_days` now and then every `every`,
/// until `stop` turns true. Several nodes may run it: the store's cursor
/// makes them take turns, and a notice's key makes it one.
pub async fn run_expiry_scan(
    store: Store,
    thresholds_days: Vec<u32>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        match store
            .queue_expiry_notices(muhr_store::now_secs(), &thresholds_days)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(queued = n, "notices: certificates nearing expiry announced"),
            Err(e) => tracing::warn!(error = %e, "notices: the expiry scan failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_password_never_shows() {
        let t = Target::parse("https://muhr:S3cret%40pw@notify.example.uz:8443/hook?token=abc")
            .unwrap();
        assert_eq!(t.shown, "https://notify.example.uz:8443/hook");
        assert_eq!(
            t.url.as_str(),
            "https://notify.example.uz:8443/hook?token=abc"
        );
        let (user, pw) = t.basic.as_ref().unwrap();
        assert_eq!(user, "muhr");
        assert_eq!(pw.as_deref().map(String::as_str), Some("S3cret@pw"));
        let e = Target::parse("http://muhr:S3cret@notify.example.uz/hook")
            .err()
            .unwrap();
        assert!(!e.contains("S3cret"), "{e}");
        assert!(Target::parse("http://[::1]:9000/h").is_ok());
        assert!(Target::parse("ftp://notify.example.uz/h").is_err());
    }

    #[test]
    fn keys_fit_in_a_header() {
        assert_eq!(header_safe("revoked:7F3A"), "revoked:7F3A");
        assert_eq!(header_safe("registry:ev 1%:ʻ"), "registry:ev%201%25:%CA%BB");
    }
}

//! The time-stamping authority (RFC 3161, RFC 5816): proves that a datum
//! (a signature value, mostly) existed at a time, so a signature keeps its
//! force at that time after its certificate is revoked for a reason other
//! than key compromise.
//!
//! - Tokens are signed with the TSA key, a key of its own in the key store
//!   with a `tsa` certificate (critical timeStamping and nothing else) from
//!   the issuing CA, made and renewed by `muhr serve` (`muhr_ca`). The TSA
//!   never sees the CA key.
//! - genTime comes from a clock the TSA checks ([`clock`]): when it is not
//!   known to be within the configured accuracy, the answer is
//!   `timeNotAvailable`, never a wrong time.
//! - Every token is logged before its reply leaves ([`log`]), by commit
//!   group; a token's serial is its place in the log (stream, batch,
//!   index), and the database numbers streams, so serials are unique across
//!   nodes.
//!
//! It must never write a certificate's status, nor read any but its own
//! certificate's, nor sign anything but tokens with its key.

#![deny(missing_docs)]

pub mod asn1;
pub mod clock;
pub mod http;
pub mod log;
pub mod request;
pub mod token;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use der::Decode;
use der::asn1::Int;
use muhr_hsm::KeyStore;
use muhr_store::timestamps::TokenRecord;
use muhr_store::{SignerRole, Store};
use x509_cert::Certificate;
use x509_cert::ext::pkix::ExtendedKeyUsage;

use asn1::{Accuracy, FailureInfo};
use request::Policies;
use token::Stamper;

/// How often the TSA reads which certificate is current: the longest a
/// revoked TSA key goes on stamping (one indexed read each time).
pub const RELOAD: Duration = Duration::from_secs(5);

/// id-kp-timeStamping.
pub const TIME_STAMPING: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");

/// Whether `cert` is a TSA certificate as RFC 3161 2.3 requires: one
/// extended key usage, timeStamping, in a critical extension.
pub fn is_tsa_certificate(cert: &Certificate) -> bool {
    let Some(ext) = cert.tbs_certificate().extensions().and_then(|e| {
        e.iter()
            .find(|e| e.extn_id == <ExtendedKeyUsage as der::oid::AssociatedOid>::OID)
    }) else {
        return false;
    };
    ext.critical
        && ExtendedKeyUsage::from_der(ext.extn_value.as_bytes())
            .is_ok_and(|e| e.0 == [TIME_STAMPING])
}

/// What a TSA is told by its configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The policies it issues under.
    pub policies: Policies,
    /// How far genTime may be from the true time, as tokens state it. At
    /// least one second: genTime is written in whole seconds.
    pub accuracy: Duration,
}

impl Config {
    /// The error the clock may have: genTime is rounded to the nearest
    /// second, which takes half a second of the stated accuracy.
    pub fn clock_tolerance(&self) -> Duration {
        self.accuracy.saturating_sub(Duration::from_millis(500))
    }

    fn accuracy_field(&self) -> Accuracy {
        let millis = self.accuracy.subsec_millis() as u16;
        let micros = (self.accuracy.subsec_micros() % 1000) as u16;
        Accuracy {
            seconds: Some(self.accuracy.as_secs() as u32).filter(|s| *s > 0),
            millis: Some(millis).filter(|m| *m > 0),
            micros: Some(micros).filter(|m| *m > 0),
        }
    }
}

/// Why the TSA could not be set up or load its key.
#[derive(Debug, thiserror::Error)]
pub enum TsaError {
    /// The database could not be read.
    #[error("database: {0}")]
    Store(#[from] muhr_store::StoreError),
    /// The key could not be opened.
    #[error("key store: {0}")]
    Key(#[from] muhr_hsm::HsmError),
    /// A configuration or certificate problem.
    #[error("{0}")]
    Setup(String),
}

#[derive(Default)]
struct Counters {
    granted: AtomicU64,
    /// By FailureInfo bit (0..=25).
    rejected: [AtomicU64; 26],
}

/// The TSA of one issuing CA.
pub struct Tsa {
    store: Store,
    keys: Arc<dyn KeyStore>,
    issuer: String,
    config: Config,
    accuracy: Accuracy,
    clock: Arc<clock::ClockCheck>,
    stamper: RwLock<Option<Arc<Stamper>>>,
    log: log::TokenLog,
    counters: Counters,
    /// Each policy it issues under, dotted, as the log records it: written
    /// out once, not per token.
    policy_names: Vec<(der::oid::ObjectIdentifier, String)>,
}

impl Tsa {
    /// A TSA answering for `issuer`'s TSA certificates; call
    /// [`Tsa::reload_signer`] before serving. Starts the token log's writer.
    pub fn new(
        store: Store,
        keys: Arc<dyn KeyStore>,
        issuer: &str,
        config: Config,
        clock: Arc<clock::ClockCheck>,
    ) -> Result<Self, TsaError> {
        if config.accuracy < Duration::from_secs(1) {
            return Err(TsaError::Setup(
                "tsa.accuracy_ms: at least 1000, as genTime is in whole seconds".into(),
            ));
        }
        let policy_names = std::iter::once(config.policies.default)
            .chain(config.policies.allowed.iter().copied())
            .map(|p| (p, p.to_string()))
            .collect();
        Ok(Self {
            policy_names,
            log: log::TokenLog::start(store.clone()),
            accuracy: config.accuracy_field(),
            store,
            keys,
            issuer: issuer.to_string(),
            config,
            clock,
            stamper: RwLock::new(None),
            counters: Counters::default(),
        })
    }

    /// Loads the newest valid TSA certificate and its key if they differ
    /// from those in use; returns whether one is loaded.
    pub async fn reload_signer(&self) -> Result<bool, TsaError> {
        let Some(rec) = self
            .store
            .current_signer(SignerRole::Tsa, &self.issuer)
            .await?
        else {
            // None valid: expired, or revoked (a compromised TSA key must
            // stop stamping at once). Refuse until a new one is made.
            if let Some(old) = self
                .stamper
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                tracing::error!(serial = %old.serial, "the TSA certificate is no longer valid: stamping stops until `muhr serve` makes a new one");
            }
            return Ok(false);
        };
        if self.current().is_some_and(|s| s.serial == rec.serial) {
            return Ok(true);
        }
        // Another certificate is current: the one in use stops now, before
        // the new key is opened (should that fail, nothing stamps rather
        // than a key that may have been revoked).
        self.stamper
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let spec = rec.key_spec.parse()?;
        let keys = self.keys.clone();
        let label = rec.key_label.clone();
        let key = tokio::task::spawn_blocking(move || keys.open(&label, spec))
            .await
            .map_err(|e| TsaError::Setup(e.to_string()))??;
        let stamper = Stamper::new(key, &rec.der).map_err(TsaError::Setup)?;
        tracing::info!(serial = %stamper.serial, "time-stamping with a new TSA certificate");
        *self.stamper.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(stamper));
        Ok(true)
    }

    /// Picks up renewed TSA certificates, and stops stamping within
    /// [`RELOAD`] of the current one's revocation; runs forever.
    pub async fn follow(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD);
        loop {
            tick.tick().await;
            if let Err(e) = self.reload_signer().await {
                tracing::warn!(error = %e, "TSA: loading the newest TSA certificate failed; will retry");
            }
        }
    }

    fn current(&self) -> Option<Arc<Stamper>> {
        self.stamper
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The TSA certificate in use, DER.
    pub fn certificate(&self) -> Option<Certificate> {
        self.current().map(|s| s.certificate().clone())
    }

    /// A rejection reply, counted.
    pub fn refuse(&self, info: FailureInfo, why: &str) -> Vec<u8> {
        self.counters.rejected[info as usize].fetch_add(1, Ordering::Relaxed);
        token::rejection(info, why)
    }

    /// Answers a DER TimeStampReq with a DER TimeStampResp, granted or
    /// rejected; never fails.
    pub async fn respond(&self, body: &[u8]) -> Vec<u8> {
        match self.stamp(body).await {
            Ok(reply) => {
                self.counters.granted.fetch_add(1, Ordering::Relaxed);
                reply
            }
            Err(r) => self.refuse(r.info, &r.why),
        }
    }

    async fn stamp(&self, body: &[u8]) -> Result<Vec<u8>, request::Rejected> {
        use request::reject;
        let req = request::parse(body, &self.config.policies)?;
        let stamper = self
            .current()
            .ok_or_else(|| reject(FailureInfo::SystemFailure, "the TSA has no certificate yet"))?;
        // The token's place in the log, taken before signing: the serial
        // names it, so the serial alone finds the logged token later. Taken
        // before the clock is read: genTime must not wait on the database.
        let place = self
            .log
            .reserve()
            .await
            .map_err(|e| reject(FailureInfo::SystemFailure, e))?;
        let now = self.clock.now().map_err(|e| {
            tracing::debug!(why = %e, "TSA: timeNotAvailable");
            reject(FailureInfo::TimeNotAvailable, e.to_string())
        })?;
        let gen_time = nearest_second(now);
        let gen_secs = muhr_store::unix_secs(gen_time);
        if gen_secs >= stamper.not_after {
            return Err(reject(
                FailureInfo::SystemFailure,
                "the TSA certificate has expired and no newer one is loaded",
            ));
        }
        let serial = Int::new(&place.place().serial())
            .map_err(|e| reject(FailureInfo::SystemFailure, e.to_string()))?;
        let info = stamper
            .tst_info(&req, serial.clone(), gen_time, Some(self.accuracy))
            .map_err(|e| reject(FailureInfo::SystemFailure, e))?;
        // A software ECDSA key signs in place; an HSM takes up to a
        // millisecond, too short to hop threads for, too long to stall the
        // runtime's other tasks without telling it.
        let sign = || stamper.sign_reply(&info, req.cert_req);
        let signed = if stamper.is_quick() {
            sign()
        } else {
            tokio::task::block_in_place(sign)
        };
        let (reply, token) = signed.map_err(|e| {
            tracing::error!(error = %e, "TSA: signing failed");
            reject(FailureInfo::SystemFailure, "the TSA key could not sign")
        })?;
        let token_sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &reply[token]);
        place
            .commit(TokenRecord {
                serial: upper_hex(serial.as_bytes()),
                gen_time: gen_secs,
                policy: match self.policy_names.iter().find(|(p, _)| *p == req.policy) {
                    Some((_, name)) => name.clone(),
                    None => req.policy.to_string(),
                },
                hash_algorithm: req.hash_name.to_string(),
                imprint: req.imprint.hashed_message.as_bytes().to_vec(),
                nonce: req.nonce.as_ref().map(|n| upper_hex(n.as_bytes())),
                signer_serial: stamper.serial.clone(),
                token_sha256: token_sha256.as_ref().to_vec(),
            })
            .await
            .map_err(|e| reject(FailureInfo::SystemFailure, e))?;
        Ok(reply)
    }

    /// Batch rows and tokens this process has logged (a token per row at
    /// low load, tens under load).
    pub fn log_written(&self) -> (u64, u64) {
        self.log.written()
    }

    /// Prometheus text for `/metrics`.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        out.push_str("# TYPE muhr_tsa_tokens_total counter\n");
        out.push_str(&format!(
            "muhr_tsa_tokens_total {}\n",
            self.counters.granted.load(Ordering::Relaxed)
        ));
        out.push_str("# TYPE muhr_tsa_rejections_total counter\n");
        for f in [
            FailureInfo::BadAlg,
            FailureInfo::BadRequest,
            FailureInfo::BadDataFormat,
            FailureInfo::TimeNotAvailable,
            FailureInfo::UnacceptedPolicy,
            FailureInfo::UnacceptedExtension,
            FailureInfo::SystemFailure,
        ] {
            out.push_str(&format!(
                "muhr_tsa_rejections_total{{failure=\"{}\"}} {}\n",
                f.name(),
                self.counters.rejected[f as usize].load(Ordering::Relaxed)
            ));
        }
        let (rows, tokens) = self.log.written();
        out.push_str("# TYPE muhr_tsa_log_batches_total counter\n");
        out.push_str(&format!("muhr_tsa_log_batches_total {rows}\n"));
        out.push_str("# TYPE muhr_tsa_log_tokens_total counter\n");
        out.push_str(&format!("muhr_tsa_log_tokens_total {tokens}\n"));
        // 1: the log's writer has stopped and every request is refused
        // until the process restarts.
        out.push_str("# TYPE muhr_tsa_log_stopped gauge\n");
        out.push_str(&format!(
            "muhr_tsa_log_stopped {}\n",
            u8::from(self.log.is_stopped())
        ));
        out.push_str(&self.clock.render_metrics());
        out
    }
}

/// Upper-case hex, as the log writes serials and nonces: `hex`'s goes
/// through a char iterator, which the profile showed per token.
fn upper_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// genTime in whole seconds, rounded to the nearest.
fn nearest_second(t: SystemTime) -> SystemTime {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + u64::from(d.subsec_millis() >= 500);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gen_time_rounds_to_the_nearest_second() {
        let t = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(nearest_second(t(10_499)), t(10_000));
        assert_eq!(nearest_second(t(10_500)), t(11_000));
    }

    #[test]
    fn serials_and_nonces_are_logged_in_the_hex_the_lookup_reads() {
        // A serial logged in another spelling would never be confirmed.
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(upper_hex(&all), hex::encode_upper(&all));
        assert_eq!(upper_hex(&[]), "");
    }

    #[test]
    fn accuracy_is_stated_in_its_parts() {
        let c = |ms| Config {
            policies: Policies {
                default: TIME_STAMPING,
                allowed: vec![],
            },
            accuracy: Duration::from_millis(ms),
        };
        assert_eq!(
            c(1500).accuracy_field(),
            Accuracy {
                seconds: Some(1),
                millis: Some(500),
                micros: None
            }
        );
        assert_eq!(c(1000).clock_tolerance(), Duration::from_millis(500));
    }
}

/// Entry points for `cargo fuzz` (fuzz/): the request path with no key,
/// clock or database behind it.
#[doc(hidden)]
pub mod fuzz {
    use der::{Decode, Encode};

    /// Parses `data` as a TimeStampReq as `POST /tsa` does and, when it is
    /// accepted, encodes the TSTInfo a token would carry; also reads it as
    /// the replies and tokens a verifier is handed.
    pub fn request(data: &[u8]) {
        let policies = crate::request::Policies {
            default: der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.3161.1"),
            allowed: vec![der::oid::ObjectIdentifier::new_unwrap(
                "1.3.6.1.4.1.32473.3161.2",
            )],
        };
        if let Ok(a) = crate::request::parse(data, &policies) {
            let info = crate::asn1::TstInfo {
                version: 1,
                policy: a.policy,
                message_imprint: a.imprint,
                serial_number: der::asn1::Int::new(&[1]).expect("one octet"),
                gen_time: der::asn1::GeneralizedTime::from_unix_duration(
                    std::time::Duration::from_secs(1_800_000_000),
                )
                .expect("a 2027 time"),
                accuracy: None,
                ordering: false,
                nonce: a.nonce,
                tsa: None,
                extensions: None,
            };
            let der = info
                .to_der()
                .expect("an accepted request's TSTInfo encodes");
            assert_eq!(crate::asn1::TstInfo::from_der(&der).ok(), Some(info));
        }
        let _ = crate::asn1::TimeStampResp::from_der(data);
        let _ = crate::asn1::TstInfo::from_der(data);
    }
}

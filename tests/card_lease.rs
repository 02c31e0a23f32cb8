//! A group of cards held in the signing step for longer than a job's lease,
//! and a retry of one of its cards arriving at another process meanwhile: the
//! holder renews its leases while it works, so the retry waits and gets the
//! holder's answer; nothing is taken over, nothing rolled back, every card
//! issued once.
//!
//! Two personalizers (two owners, as two processes would be) share one
//! database; the CA key is slowed by a wrapper around the real key store,
//! which is the only way to hold a signature for seconds on demand.
//! One test in this file: it sets MUHR_DATABASE_URL for the process.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use muhr_hsm::{KeySigner, KeySpec, KeyStore};

mod common;
use common::*;

/// Signatures made while armed wait until the armed deadline.
struct SlowKeys {
    inner: Arc<dyn KeyStore>,
    until: Arc<Mutex<Option<Instant>>>,
}

struct SlowSigner {
    inner: Arc<dyn KeySigner>,
    until: Arc<Mutex<Option<Instant>>>,
}

impl KeyStore for SlowKeys {
    fn generate(&self, label: &str, spec: KeySpec) -> muhr_hsm::Result<Arc<dyn KeySigner>> {
        self.inner.generate(label, spec)
    }
    fn open(&self, label: &str, spec: KeySpec) -> muhr_hsm::Result<Arc<dyn KeySigner>> {
        Ok(Arc::new(SlowSigner {
            inner: self.inner.open(label, spec)?,
            until: self.until.clone(),
        }))
    }
    fn health(&self) -> muhr_hsm::Result<()> {
        self.inner.health()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

impl KeySigner for SlowSigner {
    fn label(&self) -> &str {
        self.inner.label()
    }
    fn spec(&self) -> KeySpec {
        self.inner.spec()
    }
    fn public_key(&self) -> &spki::SubjectPublicKeyInfoOwned {
        self.inner.public_key()
    }
    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }
    fn sign(&self, message: &[u8]) -> muhr_hsm::Result<Vec<u8>> {
        let until = *self.until.lock().unwrap();
        if let Some(t) = until {
            std::thread::sleep(t.saturating_duration_since(Instant::now()));
        }
        self.inner.sign(message)
    }
}

/// `Env::sql` runs its own runtime: called from a thread outside this one.
fn sql(env: &Env, query: &str) -> Vec<String> {
    std::thread::scope(|s| s.spawn(|| env.sql(query)).join().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_one_card_never_takes_over_or_rolls_back_a_slow_group_still_at_work() {
    let env = Env::new(Db::Sqlite, Keys::Software);
    env.init();
    // SAFETY: the only test in this binary; set before any thread reads it.
    unsafe {
        std::env::set_var("MUHR_DATABASE_URL", &env.db_url);
        std::env::set_var("MUHR_KEY_PASSPHRASE", "example passphrase for tests");
    }
    let mut app = muhr::app::App::load(Some(&env.config), None).await.unwrap();
    let until = Arc::new(Mutex::new(None));
    app.keys = Arc::new(SlowKeys {
        inner: app.keys.clone(),
        until: until.clone(),
    });
    let ca = Arc::new(app.ca().await.unwrap());
    let rules = Arc::new(app.ra_rules().unwrap());
    let holder = muhr_ra::Personalizer::start(ca.clone(), rules.clone());
    let retrier = muhr_ra::Personalizer::start(ca.clone(), rules);

    let cards: Vec<muhr_ra::CardRequest> = (0..24u32)
        .map(|i| {
            let v = common::ra::card(
                &env,
                &format!("lease-{i}"),
                i,
                &format!("AC{:07}", 100 + i),
                "1726273",
            );
            serde_json::from_value(v).unwrap()
        })
        .collect();

    // Every signature in the next 8 s (longer than the 5 s lease) waits.
    *until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(8));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in cards.clone() {
        let h = holder.clone();
        tasks.push(tokio::spawn(async move { h.submit("LINE-A", c).await }));
    }
    // Past the lease, the line retries one card the group holds at another process.
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let held = sql(
        &env,
        "SELECT job FROM card_jobs WHERE state = 'pending' ORDER BY job LIMIT 1",
    );
    let n: usize = held[0]
        .strip_prefix("LINE-A/lease-")
        .expect("a pending job of the slow group")
        .parse()
        .unwrap();
    let retried = retrier.submit("LINE-A", cards[n].clone()).await;
    *until.lock().unwrap() = None;
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().expect("a card of the slow group failed"));
    }
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "the group was not held"
    );
    let retried = retried.expect("the retry failed");
    assert!(
        retried.replayed,
        "the retry issued instead of waiting for the holder"
    );
    let serials = |o: &muhr_ra::CardOutcome| {
        o.certificates
            .iter()
            .map(|c| c.serial.clone())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(serials(&retried), serials(&outcomes[n]));
    // No card replayed in the group (none was taken over), 48 certificates, once each.
    assert!(outcomes.iter().all(|o| !o.replayed));
    let issued = sql(
        &env,
        "SELECT COUNT(*) FROM certificates WHERE job LIKE 'LINE-A/lease-%' AND status = 'issued'",
    );
    assert_eq!(issued, vec!["48".to_string()]);
    let owners = sql(
        &env,
        "SELECT COUNT(DISTINCT owner) FROM card_jobs WHERE job LIKE 'LINE-A/lease-%'",
    );
    assert_eq!(owners, vec!["1".to_string()], "a job changed hands");
}

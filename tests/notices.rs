//! Notices to people: the outbox, its delivery to a real HTTP receiver
//! (an axum server in the test, on 127.0.0.1:0) whose signatures the test
//! checks on its own (HMAC with the key; ES256 with the public key), the
//! retries, the failed state and the operator's retry, the expiry scan, the
//! operators' status changes, and the citizens' view. Each test runs on
//! SQLite and on PostgreSQL.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::oidc::{Provider, call};
use common::{Db, Env, Keys, pinfl, serial_of};
use muhr_notices::{NoticesConfig, Signer, Worker};
use muhr_store::Store;
use muhr_store::notices::{NewNotice, NoticeKind};
use serde_json::{Value, json};

// --- a real receiver ---------------------------------------------------------

#[derive(Clone, Debug)]
struct Got {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    answered: u16,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn id(&self) -> String {
        self.json()["id"].as_str().unwrap().to_string()
    }
}

#[derive(Clone)]
struct Hook {
    got: Arc<Mutex<Vec<Got>>>,
    plan: Arc<Mutex<VecDeque<u16>>>,
    delay: Duration,
}

/// The notification system's side: answers each request with the next
/// status of `plan` (200 once it is used up), after `delay`.
struct Receiver {
    port: u16,
    hook: Hook,
    _rt: tokio::runtime::Runtime,
}

async fn hook(State(h): State<Hook>, headers: HeaderMap, body: Bytes) -> StatusCode {
    tokio::time::sleep(h.delay).await;
    let answer = h.plan.lock().unwrap().pop_front().unwrap_or(200);
    h.got.lock().unwrap().push(Got {
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
            .collect(),
        body: body.to_vec(),
        answered: answer,
    });
    StatusCode::from_u16(answer).unwrap()
}

impl Receiver {
    fn start(plan: &[u16], delay: Duration) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let hook_state = Hook {
            got: Default::default(),
            plan: Arc::new(Mutex::new(plan.iter().copied().collect())),
            delay,
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(hook_state.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            port,
            hook: hook_state,
            _rt: rt,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn got(&self) -> Vec<Got> {
        self.hook.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests were accepted (2xx).
    fn wait_accepted(&self, n: usize, within: Duration) -> Vec<Got> {
        let deadline = Instant::now() + within;
        loop {
            let ok: Vec<Got> = self
                .got()
                .into_iter()
                .filter(|g| g.answered / 100 == 2)
                .collect();
            if ok.len() >= n || Instant::now() > deadline {
                assert!(
                    ok.len() >= n,
                    "{} of {n} notices accepted: {:?}",
                    ok.len(),
                    self.got()
                );
                return ok;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// --- the receiver's checks, written from docs/notices.md ---------------------

const HMAC_KEY: &str = "c2a1f0e9d8b7a6958473625140392817c2a1f0e9d8b7a6958473625140392817";

fn signed_input(g: &Got) -> Vec<u8> {
    let ts = &g.headers["x-muhr-timestamp"];
    let age = muhr_store::now_secs() - ts.parse::<i64>().unwrap();
    assert!((-5..=300).contains(&age), "timestamp {age} s old");
    let mut input = ts.as_bytes().to_vec();
    input.push(b'.');
    input.extend_from_slice(&g.body);
    input
}

/// HMAC-SHA256 over `timestamp "." body`, hex, compared in constant time.
fn verify_hmac(g: &Got, key: &[u8]) {
    let sig = g.headers["x-muhr-signature"]
        .strip_prefix("hmac-sha256=")
        .expect("an HMAC signature");
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::verify(&k, &signed_input(g), &hex::decode(sig).unwrap())
        .expect("the HMAC verifies");
    let mut tampered = g.clone();
    tampered.body.push(b' ');
    assert!(
        aws_lc_rs::hmac::verify(&k, &signed_input(&tampered), &hex::decode(sig).unwrap()).is_err()
    );
}

/// ES256 (raw r ‖ s, base64url) over `timestamp "." body` with the public point.
fn verify_es256(g: &Got, point: &[u8]) {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    let sig = g.headers["x-muhr-signature"]
        .strip_prefix("es256=")
        .expect("an ES256 signature");
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    assert_eq!(sig.len(), 64);
    let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point);
    key.verify(&signed_input(g), &sig)
        .expect("the ES256 signature verifies");
    let mut other = g.clone();
    other.headers.insert("x-muhr-timestamp".into(), "1".into());
    let mut input = b"1.".to_vec();
    input.extend_from_slice(&other.body);
    assert!(key.verify(&input, &sig).is_err(), "bound to its timestamp");
}

// --- fixtures -------------------------------------------------------------------

/// People born across decades, men and women, with Uzbek and Cyrillic names.
fn people() -> Vec<(String, &'static str, &'static str)> {
    vec![
        (pinfl("4120362123045"), "Toʻxtayeva", "Oʻgʻiloy"),
        (pinfl("3010199123077"), "Шукуров", "Ботир"),
        (pinfl("5290204123012"), "Gʻulomov", "Aʼzam"),
        (pinfl("3311275123001"), "Xoʻjayev", "Shoʻxrat"),
        (pinfl("6150809123101"), "Исмоилова", "Мадина"),
    ]
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// A database of its own: an SQLite file, or a fresh PostgreSQL database.
struct Db0 {
    url: String,
    _dir: tempfile::TempDir,
}

fn database(db: Db) -> Db0 {
    let dir = tempfile::tempdir().unwrap();
    let url = match db {
        Db::Sqlite => format!("sqlite://{}/n.db?mode=rwc", dir.path().display()),
        Db::Postgres => common::postgres_database(),
    };
    Db0 { url, _dir: dir }
}

fn notice(key: &str, who: &str, serial: Option<&str>, kind: NoticeKind) -> NewNotice {
    NewNotice {
        key: key.to_string(),
        pinfl: who.to_string(),
        serial: serial.map(str::to_string),
        kind,
        reason: (kind == NoticeKind::Revoked).then(|| "keyCompromise".to_string()),
        on_date: "2026-03-21".into(),
    }
}

fn hmac_file(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let f = dir.join("notices.key");
    std::fs::write(&f, format!("{HMAC_KEY}\n")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

fn config(url: &str, key_file: &std::path::Path) -> NoticesConfig {
    let mut c = NoticesConfig::new(url, key_file.to_path_buf());
    c.backoff_min_seconds = 1;
    c.backoff_max_seconds = 2;
    c.request_timeout_seconds = 5;
    c.batch = 16;
    c
}

/// Runs `w` until no notice is pending or `within` passes.
async fn drain(store: &Store, w: &Worker, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        w.deliver_due().await.unwrap();
        if store
            .notices(Some("pending"), None, 1)
            .await
            .unwrap()
            .is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// --- the tests ----------------------------------------------------------------

both_databases! {
    the_receiver_can_check_every_notice_signature => receiver_checks_signatures;
    a_receiver_failing_twice_gets_the_notice_on_the_third_attempt_exactly_once => third_attempt;
    two_workers_never_deliver_one_notice_twice => two_workers;
    a_notice_out_of_attempts_stays_failed_until_an_operator_retries_it => failed_and_retried;
    expiry_scans_announce_each_certificate_once_per_threshold => expiry_once;
    operators_changes_tell_the_holder_and_serve_delivers_them => operator_changes;
    citizens_see_only_their_own_notices => citizens_own;
}

fn receiver_checks_signatures(db: Db) {
    let d = database(db);
    let receiver = Receiver::start(&[], Duration::ZERO);
    let rt = rt();
    rt.block_on(async {
        let store = Store::connect(&d.url).await.unwrap();
        let p = people();
        let queued = vec![
            notice(
                "revoked:0A1B2C",
                &p[0].0,
                Some("0A1B2C"),
                NoticeKind::Revoked,
            ),
            notice("registry:ev-ʻ1", &p[1].0, None, NoticeKind::NameChanged),
        ];
        // Recording a cause twice makes one notice.
        store.queue_notices(&queued).await.unwrap();
        store.queue_notices(&queued[..1]).await.unwrap();
        let key_file = hmac_file(d._dir.path());
        let hmac = Worker::new(
            store.clone(),
            config(&receiver.url(), &key_file),
            Signer::hmac_from_file(&key_file, Some("hmac-2026")).unwrap(),
        )
        .unwrap();
        assert_eq!(hmac.deliver_due().await.unwrap().delivered, 2);
        let got = receiver.wait_accepted(2, Duration::from_secs(5));
        assert_eq!(got.len(), 2, "one request per notice");
        for g in &got {
            verify_hmac(g, HMAC_KEY.as_bytes());
            assert_eq!(g.headers["x-muhr-key-id"], "hmac-2026");
            assert_eq!(g.headers["content-type"], "application/json");
            assert_eq!(g.headers["x-muhr-attempt"], "1");
        }
        let revoked = got.iter().find(|g| g.id() == "revoked:0A1B2C").unwrap();
        let body = revoked.json();
        assert_eq!(
            body.as_object().unwrap().keys().collect::<Vec<_>>(),
            [
                "created_at",
                "date",
                "id",
                "kind",
                "pinfl",
                "reason",
                "serial"
            ],
            "nothing beyond what the notice needs: {body}"
        );
        assert_eq!(
            (
                &body["kind"],
                &body["pinfl"],
                &body["serial"],
                &body["reason"],
                &body["date"]
            ),
            (
                &json!("revoked"),
                &json!(p[0].0),
                &json!("0A1B2C"),
                &json!("keyCompromise"),
                &json!("2026-03-21")
            )
        );
        assert_eq!(revoked.headers["x-muhr-notice-id"], "revoked:0A1B2C");
        let renamed = got.iter().find(|g| g.id() == "registry:ev-ʻ1").unwrap();
        assert_eq!(renamed.headers["x-muhr-notice-id"], "registry:ev-%CA%BB1");
        assert_eq!(renamed.json()["serial"], Value::Null);

        // ES256 with a key of the key store, checked with its public half.
        let keys = muhr_hsm::software::SoftwareStore::new(
            d._dir.path().join("keys"),
            zeroize::Zeroizing::new("a passphrase for the test keys".into()),
        )
        .unwrap();
        let key =
            muhr_hsm::KeyStore::generate(&keys, "notices", muhr_hsm::KeySpec::EcdsaP256).unwrap();
        let point = key
            .public_key()
            .subject_public_key
            .as_bytes()
            .unwrap()
            .to_vec();
        let es = Signer::es256(key, None).unwrap();
        let jwk = es.public_jwk().unwrap().clone();
        let mut c = config(&receiver.url(), &key_file);
        c.hmac_key_file = None;
        c.es256_key = Some("notices".into());
        let es_worker = Worker::new(store.clone(), c, es).unwrap();
        store
            .queue_notices(&[notice(
                "suspended:0D0E:1",
                &p[2].0,
                Some("0D0E"),
                NoticeKind::Suspended,
            )])
            .await
            .unwrap();
        assert_eq!(es_worker.deliver_due().await.unwrap().delivered, 1);
        let got = receiver.wait_accepted(3, Duration::from_secs(5));
        let g = got.iter().find(|g| g.id() == "suspended:0D0E:1").unwrap();
        verify_es256(g, &point);
        assert_eq!(g.headers["x-muhr-key-id"], jwk["kid"].as_str().unwrap());
        // The JWK a receiver is given is that same key.
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        assert_eq!(&point[1..33], &x[..]);
        assert!(
            store
                .notices(Some("pending"), None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    });
}

fn third_attempt(db: Db) {
    let d = database(db);
    let receiver = Receiver::start(&[500, 500, 200], Duration::ZERO);
    let rt = rt();
    rt.block_on(async {
        let store = Store::connect(&d.url).await.unwrap();
        let who = &people()[3].0;
        store
            .queue_notices(&[notice(
                "revoked:7F00AA",
                who,
                Some("7F00AA"),
                NoticeKind::Revoked,
            )])
            .await
            .unwrap();
        let key_file = hmac_file(d._dir.path());
        let w = Worker::new(
            store.clone(),
            config(&receiver.url(), &key_file),
            Signer::hmac_from_file(&key_file, None).unwrap(),
        )
        .unwrap();
        let first = w.deliver_due().await.unwrap();
        assert_eq!(first.retrying, 1);
        let n = store.notice("revoked:7F00AA").await.unwrap().unwrap();
        assert_eq!((n.state.as_str(), n.attempts), ("pending", 1));
        assert_eq!(n.last_error.as_deref(), Some("HTTP 500"));
        drain(&store, &w, Duration::from_secs(20)).await;
        let n = store.notice("revoked:7F00AA").await.unwrap().unwrap();
        assert_eq!((n.state.as_str(), n.attempts), ("delivered", 3));
        // More rounds send nothing more.
        for _ in 0..3 {
            assert_eq!(w.deliver_due().await.unwrap(), Default::default());
        }
    });
    let got = receiver.got();
    assert_eq!(
        got.iter().map(|g| g.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    assert!(got.iter().all(|g| g.id() == "revoked:7F00AA"));
    assert_eq!(
        got.iter()
            .map(|g| g.headers["x-muhr-attempt"].as_str())
            .collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    for g in &got {
        verify_hmac(g, HMAC_KEY.as_bytes());
    }
}

fn two_workers(db: Db) {
    let d = database(db);
    // A slow receiver widens the window in which a second worker could
    // take a notice the first is still sending.
    let receiver = Receiver::start(&[], Duration::from_millis(5));
    let rt = rt();
    const N: usize = 300;
    rt.block_on(async {
        // Two nodes: two pools on one database.
        let a = Store::connect(&d.url).await.unwrap();
        let b = Store::connect(&d.url).await.unwrap();
        let p = people();
        let all: Vec<NewNotice> = (0..N)
            .map(|i| {
                let serial = format!("{:040X}", i * 7919 + 1);
                let kind = [
                    NoticeKind::Revoked,
                    NoticeKind::Suspended,
                    NoticeKind::Expiring,
                ][i % 3];
                notice(
                    &format!("{kind}:{serial}"),
                    &p[i % p.len()].0,
                    Some(&serial),
                    kind,
                )
            })
            .collect();
        a.queue_notices(&all).await.unwrap();
        let key_file = hmac_file(d._dir.path());
        let worker = |s: &Store| {
            Worker::new(
                s.clone(),
                config(&receiver.url(), &key_file),
                Signer::hmac_from_file(&key_file, None).unwrap(),
            )
            .unwrap()
        };
        let (wa, wb) = (worker(&a), worker(&b));
        let (wa2, wb2) = (worker(&a), worker(&b));
        tokio::join!(
            drain(&a, &wa, Duration::from_secs(60)),
            drain(&b, &wb, Duration::from_secs(60)),
            drain(&a, &wa2, Duration::from_secs(60)),
            drain(&b, &wb2, Duration::from_secs(60)),
        );
        assert_eq!(
            a.notices(Some("delivered"), None, 1000)
                .await
                .unwrap()
                .len(),
            N
        );
    });
    let got = receiver.got();
    let mut seen = HashMap::new();
    for g in &got {
        *seen.entry(g.id()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), N);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(got.len(), N);
}

fn failed_and_retried(db: Db) {
    let d = database(db);
    let receiver = Receiver::start(&[500, 503, 500], Duration::ZERO);
    let rt = rt();
    rt.block_on(async {
        let store = Store::connect(&d.url).await.unwrap();
        let who = &people()[4].0;
        store
            .queue_notices(&[notice(
                "suspended:5E5E:42",
                who,
                Some("5E5E"),
                NoticeKind::Suspended,
            )])
            .await
            .unwrap();
        let key_file = hmac_file(d._dir.path());
        let mut c = config(&receiver.url(), &key_file);
        c.max_attempts = 2;
        let w = Worker::new(
            store.clone(),
            c,
            Signer::hmac_from_file(&key_file, None).unwrap(),
        )
        .unwrap();
        drain(&store, &w, Duration::from_secs(20)).await;
        let failed = store.notices(Some("failed"), None, 10).await.unwrap();
        assert_eq!(failed.len(), 1, "kept, and visible to operators");
        assert_eq!(failed[0].attempts, 2);
        assert_eq!(failed[0].last_error.as_deref(), Some("HTTP 503"));
        // Never tried again on its own.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(w.deliver_due().await.unwrap(), Default::default());
        assert_eq!(
            store.notices_of_person(who, 10).await.unwrap()[0].state,
            "failed"
        );

        let event = muhr_store::AuditEvent {
            actor: "cli:operator".into(),
            action: "notice.retry".into(),
            object: "suspended:5E5E:42".into(),
            details: json!({}),
        };
        let back = store
            .retry_notice("suspended:5E5E:42", &event)
            .await
            .unwrap();
        assert_eq!((back.state.as_str(), back.attempts), ("pending", 0));
        // The receiver answers 500 once more, then accepts.
        drain(&store, &w, Duration::from_secs(20)).await;
        let n = store.notice("suspended:5E5E:42").await.unwrap().unwrap();
        assert_eq!(n.state, "delivered");
        // A delivered notice is never put back, nor an unknown one.
        for key in ["suspended:5E5E:42", "revoked:NOPE"] {
            assert!(matches!(
                store.retry_notice(key, &event).await,
                Err(muhr_store::StoreError::Conflict(_))
            ));
        }
        let audited: i64 = sqlx::Row::get(
            &sqlx::query("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'notice.retry'")
                .fetch_one(store.pool())
                .await
                .unwrap(),
            "n",
        );
        assert_eq!(audited, 1, "only the retry made is audited");
    });
    let answered: Vec<u16> = receiver.got().iter().map(|g| g.answered).collect();
    assert_eq!(answered, [500, 503, 500, 200]);
}

/// Inserts issued certificates straight into the table (the scan reads
/// only these columns): (serial, pinfl, not_after, revocation).
async fn certificates(store: &Store, rows: &[(String, Option<String>, i64, &str)]) {
    for chunk in rows.chunks(100) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let b = i * 6;
                format!(
                    "(${}, 'issuing', 'individual-sign', 'CN=test', ${}, ${}, ${}, ${}, 'issued', ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 3
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO certificates (serial, issuer, profile, subject, pinfl, not_before, not_after, \
             tbs, status, revocation, created_at) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (serial, pinfl, not_after, revocation) in chunk {
            q = q
                .bind(serial.clone())
                .bind(pinfl.clone())
                .bind(not_after - 365 * 86_400)
                .bind(*not_after)
                .bind(Vec::<u8>::new())
                .bind(revocation.to_string());
        }
        q.execute(store.pool()).await.unwrap();
    }
}

fn expiry_once(db: Db) {
    let d = database(db);
    let rt = rt();
    rt.block_on(async {
        let store = Store::connect(&d.url).await.unwrap();
        let p = people();
        let now = muhr_store::now_secs();
        let day = 86_400;
        let who = |i: usize| Some(p[i % p.len()].0.clone());
        let mut rows = vec![
            ("0A03".to_string(), who(0), now + 3 * day, "good"),
            ("0A10".to_string(), who(1), now + 10 * day, "good"),
            ("0A20".to_string(), who(2), now + 20 * day, "suspended"),
            ("0A40".to_string(), who(3), now + 40 * day, "good"),
            ("0AEE".to_string(), who(4), now - day, "good"),
            ("0ARR".to_string(), who(0), now + 5 * day, "revoked"),
            ("0ANP".to_string(), None, now + 5 * day, "good"),
        ];
        // A crowd sharing one notAfter: pages must not lose or repeat any.
        let crowd = 2_345;
        for i in 0..crowd {
            rows.push((format!("0C{i:06X}"), who(i), now + 16 * day, "good"));
        }
        certificates(&store, &rows).await;

        let first = store.queue_expiry_notices(now, &[30, 7]).await.unwrap();
        for _ in 0..3 {
            assert_eq!(
                store
                    .queue_expiry_notices(now + 60, &[7, 30, 30])
                    .await
                    .unwrap(),
                0
            );
        }
        let keys = |list: Vec<muhr_store::notices::Notice>| -> Vec<String> {
            let mut k: Vec<String> = list
                .into_iter()
                .filter(|n| n.key.starts_with("expiring") && !n.key.contains(":0C"))
                .map(|n| n.key)
                .collect();
            k.sort();
            k
        };
        assert_eq!(first, 3 + crowd as u64);
        assert_eq!(
            keys(store.notices(None, None, 10_000).await.unwrap()),
            ["expiring-30:0A10", "expiring-30:0A20", "expiring-7:0A03"],
            "the 3-day certificate gets only the 7-day notice; expired, revoked and \
             person-less certificates none"
        );
        let all = store.notices(None, None, 10_000).await.unwrap();
        assert_eq!(all.len(), 3 + crowd);
        let n = all.iter().find(|n| n.key == "expiring-7:0A03").unwrap();
        assert_eq!(n.kind, "expiring");
        assert_eq!(n.pinfl, p[0].0);
        let (y, m, dd) = muhr_policies::identity::civil_from_days((now + 3 * day) / day);
        assert_eq!(
            n.on_date,
            format!("{y:04}-{m:02}-{dd:02}"),
            "the notAfter's date"
        );

        // Fifteen days on: the 20-day certificate enters the 7-day window,
        // the 40-day one the 30-day window; the crowd enters the 7-day one.
        let later = now + 15 * day;
        for _ in 0..3 {
            store.queue_expiry_notices(later, &[30, 7]).await.unwrap();
        }
        assert_eq!(
            keys(store.notices(None, None, 10_000).await.unwrap()),
            [
                "expiring-30:0A10",
                "expiring-30:0A20",
                "expiring-30:0A40",
                "expiring-7:0A03",
                "expiring-7:0A20"
            ]
        );
        let all = store.notices(None, None, 100_000).await.unwrap();
        assert_eq!(
            all.len(),
            5 + 2 * crowd,
            "each certificate once per threshold"
        );
    });
}

// --- through the binary ----------------------------------------------------------

fn subject(pinfl: &str, surname: &str, given: &str) -> String {
    json!({"pinfl": pinfl, "surname": surname, "given_name": given, "tin": "412345678"}).to_string()
}

fn notices_section(receiver: &Receiver, key_file: &std::path::Path, extra: &str) -> String {
    format!(
        "\n[notices]\nwebhook_url = \"{}\"\nhmac_key_file = \"{}\"\npoll_seconds = 1\n\
         backoff_min_seconds = 1\nbackoff_max_seconds = 2\n{extra}\n",
        receiver.url(),
        key_file.display()
    )
}

fn operator_changes(db: Db) {
    // The first delivery is refused: out of attempts at once, it waits for
    // an operator.
    let receiver = Receiver::start(&[500], Duration::ZERO);
    let keys = tempfile::tempdir().unwrap();
    let key_file = hmac_file(keys.path());
    let env = Env::with_extra(
        db,
        Keys::Software,
        &notices_section(&receiver, &key_file, "max_attempts = 1"),
    );
    env.init();
    let p = people();
    let csr = env.csr("holder", "ec");
    let cert = env.issue(
        "individual-sign",
        &csr,
        &subject(&p[1].0, p[1].1, p[1].2),
        "holder",
    );
    let serial = serial_of(&cert);
    let (_server, _port) = common::start(&env, &[]);

    env.ok(&["suspend", &serial]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let failed = loop {
        let out = env.ok(&["notices", "list", "--state", "failed"]);
        if out.lines().count() > 1 || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let line = failed.lines().nth(1).expect("the failed notice is listed");
    let key = line.split('\t').next().unwrap().to_string();
    assert!(key.starts_with(&format!("suspended:{serial}:")), "{line}");
    assert!(
        line.contains("HTTP 500") && line.contains(&p[1].0),
        "{line}"
    );
    // Not another person's; and a retry puts it back, audited.
    let other = env.ok(&["notices", "list", "--pinfl", &p[0].0]);
    assert_eq!(other.lines().count(), 1, "{other}");
    assert!(
        env.refused(&["notices", "list", "--state", "lost"])
            .contains("unknown notice state")
    );
    env.ok(&["notices", "retry", &key]);
    assert!(
        env.refused(&["notices", "retry", &key])
            .contains("only a failed notice")
    );

    env.ok(&["restore", &serial]);
    env.ok(&["revoke", &serial, "--reason", "keyCompromise"]);
    let got = receiver.wait_accepted(3, Duration::from_secs(20));
    let mut kinds: Vec<(String, Value)> = got
        .iter()
        .map(|g| {
            verify_hmac(g, HMAC_KEY.as_bytes());
            let b = g.json();
            assert_eq!(
                (&b["pinfl"], &b["serial"]),
                (&json!(p[1].0), &json!(serial))
            );
            (b["kind"].as_str().unwrap().to_string(), b["reason"].clone())
        })
        .collect();
    kinds.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        kinds,
        [
            ("restored".to_string(), Value::Null),
            ("revoked".to_string(), json!("keyCompromise")),
            ("suspended".to_string(), json!("certificateHold")),
        ]
    );
    let listed = env.ok(&["notices", "list", "--pinfl", &p[1].0]);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    assert_eq!(listed.matches("\tdelivered\t").count(), 3, "{listed}");
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM audit_log WHERE action = 'notice.retry'"),
        ["1"]
    );
}

fn citizens_own(db: Db) {
    let idp = Provider::start();
    let env = Env::with_extra(
        db,
        Keys::Software,
        &idp.config("[citizens.rate_limits]\nperson_per_hour = 30\naddress_per_minute = 0"),
    );
    env.init();
    let p = people();
    let (me, other) = (&p[2].0, &p[0].0);
    let (_server, port) = common::start(&env, &[]);
    // Each person's token says who they are: their names, and the birth
    // date their PINFL encodes (century by its first digit).
    let token = |who: &str| {
        let mut claims = idp.claims(who);
        let (_, surname, given) = p.iter().find(|(x, _, _)| x == who).unwrap();
        let century = if who.starts_with(['3', '4']) {
            "19"
        } else {
            "20"
        };
        claims["birthdate"] = json!(format!(
            "{century}{}-{}-{}",
            &who[5..7],
            &who[3..5],
            &who[1..3]
        ));
        claims["family_name"] = json!(surname);
        claims["given_name"] = json!(given);
        claims["middle_name"] = Value::Null;
        idp.es256(&claims)
    };
    let issue = |who: &str, name: &str| -> String {
        let csr = std::fs::read_to_string(env.csr(name, "ec")).unwrap();
        let (code, _, v) = call(
            port,
            "POST",
            "/api/v1/certificates",
            Some(&token(who)),
            Some(&json!({"csr": csr, "profile": "individual-sign"})),
        );
        assert_eq!(code, 201, "{v}");
        v["serial"].as_str().unwrap().to_string()
    };
    let mine = issue(me, "mine");
    let theirs = issue(other, "theirs");
    let own = issue(me, "own");

    // The CA administrator acts on both people's certificates...
    env.ok(&["suspend", &mine]);
    env.ok(&["revoke", &theirs, "--reason", "privilegeWithdrawn"]);
    // ...and the holder on their own: nobody needs telling what they did.
    let (code, _, v) = call(
        port,
        "POST",
        &format!("/api/v1/me/certificates/{own}/revoke"),
        Some(&token(me)),
        Some(&json!({"reason": "keyCompromise"})),
    );
    assert_eq!(code, 200, "{v}");

    let list = |who: &str, path: &str| -> Vec<Value> {
        let (code, _, v) = call(port, "GET", path, Some(&token(who)), None);
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["pinfl"], json!(who));
        v["notices"].as_array().unwrap().clone()
    };
    let seen = list(me, "/api/v1/me/notices");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["kind"], "suspended");
    assert_eq!(seen[0]["serial"], json!(mine));
    assert_eq!(seen[0]["reason"], "certificateHold");
    assert_eq!(
        seen[0]["delivered"], false,
        "no [notices]: recorded, not sent"
    );
    // An attacker naming someone else's PINFL still sees only their own.
    let sneaky = list(me, &format!("/api/v1/me/notices?pinfl={other}"));
    assert_eq!(sneaky, seen);
    let theirs_seen = list(other, "/api/v1/me/notices");
    assert_eq!(theirs_seen.len(), 1);
    assert_eq!(theirs_seen[0]["kind"], "revoked");
    assert_eq!(theirs_seen[0]["reason"], "privilegeWithdrawn");
    assert!(!serde_json::to_string(&theirs_seen).unwrap().contains(&mine));
    // Without a token, nothing.
    let (code, _, _) = call(port, "GET", "/api/v1/me/notices", None, None);
    assert_eq!(code, 401);
    let (code, _, _) = call(
        port,
        "GET",
        "/api/v1/me/notices",
        Some("forged.token.here"),
        None,
    );
    assert_eq!(code, 401);
}

//! PostgreSQL stopped under `muhr serve` (as a crash would: `-m immediate`),
//! then started again. While it is down, what needs the database fails fast
//! (503 with Retry-After, OCSP `tryLater`), what Muhr already holds is served
//! at once (CRLs in memory, signed OCSP responses until their nextUpdate and
//! never after), `/healthz` answers within a second. When it is back, every
//! service recovers without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::ra::{call, card, client};
use common::*;

/// `openssl ocsp` for `cert`: (its output, how long the answer took).
fn ocsp(env: &Env, port: u16, cert: &Path, nonce: bool) -> (String, Duration) {
    timed(|| openssl_ocsp(env, port, cert, nonce))
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

#[test]
fn a_database_outage_fails_fast_serves_what_is_held_and_recovers_without_a_restart() {
    let pg = OwnPostgres::start();
    let mut env = Env::with_extra(
        Db::Postgres,
        Keys::Software,
        "\n[ocsp]\nvalidity_seconds = 30\nrefresh_seconds = 2\n",
    );
    env.db_url = pg.url();
    env.init();
    let line = client(&env, "personalization-line", "LINE-DB");
    let operator = client(&env, "operator", "OP-DB");
    let csr = env.csr("db-outage", "ec");
    let subject = r#"{"pinfl":"PINFL","surname":"Oʻrinboyeva","given_name":"Gulnoza","patronymic":"Abdugʻaniyevna"}"#
        .replace("PINFL", &pinfl("4290228201007"));
    let cert = env.issue("individual-auth", &csr, &subject, "db-outage");
    let (_server, http, mtls) = start_ra(&env);

    // Before: OCSP answers (and caches), the CRL is fetched (and held).
    let (good, _) = ocsp(&env, http, &cert, false);
    assert!(good.contains(": good"), "{good}");
    let signed_at = Instant::now();
    let (crl_status, _, crl_before) = get(http, "/crl/issuing.crl");
    assert_eq!(crl_status, 200);
    assert_eq!(get(http, "/healthz").0, 200);

    pg.down();
    let stopped = Instant::now();
    // Health: each answer at once, and 503 naming the database as soon as
    // its once-a-second check has failed.
    let h = loop {
        let ((status, _, body), took) = timed(|| get(http, "/healthz"));
        assert!(took < Duration::from_millis(1500), "/healthz took {took:?}");
        if status == 503 {
            break serde_json::from_slice::<Value>(&body).unwrap();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "/healthz still 200 five seconds into the outage"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(h["database"]["status"], "unavailable", "{h}");
    assert_eq!(h["key_store"]["status"], "ok", "{h}");

    // The CRL in memory, once the database wait (2 s) has failed.
    let ((status, head, der), took) = timed(|| get(http, "/crl/issuing.crl"));
    assert_eq!(status, 200, "{head}");
    assert_eq!(der, crl_before);
    assert!(took < Duration::from_secs(4), "the CRL took {took:?}");

    // A card: 503 with Retry-After, within the database wait (2 s), not 30 s.
    let body = card(&env, "db-outage-1", 7, "AB0000007", "1726273");
    let card_call = || {
        call(
            &env,
            mtls,
            Some(&line),
            "POST",
            "/api/v1/personalization/cards",
            Some(&body),
        )
    };
    let ((code, v), took) = timed(card_call);
    assert_eq!(code, 503, "{v}");
    assert!(
        !v.to_string().contains("postgres"),
        "raw database error: {v}"
    );
    assert!(took < Duration::from_secs(5), "the refusal took {took:?}");

    // An operator's look-up: 503 (the registry answer may be cached, the
    // certificate is not), never a 500.
    let serial = serial_of(&cert);
    let ((code, v), took) = timed(|| {
        call(
            &env,
            mtls,
            Some(&operator),
            "GET",
            &format!("/api/v1/operator/certificates/{serial}"),
            None,
        )
    });
    assert_eq!(code, 503, "{v}");
    assert!(took < Duration::from_secs(5), "the refusal took {took:?}");

    // /metrics answers, and says the database is down.
    let ((status, _, m), took) = timed(|| get(http, "/metrics"));
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&m).contains("muhr_database_up 0"));
    assert!(took < Duration::from_secs(3), "/metrics took {took:?}");

    // OCSP: past the refresh time the cached response is still served, at
    // once (the change feed is known to be down), while before its nextUpdate.
    while stopped.elapsed() < Duration::from_secs(3) || signed_at.elapsed() < Duration::from_secs(3)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (stale, took) = ocsp(&env, http, &cert, false);
    assert!(stale.contains(": good"), "{stale}");
    assert!(
        took < Duration::from_millis(1500),
        "the cached response took {took:?}"
    );
    // A nonce needs a live status: tryLater, within the database wait.
    let (live, took) = ocsp(&env, http, &cert, true);
    assert!(live.to_ascii_lowercase().contains("trylater"), "{live}");
    assert!(took < Duration::from_secs(5), "tryLater took {took:?}");
    // Past its nextUpdate (30 s: room for everything above on a loaded
    // machine) a cached response is never served.
    assert!(
        signed_at.elapsed() < Duration::from_secs(28),
        "the checks above took too long to prove anything about nextUpdate"
    );
    while signed_at.elapsed() < Duration::from_secs(31) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (expired, _) = ocsp(&env, http, &cert, false);
    assert!(
        expired.to_ascii_lowercase().contains("trylater"),
        "{expired}"
    );

    // Back: everything recovers without a restart.
    pg.up();
    let back = Instant::now();
    while get(http, "/healthz").0 != 200 {
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "still unhealthy 30 s after the database came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (fresh, _) = ocsp(&env, http, &cert, true);
    assert!(fresh.contains(": good"), "{fresh}");
    let (code, v) = card_call();
    assert_eq!(code, 200, "{v}");
    let (status, _, m) = get(http, "/metrics");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&m).contains("muhr_database_up 1"));
}

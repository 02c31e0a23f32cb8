//! The HSM token taken away under load, then given back, with `muhr serve`
//! on SoftHSM2: the key store marks itself down at once (health 503 naming
//! it, the gauge at 0, cards answered 503 with Retry-After and never 500,
//! OCSP answering from its cache), and when the token is back signing
//! resumes without a restart. Every card is issued exactly once: the ones
//! refused during the outage succeed when retried with the same request id.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::ra::{call, client};
use common::*;

const CARDS_PATH: &str = "/api/v1/personalization/cards";

/// Card `i`: people born from the 1920s to the 2020s, leap days among them,
/// names with Uzbek ʻ and ʼ and in Cyrillic, several Tashkent districts (the pilot).
fn card(i: u32, csrs: &[String]) -> Value {
    let year = 1924 + (i * 7) % 100;
    let (month, day) = match i % 5 {
        0 if year.is_multiple_of(4) => (2, 29),
        1 => (12, 31),
        2 => (1, 1),
        _ => (1 + i % 12, 1 + i % 28),
    };
    let century = if year >= 2000 { 5 } else { 3 } + i % 2;
    let first13 = format!(
        "{century}{day:02}{month:02}{:02}{:03}{:03}",
        year % 100,
        [123, 201, 350, 412, 999][(i % 5) as usize],
        1 + i % 999
    );
    let (surname, given) = [
        ("Gʻofurov", "Oʻktam"),
        ("Karimova", "Maʼmura"),
        ("Исмоилов", "Шерзод"),
        ("Tursunboyeva-Xoʻjayeva", "Dilafroʻz"),
    ][(i % 4) as usize];
    let office = ["1726273", "1726262", "1726294"][(i % 3) as usize];
    json!({
        "request_id": format!("outage-card-{i}"),
        "person": {
            "pinfl": pinfl(&first13),
            "surname": surname,
            "given_name": given,
            "birth_date": format!("{year}-{month:02}-{day:02}"),
        },
        "document": {
            "number": format!("AD{:07}", 1000 + i),
            "issued_on": "2025-06-01",
            "expires_on": "2035-05-31",
            "issuing_office": office,
        },
        "keys": {
            "auth": csrs[(i % 4) as usize],
            "sign": csrs[4 + (i % 4) as usize],
        }
    })
}

fn health(port: u16) -> (u16, Value) {
    let (status, _, body) = get(port, "/healthz");
    (status, serde_json::from_slice(&body).unwrap())
}

fn key_store_up(port: u16) -> String {
    let (_, _, body) = get(port, "/metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with("muhr_key_store_up "))
        .expect("muhr_key_store_up in /metrics")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_token_lost_under_load_is_unavailable_then_recovers_without_a_restart_issuing_every_card_once()
{
    let env = Env::with_extra(Db::Sqlite, Keys::SoftHsm, "");
    env.init();
    let line = client(&env, "personalization-line", "LINE-OUTAGE");
    let csrs: Vec<String> = (0..8)
        .map(|k| common::ra::chip_csr(&env, &format!("outage-chip-{k}")))
        .collect();
    let (_server, http, mtls) = start_ra(&env);
    let mut answers: BTreeMap<String, Value> = BTreeMap::new();
    let mut unavailable: BTreeSet<u32> = BTreeSet::new();
    let submit =
        |i: u32, answers: &mut BTreeMap<String, Value>, unavailable: &mut BTreeSet<u32>| -> u16 {
            let body = card(i, &csrs);
            let (code, v) = call(&env, mtls, Some(&line), "POST", CARDS_PATH, Some(&body));
            assert!(
                code == 200 || code == 503,
                "card {i}: {code} {v} (an HSM outage is a 503, never a 500)"
            );
            if code == 200 {
                answers.insert(format!("outage-card-{i}"), v);
            } else {
                assert_eq!(v["error"]["field"], "-", "{v}");
                assert!(
                    v["error"]["rule"].as_str().unwrap().contains("unavailable"),
                    "{v}"
                );
                unavailable.insert(i);
            }
            code
        };

    // Before: cards issued, OCSP answers and caches.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (i, last, load) = std::thread::scope(|scope| {
        // Load all along: another line's worth of cards, one after another.
        let load = scope.spawn(|| {
            let (mut a, mut u) = (BTreeMap::new(), BTreeSet::new());
            let mut k = 500;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                submit(k, &mut a, &mut u);
                k += 1;
            }
            (a, u, k)
        });
        for i in 0..4 {
            assert_eq!(submit(i, &mut answers, &mut unavailable), 200);
        }
        assert_eq!(health(http).0, 200);
        assert_eq!(key_store_up(http), "1");
        let cert = env.write(
            "outage-0.pem",
            answers["outage-card-0"]["certificates"]["auth"]["pem"]
                .as_str()
                .unwrap(),
        );
        assert!(openssl_ocsp(&env, http, &cert, false).contains(": good"));

        // The token goes away.
        let tokens = env.dir.path().join("tokens");
        let away = env.dir.path().join("tokens.away");
        std::fs::rename(&tokens, &away).unwrap();
        let gone = Instant::now();
        let mut i = 4;
        let mut saw_down = false;
        while gone.elapsed() < Duration::from_secs(20) {
            submit(i, &mut answers, &mut unavailable);
            i += 1;
            let (status, h) = health(http);
            if status == 503 {
                assert_eq!(h["key_store"]["status"], "unavailable", "{h}");
                assert_eq!(h["database"]["status"], "ok", "{h}");
                assert_eq!(key_store_up(http), "0");
                saw_down = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            saw_down,
            "/healthz still 200 twenty seconds after the token went away"
        );
        // While it is down: cards are 503 (with Retry-After), fast.
        for _ in 0..3 {
            let t = Instant::now();
            assert_eq!(
                submit(i, &mut answers, &mut unavailable),
                503,
                "a card signed without a token"
            );
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "a refusal took {:?}",
                t.elapsed()
            );
            i += 1;
        }
        let out = Command::new("curl")
            .args(["-s", "-D", "-", "-o", "/dev/null", "--cacert"])
            .arg(env.root_pem())
            .arg("--cert")
            .arg(&line)
            .args(["-H", "content-type: application/json", "--data-binary"])
            .arg(card(i, &csrs).to_string())
            .arg(format!("https://localhost:{mtls}{CARDS_PATH}"))
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            head.contains(" 503") && head.contains("retry-after:"),
            "{head}"
        );
        unavailable.insert(i);
        i += 1;
        // OCSP: the cached response is still served; a nonce (signed live) is tryLater.
        assert!(openssl_ocsp(&env, http, &cert, false).contains(": good"));
        let live = openssl_ocsp(&env, http, &cert, true);
        assert!(live.to_ascii_lowercase().contains("trylater"), "{live}");

        // The token comes back: signing resumes without a restart.
        std::fs::rename(&away, &tokens).unwrap();
        let back = Instant::now();
        loop {
            assert!(
                back.elapsed() < Duration::from_secs(30),
                "still down 30 s after the token came back: {:?}",
                health(http)
            );
            if health(http).0 == 200 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(key_store_up(http), "1");
        assert_eq!(submit(i, &mut answers, &mut unavailable), 200);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (i, i, load.join().unwrap())
    });
    let _ = i;
    let (load_answers, load_unavailable, load_end) = load;
    answers.extend(load_answers);
    unavailable.extend(load_unavailable);

    // Every card refused during the outage, retried with its request id.
    for j in unavailable.clone() {
        assert_eq!(
            submit(j, &mut answers, &mut unavailable),
            200,
            "retry of card {j}"
        );
    }
    // Each card has exactly its two certificates, the ones its answer named.
    let mut by_job: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in env.sql(
        "SELECT job || ' ' || serial FROM certificates WHERE job IS NOT NULL AND status = 'issued'",
    ) {
        let (job, serial) = row.split_once(' ').unwrap();
        let job = job.strip_prefix("LINE-OUTAGE/").unwrap();
        by_job
            .entry(job.to_string())
            .or_default()
            .push(serial.to_string());
    }
    assert_eq!(
        by_job.len(),
        (last + 1 + load_end - 500) as usize,
        "{by_job:?}"
    );
    for (job, v) in &answers {
        let mut want = vec![
            v["certificates"]["auth"]["serial"]
                .as_str()
                .unwrap()
                .to_string(),
            v["certificates"]["sign"]["serial"]
                .as_str()
                .unwrap()
                .to_string(),
        ];
        want.sort();
        let mut got = by_job[job].clone();
        got.sort();
        assert_eq!(got, want, "card {job}");
    }
    assert!(!unavailable.is_empty());
    // The operator's log tells both transitions.
    let log = std::fs::read_to_string(env.path(&format!("serve-{http}.log"))).unwrap();
    assert!(
        log.contains("key store down; reconnecting in the background"),
        "{log}"
    );
    assert!(log.contains("key store back; signing resumed"), "{log}");
    assert!(!log.contains(PIN), "the PIN reached the log");
}

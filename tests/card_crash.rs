//! A batch interrupted by SIGKILL, then retried: every card is issued exactly
//! once, and cards finished before the crash come back with their certificates.

mod common;

use std::collections::BTreeMap;

use common::ra::{call, client, person_pinfl};
use common::{Db, Env, Keys, start_ra};
use serde_json::{Value, json};

const CARDS: u32 = 300;

fn batch(env: &Env) -> Value {
    let csrs: Vec<String> = (0..20)
        .map(|i| common::ra::chip_csr(env, &format!("chip-{i}")))
        .collect();
    let cards: Vec<Value> = (0..CARDS)
        .map(|i| {
            json!({
                "request_id": format!("card-{i}"),
                "person": {
                    "pinfl": person_pinfl(i),
                    "surname": "Yusupova",
                    "given_name": "Malika",
                    "birth_date": "1985-05-15",
                },
                "document": {
                    "number": format!("AE{:07}", i),
                    "issued_on": "2025-06-01",
                    "expires_on": "2035-05-31",
                    "issuing_office": "1726273",
                },
                "keys": {
                    "auth": csrs[(i % 10) as usize],
                    "sign": csrs[10 + (i % 10) as usize],
                }
            })
        })
        .collect();
    json!({ "cards": cards })
}

/// job -> serials of its issued certificates.
fn issued(env: &Env) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in env.sql(
        "SELECT job || ' ' || serial FROM certificates WHERE job IS NOT NULL AND status = 'issued' ORDER BY job, serial",
    ) {
        let (job, serial) = row.split_once(' ').unwrap();
        m.entry(job.to_string()).or_default().push(serial.to_string());
    }
    m
}

fn kill_mid_batch(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let line = client(&env, "personalization-line", "LINE-01");
    let body = batch(&env);
    let (mut server, _http, port) = start_ra(&env);
    let before = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            call(
                &env,
                port,
                Some(&line),
                "POST",
                "/api/v1/personalization/batches",
                Some(&body),
            )
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        // Some cards finished, the rest under way or not begun.
        while env.sql("SELECT COUNT(*) FROM card_jobs WHERE state = 'done'")[0]
            .parse::<u32>()
            .unwrap()
            < 10
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the batch never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        server.0.kill().unwrap();
        server.0.wait().unwrap();
        let (code, _) = sender.join().unwrap();
        assert_ne!(
            code, 200,
            "the batch finished before the kill: nothing was tested"
        );
        issued(&env)
    });
    let pending = env.sql("SELECT COUNT(*) FROM card_jobs WHERE state = 'pending'")[0].clone();
    eprintln!(
        "killed with {} jobs holding issued certificates, {pending} jobs pending",
        before.len()
    );

    let (_server, _http, port) = start_ra(&env);
    let (code, answer) = call(
        &env,
        port,
        Some(&line),
        "POST",
        "/api/v1/personalization/batches",
        Some(&body),
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["succeeded"], CARDS, "{answer}");
    assert_eq!(answer["failed"], 0);
    let after = issued(&env);
    assert_eq!(after.len(), CARDS as usize);
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM certificates WHERE job IS NOT NULL")[0],
        (2 * CARDS).to_string(),
        "every card exactly once"
    );
    for r in answer["results"].as_array().unwrap() {
        let job = format!("LINE-01/{}", r["request_id"].as_str().unwrap());
        let mut got = vec![
            r["certificates"]["auth"]["serial"]
                .as_str()
                .unwrap()
                .to_string(),
            r["certificates"]["sign"]["serial"]
                .as_str()
                .unwrap()
                .to_string(),
        ];
        got.sort();
        assert_eq!(after[&job], got, "{job}");
    }
    // What was issued before the crash is what the retry returned.
    for (job, serials) in &before {
        for s in serials {
            assert!(after[job].contains(s), "{job} lost {s}");
        }
    }
    assert_eq!(env.count("card_jobs"), CARDS as i64);
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM card_jobs WHERE state = 'done'")[0],
        CARDS.to_string()
    );
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM certificates WHERE status = 'pending'")[0],
        "0"
    );
    assert!(env.ok(&["audit", "verify"]).contains("intact"));
    if db == Db::Postgres {
        // Finishing a job changes no indexed column (migration 0009).
        env.updates_are_hot("card_jobs", CARDS as i64);
    }
}

both_databases! {
    sigkill_mid_batch_then_retry_issues_each_card_once => kill_mid_batch;
}

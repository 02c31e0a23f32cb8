//! `muhr serve`: health, metrics, and the CA certificates at the caIssuers URL
//! written into certificates, fetched like a relying party would.

use std::time::{Duration, Instant};

mod common;
use common::*;

fn health_metrics_and_ca_certificates(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let cert = env.issue("individual-sign", &env.csr("p", "ec"), &person(), "c");
    let (_server, port) = start(&env, &[]);

    let (status, _, body) = get(port, "/healthz");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(
        health["database"]["backend"],
        if db == Db::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );

    let (status, head, body) = get(port, "/metrics");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"));
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("muhr_certificates{profile=\"individual-sign\",status=\"issued\"} 1"),
        "{text}"
    );
    assert!(text.contains("muhr_signing_seconds_count"), "{text}");
    assert!(text.contains("muhr_database_up 1"), "{text}");

    // Follow the certificate's own caIssuers URL (it names 127.0.0.1:8080, the
    // default; here the server listens elsewhere, so keep only the path).
    let text = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"]);
    let url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("CA Issuers - URI:"))
        .unwrap();
    let path = &url[url.find("/ca/").unwrap()..];
    let (status, head, der) = get(port, path);
    assert_eq!(status, 200);
    assert!(head.contains("application/pkix-cert"), "{head}");
    let fetched = env.write("fetched.cer", &der);
    let pem = openssl(&["x509", "-inform", "DER", "-in", fetched.to_str().unwrap()]);
    assert_eq!(pem, std::fs::read_to_string(env.issuing_pem()).unwrap());
    let (status, _, root) = get(port, "/ca/root.pem");
    assert_eq!(status, 200);
    assert_eq!(root, std::fs::read(env.root_pem()).unwrap());

    let (status, _, body) = get(port, "/no/such/thing");
    assert_eq!(status, 404);
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["error"]["field"], "path");
}

fn healthz_fails_when_the_database_is_gone(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let (_server, port) = start(&env, &[]);
    assert_eq!(get(port, "/healthz").0, 200);
    // SQLite cannot vanish underneath an open connection, so with it the key
    // store is taken away; with PostgreSQL the database refuses connections.
    match db {
        Db::Sqlite => {
            let keys = env.data().join("keys");
            std::fs::rename(&keys, env.data().join("keys.gone")).unwrap();
        }
        Db::Postgres => {
            let name = env.db_url.rsplit('/').next().unwrap().to_string();
            admin_sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
            admin_sql(&format!(
                "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity WHERE datname = '{name}'"
            ));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, body) = get(port, "/healthz");
        if status == 503 {
            let h: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(h["status"], "unavailable");
            let (broken, fine) = if db == Db::Sqlite {
                ("key_store", "database")
            } else {
                ("database", "key_store")
            };
            assert_ne!(h[broken]["status"], "ok", "{h}");
            assert_eq!(h[fine]["status"], "ok", "{h}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "healthz kept answering 200 without a database"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A revocation made by another process (the CLI) reaches the delta CRL this
/// server serves within seconds (the server follows the database's change
/// feed); every CRL a certificate names is served with caching headers.
fn served_crl_follows_the_change_feed(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let cert = env.issue("individual-auth", &env.csr("p", "ec"), &person(), "c");
    let serial = serial_of(&cert);
    let text = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"]);
    let paths: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("URI:http://127.0.0.1:8080"))
        .filter(|p| p.starts_with("/crl/"))
        .map(String::from)
        .collect();
    // The shard's complete CRL and its delta.
    assert_eq!(paths.len(), 2, "{text}");
    assert!(paths[1].ends_with("-delta.crl"), "{paths:?}");
    let (_server, port) = start(&env, &[]);
    let fetch = |path: &str| -> Option<(String, String)> {
        let (status, head, der) = get(port, path);
        if status != 200 {
            return None;
        }
        Some((head, crl_text(&env, "served.crl", &der)))
    };
    // The updater makes the issuing CA's CRLs, then the root's.
    let deadline = Instant::now() + Duration::from_secs(20);
    let wait_for = |path: &str| loop {
        if let Some(r) = fetch(path) {
            break r;
        }
        assert!(Instant::now() < deadline, "{path} not served");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (head, text) = wait_for("/crl/issuing.crl");
    assert!(head.contains("application/pkix-crl"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("etag: \"issuing-"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("last-modified: "),
        "{head}"
    );
    assert!(text.contains("No Revoked Certificates"), "{text}");
    let etag = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("etag: ")
                .or_else(|| l.strip_prefix("ETag: "))
        })
        .expect("an ETag")
        .to_string();
    let (status, _, body) = get_with(
        port,
        "/crl/issuing.crl",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!((status, body.len()), (304, 0));
    for path in [
        "/crl/root.crl",
        "/crl/root-delta.crl",
        "/crl/issuing-delta.crl",
    ] {
        wait_for(path);
    }
    let (_, shard) = wait_for(&paths[0]);
    assert!(
        shard.contains("Issuing Distribution Point: critical"),
        "{shard}"
    );
    assert!(get(port, "/crl/issuing-99.crl").0 == 404);
    assert!(get(port, "/crl/other.crl").0 == 404);

    env.ok(&["revoke", &serial, "--reason", "affiliationChanged"]);
    let revoked_at = Instant::now();
    for path in [paths[1].as_str(), "/crl/issuing-delta.crl"] {
        loop {
            let (head, text) = fetch(path).unwrap();
            if text.contains(&serial) {
                assert!(text.contains("Affiliation Changed"), "{text}");
                assert!(text.contains("Delta CRL Indicator: critical"), "{text}");
                assert!(
                    head.contains("max-age=60") || head.contains("max-age=59"),
                    "{head}"
                );
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(5),
                "revocation not in the served delta CRL {path} after 5 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

both_databases! {
    served_crl_follows_changes => served_crl_follows_the_change_feed;
    health_metrics_and_ca_certificates => health_metrics_and_ca_certificates;
    healthz_fails_without_database => healthz_fails_when_the_database_is_gone;
}

/// Two nodes on one PostgreSQL database: only the holder of the advisory lock
/// generates CRLs, and both serve them.
#[test]
fn one_crl_generator_among_nodes() {
    let env = Env::new(Db::Postgres, Keys::Software);
    env.init();
    let cert = env.issue("individual-auth", &env.csr("p", "ec"), &person(), "c");
    let (_a, port_a) = start(&env, &[]);
    let (_b, port_b) = start(&env, &[]);
    let crls = |kind: &str| -> i64 {
        env.sql(&format!(
            "SELECT COUNT(*) FROM crls WHERE issuer = 'issuing' AND shard = -1 AND kind = '{kind}'"
        ))[0]
            .parse()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while crls("delta") < 1 {
        assert!(Instant::now() < deadline, "no CRL generated");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        (crls("full"), crls("delta")),
        (1, 1),
        "both nodes generated CRLs at start"
    );
    let serial = serial_of(&cert);
    env.ok(&["revoke", &serial, "--reason", "superseded"]);
    std::thread::sleep(Duration::from_secs(3));
    // The complete CRL waits for `crl.complete_min_seconds`; the delta follows.
    assert_eq!(
        (crls("full"), crls("delta")),
        (1, 2),
        "one delta per change, from one node"
    );
    for port in [port_a, port_b] {
        let (status, _, der) = get(port, "/crl/issuing-delta.crl");
        assert_eq!(status, 200);
        let text = crl_text(&env, &format!("n{port}.crl"), &der);
        assert!(text.contains("Superseded"), "{text}");
    }
}

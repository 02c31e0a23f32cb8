//! OCSP as relying parties use it: `openssl ocsp` against `muhr serve` and
//! `muhr ocsp`, by POST and GET, with and without nonce; good, revoked with
//! reason, suspended, unknown, unauthorized and malformed; status changes seen
//! within a second; the responder running without any CA key.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// `openssl ocsp` by POST; returns its whole output (stdout and stderr).
fn ask(env: &Env, port: u16, certs: &[&PathBuf], nonce: bool) -> String {
    let url = format!("http://127.0.0.1:{port}/ocsp");
    let (issuer, root) = (env.issuing_pem(), env.root_pem());
    let mut args = vec!["ocsp", "-issuer", issuer.to_str().unwrap()];
    for c in certs {
        args.extend(["-cert", c.to_str().unwrap()]);
    }
    args.extend(["-url", url.as_str(), "-CAfile", root.to_str().unwrap()]);
    if !nonce {
        args.push("-no_nonce");
    }
    let out = openssl_output(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl ocsp failed:\n{text}");
    text
}

/// The request OpenSSL would send, by GET, verified with `openssl ocsp -respin`.
fn ask_by_get(env: &Env, port: u16, cert: &Path) -> String {
    let req = env.path("get-req.der");
    openssl(&[
        "ocsp",
        "-issuer",
        env.issuing_pem().to_str().unwrap(),
        "-cert",
        cert.to_str().unwrap(),
        "-no_nonce",
        "-reqout",
        req.to_str().unwrap(),
    ]);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&req).unwrap());
    let encoded: String = b64
        .chars()
        .map(|c| match c {
            '+' => "%2B".to_string(),
            '/' => "%2F".to_string(),
            '=' => "%3D".to_string(),
            c => c.to_string(),
        })
        .collect();
    let (status, head, body) = get(port, &format!("/ocsp/{encoded}"));
    assert_eq!(status, 200);
    assert!(head.contains("application/ocsp-response"), "{head}");
    assert!(head.contains("max-age="), "cacheable: {head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("etag: ")
            && lower.contains("last-modified: ")
            && lower.contains("expires: "),
        "{head}"
    );
    let resp = env.write("get-resp.der", &body);
    lint_ocsp(&resp);
    let out = openssl_output(&[
        "ocsp",
        "-respin",
        resp.to_str().unwrap(),
        "-issuer",
        env.issuing_pem().to_str().unwrap(),
        "-cert",
        cert.to_str().unwrap(),
        "-CAfile",
        env.root_pem().to_str().unwrap(),
    ]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn lint_ocsp(der: &Path) {
    require("lint_ocsp_response");
    let out = std::process::Command::new("lint_ocsp_response")
        .args(["lint", "-s", "NOTICE", der.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "lint_ocsp_response:\n{text}"
    );
}

fn statuses(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let csr = env.csr("k", "ec");
    let good = env.issue("individual-auth", &csr, &person(), "good");
    let revoked = env.issue("individual-sign", &csr, &person(), "revoked");
    let held = env.issue("individual-sign", &csr, &person(), "held");
    env.ok(&["revoke", &serial_of(&revoked), "--reason", "keyCompromise"]);
    let (_server, port) = start(&env, &[]);

    for nonce in [true, false] {
        let out = ask(&env, port, &[&good, &revoked], nonce);
        assert!(out.contains("Response verify OK"), "{out}");
        assert!(out.contains("good.pem: good"), "{out}");
        assert!(
            out.contains("revoked.pem: revoked") && out.contains("Reason: keyCompromise"),
            "{out}"
        );
        assert!(!out.contains("WARNING: no nonce in response"), "{out}");
    }
    let out = ask_by_get(&env, port, &good);
    assert!(
        out.contains("Response verify OK") && out.contains(": good"),
        "{out}"
    );
    let out = ask_by_get(&env, port, &revoked);
    assert!(
        out.contains(": revoked") && out.contains("keyCompromise"),
        "{out}"
    );

    // A serial this CA never issued: unknown.
    let out = openssl_output(&[
        "ocsp",
        "-issuer",
        env.issuing_pem().to_str().unwrap(),
        "-serial",
        "0x4A0B0C",
        "-url",
        &format!("http://127.0.0.1:{port}/ocsp"),
        "-CAfile",
        env.root_pem().to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0x4A0B0C: unknown"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The attacker asks the issuing CA about a serial it never issued but
    // the database holds under another issuer: the issuing CA's own
    // certificate (issued by the root), and the root's. Unknown, never good.
    for ca in [env.issuing_pem(), env.root_pem()] {
        let serial = format!("0x{}", serial_of(&ca));
        let out = openssl_output(&[
            "ocsp",
            "-issuer",
            env.issuing_pem().to_str().unwrap(),
            "-serial",
            &serial,
            "-url",
            &format!("http://127.0.0.1:{port}/ocsp"),
            "-CAfile",
            env.root_pem().to_str().unwrap(),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("{serial}: unknown")),
            "a CA serial asked of the issuing CA: {text}"
        );
    }

    // Another issuer: unauthorized.
    let other = env.path("other.pem");
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        env.path("other.key").to_str().unwrap(),
        "-subj",
        "/CN=Other CA",
        "-out",
        other.to_str().unwrap(),
    ]);
    let out = openssl_output(&[
        "ocsp",
        "-issuer",
        other.to_str().unwrap(),
        "-serial",
        "0x01",
        "-url",
        &format!("http://127.0.0.1:{port}/ocsp"),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Responder Error: unauthorized (6)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Garbage, empty, truncated: malformedRequest, by POST and GET, never a 500.
    let req = env.path("get-req.der");
    let valid = std::fs::read(&req).unwrap();
    for body in [
        b"garbage".to_vec(),
        Vec::new(),
        valid[..valid.len() / 2].to_vec(),
        vec![0x30, 0x80, 0x00, 0x00],
    ] {
        let (status, _, resp) = post(port, "/ocsp", "application/ocsp-request", &body);
        assert_eq!(status, 200);
        assert_eq!(resp, [0x30, 0x03, 0x0a, 0x01, 0x01], "malformedRequest");
    }
    for path in ["/ocsp/not-base64!!", "/ocsp/AAAA", "/ocsp/%2F%2F"] {
        let (status, _, resp) = get(port, path);
        assert_eq!(status, 200, "{path}");
        assert_eq!(resp, [0x30, 0x03, 0x0a, 0x01, 0x01], "{path}");
    }

    // A suspension made by another process is visible within a second, and so
    // is the restoration.
    let out = ask(&env, port, &[&held], false);
    assert!(out.contains("held.pem: good"), "{out}");
    for (cmd, want) in [
        ("suspend", "Reason: certificateHold"),
        ("restore", "held.pem: good"),
    ] {
        env.ok(&[cmd, &serial_of(&held)]);
        let changed = Instant::now();
        loop {
            let out = ask(&env, port, &[&held], false);
            if out.contains(want) {
                break;
            }
            assert!(
                changed.elapsed() < Duration::from_secs(1),
                "{cmd} not visible in OCSP within 1 s:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `muhr ocsp` alone answers with the delegated signer after the CA keys are
/// gone from its key store: it never needs them.
fn standalone_without_ca_keys(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let cert = env.issue("individual-auth", &env.csr("k", "ec"), &person(), "c");
    {
        // `muhr serve` (which holds the CA key) makes the delegated signer.
        let (_server, _port) = start(&env, &[]);
    }
    for key in ["muhr-root", "muhr-issuing"] {
        std::fs::remove_file(env.data().join(format!("keys/{key}.p8.pem"))).unwrap();
    }
    let (_ocsp, port) = start_with(&env, "ocsp", &[]);
    let out = ask(&env, port, &[&cert], true);
    assert!(
        out.contains("Response verify OK") && out.contains("c.pem: good"),
        "{out}"
    );
}

both_databases! {
    good_revoked_unknown_unauthorized_malformed => statuses;
    standalone_responder_needs_no_ca_key => standalone_without_ca_keys;
}

/// Stale-if-error: with the database gone, a response cached earlier is served
/// again (while before its nextUpdate) instead of a fresh one; a request that
/// needs a fresh answer (a nonce) gets tryLater, never `good`.
#[test]
fn stale_if_error_when_the_database_is_gone() {
    let env = Env::with_extra(
        Db::Postgres,
        Keys::Software,
        "\n[ocsp]\nrefresh_seconds = 1\n",
    );
    env.init();
    let cert = env.issue("individual-auth", &env.csr("k", "ec"), &person(), "c");
    let (_server, port) = start(&env, &[]);
    let req = env.path("stale-req.der");
    openssl(&[
        "ocsp",
        "-issuer",
        env.issuing_pem().to_str().unwrap(),
        "-cert",
        cert.to_str().unwrap(),
        "-no_nonce",
        "-reqout",
        req.to_str().unwrap(),
    ]);
    let body = std::fs::read(&req).unwrap();
    let (_, _, first) = post(port, "/ocsp", "application/ocsp-request", &body);
    assert!(first.len() > 100, "a signed response");

    let name = env.db_url.rsplit('/').next().unwrap().to_string();
    admin_sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
    admin_sql(&format!(
        "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity WHERE datname = '{name}'"
    ));
    // Past the refresh time and past the status cache's trust in the feed.
    std::thread::sleep(Duration::from_millis(3500));

    let (status, _, again) = post(port, "/ocsp", "application/ocsp-request", &body);
    assert_eq!(status, 200);
    assert_eq!(
        again, first,
        "the cached response is served again, unchanged"
    );
    let resp = env.write("stale.der", &again);
    let out = openssl_output(&[
        "ocsp",
        "-respin",
        resp.to_str().unwrap(),
        "-issuer",
        env.issuing_pem().to_str().unwrap(),
        "-cert",
        cert.to_str().unwrap(),
        "-CAfile",
        env.root_pem().to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("c.pem: good"));

    // With a nonce it must be fresh: tryLater (OCSPResponseStatus 3).
    let live = env.path("live-req.der");
    openssl(&[
        "ocsp",
        "-issuer",
        env.issuing_pem().to_str().unwrap(),
        "-cert",
        cert.to_str().unwrap(),
        "-reqout",
        live.to_str().unwrap(),
    ]);
    let (_, _, resp) = post(
        port,
        "/ocsp",
        "application/ocsp-request",
        &std::fs::read(&live).unwrap(),
    );
    assert_eq!(resp, [0x30, 0x03, 0x0a, 0x01, 0x03]);
    let (_, _, metrics) = get(port, "/metrics");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("muhr_ocsp_stale_served_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("muhr_ocsp_try_later_total 1"), "{metrics}");
    // The one cached response, counted in the bounded cache.
    assert!(
        metrics.contains("muhr_ocsp_cache_entries{cache=\"responses\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("muhr_ocsp_cache_bytes{cache=\"responses\"} "),
        "{metrics}"
    );
    admin_sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
}

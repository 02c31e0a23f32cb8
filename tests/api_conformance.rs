//! Each listener's `/openapi.json` describes exactly the routes it serves,
//! and a schema-based fuzzer (schemathesis) sent at both listeners for a
//! bounded time finds no server error, no undocumented status, no response
//! that breaks its documented schema or content type.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::oidc::Provider;
use common::ra::client;
use common::*;

/// Seconds of fuzzing per listener (MUHR_API_FUZZ_SECONDS overrides).
fn budget() -> String {
    std::env::var("MUHR_API_FUZZ_SECONDS").unwrap_or_else(|_| "30".into())
}

fn curl_status(env: &Env, mtls: u16, cert: &Path, method: &str, path: &str) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .arg("--cacert")
        .arg(env.root_pem())
        .arg("--cert")
        .arg(cert)
        .arg(format!("https://localhost:{mtls}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn plain_status(port: u16, method: &str, path: &str) -> (u16, Value) {
    let (status, _, body) = if method == "GET" {
        get(port, path)
    } else {
        post(port, path, "application/json", b"")
    };
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The stack's answer for a path no route serves.
fn unrouted(status: u16, body: &Value) -> bool {
    status == 404 && body["error"]["field"] == "path"
}

/// `schemathesis run` at the description `url` for the time budget, with the
/// checks this test is about; `extra` adds TLS and filters.
fn schemathesis(dir: &Path, url: &str, extra: &[&str]) {
    let checks = "not_a_server_error,status_code_conformance,content_type_conformance,\
                  response_schema_conformance";
    let budget = budget();
    let mut args = vec![
        "run",
        url,
        "--checks",
        checks,
        "--max-time",
        &budget,
        "--workers",
        "2",
        "--request-timeout",
        "30",
    ];
    args.extend_from_slice(extra);
    let out = Command::new("schemathesis")
        .current_dir(dir)
        .env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/tests"))
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .args(&args)
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis {args:?}:\n{text}");
}

#[test]
fn each_listener_describes_exactly_its_routes_and_fuzzing_finds_no_5xx_nor_undocumented_status() {
    require("schemathesis");
    require("curl");
    let idp = Provider::start();
    // The TSA too (its clock unchecked here: answers timeNotAvailable
    // unless the kernel says synchronised, after parsing every request).
    let env = Env::with_extra(
        Db::Sqlite,
        Keys::Software,
        &(idp.config("") + "\n[tsa]\nenabled = true\n"),
    );
    env.init();
    let rp = env.ok(&["rp", "add", "--name", "Fuzz Bank", "--class", "commercial"]);
    let field = |k: &str| {
        rp.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {k} in {rp}"))
    };
    let (rp_id, rp_secret) = (field("id"), field("secret"));
    let operator = client(&env, "operator", "OP-FUZZ");
    let line = client(&env, "personalization-line", "LINE-FUZZ");
    let registry = client(&env, "registry", "REGISTRY-FUZZ");
    let (_server, http, mtls) = start_ra(&env);

    // Exactly the routes each listener serves.
    let (_, _, public_doc) = get(http, "/openapi.json");
    let public: Value = serde_json::from_slice(&public_doc).unwrap();
    let (code, private) = curl_status(&env, mtls, &operator, "GET", "/openapi.json");
    assert_eq!(code, 200);
    let all: Value = serde_json::from_str(muhr_http::openapi::OPENAPI).unwrap();
    for (path, item) in all["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{file}", "issuing.cer")
            .replace("{request}", "MAA")
            .replace(['{', '}'], "");
        let method = if item.get("get").is_some() {
            "GET"
        } else {
            "POST"
        };
        let (s, b) = plain_status(http, method, &concrete);
        assert_eq!(
            !unrouted(s, &b),
            public["paths"].get(path).is_some(),
            "public listener, {method} {path}: {s} {b}"
        );
        let (s, b) = curl_status(&env, mtls, &operator, method, &concrete);
        assert_eq!(
            !unrouted(s, &b),
            private["paths"].get(path).is_some(),
            "mTLS listener, {method} {path}: {s} {b}"
        );
    }

    // The fuzzer, with real credentials so it gets past authentication.
    let token = idp.es256(&idp.claims(&common::ra::person_pinfl(77)));
    let dir = env.dir.path();
    std::fs::write(
        dir.join("schemathesis.toml"),
        format!(
            "[auth.openapi.idToken]\nbearer = \"{token}\"\n\n[auth.openapi.relyingParty]\n\
             username = \"{rp_id}\"\npassword = \"{rp_secret}\"\n"
        ),
    )
    .unwrap();
    schemathesis(dir, &format!("http://127.0.0.1:{http}/openapi.json"), &[]);
    // The mutual-TLS listener: as an operator, then as a personalization
    // line on its own routes (each role is refused the other's with 403).
    let root = env.root_pem();
    for (cert, only) in [
        (&operator, "^/(api/v1/operator|api/v1/auth|openapi)"),
        (&line, "^/api/v1/personalization"),
        (&registry, "^/api/v1/registry"),
    ] {
        schemathesis(
            dir,
            &format!("https://localhost:{mtls}/openapi.json"),
            &[
                "--tls-verify",
                root.to_str().unwrap(),
                "--request-cert",
                cert.to_str().unwrap(),
                "--include-path-regex",
                only,
            ],
        );
    }
}

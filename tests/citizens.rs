//! Remote issuance to citizens authenticated by the identity system: a real
//! token issuer (keys made here, JWK Set over HTTP), Muhr's public listener,
//! OpenSSL checking what comes out. Each refusal names its reason and
//! writes nothing.
//!
//! Longer than 600 lines on purpose: one binary for the whole citizens'
//! API (linking each test file costs more than its tests).

mod common;

use common::oidc::{Provider, call, ec_jwk, ec_key, sign_es256, with_header};
use common::ra::person_pinfl;
use common::{Db, Env, Keys, openssl, start, verify_chain};
use serde_json::{Value, json};

const ISSUE: &str = "/api/v1/certificates";

fn csr(env: &Env, name: &str) -> String {
    std::fs::read_to_string(env.csr(name, "ec")).unwrap()
}

fn request(csr: &str, profile: &str) -> Value {
    json!({"csr": csr, "profile": profile})
}

/// What the servers of this test wrote, for a failure's message.
fn server_logs(env: &Env) -> String {
    std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

fn rule(v: &Value) -> String {
    v["error"]["rule"].as_str().unwrap_or_default().to_string()
}

fn remote_issuance(db: Db) {
    let idp = Provider::start();
    let env = Env::with_extra(
        db,
        Keys::Software,
        &idp.config("[citizens.rate_limits]\nperson_per_hour = 30\naddress_per_minute = 0"),
    );
    env.init();
    let me = person_pinfl(1);
    let other = person_pinfl(2);
    let dead = person_pinfl(3);
    let registry = env.write(
        "registry.csv",
        format!(
            "pinfl,surname,given_name,patronymic,birth_date,deceased_on\n\
             {dead},Karimov,Aziz,,1985-05-15,2024-01-02\n"
        ),
    );
    env.ok(&["registry", "import", registry.to_str().unwrap()]);
    let (_server, port) = start(&env, &[]);
    let token = idp.es256(&idp.claims(&me));

    // The happy path: the subject is the token's person, whatever the CSR says.
    let sign_csr = csr(&env, "sign");
    let (code, _, v) = call(
        port,
        "POST",
        ISSUE,
        Some(&token),
        Some(&request(&sign_csr, "individual-sign")),
    );
    assert_eq!(code, 201, "{v}");
    let serial = v["serial"].as_str().unwrap().to_string();
    let cert = env.write("sign.pem", v["pem"].as_str().unwrap());
    verify_chain(&env.data(), &cert);
    let text = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-subject",
        "-ext",
        "keyUsage",
    ]);
    assert!(text.contains(&me), "{text}");
    assert!(
        text.contains("TOSHMATOV") || text.contains("Toshmatov"),
        "{text}"
    );
    assert!(!text.contains("ignored by Muhr"), "{text}");
    assert!(text.contains("Non Repudiation"), "{text}");
    assert_eq!(v["chain"].as_array().unwrap().len(), 2);
    assert_eq!(v["replayed"], false);

    // A retry gets the same certificate; nothing new is signed.
    let count = env.count("certificates");
    let (code, _, again) = call(
        port,
        "POST",
        ISSUE,
        Some(&token),
        Some(&request(&sign_csr, "individual-sign")),
    );
    assert_eq!(
        (code, again["serial"].as_str()),
        (200, Some(serial.as_str())),
        "{again}"
    );
    assert_eq!(again["replayed"], true);
    assert_eq!(env.count("certificates"), count);

    // A stolen or leaked ID token mints nothing more: the token that issued
    // that certificate issues no other, for another key or profile.
    for (key, profile) in [
        (csr(&env, "thief-sign"), "individual-sign"),
        (csr(&env, "thief-auth"), "individual-auth"),
    ] {
        let (code, _, v) = call(
            port,
            "POST",
            ISSUE,
            Some(&token),
            Some(&request(&key, profile)),
        );
        assert_eq!(code, 409, "{profile}: {v}");
        assert!(rule(&v).contains("already been used"), "{v}");
    }
    assert_eq!(env.count("certificates"), count);
    // A token whose exp has a fraction (RFC 7519 allows it) is remembered as
    // long as any other.
    let mut fractional = idp.claims(&other);
    fractional["exp"] = json!(fractional["exp"].as_f64().unwrap() + 0.5);
    let fractional = idp.es256(&fractional);
    let (code, _, v) = call(
        port,
        "POST",
        ISSUE,
        Some(&fractional),
        Some(&request(&csr(&env, "frac-1"), "individual-sign")),
    );
    assert_eq!(code, 201, "{v}");
    let (code, _, v) = call(
        port,
        "POST",
        ISSUE,
        Some(&fractional),
        Some(&request(&csr(&env, "frac-2"), "individual-sign")),
    );
    assert_eq!(code, 409, "the same token again: {v}");

    // RS256 tokens are accepted as well.
    let rs = idp.rs256(&idp.claims(&me));
    let auth_csr = csr(&env, "auth");
    let (code, _, auth) = call(
        port,
        "POST",
        ISSUE,
        Some(&rs),
        Some(&request(&auth_csr, "individual-auth")),
    );
    assert_eq!(code, 201, "{auth}");
    let auth_serial = auth["serial"].as_str().unwrap().to_string();

    // One key, one purpose: the signing key asking for an authentication
    // certificate, and the reverse, are refused, and nothing is written.
    let count = env.count("certificates");
    for (key, profile) in [
        (&sign_csr, "individual-auth"),
        (&auth_csr, "individual-sign"),
    ] {
        let (code, _, v) = call(
            port,
            "POST",
            ISSUE,
            Some(&token),
            Some(&request(key, profile)),
        );
        assert_eq!(
            (code, v["error"]["field"].as_str()),
            (422, Some("csr")),
            "{profile}: {v}"
        );
        assert!(rule(&v).contains("its own key"), "{v}");
    }
    assert_eq!(env.count("certificates"), count);

    // Tokens that do not prove who the caller is: 401, a reason, nothing written.
    let count = env.count("certificates");
    let body = request(&csr(&env, "refused"), "individual-sign");
    let mut claims = idp.claims(&me);
    let stranger = ec_key();
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("someone-else");
    let mut expired = claims.clone();
    expired["exp"] = json!(expired["iat"].as_u64().unwrap() - 3600);
    let mut low = claims.clone();
    low["acr"] = json!("low");
    let mut foreign = claims.clone();
    foreign["iss"] = json!("https://idp.elsewhere");
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "required"),
        (
            "bad signature",
            Some(sign_es256(&stranger, "es-1", &claims)),
            "does not verify",
        ),
        ("wrong audience", Some(idp.es256(&wrong_aud)), "aud"),
        ("expired", Some(idp.es256(&expired)), "expired"),
        ("foreign issuer", Some(idp.es256(&foreign)), "iss"),
        ("too low assurance", Some(idp.es256(&low)), "below"),
        (
            "alg none",
            Some(with_header(&json!({"alg": "none"}), &claims, b"")),
            "none",
        ),
        (
            "HMAC",
            Some(with_header(
                &json!({"alg": "HS256", "kid": "es-1"}),
                &claims,
                b"mac",
            )),
            "shared-secret",
        ),
        (
            "unknown key",
            Some(sign_es256(&stranger, "nobody", &claims)),
            "no key",
        ),
        ("garbage", Some("not.a.token".into()), "header"),
    ];
    for (what, token, want) in cases {
        let (code, head, v) = call(port, "POST", ISSUE, token.as_deref(), Some(&body));
        assert_eq!(code, 401, "{what}: {v}");
        assert_eq!(v["error"]["field"], "authorization", "{what}: {v}");
        assert!(rule(&v).contains(want), "{what}: {v}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{what}: {head}"
        );
        if what == "too low assurance" {
            assert!(head.contains("insufficient_user_authentication"), "{head}");
        }
    }
    assert_eq!(env.count("certificates"), count);

    // The provider rotates its key: a token under the new kid makes Muhr fetch again.
    let fetched = idp.fetches.load(std::sync::atomic::Ordering::SeqCst);
    let rotated = ec_key();
    idp.jwks.lock().unwrap()["keys"]
        .as_array_mut()
        .unwrap()
        .push(ec_jwk("es-2", &rotated));
    let (code, _, v) = call(
        port,
        "GET",
        "/api/v1/me/certificates",
        Some(&sign_es256(&rotated, "es-2", &claims)),
        None,
    );
    assert_eq!(code, 200, "{v}");
    assert!(idp.fetches.load(std::sync::atomic::Ordering::SeqCst) > fetched);

    // Refused by the RA's rules (422, field named, nothing written).
    let mut bad_pinfl = claims.clone();
    let wrong_digit = if me.ends_with('0') { '1' } else { '0' };
    bad_pinfl["pinfl"] = json!(format!("{}{wrong_digit}", &me[..13]));
    let mut wrong_birth = claims.clone();
    wrong_birth["birthdate"] = json!("1985-05-16");
    let dead_claims = idp.claims(&dead);
    let cases: Vec<(&str, String, Value, &str)> = vec![
        (
            "check digit",
            idp.es256(&bad_pinfl),
            body.clone(),
            "token.pinfl",
        ),
        (
            "birth date",
            idp.es256(&wrong_birth),
            body.clone(),
            "token.birthdate",
        ),
        (
            "deceased",
            idp.es256(&dead_claims),
            body.clone(),
            "token.pinfl",
        ),
        (
            "profile",
            idp.es256(&claims),
            request(&csr(&env, "p"), "tls-server"),
            "profile",
        ),
        (
            "csr",
            idp.es256(&claims),
            request(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                "individual-sign",
            ),
            "csr",
        ),
    ];
    for (what, token, body, field) in cases {
        let (code, _, v) = call(port, "POST", ISSUE, Some(&token), Some(&body));
        assert_eq!(code, 422, "{what}: {v}");
        assert_eq!(v["error"]["field"], field, "{what}: {v}");
    }
    let (code, _, v) = call(
        port,
        "POST",
        ISSUE,
        Some(&idp.es256(&claims)),
        Some(&json!({"csr": "x"})),
    );
    assert_eq!(
        (code, v["error"]["field"].as_str()),
        (400, Some("body")),
        "{v}"
    );
    assert_eq!(env.count("certificates"), count);

    // Self-service: my certificates, with how each was issued.
    let (code, _, list) = call(port, "GET", "/api/v1/me/certificates", Some(&token), None);
    assert_eq!(code, 200, "{list}");
    let certs = list["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2, "{list}");
    assert!(
        certs
            .iter()
            .all(|c| c["issued_by"] == "remote" && c["revocation"] == "good"),
        "{list}"
    );

    // Someone else's certificate is not found; a CA's reason is not mine to give.
    let other_token = idp.es256(&idp.claims(&other));
    let (code, _, v) = call(
        port,
        "POST",
        &format!("/api/v1/me/certificates/{serial}/suspend"),
        Some(&other_token),
        None,
    );
    assert_eq!(code, 404, "{v}");
    let revoke = format!("/api/v1/me/certificates/{serial}/revoke");
    let (code, _, v) = call(
        port,
        "POST",
        &revoke,
        Some(&token),
        Some(&json!({"reason": "cACompromise"})),
    );
    assert_eq!(
        (code, v["error"]["field"].as_str()),
        (422, Some("reason")),
        "{v}"
    );

    // Lost card: suspend, then revoke for key compromise; OCSP follows.
    let (code, _, v) = call(
        port,
        "POST",
        &format!("/api/v1/me/certificates/{serial}/suspend"),
        Some(&token),
        None,
    );
    assert_eq!(
        (code, v["revocation"].as_str()),
        (200, Some("suspended")),
        "{v}"
    );
    let (code, _, v) = call(
        port,
        "POST",
        &revoke,
        Some(&token),
        Some(&json!({"reason": "keyCompromise"})),
    );
    assert_eq!(
        (code, v["revocation"].as_str(), v["reason"].as_str()),
        (200, Some("revoked"), Some("keyCompromise")),
        "{v}"
    );
    let (code, _, v) = call(
        port,
        "POST",
        &revoke,
        Some(&token),
        Some(&json!({"reason": "keyCompromise"})),
    );
    assert_eq!(code, 409, "{v}");
    let ocsp = openssl(&[
        "ocsp",
        "-issuer",
        env.issuing_pem().to_str().unwrap(),
        "-cert",
        cert.to_str().unwrap(),
        "-url",
        &format!("http://127.0.0.1:{port}/ocsp"),
        "-CAfile",
        env.root_pem().to_str().unwrap(),
        "-no_nonce",
    ]);
    assert!(
        ocsp.contains(": revoked") && ocsp.contains("Reason: keyCompromise"),
        "{ocsp}"
    );

    // The revoked key is not certified again.
    let (code, _, v) = call(
        port,
        "POST",
        ISSUE,
        Some(&token),
        Some(&request(&sign_csr, "individual-sign")),
    );
    assert_eq!(code, 409, "{v}");
    assert!(rule(&v).contains("new key"), "{v}");

    // Every act is in the audit chain, under the citizen's name.
    let actor = format!("citizen:{me}");
    let acts = env.sql(&format!(
        "SELECT action FROM audit_log WHERE actor = '{actor}' ORDER BY seq"
    ));
    for a in [
        "certificate.issue",
        "citizen.certificates.read",
        "certificate.suspend",
        "certificate.revoke",
    ] {
        assert!(acts.iter().any(|x| x == a), "{a} missing from {acts:?}");
    }
    let _ = auth_serial;
    env.ok(&["audit", "verify"]);

    // The citizen CLI: a key made locally, certified, kept in a PKCS#12 file
    // that OpenSSL 3 reads as it is and signs CMS with.
    let citizen = idp.es256(&idp.claims(&person_pinfl(5)));
    let token_file = env.write("token", &citizen);
    let password = env.write("p12-password", "correct horse battery\n");
    let p12 = env.path("me.p12");
    let run = |token: &std::path::Path, out: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_muhr"))
            .current_dir(env.dir.path())
            .args([
                "client",
                "request",
                "--profile",
                "individual-sign",
                "--server",
            ])
            .arg(format!("http://127.0.0.1:{port}"))
            .arg("--token-file")
            .arg(token)
            .arg("--out")
            .arg(out)
            .arg("--password-file")
            .arg(&password)
            .output()
            .unwrap()
    };
    let out = run(&token_file, &p12);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pass = format!("file:{}", password.display());
    let key = env.path("me.key");
    let mine = env.path("me.pem");
    openssl(&[
        "pkcs12",
        "-in",
        p12.to_str().unwrap(),
        "-passin",
        &pass,
        "-nodes",
        "-nocerts",
        "-out",
        key.to_str().unwrap(),
    ]);
    openssl(&[
        "pkcs12",
        "-in",
        p12.to_str().unwrap(),
        "-passin",
        &pass,
        "-clcerts",
        "-nokeys",
        "-out",
        mine.to_str().unwrap(),
    ]);
    verify_chain(&env.data(), &mine);
    let doc = env.write("contract.txt", "I agree.\n");
    let sig = env.path("contract.p7s");
    openssl(&[
        "cms",
        "-sign",
        "-binary",
        "-in",
        doc.to_str().unwrap(),
        "-signer",
        mine.to_str().unwrap(),
        "-inkey",
        key.to_str().unwrap(),
        "-certfile",
        env.issuing_pem().to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        sig.to_str().unwrap(),
    ]);
    let verified = common::openssl_output(&[
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        sig.to_str().unwrap(),
        "-CAfile",
        env.root_pem().to_str().unwrap(),
        "-content",
        doc.to_str().unwrap(),
        "-purpose",
        "any",
        "-out",
        "/dev/null",
    ]);
    assert!(
        String::from_utf8_lossy(&verified.stderr).contains("Verification successful"),
        "{verified:?}"
    );
    // A refused request says why, exits non-zero and writes no file.
    let bad = env.write(
        "bad-token",
        idp.es256(&{
            let mut c = idp.claims(&person_pinfl(5));
            c["aud"] = json!("nobody");
            c
        }),
    );
    let out = run(&bad, &env.path("none.p12"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("HTTP 401") && err.contains("aud"),
        "{err}"
    );
    assert!(!env.path("none.p12").exists());

    // Rate limit per person: the 31st act within the hour is refused with Retry-After.
    claims["pinfl"] = json!(person_pinfl(4));
    let busy = idp.es256(&claims);
    let key = csr(&env, "busy");
    let mut limited = None;
    for i in 1..=31 {
        let (code, head, _) = call(
            port,
            "POST",
            ISSUE,
            Some(&busy),
            Some(&request(&key, "individual-sign")),
        );
        if code == 429 {
            assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
            limited = Some(i);
            break;
        }
        assert!(code == 200 || code == 201, "{code}");
    }
    assert_eq!(limited, Some(31));
}

/// An installation with remote issuance and no rate limits, served.
fn unlimited(db: Db) -> (Provider, Env, common::Server, u16) {
    let idp = Provider::start();
    let env = Env::with_extra(
        db,
        Keys::Software,
        &idp.config("[citizens.rate_limits]\nperson_per_hour = 0\naddress_per_minute = 0"),
    );
    env.init();
    let (server, port) = start(&env, &[]);
    (idp, env, server, port)
}

/// The same request sent many times at once (a client retrying on a slow
/// network, a double click): every answer is the one certificate, never a
/// 500, and exactly one was issued.
fn concurrent_duplicates(db: Db) {
    let (idp, env, _server, port) = unlimited(db);
    let before = env.count("certificates");
    for round in 0..3 {
        let token = idp.es256(&idp.claims(&person_pinfl(20 + round)));
        let body = request(&csr(&env, &format!("dup{round}")), "individual-sign");
        let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let (code, _, v) = call(port, "POST", ISSUE, Some(&token), Some(&body));
                        (code, v)
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let serials: std::collections::BTreeSet<&str> = answers
            .iter()
            .map(|(code, v)| {
                assert!(
                    *code == 200 || *code == 201,
                    "{code}: {v}\n{}",
                    server_logs(&env)
                );
                v["serial"].as_str().unwrap()
            })
            .collect();
        assert_eq!(serials.len(), 1, "{answers:?}");
        assert_eq!(
            answers.iter().filter(|(code, _)| *code == 201).count(),
            1,
            "{answers:?}"
        );
    }
    assert_eq!(env.count("certificates"), before + 3);
}

/// One key sent at once for a signing and an authentication certificate
/// (two tabs, two tokens): it gets one purpose, never both.
fn concurrent_one_key_two_purposes(db: Db) {
    let (idp, env, _server, port) = unlimited(db);
    let me = person_pinfl(30);
    for round in 0..3 {
        let key = csr(&env, &format!("both{round}"));
        let requests: Vec<(String, Value)> = (0..8)
            .map(|i| {
                let profile = if i % 2 == 0 {
                    "individual-sign"
                } else {
                    "individual-auth"
                };
                (idp.es256(&idp.claims(&me)), request(&key, profile))
            })
            .collect();
        let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
            let runs: Vec<_> = requests
                .iter()
                .map(|(token, body)| {
                    s.spawn(move || {
                        let (code, _, v) = call(port, "POST", ISSUE, Some(token), Some(body));
                        (code, v)
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let profiles: std::collections::BTreeSet<&str> = answers
            .iter()
            .filter(|(code, _)| *code == 200 || *code == 201)
            .map(|(_, v)| v["profile"].as_str().unwrap())
            .collect();
        assert_eq!(profiles.len(), 1, "{answers:?}\n{}", server_logs(&env));
        for (code, v) in &answers {
            assert!(
                [200, 201, 422].contains(code),
                "{code}: {v}\n{}",
                server_logs(&env)
            );
        }
    }
}

/// A death reported by the registry's feed after a citizen got a
/// certificate remotely: the certificate is revoked and nothing more is
/// issued to that PINFL, whatever token the identity system still signs.
fn deceased_by_event(db: Db) {
    let idp = Provider::start();
    let env = Env::with_extra(db, Keys::Software, &idp.config(""));
    env.init();
    // Born on a leap day in 1948.
    let pinfl = common::pinfl("4290248104007");
    let mut claims = idp.claims(&pinfl);
    claims["birthdate"] = json!("1948-02-29");
    claims["family_name"] = json!("Xoʻjayeva");
    claims["given_name"] = json!("Maʼmura");
    let token = idp.es256(&claims);
    let (_server, port) = start(&env, &[]);
    let (code, _, v) = call(
        port,
        "POST",
        ISSUE,
        Some(&token),
        Some(&request(&csr(&env, "k1"), "individual-auth")),
    );
    assert_eq!(code, 201, "{v}");
    let serial = v["serial"].as_str().unwrap().to_string();
    let file = env.write(
        "deaths.jsonl",
        json!({"id": "spc-d-1", "seq": 1, "kind": "person.deceased", "pinfl": pinfl, "date": "2026-11-29"}).to_string() + "\n",
    );
    let out = env.ok(&["registry", "events", file.to_str().unwrap()]);
    assert!(out.contains("applied 1"), "{out}");
    let status = env.sql(&format!(
        "SELECT revocation || ' ' || revocation_reason FROM certificates WHERE serial = '{serial}'"
    ));
    assert_eq!(status, ["revoked 5"]);
    let (code, _, v) = call(
        port,
        "POST",
        ISSUE,
        Some(&token),
        Some(&request(&csr(&env, "k2"), "individual-sign")),
    );
    assert_eq!(code, 422, "{v}");
    assert!(rule(&v).contains("deceased"), "{v}");
}

both_databases! {
    a_death_reported_by_the_registry_revokes_and_stops_remote_issuance => deceased_by_event;
    remote_issuance_self_service_and_refusals => remote_issuance;
    one_key_sent_for_two_purposes_at_once_gets_one => concurrent_one_key_two_purposes;
    concurrent_duplicate_requests_get_the_one_certificate => concurrent_duplicates;
}

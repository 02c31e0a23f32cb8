//! The RA over mutual TLS, driven by curl and checked with OpenSSL: who may
//! call, the card API (happy path, idempotency, conflicts, supersession), the
//! operator API and the audit chain behind it.
//!
//! Longer than 600 lines on purpose: one binary for the whole mutual-TLS
//! API (linking each test file costs more than its tests).

mod common;

use common::ra::{call, card, client};
use common::{Db, Env, Keys, openssl, pkilint, start_ra};
use serde_json::{Value, json};

const CHILONZOR: &str = "1726269";

fn job_count(env: &Env) -> i64 {
    env.count("card_jobs")
}

fn write_cert(env: &Env, name: &str, v: &Value) -> std::path::PathBuf {
    env.write(name, v["pem"].as_str().unwrap())
}

fn serials(v: &Value) -> (String, String) {
    (
        v["certificates"]["auth"]["serial"]
            .as_str()
            .unwrap()
            .to_string(),
        v["certificates"]["sign"]["serial"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

fn mtls_and_cards(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let line = client(&env, "personalization-line", "LINE-01");
    let operator = client(&env, "operator", "OP-01");
    let revoked = client(&env, "personalization-line", "LINE-OLD");
    let unregistered = client(&env, "personalization-line", "LINE-GONE");
    let old_serial = env.sql("SELECT serial FROM ra_clients WHERE name = 'LINE-OLD'")[0].clone();
    env.ok(&["revoke", &old_serial, "--reason", "cessationOfOperation"]);
    env.sql("DELETE FROM ra_clients WHERE name = 'LINE-GONE'");
    let (_server, http, port) = start_ra(&env);
    let c1 = card(&env, "job-1", 1, "AA1000001", CHILONZOR);
    let path = "/api/v1/personalization/cards";
    let certificates_before = env.count("certificates");

    // Refused: no certificate, one not from our CA (TLS), and registry refusals (403).
    let (code, _) = call(&env, port, None, "POST", path, Some(&c1));
    assert_eq!(code, 0, "no client certificate must fail the handshake");
    let stranger = env.path("stranger.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=LINE-01",
        "-days",
        "2",
        "-addext",
        "extendedKeyUsage=clientAuth",
        "-keyout",
        stranger.to_str().unwrap(),
        "-out",
        env.path("stranger.crt").to_str().unwrap(),
    ]);
    let stranger_pem = format!(
        "{}{}",
        std::fs::read_to_string(&stranger).unwrap(),
        std::fs::read_to_string(env.path("stranger.crt")).unwrap()
    );
    let stranger = env.write("stranger-all.pem", stranger_pem);
    let (code, _) = call(&env, port, Some(&stranger), "POST", path, Some(&c1));
    assert_eq!(
        code, 0,
        "a certificate our CA did not issue must fail the handshake"
    );
    for (who, cert, rule) in [
        ("operator", &operator, "this needs personalization-line"),
        ("revoked", &revoked, "is revoked"),
        ("unregistered", &unregistered, "is not registered"),
    ] {
        let (code, body) = call(&env, port, Some(cert), "POST", path, Some(&c1));
        assert_eq!(code, 403, "{who}: {body}");
        assert_eq!(body["error"]["field"], "client", "{who}");
        assert!(
            body["error"]["rule"].as_str().unwrap().contains(rule),
            "{who}: {body}"
        );
    }
    let (code, body) = call(
        &env,
        port,
        Some(&line),
        "GET",
        "/api/v1/operator/persons/x/certificates",
        None,
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(job_count(&env), 0);
    assert_eq!(env.count("certificates"), certificates_before);

    // The happy path: two certificates, chained, linted, subject from the request.
    let (code, first) = call(&env, port, Some(&line), "POST", path, Some(&c1));
    assert_eq!(code, 200, "{first}");
    assert_eq!(first["replayed"], false);
    let auth = write_cert(&env, "auth.pem", &first["certificates"]["auth"]);
    let sign = write_cert(&env, "sign.pem", &first["certificates"]["sign"]);
    let chain = env.write("chain.pem", first["chain"][0].as_str().unwrap());
    for cert in [&auth, &sign] {
        let out = openssl(&[
            "verify",
            "-CAfile",
            env.root_pem().to_str().unwrap(),
            "-untrusted",
            chain.to_str().unwrap(),
            cert.to_str().unwrap(),
        ]);
        assert!(out.trim().ends_with(": OK"), "{out}");
        pkilint(cert);
    }
    let text = openssl(&[
        "x509",
        "-in",
        auth.to_str().unwrap(),
        "-noout",
        "-subject",
        "-enddate",
        "-pubkey",
    ]);
    let pinfl = common::ra::person_pinfl(1);
    assert!(text.contains(&format!("PNOUZ-{pinfl}")), "{text}");
    assert!(text.contains("Karimov Aziz Rustamovich"), "{text}");
    assert!(
        !text.contains("ignored by Muhr"),
        "the CSR's subject must be ignored: {text}"
    );
    // The key is the chip's (auth CSR's) key.
    let chip = openssl(&[
        "pkey",
        "-in",
        env.path("job-1-auth.key").to_str().unwrap(),
        "-pubout",
    ]);
    assert!(text.contains(chip.trim()), "{text}\n{chip}");
    // Never beyond 24 months (the document runs ten years).
    let end = checkend(&[
        "x509",
        "-in",
        sign.to_str().unwrap(),
        "-noout",
        "-checkend",
        &(25 * 31 * 86400).to_string(),
    ]);
    assert!(end.contains("will expire"), "{end}");

    // Idempotent: the same id and body, the same certificates.
    let (code, again) = call(&env, port, Some(&line), "POST", path, Some(&c1));
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(serials(&again), serials(&first));
    assert_eq!(
        again["certificates"]["auth"]["der"],
        first["certificates"]["auth"]["der"]
    );
    // The same id with another body: 409, nothing written.
    let mut changed = c1.clone();
    changed["person"]["given_name"] = json!("Bobur");
    let (code, body) = call(&env, port, Some(&line), "POST", path, Some(&changed));
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["field"], "request_id");
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM certificates WHERE job IS NOT NULL")[0],
        "2"
    );

    // A certificate whose document expires sooner ends with it.
    let mut short = card(&env, "job-short", 2, "AA1000002", CHILONZOR);
    let soon = chrono_days_from_now(40);
    short["document"]["expires_on"] = json!(soon);
    let (code, body) = call(&env, port, Some(&line), "POST", path, Some(&short));
    assert_eq!(code, 200, "{body}");
    let s = write_cert(&env, "short.pem", &body["certificates"]["auth"]);
    let end = checkend(&[
        "x509",
        "-in",
        s.to_str().unwrap(),
        "-noout",
        "-checkend",
        &(41 * 86400).to_string(),
    ]);
    assert!(end.contains("will expire"), "{end}");

    // Each listener describes what it serves.
    let (code, doc) = call(&env, port, Some(&line), "GET", "/openapi.json", None);
    assert_eq!(code, 200);
    assert!(
        doc["paths"]["/api/v1/personalization/cards"]["post"].is_object(),
        "{doc}"
    );
    assert!(doc["paths"]["/ocsp"].is_null(), "{doc}");
    let (code, _, plain) = common::get(http, "/openapi.json");
    assert_eq!(code, 200);
    let public = serde_json::from_slice::<Value>(&plain).unwrap();
    assert!(public["paths"]["/ocsp"]["post"].is_object(), "{public}");
    assert!(
        public["paths"]["/api/v1/personalization/cards"].is_null(),
        "{public}"
    );
}

/// `openssl x509 -checkend`, which exits 1 when the certificate will expire.
fn checkend(args: &[&str]) -> String {
    String::from_utf8_lossy(&common::openssl_output(args).stdout).into_owned()
}

/// YYYY-MM-DD `days` from now (UTC).
fn chrono_days_from_now(days: u64) -> String {
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(days * 86400);
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let dt = der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs - secs % 86400))
        .unwrap();
    format!("{:04}-{:02}-{:02}", dt.year(), dt.month(), dt.day())
}

fn supersession_and_operators(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let line = client(&env, "personalization-line", "LINE-01");
    let op = client(&env, "operator", "OP-01");
    let (_server, _http, port) = start_ra(&env);
    let path = "/api/v1/personalization/cards";
    let (code, old) = call(
        &env,
        port,
        Some(&line),
        "POST",
        path,
        Some(&card(&env, "old-card", 7, "AB0000001", CHILONZOR)),
    );
    assert_eq!(code, 200, "{old}");
    let (code, new) = call(
        &env,
        port,
        Some(&line),
        "POST",
        path,
        Some(&card(&env, "new-card", 7, "AB0000002", "1726266")),
    );
    assert_eq!(code, 200, "{new}");
    let (old_auth, old_sign) = serials(&old);
    let mut superseded: Vec<String> = new["superseded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    superseded.sort();
    let mut expected = vec![old_auth.clone(), old_sign.clone()];
    expected.sort();
    assert_eq!(superseded, expected);

    // Operators see it: the person's four certificates, two revoked as superseded.
    let pinfl = common::ra::person_pinfl(7);
    let (code, list) = call(
        &env,
        port,
        Some(&op),
        "GET",
        &format!("/api/v1/operator/persons/{pinfl}/certificates"),
        None,
    );
    assert_eq!(code, 200, "{list}");
    let certs = list["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 4, "{list}");
    for c in certs {
        let s = c["serial"].as_str().unwrap();
        if s == old_auth || s == old_sign {
            assert_eq!(c["revocation"], "revoked", "{c}");
            assert_eq!(c["revocation_reason"], "superseded", "{c}");
        } else {
            assert_eq!(c["revocation"], "good", "{c}");
        }
    }
    let (code, _) = call(
        &env,
        port,
        Some(&op),
        "GET",
        "/api/v1/operator/persons/12345/certificates",
        None,
    );
    assert_eq!(code, 422);

    // Status changes over the operator API, each audited with the operator's name.
    let (new_auth, new_sign) = serials(&new);
    let base = format!("/api/v1/operator/certificates/{new_auth}");
    let (code, s) = call(
        &env,
        port,
        Some(&op),
        "POST",
        &format!("{base}/suspend"),
        None,
    );
    assert_eq!(
        (code, s["revocation"].as_str()),
        (200, Some("suspended")),
        "{s}"
    );
    let (code, s) = call(
        &env,
        port,
        Some(&op),
        "POST",
        &format!("{base}/restore"),
        None,
    );
    assert_eq!((code, s["revocation"].as_str()), (200, Some("good")), "{s}");
    let (code, s) = call(
        &env,
        port,
        Some(&op),
        "POST",
        &format!("{base}/revoke"),
        Some(&json!({"reason": "keyCompromise"})),
    );
    assert_eq!(
        (code, s["reason"].as_str()),
        (200, Some("keyCompromise")),
        "{s}"
    );
    let (code, s) = call(
        &env,
        port,
        Some(&op),
        "POST",
        &format!("{base}/revoke"),
        Some(&json!({"reason": "keyCompromise"})),
    );
    assert_eq!(code, 409, "{s}");
    let (code, s) = call(
        &env,
        port,
        Some(&op),
        "POST",
        &format!("/api/v1/operator/certificates/{new_sign}/revoke"),
        Some(&json!({"reason": "noSuchReason"})),
    );
    assert_eq!(
        (code, s["error"]["field"].as_str()),
        (422, Some("reason")),
        "{s}"
    );
    let (code, _) = call(
        &env,
        port,
        Some(&op),
        "POST",
        "/api/v1/operator/certificates/ABCDEF/suspend",
        None,
    );
    assert_eq!(code, 404);
    // An operator acting beyond their scope: the CA certificates are not
    // theirs to suspend or revoke (dual control, from the CLI, only).
    let changes = env.count("status_changes");
    // The server signs CRLs meanwhile (audited too): count only what could
    // be about the certificates tried.
    let about_cas = "SELECT COUNT(*) FROM audit_log WHERE object IN \
                     (SELECT serial FROM certificates WHERE pinfl IS NULL)";
    let audit = env.sql(about_cas);
    // Nor the infrastructure's: the OCSP signer, the lines' and the
    // operators' own credentials (one operator revoking the others would
    // end dual control).
    let infrastructure = env.sql(
        "SELECT profile || ' ' || serial FROM certificates \
         WHERE profile IN ('issuing-ca', 'root-ca', 'ocsp-signer', 'ra-client') ORDER BY profile",
    );
    assert!(infrastructure.len() >= 5, "{infrastructure:?}");
    for row in &infrastructure {
        let (profile, serial) = row.split_once(' ').unwrap();
        for (act, body) in [
            ("suspend", None),
            ("revoke", Some(json!({"reason": "keyCompromise"}))),
        ] {
            let (code, s) = call(
                &env,
                port,
                Some(&op),
                "POST",
                &format!("/api/v1/operator/certificates/{serial}/{act}"),
                body.as_ref(),
            );
            assert_eq!(
                (code, s["error"]["field"].as_str()),
                (403, Some("serial")),
                "{profile} {act}: {s}"
            );
            let rule = s["error"]["rule"].as_str().unwrap();
            assert!(
                rule.contains(if profile.ends_with("-ca") {
                    "dual control"
                } else {
                    "people's certificates only"
                }),
                "{s}"
            );
        }
    }
    assert_eq!(
        (env.count("status_changes"), env.sql(about_cas)),
        (changes, audit)
    );
    let (code, s) = call(
        &env,
        port,
        Some(&op),
        "GET",
        &format!("/api/v1/operator/certificates/{new_auth}"),
        None,
    );
    assert_eq!(
        (code, s["revocation"].as_str()),
        (200, Some("revoked")),
        "{s}"
    );
    let actions = env.sql(&format!(
        "SELECT action FROM audit_log WHERE object = '{new_auth}' AND actor = 'ra-client:OP-01' ORDER BY seq"
    ));
    assert_eq!(
        actions,
        [
            "certificate.suspend",
            "certificate.restore",
            "certificate.revoke",
            "certificate.read"
        ]
    );
    assert_eq!(
        env.sql(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE object = '{pinfl}' AND action = 'person.read'"
        ))[0],
        "1"
    );

    // A card job's history.
    let (code, job) = call(
        &env,
        port,
        Some(&op),
        "GET",
        "/api/v1/operator/card-jobs/LINE-01/old-card",
        None,
    );
    assert_eq!(code, 200, "{job}");
    assert_eq!(job["state"], "done");
    let history: Vec<&str> = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        history
            .iter()
            .filter(|a| **a == "certificate.issue")
            .count(),
        2,
        "{job}"
    );
    assert_eq!(
        history
            .iter()
            .filter(|a| **a == "certificate.revoke")
            .count(),
        2,
        "{job}"
    );

    // CRLs on demand, and the revocation is in them.
    let (code, crls) = call(&env, port, Some(&op), "POST", "/api/v1/operator/crl", None);
    assert_eq!(code, 200, "{crls}");
    assert!(crls["crls"][0]["entries"].as_i64().unwrap() >= 3, "{crls}");
    assert!(env.ok(&["audit", "verify"]).contains("intact"));
}

fn keep_previous_card() {
    let env = Env::with_extra(
        Db::Sqlite,
        Keys::Software,
        "[personalization]\nsupersede = \"keep\"\n",
    );
    env.init();
    let line = client(&env, "personalization-line", "LINE-01");
    let (_server, _http, port) = start_ra(&env);
    let path = "/api/v1/personalization/cards";
    let (code, _) = call(
        &env,
        port,
        Some(&line),
        "POST",
        path,
        Some(&card(&env, "a", 3, "AC0000001", CHILONZOR)),
    );
    assert_eq!(code, 200);
    let (code, b) = call(
        &env,
        port,
        Some(&line),
        "POST",
        path,
        Some(&card(&env, "b", 3, "AC0000002", CHILONZOR)),
    );
    assert_eq!(code, 200);
    assert_eq!(b["superseded"], json!([]));
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM certificates WHERE revocation <> 'good'")[0],
        "0"
    );
}

#[test]
fn supersede_keep_leaves_previous_card_valid() {
    keep_previous_card();
}

fn concurrent_duplicates(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let line = client(&env, "personalization-line", "LINE-01");
    let (_server, _http, port) = start_ra(&env);
    let c = card(&env, "dup", 9, "AD0000001", CHILONZOR);
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    call(
                        &env,
                        port,
                        Some(&line),
                        "POST",
                        "/api/v1/personalization/cards",
                        Some(&c),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = serials(&results[0].1);
    for (code, body) in &results {
        assert_eq!(*code, 200, "{body}");
        assert_eq!(serials(body), first);
    }
    assert_eq!(
        results
            .iter()
            .filter(|(_, b)| b["replayed"] == false)
            .count(),
        1
    );
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM certificates WHERE job = 'LINE-01/dup'")[0],
        "2"
    );
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM card_outcomes WHERE outcome = 'issued'")[0],
        "1"
    );
}

fn superseded(v: &Value) -> Vec<String> {
    let mut s: Vec<String> = v["superseded"]
        .as_array()
        .unwrap_or_else(|| panic!("no superseded list in {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    s.sort();
    s
}

fn sorted_serials(v: &Value) -> Vec<String> {
    let (a, b) = serials(v);
    let mut s = vec![a, b];
    s.sort();
    s
}

/// One batch holding a person's two cards (and someone else's): the later
/// card, in the batch's order, supersedes the earlier one and becomes the
/// person's card, which the next card then supersedes.
fn supersession_within_a_batch(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let line = client(&env, "personalization-line", "LINE-01");
    let (_server, _http, port) = start_ra(&env);
    let body = json!({ "cards": [
        card(&env, "first", 11, "AF0000001", CHILONZOR),
        card(&env, "other", 12, "AF0000002", CHILONZOR),
        card(&env, "second", 11, "AF0000003", CHILONZOR),
    ]});
    let (code, answer) = call(
        &env,
        port,
        Some(&line),
        "POST",
        "/api/v1/personalization/batches",
        Some(&body),
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["succeeded"], 3, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let by_id = |id: &str| {
        results
            .iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("no result for {id} in {answer}"))
            .clone()
    };
    let (first, other, second) = (by_id("first"), by_id("other"), by_id("second"));
    assert_eq!(superseded(&first), Vec::<String>::new(), "{first}");
    assert_eq!(superseded(&other), Vec::<String>::new(), "{other}");
    assert_eq!(superseded(&second), sorted_serials(&first), "{second}");
    let revoked = env.sql(
        "SELECT serial FROM certificates WHERE revocation = 'revoked'          AND revocation_reason = 4 ORDER BY serial",
    );
    assert_eq!(revoked, sorted_serials(&first));

    // The person's card is now the batch's second one: a third card
    // supersedes exactly that.
    let (code, third) = call(
        &env,
        port,
        Some(&line),
        "POST",
        "/api/v1/personalization/cards",
        Some(&card(&env, "third", 11, "AF0000004", CHILONZOR)),
    );
    assert_eq!(code, 200, "{third}");
    assert_eq!(superseded(&third), sorted_serials(&second), "{third}");
    assert_eq!(
        env.sql(&format!(
            "SELECT job FROM person_cards WHERE pinfl = '{}'",
            common::ra::person_pinfl(11)
        )),
        vec!["LINE-01/third".to_string()]
    );
    assert!(env.ok(&["audit", "verify"]).contains("intact"));
}

both_databases! {
    mtls_refusals_happy_path_idempotency => mtls_and_cards;
    supersession_and_operator_api => supersession_and_operators;
    concurrent_duplicates_issue_once => concurrent_duplicates;
    a_batch_supersedes_within_itself => supersession_within_a_batch;
}

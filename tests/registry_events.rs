//! Registry events drive the certificate lifecycle: deaths, lost, stolen and
//! invalidated documents, name changes; a retried event, a replayed id with
//! other content, an out-of-order loss after a replacement, an unknown
//! person, two consumers of one feed, a consumer killed half way. Every
//! change is checked as relying parties see it: `openssl ocsp` and
//! `openssl verify -crl_check`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::ra::{call, chip_csr, client};
use common::{Db, Env, Keys, openssl_ocsp, openssl_output, pinfl, start_ra};
use serde_json::{Value, json};

/// People across the population: births from the 1920s to the 2000s, leap
/// days, Uzbek names with ʻ and ʼ, Cyrillic, with and without patronymic,
/// several Tashkent districts.
struct Person {
    pinfl: String,
    surname: &'static str,
    given: &'static str,
    patronymic: Option<&'static str>,
    birth: &'static str,
    district: &'static str,
}

fn person(n: usize) -> Person {
    // (century digit, DDMMYY, birth date, surname, given, patronymic, district)
    #[allow(clippy::type_complexity)]
    const P: [(&str, &str, &str, &str, &str, Option<&str>, &str); 10] = [
        (
            "3",
            "280227",
            "1927-02-28",
            "Oʻrinboyev",
            "Gʻayrat",
            Some("Shukurovich"),
            "1726269",
        ),
        (
            "4",
            "290248",
            "1948-02-29",
            "Xoʻjayeva",
            "Maʼmura",
            None,
            "1726266",
        ),
        (
            "3",
            "311269",
            "1969-12-31",
            "Иванов",
            "Иван",
            Some("Иванович"),
            "1726262",
        ),
        (
            "4",
            "010170",
            "1970-01-01",
            "Toʻxtasinova",
            "Nigora",
            Some("Abdullayevna"),
            "1726264",
        ),
        (
            "3",
            "150585",
            "1985-05-15",
            "Abdurahmonov",
            "Ulugʻbek",
            Some("Baxtiyor oʻgʻli"),
            "1726273",
        ),
        (
            "6",
            "290200",
            "2000-02-29",
            "Karimova",
            "Dilnoza",
            Some("Rustamovna"),
            "1726277",
        ),
        (
            "5",
            "150708",
            "2008-07-15",
            "Yoʻldoshev",
            "Sardor",
            None,
            "1726280",
        ),
        (
            "4",
            "300956",
            "1956-09-30",
            "Сафарова",
            "Гулнора",
            Some("Тахировна"),
            "1726283",
        ),
        (
            "3",
            "010138",
            "1938-01-01",
            "Qodirov",
            "Ilhom",
            Some("Gʻofurovich"),
            "1726269",
        ),
        (
            "6",
            "311203",
            "2003-12-31",
            "Raʼnoxon-Mirzayeva",
            "Shahzoda",
            None,
            "1726266",
        ),
    ];
    let (c, ddmmyy, birth, surname, given, patronymic, district) = P[n % P.len()];
    Person {
        pinfl: pinfl(&format!("{c}{ddmmyy}{:03}{:03}", 100 + n % 800, n / 10 + 1)),
        surname,
        given,
        patronymic,
        birth,
        district,
    }
}

/// Someone born in the 2020s whom nothing here knows.
fn stranger(n: usize) -> String {
    pinfl(&format!(
        "5{:02}0321{:03}{:03}",
        10 + n % 18,
        200 + n % 700,
        n % 900 + 1
    ))
}

/// Submits a card for `p` with `document` (fresh chip keys named after
/// the job): the HTTP status and answer.
fn submit_card(
    env: &Env,
    port: u16,
    line: &Path,
    job: &str,
    p: &Person,
    document: &str,
) -> (u16, Value) {
    let body = json!({
        "request_id": job,
        "person": {
            "pinfl": p.pinfl,
            "surname": p.surname,
            "given_name": p.given,
            "patronymic": p.patronymic,
            "birth_date": p.birth,
        },
        "document": {
            "number": document,
            "issued_on": "2025-03-01",
            "expires_on": "2035-02-28",
            "issuing_office": p.district,
        },
        "keys": {
            "auth": chip_csr(env, &format!("{job}-auth")),
            "sign": chip_csr(env, &format!("{job}-sign")),
        }
    });
    call(
        env,
        port,
        Some(line),
        "POST",
        "/api/v1/personalization/cards",
        Some(&body),
    )
}

/// A card for `p` with `document`; answers its (auth, sign) serials.
fn issue_card(
    env: &Env,
    port: u16,
    line: &Path,
    job: &str,
    p: &Person,
    document: &str,
) -> (String, String) {
    let (code, v) = submit_card(env, port, line, job, p, document);
    assert_eq!(code, 200, "{job}: {v}");
    let s = |role: &str| {
        v["certificates"][role]["serial"]
            .as_str()
            .unwrap()
            .to_string()
    };
    env.write(
        &format!("{job}-auth.crt"),
        v["certificates"]["auth"]["pem"].as_str().unwrap(),
    );
    (s("auth"), s("sign"))
}

fn post_events(env: &Env, port: u16, cert: &Path, events: &[Value]) -> (u16, Value) {
    call(
        env,
        port,
        Some(cert),
        "POST",
        "/api/v1/registry/events",
        Some(&json!({ "events": events })),
    )
}

/// (revocation, reason code) of a certificate, as the store keeps it.
fn status(env: &Env, serial: &str) -> (String, String) {
    let row = env.sql(&format!(
        "SELECT revocation || ':' || COALESCE(CAST(revocation_reason AS TEXT), '-') FROM certificates WHERE serial = '{serial}'"
    ));
    let (a, b) = row[0].split_once(':').unwrap();
    (a.to_string(), b.to_string())
}

fn changes_of(env: &Env, serial: &str) -> i64 {
    env.sql(&format!(
        "SELECT COUNT(*) FROM status_changes WHERE serial = '{serial}'"
    ))[0]
        .parse()
        .unwrap()
}

fn result_of<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no result for {id}: {v}"))
}

/// `muhr crl`, then the issuing CA's CRL as PEM.
fn fresh_crl(env: &Env) -> PathBuf {
    env.ok(&["crl"]);
    let der = env.data().join("crl/issuing.crl");
    let pem = env.path("issuing-crl.pem");
    let out = openssl_output(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        der.to_str().unwrap(),
        "-out",
        pem.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    pem
}

fn verify_crl(env: &Env, crl: &Path, cert: &Path) -> String {
    let (root, issuing) = (env.root_pem(), env.issuing_pem());
    let out = openssl_output(&[
        "verify",
        "-crl_check",
        "-CRLfile",
        crl.to_str().unwrap(),
        "-CAfile",
        root.to_str().unwrap(),
        "-untrusted",
        issuing.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn lifecycle(db: Db) {
    let env = Env::with_extra(db, Keys::Software, "\n[registry]\nname_grace_days = 0\n");
    env.init();
    let line = client(&env, "personalization-line", "LINE-01");
    let registry = client(&env, "registry", "SPC-ADAPTER");
    let operator = client(&env, "operator", "OP-01");
    let (server, http, port) = start_ra(&env);

    let people: Vec<Person> = (0..8).map(person).collect();
    let dead = &people[0];
    let lost = &people[1];
    let stolen = &people[2];
    let invalid = &people[3];
    let renamed = &people[4];
    let replaced = &people[5];
    let bystander = &people[6];
    let imported = &people[7];
    let dead_certs = issue_card(&env, port, &line, "c-dead", dead, "AA1000001");
    let lost_certs = issue_card(&env, port, &line, "c-lost", lost, "AB1000002");
    let stolen_certs = issue_card(&env, port, &line, "c-stolen", stolen, "AC1000003");
    let invalid_certs = issue_card(&env, port, &line, "c-invalid", invalid, "AD1000004");
    let renamed_certs = issue_card(&env, port, &line, "c-renamed", renamed, "AE1000005");
    let old_card = issue_card(&env, port, &line, "c-old", replaced, "AF1000006");
    let new_card = issue_card(&env, port, &line, "c-new", replaced, "AF2000006");
    let bystander_certs = issue_card(&env, port, &line, "c-bystander", bystander, "AG1000007");
    let imported_certs = issue_card(&env, port, &line, "c-imported", imported, "AH1000008");
    assert_eq!(
        status(&env, &old_card.0).0,
        "revoked",
        "the new card superseded the old one"
    );

    // Only the registry's client may post events; the registry's client may
    // do nothing else.
    let probe = json!({"id": "probe", "seq": 1, "kind": "person.deceased", "pinfl": bystander.pinfl, "date": "2026-11-01"});
    for (who, cert) in [("line", &line), ("operator", &operator)] {
        let (code, body) = post_events(&env, port, cert, std::slice::from_ref(&probe));
        assert_eq!(code, 403, "{who}: {body}");
    }
    let (code, _) = call(
        &env,
        port,
        Some(&registry),
        "GET",
        &format!("/api/v1/operator/persons/{}/certificates", dead.pinfl),
        None,
    );
    assert_eq!(
        code, 403,
        "the registry client must not read people's certificates"
    );
    let (code, _) = call(
        &env,
        port,
        Some(&registry),
        "POST",
        "/api/v1/personalization/cards",
        Some(&json!({})),
    );
    assert_eq!(code, 403, "the registry client must not submit cards");

    // Bad input names the event and the field, and applies nothing (not even
    // the batch's valid events).
    for (bad, field) in [
        (
            json!({"id": "b1", "seq": 1, "kind": "person.deceased", "pinfl": "12345678901234", "date": "2026-11-01"}),
            "events[1].pinfl",
        ),
        (
            json!({"id": "b1", "seq": 1, "kind": "person.deceased", "pinfl": dead.pinfl, "date": "2099-01-01"}),
            "events[1].date",
        ),
        (
            json!({"id": "b1", "seq": 1, "kind": "person.deceased", "pinfl": dead.pinfl, "date": "1900-01-01"}),
            "events[1].date",
        ),
        (
            json!({"id": "b1", "seq": 1, "kind": "document.lost", "pinfl": dead.pinfl, "document": "A1"}),
            "events[1].document",
        ),
        (
            json!({"id": "b1", "seq": 1, "kind": "document.lost", "pinfl": dead.pinfl, "document": "AA1000001", "date": "2026-11-01"}),
            "events[1].date",
        ),
        (
            json!({"id": "b 1", "seq": 1, "kind": "document.lost", "pinfl": dead.pinfl, "document": "AA1000001"}),
            "events[1].id",
        ),
        (
            json!({"id": "b1", "seq": 0, "kind": "document.lost", "pinfl": dead.pinfl, "document": "AA1000001"}),
            "events[1].seq",
        ),
        (
            json!({"id": "b1", "seq": 1, "kind": "person.resurrected", "pinfl": dead.pinfl}),
            "events[1].kind",
        ),
        (
            json!({"id": "b1", "seq": 1, "kind": "person.data_changed", "pinfl": dead.pinfl, "surname": "X\u{7}", "given_name": "Y"}),
            "events[1].surname",
        ),
    ] {
        let (code, body) = post_events(&env, port, &registry, &[probe.clone(), bad]);
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    assert_eq!(
        env.count("registry_events"),
        0,
        "a refused batch applies nothing"
    );
    assert_eq!(status(&env, &bystander_certs.0).0, "good");

    let unknown = stranger(1);
    let batch = vec![
        json!({"id": "spc-1", "seq": 101, "kind": "person.deceased", "pinfl": dead.pinfl, "date": "2026-11-28"}),
        json!({"id": "spc-2", "seq": 102, "kind": "document.lost", "pinfl": lost.pinfl, "document": "AB1000002"}),
        json!({"id": "spc-3", "seq": 103, "kind": "document.stolen", "pinfl": stolen.pinfl, "document": "AC1000003"}),
        json!({"id": "spc-4", "seq": 104, "kind": "document.invalidated", "pinfl": invalid.pinfl, "document": "AD1000004", "reason": "forged (case 77/2026)"}),
        json!({"id": "spc-5", "seq": 105, "kind": "person.data_changed", "pinfl": renamed.pinfl, "surname": "Abdurahmonova-Oʻrinova", "given_name": "Ulugʻbek", "patronymic": "Baxtiyor oʻgʻli"}),
        // The old card was replaced before it was reported lost: nothing changes.
        json!({"id": "spc-6", "seq": 106, "kind": "document.lost", "pinfl": replaced.pinfl, "document": "AF1000006"}),
        json!({"id": "spc-7", "seq": 107, "kind": "person.deceased", "pinfl": unknown, "date": "2026-11-20"}),
        // Another person's document under this person's PINFL: nobody's certificates.
        json!({"id": "spc-8", "seq": 108, "kind": "document.lost", "pinfl": bystander.pinfl, "document": "AB1000002"}),
        json!({"id": "spc-9", "seq": 109, "kind": "person.pinfl_changed", "pinfl": bystander.pinfl, "new_pinfl": person(9).pinfl}),
    ];
    let changes_before = env.count("status_changes");
    let (code, first) = post_events(&env, port, &registry, &batch);
    assert_eq!(code, 200, "{first}");
    let outcome = |id: &str| {
        result_of(&first, id)["outcome"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(outcome("spc-1"), "applied");
    assert_eq!(outcome("spc-2"), "applied");
    assert_eq!(outcome("spc-3"), "applied");
    assert_eq!(outcome("spc-4"), "applied");
    assert_eq!(outcome("spc-5"), "applied");
    assert_eq!(outcome("spc-6"), "replaced");
    assert_eq!(outcome("spc-7"), "unknown_person");
    assert_eq!(outcome("spc-8"), "unknown_document");
    assert_eq!(outcome("spc-9"), "refused");
    for s in [&dead_certs.0, &dead_certs.1] {
        assert_eq!(
            status(&env, s),
            ("revoked".into(), "5".into()),
            "death: cessationOfOperation"
        );
    }
    for s in [
        &lost_certs.0,
        &lost_certs.1,
        &stolen_certs.0,
        &stolen_certs.1,
    ] {
        assert_eq!(status(&env, s), ("suspended".into(), "6".into()));
    }
    for s in [&invalid_certs.0, &invalid_certs.1] {
        assert_eq!(
            status(&env, s),
            ("revoked".into(), "9".into()),
            "privilegeWithdrawn"
        );
    }
    for s in [
        &renamed_certs.0,
        &new_card.0,
        &new_card.1,
        &bystander_certs.0,
        &bystander_certs.1,
    ] {
        assert_eq!(status(&env, s).0, "good", "{s} must not change");
    }
    assert_eq!(env.count("status_changes") - changes_before, 8);
    // Each change is told to its holder, once per event and certificate;
    // the name change too. Nothing is told about nobody.
    let notices = env.sql("SELECT kind || ' ' || COALESCE(reason, '-') FROM notices WHERE key LIKE 'registry:spc-%' ORDER BY key");
    assert_eq!(notices.len(), 9, "{notices:?}");
    assert_eq!(
        notices
            .iter()
            .filter(|n| n.as_str() == "suspended certificateHold")
            .count(),
        4
    );
    assert_eq!(
        notices
            .iter()
            .filter(|n| n.starts_with("name_changed"))
            .count(),
        1
    );
    assert!(
        env.sql(&format!(
            "SELECT key FROM notices WHERE pinfl = '{unknown}'"
        ))
        .is_empty()
    );
    let unmatched = env.ok(&["registry", "unmatched"]);
    assert!(
        unmatched.contains("spc-7") && unmatched.contains("spc-8") && unmatched.contains("spc-9"),
        "{unmatched}"
    );

    // A retry: the same answers, marked replayed, nothing applied again.
    let registry_audit =
        || env.sql("SELECT COUNT(*) FROM audit_log WHERE action LIKE 'registry.%'")[0].clone();
    let audit_before = registry_audit();
    let (code, again) = post_events(&env, port, &registry, &batch);
    assert_eq!(code, 200, "{again}");
    for r in again["results"].as_array().unwrap() {
        assert_eq!(r["replayed"], true, "{r}");
        assert_eq!(
            r["outcome"],
            result_of(&first, r["id"].as_str().unwrap())["outcome"]
        );
    }
    assert_eq!(env.count("status_changes") - changes_before, 8);
    assert_eq!(
        registry_audit(),
        audit_before,
        "a retry is not audited as applied again"
    );

    // The same id with other content: 409, and nothing of its batch applied.
    let forged = vec![
        json!({"id": "spc-10", "seq": 110, "kind": "document.lost", "pinfl": bystander.pinfl, "document": "AG1000007"}),
        json!({"id": "spc-1", "seq": 101, "kind": "person.deceased", "pinfl": bystander.pinfl, "date": "2026-11-28"}),
    ];
    let (code, body) = post_events(&env, port, &registry, &forged);
    assert_eq!(code, 409, "{body}");
    assert_eq!(result_of(&body, "spc-1")["outcome"], "conflict");
    assert_eq!(
        status(&env, &bystander_certs.0).0,
        "good",
        "a forged replay must change nothing"
    );
    assert!(
        env.sql("SELECT id FROM registry_events WHERE id = 'spc-10'")
            .is_empty()
    );

    // An older name change arriving late changes nothing.
    let (_, late) = post_events(
        &env,
        port,
        &registry,
        &[
            json!({"id": "spc-0", "seq": 50, "kind": "person.data_changed", "pinfl": renamed.pinfl, "surname": "Old", "given_name": "Name"}),
        ],
    );
    assert_eq!(result_of(&late, "spc-0")["outcome"], "stale", "{late}");

    // Relying parties see it: OCSP and the CRL.
    let ocsp = |job: &str| openssl_ocsp(&env, http, &env.path(&format!("{job}-auth.crt")), true);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = ocsp("c-dead");
        if o.contains(": revoked") {
            assert!(o.contains("cessationOfOperation"), "{o}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "OCSP must follow within seconds: {o}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = ocsp("c-lost");
    assert!(
        o.contains(": revoked") && o.contains("certificateHold"),
        "{o}"
    );
    // OpenSSL's OCSP client names reasons only up to removeFromCRL (8): the
    // code is read from its response dump instead.
    let out = openssl_output(&[
        "ocsp",
        "-issuer",
        env.issuing_pem().to_str().unwrap(),
        "-cert",
        env.path("c-invalid-auth.crt").to_str().unwrap(),
        "-url",
        &format!("http://127.0.0.1:{http}/ocsp"),
        "-CAfile",
        env.root_pem().to_str().unwrap(),
        "-resp_text",
    ]);
    let o = String::from_utf8_lossy(&out.stdout);
    assert!(
        o.contains("Cert Status: revoked") && o.contains("(0x9)"),
        "{o}"
    );
    assert!(ocsp("c-bystander").contains(": good"));
    let crl = fresh_crl(&env);
    for job in ["c-dead", "c-lost", "c-stolen", "c-invalid"] {
        let out = verify_crl(&env, &crl, &env.path(&format!("{job}-auth.crt")));
        assert!(out.contains("certificate revoked"), "{job}: {out}");
    }
    let text = openssl_output(&["crl", "-in", crl.to_str().unwrap(), "-noout", "-text"]);
    let text = String::from_utf8_lossy(&text.stdout);
    for reason in [
        "Cessation Of Operation",
        "Certificate Hold",
        "Privilege Withdrawn",
    ] {
        assert!(
            text.contains(reason),
            "{reason} missing from the CRL:\n{text}"
        );
    }
    let out = verify_crl(&env, &crl, &env.path("c-bystander-auth.crt"));
    assert!(out.trim().ends_with("OK"), "{out}");

    // The dead get nothing issued from now on.
    let (code, v) = submit_card(&env, port, &line, "c-dead-2", dead, "AA9000001");
    assert_eq!(code, 422, "{v}");
    assert!(v.to_string().contains("deceased"), "{v}");

    // A card reported stolen before it was personalized is never
    // personalized: the report came first, and stands.
    let early = person(8);
    let (code, v) = post_events(
        &env,
        port,
        &registry,
        &[
            json!({"id": "spc-20", "seq": 120, "kind": "document.stolen", "pinfl": early.pinfl, "document": "AK1000011"}),
        ],
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(result_of(&v, "spc-20")["outcome"], "unknown_person");
    let (code, v) = submit_card(&env, port, &line, "c-stolen-early", &early, "AK1000011");
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["error"]["field"], "document.number", "{v}");
    assert!(v.to_string().contains("stolen"), "{v}");

    // The card is found: an operator restores its certificates.
    for s in [&lost_certs.0, &lost_certs.1] {
        let (code, v) = call(
            &env,
            port,
            Some(&operator),
            "POST",
            &format!("/api/v1/operator/certificates/{s}/restore"),
            Some(&json!({})),
        );
        assert_eq!(code, 200, "{v}");
        assert_eq!(status(&env, s).0, "good");
    }

    // The server sweeps and reviews every minute: stopped, so that what
    // follows is the command's doing.
    drop(server);

    // A certificate stored valid after its holder's death was recorded (an
    // issuance that checked just before): the sweep revokes it.
    env.sql(&format!(
        "UPDATE certificates SET revocation = 'good', revocation_reason = NULL, revoked_at = NULL WHERE serial = '{}'",
        dead_certs.1
    ));
    let out = env.ok(&["registry", "review"]);
    assert!(
        out.contains(&format!(
            "1 certificates of people recorded as deceased revoked: {}",
            dead_certs.1
        )),
        "{out}"
    );
    assert_eq!(status(&env, &dead_certs.1), ("revoked".into(), "5".into()));

    // The name change's grace period (0 days here) has passed: the
    // certificates naming the old surname are revoked, affiliationChanged
    // (by the same command).
    assert!(
        out.contains("1 name reviews ended; 2 certificates revoked"),
        "{out}"
    );
    for s in [&renamed_certs.0, &renamed_certs.1] {
        assert_eq!(status(&env, s), ("revoked".into(), "3".into()));
    }
    let out = env.ok(&["registry", "review"]);
    assert!(out.starts_with("0 name reviews"), "{out}");
    let told = env.sql(&format!(
        "SELECT reason FROM notices WHERE pinfl = '{}' AND kind = 'revoked'",
        renamed.pinfl
    ));
    assert_eq!(told, ["affiliationChanged", "affiliationChanged"]);

    // A death in the CSV extract is applied as an event, once.
    let csv = format!(
        "pinfl,surname,given_name,patronymic,birth_date,deceased_on\n{},{},{},{},{},2026-11-15\n",
        imported.pinfl,
        imported.surname,
        imported.given,
        imported.patronymic.unwrap_or(""),
        imported.birth
    );
    let file = env.write("extract.csv", csv);
    let out = env.ok(&["registry", "import", file.to_str().unwrap()]);
    assert!(
        out.contains("1 new deaths applied as person.deceased events: 2 certificates revoked"),
        "{out}"
    );
    assert_eq!(
        status(&env, &imported_certs.0),
        ("revoked".into(), "5".into())
    );
    let out = env.ok(&["registry", "import", file.to_str().unwrap()]);
    assert!(
        out.contains("0 new deaths applied as person.deceased events: 0 certificates revoked"),
        "{out}"
    );
    assert_eq!(changes_of(&env, &imported_certs.0), 1);

    // A death an earlier version loaded from an extract (the extract's row
    // only, no event): the next import of an extract listing it revokes.
    let line = |p: &Person, died: &str| {
        format!(
            "{},{},{},{},{},{died}\n",
            p.pinfl,
            p.surname,
            p.given,
            p.patronymic.unwrap_or(""),
            p.birth
        )
    };
    let header = "pinfl,surname,given_name,patronymic,birth_date,deceased_on\n";
    let alive = env.write("alive.csv", format!("{header}{}", line(bystander, "")));
    env.ok(&["registry", "import", alive.to_str().unwrap()]);
    env.sql(&format!(
        "UPDATE population_registry SET deceased_on = '2026-11-10' WHERE pinfl = '{}'",
        bystander.pinfl
    ));
    let dead_now = env.write(
        "dead.csv",
        format!("{header}{}", line(bystander, "2026-11-10")),
    );
    let out = env.ok(&["registry", "import", dead_now.to_str().unwrap()]);
    assert!(
        out.contains("1 new deaths applied as person.deceased events: 2 certificates revoked"),
        "{out}"
    );
    assert_eq!(
        status(&env, &bystander_certs.1),
        ("revoked".into(), "5".into())
    );

    // A death is final: an extract that no longer lists it brings nobody
    // back, and nothing is issued to them, not even by `muhr issue`.
    env.ok(&["registry", "import", alive.to_str().unwrap()]);
    let subject = env.write(
        "dead-subject.json",
        json!({"pinfl": bystander.pinfl, "surname": bystander.surname, "given_name": bystander.given}).to_string(),
    );
    let err = env.refused(&[
        "issue",
        "--profile",
        "individual-auth",
        "--csr",
        env.csr("dead-issue", "ec").to_str().unwrap(),
        "--subject",
        subject.to_str().unwrap(),
    ]);
    assert!(err.contains("deceased"), "{err}");

    // The audit chain holds it all and still verifies.
    let out = env.ok(&["audit", "verify"]);
    assert!(out.contains("intact"), "{out}");
    let trail = env.sql("SELECT details FROM audit_log WHERE object = 'registry-event/spc-1'");
    assert_eq!(trail.len(), 1);
    assert!(
        trail[0].contains(&dead_certs.0) && trail[0].contains("2026-11-28"),
        "{}",
        trail[0]
    );
}

/// A file of `n` events, one JSON object a line: most about people nobody
/// knows (a document-invalidation campaign), some losing the cards of
/// `holders`.
fn event_file(env: &Env, name: &str, n: usize, holders: &[(String, String)]) -> PathBuf {
    let mut text = String::new();
    for i in 0..n {
        let line = match holders.get(i) {
            Some((pinfl, document)) => {
                json!({"id": format!("{name}-{i}"), "seq": i + 1, "kind": "document.lost", "pinfl": pinfl, "document": document})
            }
            None => {
                json!({"id": format!("{name}-{i}"), "seq": i + 1, "kind": "document.invalidated", "pinfl": stranger(i), "document": format!("FA{:07}", i), "reason": "campaign 2026-12"})
            }
        };
        text.push_str(&line.to_string());
        text.push('\n');
    }
    env.write(&format!("{name}.jsonl"), text)
}

/// Cards for `n` people: their (pinfl, document) and certificate serials.
fn holders(env: &Env, n: usize) -> (Vec<(String, String)>, Vec<String>) {
    let line = client(env, "personalization-line", "LINE-01");
    let (_server, _http, port) = start_ra(env);
    let mut holders = Vec::new();
    let mut serials = Vec::new();
    for i in 0..n {
        let p = person(i + 20);
        let document = format!("HB{:07}", i + 1);
        let (a, s) = issue_card(env, port, &line, &format!("h-{i}"), &p, &document);
        holders.push((p.pinfl, document));
        serials.extend([a, s]);
    }
    (holders, serials)
}

fn two_consumers(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let (holders, serials) = holders(&env, 6);
    let file = event_file(&env, "feed", 3000, &holders);
    let run = || {
        env.muhr()
            .args(["registry", "events", file.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (run(), run());
    for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(env.count("registry_events"), 3000);
    for s in &serials {
        assert_eq!(status(&env, s).0, "suspended");
        assert_eq!(changes_of(&env, s), 1, "{s} changed more than once");
    }
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM audit_log WHERE action = 'registry.document.lost'")[0],
        "6"
    );
}

fn killed_and_rerun(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let (holders, serials) = holders(&env, 4);
    let n = 40_000;
    let file = event_file(&env, "big", n, &[]);
    // The holders' losses come last, after the kill.
    let mut tail = String::new();
    for (i, (pinfl, document)) in holders.iter().enumerate() {
        tail.push_str(&json!({"id": format!("late-{i}"), "seq": n + i + 1, "kind": "document.stolen", "pinfl": pinfl, "document": document}).to_string());
        tail.push('\n');
    }
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&tail);
    std::fs::write(&file, text).unwrap();
    let total = (n + holders.len()) as i64;
    let mut child = env
        .muhr()
        .args(["registry", "events", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let applied = env
            .try_sql("SELECT COUNT(*) FROM registry_events")
            .ok()
            .and_then(|r| r[0].parse::<i64>().ok())
            .unwrap_or(0);
        if applied >= 2000 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    // kill -9: no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    let applied: i64 = env.sql("SELECT COUNT(*) FROM registry_events")[0]
        .parse()
        .unwrap();
    assert!(applied < total, "killed after the end ({applied})");
    assert_eq!(
        applied % 1000,
        0,
        "a batch is applied whole or not at all ({applied})"
    );
    let out = env.ok(&["registry", "events", file.to_str().unwrap()]);
    assert!(
        out.contains(&format!("({applied} of them applied before)")),
        "{out}"
    );
    assert_eq!(env.count("registry_events"), total);
    for s in &serials {
        assert_eq!(status(&env, s), ("suspended".into(), "6".into()));
        assert_eq!(changes_of(&env, s), 1);
    }
    // And a third run applies nothing.
    let out = env.ok(&["registry", "events", file.to_str().unwrap()]);
    assert!(
        out.contains(&format!("({total} of them applied before)")),
        "{out}"
    );
}

fn bad_file_changes_nothing(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let file = event_file(&env, "bad", 50, &[]);
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("{\"id\": \"x\", \"seq\": 1, \"kind\": \"document.lost\", \"pinfl\": \"00000000000000\", \"document\": \"AA1234567\"}\n");
    std::fs::write(&file, text).unwrap();
    let err = env.refused(&["registry", "events", file.to_str().unwrap()]);
    assert!(err.contains("line 51") && err.contains("pinfl"), "{err}");
    assert_eq!(env.count("registry_events"), 0);
}

both_databases! {
    registry_events_revoke_suspend_and_refuse_as_the_registry_says => lifecycle;
    two_consumers_of_one_feed_never_apply_an_event_twice => two_consumers;
    consumer_killed_half_way_then_rerun_applies_every_event_once => killed_and_rerun;
    one_bad_line_in_an_event_file_applies_nothing => bad_file_changes_nothing;
}

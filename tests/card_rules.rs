//! Every validation rule of the card API, each refused with its field named and
//! nothing written; the registry's deceased; the pilot's districts; and the
//! pilot report that counts all of it.

mod common;

use common::ra::{call, card, client, person_pinfl};
use common::{Db, Env, Keys, openssl, start_ra};
use serde_json::{Value, json};

const PATH: &str = "/api/v1/personalization/cards";

/// Sets (or adds) the member `pointer` names.
fn set(v: &mut Value, pointer: &str, new: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let obj = if parent.is_empty() {
        Some(v)
    } else {
        v.pointer_mut(parent)
    };
    obj.and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{pointer}"))
        .insert(key.to_string(), new);
}

#[test]
fn each_rule_names_its_field_and_writes_nothing() {
    let env = Env::new(Db::Sqlite, Keys::Software);
    env.init();
    // The registry: person 50 is recorded as deceased; the import checks its rows.
    let dead = person_pinfl(50);
    let csv = env.write(
        "registry.csv",
        format!(
            "pinfl,surname,given_name,patronymic,birth_date,deceased_on\n\
             {dead},Karimov,Aziz,,1985-05-15,2024-02-01\n{},Karimov,Aziz,Rustamovich,1985-05-15,\n",
            person_pinfl(51)
        ),
    );
    assert!(
        env.ok(&["registry", "import", csv.to_str().unwrap()])
            .contains("imported 2 people (1 recorded as deceased)")
    );
    let bad = env.write(
        "bad.csv",
        format!("pinfl,surname,given_name,patronymic,birth_date,deceased_on\n{dead},Karimov,Aziz,,1985-05-16,\n"),
    );
    let err = env.refused(&["registry", "import", bad.to_str().unwrap()]);
    assert!(
        err.contains("line 2") && err.contains("birth_date"),
        "{err}"
    );

    let line = client(&env, "personalization-line", "LINE-01");
    let (_server, _http, port) = start_ra(&env);
    let base = card(&env, "rules", 1, "AA1234567", "1726269");
    let other_key = common::ra::chip_csr(&env, "other");
    let weak = std::fs::read_to_string(env.csr("weak", "rsa:1024")).unwrap();
    // A CSR whose signature no longer matches its content.
    let good = base["keys"]["auth"].as_str().unwrap();
    openssl(&[
        "req",
        "-in",
        env.path("rules-auth.csr").to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        env.path("t.der").to_str().unwrap(),
    ]);
    let mut bytes = std::fs::read(env.path("t.der")).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x01;
    let tampered =
        der::pem::encode_string("CERTIFICATE REQUEST", der::pem::LineEnding::LF, &bytes).unwrap();
    assert_ne!(tampered, good);

    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "request id",
            "/request_id",
            json!("has space"),
            "request_id",
        ),
        (
            "PINFL shape",
            "/person/pinfl",
            json!("1234"),
            "person.pinfl",
        ),
        (
            "PINFL check digit",
            "/person/pinfl",
            json!(format!(
                "{}{}",
                &person_pinfl(1)[..13],
                (person_pinfl(1)[13..].parse::<u8>().unwrap() + 1) % 10
            )),
            "person.pinfl",
        ),
        (
            "birth date vs PINFL",
            "/person/birth_date",
            json!("1985-05-16"),
            "person.birth_date",
        ),
        (
            "birth date shape",
            "/person/birth_date",
            json!("15.05.1985"),
            "person.birth_date",
        ),
        (
            "empty surname",
            "/person/surname",
            json!("  "),
            "person.surname",
        ),
        (
            "long name",
            "/person/given_name",
            json!("A".repeat(65)),
            "person.given_name",
        ),
        (
            "unprintable name",
            "/person/given_name",
            json!("Az\u{7}iz"),
            "person.given_name",
        ),
        ("TIN shape", "/person/tin", json!("12345"), "person.tin"),
        (
            "document number",
            "/document/number",
            json!("A1234567"),
            "document.number",
        ),
        (
            "issued in the future",
            "/document/issued_on",
            json!("2099-01-01"),
            "document.issued_on",
        ),
        (
            "expires before issued",
            "/document/expires_on",
            json!("2025-01-01"),
            "document.expires_on",
        ),
        (
            "expired",
            "/document/issued_on",
            json!("2010-01-01"),
            "document.expires_on",
        ),
        (
            "unknown district",
            "/document/issuing_office",
            json!("1799999"),
            "document.issuing_office",
        ),
        (
            "not in pilot",
            "/document/issuing_office",
            json!("1718401"),
            "document.issuing_office",
        ),
        (
            "bad CSR",
            "/keys/auth",
            json!("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"),
            "keys.auth",
        ),
        (
            "proof of possession",
            "/keys/auth",
            json!(tampered),
            "keys.auth",
        ),
        ("weak key", "/keys/sign", json!(weak), "keys.sign"),
        (
            "one key for two roles",
            "/keys/sign",
            json!(good),
            "keys.sign",
        ),
        ("deceased", "/person/pinfl", json!(dead), "person.pinfl"),
    ];
    let certs = env.count("certificates");
    let mut pilot_refusals = 0;
    for (what, pointer, value, field) in cases {
        let mut c = base.clone();
        set(&mut c, pointer, value);
        if what == "expired" {
            set(&mut c, "/document/expires_on", json!("2020-01-01"));
        }
        if what == "deceased" {
            set(&mut c, "/person/birth_date", json!("1985-05-15"));
        }
        let (code, body) = call(&env, port, Some(&line), "POST", PATH, Some(&c));
        assert_eq!(code, 422, "{what}: {body}");
        assert_eq!(body["error"]["field"], field, "{what}: {body}");
        if what == "not in pilot" {
            pilot_refusals += 1;
            assert!(
                body["error"]["rule"]
                    .as_str()
                    .unwrap()
                    .starts_with("not in pilot"),
                "{body}"
            );
        }
        if what == "deceased" {
            assert!(
                body["error"]["rule"].as_str().unwrap().contains("deceased"),
                "{body}"
            );
        }
    }
    // Keys: a role missing, a role unknown.
    let mut c = base.clone();
    c["keys"].as_object_mut().unwrap().remove("sign");
    let (code, body) = call(&env, port, Some(&line), "POST", PATH, Some(&c));
    assert_eq!(
        (code, body["error"]["field"].as_str()),
        (422, Some("keys.sign")),
        "{body}"
    );
    let mut c = base.clone();
    c["keys"]["extra"] = json!(other_key);
    let (code, body) = call(&env, port, Some(&line), "POST", PATH, Some(&c));
    assert_eq!(
        (code, body["error"]["field"].as_str()),
        (422, Some("keys.extra")),
        "{body}"
    );
    // Malformed bodies: 400 naming the body and what is wrong.
    let mut c = base.clone();
    c["person"]["nickname"] = json!("Azi");
    let (code, body) = call(&env, port, Some(&line), "POST", PATH, Some(&c));
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]["rule"].as_str().unwrap().contains("nickname"),
        "{body}"
    );
    let (code, body) = call(
        &env,
        port,
        Some(&line),
        "POST",
        PATH,
        Some(&json!("not a card")),
    );
    assert_eq!(
        (code, body["error"]["field"].as_str()),
        (400, Some("body")),
        "{body}"
    );

    assert_eq!(env.count("certificates"), certs, "a refusal must not issue");
    assert_eq!(env.count("card_jobs"), 0, "a refusal must not claim a job");
    assert_eq!(pilot_refusals, 1);

    // The valid request still goes through, and the report counts everything.
    let (code, body) = call(&env, port, Some(&line), "POST", PATH, Some(&base));
    assert_eq!(code, 200, "{body}");
    let day = {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let dt =
            der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs - secs % 86400))
                .unwrap();
        format!("{:04}-{:02}-{:02}", dt.year(), dt.month(), dt.day())
    };
    let report: Value = serde_json::from_str(&env.ok(&[
        "report", "pilot", "--from", &day, "--to", &day, "--format", "json",
    ]))
    .unwrap();
    let total = &report["total"];
    assert_eq!(total["cards_issued"], 1, "{report}");
    assert_eq!(total["certificates_issued"], 2, "{report}");
    assert_eq!(total["refusals"]["not in pilot"], 1, "{report}");
    assert_eq!(total["refusals"]["deceased"], 1, "{report}");
    assert_eq!(total["refusals"]["unknown district"], 1, "{report}");
    assert_eq!(total["refusals"]["invalid person.pinfl"], 2, "{report}");
    // 20 rule cases + 2 key cases (the 400s never reach validation) + the issued card.
    assert_eq!(total["cards_requested"], 23, "{report}");
    let samarqand = report["districts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["district"] == "1718401")
        .unwrap();
    assert_eq!(samarqand["name"], "Samarqand city");
    assert_eq!(samarqand["refusals"]["not in pilot"], 1);
    let chilonzor = report["districts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["district"] == "1726269")
        .unwrap();
    assert_eq!(chilonzor["cards_issued"], 1);
    assert!(chilonzor["p50_ms"].as_f64().unwrap() > 0.0, "{chilonzor}");
    let csv = env.ok(&["report", "pilot", "--from", &day, "--to", &day]);
    let header = csv.lines().next().unwrap();
    assert!(header.starts_with("district,name,cards_requested,cards_issued,certificates_issued,refusals,failures,p50_ms,p99_ms"), "{csv}");
    assert!(
        csv.lines().any(|l| l.starts_with("total,,23,1,2,22,0,")),
        "{csv}"
    );
    // Other days are empty; a bad date is refused.
    let empty = env.ok(&[
        "report",
        "pilot",
        "--from",
        "2020-01-01",
        "--to",
        "2020-01-31",
        "--format",
        "json",
    ]);
    assert_eq!(
        serde_json::from_str::<Value>(&empty).unwrap()["total"]["cards_requested"],
        0
    );
    assert!(
        env.refused(&[
            "report",
            "pilot",
            "--from",
            "2020-02-30",
            "--to",
            "2020-03-01"
        ])
        .contains("from")
    );
}

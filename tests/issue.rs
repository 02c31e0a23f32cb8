//! Ceremony → issue → verify with OpenSSL, on both databases, and the exact
//! content of each end-entity profile as `openssl x509 -text` shows it.

mod common;
use common::*;

fn extensions_block(text: &str) -> Vec<String> {
    let start = text.find("X509v3 extensions:").expect("extensions");
    let end = text[start..].find("Signature Algorithm").unwrap() + start;
    text[start..end]
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("X509v3 ")
                || l.starts_with("Authority Information Access")
                || l.starts_with("OCSP No Check")
        })
        .filter(|l| *l != "X509v3 extensions:")
        .map(|l| {
            l.trim_end_matches(':')
                .trim_end_matches(": critical")
                .to_string()
                + if l.ends_with("critical") {
                    " (critical)"
                } else {
                    ""
                }
        })
        .collect()
}

fn issue_and_verify(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    pkilint(&env.root_pem());
    pkilint(&env.issuing_pem());
    // A second ceremony over an existing CA is refused.
    assert!(env.refused(&["ca", "init"]).contains("already exists"));

    let csr = env.csr("person", "ec");
    let cert = env.issue("individual-sign", &csr, &person(), "sign");
    verify_chain(&env.data(), &cert);
    pkilint(&cert);
    let text = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"]);
    let pinfl = common::pinfl("3150585123456");
    assert!(
        text.contains(&format!("1.2.860.3.16.1.2 = {pinfl}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("serialNumber = PNOUZ-{pinfl}")),
        "{text}"
    );
    assert!(text.contains("CN = IVANOV IVAN IVANOVICH"), "{text}");
    assert!(
        text.contains("SN = IVANOV, name = IVAN, GN = IVAN"),
        "{text}"
    );
    assert!(text.contains("UID = 412345678"), "{text}");
    assert!(text.contains("C = UZ"), "{text}");
    assert!(
        text.contains("Digital Signature, Non Repudiation"),
        "{text}"
    );
    assert!(text.contains("Policy: 1.2.860.3.2.2.1.2.2"), "{text}");
    // Sharded CRL (16 shards by default) and its delta.
    let shard = text
        .split("URI:http://127.0.0.1:8080/crl/issuing-")
        .nth(1)
        .and_then(|rest| rest.split(".crl").next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no shard CRL distribution point: {text}"));
    assert!(shard < 16, "{text}");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(
        lines.windows(3).any(|w| w
            == [
                "X509v3 Freshest CRL:",
                "Full Name:",
                &format!("URI:http://127.0.0.1:8080/crl/issuing-{shard}-delta.crl")
            ]),
        "{text}"
    );
    assert!(
        text.contains("OCSP - URI:http://127.0.0.1:8080/ocsp"),
        "{text}"
    );
    assert!(
        text.contains("CA Issuers - URI:http://127.0.0.1:8080/ca/issuing.cer"),
        "{text}"
    );
    assert_eq!(
        extensions_block(&text),
        [
            "X509v3 Key Usage (critical)",
            "X509v3 Subject Key Identifier",
            "X509v3 Authority Key Identifier",
            "X509v3 Certificate Policies",
            "X509v3 CRL Distribution Points",
            "X509v3 Freshest CRL",
            "Authority Information Access",
        ]
    );

    // Serial: 20 octets, and `cert show` finds it by OpenSSL's spelling.
    let serial = serial_of(&cert);
    assert_eq!(serial.len(), 40);
    let shown = env.ok(&["cert", "show", &serial.to_ascii_lowercase()]);
    assert!(shown.contains("status:     issued"), "{shown}");
    assert!(shown.contains("profile:    individual-sign"), "{shown}");
    assert!(
        shown.contains(&std::fs::read_to_string(&cert).unwrap()),
        "{shown}"
    );
    assert!(
        env.refused(&["cert", "show", "00DEADBEEF"])
            .contains("no certificate with serial 00DEADBEEF")
    );

    // Authentication certificate: clientAuth and digitalSignature only.
    let auth = env.issue(
        "individual-auth",
        &env.csr("auth", "ec384"),
        &person(),
        "auth",
    );
    verify_chain(&env.data(), &auth);
    pkilint(&auth);
    let text = openssl(&["x509", "-in", auth.to_str().unwrap(), "-noout", "-text"]);
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("Digital Signature\n"), "{text}");
    assert!(!text.contains("Non Repudiation"), "{text}");
    assert_eq!(extensions_block(&text)[1], "X509v3 Extended Key Usage");

    // Employee of an organisation, with an RSA key.
    let employee = serde_json::json!({
        "pinfl": common::pinfl("4010290555777"), "surname": "KARIMOVA", "given_name": "NODIRA",
        "organization": { "name": "Toshkent Savdo MChJ", "tin": "201234567", "title": "Bosh hisobchi" }
    });
    let le = env.issue(
        "legal-entity-sign",
        &env.csr("employee", "rsa:2048"),
        &employee.to_string(),
        "le",
    );
    verify_chain(&env.data(), &le);
    pkilint(&le);
    let text = openssl(&["x509", "-in", le.to_str().unwrap(), "-noout", "-text"]);
    assert!(text.contains("1.2.860.3.16.1.1 = 201234567"), "{text}");
    assert!(text.contains("O = Toshkent Savdo MChJ"), "{text}");
    assert!(text.contains("title = Bosh hisobchi"), "{text}");
    assert!(text.contains("businessCategory = Legal Entity"), "{text}");
    assert!(!text.contains("UID ="), "no personal TIN was given: {text}");

    // A legal-entity certificate without an organisation is refused, naming the field.
    let err = env.refused(&[
        "issue",
        "--profile",
        "legal-entity-sign",
        "--csr",
        csr.to_str().unwrap(),
        "--subject",
        env.write("p.json", person()).to_str().unwrap(),
    ]);
    assert!(err.contains("organization.name"), "{err}");

    let audit = env.ok(&["audit", "verify"]);
    // ceremony: 2 certificates + ca.init + the audit key; then 3
    // certificates, each command's entries anchored by a signed checkpoint.
    assert!(
        audit.contains("intact: 7 entries") && audit.contains("anchored up to entry 7"),
        "{audit}"
    );
}

/// Without any configuration: SQLite and software keys in ./muhr-data.
#[test]
fn development_default_needs_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(Db::Sqlite, Keys::Software);
    let csr = env.csr("dev", "ec");
    let subject = env.write("dev.json", person());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muhr"))
        .current_dir(dir.path())
        .env_remove("MUHR_CONFIG")
        .args([
            "issue",
            "--profile",
            "individual-auth",
            "--csr",
            csr.to_str().unwrap(),
            "--subject",
            subject.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("created a development CA in ./muhr-data")
    );
    let data = dir.path().join("muhr-data");
    assert!(data.join("muhr.db").exists());
    assert!(data.join("keys/muhr-issuing.p8.pem").exists());
    std::fs::write(dir.path().join("c.pem"), &out.stdout).unwrap();
    verify_chain(&data, &dir.path().join("c.pem"));
    // The key file is encrypted PKCS#8 that OpenSSL can read with the passphrase.
    let key = std::fs::read_to_string(data.join("keys/muhr-issuing.p8.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let pass = format!("file:{}", data.join("keys/passphrase").display());
    openssl(&[
        "pkey",
        "-in",
        data.join("keys/muhr-issuing.p8.pem").to_str().unwrap(),
        "-passin",
        &pass,
        "-noout",
    ]);
}

/// The 1970 floor, end to end: people born in every decade the PINFL
/// encodes, leap days included, with Uzbek Latin (ʻ ʼ) and Cyrillic names,
/// get their certificate from `muhr issue`, carrying their own PINFL.
fn births_across_a_century(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let csr = env.csr("k", "ec");
    let people = [
        ("31505651260019", "OʻKTAMOV", "Gʻayrat", "Toʻlqin oʻgʻli"),
        ("42902481260013", "ХОДЖАЕВА", "Мукаррам", "Асадовна"),
        (
            &*pinfl("3010125172626"),
            "RASHIDOV",
            "Sharof",
            "Ra'shid o'g'li",
        ),
        (
            &*pinfl("3311269401012"),
            "NAZARBEKOV",
            "Ulugʻbek",
            "Zokirovich",
        ),
        (
            &*pinfl("4311299703005"),
            "SAIDOVA",
            "Dilnozaxon",
            "Shavkat qizi",
        ),
        (
            &*pinfl("5010100172600"),
            "ABDULLAYEV",
            "Amir",
            "Sanjarovich",
        ),
        (
            &*pinfl("6290200264001"),
            "QODIROVA",
            "Mohinur",
            "Baxtiyor qizi",
        ),
        (
            &*pinfl("5290224730019"),
            "TOʻRAYEV",
            "Alisher",
            "Bahodirovich",
        ),
    ]
    .map(|(p, s, g, m)| (p.to_string(), s, g, m));
    for (i, (pinfl, surname, given, patronymic)) in people.iter().enumerate() {
        let subject = serde_json::json!({
            "pinfl": pinfl, "surname": surname, "given_name": given, "patronymic": patronymic,
        })
        .to_string();
        let pem = env.issue("individual-sign", &csr, &subject, &format!("p{i}"));
        let text = openssl(&[
            "x509",
            "-in",
            pem.to_str().unwrap(),
            "-noout",
            "-subject",
            "-nameopt",
            "utf8,sep_comma_plus",
        ]);
        assert!(
            text.contains(&format!("PNOUZ-{pinfl}")) && text.contains(surname),
            "{pinfl}: {text}"
        );
    }
}

both_databases! {
    people_born_from_the_1920s_to_the_2020s_are_issued => births_across_a_century;
    issue_and_verify_with_openssl => issue_and_verify;
}

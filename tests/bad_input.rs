//! Bad input gets a clear error naming the field and the rule, exit code 1, and
//! writes nothing: neither a certificate row nor an audit entry.

mod common;
use common::*;

fn snapshot(env: &Env) -> (i64, i64) {
    (env.count("certificates"), env.count("audit_log"))
}

fn refused_and_nothing_written(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let good_csr = env.csr("good", "ec");
    let good_subject = env.write("good.json", person());
    let before = snapshot(&env);

    let issue = |profile: &str, csr: &std::path::Path, subject: &std::path::Path| {
        env.refused(&[
            "issue",
            "--profile",
            profile,
            "--csr",
            csr.to_str().unwrap(),
            "--subject",
            subject.to_str().unwrap(),
        ])
    };

    // PINFL whose check digit is wrong.
    let mut p = common::pinfl("3150585123456");
    let last = (p.pop().unwrap().to_digit(10).unwrap() + 1) % 10;
    let bad_pinfl = env.write(
        "bad-pinfl.json",
        serde_json::json!({"pinfl": format!("{p}{last}"), "surname": "A", "given_name": "B"})
            .to_string(),
    );
    let e = issue("individual-sign", &good_csr, &bad_pinfl);
    assert!(e.contains("pinfl: check digit"), "{e}");

    // Unknown profile.
    let e = issue("individual-platinum", &good_csr, &good_subject);
    assert!(
        e.contains("profile: unknown profile \"individual-platinum\""),
        "{e}"
    );
    assert!(
        e.contains("individual-sign"),
        "lists the known profiles: {e}"
    );

    // Malformed CSR.
    let garbage = env.write(
        "garbage.csr",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    );
    let e = issue("individual-sign", &garbage, &good_subject);
    assert!(e.contains("csr: malformed"), "{e}");
    let e = issue(
        "individual-sign",
        &env.write("empty.csr", ""),
        &good_subject,
    );
    assert!(e.contains("csr: malformed"), "{e}");

    // CSR whose signature does not verify: flip a bit in the signature.
    let der_path = env.path("good.der");
    openssl(&[
        "req",
        "-in",
        good_csr.to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        der_path.to_str().unwrap(),
    ]);
    let mut der = std::fs::read(&der_path).unwrap();
    let n = der.len();
    der[n - 5] ^= 0x01;
    let tampered = env.write("tampered.der", der);
    let e = issue("individual-sign", &tampered, &good_subject);
    assert!(e.contains("csr: proof of possession failed"), "{e}");

    // RSA-1024.
    let weak = env.csr("weak", "rsa:1024");
    let e = issue("individual-sign", &weak, &good_subject);
    assert!(
        e.contains("public_key: RSA key of 1024 bits is too small"),
        "{e}"
    );

    // Unknown subject field and malformed JSON.
    let extra = env.write(
        "extra.json",
        r#"{"pinfl":"31505851234562","surname":"A","given_name":"B","nickname":"x"}"#,
    );
    assert!(issue("individual-sign", &good_csr, &extra).contains("unknown field `nickname`"));
    let broken = env.write("broken.json", "{");
    assert!(issue("individual-sign", &good_csr, &broken).contains("subject"));
    // A name that is not a name.
    let digits = env.write("digits.json", serde_json::json!({"pinfl": common::pinfl("3150585123456"), "surname": "R2D2", "given_name": "B"}).to_string());
    assert!(issue("individual-sign", &good_csr, &digits).contains("surname: character '2'"));

    assert_eq!(snapshot(&env), before, "a refused request wrote something");
    // And the CA still works.
    env.issue("individual-sign", &good_csr, &person(), "after");
}

fn thirty_month_profile_stops_start_up(db: Db) {
    let env = Env::new(db, Keys::Software);
    let dir = env.path("profiles");
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "root-ca",
        "issuing-ca",
        "individual-sign",
        "individual-auth",
        "legal-entity-sign",
        "ocsp-signer",
    ] {
        let text = std::fs::read_to_string(format!(
            "{}/policies/profiles/{name}.toml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let text = if name == "individual-sign" {
            text.replace("24 months", "30 months")
        } else {
            text
        };
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    }
    let mut cfg = std::fs::read_to_string(&env.config).unwrap();
    cfg.push_str(&format!("\n[policies]\ndir = \"{}\"\n", dir.display()));
    std::fs::write(&env.config, cfg).unwrap();
    let e = env.refused(&["ca", "init"]);
    assert!(e.contains("individual-sign.toml"), "names the file: {e}");
    assert!(e.contains("field `validity`"), "names the field: {e}");
    assert!(e.contains("at most 24 months"), "names the rule: {e}");
    assert!(!env.root_pem().exists());
}

#[test]
fn usage_errors_exit_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muhr"))
        .args(["issue", "--profile"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muhr"))
        .args(["frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

both_databases! {
    bad_requests_are_refused_and_write_nothing => refused_and_nothing_written;
    a_thirty_month_profile_stops_start_up => thirty_month_profile_stops_start_up;
}

/// Personal data and the login challenge key sit in the data directory and
/// the SQLite database: no other local user reads them, also for a database
/// made by an earlier version with the default 0644.
#[test]
fn the_data_directory_and_database_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(Db::Sqlite, Keys::Software);
    env.init();
    env.issue("individual-auth", &env.csr("p", "ec"), &person(), "p");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let db = env.data().join("muhr.db");
    assert_eq!(mode(&env.data()), 0o700);
    for suffix in ["", "-wal", "-shm"] {
        let f = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        if f.exists() {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }
    // An older installation's world-readable files are closed at the next start.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(env.data(), std::fs::Permissions::from_mode(0o755)).unwrap();
    env.ok(&["cert", "show", &serial_of(&env.path("p.pem"))]);
    assert_eq!((mode(&db), mode(&env.data())), (0o600, 0o700));
}

/// A mistyped database URL is refused naming its scheme, never its password.
#[test]
fn a_mistyped_database_url_never_prints_its_password() {
    let env = Env::new(Db::Sqlite, Keys::Software);
    let out = env
        .muhr()
        .env("MUHR_DATABASE_URL", "postgress://muhr:Secret-Pass@db/muhr")
        .args(["ca", "init"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"postgress\""), "{err}");
    assert!(!err.contains("Secret-Pass"), "{err}");
}

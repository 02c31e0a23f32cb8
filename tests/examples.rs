//! Every configuration in examples/ works as shipped: ceremony and issuance,
//! with the secrets and services it names supplied by the test environment.

mod common;
use common::*;

fn example(name: &str, db: Db, keys: Keys) {
    let env = Env::new(db, keys);
    let config = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let data = env.data().join("example");
    let run = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_muhr"));
        env.apply(&mut c);
        let out = c
            .arg("--config")
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: muhr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["ca", "init"]);
    let subject = env.write("s.json", person());
    let pem = run(&[
        "issue",
        "--profile",
        "individual-auth",
        "--csr",
        env.csr("x", "ec").to_str().unwrap(),
        "--subject",
        subject.to_str().unwrap(),
    ]);
    let cert = env.write("x.pem", pem);
    verify_chain(&data, &cert);
    // Revocation and a CRL signed by the configured key store.
    let serial = serial_of(&cert);
    run(&["revoke", &serial, "--reason", "superseded"]);
    let crl = run(&["crl"]);
    assert!(
        crl.contains("issuing.crl: CRL number 1, 1 entries"),
        "{crl}"
    );
    assert!(crl.contains("issuing-delta.crl: CRL number"), "{crl}");
    assert!(run(&["audit", "verify"]).contains("intact"));
}

#[test]
fn dev_example() {
    example("dev.toml", Db::Sqlite, Keys::Software);
}

#[test]
fn softhsm_example() {
    example("softhsm.toml", Db::Sqlite, Keys::SoftHsm);
}

#[test]
fn postgres_example() {
    example("postgres.toml", Db::Postgres, Keys::Software);
}

#[test]
fn production_example() {
    example("production.toml", Db::Postgres, Keys::SoftHsm);
}

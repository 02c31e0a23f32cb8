//! The CA with its keys in a SoftHSM2 token: keys generated inside, sensitive,
//! never extractable, sign-only; issuance as with software keys.

mod common;
use common::*;

fn softhsm_ceremony_and_issuance(db: Db) {
    require("pkcs11-tool");
    let env = Env::new(db, Keys::SoftHsm);
    env.init();
    let cert = env.issue("individual-sign", &env.csr("p", "ec"), &person(), "c");
    verify_chain(&env.data(), &cert);
    pkilint(&cert);

    let mut cmd = std::process::Command::new("pkcs11-tool");
    env.apply(&mut cmd);
    let listing = cmd
        .args([
            "--module",
            SOFTHSM_MODULE,
            "--token-label",
            "muhr",
            "--login",
            "--pin",
            PIN,
            "--list-objects",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    let private: Vec<&str> = text.split("Private Key Object").skip(1).collect();
    assert_eq!(
        private.len(),
        3,
        "root, issuing and audit private keys in the token:\n{text}"
    );
    for p in private {
        let block: String = p
            .lines()
            .take_while(|l| !l.starts_with("Public Key Object"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            block.contains("Usage:      sign\n")
                || block.ends_with("Usage:      sign")
                || block.contains("Usage:      sign\n  Access"),
            "sign only:\n{block}"
        );
        assert!(
            !block.contains("decrypt") && !block.contains("unwrap") && !block.contains("derive"),
            "{block}"
        );
        assert!(
            block.contains("sensitive, always sensitive, never extractable, local"),
            "{block}"
        );
    }
    assert!(
        text.contains("label:      muhr-root")
            && text.contains("label:      muhr-issuing")
            && text.contains("label:      muhr-audit"),
        "{text}"
    );
    // Nothing key-like in the data directory: the keys are in the token.
    assert!(!env.data().join("keys").exists());

    // The key store's own speed, through the issuing key in a token of the
    // benchmark's own (never a real installation's).
    let env = Env::new(db, Keys::SoftHsm);
    let out = env.bench_ok(&["sign", "--signatures", "300", "--threads", "3", "--json"]);
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(report["signatures"], 300, "{out}");
    assert_eq!(report["key_store"], "pkcs11 token muhr", "{out}");
    assert!(report["signatures_per_s"].as_f64().unwrap() > 0.0, "{out}");
}

fn wrong_pin_is_a_clear_error(db: Db) {
    let env = Env::new(db, Keys::SoftHsm);
    let out = env
        .muhr()
        .env("MUHR_PKCS11_PIN", "not-the-pin")
        .args(["ca", "init"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PIN refused by token \"muhr\""), "{err}");
    assert!(
        !err.contains("not-the-pin"),
        "the PIN must never be printed: {err}"
    );
}

both_databases! {
    ceremony_and_issuance_in_softhsm => softhsm_ceremony_and_issuance;
    a_wrong_pin_is_refused_without_showing_it => wrong_pin_is_a_clear_error;
}

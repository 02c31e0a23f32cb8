//! Every key kind through a real PKCS#11 module (SoftHSM2): generated in the
//! token, found again by label, signatures that verify, and refusals for a
//! taken label, a wrong kind and a missing key.
//!
//! A single test: the module is initialised once per process, after
//! SOFTHSM2_CONF points at this test's own token directory.

use std::process::Command;

use muhr_hsm::pkcs11::{Pkcs11Config, Pkcs11Store};
use muhr_hsm::verify::verify_signature;
use muhr_hsm::{HsmError, KeySpec, KeyStore};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[test]
fn every_key_kind_in_softhsm() {
    assert!(
        std::path::Path::new(MODULE).exists(),
        "{MODULE} is missing: install softhsm2 (bash tests/run.sh does)"
    );
    let dir = std::env::temp_dir().join(format!("muhr-hsm-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            "hsm-test",
            "--pin",
            "123456",
            "--so-pin",
            "654321",
        ])
        .output()
        .expect("softhsm2-util is required: install softhsm2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SAFETY: single-threaded at this point; the only test in this binary.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };

    let wrong = Pkcs11Store::new(Pkcs11Config {
        module: MODULE.into(),
        token_label: "hsm-test".into(),
        pin: zeroize::Zeroizing::new("000000".into()),
        sessions: 2,
    });
    let err = wrong.err().expect("a wrong PIN is refused").to_string();
    assert!(
        err.contains("PIN refused") && !err.contains("000000"),
        "{err}"
    );
    let missing = Pkcs11Store::new(Pkcs11Config {
        module: MODULE.into(),
        token_label: "no-such-token".into(),
        pin: zeroize::Zeroizing::new("123456".into()),
        sessions: 2,
    });
    assert!(
        missing
            .err()
            .unwrap()
            .to_string()
            .contains("no initialised PKCS#11 token labelled \"no-such-token\"")
    );

    let store = Pkcs11Store::new(Pkcs11Config {
        module: MODULE.into(),
        token_label: "hsm-test".into(),
        pin: zeroize::Zeroizing::new("123456".into()),
        sessions: 3,
    })
    .unwrap();
    for (label, spec) in [
        ("p256", KeySpec::EcdsaP256),
        ("p384", KeySpec::EcdsaP384),
        ("rsa2048", KeySpec::Rsa { bits: 2048 }),
        ("pss3072", KeySpec::RsaPss { bits: 3072 }),
    ] {
        let key = store.generate(label, spec).unwrap();
        for msg in [&b"to be signed"[..], &[0u8; 5000][..]] {
            let sig = key.sign(msg).unwrap();
            verify_signature(key.public_key(), &key.signature_algorithm(), msg, &sig)
                .unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert!(
                verify_signature(key.public_key(), &key.signature_algorithm(), b"other", &sig)
                    .is_err()
            );
        }
        let again = store.open(label, spec).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert!(matches!(
            store.generate(label, spec),
            Err(HsmError::Exists(_))
        ));
    }
    assert!(matches!(
        store.open("p256", KeySpec::EcdsaP384),
        Err(HsmError::Mismatch { .. })
    ));
    assert!(matches!(
        store.open("rsa2048", KeySpec::Rsa { bits: 3072 }),
        Err(HsmError::Mismatch { .. })
    ));
    assert!(matches!(
        store.open("nothing", KeySpec::EcdsaP256),
        Err(HsmError::NotFound(_))
    ));
    store.health().unwrap();

    // Concurrent signing across the pool.
    let key = store.open("p256", KeySpec::EcdsaP256).unwrap();
    std::thread::scope(|s| {
        for t in 0..6 {
            let key = key.clone();
            s.spawn(move || {
                for i in 0..50 {
                    let msg = format!("{t}-{i}");
                    let sig = key.sign(msg.as_bytes()).unwrap();
                    verify_signature(
                        key.public_key(),
                        &key.signature_algorithm(),
                        msg.as_bytes(),
                        &sig,
                    )
                    .unwrap();
                }
            });
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

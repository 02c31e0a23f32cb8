//! Every key kind through a real PKCS#11 module (SoftHSM2): generated in the
//! token, found again by label, signatures that verify (through session copies
//! of the keys and through the token objects), refusals for a taken label, a
//! wrong kind and a missing key, and a key destroyed in the token that its
//! session copy does not outlive.
//!
//! A single test: the module is initialised once per process, after
//! SOFTHSM2_CONF points at this test's own token directory.

use std::process::Command;
use std::time::Duration;

use cryptoki::object::{Attribute, ObjectClass};

use muhr_hsm::pkcs11::{Pkcs11Config, Pkcs11Store};
use muhr_hsm::verify::verify_signature;
use muhr_hsm::{HsmError, KeySpec, KeyStore};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn config(
    token_label: &str,
    pin: &str,
    sessions: usize,
    copy_keys_to_session: bool,
    key_recheck: Duration,
) -> Pkcs11Config {
    Pkcs11Config {
        module: MODULE.into(),
        token_label: token_label.into(),
        pin: zeroize::Zeroizing::new(pin.into()),
        sessions,
        copy_keys_to_session,
        key_recheck,
        retry: Duration::from_secs(1),
    }
}

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

    let wrong = Pkcs11Store::new(config(
        "hsm-test",
        "000000",
        2,
        true,
        Duration::from_secs(30),
    ));
    let err = wrong.err().expect("a wrong PIN is refused").to_string();
    assert!(
        err.contains("PIN refused") && !err.contains("000000"),
        "{err}"
    );
    let missing = Pkcs11Store::new(config(
        "no-such-token",
        "123456",
        2,
        true,
        Duration::from_secs(30),
    ));
    assert!(
        missing
            .err()
            .unwrap()
            .to_string()
            .contains("no initialised PKCS#11 token labelled \"no-such-token\"")
    );

    let store = Pkcs11Store::new(config(
        "hsm-test",
        "123456",
        3,
        true,
        Duration::from_secs(30),
    ))
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

    // The same keys through a store that signs with the token objects.
    let direct = Pkcs11Store::new(config(
        "hsm-test",
        "123456",
        2,
        false,
        Duration::from_secs(30),
    ))
    .unwrap();
    for (label, spec) in [
        ("p256", KeySpec::EcdsaP256),
        ("rsa2048", KeySpec::Rsa { bits: 2048 }),
    ] {
        let key = direct.open(label, spec).unwrap();
        let sig = key.sign(b"direct").unwrap();
        verify_signature(
            key.public_key(),
            &key.signature_algorithm(),
            b"direct",
            &sig,
        )
        .unwrap();
    }

    // A session copy does not outlive the key in the token.
    let watchful = Pkcs11Store::new(config("hsm-test", "123456", 1, true, Duration::ZERO)).unwrap();
    let doomed = watchful.generate("doomed", KeySpec::EcdsaP256).unwrap();
    let sig = doomed.sign(b"before").unwrap();
    verify_signature(
        doomed.public_key(),
        &doomed.signature_algorithm(),
        b"before",
        &sig,
    )
    .unwrap();
    let ctx = watchful.context();
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == "hsm-test")
        .unwrap();
    let admin = ctx.open_rw_session(slot).unwrap();
    let private = |token: bool| {
        admin
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(b"doomed".to_vec()),
                Attribute::Token(token),
            ])
            .unwrap()
    };
    assert_eq!(private(false).len(), 1, "signing made one session copy");
    admin.destroy_object(private(true)[0]).unwrap();
    let after = doomed.sign(b"after");
    assert!(
        matches!(after, Err(HsmError::NotFound(ref l)) if l == "doomed"),
        "signed with a destroyed key, or a wrong error: {after:?}"
    );
    assert!(private(false).is_empty(), "the copy went with the key");
    // One missing key is not a device fault: the store stays up.
    assert!(watchful.is_up(), "a missing key took the whole store down");
    watchful.health().unwrap();
    drop(admin);

    std::fs::remove_dir_all(&dir).unwrap();
}

//! Sessions closed underneath the pool (C_CloseAllSessions through another
//! handle on the module) and a token logged out: the next issuance succeeds in
//! the same process, without a restart.
//!
//! One test in this file: PKCS#11 is initialised once per process, and the
//! token directory comes from SOFTHSM2_CONF, which is set before that.

use std::collections::BTreeMap;
use std::sync::Arc;

use muhr_ca::ceremony::{CaSpec, Ceremony};
use muhr_ca::{Ca, IssuancePolicy, UrlTemplates};
use muhr_hsm::KeyStore;
use muhr_hsm::pkcs11::{Pkcs11Config, Pkcs11Store};
use muhr_policies::Profiles;
use muhr_store::Store;

mod common;
use common::*;

fn request(key: spki::SubjectPublicKeyInfoOwned) -> muhr_ca::Request {
    muhr_ca::Request {
        alt_names: Vec::new(),
        profile: "individual-auth".into(),
        fields: BTreeMap::from([
            ("pinfl".into(), common::pinfl("3150585123456")),
            ("surname".into(), "IVANOV".into()),
            ("given_name".into(), "IVAN".into()),
        ]),
        public_key: key,
        not_after_limit: None,
        actor: "test".into(),
        once: None,
    }
}

fn subject_key(env: &Env) -> spki::SubjectPublicKeyInfoOwned {
    use der::DecodePem;
    let csr = env.csr("k", "ec");
    let pem = std::fs::read_to_string(csr).unwrap();
    x509_cert::request::CertReq::from_pem(pem.as_bytes())
        .unwrap()
        .info
        .public_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_survives_closed_sessions_and_logout() {
    let env = Env::new(Db::Sqlite, Keys::SoftHsm);
    // SAFETY: set before any thread of this test binary touches the environment
    // or the PKCS#11 module; this file holds a single test.
    unsafe { std::env::set_var("SOFTHSM2_CONF", env.softhsm_conf.as_ref().unwrap()) };

    let store = Store::connect(&format!("{}?mode=rwc", env.db_url))
        .await
        .unwrap();
    let keys = Arc::new(
        Pkcs11Store::new(Pkcs11Config {
            module: SOFTHSM_MODULE.into(),
            token_label: "muhr".into(),
            pin: zeroize::Zeroizing::new(PIN.into()),
            sessions: 3,
            copy_keys_to_session: true,
            key_recheck: std::time::Duration::from_secs(30),
            retry: std::time::Duration::from_secs(1),
        })
        .unwrap(),
    );
    let profiles = Arc::new(Profiles::builtin().unwrap());
    let policy = IssuancePolicy {
        urls: UrlTemplates {
            crl: Some("http://127.0.0.1:8080/crl/{ca}.crl".into()),
            ocsp: None,
            ca_issuers: None,
        },
        ..Default::default()
    };
    let spec = |profile: &str, label: &str| CaSpec {
        profile: profile.into(),
        key_label: label.into(),
        key_spec: "ecdsa-p256".parse().unwrap(),
        common_name: format!("Test {label}"),
        organization: "Muhr Test".into(),
        country: "UZ".into(),
    };
    let ceremony = Ceremony {
        root: spec("root-ca", "r"),
        issuing: spec("issuing-ca", "i"),
    };
    muhr_ca::ceremony::init(
        &store,
        keys.as_ref(),
        &profiles,
        &policy,
        &ceremony,
        &env.data(),
        "test",
    )
    .await
    .unwrap();
    let ca = Ca::open(store.clone(), keys.as_ref(), profiles, policy)
        .await
        .unwrap();
    let key = subject_key(&env);
    for _ in 0..4 {
        ca.issue(request(key.clone())).await.unwrap();
    }

    // Another handle on the same module closes every session of the slot.
    let slot = {
        let ctx = keys.context();
        ctx.get_slots_with_initialized_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == "muhr")
            .unwrap()
    };
    let raw = unsafe { cryptoki_sys::Pkcs11::new(SOFTHSM_MODULE) }.unwrap();
    let rv = unsafe { raw.C_CloseAllSessions(slot.id()) };
    assert_eq!(rv, cryptoki_sys::CKR_OK);
    for _ in 0..4 {
        ca.issue(request(key.clone()))
            .await
            .expect("issuance after C_CloseAllSessions");
    }

    // The token is logged out (login state is per application and token).
    let session = keys.context().open_ro_session(slot).unwrap();
    session.logout().unwrap();
    drop(session);
    for _ in 0..4 {
        ca.issue(request(key.clone()))
            .await
            .expect("issuance after C_Logout");
    }
    keys.health().unwrap();
    assert_eq!(store.count_certificates("issued").await.unwrap(), 2 + 12);
    assert_eq!(
        store
            .verify_audit(&Default::default())
            .await
            .unwrap()
            .finding,
        None
    );
}

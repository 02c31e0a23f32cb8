//! The client of other CAs against test servers that answer, lie, stall
//! and drip.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::testing::{CrlSpec, Reply, Server, TestCa};
use super::*;

const SERIAL: &[u8] = &[0x10, 0x07];

fn revoked(s: &Result<(Status, Source), String>) -> bool {
    matches!(s, Ok((Status::Revoked { .. }, Source::Crl)))
}

#[tokio::test]
async fn older_crl_replayed_after_a_newer_one_is_refused_by_its_number() {
    let ca = TestCa::new("Replay CA");
    let server = Server::start(Reply::Body(ca.crl(CrlSpec::fresh(5).revoking(SERIAL)))).await;
    let external = External::from_anchors(vec![ca.anchor_at(None, Some(server.url("/ca.crl")))]);
    let leaf = ca.leaf(SERIAL);
    let s = external.status(0, &leaf).await;
    assert!(revoked(&s), "{s:?}");
    // CRL 4, from before the revocation, still signed and current: an
    // attacker on the path serves it to make the certificate good again.
    server.set(Reply::Body(ca.crl(CrlSpec::fresh(4))));
    let e = external.status(0, &leaf).await.unwrap_err();
    assert!(
        e.contains("replayed") && e.contains("0x04") && e.contains("0x05"),
        "{e}"
    );
    // The same CRL again, and a later one, are fine.
    server.set(Reply::Body(ca.crl(CrlSpec::fresh(5).revoking(SERIAL))));
    let s = external.status(0, &leaf).await;
    assert!(revoked(&s), "{s:?}");
    server.set(Reply::Body(ca.crl(CrlSpec::fresh(6).revoking(SERIAL))));
    let s = external.status(0, &leaf).await;
    assert!(revoked(&s), "{s:?}");
    server.set(Reply::Body(ca.crl(CrlSpec::fresh(5).revoking(SERIAL))));
    assert!(external.status(0, &leaf).await.is_err());
}

#[tokio::test]
async fn redirect_to_a_server_of_the_attackers_choice_is_not_followed() {
    let ca = TestCa::new("Redirect CA");
    // The target serves a perfectly valid CRL: following would "work".
    let target = Server::start(Reply::Body(ca.crl(CrlSpec::fresh(1)))).await;
    let redirector = Server::start(Reply::Redirect(target.url("/ca.crl"))).await;
    let external = External::from_anchors(vec![ca.anchor_at(
        Some(redirector.url("/ocsp")),
        Some(redirector.url("/ca.crl")),
    )]);
    let e = external.status(0, &ca.leaf(SERIAL)).await.unwrap_err();
    assert!(
        e.contains("OCSP:") && e.contains("CRL:") && e.contains("302"),
        "{e}"
    );
    assert_eq!(e.matches("redirects are not followed").count(), 2, "{e}");
    assert_eq!(redirector.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(
        target.accepted.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    // The same CRL at the configured URL is read: the refusal above was
    // the redirect's.
    let direct = External::from_anchors(vec![ca.anchor_at(None, Some(target.url("/ca.crl")))]);
    let s = direct.status(0, &ca.leaf(SERIAL)).await;
    assert!(matches!(s, Ok((Status::Good, Source::Crl))), "{s:?}");
}

#[tokio::test]
async fn endless_crl_body_is_cut_off_at_the_cap_without_being_buffered() {
    let ca = TestCa::new("Flood CA");
    let total = 2 * CRL_BODY_LIMIT;
    let server = Server::start(Reply::Stream { total }).await;
    let external = External::from_anchors(vec![ca.anchor_at(None, Some(server.url("/ca.crl")))]);
    let e = external.status(0, &ca.leaf(SERIAL)).await.unwrap_err();
    assert!(
        e.contains(&format!("exceeds the limit of {CRL_BODY_LIMIT} bytes")),
        "{e}"
    );
    server.settle().await;
    let sent = server.sent.load(Ordering::SeqCst);
    // What the client read, plus what the sockets' buffers held.
    assert!(
        sent < CRL_BODY_LIMIT + 16 * 1024 * 1024,
        "{sent} bytes were sent: the client read on past its cap"
    );
}

#[tokio::test]
async fn endless_ocsp_body_is_cut_off_at_the_cap_without_being_buffered() {
    let ca = TestCa::new("Flood CA");
    let total = 256 * 1024 * 1024;
    let server = Server::start(Reply::Stream { total }).await;
    let external = External::from_anchors(vec![ca.anchor_at(Some(server.url("/")), None)]);
    let e = external.status(0, &ca.leaf(SERIAL)).await.unwrap_err();
    assert!(
        e.contains(&format!("exceeds the limit of {OCSP_BODY_LIMIT} bytes")),
        "{e}"
    );
    server.settle().await;
    let sent = server.sent.load(Ordering::SeqCst);
    assert!(sent < 32 * 1024 * 1024, "{sent} bytes were sent");
}

#[tokio::test]
async fn huge_announced_body_is_refused_at_once() {
    let ca = TestCa::new("Announce CA");
    let server = Server::start(Reply::Announce(1 << 40)).await;
    let external = External::from_anchors(vec![ca.anchor_at(None, Some(server.url("/ca.crl")))]);
    let started = Instant::now();
    let e = external.status(0, &ca.leaf(SERIAL)).await.unwrap_err();
    assert!(e.contains("exceeds the limit"), "{e}");
    assert!(started.elapsed() < FETCH_TIMEOUT, "{:?}", started.elapsed());
}

#[tokio::test]
async fn dripping_server_cannot_hold_the_fetch_past_the_deadline() {
    let ca = TestCa::new("Drip CA");
    let server = Server::start(Reply::Drip).await;
    let deadline = Duration::from_millis(800);
    let external = External::with_deadline(
        vec![ca.anchor_at(Some(server.url("/")), Some(server.url("/ca.crl")))],
        deadline,
    );
    let started = Instant::now();
    let e = external.status(0, &ca.leaf(SERIAL)).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        e.matches("no complete answer within 800 ms").count(),
        2,
        "{e}"
    );
    // Both questions, each stopped at its deadline, not at the end of
    // the server's minute of dripping (slack for a loaded machine).
    assert!(
        took >= 2 * deadline && took < 2 * deadline + Duration::from_secs(2),
        "{took:?}"
    );
    assert!(
        server.sent.load(Ordering::SeqCst) > 0,
        "the server never dripped"
    );
}

#[test]
fn config_refuses_an_unbounded_age_without_next_update() {
    let dir = std::env::temp_dir().join(format!("muhr-ext-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("ca.pem");
    let ca = TestCa::new("Config CA");
    std::fs::write(
        &pem,
        der::pem::encode_string(
            "CERTIFICATE",
            der::pem::LineEnding::LF,
            &ca.certificate.to_der().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let config = |max_age: Option<u64>| -> ExternalCaConfig {
        let mut v = serde_json::json!({
            "name": "X",
            "certificate": pem,
            "crl_url": "http://127.0.0.1:1/x.crl",
            "identity": {"1.2.860.3.16.1.2": "pinfl"},
        });
        if let Some(m) = max_age {
            v["max_age_without_next_update_seconds"] = m.into();
        }
        serde_json::from_value(v).unwrap()
    };
    let a = Anchor::load(&config(None)).unwrap();
    assert_eq!(a.max_age_without_next_update, Duration::from_secs(3600));
    let a = Anchor::load(&config(Some(600))).unwrap();
    assert_eq!(a.max_age_without_next_update, Duration::from_secs(600));
    for bad in [0, 86_401] {
        let e = Anchor::load(&config(Some(bad))).err().unwrap();
        assert!(e.contains("max_age_without_next_update_seconds"), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Login by certificate and signature verification, end to end: a citizen's
//! key and certificate from `muhr client request`, signatures made by
//! `openssl cms -sign` and by `muhr client sign`, relying parties registered
//! with `muhr rp add`, the identity assertion checked against the published
//! JWK Set, and every refusal with its reason.
//!
//! Longer than 600 lines on purpose: every integration test file is a
//! binary of its own, and linking dominates the suite's build on two cores;
//! login, relying parties, verification and other CAs share one set-up.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::oidc::{Provider, call_as};
use common::ra::person_pinfl;
use common::{Db, Env, Keys, openssl, serial_of, start_ra};
use serde_json::{Value, json};

const CHALLENGES: &str = "/api/v1/auth/challenges";
const LOGIN: &str = "/api/v1/auth/login";
const VERIFY: &str = "/api/v1/signatures/verify";
const TLS_LOGIN: &str = "/api/v1/auth/tls-login";

struct Rp {
    id: String,
    basic: String,
}

fn rp_add(env: &Env, name: &str, class: &str) -> Rp {
    let out = env.ok(&["rp", "add", "--name", name, "--class", class]);
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {k} in {out}"))
    };
    let (id, secret) = (field("id"), field("secret"));
    Rp {
        basic: format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
        id,
    }
}

/// A citizen's credential from `muhr client request`, and its key and
/// certificate as OpenSSL reads them out of the PKCS#12 file.
struct Citizen {
    p12: PathBuf,
    password: PathBuf,
    key: PathBuf,
    cert: PathBuf,
}

fn citizen(env: &Env, idp: &Provider, port: u16, pinfl: &str, name: &str) -> Citizen {
    citizen_with(env, idp, port, pinfl, name, "individual-sign")
}

fn citizen_with(
    env: &Env,
    idp: &Provider,
    port: u16,
    pinfl: &str,
    name: &str,
    profile: &str,
) -> Citizen {
    let token = env.write(&format!("{name}.token"), idp.es256(&idp.claims(pinfl)));
    let password = env.write("p12-password", "correct horse battery\n");
    let p12 = env.path(&format!("{name}.p12"));
    let out = Command::new(env!("CARGO_BIN_EXE_muhr"))
        .args(["client", "request", "--profile", profile, "--server"])
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--token-file")
        .arg(&token)
        .arg("--out")
        .arg(&p12)
        .arg("--password-file")
        .arg(&password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pass = format!("file:{}", password.display());
    let key = env.path(&format!("{name}.key"));
    let cert = env.path(&format!("{name}.pem"));
    for (what, out) in [("-nocerts", &key), ("-clcerts", &cert)] {
        let mut args = vec!["pkcs12", "-in", p12.to_str().unwrap(), "-passin", &pass];
        args.extend(["-out", out.to_str().unwrap(), what]);
        args.push(if what == "-nocerts" {
            "-nodes"
        } else {
            "-nokeys"
        });
        openssl(&args);
    }
    Citizen {
        p12,
        password,
        key,
        cert,
    }
}

/// `openssl cms -sign` over `content` (attached or detached), DER bytes.
fn cms_sign(env: &Env, who: &Citizen, content: &[u8], attached: bool, name: &str) -> Vec<u8> {
    cms_sign_typed(env, who, content, attached, None, name)
}

/// As [`cms_sign`], with the encapsulated content type `econtent_type`.
fn cms_sign_typed(
    env: &Env,
    who: &Citizen,
    content: &[u8],
    attached: bool,
    econtent_type: Option<&str>,
    name: &str,
) -> Vec<u8> {
    let input = env.write(&format!("{name}.in"), content);
    let out = env.path(&format!("{name}.p7s"));
    let mut args = vec![
        "cms",
        "-sign",
        "-binary",
        "-in",
        input.to_str().unwrap(),
        "-signer",
        who.cert.to_str().unwrap(),
        "-inkey",
        who.key.to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        out.to_str().unwrap(),
    ];
    if attached {
        args.push("-nodetach");
    }
    if let Some(t) = econtent_type {
        args.extend(["-econtent_type", t]);
    }
    openssl(&args);
    std::fs::read(out).unwrap()
}

fn challenge(port: u16, rp: &Rp) -> String {
    let (code, _, v) = call_as(port, "POST", CHALLENGES, Some(rp.basic.clone()), None);
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["expires_in"], 120);
    v["challenge"].as_str().unwrap().to_string()
}

fn login(port: u16, rp: &Rp, signature: &[u8], detached: Option<&str>) -> (u16, Value) {
    let mut body = json!({ "signature": STANDARD.encode(signature) });
    if let Some(c) = detached {
        body["challenge"] = json!(c);
    }
    let (code, _, v) = call_as(port, "POST", LOGIN, Some(rp.basic.clone()), Some(&body));
    (code, v)
}

/// The login challenge key, read out of the database.
fn challenge_key(env: &Env) -> muhr_login::challenge::Challenges {
    let hex_of = if env.db == Db::Sqlite {
        "hex(secret)"
    } else {
        "encode(secret, 'hex')"
    };
    let key =
        hex::decode(&env.sql(&format!("SELECT {hex_of} FROM login_challenge_key"))[0]).unwrap();
    muhr_login::challenge::Challenges::new(&key, 120)
}

fn reasons(v: &Value) -> Vec<String> {
    v["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["code"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks the assertion's ES256 signature with the key Muhr publishes and
/// returns its claims.
fn assertion_claims(port: u16, jwt: &str) -> Value {
    let (code, _, jwks) = call_as(port, "GET", "/.well-known/jwks.json", None, None);
    assert_eq!(code, 200, "{jwks}");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("kid {} not in {jwks}", header["kid"]));
    let mut point = vec![4u8];
    for c in ["x", "y"] {
        point.extend(URL_SAFE_NO_PAD.decode(key[c].as_str().unwrap()).unwrap());
    }
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
        )
        .expect("the assertion verifies with the published key");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

fn verify_call(port: u16, rp: &Rp, signature: &[u8], content: Option<&[u8]>) -> Value {
    let mut body = json!({ "signature": STANDARD.encode(signature) });
    if let Some(c) = content {
        body["content"] = json!(STANDARD.encode(c));
    }
    let (code, _, v) = call_as(port, "POST", VERIFY, Some(rp.basic.clone()), Some(&body));
    assert_eq!(code, 200, "{v}");
    v
}

fn muhr_verify(env: &Env, sig: &Path, content: Option<&Path>) -> (i32, String) {
    let mut args = vec!["verify", sig.to_str().unwrap()];
    if let Some(c) = content {
        args.extend(["--content", c.to_str().unwrap()]);
    }
    let out = env.run(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn login_and_verify(db: Db) {
    let idp = Provider::start();
    // PostgreSQL with SoftHSM2, the production pairing: the assertion key is
    // then made and used through PKCS#11.
    let keys = if db == Db::Postgres {
        Keys::SoftHsm
    } else {
        Keys::Software
    };
    let env = Env::with_extra(
        db,
        keys,
        &format!(
            "[login]\nrp_cache_seconds = 0\n{}",
            idp.config("[citizens.rate_limits]\naddress_per_minute = 0")
        ),
    );
    env.init();
    let tax = rp_add(&env, "State Tax Committee", "state");
    let bank = rp_add(&env, "Example Bank", "commercial");
    let refused = env.refused(&["rp", "add", "--name", "Example Bank", "--class", "state"]);
    assert!(refused.contains("exists"), "{refused}");
    let refused = env.refused(&["rp", "add", "--name", "X", "--class", "private"]);
    assert!(refused.contains("--class"), "{refused}");
    let (_server, port, mtls) = start_ra(&env);
    let me = person_pinfl(11);
    let alice = citizen(&env, &idp, port, &me, "alice");
    // Her authentication certificate, on its own key: the one that logs in.
    let alice_auth = citizen_with(&env, &idp, port, &me, "alice-auth", "individual-auth");

    // Relying-party credentials are required and checked.
    for auth in [
        None,
        Some(format!(
            "Basic {}",
            STANDARD.encode(format!("{}:wrong", tax.id))
        )),
        Some("Bearer something".to_string()),
    ] {
        let (code, head, v) = call_as(port, "POST", CHALLENGES, auth, None);
        assert_eq!(code, 401, "{v}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{head}"
        );
    }

    // Attached signature over a challenge: an assertion for that relying party.
    let c = challenge(port, &tax);
    let sig = cms_sign(&env, &alice_auth, c.as_bytes(), true, "login1");
    let (code, v) = login(port, &tax, &sig, None);
    assert_eq!(code, 200, "{v}");
    let claims = assertion_claims(port, v["assertion"].as_str().unwrap());
    assert_eq!(claims["aud"], tax.id.as_str());
    assert_eq!(claims["sub"], me.as_str());
    assert_eq!(claims["pinfl"], me.as_str());
    assert_eq!(claims["amr"], json!(["cert"]));
    assert_eq!(claims["family_name"], "Toshmatov", "{claims}");
    assert_eq!(claims["middle_name"], "Alisher o'g'li", "{claims}");
    assert!(
        claims["given_name"].is_string() && claims["cert_serial"].is_string(),
        "{claims}"
    );
    assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());
    let auth_serial = claims["cert_serial"].as_str().unwrap().to_string();
    assert_eq!(claims["cert_profile"], "individual-auth");
    // Her signing certificate's: documents and renewal below.
    let serial = serial_of(&alice.cert);

    // A certificate used for the wrong purpose: her signing certificate
    // (nonRepudiation, no clientAuth) signs the challenge. A relying party
    // that asked her to "sign a document" must not get a login out of it.
    let (code, v) = login(
        port,
        &tax,
        &cms_sign(
            &env,
            &alice,
            challenge(port, &tax).as_bytes(),
            true,
            "sign-as-login",
        ),
        None,
    );
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["wrong_purpose".to_string()]),
        "{v}"
    );

    // The same signature again: the challenge is single use.
    let (code, v) = login(port, &tax, &sig, None);
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["replayed_challenge".to_string()]),
        "{v}"
    );
    // Eight logins racing with one signature, most of them recorded in one
    // group commit: exactly one wins, the others are replays.
    let c = challenge(port, &tax);
    let raced = cms_sign(&env, &alice_auth, c.as_bytes(), true, "race");
    let outcomes: Vec<(u16, Vec<String>)> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..8)
            .map(|_| s.spawn(|| login(port, &tax, &raced, None)))
            .collect();
        runs.into_iter()
            .map(|r| {
                let (code, v) = r.join().unwrap();
                (code, reasons(&v))
            })
            .collect()
    });
    assert_eq!(
        outcomes.iter().filter(|(code, _)| *code == 200).count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .filter(|(code, _)| *code != 200)
            .all(|(code, r)| *code == 401 && r == &["replayed_challenge"]),
        "{outcomes:?}"
    );

    // Detached signature, challenge alongside.
    let c = challenge(port, &tax);
    let detached = cms_sign(&env, &alice_auth, c.as_bytes(), false, "login2");
    let (code, v) = login(port, &tax, &detached, None);
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["no_content".to_string()]),
        "{v}"
    );
    let (code, v) = login(port, &tax, &detached, Some(&c));
    assert_eq!(code, 200, "{v}");

    // A signature over another text than the challenge named: content changed.
    let c = challenge(port, &tax);
    let other = challenge(port, &tax);
    let (code, v) = login(port, &tax, &detached, Some(&c));
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["content_changed".to_string()]),
        "{v}"
    );
    // A challenge given to another relying party is no challenge for this one.
    let theirs = cms_sign(&env, &alice_auth, other.as_bytes(), true, "login3");
    let (code, v) = login(port, &bank, &theirs, None);
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["unknown_challenge".to_string()]),
        "{v}"
    );
    // An expired challenge: made with the key the servers share, as an
    // operator with the database could, issued 1000 s ago.
    let stale = challenge_key(&env)
        .issue(&tax.id, muhr_store::now_secs() - 1000)
        .unwrap()
        .0;
    let (code, v) = login(
        port,
        &tax,
        &cms_sign(&env, &alice_auth, stale.as_bytes(), true, "stale"),
        None,
    );
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["expired_challenge".to_string()]),
        "{v}"
    );
    // A made-up challenge of the right shape, and a known one altered.
    let forged = other.replacen(&tax.id, &bank.id, 1);
    let (code, v) = login(
        port,
        &bank,
        &cms_sign(&env, &alice_auth, forged.as_bytes(), true, "forged"),
        None,
    );
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["unknown_challenge".to_string()]),
        "{v}"
    );
    // A certificate from elsewhere.
    let stranger_key = env.path("stranger.key");
    let stranger = env.path("stranger.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        stranger_key.to_str().unwrap(),
        "-out",
        stranger.to_str().unwrap(),
        "-subj",
        "/CN=stranger",
        "-days",
        "2",
    ]);
    let mallory = Citizen {
        p12: PathBuf::new(),
        password: PathBuf::new(),
        key: stranger_key,
        cert: stranger,
    };
    let c = challenge(port, &tax);
    let (code, v) = login(
        port,
        &tax,
        &cms_sign(&env, &mallory, c.as_bytes(), true, "m"),
        None,
    );
    // Untrusted, and not made for authentication either (no clientAuth).
    assert_eq!(
        (code, reasons(&v)),
        (
            401,
            vec!["untrusted_issuer".to_string(), "wrong_purpose".to_string()]
        ),
        "{v}"
    );
    // Garbage and tampering with the signed bytes.
    let (code, v) = login(port, &tax, b"not CMS at all", None);
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["malformed".to_string()]),
        "{v}"
    );
    let c = challenge(port, &tax);
    let mut tampered = cms_sign(&env, &alice_auth, c.as_bytes(), true, "login4");
    let n = tampered.len();
    tampered[n - 5] ^= 0x01; // inside the signature value
    let (code, v) = login(port, &tax, &tampered, None);
    assert_eq!(code, 401, "{v}");
    assert!(
        reasons(&v) == ["bad_signature"] || reasons(&v) == ["malformed"],
        "{v}"
    );
    let (code, v) = login(
        port,
        &tax,
        &cms_sign(&env, &alice_auth, c.as_bytes(), true, "l5"),
        None,
    );
    assert_eq!(code, 200, "an unconsumed challenge still works: {v}");

    // The same over mutual TLS: the connection's certificate (an
    // authentication certificate, clientAuth) instead of a signature, and a
    // challenge the relying party handed to the browser.
    let bob = person_pinfl(12);
    let bob_auth = citizen_with(&env, &idp, port, &bob, "bob", "individual-auth");
    let bob_tls = env.path("bob-tls.pem");
    openssl(&[
        "pkcs12",
        "-in",
        bob_auth.p12.to_str().unwrap(),
        "-passin",
        &format!("file:{}", bob_auth.password.display()),
        "-nodes",
        "-out",
        bob_tls.to_str().unwrap(),
    ]);
    let tls_login = |cert: Option<&Path>, challenge: &str| {
        common::ra::call(
            &env,
            mtls,
            cert,
            "POST",
            TLS_LOGIN,
            Some(&json!({ "challenge": challenge })),
        )
    };
    let c = challenge(port, &bank);
    let (code, v) = tls_login(Some(&bob_tls), &c);
    assert_eq!(code, 200, "{v}");
    let claims = assertion_claims(port, v["assertion"].as_str().unwrap());
    assert_eq!(
        (&claims["aud"], &claims["pinfl"], &claims["login_method"]),
        (&json!(bank.id), &json!(bob), &json!("tls")),
        "{claims}"
    );
    assert_eq!(claims["nonce"], c.as_str(), "the relying party's challenge");
    assert_eq!(claims["cert_profile"], "individual-auth");
    let (code, v) = tls_login(Some(&bob_tls), &c);
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["replayed_challenge".to_string()]),
        "{v}"
    );
    let (code, v) = tls_login(Some(&bob_tls), &format!("{}.1.AAAA.AAAA", bank.id));
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["unknown_challenge".to_string()]),
        "{v}"
    );
    // No certificate: no TLS session at all.
    let (code, _) = tls_login(None, &challenge(port, &bank));
    assert_eq!(code, 0, "the handshake needs a client certificate");
    // An RA operator's certificate is a client the TLS accepts, but it
    // names no person.
    let operator = common::ra::client(&env, "operator", "OP-1");
    let (code, v) = tls_login(Some(&operator), &challenge(port, &bank));
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["no_identity".to_string()]),
        "{v}"
    );
    // A suspended authentication certificate: the handshake passes (TLS
    // knows nothing of status), the login does not.
    let bob_serial = claims["cert_serial"].as_str().unwrap().to_string();
    env.ok(&["suspend", &bob_serial]);
    let (code, v) = tls_login(Some(&bob_tls), &challenge(port, &bank));
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["suspended".to_string()]),
        "{v}"
    );
    // A signing certificate over TLS: the handshake may pass, the login not.
    let alice_tls = env.path("alice-tls.pem");
    openssl(&[
        "pkcs12",
        "-in",
        alice.p12.to_str().unwrap(),
        "-passin",
        &format!("file:{}", alice.password.display()),
        "-nodes",
        "-out",
        alice_tls.to_str().unwrap(),
    ]);
    let (code, v) = tls_login(Some(&alice_tls), &challenge(port, &bank));
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["wrong_purpose".to_string()]),
        "{v}"
    );
    // Nothing above was used, so no login is metered but the first.
    assert_eq!(
        env.sql(&format!(
            "SELECT COUNT(*) FROM auth_challenges WHERE rp = '{}' AND kind = 'tls'",
            bank.id
        )),
        ["1"]
    );

    // Document signatures: OpenSSL's and `muhr client sign`'s.
    let doc = b"Contract No. 7: I agree.\n";
    let doc_file = env.write("contract.txt", doc);
    let by_openssl = cms_sign(&env, &alice, doc, false, "contract");
    // The reverse: an authentication certificate does not sign documents.
    let by_auth = cms_sign(&env, &alice_auth, doc, false, "auth-as-signature");
    let v = verify_call(port, &bank, &by_auth, Some(doc));
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(reasons(&v), ["wrong_purpose"], "{v}");
    let v = verify_call(port, &bank, &by_openssl, Some(doc));
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["signer"]["identity"]["pinfl"], me.as_str());
    assert_eq!(v["signer"]["status_now"], "good");
    assert!(v["claimed_signing_time"].is_i64(), "{v}");
    assert_eq!(v["judged_at_source"], "verification_time", "{v}");
    let v = verify_call(
        port,
        &bank,
        &by_openssl,
        Some(b"Contract No. 7: I refuse.\n"),
    );
    assert_eq!(v["valid"], false);
    assert_eq!(reasons(&v), ["content_changed"], "{v}");
    let out = Command::new(env!("CARGO_BIN_EXE_muhr"))
        .args(["client", "sign"])
        .arg(&doc_file)
        .arg("--p12")
        .arg(&alice.p12)
        .arg("--password-file")
        .arg(&alice.password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = env.path("contract.txt.p7s");
    let checked = common::openssl_output(&[
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        ours.to_str().unwrap(),
        "-content",
        doc_file.to_str().unwrap(),
        "-CAfile",
        env.root_pem().to_str().unwrap(),
        "-purpose",
        "any",
        "-out",
        "/dev/null",
    ]);
    assert!(
        String::from_utf8_lossy(&checked.stderr).contains("Verification successful"),
        "{checked:?}"
    );
    let (code, text) = muhr_verify(&env, &ours, Some(&doc_file));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("VALID") && text.contains(&me), "{text}");
    let changed = env.write("changed.txt", "Contract No. 8\n");
    let (code, text) = muhr_verify(&env, &ours, Some(&changed));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("content_changed"), "{text}");
    let (code, text) = muhr_verify(&env, &env.path("missing.p7s"), None);
    assert_eq!(code, 2, "{text}");
    let again = Command::new(env!("CARGO_BIN_EXE_muhr"))
        .args(["client", "sign"])
        .arg(&doc_file)
        .arg("--p12")
        .arg(&alice.p12)
        .arg("--password-file")
        .arg(env.write("wrong-password", "not the password\n"))
        .arg("--out")
        .arg(env.path("other.p7s"))
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(!env.path("other.p7s").exists());

    // Renewal without a new login: a one-time challenge for the certificate
    // to renew, a CSR for a new key, both in a CMC PKIData signed (content
    // type id-cct-PKIData) with the holder's authentication certificate.
    let renewal_challenge = |serial: &str| -> String {
        let (code, _, v) = call_as(
            port,
            "POST",
            "/api/v1/certificates/renew/challenge",
            None,
            Some(&json!({ "serial": serial })),
        );
        assert_eq!(code, 201, "{v}");
        v["challenge"].as_str().unwrap().to_string()
    };
    // A new key and its CSR (DER).
    let new_key = |name: &str| -> (PathBuf, Vec<u8>) {
        let key = env.path(&format!("{name}.key"));
        let csr = env.path(&format!("{name}.csr"));
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            csr.to_str().unwrap(),
            "-subj",
            "/CN=ignored",
        ]);
        (key, std::fs::read(&csr).unwrap())
    };
    // OpenSSL signs the request as the citizen's client would.
    let sign_as = |who: &Citizen, content: &[u8], econtent_type: Option<&str>, name: &str| {
        cms_sign_typed(&env, who, content, true, econtent_type, name)
    };
    let post_renewal = |sig: &[u8]| -> (u16, Value) {
        let body = json!({ "signature": STANDARD.encode(sig) });
        let (code, _, v) = call_as(
            port,
            "POST",
            "/api/v1/certificates/renew",
            None,
            Some(&body),
        );
        (code, v)
    };
    const PKI_DATA: &str = "1.3.6.1.5.5.7.12.2";
    let renewal = |signer: &Citizen, serial: &str, name: &str| -> (Vec<u8>, Citizen) {
        let (key, csr) = new_key(name);
        let pki =
            muhr_ra::citizen::cmc::request(&csr, renewal_challenge(serial).as_bytes()).unwrap();
        let sig = sign_as(signer, &pki, Some(PKI_DATA), name);
        let cert = env.path(&format!("{name}.pem"));
        (
            sig,
            Citizen {
                p12: PathBuf::new(),
                password: PathBuf::new(),
                key,
                cert,
            },
        )
    };
    let renew = |signer: &Citizen, serial: &str, name: &str| -> (u16, Value, Citizen) {
        let (sig, citizen) = renewal(signer, serial, name);
        let (code, v) = post_renewal(&sig);
        if let Some(p) = v["pem"].as_str() {
            std::fs::write(&citizen.cert, p).unwrap();
        }
        (code, v, citizen)
    };
    let rule = |v: &Value| v["error"]["rule"].as_str().unwrap_or_default().to_string();

    // The attacks first; none of them issues anything.
    let carol = citizen_with(
        &env,
        &idp,
        port,
        &person_pinfl(13),
        "carol",
        "individual-auth",
    );
    let alice_auth2 = citizen_with(&env, &idp, port, &me, "alice-auth2", "individual-auth");
    let other_of_hers = serial_of(&alice_auth2.cert);
    let before = env.count("certificates");
    // A citizen asked to "sign a document" that is a CSR: a bare CSR signed
    // as data, by either of her certificates, never renews.
    let (_, csr) = new_key("bare");
    for (who, name) in [(&alice, "bare-sign"), (&alice_auth, "bare-auth")] {
        let (code, v) = post_renewal(&sign_as(who, &csr, None, name));
        assert_eq!(code, 422, "{v}");
        assert!(rule(&v).contains("never renews"), "{v}");
    }
    // A proper request signed with the signing certificate: not an
    // authentication certificate, refused.
    let (sig, _) = renewal(&alice, &auth_serial, "by-sign-cert");
    let (code, v) = post_renewal(&sig);
    assert_eq!(code, 422, "{v}");
    assert!(rule(&v).contains("wrong_purpose"), "{v}");
    // Another person's authentication certificate renews nothing of hers;
    // nor does her own authentication certificate renew her signing one:
    // a certificate is renewed only by its own key, or one stolen ID token
    // would renew every certificate of its victim.
    let (code, _, v) = call_as(
        port,
        "POST",
        "/api/v1/certificates/renew/challenge",
        None,
        Some(&json!({ "serial": serial })),
    );
    assert_eq!(
        code, 422,
        "no renewal challenge for a signing certificate: {v}"
    );
    assert!(rule(&v).contains("only authentication certificates"), "{v}");
    for (who, target, name) in [
        (&carol, &auth_serial, "by-carol"),
        (&alice_auth, &other_of_hers, "auth-renews-her-other"),
    ] {
        let (sig, _) = renewal(who, target, name);
        let (code, v) = post_renewal(&sig);
        assert_eq!(code, 403, "{name}: {v}");
        assert!(rule(&v).contains("its own key"), "{name}: {v}");
    }
    // A forged challenge, and a login challenge in its place: refused.
    let (_, csr) = new_key("forged-challenge");
    for (nonce, name) in [
        (
            format!("renew-{serial}.9999999999.AAAA.AAAA"),
            "forged-renewal",
        ),
        (challenge(port, &tax), "login-challenge"),
    ] {
        let pki = muhr_ra::citizen::cmc::request(&csr, nonce.as_bytes()).unwrap();
        let (code, v) = post_renewal(&sign_as(&alice_auth, &pki, Some(PKI_DATA), name));
        assert_eq!(code, 422, "{name}: {v}");
        assert!(rule(&v).contains("not a renewal challenge"), "{name}: {v}");
    }
    // A foreign certificate.
    let (sig, _) = renewal(&mallory, &auth_serial, "by-mallory");
    let (code, v) = post_renewal(&sig);
    assert_eq!(code, 422, "{v}");
    assert!(rule(&v).contains("untrusted_issuer"), "{v}");
    assert_eq!(
        env.count("certificates"),
        before,
        "no attack issued anything"
    );

    // Her own renewal of her authentication certificate.
    let (sig, first) = renewal(&alice_auth, &auth_serial, "renew1");
    let (code, v) = post_renewal(&sig);
    assert_eq!(code, 201, "{v}");
    std::fs::write(&first.cert, v["pem"].as_str().unwrap()).unwrap();
    assert_eq!(
        (
            v["renewed"].as_str(),
            v["renewals"].as_u64(),
            v["profile"].as_str()
        ),
        (Some(auth_serial.as_str()), Some(1), Some("individual-auth"))
    );
    common::verify_chain(&env.data(), &first.cert);
    let subject = openssl(&[
        "x509",
        "-in",
        first.cert.to_str().unwrap(),
        "-noout",
        "-subject",
    ]);
    assert!(
        subject.contains(&me) && !subject.contains("ignored"),
        "{subject}"
    );
    // The same request again (a retry): the same certificate.
    let (code, again) = post_renewal(&sig);
    assert_eq!(
        (code, again["serial"].clone()),
        (200, v["serial"].clone()),
        "{again}"
    );
    // Its challenge with another key: a replay, refused.
    let (_, csr2) = new_key("renew1-replay");
    let used =
        muhr_ra::citizen::cmc::parse(&std::fs::read(env.path("renew1.in")).unwrap()).unwrap();
    let replay = muhr_ra::citizen::cmc::request(&csr2, &used.recipient_nonce).unwrap();
    let (code, v) = post_renewal(&sign_as(&alice_auth, &replay, Some(PKI_DATA), "replay"));
    assert_eq!(code, 409, "{v}");
    assert!(rule(&v).contains("used already"), "{v}");
    // The same certificate renewed again, with a fresh challenge and
    // another key: it was renewed already.
    let (code, v, _) = renew(&alice_auth, &auth_serial, "renew1b");
    assert_eq!(code, 409, "{v}");
    // The second renewal, by the citizen's own command, with the first
    // renewal's key and certificate in a PKCS#12 file.
    let first_p12 = env.path("renew1.p12");
    openssl(&[
        "pkcs12",
        "-export",
        "-inkey",
        first.key.to_str().unwrap(),
        "-in",
        first.cert.to_str().unwrap(),
        "-passout",
        &format!("file:{}", alice_auth.password.display()),
        "-out",
        first_p12.to_str().unwrap(),
    ]);
    let second_p12 = env.path("renew2.p12");
    let out = Command::new(env!("CARGO_BIN_EXE_muhr"))
        .args(["client", "renew", "--server"])
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--p12")
        .arg(&first_p12)
        .arg("--p12-password-file")
        .arg(&alice_auth.password)
        .arg("--out")
        .arg(&second_p12)
        .arg("--password-file")
        .arg(&alice_auth.password)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("renewals   2"), "{text}");
    // A third renewal in a row: the person must log in again.
    let pass = format!("file:{}", alice_auth.password.display());
    let second = Citizen {
        p12: second_p12.clone(),
        password: alice_auth.password.clone(),
        key: env.path("renew2.key"),
        cert: env.path("renew2.pem"),
    };
    for (what, out) in [("-nocerts", &second.key), ("-clcerts", &second.cert)] {
        openssl(&[
            "pkcs12",
            "-in",
            second_p12.to_str().unwrap(),
            "-passin",
            &pass,
            "-out",
            out.to_str().unwrap(),
            what,
            if what == "-nocerts" {
                "-nodes"
            } else {
                "-nokeys"
            },
        ]);
    }
    let second_serial = serial_of(&second.cert);
    let (code, v, _) = renew(&second, &second_serial, "renew3");
    assert_eq!(code, 403, "{v}");
    assert!(rule(&v).contains("authenticate"), "{v}");
    // The citizen's command refuses to send anything in the clear to
    // another machine.
    let out = Command::new(env!("CARGO_BIN_EXE_muhr"))
        .args(["client", "renew", "--server", "http://eds.example.uz"])
        .arg("--p12")
        .arg(&alice_auth.p12)
        .arg("--p12-password-file")
        .arg(&alice_auth.password)
        .arg("--out")
        .arg(env.path("never.p12"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be https"),
        "{out:?}"
    );
    let (_, _, listed) = call_as(
        port,
        "GET",
        "/api/v1/me/certificates",
        Some(format!("Bearer {}", idp.es256(&idp.claims(&me)))),
        None,
    );
    let origins: Vec<&str> = listed["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["issued_by"].as_str())
        .collect();
    assert_eq!(
        origins.iter().filter(|o| **o == "renewal").count(),
        2,
        "{listed}"
    );

    // Suspended: no login, and no document signature of that key is valid
    // any more, whatever time it claims: without a proof of existence a
    // signature is judged at verification.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    env.ok(&["suspend", &serial]);
    env.ok(&["suspend", &auth_serial]);
    let c = challenge(port, &tax);
    let (code, v) = login(
        port,
        &tax,
        &cms_sign(&env, &alice_auth, c.as_bytes(), true, "l6"),
        None,
    );
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["suspended".to_string()]),
        "{v}"
    );
    let v = verify_call(port, &bank, &by_openssl, Some(doc));
    assert_eq!(
        (v["valid"].clone(), v["signer"]["status_now"].clone()),
        (json!(false), json!("suspended")),
        "{v}"
    );
    let late = cms_sign(&env, &alice, doc, false, "late");
    let v = verify_call(port, &bank, &late, Some(doc));
    assert_eq!(reasons(&v), ["suspended"], "{v}");
    // Revoked: the same.
    env.ok(&["restore", &serial]);
    env.ok(&["revoke", &serial, "--reason", "keyCompromise"]);
    env.ok(&["restore", &auth_serial]);
    env.ok(&["revoke", &auth_serial, "--reason", "keyCompromise"]);
    let (code, v) = login(
        port,
        &tax,
        &cms_sign(
            &env,
            &alice_auth,
            challenge(port, &tax).as_bytes(),
            true,
            "l7",
        ),
        None,
    );
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["revoked".to_string()]),
        "{v}"
    );
    let late = cms_sign(&env, &alice, doc, false, "later");
    let (code, text) = muhr_verify(&env, &env.write("later.p7s", &late), Some(&doc_file));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("revoked"), "{text}");
    // The attacker who holds a compromised key signs "in the past": the
    // signature made (and claiming a time) before the keyCompromise
    // revocation is refused too, by the CLI and the API, because nothing
    // proves when it was made; the claim is shown as a claim.
    let (code, text) = muhr_verify(
        &env,
        &env.write("backdated.p7s", &by_openssl),
        Some(&doc_file),
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("keyCompromise"), "{text}");
    assert!(text.contains("claimed by the signer, not proven"), "{text}");
    let v = verify_call(port, &bank, &by_openssl, Some(doc));
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(reasons(&v), ["revoked"], "{v}");
    assert!(
        v["claimed_signing_time"].as_i64().unwrap() < v["signer"]["revoked_at"].as_i64().unwrap(),
        "the claim predates the revocation and still does not count: {v}"
    );
    assert_eq!(v["judged_at_source"], "verification_time", "{v}");

    // Usage: logins (consumed challenges) and verifications per relying party.
    let month = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%Y-%m"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let report = env.ok(&[
        "report",
        "usage",
        "--month",
        month.trim(),
        "--format",
        "json",
    ]);
    let report: Value = serde_json::from_str(&report).unwrap();
    let row = |id: &str| {
        report["relying_parties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rp"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(row(&tax.id)["logins"], 4, "{report}");
    assert_eq!(row(&tax.id)["billable"], false);
    assert_eq!(row(&bank.id)["logins"], 1, "the TLS login");
    assert_eq!(row(&bank.id)["verifications"], 6, "{report}");
    assert_eq!(row(&bank.id)["billable"], true);
    let refused = env.refused(&["report", "usage", "--month", "2026-13"]);
    assert!(refused.contains("month"), "{refused}");

    // A disabled relying party: its credentials stop working (at once here:
    // the test server caches them for no time), and so do its challenges.
    let pending = challenge(port, &bank);
    env.ok(&["rp", "disable", "--id", &bank.id]);
    let (code, _, v) = call_as(port, "POST", CHALLENGES, Some(bank.basic.clone()), None);
    assert_eq!(code, 401, "{v}");
    assert!(
        v["error"]["rule"].as_str().unwrap().contains("disabled"),
        "{v}"
    );
    env.ok(&["restore", &bob_serial]);
    let (code, v) = tls_login(Some(&bob_tls), &pending);
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["relying_party".to_string()]),
        "{v}"
    );
    let (code, v) = tls_login(Some(&bob_tls), &challenge(port, &tax));
    assert_eq!(code, 200, "restored, and for another party: {v}");
    let refused = env.refused(&["rp", "disable", "--id", &bank.id]);
    assert!(refused.contains("already"), "{refused}");
    let refused = env.refused(&["rp", "disable", "--id", "rp-nobody"]);
    assert!(refused.contains("no relying party"), "{refused}");
    env.ok(&["audit", "verify"]);
}

/// Another CA, made with OpenSSL: its certificate, key, an `openssl ca`
/// database that both its OCSP responder and its CRL are made from, and a
/// delegated OCSP responder certificate.
struct OtherCa {
    dir: PathBuf,
}

impl OtherCa {
    fn new(dir: &Path, cn: &str) -> Self {
        let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
            "-days",
            "30",
            "-subj",
            &format!("/C=UZ/O=Example E-IMZO/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
        std::fs::write(
            dir.join("ca.cnf"),
            format!(
                "[ca]\ndefault_ca = x\n[x]\ndatabase = {}\ncrlnumber = {}\n\
                 default_md = sha256\ndefault_crl_days = 1\n",
                p("index.txt"),
                p("crlnumber")
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("ocsp.ext"),
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=OCSPSigning\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("leaf.ext"),
            "keyUsage=critical,digitalSignature,nonRepudiation\nextendedKeyUsage=clientAuth,emailProtection\n",
        )
        .unwrap();
        let ca = Self {
            dir: dir.to_path_buf(),
        };
        ca.sign("ocsp", "0100", "/CN=Example E-IMZO OCSP", "ocsp.ext");
        ca
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    /// A key and a certificate with serial `serial` (hex) signed by the CA.
    fn sign(&self, name: &str, serial: &str, subject: &str, ext: &str) -> Citizen {
        let p = |f: &str| self.path(f).to_str().unwrap().to_string();
        let (key, csr, cert) = (
            p(&format!("{name}.key")),
            p(&format!("{name}.csr")),
            p(&format!("{name}.pem")),
        );
        // OpenSSL knows the PINFL attribute only by a name given here.
        std::fs::write(
            self.path("req.cnf"),
            "oid_section = oids\n[oids]\npinfl = 1.2.860.3.16.1.2\n\
             [req]\ndistinguished_name = dn\n[dn]\n",
        )
        .unwrap();
        openssl(&[
            "req",
            "-config",
            &p("req.cnf"),
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-set_serial",
            &format!("0x{serial}"),
            "-days",
            "10",
            "-extfile",
            &p(ext),
            "-out",
            &cert,
        ]);
        Citizen {
            p12: PathBuf::new(),
            password: PathBuf::new(),
            key: key.into(),
            cert: cert.into(),
        }
    }

    /// A citizen's certificate, as the country's CAs write the subject.
    fn citizen(&self, serial: &str, pinfl: &str) -> Citizen {
        self.sign(
            &format!("leaf-{serial}"),
            serial,
            &format!(
                "/C=UZ/CN=TOSHMATOV SARDOR/SN=TOSHMATOV/name=SARDOR/UID=412345678/pinfl={pinfl}"
            ),
            "leaf.ext",
        )
    }

    /// Lines of the `openssl ca` database: serial and, when revoked, how
    /// long ago (seconds).
    fn database(&self, entries: &[(&str, Option<u64>)]) {
        let stamp = |ago: i64| {
            let out = Command::new("date")
                .args(["-u", "-d", &format!("@{}", muhr_store::now_secs() - ago)])
                .arg("+%y%m%d%H%M%SZ")
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let expires = stamp(-86400 * 9);
        let lines: String = entries
            .iter()
            .map(|(serial, revoked)| match revoked {
                None => format!("V\t{expires}\t\t{serial}\tunknown\t/CN=x{serial}\n"),
                Some(ago) => format!(
                    "R\t{expires}\t{},keyCompromise\t{serial}\tunknown\t/CN=x{serial}\n",
                    stamp(*ago as i64)
                ),
            })
            .collect();
        std::fs::write(self.path("index.txt"), lines).unwrap();
    }

    /// A complete CRL from the database, DER, into `dir/ca.crl`.
    fn crl(&self, dir: &Path) {
        let p = |f: &str| self.path(f).to_str().unwrap().to_string();
        openssl(&[
            "ca",
            "-config",
            &p("ca.cnf"),
            "-gencrl",
            "-keyfile",
            &p("ca.key"),
            "-cert",
            &p("ca.pem"),
            "-out",
            &p("crl.pem"),
        ]);
        openssl(&[
            "crl",
            "-in",
            &p("crl.pem"),
            "-outform",
            "DER",
            "-out",
            dir.join("ca.crl").to_str().unwrap(),
        ]);
    }
}

/// A background process, killed when dropped.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "port {port} never opened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn external_login(db: Db) {
    common::require("python3");
    let work = tempfile::tempdir().unwrap();
    let other = OtherCa::new(work.path(), "Example E-IMZO CA");
    // A second CA whose responder never answers.
    let dormant_dir = work.path().join("dormant");
    std::fs::create_dir(&dormant_dir).unwrap();
    let dormant = OtherCa::new(&dormant_dir, "Dormant CA");
    let pinfl = person_pinfl(21);
    let [good, revoked, unknown, good2, revoked2, late] =
        ["1001", "1002", "1003", "1004", "1005", "1006"].map(|s| other.citizen(s, &pinfl));
    other.database(&[
        ("0100", None),
        ("1001", None),
        ("1002", Some(3600)),
        ("1004", None),
        ("1005", Some(3600)),
        ("1006", None),
    ]);
    let www = work.path().join("www");
    std::fs::create_dir(&www).unwrap();
    other.crl(&www);
    let (ocsp_port, crl_port) = (common::free_port(), common::free_port());
    let p = |f: &str| other.path(f).to_str().unwrap().to_string();
    let ocsp = Daemon(
        Command::new("openssl")
            .args([
                "ocsp",
                "-index",
                &p("index.txt"),
                "-port",
                &ocsp_port.to_string(),
            ])
            .args([
                "-rsigner",
                &p("ocsp.pem"),
                "-rkey",
                &p("ocsp.key"),
                "-CA",
                &p("ca.pem"),
            ])
            .args(["-ndays", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(work.path().join("ocsp.log")).unwrap())
            .spawn()
            .expect("openssl ocsp"),
    );
    let crl_server = Daemon(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &crl_port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(&www)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 http.server"),
    );
    // OpenSSL's responder hangs on a connection that closes without a
    // request, so it is waited for with real questions.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !Command::new("openssl")
        .args([
            "ocsp",
            "-issuer",
            &p("ca.pem"),
            "-serial",
            "0x1001",
            "-noverify",
        ])
        .args(["-url", &format!("http://127.0.0.1:{ocsp_port}")])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "openssl ocsp did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    wait_for_port(crl_port);
    let env = Env::with_extra(
        db,
        Keys::Software,
        &format!(
            "[login]\n\
             [[login.external_cas]]\n\
             name = \"Example E-IMZO\"\n\
             certificate = \"{}\"\n\
             ocsp_url = \"http://127.0.0.1:{ocsp_port}\"\n\
             crl_url = \"http://127.0.0.1:{crl_port}/ca.crl\"\n\
             [login.external_cas.identity]\n\
             \"1.2.860.3.16.1.2\" = \"pinfl\"\n\
             \"2.5.4.4\" = \"surname\"\n\
             \"2.5.4.41\" = \"given_name\"\n\
             \"0.9.2342.19200300.100.1.1\" = \"tin\"\n\
             [[login.external_cas]]\n\
             name = \"Dormant\"\n\
             certificate = \"{}\"\n\
             ocsp_url = \"http://127.0.0.1:{}\"\n\
             [login.external_cas.identity]\n\
             \"1.2.860.3.16.1.2\" = \"pinfl\"\n",
            p("ca.pem"),
            dormant.path("ca.pem").display(),
            common::free_port(),
        ),
    );
    env.init();
    let tax = rp_add(&env, "State Tax Committee", "state");
    let (_server, port) = common::start(&env, &[]);
    let try_login = |who: &Citizen, name: &str| {
        let c = challenge(port, &tax);
        login(
            port,
            &tax,
            &cms_sign(&env, who, c.as_bytes(), true, name),
            None,
        )
    };

    // Good by OCSP (answered by a delegated responder certificate): the
    // identity comes from the attributes configured for that CA.
    let (code, v) = try_login(&good, "e1");
    assert_eq!(code, 200, "{v}");
    let claims = assertion_claims(port, v["assertion"].as_str().unwrap());
    assert_eq!(claims["pinfl"], pinfl.as_str(), "{claims}");
    assert_eq!(claims["family_name"], "TOSHMATOV");
    assert_eq!(claims["given_name"], "SARDOR");
    assert_eq!(claims["tin"], "412345678");
    assert_eq!(claims["cert_issuer"], "Example E-IMZO");
    assert!(claims.get("cert_profile").is_none(), "{claims}");
    // A document signature of that CA's citizen, by the service and the CLI.
    let doc = b"Application No. 12\n";
    let signed = cms_sign(&env, &good, doc, false, "e-doc");
    let v = verify_call(port, &tax, &signed, Some(doc));
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["signer"]["external_ca"], "Example E-IMZO");
    assert_eq!(v["signer"]["status_now"], "good");
    let (code, text) = muhr_verify(
        &env,
        &env.write("e-doc.p7s", &signed),
        Some(&env.write("e-doc.txt", doc)),
    );
    assert_eq!(code, 0, "{text}");
    // Revoked an hour ago, and unknown to the responder.
    let (code, v) = try_login(&revoked, "e2");
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["revoked".to_string()]),
        "{v}"
    );
    let (code, v) = try_login(&unknown, "e3");
    let log = || std::fs::read_to_string(work.path().join("ocsp.log")).unwrap_or_default();
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["unknown_certificate".to_string()]),
        "{v}\nOpenSSL's responder said:\n{}",
        log()
    );

    // The responder goes away: the CRL answers.
    drop(ocsp);
    let (code, v) = try_login(&good2, "e4");
    assert_eq!(code, 200, "by the CRL: {v}");
    let (code, v) = try_login(&revoked2, "e5");
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["revoked".to_string()]),
        "{v}"
    );

    // Both gone: what was learnt is reused until it may not be (the
    // answers' nextUpdate, at most status_cache_seconds).
    drop(crl_server);
    let (code, v) = try_login(&late, "e6");
    assert_eq!(code, 200, "the CRL is remembered: {v}");
    let (code, v) = try_login(&good, "e7");
    assert_eq!(code, 200, "the OCSP answer is remembered: {v}");
    // A CA whose status cannot be had: its certificates are refused.
    let (code, v) = try_login(&dormant.citizen("2001", &pinfl), "e9");
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["status_unavailable".to_string()]),
        "{v}"
    );
    // A CA of the same name but another key is not that CA.
    let forged_dir = work.path().join("forged");
    std::fs::create_dir(&forged_dir).unwrap();
    let impostor = OtherCa::new(&forged_dir, "Example E-IMZO CA").citizen("1001", &pinfl);
    let (code, v) = try_login(&impostor, "e8");
    assert_eq!(
        (code, reasons(&v)),
        (401, vec!["untrusted_issuer".to_string()]),
        "{v}"
    );
}

/// `muhr-bench login` drives the real API: every login it counts is a
/// recorded login of its relying party, by its citizens' certificates.
fn bench_login(db: Db) {
    let env = Env::new(db, Keys::Software);
    let out = env.bench_ok(&[
        "login",
        "--logins",
        "300",
        "--concurrency",
        "8",
        "--people",
        "5",
        "--json",
    ]);
    let v: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["logins"], 300, "{v}");
    for field in [
        "logins_per_s",
        "p50_ms",
        "p99_ms",
        "server_cpu_us_per_login",
        "client_cpu_us_per_login",
    ] {
        assert!(v[field].as_f64().is_some_and(|x| x > 0.0), "{field}: {v}");
    }
    assert_eq!(
        env.sql(
            "SELECT COUNT(*) FROM auth_challenges a JOIN relying_parties r ON r.id = a.rp \
             WHERE r.name LIKE 'bench-%' AND a.kind = 'cms' AND a.used_at IS NOT NULL",
        ),
        ["300"]
    );
    assert_eq!(
        env.sql(
            "SELECT COUNT(DISTINCT a.serial) FROM auth_challenges a \
             JOIN certificates c ON c.serial = a.serial WHERE c.profile = 'individual-auth'",
        ),
        ["5"]
    );
}

both_databases! {
    bench_counts_recorded_logins => bench_login;
    login_by_certificate_and_signature_verification => login_and_verify;
    certificates_of_an_external_ca_log_in_by_ocsp_then_crl => external_login;
}

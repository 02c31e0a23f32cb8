//! The time-stamping authority as relying parties meet it: `openssl ts` as
//! the independent client (with and without certReq, with and without a
//! nonce), refusals with the right PKIFailureInfo, timeNotAvailable when
//! the clock is no longer vouched for, and CAdES-T signatures made by
//! `muhr client sign --timestamp` judged at their proven time: a later
//! revocation leaves them valid unless it was for keyCompromise.
//!
//! The clock is vouched for by a real NTP server (Debian's chrony, never
//! touching the system clock) on loopback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::tsa::*;
use common::*;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Posts a query file to /tsa; the reply's path.
fn ask(env: &Env, port: u16, query: &Path, name: &str) -> PathBuf {
    let (status, head, body) = post(
        port,
        "/tsa",
        "application/timestamp-query",
        &std::fs::read(query).unwrap(),
    );
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/timestamp-reply"),
        "{head}"
    );
    env.write(name, body)
}

/// `openssl ts -reply -text` of a reply.
fn reply_text(reply: &Path) -> String {
    openssl(&["ts", "-reply", "-in", reply.to_str().unwrap(), "-text"])
}

/// Waits until the TSA's clock check has heard from chrony.
fn wait_until_granting(env: &Env, port: u16, query: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = ask(env, port, query, "warmup.tsr");
        let t = reply_text(&r);
        if t.contains("Status: Granted") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the TSA never granted a token:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn query(env: &Env, data: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = env.path(name);
    let mut args = vec![
        "ts",
        "-query",
        "-data",
        data.to_str().unwrap(),
        "-out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    openssl(&args);
    out
}

fn ts_verify(
    env: &Env,
    data_args: &[&str],
    reply: &Path,
    token_in: bool,
    untrusted: &Path,
) -> std::process::Output {
    let root = env.root_pem();
    let mut args = vec!["ts", "-verify"];
    args.extend(data_args);
    args.extend(["-in", reply.to_str().unwrap()]);
    if token_in {
        args.push("-token_in");
    }
    args.extend([
        "-CAfile",
        root.to_str().unwrap(),
        "-untrusted",
        untrusted.to_str().unwrap(),
    ]);
    openssl_output(&args)
}

/// `muhr client sign` (needs no configuration); the signature's path.
fn client_sign(env: &Env, who: &Signer, file: &Path, out: &str, tsa: Option<&str>) -> PathBuf {
    client_sign_with(env, who, file, out, tsa, &[])
}

fn client_sign_with(
    env: &Env,
    who: &Signer,
    file: &Path,
    out: &str,
    tsa: Option<&str>,
    extra: &[&str],
) -> PathBuf {
    let out = env.path(out);
    let mut c = Command::new(env!("CARGO_BIN_EXE_muhr"));
    c.args(["client", "sign"])
        .arg(file)
        .arg("--p12")
        .arg(&who.p12)
        .arg("--password-file")
        .arg(&who.password)
        .arg("--out")
        .arg(&out);
    if let Some(u) = tsa {
        c.args(["--timestamp", u]);
    }
    c.args(extra);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    out
}

/// `openssl cms -verify` of a detached DER signature against the root, with
/// `certfiles` as untrusted intermediates; panics with OpenSSL's words.
fn openssl_cms_verify(env: &Env, sig: &Path, content: &Path, certfiles: &[&Path]) {
    let root = env.root_pem();
    let mut args = vec![
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        sig.to_str().unwrap(),
        "-content",
        content.to_str().unwrap(),
        "-CAfile",
        root.to_str().unwrap(),
        "-purpose",
        "any",
        "-out",
        "/dev/null",
    ];
    for c in certfiles {
        args.extend(["-certfile", c.to_str().unwrap()]);
    }
    let out = openssl_output(&args);
    assert!(out.status.success(), "{}", text(&out));
}

/// `muhr verify --json`: (exit code, verdict).
fn verify(env: &Env, sig: &Path, content: &Path) -> (i32, serde_json::Value) {
    let o = env.run(&[
        "verify",
        sig.to_str().unwrap(),
        "--content",
        content.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("muhr verify printed no JSON: {}", text(&o)));
    (o.status.code().unwrap(), v)
}

fn timestamping(db: Db, keys: Keys) {
    require("openssl");
    let mut ntp = Chronyd::start();
    let port = free_port();
    let env = Env::with_extra(
        db,
        keys,
        &format!(
            "{}\n[urls]\nbase = \"http://127.0.0.1:{port}\"\n",
            tsa_config(&ntp)
        ),
    );
    env.init();
    let _server = serve_on(&env, port);
    let url = format!("http://127.0.0.1:{port}/tsa");
    let data = env.write("contract.txt", "Shartnoma: Toshkent, 2026-yil 1-dekabr\n");
    let with_cert = query(&env, &data, "q1.tsq", &["-sha256", "-cert"]);
    wait_until_granting(&env, port, &with_cert);
    let tokens_before = logged_tokens(&env);

    // certReq and a nonce: verified against the root alone plus the
    // issuing CA as an untrusted intermediate.
    let r1 = ask(&env, port, &with_cert, "r1.tsr");
    let t = reply_text(&r1);
    for want in [
        "Status: Granted",
        "Policy OID: 1.3.6.1.4.1.32473.3161.1",
        "Hash Algorithm: sha256",
        "Nonce: 0x",
        "Ordering: no",
    ] {
        assert!(t.contains(want), "{want} missing:\n{t}");
    }
    assert!(t.contains("Accuracy: 0x01 seconds, 0x01F4 millis"), "{t}");
    let issuing = env.issuing_pem();
    let out = ts_verify(
        &env,
        &["-data", data.to_str().unwrap()],
        &r1,
        false,
        &issuing,
    );
    assert!(text(&out).contains("Verification: OK"), "{}", text(&out));

    // The TSA certificate: out of the token, linted, one critical EKU.
    let token = env.path("r1.tok");
    openssl(&[
        "ts",
        "-reply",
        "-in",
        r1.to_str().unwrap(),
        "-token_out",
        "-out",
        token.to_str().unwrap(),
    ]);
    let tsa_pem = env.path("tsa.pem");
    openssl(&[
        "pkcs7",
        "-inform",
        "DER",
        "-in",
        token.to_str().unwrap(),
        "-print_certs",
        "-out",
        tsa_pem.to_str().unwrap(),
    ]);
    // Only the PEM block: -print_certs writes subject and issuer lines too.
    let printed = std::fs::read_to_string(&tsa_pem).unwrap();
    let begin = printed.find("-----BEGIN CERTIFICATE-----").unwrap();
    let tsa_pem = env.write("tsa.pem", &printed[begin..]);
    pkilint(&tsa_pem);
    let tsa_text = openssl(&["x509", "-in", tsa_pem.to_str().unwrap(), "-noout", "-text"]);
    assert!(
        tsa_text.contains("X509v3 Extended Key Usage: critical\n                Time Stamping\n"),
        "{tsa_text}"
    );
    assert!(
        tsa_text.contains("Raqamli texnologiyalar vazirligi"),
        "{tsa_text}"
    );

    // No certReq, no nonce, SHA-512, the other allowed policy: the TSA
    // certificate must then come from the verifier.
    let bare = query(
        &env,
        &data,
        "q2.tsq",
        &[
            "-sha512",
            "-no_nonce",
            "-tspolicy",
            "1.3.6.1.4.1.32473.3161.2",
        ],
    );
    let r2 = ask(&env, port, &bare, "r2.tsr");
    let t = reply_text(&r2);
    assert!(t.contains("Policy OID: 1.3.6.1.4.1.32473.3161.2"), "{t}");
    assert!(t.contains("Nonce: unspecified"), "{t}");
    let chain = env.write(
        "chain.pem",
        [
            std::fs::read(&tsa_pem).unwrap(),
            std::fs::read(&issuing).unwrap(),
        ]
        .concat(),
    );
    let out = ts_verify(&env, &["-data", data.to_str().unwrap()], &r2, false, &chain);
    assert!(text(&out).contains("Verification: OK"), "{}", text(&out));
    // Without the TSA certificate at hand, OpenSSL cannot check it.
    let out = ts_verify(
        &env,
        &["-data", data.to_str().unwrap()],
        &r2,
        false,
        &issuing,
    );
    assert!(!out.status.success(), "{}", text(&out));
    // Another document does not match the token.
    let other = env.write("other.txt", "Shartnoma: boshqa matn\n");
    let out = ts_verify(
        &env,
        &["-data", other.to_str().unwrap()],
        &r1,
        false,
        &issuing,
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(logged_tokens(&env), tokens_before + 2);

    // Refusals: each with the failure OpenSSL names, and nothing logged.
    let sha1 = query(&env, &data, "q3.tsq", &["-sha1", "-cert"]);
    let t = reply_text(&ask(&env, port, &sha1, "r3.tsr"));
    assert!(t.contains("Status: Rejected"), "{t}");
    assert!(
        t.contains("unrecognized or unsupported algorithm identifier"),
        "{t}"
    );
    let policy = query(
        &env,
        &data,
        "q4.tsq",
        &["-sha256", "-tspolicy", "1.3.6.1.4.1.311.3.2"],
    );
    let t = reply_text(&ask(&env, port, &policy, "r4.tsr"));
    assert!(t.contains("requested TSA policy is not supported"), "{t}");
    let garbage = env.write("garbage.tsq", b"\x30\x03\x02\x01\x01 not a request");
    let t = reply_text(&ask(&env, port, &garbage, "r5.tsr"));
    assert!(t.contains("the data submitted has the wrong format"), "{t}");
    // An imprint of the wrong length for its algorithm (a SHA-256 request
    // with its last byte cut, lengths fixed up by hand).
    let mut short = std::fs::read(&with_cert).unwrap();
    let at = short
        .windows(2)
        .position(|w| w == [0x04, 0x20])
        .expect("the imprint's OCTET STRING");
    short.remove(at + 2);
    short[at + 1] = 0x1f;
    short[1] -= 1;
    short[6] -= 1;
    let short = env.write("short.tsq", short);
    let t = reply_text(&ask(&env, port, &short, "r6.tsr"));
    assert!(t.contains("the data submitted has the wrong format"), "{t}");
    assert_eq!(logged_tokens(&env), tokens_before + 2);

    // CAdES-T: signed by a citizen with a time-stamp from this TSA.
    let aziza = signer(
        &env,
        "aziza",
        // Born 29 February 1928 in Chilonzor.
        citizen_subject("4290228269001", "OʻRINBOYEVA", "GʻULSANAM", "TOʻLQIN QIZI"),
    );
    let stamped = client_sign(&env, &aziza, &data, "stamped.p7s", Some(&url));
    // OpenSSL accepts the signature, unsigned attribute and all...
    openssl_cms_verify(&env, &stamped, &data, &[issuing.as_path()]);
    // ...and the token over the signature value.
    let v = muhr_validation::cms::verify(
        &std::fs::read(&stamped).unwrap(),
        Some(&std::fs::read(&data).unwrap()),
    )
    .unwrap();
    assert_eq!(v.time_stamp_tokens.len(), 1);
    let sig_value = env.write("stamped.sigvalue", &v.signature);
    let tok = env.write("stamped.tok", &v.time_stamp_tokens[0]);
    let out = ts_verify(
        &env,
        &["-data", sig_value.to_str().unwrap()],
        &tok,
        true,
        &issuing,
    );
    assert!(text(&out).contains("Verification: OK"), "{}", text(&out));
    let (code, verdict) = verify(&env, &stamped, &data);
    assert_eq!(code, 0, "{verdict}");
    assert_eq!(verdict["judged_at_source"], "time_stamp", "{verdict}");
    assert_eq!(verdict["time_stamp"]["logged"], true, "{verdict}");
    assert_eq!(verdict["time_stamp"]["accuracy_ms"], 1500, "{verdict}");
    let plain = client_sign(&env, &aziza, &data, "plain.p7s", None);

    // CAdES-LT: the OCSP responses for the signer's and the TSA's
    // certificates and the certificates that check them, embedded.
    let lt = client_sign_with(
        &env,
        &aziza,
        &data,
        "lt.p7s",
        Some(&url),
        &["--level", "lt"],
    );
    // The issuing CA's certificate is carried now.
    openssl_cms_verify(&env, &lt, &data, &[]);
    let printed = openssl(&[
        "cms",
        "-cmsout",
        "-print",
        "-inform",
        "DER",
        "-in",
        lt.to_str().unwrap(),
    ]);
    // OpenSSL reads both as RFC 5940 OCSP responses (it names the OID only).
    assert_eq!(
        printed
            .matches("otherRevInfoFormat: undefined (1.3.6.1.5.5.7.16.2)")
            .count(),
        2,
        "{printed}"
    );
    let wire = muhr_validation::cms::decode_wire(&std::fs::read(&lt).unwrap()).unwrap();
    // The signer, the issuing CA and the TSA; version 5 for revocation
    // values of type other (RFC 5652 5.1).
    assert_eq!(wire.certificates.as_ref().unwrap().0.len(), 3);
    assert_eq!(format!("{:?}", wire.version), "V5");
    let (code, verdict) = verify(&env, &lt, &data);
    assert_eq!(code, 0, "{verdict}");
    assert_eq!(verdict["judged_at_source"], "time_stamp", "{verdict}");
    // LT without a time-stamp means nothing: refused by the command line.
    let o = env.run(&[
        "client",
        "sign",
        data.to_str().unwrap(),
        "--p12",
        aziza.p12.to_str().unwrap(),
        "--level",
        "lt",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // Revoked for a reason other than key compromise: the stamped
    // signature keeps the force it had; the plain one is judged now.
    // Past genTime plus the accuracy, rounded up (2 s), genTime's rounding
    // (0.5 s) and the revocation time's truncation to its second (1 s).
    std::thread::sleep(Duration::from_millis(4100));
    env.ok(&["revoke", &aziza.serial, "--reason", "superseded"]);
    let (code, verdict) = verify(&env, &stamped, &data);
    assert_eq!(code, 0, "{verdict}");
    assert_eq!(verdict["signer"]["status_now"], "revoked", "{verdict}");
    assert_eq!(verdict["signer"]["status_at"], "good", "{verdict}");
    let (code, verdict) = verify(&env, &plain, &data);
    assert_eq!(code, 1, "{verdict}");
    assert_eq!(
        verdict["judged_at_source"], "verification_time",
        "{verdict}"
    );

    // Key compromise: a stamped signature proves nothing either, as the
    // key's thief could have signed and stamped before the report.
    let bobur = signer(
        &env,
        "bobur",
        // Born 17 March 2004 in Yunusobod; Cyrillic name.
        citizen_subject("5170304266017", "ТОШМАТОВ", "БОБУР", "АЗИЗОВИЧ"),
    );
    let stolen = client_sign(&env, &bobur, &data, "stolen.p7s", Some(&url));
    assert_eq!(verify(&env, &stolen, &data).0, 0);
    std::thread::sleep(Duration::from_millis(4100));
    env.ok(&["revoke", &bobur.serial, "--reason", "keyCompromise"]);
    let (code, verdict) = verify(&env, &stolen, &data);
    assert_eq!(code, 1, "{verdict}");
    assert!(
        verdict["reasons"].to_string().contains("keyCompromise"),
        "{verdict}"
    );

    // A token grafted from another signature does not prove this one.
    let carol = signer(
        &env,
        "carol",
        // Born 1 January 1961 in Tashkent.
        citizen_subject("3010161266002", "XOLMATOV", "SHERZOD", "ALI OʻGʻLI"),
    );
    let unstamped = client_sign(&env, &carol, &data, "carol.p7s", None);
    let grafted = muhr_validation::cades::add_token(
        &std::fs::read(&unstamped).unwrap(),
        &v.time_stamp_tokens[0],
    )
    .unwrap();
    let grafted = env.write("grafted.p7s", grafted);
    std::thread::sleep(Duration::from_millis(1100));
    env.ok(&["suspend", &carol.serial]);
    let (code, verdict) = verify(&env, &grafted, &data);
    assert_eq!(code, 1, "{verdict}");
    assert_eq!(
        verdict["judged_at_source"], "verification_time",
        "{verdict}"
    );
    assert!(
        verdict["time_stamp"]["problems"]
            .to_string()
            .contains("timestamp_mismatch"),
        "{verdict}"
    );

    // A database administrator who removes a token from the log (or a
    // thief who stamped with the TSA key outside the TSA, leaving no log
    // entry): the token proves nothing.
    let serial = verdict_serial(&env, &stamped, &data);
    env.sql(&format!(
        "DELETE FROM timestamp_token_batches WHERE id = {}",
        batch_row(&serial)
    ));
    let (code, verdict) = verify(&env, &stamped, &data);
    assert_eq!(code, 1, "{verdict}");
    assert_eq!(verdict["time_stamp"]["logged"], false, "{verdict}");

    a_signature_stamped_while_suspended_stays_invalid(&env, &url, &data);

    // The clock: with chrony gone, the TSA stops stamping within three
    // polls (12 s) rather than stamp a time nobody vouches for.
    ntp.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = reply_text(&ask(&env, port, &with_cert, "late.tsr"));
        if t.contains("Status: Rejected") {
            assert!(t.contains("time source is not available"), "{t}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still granting without a clock:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (_, _, metrics) = get(port, "/metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.lines().any(|l| l
            .starts_with("muhr_tsa_rejections_total{failure=\"timeNotAvailable\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// Tokens in the log (written a batch row per commit group).
fn logged_tokens(env: &Env) -> i64 {
    assert_eq!(
        env.count("timestamp_tokens"),
        0,
        "nothing is logged a row per token any more"
    );
    env.sql("SELECT CAST(COALESCE(SUM(tokens), 0) AS BIGINT) FROM timestamp_token_batches")[0]
        .parse()
        .unwrap()
}

/// The batch row a serial names: 0x41, stream (4 octets), batch (4), index (2), salt (8).
fn batch_row(serial: &str) -> i64 {
    let b = hex::decode(serial).unwrap();
    assert_eq!((b.len(), b[0]), (19, 0x41), "serial {serial}");
    (i64::from(u32::from_be_bytes(b[1..5].try_into().unwrap())) << 32)
        | i64::from(u32::from_be_bytes(b[5..9].try_into().unwrap()))
}

fn verdict_serial(env: &Env, sig: &Path, content: &Path) -> String {
    let (_, v) = verify(env, sig, content);
    v["time_stamp"]["serial"].as_str().unwrap().to_string()
}

/// Waits until the TSA at `port` refuses; its reply text.
fn wait_until_refusing(env: &Env, port: u16, query: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = reply_text(&ask(env, port, query, "refusing.tsr"));
        if t.contains("Status: Rejected") {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "a revoked TSA key still stamps:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A stolen TSA key: once its certificate is revoked for keyCompromise the
/// TSA stops stamping within seconds, without falling back on the key the
/// last renewal retired, every token it made proves nothing (the thief
/// could stamp any time), and the next start makes a new key.
#[test]
fn a_compromised_tsa_key_stops_stamping_and_its_tokens_prove_nothing() {
    let ntp = Chronyd::start();
    let env = Env::with_extra(Db::Sqlite, Keys::Software, &tsa_config(&ntp));
    env.init();
    let (server, port) = start(&env, &[]);
    let url = format!("http://127.0.0.1:{port}/tsa");
    let data = env.write("deed.txt", "Uy-joy oldi-sotdi shartnomasi\n");
    let q = query(&env, &data, "q.tsq", &["-sha256", "-cert"]);
    wait_until_granting(&env, port, &q);
    let dilnoza = signer(
        &env,
        "dilnoza",
        // Born 31 December 1999 in Bukhara.
        citizen_subject("4311299301004", "RAHIMOVA", "DILNOZA", "ERKIN QIZI"),
    );
    let by_first = client_sign(&env, &dilnoza, &data, "deed.p7s", Some(&url));
    assert_eq!(verify(&env, &by_first, &data).0, 0);
    let first = env.sql("SELECT serial FROM tsa_signers");
    assert_eq!(first.len(), 1);

    // A renewal: the first certificate's record is made to run out within
    // tsa.renew_days_before, so the next start certifies a new key; the
    // first stays valid (it verifies its tokens) but no longer stamps.
    drop(server);
    env.sql(&format!(
        "UPDATE tsa_signers SET not_after = {} WHERE serial = '{}'",
        common_now() + 100 * 86400,
        first[0]
    ));
    let (server, port) = start(&env, &[]);
    wait_until_granting(&env, port, &q);
    let both = env.sql("SELECT serial FROM tsa_signers ORDER BY created_at");
    assert_eq!(both.len(), 2, "{both:?}");
    let second = both[1].clone();
    let url = format!("http://127.0.0.1:{port}/tsa");
    let by_second = client_sign(&env, &dilnoza, &data, "deed2.p7s", Some(&url));
    let (_, v) = verify(&env, &by_second, &data);
    assert_eq!(v["time_stamp"]["tsa"]["serial"], second.as_str(), "{v}");

    // The current key stolen: stamping stops, and the retired first key,
    // valid and unrevoked, does not stand in.
    env.ok(&["revoke", &second, "--reason", "keyCompromise"]);
    let t = wait_until_refusing(&env, port, &q);
    assert!(t.contains("system failure"), "{t}");
    std::thread::sleep(Duration::from_secs(6));
    let t = reply_text(&ask(&env, port, &q, "still.tsr"));
    assert!(
        t.contains("Status: Rejected"),
        "fell back on a retired key:\n{t}"
    );
    // Its tokens prove nothing; the signer's certificate is good, so the
    // signature stands, judged now.
    let (code, v) = verify(&env, &by_second, &data);
    assert_eq!(v["judged_at_source"], "verification_time", "{v}");
    assert!(
        v["time_stamp"]["problems"]
            .to_string()
            .contains("keyCompromise"),
        "{v}"
    );
    assert_eq!(code, 0, "{v}");
    // The first key's tokens still prove their time.
    let (code, v) = verify(&env, &by_first, &data);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["judged_at_source"], "time_stamp", "{v}");

    // A restart makes a new TSA key and certificate, and stamps again.
    drop(server);
    let (_server, port) = start(&env, &[]);
    wait_until_granting(&env, port, &q);
    let all = env.sql("SELECT serial FROM tsa_signers ORDER BY created_at");
    assert_eq!(all.len(), 3, "{all:?}");
    let url = format!("http://127.0.0.1:{port}/tsa");
    let again = client_sign(&env, &dilnoza, &data, "deed3.p7s", Some(&url));
    let (code, v) = verify(&env, &again, &data);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["judged_at_source"], "time_stamp", "{v}");
    assert_eq!(v["time_stamp"]["tsa"]["serial"], all[2].as_str(), "{v}");
}

fn common_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A stolen card: suspended when reported, then revoked (superseded) when
/// the card is replaced. What the thief signed and had time-stamped while
/// it was suspended never becomes valid, whatever the certificate's row
/// says later; nor after a suspension is lifted.
fn a_signature_stamped_while_suspended_stays_invalid(env: &Env, url: &str, data: &Path) {
    let eldor = signer(
        env,
        "eldor",
        // Born 15 August 1975 in Namangan.
        citizen_subject("3150875271009", "QODIROV", "ELDOR", "ANVAR OʻGʻLI"),
    );
    env.ok(&["suspend", &eldor.serial]);
    std::thread::sleep(Duration::from_millis(1100));
    let by_thief = client_sign(env, &eldor, data, "thief.p7s", Some(url));
    let (code, v) = verify(env, &by_thief, data);
    assert_eq!(code, 1, "{v}");
    std::thread::sleep(Duration::from_millis(4100));
    env.ok(&["revoke", &eldor.serial, "--reason", "superseded"]);
    let (code, v) = verify(env, &by_thief, data);
    assert_eq!(
        code, 1,
        "a thief's signature revived by the replacement: {v}"
    );
    assert_eq!(v["judged_at_source"], "time_stamp", "{v}");
    assert_eq!(v["signer"]["status_at"], "suspended", "{v}");

    let feruza = signer(
        env,
        "feruza",
        // Born 8 March 1990 in Nukus.
        citizen_subject("4080390351012", "JUMANIYAZOVA", "FERUZA", "BAXTIYAR QIZI"),
    );
    env.ok(&["suspend", &feruza.serial]);
    std::thread::sleep(Duration::from_millis(1100));
    let during = client_sign(env, &feruza, data, "during.p7s", Some(url));
    std::thread::sleep(Duration::from_millis(4100));
    env.ok(&["restore", &feruza.serial]);
    let (code, v) = verify(env, &during, data);
    assert_eq!(
        code, 1,
        "signed while suspended, valid after the restore: {v}"
    );
    let after = client_sign(env, &feruza, data, "after.p7s", Some(url));
    assert_eq!(verify(env, &after, data).0, 0);
}

/// `muhr tsa` beside `muhr serve` on one database: both stamp, with their
/// own serials, into one log; neither needs the CA key. Disabled in the
/// configuration, `muhr tsa` refuses to start.
#[test]
fn tsa_nodes_scale_out_on_one_log() {
    let ntp = Chronyd::start();
    let env = Env::with_extra(Db::Postgres, Keys::Software, &tsa_config(&ntp));
    env.init();
    let (_serve, port) = start(&env, &[]);
    let (_tsa, tsa_port) = start_with(&env, "tsa", &[]);
    let data = env.write("x.txt", "Ariza\n");
    let q = query(&env, &data, "q.tsq", &["-sha384", "-cert"]);
    wait_until_granting(&env, port, &q);
    wait_until_granting(&env, tsa_port, &q);
    let before = logged_tokens(&env);
    let mut serials = std::collections::BTreeSet::new();
    for i in 0..10 {
        let p = if i % 2 == 0 { port } else { tsa_port };
        let r = ask(&env, p, &q, &format!("r{i}.tsr"));
        let t = reply_text(&r);
        assert!(t.contains("Status: Granted"), "{t}");
        let serial = t
            .lines()
            .find_map(|l| l.strip_prefix("Serial number: "))
            .unwrap()
            .to_string();
        assert!(serials.insert(serial), "a serial repeated:\n{t}");
        let out = ts_verify(
            &env,
            &["-data", data.to_str().unwrap()],
            &r,
            false,
            &env.issuing_pem(),
        );
        assert!(text(&out).contains("Verification: OK"), "{}", text(&out));
    }
    assert_eq!(logged_tokens(&env), before + 10);
    let (_, _, metrics) = get(tsa_port, "/metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("muhr_tsa_tokens_total"), "{metrics}");
    assert!(metrics.contains("muhr_tsa_clock_synchronised"), "{metrics}");
    assert!(metrics.contains("\nmuhr_tsa_log_stopped 0\n"), "{metrics}");

    let off = Env::with_extra(Db::Sqlite, Keys::Software, "");
    off.init();
    let refused = off.refused(&["tsa", "--listen", "127.0.0.1:1"]);
    assert!(refused.contains("tsa.enabled"), "{refused}");
}

#[test]
fn sqlite_software_keys() {
    timestamping(Db::Sqlite, Keys::Software)
}

#[test]
fn postgres_softhsm() {
    timestamping(Db::Postgres, Keys::SoftHsm)
}

/// A batch of the token log is one INSERT without a transaction around it:
/// all of its rows are written, or none, on both databases (a token is
/// never answered as logged while its row is missing).
#[test]
fn a_batch_statement_colliding_with_a_logged_row_writes_nothing() {
    use muhr_store::timestamps::{LogPlace, TokenBatch, TokenRecord};
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("log.db").display());
    for url in [sqlite, postgres_database()] {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = muhr_store::Store::connect(&url).await.unwrap();
            let stream = store.new_timestamp_stream().await.unwrap();
            let record = |i: u8| TokenRecord {
                serial: String::new(),
                gen_time: 1_800_000_000,
                policy: "1.3.6.1.4.1.32473.3161.1".into(),
                hash_algorithm: "sha256".into(),
                imprint: vec![i; 32],
                nonce: None,
                signer_serial: "4A".into(),
                token_sha256: vec![i; 32],
            };
            let batch = |number: u32, i: u8| TokenBatch {
                stream,
                salt: [7; 8],
                batch: number,
                tokens: vec![(0, record(i))],
            };
            let serial = |number: u32| {
                let place = LogPlace {
                    stream,
                    batch: number,
                    index: 0,
                    salt: [7; 8],
                };
                hex::encode_upper(place.serial())
            };
            store.log_timestamp_batches(&[batch(0, 1)]).await.unwrap();
            let collided = store
                .log_timestamp_batches(&[batch(1, 2), batch(0, 3)])
                .await;
            assert!(collided.is_err(), "{url}");
            assert_eq!(
                store.timestamp_token(&serial(1)).await.unwrap(),
                None,
                "{url}"
            );
            let first = store.timestamp_token(&serial(0)).await.unwrap().unwrap();
            assert_eq!(first.token_sha256, vec![1; 32], "{url}");
            assert_eq!(store.timestamp_token_count().await.unwrap(), 1, "{url}");
        });
    }
}

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
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// chronyd serving the local clock on a free loopback port; killed on drop.
struct Chronyd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: String,
}

impl Chronyd {
    fn start() -> Self {
        let chronyd = ["/usr/sbin/chronyd", "/sbin/chronyd", "/usr/bin/chronyd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("chronyd is not installed: install Debian's chrony (tests/run.sh does)");
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\n\
                 cmdport 0\nbindcmdaddress /\npidfile {}\n",
                dir.path().join("chronyd.pid").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("chronyd.log")).unwrap();
        let child = Command::new(chronyd)
            .args(["-x", "-d", "-U", "-t", "600", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            dir,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Chronyd {
    fn drop(&mut self) {
        self.kill();
        let _ = self.dir.path();
    }
}

fn tsa_config(ntp: &Chronyd) -> String {
    format!(
        "\n[tsa]\nenabled = true\npolicy = \"1.3.6.1.4.1.32473.3161.1\"\nallowed_policies = [\"1.3.6.1.4.1.32473.3161.2\"]\n\
         accuracy_ms = 1500\nname = \"Muhr TSA test\"\norganization = \"Raqamli texnologiyalar vazirligi\"\n\
         [tsa.clock]\nsource = \"ntp\"\nntp_servers = [\"{}\"]\nntp_interval_seconds = 1\n",
        ntp.addr
    )
}

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

/// A citizen's signing key and certificate in a PKCS#12 file.
struct Signer {
    p12: PathBuf,
    password: PathBuf,
    serial: String,
}

fn signer(env: &Env, name: &str, subject: serde_json::Value) -> Signer {
    let csr = env.csr(name, "ec");
    let cert = env.issue("individual-sign", &csr, &subject.to_string(), name);
    let password = env.write(&format!("{name}.pw"), "a long pkcs12 password\n");
    let p12 = env.path(&format!("{name}.p12"));
    openssl(&[
        "pkcs12",
        "-export",
        "-inkey",
        env.path(&format!("{name}.key")).to_str().unwrap(),
        "-in",
        cert.to_str().unwrap(),
        "-certfile",
        env.issuing_pem().to_str().unwrap(),
        "-passout",
        &format!("file:{}", password.display()),
        "-out",
        p12.to_str().unwrap(),
    ]);
    Signer {
        p12,
        password,
        serial: serial_of(&cert),
    }
}

/// `muhr client sign` (needs no configuration); the signature's path.
fn client_sign(env: &Env, who: &Signer, file: &Path, out: &str, tsa: Option<&str>) -> PathBuf {
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
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    out
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

fn person(pinfl13: &str, surname: &str, given: &str, patronymic: &str) -> serde_json::Value {
    serde_json::json!({
        "pinfl": pinfl(pinfl13),
        "surname": surname,
        "given_name": given,
        "patronymic": patronymic,
    })
}

fn timestamping(db: Db, keys: Keys) {
    require("openssl");
    let mut ntp = Chronyd::start();
    let env = Env::with_extra(db, keys, &tsa_config(&ntp));
    env.init();
    let (_server, port) = start(&env, &[]);
    let url = format!("http://127.0.0.1:{port}/tsa");
    let data = env.write("contract.txt", "Shartnoma: Toshkent, 2026-yil 1-dekabr\n");
    let with_cert = query(&env, &data, "q1.tsq", &["-sha256", "-cert"]);
    wait_until_granting(&env, port, &with_cert);
    let tokens_before = env.count("timestamp_tokens");

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
    assert_eq!(env.count("timestamp_tokens"), tokens_before + 2);

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
    assert_eq!(env.count("timestamp_tokens"), tokens_before + 2);

    // CAdES-T: signed by a citizen with a time-stamp from this TSA.
    let aziza = signer(
        &env,
        "aziza",
        // Born 29 February 1928 in Chilonzor.
        person("4290228269001", "OʻRINBOYEVA", "GʻULSANAM", "TOʻLQIN QIZI"),
    );
    let stamped = client_sign(&env, &aziza, &data, "stamped.p7s", Some(&url));
    // OpenSSL accepts the signature, unsigned attribute and all...
    let out = openssl_output(&[
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        stamped.to_str().unwrap(),
        "-content",
        data.to_str().unwrap(),
        "-CAfile",
        env.root_pem().to_str().unwrap(),
        "-certfile",
        issuing.to_str().unwrap(),
        "-purpose",
        "any",
        "-out",
        "/dev/null",
    ]);
    assert!(out.status.success(), "{}", text(&out));
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

    // Revoked for a reason other than key compromise: the stamped
    // signature keeps the force it had; the plain one is judged now.
    // Past genTime plus the accuracy, rounded up: 2 s (and 0.5 s of
    // genTime's rounding).
    std::thread::sleep(Duration::from_millis(3100));
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
        person("5170304266017", "ТОШМАТОВ", "БОБУР", "АЗИЗОВИЧ"),
    );
    let stolen = client_sign(&env, &bobur, &data, "stolen.p7s", Some(&url));
    assert_eq!(verify(&env, &stolen, &data).0, 0);
    std::thread::sleep(Duration::from_millis(3100));
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
        person("3010161266002", "XOLMATOV", "SHERZOD", "ALI OʻGʻLI"),
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
        "DELETE FROM timestamp_tokens WHERE serial = '{serial}'"
    ));
    let (code, verdict) = verify(&env, &stamped, &data);
    assert_eq!(code, 1, "{verdict}");
    assert_eq!(verdict["time_stamp"]["logged"], false, "{verdict}");

    // The clock: with chrony gone, the TSA stops stamping within three
    // polls rather than stamp a time nobody vouches for.
    ntp.kill();
    let deadline = Instant::now() + Duration::from_secs(15);
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

fn verdict_serial(env: &Env, sig: &Path, content: &Path) -> String {
    let (_, v) = verify(env, sig, content);
    v["time_stamp"]["serial"].as_str().unwrap().to_string()
}

#[test]
fn sqlite_software_keys() {
    timestamping(Db::Sqlite, Keys::Software)
}

#[test]
fn postgres_softhsm() {
    timestamping(Db::Postgres, Keys::SoftHsm)
}

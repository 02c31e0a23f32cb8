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
    // Every file Muhr wrote there is its owner's alone.
    let mut dirs = vec![env.data()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                assert_eq!(mode(&p), 0o700, "{}", p.display());
                dirs.push(p);
            } else {
                assert_eq!(mode(&p) & 0o077, 0, "{}", p.display());
            }
        }
    }
    // Opened to others (an older installation, or someone's chmod): refused
    // at start, naming the command that closes it; nothing is changed.
    for (path, open) in [(db.clone(), 0o644), (env.data(), 0o755)] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(open)).unwrap();
        let err = env.refused(&["cert", "show", &serial_of(&env.path("p.pem"))]);
        assert!(err.contains("readable by others"), "{err}");
        assert!(
            err.contains(&format!("chmod -R go-rwx {}", env.data().display())),
            "{err}"
        );
        assert_eq!(mode(&path), open, "changed silently");
        let fix = std::process::Command::new("chmod")
            .args(["-R", "go-rwx"])
            .arg(env.data())
            .status()
            .unwrap();
        assert!(fix.success());
        env.ok(&["cert", "show", &serial_of(&env.path("p.pem"))]);
    }
    // A folder linked in from elsewhere is looked at through the link.
    let elsewhere = env.dir.path().join("shared-keys");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.data().join("linked")).unwrap();
    let err = env.refused(&["cert", "show", &serial_of(&env.path("p.pem"))]);
    assert!(
        err.contains("linked") && err.contains("readable by others"),
        "{err}"
    );
    std::fs::remove_file(env.data().join("linked")).unwrap();
    // A secret kept outside the data directory (here the key passphrase).
    let pass = env.dir.path().join("passphrase");
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = env.refused(&["cert", "show", &serial_of(&env.path("p.pem"))]);
    assert!(
        err.contains(&format!("chmod go-rwx {}", pass.display())),
        "{err}"
    );
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.ok(&["cert", "show", &serial_of(&env.path("p.pem"))]);
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

/// Refusals made by the HTTP stack (no route, wrong method, body too large,
/// wrong content type) and by the OCSP responder: the same JSON as every
/// other refusal on both listeners and over HTTP/2, and OCSP responses for
/// OCSP clients.
#[test]
fn every_refusal_has_one_shape_on_both_listeners_and_ocsp_clients_get_ocsp() {
    let env = Env::new(Db::Sqlite, Keys::Software);
    env.init();
    let operator = common::ra::client(&env, "operator", "OP-SHAPE");
    let rp = env.ok(&["rp", "add", "--name", "Shape Bank", "--class", "commercial"]);
    let rp_field = |k: &str| {
        rp.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap()
    };
    let rp_user = format!("{}:{}", rp_field("id"), rp_field("secret"));
    let line = common::ra::client(&env, "personalization-line", "LINE-SHAPE");
    let (_server, http, mtls) = start_ra(&env);
    let json = |body: &[u8]| -> serde_json::Value {
        serde_json::from_slice(body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
    };

    // Public listener, HTTP/1.1.
    let (status, head, body) = get(http, "/no/such/thing");
    assert_eq!(status, 404);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(json(&body)["error"]["field"], "path");
    let (status, head, body) = post(http, "/healthz", "application/json", b"{}");
    assert_eq!(status, 405, "{head}");
    let v = json(&body);
    assert_eq!(v["error"]["field"], "method");
    assert!(v["error"]["rule"].as_str().unwrap().contains("GET"), "{v}");
    // A relying party (authenticated first: nobody else's body is read)
    // sending a body over the login limit (64 KiB), and one not in JSON.
    let as_rp = |path: &str, ctype: &str, body: &std::path::Path| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-u", &rp_user])
            .args(["-H", &format!("content-type: {ctype}"), "--data-binary"])
            .arg(format!("@{}", body.display()))
            .arg(format!("http://127.0.0.1:{http}{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse::<u16>().unwrap(), json(body.as_bytes()))
    };
    let big = env.write("big.json", vec![b' '; 70 * 1024]);
    let (status, v) = as_rp("/api/v1/auth/login", "application/json", &big);
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (413, Some("body")),
        "{v}"
    );
    let form = env.write("verify.txt", "signature=x");
    let (status, v) = as_rp("/api/v1/signatures/verify", "text/plain", &form);
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (415, Some("content-type")),
        "{v}"
    );
    // Not authenticated: 401 before anything about the body.
    let (status, _, body) = post(http, "/api/v1/signatures/verify", "text/plain", b"x");
    assert_eq!(status, 401);
    assert!(json(&body)["error"]["field"].is_string());

    // OCSP: an oversized request and garbage are OCSP malformedRequest.
    let malformed = [0x30, 0x03, 0x0a, 0x01, 0x01];
    for body in [vec![0x30; 20 * 1024], b"not an OCSP request".to_vec()] {
        let (status, head, answer) = post(http, "/ocsp", "application/ocsp-request", &body);
        assert_eq!(status, 200, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/ocsp-response")
        );
        assert_eq!(answer, malformed);
    }

    // Mutual-TLS listener, over HTTP/2 (curl negotiates h2 by ALPN).
    let curl = |cert: &std::path::Path,
                method: &str,
                path: &str,
                ctype: &str,
                body: Option<&std::path::Path>| {
        let mut c = std::process::Command::new("curl");
        c.args([
            "-s",
            "--http2",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{http_version}",
            "-X",
            method,
        ])
        .arg("--cacert")
        .arg(env.root_pem())
        .arg("--cert")
        .arg(cert)
        .args(["-H", &format!("content-type: {ctype}")])
        .arg(format!("https://localhost:{mtls}{path}"));
        if let Some(b) = body {
            c.arg("--data-binary").arg(format!("@{}", b.display()));
        }
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, tail) = text.rsplit_once('\n').unwrap();
        let (code, version) = tail.split_once(' ').unwrap();
        assert_eq!(version, "2", "{method} {path}: not HTTP/2 ({text})");
        (code.parse::<u16>().unwrap(), json(body.as_bytes()))
    };
    let (code, v) = curl(&operator, "GET", "/no/such/thing", "application/json", None);
    assert_eq!(
        (code, v["error"]["field"].as_str()),
        (404, Some("path")),
        "{v}"
    );
    let (code, v) = curl(
        &operator,
        "DELETE",
        "/api/v1/operator/crl",
        "application/json",
        None,
    );
    assert_eq!(
        (code, v["error"]["field"].as_str()),
        (405, Some("method")),
        "{v}"
    );
    let huge = env.write("huge.json", vec![b' '; 17 << 20]);
    let (code, v) = curl(
        &line,
        "POST",
        "/api/v1/personalization/cards",
        "application/json",
        Some(&huge),
    );
    assert_eq!(
        (code, v["error"]["field"].as_str()),
        (413, Some("body")),
        "{v}"
    );
    let form = env.write("form.txt", "request_id=1");
    let (code, v) = curl(
        &line,
        "POST",
        "/api/v1/personalization/cards",
        "application/x-www-form-urlencoded",
        Some(&form),
    );
    assert_eq!(
        (code, v["error"]["field"].as_str()),
        (415, Some("content-type")),
        "{v}"
    );
}

/// A password in any URL an operator or a citizen gives Muhr (the database,
/// the identity provider's keys, the server a citizen talks to) never
/// reaches an error message or a log line, whether the URL parses or not.
#[test]
fn passwords_in_urls_reach_neither_messages_nor_logs() {
    // The database: unreachable, and mistyped.
    let env = Env::new(Db::Sqlite, Keys::Software);
    for url in [
        "postgres://muhr:Secret-One@127.0.0.1:1/muhr",
        "postgres//muhr:Secret-One@db/muhr",
        "host=db password=Secret-One",
    ] {
        let out = env
            .muhr()
            .env("MUHR_DATABASE_URL", url)
            .args(["ca", "init"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("Secret-One"), "{url}: {all}");
    }

    // A citizen's server URL with credentials, unreachable.
    let token = env.write("token", "x.y.z");
    let pw = env.write("pw", "correct horse battery\n");
    let out = env
        .muhr()
        .args([
            "client",
            "request",
            "--profile",
            "individual-sign",
            "--server",
        ])
        .arg("https://citizen:Secret-Two@127.0.0.1:1")
        .arg("--token-file")
        .arg(&token)
        .arg("--out")
        .arg(env.path("x.p12"))
        .arg("--password-file")
        .arg(&pw)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("citizen:***@"), "{err}");
    assert!(!err.contains("Secret-Two"), "{err}");

    // The identity provider's key URL, unreachable: the warning in the log.
    let env = Env::with_extra(
        Db::Sqlite,
        Keys::Software,
        "\n[citizens]\n[citizens.oidc]\nissuer = \"https://id.example.uz\"\naudience = \"muhr\"\n\
         jwks_url = \"https://idp:Secret-Three@127.0.0.1:1/jwks\"\n",
    );
    env.init();
    let (server, port) = start(&env, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log_path = env.path(&format!("serve-{port}.log"));
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("identity provider keys not loaded yet")
            || std::time::Instant::now() > deadline
        {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    drop(server);
    assert!(
        log.contains("identity provider keys not loaded yet"),
        "{log}"
    );
    assert!(!log.contains("Secret-Three"), "{log}");
}

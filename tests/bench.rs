//! Benchmarks live outside the product: `muhr` has no command that signs,
//! inserts or deletes anything that is not real; `muhr-bench` runs on a
//! database of its own and refuses one holding real certificates; what the
//! benchmark commands of earlier versions left in a real installation is
//! found and removed by one command.

mod common;
use common::*;

#[test]
fn the_product_binary_has_no_benchmark_command() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_muhr"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout).to_lowercase();
    assert!(help.status.success() && text.contains("serve"), "{text}");
    // No command runs a benchmark (the clean-up of old benchmark data is
    // the only one that names them).
    let commands: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(commands.contains(&"serve"), "{text}");
    assert!(
        commands
            .iter()
            .all(|c| !c.starts_with("bench") && (!c.contains("bench") || c.starts_with("cleanup"))),
        "{commands:?}"
    );
    let old = std::process::Command::new(env!("CARGO_BIN_EXE_muhr"))
        .args(["bench", "issue", "--count", "1"])
        .output()
        .unwrap();
    assert_eq!(old.status.code(), Some(2), "{old:?}");
}

/// With no configuration the benchmark makes, uses and removes an
/// installation of its own.
#[test]
fn a_benchmark_runs_on_a_throw_away_installation() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muhr-bench"))
        .args(["sign", "--signatures", "50", "--threads", "1", "--json"])
        .env_remove("MUHR_CONFIG")
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(report["signatures"], 50);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the throw-away data directory is removed"
    );
}

/// `muhr-bench tsa` on its own throw-away installation (SQLite, software
/// keys): briefly, to see that it serves, measures granted tokens next to
/// live OCSP and nginx, prints the ratio and removes what it made. Not a
/// timing: the figures are whatever this machine gives.
#[test]
fn the_tsa_benchmark_measures_granted_tokens() {
    require("wrk");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muhr-bench"))
        .args([
            "tsa",
            "--seconds",
            "1",
            "--warmup",
            "0",
            "--connections",
            "8",
            "--json",
        ])
        .env_remove("MUHR_CONFIG")
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert!(report["tokens_granted"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["tokens_logged"].as_u64().unwrap() >= report["tokens_granted"].as_u64().unwrap(),
        "{report}"
    );
    assert_eq!(report["replies_failed"], 0, "{report}");
    assert_eq!(report["tsa_refusals"], 0, "{report}");
    for figure in [
        "tokens_per_s",
        "ocsp_live_per_s",
        "nginx_static_per_s",
        "ratio_tsa_ocsp_live",
    ] {
        assert!(report[figure].as_f64().unwrap() > 0.0, "{figure}: {report}");
    }
    assert_eq!(report["database"], "sqlite", "{report}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the throw-away installation and the run's files are removed"
    );
}

/// The same on PostgreSQL with a SoftHSM2 token the benchmark makes, in
/// the text report.
#[test]
fn the_tsa_benchmark_runs_on_postgres_and_softhsm() {
    require("wrk");
    require("softhsm2-util");
    let url = postgres_database();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muhr-bench"))
        .args([
            "tsa",
            "--seconds",
            "1",
            "--warmup",
            "0",
            "--connections",
            "8",
        ])
        .args(["--keys", "softhsm", "--database", &url])
        .env_remove("MUHR_CONFIG")
        .env_remove("SOFTHSM2_CONF")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("(postgres, pkcs11 token"), "{text}");
    assert!(text.contains("ratio TSA / OCSP live: "), "{text}");
    assert!(text.contains(" 0 failed checks, 0 refusals"), "{text}");
    let granted: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" token replies"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0);
    assert!(granted > 0, "{text}");
}

/// The refusal of a real database.
fn refused_as_real(out: &std::process::Output) -> bool {
    String::from_utf8_lossy(&out.stderr).contains("holds real certificates")
}

/// A benchmark pointed at a real installation by mistake: it writes
/// nothing, not even its marker.
fn refuses_real_database(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    env.issue("individual-sign", &env.csr("k", "ec"), &person(), "real");
    let before = (env.count("certificates"), env.count("audit_log"));
    for args in [
        vec!["issue", "--count", "5"],
        vec!["crl", "--entries", "10"],
        vec!["sign", "--signatures", "10"],
        vec!["tsa", "--seconds", "1"],
    ] {
        let out = env.bench().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(refused_as_real(&out), "{out:?}");
    }
    // Nor does it make an installation of its own beside a configuration.
    let out = env
        .bench()
        .args(["tsa", "--keys", "softhsm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("with --config"),
        "{out:?}"
    );
    assert_eq!((env.count("certificates"), env.count("audit_log")), before);
    assert_eq!(env.count("benchmark_marker"), 0);

    // A newer muhr-bench than the installation: it must refuse before
    // migrating (the product binary would then not start on its own
    // database). The newest migration is held back to play the older schema.
    let newest = env.sql("SELECT MAX(version) FROM _sqlx_migrations")[0].clone();
    env.sql(&format!(
        "DELETE FROM _sqlx_migrations WHERE version = {newest}"
    ));
    let migrations = env.count("_sqlx_migrations");
    let out = env
        .bench()
        .args(["sign", "--signatures", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(refused_as_real(&out), "{out:?}");
    assert_eq!(
        env.count("_sqlx_migrations"),
        migrations,
        "the real database was migrated by a benchmark"
    );

    // The real data directory with an empty database of the benchmark's
    // own: refused before its configuration, token or keys are written
    // beside the real keys.
    let data = env.dir.path().join("data");
    let listing = |d: &std::path::Path| {
        // SQLite's own -wal and -shm files come and go with any reader.
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| {
                let n = n.to_string_lossy();
                !n.ends_with("-wal") && !n.ends_with("-shm")
            })
            .collect();
        v.sort();
        v
    };
    let files = listing(&data);
    let empty = postgres_database();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muhr-bench"))
        .arg("--data")
        .arg(&data)
        .args(["tsa", "--seconds", "1", "--database", &empty])
        .env_remove("MUHR_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not made by muhr-bench"),
        "{out:?}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muhr-bench"))
        .arg("--data")
        .arg(&data)
        .args(["sign", "--signatures", "1"])
        .env_remove("MUHR_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        listing(&data),
        files,
        "nothing written into the real data directory"
    );
}

/// An installation where `muhr bench` of an earlier version ran: synthetic
/// status-only rows and certificates signed for made-up people, beside a
/// real citizen's certificate.
fn leftovers_are_removed(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let real = env.issue("individual-sign", &env.csr("k", "ec"), &person(), "real");
    let real_serial = serial_of(&real);
    // What the old commands did, through the same library calls.
    for (k, v) in [
        ("MUHR_DATABASE_URL", env.db_url.as_str()),
        ("MUHR_KEY_PASSPHRASE", "example passphrase for tests"),
        ("MUHR_PKCS11_PIN", PIN),
    ] {
        // SAFETY: this test process has no other thread yet.
        unsafe { std::env::set_var(k, v) };
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let synthetic: Vec<String> = rt.block_on(async {
        let app = muhr::app::App::load(Some(&env.config), None).await.unwrap();
        let rows = app
            .store
            .insert_synthetic("issuing", 40, muhr_store::now_secs() + 86_400, 4, |_| None)
            .await
            .unwrap();
        let ca = app.ca().await.unwrap();
        let csr = std::fs::read(env.csr("made-up", "ec")).unwrap();
        for i in 0..3 {
            let first13 = format!("3150585{:06}", 100_001 + i);
            let request = muhr_policies::identity::SubjectRequest {
                pinfl: pinfl(&first13),
                surname: "BENCH".into(),
                given_name: "MADE-UP".into(),
                patronymic: None,
                tin: None,
                organization: None,
            };
            ca.issue(muhr_ca::Request {
                profile: "individual-sign".into(),
                fields: app.config.identity.subject_fields(&request).unwrap(),
                public_key: muhr_ca::csr::parse(&csr).unwrap().public_key,
                not_after_limit: None,
                alt_names: Vec::new(),
                actor: "bench".into(),
                once: None,
            })
            .await
            .unwrap();
        }
        rows
    });
    let certificates = env.count("certificates");

    // Found, and nothing changes without --apply.
    let dry = env.ok(&["cleanup-benchmark-data"]);
    assert!(
        dry.contains("(profile bench): 40") && dry.contains("issued by benchmarks:         3"),
        "{dry}"
    );
    assert_eq!(env.count("certificates"), certificates);

    let done = env.ok(&["cleanup-benchmark-data", "--apply"]);
    assert!(done.contains("deleted 40 synthetic rows"), "{done}");
    assert!(done.contains("revoked 3 certificates"), "{done}");
    assert_eq!(env.count("certificates"), certificates - 40);
    assert_eq!(
        env.sql(&format!(
            "SELECT COUNT(*) FROM certificates WHERE serial = '{}'",
            synthetic[0]
        )),
        ["0"]
    );
    assert_eq!(
        env.sql(
            "SELECT COUNT(*) FROM certificates WHERE subject LIKE '%MADE-UP%' \
             AND revocation = 'revoked' AND revocation_reason = 5"
        ),
        ["3"]
    );
    // The real citizen's certificate is untouched.
    assert_eq!(
        env.sql(&format!(
            "SELECT revocation FROM certificates WHERE serial = '{real_serial}'"
        )),
        ["good"]
    );
    // Audited, the chain intact, and nothing left.
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM audit_log WHERE action = 'benchmark.cleanup'"),
        ["1"]
    );
    env.ok(&["audit", "verify"]);
    let again = env.ok(&["cleanup-benchmark-data"]);
    assert!(
        again.contains("(profile bench): 0") && again.contains("issued by benchmarks:         0"),
        "{again}"
    );
}

/// The reverse mistake: a benchmark's database put into service.
fn benchmark_database_is_never_served(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.bench_ok(&["sign", "--signatures", "10"]);
    for cmd in ["serve", "ocsp"] {
        let out = env
            .muhr()
            .args([cmd, "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("made by muhr-bench"),
            "{out:?}"
        );
    }
}

both_databases! {
    a_benchmark_database_is_never_served => benchmark_database_is_never_served;
    a_benchmark_refuses_a_database_holding_real_certificates => refuses_real_database;
    old_benchmark_leftovers_are_found_and_removed => leftovers_are_removed;
}

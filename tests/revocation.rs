//! Suspend, restore and revoke through the CLI; whole, shard and delta CRLs
//! that OpenSSL uses to accept good and reject revoked or suspended
//! certificates; refusals for transitions the state machine forbids.

use std::path::{Path, PathBuf};

mod common;
use common::*;

/// `muhr crl`, then the issuing CA's CRL as PEM (for -CRLfile).
fn fresh_crl(env: &Env) -> PathBuf {
    let out = env.ok(&["crl"]);
    assert!(out.contains("issuing.crl: CRL number"), "{out}");
    crl_pem(env, "root");
    crl_pem(env, "issuing")
}

fn lint_crl(der: &Path, kind: &str) {
    require("lint_crl");
    let out = std::process::Command::new("lint_crl")
        .args([
            "lint",
            "-s",
            "NOTICE",
            "-t",
            kind,
            "-p",
            "PKIX",
            der.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "lint_crl {}:\n{text}",
        der.display()
    );
}

fn verify_with_crl(env: &Env, crl: &Path, cert: &Path) -> Result<(), String> {
    verify_with_crls(env, &[crl], cert)
}

/// `openssl verify -crl_check -use_deltas` with every CRL in `crls`.
fn verify_with_crls(env: &Env, crls: &[&Path], cert: &Path) -> Result<(), String> {
    let (root, issuing) = (env.root_pem(), env.issuing_pem());
    let mut args = vec!["verify", "-crl_check", "-use_deltas"];
    for crl in crls {
        args.extend(["-CRLfile", crl.to_str().unwrap()]);
    }
    args.extend([
        "-CAfile",
        root.to_str().unwrap(),
        "-untrusted",
        issuing.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    let out = openssl_output(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(text)
    }
}

fn lifecycle(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let csr = env.csr("k", "ec");
    let [a, b, c] = ["a", "b", "c"].map(|n| env.issue("individual-sign", &csr, &person(), n));
    let (sa, sb) = (serial_of(&a), serial_of(&b));

    let crl = fresh_crl(&env);
    for cert in [&a, &b, &c] {
        verify_with_crl(&env, &crl, cert).unwrap();
    }

    assert_eq!(
        env.ok(&["revoke", &sa, "--reason", "keyCompromise"]).trim(),
        format!("{sa}: revoked (keyCompromise)")
    );
    assert_eq!(
        env.ok(&["suspend", &sb.to_ascii_lowercase()]).trim(),
        format!("{sb}: suspended (certificateHold)")
    );
    let crl = fresh_crl(&env);
    assert!(
        verify_with_crl(&env, &crl, &a)
            .unwrap_err()
            .contains("certificate revoked")
    );
    assert!(
        verify_with_crl(&env, &crl, &b)
            .unwrap_err()
            .contains("certificate revoked")
    );
    verify_with_crl(&env, &crl, &c).unwrap();
    let text = openssl(&["crl", "-in", crl.to_str().unwrap(), "-noout", "-text"]);
    assert!(
        text.contains(&format!("Serial Number: {sa}")) && text.contains("Key Compromise"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Serial Number: {sb}")) && text.contains("Certificate Hold"),
        "{text}"
    );
    assert!(text.contains("X509v3 CRL Number: \n"), "{text}");

    // Restored: good again, and gone from the next full CRL.
    assert_eq!(env.ok(&["restore", &sb]).trim(), format!("{sb}: good"));
    let crl = fresh_crl(&env);
    verify_with_crl(&env, &crl, &b).unwrap();
    assert!(verify_with_crl(&env, &crl, &a).is_err());
    let text = openssl(&["crl", "-in", crl.to_str().unwrap(), "-noout", "-text"]);
    assert!(!text.contains(&sb), "{text}");

    // Forbidden transitions and bad input change nothing.
    let changes = env.count("status_changes");
    let audit = env.count("audit_log");
    let refusals = [
        (
            vec!["revoke", sa.as_str(), "--reason", "superseded"],
            "already revoked (final)",
        ),
        (vec!["suspend", sa.as_str()], "already revoked (final)"),
        (vec!["restore", sa.as_str()], "already revoked (final)"),
        (
            vec!["restore", sb.as_str()],
            "only a suspended certificate can be restored",
        ),
        (
            vec!["revoke", sb.as_str(), "--reason", "certificateHold"],
            "use `muhr suspend`",
        ),
        (
            vec!["revoke", sb.as_str(), "--reason", "cACompromise"],
            "CA certificates only",
        ),
        (
            vec!["revoke", sb.as_str(), "--reason", "stolen"],
            "unknown reason \"stolen\"",
        ),
        (
            vec!["revoke", "00AA", "--reason", "keyCompromise"],
            "no certificate with serial 00AA",
        ),
        (vec!["suspend", "not-hex"], "not a serial number in hex"),
    ];
    for (args, message) in refusals {
        let e = env.refused(&args);
        assert!(e.contains(message), "{args:?}: {e}");
    }
    assert_eq!(
        (env.count("status_changes"), env.count("audit_log")),
        (changes, audit)
    );
    let show = env.ok(&["cert", "show", &sa]);
    assert!(
        show.contains("revocation: revoked (keyCompromise)"),
        "{show}"
    );
    // 2 + init + 3 issued + revoke, suspend, restore; besides them the
    // audit key's generation and every CRL signed.
    assert!(env.ok(&["audit", "verify"]).contains("audit chain intact"));
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM audit_log WHERE action NOT IN ('crl.sign', 'key.generate')"),
        ["9"]
    );
}

/// A CRL longer than one page of the generator (20,000 entries) lists every
/// entry exactly once and is accepted by OpenSSL and the linter.
fn many_entries(db: Db) {
    // The benchmark makes the CA and the synthetic rows in a database of
    // its own; the product then signs the CRLs.
    let env = Env::new(db, Keys::Software);
    let out = env.bench_ok(&["crl", "--entries", "41234", "--json"]);
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(report["entries"], 41234);
    let crl = fresh_crl(&env);
    let text = openssl(&["crl", "-in", crl.to_str().unwrap(), "-noout", "-text"]);
    let serials: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .collect();
    assert_eq!(serials.len(), 41234);
    let unique: std::collections::HashSet<&&str> = serials.iter().collect();
    assert_eq!(unique.len(), 41234);
}

/// DATA/crl/NAME.crl, linted, as PEM for -CRLfile.
fn crl_pem(env: &Env, name: &str) -> PathBuf {
    let der = env.data().join(format!("crl/{name}.crl"));
    lint_crl(
        &der,
        if name.starts_with("root") {
            "ARL"
        } else {
            "CRL"
        },
    );
    let pem = env.path(&format!("{name}.pem"));
    openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        der.to_str().unwrap(),
        "-out",
        pem.to_str().unwrap(),
    ]);
    pem
}

/// The name of the CRL a certificate's distribution point names (`issuing-7`).
fn crl_name_of(cert: &Path) -> String {
    let text = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-ext",
        "crlDistributionPoints",
    ]);
    text.split("/crl/")
        .nth(1)
        .and_then(|r| r.split(".crl").next())
        .unwrap_or_else(|| panic!("no CRL distribution point: {text}"))
        .to_string()
}

fn text_of(pem: &Path) -> String {
    openssl(&["crl", "-in", pem.to_str().unwrap(), "-noout", "-text"])
}

/// Delta CRLs carry a change before the next complete CRL, for the whole
/// CA and for each shard; shards are fixed at issuance; removeFromCRL takes
/// a restored certificate off.
fn deltas_and_shards(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let csr = env.csr("k", "ec");
    let [a, b, c] = ["a", "b", "c"].map(|n| env.issue("individual-sign", &csr, &person(), n));
    let (sa, sb) = (serial_of(&a), serial_of(&b));
    let out = env.ok(&["crl"]);
    assert!(out.contains("16 shard CRLs"), "{out}");
    assert!(out.contains("16 shard delta CRLs"), "{out}");
    let base = crl_pem(&env, "issuing");
    crl_pem(&env, "root");
    crl_pem(&env, "root-delta");
    for cert in [&a, &b, &c] {
        let shard = crl_name_of(cert);
        assert!(shard.starts_with("issuing-"), "{shard}");
        let (s, d) = (
            crl_pem(&env, &shard),
            crl_pem(&env, &format!("{shard}-delta")),
        );
        verify_with_crls(&env, &[&s, &d], cert).unwrap();
        verify_with_crls(&env, &[&base, &crl_pem(&env, "issuing-delta")], cert).unwrap();
    }

    env.ok(&["revoke", &sa, "--reason", "keyCompromise"]);
    env.ok(&["suspend", &sb]);
    let out = env.ok(&["crl", "--delta"]);
    assert!(out.contains("issuing-delta.crl: CRL number"), "{out}");
    let delta = crl_pem(&env, "issuing-delta");
    let text = text_of(&delta);
    assert!(
        text.contains("X509v3 Delta CRL Indicator: critical"),
        "{text}"
    );
    assert!(!text.contains("Issuing Distribution Point"), "{text}");
    for cert in [&a, &b] {
        // The complete CRL alone is from before the change; its delta has it.
        verify_with_crl(&env, &base, cert).unwrap();
        let e = verify_with_crls(&env, &[&base, &delta], cert).unwrap_err();
        assert!(e.contains("certificate revoked"), "{e}");
        let shard = crl_name_of(cert);
        let (s, d) = (
            crl_pem(&env, &shard),
            crl_pem(&env, &format!("{shard}-delta")),
        );
        verify_with_crl(&env, &s, cert).unwrap();
        let e = verify_with_crls(&env, &[&s, &d], cert).unwrap_err();
        assert!(e.contains("certificate revoked"), "{e}");
        let dt = text_of(&d);
        assert!(
            dt.contains("X509v3 Issuing Distribution Point: critical")
                && dt.contains(&format!("/crl/{shard}.crl"))
                && dt.contains("Only User Certificates"),
            "{dt}"
        );
    }
    verify_with_crls(&env, &[&base, &delta], &c).unwrap();
    // A shard CRL speaks only for its own certificates.
    let a_shard: u32 = crl_name_of(&a)["issuing-".len()..].parse().unwrap();
    let other = crl_pem(&env, &format!("issuing-{}", (a_shard + 1) % 16));
    let e = verify_with_crl(&env, &other, &a).unwrap_err();
    assert!(e.contains("different CRL scope"), "{e}");

    // Restored after the complete CRL listed the hold: the delta says removeFromCRL.
    env.ok(&["crl"]);
    let base = crl_pem(&env, "issuing");
    env.ok(&["restore", &sb]);
    env.ok(&["crl", "--delta"]);
    let delta = crl_pem(&env, "issuing-delta");
    assert!(verify_with_crl(&env, &base, &b).is_err());
    verify_with_crls(&env, &[&base, &delta], &b).unwrap();
    let text = text_of(&delta);
    assert!(
        text.contains(&format!("Serial Number: {sb}")) && text.contains("Remove From CRL"),
        "{text}"
    );

    // Fewer shards from now on: new certificates use 0..4, old ones keep
    // theirs, and CRLs are still made for all 16.
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str("\n[crl]\nshards = 4\n");
    std::fs::write(&env.config, config).unwrap();
    let later: Vec<PathBuf> = (0..12)
        .map(|i| env.issue("individual-sign", &csr, &person(), &format!("d{i}")))
        .collect();
    for cert in &later {
        let n: u32 = crl_name_of(cert)["issuing-".len()..].parse().unwrap();
        assert!(n < 4, "{n}");
    }
    let out = env.ok(&["crl"]);
    assert!(out.contains("16 shard CRLs"), "{out}");
    let s = crl_pem(&env, &crl_name_of(&a));
    assert!(
        verify_with_crl(&env, &s, &a)
            .unwrap_err()
            .contains("certificate revoked")
    );
}

/// Replaced CRLs older than the cut are deleted; the newest of every kind and
/// scope stays (it is served, and deltas extend it).
fn pruning(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    env.ok(&["crl"]);
    env.ok(&["crl"]);
    let rows = || {
        env.sql("SELECT COUNT(*) FROM crls")[0]
            .parse::<i64>()
            .unwrap()
    };
    // Twice: whole + 16 shards, complete and delta, for issuing; whole for root.
    assert_eq!(rows(), 2 * (2 * 17 + 2));
    let newest = env.sql("SELECT MAX(number) FROM crls WHERE issuer = 'issuing'");
    let pruned = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = muhr_store::Store::connect(&env.db_url).await.unwrap();
        store.prune_crls(muhr_store::now_secs() + 10).await.unwrap()
    });
    assert_eq!((pruned, rows()), (2 * 17 + 2, 2 * 17 + 2));
    assert_eq!(
        env.sql("SELECT MAX(number) FROM crls WHERE issuer = 'issuing'"),
        newest
    );
    env.ok(&["crl", "--delta"]);
}

both_databases! {
    replaced_crls_are_pruned => pruning;
    suspend_restore_revoke_and_crls => lifecycle;
    delta_and_shard_crls => deltas_and_shards;
    a_crl_of_many_pages => many_entries;
    a_ca_certificate_needs_two_operators_never_one => ca_status_under_dual_control;
}

/// The serial of a CA certificate as the database writes it.
fn ca_serial(env: &Env, ca: &str) -> String {
    env.sql(&format!(
        "SELECT serial FROM certificates WHERE profile = '{ca}-ca'"
    ))[0]
        .clone()
}

/// Dual control over a CA certificate's status: one person, whatever they
/// hold, cannot suspend, restore or revoke a CA; two different registered
/// operators can, and the audit chain names both.
fn ca_status_under_dual_control(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let issuing = ca_serial(&env, "issuing");
    let root = ca_serial(&env, "root");
    common::ra::client(&env, "operator", "OP-1");
    common::ra::client(&env, "operator", "OP-2");
    common::ra::client(&env, "personalization-line", "LINE-1");
    let cred = |name: &str| {
        (
            env.path(&format!("{name}.p12")),
            env.path(&format!("{name}.pw")),
        )
    };
    let with = |args: &[&str], who: &str| {
        let (p12, pw) = cred(who);
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend([
            "--operator-p12".into(),
            p12.to_str().unwrap().into(),
            "--password-file".into(),
            pw.to_str().unwrap().into(),
        ]);
        a
    };
    let run_ok = |v: Vec<String>| env.ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let run_refused =
        |v: Vec<String>| env.refused(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let state = |serial: &str| {
        env.sql(&format!(
            "SELECT revocation FROM certificates WHERE serial = '{serial}'"
        ))[0]
            .clone()
    };

    // One person alone, with the CLI and the database: refused outright.
    let changes = env.count("status_changes");
    for args in [
        vec!["revoke", issuing.as_str(), "--reason", "cACompromise"],
        vec!["suspend", issuing.as_str()],
        vec!["suspend", root.as_str()],
    ] {
        let e = env.refused(&args);
        assert!(e.contains("dual control"), "{args:?}: {e}");
    }
    // A personalization line's credential is not an operator's.
    let e = run_refused(with(&["suspend", &issuing], "LINE-1"));
    assert!(e.contains("not an operator"), "{e}");
    // A PKCS#12 with the wrong password proves nothing.
    let (p12, _) = cred("OP-1");
    let wrong = env.write("wrong.pw", "not the password\n");
    let e = env.refused(&[
        "suspend",
        &issuing,
        "--operator-p12",
        p12.to_str().unwrap(),
        "--password-file",
        wrong.to_str().unwrap(),
    ]);
    assert!(e.contains("PKCS#12"), "{e}");
    assert_eq!(env.count("status_changes"), changes);

    // OP-1 requests: nothing changes yet.
    let out = run_ok(with(&["suspend", &issuing], "OP-1"));
    let id = out
        .split_whitespace()
        .nth(1)
        .expect("approval id")
        .to_string();
    assert!(out.contains("nothing has changed yet"), "{out}");
    assert_eq!(state(&issuing), "good");
    assert_eq!(env.count("status_changes"), changes);
    // OP-1 cannot approve their own request, nor can the line.
    let e = run_refused(with(&["approve", &id], "OP-1"));
    assert!(e.contains("second, different operator"), "{e}");
    let e = run_refused(with(&["approve", &id], "LINE-1"));
    assert!(e.contains("not an operator"), "{e}");
    let e = run_refused(with(&["approve", "0badc0de"], "OP-2"));
    assert!(e.contains("no approval request"), "{e}");
    assert_eq!(state(&issuing), "good");
    // A database administrator who marks the request approved by its own
    // requester is stopped by the database itself.
    let forged = env.try_sql(&format!(
        "UPDATE approvals SET state = 'approved', approved_by = requested_by WHERE id = '{id}'"
    ));
    assert!(forged.is_err(), "a self-approval was stored");

    // OP-2 approves: done, once.
    let out = run_ok(with(&["approve", &id], "OP-2"));
    assert!(out.contains("suspended"), "{out}");
    assert_eq!(state(&issuing), "suspended");
    let e = run_refused(with(&["approve", &id], "OP-2"));
    assert!(e.contains("already approved"), "{e}");
    let audit = env.sql(
        "SELECT actor || ' ' || action FROM audit_log \
         WHERE action LIKE 'approval.%' OR object IN \
         (SELECT serial FROM certificates WHERE profile = 'issuing-ca') ORDER BY seq",
    );
    assert_eq!(
        audit[audit.len() - 3..],
        [
            "operator:OP-1 approval.request",
            "operator:OP-2 approval.grant",
            "operator:OP-1+operator:OP-2 certificate.suspend",
        ],
        "{audit:?}"
    );

    // Restoring is as grave: the other way round this time.
    let out = run_ok(with(&["restore", &issuing], "OP-2"));
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(state(&issuing), "suspended");
    run_ok(with(&["approve", &id], "OP-1"));
    assert_eq!(state(&issuing), "good");
    // A database administrator registers a citizen's authentication
    // certificate (clientAuth, issued by this CA, their own key) as an
    // operator: not an RA client credential, refused.
    let csr = env.csr("dba-op", "ec");
    let pem = env.issue("individual-auth", &csr, &person(), "dba-op");
    let dba_serial = serial_of(&pem);
    let dba_p12 = env.path("DBA-OP.p12");
    let dba_pw = env.write("DBA-OP.pw", "correct horse battery\n");
    openssl(&[
        "pkcs12",
        "-export",
        "-inkey",
        env.path("dba-op.key").to_str().unwrap(),
        "-in",
        pem.to_str().unwrap(),
        "-passout",
        "pass:correct horse battery",
        "-out",
        dba_p12.to_str().unwrap(),
    ]);
    env.sql(&format!(
        "INSERT INTO ra_clients (serial, name, role, created_at) \
         VALUES ('{dba_serial}', 'IVANOV IVAN IVANOVICH', 'operator', 0)"
    ));
    let e = env.refused(&[
        "suspend",
        &issuing,
        "--operator-p12",
        dba_p12.to_str().unwrap(),
        "--password-file",
        dba_pw.to_str().unwrap(),
    ]);
    assert!(e.contains("not an RA client credential"), "{e}");
    // A request a database administrator wrote, naming a real operator:
    // its signature is not that operator's, so nobody can approve it.
    let op1 = env.sql("SELECT serial FROM ra_clients WHERE name = 'OP-1'")[0].clone();
    let blob = if env.db == Db::Sqlite {
        "X'3000'"
    } else {
        "'\\x3000'::bytea"
    };
    env.sql(&format!(
        "INSERT INTO approvals (id, action, object, params, requested_by, requester_name, \
         request_sig, requested_at, expires_at, state) VALUES ('planted', 'certificate.suspend', \
         '{issuing}', '{{\"reason\":\"certificateHold\"}}', '{op1}', 'OP-1', {blob}, 0, 99999999999, 'pending')"
    ));
    let e = run_refused(with(&["approve", "planted"], "OP-2"));
    assert!(e.contains("the request"), "{e}");
    assert_eq!(state(&issuing), "good");
    // A request whose requester's credential was revoked since: void.
    let out = run_ok(with(&["suspend", &root], "OP-1"));
    let stale = out.split_whitespace().nth(1).unwrap().to_string();
    env.ok(&["revoke", &op1, "--reason", "keyCompromise"]);
    let e = run_refused(with(&["approve", &stale], "OP-2"));
    assert!(e.contains("the request") && e.contains("revoked"), "{e}");
    assert_eq!(state(&root), "good");
    // A revoked operator credential approves nothing.
    common::ra::client(&env, "operator", "OP-3");
    let out = run_ok(with(&["revoke", &root, "--reason", "cACompromise"], "OP-3"));
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    let op2 = env.sql("SELECT serial FROM ra_clients WHERE name = 'OP-2'")[0].clone();
    env.ok(&["revoke", &op2, "--reason", "keyCompromise"]);
    let e = run_refused(with(&["approve", &id], "OP-2"));
    assert!(e.contains("revoked"), "{e}");
    assert_eq!(state(&root), "good");
    env.ok(&["audit", "verify"]);
}

//! Suspend, restore and revoke through the CLI; full CRLs that OpenSSL uses to
//! accept good and reject revoked or suspended certificates; refusals for
//! transitions the state machine forbids; the served CRL following a change
//! made by another process.

use std::path::{Path, PathBuf};

mod common;
use common::*;

/// `muhr crl`, then the issuing CA's CRL as PEM (for -CRLfile).
fn fresh_crl(env: &Env) -> PathBuf {
    let out = env.ok(&["crl"]);
    assert!(out.contains("issuing.crl: CRL number"), "{out}");
    let der = env.data().join("crl/issuing.crl");
    lint_crl(&der, "CRL");
    lint_crl(&env.data().join("crl/root.crl"), "ARL");
    let pem = env.path("issuing-crl.pem");
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
    let out = openssl_output(&[
        "verify",
        "-crl_check",
        "-CRLfile",
        crl.to_str().unwrap(),
        "-CAfile",
        env.root_pem().to_str().unwrap(),
        "-untrusted",
        env.issuing_pem().to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
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
    assert!(
        text.contains("X509v3 CRL Number: \n                2"),
        "{text}"
    );

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
    // 2 + init + 3 issued + revoke, suspend, restore
    assert!(env.ok(&["audit", "verify"]).contains("intact: 9 entries"));
}

/// A CRL longer than one page of the generator (20,000 entries) lists every
/// entry exactly once and is accepted by OpenSSL and the linter.
fn many_entries(db: Db) {
    let env = Env::new(db, Keys::Software);
    env.init();
    let out = env.ok(&["bench", "crl", "--entries", "41234", "--json"]);
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(report["entries"], 41234);
    fresh_crl(&env);
    let text = openssl(&[
        "crl",
        "-in",
        env.path("issuing-crl.pem").to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    let serials: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .collect();
    assert_eq!(serials.len(), 41234);
    let unique: std::collections::HashSet<&&str> = serials.iter().collect();
    assert_eq!(unique.len(), 41234);
}

both_databases! {
    suspend_restore_revoke_and_crls => lifecycle;
    a_crl_of_many_pages => many_entries;
}

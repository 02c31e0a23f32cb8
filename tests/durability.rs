//! SIGKILL while certificates are being issued: every certificate the process
//! printed (that is, handed out) is in the database, the audit chain holds, and
//! the next start finishes what was pending.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::*;

fn kill_during_issuance(db: Db) {
    // One process at a time here, so intents need not age before recovery.
    let env = Env::with_extra(
        db,
        Keys::Software,
        "\n[issuance]\nrecovery_min_age_seconds = 0\n",
    );
    // The benchmark binary issues (and makes the CA, in its own database).
    let mut handed_out = Vec::new();
    for round in 0..3 {
        let mut child = env
            .bench()
            .args([
                "issue",
                "--count",
                "20000",
                "--concurrency",
                "4",
                "--print-serials",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill at a different point each round, once issuance is under way.
        let want = 20 + 37 * round;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = 0;
        while seen < want && Instant::now() < deadline {
            if let Ok(serial) = rx.recv_timeout(Duration::from_millis(100)) {
                handed_out.push(serial);
                seen += 1;
            }
        }
        assert!(
            seen >= want,
            "bench did not issue {want} certificates in time"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        // Whatever it printed before dying was handed out too.
        handed_out.extend(rx.try_iter());
    }
    assert!(handed_out.len() >= 20 + 57 + 94);
    let issued: std::collections::HashSet<String> = env
        .sql("SELECT serial FROM certificates WHERE status = 'issued' AND der IS NOT NULL")
        .into_iter()
        .collect();
    for s in &handed_out {
        assert!(
            issued.contains(s),
            "certificate {s} was handed out but is not in the database"
        );
    }
    assert!(env.ok(&["audit", "verify"]).contains("audit chain intact"));
    // Recovery finds pending certificates through their own table: it must
    // list exactly the certificates left pending.
    let pending =
        |q: &str| -> std::collections::BTreeSet<String> { env.sql(q).into_iter().collect() };
    assert_eq!(
        pending("SELECT serial FROM pending_certificates"),
        pending("SELECT serial FROM certificates WHERE status = 'pending'")
    );

    // The next start signs what was pending when the process died.
    env.issue(
        "individual-sign",
        &env.csr("after", "ec"),
        &person(),
        "after",
    );
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM certificates WHERE status = 'pending'"),
        ["0"]
    );
    assert_eq!(env.count("pending_certificates"), 0);
    // A stored certificate holds its to-be-signed bytes; the row keeps none.
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM certificates WHERE status = 'issued' AND length(tbs) > 0"),
        ["0"]
    );
    let total: i64 = env.sql("SELECT COUNT(*) FROM certificates")[0]
        .parse()
        .unwrap();
    let entries = env.ok(&["audit", "verify"]);
    // One audit entry per certificate (root and issuing included), ca.init
    // and the audit key's generation.
    assert!(
        entries.contains(&format!("intact: {} entries", total + 2)),
        "{entries} for {total} certificates"
    );
    if db == Db::Postgres {
        // Storing a signed certificate changes no indexed column and finds
        // room on its page: an update in place (HOT), no second index entry.
        env.updates_are_hot("certificates", total);
    }
}

both_databases! {
    sigkill_loses_no_certificate => kill_during_issuance;
}

/// A database administrator (or a URL) that turns PostgreSQL's flushing
/// off would have Muhr answer for certificates and time-stamp tokens a
/// crash then loses: such a server is refused before anything is written.
#[test]
fn a_postgres_server_answering_commits_before_flushing_them_is_refused_and_left_untouched() {
    let url = postgres_database();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let off = format!("{url}?options=-c%20synchronous_commit%3Doff");
        let e = muhr_store::Store::connect(&off)
            .await
            .err()
            .expect("a server acknowledging unflushed commits must be refused");
        let msg = e.to_string();
        assert!(msg.contains("synchronous_commit = off"), "{msg}");
        assert!(!msg.contains(&url), "the URL stays out of the error: {msg}");
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        let migrated: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(&mut c)
                .await
                .unwrap();
        assert!(!migrated, "nothing is written to a refused server");
        // The role's own default is refused the same way.
        let role = format!("muhr_t_async_{}", std::process::id());
        for sql in [
            format!("CREATE ROLE {role} LOGIN"),
            format!("ALTER ROLE {role} SET synchronous_commit = off"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .unwrap();
        }
        let (_, rest) = url.split_once("://").unwrap();
        let (_, host_db) = rest.split_once('@').unwrap();
        let as_role = format!("postgres://{role}@{host_db}");
        let e = muhr_store::Store::connect(&as_role).await.err();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE {role}")))
            .execute(&mut c)
            .await
            .unwrap();
        let msg = e
            .expect("the role's default must be refused too")
            .to_string();
        assert!(msg.contains("synchronous_commit = off"), "{msg}");
        // Flushing before acknowledging (local, or the server's default) is used.
        let local = format!("{url}?options=-c%20synchronous_commit%3Dlocal");
        muhr_store::Store::connect(&local).await.unwrap();
        muhr_store::Store::connect(&url).await.unwrap();
    });
}

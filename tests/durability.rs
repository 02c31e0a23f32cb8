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
/// off, or makes a table unlogged, would have Muhr answer for certificates
/// and time-stamp tokens that a crash then loses: such a database is refused
/// before anything is written, and a default changed while Muhr runs
/// reaches neither its open sessions nor the ones it opens next.
#[test]
fn a_postgres_database_answering_commits_before_flushing_them_is_refused_and_left_untouched() {
    let url = postgres_database();
    let db = url.rsplit_once('/').unwrap().1.to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let admin = |sql: String| {
            let url = url.clone();
            async move {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        };
        let refused = |url: String, why: &'static str| async move {
            muhr_store::Store::connect(&url)
                .await
                .err()
                .expect(why)
                .to_string()
        };
        // From the URL (the test server trusts any password: this one is
        // there to be kept out of the error).
        let with_password = url.replacen("postgres@", "postgres:s3cret-pw@", 1);
        assert_ne!(
            with_password, url,
            "the URL must carry the password to test"
        );
        let off = format!("{with_password}?options=-c%20synchronous_commit%3Doff");
        let msg = refused(
            off,
            "a session acknowledging unflushed commits must be refused",
        )
        .await;
        assert!(
            msg.contains("synchronous_commit = off, set by: client"),
            "{msg}"
        );
        assert!(!msg.contains("s3cret-pw"), "the password stays out: {msg}");
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        let migrated: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(&mut c)
                .await
                .unwrap();
        assert!(!migrated, "nothing is written to a refused database");

        // The database's default changed while Muhr runs: the sessions
        // open keep the value they were checked with (pinned: a reload of
        // the server's file could not lower it either), the next one the
        // pool opens is refused.
        let store = muhr_store::Store::connect(&url).await.unwrap();
        let mut open = Vec::new();
        while open.len() < 2 || store.pool().num_idle() > 0 {
            open.push(store.pool().acquire().await.unwrap());
        }
        admin(format!("ALTER DATABASE {db} SET synchronous_commit = off")).await;
        for conn in &mut open {
            let (kept, source): (String, String) = sqlx::query_as(
                "SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'",
            )
            .fetch_one(&mut **conn)
            .await
            .unwrap();
            assert_eq!((kept.as_str(), source.as_str()), ("on", "session"));
        }
        assert!(
            store.pool().acquire().await.is_err(),
            "a connection opened after the change must be refused"
        );
        drop(open);
        let msg = refused(
            url.clone(),
            "the database's default must be refused at start too",
        )
        .await;
        assert!(
            msg.contains("synchronous_commit = off, set by: database"),
            "{msg}"
        );
        admin(format!("ALTER DATABASE {db} RESET synchronous_commit")).await;

        // A table made unlogged (crash recovery empties it).
        admin("ALTER TABLE timestamp_token_batches SET UNLOGGED".into()).await;
        let msg = refused(url.clone(), "an unlogged table must be refused").await;
        assert!(
            msg.contains(") timestamp_token_batches are UNLOGGED"),
            "{msg}"
        );
        admin("ALTER TABLE timestamp_token_batches SET LOGGED".into()).await;

        // Flushing before acknowledging (local, or the server's default) is used.
        let local = format!("{url}?options=-c%20synchronous_commit%3Dlocal");
        muhr_store::Store::connect(&local).await.unwrap();
        muhr_store::Store::connect(&url).await.unwrap();
    });
}

//! The audit chain catches an entry changed, removed or reordered by hand, and
//! names it; its signed checkpoints catch what the hashes alone cannot: a
//! database administrator who rewrites entries and recomputes every hash
//! after them, forges or deletes checkpoints, or rolls the chain back. An
//! export verifies with no database.

mod common;
use common::*;

/// Ceremony (root, issuing, ca.init), the audit key's generation, then
/// three certificates: seven entries, each command checkpointed.
fn env_with_entries(db: Db) -> Env {
    env_with_entries_and(db, "")
}

fn env_with_entries_and(db: Db, extra: &str) -> Env {
    let env = Env::with_extra(db, Keys::Software, extra);
    env.init();
    let csr = env.csr("a", "ec");
    for i in 0..3 {
        env.issue("individual-auth", &csr, &person(), &format!("c{i}"));
    }
    let out = env.ok(&["audit", "verify"]);
    assert!(
        out.contains("intact: 7 entries") && out.contains("anchored up to entry 7"),
        "{out}"
    );
    env
}

fn broken(env: &Env) -> String {
    env.refused(&["audit", "verify"])
}

fn edited_entry_is_named(db: Db) {
    let env = env_with_entries(db);
    env.sql("UPDATE audit_log SET details = REPLACE(details, 'IVANOV', 'PETROV') WHERE seq = 5");
    let e = broken(&env);
    assert!(e.contains("audit entry 5 was changed"), "{e}");
}

fn actor_change_is_caught(db: Db) {
    let env = env_with_entries(db);
    env.sql("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2");
    assert!(broken(&env).contains("audit entry 2 was changed"));
}

fn removed_entry_is_named(db: Db) {
    let env = env_with_entries(db);
    env.sql("DELETE FROM audit_log WHERE seq = 3");
    let e = broken(&env);
    assert!(
        e.contains("audit entry 3 is missing or out of order"),
        "{e}"
    );
}

fn removed_tail_is_noticed(db: Db) {
    let env = env_with_entries(db);
    env.sql("DELETE FROM audit_log WHERE seq = 7");
    let e = broken(&env);
    assert!(e.contains("audit entries 7..=7 were removed"), "{e}");
}

/// An entry slipped in past the head (the head left alone, as Muhr never
/// does: an entry and the head move in one transaction) is caught, even
/// with no checkpoint beyond it yet.
fn entry_written_past_the_head_is_caught(db: Db) {
    let env = env_with_entries(db);
    env.sql(
        "INSERT INTO audit_log (seq, at, actor, action, object, details, prev_hash, hash) \
         SELECT 8, at, 'intruder', action, object, details, hash, hash FROM audit_log WHERE seq = 7",
    );
    let e = broken(&env);
    assert!(
        e.contains("audit entries 8..=8 lie past the chain's head (7)"),
        "{e}"
    );
}

/// History planted below the chain's first entry, where the walk never
/// looks but operators' look-ups would show it, is caught.
fn entry_planted_before_the_start_is_caught(db: Db) {
    let env = env_with_entries(db);
    env.sql(
        "INSERT INTO audit_log (seq, at, actor, action, object, details, prev_hash, hash) \
         SELECT 0, at, 'intruder', action, object, details, hash, hash FROM audit_log WHERE seq = 1",
    );
    let e = broken(&env);
    assert!(
        e.contains("audit entry 0 lies before the chain's start"),
        "{e}"
    );
}

/// An auditor verifying a live chain while nodes append and sign
/// checkpoints: the chain read up to the head taken first, and the node's
/// checkpoint file before the database's checkpoints, so nothing written
/// meanwhile reads as entries removed or checkpoints rolled back (false
/// alarms the old order gave).
fn verify_during_appends_gives_no_false_alarm(db: Db) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = env_with_entries(db);
    let stop = Arc::new(AtomicBool::new(false));
    let (url, flag) = (env.db_url.clone(), stop.clone());
    let writer = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = muhr_store::Store::connect(&url).await.unwrap();
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let e = muhr_store::AuditEvent {
                    actor: "test:appender".into(),
                    action: "test.append".into(),
                    object: format!("o{n}"),
                    details: serde_json::json!({}),
                };
                store.audit(&[&e]).await.unwrap();
                n += 1;
            }
            n
        })
    });
    // Meanwhile CLI issuance appends and signs checkpoints, each saved to
    // the database and then to the node's own file, as `muhr serve` does.
    let csr = env.csr("live", "ec");
    std::thread::scope(|s| {
        let issuer = s.spawn(|| {
            for i in 0..6 {
                env.issue("individual-auth", &csr, &person(), &format!("live{i}"));
            }
        });
        for _ in 0..8 {
            let out = env.ok(&["audit", "verify"]);
            assert!(out.contains("intact"), "{out}");
        }
        issuer.join().unwrap();
    });
    stop.store(true, Ordering::Relaxed);
    let appended = writer.join().unwrap();
    assert!(appended > 0, "the appender never ran");
    let out = env.ok(&["audit", "verify"]);
    assert!(out.contains("intact"), "{out}");
}

fn reordered_entries_are_named(db: Db) {
    let env = env_with_entries(db);
    // Swap entries 5 and 6 wholesale (their numbers travel with them).
    env.sql("UPDATE audit_log SET seq = 100 WHERE seq = 5");
    env.sql("UPDATE audit_log SET seq = 5 WHERE seq = 6");
    env.sql("UPDATE audit_log SET seq = 6 WHERE seq = 100");
    let e = broken(&env);
    assert!(e.contains("audit entry 5 does not follow entry 4"), "{e}");
}

/// What a database administrator covering their tracks does: changes entry
/// `seq`'s details and recomputes every later hash and the head, so the
/// hash chain alone holds again.
fn rewrite_from(env: &Env, seq: i64, from: &str, to: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = muhr_store::Store::connect(&env.db_url).await.unwrap();
        let (head, _) = store.audit_head().await.unwrap();
        let mut entries = store.audit_entries(1, head).await.unwrap();
        let mut prev = vec![0u8; 32];
        for e in entries.iter_mut() {
            if e.seq == seq {
                e.details = e.details.replace(from, to);
            }
            e.prev_hash = prev.clone();
            e.hash = muhr_store::audit::entry_hash(
                &prev, e.seq, e.at, &e.actor, &e.action, &e.object, &e.details,
            );
            prev = e.hash.clone();
            sqlx::query(
                "UPDATE audit_log SET details = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
            )
            .bind(&e.details)
            .bind(&e.prev_hash)
            .bind(&e.hash)
            .bind(e.seq)
            .execute(store.pool())
            .await
            .unwrap();
        }
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
            .bind(&prev)
            .execute(store.pool())
            .await
            .unwrap();
    });
}

fn recomputed_hashes_are_caught(db: Db) {
    let env = env_with_entries(db);
    rewrite_from(&env, 5, "IVANOV", "PETROV");
    let e = broken(&env);
    assert!(
        e.contains("signed checkpoint at entry") && e.contains("rewritten"),
        "{e}"
    );
}

fn forged_checkpoint_is_caught(db: Db) {
    let env = env_with_entries(db);
    rewrite_from(&env, 5, "IVANOV", "PETROV");
    // The administrator re-signs the newest checkpoint over the rewritten
    // chain with a key of their own, keeping the audit key's id.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
        let store = muhr_store::Store::connect(&env.db_url).await.unwrap();
        let mut c = store.last_checkpoint().await.unwrap().unwrap();
        c.hash = store.audit_head().await.unwrap().1;
        let theirs = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        c.signature = theirs
            .sign(
                &aws_lc_rs::rand::SystemRandom::new(),
                &muhr_ca::audit_anchor::statement(&c),
            )
            .unwrap()
            .as_ref()
            .to_vec();
        sqlx::query("UPDATE audit_checkpoints SET hash = $1, signature = $2 WHERE seq = $3")
            .bind(&c.hash)
            .bind(&c.signature)
            .bind(c.seq)
            .execute(store.pool())
            .await
            .unwrap();
    });
    let e = broken(&env);
    assert!(e.contains("not signed by the audit key"), "{e}");
}

fn deleted_middle_checkpoint_is_caught(db: Db) {
    let env = env_with_entries(db);
    // Checkpoints at 4 (ceremony), 5, 6, 7: remove one in the middle.
    env.sql("DELETE FROM audit_checkpoints WHERE seq = 5");
    let e = broken(&env);
    assert!(e.contains("checkpoints were deleted"), "{e}");
}

/// After a rewrite with the newer checkpoints deleted, no node signs the
/// forged head: the next command that appends finds the chain does not
/// follow from what it signed before, and refuses.
fn forged_head_is_not_signed(db: Db) {
    let env = env_with_entries(db);
    env.sql("DELETE FROM audit_checkpoints WHERE seq > 4");
    rewrite_from(&env, 5, "IVANOV", "PETROV");
    env.issue("individual-auth", &env.csr("b", "ec"), &person(), "after");
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM audit_checkpoints WHERE seq > 4"),
        ["0"],
        "a checkpoint was signed over the rewritten chain"
    );
    assert!(broken(&env).contains("missing from the database"));
}

fn deleted_checkpoints_are_caught(db: Db) {
    // No grace: every entry must be anchored at once.
    let env = env_with_entries_and(db, "[audit]\nanchor_grace_seconds = 0\n");
    rewrite_from(&env, 5, "IVANOV", "PETROV");
    env.sql("DELETE FROM audit_checkpoints");
    let e = broken(&env);
    assert!(e.contains("no signed checkpoint vouches"), "{e}");
    // And the node's own record of what it signed disagrees with the
    // database, whatever the grace.
    assert!(e.contains("missing from the database"), "{e}");
}

fn rolled_back_chain_is_caught(db: Db) {
    let env = env_with_entries(db);
    // Back to the ceremony: the three issuances and their checkpoints gone,
    // the head set to match.
    env.sql("DELETE FROM audit_log WHERE seq > 4");
    env.sql("DELETE FROM audit_checkpoints WHERE seq > 4");
    env.sql(
        "UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit_log WHERE seq = 4) \
         WHERE id = 1",
    );
    let e = broken(&env);
    assert!(e.contains("missing from the database"), "{e}");
}

fn export_verifies_offline(db: Db) {
    let env = env_with_entries(db);
    let out = env.path("audit.jsonl");
    let said = env.ok(&["audit", "export", out.to_str().unwrap()]);
    assert!(said.contains("exported 7 entries"), "{said}");
    let key = env.data().join("ca/audit-key.pem");
    // No configuration, no database: only the file and the public key.
    let offline = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_muhr"))
            .args(["audit", "verify", "--export"])
            .arg(file)
            .arg("--public-key")
            .arg(&key)
            .env_remove("MUHR_CONFIG")
            .current_dir(env.dir.path())
            .output()
            .unwrap()
    };
    let ok = offline(&out);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        text.contains("intact: 7 entries") && text.contains("anchored up to entry 7"),
        "{text}"
    );
    // An edited export does not verify.
    let edited = std::fs::read_to_string(&out)
        .unwrap()
        .replace("IVANOV", "PETROV");
    let bad = env.write("edited.jsonl", edited);
    let no = offline(&bad);
    assert_eq!(no.status.code(), Some(1), "{no:?}");
    assert!(
        String::from_utf8_lossy(&no.stderr).contains("audit export broken"),
        "{no:?}"
    );
}

/// Every use of a CA key and every key made is in the chain.
fn key_uses_are_audited(db: Db) {
    let env = env_with_entries(db);
    env.ok(&["crl"]);
    let actions = env.sql("SELECT action || ' ' || object FROM audit_log ORDER BY seq");
    assert!(
        actions.iter().any(|a| a == "key.generate muhr-audit"),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a == "crl.sign issuing")
            && actions.iter().any(|a| a == "crl.sign root"),
        "{actions:?}"
    );
    env.ok(&["audit", "verify"]);
}

/// A failover or a restore that lost the newest checkpoint but kept the
/// entries: the node that signed it puts it back from its own record, and
/// anchoring goes on (no false alarm, no permanent refusal).
fn lost_checkpoint_is_restored(db: Db) {
    let env = env_with_entries(db);
    env.sql("DELETE FROM audit_checkpoints WHERE seq = 7");
    env.issue(
        "individual-auth",
        &env.csr("c", "ec"),
        &person(),
        "after-failover",
    );
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM audit_checkpoints WHERE seq >= 7"),
        ["2"]
    );
    let out = env.ok(&["audit", "verify"]);
    assert!(out.contains("anchored up to entry 8"), "{out}");
}

both_databases! {
    a_checkpoint_lost_in_a_failover_is_restored => lost_checkpoint_is_restored;
    an_edited_entry_is_named => edited_entry_is_named;
    a_changed_actor_is_caught => actor_change_is_caught;
    a_removed_entry_is_named => removed_entry_is_named;
    a_removed_tail_is_noticed => removed_tail_is_noticed;
    an_entry_written_past_the_head_is_caught => entry_written_past_the_head_is_caught;
    an_entry_planted_before_the_start_is_caught => entry_planted_before_the_start_is_caught;
    verifying_a_live_chain_gives_no_false_alarm => verify_during_appends_gives_no_false_alarm;
    reordered_entries_are_named => reordered_entries_are_named;
    an_administrator_recomputing_every_hash_is_caught => recomputed_hashes_are_caught;
    an_administrator_forging_checkpoints_is_caught => forged_checkpoint_is_caught;
    an_administrator_deleting_a_middle_checkpoint_is_caught => deleted_middle_checkpoint_is_caught;
    no_node_signs_a_rewritten_head => forged_head_is_not_signed;
    an_administrator_deleting_checkpoints_is_caught => deleted_checkpoints_are_caught;
    an_administrator_rolling_the_chain_back_is_caught => rolled_back_chain_is_caught;
    an_export_verifies_with_no_database => export_verifies_offline;
    every_key_made_and_crl_signed_is_audited => key_uses_are_audited;
}

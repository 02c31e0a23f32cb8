//! The audit chain catches an entry changed, removed or reordered by hand, and
//! names it.

mod common;
use common::*;

fn env_with_entries(db: Db) -> Env {
    let env = Env::new(db, Keys::Software);
    env.init();
    let csr = env.csr("a", "ec");
    for i in 0..3 {
        env.issue("individual-auth", &csr, &person(), &format!("c{i}"));
    }
    // ceremony: root, issuing, ca.init; then three certificates
    assert!(env.ok(&["audit", "verify"]).contains("intact: 6 entries"));
    env
}

fn broken(env: &Env) -> String {
    env.refused(&["audit", "verify"])
}

fn edited_entry_is_named(db: Db) {
    let env = env_with_entries(db);
    env.sql("UPDATE audit_log SET details = REPLACE(details, 'IVANOV', 'PETROV') WHERE seq = 4");
    let e = broken(&env);
    assert!(e.contains("audit entry 4 was changed"), "{e}");
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
    env.sql("DELETE FROM audit_log WHERE seq = 6");
    let e = broken(&env);
    assert!(e.contains("audit entries 6..=6 were removed"), "{e}");
}

fn reordered_entries_are_named(db: Db) {
    let env = env_with_entries(db);
    // Swap entries 4 and 5 wholesale (their numbers travel with them).
    env.sql("UPDATE audit_log SET seq = 100 WHERE seq = 4");
    env.sql("UPDATE audit_log SET seq = 4 WHERE seq = 5");
    env.sql("UPDATE audit_log SET seq = 5 WHERE seq = 100");
    let e = broken(&env);
    assert!(e.contains("audit entry 4 does not follow entry 3"), "{e}");
}

both_databases! {
    an_edited_entry_is_named => edited_entry_is_named;
    a_changed_actor_is_caught => actor_change_is_caught;
    a_removed_entry_is_named => removed_entry_is_named;
    a_removed_tail_is_noticed => removed_tail_is_noticed;
    reordered_entries_are_named => reordered_entries_are_named;
}

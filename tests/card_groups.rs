//! A group of cards through the store's two transactions, on both databases,
//! in the shapes the HTTP API forms only by chance: one job listed twice (two
//! requests with one id in one group), a person's two cards in one group, a
//! job another request claimed first, and a previous card to supersede. On
//! PostgreSQL each transaction is a single statement (or nearly), so this is
//! where its SQL meets the cases the general path handles in Rust.

mod common;

use std::collections::HashMap;

use common::{Db, Env, Keys};
use muhr_store::jobs::{Claim, FinishedJob, JobClaim, Supersede};
use muhr_store::{AuditEvent, Intent, IssueOnce, Store};

const ROLES: [&str; 2] = ["auth", "sign"];

struct Card {
    job: &'static str,
    pinfl: &'static str,
    document: &'static str,
}

const fn card(job: &'static str, pinfl: &'static str, document: &'static str) -> Card {
    Card {
        job,
        pinfl,
        document,
    }
}

/// What a group gave back: each card's claim, which of its certificates were
/// recorded (by serial), and the serials each card superseded.
struct Outcome {
    claims: Vec<Claim>,
    recorded: Vec<Vec<String>>,
    superseded: Vec<Vec<String>>,
}

/// Runs the group as the RA does: claim and record, "sign", then store and
/// finish the jobs whose certificates are all there.
async fn group(store: &Store, cards: &[Card], next_serial: &mut u32) -> Outcome {
    let claims: Vec<JobClaim> = cards
        .iter()
        .map(|c| JobClaim {
            job: c.job.into(),
            body_hash: c.job.as_bytes().to_vec(),
            pinfl: c.pinfl.into(),
            document: c.document.into(),
            district: "1726269".into(),
        })
        .collect();
    let mut intents = Vec::new();
    for c in cards {
        for role in ROLES {
            *next_serial += 1;
            intents.push(Intent {
                serial: format!("{:032x}", *next_serial),
                issuer: "test".into(),
                profile: format!("individual-{role}"),
                subject: format!("CN={}", c.pinfl),
                pinfl: Some(c.pinfl.into()),
                not_before: 1,
                not_after: 2,
                tbs: vec![0x30, 0x00],
                crl_shard: Some(0),
                once: Some(IssueOnce {
                    key: c.job.into(),
                    role: role.into(),
                }),
            });
        }
    }
    let (claimed, recorded) = store
        .claim_jobs_recording(&claims, "owner", 60, &intents)
        .await
        .unwrap();
    assert_eq!(claimed.len(), cards.len());
    assert_eq!(recorded.len(), intents.len());
    let kept: Vec<&Intent> = intents
        .iter()
        .zip(&recorded)
        .filter(|(_, r)| **r)
        .map(|(i, _)| i)
        .collect();
    let issued: Vec<(String, Vec<u8>, AuditEvent)> = kept
        .iter()
        .map(|i| {
            (
                i.serial.clone(),
                vec![0x30, 0x03, 0x02, 0x01, 0x01],
                AuditEvent {
                    actor: "test".into(),
                    action: "certificate.issue".into(),
                    object: i.serial.clone(),
                    details: serde_json::json!({}),
                },
            )
        })
        .collect();
    let mut signed: HashMap<&str, usize> = HashMap::new();
    for i in &kept {
        *signed
            .entry(i.once.as_ref().unwrap().key.as_str())
            .or_default() += 1;
    }
    let finishing: Vec<FinishedJob> = cards
        .iter()
        .filter(|c| signed.get(c.job) == Some(&ROLES.len()))
        .map(|c| FinishedJob {
            job: c.job.into(),
            pinfl: c.pinfl.into(),
            document: c.document.into(),
            district: "1726269".into(),
            certificates: ROLES.len() as i64,
            latency_us: 1000,
        })
        .collect();
    let revoked = store
        .complete_issuance_finishing(&issued, &finishing, Supersede::Revoke, "test")
        .await
        .unwrap();
    let mut by_job: HashMap<String, Vec<String>> = HashMap::new();
    for (j, mut r) in finishing.iter().zip(revoked) {
        r.sort();
        by_job.entry(j.job.clone()).or_insert(r);
    }
    let mut recorded_by_card = Vec::new();
    for (k, _) in cards.iter().enumerate() {
        recorded_by_card.push(
            intents[k * 2..k * 2 + 2]
                .iter()
                .zip(&recorded[k * 2..k * 2 + 2])
                .filter(|(_, r)| **r)
                .map(|(i, _)| i.serial.clone())
                .collect(),
        );
    }
    Outcome {
        claims: claimed,
        superseded: cards
            .iter()
            .map(|c| by_job.get(c.job).cloned().unwrap_or_default())
            .collect(),
        recorded: recorded_by_card,
    }
}

async fn scalar(store: &Store, sql: &str) -> i64 {
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(store.pool())
        .await
        .unwrap();
    sqlx::Row::try_get::<i64, _>(&row, 0).unwrap()
}

async fn card_of(store: &Store, pinfl: &str) -> String {
    let row = sqlx::query("SELECT job FROM person_cards WHERE pinfl = $1")
        .bind(pinfl)
        .fetch_one(store.pool())
        .await
        .unwrap();
    sqlx::Row::try_get(&row, "job").unwrap()
}

fn odd_groups(db: Db) {
    let env = Env::new(db, Keys::Software);
    let url = match db {
        Db::Sqlite => format!("{}?mode=rwc", env.db_url),
        Db::Postgres => env.db_url.clone(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::connect(&url).await.unwrap();
        let mut serial = 0;
        let (p, q) = ("30101850000017", "41505900000012");

        // A person's first card, someone else's, the first card again (a
        // duplicate request), and the person's second card.
        let one = group(
            &store,
            &[
                card("j1", p, "AA0000001"),
                card("j2", q, "AA0000002"),
                card("j1", p, "AA0000001"),
                card("j3", p, "AA0000003"),
            ],
            &mut serial,
        )
        .await;
        assert!(matches!(one.claims[0], Claim::New));
        assert!(matches!(one.claims[1], Claim::New));
        match &one.claims[2] {
            Claim::Existing(row) => {
                assert_eq!(row.job, "j1");
                assert_eq!(row.state, "pending", "read inside the group's claim");
            }
            Claim::New => panic!("a job listed twice was claimed twice"),
        }
        assert!(matches!(one.claims[3], Claim::New));
        assert_eq!(one.recorded[0].len(), 2);
        assert_eq!(one.recorded[1].len(), 2);
        assert_eq!(one.recorded[2].len(), 0, "the duplicate records nothing");
        assert_eq!(one.recorded[3].len(), 2);
        let mut j1 = one.recorded[0].clone();
        j1.sort();
        assert_eq!(
            one.superseded[3], j1,
            "the later card supersedes the earlier"
        );
        assert!(one.superseded[0].is_empty() && one.superseded[1].is_empty());
        assert_eq!(card_of(&store, p).await, "j3");
        assert_eq!(card_of(&store, q).await, "j2");
        assert_eq!(
            scalar(&store, "SELECT COUNT(*) FROM card_outcomes").await,
            3,
            "each finished job counted once"
        );
        assert_eq!(
            scalar(
                &store,
                "SELECT COUNT(*) FROM card_jobs WHERE state = 'done' AND finished_at IS NOT NULL"
            )
            .await,
            3
        );
        assert_eq!(
            scalar(
                &store,
                "SELECT COUNT(*) FROM certificates WHERE status = 'issued'"
            )
            .await,
            6
        );
        assert_eq!(
            scalar(&store, "SELECT COUNT(*) FROM pending_certificates").await,
            0
        );
        assert_eq!(
            scalar(
                &store,
                "SELECT COUNT(*) FROM certificates WHERE revocation = 'revoked' \
                 AND revocation_reason = 4 AND job = 'j1'"
            )
            .await,
            2
        );

        // Later: a job already done comes back as it is, and the person's
        // third card supersedes the second, which the first group made theirs.
        let two = group(
            &store,
            &[card("j2", q, "AA0000002"), card("j4", p, "AA0000004")],
            &mut serial,
        )
        .await;
        match &two.claims[0] {
            Claim::Existing(row) => assert_eq!(row.state, "done"),
            Claim::New => panic!("a finished job was claimed again"),
        }
        assert!(two.recorded[0].is_empty());
        let mut j3 = one.recorded[3].clone();
        j3.sort();
        assert_eq!(two.superseded[1], j3);
        assert_eq!(card_of(&store, p).await, "j4");
        assert_eq!(
            scalar(&store, "SELECT COUNT(*) FROM card_outcomes").await,
            4
        );
        // Six issued and two revoked entries, then two issued and two revoked.
        let report = store.verify_audit(&Default::default()).await.unwrap();
        assert_eq!(report.finding, None);
        assert_eq!(report.entries, 12);
    });
}

both_databases! {
    odd_groups_claim_finish_and_supersede_once => odd_groups;
}

//! What each event of a batch does, decided from what the store knows of its
//! people ([`Facts`]), in the batch's order: a later event of the batch sees
//! what an earlier one changed. Pure: no database, no clock but the facts'.

use std::collections::HashMap;

use muhr_pkix::reason;
use muhr_store::AuditEvent;
use muhr_store::notices::{NewNotice, NoticeKind};
use muhr_store::registry_events::{
    Facts, NameReview, PersonFacts, Plan, RecordedEvent, StateUpdate,
};
use serde_json::json;

use super::event::{Event, Kind};

/// RFC 5280 reason codes the events give.
const CESSATION_OF_OPERATION: i64 = 5;
const PRIVILEGE_WITHDRAWN: i64 = 9;
const _: () = assert!(reason::CERTIFICATE_HOLD == 6);

/// The answer for one event of a batch, in the batch's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The event's id.
    pub id: String,
    /// As recorded (for a retry: as first recorded).
    pub record: Option<RecordedEvent>,
    /// The event was recorded before: this is the first answer again.
    pub replayed: bool,
    /// The id is recorded with other content: nothing was applied.
    pub conflict: Option<String>,
}

/// Decides a batch. `grace` is how long (seconds) certificates naming an old
/// name stay valid after a name change.
pub fn decide(events: &[Event], facts: &Facts, grace: i64, actor: &str) -> (Plan, Vec<Answer>) {
    let mut people: HashMap<String, PersonFacts> = facts.people.clone();
    let mut recorded: HashMap<String, RecordedEvent> = facts.recorded.clone();
    let mut plan = Plan {
        actor: actor.to_string(),
        ..Default::default()
    };
    let mut answers = Vec::with_capacity(events.len());
    let mut touched: Vec<String> = Vec::new();
    let mut reviews: HashMap<String, NameReview> = HashMap::new();
    let mut quiet: Vec<(String, String, String)> = Vec::new();
    for ev in events {
        let hash = ev.body_hash();
        if let Some(r) = recorded.get(&ev.id) {
            answers.push(if r.body_hash == hash {
                Answer {
                    id: ev.id.clone(),
                    record: Some(r.clone()),
                    replayed: true,
                    conflict: None,
                }
            } else {
                Answer {
                    id: ev.id.clone(),
                    record: None,
                    replayed: false,
                    conflict: Some(format!(
                        "event {} is recorded with other content ({} of {}); an id is used once",
                        ev.id, r.kind, r.pinfl
                    )),
                }
            });
            continue;
        }
        let person = people.entry(ev.pinfl.clone()).or_default();
        let (outcome, serials, detail) =
            apply(ev, person, facts.now, grace, &mut plan, &mut reviews);
        notify(ev, &serials, facts.now, grace, outcome, &mut plan);
        if let Kind::Lost { document }
        | Kind::Stolen { document }
        | Kind::Invalidated { document, .. } = &ev.kind
        {
            // Known person or not, a card with this document is never
            // personalized from now on.
            plan.block.push((
                document.clone(),
                ev.pinfl.clone(),
                ev.kind.name().to_string(),
                ev.id.clone(),
            ));
        }
        if matches!(outcome, "applied" | "refused") || !serials.is_empty() {
            plan.audit.push(AuditEvent {
                actor: actor.to_string(),
                action: format!("registry.{}", ev.kind.name()),
                object: format!("registry-event/{}", ev.id),
                details: audit_details(ev, outcome, &serials, detail.as_deref()),
            });
        } else {
            quiet.push((ev.id.clone(), hex::encode(&hash), outcome.to_string()));
        }
        if !touched.contains(&ev.pinfl) {
            touched.push(ev.pinfl.clone());
        }
        let record = RecordedEvent {
            id: ev.id.clone(),
            body_hash: hash,
            kind: ev.kind.name().to_string(),
            pinfl: ev.pinfl.clone(),
            seq: ev.seq,
            outcome: outcome.to_string(),
            serials,
            detail,
        };
        recorded.insert(ev.id.clone(), record.clone());
        plan.events.push(record.clone());
        answers.push(Answer {
            id: ev.id.clone(),
            record: Some(record),
            replayed: false,
            conflict: None,
        });
    }
    if !quiet.is_empty() {
        // Events that changed nothing are recorded in one entry per batch:
        // their ids, content hashes and outcomes, digested, so a row removed
        // from registry_events later is still accounted for.
        let mut digest = sha2::Sha256::default();
        for (id, hash, outcome) in &quiet {
            sha2::Digest::update(&mut digest, format!("{id} {hash} {outcome}\n"));
        }
        let digest = hex::encode(sha2::Digest::finalize(digest));
        plan.audit.push(AuditEvent {
            actor: actor.to_string(),
            action: "registry.events.unchanged".into(),
            object: "registry-events".into(),
            details: json!({
                "count": quiet.len(),
                "first": quiet.first().map(|q| q.0.clone()),
                "last": quiet.last().map(|q| q.0.clone()),
                "digest": digest,
            }),
        });
    }
    // Only what changed is written: most events teach nothing lasting.
    for pinfl in touched {
        let p = &people[&pinfl];
        let before = facts.people.get(&pinfl).cloned().unwrap_or_default();
        if (before.names_seq, &before.deceased_on) != (p.names_seq, &p.deceased_on) {
            plan.state.push(StateUpdate {
                pinfl,
                names_seq: p.names_seq,
                deceased_on: p.deceased_on.clone(),
            });
        }
    }
    let mut reviews: Vec<NameReview> = reviews.into_values().collect();
    reviews.sort_by(|a, b| a.pinfl.cmp(&b.pinfl));
    plan.reviews = reviews;
    (plan, answers)
}

/// The person is told of each certificate an event revoked or suspended,
/// and of a name change (with the day the old name's certificates go).
fn notify(ev: &Event, serials: &[String], now: i64, grace: i64, outcome: &str, plan: &mut Plan) {
    let (kind, reason) = match &ev.kind {
        Kind::Deceased { .. } => (NoticeKind::Revoked, Some("cessationOfOperation")),
        Kind::Lost { .. } | Kind::Stolen { .. } => (NoticeKind::Suspended, Some("certificateHold")),
        Kind::Invalidated { .. } => (NoticeKind::Revoked, Some("privilegeWithdrawn")),
        Kind::DataChanged { .. } => {
            if outcome == "applied" {
                plan.notices.push(NewNotice {
                    key: format!("registry:{}", ev.id),
                    pinfl: ev.pinfl.clone(),
                    serial: None,
                    kind: NoticeKind::NameChanged,
                    reason: None,
                    on_date: utc_date(now.saturating_add(grace)),
                });
            }
            return;
        }
        Kind::PinflChanged { .. } => return,
    };
    for serial in serials {
        plan.notices.push(NewNotice {
            key: format!("registry:{}:{serial}", ev.id),
            pinfl: ev.pinfl.clone(),
            serial: Some(serial.clone()),
            kind,
            reason: reason.map(str::to_string),
            on_date: utc_date(now),
        });
    }
}

fn audit_details(
    ev: &Event,
    outcome: &str,
    serials: &[String],
    detail: Option<&str>,
) -> serde_json::Value {
    let mut d = json!({
        "pinfl": ev.pinfl,
        "seq": ev.seq,
        "outcome": outcome,
        "serials": serials,
    });
    match &ev.kind {
        Kind::Deceased { date } => d["date_of_death"] = json!(date),
        Kind::Lost { document } | Kind::Stolen { document } => d["document"] = json!(document),
        Kind::Invalidated { document, reason } => {
            d["document"] = json!(document);
            d["registry_reason"] = json!(reason);
        }
        // The new names are the registry's; the audit says a change came,
        // not what the person is now called.
        Kind::DataChanged { .. } => {}
        Kind::PinflChanged { new_pinfl } => d["new_pinfl"] = json!(new_pinfl),
    }
    if let Some(why) = detail {
        d["detail"] = json!(why);
    }
    d
}

/// One event against its person; updates `person` (as the batch's later
/// events must see it) and `plan`. Answers the outcome, the serials changed
/// and why, when not everything was applied.
fn apply(
    ev: &Event,
    person: &mut PersonFacts,
    now: i64,
    grace: i64,
    plan: &mut Plan,
    reviews: &mut HashMap<String, NameReview>,
) -> (&'static str, Vec<String>, Option<String>) {
    match &ev.kind {
        Kind::Deceased { date } => {
            let mut serials = Vec::new();
            for c in person.certificates.iter_mut() {
                if !c.expired && c.revocation != "revoked" {
                    c.revocation = "revoked".into();
                    plan.revoke.push((c.serial.clone(), CESSATION_OF_OPERATION));
                    serials.push(c.serial.clone());
                }
            }
            let known = person.known;
            let before = person.deceased_on.clone();
            if before.is_none() {
                person.deceased_on = Some(date.clone());
            }
            match (known, before) {
                (false, _) => (
                    "unknown_person",
                    serials,
                    Some("nobody with this PINFL is known here; the death is recorded so that nothing is ever issued to it".into()),
                ),
                (true, Some(d)) if serials.is_empty() => (
                    "no_change",
                    serials,
                    Some(format!("the death was already recorded ({d}); no valid certificate was left")),
                ),
                _ => ("applied", serials, None),
            }
        }
        Kind::Lost { document } | Kind::Stolen { document } => {
            document_event(person, document, "suspended", None, plan)
        }
        Kind::Invalidated { document, .. } => {
            document_event(person, document, "revoked", Some(PRIVILEGE_WITHDRAWN), plan)
        }
        Kind::DataChanged {
            surname,
            given_name,
            patronymic,
        } => {
            if !person.known {
                return (
                    "unknown_person",
                    Vec::new(),
                    Some("nobody with this PINFL is known here".into()),
                );
            }
            if ev.seq <= person.names_seq {
                return (
                    "stale",
                    Vec::new(),
                    Some(format!(
                        "a later name change (seq {}) is already applied",
                        person.names_seq
                    )),
                );
            }
            person.names_seq = ev.seq;
            let due = now.saturating_add(grace);
            reviews.insert(
                ev.pinfl.clone(),
                NameReview {
                    pinfl: ev.pinfl.clone(),
                    due_at: due,
                    event: ev.id.clone(),
                    surname: surname.clone(),
                    given_name: given_name.clone(),
                    patronymic: patronymic.clone(),
                },
            );
            (
                "applied",
                Vec::new(),
                Some(format!(
                    "certificates naming the person otherwise are revoked (affiliationChanged) from {}",
                    utc_date(due)
                )),
            )
        }
        Kind::PinflChanged { new_pinfl } => {
            tracing::error!(
                event = %ev.id,
                "registry reported a PINFL change ({} -> {new_pinfl}); a PINFL never changes: refused, investigate at the source",
                ev.pinfl
            );
            (
                "refused",
                Vec::new(),
                Some(format!(
                    "a PINFL never changes: the source reported {} -> {new_pinfl}; nothing was applied, investigate at the source",
                    ev.pinfl
                )),
            )
        }
    }
}

/// A lost, stolen or invalidated document: its certificates are suspended
/// (`reason` None) or revoked.
fn document_event(
    person: &mut PersonFacts,
    document: &str,
    to: &str,
    reason: Option<i64>,
    plan: &mut Plan,
) -> (&'static str, Vec<String>, Option<String>) {
    if !person.known {
        return (
            "unknown_person",
            Vec::new(),
            Some("nobody with this PINFL is known here".into()),
        );
    }
    let current = person.current_document.as_deref() == Some(document);
    let mut issued_with = 0;
    let mut serials = Vec::new();
    for c in person.certificates.iter_mut() {
        if c.document.as_deref() != Some(document) {
            continue;
        }
        issued_with += 1;
        let changes = match reason {
            None => c.revocation == "good",
            Some(_) => c.revocation != "revoked",
        };
        if c.expired || !changes {
            continue;
        }
        c.revocation = to.to_string();
        match reason {
            None => plan.suspend.push(c.serial.clone()),
            Some(r) => plan.revoke.push((c.serial.clone(), r)),
        }
        serials.push(c.serial.clone());
    }
    if !serials.is_empty() {
        let detail = (!current).then(|| {
            "not the person's current card; its certificates were still valid".to_string()
        });
        return ("applied", serials, detail);
    }
    if issued_with == 0 && !current {
        return (
            "unknown_document",
            serials,
            Some(format!(
                "no certificate was issued with document {document}"
            )),
        );
    }
    if !current {
        return (
            "replaced",
            serials,
            Some(format!(
                "document {document} was replaced by another card; its certificates are already revoked or expired"
            )),
        );
    }
    (
        "no_change",
        serials,
        Some(format!(
            "the certificates of document {document} are already {} or expired",
            if reason.is_none() {
                "suspended, revoked"
            } else {
                "revoked"
            }
        )),
    )
}

/// YYYY-MM-DD of a Unix time (seconds), in UTC.
pub(crate) fn utc_date(secs: i64) -> String {
    let (y, m, d) = muhr_policies::identity::civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

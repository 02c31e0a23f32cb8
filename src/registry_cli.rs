//! The population registry from the command line: the CSV extract, event
//! files, and the events that found nobody.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use muhr_ra::card::Date;
use muhr_ra::registry::apply::RegistryEvents;
use muhr_ra::registry::event::{Event, Kind};
use muhr_store::registry::RegistryPerson;

use crate::Fail;
use crate::app::App;

const REGISTRY_HEADER: [&str; 6] = [
    "pinfl",
    "surname",
    "given_name",
    "patronymic",
    "birth_date",
    "deceased_on",
];

/// Splits one CSV line (RFC 4180 quoting; no line breaks inside fields).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => out.push(std::mem::take(&mut cur)),
            (_, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    out.push(cur);
    Ok(out)
}

/// `muhr registry import FILE.csv`: every line is checked before any is
/// written; then all are loaded in one transaction (all or nothing).
pub async fn registry_import(app: &App, file: &Path) -> Result<(), Fail> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Fail::invalid(format!("{}: {e}", file.display())))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| Fail::invalid(format!("{}: empty file", file.display())))?;
    let header = csv_fields(header.trim_start_matches('\u{feff}')).map_err(Fail::invalid)?;
    if header.iter().map(|h| h.trim()).ne(REGISTRY_HEADER) {
        return Err(Fail::invalid(format!(
            "{}: line 1: the header must be {}",
            file.display(),
            REGISTRY_HEADER.join(",")
        )));
    }
    let rules = &app.config.identity;
    let mut people = Vec::new();
    for (i, line) in lines {
        let at = |m: String| Fail::invalid(format!("{}: line {}: {m}", file.display(), i + 1));
        let f = csv_fields(line).map_err(at)?;
        if f.len() != REGISTRY_HEADER.len() {
            return Err(at(format!(
                "{} fields, expected {}",
                f.len(),
                REGISTRY_HEADER.len()
            )));
        }
        let pinfl = rules
            .pinfl("pinfl", f[0].trim())
            .map_err(|e| at(e.to_string()))?;
        let birth = Date::parse("birth_date", f[4].trim()).map_err(|r| at(r.error.to_string()))?;
        if (birth.year, birth.month, birth.day) != pinfl.birth {
            return Err(at("birth_date: is not the date the PINFL encodes".into()));
        }
        let deceased = match f[5].trim() {
            "" => None,
            d => Some(
                Date::parse("deceased_on", d)
                    .map_err(|r| at(r.error.to_string()))?
                    .to_string(),
            ),
        };
        let name = |field: &str, v: &str| rules.name(field, v).map_err(|e| at(e.to_string()));
        people.push(RegistryPerson {
            pinfl: pinfl.digits,
            surname: name("surname", &f[1])?,
            given_name: name("given_name", &f[2])?,
            patronymic: match f[3].trim() {
                "" => None,
                p => Some(name("patronymic", p)?),
            },
            birth_date: birth.to_string(),
            deceased_on: deceased,
        });
    }
    let deceased = people.iter().filter(|p| p.deceased_on.is_some()).count();
    let event = muhr_store::AuditEvent {
        actor: crate::commands::cli_actor(),
        action: "registry.import".into(),
        object: file.display().to_string(),
        details: serde_json::json!({ "people": people.len(), "deceased": deceased }),
    };
    // Every death the extract lists becomes a `person.deceased` event,
    // applied as the feed's are: their certificates are revoked. The id is
    // the death's, so an extract imported again (or an import interrupted
    // between the two steps, or loaded by an earlier version) is answered as
    // before where it was applied and applied where it was not.
    let mut deaths = Vec::new();
    for p in &people {
        if let Some(d) = &p.deceased_on {
            deaths.push(Event {
                id: format!("import:deceased:{}:{d}", p.pinfl),
                seq: 1,
                pinfl: p.pinfl.clone(),
                kind: Kind::Deceased { date: d.clone() },
            });
        }
    }
    app.store
        .import_registry(&people, &event)
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    let events = crate::serve::registry_events(app);
    let mut revoked = 0;
    let mut new = 0;
    for batch in deaths.chunks(events.config().batch) {
        let applied = events
            .apply(batch, &crate::commands::cli_actor())
            .await
            .map_err(|e| Fail::internal(e.to_string()))?;
        revoked += applied.changed.len();
        new += applied
            .answers
            .iter()
            .filter(|a| !a.replayed && a.record.as_ref().is_some_and(|r| r.outcome == "applied"))
            .count();
    }
    println!(
        "imported {} people ({deceased} recorded as deceased)",
        people.len()
    );
    println!("{new} new deaths applied as person.deceased events: {revoked} certificates revoked");
    Ok(())
}

/// `muhr registry events FILE`: JSON lines, one event each. Every line is
/// checked first (a bad one stops the command before anything is applied);
/// then the file is read again and applied in batches. The file is
/// streamed, never loaded: a million events take the memory of one batch.
/// A rerun after an interruption applies what was not applied yet and
/// answers the rest as replayed.
pub async fn registry_events(app: &App, file: &Path) -> Result<(), Fail> {
    let open = || {
        std::fs::File::open(file)
            .map(BufReader::new)
            .map_err(|e| Fail::invalid(format!("{}: {e}", file.display())))
    };
    let events = crate::serve::registry_events(app);
    let rules = events.rules().clone();
    let at = |n: usize, m: String| Fail::invalid(format!("{}: line {n}: {m}", file.display()));
    let parse = |n: usize, line: &str| -> Result<Option<Event>, Fail> {
        if line.trim().is_empty() {
            return Ok(None);
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(n, format!("not JSON: {e}")))?;
        Event::parse(&rules, "event", &v)
            .map(Some)
            .map_err(|e| at(n, format!("{}: {}", e.field, e.rule)))
    };
    let mut total = 0usize;
    for (i, line) in open()?.lines().enumerate() {
        let line = line.map_err(|e| at(i + 1, e.to_string()))?;
        if parse(i + 1, &line)?.is_some() {
            total += 1;
        }
    }
    let actor = crate::commands::cli_actor();
    let mut progress = Progress::new(total);
    let batch_size = events.config().batch;
    // Lanes by person: each person's events go through one lane, in the
    // file's order; lanes apply their batches at the same time (PostgreSQL
    // works on both cores while the other lane's batch is on its way).
    let lanes = events.config().lanes_for(app.store.backend());
    let (results_tx, mut results) = tokio::sync::mpsc::unbounded_channel::<LaneResult>();
    let mut senders = Vec::with_capacity(lanes);
    let mut workers = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(usize, Event)>>(1);
        senders.push(tx);
        let (events, actor, results_tx) = (events.clone(), actor.clone(), results_tx.clone());
        workers.push(tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                let evs: Vec<Event> = batch.iter().map(|(_, e)| e.clone()).collect();
                let applied = apply_batch(&events, &evs, &actor).await;
                let lines: Vec<usize> = batch.iter().map(|(n, _)| *n).collect();
                let stop =
                    !matches!(&applied, Ok(a) if a.answers.iter().all(|a| a.conflict.is_none()));
                if results_tx.send((lines, applied)).is_err() || stop {
                    break;
                }
            }
        }));
    }
    drop(results_tx);
    let mut tally: std::collections::BTreeMap<String, usize> = Default::default();
    let mut replayed = 0usize;
    let mut changed = 0usize;
    let mut refused = Vec::new();
    let mut failure: Option<Fail> = None;
    let mut take = |r: LaneResult, progress: &mut Progress, failure: &mut Option<Fail>| {
        let (lines, applied) = r;
        let applied = match applied {
            Ok(a) => a,
            Err(f) => {
                failure.get_or_insert(f);
                return;
            }
        };
        for (n, a) in lines.iter().zip(&applied.answers) {
            if let Some(why) = &a.conflict {
                failure.get_or_insert(at(
                    *n,
                    format!("{why}; nothing of its batch was applied (other batches were)"),
                ));
            }
            if let Some(r) = &a.record {
                *tally.entry(r.outcome.clone()).or_default() += 1;
                if a.replayed {
                    replayed += 1;
                }
                if r.outcome == "refused" {
                    refused.push(format!(
                        "line {n}: event {}: {}",
                        r.id,
                        r.detail.as_deref().unwrap_or("refused")
                    ));
                }
            }
        }
        changed += applied.changed.len();
        progress.advance(lines.len());
    };
    let mut pending: Vec<Vec<(usize, Event)>> =
        (0..lanes).map(|_| Vec::with_capacity(batch_size)).collect();
    for (i, line) in open()?.lines().enumerate() {
        while let Ok(r) = results.try_recv() {
            take(r, &mut progress, &mut failure);
        }
        if failure.is_some() {
            break;
        }
        let line = line.map_err(|e| at(i + 1, e.to_string()))?;
        let Some(ev) = parse(i + 1, &line)? else {
            continue;
        };
        let lane = lane_of(&ev.pinfl, lanes);
        pending[lane].push((i + 1, ev));
        if pending[lane].len() >= batch_size {
            let batch = std::mem::replace(&mut pending[lane], Vec::with_capacity(batch_size));
            if senders[lane].send(batch).await.is_err() {
                // The lane stopped on an error, which its result says.
                break;
            }
        }
    }
    for (lane, batch) in pending.into_iter().enumerate() {
        if !batch.is_empty() && failure.is_none() {
            let _ = senders[lane].send(batch).await;
        }
    }
    drop(senders);
    while let Some(r) = results.recv().await {
        take(r, &mut progress, &mut failure);
    }
    for w in workers {
        let _ = w.await;
    }
    if let Some(f) = failure {
        progress.finish();
        return Err(f);
    }
    progress.finish();
    let counts: Vec<String> = tally.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "{total} events: {} ({replayed} of them applied before); {changed} certificates revoked or suspended",
        if counts.is_empty() {
            "none".to_string()
        } else {
            counts.join(", ")
        }
    );
    let unmatched = tally.get("unknown_person").copied().unwrap_or(0)
        + tally.get("unknown_document").copied().unwrap_or(0);
    if unmatched > 0 {
        println!("{unmatched} events found nobody: `muhr registry unmatched` lists them");
    }
    if !refused.is_empty() {
        return Err(Fail {
            code: 3,
            message: format!(
                "{} events refused (the rest were applied):\n{}",
                refused.len(),
                refused.join("\n")
            ),
        });
    }
    Ok(())
}

/// A lane's batch: its events' line numbers and what applying it answered.
type LaneResult = (Vec<usize>, Result<muhr_ra::registry::apply::Applied, Fail>);

/// The lane of a person: the same for all their events.
fn lane_of(pinfl: &str, lanes: usize) -> usize {
    let h = pinfl
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    (h % lanes.max(1) as u64) as usize
}

/// A batch, the database's unavailability worded for an operator.
async fn apply_batch(
    events: &RegistryEvents,
    batch: &[Event],
    actor: &str,
) -> Result<muhr_ra::registry::apply::Applied, Fail> {
    events.apply(batch, actor).await.map_err(|e| {
        if e.is_unavailable() {
            Fail::invalid(format!(
                "the database is unavailable ({e}); run the same command again: events already applied are not applied twice"
            ))
        } else {
            Fail::internal(e.to_string())
        }
    })
}

/// `muhr registry review`: the name reviews due now, and the certificates
/// issued while their holder's death was being recorded (the last hour).
pub async fn registry_review(app: &App) -> Result<(), Fail> {
    let events = crate::serve::registry_events(app);
    let swept = events
        .sweep_deaths(muhr_store::now_secs(), 3600)
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    if !swept.is_empty() {
        println!(
            "{} certificates of people recorded as deceased revoked: {}",
            swept.len(),
            swept.join(" ")
        );
    }
    let mut total = muhr_ra::registry::review::Reviewed::default();
    loop {
        let r = events
            .review_names(muhr_store::now_secs(), 1000)
            .await
            .map_err(|e| Fail::internal(e.to_string()))?;
        if r.reviews == 0 {
            break;
        }
        total.reviews += r.reviews;
        total.revoked.extend(r.revoked);
    }
    println!(
        "{} name reviews ended; {} certificates revoked (affiliationChanged){}",
        total.reviews,
        total.revoked.len(),
        if total.revoked.is_empty() {
            String::new()
        } else {
            format!(": {}", total.revoked.join(" "))
        }
    );
    Ok(())
}

/// `muhr registry unmatched`: events about nobody known here, or refused,
/// newest first.
pub async fn registry_unmatched(app: &App, limit: i64) -> Result<(), Fail> {
    let events = app
        .store
        .unmatched_registry_events(limit.clamp(1, 100_000))
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    for e in events {
        println!(
            "{}\t{}\t{}\t{}\t{}",
            e.id,
            e.kind,
            e.pinfl,
            e.outcome,
            e.detail.unwrap_or_default()
        );
    }
    Ok(())
}

/// A progress line on stderr, only when it is a terminal: events done of
/// the total, the rate, and the time left at that rate.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    shown: Option<Instant>,
    terminal: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            done: 0,
            started: Instant::now(),
            shown: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn advance(&mut self, n: usize) {
        self.done += n;
        if !self.terminal || self.shown.is_some_and(|s| s.elapsed().as_millis() < 200) {
            return;
        }
        self.shown = Some(Instant::now());
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let left = (self.total - self.done.min(self.total)) as f64 / rate.max(1e-9);
        let width = 30;
        let filled = (self.done * width)
            .checked_div(self.total)
            .unwrap_or(width)
            .min(width);
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r[{}{}] {}/{} events  {:.0}/s  {:.0} s left ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            self.done,
            self.total,
            rate,
            left
        );
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.terminal && self.shown.is_some() {
            let _ = writeln!(std::io::stderr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::csv_fields;

    #[test]
    fn quoted_fields() {
        assert_eq!(
            csv_fields(r#"a,"b,c","d""e",,"#).unwrap(),
            ["a", "b,c", "d\"e", "", ""]
        );
        assert!(csv_fields(r#"a,"b"#).is_err());
    }
}

//! `muhr-bench registry`: a file of registry events applied by the product's
//! own command (`muhr registry events`, called in-process), on a database of
//! card holders made for it. A document-invalidation campaign's shape: most
//! events find no certificate, one in N revokes or suspends a card's two.
//! With `--kill-half`, a second file is applied by a child process killed
//! (SIGKILL) half way, then run again: every event must be applied once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use muhr::Fail;
use muhr::app::App;
use muhr_policies::identity::with_check_digit;
use serde_json::json;

/// A PINFL per index and class (0: card holders, 1: people nobody knows),
/// births spread over 1940-1989, both sexes, 900 districts; `run` keeps the
/// people of runs against one database apart.
fn pinfl(i: usize, class: usize, run: usize) -> String {
    let day = i % 18_000;
    let (y, m, d) = muhr_policies::identity::civil_from_days(day as i64 - 10_957);
    let sex = if i.is_multiple_of(2) { '3' } else { '4' };
    let district = 100 + (i / 18_000) % 900;
    let seq = 1 + class * 400 + run * 40 + i / (18_000 * 900);
    with_check_digit(&format!(
        "{sex}{d:02}{m:02}{:02}{district:03}{seq:03}",
        y % 100
    ))
}

/// `events` events, one in `every` about a holder; the holders first
/// (returned, with their document numbers), then the file.
fn write_file(
    path: &Path,
    events: usize,
    every: usize,
    run: usize,
) -> Result<Vec<(String, String)>, Fail> {
    let io = |e: std::io::Error| Fail::internal(format!("{}: {e}", path.display()));
    let holders: Vec<(String, String)> = (0..events.div_ceil(every))
        .map(|h| (pinfl(h, 0, run), format!("HB{:01}{h:06}", run)))
        .collect();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for i in 0..events {
        let id = format!("bench-{run}-{i}");
        let ev = if i % every == 0 {
            let (p, doc) = &holders[i / every];
            match (i / every) % 3 {
                0 => {
                    json!({"id": id, "seq": i + 1, "kind": "document.lost", "pinfl": p, "document": doc})
                }
                1 => {
                    json!({"id": id, "seq": i + 1, "kind": "document.invalidated", "pinfl": p, "document": doc, "reason": "campaign"})
                }
                _ => {
                    json!({"id": id, "seq": i + 1, "kind": "person.deceased", "pinfl": p, "date": "2026-11-30"})
                }
            }
        } else {
            json!({"id": id, "seq": i + 1, "kind": "document.invalidated", "pinfl": pinfl(i, 1, run),
                   "document": format!("FA{i:07}"), "reason": "campaign"})
        };
        writeln!(out, "{ev}").map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(holders)
}

/// Resident memory of this process, in KiB, from /proc.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn recorded(app: &App) -> Result<i64, Fail> {
    Ok(app
        .store
        .registry_event_counts()
        .await
        .map_err(|e| Fail::internal(e.to_string()))?
        .iter()
        .map(|(_, n)| n)
        .sum())
}

/// The benchmark.
pub async fn run(
    app: &App,
    events: usize,
    every: usize,
    kill_half: bool,
    json_out: bool,
) -> Result<(), Fail> {
    let every = every.max(1);
    let ca = app.ca().await?;
    let dir = app.data_dir.join("bench-registry");
    std::fs::create_dir_all(&dir).map_err(|e| Fail::internal(e.to_string()))?;
    let before = recorded(app).await?;
    let run = (before as usize / events.max(1)) % 10;
    let file = dir.join(format!("events-{run}.jsonl"));
    let holders = write_file(&file, events, every, run)?;
    let setup = Instant::now();
    let not_after = muhr_store::now_secs() + 365 * 86_400;
    let serials = app
        .store
        .insert_synthetic_holders(&ca.issuing.name, &holders, not_after)
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    app.store
        .analyze_for_benchmark()
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    eprintln!(
        "{} card holders with {} certificates made in {:.1} s; applying {events} events from {}",
        holders.len(),
        serials.len(),
        setup.elapsed().as_secs_f64(),
        file.display()
    );
    let changes_before = app
        .store
        .last_status_change()
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;

    // Memory while the file is applied, sampled every 50 ms.
    let rss_start = rss_kib();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_start));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    muhr::registry_cli::registry_events(app, &file).await?;
    let seconds = started.elapsed().as_secs_f64();
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);

    let applied = recorded(app).await? - before;
    let changes = app
        .store
        .last_status_change()
        .await
        .map_err(|e| Fail::internal(e.to_string()))?
        - changes_before;
    if applied != events as i64 || changes != serials.len() as i64 {
        return Err(Fail::internal(format!(
            "{applied} events recorded of {events}, {changes} status changes of {} certificates",
            serials.len()
        )));
    }
    let mut kill = serde_json::Value::Null;
    if kill_half {
        kill = kill_and_rerun(app, events, every, (run + 1) % 10, &ca.issuing.name).await?;
    }
    let report = json!({
        "backend": app.store.backend().name(),
        "events": events,
        "certificates_changed": changes,
        "seconds": seconds,
        "events_per_second": events as f64 / seconds,
        "rss_kib_start": rss_start,
        "rss_kib_peak": peak,
        "kill_half": kill,
    });
    if json_out {
        println!("{report}");
    } else {
        println!(
            "{events} registry events in {seconds:.1} s: {:.0} events/s, {changes} certificates revoked or suspended; memory {} -> peak {} MiB{}",
            events as f64 / seconds,
            rss_start / 1024,
            peak / 1024,
            if kill_half {
                format!("; killed half way and rerun: {kill}")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// A second file, applied by `muhr-bench registry-apply` in a child process
/// that is killed (SIGKILL) once half its events are recorded, then run
/// again to the end; then checked: every event recorded once, every
/// certificate changed once.
async fn kill_and_rerun(
    app: &App,
    events: usize,
    every: usize,
    run: usize,
    issuer: &str,
) -> Result<serde_json::Value, Fail> {
    let file = app
        .data_dir
        .join("bench-registry")
        .join(format!("events-{run}.jsonl"));
    let holders = write_file(&file, events, every, run)?;
    let serials = app
        .store
        .insert_synthetic_holders(issuer, &holders, muhr_store::now_secs() + 365 * 86_400)
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    app.store
        .analyze_for_benchmark()
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    let before = recorded(app).await?;
    let changes_before = app
        .store
        .last_status_change()
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    let child = || -> Result<std::process::Child, Fail> {
        let mut c = std::process::Command::new(
            std::env::current_exe().map_err(|e| Fail::internal(e.to_string()))?,
        );
        if let Some(config) = config_arg() {
            c.arg("--config").arg(config);
        }
        c.arg("--data")
            .arg(&app.data_dir)
            .arg("registry-apply")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| Fail::internal(e.to_string()))
    };
    let mut first = child()?;
    let half = before + events as i64 / 2;
    loop {
        if recorded(app).await? >= half {
            break;
        }
        if first
            .try_wait()
            .map_err(|e| Fail::internal(e.to_string()))?
            .is_some()
        {
            return Err(Fail::internal("the child finished before half way"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().map_err(|e| Fail::internal(e.to_string()))?;
    let _ = first.wait();
    let at_kill = recorded(app).await? - before;
    let rerun = Instant::now();
    let status = child()?.wait().map_err(|e| Fail::internal(e.to_string()))?;
    let rerun_seconds = rerun.elapsed().as_secs_f64();
    if !status.success() {
        return Err(Fail::internal(format!("the rerun failed: {status}")));
    }
    let applied = recorded(app).await? - before;
    let changes = app
        .store
        .last_status_change()
        .await
        .map_err(|e| Fail::internal(e.to_string()))?
        - changes_before;
    let twice = app
        .store
        .serials_changed_more_than_once(&serials)
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    if applied != events as i64 || changes != serials.len() as i64 || twice != 0 {
        return Err(Fail::internal(format!(
            "after the kill and the rerun: {applied} events recorded of {events}, {changes} status changes of {}, {twice} certificates changed twice",
            serials.len()
        )));
    }
    Ok(json!({
        "recorded_at_kill": at_kill,
        "rerun_seconds": rerun_seconds,
        "events_recorded": applied,
        "certificates_changed": changes,
        "changed_twice": twice,
    }))
}

/// `--config FILE` of this run, for the child.
fn config_arg() -> Option<PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("MUHR_CONFIG").map(PathBuf::from))
}

//! `muhr-bench issue`: certificates per second through the real issuance path
//! (intent commit, lint, key store signature, verification, final commit).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use clap::Subcommand;
use der::Decode;
use spki::SubjectPublicKeyInfoOwned;

use muhr::Fail;
use muhr::app::App;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Issue N certificates with C concurrent clients.
    Issue {
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Certificates per issue_many call (one commit per group).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value = "individual-sign")]
        profile: String,
        /// Print each serial as soon as its certificate is committed.
        #[arg(long)]
        print_serials: bool,
        #[arg(long)]
        json: bool,
    },
    /// Cards through the real RA API over mutual TLS (in this process), with
    /// C keep-alive connections; each request carries one card (or B as a batch).
    Personalization {
        #[arg(long, default_value_t = 10_000)]
        cards: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long)]
        json: bool,
    },
    /// Verified logins per second through the real HTTP API (server in this
    /// process): challenge, CMS signature over it, login, assertion.
    Login {
        #[arg(long, default_value_t = 20_000)]
        logins: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Citizens (certificates) the logins rotate over.
        #[arg(long, default_value_t = 100)]
        people: usize,
        #[arg(long)]
        json: bool,
    },
    /// Insert N synthetic certificates of the issuing CA (status only, no
    /// certificate body), one in R revoked, for OCSP and CRL benchmarks at
    /// scale; writes their serials (hex, one per line) to FILE.
    Populate {
        #[arg(long, default_value_t = 1_000_000)]
        certificates: usize,
        #[arg(long, default_value_t = 10)]
        revoked_every: usize,
        #[arg(long)]
        serials_out: std::path::PathBuf,
    },
    /// Generate and sign the complete CRLs (whole and shards, `crl.shards`)
    /// and deltas of N revoked certificates (inserted first as synthetic rows
    /// of the issuing CA, once per data directory).
    Crl {
        #[arg(long, default_value_t = 1_000_000)]
        entries: usize,
        #[arg(long)]
        json: bool,
    },
    /// Serve this benchmark installation (health, CRLs, OCSP, the RA) for
    /// load tools such as wrk; `muhr serve` refuses a benchmark database.
    Serve {
        #[arg(long, default_value = "127.0.0.1:18100")]
        listen: String,
        #[arg(long, default_value = "127.0.0.1:18443")]
        listen_mtls: String,
    },
    /// Time-stamp tokens per second over HTTP (`POST /tsa`, measured by
    /// wrk) next to live OCSP responses with a nonce (`POST /ocsp`) and
    /// nginx serving a static file of a token reply's size, back to back
    /// in one run, on `muhr serve`'s listener with the TSA's clock vouched
    /// for by chronyd on loopback. Every reply is checked; any that is not
    /// a granted token fails the run.
    Tsa {
        /// Seconds each measurement lasts.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds of TSA and OCSP requests before the first measurement
        /// (checked, not reported).
        #[arg(long, default_value_t = 1)]
        warmup: u64,
        /// wrk's keep-alive connections.
        #[arg(long, default_value_t = 64)]
        connections: u32,
        /// wrk's threads.
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// TSA, OCSP and nginx measured this many times, alternating.
        #[arg(long, default_value_t = 1)]
        rounds: u32,
        /// The key store of the benchmark's own installation: software
        /// keys (default), or a SoftHSM2 token made for it. Not with
        /// --config, whose key store is used.
        #[arg(long, value_enum)]
        keys: Option<crate::tsa::KeyChoice>,
        /// Then time a token's parts in this process (parsing, signing,
        /// DER, the token log by group size, `Tsa::respond` without HTTP).
        #[arg(long)]
        breakdown: bool,
        /// The database of the benchmark's own installation (default:
        /// SQLite in its data directory), e.g. postgres://HOST/DB of an
        /// empty database or one muhr-bench made. Not with --config.
        #[arg(long)]
        database: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Registry events per second from a file (`muhr registry events`, in
    /// this process) on card holders made for it: one event in
    /// `--changing-every` revokes or suspends two certificates, the rest
    /// find none. `--kill-half` then applies a second file in a child
    /// killed half way and run again, and checks every event applied once.
    Registry {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        #[arg(long, default_value_t = 10)]
        changing_every: usize,
        #[arg(long)]
        kill_half: bool,
        #[arg(long)]
        json: bool,
    },
    /// The child of `registry --kill-half`: applies FILE.
    #[command(hide = true)]
    RegistryApply { file: std::path::PathBuf },
    /// Signatures per second from the issuing CA's key through the configured
    /// key store (the HSM's own speed, nothing else), from T threads.
    Sign {
        #[arg(long, default_value_t = 20_000)]
        signatures: usize,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
}

async fn bench_sign(app: &App, signatures: usize, threads: usize, json: bool) -> Result<(), Fail> {
    let ca = app.ca().await?;
    let signer = ca
        .issuing
        .signer
        .clone()
        .ok_or_else(|| Fail::internal("the issuing CA's key is not loaded"))?;
    let threads = threads.clamp(1, 256);
    // About a certificate's to-be-signed bytes.
    let message = vec![0x5a_u8; 600];
    let started = Instant::now();
    let per_thread = signatures.div_ceil(threads);
    let results: Vec<Result<usize, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let signer = signer.clone();
                let message = &message;
                s.spawn(move || {
                    for _ in 0..per_thread {
                        signer.sign(message).map_err(|e| e.to_string())?;
                    }
                    Ok(per_thread)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a signing thread panicked".into()))
            })
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut done = 0;
    for r in results {
        done += r.map_err(Fail::internal)?;
    }
    let rate = done as f64 / seconds;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "signatures": done, "threads": threads, "seconds": seconds,
                "signatures_per_s": rate.round(), "key": signer.label(),
                "key_spec": signer.spec().to_string(), "key_store": app.keys.describe(),
            })
        );
    } else {
        println!(
            "{done} signatures by {} ({}) from {threads} threads in {seconds:.2} s: {rate:.0}/s ({})",
            signer.label(),
            signer.spec(),
            app.keys.describe()
        );
    }
    Ok(())
}

/// Peak resident memory of this process (Linux), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

async fn populate(
    app: &App,
    n: usize,
    revoked_every: usize,
    out: &std::path::Path,
) -> Result<(), Fail> {
    let ca = app.ca().await?;
    let started = Instant::now();
    let serials = ca
        .store()
        .insert_synthetic(
            muhr_ca::ISSUING,
            n,
            muhr_store::now_secs() + 365 * 86400,
            revoked_every,
            |serial| muhr_ca::crl::shard::of(serial, app.config.crl.shards).map(i64::from),
        )
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    let mut text = serials.join("\n");
    text.push('\n');
    std::fs::write(out, text).map_err(|e| Fail::invalid(format!("{}: {e}", out.display())))?;
    eprintln!(
        "inserted {n} certificates (one in {revoked_every} revoked) in {:.1} s; serials in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

async fn bench_crl(app: &App, entries: usize, json: bool) -> Result<(), Fail> {
    let ca = app.ca().await?;
    let store = ca.store();
    let now = muhr_store::now_secs();
    let existing = store
        .count_not_good(muhr_ca::ISSUING)
        .await
        .map_err(|e| Fail::internal(e.to_string()))? as usize;
    if existing < entries {
        let started = Instant::now();
        store
            .insert_synthetic(
                muhr_ca::ISSUING,
                entries - existing,
                now + 365 * 86400,
                1,
                |serial| muhr_ca::crl::shard::of(serial, app.config.crl.shards).map(i64::from),
            )
            .await
            .map_err(|e| Fail::internal(e.to_string()))?;
        eprintln!(
            "inserted {} revoked certificates in {:.1} s",
            entries - existing,
            started.elapsed().as_secs_f64()
        );
    }
    let rss_before = peak_rss_mib();
    let started = Instant::now();
    let validity = Duration::from_secs(app.config.crl.validity_hours * 3600);
    let crls = muhr_ca::crl::generate(store, &ca.issuing, validity).await?;
    let seconds = started.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    let whole = crls
        .iter()
        .find(|c| c.shard.is_none())
        .ok_or_else(|| Fail::internal("no whole CRL was made"))?;
    let shard_bytes: Vec<usize> = crls
        .iter()
        .filter(|c| c.shard.is_some())
        .map(|c| c.der.len())
        .collect();
    let shard_entries: Vec<i64> = crls
        .iter()
        .filter(|c| c.shard.is_some())
        .map(|c| c.entries)
        .collect();
    let (min, max) = (
        shard_bytes.iter().min().copied().unwrap_or(0),
        shard_bytes.iter().max().copied().unwrap_or(0),
    );
    let mean = shard_bytes.iter().sum::<usize>() / shard_bytes.len().max(1);
    let started = Instant::now();
    let delta_validity = Duration::from_secs(app.config.crl.delta_validity_minutes * 60);
    let deltas = muhr_ca::crl::delta::generate(store, &ca.issuing, delta_validity).await?;
    let delta_seconds = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "entries": whole.entries, "seconds": seconds, "bytes": whole.der.len(),
                "shards": shard_bytes.len(), "shard_bytes_min": min, "shard_bytes_max": max,
                "shard_bytes_mean": mean, "shard_entries_min": shard_entries.iter().min(),
                "shard_entries_max": shard_entries.iter().max(),
                "deltas": deltas.len(), "delta_seconds": delta_seconds,
                "peak_rss_mib": peak, "rss_before_mib": rss_before,
                "database": app.store.backend().name(), "key_store": app.keys.describe(),
            })
        );
    } else {
        println!(
            "whole CRL with {} entries, {} bytes, and {} shard CRLs ({min}-{max} bytes, mean {mean}) \
             made in {seconds:.2} s, peak RSS {peak:.0} MiB; {} delta CRLs in {delta_seconds:.2} s ({}, {})",
            whole.entries,
            whole.der.len(),
            shard_bytes.len(),
            deltas.len(),
            app.store.backend().name(),
            app.keys.describe()
        );
    }
    Ok(())
}

fn person(i: usize) -> BTreeMap<String, String> {
    let first13 = format!(
        "3{:02}{:02}85{:03}{:03}",
        1 + i % 28,
        1 + (i / 28) % 12,
        100 + (i % 800),
        1 + (i % 999)
    );
    BTreeMap::from([
        (
            "pinfl".to_string(),
            muhr_policies::identity::with_check_digit(&first13),
        ),
        ("surname".to_string(), "BENCHMARKOV".to_string()),
        ("given_name".to_string(), "TEST".to_string()),
        ("patronymic".to_string(), "LOADOVICH".to_string()),
    ])
}

fn fresh_key(rng: &SystemRandom) -> Result<SubjectPublicKeyInfoOwned, Fail> {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, rng)
        .map_err(|e| Fail::internal(e.to_string()))?;
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
        .map_err(|e| Fail::internal(e.to_string()))?;
    let der = kp
        .public_key()
        .as_der()
        .map_err(|e| Fail::internal(e.to_string()))?;
    SubjectPublicKeyInfoOwned::from_der(der.as_ref()).map_err(|e| Fail::internal(e.to_string()))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

pub async fn run(app: &App, cmd: BenchCommand) -> Result<(), Fail> {
    let (count, concurrency, batch, profile, print_serials, json) = match cmd {
        BenchCommand::Crl { entries, json } => return bench_crl(app, entries, json).await,
        BenchCommand::Registry {
            events,
            changing_every,
            kill_half,
            json,
        } => return crate::registry::run(app, events, changing_every, kill_half, json).await,
        BenchCommand::RegistryApply { file } => {
            return muhr::registry_cli::registry_events(app, &file).await;
        }
        // Served by `main`, which hands them the installation.
        BenchCommand::Serve { .. } | BenchCommand::Tsa { .. } => return Ok(()),
        BenchCommand::Sign {
            signatures,
            threads,
            json,
        } => return bench_sign(app, signatures, threads, json).await,
        BenchCommand::Login {
            logins,
            concurrency,
            people,
            json,
        } => {
            return crate::login::run(
                app,
                crate::login::Options {
                    logins,
                    concurrency,
                    people,
                    json,
                },
            )
            .await;
        }
        BenchCommand::Personalization {
            cards,
            concurrency,
            batch,
            json,
        } => {
            return crate::personalization::run(
                app,
                crate::personalization::Options {
                    cards,
                    concurrency,
                    batch,
                    json,
                },
            )
            .await;
        }
        BenchCommand::Populate {
            certificates,
            revoked_every,
            serials_out,
        } => return populate(app, certificates, revoked_every, &serials_out).await,
        BenchCommand::Issue {
            count,
            concurrency,
            batch,
            profile,
            print_serials,
            json,
        } => (count, concurrency, batch, profile, print_serials, json),
    };
    let ca = Arc::new(app.ca().await?);
    let rng = SystemRandom::new();
    let mut requests = Vec::with_capacity(count);
    for i in 0..count {
        requests.push(muhr_ca::Request {
            alt_names: Vec::new(),
            profile: profile.clone(),
            fields: person(i),
            public_key: fresh_key(&rng)?,
            not_after_limit: None,
            actor: "bench".into(),
            once: None,
        });
    }
    let queue = Arc::new(std::sync::Mutex::new(requests));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let ca = ca.clone();
        let queue = queue.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = Vec::new();
            loop {
                let group: Vec<_> = {
                    let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                    let start = q.len() - q.len().min(batch.max(1));
                    q.drain(start..).collect()
                };
                if group.is_empty() {
                    break;
                }
                let t = Instant::now();
                for r in ca.issue_many(group).await {
                    match r {
                        Ok(issued) => {
                            latencies.push(t.elapsed());
                            if print_serials {
                                let mut out = std::io::stdout().lock();
                                let _ = writeln!(out, "{}", issued.serial);
                                let _ = out.flush();
                            }
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    for w in workers {
        let (l, f) = w.await.map_err(|e| Fail::internal(e.to_string()))?;
        latencies.extend(l);
        failures.extend(f);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    if let Some(f) = failures.first() {
        return Err(Fail::internal(format!(
            "{} of {count} issuances failed; first: {f}",
            failures.len()
        )));
    }
    let per_s = latencies.len() as f64 / seconds;
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let database = app.store.backend().name();
    let key_store = app.keys.describe();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "certificates": latencies.len(), "seconds": seconds, "certificates_per_s": per_s,
                "p50_ms": p50, "p99_ms": p99, "concurrency": concurrency, "batch": batch,
                "database": database, "key_store": key_store,
            })
        );
    } else if !print_serials {
        println!(
            "{} certificates in {seconds:.2} s: {per_s:.0} certificates/s, p50 {p50:.2} ms, p99 {p99:.2} ms ({database}, {key_store}, concurrency {concurrency}, batch {batch})",
            latencies.len()
        );
    }
    Ok(())
}

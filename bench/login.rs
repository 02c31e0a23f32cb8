//! `muhr bench login`: verified logins per second through the real HTTP API,
//! server in this process on loopback. Each login is what a relying party
//! and a citizen do: ask for a challenge, sign it (CMS, attached, P-256,
//! on the client side, in this process too), post the signature, get the
//! assertion. The client's signing shares the two cores with the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use der::Decode;
use muhr_ca::Request;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;

use crate::http::Conn;
use muhr::Fail;
use muhr::app::App;

pub struct Options {
    pub logins: usize,
    pub concurrency: usize,
    pub people: usize,
    pub json: bool,
}

struct Person {
    key: EcdsaKeyPair,
    cert: Certificate,
}

pub async fn run(app: &App, o: Options) -> Result<(), Fail> {
    if o.logins == 0 || o.concurrency == 0 || o.people == 0 {
        return Err(Fail::invalid(
            "--logins, --concurrency and --people must be at least 1",
        ));
    }
    let ca = Arc::new(app.ca().await?);
    let api = muhr::serve::relying_parties(app, &ca).await?;
    let started = muhr_store::now_secs();
    let cred = api
        .parties
        .add(&format!("bench-{started}"), "state", "bench")
        .await
        .map_err(Fail::internal)?;
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", cred.id, cred.secret))
    );
    // Citizens with individual-auth certificates, keys held here.
    let mut people = Vec::with_capacity(o.people);
    for i in 0..o.people {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
            .map_err(|_| Fail::internal("key generation"))?;
        let spki = key
            .public_key()
            .as_der()
            .map_err(|_| Fail::internal("public key"))?;
        let pinfl =
            muhr_policies::identity::with_check_digit(&format!("3150585{:06}", i % 999_999 + 1));
        let issued = ca
            .issue(Request {
                profile: "individual-auth".into(),
                fields: [
                    ("pinfl", pinfl.as_str()),
                    ("surname", "Bench"),
                    ("given_name", "Login"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                public_key: SubjectPublicKeyInfoOwned::from_der(spki.as_ref())
                    .map_err(|e| Fail::internal(e.to_string()))?,
                not_after_limit: None,
                alt_names: Vec::new(),
                actor: "bench".into(),
                once: None,
            })
            .await
            .map_err(|e| Fail::internal(e.to_string()))?;
        people.push(Person {
            key,
            cert: issued
                .certificate()
                .map_err(|e| Fail::internal(e.to_string()))?,
        });
    }
    let people = Arc::new(people);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Fail::internal(format!("bind: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| Fail::internal(e.to_string()))?
        .port();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, muhr_login::http::router(api)).await;
    });
    let base = format!("127.0.0.1:{port}");
    // The relying parties and citizens run on a runtime of their own (threads
    // named `bench-client`), so a profile tells their CPU from the server's.
    let (total, concurrency) = (o.logins, o.concurrency);
    let cpu0 = cpu::machine();
    let (seconds_tx, client) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("bench-client")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = seconds_tx.send(Err(format!("client runtime: {e}")));
                    return;
                }
            };
            let _ = seconds_tx.send(rt.block_on(drive(people, basic, base, total, concurrency)));
        })
        .map_err(|e| Fail::internal(format!("client thread: {e}")))?;
    let (seconds, mut latencies, client_cpu) = client
        .await
        .map_err(|_| Fail::internal("the bench client stopped"))?
        .map_err(Fail::internal)?;
    // CPU per login: the server's side (Muhr and its database: the whole
    // machine's busy time but the clients' threads) is what a deployment
    // pays, its relying parties and citizens being elsewhere; with all the
    // cores, that side alone would serve `server_capacity` logins per second.
    let server_cpu = cpu::machine()
        .saturating_sub(cpu0)
        .saturating_sub(client_cpu);
    let per_login_us = |ticks: u64| ticks as f64 * 1e6 / cpu::TICKS_PER_S / o.logins as f64;
    let (server_us, client_us) = (per_login_us(server_cpu), per_login_us(client_cpu));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let server_capacity = cores * 1e6 / server_us.max(1.0);
    server.abort();
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i].as_secs_f64() * 1000.0
    };
    let per_s = o.logins as f64 / seconds;
    let (database, key_store) = (app.store.backend().name(), app.keys.describe());
    if o.json {
        println!(
            "{}",
            serde_json::json!({
                "logins": o.logins, "seconds": seconds, "logins_per_s": per_s,
                "p50_ms": pct(0.5), "p99_ms": pct(0.99), "concurrency": o.concurrency,
                "people": o.people, "database": database, "key_store": key_store,
                "server_cpu_us_per_login": server_us, "client_cpu_us_per_login": client_us,
                "server_capacity_per_s": server_capacity,
            })
        );
    } else {
        println!(
            "{} verified logins in {seconds:.2} s: {per_s:.0} logins/s, p50 {:.2} ms, p99 {:.2} ms ({database}, {key_store}, concurrency {}, {} people)\n\
             CPU per login: server side {server_us:.0} µs (Muhr and its database), clients {client_us:.0} µs; the server side alone on {cores} cores: {server_capacity:.0} logins/s",
            o.logins,
            pct(0.5),
            pct(0.99),
            o.concurrency,
            o.people
        );
    }
    Ok(())
}

/// The clients: `concurrency` relying parties, each logging in citizens one
/// after another until `total` logins are done. Returns the seconds taken
/// and each login's latency.
async fn drive(
    people: Arc<Vec<Person>>,
    basic: String,
    base: String,
    total: usize,
    concurrency: usize,
) -> Result<(f64, Vec<Duration>, u64), String> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (people, next, basic, base) =
            (people.clone(), next.clone(), basic.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            // One keep-alive connection per relying-party worker.
            let tcp = tokio::net::TcpStream::connect(base.as_str())
                .await
                .map_err(|e| format!("connect: {e}"))?;
            tcp.set_nodelay(true).ok();
            let mut conn = Conn::new(tcp);
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    return Ok::<_, String>(latencies);
                }
                let t = Instant::now();
                login(&mut conn, &people[n % people.len()], &basic).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(total);
    for t in tasks {
        latencies.extend(t.await.map_err(|e| e.to_string())??);
    }
    let seconds = t0.elapsed().as_secs_f64();
    // Read while the client's threads are alive.
    Ok((seconds, latencies, cpu::threads_named("bench-client")))
}

/// One login as a relying party and a citizen make it.
async fn login(
    conn: &mut Conn<tokio::net::TcpStream>,
    who: &Person,
    basic: &str,
) -> Result<(), String> {
    let auth = [("Authorization", basic)];
    let (status, body) = conn
        .post("/api/v1/auth/challenges", &auth, b"")
        .await
        .map_err(|e| e.message)?;
    if status != 201 {
        return Err(format!("challenge refused: {status}"));
    }
    let c: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let challenge = c["challenge"].as_str().ok_or("no challenge")?;
    let sign = |m: &[u8]| {
        who.key
            .sign(&SystemRandom::new(), m)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| "sign".to_string())
    };
    let cms = muhr_validation::cms::sign(
        &muhr_validation::cms::Signer {
            certificate: &who.cert,
            chain: &[],
            algorithm: AlgorithmIdentifierOwned {
                oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
                parameters: None,
            },
            sign: &sign,
        },
        challenge.as_bytes(),
        true,
        std::time::SystemTime::now(),
    )?;
    let body = serde_json::to_vec(&serde_json::json!({ "signature": STANDARD.encode(cms) }))
        .map_err(|e| e.to_string())?;
    let (status, answer) = conn
        .post("/api/v1/auth/login", &auth, &body)
        .await
        .map_err(|e| e.message)?;
    if status != 200 {
        return Err(format!(
            "login refused: {status} {}",
            String::from_utf8_lossy(&answer)
        ));
    }
    Ok(())
}

/// CPU time from /proc, in clock ticks (Linux's USER_HZ, 100 per second on
/// every architecture's ABI); 0 where /proc cannot be read.
pub mod cpu {
    pub const TICKS_PER_S: f64 = 100.0;

    /// user + system ticks from a `stat` file (fields 14 and 15; the name
    /// in parentheses may hold spaces, so fields are counted after it).
    fn ticks(stat: &str) -> Option<u64> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    }

    /// CPU of this process (user + system, all its threads).
    pub fn own() -> u64 {
        std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| ticks(&s))
            .unwrap_or(0)
    }

    /// CPU of this process's children that have exited and been waited
    /// for (cutime + cstime, fields 16 and 17 of `/proc/self/stat`).
    pub fn children() -> u64 {
        std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                let rest = &s[s.rfind(')')? + 1..];
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.get(13)?.parse::<u64>().ok()? + f.get(14)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0)
    }

    /// Busy time of the whole machine, all cores (everything but idle and
    /// I/O wait): Muhr, its database, and whatever else runs.
    pub fn machine() -> u64 {
        let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
            return 0;
        };
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return 0;
        };
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq (guest time is already
        // inside user; steal is another machine's).
        [0, 1, 2, 5, 6].iter().filter_map(|&i| f.get(i)).sum()
    }

    /// The live threads called `name`.
    pub fn threads_named(name: &str) -> u64 {
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return 0;
        };
        dir.flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
            })
            .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
            .filter_map(|s| ticks(&s))
            .sum()
    }
}

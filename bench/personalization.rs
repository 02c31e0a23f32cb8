//! `muhr bench personalization`: cards per second through the real RA API —
//! HTTPS with a client certificate, JSON, validation, group commit, the key
//! store — with C concurrent keep-alive connections, each sending one card per
//! request (or `--batch` cards per batch request) as the line would.
//!
//! Card-chip keys are simulated by CSRs made beforehand (a pool of P-256 keys;
//! a card's two roles always get different keys). Each run uses new request ids
//! and new people, so nothing is a replay.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use crate::http::Conn;
use muhr::Fail;
use muhr::app::App;

/// Distinct chip keys in the pool.
const KEYS: usize = 64;

pub struct Options {
    pub cards: usize,
    pub concurrency: usize,
    pub batch: usize,
    pub json: bool,
}

/// A PKCS#10 request for a fresh P-256 key, as a card chip would make it.
fn chip_csr() -> Result<String, Fail> {
    let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
        .map_err(|_| Fail::internal("key generation"))?;
    muhr::citizen_cli::csr_pem(&kp)
}

/// Card `i` of run `run`: a distinct person (PINFL) in a Tashkent district.
/// People born on `birth` (one date per run) are new to the database, so a
/// rerun measures first cards, not card replacement.
fn card_json(
    run: &str,
    birth: muhr_ra::card::Date,
    i: usize,
    csrs: &[String],
    districts: &[String],
) -> serde_json::Value {
    let seq = i % 999 + 1;
    let district = (i / 999) % 999 + 1;
    let first13 = format!(
        "3{:02}{:02}{:02}{district:03}{seq:03}",
        birth.day,
        birth.month,
        birth.year % 100
    );
    serde_json::json!({
        "request_id": format!("{run}-{i}"),
        "person": {
            "pinfl": muhr_policies::identity::with_check_digit(&first13),
            "surname": "Toshmatov",
            "given_name": "Sardor",
            "patronymic": "Alisher o'g'li",
            "birth_date": birth.to_string(),
        },
        "document": {
            "number": format!("AZ{:07}", i % 10_000_000),
            "issued_on": "2025-09-01",
            "expires_on": "2035-08-31",
            "issuing_office": districts[i % districts.len()],
        },
        "keys": {
            "auth": csrs[(2 * i) % KEYS],
            "sign": csrs[(2 * i + 1) % KEYS],
        }
    })
}

/// One keep-alive connection over mutual TLS.
async fn open(
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> Result<Conn<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>, Fail> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| Fail::internal(format!("connect: {e}")))?;
    tcp.set_nodelay(true).ok();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .map_err(|e| Fail::internal(format!("TLS: {e}")))?;
    Ok(Conn::new(tls))
}

pub async fn run(app: &App, o: Options) -> Result<(), Fail> {
    if o.cards == 0 || o.concurrency == 0 || o.batch == 0 {
        return Err(Fail::invalid(
            "--cards, --concurrency and --batch must be at least 1",
        ));
    }
    let rules = Arc::new(app.ra_rules()?);
    let districts: Vec<String> = rules
        .districts
        .codes()
        .filter(|c| rules.in_pilot(c))
        .map(str::to_string)
        .collect();
    if districts.is_empty() {
        return Err(Fail::invalid(
            "no district is in the pilot: nothing to benchmark",
        ));
    }
    let ca = Arc::new(app.ca().await?);
    let started = muhr_store::now_secs();
    let run = format!("bench{started}");
    // A birth date in 1970-1999 (first PINFL digit 3) that changes every second.
    let birth = muhr_ra::card::Date::from_system_time(
        std::time::UNIX_EPOCH + Duration::from_secs(86_400 * (started as u64 % 10_950)),
    );
    // The server, in this process, on the real mutual-TLS stack.
    let server_cred = muhr::mtls::server_credential(app, &ca).await?;
    let tls = muhr::mtls::server_config(&server_cred, &ca.issuing.der)?;
    let api = muhr::serve::ra_api(app, ca.clone(), rules.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Fail::internal(format!("bind: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| Fail::internal(e.to_string()))?
        .port();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = muhr::listener::Listener::on(
        listener,
        "mtls",
        muhr_ra::http::router(api),
        muhr::mtls::transport(tls),
        &app.config.server.limits,
        app.config.server.limits.max_connections_mtls,
    )?;
    let server = tokio::spawn(server.serve(
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
        Duration::from_secs(5),
    ));
    // The client: a registered personalization line.
    let (client, _) = muhr::mtls::issue_client(
        app,
        &ca,
        muhr_http::clients::Role::PersonalizationLine,
        &format!("{run}-line"),
    )
    .await?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.root.der.clone()))
        .map_err(|e| Fail::internal(e.to_string()))?;
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            client
                .chain
                .iter()
                .map(|c| CertificateDer::from(c.clone()))
                .collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client.key.to_vec())),
        )
        .map_err(|e| Fail::internal(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);

    let csrs: Vec<String> = (0..KEYS).map(|_| chip_csr()).collect::<Result<_, _>>()?;
    // Bodies are made before the clock starts: the line has them ready too.
    let requests: Vec<Vec<u8>> = (0..o.cards)
        .collect::<Vec<_>>()
        .chunks(o.batch)
        .map(|chunk| {
            let cards: Vec<serde_json::Value> = chunk
                .iter()
                .map(|i| card_json(&run, birth, *i, &csrs, &districts))
                .collect();
            if o.batch == 1 {
                serde_json::to_vec(&cards[0])
            } else {
                serde_json::to_vec(&serde_json::json!({ "cards": cards }))
            }
            .unwrap_or_default()
        })
        .collect();
    let path = if o.batch == 1 {
        "/api/v1/personalization/cards"
    } else {
        "/api/v1/personalization/batches"
    };
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..o.concurrency.min(requests.len()) {
        let (requests, next, config) = (requests.clone(), next.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = open(port, config).await?;
            let mut latencies = Vec::new();
            let mut failed = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = requests.get(i) else { break };
                let t = Instant::now();
                let (status, answer) = conn.post(path, &[], body).await?;
                latencies.push(t.elapsed());
                if status != 200 {
                    failed += 1;
                    if failed == 1 {
                        eprintln!(
                            "muhr bench: HTTP {status}: {}",
                            String::from_utf8_lossy(&answer)
                        );
                    }
                } else if path.ends_with("batches") {
                    let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
                    failed += v["failed"].as_u64().unwrap_or(0) as usize;
                }
            }
            Ok::<_, Fail>((latencies, failed))
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.map_err(|e| Fail::internal(e.to_string()))??;
        latencies.extend(l);
        failed += f;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = server.await;
    if failed > 0 {
        return Err(Fail::internal(format!("{failed} cards failed")));
    }
    latencies.sort();
    let pct = |p: f64| {
        let i = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies[i.clamp(1, latencies.len()) - 1].as_secs_f64() * 1000.0
    };
    let roles = rules.config.roles.len();
    let certificates = o.cards * roles;
    let (p50, p99) = (pct(50.0), pct(99.0));
    if o.json {
        println!(
            "{}",
            serde_json::json!({
                "cards": o.cards,
                "certificates": certificates,
                "seconds": (seconds * 1000.0).round() / 1000.0,
                "cards_per_s": (o.cards as f64 / seconds).round(),
                "certificates_per_s": (certificates as f64 / seconds).round(),
                "p50_ms": (p50 * 10.0).round() / 10.0,
                "p99_ms": (p99 * 10.0).round() / 10.0,
                "concurrency": o.concurrency,
                "batch": o.batch,
                "database": app.store.backend().name(),
                "key_store": app.keys.describe(),
            })
        );
    } else {
        println!(
            "{} cards ({certificates} certificates) in {seconds:.2} s: {:.0} cards/s, {:.0} certificates/s; \
             p50 {p50:.1} ms, p99 {p99:.1} ms per request ({} clients, {} card(s) per request; {}, {})",
            o.cards,
            o.cards as f64 / seconds,
            certificates as f64 / seconds,
            o.concurrency,
            o.batch,
            app.store.backend().name(),
            app.keys.describe()
        );
    }
    Ok(())
}

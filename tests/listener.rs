//! Both listeners against clients that hold connections: slow headers, a
//! trickled body, idle keep-alive, too many connections from one address, a
//! TLS handshake never finished. The service keeps answering everyone else,
//! and every held connection ends within its time limit.
//!
//! Loopback only: the attacking connections come from 127.0.1.0/24 (Linux
//! routes all of 127/8 to lo), so the per-address cap meets them and not the
//! test's own requests from 127.0.0.1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

mod common;
use common::*;

const LIMITS: &str = "\n[server.limits]\nheader_read_timeout_seconds = 3\nidle_timeout_seconds = 3\n\
    request_timeout_seconds = 3\nmax_connections = 12000\nmax_connections_mtls = 1000\n\
    max_connections_per_address = 250\n";

/// The soft open-file limit raised to the hard one: ten thousand client
/// sockets live in this process. A machine that cannot give them fails here,
/// loudly, rather than testing fewer.
fn raise_open_files(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= need,
        "this test needs {need} open files; the hard limit is {} (raise it: ulimit -Hn)",
        lim.rlim_cur
    );
}

/// A connection from `source` to the server's `port`. The local port is
/// chosen here, below the kernel's ephemeral range: ten thousand sockets
/// holding ephemeral ports would make other tests' servers, which bind a
/// free ephemeral port on every address, fail to start.
async fn connect_from(source: &str, port: u16) -> std::io::Result<TcpStream> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static BASE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let first: u32 = range.split_whitespace().next().unwrap().parse().unwrap();
        assert!(
            first > 13_000,
            "the ephemeral port range starts at {first}: too low for this test"
        );
        first - 12_500
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 12_000;
    let local = (base + n) as u16;
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(format!("{source}:{local}").parse::<SocketAddr>().unwrap())?;
    s.connect(([127, 0, 0, 1], port).into()).await
}

/// A whole HTTP/1.1 exchange on a fresh connection from 127.0.0.1, bounded in time.
async fn fetch(port: u16, path: &str) -> (u16, String) {
    let work = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, text)
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .unwrap_or_else(|_| panic!("GET {path} was not answered within 10 s"))
}

/// Reads until the server closes the connection (or resets it).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 512];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_slow_header_connections_do_not_stop_the_public_listener() {
    raise_open_files(12_000);
    let env = Env::with_extra(Db::Sqlite, Keys::Software, LIMITS);
    env.init();
    let (_server, port, _mtls) = start_ra(&env);

    // 10,000 connections from 40 addresses, each sending an unfinished header.
    let mut held = Vec::with_capacity(10_000);
    let started = Instant::now();
    for a in 1..=40u8 {
        let source = format!("127.0.1.{a}");
        let batch = (0..250).map(|_| {
            let source = source.clone();
            async move {
                let mut s = connect_from(&source, port).await.unwrap();
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .unwrap();
                s
            }
        });
        held.extend(futures_join(batch).await);
    }
    assert_eq!(held.len(), 10_000);
    let opened_in = started.elapsed();

    // Everyone else is still answered: health, the CRL, the CA certificate.
    for path in [
        "/healthz",
        "/crl/issuing.crl",
        "/ca/issuing.cer",
        "/healthz",
    ] {
        let (status, text) = fetch(port, path).await;
        assert_eq!(
            status, 200,
            "{path} while 10,000 slow clients hold connections: {text}"
        );
    }
    let (_, m) = fetch(port, "/metrics").await;
    let open = metric(&m, "muhr_connections_open{listener=\"public\"}");
    // Unless the header timeout already closed some (opening took long).
    if opened_in < Duration::from_secs(2) {
        assert!(open >= 10_000, "open connections: {open}");
    }

    // Past an address's cap, connections are refused at once, in JSON.
    let mut at_cap = Vec::new();
    for _ in 0..250 {
        at_cap.push(connect_from("127.0.3.1", port).await.unwrap());
    }
    let mut extra = connect_from("127.0.3.1", port).await.unwrap();
    let mut refusal = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), extra.read_to_end(&mut refusal))
        .await
        .expect("a refused connection is closed at once")
        .unwrap();
    let refusal = String::from_utf8_lossy(&refusal);
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    assert!(refusal.contains("retry-after: 1"), "{refusal}");
    assert!(
        refusal.contains(r#"{"error":{"field":"connection","rule":"too many open connections from this address"}}"#),
        "{refusal}"
    );
    drop(at_cap);

    // Every held connection ends within the header-read time (3 s) and a margin.
    let deadline = Instant::now() + Duration::from_secs(10);
    for s in held.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            closed_within(s, left).await,
            "a connection that never finished its headers was still open after 10 s"
        );
    }
    drop(held);
    let (_, m) = fetch(port, "/metrics").await;
    assert!(
        metric(
            &m,
            "muhr_connection_timeouts_total{listener=\"public\",kind=\"header\"}"
        ) >= 9_000
    );
    assert!(
        metric(
            &m,
            "muhr_connections_refused_total{listener=\"public\",reason=\"address_full\"}"
        ) >= 1
    );
    assert!(metric(&m, "muhr_connections_open{listener=\"public\"}") < 100);
}

/// Joins futures with at most their count in flight (no extra crate).
async fn futures_join<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_idle_connections_and_unfinished_tls_handshakes_are_closed_in_time() {
    let env = Env::with_extra(Db::Sqlite, Keys::Software, LIMITS);
    env.init();
    let (_server, port, mtls) = start_ra(&env);

    // A body promised and never sent: the request ends after request_timeout
    // with the JSON every refusal uses, and a Retry-After.
    let mut s = connect_from("127.0.2.1", port).await.unwrap();
    s.write_all(
        b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("the trickled request was answered within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 5"),
        "{answer}"
    );
    assert!(answer.contains(r#""field":"request""#), "{answer}");

    // An HTTP/1.1 keep-alive connection waiting for its next request is
    // closed after the header-read time (hyper's timer covers that wait).
    let mut s = connect_from("127.0.2.2", port).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let t = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(10)).await,
        "idle connection kept"
    );
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "closed before its time"
    );

    // An HTTP/2 connection (prior knowledge) idle after its request is
    // closed after the idle time.
    let tcp = connect_from("127.0.2.5", port).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let ended = tokio::spawn(async move {
        let _ = connection.await;
        Instant::now()
    });
    let request = axum::http::Request::get(format!("http://127.0.0.1:{port}/healthz"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let t = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("an idle HTTP/2 connection was kept")
        .unwrap();
    assert!(
        ended - t >= Duration::from_secs(2),
        "closed before its time"
    );
    drop(client);

    // One that sends only PINGs after its request makes no progress: it is
    // closed all the same.
    let tcp = connect_from("127.0.2.6", port).await.unwrap();
    let (mut client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let mut pinger = connection.ping_pong().expect("ping_pong");
    let ended = tokio::spawn(async move {
        let _ = connection.await;
        Instant::now()
    });
    let request = axum::http::Request::get(format!("http://127.0.0.1:{port}/healthz"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let pings = tokio::spawn(async move {
        let mut sent = 0u32;
        while pinger.ping(h2::Ping::opaque()).await.is_ok() {
            sent += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        sent
    });
    tokio::time::timeout(Duration::from_secs(15), ended)
        .await
        .expect("an HTTP/2 connection kept alive by PINGs alone was kept")
        .unwrap();
    assert!(pings.await.unwrap() >= 5, "the client hardly pinged");
    drop(client);

    // The mTLS listener: a TCP connection that never starts the handshake
    // is closed after the header-read time...
    let mut s = connect_from("127.0.2.3", mtls).await.unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(10)).await,
        "unfinished TLS handshake kept"
    );
    // ...and past the per-address cap, connections are closed at once.
    let mut held = Vec::new();
    for _ in 0..250 {
        held.push(connect_from("127.0.2.4", mtls).await.unwrap());
    }
    let mut over = connect_from("127.0.2.4", mtls).await.unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(1)).await,
        "connection over the cap kept"
    );
    drop(held);

    let (_, m) = fetch(port, "/metrics").await;
    assert!(
        metric(
            &m,
            "muhr_connection_timeouts_total{listener=\"public\",kind=\"request\"}"
        ) >= 1
    );
    assert!(
        metric(
            &m,
            "muhr_connection_timeouts_total{listener=\"public\",kind=\"idle\"}"
        ) >= 1
    );
    assert!(
        metric(
            &m,
            "muhr_connection_timeouts_total{listener=\"mtls\",kind=\"header\"}"
        ) >= 1
    );
    assert!(
        metric(
            &m,
            "muhr_connections_refused_total{listener=\"mtls\",reason=\"address_full\"}"
        ) >= 1
    );
}

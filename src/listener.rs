//! Both listeners' connection handling: the limits that keep one client from
//! holding the service for everyone.
//!
//! `axum::serve` has no header-read timeout and no connection cap: clients
//! that open connections and never finish their headers kept them forever,
//! and about 20,000 of them exhausted the open-file limit, after which
//! nobody got an answer. Here every connection is bounded:
//! - in count: a cap per listener and a cap per client address, refused at
//!   once beyond them (a JSON 503 on plain HTTP; a closed socket before TLS);
//! - in time: the TLS handshake and each request's headers must arrive within
//!   `header_read_timeout`, a connection with no request in progress and no
//!   bytes moving is closed after `idle_timeout`, and a request that has not
//!   been answered within `request_timeout` gets a JSON 503;
//! - over HTTP/2: concurrent streams and the header list size are capped.
//!
//! Counters for all of it are in `/metrics`.
//!
//! Longer than 600 lines on purpose: the accept loop, the per-connection
//! timers and the activity they watch share private state (`Conn`,
//! `Activity`, `Progress`); kept in one file, none of it is visible to the
//! rest of the binary.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::Fail;
use crate::config::Limits;

/// Counters of one listener, rendered into `/metrics`.
#[derive(Default)]
pub struct Stats {
    /// The listener's name (`public`, `mtls`): the `listener` label in `/metrics`.
    pub name: &'static str,
    open: AtomicU64,
    accepted: AtomicU64,
    refused_total: AtomicU64,
    refused_per_address: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    request_timeouts: AtomicU64,
    age_closed: AtomicU64,
    accept_errors: AtomicU64,
}

impl Stats {
    /// All counters at zero, for the listener called `name`.
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            ..Default::default()
        })
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Prometheus text for this listener.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let l = self.name;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "muhr_connections_open{{listener=\"{l}\"}} {}",
            g(&self.open)
        );
        let _ = writeln!(
            out,
            "muhr_connections_accepted_total{{listener=\"{l}\"}} {}",
            g(&self.accepted)
        );
        for (reason, v) in [
            ("listener_full", &self.refused_total),
            ("address_full", &self.refused_per_address),
        ] {
            let _ = writeln!(
                out,
                "muhr_connections_refused_total{{listener=\"{l}\",reason=\"{reason}\"}} {}",
                g(v)
            );
        }
        for (kind, v) in [
            ("header", &self.header_timeouts),
            ("idle", &self.idle_timeouts),
            ("request", &self.request_timeouts),
            ("age", &self.age_closed),
        ] {
            let _ = writeln!(
                out,
                "muhr_connection_timeouts_total{{listener=\"{l}\",kind=\"{kind}\"}} {}",
                g(v)
            );
        }
        let _ = writeln!(
            out,
            "muhr_accept_errors_total{{listener=\"{l}\"}} {}",
            g(&self.accept_errors)
        );
    }
}

/// The HELP/TYPE lines for the series every listener renders.
pub fn metrics_header(out: &mut String) {
    out.push_str(
        "# HELP muhr_connections_open Connections open now, by listener.\n\
         # TYPE muhr_connections_open gauge\n\
         # HELP muhr_connections_accepted_total Connections accepted, by listener.\n\
         # TYPE muhr_connections_accepted_total counter\n\
         # HELP muhr_connections_refused_total Connections refused at accept: the listener's cap or the client address's cap was reached.\n\
         # TYPE muhr_connections_refused_total counter\n\
         # HELP muhr_connection_timeouts_total Connections closed or requests ended by a time limit: headers (or the TLS handshake) too slow, idle, or a request not answered in time.\n\
         # TYPE muhr_connection_timeouts_total counter\n\
         # HELP muhr_accept_errors_total Errors accepting a connection (such as running out of file descriptors).\n\
         # TYPE muhr_accept_errors_total counter\n",
    );
}

/// How a listener's connections are turned into requests.
#[derive(Clone)]
pub enum Transport {
    /// Plain HTTP/1.1 and HTTP/2 (cleartext): the public listener.
    Plain,
    /// Mutual TLS; the client's leaf certificate reaches the router as
    /// [`muhr_http::clients::PeerCertificate`].
    Tls(tokio_rustls::TlsAcceptor),
}

/// A bound listener with its limits; [`Listener::serve`] runs it.
pub struct Listener {
    tcp: TcpListener,
    router: Router,
    transport: Transport,
    limits: Limits,
    max_connections: usize,
    /// This listener's counters; `muhr serve` hands them to `/metrics`.
    pub stats: Arc<Stats>,
}

impl Listener {
    /// Binds now, so that a taken port fails the start.
    pub fn bind(
        listen: &str,
        what: &'static str,
        router: Router,
        transport: Transport,
        limits: &Limits,
        max_connections: usize,
    ) -> Result<Self, Fail> {
        let std = std::net::TcpListener::bind(listen)
            .map_err(|e| Fail::invalid(format!("cannot listen on {listen} ({what}): {e}")))?;
        Self::on(std, what, router, transport, limits, max_connections)
    }

    /// A listener already bound (the benchmark binds port 0).
    pub fn on(
        std: std::net::TcpListener,
        what: &'static str,
        router: Router,
        transport: Transport,
        limits: &Limits,
        max_connections: usize,
    ) -> Result<Self, Fail> {
        std.set_nonblocking(true)
            .and_then(|_| TcpListener::from_std(std))
            .map(|tcp| Self {
                tcp,
                router,
                transport,
                limits: limits.clone(),
                max_connections,
                stats: Stats::new(what),
            })
            .map_err(|e| Fail::invalid(format!("listener ({what}): {e}")))
    }

    /// The address bound: with port 0, the port the system chose.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serves until `shutdown` resolves; then stops accepting, asks every
    /// connection to finish its requests, and waits up to `drain` for them.
    pub async fn serve(self, shutdown: impl Future<Output = ()>, drain: Duration) {
        let Self {
            tcp,
            router,
            transport,
            limits,
            max_connections,
            stats,
        } = self;
        let limits = Arc::new(limits);
        let permits = Arc::new(Semaphore::new(max_connections));
        let per_address = Arc::new(PerAddress::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let builder = builder(&limits);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut last_accept_warning: Option<Instant> = None;
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = tcp.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: the connection stays in the
                        // backlog; pausing lets open connections finish.
                        stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                        if last_accept_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!(listener = stats.name, error = %e, "accept failed");
                            last_accept_warning = Some(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                stats.refused_total.fetch_add(1, Ordering::Relaxed);
                refuse(
                    &stream,
                    &transport,
                    "the server has too many open connections",
                );
                continue;
            };
            // The public listener counts an IPv6 /64 as one client; the
            // mutual-TLS one serves a few machines, which may share a
            // data centre's /64, and counts addresses.
            let client = match transport {
                Transport::Plain => muhr_http::ratelimit::client_key(peer.ip()),
                Transport::Tls(_) => peer.ip(),
            };
            let Some(slot) =
                per_address.take(&per_address, client, limits.max_connections_per_address)
            else {
                stats.refused_per_address.fetch_add(1, Ordering::Relaxed);
                refuse(
                    &stream,
                    &transport,
                    "too many open connections from this address",
                );
                continue;
            };
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let conn = Conn {
                router: router.clone(),
                transport: transport.clone(),
                limits: limits.clone(),
                stats: stats.clone(),
                builder: builder.clone(),
                stop: stop_rx.clone(),
                peer,
            };
            tokio::spawn(conn.run(stream, permit, slot));
        }
        drop(tcp);
        let _ = stop_tx.send(true);
        // Every connection holds a permit until it ends.
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(drain, permits.acquire_many(all)).await;
    }
}

fn builder(limits: &Limits) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout())
        .max_buf_size(limits.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_pending_accept_reset_streams(Some(limits.http2_max_streams as usize));
    b
}

/// A refusal the client can read: on plain HTTP a 503 with the JSON error
/// every other refusal uses (written without waiting: a fresh socket's send
/// buffer is empty); before TLS there is nothing to say it in, so the socket
/// is closed.
fn refuse(stream: &TcpStream, transport: &Transport, why: &str) {
    if let Transport::Plain = transport {
        let body =
            serde_json::json!({ "error": { "field": "connection", "rule": why } }).to_string();
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let _ = stream.try_write(format!("{head}{body}").as_bytes());
    }
}

/// Open connections per client address; an address's entry is removed when
/// its last connection ends, so the map holds only live addresses.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    fn take(&self, me: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            map: me.clone(),
            ip,
        })
    }
}

struct AddressSlot {
    map: Arc<PerAddress>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.map.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

struct Conn {
    router: Router,
    transport: Transport,
    limits: Arc<Limits>,
    stats: Arc<Stats>,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    stop: watch::Receiver<bool>,
    peer: SocketAddr,
}

impl Conn {
    async fn run(self, stream: TcpStream, _permit: OwnedSemaphorePermit, _slot: AddressSlot) {
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        let io = stream;
        match self.transport.clone() {
            Transport::Plain => self.http(io, None, activity).await,
            Transport::Tls(acceptor) => {
                match tokio::time::timeout(self.limits.header_read_timeout(), acceptor.accept(io))
                    .await
                {
                    Ok(Ok(tls)) => {
                        let leaf = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.to_vec());
                        self.http(tls, leaf, activity).await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed")
                    }
                    Err(_) => {
                        self.stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }

    async fn http<I>(&self, io: I, leaf: Option<Vec<u8>>, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = Service {
            router: self.router.clone(),
            peer: self.peer,
            leaf: leaf.map(Arc::new),
            activity: activity.clone(),
            request_timeout: self.limits.request_timeout(),
            stats: self.stats.clone(),
        };
        let conn = self.builder.serve_connection(
            TokioIo::new(io),
            hyper::service::service_fn(move |r| service.call(r)),
        );
        let mut conn = std::pin::pin!(conn);
        let mut stop = self.stop.clone();
        let idle = self.limits.idle_timeout();
        let header = self.limits.header_read_timeout();
        let mut stopping = false;
        let born = Instant::now();
        let max_age = self.limits.max_connection_age();
        loop {
            // Old enough: finish what is in progress (HTTP/2 GOAWAY), then
            // close. Bounds what any client holds, whatever it does.
            if !stopping && born.elapsed() >= max_age {
                stopping = true;
                self.stats.age_closed.fetch_add(1, Ordering::Relaxed);
                conn.as_mut().graceful_shutdown();
            }
            if stopping && born.elapsed() >= max_age + self.limits.request_timeout() {
                return;
            }
            // Before the first request the client has the header-read time;
            // between requests, the idle time.
            let allowed = if activity.requests.load(Ordering::Relaxed) == 0 {
                header
            } else {
                idle
            };
            // Wakes when the allowance would run out, not on a fixed tick:
            // ten thousand held connections cost ten thousand timers, not
            // forty thousand wake-ups a second.
            let check = if activity.in_flight.load(Ordering::Relaxed) > 0 {
                allowed
            } else {
                allowed
                    .saturating_sub(activity.quiet())
                    .max(Duration::from_millis(100))
            }
            .min({
                // The next age step: the graceful close, then the hard one.
                let step = if stopping {
                    born + max_age + self.limits.request_timeout()
                } else {
                    born + max_age
                };
                step.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100))
            });
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        if is_header_timeout(&*e) {
                            self.stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::debug!(peer = %self.peer, error = %e, "connection ended");
                    }
                    return;
                }
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep(check) => {
                    if activity.in_flight.load(Ordering::Relaxed) == 0 && activity.quiet() >= allowed {
                        let counter = if allowed == header && activity.requests.load(Ordering::Relaxed) == 0 {
                            &self.stats.header_timeouts
                        } else {
                            &self.stats.idle_timeouts
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
    }
}

fn is_header_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && h.is_timeout()
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// When a request last started or ended on a connection, or its response
/// last made progress, and how many requests are being answered on it now:
/// a connection is idle only when both say so. Bytes the client sends do
/// not count (PINGs, a trickled header): only what it asks and takes.
struct Activity {
    started: Instant,
    last_millis: AtomicU64,
    in_flight: AtomicUsize,
    requests: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_millis: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_millis.store(now, Ordering::Relaxed);
    }
    fn quiet(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_millis.load(Ordering::Relaxed)))
    }
}

/// A response body that tells the connection it is moving: it hands the
/// body over in pieces of at most `PROGRESS` bytes, and hyper asks for the
/// next piece only once the last one is on its way to the client, so each
/// piece asked for counts as the client taking data. A client that reads a
/// large CRL a few bytes at a time, or that keeps an idle connection alive
/// with HTTP/2 PINGs, makes no progress and is closed.
struct Progress {
    inner: Body,
    activity: Arc<Activity>,
    /// What is left of a frame larger than one piece.
    rest: axum::body::Bytes,
}

const PROGRESS: u64 = 16 * 1024;

impl hyper::body::Body for Progress {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        const PIECE: usize = PROGRESS as usize;
        if !self.rest.is_empty() {
            let n = self.rest.len().min(PIECE);
            let piece = self.rest.split_to(n);
            self.activity.touch();
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(piece))));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    if data.len() > PIECE {
                        self.rest = data.split_off(PIECE);
                    }
                    self.activity.touch();
                    Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }
    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        let inner = self.inner.size_hint();
        let extra = self.rest.len() as u64;
        let mut hint = hyper::body::SizeHint::new();
        hint.set_lower(inner.lower() + extra);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + extra);
        }
        hint
    }
}

/// Per connection: adds what the handlers read about the caller, counts the
/// request as in progress, and bounds the time to answer it.
#[derive(Clone)]
struct Service {
    router: Router,
    peer: SocketAddr,
    leaf: Option<Arc<Vec<u8>>>,
    activity: Arc<Activity>,
    request_timeout: Duration,
    stats: Arc<Stats>,
}

impl Service {
    fn call(
        &self,
        mut req: Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>> {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        if let Some(leaf) = &self.leaf {
            req.extensions_mut()
                .insert(muhr_http::clients::PeerCertificate(leaf.as_ref().clone()));
        }
        let activity = self.activity.clone();
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.requests.fetch_add(1, Ordering::Relaxed);
        let progress = activity.clone();
        activity.touch();
        let guard = InFlight(activity);
        let mut router = self.router.clone();
        let limit = self.request_timeout;
        let stats = self.stats.clone();
        Box::pin(async move {
            let _guard = guard;
            let fut = tower::Service::call(&mut router, req.map(Body::new));
            match tokio::time::timeout(limit, fut).await {
                Ok(Ok(r)) => {
                    let r = one_error_shape(r).await;
                    // A body of one piece at most (an OCSP response, a JSON
                    // answer) is on its way once the head is: the request's
                    // end already counted. Only larger ones are watched.
                    use hyper::body::Body as _;
                    if r.body().size_hint().exact().is_some_and(|n| n <= PROGRESS) {
                        return Ok(r);
                    }
                    let (parts, body) = r.into_parts();
                    let body = Body::new(Progress {
                        inner: body,
                        activity: progress,
                        rest: axum::body::Bytes::new(),
                    });
                    Ok(Response::from_parts(parts, body))
                }
                Ok(Err(e)) => match e {},
                Err(_) => {
                    stats.request_timeouts.fetch_add(1, Ordering::Relaxed);
                    let mut r = muhr_http::answer::json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "request",
                        &format!("not answered within {} s; try again later", limit.as_secs()),
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                    Ok(r)
                }
            }
        })
    }
}

/// Refusals made by the HTTP stack rather than by a handler (no route, wrong
/// method, body too large, wrong content type, a body or path that does not
/// parse) come as plain text or with no body at all. They leave here in the
/// JSON every other refusal uses: `{"error": {"field", "rule"}}`.
async fn one_error_shape(r: Response) -> Response {
    let status = r.status();
    let plain = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("text/plain"));
    if status.as_u16() < 400 || !plain {
        return r;
    }
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let allow = parts
        .headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (field, rule) = match status {
        StatusCode::NOT_FOUND => ("path", "no such resource".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => ("method", format!("not allowed here; allowed: {allow}")),
        StatusCode::PAYLOAD_TOO_LARGE => ("body", "the request body is too large".to_string()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "content-type",
            if text.is_empty() {
                "unsupported content type".to_string()
            } else {
                text
            },
        ),
        _ if text.starts_with("Invalid URL") || text.contains("path param") => ("path", text),
        _ if text.is_empty() => (
            "request",
            status.canonical_reason().unwrap_or("refused").to_string(),
        ),
        _ => ("body", text),
    };
    let mut out = muhr_http::answer::json_error(status, field, &rule);
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Raises the soft open-file limit to the hard one and checks that the
/// listeners' caps fit in it with room for the database, the key store and
/// files; the caps are lowered (with a warning) when they do not.
pub fn fit_connection_caps(limits: &Limits) -> (usize, usize) {
    const RESERVE: u64 = 512;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    let nofile = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
            lim.rlim_cur
        } else {
            1024
        }
    };
    let (public, mtls) = (
        limits.max_connections as u64,
        limits.max_connections_mtls as u64,
    );
    let room = nofile.saturating_sub(RESERVE);
    if public + mtls <= room {
        return (public as usize, mtls as usize);
    }
    let scale = |n: u64| (n * room / (public + mtls)).max(16) as usize;
    let (p, m) = (scale(public), scale(mtls));
    tracing::warn!(
        open_file_limit = nofile,
        configured_public = public,
        configured_mtls = mtls,
        public = p,
        mtls = m,
        "the open-file limit is too low for the configured connection caps; lowered them \
         (raise LimitNOFILE to keep them)"
    );
    (p, m)
}

//! The clock genTime comes from, and the check that lets the TSA trust it.
//!
//! A time-stamp token is evidence that a document existed at a time; a token with a
//! wrong time is false evidence that cannot be recalled. So RFC 3161 §2.1 asks for a
//! trustworthy source of time, and the TSA asks [`ClockCheck::now`] for every token:
//! when no independent source vouches that the system clock is within the configured
//! accuracy, it fails with [`Unsynchronised`] and the TSA answers `timeNotAvailable`
//! rather than stamping a time it cannot stand behind.
//!
//! The check only observes. It never sets or slews the system clock: keeping the clock
//! right is the time daemon's job, and a TSA process able to move the clock could also
//! backdate tokens.
//!
//! Two sources:
//! - [`ClockSource::Kernel`] trusts the kernel's own bookkeeping (`adjtimex(2)`), which
//!   the host's time daemon (chrony, ntpd, a PTP daemon) keeps up to date. One system
//!   call per token.
//! - [`ClockSource::Ntp`] asks NTP servers itself (SNTP, RFC 5905 client mode) in a
//!   background task, so the verdict does not depend on a daemon's configuration on the
//!   host. Per token it costs an atomic load and two vDSO clock reads.

use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

/// Where the TSA learns whether its clock is right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockSource {
    /// Trust the kernel's synchronisation state, maintained by the host's time daemon.
    /// Right when the host already runs a daemon the operator audits; without one the
    /// kernel says "unsynchronised" and the TSA refuses, which is the point.
    Kernel,
    /// Ask NTP servers directly, so that the TSA's verdict rests on servers named in its
    /// own configuration (for example the national time service) and not on the host.
    Ntp {
        /// `host:port` (or a bare host, port 123); resolved again at every poll so
        /// that a DNS change reaches the TSA without a restart.
        servers: Vec<String>,
        /// Time between polls. A verdict holds for three intervals, so that one lost
        /// packet does not stop the TSA but a dead server does within a minute.
        interval: Duration,
        /// How long one query waits for its answer (and, separately, for the name to
        /// resolve): past it, the answer's delay alone would make it useless.
        timeout: Duration,
    },
}

impl ClockSource {
    /// NTP's customary shortest poll (2^4 s): frequent enough that the validity window
    /// (three intervals, 48 s) stays short, rare enough to be polite to public servers.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(16);
    /// An NTP answer slower than this is useless anyway: half its delay alone would
    /// exceed the accuracy a TSA usually promises.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

    /// The NTP source with the default interval and timeout.
    pub fn ntp<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> ClockSource {
        ClockSource::Ntp {
            servers: servers.into_iter().map(Into::into).collect(),
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// Why the TSA does not trust its clock now; the sentence goes to the log and to the
/// operator, the TSA answers `timeNotAvailable`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Unsynchronised {
    reason: String,
}

impl Unsynchronised {
    /// The human sentence, for logs and the health page.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// The clock's state for the health page and metrics; not for deciding whether to
/// stamp (that is [`ClockCheck::now`], which cannot race with a poll).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClockStatus {
    /// `"kernel"` or `"ntp"`.
    pub source: &'static str,
    /// Whether [`ClockCheck::now`] would give a time at this moment.
    pub synchronised: bool,
    /// The largest error the clock may have according to the last measurement, in
    /// microseconds: the kernel's `maxerror`, or the best NTP answer's
    /// |offset| + delay/2 + root delay/2 + root dispersion. `None` before any.
    pub error_bound_us: Option<u64>,
    /// The system clock minus the server's, from the best NTP answer (NTP source only).
    pub offset_us: Option<i64>,
    /// The server that gave that answer (NTP source only).
    pub server: Option<String>,
    /// The configured accuracy, in microseconds.
    pub accuracy_us: u64,
    /// Why the clock is not trusted, when it is not.
    pub problem: Option<String>,
}

/// The kernel's view of its clock, as `adjtimex(2)` reports it without changing it.
/// Public so that tests and diagnostics can compare the raw reading with the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelReading {
    /// The return value: the clock state (`TIME_OK` 0 … `TIME_ERROR` 5).
    pub state: i32,
    /// The `status` bits (`STA_UNSYNC` 0x40 among them).
    pub status: i32,
    /// `maxerror`: the daemon's bound on the clock's error, which the kernel grows by
    /// 500 µs every second the daemon does not refresh it (16 s means "no idea").
    pub max_error_us: i64,
    /// `esterror`: the daemon's estimate of the error.
    pub est_error_us: i64,
}

const TIME_ERROR: i32 = 5;
const STA_UNSYNC: i32 = 0x40;

impl KernelReading {
    /// Reads the kernel clock's state; one system call.
    pub fn read() -> std::io::Result<KernelReading> {
        read_adjtimex()
    }

    fn verdict(&self, accuracy: Duration) -> Result<(), String> {
        if self.status & STA_UNSYNC != 0 {
            return Err("kernel reports the clock unsynchronised (STA_UNSYNC)".into());
        }
        if self.state == TIME_ERROR {
            return Err("kernel reports a clock error (TIME_ERROR)".into());
        }
        // chrony and ntpd keep maxerror as a real bound that grows between
        // updates; a simple SNTP client (systemd-timesyncd) writes zero
        // after each answer of one unauthenticated server, which bounds
        // nothing.
        if self.max_error_us == 0 {
            return Err("kernel maximum error 0: no bound (an SNTP client such as \
                 systemd-timesyncd sets the clock; run chrony or ntpd, or use the ntp source)"
                .into());
        }
        let max_error = Duration::from_micros(self.max_error_us.max(0).unsigned_abs());
        if self.max_error_us < 0 || max_error > accuracy {
            return Err(format!(
                "kernel maximum error {} exceeds the accuracy {}",
                human(max_error),
                human(accuracy)
            ));
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn read_adjtimex() -> std::io::Result<KernelReading> {
    // SAFETY: `libc::timex` is plain integers (and padding), for which all-zero bytes are
    // a valid value; `modes` = 0 makes the call read-only. The pointer is to a live,
    // exclusively borrowed local of the type the kernel expects, for the call's duration.
    let (state, tx) = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        tx.modes = 0;
        (libc::adjtimex(&mut tx), tx)
    };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // `c_long` is 32 bits on 32-bit targets: the casts are not idle everywhere.
    #[allow(clippy::unnecessary_cast)]
    Ok(KernelReading {
        state,
        status: tx.status,
        max_error_us: tx.maxerror as i64,
        est_error_us: tx.esterror as i64,
    })
}

#[cfg(not(target_os = "linux"))]
fn read_adjtimex() -> std::io::Result<KernelReading> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "the kernel clock check needs Linux adjtimex(2); use the NTP source",
    ))
}

/// The kernel's frequency tolerance (`MAXFREQ`, 500 ppm): how fast the clock may drift
/// from true time between two NTP answers. A daemon on the host slewing faster (chrony
/// may slew at up to 83 ms/s) is not covered; the next poll sees what it did.
const MAX_DRIFT_PPM: u64 = 500;

/// How many polls' worth of time one good NTP answer is trusted.
const VALIDITY_POLLS: u32 = 3;

/// The low bits of the packed verdict hold the margin in microseconds (at most ≈ 16.7 s;
/// a larger margin is clamped, which only makes the check stricter).
const MARGIN_BITS: u32 = 24;
const MARGIN_MASK: u64 = (1 << MARGIN_BITS) - 1;

/// Decides, for every token, whether the system clock may be used.
///
/// Built once at start-up and shared (`Arc`) by every request handler.
pub struct ClockCheck {
    accuracy: Duration,
    refusals: AtomicU64,
    inner: Inner,
}

enum Inner {
    Kernel,
    Ntp {
        shared: Arc<NtpShared>,
        task: AbortHandle,
    },
}

impl fmt::Debug for ClockCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClockCheck")
            .field("source", &self.source_name())
            .field("accuracy", &self.accuracy)
            .finish_non_exhaustive()
    }
}

impl Drop for ClockCheck {
    fn drop(&mut self) {
        if let Inner::Ntp { task, .. } = &self.inner {
            task.abort();
        }
    }
}

impl ClockCheck {
    /// Starts checking `source` against `accuracy` (the accuracy the TSA promises in its
    /// tokens). For NTP the first poll starts at once; until it answers, [`Self::now`]
    /// refuses.
    ///
    /// # Panics
    /// With the NTP source, outside a tokio runtime (the poller is a tokio task).
    pub fn start(source: ClockSource, accuracy: Duration) -> Arc<ClockCheck> {
        let inner = match source {
            ClockSource::Kernel => Inner::Kernel,
            ClockSource::Ntp {
                servers,
                interval,
                timeout,
            } => {
                // tokio's interval panics on zero; a poll every millisecond is already absurd.
                let interval = interval.max(Duration::from_millis(1));
                let (polled, _) = watch::channel(0);
                let shared = Arc::new(NtpShared {
                    servers,
                    interval,
                    timeout,
                    accuracy,
                    base: Instant::now(),
                    verdict: AtomicU64::new(0),
                    step_ref: AtomicI64::new(0),
                    polls: AtomicU64::new(0),
                    failed_polls: AtomicU64::new(0),
                    rejected_answers: AtomicU64::new(0),
                    report: Mutex::new(Report::default()),
                    polled,
                });
                let task = tokio::spawn(Arc::clone(&shared).run()).abort_handle();
                Inner::Ntp { shared, task }
            }
        };
        Arc::new(ClockCheck {
            accuracy,
            refusals: AtomicU64::new(0),
            inner,
        })
    }

    /// The time for a token, or why there is none. Cheap enough for every request: one
    /// `adjtimex` call (kernel) or an atomic load and two vDSO clock reads (NTP); the
    /// network is only ever touched by the background poller.
    pub fn now(&self) -> Result<SystemTime, Unsynchronised> {
        let verdict = match &self.inner {
            Inner::Kernel => kernel_now(self.accuracy),
            Inner::Ntp { shared, .. } => match shared.trusted_now() {
                Ok(t) => return Ok(t),
                Err(_) => shared.explain(),
            },
        };
        verdict.map_err(|reason| {
            self.refusals.fetch_add(1, Ordering::Relaxed);
            Unsynchronised { reason }
        })
    }

    /// The accuracy the clock is held to (and that the TSA may state in its tokens).
    pub fn accuracy(&self) -> Duration {
        self.accuracy
    }

    /// The state for the health page and metrics.
    pub fn status(&self) -> ClockStatus {
        let accuracy_us = u64::try_from(self.accuracy.as_micros()).unwrap_or(u64::MAX);
        match &self.inner {
            Inner::Kernel => match KernelReading::read() {
                Ok(r) => {
                    let problem = r.verdict(self.accuracy).err();
                    ClockStatus {
                        source: "kernel",
                        synchronised: problem.is_none(),
                        error_bound_us: u64::try_from(r.max_error_us).ok(),
                        offset_us: None,
                        server: None,
                        accuracy_us,
                        problem,
                    }
                }
                Err(e) => ClockStatus {
                    source: "kernel",
                    synchronised: false,
                    error_bound_us: None,
                    offset_us: None,
                    server: None,
                    accuracy_us,
                    problem: Some(format!("adjtimex failed: {e}")),
                },
            },
            Inner::Ntp { shared, .. } => {
                let problem = shared.explain().err();
                let report = shared.report();
                let sample = report.last_sample.as_ref();
                ClockStatus {
                    source: "ntp",
                    synchronised: problem.is_none(),
                    error_bound_us: sample
                        .map(|s| u64::try_from(s.m.bound.as_micros()).unwrap_or(u64::MAX)),
                    offset_us: sample.map(|s| s.m.offset_ns / 1000),
                    server: sample.map(|s| s.server.clone()),
                    accuracy_us,
                    problem,
                }
            }
        }
    }

    /// Polls completed since start (0 for the kernel source, which does not poll).
    pub fn polls(&self) -> u64 {
        match &self.inner {
            Inner::Kernel => 0,
            Inner::Ntp { shared, .. } => shared.polls.load(Ordering::Relaxed),
        }
    }

    /// Waits until at least `count` polls have completed since start, so that a server
    /// (or a test) can hold its first answer until the first verdict is in. Returns at
    /// once for the kernel source.
    pub async fn wait_for_polls(&self, count: u64) {
        if let Inner::Ntp { shared, .. } = &self.inner {
            let mut rx = shared.polled.subscribe();
            // The sender lives as long as `shared`, which we hold: this cannot fail.
            let _ = rx.wait_for(|&n| n >= count).await;
        }
    }

    /// The clock's series in Prometheus text format, HELP and TYPE lines included.
    pub fn render_metrics(&self) -> String {
        let status = self.status();
        let src = status.source;
        let mut out = String::new();
        let mut series = |name: &str, kind: &str, help: &str, value: Option<String>| {
            if let Some(v) = value {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                let _ = writeln!(out, "{name}{{source=\"{src}\"}} {v}");
            }
        };
        series(
            "muhr_tsa_clock_synchronised",
            "gauge",
            "1 when the TSA trusts its clock and stamps, 0 when it answers timeNotAvailable.",
            Some(u8::from(status.synchronised).to_string()),
        );
        series(
            "muhr_tsa_clock_error_bound_seconds",
            "gauge",
            "Largest error the clock may have, per the last measurement (kernel maxerror, or NTP |offset| + delay/2 + root distance).",
            status.error_bound_us.map(|us| secs(us as f64 / 1e6)),
        );
        series(
            "muhr_tsa_clock_accuracy_seconds",
            "gauge",
            "The accuracy the clock is held to.",
            Some(secs(self.accuracy.as_secs_f64())),
        );
        series(
            "muhr_tsa_clock_refusals_total",
            "counter",
            "Times a token was refused because the clock was not trusted.",
            Some(self.refusals.load(Ordering::Relaxed).to_string()),
        );
        if let Inner::Ntp { shared, .. } = &self.inner {
            series(
                "muhr_tsa_clock_offset_seconds",
                "gauge",
                "System clock minus the NTP server's, from the best answer of the last poll that had one.",
                status.offset_us.map(|us| secs(us as f64 / 1e6)),
            );
            series(
                "muhr_tsa_clock_ntp_polls_total",
                "counter",
                "NTP polls completed.",
                Some(shared.polls.load(Ordering::Relaxed).to_string()),
            );
            series(
                "muhr_tsa_clock_ntp_failed_polls_total",
                "counter",
                "NTP polls in which no server gave a valid answer.",
                Some(shared.failed_polls.load(Ordering::Relaxed).to_string()),
            );
            series(
                "muhr_tsa_clock_ntp_rejected_answers_total",
                "counter",
                "NTP answers refused: not an answer to our request (spoofed or stale), or from an unsynchronised server.",
                Some(shared.rejected_answers.load(Ordering::Relaxed).to_string()),
            );
        }
        out
    }

    fn source_name(&self) -> &'static str {
        match &self.inner {
            Inner::Kernel => "kernel",
            Inner::Ntp { .. } => "ntp",
        }
    }
}

fn kernel_now(accuracy: Duration) -> Result<SystemTime, String> {
    let reading = KernelReading::read().map_err(|e| format!("adjtimex failed: {e}"))?;
    reading.verdict(accuracy)?;
    Ok(SystemTime::now())
}

/// What the poller shares with the request path.
struct NtpShared {
    servers: Vec<String>,
    interval: Duration,
    timeout: Duration,
    accuracy: Duration,
    /// The origin of the monotonic times stored in atomics.
    base: Instant,
    /// The last good answer, packed so that one atomic load gives a consistent pair:
    /// when its query was sent (milliseconds after `base`, rounded down so that its age
    /// is overestimated, plus one) in the high bits, and the margin (accuracy − error bound, µs)
    /// in the low [`MARGIN_BITS`]. 0 when there is no good answer in force.
    verdict: AtomicU64,
    /// Realtime minus monotonic (ns) when that answer's query was sent: a later
    /// difference shows how far the system clock was stepped since, which NTP would only
    /// notice at the next poll.
    step_ref: AtomicI64,
    polls: AtomicU64,
    failed_polls: AtomicU64,
    rejected_answers: AtomicU64,
    /// Written by the poller only; read on the refusal path and by the health page.
    report: Mutex<Report>,
    polled: watch::Sender<u64>,
}

#[derive(Default)]
struct Report {
    /// The best valid answer of the most recent poll that had one.
    last_sample: Option<Sample>,
    /// Why the most recent poll had no valid answer (None when it had one).
    poll_problem: Option<String>,
    /// Whether the last logged state was "trusted", to log changes only.
    logged_trusted: Option<bool>,
}

#[derive(Debug, Clone)]
struct Sample {
    server: String,
    m: Measurement,
    sent_at: Instant,
    step_ref: i64,
}

/// Why the fast path refused, before the slow path puts it into words.
enum Doubt {
    NoVerdict,
    Stale(Duration),
    Moved { moved: i64, margin: Duration },
}

impl NtpShared {
    fn report(&self) -> MutexGuard<'_, Report> {
        // A panic while holding the lock leaves a report that is at worst stale; the
        // verdict itself lives in atomics.
        self.report.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn validity(&self) -> Duration {
        self.interval * VALIDITY_POLLS
    }

    /// The request path: the time if the last good answer still vouches for it.
    fn trusted_now(&self) -> Result<SystemTime, Doubt> {
        let verdict = self.verdict.load(Ordering::Acquire);
        let now = SystemTime::now();
        let mono = self.base.elapsed();
        if verdict == 0 {
            return Err(Doubt::NoVerdict);
        }
        let sent = Duration::from_millis((verdict >> MARGIN_BITS) - 1);
        let margin = Duration::from_micros(verdict & MARGIN_MASK);
        let age = mono.saturating_sub(sent);
        if age >= self.validity() {
            return Err(Doubt::Stale(age));
        }
        // A clock set before 1970 is certainly wrong; i64::MIN makes `moved` huge.
        let moved = realtime_minus_mono(now, mono)
            .unwrap_or(i64::MIN)
            .saturating_sub(self.step_ref.load(Ordering::Relaxed));
        let drift = age.as_nanos() * u128::from(MAX_DRIFT_PPM) / 1_000_000;
        if u128::from(moved.unsigned_abs()) + drift > margin.as_nanos() {
            return Err(Doubt::Moved { moved, margin });
        }
        Ok(now)
    }

    /// The refusal path: check again under the poller's lock (a poll may just have
    /// finished) and put the reason into words.
    fn explain(&self) -> Result<SystemTime, String> {
        let report = self.report();
        let doubt = match self.trusted_now() {
            Ok(t) => return Ok(t),
            Err(d) => d,
        };
        let last_poll = match &report.poll_problem {
            Some(p) => format!("; last poll: {p}"),
            None => String::new(),
        };
        match doubt {
            Doubt::NoVerdict => match &report.last_sample {
                Some(s) if s.m.bound > self.accuracy => Err(format!(
                    "NTP error bound {} (offset {}, round trip {}) from {} exceeds the accuracy {}{last_poll}",
                    human(s.m.bound),
                    human_signed(s.m.offset_ns),
                    human(Duration::from_nanos(s.m.delay_ns.max(0).unsigned_abs())),
                    s.server,
                    human(self.accuracy)
                )),
                _ if self.polls.load(Ordering::Relaxed) == 0 => {
                    Err("no NTP answer yet: the first poll is under way".into())
                }
                _ => Err(format!("no valid NTP answer since start{last_poll}")),
            },
            Doubt::Stale(age) => Err(format!(
                "no fresh NTP answer for {} (an answer is trusted for {} × the {} poll interval){last_poll}",
                human(age),
                VALIDITY_POLLS,
                human(self.interval)
            )),
            Doubt::Moved { moved, margin } => Err(format!(
                "the system clock moved {} against the monotonic clock since the last NTP answer, \
                 more than the {} its error bound and drift leave within the accuracy {}",
                human_signed(moved),
                human(margin),
                human(self.accuracy)
            )),
        }
    }

    async fn run(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.poll().await;
        }
    }

    /// One poll: every server at once, the best valid answer decides.
    async fn poll(self: &Arc<Self>) {
        let mut queries = JoinSet::new();
        for server in self.servers.iter().cloned() {
            let this = Arc::clone(self);
            queries.spawn(async move {
                let answer = this.query(&server).await;
                (server, answer)
            });
        }
        let mut best: Option<Sample> = None;
        let mut problems = Vec::new();
        if self.servers.is_empty() {
            problems.push("no NTP server configured".to_string());
        }
        while let Some(joined) = queries.join_next().await {
            match joined {
                Ok((_, Ok(s))) => {
                    if best.as_ref().is_none_or(|b| s.m.bound < b.m.bound) {
                        best = Some(s);
                    }
                }
                Ok((server, Err(e))) => problems.push(format!("{server}: {e}")),
                Err(e) => problems.push(format!("query task failed: {e}")),
            }
        }

        let mut report = self.report();
        match best {
            Some(s) => {
                if s.m.bound <= self.accuracy {
                    // Clamped (after 34 years' uptime), the answer looks older: stricter.
                    let sent_ms = u64::try_from(s.sent_at.duration_since(self.base).as_millis())
                        .unwrap_or(u64::MAX)
                        .min((u64::MAX >> MARGIN_BITS) - 1);
                    let margin_us = u64::try_from((self.accuracy - s.m.bound).as_micros())
                        .unwrap_or(u64::MAX)
                        .min(MARGIN_MASK);
                    self.step_ref.store(s.step_ref, Ordering::Relaxed);
                    // Stored plus one, so that a verdict is never 0 ("none").
                    let packed = ((sent_ms + 1) << MARGIN_BITS) | margin_us;
                    self.verdict.store(packed, Ordering::Release);
                } else {
                    self.verdict.store(0, Ordering::Release);
                }
                report.last_sample = Some(s);
                report.poll_problem = None;
            }
            None => {
                // No new information: the previous verdict stands until it expires.
                self.failed_polls.fetch_add(1, Ordering::Relaxed);
                report.poll_problem = Some(problems.join("; "));
            }
        }
        let polls = self.polls.fetch_add(1, Ordering::Relaxed) + 1;
        drop(report);
        self.log_change();
        self.polled.send_replace(polls);
    }

    fn log_change(&self) {
        let verdict = self.explain();
        let mut report = self.report();
        let trusted = verdict.is_ok();
        if report.logged_trusted == Some(trusted) {
            return;
        }
        report.logged_trusted = Some(trusted);
        match (verdict, report.last_sample.as_ref()) {
            (Ok(_), Some(s)) => tracing::info!(
                server = %s.server,
                offset_us = s.m.offset_ns / 1000,
                stratum = s.m.stratum,
                error_bound_us = s.m.bound.as_micros() as u64,
                "clock synchronised: time-stamping enabled"
            ),
            (Ok(_), None) => tracing::info!("clock synchronised: time-stamping enabled"),
            (Err(reason), _) => tracing::warn!(
                %reason,
                "clock not trusted: the TSA answers timeNotAvailable"
            ),
        }
    }

    /// One query to one server. Waits out the whole timeout for the genuine answer: a
    /// forged datagram arriving first must not make us give up on the real one.
    async fn query(&self, server: &str) -> Result<Sample, String> {
        let addr = tokio::time::timeout(self.timeout, resolve(server))
            .await
            .map_err(|_| format!("name not resolved within {}", human(self.timeout)))??;
        let local: SocketAddr = match addr {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        // A fresh socket on a random ephemeral port per query (RFC 9109): an off-path
        // forger must guess the port as well as the nonce.
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
        // Connected: the kernel drops datagrams from any other address, and an ICMP
        // "port unreachable" fails the query at once instead of at the timeout.
        socket
            .connect(addr)
            .await
            .map_err(|e| format!("cannot reach {addr}: {e}"))?;

        // The transmit timestamp is a random nonce rather than our clock (the IETF's NTP
        // data-minimisation advice): the server echoes it as the origin, a forger cannot
        // guess it, and the request does not reveal the TSA's clock. T1 stays here.
        let nonce = random_nonce()?;
        let request = Packet::request(nonce).encode();
        let t1_system = SystemTime::now();
        let sent_at = Instant::now();
        let t1 = NtpTimestamp::from_system(t1_system)
            .ok_or("the system clock is before 1970: certainly wrong")?;
        let step_ref = realtime_minus_mono(t1_system, sent_at.duration_since(self.base))
            .ok_or("the system clock is before 1970: certainly wrong")?;
        socket
            .send(&request)
            .await
            .map_err(|e| format!("cannot send: {e}"))?;

        let deadline = tokio::time::Instant::now() + self.timeout;
        let too_slow = || format!("no answer within {}", human(self.timeout));
        let mut buf = [0u8; 1024];
        loop {
            let len = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => return Err(too_slow()),
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(len)) => len,
            };
            // T4 from the monotonic clock: a step of the system clock during the
            // exchange must not count as network delay.
            let t4 = t1.add(sent_at.elapsed());
            match evaluate(&buf[..len], nonce, t1, t4) {
                Ok(m) => {
                    return Ok(Sample {
                        server: server.to_string(),
                        m,
                        sent_at,
                        step_ref,
                    });
                }
                Err(Rejection::NotOurs) => {
                    self.rejected_answers.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(server, "ignored an NTP answer to a request we did not send");
                }
                Err(r) => {
                    self.rejected_answers.fetch_add(1, Ordering::Relaxed);
                    return Err(r.to_string());
                }
            }
        }
    }
}

async fn resolve(server: &str) -> Result<SocketAddr, String> {
    let first = if server.contains(':') {
        tokio::net::lookup_host(server).await.map(|mut a| a.next())
    } else {
        tokio::net::lookup_host((server, 123))
            .await
            .map(|mut a| a.next())
    };
    first
        .map_err(|e| format!("cannot resolve: {e}"))?
        .ok_or_else(|| "the name resolves to no address".to_string())
}

fn random_nonce() -> Result<u64, String> {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "no randomness for the NTP nonce")?;
    // Never 0: a server that answers with a zero origin must not match.
    Ok(u64::from_be_bytes(bytes) | 1)
}

/// Realtime (ns since 1970) minus monotonic (ns since `base`); None before 1970.
fn realtime_minus_mono(now: SystemTime, mono: Duration) -> Option<i64> {
    let real = i64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()?;
    let mono = i64::try_from(mono.as_nanos()).ok()?;
    Some(real - mono)
}

/// An NTP timestamp (RFC 5905 §6): seconds since 1900 in the high 32 bits, the fraction
/// in the low 32. Differences are taken modulo 2^64, which stays right across the 2036
/// era rollover as long as the clocks are within 68 years of each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NtpTimestamp(u64);

/// Seconds from 1900-01-01 (NTP's epoch) to 1970-01-01 (Unix's).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

impl NtpTimestamp {
    fn from_system(t: SystemTime) -> Option<NtpTimestamp> {
        let since = t.duration_since(UNIX_EPOCH).ok()?;
        Some(NtpTimestamp(
            ((since.as_secs() + NTP_UNIX_OFFSET) << 32)
                .wrapping_add(fraction(since.subsec_nanos())),
        ))
    }

    fn add(self, d: Duration) -> NtpTimestamp {
        NtpTimestamp(
            self.0
                .wrapping_add(d.as_secs() << 32)
                .wrapping_add(fraction(d.subsec_nanos())),
        )
    }

    /// `self − earlier` in nanoseconds.
    fn minus(self, earlier: NtpTimestamp) -> i64 {
        let fixed = self.0.wrapping_sub(earlier.0) as i64; // signed 32.32 seconds
        ((i128::from(fixed) * 1_000_000_000) >> 32) as i64
    }
}

fn fraction(nanos: u32) -> u64 {
    (u64::from(nanos) << 32) / 1_000_000_000
}

/// An NTP "short" (16.16 seconds), as root delay and root dispersion are sent.
fn short_duration(v: u32) -> Duration {
    Duration::from_nanos((u64::from(v) * 1_000_000_000) >> 16)
}

/// The 48-byte NTP header (RFC 5905 §7.3); extension fields and MACs after it are
/// ignored, as an SNTP client may.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Packet {
    leap: u8,
    version: u8,
    mode: u8,
    stratum: u8,
    poll: i8,
    precision: i8,
    root_delay: u32,
    root_dispersion: u32,
    reference_id: [u8; 4],
    reference: NtpTimestamp,
    origin: NtpTimestamp,
    receive: NtpTimestamp,
    transmit: NtpTimestamp,
}

const HEADER_LEN: usize = 48;
const MODE_CLIENT: u8 = 3;
const MODE_SERVER: u8 = 4;
const LEAP_UNSYNCHRONISED: u8 = 3;

impl Packet {
    fn request(nonce: u64) -> Packet {
        Packet {
            leap: 0,
            version: 4,
            mode: MODE_CLIENT,
            stratum: 0,
            poll: 0,
            precision: 0,
            root_delay: 0,
            root_dispersion: 0,
            reference_id: [0; 4],
            reference: NtpTimestamp(0),
            origin: NtpTimestamp(0),
            receive: NtpTimestamp(0),
            transmit: NtpTimestamp(nonce),
        }
    }

    fn parse(b: &[u8]) -> Result<Packet, Rejection> {
        let Some(h) = b.get(..HEADER_LEN) else {
            return Err(Rejection::Short(b.len()));
        };
        let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let ts_at =
            |i: usize| NtpTimestamp((u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4)));
        Ok(Packet {
            leap: h[0] >> 6,
            version: (h[0] >> 3) & 0b111,
            mode: h[0] & 0b111,
            stratum: h[1],
            poll: h[2] as i8,
            precision: h[3] as i8,
            root_delay: u32_at(4),
            root_dispersion: u32_at(8),
            reference_id: [h[12], h[13], h[14], h[15]],
            reference: ts_at(16),
            origin: ts_at(24),
            receive: ts_at(32),
            transmit: ts_at(40),
        })
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = (self.leap << 6) | ((self.version & 0b111) << 3) | (self.mode & 0b111);
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        b[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        b[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[12..16].copy_from_slice(&self.reference_id);
        b[16..24].copy_from_slice(&self.reference.0.to_be_bytes());
        b[24..32].copy_from_slice(&self.origin.0.to_be_bytes());
        b[32..40].copy_from_slice(&self.receive.0.to_be_bytes());
        b[40..48].copy_from_slice(&self.transmit.0.to_be_bytes());
        b
    }
}

/// Why an NTP answer was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rejection {
    Short(usize),
    /// The origin timestamp is not our nonce: forged, or a late answer to an older query.
    NotOurs,
    Mode(u8),
    Version(u8),
    LeapUnsynchronised,
    KissOfDeath([u8; 4]),
    Stratum(u8),
    ZeroTimestamp,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Short(n) => write!(f, "answer of {n} bytes, shorter than an NTP header"),
            Rejection::NotOurs => {
                write!(f, "answer to a request we did not send (origin mismatch)")
            }
            Rejection::Mode(m) => write!(f, "answer in mode {m}, not a server's (4)"),
            Rejection::Version(v) => write!(f, "answer in NTP version {v}"),
            Rejection::LeapUnsynchronised => {
                write!(
                    f,
                    "the server says its clock is unsynchronised (leap indicator 3)"
                )
            }
            Rejection::KissOfDeath(code) => write!(
                f,
                "kiss-o'-death {} (stratum 0): the server refuses to serve us",
                String::from_utf8_lossy(code).trim_end_matches('\0')
            ),
            Rejection::Stratum(s) => write!(f, "stratum {s}: the server is not synchronised"),
            Rejection::ZeroTimestamp => write!(f, "answer without receive or transmit timestamp"),
        }
    }
}

/// What one valid answer says about our clock (RFC 5905 §8).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Measurement {
    /// Our clock minus the server's, in ns: −θ, with θ = ((T2−T1)+(T3−T4))/2 the
    /// correction RFC 5905 would apply (and we never do).
    offset_ns: i64,
    /// δ = (T4−T1)−(T3−T2), in ns.
    delay_ns: i64,
    stratum: u8,
    /// |θ| + δ/2 + root delay/2 + root dispersion: the true time lies within δ/2 of the
    /// server's clock as we saw it, which lies within the root distance of UTC, and we do
    /// not correct our clock by θ, so all of it is our clock's possible error.
    bound: Duration,
}

/// Checks an answer and measures it. `t1` is when we sent (our clock), `t4` when the
/// answer arrived (t1 plus the monotonic time elapsed), `nonce` what we sent as transmit.
fn evaluate(
    datagram: &[u8],
    nonce: u64,
    t1: NtpTimestamp,
    t4: NtpTimestamp,
) -> Result<Measurement, Rejection> {
    let p = Packet::parse(datagram)?;
    // First: whatever else a datagram that is not an answer to our request says is
    // noise or an attack, and must not end the wait for the real answer.
    if p.origin.0 != nonce {
        return Err(Rejection::NotOurs);
    }
    if p.mode != MODE_SERVER {
        return Err(Rejection::Mode(p.mode));
    }
    if !(1..=4).contains(&p.version) {
        return Err(Rejection::Version(p.version));
    }
    if p.leap == LEAP_UNSYNCHRONISED {
        return Err(Rejection::LeapUnsynchronised);
    }
    if p.stratum == 0 {
        return Err(Rejection::KissOfDeath(p.reference_id));
    }
    if p.stratum >= 16 {
        return Err(Rejection::Stratum(p.stratum));
    }
    if p.transmit.0 == 0 || p.receive.0 == 0 {
        return Err(Rejection::ZeroTimestamp);
    }
    let (t2, t3) = (p.receive, p.transmit);
    let offset = (i128::from(t2.minus(t1)) + i128::from(t3.minus(t4))) / 2;
    let delay = i128::from(t4.minus(t1)) - i128::from(t3.minus(t2));
    let clamp = |v: i128| i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX });
    let (offset_ns, delay_ns) = (clamp(offset), clamp(delay));
    // A negative delay only means the server's clock ticked coarser than our exchange.
    let bound_ns = u128::from(offset_ns.unsigned_abs())
        + u128::from(delay_ns.max(0).unsigned_abs()) / 2
        + short_duration(p.root_delay).as_nanos() / 2
        + short_duration(p.root_dispersion).as_nanos();
    Ok(Measurement {
        offset_ns: -offset_ns,
        delay_ns,
        stratum: p.stratum,
        bound: Duration::from_nanos(u64::try_from(bound_ns).unwrap_or(u64::MAX)),
    })
}

fn secs(v: f64) -> String {
    format!("{v}")
}

/// A duration as a person reads it: "16 s", "2.3 s", "250 ms", "12.5 µs".
fn human(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    let (value, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {unit}")
}

fn human_signed(ns: i64) -> String {
    let sign = if ns < 0 { '-' } else { '+' };
    format!("{sign}{}", human(Duration::from_nanos(ns.unsigned_abs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_2026: u64 = 1_795_000_000; // a Unix time in 2026

    fn ts(unix_secs: u64, nanos: u32) -> NtpTimestamp {
        NtpTimestamp::from_system(UNIX_EPOCH + Duration::new(unix_secs, nanos)).unwrap()
    }

    /// A server's answer to `nonce`, its clock reading `server_time` on arrival and 1 ms
    /// later on departure.
    fn answer(nonce: u64, server_time: NtpTimestamp) -> Packet {
        Packet {
            leap: 0,
            version: 4,
            mode: MODE_SERVER,
            stratum: 2,
            poll: 4,
            precision: -20,
            root_delay: 0x0000_0083,      // 2 ms
            root_dispersion: 0x0000_0042, // 1 ms
            reference_id: *b"GPS\0",
            reference: server_time,
            origin: NtpTimestamp(nonce),
            receive: server_time,
            transmit: server_time.add(Duration::from_millis(1)),
        }
    }

    /// What a fake server on loopback sends: no claimed hold time, since the real
    /// exchange takes less than the 1 ms [`answer`] claims.
    fn live_answer(nonce: u64, server_time: NtpTimestamp) -> Packet {
        Packet {
            transmit: server_time,
            ..answer(nonce, server_time)
        }
    }

    #[test]
    fn header_round_trips_and_short_datagrams_are_refused() {
        let p = answer(0x1234_5678_9abc_def1, ts(NOW_2026, 250_000_000));
        assert_eq!(Packet::parse(&p.encode()).unwrap(), p);
        let mut long = p.encode().to_vec();
        long.extend_from_slice(&[0; 20]); // an extension field is ignored
        assert_eq!(Packet::parse(&long).unwrap(), p);
        assert_eq!(Packet::parse(&p.encode()[..47]), Err(Rejection::Short(47)));
        let request = Packet::request(7).encode();
        assert_eq!(request[0], 0x23, "LI 0, version 4, mode 3");
        assert_eq!(&request[40..], &7u64.to_be_bytes());
    }

    #[test]
    fn timestamps_subtract_across_the_2036_era_rollover() {
        // 2036-02-07T06:28:16Z is NTP second 2^32: the 32-bit seconds wrap to 0.
        let rollover = (1u64 << 32) - NTP_UNIX_OFFSET;
        let before = ts(rollover - 1, 500_000_000);
        let after = ts(rollover + 1, 0);
        assert!(after.0 < before.0, "the raw value wrapped");
        assert_eq!(after.minus(before), 1_500_000_000);
        assert_eq!(before.minus(after), -1_500_000_000);
        assert_eq!(before.add(Duration::from_millis(1500)), after);
    }

    #[test]
    fn a_good_answer_is_measured() {
        let nonce = 0xdead_beef_0000_0001;
        let t1 = ts(NOW_2026, 0);
        let t4 = t1.add(Duration::from_millis(21)); // 20 ms network + 1 ms server
        // The server is 3 s behind us; it received 10 ms after we sent.
        let server = t1.add(Duration::from_millis(10)).0 - (3u64 << 32);
        let m = evaluate(&answer(nonce, NtpTimestamp(server)).encode(), nonce, t1, t4).unwrap();
        // Nanosecond conversions of 2^-32 s fractions round: allow a few ns.
        assert!((m.delay_ns - 20_000_000).abs() <= 2, "{m:?}");
        assert!(
            (m.offset_ns - 3_000_000_000).abs() <= 2,
            "our clock is 3 s ahead: {m:?}"
        );
        // 3 s + 10 ms (δ/2) + 1 ms (root delay/2) + 1 ms (root dispersion), to the
        // 16.16 format's rounding.
        let bound = m.bound.as_secs_f64();
        assert!((bound - 3.012).abs() < 0.000_1, "{bound}");
    }

    #[test]
    fn spoofed_unsynchronised_and_malformed_answers_are_refused() {
        let nonce = 0x0102_0304_0506_0709;
        let t1 = ts(NOW_2026, 0);
        let t4 = t1.add(Duration::from_millis(2));
        let good = answer(nonce, t1.add(Duration::from_millis(1)));
        let check = |p: &Packet| evaluate(&p.encode(), nonce, t1, t4);
        assert!(check(&good).is_ok());

        // An off-path forger does not know the nonce: its answer is not ours, however
        // good it looks.
        let spoofed = Packet {
            origin: NtpTimestamp(nonce ^ 0x100),
            ..good.clone()
        };
        assert_eq!(check(&spoofed), Err(Rejection::NotOurs));
        // A forger that echoes our clock instead of the nonce does no better.
        let echo_t1 = Packet {
            origin: t1,
            ..good.clone()
        };
        assert_eq!(check(&echo_t1), Err(Rejection::NotOurs));

        let unsynchronised = Packet {
            leap: 3,
            ..good.clone()
        };
        assert_eq!(check(&unsynchronised), Err(Rejection::LeapUnsynchronised));
        let kiss = Packet {
            stratum: 0,
            reference_id: *b"RATE",
            ..good.clone()
        };
        assert_eq!(check(&kiss), Err(Rejection::KissOfDeath(*b"RATE")));
        assert!(
            Rejection::KissOfDeath(*b"RATE")
                .to_string()
                .contains("RATE"),
            "the kiss code reaches the operator"
        );
        let stratum_16 = Packet {
            stratum: 16,
            ..good.clone()
        };
        assert_eq!(check(&stratum_16), Err(Rejection::Stratum(16)));
        let client_mode = Packet {
            mode: MODE_CLIENT,
            ..good.clone()
        };
        assert_eq!(check(&client_mode), Err(Rejection::Mode(3)));
        let broadcast = Packet {
            mode: 5,
            ..good.clone()
        };
        assert_eq!(check(&broadcast), Err(Rejection::Mode(5)));
        let no_transmit = Packet {
            transmit: NtpTimestamp(0),
            ..good.clone()
        };
        assert_eq!(check(&no_transmit), Err(Rejection::ZeroTimestamp));
        let version_0 = Packet {
            version: 0,
            ..good.clone()
        };
        assert_eq!(check(&version_0), Err(Rejection::Version(0)));
    }

    #[test]
    fn kernel_verdict_follows_state_status_and_max_error() {
        let synced = KernelReading {
            state: 0,
            status: 0x2001, // STA_PLL | STA_NANO
            max_error_us: 250_000,
            est_error_us: 10,
        };
        assert_eq!(synced.verdict(Duration::from_secs(1)), Ok(()));
        assert_eq!(
            synced.verdict(Duration::from_millis(100)),
            Err("kernel maximum error 250 ms exceeds the accuracy 100 ms".into())
        );
        let unsync = KernelReading {
            status: STA_UNSYNC,
            ..synced
        };
        assert_eq!(
            unsync.verdict(Duration::from_secs(1)),
            Err("kernel reports the clock unsynchronised (STA_UNSYNC)".into())
        );
        let error = KernelReading {
            state: TIME_ERROR,
            ..synced
        };
        assert!(error.verdict(Duration::from_secs(1)).is_err());
        // What this sandbox's kernel reports (no time daemon).
        let sandbox = KernelReading {
            state: TIME_ERROR,
            status: STA_UNSYNC,
            max_error_us: 16_000_000,
            est_error_us: 16_000_000,
        };
        assert!(sandbox.verdict(Duration::from_secs(3600)).is_err());
        // Zero is what systemd-timesyncd leaves after each SNTP answer.
        let timesyncd = KernelReading {
            max_error_us: 0,
            ..synced
        };
        assert!(timesyncd.verdict(Duration::from_secs(1)).is_err());
        let max_only = KernelReading {
            max_error_us: 16_000_000,
            ..synced
        };
        assert_eq!(
            max_only.verdict(Duration::from_secs(1)),
            Err("kernel maximum error 16 s exceeds the accuracy 1 s".into())
        );
    }

    #[test]
    fn durations_read_like_sentences() {
        assert_eq!(human(Duration::from_secs(16)), "16 s");
        assert_eq!(human(Duration::from_millis(2300)), "2.3 s");
        assert_eq!(human(Duration::from_micros(250)), "250 µs");
        assert_eq!(human(Duration::from_nanos(12)), "12 ns");
        assert_eq!(human_signed(-1_500_000), "-1.5 ms");
    }

    /// A real UDP NTP server on loopback whose answers `reply` writes: the attacker's
    /// or the honest server's, as the test needs.
    struct FakeServer {
        addr: String,
        task: tokio::task::JoinHandle<()>,
    }

    impl FakeServer {
        async fn start<F>(reply: F) -> FakeServer
        where
            F: Fn(&Packet, NtpTimestamp) -> Vec<Packet> + Send + 'static,
        {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = socket.local_addr().unwrap().to_string();
            let task = tokio::spawn(async move {
                let mut buf = [0u8; 512];
                loop {
                    let (len, from) = socket.recv_from(&mut buf).await.unwrap();
                    let now = NtpTimestamp::from_system(SystemTime::now()).unwrap();
                    let request = Packet::parse(&buf[..len]).unwrap();
                    for p in reply(&request, now) {
                        socket.send_to(&p.encode(), from).await.unwrap();
                    }
                }
            });
            FakeServer { addr, task }
        }

        /// An honest server whose clock is `ahead` of ours (negative: behind).
        async fn honest(ahead_ms: i64) -> FakeServer {
            FakeServer::start(move |req, now| {
                let shift = Duration::from_millis(ahead_ms.unsigned_abs());
                let t = if ahead_ms >= 0 {
                    now.add(shift)
                } else {
                    NtpTimestamp(now.0.wrapping_sub(now.add(shift).0 - now.0))
                };
                vec![live_answer(req.transmit.0, t)]
            })
            .await
        }
    }

    impl Drop for FakeServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn ntp(servers: &[&FakeServer], interval_ms: u64) -> ClockSource {
        ClockSource::Ntp {
            servers: servers.iter().map(|s| s.addr.clone()).collect(),
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(500),
        }
    }

    #[tokio::test]
    async fn a_good_answer_lets_the_tsa_stamp() {
        let server = FakeServer::honest(0).await;
        let clock = ClockCheck::start(ntp(&[&server], 10_000), Duration::from_secs(1));
        assert!(
            clock
                .now()
                .unwrap_err()
                .reason()
                .contains("no NTP answer yet"),
            "nothing is trusted before the first answer"
        );
        clock.wait_for_polls(1).await;
        let t = clock.now().expect("a good answer within the accuracy");
        assert!(t.duration_since(SystemTime::now()).unwrap_or_default() < Duration::from_secs(1));
        let status = clock.status();
        assert!(status.synchronised, "{status:?}");
        assert_eq!(status.source, "ntp");
        assert_eq!(status.server.as_deref(), Some(server.addr.as_str()));
        // δ/2 + 1 ms (root delay/2) + 1 ms (root dispersion) + the 1 ms server hold.
        assert!(status.error_bound_us.unwrap() < 100_000, "{status:?}");
        let metrics = clock.render_metrics();
        assert!(
            metrics.contains("muhr_tsa_clock_synchronised{source=\"ntp\"} 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("muhr_tsa_clock_ntp_polls_total{source=\"ntp\"} 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("# TYPE muhr_tsa_clock_error_bound_seconds gauge\n"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn an_answer_off_by_more_than_the_accuracy_stops_the_tsa() {
        let server = FakeServer::honest(-5_000).await; // our clock is 5 s ahead
        let clock = ClockCheck::start(ntp(&[&server], 10_000), Duration::from_secs(1));
        clock.wait_for_polls(1).await;
        let why = clock.now().unwrap_err();
        assert!(why.reason().starts_with("NTP error bound 5"), "{why}");
        assert!(why.reason().contains("offset +5"), "{why}");
        assert!(why.reason().contains("exceeds the accuracy 1 s"), "{why}");
        let status = clock.status();
        assert!(!status.synchronised);
        assert!(
            (status.offset_us.unwrap() - 5_000_000).abs() < 10_000,
            "{status:?}"
        );
        let metrics = clock.render_metrics();
        assert!(
            metrics.contains("muhr_tsa_clock_synchronised{source=\"ntp\"} 0\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("muhr_tsa_clock_refusals_total{source=\"ntp\"} 1\n"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn a_spoofed_answer_racing_the_real_one_is_ignored() {
        // An attacker on the path answers first, claiming our (wrong) clock is right: the
        // origin is not our nonce, so the client keeps waiting and takes the real answer.
        let server = FakeServer::start(|req, now| {
            let forged = Packet {
                origin: NtpTimestamp(req.transmit.0.wrapping_add(1)),
                ..live_answer(0, now)
            };
            let honest = live_answer(req.transmit.0, NtpTimestamp(now.0 - (5u64 << 32)));
            vec![forged, honest]
        })
        .await;
        let clock = ClockCheck::start(ntp(&[&server], 10_000), Duration::from_secs(1));
        clock.wait_for_polls(1).await;
        let why = clock.now().unwrap_err();
        assert!(
            why.reason().contains("offset +5"),
            "the real answer decided: {why}"
        );
        let metrics = clock.render_metrics();
        assert!(
            metrics.contains("muhr_tsa_clock_ntp_rejected_answers_total{source=\"ntp\"} 1\n"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn only_spoofed_answers_mean_no_answer() {
        let server = FakeServer::start(|req, now| {
            vec![Packet {
                origin: NtpTimestamp(req.transmit.0 ^ 0xffff),
                ..live_answer(0, now)
            }]
        })
        .await;
        let clock = ClockCheck::start(ntp(&[&server], 10_000), Duration::from_secs(1));
        clock.wait_for_polls(1).await;
        let why = clock.now().unwrap_err();
        assert!(
            why.reason().starts_with("no valid NTP answer since start"),
            "{why}"
        );
        assert!(why.reason().contains("no answer within 500 ms"), "{why}");
        let metrics = clock.render_metrics();
        assert!(
            metrics.contains("muhr_tsa_clock_ntp_failed_polls_total{source=\"ntp\"} 1\n"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn unsynchronised_and_kiss_of_death_servers_are_refused() {
        let leap3 = FakeServer::start(|req, now| {
            vec![Packet {
                leap: 3,
                ..live_answer(req.transmit.0, now)
            }]
        })
        .await;
        let kiss = FakeServer::start(|req, now| {
            vec![Packet {
                stratum: 0,
                reference_id: *b"DENY",
                ..live_answer(req.transmit.0, now)
            }]
        })
        .await;
        let clock = ClockCheck::start(ntp(&[&leap3, &kiss], 10_000), Duration::from_secs(1));
        clock.wait_for_polls(1).await;
        let why = clock.now().unwrap_err();
        assert!(why.reason().contains("leap indicator 3"), "{why}");
        assert!(why.reason().contains("kiss-o'-death DENY"), "{why}");
    }

    #[tokio::test]
    async fn the_best_of_several_servers_decides() {
        let off = FakeServer::honest(4_000).await;
        let good = FakeServer::honest(0).await;
        let clock = ClockCheck::start(ntp(&[&off, &good], 10_000), Duration::from_secs(1));
        clock.wait_for_polls(1).await;
        clock
            .now()
            .expect("the good server's answer has the smaller bound");
        assert_eq!(clock.status().server.as_deref(), Some(good.addr.as_str()));
    }

    #[tokio::test]
    async fn a_verdict_expires_when_the_server_goes_silent() {
        let server = FakeServer::honest(0).await;
        let source = ClockSource::Ntp {
            servers: vec![server.addr.clone()],
            interval: Duration::from_millis(300),
            timeout: Duration::from_millis(50),
        };
        let clock = ClockCheck::start(source, Duration::from_secs(1));
        clock.wait_for_polls(1).await;
        let first = Instant::now();
        clock.now().expect("synchronised");
        drop(server);
        // Lost answers do not stop the TSA at once: the verdict holds for 3 intervals.
        clock.wait_for_polls(2).await;
        clock.now().expect("one lost answer is tolerated");
        tokio::time::sleep(Duration::from_millis(950).saturating_sub(first.elapsed())).await;
        let why = clock.now().unwrap_err();
        assert!(why.reason().starts_with("no fresh NTP answer for"), "{why}");
        assert!(
            why.reason().contains("3 × the 300 ms poll interval"),
            "{why}"
        );
        assert!(why.reason().contains("last poll:"), "{why}");
    }

    #[tokio::test]
    async fn a_step_of_the_system_clock_after_the_answer_is_noticed() {
        // The clock is never stepped here: the reference is moved instead, which is
        // what the check sees when the clock is stepped by that much.
        let server = FakeServer::honest(0).await;
        let clock = ClockCheck::start(ntp(&[&server], 10_000), Duration::from_secs(1));
        clock.wait_for_polls(1).await;
        clock.now().expect("synchronised");
        let Inner::Ntp { shared, .. } = &clock.inner else {
            unreachable!()
        };
        shared
            .step_ref
            .fetch_sub(3_600_000_000_000, Ordering::Relaxed);
        let why = clock.now().unwrap_err();
        assert!(
            why.reason().starts_with("the system clock moved +3600 s"),
            "{why}"
        );
        shared
            .step_ref
            .fetch_add(3_600_000_000_000 - 50_000_000, Ordering::Relaxed);
        clock
            .now()
            .expect("50 ms fits in the margin of a 1 s accuracy");
    }

    #[test]
    fn the_kernel_source_needs_no_runtime_and_follows_adjtimex() {
        let accuracy = Duration::from_secs(1);
        let clock = ClockCheck::start(ClockSource::Kernel, accuracy);
        let reading = KernelReading::read();
        let result = clock.now();
        match reading {
            Ok(r) => assert_eq!(
                result.is_ok(),
                r.verdict(accuracy).is_ok(),
                "{r:?} {result:?}"
            ),
            Err(_) => assert!(result.is_err()),
        }
        assert_eq!(clock.status().source, "kernel");
        assert_eq!(clock.polls(), 0);
    }
}

//! The clock check against real clocks: this kernel's `adjtimex(2)`, and a real NTP
//! server (Debian's chrony) on loopback that is then killed.
//!
//! chrony runs with `-x`, so it never touches the system clock, on a free unprivileged
//! port, so that parallel runs do not clash. Without chronyd installed the test fails:
//! an NTP client only tested against itself proves little.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use muhr_tsa::clock::{ClockCheck, ClockSource, KernelReading};
use tokio::net::UdpSocket;

/// The rule, written out again from adjtimex(2) rather than taken from the crate: the
/// clock is synchronised when the state is not TIME_ERROR (5), STA_UNSYNC (0x40) is
/// clear and maxerror (µs) is within the accuracy.
fn kernel_says_synchronised(r: &KernelReading, accuracy: Duration) -> bool {
    r.state != 5
        && r.status & 0x40 == 0
        && r.max_error_us > 0
        && r.max_error_us as u128 <= accuracy.as_micros()
}

#[test]
fn the_kernel_source_refuses_exactly_when_adjtimex_says_unsynchronised() {
    for accuracy in [
        Duration::from_micros(1),
        Duration::from_secs(1),
        Duration::from_secs(3600),
    ] {
        let clock = ClockCheck::start(ClockSource::Kernel, accuracy);
        let before = KernelReading::read().expect("adjtimex read-only works on Linux");
        let now = clock.now();
        let after = KernelReading::read().expect("adjtimex read-only works on Linux");
        // The kernel's state might change between the readings (a daemon's update):
        // only judge when it did not.
        if kernel_says_synchronised(&before, accuracy) != kernel_says_synchronised(&after, accuracy)
        {
            continue;
        }
        let expected = kernel_says_synchronised(&before, accuracy);
        eprintln!("accuracy {accuracy:?}: adjtimex {before:?}; now() = {now:?}");
        assert_eq!(
            now.is_ok(),
            expected,
            "adjtimex reads {before:?}, accuracy {accuracy:?}, but now() = {now:?}"
        );
        let status = clock.status();
        assert_eq!(status.synchronised, expected, "{status:?}");
        assert_eq!(status.source, "kernel");
        if let Err(why) = now {
            // On this sandbox (no time daemon): TIME_ERROR / STA_UNSYNC, maxerror 16 s.
            let reason = why.reason();
            assert!(
                reason.contains("STA_UNSYNC")
                    || reason.contains("TIME_ERROR")
                    || reason.contains("maximum error"),
                "{reason}"
            );
        }
    }
}

/// chronyd as an unprivileged NTP server on loopback, killed on drop.
struct Chronyd {
    child: Option<Child>,
    dir: PathBuf,
    addr: String,
}

fn find_chronyd() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join("chronyd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chronyd is not installed: the NTP clock check must be tested against a real \
                 NTP server. Install Debian's `chrony` package (apt-get install chrony; \
                 tests/run.sh does it when run as root)."
            )
        })
}

impl Chronyd {
    fn start() -> Chronyd {
        let chronyd = find_chronyd();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port on loopback")
            .port();
        let dir =
            std::env::temp_dir().join(format!("muhr-tsa-chronyd-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                // `local stratum 8`: serve the local clock as if synchronised, with no
                // upstream. `cmdport 0` and `bindcmdaddress /`: no control sockets, which
                // would clash with a system chronyd and parallel tests.
                "port {port}\n\
                 bindaddress 127.0.0.1\n\
                 allow 127.0.0.1\n\
                 local stratum 8\n\
                 cmdport 0\n\
                 bindcmdaddress /\n\
                 pidfile {}\n",
                dir.join("chronyd.pid").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("chronyd.log")).unwrap();
        // -x: never adjust the system clock. -d: foreground, log to stderr. -U: allow a
        // non-root run. -t 60: exit on its own should this process die without Drop.
        let child = Command::new(&chronyd)
            .args(["-x", "-d", "-U", "-t", "60", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", chronyd.display()));
        Chronyd {
            child: Some(child),
            dir,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("chronyd.log")).unwrap_or_default()
    }

    /// Sends raw NTP requests until chrony answers one; returns the answer's header.
    async fn wait_ready(&mut self) -> [u8; 48] {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(&self.addr).await.unwrap();
        let mut request = [0u8; 48];
        request[0] = 0x23; // LI 0, version 4, mode 3 (client)
        request[40..].copy_from_slice(&0x5eed_u64.to_be_bytes());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("chronyd exited ({status}):\n{}", self.log());
            }
            let _ = socket.send(&request).await;
            let mut answer = [0u8; 48];
            if let Ok(Ok(48)) =
                tokio::time::timeout(Duration::from_millis(100), socket.recv(&mut answer)).await
            {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("chronyd did not answer within 5 s:\n{}", self.log());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Chronyd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ntp(server: &str, interval: Duration) -> ClockSource {
    ClockSource::Ntp {
        servers: vec![server.to_string()],
        interval,
        timeout: Duration::from_millis(500),
    }
}

fn short(b: &[u8]) -> f64 {
    f64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])) / 65536.0
}

#[tokio::test]
async fn chrony_vouches_for_the_clock_until_it_dies() {
    let mut chronyd = Chronyd::start();
    let header = chronyd.wait_ready().await;
    eprintln!(
        "chrony answers: leap {}, version {}, mode {}, stratum {}, root delay {} s, \
         root dispersion {} s",
        header[0] >> 6,
        (header[0] >> 3) & 7,
        header[0] & 7,
        header[1],
        short(&header[4..8]),
        short(&header[8..12]),
    );
    assert_eq!(header[1], 8, "local stratum 8");
    assert!(
        short(&header[8..12]) < 0.1,
        "the 1 s accuracy below assumes chrony's root dispersion is small"
    );

    let interval = Duration::from_millis(200);
    let trusting = ClockCheck::start(ntp(&chronyd.addr, interval), Duration::from_secs(1));
    // Chrony's clock is this machine's clock: the offset is only the exchange's noise,
    // and the bound is |offset| + delay/2 + chrony's root distance (0 here).
    let strict = ClockCheck::start(ntp(&chronyd.addr, interval), Duration::from_micros(1));
    trusting.wait_for_polls(1).await;
    strict.wait_for_polls(1).await;

    let status = trusting.status();
    eprintln!("with chrony, accuracy 1 s: {status:?}");
    trusting.now().unwrap_or_else(|why| {
        panic!(
            "chrony on loopback should vouch for the clock within 1 s: {why}\n{}",
            chronyd.log()
        )
    });
    assert!(status.synchronised);
    assert_eq!(status.server.as_deref(), Some(chronyd.addr.as_str()));
    let bound_us = status.error_bound_us.expect("a measured bound");
    assert!(bound_us < 100_000, "a loopback bound of {bound_us} µs");
    let metrics = trusting.render_metrics();
    assert!(
        metrics.contains("muhr_tsa_clock_synchronised{source=\"ntp\"} 1\n"),
        "{metrics}"
    );

    let why = strict
        .now()
        .expect_err("no real exchange is within 1 µs: the strict check must refuse");
    eprintln!("with chrony, accuracy 1 µs: {why}");
    assert!(why.reason().starts_with("NTP error bound"), "{why}");
    assert!(why.reason().contains("exceeds the accuracy 1 µs"), "{why}");
    assert!(!strict.status().synchronised);

    // chrony dies. Answers stop; the last good one stays trusted for 3 intervals, then
    // the TSA must stop stamping.
    chronyd.kill();
    let killed = Instant::now();
    let polls = trusting.polls();
    trusting.wait_for_polls(polls + 1).await;
    let validity = interval * 3;
    tokio::time::sleep((validity + Duration::from_millis(150)).saturating_sub(killed.elapsed()))
        .await;
    let why = trusting
        .now()
        .expect_err("3 intervals after chrony died the verdict must have expired");
    eprintln!("after chrony died: {why}");
    assert!(why.reason().starts_with("no fresh NTP answer for"), "{why}");
    assert!(why.reason().contains("last poll: "), "{why}");
    let status = trusting.status();
    assert!(!status.synchronised, "{status:?}");
    let metrics = trusting.render_metrics();
    assert!(
        metrics.contains("muhr_tsa_clock_synchronised{source=\"ntp\"} 0\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("muhr_tsa_clock_ntp_failed_polls_total{source=\"ntp\"} 0\n"),
        "{metrics}"
    );
}

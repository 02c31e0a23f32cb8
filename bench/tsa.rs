//! `muhr-bench tsa`: time-stamp tokens per second over real HTTP on
//! loopback, next to Muhr's own live OCSP responses (with a nonce: one
//! signature each, like a token) and nginx serving a static file of a
//! token's size, all measured by wrk in the same run, back to back.
//!
//! The server is `muhr serve`'s own ([`muhr::serve::run`], both listeners,
//! every background task) in this process, on the benchmark's installation
//! with the TSA turned on and its clock vouched for by a real NTP server:
//! Debian's chronyd on a free loopback port, never touching the system
//! clock. A TSA without a vouched-for clock answers timeNotAvailable, so
//! every reply is checked while measuring: wrk's Lua reads each reply's
//! status (a granted TimeStampResp carrying a token; a successful
//! OCSPResponse), the TSA's counters must show no refusal, the token log
//! must have grown by the replies wrk counted, and the OCSP responder must
//! have signed every reply (none from its cache). Any reply that is not a
//! granted token fails the run (exit 1) after the report.
//!
//! Each TSA request is a new TimeStampReq (random imprint and nonce, made
//! from OpenSSL's), each OCSP request carries a new nonce. `--breakdown`
//! then times a token's parts in this process, without HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use der::Decode;
use serde::Deserialize;
use spki::SubjectPublicKeyInfoOwned;

use crate::http::Conn;
use crate::login::cpu;
use muhr::Fail;
use muhr::app::App;

/// Debian's SoftHSM2 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The key store of the benchmark's own installation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyChoice {
    /// Encrypted key files (the development default).
    Software,
    /// A SoftHSM2 token made for the run, through PKCS#11.
    Softhsm,
}

pub struct Options {
    pub seconds: u64,
    pub warmup: u64,
    pub connections: u32,
    pub threads: u32,
    pub rounds: u32,
    pub breakdown: bool,
    pub json: bool,
}

/// What [`own_installation`] made: the configuration to load, and the
/// SoftHSM2 configuration the process must see as `SOFTHSM2_CONF`.
pub struct Installation {
    pub config: PathBuf,
    pub softhsm_conf: Option<PathBuf>,
}

/// Writes the configuration of the benchmark's own installation into its
/// data directory `dir`: `keys` (a SoftHSM2 token of its own, made once
/// per directory) and `database` (default SQLite in `dir`). Runs before
/// the runtime starts, as PKCS#11 reads `SOFTHSM2_CONF` from the
/// environment.
pub fn own_installation(
    dir: &Path,
    keys: KeyChoice,
    database: Option<&str>,
) -> Result<Installation, Fail> {
    let io = |p: &Path, e: std::io::Error| Fail::invalid(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let url = database.unwrap_or("sqlite://muhr.db");
    let mut text = format!(
        "# Written by muhr-bench tsa: a benchmark's installation, never a real one.\n\
         [database]\nurl = {}\n\n[key_store]\n",
        quote(url)
    );
    let mut softhsm_conf = None;
    match keys {
        KeyChoice::Software => {
            text.push_str("backend = \"software\"\ngenerate_passphrase = true\n")
        }
        KeyChoice::Softhsm => {
            if !Path::new(SOFTHSM_MODULE).exists() {
                return Err(Fail::invalid(format!(
                    "--keys softhsm: {SOFTHSM_MODULE} is missing (apt-get install softhsm2)"
                )));
            }
            let hsm = dir.join("softhsm");
            let tokens = hsm.join("tokens");
            let conf = hsm.join("softhsm2.conf");
            let pin_file = hsm.join("pin");
            if !conf.exists() {
                std::fs::create_dir_all(&tokens).map_err(|e| io(&tokens, e))?;
                std::fs::write(
                    &conf,
                    format!(
                        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                        tokens.display()
                    ),
                )
                .map_err(|e| io(&conf, e))?;
                let mut pin = [0u8; 12];
                aws_lc_rs::rand::fill(&mut pin).map_err(|_| Fail::internal("no randomness"))?;
                let pin = hex::encode(pin);
                let out = Command::new("softhsm2-util")
                    .env("SOFTHSM2_CONF", &conf)
                    .args(["--init-token", "--free", "--label", "muhr-bench", "--pin"])
                    .arg(&pin)
                    .args(["--so-pin", &format!("so-{pin}")])
                    .output()
                    .map_err(|e| {
                        Fail::invalid(format!("softhsm2-util: {e} (apt-get install softhsm2)"))
                    })?;
                if !out.status.success() {
                    return Err(Fail::invalid(format!(
                        "softhsm2-util --init-token: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                std::fs::write(&pin_file, format!("{pin}\n")).map_err(|e| io(&pin_file, e))?;
            }
            // Eight sessions, as examples/production.toml.
            text.push_str(&format!(
                "backend = \"pkcs11\"\nmodule = {}\ntoken_label = \"muhr-bench\"\npin_file = {}\nsessions = 8\n",
                quote(SOFTHSM_MODULE),
                quote(&pin_file.display().to_string())
            ));
            softhsm_conf = Some(conf);
        }
    }
    let config = dir.join("bench-tsa.toml");
    std::fs::write(&config, text).map_err(|e| io(&config, e))?;
    Ok(Installation {
        config,
        softhsm_conf,
    })
}

/// A program on the PATH or at one of `paths`.
fn program(name: &str, paths: &[&str], package: &str) -> Result<PathBuf, Fail> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    });
    on_path
        .or_else(|| paths.iter().map(PathBuf::from).find(|p| p.is_file()))
        .ok_or_else(|| {
            Fail::invalid(format!(
                "{name} is needed by this benchmark: apt-get install {package}"
            ))
        })
}

fn free_tcp_port() -> Result<u16, Fail> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Fail::internal(format!("no free port: {e}")))
}

/// The run's files (queries, scripts, the static file nginx serves),
/// readable by nginx's workers; removed afterwards.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Result<Self, Fail> {
        use std::os::unix::fs::PermissionsExt;
        let mut id = [0u8; 8];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| Fail::internal("no randomness"))?;
        let dir = std::env::temp_dir().join(format!("muhr-bench-tsa-{}", hex::encode(id)));
        std::fs::create_dir_all(dir.join("www"))
            .map_err(|e| Fail::invalid(format!("{}: {e}", dir.display())))?;
        for d in [dir.clone(), dir.join("www")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Fail::invalid(format!("{}: {e}", d.display())))?;
        }
        Ok(Self(dir))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, content: impl AsRef<[u8]>) -> Result<PathBuf, Fail> {
        let p = self.path(name);
        std::fs::write(&p, content).map_err(|e| Fail::invalid(format!("{}: {e}", p.display())))?;
        Ok(p)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// chronyd serving this machine's clock on a free loopback port, without
/// touching the clock (as tests/timestamping.rs starts it); killed on drop.
struct Chronyd {
    child: Child,
    addr: String,
}

impl Chronyd {
    fn start(program: &Path, dir: &Path) -> Result<Self, Fail> {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| Fail::internal(format!("no free UDP port: {e}")))?
            .port();
        std::fs::create_dir_all(dir).map_err(|e| Fail::invalid(format!("{e}")))?;
        let conf = dir.join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\n\
                 cmdport 0\nbindcmdaddress /\npidfile {}\n",
                dir.join("chronyd.pid").display()
            ),
        )
        .map_err(|e| Fail::invalid(format!("{}: {e}", conf.display())))?;
        let log = std::fs::File::create(dir.join("chronyd.log"))
            .map_err(|e| Fail::invalid(format!("{e}")))?;
        let child = Command::new(program)
            .args(["-x", "-d", "-U", "-t", "600", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Fail::invalid(format!("chronyd: {e}")))?;
        Ok(Self {
            child,
            addr: format!("127.0.0.1:{port}"),
        })
    }
}

impl Drop for Chronyd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx (2 workers, as ../shared/bench/peers runs it) serving `www` on
/// a loopback port, in the foreground as this process's child; stopped
/// (SIGQUIT, then SIGKILL) on drop.
struct Nginx {
    child: Child,
}

impl Nginx {
    fn start(program: &Path, dir: &Path, www: &Path, port: u16) -> Result<Self, Fail> {
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| Fail::invalid(format!("{e}")))?;
        let t = |n: &str| tmp.join(n).display().to_string();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 2; daemon off; pid {pid}; error_log {err};\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{ access_log off;\n  client_body_temp_path {body}; proxy_temp_path {proxy};\n  \
                 fastcgi_temp_path {fastcgi}; uwsgi_temp_path {uwsgi}; scgi_temp_path {scgi};\n  \
                 server {{ listen 127.0.0.1:{port}; root {www};\n    \
                 location / {{ default_type application/timestamp-reply; }} }} }}\n",
                pid = dir.join("nginx.pid").display(),
                err = dir.join("error.log").display(),
                body = t("body"),
                proxy = t("proxy"),
                fastcgi = t("fastcgi"),
                uwsgi = t("uwsgi"),
                scgi = t("scgi"),
                www = www.display(),
            ),
        )
        .map_err(|e| Fail::invalid(format!("{}: {e}", conf.display())))?;
        let child = Command::new(program)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Fail::invalid(format!("nginx: {e}")))?;
        Ok(Self { child })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: the master stops its workers, then itself.
        // SAFETY: kill(2) on the pid of our own child, not yet waited for.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGQUIT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TimeStampResp that grants a token: SEQUENCE { PKIStatusInfo
/// SEQUENCE { INTEGER 0 (granted) ... }, TimeStampToken SEQUENCE }.
/// The same check as the Lua scripts' `granted`.
pub fn is_granted(b: &[u8]) -> bool {
    fn tlv(b: &[u8], i: usize) -> Option<(usize, usize)> {
        let l = *b.get(i + 1)? as usize;
        if l < 0x80 {
            return Some((i + 2, i + 2 + l));
        }
        let n = l - 0x80;
        let mut len = 0usize;
        for k in 0..n {
            len = len * 256 + *b.get(i + 2 + k)? as usize;
        }
        Some((i + 2 + n, i + 2 + n + len))
    }
    (|| {
        if b.first()? != &0x30 {
            return None;
        }
        let (c, e) = tlv(b, 0)?;
        if e != b.len() || b.get(c)? != &0x30 {
            return None;
        }
        let (sc, se) = tlv(b, c)?;
        Some(b.get(sc..sc + 3)? == [0x02, 0x01, 0x00] && b.get(se)? == &0x30)
    })()
    .unwrap_or(false)
}

/// What wrk asks, and what each reply must be.
enum Ask<'a> {
    /// POST /tsa: TimeStampReqs of `head` ‖ a random SHA-256 imprint ‖ a
    /// random 8-octet nonce ‖ `tail` (each request about another document,
    /// as real clients' are); a granted token back.
    Tsa { head: &'a Path, tail: &'a Path },
    /// POST /ocsp: `prefix` ‖ a random 16-octet nonce (answered live);
    /// a successful response back.
    Ocsp { prefix: &'a Path },
    /// GET of a static file of `length` octets.
    Static { length: usize },
}

/// The wrk script for `ask`; `done` prints a JSON summary on a line of its
/// own. TSA and OCSP requests are made alike (a Lua `request` per request).
fn lua(ask: &Ask) -> String {
    let mut s = String::from(
        r#"local char, random = string.char, math.random
local function read(p) local f = assert(io.open(p, "rb")); local s = f:read("*a"); f:close(); return s end
-- n random octets; the first in 1..127 when `positive` (a DER INTEGER's
-- minimal, positive encoding).
local function octets(n, positive)
  local t = {}
  for i = 1, n do t[i] = random(0, 255) end
  if positive then t[1] = random(1, 127) end
  return char(unpack(t))
end
function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 1000003)
end
-- DER: where an element's content starts, and where the element ends.
local function tlv(b, i)
  local l = b:byte(i + 1)
  if not l then return nil, nil end
  if l < 0x80 then return i + 2, i + 2 + l end
  local n, len = l - 0x80, 0
  for k = 1, n do len = len * 256 + (b:byte(i + 1 + k) or 0) end
  return i + 2 + n, i + 2 + n + len
end
"#,
    );
    match ask {
        Ask::Tsa { head, tail } => {
            s.push_str(&format!(
                r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/timestamp-query"
local head, tail = read([[{}]]), read([[{}]])
request = function()
  return wrk.format(nil, nil, nil, head .. octets(32) .. "\2\8" .. octets(8, true) .. tail)
end
-- TimeStampResp {{ PKIStatusInfo {{ INTEGER 0 (granted) }}, TimeStampToken }}
local function good(b)
  if not b or b:byte(1) ~= 0x30 then return false end
  local c, e = tlv(b, 1)
  if e ~= #b + 1 or b:byte(c) ~= 0x30 then return false end
  local sc, se = tlv(b, c)
  return b:byte(sc) == 0x02 and b:byte(sc + 1) == 0x01 and b:byte(sc + 2) == 0 and b:byte(se) == 0x30
end
"#,
                head.display(),
                tail.display()
            ));
        }
        Ask::Ocsp { prefix } => {
            s.push_str(&format!(
                r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/ocsp-request"
local prefix = read([[{}]])
request = function()
  return wrk.format(nil, nil, nil, prefix .. octets(16))
end
-- OCSPResponse {{ ENUMERATED 0 (successful), [0] responseBytes }}
local function good(b)
  if not b or b:byte(1) ~= 0x30 then return false end
  local c, e = tlv(b, 1)
  return e == #b + 1 and b:byte(c) == 0x0a and b:byte(c + 1) == 0x01 and b:byte(c + 2) == 0
    and b:byte(c + 3) == 0xa0
end
"#,
                prefix.display()
            ));
        }
        Ask::Static { length } => s.push_str(&format!(
            "local function good(b) return b ~= nil and #b == {length} end\n"
        )),
    };
    s.push_str(
        r#"local threads = {}
function setup(thread) table.insert(threads, thread) end
bad = 0
non200 = 0
function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1
  elseif not good(body) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local b, n = 0, 0
  for _, t in ipairs(threads) do b = b + t:get("bad"); n = n + t:get("non200") end
  local e = summary.errors
  io.write(string.format('MUHR_WRK {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"bad":%.0f,"non200":%.0f,' ..
    '"connect_errors":%.0f,"read_errors":%.0f,"write_errors":%.0f,"timeouts":%.0f,"status_errors":%.0f,' ..
    '"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, b, n, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"#,
    );
    s
}

/// OpenSSL's TimeStampReq `q` cut around its imprint and nonce: the head
/// (up to the imprint's octets, its length fixed for an 8-octet nonce) and
/// the tail (what follows the nonce: certReq).
fn tsq_template(q: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Fail> {
    let bad = || Fail::internal("openssl ts -query made an unexpected request");
    if q.len() < 60 || q[0] != 0x30 || q[1] >= 0x80 || q[1] as usize + 2 != q.len() {
        return Err(bad());
    }
    let at = q
        .windows(2)
        .position(|w| w == [0x04, 0x20])
        .ok_or_else(bad)?
        + 2;
    let nonce = at + 32;
    if q.get(nonce) != Some(&0x02) {
        return Err(bad());
    }
    let n = *q.get(nonce + 1).ok_or_else(bad)? as usize;
    let tail = q.get(nonce + 2 + n..).ok_or_else(bad)?.to_vec();
    let mut head = vec![0x30, (q.len() - 2 - n + 8) as u8];
    head.extend_from_slice(&q[2..at]);
    Ok((head, tail))
}

/// A TimeStampReq from the template, as the Lua script makes them.
fn tsq_from(head: &[u8], tail: &[u8]) -> Result<Vec<u8>, Fail> {
    let mut r = [0u8; 40];
    aws_lc_rs::rand::fill(&mut r).map_err(|_| Fail::internal("no randomness"))?;
    r[32] = (r[32] & 0x7f).max(1);
    Ok([head, &r[..32], &[0x02, 0x08], &r[32..], tail].concat())
}

/// What one wrk run saw.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
struct Run {
    requests: u64,
    duration_us: u64,
    bytes: u64,
    /// Replies that failed the check (not a granted token, not a
    /// successful OCSP response, not the static file).
    bad: u64,
    non200: u64,
    connect_errors: u64,
    read_errors: u64,
    write_errors: u64,
    timeouts: u64,
    status_errors: u64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
    mean_us: f64,
    /// CPU of the server's own processes per request: this process for
    /// Muhr (SQLite inside it, PostgreSQL not), nginx's master and workers.
    #[serde(default)]
    server_cpu_us_per_request: f64,
    /// CPU of the whole machine but wrk's per request: the server, its
    /// database, the kernel's writeback and journal threads, and anything
    /// else running.
    #[serde(default)]
    machine_cpu_us_per_request: f64,
    #[serde(default)]
    wrk_cpu_us_per_request: f64,
    #[serde(skip)]
    wrk_ticks: u64,
}

impl Run {
    fn per_s(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    fn per_request(&self, ticks: u64) -> f64 {
        ticks as f64 * 1e6 / cpu::TICKS_PER_S / self.requests.max(1) as f64
    }

    /// Replies that failed their check, and requests that got no reply at
    /// all (a stalled TSA shows only as timeouts).
    fn failures(&self) -> u64 {
        self.bad
            + self.non200
            + self.status_errors
            + self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.timeouts
    }
}

async fn wrk(
    o: &Options,
    seconds: u64,
    script: &Path,
    url: &str,
    connections: u32,
) -> Result<Run, Fail> {
    let (m0, c0, s0) = (cpu::machine(), cpu::children(), cpu::own());
    let out = tokio::process::Command::new("wrk")
        .arg(format!("-t{}", o.threads.min(connections)))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Fail::invalid(format!("wrk: {e} (apt-get install wrk)")))?;
    let (m1, c1, s1) = (cpu::machine(), cpu::children(), cpu::own());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("MUHR_WRK "))
        .ok_or_else(|| {
            Fail::internal(format!(
                "wrk printed no summary ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        })?;
    let mut run: Run = serde_json::from_str(line)
        .map_err(|e| Fail::internal(format!("wrk's summary {line:?}: {e}")))?;
    let wrk_ticks = c1.saturating_sub(c0);
    run.server_cpu_us_per_request = run.per_request(s1.saturating_sub(s0));
    run.machine_cpu_us_per_request =
        run.per_request(m1.saturating_sub(m0).saturating_sub(wrk_ticks));
    run.wrk_cpu_us_per_request = run.per_request(wrk_ticks);
    run.wrk_ticks = wrk_ticks;
    Ok(run)
}

/// Runs `openssl` with `args`; its stdout and stderr together.
fn openssl(args: &[&str]) -> Result<(bool, String), Fail> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .map_err(|e| Fail::invalid(format!("openssl: {e} (apt-get install openssl)")))?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn path_str(p: &Path) -> Result<&str, Fail> {
    p.to_str()
        .ok_or_else(|| Fail::invalid(format!("{}: not UTF-8", p.display())))
}

async fn post(port: u16, path: &str, content_type: &str, body: &[u8]) -> Result<Vec<u8>, Fail> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| Fail::internal(format!("connect: {e}")))?;
    let (status, reply) = Conn::new(tcp)
        .send("POST", path, Some(content_type), &[], body)
        .await?;
    if status != 200 {
        return Err(Fail::internal(format!(
            "POST {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&reply)
        )));
    }
    Ok(reply)
}

async fn metrics(port: u16) -> Result<String, Fail> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| Fail::internal(format!("connect: {e}")))?;
    let (_, body) = Conn::new(tcp)
        .send("GET", "/metrics", None, &[], &[])
        .await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A counter's value in `/metrics`.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// The TSA's refusals so far, all reasons.
fn refusals(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("muhr_tsa_rejections_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits for the server, then for its TSA to grant (its clock check must
/// have heard from chronyd first); returns a granted reply.
async fn first_token(port: u16, query: &[u8]) -> Result<Vec<u8>, Fail> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = match post(port, "/tsa", "application/timestamp-query", query).await {
            Ok(reply) if is_granted(&reply) => return Ok(reply),
            Ok(reply) => format!("refused: {}", String::from_utf8_lossy(&reply)),
            Err(e) => e.message,
        };
        if Instant::now() > deadline {
            return Err(Fail::internal(format!(
                "the TSA granted no token within 60 s ({last})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The benchmark: serves `app` as `muhr serve` does, with the TSA on, and
/// measures it until done; the server stops with the run.
pub async fn run(mut app: App, o: Options) -> Result<(), Fail> {
    if o.seconds == 0 || o.connections == 0 || o.threads == 0 || o.rounds == 0 {
        return Err(Fail::invalid(
            "--seconds, --connections, --threads and --rounds must be at least 1",
        ));
    }
    program("wrk", &[], "wrk")?;
    program("openssl", &[], "openssl")?;
    let nginx = program("nginx", &["/usr/sbin/nginx"], "nginx-light")?;
    let chronyd = program(
        "chronyd",
        &["/usr/sbin/chronyd", "/sbin/chronyd", "/usr/bin/chronyd"],
        "chrony",
    )?;
    let work = WorkDir::new()?;
    let ntp = Chronyd::start(&chronyd, &work.path("chrony"))?;
    // The TSA, its clock vouched for by chronyd (polled every second; an
    // answer counts for three polls).
    let t = &mut app.config.tsa;
    t.enabled = true;
    t.clock.source = "ntp".into();
    t.clock.ntp_servers = vec![ntp.addr.clone()];
    // Answers stay valid for 3 intervals: 12 s, as in the tests, since
    // wrk and the server saturate both cores and delay the polls.
    t.clock.ntp_interval_seconds = 4;
    t.validate()
        .map_err(|e| Fail::invalid(format!("[tsa]: {e}")))?;

    // A citizen's certificate to ask OCSP about, and the CA certificates
    // the replies are checked against.
    let ca = app.ca().await?;
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
        .map_err(|_| Fail::internal("key generation"))?;
    let spki = key
        .public_key()
        .as_der()
        .map_err(|_| Fail::internal("public key"))?;
    let issued = ca
        .issue(muhr_ca::Request {
            profile: "individual-auth".into(),
            fields: [
                (
                    "pinfl",
                    muhr_policies::identity::with_check_digit("3150585900001").as_str(),
                ),
                ("surname", "BENCH"),
                ("given_name", "TSA"),
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
        .await?;
    let root = work.write("root.pem", ca.root.pem())?;
    let issuing = work.write("issuing.pem", ca.issuing.pem())?;
    let cert = work.write(
        "citizen.pem",
        muhr_pkix::pem::encode("CERTIFICATE", &issued.der),
    )?;
    drop(ca);

    // The requests: a TimeStampReq as OpenSSL makes it (SHA-256, a nonce,
    // certReq), and an OCSP request with a nonce (answered live).
    let document = work.write(
        "document.txt",
        "Shartnoma: Toshkent, 2026-yil 1-dekabr. Tomonlar quyidagilarga kelishdilar.\n",
    )?;
    let tsq = work.path("request.tsq");
    let (ok, text) = openssl(&[
        "ts",
        "-query",
        "-data",
        path_str(&document)?,
        "-sha256",
        "-cert",
        "-out",
        path_str(&tsq)?,
    ])?;
    if !ok {
        return Err(Fail::internal(format!("openssl ts -query: {text}")));
    }
    let ocsp_req = work.path("request.ocsp");
    let (ok, text) = openssl(&[
        "ocsp",
        "-issuer",
        path_str(&issuing)?,
        "-cert",
        path_str(&cert)?,
        "-reqout",
        path_str(&ocsp_req)?,
    ])?;
    if !ok {
        return Err(Fail::internal(format!("openssl ocsp -reqout: {text}")));
    }
    let query = std::fs::read(&tsq).map_err(|e| Fail::internal(e.to_string()))?;
    let ocsp_body = std::fs::read(&ocsp_req).map_err(|e| Fail::internal(e.to_string()))?;

    let tsa_config = app
        .config
        .tsa
        .validate()
        .map_err(|e| Fail::invalid(format!("[tsa]: {e}")))?;
    let clock_source = app
        .config
        .tsa
        .clock_source()
        .map_err(|e| Fail::invalid(format!("[tsa.clock]: {e}")))?;
    let keys = app.keys.clone();
    let store = app.store.clone();
    let database = app.store.backend().name().to_string();
    let key_store = app.keys.describe();
    let port = free_tcp_port()?;
    let mtls_port = free_tcp_port()?;
    let serve = muhr::serve::run(
        app,
        Some(format!("127.0.0.1:{port}")),
        Some(format!("127.0.0.1:{mtls_port}")),
    );
    let setup = Setup {
        work: &work,
        nginx: &nginx,
        port,
        query,
        ocsp_body,
        ocsp_req,
        document,
        root,
        issuing,
        store,
        keys,
        tsa_config,
        clock_source,
        database,
        key_store,
    };
    let result = tokio::select! {
        r = serve => Err(Fail::internal(format!(
            "the server stopped: {}",
            r.err().map(|f| f.message).unwrap_or_default()
        ))),
        r = measure(&o, setup) => r,
    };
    drop(ntp);
    result
}

struct Setup<'a> {
    work: &'a WorkDir,
    nginx: &'a Path,
    port: u16,
    query: Vec<u8>,
    ocsp_body: Vec<u8>,
    ocsp_req: PathBuf,
    document: PathBuf,
    root: PathBuf,
    issuing: PathBuf,
    store: muhr_store::Store,
    keys: Arc<dyn muhr_hsm::KeyStore>,
    tsa_config: muhr_tsa::Config,
    clock_source: muhr_tsa::clock::ClockSource,
    database: String,
    key_store: String,
}

async fn measure(o: &Options, s: Setup<'_>) -> Result<(), Fail> {
    let work = s.work;
    let port = s.port;
    // One reply of each kind checked by OpenSSL before the run.
    let sample = first_token(port, &s.query).await?;
    let sample_tsr = work.write("sample.tsr", &sample)?;
    let (_, text) = openssl(&["ts", "-reply", "-in", path_str(&sample_tsr)?, "-text"])?;
    if !text.contains("Status: Granted") || !text.contains("Nonce: 0x") {
        return Err(Fail::internal(format!(
            "openssl ts -reply: not a granted token:\n{text}"
        )));
    }
    let (_, text) = openssl(&[
        "ts",
        "-verify",
        "-data",
        path_str(&s.document)?,
        "-in",
        path_str(&sample_tsr)?,
        "-CAfile",
        path_str(&s.root)?,
        "-untrusted",
        path_str(&s.issuing)?,
    ])?;
    if !text.contains("Verification: OK") {
        return Err(Fail::internal(format!("openssl ts -verify:\n{text}")));
    }
    let ocsp_sample = post(port, "/ocsp", "application/ocsp-request", &s.ocsp_body).await?;
    let ocsp_sample_file = work.write("sample.ocsp", &ocsp_sample)?;
    let (_, text) = openssl(&[
        "ocsp",
        "-reqin",
        path_str(&s.ocsp_req)?,
        "-respin",
        path_str(&ocsp_sample_file)?,
        "-CAfile",
        path_str(&s.root)?,
        "-verify_other",
        path_str(&s.issuing)?,
        "-resp_text",
    ])?;
    // The request's nonce echoed (OpenSSL compares them), so answered live.
    if !text.contains("Response verify OK")
        || !text.contains("Cert Status: good")
        || !text.contains("OCSP Nonce")
        || text.contains("Nonce Verify error")
    {
        return Err(Fail::internal(format!(
            "the OCSP reply is not a good, verified, live (nonce) response:\n{text}"
        )));
    }
    // nginx serves a file of a token reply's size: the sample itself.
    let static_file = work.path("www/r.tsr");
    std::fs::write(&static_file, &sample).map_err(|e| Fail::internal(e.to_string()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&static_file, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Fail::internal(e.to_string()))?;
    }
    // Requests made per request by wrk's Lua, from OpenSSL's: checked once.
    let (head, tail) = tsq_template(&s.query)?;
    let made = tsq_from(&head, &tail)?;
    if !is_granted(&post(port, "/tsa", "application/timestamp-query", &made).await?) {
        return Err(Fail::internal(
            "a request made like the Lua script's was not granted",
        ));
    }
    let nonce_at = s.ocsp_body.len().saturating_sub(18);
    if s.ocsp_body.get(nonce_at..nonce_at + 2) != Some(&[0x04, 0x10][..]) {
        return Err(Fail::internal(
            "openssl ocsp made a request without a 16-octet nonce at its end",
        ));
    }
    let head_tail = (head.clone(), tail.clone());
    let head = work.write("tsq.head", head)?;
    let tail = work.write("tsq.tail", tail)?;
    let prefix = work.write("ocsp.prefix", &s.ocsp_body[..nonce_at + 2])?;
    let tsa_lua = work.write(
        "tsa.lua",
        lua(&Ask::Tsa {
            head: &head,
            tail: &tail,
        }),
    )?;
    let ocsp_lua = work.write("ocsp.lua", lua(&Ask::Ocsp { prefix: &prefix }))?;
    let static_lua = work.write(
        "static.lua",
        lua(&Ask::Static {
            length: sample.len(),
        }),
    )?;
    let tsa_url = format!("http://127.0.0.1:{port}/tsa");
    let ocsp_url = format!("http://127.0.0.1:{port}/ocsp");
    let nginx_port = free_tcp_port()?;
    let nginx_url = format!("http://127.0.0.1:{nginx_port}/r.tsr");

    // Counted from here: every token wrk is granted must be in the log.
    let before = metrics(port).await?;
    let refused_before = refusals(&before);
    let signed_before = counter(&before, "muhr_ocsp_signed_total");
    let cache_hits_before = counter(&before, "muhr_ocsp_cache_hits_total");
    let logged_before = s
        .store
        .timestamp_token_count()
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    let mut tsa_runs = 0u64;
    let mut tsa_replies = 0u64;
    let mut ocsp_replies = 0u64;
    let mut failures = 0u64;
    let mut check = |r: &Run, kind: &str| {
        failures += r.failures();
        match kind {
            "tsa" => {
                tsa_runs += 1;
                tsa_replies += r.requests;
            }
            "ocsp" => ocsp_replies += r.requests,
            _ => {}
        }
    };
    if o.warmup > 0 {
        let r = wrk(o, o.warmup, &tsa_lua, &tsa_url, o.connections).await?;
        check(&r, "tsa");
        let r = wrk(o, o.warmup, &ocsp_lua, &ocsp_url, o.connections).await?;
        check(&r, "ocsp");
    }
    let mut rounds = Vec::new();
    for _ in 0..o.rounds {
        let tsa = wrk(o, o.seconds, &tsa_lua, &tsa_url, o.connections).await?;
        check(&tsa, "tsa");
        let ocsp = wrk(o, o.seconds, &ocsp_lua, &ocsp_url, o.connections).await?;
        check(&ocsp, "ocsp");
        // nginx runs only for its own measurement; its CPU (master and
        // workers) is this process's children's once it has stopped.
        let children_before = cpu::children();
        let server = Nginx::start(s.nginx, &work.path("nginx"), &work.path("www"), nginx_port)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = match tokio::net::TcpStream::connect(("127.0.0.1", nginx_port)).await {
                Ok(tcp) => Conn::new(tcp)
                    .send("GET", "/r.tsr", None, &[], &[])
                    .await
                    .is_ok_and(|(status, body)| status == 200 && body == sample),
                Err(_) => false,
            };
            if up {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(work.path("nginx/error.log")).unwrap_or_default();
                return Err(Fail::internal(format!(
                    "nginx did not serve the file within 10 s: {log}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut static_run = wrk(o, o.seconds, &static_lua, &nginx_url, o.connections).await?;
        drop(server);
        let nginx_ticks = cpu::children()
            .saturating_sub(children_before)
            .saturating_sub(static_run.wrk_ticks);
        static_run.server_cpu_us_per_request = static_run.per_request(nginx_ticks);
        check(&static_run, "static");
        rounds.push([tsa, ocsp, static_run]);
    }
    // Replies in flight when wrk stopped are logged too: give their
    // group commit a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logged = s
        .store
        .timestamp_token_count()
        .await
        .map_err(|e| Fail::internal(e.to_string()))?
        - logged_before;
    let after = metrics(port).await?;
    let refused = refusals(&after) - refused_before;
    let per_batch = (counter(&after, "muhr_tsa_log_tokens_total")
        - counter(&before, "muhr_tsa_log_tokens_total")) as f64
        / (counter(&after, "muhr_tsa_log_batches_total")
            - counter(&before, "muhr_tsa_log_batches_total"))
        .max(1) as f64;
    // Every OCSP reply counted was signed for its request, none cached.
    let ocsp_signed = counter(&after, "muhr_ocsp_signed_total") - signed_before;
    let ocsp_cached = counter(&after, "muhr_ocsp_cache_hits_total") - cache_hits_before;
    // At most one reply per connection is lost when wrk closes them.
    let in_flight = tsa_runs * u64::from(o.connections);
    let log_ok = logged as u64 >= tsa_replies && logged as u64 <= tsa_replies + in_flight;

    let sum = |k: usize| -> Run {
        let mut t = Run::default();
        for r in &rounds {
            t.requests += r[k].requests;
            t.duration_us += r[k].duration_us;
        }
        let n = rounds.len() as f64;
        let mean = |f: fn(&Run) -> f64| rounds.iter().map(|r| f(&r[k])).sum::<f64>() / n;
        t.p50_us = mean(|r| r.p50_us);
        t.p99_us = mean(|r| r.p99_us);
        t.server_cpu_us_per_request = mean(|r| r.server_cpu_us_per_request);
        t.machine_cpu_us_per_request = mean(|r| r.machine_cpu_us_per_request);
        t.wrk_cpu_us_per_request = mean(|r| r.wrk_cpu_us_per_request);
        t
    };
    let (tsa, ocsp, nginx) = (sum(0), sum(1), sum(2));
    let parts = if o.breakdown {
        Some(breakdown(&s, &head_tail).await?)
    } else {
        None
    };
    let ratio = tsa.per_s() / ocsp.per_s().max(1.0);
    let ms = |us: f64| us / 1000.0;
    if o.json {
        let runs: Vec<_> = rounds
            .iter()
            .map(|r| serde_json::json!({ "tsa": r[0], "ocsp_live": r[1], "nginx_static": r[2] }))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "tokens_per_s": tsa.per_s().round(),
                "ocsp_live_per_s": ocsp.per_s().round(),
                "nginx_static_per_s": nginx.per_s().round(),
                "ratio_tsa_ocsp_live": (ratio * 1000.0).round() / 1000.0,
                "ratio_tsa_nginx": (tsa.per_s() / nginx.per_s().max(1.0) * 1000.0).round() / 1000.0,
                "tsa_p50_ms": ms(tsa.p50_us), "tsa_p99_ms": ms(tsa.p99_us),
                "ocsp_p50_ms": ms(ocsp.p50_us), "ocsp_p99_ms": ms(ocsp.p99_us),
                "nginx_p50_ms": ms(nginx.p50_us), "nginx_p99_ms": ms(nginx.p99_us),
                "tsa_server_cpu_us_per_token": tsa.server_cpu_us_per_request.round(),
                "ocsp_server_cpu_us_per_response": ocsp.server_cpu_us_per_request.round(),
                "nginx_cpu_us_per_request": nginx.server_cpu_us_per_request.round(),
                "tsa_machine_cpu_us_per_token": tsa.machine_cpu_us_per_request.round(),
                "ocsp_machine_cpu_us_per_response": ocsp.machine_cpu_us_per_request.round(),
                "nginx_machine_cpu_us_per_request": nginx.machine_cpu_us_per_request.round(),
                "breakdown": parts,
                "tokens_granted": tsa_replies, "tokens_logged": logged,
                "tokens_per_batch": round1(per_batch),
                "replies_failed": failures, "tsa_refusals": refused,
                "ocsp_replies": ocsp_replies, "ocsp_signed": ocsp_signed,
                "seconds": o.seconds, "warmup": o.warmup, "rounds": o.rounds,
                "connections": o.connections, "threads": o.threads.min(o.connections),
                "database": s.database, "key_store": s.key_store, "static_bytes": sample.len(),
                "runs": runs,
            })
        );
    } else {
        println!(
            "time-stamping over HTTP on loopback: wrk, {} threads, {} connections, {} s each, {} round(s) ({}, {})",
            o.threads.min(o.connections),
            o.connections,
            o.seconds,
            o.rounds,
            s.database,
            s.key_store
        );
        let line = |what: &str, unit: &str, r: &Run| {
            println!(
                "  {what:<24} {:>7.0} {unit:<12} p50 {:.2} ms, p99 {:.2} ms; CPU per request: server {:.0} µs, machine but wrk {:.0} µs",
                r.per_s(),
                ms(r.p50_us),
                ms(r.p99_us),
                r.server_cpu_us_per_request,
                r.machine_cpu_us_per_request,
            )
        };
        line("TSA, POST /tsa", "tokens/s", &tsa);
        line("OCSP live, POST /ocsp", "responses/s", &ocsp);
        line(
            &format!("nginx, static {} B", sample.len()),
            "requests/s",
            &nginx,
        );
        if rounds.len() > 1 {
            for (i, r) in rounds.iter().enumerate() {
                println!(
                    "  round {}: TSA {:.0}/s, OCSP live {:.0}/s, nginx {:.0}/s: ratio {:.2}",
                    i + 1,
                    r[0].per_s(),
                    r[1].per_s(),
                    r[2].per_s(),
                    r[0].per_s() / r[1].per_s().max(1.0)
                );
            }
        }
        println!(
            "  ratio TSA / OCSP live: {ratio:.2} (target 0.9); TSA / nginx: {:.2}",
            tsa.per_s() / nginx.per_s().max(1.0)
        );
        println!(
            "  {tsa_replies} token replies, {failures} failed checks, {refused} refusals; {logged} tokens logged, {per_batch:.1} a batch"
        );
        if let Some(p) = &parts {
            println!("  a token's parts in this process, without HTTP (µs each):");
            for (k, v) in p.as_object().into_iter().flatten() {
                println!("    {k:<40} {v}");
            }
        }
    }
    for r in rounds.iter().flatten() {
        if r.connect_errors + r.read_errors + r.write_errors + r.timeouts > 0 {
            eprintln!(
                "muhr-bench: wrk saw socket errors: connect {}, read {}, write {}, timeout {}",
                r.connect_errors, r.read_errors, r.write_errors, r.timeouts
            );
        }
    }
    if failures > 0 || refused > 0 {
        return Err(Fail::internal(format!(
            "{failures} requests failed their check or got no reply, and the TSA refused \
             {refused}: these figures measure failures, not tokens"
        )));
    }
    if ocsp_signed < ocsp_replies || ocsp_cached > 0 {
        return Err(Fail::internal(format!(
            "the OCSP responder signed {ocsp_signed} responses and answered {ocsp_cached} from its \
             cache for {ocsp_replies} replies: the OCSP figure is not live signing"
        )));
    }
    if !log_ok {
        return Err(Fail::internal(format!(
            "the token log grew by {logged} while wrk was granted {tsa_replies} tokens"
        )));
    }
    Ok(())
}

/// This process's CPU (user + system, all threads), µs.
fn own_cpu_us() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(u.ru_utime) + us(u.ru_stime)
}

/// `--breakdown`: a token's parts timed one by one in this process (no
/// HTTP), next to a bare signature by the same key; the token log's
/// writes by group size; then `Tsa::respond` (parse, clock, sign, log)
/// from 64 concurrent tasks. The server is idle meanwhile.
async fn breakdown(
    s: &Setup<'_>,
    (head, tail): &(Vec<u8>, Vec<u8>),
) -> Result<serde_json::Value, Fail> {
    let err = |e: &dyn std::fmt::Display| Fail::internal(e.to_string());
    let rec = s
        .store
        .current_signer(muhr_store::SignerRole::Tsa, muhr_ca::ISSUING)
        .await
        .map_err(|e| err(&e))?
        .ok_or_else(|| Fail::internal("no TSA certificate"))?;
    let spec: muhr_hsm::KeySpec = rec.key_spec.parse().map_err(|e| err(&e))?;
    let keys = s.keys.clone();
    let label = rec.key_label.clone();
    let key = tokio::task::spawn_blocking(move || keys.open(&label, spec))
        .await
        .map_err(|e| err(&e))?
        .map_err(|e| err(&e))?;
    let stamper = muhr_tsa::token::Stamper::new(key.clone(), &rec.der).map_err(Fail::internal)?;
    let bodies: Vec<Vec<u8>> = (0..1024)
        .map(|_| tsq_from(head, tail))
        .collect::<Result<_, _>>()?;
    let policies = &s.tsa_config.policies;
    let n = 2000;
    // The best of five blocks: other work on the machine only adds.
    let time = |f: &mut dyn FnMut(usize) -> Result<(), Fail>| -> Result<f64, Fail> {
        let mut best = f64::MAX;
        for block in 0..5 {
            let t = Instant::now();
            for i in 0..n / 5 {
                f(block * n + i)?;
            }
            best = best.min(t.elapsed().as_secs_f64() * 1e6 / (n / 5) as f64);
        }
        Ok(best)
    };
    let parse = time(&mut |i| {
        muhr_tsa::request::parse(&bodies[i % bodies.len()], policies)
            .map(|_| ())
            .map_err(|r| Fail::internal(r.why))
    })?;
    let req = muhr_tsa::request::parse(&bodies[0], policies).map_err(|r| Fail::internal(r.why))?;
    let serial = der::asn1::Int::new(&[0x4a; 16]).map_err(|e| err(&e))?;
    let now = std::time::SystemTime::now();
    let attrs = vec![0x31u8; 200];
    let signature = time(&mut |_| key.sign(&attrs).map(|_| ()).map_err(|e| err(&e)))?;
    let mut token = Vec::new();
    let with_cert = time(&mut |_| {
        let info = stamper
            .tst_info(&req, serial.clone(), now, None)
            .map_err(Fail::internal)?;
        token = stamper.sign(&info, true).map_err(|e| err(&e))?;
        Ok(())
    })?;
    let without_cert = time(&mut |_| {
        let info = stamper
            .tst_info(&req, serial.clone(), now, None)
            .map_err(Fail::internal)?;
        stamper.sign(&info, false).map(|_| ()).map_err(|e| err(&e))
    })?;
    let granted = time(&mut |_| {
        muhr_tsa::token::granted(&token)
            .map(|_| ())
            .map_err(Fail::internal)
    })?;
    // The token log alone, wall time and CPU per token: a batch row per
    // group of 1 and of 32 (a loaded TSA's commits hold tens), random
    // imprints, as documents differ.
    let mut log = serde_json::Map::new();
    let stream = s.store.new_timestamp_stream().await.map_err(|e| err(&e))?;
    let mut number = 0u32;
    for (name, group, total) in [
        ("log_group_1", 1usize, 512usize),
        ("log_group_32", 32, 4096),
    ] {
        let records: Vec<_> = (0..total)
            .map(|_| {
                let mut r = [0u8; 64];
                aws_lc_rs::rand::fill(&mut r).map_err(|_| Fail::internal("no randomness"))?;
                Ok(muhr_store::timestamps::TokenRecord {
                    serial: String::new(),
                    gen_time: muhr_store::now_secs(),
                    policy: req.policy.to_string(),
                    hash_algorithm: "sha256".into(),
                    imprint: r[16..48].to_vec(),
                    nonce: Some(hex::encode_upper(&r[48..56])),
                    signer_serial: rec.serial.clone(),
                    token_sha256: r[32..64].to_vec(),
                })
            })
            .collect::<Result<_, Fail>>()?;
        let (t, c) = (Instant::now(), own_cpu_us());
        for chunk in records.chunks(group) {
            let batch = muhr_store::timestamps::TokenBatch {
                stream,
                salt: [0x5a; 8],
                batch: number,
                tokens: chunk
                    .iter()
                    .cloned()
                    .zip(0u16..)
                    .map(|(r, i)| (i, r))
                    .collect(),
            };
            number += 1;
            s.store
                .log_timestamp_batches(&[batch])
                .await
                .map_err(|e| err(&e))?;
        }
        let wall = t.elapsed().as_secs_f64() * 1e6 / total as f64;
        let cpu = (own_cpu_us() - c) / total as f64;
        log.insert(format!("{name}_wall_us_per_token"), round1(wall).into());
        log.insert(format!("{name}_cpu_us_per_token"), round1(cpu).into());
    }
    // The whole of Tsa::respond, as the handler calls it, from 64 tasks.
    let tsa = Arc::new(
        muhr_tsa::Tsa::new(
            s.store.clone(),
            s.keys.clone(),
            muhr_ca::ISSUING,
            s.tsa_config.clone(),
            muhr_tsa::clock::ClockCheck::start(
                s.clock_source.clone(),
                s.tsa_config.clock_tolerance(),
            ),
        )
        .map_err(|e| err(&e))?,
    );
    tsa.reload_signer().await.map_err(|e| err(&e))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_granted(&tsa.respond(&bodies[0]).await) {
        if Instant::now() > deadline {
            return Err(Fail::internal("the breakdown's TSA granted nothing"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bodies = Arc::new(bodies);
    let stop = Arc::new(AtomicBool::new(false));
    let (done, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (t, c) = (Instant::now(), own_cpu_us());
    let tasks: Vec<_> = (0..64)
        .map(|k| {
            let (tsa, bodies, stop, done, bad) = (
                tsa.clone(),
                bodies.clone(),
                stop.clone(),
                done.clone(),
                bad.clone(),
            );
            tokio::spawn(async move {
                let mut i = k;
                while !stop.load(Ordering::Relaxed) {
                    let reply = tsa.respond(&bodies[i % bodies.len()]).await;
                    if !is_granted(&reply) {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 64;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let (seconds, cpu) = (t.elapsed().as_secs_f64(), own_cpu_us() - c);
    let (rows, logged) = tsa.log_written();
    let responded = done.load(Ordering::Relaxed).max(1) as f64;
    if bad.load(Ordering::Relaxed) > 0 {
        return Err(Fail::internal(format!(
            "{} of the breakdown's in-process tokens were refused",
            bad.load(Ordering::Relaxed)
        )));
    }
    let mut out = serde_json::Map::new();
    out.insert("parse_us".into(), round1(parse).into());
    out.insert("signature_alone_us".into(), round1(signature).into());
    out.insert("token_with_certificate_us".into(), round1(with_cert).into());
    out.insert(
        "token_without_certificate_us".into(),
        round1(without_cert).into(),
    );
    out.insert(
        "token_der_and_digests_us".into(),
        round1(with_cert - signature).into(),
    );
    out.insert("granted_reply_us".into(), round1(granted).into());
    out.extend(log);
    out.insert(
        "respond_64_tasks_per_s".into(),
        (responded / seconds).round().into(),
    );
    out.insert(
        "respond_64_tasks_tokens_per_batch".into(),
        round1(logged as f64 / rows.max(1) as f64).into(),
    );
    out.insert(
        "respond_64_tasks_cpu_us_per_token".into(),
        round1(cpu / responded).into(),
    );
    Ok(serde_json::Value::Object(out))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::is_granted;

    #[test]
    fn granted_replies_are_told_from_refusals() {
        // SEQUENCE { SEQUENCE { INTEGER 0 }, SEQUENCE {} }
        assert!(is_granted(&[
            0x30, 0x07, 0x30, 0x03, 0x02, 0x01, 0x00, 0x30, 0x00
        ]));
        // rejection(2) with failInfo, no token
        assert!(!is_granted(&[
            0x30, 0x09, 0x30, 0x07, 0x02, 0x01, 0x02, 0x03, 0x02, 0x06, 0x40
        ]));
        // granted without a token
        assert!(!is_granted(&[0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x00]));
        assert!(!is_granted(b""));
    }
}

//! Test environment: a temporary data directory, a configuration for the chosen
//! database (SQLite file, or a fresh database on the test PostgreSQL server) and
//! key store (software, or a SoftHSM2 token of its own), and helpers to run the
//! real `muhr` binary and the real OpenSSL against it.
//!
//! Nothing is skipped: a missing component makes the test fail with a message
//! saying what to install (tests/run.sh installs everything).
//!
//! Longer than 600 lines on purpose: the one environment every integration
//! test shares (databases, key stores, the binary, OpenSSL, curl), so that
//! no test builds its own.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod browser;
pub mod oidc;
pub mod ra;
pub mod tsa;

pub const PIN: &str = "4711-test-pin";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    Software,
    SoftHsm,
}

pub fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is required by this test: run `bash tests/run.sh`, which installs it"
    );
}

pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    hex::encode(b)
}

/// A fresh database on the test server (MUHR_TEST_POSTGRES_URL, set by tests/run.sh).
pub fn postgres_database() -> String {
    let admin = std::env::var("MUHR_TEST_POSTGRES_URL").expect(
        "MUHR_TEST_POSTGRES_URL is not set: PostgreSQL tests need the server tests/run.sh starts",
    );
    let name = format!("muhr_t_{}", random_suffix());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to the test PostgreSQL server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .unwrap();
    });
    let base = admin.rsplit_once('/').unwrap().0;
    format!("{base}/{name}")
}

/// Runs a statement on the test server's administrative database.
pub fn admin_sql(query: &str) {
    let admin = std::env::var("MUHR_TEST_POSTGRES_URL").expect("MUHR_TEST_POSTGRES_URL is not set");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(query.to_string()))
            .execute(&mut c)
            .await
            .unwrap();
    });
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub db: Db,
    pub keys: Keys,
    pub db_url: String,
    pub softhsm_conf: Option<PathBuf>,
    pub config: PathBuf,
}

impl Env {
    pub fn new(db: Db, keys: Keys) -> Self {
        Self::with_extra(db, keys, "")
    }

    /// `extra` is appended to the generated configuration file.
    pub fn with_extra(db: Db, keys: Keys, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        // Muhr refuses a data directory others can read.
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let db_url = match db {
            Db::Sqlite => format!("sqlite://{}/muhr.db", data.display()),
            Db::Postgres => postgres_database(),
        };
        let mut softhsm_conf = None;
        let key_store = match keys {
            Keys::Software => {
                std::fs::write(
                    dir.path().join("passphrase"),
                    "test passphrase, long enough\n",
                )
                .unwrap();
                // Muhr refuses a secret others can read.
                std::fs::set_permissions(
                    dir.path().join("passphrase"),
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .unwrap();
                format!(
                    "backend = \"software\"\npassphrase_file = \"{}\"\n",
                    dir.path().join("passphrase").display()
                )
            }
            Keys::SoftHsm => {
                require("softhsm2-util");
                assert!(
                    Path::new(SOFTHSM_MODULE).exists(),
                    "{SOFTHSM_MODULE} missing: install softhsm2"
                );
                let tokens = dir.path().join("tokens");
                std::fs::create_dir_all(&tokens).unwrap();
                let conf = dir.path().join("softhsm2.conf");
                std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display())).unwrap();
                let out = Command::new("softhsm2-util")
                    .env("SOFTHSM2_CONF", &conf)
                    .args([
                        "--init-token",
                        "--free",
                        "--label",
                        "muhr",
                        "--pin",
                        PIN,
                        "--so-pin",
                        "so-pin-1234",
                    ])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "softhsm2-util: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                softhsm_conf = Some(conf);
                format!(
                    "backend = \"pkcs11\"\nmodule = \"{SOFTHSM_MODULE}\"\ntoken_label = \"muhr\"\npin_env = \"MUHR_PKCS11_PIN\"\nsessions = 4\n"
                )
            }
        };
        let config = dir.path().join("muhr.toml");
        let text = format!(
            "data_dir = \"{}\"\n\n[database]\nurl_env = \"MUHR_DATABASE_URL\"\n\n[key_store]\n{key_store}\n\
             [issuance.policy_oids]\n\"individual-sign\" = [\"1.2.860.3.2.2.1.2.2\"]\n\"individual-auth\" = [\"1.2.860.3.2.2.1.2.1\"]\n\
             \"legal-entity-sign\" = [\"1.2.860.3.2.2.1.2.3\"]\n{extra}",
            data.display()
        );
        std::fs::write(&config, text).unwrap();
        Self {
            dir,
            db,
            keys,
            db_url,
            softhsm_conf,
            config,
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `muhr` binary with this environment's configuration and secrets.
    pub fn muhr(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_muhr"));
        c.arg("--config").arg(&self.config);
        self.apply(&mut c);
        c
    }

    /// Sets the environment a process of this installation needs.
    pub fn apply(&self, c: &mut Command) {
        c.env("MUHR_DATABASE_URL", &self.db_url)
            .env("MUHR_PKCS11_PIN", PIN)
            .env("MUHR_KEY_PASSPHRASE", "example passphrase for tests")
            .env("MUHR_LOG", "warn")
            .env("MUHR_PORTAL_CLIENT_SECRET", PORTAL_CLIENT_SECRET);
        if let Some(conf) = &self.softhsm_conf {
            c.env("SOFTHSM2_CONF", conf);
        }
    }

    /// `muhr-bench` on this installation's configuration and data.
    #[allow(dead_code)]
    pub fn bench(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_muhr-bench"));
        c.arg("--config").arg(&self.config);
        self.apply(&mut c);
        c
    }

    /// Runs `muhr-bench` and asserts success; returns stdout.
    #[allow(dead_code)]
    pub fn bench_ok(&self, args: &[&str]) -> String {
        let out = self.bench().args(args).output().expect("run muhr-bench");
        assert!(
            out.status.success(),
            "muhr-bench {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.muhr().args(args).output().expect("run muhr")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "muhr {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and asserts exit code 1; returns stderr.
    pub fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "muhr {args:?}: expected exit 1, got {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn init(&self) {
        self.ok(&["ca", "init"]);
    }

    pub fn root_pem(&self) -> PathBuf {
        self.data().join("ca/root.pem")
    }

    pub fn issuing_pem(&self) -> PathBuf {
        self.data().join("ca/issuing.pem")
    }

    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Issues a certificate; returns its path.
    pub fn issue(&self, profile: &str, csr: &Path, subject: &str, out_name: &str) -> PathBuf {
        let s = self.write(&format!("{out_name}.json"), subject);
        let pem = self.ok(&[
            "issue",
            "--profile",
            profile,
            "--csr",
            csr.to_str().unwrap(),
            "--subject",
            s.to_str().unwrap(),
        ]);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        self.write(&format!("{out_name}.pem"), pem)
    }

    /// An OpenSSL-made CSR; `key` is an `openssl req -newkey` argument (ec or rsa:BITS).
    pub fn csr(&self, name: &str, key: &str) -> PathBuf {
        let out = self.path(&format!("{name}.csr"));
        let keyfile = self.path(&format!("{name}.key"));
        let mut args = vec![
            "req",
            "-new",
            "-nodes",
            "-subj",
            "/CN=ignored by Muhr",
            "-keyout",
            keyfile.to_str().unwrap(),
            "-out",
            out.to_str().unwrap(),
        ];
        if key == "ec" {
            args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        } else if key == "ec384" {
            args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]);
        } else {
            args.extend(["-newkey", key]);
        }
        openssl(&args);
        out
    }

    /// Runs a query against this environment's database; returns the first column of each row as text.
    /// PostgreSQL only: at least `at_least` updates of `table` are counted,
    /// and nine in ten or more were HOT (in place, no new index entries).
    /// Statistics arrive when the server processes flush them (at the
    /// latest when they exit), hence the wait. Versions left by killed
    /// transactions can crowd a page, so not every update must be HOT; where
    /// an update touches an indexed column, none is.
    pub fn updates_are_hot(&self, table: &str, at_least: i64) {
        assert_eq!(self.db, Db::Postgres, "HOT updates are PostgreSQL's");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let counts = self.sql(&format!(
                "SELECT n_tup_upd || '/' || n_tup_hot_upd FROM pg_stat_user_tables \
                 WHERE relname = '{table}'"
            ));
            let (updated, hot) = counts[0].split_once('/').expect("two counts");
            let (updated, hot): (i64, i64) = (updated.parse().unwrap(), hot.parse().unwrap());
            if updated >= at_least || Instant::now() > deadline {
                assert!(
                    updated >= at_least,
                    "{updated} updates of {table} counted, {at_least} expected"
                );
                assert!(
                    hot * 10 >= updated * 9,
                    "only {hot} of {updated} updates of {table} were HOT"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn sql(&self, query: &str) -> Vec<String> {
        self.try_sql(query).unwrap()
    }

    /// As [`Env::sql`], with the database's refusal as an error.
    #[allow(dead_code)]
    pub fn try_sql(&self, query: &str) -> Result<Vec<String>, String> {
        let url = if self.db == Db::Sqlite {
            format!("{}?mode=rw", self.db_url)
        } else {
            self.db_url.clone()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use sqlx::{Connection, Row};
            sqlx::any::install_default_drivers();
            let mut c = sqlx::AnyConnection::connect(&url).await.unwrap();
            let rows = sqlx::query(sqlx::AssertSqlSafe(query.to_string()))
                .fetch_all(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            Ok(rows
                .iter()
                .map(|r| {
                    r.try_get::<String, _>(0)
                        .or_else(|_| r.try_get::<i64, _>(0).map(|v| v.to_string()))
                        .unwrap_or_default()
                })
                .collect())
        })
    }

    pub fn count(&self, table: &str) -> i64 {
        self.sql(&format!("SELECT COUNT(*) FROM {table}"))[0]
            .parse()
            .unwrap()
    }
}

/// Runs OpenSSL; panics with its stderr on failure.
pub fn openssl(args: &[&str]) -> String {
    let out = openssl_output(args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn openssl_output(args: &[&str]) -> Output {
    require("openssl");
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
}

/// pkilint's RFC 5280 linter: no finding of NOTICE or worse.
/// `openssl ocsp` asking `port`'s responder about `cert` (with or without a
/// nonce): its whole output, the status line or the error.
pub fn openssl_ocsp(env: &Env, port: u16, cert: &Path, nonce: bool) -> String {
    let out = Command::new("openssl")
        .args(["ocsp", "-issuer"])
        .arg(env.issuing_pem())
        .arg("-cert")
        .arg(cert)
        .args(["-url", &format!("http://127.0.0.1:{port}/ocsp")])
        .arg(if nonce { "-nonce" } else { "-no_nonce" })
        .arg("-CAfile")
        .arg(env.root_pem())
        .args(["-timeout", "60"])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn pkilint(cert: &Path) {
    require("lint_pkix_cert");
    let out = Command::new("lint_pkix_cert")
        .args(["lint", "-s", "NOTICE", cert.to_str().unwrap()])
        .output()
        .expect("run lint_pkix_cert");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "pkilint on {}:\n{text}{}",
        cert.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn pinfl(first13: &str) -> String {
    muhr_policies::identity::with_check_digit(first13)
}

/// A certificate's serial as `openssl x509 -serial` prints it.
pub fn serial_of(cert: &Path) -> String {
    let s = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-serial"]);
    s.trim().trim_start_matches("serial=").to_string()
}

/// `openssl crl -text` of DER bytes (written under `name` in the test directory).
pub fn crl_text(env: &Env, name: &str, der: &[u8]) -> String {
    let file = env.write(name, der);
    openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        file.to_str().unwrap(),
        "-noout",
        "-text",
    ])
}

/// `openssl verify` of `cert` against the CA files of `data`.
pub fn verify_chain(data: &Path, cert: &Path) {
    let out = openssl(&[
        "verify",
        "-CAfile",
        data.join("ca/root.pem").to_str().unwrap(),
        "-untrusted",
        data.join("ca/issuing.pem").to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(out.trim().ends_with(": OK"), "{out}");
}

pub fn person() -> String {
    serde_json::json!({
        "pinfl": pinfl("3150585123456"),
        "surname": "IVANOV",
        "given_name": "IVAN",
        "patronymic": "IVANOVICH",
        "tin": "412345678"
    })
    .to_string()
}

/// Declares one test per database backend.
#[macro_export]
macro_rules! both_databases {
    ($($name:ident => $body:ident;)*) => {
        mod sqlite { $( #[test] fn $name() { super::$body($crate::common::Db::Sqlite) } )* }
        mod postgres { $( #[test] fn $name() { super::$body($crate::common::Db::Postgres) } )* }
    };
}

// --- a server under test, and a minimal HTTP client ---

pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.1 GET: status, headers and body.
pub fn get(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    get_with(port, path, "")
}

/// GET with extra header lines (each ending in CRLF).
pub fn get_with(port: u16, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    exchange(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n")
            .as_bytes(),
        &[],
    )
}

/// A minimal HTTP/1.1 POST; returns status, headers and body.
pub fn post(port: u16, path: &str, content_type: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    exchange(port, head.as_bytes(), body)
}

/// Any request with extra header lines (each ending in CRLF); a body
/// gets its Content-Length.
#[allow(dead_code)]
pub fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    exchange(port, head.as_bytes(), body)
}

/// Sends one request on a fresh connection and reads the whole response.
fn exchange(port: u16, head: &[u8], body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(head).unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..end]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[end + 2..end + 2 + n]);
        b = &b[end + 2 + n + 2..];
    }
}

pub fn start(env: &Env, extra_args: &[&str]) -> (Server, u16) {
    start_with(env, "serve", extra_args)
}

/// The portal's client secret at the test identity provider, in every
/// server's environment as `MUHR_PORTAL_CLIENT_SECRET`.
pub const PORTAL_CLIENT_SECRET: &str = "portal client secret for tests";

/// `muhr serve` on a port chosen before (the portal's redirect URI names it).
#[allow(dead_code)]
pub fn start_at(env: &Env, port: u16) -> Server {
    start_ports_at(env, "serve", &[], Some(port)).0
}

/// Starts `muhr SUBCOMMAND --listen 127.0.0.1:PORT` and waits until it accepts connections.
pub fn start_with(env: &Env, subcommand: &str, extra_args: &[&str]) -> (Server, u16) {
    let (server, port, _) = start_ports(env, subcommand, extra_args);
    (server, port)
}

/// `muhr serve` with its RA listener: (server, HTTP port, mTLS port).
pub fn start_ra(env: &Env) -> (Server, u16, u16) {
    let (server, port, mtls) = start_ports(env, "serve", &[]);
    let mtls = mtls.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", mtls)).is_err() {
        assert!(Instant::now() < deadline, "the mTLS listener did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port, mtls)
}

/// Every `serve` gets its own mTLS port, so tests never meet on the default one.
fn start_ports(env: &Env, subcommand: &str, extra_args: &[&str]) -> (Server, u16, Option<u16>) {
    start_ports_at(env, subcommand, extra_args, None)
}

fn start_ports_at(
    env: &Env,
    subcommand: &str,
    extra_args: &[&str],
    port: Option<u16>,
) -> (Server, u16, Option<u16>) {
    let port = port.unwrap_or_else(free_port);
    let listen = format!("127.0.0.1:{port}");
    let mtls = (subcommand == "serve").then(free_port);
    let mtls_args = match mtls {
        Some(p) => vec!["--listen-mtls".to_string(), format!("127.0.0.1:{p}")],
        None => Vec::new(),
    };
    let child = env
        .muhr()
        .args([subcommand, "--listen", &listen, "--log-format", "json"])
        .args(&mtls_args)
        .args(extra_args)
        .stdout(Stdio::null())
        // Kept in the test's directory for whoever debugs a failure.
        .stderr(std::fs::File::create(env.path(&format!("{subcommand}-{port}.log"))).unwrap())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "muhr serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port, mtls)
}

// --- a PostgreSQL server of one test's own, to stop and start ---

/// A PostgreSQL cluster only this test uses (the shared test server cannot be
/// stopped under everyone else): made with `initdb` in a temporary folder,
/// on a free loopback port, run as `postgres` when the test runs as root.
pub struct OwnPostgres {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

impl OwnPostgres {
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect(
                "PostgreSQL is required by this test: run `bash tests/run.sh`, which installs it",
            )
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("no /usr/lib/postgresql/*/bin/initdb: install postgresql");
        let dir = tempfile::tempdir().unwrap();
        let me = Self {
            port: free_port(),
            dir,
            bin,
        };
        if Self::root() {
            Command::new("chown")
                .args(["-R", "postgres"])
                .arg(me.dir.path())
                .status()
                .unwrap();
        }
        let out = me
            .as_owner(&me.bin.join("initdb"))
            .arg("-D")
            .arg(me.dir.path().join("data"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        me.up();
        me
    }

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn as_owner(&self, program: &Path) -> Command {
        if Self::root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let out = self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.dir.path().display()
            ))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops it the way a crash or a power cut would (`-m immediate`).
    pub fn down(&self) {
        let out = self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

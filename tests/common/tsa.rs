//! The time-stamping authority's test surroundings: a real NTP server
//! (Debian's chrony, never touching the system clock) to vouch for its
//! clock, the `[tsa]` configuration pointing at it, `muhr serve` on a port
//! the certificates' URLs name, and citizens' signing credentials.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Env, Server, free_port, openssl, pinfl, serial_of};

/// chronyd serving the local clock on a free loopback port; killed on drop.
pub struct Chronyd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub addr: String,
}

impl Chronyd {
    pub fn start() -> Self {
        let chronyd = ["/usr/sbin/chronyd", "/sbin/chronyd", "/usr/bin/chronyd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("chronyd is not installed: install Debian's chrony (tests/run.sh does)");
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\n\
                 cmdport 0\nbindcmdaddress /\npidfile {}\n",
                dir.path().join("chronyd.pid").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("chronyd.log")).unwrap();
        let child = Command::new(chronyd)
            .args(["-x", "-d", "-U", "-t", "600", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            dir,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Chronyd {
    fn drop(&mut self) {
        self.kill();
        let _ = self.dir.path();
    }
}

/// `muhr serve` on `port`, which the configuration's `urls.base` names, so
/// the OCSP URLs in certificates reach it.
pub fn serve_on(env: &Env, port: u16) -> Server {
    let child = env
        .muhr()
        .args(["serve", "--log-format", "json", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--listen-mtls")
        .arg(format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.path(&format!("serve-{port}.log"))).unwrap())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "muhr serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

pub fn tsa_config(ntp: &Chronyd) -> String {
    format!(
        "\n[tsa]\nenabled = true\npolicy = \"1.3.6.1.4.1.32473.3161.1\"\nallowed_policies = [\"1.3.6.1.4.1.32473.3161.2\"]\n\
         accuracy_ms = 1500\nname = \"Muhr TSA test\"\norganization = \"Raqamli texnologiyalar vazirligi\"\n\
         [tsa.clock]\nsource = \"ntp\"\nntp_servers = [\"{}\"]\nntp_interval_seconds = 4\n",
        ntp.addr
    )
}

/// A citizen's signing key and certificate in a PKCS#12 file.
pub struct Signer {
    pub p12: PathBuf,
    pub password: PathBuf,
    pub serial: String,
}

pub fn signer(env: &Env, name: &str, subject: serde_json::Value) -> Signer {
    let csr = env.csr(name, "ec");
    let cert = env.issue("individual-sign", &csr, &subject.to_string(), name);
    let password = env.write(&format!("{name}.pw"), "a long pkcs12 password\n");
    let p12 = env.path(&format!("{name}.p12"));
    openssl(&[
        "pkcs12",
        "-export",
        "-inkey",
        env.path(&format!("{name}.key")).to_str().unwrap(),
        "-in",
        cert.to_str().unwrap(),
        "-certfile",
        env.issuing_pem().to_str().unwrap(),
        "-passout",
        &format!("file:{}", password.display()),
        "-out",
        p12.to_str().unwrap(),
    ]);
    Signer {
        p12,
        password,
        serial: serial_of(&cert),
    }
}

/// A citizen's subject JSON: the PINFL's first 13 digits (its check digit is
/// added) and the names.
pub fn citizen_subject(
    pinfl13: &str,
    surname: &str,
    given: &str,
    patronymic: &str,
) -> serde_json::Value {
    serde_json::json!({
        "pinfl": pinfl(pinfl13),
        "surname": surname,
        "given_name": given,
        "patronymic": patronymic,
    })
}

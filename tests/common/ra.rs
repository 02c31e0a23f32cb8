//! Helpers for the RA: client credentials, card requests and calls over mutual
//! TLS with curl (an independent TLS client).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::{Env, openssl, pinfl, require};

/// `muhr client add`, then the PKCS#12 opened by OpenSSL into one PEM (key,
/// certificate, chain) that curl presents.
pub fn client(env: &Env, role: &str, name: &str) -> PathBuf {
    let pw = env.write(&format!("{name}.pw"), "correct horse battery\n");
    let p12 = env.path(&format!("{name}.p12"));
    env.ok(&[
        "client",
        "add",
        "--role",
        role,
        "--name",
        name,
        "--out",
        p12.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    let pem = env.path(&format!("{name}.pem"));
    openssl(&[
        "pkcs12",
        "-in",
        p12.to_str().unwrap(),
        "-passin",
        "pass:correct horse battery",
        "-nodes",
        "-out",
        pem.to_str().unwrap(),
    ]);
    pem
}

/// An HTTPS call with curl; `cert` is the client's PEM (None: no certificate).
/// Returns the HTTP status (0: the TLS handshake failed) and the JSON body.
pub fn call(
    env: &Env,
    port: u16,
    cert: Option<&Path>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    require("curl");
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .arg("--cacert")
        .arg(env.root_pem())
        .arg(format!("https://localhost:{port}{path}"));
    if let Some(cert) = cert {
        c.arg("--cert").arg(cert);
    }
    if let Some(b) = body {
        let f = env.path(&format!("body-{}.json", super::free_port()));
        std::fs::write(&f, b.to_string()).unwrap();
        c.args(["-H", "content-type: application/json", "--data-binary"])
            .arg(format!("@{}", f.display()));
    }
    let out = c.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let code: u16 = code.trim().parse().unwrap_or(0);
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (code, json)
}

/// A chip key's CSR, as PEM text.
pub fn chip_csr(env: &Env, name: &str) -> String {
    std::fs::read_to_string(env.csr(name, "ec")).unwrap()
}

/// The PINFL of test person `n` (born 15 May 1985, district 123).
pub fn person_pinfl(n: u32) -> String {
    pinfl(&format!("3150585123{:03}", n % 999 + 1))
}

/// A valid card request for person `n`, with fresh chip keys named after the job.
pub fn card(env: &Env, request_id: &str, n: u32, document: &str, district: &str) -> Value {
    json!({
        "request_id": request_id,
        "person": {
            "pinfl": person_pinfl(n),
            "surname": "Karimov",
            "given_name": "Aziz",
            "patronymic": "Rustamovich",
            "birth_date": "1985-05-15",
        },
        "document": {
            "number": document,
            "issued_on": "2025-03-01",
            "expires_on": "2035-02-28",
            "issuing_office": district,
        },
        "keys": {
            "auth": chip_csr(env, &format!("{request_id}-auth")),
            "sign": chip_csr(env, &format!("{request_id}-sign")),
        }
    })
}

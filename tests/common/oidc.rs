//! A real OpenID Connect token issuer for the tests: keys generated per test
//! (ES256 and RS256), its JWK Set served over HTTP, ID tokens signed with them.
//! Muhr fetches and checks them on its production path.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

pub struct Provider {
    pub port: u16,
    pub issuer: String,
    pub es: EcdsaKeyPair,
    pub rsa: RsaKeyPair,
    /// The JWK Set the server hands out (tests rotate keys by replacing it).
    pub jwks: Arc<Mutex<Value>>,
    pub fetches: Arc<AtomicUsize>,
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

pub fn ec_key() -> EcdsaKeyPair {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap()
}

pub fn ec_jwk(kid: &str, k: &EcdsaKeyPair) -> Value {
    let p = k.public_key().as_ref();
    json!({"kty": "EC", "crv": "P-256", "use": "sig", "kid": kid,
           "x": b64(&p[1..33]), "y": b64(&p[33..65])})
}

impl Provider {
    pub fn start() -> Self {
        let es = ec_key();
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let n = rsa
            .public_key()
            .modulus()
            .big_endian_without_leading_zero()
            .to_vec();
        let e = rsa
            .public_key()
            .exponent()
            .big_endian_without_leading_zero()
            .to_vec();
        let jwks = Arc::new(Mutex::new(json!({"keys": [
            ec_jwk("es-1", &es),
            {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "rs-1", "n": b64(&n), "e": b64(&e)},
        ]})));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fetches = Arc::new(AtomicUsize::new(0));
        let (set, count) = (jwks.clone(), fetches.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                serve(conn, &set, &count);
            }
        });
        Self {
            port,
            issuer: format!("http://127.0.0.1:{port}"),
            es,
            rsa,
            jwks,
            fetches,
        }
    }

    /// The `[citizens]` section pointing Muhr at this provider.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "\n[citizens]\n{extra}\n[citizens.oidc]\nissuer = \"{}\"\naudience = \"muhr-test\"\n\
             jwks_url = \"{}/jwks\"\njwks_min_refetch_seconds = 0\n",
            self.issuer, self.issuer
        )
    }

    /// Claims of a verified citizen, valid for five minutes from now.
    pub fn claims(&self, pinfl: &str) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        json!({
            "iss": self.issuer, "aud": "muhr-test", "sub": format!("user-{pinfl}"),
            "iat": now, "auth_time": now - 5, "exp": now + 300, "acr": "high",
            "jti": format!("{:032x}", rand_u128()),
            "pinfl": pinfl, "family_name": "Toshmatov", "given_name": "Sardor",
            "middle_name": "Alisher o'g'li", "birthdate": "1985-05-15",
        })
    }

    pub fn es256(&self, claims: &Value) -> String {
        sign_es256(&self.es, "es-1", claims)
    }

    pub fn rs256(&self, claims: &Value) -> String {
        let input = signing_input(
            &json!({"alg": "RS256", "typ": "JWT", "kid": "rs-1"}),
            claims,
        );
        let mut sig = vec![0; self.rsa.public_modulus_len()];
        self.rsa
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .unwrap();
        format!("{input}.{}", b64(&sig))
    }
}

/// Every token a provider issues is its own: a fresh jti.
fn rand_u128() -> u128 {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    u128::from_le_bytes(b)
}

pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

pub fn sign_es256(key: &EcdsaKeyPair, kid: &str, claims: &Value) -> String {
    let input = signing_input(&json!({"alg": "ES256", "typ": "JWT", "kid": kid}), claims);
    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", b64(sig.as_ref()))
}

/// An unsigned token with the given header (`alg: none`, HMAC and the like).
pub fn with_header(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!("{}.{}", signing_input(header, claims), b64(signature))
}

fn serve(mut conn: TcpStream, set: &Mutex<Value>, count: &AtomicUsize) {
    let mut line = String::new();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h == "\r\n" {
            break;
        }
    }
    let (status, body) = if line.starts_with("GET /jwks ") {
        count.fetch_add(1, Ordering::SeqCst);
        ("200 OK", set.lock().unwrap().to_string())
    } else {
        ("404 Not Found", "{}".to_string())
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.flush();
}

/// One request to Muhr's public listener: (status, headers, JSON body).
pub fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String, Value) {
    call_as(
        port,
        method,
        path,
        token.map(|t| format!("Bearer {t}")),
        body,
    )
}

/// One request with any `Authorization` value (a relying party's Basic).
pub fn call_as(
    port: u16,
    method: &str,
    path: &str,
    authorization: Option<String>,
    body: Option<&Value>,
) -> (u16, String, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = authorization
        .map(|t| format!("Authorization: {t}\r\n"))
        .unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut rest = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        rest = super::dechunk(&rest);
    }
    (
        status,
        head,
        serde_json::from_slice(&rest).unwrap_or(Value::Null),
    )
}

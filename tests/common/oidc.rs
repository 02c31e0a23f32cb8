//! A real OpenID Connect provider for the tests: keys generated per test
//! (ES256 and RS256), its JWK Set served over HTTP, ID tokens signed with them.
//! Muhr fetches and checks them on its production path.
//!
//! It is also an authorization server for the authorization code flow with
//! PKCE (RFC 6749 §4.1, RFC 7636 with S256 only, OpenID Connect Core §3.1):
//! discovery, an HTML login page listing the people a test enrolled, one-time
//! codes and a token endpoint authenticating clients by HTTP Basic or
//! `client_secret_post`. Each connection is served by its own thread (a
//! browser opens connections it may never use).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

pub struct Provider {
    pub port: u16,
    pub issuer: String,
    pub es: EcdsaKeyPair,
    pub rsa: RsaKeyPair,
    /// The JWK Set the server hands out (tests rotate keys by replacing it).
    pub jwks: Arc<Mutex<Value>>,
    pub fetches: Arc<AtomicUsize>,
    /// The authorization server: its own copies of the keys, and its state.
    auth: Arc<Auth>,
}

/// A token request the provider refused: the OAuth error code it answered
/// and why, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub error: String,
    pub reason: String,
}

struct Auth {
    issuer: String,
    port: u16,
    es: EcdsaKeyPair,
    rsa: RsaKeyPair,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    state: Mutex<AuthState>,
}

struct Client {
    secret: String,
    redirect_uris: Vec<String>,
}

/// A login page shown and not yet answered.
struct Pending {
    client_id: String,
    redirect_uri: String,
    state: String,
    nonce: String,
    code_challenge: String,
    scope: String,
    expires: Instant,
}

struct Code {
    client_id: String,
    redirect_uri: String,
    nonce: String,
    code_challenge: String,
    scope: String,
    person: usize,
    auth_time: u64,
    expires: Instant,
    used: bool,
    /// The access token issued for it (revoked if the code comes back).
    access_token: Option<String>,
}

struct AuthState {
    clients: HashMap<String, Client>,
    /// Enrolled people: label and the claims of their ID tokens.
    people: Vec<(String, Value)>,
    pending: HashMap<String, Pending>,
    codes: HashMap<String, Code>,
    code_lifetime: Duration,
    alg: &'static str,
    /// Host name in the advertised authorization endpoint (the browser's
    /// side), when not the issuer's.
    authorization_host: Option<String>,
    /// Merged into the next ID token issued (a test's deliberate defect).
    patch_next: Option<Value>,
    authorization_requests: Vec<HashMap<String, String>>,
    token_requests: usize,
    tokens_issued: usize,
    refusals: Vec<Refusal>,
    revoked: Vec<String>,
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
        let es_pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let es_key = || {
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, es_pkcs8.as_ref()).unwrap()
        };
        let es = es_key();
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let rsa_copy = RsaKeyPair::from_pkcs8(rsa.as_der().unwrap().as_ref()).unwrap();
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
        let issuer = format!("http://127.0.0.1:{port}");
        let auth = Arc::new(Auth {
            issuer: issuer.clone(),
            port,
            es: es_key(),
            rsa: rsa_copy,
            jwks: jwks.clone(),
            fetches: fetches.clone(),
            state: Mutex::new(AuthState {
                clients: HashMap::new(),
                people: Vec::new(),
                pending: HashMap::new(),
                codes: HashMap::new(),
                code_lifetime: Duration::from_secs(60),
                alg: "ES256",
                authorization_host: None,
                patch_next: None,
                authorization_requests: Vec::new(),
                token_requests: 0,
                tokens_issued: 0,
                refusals: Vec::new(),
                revoked: Vec::new(),
            }),
        });
        let server = auth.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let server = server.clone();
                std::thread::spawn(move || serve(conn, &server));
            }
        });
        Self {
            port,
            issuer,
            es,
            rsa,
            jwks,
            fetches,
            auth,
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
        sign_rs256(&self.rsa, "rs-1", claims)
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

pub fn sign_rs256(key: &RsaKeyPair, kid: &str, claims: &Value) -> String {
    let input = signing_input(&json!({"alg": "RS256", "typ": "JWT", "kid": kid}), claims);
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", b64(&sig))
}

/// An unsigned token with the given header (`alg: none`, HMAC and the like).
pub fn with_header(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!("{}.{}", signing_input(header, claims), b64(signature))
}

/// The authorization code flow: what a test sets up and reads back.
impl Provider {
    /// Registers a confidential client with one more allowed redirect URI
    /// (compared exactly); registering again adds a URI.
    pub fn register_client(&self, client_id: &str, secret: &str, redirect_uri: &str) {
        let mut st = self.auth.state.lock().unwrap();
        let client = st
            .clients
            .entry(client_id.to_string())
            .or_insert_with(|| Client {
                secret: secret.to_string(),
                redirect_uris: Vec::new(),
            });
        client.secret = secret.to_string();
        client.redirect_uris.push(redirect_uri.to_string());
    }

    /// Enrolls a person the login page offers; `claims` are their ID token's
    /// (e.g. `idp.claims(pinfl)`, changed as the test needs: `iss`, `aud`,
    /// `nonce`, `iat`, `exp`, `auth_time` and `jti` are set at issuance; `sub`
    /// is kept, or made from `pinfl`). Returns `n`: the page's radio button
    /// is `#person-<n>`.
    pub fn enroll(&self, label: &str, claims: Value) -> usize {
        let mut st = self.auth.state.lock().unwrap();
        st.people.push((label.to_string(), claims));
        st.people.len() - 1
    }

    /// `http://127.0.0.1:PORT/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The authorization endpoint as discovery advertises it.
    pub fn authorization_endpoint(&self) -> String {
        self.auth.authorization_endpoint()
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// Advertises the authorization endpoint (the page the browser visits)
    /// under another host name for this same server, e.g. `localhost`, so
    /// that the login page is another site than Muhr's `127.0.0.1` and the
    /// redirect back is cross-site (as it is in production: SameSite cookies
    /// behave accordingly). The issuer, token and JWKS endpoints stay at
    /// `127.0.0.1`.
    pub fn set_authorization_host(&self, host: &str) {
        self.auth.state.lock().unwrap().authorization_host = Some(host.to_string());
    }

    /// "ES256" (the default) or "RS256" for the ID tokens of `/token`.
    pub fn set_id_token_alg(&self, alg: &str) {
        self.auth.state.lock().unwrap().alg = match alg {
            "ES256" => "ES256",
            "RS256" => "RS256",
            other => panic!("the test provider signs ES256 or RS256, not {other}"),
        };
    }

    /// How long a code is valid (60 s unless a test changes it).
    pub fn set_code_lifetime(&self, lifetime: Duration) {
        self.auth.state.lock().unwrap().code_lifetime = lifetime;
    }

    /// Merges `claims` into the next ID token `/token` issues (a `null`
    /// removes a claim): a wrong `nonce`, an `exp` in the past, another `aud`.
    pub fn patch_next_id_token(&self, claims: Value) {
        self.auth.state.lock().unwrap().patch_next = Some(claims);
    }

    /// Logs in without the page: sends the authorization request `url`
    /// (absolute, as a relying party redirects a browser to it) to this
    /// provider, approves it as enrolled person `person`, and returns the
    /// `Location` of the redirect back (`redirect_uri?code=…&state=…`, or
    /// the error redirect). Panics if the request is refused with a page.
    pub fn authorize_directly(&self, url: &str, person: usize) -> String {
        let u = url::Url::parse(url).unwrap();
        let target = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        };
        let (status, head, body) = request(self.port, "GET", &target, "", b"");
        let body = String::from_utf8_lossy(&body).to_string();
        if status == 302 {
            return header(&head, "location").unwrap();
        }
        assert_eq!(status, 200, "the authorization request was refused: {body}");
        let tx = body
            .split("name=tx value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a login transaction in the page")
            .to_string();
        let form = form_encode(&[
            ("tx", &tx),
            ("person", &person.to_string()),
            ("action", "approve"),
        ]);
        let (status, head, body) = request(
            self.port,
            "POST",
            "/authorize/approve",
            "Content-Type: application/x-www-form-urlencoded\r\n",
            form.as_bytes(),
        );
        assert_eq!(
            status,
            302,
            "the approval was refused: {}",
            String::from_utf8_lossy(&body)
        );
        header(&head, "location").unwrap()
    }

    /// The query parameters of every `GET /authorize` so far.
    pub fn authorization_requests(&self) -> Vec<HashMap<String, String>> {
        self.auth
            .state
            .lock()
            .unwrap()
            .authorization_requests
            .clone()
    }

    /// Requests to `/token` so far, granted or not.
    pub fn token_requests(&self) -> usize {
        self.auth.state.lock().unwrap().token_requests
    }

    /// Token responses with an ID token so far.
    pub fn tokens_issued(&self) -> usize {
        self.auth.state.lock().unwrap().tokens_issued
    }

    /// Every refused token request, in order.
    pub fn token_refusals(&self) -> Vec<Refusal> {
        self.auth.state.lock().unwrap().refusals.clone()
    }

    /// Access tokens revoked because their code was presented again
    /// (RFC 6749 §4.1.2).
    pub fn revoked_access_tokens(&self) -> Vec<String> {
        self.auth.state.lock().unwrap().revoked.clone()
    }
}

/// A PKCE pair: a fresh `code_verifier` (43 characters) and its S256
/// `code_challenge`.
pub fn pkce_pair() -> (String, String) {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    let verifier = b64(&b);
    let challenge = s256(&verifier);
    (verifier, challenge)
}

/// BASE64URL(SHA256(verifier)), RFC 7636 §4.2.
pub fn s256(verifier: &str) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref())
}

/// `Basic …` for a client (RFC 6749 §2.3.1: each part form-encoded first).
pub fn basic(client_id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(client_id), enc(secret)))
    )
}

/// `application/x-www-form-urlencoded` of the pairs.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A form POST (e.g. to `/token`): status, headers, JSON body.
pub fn form_post(
    port: u16,
    path: &str,
    authorization: Option<&str>,
    pairs: &[(&str, &str)],
) -> (u16, String, Value) {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let (status, head, body) = request(
        port,
        "POST",
        path,
        &format!("{auth}Content-Type: application/x-www-form-urlencoded\r\n"),
        form_encode(pairs).as_bytes(),
    );
    (
        status,
        head,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// The value of a response header (name in any case).
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// The query parameters of a URL (e.g. a redirect's `code` and `state`).
pub fn query_params(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The claims of a compact JWS, unverified (for tests reading what the
/// provider issued).
pub fn jwt_claims(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a compact JWS");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// One HTTP/1.1 request on a fresh connection: status, headers, body.
fn request(
    port: u16,
    method: &str,
    target: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, buf[split + 4..].to_vec())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b64(&b)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `uri` with the parameters added to its query.
fn with_params(uri: &str, pairs: &[(&str, &str)]) -> String {
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", form_encode(pairs))
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn valid_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Pairs of a query or form; `None` if a parameter appears twice
/// (RFC 6749 §3.1, §3.2).
fn parse_pairs(s: &str) -> (HashMap<String, String>, bool) {
    let mut map = HashMap::new();
    let mut repeated = false;
    for (k, v) in url::form_urlencoded::parse(s.as_bytes()) {
        if map.insert(k.into_owned(), v.into_owned()).is_some() {
            repeated = true;
        }
    }
    (map, repeated)
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Response {
    fn json(status: &'static str, body: Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: vec![
                ("Cache-Control", "no-store".into()),
                ("Pragma", "no-cache".into()),
            ],
            body: body.to_string(),
        }
    }

    fn page(status: &'static str, title: &str, body: &str) -> Response {
        Response {
            status,
            content_type: "text/html; charset=utf-8",
            headers: vec![("Cache-Control", "no-store".into())],
            body: format!(
                "<!doctype html><html lang=en><head><meta charset=utf-8>\
                 <meta name=viewport content=\"width=device-width, initial-scale=1\">\
                 <title>{t}</title><style>{STYLE}</style></head><body><main>\
                 <h1>Test identity provider</h1><h2>{t}</h2>{body}</main></body></html>",
                t = escape(title)
            ),
        }
    }

    fn redirect(location: String) -> Response {
        Response {
            status: "302 Found",
            content_type: "text/plain",
            headers: vec![("Location", location), ("Cache-Control", "no-store".into())],
            body: String::new(),
        }
    }
}

const STYLE: &str = "body{font-family:sans-serif;background:#eef1f5;margin:0}\
main{max-width:28rem;margin:2rem auto;background:#fff;padding:1.5rem;border-radius:8px}\
h1{font-size:1.1rem;color:#555}h2{font-size:1.4rem}\
label{display:block;padding:.6rem;border:1px solid #ccd;border-radius:6px;margin:.4rem 0}\
button{font-size:1rem;padding:.6rem 1.2rem;margin-top:1rem}";

fn read_request(conn: &TcpStream) -> Option<Request> {
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    let len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(1 << 16);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn serve(mut conn: TcpStream, auth: &Auth) {
    let Some(req) = read_request(&conn) else {
        return;
    };
    let r = match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/jwks") => {
            auth.fetches.fetch_add(1, Ordering::SeqCst);
            Response::json("200 OK", auth.jwks.lock().unwrap().clone())
        }
        ("GET", "/.well-known/openid-configuration") => Response::json("200 OK", auth.discovery()),
        ("GET", "/authorize") => auth.authorize(&req.query),
        ("POST", "/authorize/approve") => auth.approve(&req),
        ("POST", "/token") => auth.token(&req),
        // Browsers ask for one; a 404 would be a console error.
        ("GET", "/favicon.ico") => Response {
            status: "204 No Content",
            content_type: "image/x-icon",
            headers: vec![],
            body: String::new(),
        },
        _ => Response::json("404 Not Found", json!({})),
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    for (n, v) in &r.headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&r.body);
    let _ = conn.write_all(out.as_bytes());
    let _ = conn.flush();
}

impl Auth {
    fn authorization_endpoint(&self) -> String {
        match &self.state.lock().unwrap().authorization_host {
            Some(host) => format!("http://{host}:{}/authorize", self.port),
            None => format!("{}/authorize", self.issuer),
        }
    }

    fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "authorization_endpoint": self.authorization_endpoint(),
            "token_endpoint": format!("{}/token", self.issuer),
            "jwks_uri": format!("{}/jwks", self.issuer),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "scopes_supported": ["openid"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr",
                "pinfl", "family_name", "given_name", "middle_name", "birthdate"],
        })
    }

    /// `GET /authorize`: checks the request (RFC 6749 §4.1.1, RFC 7636
    /// §4.3, OpenID Connect Core §3.1.2.1) and shows the login page.
    fn authorize(&self, query: &str) -> Response {
        let (p, repeated) = parse_pairs(query);
        let mut st = self.state.lock().unwrap();
        st.authorization_requests.push(p.clone());
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
        // Without a known client and its exact redirect URI, nothing is
        // redirected anywhere (RFC 6749 §4.1.2.1).
        let Some(client) = st.clients.get(get("client_id")) else {
            return Response::page(
                "400 Bad Request",
                "Unknown client",
                "<p id=error>The client_id is missing or not registered.</p>",
            );
        };
        let redirect_uri = get("redirect_uri");
        if !client.redirect_uris.iter().any(|u| u == redirect_uri) || repeated {
            return Response::page(
                "400 Bad Request",
                "Invalid redirect_uri",
                "<p id=error>The redirect_uri is missing or not registered for this client.</p>",
            );
        }
        let state = get("state");
        let error = |code: &str, description: &str| {
            let mut pairs = vec![("error", code), ("error_description", description)];
            if !state.is_empty() {
                pairs.push(("state", state));
            }
            Response::redirect(with_params(redirect_uri, &pairs))
        };
        if get("response_type") != "code" {
            return error("unsupported_response_type", "only response_type=code");
        }
        if !get("scope").split(' ').any(|s| s == "openid") {
            return error("invalid_scope", "the scope must include openid");
        }
        if state.is_empty() {
            return error("invalid_request", "state is required");
        }
        if get("nonce").is_empty() {
            return error("invalid_request", "nonce is required");
        }
        if get("code_challenge").is_empty() {
            return error("invalid_request", "code challenge required");
        }
        if get("code_challenge_method") != "S256" {
            return error("invalid_request", "transform algorithm not supported");
        }
        if get("code_challenge").len() != 43 || !valid_pkce_string(get("code_challenge")) {
            return error("invalid_request", "code_challenge is not a S256 challenge");
        }
        let tx = random_token();
        let client_id = get("client_id").to_string();
        st.pending.insert(
            tx.clone(),
            Pending {
                client_id: client_id.clone(),
                redirect_uri: redirect_uri.to_string(),
                state: state.to_string(),
                nonce: get("nonce").to_string(),
                code_challenge: get("code_challenge").to_string(),
                scope: get("scope").to_string(),
                expires: Instant::now() + Duration::from_secs(600),
            },
        );
        let mut people = String::new();
        for (n, (label, _)) in st.people.iter().enumerate() {
            people.push_str(&format!(
                "<label for=person-{n}><input type=radio id=person-{n} name=person value={n}{}> \
                 {}</label>",
                if n == 0 { " checked" } else { "" },
                escape(label)
            ));
        }
        if people.is_empty() {
            people = "<p id=nobody>Nobody is enrolled.</p>".into();
        }
        Response::page(
            "200 OK",
            "Sign in",
            &format!(
                "<p>Sign in to <b id=client>{}</b> as:</p>\
                 <form method=post action=\"/authorize/approve\">\
                 <input type=hidden name=tx value=\"{tx}\">{people}\
                 <button id=continue type=submit name=action value=approve>Continue</button> \
                 <button id=cancel type=submit name=action value=deny>Cancel</button>\
                 </form>",
                escape(&client_id)
            ),
        )
    }

    /// `POST /authorize/approve`: the person chosen gets a one-time code.
    fn approve(&self, req: &Request) -> Response {
        let (f, _) = parse_pairs(&String::from_utf8_lossy(&req.body));
        let mut st = self.state.lock().unwrap();
        let tx = f.get("tx").cloned().unwrap_or_default();
        let Some(p) = st
            .pending
            .remove(&tx)
            .filter(|p| p.expires > Instant::now())
        else {
            return Response::page(
                "400 Bad Request",
                "Expired",
                "<p id=error>This sign-in is unknown, used or expired: start again.</p>",
            );
        };
        if f.get("action").map(String::as_str) == Some("deny") {
            return Response::redirect(with_params(
                &p.redirect_uri,
                &[
                    ("error", "access_denied"),
                    ("error_description", "the person declined"),
                    ("state", &p.state),
                ],
            ));
        }
        let person = f.get("person").and_then(|n| n.parse::<usize>().ok());
        let Some(person) = person.filter(|n| *n < st.people.len()) else {
            return Response::page(
                "400 Bad Request",
                "Nobody chosen",
                "<p id=error>Choose an enrolled person.</p>",
            );
        };
        let code = random_token();
        let expires = Instant::now() + st.code_lifetime;
        st.codes.insert(
            code.clone(),
            Code {
                client_id: p.client_id,
                redirect_uri: p.redirect_uri.clone(),
                nonce: p.nonce,
                code_challenge: p.code_challenge,
                scope: p.scope,
                person,
                auth_time: now_secs(),
                expires,
                used: false,
                access_token: None,
            },
        );
        Response::redirect(with_params(
            &p.redirect_uri,
            &[("code", &code), ("state", &p.state)],
        ))
    }

    /// `POST /token` (RFC 6749 §4.1.3, §5; RFC 7636 §4.6).
    fn token(&self, req: &Request) -> Response {
        let mut st = self.state.lock().unwrap();
        st.token_requests += 1;
        let result = self.grant(&mut st, req);
        match result {
            Ok(body) => {
                st.tokens_issued += 1;
                Response::json("200 OK", body)
            }
            Err((status, error, reason, challenge)) => {
                st.refusals.push(Refusal {
                    error: error.to_string(),
                    reason: reason.clone(),
                });
                let mut r =
                    Response::json(status, json!({"error": error, "error_description": reason}));
                if challenge {
                    r.headers
                        .push(("WWW-Authenticate", "Basic realm=\"test-idp\"".into()));
                }
                r
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn grant(
        &self,
        st: &mut AuthState,
        req: &Request,
    ) -> Result<Value, (&'static str, &'static str, String, bool)> {
        let bad = |error: &'static str, reason: &str| {
            Err(("400 Bad Request", error, reason.to_string(), false))
        };
        let content_type = req.header("content-type").unwrap_or("");
        if !content_type
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
        {
            return bad("invalid_request", "the body must be a form");
        }
        let (f, repeated) = parse_pairs(&String::from_utf8_lossy(&req.body));
        if repeated {
            return bad("invalid_request", "a parameter appears twice");
        }
        // Client authentication: exactly one method (RFC 6749 §2.3).
        let basic = req
            .header("authorization")
            .and_then(|a| a.strip_prefix("Basic "))
            .map(|b| {
                let decoded = STANDARD.decode(b.trim()).unwrap_or_default();
                let decoded = String::from_utf8_lossy(&decoded).to_string();
                let (id, secret) = decoded.split_once(':').unwrap_or((&decoded, ""));
                let dec = |s: &str| {
                    url::form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                (dec(id), dec(secret))
            });
        let (client_id, secret, by_basic) = match (basic, f.get("client_secret")) {
            (Some(_), Some(_)) => {
                return bad("invalid_request", "two client authentication methods");
            }
            (Some((id, secret)), None) => {
                if f.get("client_id").is_some_and(|c| *c != id) {
                    return Err((
                        "401 Unauthorized",
                        "invalid_client",
                        "client_id differs from the Basic credentials".into(),
                        true,
                    ));
                }
                (id, secret, true)
            }
            (None, Some(secret)) => (
                f.get("client_id").cloned().unwrap_or_default(),
                secret.clone(),
                false,
            ),
            (None, None) => {
                return Err((
                    "401 Unauthorized",
                    "invalid_client",
                    "no client authentication".into(),
                    false,
                ));
            }
        };
        let authenticated = st.clients.get(&client_id).is_some_and(|c| {
            aws_lc_rs::constant_time::verify_slices_are_equal(
                c.secret.as_bytes(),
                secret.as_bytes(),
            )
            .is_ok()
        });
        if !authenticated {
            return Err((
                "401 Unauthorized",
                "invalid_client",
                format!("client {client_id:?} unknown or wrong secret"),
                by_basic,
            ));
        }
        if f.get("grant_type").map(String::as_str) != Some("authorization_code") {
            return bad("unsupported_grant_type", "only authorization_code");
        }
        let Some(code_value) = f.get("code") else {
            return bad("invalid_request", "code missing");
        };
        let Some(code) = st.codes.get_mut(code_value) else {
            return bad("invalid_grant", "unknown code");
        };
        if code.used {
            // RFC 6749 §4.1.2: the tokens issued for it are revoked.
            if let Some(token) = code.access_token.take() {
                st.revoked.push(token);
            }
            return bad("invalid_grant", "code already used");
        }
        // Any presentation uses the code up, granted or not.
        code.used = true;
        if code.expires <= Instant::now() {
            return bad("invalid_grant", "code expired");
        }
        if code.client_id != client_id {
            return bad("invalid_grant", "code issued to another client");
        }
        if f.get("redirect_uri") != Some(&code.redirect_uri) {
            return bad(
                "invalid_grant",
                "redirect_uri differs from the authorization request",
            );
        }
        let Some(verifier) = f.get("code_verifier") else {
            return bad("invalid_grant", "code_verifier missing");
        };
        if !valid_pkce_string(verifier) {
            return bad("invalid_grant", "code_verifier malformed");
        }
        if s256(verifier) != code.code_challenge {
            return bad(
                "invalid_grant",
                "code_verifier does not match the code_challenge",
            );
        }
        let access_token = random_token();
        code.access_token = Some(access_token.clone());
        let (nonce, auth_time, person, scope) = (
            code.nonce.clone(),
            code.auth_time,
            code.person,
            code.scope.clone(),
        );
        let (label, enrolled) = st.people[person].clone();
        let now = now_secs();
        let mut claims = match enrolled {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                claims
                    .get("pinfl")
                    .and_then(Value::as_str)
                    .map(|p| format!("user-{p}"))
            })
            .unwrap_or(label);
        for (k, v) in [
            ("iss", json!(self.issuer)),
            ("aud", json!(client_id)),
            ("sub", json!(sub)),
            ("nonce", json!(nonce)),
            ("iat", json!(now)),
            ("exp", json!(now + 300)),
            ("auth_time", json!(auth_time)),
            ("jti", json!(format!("{:032x}", rand_u128()))),
        ] {
            claims.insert(k.into(), v);
        }
        if let Some(Value::Object(patch)) = st.patch_next.take() {
            for (k, v) in patch {
                if v.is_null() {
                    claims.remove(&k);
                } else {
                    claims.insert(k, v);
                }
            }
        }
        let claims = Value::Object(claims);
        let id_token = match st.alg {
            "RS256" => sign_rs256(&self.rsa, "rs-1", &claims),
            _ => sign_es256(&self.es, "es-1", &claims),
        };
        Ok(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": scope,
            "id_token": id_token,
        }))
    }
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

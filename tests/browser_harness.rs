//! The harness the citizen portal's browser tests stand on, tested by itself:
//! headless Chromium over WebDriver (scripts under a strict
//! Content-Security-Policy, downloads, desktop and phone widths, console
//! errors, languages) and the in-test OpenID Connect provider's
//! authorization code flow with PKCE, over HTTP and through its login page.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::browser::{Browser, Width, png_size};
use common::oidc::{Provider, basic, form_post, header, jwt_claims, pkce_pair, query_params, s256};

const CSP: &str = "default-src 'none'; script-src 'self'";
const WAIT: Duration = Duration::from_secs(10);

/// One canned answer: content type and body.
type Page = (&'static str, String);

/// A local web server for the pages under test: one thread per connection
/// (Chromium opens spare connections it may never use), every answer with
/// the strict CSP. Records each request's headers by path.
struct Site {
    port: u16,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl Site {
    fn start(pages: HashMap<&'static str, Page>) -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pages = Arc::new(pages);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (pages, log) = (pages.clone(), log.clone());
                std::thread::spawn(move || answer(conn, &pages, &log));
            }
        });
        Site { port, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The headers of the last request for `path`.
    fn last_request(&self, path: &str) -> Option<String> {
        let r = self.requests.lock().unwrap();
        r.iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, h)| h.clone())
    }
}

fn answer(
    conn: TcpStream,
    pages: &HashMap<&'static str, Page>,
    log: &Mutex<Vec<(String, String)>>,
) {
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        headers.push_str(&h);
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let path = target.split('?').next().unwrap().to_string();
    log.lock().unwrap().push((path.clone(), headers));
    let (status, (content_type, body)) = match pages.get(path.as_str()) {
        Some(p) => ("200 OK", p.clone()),
        None => ("404 Not Found", ("text/plain", "not found".to_string())),
    };
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Security-Policy: {CSP}\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.flush();
}

fn html(body: &str) -> Page {
    (
        "text/html; charset=utf-8",
        format!(
            "<!doctype html><html lang=en><head><meta charset=utf-8>\
             <meta name=viewport content=\"width=device-width, initial-scale=1\">\
             <title>harness</title></head><body>{body}</body></html>"
        ),
    )
}

fn js(body: &str) -> Page {
    ("text/javascript; charset=utf-8", body.to_string())
}

const APP_JS: &str = r#"
document.getElementById('status').textContent = 'script ran';
document.getElementById('download').addEventListener('click', () => {
  const bytes = new Uint8Array(256);
  for (let i = 0; i < 256; i++) bytes[i] = i;
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([bytes], {type: 'application/octet-stream'}));
  a.download = 'bytes.bin';
  document.body.appendChild(a);
  a.click();
  document.getElementById('status').textContent = 'offered';
});
"#;

fn site() -> Site {
    let mut pages = HashMap::new();
    pages.insert(
        "/",
        html(
            "<h1>Muhr harness</h1><p id=status>static</p>\
             <button id=download type=button>Download</button>\
             <script src=\"/app.js\"></script>",
        ),
    );
    pages.insert("/app.js", js(APP_JS));
    pages.insert(
        "/inline",
        html(
            "<p id=status>static</p><p id=external>-</p>\
             <script>document.getElementById('status').textContent = 'inline ran';</script>\
             <script src=\"/marker.js\"></script>",
        ),
    );
    pages.insert(
        "/marker.js",
        js("document.getElementById('external').textContent = 'external ran';"),
    );
    pages.insert(
        "/callback",
        html("<p id=back>back at the relying party</p>"),
    );
    pages.insert(
        "/lang",
        html("<p id=langs></p><script src=\"/lang.js\"></script>"),
    );
    pages.insert(
        "/lang.js",
        js("document.getElementById('langs').textContent = navigator.languages.join(',');"),
    );
    Site::start(pages)
}

#[test]
fn script_under_csp_download_and_both_widths() {
    let site = site();
    let tmp = tempfile::tempdir().unwrap();
    let downloads = tmp.path().join("downloads");
    let b = Browser::start(&downloads);
    b.goto(&site.url("/"));
    b.wait_for_text("#status", "script ran", WAIT);
    assert_eq!(b.inner_width(), 1280);

    b.click("#download");
    b.wait_for_text("#status", "offered", WAIT);
    let file = b.wait_for_download(&downloads, "bin", WAIT);
    assert_eq!(file.file_name().unwrap(), "bytes.bin");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        (0..=255u8).collect::<Vec<_>>()
    );

    let shots = tmp.path().join("shots");
    let (desktop, phone) = b.screenshot_both(&shots, "harness");
    assert_eq!(desktop, shots.join("harness-desktop.png"));
    assert_eq!(phone, shots.join("harness-phone.png"));
    let (dw, dh) = png_size(&std::fs::read(&desktop).unwrap());
    let (pw, ph) = png_size(&std::fs::read(&phone).unwrap());
    eprintln!("desktop {dw}x{dh}, phone {pw}x{ph}");
    assert_eq!(dw, 1280);
    assert!(
        pw < dw,
        "the phone screenshot is {pw} wide, the desktop one {dw}"
    );
    assert_eq!(b.width(), Width::Desktop);

    b.set_phone_width();
    assert_eq!(b.inner_size(), (390, 844));
    // The page still works at that width, and after a navigation.
    b.goto(&site.url("/"));
    b.wait_for_text("#status", "script ran", WAIT);
    assert_eq!(b.inner_width(), 390);
    b.set_desktop_width();
    assert_eq!(b.inner_size(), (1280, 900));
    b.screenshot_full_page(&shots.join("full.png"));
    assert_eq!(
        png_size(&std::fs::read(shots.join("full.png")).unwrap()).0,
        1280
    );

    let errors = b.console_errors();
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");
    b.quit();
}

#[test]
fn inline_script_is_blocked_by_the_csp() {
    let site = site();
    let tmp = tempfile::tempdir().unwrap();
    let b = Browser::start(tmp.path());
    b.goto(&site.url("/inline"));
    b.wait_for_text("#external", "external ran", WAIT);
    assert_eq!(b.text("#status"), "static", "the inline script ran");
    let errors = b.console_errors();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Content Security Policy") && e.contains("inline script")),
        "no CSP violation was reported: {errors:?}"
    );
    // Reading the log empties it.
    assert!(b.console_errors().is_empty());
}

#[test]
fn browser_languages() {
    let site = site();
    let tmp = tempfile::tempdir().unwrap();
    let b = Browser::start_with_language(tmp.path(), "ru-RU,ru");
    b.goto(&site.url("/lang"));
    let langs = b.wait_for_text("#langs", "ru", WAIT);
    assert!(langs.starts_with("ru-RU"), "{langs}");
    let headers = site.last_request("/lang").unwrap().to_ascii_lowercase();
    assert!(headers.contains("accept-language: ru-ru,ru"), "{headers}");
}

const CLIENT: &str = "muhr-portal";
const SECRET: &str = "portal secret/with:odd+chars";

/// An authorization request as a relying party would send the browser.
fn authorization_url(
    idp: &Provider,
    redirect_uri: &str,
    state: &str,
    nonce: &str,
    challenge: &str,
) -> String {
    let q = common::oidc::form_encode(&[
        ("response_type", "code"),
        ("client_id", CLIENT),
        ("redirect_uri", redirect_uri),
        ("scope", "openid"),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]);
    format!("{}?{q}", idp.authorization_endpoint())
}

/// Exchanges a code at the token endpoint with HTTP Basic.
fn exchange(
    idp: &Provider,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> (u16, String, Value) {
    form_post(
        idp.port,
        "/token",
        Some(&basic(CLIENT, SECRET)),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ],
    )
}

/// Checks an ES256 ID token's signature against the provider's key.
fn verify_es256(idp: &Provider, token: &str) {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, KeyPair, UnparsedPublicKey};
    use base64::Engine;
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, idp.es.public_key().as_ref())
        .verify(input.as_bytes(), &sig)
        .expect("the ID token's signature verifies with the provider's ES256 key");
}

#[test]
fn oidc_provider_code_flow_over_http() {
    let idp = Provider::start();
    let redirect = "http://127.0.0.1:9/portal/callback";
    idp.register_client(CLIENT, SECRET, redirect);
    let sardor = idp.enroll("Sardor Toshmatov", idp.claims("31505851234567"));
    let malika = idp.enroll("Malika Karimova", idp.claims("42001901234567"));
    assert_eq!((sardor, malika), (0, 1));

    // Discovery.
    let (status, _, body) = common::get(idp.port, "/.well-known/openid-configuration");
    assert_eq!(status, 200);
    let d: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(d["issuer"], json!(idp.issuer));
    assert_eq!(
        d["authorization_endpoint"],
        json!(format!("{}/authorize", idp.issuer))
    );
    assert_eq!(d["token_endpoint"], json!(idp.token_endpoint()));
    assert_eq!(d["jwks_uri"], json!(format!("{}/jwks", idp.issuer)));
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        d["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert!(
        d["id_token_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("ES256"))
    );
    // The JWK Set is still served and counted.
    assert_eq!(common::get(idp.port, "/jwks").0, 200);
    assert_eq!(idp.fetches.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Authorize → approve → code; the right verifier gets an ID token.
    let (verifier, challenge) = pkce_pair();
    assert_eq!(challenge, s256(&verifier));
    let url = authorization_url(&idp, redirect, "st-1", "nonce-1", &challenge);
    let back = idp.authorize_directly(&url, malika);
    assert!(back.starts_with(&format!("{redirect}?")), "{back}");
    let q = query_params(&back);
    assert_eq!(q["state"], "st-1");
    let code = q["code"].clone();
    let (status, head, t) = exchange(&idp, &code, redirect, &verifier);
    assert_eq!(status, 200, "{t}");
    assert_eq!(header(&head, "cache-control").as_deref(), Some("no-store"));
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["access_token"].as_str().unwrap().len() >= 32);
    assert!(t["expires_in"].as_u64().unwrap() > 0);
    let id_token = t["id_token"].as_str().unwrap();
    verify_es256(&idp, id_token);
    let c = jwt_claims(id_token);
    assert_eq!(c["iss"], json!(idp.issuer));
    assert_eq!(c["aud"], CLIENT);
    assert_eq!(c["nonce"], "nonce-1");
    assert_eq!(c["sub"], "user-42001901234567");
    assert_eq!(c["pinfl"], "42001901234567");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (iat, exp, auth_time) = (
        c["iat"].as_u64().unwrap(),
        c["exp"].as_u64().unwrap(),
        c["auth_time"].as_u64().unwrap(),
    );
    assert!(
        iat.abs_diff(now) <= 5 && exp > now && auth_time <= iat,
        "{c}"
    );

    // The same code again: refused, and its access token revoked.
    let (status, _, r) = exchange(&idp, &code, redirect, &verifier);
    assert_eq!(
        (status, r["error"].as_str()),
        (400, Some("invalid_grant")),
        "{r}"
    );
    assert_eq!(
        idp.revoked_access_tokens(),
        vec![t["access_token"].as_str().unwrap().to_string()]
    );

    // A wrong verifier.
    let (verifier, challenge) = pkce_pair();
    let code = query_params(&idp.authorize_directly(
        &authorization_url(&idp, redirect, "st-2", "nonce-2", &challenge),
        sardor,
    ))["code"]
        .clone();
    let (other, _) = pkce_pair();
    let (status, _, r) = exchange(&idp, &code, redirect, &other);
    assert_eq!(
        (status, r["error"].as_str()),
        (400, Some("invalid_grant")),
        "{r}"
    );
    // ...uses the code up.
    let (status, _, _) = exchange(&idp, &code, redirect, &verifier);
    assert_eq!(status, 400);

    // Another redirect_uri at the token endpoint.
    let (verifier, challenge) = pkce_pair();
    let code = query_params(&idp.authorize_directly(
        &authorization_url(&idp, redirect, "st-3", "nonce-3", &challenge),
        sardor,
    ))["code"]
        .clone();
    let (status, _, r) = exchange(&idp, &code, "http://127.0.0.1:9/elsewhere", &verifier);
    assert_eq!(
        (status, r["error"].as_str()),
        (400, Some("invalid_grant")),
        "{r}"
    );

    // client_secret_post; a wrong secret is invalid_client.
    let (verifier, challenge) = pkce_pair();
    let code = query_params(&idp.authorize_directly(
        &authorization_url(&idp, redirect, "st-4", "nonce-4", &challenge),
        sardor,
    ))["code"]
        .clone();
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
        ("code_verifier", verifier.as_str()),
        ("client_id", CLIENT),
        ("client_secret", "wrong"),
    ];
    let (status, _, r) = form_post(idp.port, "/token", None, &form);
    assert_eq!(
        (status, r["error"].as_str()),
        (401, Some("invalid_client")),
        "{r}"
    );
    form[5].1 = SECRET;
    let (status, _, r) = form_post(idp.port, "/token", None, &form);
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        jwt_claims(r["id_token"].as_str().unwrap())["sub"],
        "user-31505851234567"
    );

    // An expired code.
    idp.set_code_lifetime(Duration::ZERO);
    let (verifier, challenge) = pkce_pair();
    let code = query_params(&idp.authorize_directly(
        &authorization_url(&idp, redirect, "st-5", "nonce-5", &challenge),
        sardor,
    ))["code"]
        .clone();
    let (status, _, r) = exchange(&idp, &code, redirect, &verifier);
    assert_eq!(
        (status, r["error"].as_str()),
        (400, Some("invalid_grant")),
        "{r}"
    );
    idp.set_code_lifetime(Duration::from_secs(60));

    // RS256, and a deliberately wrong nonce for the next token.
    idp.set_id_token_alg("RS256");
    idp.patch_next_id_token(json!({"nonce": "not-the-one", "acr": null}));
    let (verifier, challenge) = pkce_pair();
    let code = query_params(&idp.authorize_directly(
        &authorization_url(&idp, redirect, "st-6", "nonce-6", &challenge),
        sardor,
    ))["code"]
        .clone();
    let (status, _, r) = exchange(&idp, &code, redirect, &verifier);
    assert_eq!(status, 200, "{r}");
    let token = r["id_token"].as_str().unwrap();
    let header_json: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header_json["alg"], "RS256");
    let c = jwt_claims(token);
    assert_eq!(c["nonce"], "not-the-one");
    assert!(c.get("acr").is_none());

    // Requests refused before any code: with a page when the redirect URI
    // cannot be trusted, by a redirect with error= otherwise.
    let (_, challenge) = pkce_pair();
    let bad_redirect = authorization_url(&idp, "http://127.0.0.1:9/evil", "s", "n", &challenge);
    let path = bad_redirect.trim_start_matches(&idp.issuer);
    let (status, _, body) = common::get(idp.port, path);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("redirect_uri"));
    for (from, to, error) in [
        (
            "code_challenge_method=S256",
            "code_challenge_method=plain",
            "invalid_request",
        ),
        ("&nonce=n", "", "invalid_request"),
        (
            "response_type=code",
            "response_type=token",
            "unsupported_response_type",
        ),
        ("scope=openid", "scope=profile", "invalid_scope"),
    ] {
        let url = authorization_url(&idp, redirect, "s", "n", &challenge).replace(from, to);
        let back = idp.authorize_directly(&url, sardor);
        let q = query_params(&back);
        assert_eq!(
            q.get("error").map(String::as_str),
            Some(error),
            "{url} → {back}"
        );
        assert_eq!(q["state"], "s");
        assert!(!q.contains_key("code"));
    }
    assert_eq!(idp.authorization_requests().len(), 11);
    assert_eq!(idp.authorization_requests()[0]["nonce"], "nonce-1");

    // The counters.
    assert_eq!(idp.token_requests(), 9);
    assert_eq!(idp.tokens_issued(), 3);
    let reasons: Vec<String> = idp
        .token_refusals()
        .into_iter()
        .map(|r| format!("{}: {}", r.error, r.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            "invalid_grant: code already used",
            "invalid_grant: code_verifier does not match the code_challenge",
            "invalid_grant: code already used",
            "invalid_grant: redirect_uri differs from the authorization request",
            "invalid_client: client \"muhr-portal\" unknown or wrong secret",
            "invalid_grant: code expired",
        ]
    );
}

#[test]
fn oidc_login_page_in_the_browser() {
    let site = site();
    let idp = Provider::start();
    // The login page on another site than the relying party, as in production.
    idp.set_authorization_host("localhost");
    let callback = site.url("/callback");
    idp.register_client(CLIENT, SECRET, &callback);
    idp.enroll("Sardor Toshmatov", idp.claims("31505851234567"));
    let malika = idp.enroll("Malika Karimova", idp.claims("42001901234567"));
    let tmp = tempfile::tempdir().unwrap();
    let b = Browser::start(tmp.path());

    let (verifier, challenge) = pkce_pair();
    let url = authorization_url(&idp, &callback, "st-b", "nonce-b", &challenge);
    assert!(url.starts_with(&format!("http://localhost:{}/authorize?", idp.port)));
    b.goto(&url);
    b.wait_for("#continue", WAIT);
    assert_eq!(b.text("#client"), CLIENT);
    assert!(b.text("label[for=person-1]").contains("Malika Karimova"));
    let (desktop, phone) = b.screenshot_both(&tmp.path().join("shots"), "idp-login");
    assert!(desktop.exists() && phone.exists());
    b.click(&format!("#person-{malika}"));
    b.click("#continue");
    let back = b.wait_for_url("/callback?", WAIT);
    b.wait_for_text("#back", "relying party", WAIT);
    let q = query_params(&back);
    assert_eq!(q["state"], "st-b");
    let (status, _, t) = exchange(&idp, &q["code"], &callback, &verifier);
    assert_eq!(status, 200, "{t}");
    let c = jwt_claims(t["id_token"].as_str().unwrap());
    assert_eq!(
        (c["sub"].as_str(), c["nonce"].as_str()),
        (Some("user-42001901234567"), Some("nonce-b"))
    );

    // Cancelling on the page: access_denied back at the client.
    b.goto(&authorization_url(
        &idp, &callback, "st-c", "nonce-c", &challenge,
    ));
    b.wait_for("#cancel", WAIT);
    b.click("#cancel");
    let back = b.wait_for_url("/callback?", WAIT);
    let q = query_params(&back);
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("access_denied", "st-c")
    );
    let errors = b.console_errors();
    assert!(errors.is_empty(), "{errors:?}");
}

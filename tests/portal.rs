//! The citizen portal, driven as a citizen drives it: headless Chromium over
//! WebDriver, the test identity provider on another site (`localhost`
//! against Muhr's `127.0.0.1`), OpenSSL and `muhr client` checking the file
//! the page made. Then the attacks a browser cannot show: a forged or
//! missing CSRF token, a callback replayed or brought by another browser, a
//! token injected from another login, a session used after logout.
//!
//! Screenshots of each step, at desktop and phone width, go to
//! `docs/portal/` (docs/portal.md shows them).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::browser::{Browser, require_chromium};
use common::oidc::{Provider, query_params};
use common::{Db, Env, Keys, PORTAL_CLIENT_SECRET, free_port, openssl, pinfl, send, start_at};
use serde_json::{Value, json};

const CLIENT: &str = "muhr-test";
const WAIT: Duration = Duration::from_secs(30);

/// A person of the test population: born across the century, with the
/// letters Uzbek names really have.
struct Person {
    pinfl: String,
    surname: &'static str,
    given: &'static str,
    patronymic: &'static str,
    birth: &'static str,
}

impl Person {
    /// `first` is the century-and-sex digit; `birth` YYYY-MM-DD.
    fn new(
        first: u8,
        birth: &'static str,
        district: &str,
        seq: &str,
        names: [&'static str; 3],
    ) -> Self {
        let (y, m, d) = (&birth[2..4], &birth[5..7], &birth[8..10]);
        Self {
            pinfl: pinfl(&format!("{first}{d}{m}{y}{district}{seq}")),
            surname: names[0],
            given: names[1],
            patronymic: names[2],
            birth,
        }
    }

    fn claims(&self, idp: &Provider) -> Value {
        let mut c = idp.claims(&self.pinfl);
        c["family_name"] = json!(self.surname);
        c["given_name"] = json!(self.given);
        c["middle_name"] = json!(self.patronymic);
        c["birthdate"] = json!(self.birth);
        c
    }
}

struct Portal {
    env: Env,
    idp: Provider,
    port: u16,
    _server: common::Server,
}

impl Portal {
    fn start(db: Db) -> Self {
        let idp = Provider::start();
        // The login page on another site, as in production: a SameSite=Strict
        // pre-login cookie would not survive the way back.
        idp.set_authorization_host("localhost");
        let port = free_port();
        let redirect = format!("http://127.0.0.1:{port}/portal/callback");
        idp.register_client(CLIENT, PORTAL_CLIENT_SECRET, &redirect);
        // Endpoints by discovery from the issuer; the secret from the environment.
        let config = format!(
            "{}client_secret_env = \"MUHR_PORTAL_CLIENT_SECRET\"\n\n[portal]\nredirect_uri = \"{redirect}\"\n",
            idp.config("[citizens.rate_limits]\naddress_per_minute = 0\nperson_per_hour = 100")
        );
        let env = Env::with_extra(db, Keys::Software, &config);
        env.init();
        let server = start_at(&env, port);
        Self {
            env,
            idp,
            port,
            _server: server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Logs `person` in without a browser: the portal's redirect, the
    /// provider's approval, the callback with the pre-login cookie. Returns
    /// the session cookie (`name=value`) and the page's CSRF token.
    fn login(&self, person: usize) -> (String, String) {
        let (status, head, _) = send(self.port, "GET", "/portal/login", "", b"");
        assert_eq!(status, 303, "{head}");
        let location = header(&head, "location").unwrap();
        let login_cookie = set_cookie(&head, "muhr_login").unwrap();
        let back = self.idp.authorize_directly(&location, person);
        let path = back
            .split_once(&format!(":{}", self.port))
            .unwrap()
            .1
            .to_string();
        let (status, head, body) = send(
            self.port,
            "GET",
            &path,
            &format!("Cookie: {login_cookie}\r\n"),
            b"",
        );
        assert_eq!(status, 200, "{head}\n{}", String::from_utf8_lossy(&body));
        let session = set_cookie(&head, "muhr_session").expect("a session cookie");
        let (_, _, page) = send(
            self.port,
            "GET",
            "/portal/",
            &format!("Cookie: {session}\r\n"),
            b"",
        );
        let page = String::from_utf8(page).unwrap();
        let csrf = page
            .split("name=\"csrf-token\" content=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("the home page carries the CSRF token")
            .to_string();
        (session, csrf)
    }

    /// A call of the portal's API with a session cookie and headers.
    fn call(&self, path: &str, session: &str, extra: &str, body: &Value) -> (u16, Value) {
        let (status, _, body) = send(
            self.port,
            "POST",
            path,
            &format!("Cookie: {session}\r\nContent-Type: application/json\r\n{extra}"),
            body.to_string().as_bytes(),
        );
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn ocsp(&self, cert: &Path) -> String {
        openssl(&[
            "ocsp",
            "-issuer",
            self.env.issuing_pem().to_str().unwrap(),
            "-cert",
            cert.to_str().unwrap(),
            "-url",
            &self.url("/ocsp"),
            "-CAfile",
            self.env.root_pem().to_str().unwrap(),
            "-no_nonce",
        ])
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// `name=value` of a Set-Cookie header that sets `name` to a non-empty value.
fn set_cookie(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.trim().eq_ignore_ascii_case("set-cookie") {
            return None;
        }
        let pair = v.trim().split(';').next()?.trim();
        let (n, val) = pair.split_once('=')?;
        (n == name && !val.is_empty()).then(|| pair.to_string())
    })
}

/// Where the screenshots go: `MUHR_SCREENSHOTS`, else `target/portal-screenshots`
/// (docs/portal/ holds a run's copies: `MUHR_SCREENSHOTS=docs/portal`).
fn screenshots() -> PathBuf {
    let d = std::env::var_os("MUHR_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/portal-screenshots"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// From a page with the login button: the provider's page, person `n`, back.
fn log_in(b: &Browser, n: usize) {
    b.click("#login");
    b.wait_for(&format!("#person-{n}"), WAIT);
    b.click(&format!("#person-{n}"));
    b.click("#continue");
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The whole flow in a real browser: log in at the identity provider, get
/// a signing certificate whose key never leaves the page, check the
/// PKCS#12 with OpenSSL and sign with it, suspend, see OCSP follow, log out
/// and be unable to act; a deceased person's refusal as a sentence.
#[test]
fn a_citizen_gets_a_certificate_in_the_browser_and_manages_it() {
    require_chromium();
    let p = Portal::start(Db::Sqlite);
    let shots = screenshots();
    let oygul = Person::new(
        4,
        "1931-02-28",
        "101",
        "007",
        ["Qoʻchqorova", "Oʻgʻiloy", "Ergash qizi"],
    );
    let dead = Person::new(
        4,
        "1952-11-30",
        "305",
        "002",
        ["Раҳимова", "Зиёда", "Абдуллаевна"],
    );
    let registry = p.env.write(
        "registry.csv",
        format!(
            "pinfl,surname,given_name,patronymic,birth_date,deceased_on\n{},{},{},{},{},2025-03-01\n",
            dead.pinfl, dead.surname, dead.given, dead.patronymic, dead.birth
        ),
    );
    p.env
        .ok(&["registry", "import", registry.to_str().unwrap()]);
    let n_oygul = p.idp.enroll("Oʻgʻiloy Qoʻchqorova", oygul.claims(&p.idp));
    let n_dead = p.idp.enroll("Зиёда Раҳимова", dead.claims(&p.idp));

    let downloads = tempfile::tempdir().unwrap();
    // A browser set to Uzbek, then Russian, as a citizen's would be.
    let b = Browser::start_with_language(downloads.path(), "uz-UZ,uz,ru;q=0.8");
    b.goto(&p.url("/portal/"));
    b.wait_for("#login", WAIT);
    assert_eq!(b.attr("html", "lang").as_deref(), Some("uz"), "Uzbek first");
    b.screenshot_both(&shots, "01-welcome");

    // The identity provider's page, on its own site.
    b.click("#login");
    b.wait_for(&format!("#person-{n_oygul}"), WAIT);
    assert!(b.url().starts_with("http://localhost:"), "{}", b.url());
    let asked = p.idp.authorization_requests().pop().unwrap();
    assert_eq!(asked["code_challenge_method"], "S256");
    assert!(!b.url().contains(&oygul.pinfl), "no personal data in URLs");
    b.screenshot_both(&shots, "02-identity-provider");
    b.click(&format!("#person-{n_oygul}"));
    b.click("#continue");
    b.wait_for_text("#who", "Qoʻchqorova", WAIT);
    assert!(
        !b.url().contains("code="),
        "the code does not stay in the address bar"
    );
    b.wait_for("#none", WAIT);
    b.screenshot_both(&shots, "03-home");

    // Request a signing certificate: key, CSR and PKCS#12 in the page.
    let password = "Qoʻqon bahori 2026!";
    b.click("#profile-individual-sign");
    b.fill("#password", password);
    b.fill("#password2", password);
    wait_until("the strength meter", || {
        !b.text("#strength-text").is_empty()
    });
    b.screenshot_both(&shots, "04-request");
    b.click("#request-button");
    wait_until("the certificate", || {
        b.attr("body", "data-issued").is_some()
    });
    let serial = b.attr("body", "data-issued").unwrap();
    let p12 = b.wait_for_download(downloads.path(), "p12", WAIT);
    b.screenshot_both(&shots, "05-issued");
    let errors = b.console_errors();
    assert!(
        errors.is_empty(),
        "the page ran under its CSP without errors: {errors:?}"
    );

    // OpenSSL reads the file without -legacy; the chain verifies; the key
    // matches the certificate.
    let pass = format!("pass:{password}");
    let leaf_pem = openssl(&[
        "pkcs12",
        "-in",
        p12.to_str().unwrap(),
        "-passin",
        &pass,
        "-nokeys",
        "-clcerts",
    ]);
    let leaf = p.env.write("leaf.pem", leaf_pem);
    let chain = openssl(&[
        "pkcs12",
        "-in",
        p12.to_str().unwrap(),
        "-passin",
        &pass,
        "-nokeys",
        "-cacerts",
    ]);
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "the chain is in the file: {chain}"
    );
    common::verify_chain(&p.env.data(), &leaf);
    let subject = openssl(&[
        "x509",
        "-in",
        leaf.to_str().unwrap(),
        "-noout",
        "-subject",
        "-serial",
        "-nameopt",
        "utf8",
    ]);
    assert!(
        subject.contains("Qoʻchqorova") && subject.contains(&oygul.pinfl),
        "{subject}"
    );
    assert!(subject.contains(&format!("serial={serial}")), "{subject}");
    let key = p.env.write(
        "key.pem",
        openssl(&[
            "pkcs12",
            "-in",
            p12.to_str().unwrap(),
            "-passin",
            &pass,
            "-nocerts",
            "-nodes",
        ]),
    );
    assert_eq!(
        openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]),
        openssl(&["x509", "-in", leaf.to_str().unwrap(), "-noout", "-pubkey"]),
        "the key in the file is the certified one"
    );
    let out = common::openssl_output(&[
        "pkcs12",
        "-in",
        p12.to_str().unwrap(),
        "-passin",
        &pass,
        "-info",
        "-noout",
    ]);
    assert!(out.status.success(), "{out:?}");
    // OpenSSL prints the file's algorithms on stderr.
    let info = String::from_utf8_lossy(&out.stderr);
    assert!(
        info.contains("AES-256-CBC") && info.contains("sha256"),
        "{info}"
    );

    // `muhr client sign` opens it; the signature verifies.
    let doc = p
        .env
        .write("letter.txt", "Arizа / Заявление / Application\n");
    let pw_file = p.env.write("p12.pass", password);
    p.env.ok(&[
        "client",
        "sign",
        doc.to_str().unwrap(),
        "--p12",
        p12.to_str().unwrap(),
        "--password-file",
        pw_file.to_str().unwrap(),
    ]);
    let sig = PathBuf::from(format!("{}.p7s", doc.display()));
    openssl(&[
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        sig.to_str().unwrap(),
        "-content",
        doc.to_str().unwrap(),
        "-CAfile",
        p.env.root_pem().to_str().unwrap(),
        "-purpose",
        "any",
        "-out",
        "/dev/null",
    ]);

    // Suspend after a confirmation; OCSP says certificateHold at once.
    b.goto(&p.url("/portal/"));
    let row = format!("tr[data-serial=\"{serial}\"]");
    b.wait_for(&format!("{row} button.suspend"), WAIT);
    b.click(&format!("{row} button.suspend"));
    b.wait_for("#confirm-suspend[open]", WAIT);
    b.screenshot_both(&shots, "06-confirm-suspend");
    let asked_at = Instant::now();
    b.click("#confirm-suspend-ok");
    b.wait_for(&format!("{row}[data-state=\"suspended\"]"), WAIT);
    let ocsp = p.ocsp(&leaf);
    assert!(
        ocsp.contains(": revoked") && ocsp.contains("certificateHold"),
        "{ocsp}"
    );
    assert!(
        asked_at.elapsed() < Duration::from_secs(5),
        "OCSP followed the suspension at once"
    );
    // The delta CRL follows too (within a second; the deadline allows for
    // a loaded machine).
    let crl = p.env.path("delta.crl");
    let deadline = asked_at + Duration::from_secs(3);
    loop {
        let (status, _, body) = common::get(p.port, "/crl/issuing-delta.crl");
        if status == 200 {
            std::fs::write(&crl, &body).unwrap();
            let text = openssl(&[
                "crl",
                "-inform",
                "DER",
                "-in",
                crl.to_str().unwrap(),
                "-noout",
                "-text",
            ]);
            if text.contains(&serial) {
                assert!(text.contains("Certificate Hold"), "{text}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the delta CRL did not list the suspension"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.screenshot_both(&shots, "07-suspended");

    // Log out; the old cookie and CSRF token then open nothing.
    let session = b
        .cookies()
        .into_iter()
        .find(|c| c.name == "muhr_session")
        .expect("the session cookie");
    assert!(
        session.http_only && session.same_site.as_deref() == Some("Strict"),
        "{:?}",
        session.same_site
    );
    let csrf = b.attr("meta[name=\"csrf-token\"]", "content").unwrap();
    b.click("#logout");
    b.wait_for("#message", WAIT);
    b.screenshot_both(&shots, "08-logged-out");
    let stolen = format!("muhr_session={}", session.value);
    let (status, v) = p.call(
        &format!("/portal/api/certificates/{serial}/revoke"),
        &stolen,
        &format!("X-CSRF-Token: {csrf}\r\n"),
        &json!({"reason": "keyCompromise"}),
    );
    assert_eq!(status, 401, "a session ended by logout acts no more: {v}");
    let ocsp = p.ocsp(&leaf);
    assert!(
        ocsp.contains("certificateHold"),
        "not revoked by the stale session: {ocsp}"
    );

    // A new login for an authentication certificate, then its renewal: the
    // current file loaded into the page, its key signing the CMC request.
    b.goto(&p.url("/portal/"));
    log_in(&b, n_oygul);
    b.wait_for_text("#who", "Qoʻchqorova", WAIT);
    b.click("#profile-individual-auth");
    b.fill("#password", password);
    b.fill("#password2", password);
    b.click("#request-button");
    wait_until("the authentication certificate", || {
        b.attr("body", "data-issued").is_some()
    });
    let auth_serial = b.attr("body", "data-issued").unwrap();
    let auth_p12 = b.wait_for_download(downloads.path(), "p12", WAIT);
    b.goto(&p.url("/portal/"));
    let auth_row = format!("tr[data-serial=\"{auth_serial}\"]");
    b.wait_for(&format!("{auth_row} button.renew"), WAIT);
    b.click(&format!("{auth_row} button.renew"));
    b.wait_for("#renew-dialog[open]", WAIT);
    b.fill("#renew-file", auth_p12.to_str().unwrap());
    b.fill("#renew-password", password);
    let new_password = "Yangi parol: Samarqand 2027";
    b.fill("#renew-new-password", new_password);
    b.fill("#renew-new-password2", new_password);
    b.screenshot_both(&shots, "09-renew");
    b.click("#renew-ok");
    wait_until("the renewed certificate", || {
        b.attr("body", "data-renewed").is_some()
    });
    let renewed_serial = b.attr("body", "data-renewed").unwrap();
    assert_ne!(renewed_serial, auth_serial);
    let renewed = b.wait_for_download(downloads.path(), "p12", WAIT);
    b.screenshot_both(&shots, "10-renewed");
    let new_pass = format!("pass:{new_password}");
    let renewed_leaf = p.env.write(
        "renewed.pem",
        openssl(&[
            "pkcs12",
            "-in",
            renewed.to_str().unwrap(),
            "-passin",
            &new_pass,
            "-nokeys",
            "-clcerts",
        ]),
    );
    common::verify_chain(&p.env.data(), &renewed_leaf);
    let text = openssl(&[
        "x509",
        "-in",
        renewed_leaf.to_str().unwrap(),
        "-noout",
        "-subject",
        "-serial",
        "-nameopt",
        "utf8",
    ]);
    assert!(
        text.contains(&oygul.pinfl) && text.contains(&format!("serial={renewed_serial}")),
        "{text}"
    );
    let old_key = openssl(&[
        "pkcs12",
        "-in",
        auth_p12.to_str().unwrap(),
        "-passin",
        &pass,
        "-nokeys",
        "-clcerts",
    ]);
    let old_leaf = p.env.write("old-auth.pem", old_key);
    assert_ne!(
        openssl(&[
            "x509",
            "-in",
            old_leaf.to_str().unwrap(),
            "-noout",
            "-pubkey"
        ]),
        openssl(&[
            "x509",
            "-in",
            renewed_leaf.to_str().unwrap(),
            "-noout",
            "-pubkey"
        ]),
        "a renewal certifies a new key"
    );
    b.click("#logout");
    b.wait_for("#message", WAIT);

    // A deceased person: refused, said in words (in Russian, switched on the page).
    b.goto(&p.url("/portal/lang/ru"));
    b.wait_for("#login", WAIT);
    assert_eq!(b.attr("html", "lang").as_deref(), Some("ru"));
    log_in(&b, n_dead);
    let said = b.wait_for_text("#message", "умершим", WAIT);
    assert!(!said.contains('{'), "a sentence, not JSON: {said}");
    b.screenshot_both(&shots, "11-refused-deceased");
    let files = std::fs::read_dir(downloads.path()).unwrap().count();
    assert_eq!(files, 3, "nothing downloaded for the refused request");
    b.quit();
}

/// What a page cannot show: every state-changing call needs this session's
/// CSRF token from this site; the CSP and the other headers are on every
/// page; no personal data travels in a URL.
#[test]
fn csrf_is_required_and_the_headers_hold() {
    let p = Portal::start(Db::Postgres);
    let me = Person::new(
        5,
        "2004-02-29",
        "203",
        "011",
        ["Yoʻldoshev", "Ali", "Shavkat oʻgʻli"],
    );
    let other = Person::new(3, "1979-12-31", "117", "004", ["Ermatov", "Gʻayrat", ""]);
    let n_me = p.idp.enroll("Ali", me.claims(&p.idp));
    let n_other = p.idp.enroll("Gʻayrat", other.claims(&p.idp));
    let (mine, csrf) = p.login(n_me);
    let (theirs, their_csrf) = p.login(n_other);
    let csr = std::fs::read_to_string(p.env.csr("k", "ec")).unwrap();
    let issue = json!({"csr": csr, "profile": "individual-auth"});
    let before = p.env.count("certificates");

    for (why, extra) in [
        ("no token", String::new()),
        (
            "another session's token",
            format!("X-CSRF-Token: {their_csrf}\r\n"),
        ),
        (
            "a cross-site request with the right token",
            format!("X-CSRF-Token: {csrf}\r\nSec-Fetch-Site: cross-site\r\n"),
        ),
    ] {
        let (status, v) = p.call("/portal/api/certificates", &mine, &extra, &issue);
        assert_eq!(status, 403, "{why}: {v}");
        assert_eq!(v["error"]["field"], "x-csrf-token", "{why}: {v}");
        assert!(v["sentence"].as_str().unwrap().contains("eskirgan"), "{v}");
    }
    // A form post of the logout without the token ends nothing.
    let (status, _, _) = send(
        p.port,
        "POST",
        "/portal/logout",
        &format!("Cookie: {mine}\r\nContent-Type: application/x-www-form-urlencoded\r\n"),
        b"csrf=wrong",
    );
    assert_eq!(status, 403);
    assert_eq!(
        p.env.count("certificates"),
        before,
        "nothing issued without the token"
    );

    // With it: issued, once per login.
    let (status, v) = p.call(
        "/portal/api/certificates",
        &mine,
        &format!("X-CSRF-Token: {csrf}\r\n"),
        &issue,
    );
    assert_eq!(status, 201, "{v}");
    let serial = v["serial"].as_str().unwrap().to_string();
    let csr2 = std::fs::read_to_string(p.env.csr("k2", "ec")).unwrap();
    let (status, v) = p.call(
        "/portal/api/certificates",
        &mine,
        &format!("X-CSRF-Token: {csrf}\r\n"),
        &json!({"csr": csr2, "profile": "individual-sign"}),
    );
    assert_eq!(status, 409, "one login, one certificate: {v}");
    assert!(v["sentence"].as_str().unwrap().contains("qayta kir"), "{v}");

    // Another person's session cannot touch it.
    let (status, v) = p.call(
        &format!("/portal/api/certificates/{serial}/suspend"),
        &theirs,
        &format!("X-CSRF-Token: {their_csrf}\r\n"),
        &json!({}),
    );
    assert_eq!(status, 404, "{v}");
    let (status, v) = p.call(
        "/portal/api/renewal/challenge",
        &theirs,
        &format!("X-CSRF-Token: {their_csrf}\r\n"),
        &json!({"serial": serial}),
    );
    assert_eq!(
        status, 404,
        "a renewal challenge for another person's certificate: {v}"
    );

    // The registry records the other person's death while they are logged
    // in: their session acts no more (every request checks).
    let registry = p.env.write(
        "registry.csv",
        format!(
            "pinfl,surname,given_name,patronymic,birth_date,deceased_on\n{},{},{},{},{},2026-11-30\n",
            other.pinfl, other.surname, other.given, other.patronymic, other.birth
        ),
    );
    p.env
        .ok(&["registry", "import", registry.to_str().unwrap()]);
    let (status, v) = p.call(
        "/portal/api/renewal/challenge",
        &theirs,
        &format!("X-CSRF-Token: {their_csrf}\r\n"),
        &json!({"serial": serial}),
    );
    assert_eq!(status, 401, "a session outliving its person's death: {v}");

    // A database administrator writes a session by hand: a cookie of their
    // own, the victim's PINFL, an ID token signed with their own key, sealed
    // properly. It opens nothing: the provider's signature is checked again.
    let forged_cookie = "forged-by-a-database-administrator";
    let mut claims = me.claims(&p.idp);
    claims["nonce"] = json!("n");
    let token = common::oidc::sign_es256(&common::oidc::ec_key(), "es-1", &claims);
    let sealed = muhr_portal::session::seal(
        forged_cookie,
        &me.pinfl,
        &muhr_portal::session::Login {
            id_token: token,
            nonce: "n".into(),
        },
    )
    .unwrap();
    let now = muhr_store::now_secs();
    p.env.sql(&format!(
        "INSERT INTO portal_sessions (id_hash, pinfl, sealed, csrf, created_at, expires_at) \
         VALUES ('{}', '{}', '{sealed}', 'c', {now}, {})",
        muhr_portal::session::digest(forged_cookie),
        me.pinfl,
        now + 600
    ));
    let forged = format!("muhr_session={forged_cookie}");
    let (status, v) = p.call(
        "/portal/api/certificates",
        &forged,
        "X-CSRF-Token: c\r\n",
        &json!({"csr": std::fs::read_to_string(p.env.csr("k3", "ec")).unwrap(), "profile": "individual-sign"}),
    );
    assert_eq!(status, 401, "a hand-written session issues nothing: {v}");
    let (_, _, page) = send(
        p.port,
        "GET",
        "/portal/",
        &format!("Cookie: {forged}\r\n"),
        b"",
    );
    assert!(
        String::from_utf8_lossy(&page).contains("id=\"login\""),
        "a hand-written session shows no one's home"
    );

    // The same with a genuine ID token of the provider's, replayed after
    // its login's session time: refused however the row is dated.
    let old = muhr_store::now_secs() - 3 * 3600;
    let mut claims = me.claims(&p.idp);
    claims["iat"] = json!(old);
    claims["auth_time"] = json!(old);
    claims["exp"] = json!(old + 300);
    claims["nonce"] = json!("n");
    let genuine = p.idp.es256(&claims);
    let replay_cookie = "replayed-by-a-database-administrator";
    let sealed = muhr_portal::session::seal(
        replay_cookie,
        &me.pinfl,
        &muhr_portal::session::Login {
            id_token: genuine,
            nonce: "n".into(),
        },
    )
    .unwrap();
    p.env.sql(&format!(
        "INSERT INTO portal_sessions (id_hash, pinfl, sealed, csrf, created_at, expires_at) \
         VALUES ('{}', '{}', '{sealed}', 'c', {old}, {})",
        muhr_portal::session::digest(replay_cookie),
        me.pinfl,
        now + 600
    ));
    let (status, v) = p.call(
        &format!("/portal/api/certificates/{serial}/suspend"),
        &format!("muhr_session={replay_cookie}"),
        "X-CSRF-Token: c\r\n",
        &json!({}),
    );
    assert_eq!(
        status, 401,
        "an old genuine token replayed in a hand-written row: {v}"
    );

    // The OpenAPI document lists the portal's calls, not its pages.
    let (_, _, doc) = common::get(p.port, "/openapi.json");
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for api in [
        "/portal/api/certificates",
        "/portal/api/certificates/{serial}/suspend",
        "/portal/api/certificates/{serial}/revoke",
        "/portal/api/renewal/challenge",
        "/portal/api/renewal",
    ] {
        assert!(paths.contains_key(api), "{api} is documented");
    }
    assert!(
        paths
            .keys()
            .filter(|k| k.starts_with("/portal/"))
            .all(|k| k.starts_with("/portal/api/")),
        "pages are not APIs"
    );

    // The headers of every page.
    for path in ["/portal/", "/portal/login"] {
        let (_, head, _) = send(p.port, "GET", path, &format!("Cookie: {mine}\r\n"), b"");
        let csp = header(&head, "content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{path}: {csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(
            header(&head, "x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(
            header(&head, "referrer-policy").as_deref(),
            Some("no-referrer")
        );
    }
    // Cookies: HttpOnly, SameSite, Path; no personal data in any URL the
    // provider saw.
    for r in p.idp.authorization_requests() {
        let all: String = r.values().cloned().collect();
        assert!(
            !all.contains(&me.pinfl) && !all.contains(&other.pinfl),
            "{r:?}"
        );
    }
    let logs: String = std::fs::read_dir(p.env.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(
        !logs.contains(&me.pinfl) && !logs.contains(PORTAL_CLIENT_SECRET),
        "no personal data or secret in logs"
    );
}

/// The login itself, attacked: a callback replayed, brought by another
/// browser (login CSRF), or carrying an ID token with another login's nonce.
#[test]
fn a_login_is_bound_to_its_browser_and_used_once() {
    let p = Portal::start(Db::Sqlite);
    let me = Person::new(
        6,
        "2021-07-04",
        "101",
        "019",
        ["Islomova", "Mohinur", "Farhod qizi"],
    );
    let n = p.idp.enroll("Mohinur", me.claims(&p.idp));

    let start = || {
        let (_, head, _) = send(p.port, "GET", "/portal/login", "", b"");
        let location = header(&head, "location").unwrap();
        let cookie = set_cookie(&head, "muhr_login").unwrap();
        let back = p.idp.authorize_directly(&location, n);
        let path = back
            .split_once(&format!(":{}", p.port))
            .unwrap()
            .1
            .to_string();
        (path, cookie, location)
    };

    // Another browser (no pre-login cookie, or another login's) brings the code.
    let (path, _, _) = start();
    let (_, theirs, _) = start();
    for cookie in ["".to_string(), format!("Cookie: {theirs}\r\n")] {
        let (status, head, _) = send(p.port, "GET", &path, &cookie, b"");
        assert_eq!(status, 400, "{head}");
        assert!(set_cookie(&head, "muhr_session").is_none());
    }

    // The right browser, then the same callback again.
    let (path, cookie, location) = start();
    let params = query_params(&location);
    assert_eq!(params["code_challenge_method"], "S256");
    assert!(params.contains_key("nonce") && params.contains_key("state"));
    let (status, head, _) = send(p.port, "GET", &path, &format!("Cookie: {cookie}\r\n"), b"");
    assert_eq!(status, 200, "{head}");
    assert!(set_cookie(&head, "muhr_session").is_some());
    let (status, head, _) = send(p.port, "GET", &path, &format!("Cookie: {cookie}\r\n"), b"");
    assert_eq!(status, 400, "a replayed callback: {head}");

    // An ID token whose nonce is not this login's.
    p.idp
        .patch_next_id_token(json!({"nonce": "from-another-login"}));
    let (_, head, _) = send(p.port, "GET", "/portal/login", "", b"");
    let location = header(&head, "location").unwrap();
    let c2 = set_cookie(&head, "muhr_login").unwrap();
    let back = p.idp.authorize_directly(&location, n);
    let path2 = back
        .split_once(&format!(":{}", p.port))
        .unwrap()
        .1
        .to_string();
    let (status, head, _) = send(p.port, "GET", &path2, &format!("Cookie: {c2}\r\n"), b"");
    assert_eq!(status, 400, "a token from another login: {head}");
    assert!(set_cookie(&head, "muhr_session").is_none());
}

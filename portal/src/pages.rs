//! The portal's pages: the welcome page, the login with the identity
//! system and its callback, the citizen's home (certificates, the request
//! form, notices), logout and the language switch. Pages are templates
//! compiled into the binary, escaped by default.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use muhr_ca::revocation::Reason;
use muhr_ra::citizen::oidc::TokenError;
use muhr_ra::citizen::service::origin;
use muhr_store::portal::{PendingLogin, Session};
use serde_json::json;

use crate::Portal;
use crate::i18n::{self, Lang};
use crate::provider::random_text;
use crate::session;

/// The templates, parsed once; a template that does not parse stops the
/// start, not a page.
pub(crate) fn templates() -> Result<minijinja::Environment<'static>, String> {
    let mut env = minijinja::Environment::new();
    for (name, text) in [
        ("base.html", include_str!("../templates/base.html")),
        ("welcome.html", include_str!("../templates/welcome.html")),
        ("home.html", include_str!("../templates/home.html")),
        ("message.html", include_str!("../templates/message.html")),
    ] {
        env.add_template(name, text)
            .map_err(|e| format!("portal template {name}: {e}"))?;
    }
    Ok(env)
}

impl Portal {
    fn render(&self, name: &str, lang: Lang, extra: serde_json::Value) -> Response {
        let langs: Vec<_> = i18n::ALL
            .iter()
            .map(|l| json!({"code": l.code(), "name": self.messages.get(*l, "lang_name")}))
            .collect();
        let mut ctx = json!({
            "lang": lang.code(),
            "langs": langs,
            "m": self.messages.of(lang),
            "v": {
                "js": self.assets.version_of("portal.js"),
                "css": self.assets.version_of("portal.css"),
                "pki": self.assets.version_of("pki.js"),
                "icon": self.assets.version_of("favicon.svg"),
            },
        });
        if let (Some(c), serde_json::Value::Object(e)) = (ctx.as_object_mut(), extra) {
            c.extend(e);
        }
        match self
            .templates
            .get_template(name)
            .and_then(|t| t.render(&ctx))
        {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!(error = %e, template = name, "portal: a page did not render");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }

    /// A page with one sentence and one link.
    pub(crate) fn message(
        &self,
        status: StatusCode,
        lang: Lang,
        text_key: &str,
        problem: bool,
    ) -> Response {
        let (link, link_key) = if problem {
            ("/portal/login", "login")
        } else {
            ("/portal/", "continue")
        };
        let mut r = self.render(
            "message.html",
            lang,
            json!({
                "text": self.messages.get(lang, text_key),
                "problem": problem,
                "link": link,
                "link_text": self.messages.get(lang, link_key),
            }),
        );
        *r.status_mut() = status;
        r
    }
}

/// `/portal` → `/portal/`.
pub(crate) async fn to_portal() -> Redirect {
    Redirect::permanent("/portal/")
}

/// The welcome page, or the citizen's home when logged in (its reads are
/// audited, so they count against the address's limit).
pub(crate) async fn home(
    State(p): State<Arc<Portal>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    if let Err(e) = p.citizens.limit_address(&muhr_ra::citizen::http::rate_key(
        p.citizens.config().rate_limits.trust_forwarded_for,
        &headers,
        Some(peer),
    )) {
        let r = crate::sentences::of(&e);
        return p.message(r.status, lang, r.sentence, false);
    }
    let live = match session::find(&p.citizens, &headers, p.secure(), p.session_seconds()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "portal: sessions unavailable");
            return p.message(StatusCode::SERVICE_UNAVAILABLE, lang, "unavailable", false);
        }
    };
    let Some(live) = live else {
        return p.render("welcome.html", lang, json!({"signed_in": false}));
    };
    let c = &p.citizens;
    let who = &live.citizen;
    let (certs, notices) = match (c.certificates(who).await, c.notices(who).await) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            let r = crate::sentences::of(&e);
            return p.message(r.status, lang, r.sentence, false);
        }
    };
    let m = |k: &str| p.messages.get(lang, k).to_string();
    let now = muhr_store::now_secs();
    let certificates: Vec<_> = certs
        .iter()
        .map(|s| {
            let state = if s.status == "pending" {
                "pending"
            } else if s.revocation == "good" && s.not_after < now {
                "expired"
            } else {
                s.revocation.as_str()
            };
            let reason = s
                .revocation_reason
                .and_then(Reason::from_code)
                .filter(|r| *r != Reason::CertificateHold)
                .map(|r| m(&format!("reason_{}", r.name())));
            json!({
                "serial": s.serial,
                "purpose": m(purpose_key(c, &s.profile)),
                "from": lang.date(s.not_before),
                "until": lang.date(s.not_after),
                "origin": m(&format!("origin_{}", origin(s.job.as_deref()))),
                "state": state,
                "status": m(&format!("status_{}", if state == "good" { "good" } else { state })),
                "reason": reason,
                "renewable": renewable(c, &s.profile),
            })
        })
        .collect();
    let notices: Vec<_> = notices
        .iter()
        .take(20)
        .map(|n| {
            json!({
                "date": n.created_at.div_euclid(1_000_000),
                "text": m(&format!("notice_{}", n.kind)),
                "serial": n.serial,
            })
        })
        .map(|mut n| {
            n["date"] = json!(lang.date(n["date"].as_i64().unwrap_or(0)));
            n
        })
        .collect();
    let profiles: Vec<_> = c
        .config()
        .profiles
        .iter()
        .map(|id| json!({"id": id, "name": m(purpose_key(c, id))}))
        .collect();
    // The page's script reads its texts from this JSON island; `<` is
    // escaped so no text can end the element.
    let messages_json = serde_json::to_string(p.messages.of(lang))
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c");
    p.render(
        "home.html",
        lang,
        json!({
            "signed_in": true,
            "csrf": live.csrf,
            "name": format!("{} {}", who.given_name, who.surname),
            "certificates": certificates,
            "notices": notices,
            "profiles": profiles,
            "messages_json": messages_json,
        }),
    )
}

const CLIENT_AUTH: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// "For logging in" or "for signing", from the profile's key usage.
fn purpose_key(c: &muhr_ra::citizen::service::Citizens, profile: &str) -> &'static str {
    let auth = c
        .ca()
        .profiles()
        .get(profile)
        .is_some_and(|p| p.extended_key_usage.contains(&CLIENT_AUTH));
    if auth { "purpose_auth" } else { "purpose_sign" }
}

/// Renewal without a new login is for authentication certificates the
/// citizens' service issues (the RA refuses the others anyway).
fn renewable(c: &muhr_ra::citizen::service::Citizens, profile: &str) -> bool {
    c.config().profiles.iter().any(|p| p == profile) && purpose_key(c, profile) == "purpose_auth"
}

/// `GET /portal/login`: starts the authorization code flow. The state,
/// nonce and PKCE verifier stay on the server; the browser gets a pre-login
/// cookie that the callback must bring back.
pub(crate) async fn login(
    State(p): State<Arc<Portal>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    if let Err(e) = p.citizens.limit_address(&muhr_ra::citizen::http::rate_key(
        p.citizens.config().rate_limits.trust_forwarded_for,
        &headers,
        Some(peer),
    )) {
        let r = crate::sentences::of(&e);
        return p.message(r.status, lang, r.sentence, false);
    }
    let secrets = (
        random_text(32),
        random_text(32),
        random_text(32),
        random_text(32),
    );
    let (Ok(state), Ok(nonce), Ok(verifier), Ok(browser)) = secrets else {
        return p.message(StatusCode::SERVICE_UNAVAILABLE, lang, "unavailable", false);
    };
    let expires = muhr_store::now_secs() + (p.config.login_minutes * 60) as i64;
    let pending = PendingLogin {
        browser_hash: session::digest(&browser),
        nonce: nonce.clone(),
        verifier: verifier.clone(),
        return_lang: lang.code().to_string(),
    };
    let to = match p
        .provider
        .authorization_url(&state, &nonce, &verifier, lang.code())
        .await
    {
        Ok(to) => to,
        Err(e) => {
            tracing::warn!(error = %e, "portal: the identity provider is unreachable");
            return p.message(StatusCode::SERVICE_UNAVAILABLE, lang, "unavailable", false);
        }
    };
    if let Err(e) = p
        .store()
        .begin_portal_login(&session::digest(&state), &pending, expires)
        .await
    {
        tracing::warn!(error = %e, "portal: could not record a login");
        return p.message(StatusCode::SERVICE_UNAVAILABLE, lang, "unavailable", false);
    }
    // A new login ends the session this browser holds (this is a same-site
    // navigation, so the Strict cookie came along).
    if let Some(old) = session::cookie(&headers, session::session_cookie_name(p.secure())) {
        let _ = p.store().end_portal_session(&session::digest(&old)).await;
    }
    let mut r = Redirect::to(&to).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(
            session::login_cookie_name(p.secure()),
            &browser,
            "Lax",
            (p.config.login_minutes * 60) as i64,
            p.secure(),
        ),
    );
    r
}

#[derive(serde::Deserialize)]
pub(crate) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /portal/callback`: the provider sends the citizen back with a code.
/// The login under way is taken once by its state and must belong to this
/// browser; the code is exchanged with the PKCE verifier; the ID token is
/// checked by the API's verifier and must carry this login's nonce. Then a
/// session begins.
pub(crate) async fn callback(
    State(p): State<Arc<Portal>>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let lang = Lang::of(&headers);
    let fail = |status, key: &str| {
        let mut r = p.message(status, lang, key, true);
        r.headers_mut().append(
            header::SET_COOKIE,
            session::set_cookie(
                session::login_cookie_name(p.secure()),
                "",
                "Lax",
                0,
                p.secure(),
            ),
        );
        r
    };
    let Some(state) = q.state.filter(|s| s.len() <= 128) else {
        return fail(StatusCode::BAD_REQUEST, "login_failed");
    };
    let pending = match p.store().take_portal_login(&session::digest(&state)).await {
        Ok(Some(l)) => l,
        Ok(None) => return fail(StatusCode::BAD_REQUEST, "login_failed"),
        Err(e) => {
            tracing::warn!(error = %e, "portal: logins unavailable");
            return fail(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        }
    };
    let lang = Lang::from_code(&pending.return_lang).unwrap_or(lang);
    let browser = session::cookie(&headers, session::login_cookie_name(p.secure()));
    if !browser.is_some_and(|b| session::same(&session::digest(&b), &pending.browser_hash)) {
        tracing::info!("portal: a callback from another browser than the login's was refused");
        return fail(StatusCode::BAD_REQUEST, "login_failed");
    }
    if let Some(e) = q.error {
        tracing::info!(error = %e.chars().take(64).collect::<String>(), "portal: the provider refused the login");
        return fail(StatusCode::BAD_REQUEST, "login_failed");
    }
    let Some(code) = q.code.filter(|c| c.len() <= 2048) else {
        return fail(StatusCode::BAD_REQUEST, "login_failed");
    };
    let token = match p.provider.exchange(&code, &pending.verifier).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e.0, "portal: the code could not be exchanged");
            return fail(StatusCode::BAD_GATEWAY, "login_failed");
        }
    };
    let citizen = match p
        .citizens
        .verifier
        .verify_login(&token, SystemTime::now(), &pending.nonce)
        .await
    {
        Ok(c) => c,
        Err(TokenError::Assurance(why)) => {
            tracing::info!(why = %why, "portal: login below the assurance required");
            return fail(StatusCode::FORBIDDEN, "refused_assurance");
        }
        Err(TokenError::Invalid(why)) => {
            tracing::warn!(why = %why, "portal: the provider's ID token was refused");
            return fail(StatusCode::BAD_REQUEST, "login_failed");
        }
        Err(TokenError::Unavailable(why)) => {
            tracing::error!(error = %why, "portal: no identity provider keys");
            return fail(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        }
    };
    // A person the registry records as deceased gets no session.
    match p.store().deaths(&[citizen.pinfl.as_str()]).await {
        Ok(d) if d.is_empty() => {}
        Ok(_) => return fail(StatusCode::FORBIDDEN, "refused_deceased"),
        Err(e) => {
            tracing::warn!(error = %e, "portal: deaths unavailable");
            return fail(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        }
    }
    let (Ok(id), Ok(csrf)) = (random_text(32), random_text(32)) else {
        return fail(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    };
    let now = muhr_store::now_secs();
    let lifetime = (p.config.session_minutes * 60) as i64;
    let sealed = match session::seal(
        &id,
        &citizen.pinfl,
        &session::Login {
            id_token: token.clone(),
            nonce: pending.nonce.clone(),
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "portal: a session could not be sealed");
            return fail(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        }
    };
    let record = Session {
        pinfl: citizen.pinfl.clone(),
        sealed,
        csrf,
        created_at: now,
        expires_at: now + lifetime,
    };
    if let Err(e) = p
        .store()
        .open_portal_session(&session::digest(&id), &record)
        .await
    {
        tracing::warn!(error = %e, "portal: could not open a session");
        return fail(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    // A login the audit chain cannot record does not happen.
    if let Err(e) = p
        .store()
        .audit(&[&muhr_store::audit::AuditEvent {
            actor: muhr_ra::citizen::service::Citizens::actor(&citizen),
            action: "portal.login".into(),
            object: citizen.pinfl.clone(),
            details: json!({"assurance": citizen.assurance, "session": &session::digest(&id)[..16]}),
        }])
        .await
    {
        tracing::error!(error = %e, "portal: a login could not be audited; refused");
        let _ = p.store().end_portal_session(&session::digest(&id)).await;
        return fail(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    // The session cookie is SameSite=Strict, and this response ends a
    // navigation that began at the provider: the browser keeps the cookie
    // but would not send it on a redirect from here. A page that moves on
    // by itself is a same-site navigation, which does send it.
    let mut r = p.render(
        "message.html",
        lang,
        json!({
            "text": p.messages.get(lang, "signing_in"),
            "refresh": true,
            "link": "/portal/",
            "link_text": p.messages.get(lang, "continue"),
        }),
    );
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        session::set_cookie(
            session::session_cookie_name(p.secure()),
            &id,
            "Strict",
            lifetime,
            p.secure(),
        ),
    );
    h.append(
        header::SET_COOKIE,
        session::set_cookie(
            session::login_cookie_name(p.secure()),
            "",
            "Lax",
            0,
            p.secure(),
        ),
    );
    h.append(header::SET_COOKIE, lang_cookie(lang, p.secure()));
    r
}

#[derive(serde::Deserialize)]
pub(crate) struct LogoutForm {
    csrf: Option<String>,
}

/// `POST /portal/logout`: ends the session everywhere (the row, not just
/// the cookie) and forgets the cookie. It needs only the row and its CSRF
/// token, not the login's checks: a session must end even while the
/// provider's keys are away.
pub(crate) async fn logout(
    State(p): State<Arc<Portal>>,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    let lang = Lang::of(&headers);
    let forget = |mut r: Response| {
        r.headers_mut().append(
            header::SET_COOKIE,
            session::set_cookie(
                session::session_cookie_name(p.secure()),
                "",
                "Strict",
                0,
                p.secure(),
            ),
        );
        r
    };
    let (id_hash, row) = match session::row(p.store(), &headers, p.secure()).await {
        Ok(Some(r)) => r,
        Ok(None) => return forget(p.message(StatusCode::OK, lang, "signed_out", false)),
        Err(_) => return p.message(StatusCode::SERVICE_UNAVAILABLE, lang, "unavailable", false),
    };
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| !matches!(site, "same-origin" | "none"));
    let token_ok = f
        .csrf
        .as_deref()
        .is_some_and(|t| session::same(t, &row.csrf));
    if cross_site || !token_ok {
        return p.message(StatusCode::FORBIDDEN, lang, "forbidden", false);
    }
    end(&p, &id_hash, &row.pinfl).await;
    forget(p.message(StatusCode::OK, lang, "signed_out", false))
}

async fn end(p: &Portal, id_hash: &str, pinfl: &str) {
    if let Err(e) = p.store().end_portal_session(id_hash).await {
        tracing::warn!(error = %e, "portal: a session could not be ended");
    }
    if let Err(e) = p
        .store()
        .audit(&[&muhr_store::audit::AuditEvent {
            actor: format!("citizen:{pinfl}"),
            action: "portal.logout".into(),
            object: pinfl.to_string(),
            details: json!({"session": &id_hash[..16]}),
        }])
        .await
    {
        // The session is ended already: safer than keeping it for the record.
        tracing::error!(error = %e, "portal: a logout could not be audited");
    }
}

fn lang_cookie(lang: Lang, secure: bool) -> HeaderValue {
    // Not a secret and read by no script: Lax, a year.
    HeaderValue::from_str(&format!(
        "{}={}; Path=/portal/; Max-Age=31536000; SameSite=Lax{}",
        i18n::COOKIE,
        lang.code(),
        if secure { "; Secure" } else { "" }
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("muhr_lang=uz; Path=/portal/"))
}

/// `GET /portal/lang/{code}`: remembers the language and goes back home.
pub(crate) async fn language(State(p): State<Arc<Portal>>, Path(code): Path<String>) -> Response {
    let Some(lang) = Lang::from_code(&code) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut r = Redirect::to("/portal/").into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, lang_cookie(lang, p.secure()));
    r
}

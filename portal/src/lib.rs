//! The citizen portal: the web page a citizen uses to log in with the
//! identity system, see their certificates, get a new one whose key is made
//! and kept in their browser, and suspend, revoke or renew one.
//!
//! It is a front of the RA, not a second RA: every act goes through the
//! same [`Citizens`] service as the JSON API, with the identity the ID token
//! gave at login ([`provider`], checked by the API's own verifier). What it
//! adds is the browser's side: the login flow, [`session`]s with CSRF
//! tokens, pages in three languages ([`i18n`]) under a strict
//! Content-Security-Policy, and sentences instead of JSON for refusals.
//!
//! The keys: `assets/pki.js` (PKI.js, built reproducibly by `web/build.sh`)
//! makes the P-256 key with WebCrypto, the PKCS#10 request, the PKCS#12
//! file and the renewal's CMC request in the page. Only the request and
//! the certificate cross the network.

pub mod api;
pub mod assets;
pub mod config;
pub mod i18n;
pub mod pages;
pub mod provider;
pub mod sentences;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use muhr_ra::citizen::service::Citizens;

pub use config::PortalConfig;

/// Everything the portal's handlers share. Made once at start-up.
pub struct Portal {
    pub(crate) config: PortalConfig,
    pub(crate) citizens: Arc<Citizens>,
    pub(crate) provider: provider::Provider,
    pub(crate) messages: i18n::Messages,
    pub(crate) templates: minijinja::Environment<'static>,
    pub(crate) assets: assets::Assets,
    pub(crate) csp: HeaderValue,
}

impl Portal {
    /// Validates `[portal]`, discovers the provider's endpoints when not
    /// configured, reads the client secret from the environment, and loads
    /// the texts and templates (a missing text fails here, not on a page).
    pub async fn new(config: PortalConfig, citizens: Arc<Citizens>) -> Result<Self, String> {
        config.validate()?;
        let provider =
            provider::Provider::new(&citizens.config().oidc, &config.redirect_uri).await?;
        let messages = i18n::Messages::load()?;
        let templates = pages::templates()?;
        // No inline script or style, no eval: the page's code is the two
        // modules served here. Nothing from elsewhere, no framing.
        let csp = HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
             object-src 'none'",
        );
        Ok(Self {
            config,
            citizens,
            provider,
            messages,
            templates,
            assets: assets::Assets::new(),
            csp,
        })
    }

    pub(crate) fn store(&self) -> &muhr_store::Store {
        self.citizens.ca().store()
    }

    pub(crate) fn secure(&self) -> bool {
        self.config.secure()
    }

    pub(crate) fn session_seconds(&self) -> i64 {
        (self.config.session_minutes * 60) as i64
    }
}

/// The portal's routes, for the public listener. Bodies up to 64 KiB.
pub fn router(portal: Arc<Portal>) -> Router {
    Router::new()
        .route("/portal", get(pages::to_portal))
        .route("/portal/", get(pages::home))
        .route("/portal/login", get(pages::login))
        .route("/portal/callback", get(pages::callback))
        .route("/portal/logout", post(pages::logout))
        .route("/portal/lang/{code}", get(pages::language))
        .route("/portal/assets/{name}", get(assets::serve))
        .route("/portal/api/certificates", post(api::issue))
        .route(
            "/portal/api/certificates/{serial}/suspend",
            post(api::suspend),
        )
        .route(
            "/portal/api/certificates/{serial}/revoke",
            post(api::revoke),
        )
        .route(
            "/portal/api/renewal/challenge",
            post(api::renewal_challenge),
        )
        .route("/portal/api/renewal", post(api::renew))
        .layer(axum::middleware::from_fn_with_state(
            portal.clone(),
            security_headers,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 10))
        .with_state(portal)
}

/// Headers every portal response carries: the CSP, no sniffing, no
/// referrer (a URL never leaves for another site), no framing, and no
/// caching except for the versioned assets (which set their own).
async fn security_headers(
    axum::extract::State(p): axum::extract::State<Arc<Portal>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, p.csp.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    if p.secure() {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

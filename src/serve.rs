//! `muhr serve`: health, metrics, the CA certificates (at the caIssuers URLs
//! written into every certificate), CRLs and OCSP over plain HTTP; the RA on
//! its own mutual-TLS listener.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use muhr_ca::Ca;
use muhr_hsm::KeyStore;
use muhr_store::Store;

use crate::Fail;
use crate::app::App;

/// The state of the public listener's own routes ([`router`]).
#[derive(Clone)]
pub struct Shared {
    /// The CA: its certificates for `/ca/`, its counters for `/metrics`.
    pub ca: Arc<Ca>,
    /// The OCSP responder, for its counters in `/metrics`.
    pub ocsp: Arc<muhr_ocsp_responder::Responder>,
    /// The time-stamping authority, when enabled, for `/metrics`.
    pub tsa: Option<Arc<muhr_tsa::Tsa>>,
    /// The database: CRLs, and the certificate counts in `/metrics`.
    pub store: Store,
    /// CRLs held in memory (see [`crate::crl_http`]).
    pub crls: Arc<crate::crl_http::CrlCache>,
    /// The key store, for whether it is up (`/healthz`, `/metrics`).
    pub keys: Arc<dyn KeyStore>,
    /// What the last checks of the key store and the database said.
    pub health: Arc<Health>,
    /// This listener's API description (`/openapi.json`).
    pub openapi: Arc<String>,
    /// The listeners' connection counters, for `/metrics`.
    pub listeners: Arc<std::sync::OnceLock<Vec<Arc<crate::listener::Stats>>>>,
}

/// Builds the OCSP responder and starts following the change feed.
pub async fn ocsp_responder(app: &App) -> Result<Arc<muhr_ocsp_responder::Responder>, Fail> {
    let c = &app.config.ocsp;
    let config = muhr_ocsp_responder::Config {
        validity: Duration::from_secs(c.validity_seconds),
        refresh: Duration::from_secs(c.refresh_seconds),
        max_requests: c.max_requests,
        cache_bytes: c.cache_mb << 20,
    };
    let responder = muhr_ocsp_responder::Responder::new(
        app.store.clone(),
        app.keys.clone(),
        muhr_ca::ISSUING,
        config,
    )
    .await
    .map_err(|e| Fail::invalid(format!("OCSP responder: {e}")))?;
    if !responder
        .reload_signer()
        .await
        .map_err(|e| Fail::invalid(format!("OCSP responder: {e}")))?
    {
        tracing::warn!(
            "no delegated OCSP signer yet: OCSP answers tryLater until `muhr serve` makes one"
        );
    }
    let responder = Arc::new(responder);
    tokio::spawn(responder.clone().follow());
    Ok(responder)
}

/// Checks hourly that the delegated OCSP signer and the TSA certificate
/// have enough life left.
async fn signer_renewal(
    ca: Arc<Ca>,
    keys: Arc<dyn KeyStore>,
    spec: muhr_hsm::KeySpec,
    renew: Duration,
    tsa: Option<crate::config::TsaConfig>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = ca
            .ensure_ocsp_signer(keys.as_ref(), spec, renew, "serve")
            .await
        {
            tracing::warn!(error = %e, "renewing the delegated OCSP signer failed; will retry");
        }
        if let Some(t) = &tsa
            && let Err(e) = ensure_tsa_signer(&ca, keys.as_ref(), t).await
        {
            tracing::warn!(error = %e.message, "renewing the TSA certificate failed; will retry");
        }
    }
}

/// Makes the TSA key and certificate, or a new pair when the current
/// certificate has less than `renew_days_before` left.
async fn ensure_tsa_signer(
    ca: &Ca,
    keys: &dyn KeyStore,
    t: &crate::config::TsaConfig,
) -> Result<(), Fail> {
    let spec: muhr_hsm::KeySpec = t
        .signer_key
        .parse()
        .map_err(|e: muhr_hsm::HsmError| Fail::invalid(format!("tsa.signer_key: {e}")))?;
    ca.ensure_tsa_signer(
        keys,
        spec,
        Duration::from_secs(t.renew_days_before * 86400),
        t.subject(),
        "serve",
    )
    .await?;
    Ok(())
}

/// The time-stamping authority: its clock check started, its certificate
/// loaded, following renewals.
pub async fn tsa(app: &App) -> Result<Arc<muhr_tsa::Tsa>, Fail> {
    let config = app.config.tsa.validate().map_err(Fail::invalid)?;
    let source = app.config.tsa.clock_source().map_err(Fail::invalid)?;
    let clock = muhr_tsa::clock::ClockCheck::start(source, config.clock_tolerance());
    let tsa = muhr_tsa::Tsa::new(
        app.store.clone(),
        app.keys.clone(),
        muhr_ca::ISSUING,
        config,
        clock,
    )
    .map_err(|e| Fail::invalid(format!("TSA: {e}")))?;
    if !tsa
        .reload_signer()
        .await
        .map_err(|e| Fail::invalid(format!("TSA: {e}")))?
    {
        tracing::warn!(
            "no TSA certificate yet: /tsa answers systemFailure until `muhr serve` makes one"
        );
    }
    let tsa = Arc::new(tsa);
    tokio::spawn(tsa.clone().follow());
    Ok(tsa)
}

/// `muhr serve`: makes or renews the delegated OCSP signer, starts the CRL
/// updater and the audit checkpoints, and serves both listeners. `listen`
/// and `listen_mtls` are `--listen` and `--listen-mtls` (None: the
/// configuration's). Fails when the audit key is missing (a development
/// installation makes it). Runs until SIGINT or SIGTERM, then gives
/// requests in progress 10 s to finish.
pub async fn run(
    app: App,
    listen: Option<String>,
    listen_mtls: Option<String>,
) -> Result<(), Fail> {
    let rules = Arc::new(app.ra_rules()?);
    let ca = Arc::new(app.ca().await?);
    // The delegated OCSP signer: made or renewed here, where the CA key is.
    let spec: muhr_hsm::KeySpec = app
        .config
        .ocsp
        .signer_key
        .parse()
        .map_err(|e: muhr_hsm::HsmError| Fail::invalid(format!("ocsp.signer_key: {e}")))?;
    let renew = Duration::from_secs(app.config.ocsp.renew_days_before * 86400);
    ca.ensure_ocsp_signer(app.keys.as_ref(), spec, renew, "serve")
        .await?;
    // The TSA key and certificate: made or renewed here too.
    let tsa_config = app.config.tsa.enabled.then(|| app.config.tsa.clone());
    if let Some(t) = &tsa_config {
        ensure_tsa_signer(&ca, app.keys.as_ref(), t).await?;
    }
    tokio::spawn(signer_renewal(
        ca.clone(),
        app.keys.clone(),
        spec,
        renew,
        tsa_config.clone(),
    ));
    let responder = ocsp_responder(&app).await?;
    let time_stamps = match tsa_config {
        Some(_) => Some(tsa(&app).await?),
        None => None,
    };
    let listen = listen.unwrap_or_else(|| app.config.server.listen.clone());
    let c = &app.config.crl;
    tokio::spawn(muhr_ca::crl::updater::run(
        ca.clone(),
        muhr_ca::crl::updater::Schedule {
            validity: Duration::from_secs(c.validity_hours * 3600),
            refresh: Duration::from_secs(c.refresh_minutes * 60),
            complete_min: Duration::from_secs(c.complete_min_seconds),
            delta_validity: Duration::from_secs(c.delta_validity_minutes * 60),
        },
    ));
    // The audit chain's checkpoints, signed here. The key is made at a
    // ceremony, never on the fly: a server that made its own would anchor
    // the chain to a key nobody recorded.
    let signer = app.audit_signer(app.dev, "serve").await?.ok_or_else(|| {
        Fail::invalid(format!(
            "no audit key {:?} in the key store: make it once with `muhr ca audit-key`",
            app.config.audit.key
        ))
    })?;
    tokio::spawn(signer.run(
        app.store.clone(),
        app.config.audit.checkpoint_entries,
        Duration::from_secs(app.config.audit.checkpoint_seconds),
    ));
    // Notices: a key that cannot be used stops the start, before serving.
    let notices = crate::notices_cli::worker(&app).await?;
    let shared = Shared {
        ca: ca.clone(),
        ocsp: responder.clone(),
        tsa: time_stamps.clone(),
        store: app.store.clone(),
        crls: Default::default(),
        keys: app.keys.clone(),
        listeners: Default::default(),
        health: Arc::new(Health::new()),
        openapi: Arc::new(muhr_http::openapi::openapi_for(
            "public",
            app.config.citizens.is_some(),
            app.config.citizens.is_some() && app.config.portal.is_some(),
            app.config.tsa.enabled,
        )),
    };
    let limits = &app.config.server.limits;
    tokio::spawn(key_store_monitor(app.keys.clone(), shared.health.clone()));
    tokio::spawn(database_monitor(app.store.clone(), shared.health.clone()));
    tokio::spawn(name_reviews(registry_events(&app)));
    // The RA on its own mutual-TLS listener.
    let listen_mtls = listen_mtls.unwrap_or_else(|| app.config.server.listen_mtls.clone());
    let credential = crate::mtls::server_credential(&app, &ca).await?;
    let tls = crate::mtls::server_config(&credential, &ca.issuing.der)?;
    let api = ra_api(&app, ca.clone(), rules);
    let rp = relying_parties(&app, &ca).await?;
    let (max_public, max_mtls) = crate::listener::fit_connection_caps(limits);
    let mtls = crate::listener::Listener::bind(
        &listen_mtls,
        "mtls",
        muhr_ra::http::router(api).merge(muhr_login::http::tls_router(rp.clone())),
        crate::mtls::transport(tls),
        limits,
        max_mtls,
    )?;
    let mut public = router(shared.clone()).merge(muhr_ocsp_responder::router(responder));
    if let Some(citizens) = citizens(&app, &ca).await? {
        if let Some(config) = app.config.portal.clone() {
            let portal = muhr_portal::Portal::new(config, citizens.clone())
                .await
                .map_err(|e| Fail::invalid(format!("portal: {e}")))?;
            public = public.merge(muhr_portal::router(Arc::new(portal)));
        }
        public = public.merge(muhr_ra::citizen::http::router(citizens));
    }
    public = public.merge(muhr_login::http::router(rp));
    if let Some(t) = time_stamps {
        public = public.merge(muhr_tsa::http::router(t));
    }
    let public = crate::listener::Listener::bind(
        &listen,
        "public",
        public,
        crate::listener::Transport::Plain,
        limits,
        max_public,
    )?;
    shared
        .listeners
        .set(vec![public.stats.clone(), mtls.stats.clone()])
        .ok();
    tracing::info!(%listen, %listen_mtls, database = app.store.backend().name(), key_store = %app.keys.describe(), max_public, max_mtls, "serving");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let drain = Duration::from_secs(10);
    let notices = crate::notices_cli::spawn(&app, notices, stop_rx.clone());
    let mtls = tokio::spawn(mtls.serve(stopped(stop_rx.clone()), drain));
    let public = tokio::spawn(public.serve(stopped(stop_rx), drain));
    shutdown().await;
    let _ = stop_tx.send(true);
    let _ = tokio::join!(public, mtls);
    // A delivery in flight finishes or is abandoned to its lease (the
    // notice is sent again later; the receiver drops the repeat).
    for task in notices {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    app.store.close().await;
    Ok(())
}

/// The RA's API state: the personalizer (its group worker starts here) and
/// the client registry.
pub fn ra_api(app: &App, ca: Arc<Ca>, rules: Arc<muhr_ra::Rules>) -> muhr_ra::http::Api {
    muhr_ra::http::Api {
        personalizer: muhr_ra::Personalizer::start(ca, rules),
        registry: Arc::new(muhr_http::clients::Registry::new(app.store.clone())),
        crl_validity: Duration::from_secs(app.config.crl.validity_hours * 3600),
        registry_events: registry_events(app),
    }
}

/// Applies registry events, for the API and the name reviews.
pub fn registry_events(app: &App) -> Arc<muhr_ra::registry::apply::RegistryEvents> {
    Arc::new(muhr_ra::registry::apply::RegistryEvents::new(
        app.store.clone(),
        app.config.identity.clone(),
        app.config.registry.clone(),
    ))
}

/// Once a minute on every node: revokes what was issued while its
/// holder's death was being recorded, and ends due name reviews (each by
/// one transaction, whichever node gets it).
async fn name_reviews(events: Arc<muhr_ra::registry::apply::RegistryEvents>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        match events.sweep_deaths(muhr_store::now_secs(), 3600).await {
            Ok(r) if !r.is_empty() => {
                tracing::warn!(revoked = r.len(), "certificates of the dead swept")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "death sweep: will try again"),
        }
        match events.review_names(muhr_store::now_secs(), 500).await {
            Ok(r) if r.reviews > 0 => {
                tracing::info!(
                    reviews = r.reviews,
                    revoked = r.revoked.len(),
                    "name reviews ended"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "name reviews: will try again"),
        }
    }
}

/// Remote issuance, when `[citizens]` is configured. The provider's keys are
/// loaded now: a JWK Set file that cannot be read stops the start; a URL that
/// does not answer is only logged (it is tried again at the first token).
pub async fn citizens(
    app: &App,
    ca: &Arc<Ca>,
) -> Result<Option<Arc<muhr_ra::citizen::service::Citizens>>, Fail> {
    let Some(config) = app.config.citizens.clone() else {
        return Ok(None);
    };
    let file = config.oidc.jwks_file.is_some();
    let mut fresh = [0u8; 32];
    aws_lc_rs::rand::fill(&mut fresh).map_err(|_| Fail::internal("random generator failed"))?;
    let key = app
        .store
        .login_challenge_key(&fresh)
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    let c = muhr_ra::citizen::service::Citizens::new(
        ca.clone(),
        app.config.identity.clone(),
        config,
        &key,
    )
    .map_err(Fail::invalid)?;
    if let Err(e) = c.verifier.load().await {
        if file {
            return Err(Fail::invalid(format!("citizens.oidc.jwks_file: {e}")));
        }
        tracing::warn!(error = %e, "identity provider keys not loaded yet");
    }
    Ok(Some(Arc::new(c)))
}

/// The assertion key: opened, or made on the first start (a P-256 key in
/// the key store, like every other key).
pub async fn assertion_key(app: &App) -> Result<Arc<dyn muhr_hsm::KeySigner>, Fail> {
    let label = &app.config.login.assertion_key;
    let spec = muhr_hsm::KeySpec::EcdsaP256;
    match app.keys.open(label, spec) {
        Ok(k) => Ok(k),
        Err(muhr_hsm::HsmError::NotFound(_)) => {
            tracing::info!(%label, "making the identity-assertion key");
            let k = app
                .keys
                .generate(label, spec)
                .map_err(|e| Fail::internal(format!("assertion key {label:?}: {e}")))?;
            // Every key that speaks for Muhr is recorded when it is made.
            app.store
                .audit(&[&muhr_store::AuditEvent {
                    actor: "serve".into(),
                    action: "key.generate".into(),
                    object: label.clone(),
                    details: serde_json::json!({
                        "purpose": "identity assertions",
                        "spec": spec.to_string(),
                        "key_id": muhr_ca::audit_anchor::key_id(k.public_key())?,
                    }),
                }])
                .await
                .map_err(|e| Fail::internal(e.to_string()))?;
            Ok(k)
        }
        Err(e) => Err(Fail::internal(format!("assertion key {label:?}: {e}"))),
    }
}

/// Login by certificate, signature verification and the relying parties.
pub async fn relying_parties(app: &App, ca: &Arc<Ca>) -> Result<muhr_login::http::RpApi, Fail> {
    let c = app.config.login.clone();
    c.validate().map_err(Fail::invalid)?;
    let key = assertion_key(app).await?;
    let assertions =
        muhr_login::assertion::Assertions::new(key, c.issuer.clone(), c.assertion_seconds)
            .map_err(Fail::invalid)?;
    let external =
        muhr_validation::external::External::load(&c.external_cas).map_err(Fail::invalid)?;
    let trust = Arc::new(muhr_validation::trust::Trust::with_external(
        ca.clone(),
        external,
    ));
    Ok(muhr_login::http::RpApi {
        parties: Arc::new(muhr_login::relying::RelyingParties::new(
            app.store.clone(),
            c.rp_cache_seconds,
        )),
        login: Arc::new(
            muhr_login::login::Login::open(trust, Arc::new(assertions), c)
                .await
                .map_err(Fail::internal)?,
        ),
    })
}

/// A database muhr-bench made holds made-up people and synthetic rows:
/// the `muhr` binary never serves it to relying parties as if it were real
/// (`muhr-bench serve` does, for load tools, on loopback).
pub async fn refuse_benchmark_database(app: &App) -> Result<(), Fail> {
    if app
        .store
        .is_benchmark_database()
        .await
        .map_err(|e| Fail::internal(e.to_string()))?
    {
        return Err(Fail::invalid(
            "refused: this database was made by muhr-bench (made-up people, synthetic rows): \
             it is never served",
        ));
    }
    Ok(())
}

/// `muhr ocsp`: only the responder, for scaling out next to a database or a
/// replica. It reads status and the delegated signer; it never opens a CA key.
pub async fn run_ocsp(app: App, listen: Option<String>) -> Result<(), Fail> {
    let responder = ocsp_responder(&app).await?;
    let listen = listen.unwrap_or_else(|| app.config.server.listen.clone());
    let limits = &app.config.server.limits;
    let (max_public, _) = crate::listener::fit_connection_caps(limits);
    let listener = crate::listener::Listener::bind(
        &listen,
        "public",
        muhr_ocsp_responder::router(responder),
        crate::listener::Transport::Plain,
        limits,
        max_public,
    )?;
    tracing::info!(%listen, database = app.store.backend().name(), "OCSP responder serving");
    listener.serve(shutdown(), Duration::from_secs(10)).await;
    app.store.close().await;
    Ok(())
}

/// `muhr tsa`: only the time-stamping authority, for scaling out. It
/// reads its certificate (and whether it is revoked) and writes its token
/// log; it never opens a CA key nor reads another certificate's status.
pub async fn run_tsa(app: App, listen: Option<String>) -> Result<(), Fail> {
    if !app.config.tsa.enabled {
        return Err(Fail::invalid(
            "refused: tsa.enabled is false: turn the TSA on in [tsa] (with its policy and clock)",
        ));
    }
    let tsa = tsa(&app).await?;
    let listen = listen.unwrap_or_else(|| app.config.server.listen.clone());
    let limits = &app.config.server.limits;
    let (max_public, _) = crate::listener::fit_connection_caps(limits);
    let metrics = {
        let tsa = tsa.clone();
        Router::new().route(
            "/metrics",
            get(move || {
                let tsa = tsa.clone();
                async move { tsa.render_metrics() }
            }),
        )
    };
    let listener = crate::listener::Listener::bind(
        &listen,
        "public",
        muhr_tsa::http::router(tsa).merge(metrics),
        crate::listener::Transport::Plain,
        limits,
        max_public,
    )?;
    tracing::info!(%listen, database = app.store.backend().name(), "time-stamping authority serving");
    listener.serve(shutdown(), Duration::from_secs(10)).await;
    app.store.close().await;
    Ok(())
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

/// `/healthz`, `/metrics`, `/ca/{file}`, `/crl/{file}` and `/openapi.json`,
/// and a JSON 404 for any other path. [`run`] merges OCSP, citizens and
/// login into the same public listener.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/ca/{file}", get(ca_file))
        .route("/crl/{file}", get(crate::crl_http::crl_file))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .with_state(shared)
}

pub(crate) use muhr_http::answer::json_error;

/// What this listener serves, described.
async fn openapi(State(s): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.openapi.as_ref().clone(),
    )
        .into_response()
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "path", "no such resource")
}

/// The latest word on each dependency. `/healthz` is public and cheap to
/// call: it must never become a way to load the HSM or the database, so
/// each is asked by one background task (one question at a time: the key
/// store every 2 s, the database every second) and `/healthz` reads the
/// answers. An answer older than a few seconds counts as no answer.
pub struct Health {
    key_ok: std::sync::atomic::AtomicBool,
    key_at: std::sync::atomic::AtomicI64,
    db_ok: std::sync::atomic::AtomicBool,
    db_at: std::sync::atomic::AtomicI64,
}

impl Health {
    /// Both taken as up as of now, until the first checks answer.
    pub fn new() -> Self {
        let now = muhr_store::now_secs();
        Self {
            key_ok: std::sync::atomic::AtomicBool::new(true),
            key_at: std::sync::atomic::AtomicI64::new(now),
            db_ok: std::sync::atomic::AtomicBool::new(true),
            db_at: std::sync::atomic::AtomicI64::new(now),
        }
    }

    /// The key store is up, and its last probe (at most 15 s ago) passed.
    fn keys(&self, keys: &dyn KeyStore) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        keys.is_up()
            && self.key_ok.load(Relaxed)
            && muhr_store::now_secs() - self.key_at.load(Relaxed) <= 15
    }

    /// The database answered its last ping (at most 3 s ago) within 900 ms.
    fn database(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.db_ok.load(Relaxed) && muhr_store::now_secs() - self.db_at.load(Relaxed) <= 3
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

/// Pings the database every second for `/healthz` and `/metrics`.
async fn database_monitor(store: Store, health: Arc<Health>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_ok = true;
    loop {
        tick.tick().await;
        let ok = match tokio::time::timeout(Duration::from_millis(900), store.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                if was_ok {
                    tracing::warn!(error = %e, "database check failed");
                }
                false
            }
            Err(_) => {
                if was_ok {
                    tracing::warn!("the database did not answer its check within 900 ms");
                }
                false
            }
        };
        if ok && !was_ok {
            tracing::warn!("database answers again");
        }
        was_ok = ok;
        health.db_ok.store(ok, Relaxed);
        health.db_at.store(muhr_store::now_secs(), Relaxed);
    }
}

/// 200 only when both the database and the key store are fine, answered at
/// once whatever either does. On the public listener, so it names what is
/// down but never how (the log has the error).
async fn healthz(State(s): State<Shared>) -> Response {
    let keys = s.health.keys(s.keys.as_ref());
    let db = s.health.database();
    let status = if db && keys {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let mut r = (
        status,
        Json(serde_json::json!({
            "status": word(db && keys),
            "database": { "backend": s.store.backend().name(), "status": word(db) },
            "key_store": { "backend": s.keys.describe(), "status": word(keys) },
        })),
    )
        .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// Asks the key store every two seconds, one probe at a time, so that a lost
/// token is noticed (and reconnection starts) before the next signature
/// needs it, and `/healthz` has a recent answer without touching the HSM. A
/// probe that hangs is not repeated: the store is reported down until it
/// returns.
async fn key_store_monitor(keys: Arc<dyn KeyStore>, health: Arc<Health>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let k = keys.clone();
        let mut probe = tokio::task::spawn_blocking(move || k.health());
        let answer = match tokio::time::timeout(Duration::from_secs(5), &mut probe).await {
            Ok(a) => a,
            Err(_) => {
                tracing::warn!("key store check hangs; reported down until it returns");
                health.key_ok.store(false, Relaxed);
                probe.await
            }
        };
        let ok = match answer {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "key store check failed");
                false
            }
            Err(_) => false,
        };
        health.key_ok.store(ok, Relaxed);
        health.key_at.store(muhr_store::now_secs(), Relaxed);
    }
}

/// Process counters (issued and refused here, signing latency) and the
/// database's totals, which cover every process that writes to it.
async fn metrics(State(s): State<Shared>) -> Response {
    use std::fmt::Write;
    let mut body = s.ca.metrics.render();
    body.push_str(&s.ocsp.render_metrics());
    if let Some(t) = &s.tsa {
        body.push_str(&t.render_metrics());
    }
    let _ = writeln!(
        body,
        "# HELP muhr_key_store_up 1 while the key store signs, 0 while it is down and reconnecting.\n# TYPE muhr_key_store_up gauge\nmuhr_key_store_up {}",
        u8::from(s.keys.is_up())
    );
    if let Some(listeners) = s.listeners.get() {
        crate::listener::metrics_header(&mut body);
        for l in listeners {
            l.render(&mut body);
        }
    }
    let _ = writeln!(
        body,
        "# HELP muhr_certificates Certificates in the database, by profile and status.\n# TYPE muhr_certificates gauge"
    );
    let counts = tokio::time::timeout(Duration::from_secs(1), s.store.certificate_counts())
        .await
        .unwrap_or_else(|_| {
            Err(muhr_store::StoreError::Conflict(
                "the database did not answer within a second".into(),
            ))
        });
    match counts {
        Ok(rows) => {
            for (profile, status, n) in rows {
                let _ = writeln!(
                    body,
                    "muhr_certificates{{profile=\"{profile}\",status=\"{status}\"}} {n}"
                );
            }
            let _ = writeln!(body, "muhr_database_up 1");
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: database count failed");
            let _ = writeln!(body, "muhr_database_up 0");
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// `root.cer` / `issuing.cer` (DER, RFC 5280 4.2.2.1), `.pem`, and `chain.pem`.
async fn ca_file(State(s): State<Shared>, Path(file): Path<String>) -> Response {
    let ca = &s.ca;
    let cache = (header::CACHE_CONTROL, "public, max-age=86400");
    let (name, ext) = file.rsplit_once('.').unwrap_or((file.as_str(), ""));
    let auth = match name {
        "root" => Some(&ca.root),
        "issuing" => Some(&ca.issuing),
        _ => None,
    };
    match (auth, ext) {
        (Some(a), "cer" | "crt" | "der") => (
            [(header::CONTENT_TYPE, "application/pkix-cert"), cache],
            a.der.clone(),
        )
            .into_response(),
        (Some(a), "pem") => (
            [(header::CONTENT_TYPE, "application/x-pem-file"), cache],
            a.pem(),
        )
            .into_response(),
        (None, "pem") if name == "chain" => (
            [(header::CONTENT_TYPE, "application/x-pem-file"), cache],
            ca.chain_pem(),
        )
            .into_response(),
        _ => json_error(
            StatusCode::NOT_FOUND,
            "file",
            "known files: root.cer, issuing.cer, root.pem, issuing.pem, chain.pem",
        ),
    }
}

//! The RA's HTTP API, mounted on the mutual-TLS listener. Every route names the
//! role it needs; the listener puts the client's certificate into the request
//! and [`Registry`] turns it into a `Caller` (or a 403 that writes nothing).

mod card;
mod operator;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::card::personalize::Personalizer;
use muhr_http::answer::{json_error, limit_body, require_json, unavailable_not_internal};
use muhr_http::clients::{PeerCertificate, Registry, Role};

/// What the RA's routes share; cloned into every request.
#[derive(Clone)]
pub struct Api {
    /// Issues the line's cards; its CA and store serve the operators too.
    pub personalizer: Arc<Personalizer>,
    /// The mutual-TLS clients and their roles: every route's caller is
    /// looked up here.
    pub registry: Arc<Registry>,
    /// Life of the complete CRLs an operator asks for.
    pub crl_validity: Duration,
    /// Applies the registry client's events.
    pub registry_events: Arc<crate::registry::apply::RegistryEvents>,
}

/// The largest body the RA's machine API takes (a batch of cards).
const MAX_BODY: usize = 16 << 20;

/// The RA's routes, for the mutual-TLS listener: the line's cards and
/// batches, the operators' routes, and `/openapi.json`. Bodies up to
/// 16 MiB.
pub fn router(api: Api) -> Router {
    let line = Router::new()
        .route("/api/v1/personalization/cards", post(card::card))
        .route("/api/v1/personalization/batches", post(card::batch))
        // Layers run last-added first: the caller is known before its body
        // is read or judged.
        .route_layer(middleware::from_fn_with_state(MAX_BODY, limit_body))
        .route_layer(middleware::from_fn(require_json))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_line));
    let operator = Router::new()
        .route(
            "/api/v1/operator/certificates/{serial}",
            get(operator::certificate),
        )
        .route(
            "/api/v1/operator/certificates/{serial}/revoke",
            post(operator::revoke),
        )
        .route(
            "/api/v1/operator/certificates/{serial}/suspend",
            post(operator::suspend),
        )
        .route(
            "/api/v1/operator/certificates/{serial}/restore",
            post(operator::restore),
        )
        .route(
            "/api/v1/operator/persons/{pinfl}/certificates",
            get(operator::person_certificates),
        )
        .route(
            "/api/v1/operator/card-jobs/{client}/{request_id}",
            get(card::card_job),
        )
        .route("/api/v1/operator/crl", post(operator::crl_now))
        .route_layer(middleware::from_fn_with_state(MAX_BODY, limit_body))
        .route_layer(middleware::from_fn(require_json))
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            require_operator,
        ));
    let registry = Router::new()
        .route("/api/v1/registry/events", post(registry_events))
        .route_layer(middleware::from_fn_with_state(MAX_BODY, limit_body))
        .route_layer(middleware::from_fn(require_json))
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            require_registry,
        ));
    Router::new()
        .merge(line)
        .merge(operator)
        .merge(registry)
        .route("/openapi.json", get(openapi))
        .route_layer(middleware::from_fn_with_state(
            api.personalizer.ca().store().clone(),
            unavailable_not_internal,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC
        .get_or_init(|| muhr_http::openapi::openapi_for("mtls", false, false, false))
        .clone();
    ([(header::CONTENT_TYPE, "application/json")], doc).into_response()
}

async fn require_line(State(api): State<Api>, req: Request, next: Next) -> Response {
    authorize(api, Role::PersonalizationLine, req, next).await
}

async fn require_operator(State(api): State<Api>, req: Request, next: Next) -> Response {
    authorize(api, Role::Operator, req, next).await
}

async fn require_registry(State(api): State<Api>, req: Request, next: Next) -> Response {
    authorize(api, Role::Registry, req, next).await
}

async fn registry_events(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<muhr_http::clients::Caller>,
    body: axum::body::Bytes,
) -> Response {
    crate::registry::http::post_events(&api.registry_events, &caller.actor(), body).await
}

async fn authorize(api: Api, role: Role, mut req: Request, next: Next) -> Response {
    let caller = api
        .registry
        .caller(req.extensions().get::<PeerCertificate>())
        .await;
    let refusal = match caller {
        Ok(c) if c.role == role => {
            req.extensions_mut().insert(c);
            return next.run(req).await;
        }
        Ok(c) => format!(
            "client {} has role {}; this needs {}",
            c.name,
            c.role.as_str(),
            role.as_str()
        ),
        Err(why) => why,
    };
    // Read what the client is sending before answering: over HTTP/2 an answer
    // to an unread body resets the stream, and the client sees no 403 at all.
    // At most 1 MiB of it: a caller who is refused is owed no more reading.
    let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
    if refusal == muhr_http::clients::REGISTRY_UNAVAILABLE {
        let mut r = json_error(StatusCode::SERVICE_UNAVAILABLE, "client", &refusal);
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        return r;
    }
    json_error(StatusCode::FORBIDDEN, "client", &refusal)
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "operator request failed");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "-", "internal error")
}

//! CRLs over HTTP at the URLs written into certificates and CRLs.
//!
//! Each request asks the database only for the newest CRL's number (a few
//! bytes); the DER, up to 53 MB for a million entries, is read once per CRL
//! number and kept in memory. `If-None-Match` with the current ETag gets 304.
//! When the database cannot be reached (a connection error, or no connection
//! within `database.acquire_timeout_ms`), the CRL in memory is served until its
//! nextUpdate: it is signed and valid until then, whatever newer one another
//! node may have written meanwhile. A database that answers slowly is waited
//! for, as for every request.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::serve::{Shared, json_error};

/// The newest CRL of each name: number, DER, thisUpdate, nextUpdate.
#[derive(Clone)]
struct Held {
    number: i64,
    der: Bytes,
    this_update: i64,
    next_update: i64,
}

/// The CRLs this process has served, by name: each CRL number's DER is read
/// from the database once, and served from here while it cannot be reached.
#[derive(Default)]
pub struct CrlCache(Mutex<HashMap<String, Held>>);

impl CrlCache {
    fn get(&self, name: &str, number: i64) -> Option<Bytes> {
        self.held(name)
            .filter(|h| h.number == number)
            .map(|h| h.der)
    }

    fn held(&self, name: &str) -> Option<Held> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(name).cloned()
    }

    fn put(&self, name: &str, held: Held) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(name.to_string(), held);
    }
}

/// `GET /crl/{name}.crl`: the newest CRL of that name (see
/// `muhr_ca::crl::name`: `issuing.crl`, `issuing-7.crl`, `issuing-delta.crl`,
/// `root.crl`, ...), DER, with headers that let a cache keep it until shortly
/// before it is replaced.
pub async fn crl_file(
    State(s): State<Shared>,
    Path(file): Path<String>,
    request: HeaderMap,
) -> Response {
    let known = file
        .strip_suffix(".crl")
        .and_then(muhr_ca::crl::parse_name)
        .filter(|(ca, _, _)| *ca == muhr_ca::ISSUING || *ca == muhr_ca::ROOT);
    let Some((ca, scope, delta)) = known else {
        return json_error(
            StatusCode::NOT_FOUND,
            "file",
            "known files: issuing.crl, issuing-delta.crl, issuing-N.crl, issuing-N-delta.crl, root.crl, root-delta.crl",
        );
    };
    let name = muhr_ca::crl::name(ca, scope, delta);
    let kind = if delta { "delta" } else { "full" };
    // Deltas change within a second of any revocation: caches keep them briefly.
    let cap = if delta { 60 } else { 300 };
    let unavailable = |e: muhr_store::StoreError| {
        tracing::warn!(error = %e, "reading CRL");
        match s.crls.held(&name) {
            Some(h) if e.is_unavailable() && h.next_update > muhr_store::now_secs() => {
                tracing::warn!(crl = %name, number = h.number, "database unreachable: serving the CRL held in memory");
                let max_age = (h.next_update - muhr_store::now_secs()).clamp(0, cap.min(60));
                (
                    [
                        (header::CONTENT_TYPE, "application/pkix-crl".to_string()),
                        (header::CACHE_CONTROL, format!("public, max-age={max_age}")),
                        (header::ETAG, format!("\"{ca}-{}\"", h.number)),
                        (
                            header::LAST_MODIFIED,
                            muhr_ocsp_responder::httpdate(h.this_update),
                        ),
                    ],
                    h.der,
                )
                    .into_response()
            }
            _ => {
                let mut r = json_error(StatusCode::SERVICE_UNAVAILABLE, "database", "unavailable");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                r
            }
        }
    };
    // A query that stalls once it has a connection is bounded too.
    let info = match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        s.store.latest_crl_info(ca, kind, scope.shard()),
    )
    .await
    .unwrap_or_else(|_| Err(muhr_store::StoreError::timed_out()))
    {
        Ok(Some(i)) => i,
        Ok(None) => {
            return json_error(
                StatusCode::NOT_FOUND,
                "file",
                "no such CRL has been generated yet",
            );
        }
        Err(e) => return unavailable(e),
    };
    let headers = |number: i64, this_update: i64, next_update: i64| {
        let max_age = (next_update - muhr_store::now_secs()).clamp(0, cap);
        [
            (header::CONTENT_TYPE, "application/pkix-crl".to_string()),
            (header::CACHE_CONTROL, format!("public, max-age={max_age}")),
            (header::ETAG, format!("\"{ca}-{number}\"")),
            (
                header::LAST_MODIFIED,
                muhr_ocsp_responder::httpdate(this_update),
            ),
        ]
    };
    let etag = format!("\"{ca}-{}\"", info.number);
    let not_modified = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if not_modified {
        let h = headers(info.number, info.this_update, info.next_update);
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    if let Some(der) = s.crls.get(&name, info.number) {
        let h = headers(info.number, info.this_update, info.next_update);
        return (h, der).into_response();
    }
    match s.store.latest_crl(ca, kind, scope.shard()).await {
        Ok(Some(crl)) => {
            let der = Bytes::from(crl.der);
            s.crls.put(
                &name,
                Held {
                    number: crl.number,
                    der: der.clone(),
                    this_update: crl.this_update,
                    next_update: crl.next_update,
                },
            );
            (headers(crl.number, crl.this_update, crl.next_update), der).into_response()
        }
        Ok(None) => json_error(StatusCode::NOT_FOUND, "file", "CRL vanished"),
        Err(e) => unavailable(e),
    }
}

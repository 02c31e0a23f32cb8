//! The page's scripts and styles, compiled into the binary and served with
//! long-lived caching under their content's hash (`?v=`), so a new release
//! is fetched at once and an old one never mixes with it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Portal;

struct Asset {
    name: &'static str,
    body: &'static [u8],
    content_type: &'static str,
    version: String,
}

/// The served files and their versions.
pub struct Assets {
    files: Vec<Asset>,
}

fn version(body: &[u8]) -> String {
    hex::encode(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body).as_ref()[..8])
}

impl Assets {
    pub(crate) fn new() -> Self {
        let js = "text/javascript; charset=utf-8";
        let files = [
            ("pki.js", &include_bytes!("../assets/pki.js")[..], js),
            ("portal.js", &include_bytes!("../assets/portal.js")[..], js),
            (
                "favicon.svg",
                &include_bytes!("../assets/favicon.svg")[..],
                "image/svg+xml",
            ),
            (
                "portal.css",
                &include_bytes!("../assets/portal.css")[..],
                "text/css; charset=utf-8",
            ),
        ]
        .into_iter()
        .map(|(name, body, content_type)| Asset {
            name,
            body,
            content_type,
            version: version(body),
        })
        .collect();
        Self { files }
    }

    /// The version of `name` for its URL (`?v=`).
    pub fn version_of(&self, name: &str) -> &str {
        self.files
            .iter()
            .find(|a| a.name == name)
            .map_or("", |a| a.version.as_str())
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct V {
    v: Option<String>,
}

/// `GET /portal/assets/{name}`: cached for a year when asked for by its
/// current version, not cached otherwise.
pub(crate) async fn serve(
    State(p): State<Arc<Portal>>,
    Path(name): Path<String>,
    Query(q): Query<V>,
) -> Response {
    let Some(a) = p.assets.files.iter().find(|a| a.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let cache = if q.v.as_deref() == Some(a.version.as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        a.body,
    )
        .into_response()
}

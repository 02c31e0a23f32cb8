//! The portal as an OpenID Connect client of the identity system: the
//! authorization code flow with PKCE (RFC 7636, S256), the code exchanged at
//! the token endpoint with the client's secret, and the ID token checked by
//! the same verifier as the API's bearer tokens, plus its nonce.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use muhr_ra::citizen::oidc::{OidcConfig, loopback_or_https};
use serde::Deserialize;

/// Where the provider's endpoints are.
#[derive(Clone)]
struct Endpoints {
    authorization: url::Url,
    token: String,
}

/// The provider's endpoints and this client's credentials.
pub struct Provider {
    /// Configured, or discovered (at start, else at the first login after
    /// the provider answers: a provider down at start must not stop OCSP,
    /// CRLs and the card line with it).
    endpoints: tokio::sync::RwLock<Option<Endpoints>>,
    last_discovery: std::sync::Mutex<Option<std::time::Instant>>,
    issuer: String,
    client_id: String,
    /// From the environment at start-up; never logged.
    client_secret: Option<String>,
    redirect_uri: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    error: Option<String>,
}

/// Why a code could not be exchanged; said to the citizen as "try again".
#[derive(Debug)]
pub struct ExchangeError(pub String);

/// Random URL-safe text of `bytes` random bytes.
pub fn random_text(bytes: usize) -> Result<String, String> {
    let mut b = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| "random generator failed".to_string())?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// BASE64URL(SHA-256(verifier)): the S256 code challenge.
pub fn code_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

impl Provider {
    /// Uses the configured endpoints, or discovers them from the issuer
    /// (whose document must name the same issuer). Reads the client secret
    /// from the environment variable `client_secret_env` names.
    pub async fn new(oidc: &OidcConfig, redirect_uri: &str) -> Result<Self, String> {
        let http = muhr_ra::citizen::oidc::http_client(oidc)?;
        let configured = match (&oidc.authorization_endpoint, &oidc.token_endpoint) {
            (Some(a), Some(t)) => Some(Endpoints {
                authorization: url::Url::parse(a)
                    .map_err(|e| format!("citizens.oidc.authorization_endpoint: {e}"))?,
                token: t.clone(),
            }),
            _ => None,
        };
        let client_secret = match &oidc.client_secret_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                format!("citizens.oidc.client_secret_env: environment variable {var} is not set")
            })?),
            None => None,
        };
        let me = Self {
            endpoints: tokio::sync::RwLock::new(configured),
            last_discovery: std::sync::Mutex::new(None),
            issuer: oidc.issuer.clone(),
            client_id: oidc
                .client_id
                .clone()
                .unwrap_or_else(|| oidc.audience.clone()),
            client_secret,
            redirect_uri: redirect_uri.to_string(),
            http,
        };
        // Discovery waits for the first login: a provider slow or down at
        // start must not hold the listeners (OCSP, CRLs) with it.
        Ok(me)
    }

    /// The endpoints, discovering them when not known (at most every 5 s).
    async fn endpoints(&self) -> Result<Endpoints, String> {
        if let Some(e) = self.endpoints.read().await.clone() {
            return Ok(e);
        }
        {
            let mut last = self
                .last_discovery
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
                return Err("the identity provider's discovery failed moments ago".into());
            }
            *last = Some(std::time::Instant::now());
        }
        let e = self.discover().await?;
        *self.endpoints.write().await = Some(e.clone());
        Ok(e)
    }

    async fn discover(&self) -> Result<Endpoints, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        if !loopback_or_https(&url) {
            return Err("citizens.oidc.issuer: discovery needs https".into());
        }
        let d: Discovery = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("OpenID discovery {url}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("OpenID discovery {url}: {e}"))?;
        if d.issuer != self.issuer {
            return Err(format!(
                "OpenID discovery: the document names issuer {:?}, not {:?}",
                d.issuer, self.issuer
            ));
        }
        // Plain http only when the issuer itself is on this machine: an
        // https provider's document must not send the client secret to a
        // local plain-http service.
        let issuer_local = !self.issuer.starts_with("https://");
        for (name, u) in [
            ("authorization_endpoint", &d.authorization_endpoint),
            ("token_endpoint", &d.token_endpoint),
        ] {
            if !(u.starts_with("https://") || issuer_local && loopback_or_https(u)) {
                return Err(format!(
                    "OpenID discovery: {name} must be https (plain http only for a provider on \
                     this machine)"
                ));
            }
        }
        Ok(Endpoints {
            authorization: url::Url::parse(&d.authorization_endpoint)
                .map_err(|e| format!("OpenID discovery: authorization_endpoint: {e}"))?,
            token: d.token_endpoint,
        })
    }

    /// Where to send the citizen: the authorization request (OpenID Connect
    /// Core 3.1.2.1) with state, nonce and the S256 challenge.
    pub async fn authorization_url(
        &self,
        state: &str,
        nonce: &str,
        verifier: &str,
        lang: &str,
    ) -> Result<String, String> {
        let mut u = self.endpoints().await?.authorization;
        u.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", "openid")
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &code_challenge(verifier))
            .append_pair("code_challenge_method", "S256")
            .append_pair("ui_locales", lang);
        Ok(u.into())
    }

    /// Exchanges `code` for an ID token (RFC 6749 4.1.3), with the PKCE
    /// verifier and, when configured, the client secret (HTTP Basic).
    pub async fn exchange(&self, code: &str, verifier: &str) -> Result<String, ExchangeError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", verifier),
            ("client_id", self.client_id.as_str()),
        ];
        let token_endpoint = self.endpoints().await.map_err(ExchangeError)?.token;
        let mut req = self.http.post(&token_endpoint).form(&form);
        if let Some(secret) = &self.client_secret {
            // RFC 6749 2.3.1: both form-urlencoded before Basic.
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(&self.client_id), Some(enc(secret)));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ExchangeError(format!("token endpoint: {}", e.without_url())))?;
        let status = resp.status();
        let body: TokenResponse = resp
            .json()
            .await
            .map_err(|_| ExchangeError(format!("token endpoint: HTTP {status}, not JSON")))?;
        match (body.id_token, body.error) {
            (Some(t), None) if status.is_success() => Ok(t),
            (_, Some(e)) => Err(ExchangeError(format!("token endpoint: {e}"))),
            _ => Err(ExchangeError(format!(
                "token endpoint: HTTP {status} without an ID token"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_is_rfc7636s_example() {
        // RFC 7636 Appendix B.
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}

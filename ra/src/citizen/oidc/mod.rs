//! Citizens arrive with an ID token from the identity system's OpenID Connect
//! provider. This module decides whether a token proves who the caller is:
//! the provider's signature (its keys fetched from the configured JWK Set URL
//! or file), the issuer, the audience, the token's time window and the level
//! of assurance that means "personal data verified".

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::RwLock;

use muhr_pkix::jws::{self, Jwk};

/// `[citizens.oidc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer identifier, compared exactly with `iss`.
    pub issuer: String,
    /// This service's client id at the provider: `aud` must contain it.
    pub audience: String,
    /// Where the provider publishes its keys (`jwks_uri`)...
    pub jwks_url: Option<String>,
    /// ...or a file holding them (an installation with no route to the provider).
    pub jwks_file: Option<PathBuf>,
    /// PEM file of CA certificates trusted for an `https` JWK Set URL, in
    /// addition to the system's.
    pub jwks_ca_file: Option<PathBuf>,
    /// Keys are fetched again after this long, and at once (at most every
    /// `jwks_min_refetch_seconds`) when a token names an unknown `kid`.
    #[serde(default = "default_refresh")]
    pub jwks_refresh_seconds: u64,
    /// Least time between two fetches of the keys (start-up aside): tokens
    /// naming made-up `kid`s must not flood the provider.
    #[serde(default = "default_min_refetch")]
    pub jwks_min_refetch_seconds: u64,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// The oldest authentication a token may stand for (`auth_time`, which
    /// is then required): a token from a login days old is not a fresh
    /// proof of who is at the keyboard. At most a day.
    #[serde(default = "default_max_auth_age")]
    pub max_auth_age_seconds: u64,
    /// The level of assurance required.
    #[serde(default)]
    pub assurance: Assurance,
    /// Which claims carry the person's identity.
    #[serde(default)]
    pub claims: ClaimNames,
    /// The portal's client id at the provider (authorization code flow):
    /// `audience`, which ID tokens are issued to; set only to say so.
    pub client_id: Option<String>,
    /// The environment variable holding the portal's client secret (the
    /// secret itself never sits in a file Muhr reads or in its logs).
    pub client_secret_env: Option<String>,
    /// The provider's authorization endpoint; with `token_endpoint`, or both
    /// absent for discovery from `issuer` (`/.well-known/openid-configuration`).
    pub authorization_endpoint: Option<String>,
    /// The provider's token endpoint (https, or http to this machine).
    pub token_endpoint: Option<String>,
}

fn default_refresh() -> u64 {
    3600
}
fn default_min_refetch() -> u64 {
    10
}
fn default_leeway() -> u64 {
    60
}
fn default_max_auth_age() -> u64 {
    MAX_AUTH_AGE
}

/// The ceiling of `max_auth_age_seconds`.
const MAX_AUTH_AGE: u64 = 24 * 3600;

/// An `http` URL is accepted only to this machine: on the network the key
/// set that decides who a citizen is must come over TLS.
pub fn loopback_or_https(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Which claim carries the level of assurance, its values from lowest to
/// highest, and the lowest that counts as "personal data verified".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Assurance {
    /// The claim carrying the level (default `acr`).
    pub claim: String,
    /// Every level, lowest first; a level not listed is refused.
    pub levels: Vec<String>,
    /// The lowest level accepted; one of `levels`.
    pub minimum: String,
}

impl Default for Assurance {
    fn default() -> Self {
        Self {
            claim: "acr".into(),
            levels: vec!["low".into(), "substantial".into(), "high".into()],
            minimum: "substantial".into(),
        }
    }
}

/// The claims that carry the person's identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimNames {
    /// Required (default `pinfl`).
    pub pinfl: String,
    /// Required (default `family_name`).
    pub surname: String,
    /// Required (default `given_name`).
    pub given_name: String,
    /// Optional (default `middle_name`).
    pub patronymic: String,
    /// Optional (default `tin`).
    pub tin: String,
    /// `YYYY-MM-DD`; when present it must agree with the PINFL.
    pub birth_date: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            pinfl: "pinfl".into(),
            surname: "family_name".into(),
            given_name: "given_name".into(),
            patronymic: "middle_name".into(),
            tin: "tin".into(),
            birth_date: "birthdate".into(),
        }
    }
}

/// A NumericDate claim (RFC 7519: seconds, possibly with a fraction).
fn numeric_date(
    claims: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.ceil() as i64)
            })
            .map(Some)
            .ok_or_else(|| TokenError::Invalid(format!("{name} is not a NumericDate"))),
    }
}

/// The most clock skew tolerated: a token's use is remembered this long
/// past its expiry (see `used_proofs`).
const MAX_LEEWAY: u64 = 300;

impl OidcConfig {
    /// Checks the section before use; the error names the setting to fix.
    /// [`Verifier::new`] calls it.
    pub fn validate(&self) -> Result<(), String> {
        if self.jwks_url.is_some() == self.jwks_file.is_some() {
            return Err("citizens.oidc: set exactly one of jwks_url and jwks_file".into());
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err("citizens.oidc: issuer and audience are required".into());
        }
        if let Some(u) = &self.jwks_url
            && !loopback_or_https(u)
        {
            return Err(
                "citizens.oidc.jwks_url: must be https (plain http only to localhost)".into(),
            );
        }
        if self.authorization_endpoint.is_some() != self.token_endpoint.is_some() {
            return Err(
                "citizens.oidc: set both authorization_endpoint and token_endpoint, \
                        or neither (discovery from issuer)"
                    .into(),
            );
        }
        for (name, url) in [
            ("authorization_endpoint", &self.authorization_endpoint),
            ("token_endpoint", &self.token_endpoint),
        ] {
            if let Some(u) = url
                && !loopback_or_https(u)
            {
                return Err(format!(
                    "citizens.oidc.{name}: must be https (plain http only to localhost)"
                ));
            }
        }
        if self.client_id.as_ref().is_some_and(|c| *c != self.audience) {
            // The portal's ID tokens are checked by the API's rules, whose
            // `aud` (and `azp`) is `audience`: another client id would
            // never log in.
            return Err(
                "citizens.oidc.client_id: must equal audience (the portal's ID tokens are \
                 checked as the API's, aud = audience); leave it out"
                    .into(),
            );
        }
        if self.leeway_seconds > MAX_LEEWAY {
            return Err(format!(
                "citizens.oidc.leeway_seconds: at most {MAX_LEEWAY}"
            ));
        }
        if self.max_auth_age_seconds == 0 || self.max_auth_age_seconds > MAX_AUTH_AGE {
            return Err(format!(
                "citizens.oidc.max_auth_age_seconds: must be between 1 and {MAX_AUTH_AGE}"
            ));
        }
        let a = &self.assurance;
        if !a.levels.contains(&a.minimum) {
            return Err(format!(
                "citizens.oidc.assurance.minimum: {:?} is not one of levels {:?}",
                a.minimum, a.levels
            ));
        }
        Ok(())
    }
}

/// Why a token was not accepted. `Unavailable` is ours (no keys to check
/// with), not the caller's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a valid token for this service: signature, issuer, audience,
    /// time window or a required claim (401 `invalid_token`).
    Invalid(String),
    /// Valid, but the person's data is not verified to the level required.
    Assurance(String),
    /// The provider's keys could not be loaded (503; retry later).
    Unavailable(String),
}

/// Who the token says the caller is, once everything checked out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Citizen {
    /// The token's `sub`; `certificate:SERIAL` for an identity read from a
    /// certificate.
    pub subject: String,
    /// The person's certificates and rate limit go by it; its format is
    /// checked only before issuing.
    pub pinfl: String,
    /// Family name.
    pub surname: String,
    /// Given name.
    pub given_name: String,
    /// None when the claim is absent or empty.
    pub patronymic: Option<String>,
    /// None when the claim is absent or empty.
    pub tin: Option<String>,
    /// YYYY-MM-DD when the token has it; it must agree with the PINFL.
    /// None for an identity read from a certificate.
    pub birth_date: Option<String>,
    /// The token's level of assurance; `certificate` for an identity read
    /// from a certificate.
    pub assurance: String,
    /// The token this identity came from, for single use: the SHA-256 of
    /// its signing input (header and payload, what its signature covers, so
    /// no re-encoding of the signature makes another token), and when it
    /// expires. None for an identity
    /// read from a certificate.
    pub token: Option<TokenId>,
}

/// What makes an ID token usable once: which token, and how long to
/// remember it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct TokenId {
    /// SHA-256 of the token's signing input, hex.
    pub digest: String,
    /// Unix seconds: `exp` plus the leeway, as long as the token is accepted.
    pub expires_at: i64,
}

struct Keys {
    keys: Vec<Jwk>,
    fetched: Option<Instant>,
}

/// The client every call to the provider goes through: 10 s timeout, no
/// redirects (a redirect is not the provider speaking), `jwks_ca_file`
/// trusted besides the system's roots.
pub fn http_client(config: &OidcConfig) -> Result<reqwest::Client, String> {
    let mut http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(f) = &config.jwks_ca_file {
        let pem = std::fs::read(f)
            .map_err(|e| format!("citizens.oidc.jwks_ca_file {}: {e}", f.display()))?;
        for c in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("citizens.oidc.jwks_ca_file: {e}"))?
        {
            http = http.add_root_certificate(c);
        }
    }
    http.build().map_err(|e| format!("HTTP client: {e}"))
}

/// Checks ID tokens with the provider's keys, kept and refetched as
/// [`OidcConfig`] says. One per process.
pub struct Verifier {
    config: OidcConfig,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    last_attempt: Mutex<Option<Instant>>,
}

impl Verifier {
    /// Validates `config` and makes the HTTP client (10 s timeout, no
    /// redirects, `jwks_ca_file` trusted). Fetches no keys: call
    /// [`Verifier::load`].
    pub fn new(config: OidcConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(Self {
            http: http_client(&config)?,
            config,
            keys: RwLock::new(Keys {
                keys: Vec::new(),
                fetched: None,
            }),
            last_attempt: Mutex::new(None),
        })
    }

    /// The settings it was made with.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    async fn fetch(&self) -> Result<Vec<Jwk>, String> {
        let bytes = match (&self.config.jwks_url, &self.config.jwks_file) {
            (Some(url), _) => {
                let r = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| format!("GET {url}: {e}"))?;
                if !r.status().is_success() {
                    return Err(format!("GET {url}: HTTP {}", r.status()));
                }
                r.bytes()
                    .await
                    .map_err(|e| format!("GET {url}: {e}"))?
                    .to_vec()
            }
            (None, Some(f)) => tokio::fs::read(f)
                .await
                .map_err(|e| format!("{}: {e}", f.display()))?,
            (None, None) => return Err("no JWK Set configured".into()),
        };
        jws::parse_jwks(&bytes)
    }

    /// Fetches the keys again unless that was tried within the minimum
    /// interval (a flood of tokens naming made-up kids must not become a
    /// flood of requests to the provider). Old keys stay if fetching fails.
    async fn refresh(&self, force: bool) -> Result<(), String> {
        let now = Instant::now();
        {
            let mut last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
            let min = Duration::from_secs(self.config.jwks_min_refetch_seconds);
            if !force && last.is_some_and(|t| now.duration_since(t) < min) {
                return Ok(());
            }
            *last = Some(now);
        }
        match self.fetch().await {
            Ok(keys) => {
                *self.keys.write().await = Keys {
                    keys,
                    fetched: Some(now),
                };
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not fetch the identity provider's keys");
                Err(e)
            }
        }
    }

    /// Loads the keys at start-up, so a wrong URL or file shows at once.
    pub async fn load(&self) -> Result<(), String> {
        self.refresh(true).await
    }

    async fn key_for(&self, token: &jws::Unverified) -> Result<Jwk, TokenError> {
        let stale = {
            let k = self.keys.read().await;
            let age = Duration::from_secs(self.config.jwks_refresh_seconds);
            k.fetched.is_none_or(|t| t.elapsed() > age)
        };
        if stale {
            let _ = self.refresh(false).await;
        }
        if let Some(k) = token.pick(&self.keys.read().await.keys) {
            return Ok(k.clone());
        }
        // A kid we do not know: perhaps the provider rotated its keys.
        if !stale {
            let _ = self.refresh(false).await;
        }
        let keys = self.keys.read().await;
        if keys.keys.is_empty() {
            return Err(TokenError::Unavailable(
                "the identity provider's keys could not be loaded".into(),
            ));
        }
        token.pick(&keys.keys).cloned().ok_or_else(|| {
            TokenError::Invalid(match &token.kid {
                Some(kid) => format!("no key {kid:?} in the identity provider's key set"),
                None => "the token names no key (kid) and more than one could fit".into(),
            })
        })
    }

    /// Checks an ID token and returns the person it names.
    pub async fn verify(&self, token: &str, now: SystemTime) -> Result<Citizen, TokenError> {
        self.verify_inner(token, now, None).await
    }

    /// Checks an ID token from the authorization code flow: as
    /// [`Verifier::verify`], and its `nonce` must be the one the login sent
    /// (OpenID Connect Core 3.1.3.7), so a token from another login cannot
    /// be injected into this one.
    pub async fn verify_login(
        &self,
        token: &str,
        now: SystemTime,
        nonce: &str,
    ) -> Result<Citizen, TokenError> {
        self.verify_inner(token, now, Some(nonce)).await
    }

    async fn verify_inner(
        &self,
        token: &str,
        now: SystemTime,
        nonce: Option<&str>,
    ) -> Result<Citizen, TokenError> {
        let unverified = jws::Unverified::parse(token).map_err(TokenError::Invalid)?;
        let digest = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            unverified.signing_input().as_bytes(),
        ));
        let key = self.key_for(&unverified).await?;
        let payload = unverified.verify(&key).map_err(TokenError::Invalid)?;
        let claims: serde_json::Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| TokenError::Invalid("the payload is not a JSON object".into()))?;
        let mut citizen = self.check_claims(&claims, now)?;
        if let Some(expected) = nonce {
            let got = claims.get("nonce").and_then(Value::as_str);
            let same = got.is_some_and(|g| {
                aws_lc_rs::constant_time::verify_slices_are_equal(g.as_bytes(), expected.as_bytes())
                    .is_ok()
            });
            if !same {
                return Err(TokenError::Invalid(
                    "the ID token's nonce is not this login's".into(),
                ));
            }
        }
        // As long as the token is accepted (exp, a fraction included, plus
        // the leeway), its use must be remembered.
        let exp = numeric_date(&claims, "exp")?.unwrap_or(i64::MAX);
        citizen.token = Some(TokenId {
            digest,
            expires_at: exp.saturating_add(self.config.leeway_seconds as i64),
        });
        Ok(citizen)
    }

    fn check_claims(
        &self,
        claims: &serde_json::Map<String, Value>,
        now: SystemTime,
    ) -> Result<Citizen, TokenError> {
        let bad = |s: String| TokenError::Invalid(s);
        let c = &self.config;
        let text = |name: &str| -> Option<String> {
            claims.get(name).and_then(Value::as_str).map(str::to_string)
        };
        if text("iss").as_deref() != Some(c.issuer.as_str()) {
            return Err(bad(format!("iss is not {:?}", c.issuer)));
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == c.audience,
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(&c.audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(bad(format!("aud does not include {:?}", c.audience)));
        }
        // OpenID Connect Core 3.1.3.7: with several audiences the token must
        // say it was issued to us (azp), or a token meant for another
        // client that happens to list us would do.
        let several = matches!(claims.get("aud"), Some(Value::Array(a)) if a.len() > 1);
        match text("azp") {
            Some(azp) if azp != c.audience => {
                return Err(bad(format!("azp is not {:?}", c.audience)));
            }
            None if several => {
                return Err(bad("azp is required when aud names several clients".into()));
            }
            _ => {}
        }
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let leeway = c.leeway_seconds as i64;
        let time = |name: &str| numeric_date(claims, name);
        let exp = time("exp")?.ok_or_else(|| bad("exp is required".into()))?;
        if now > exp.saturating_add(leeway) {
            return Err(bad("the token has expired (exp)".into()));
        }
        if time("nbf")?.is_some_and(|nbf| nbf > now + leeway) {
            return Err(bad("the token is not valid yet (nbf)".into()));
        }
        let iat = time("iat")?.ok_or_else(|| bad("iat is required".into()))?;
        if iat > now + leeway {
            return Err(bad("the token was issued in the future (iat)".into()));
        }
        let auth_time = time("auth_time")?
            .ok_or_else(|| bad("auth_time is required (how fresh the login is)".into()))?;
        if auth_time > now + leeway {
            return Err(bad("the authentication is in the future (auth_time)".into()));
        }
        if now.saturating_sub(auth_time) > c.max_auth_age_seconds as i64 + leeway {
            return Err(bad(format!(
                "the authentication is older than {} s (auth_time): log in again",
                c.max_auth_age_seconds
            )));
        }
        let a = &c.assurance;
        let level = text(&a.claim)
            .ok_or_else(|| TokenError::Assurance(format!("the token has no {} claim", a.claim)))?;
        let rank = |l: &str| a.levels.iter().position(|x| x == l);
        match (rank(&level), rank(&a.minimum)) {
            (Some(have), Some(need)) if have >= need => {}
            _ => {
                return Err(TokenError::Assurance(format!(
                    "{} {level:?} is below {:?}: personal data must be verified",
                    a.claim, a.minimum
                )));
            }
        }
        let n = &c.claims;
        let required = |name: &str| {
            text(name)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad(format!("the {name} claim is required")))
        };
        Ok(Citizen {
            subject: required("sub")?,
            pinfl: required(&n.pinfl)?,
            surname: required(&n.surname)?,
            given_name: required(&n.given_name)?,
            patronymic: text(&n.patronymic).filter(|s| !s.is_empty()),
            tin: text(&n.tin).filter(|s| !s.is_empty()),
            birth_date: text(&n.birth_date).filter(|s| !s.is_empty()),
            assurance: level,
            token: None,
        })
    }
}

#[cfg(test)]
mod tests;

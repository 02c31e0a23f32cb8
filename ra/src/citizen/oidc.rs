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
    #[serde(default)]
    pub assurance: Assurance,
    #[serde(default)]
    pub claims: ClaimNames,
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
fn loopback_or_https(url: &str) -> bool {
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
    pub claim: String,
    pub levels: Vec<String>,
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
    pub pinfl: String,
    pub surname: String,
    pub given_name: String,
    pub patronymic: String,
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
    Invalid(String),
    /// Valid, but the person's data is not verified to the level required.
    Assurance(String),
    Unavailable(String),
}

/// Who the token says the caller is, once everything checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citizen {
    pub subject: String,
    pub pinfl: String,
    pub surname: String,
    pub given_name: String,
    pub patronymic: Option<String>,
    pub tin: Option<String>,
    pub birth_date: Option<String>,
    pub assurance: String,
    /// The token this identity came from, for single use: the SHA-256 of
    /// its signing input (header and payload, what its signature covers, so
    /// no re-encoding of the signature makes another token), and when it
    /// expires. None for an identity
    /// read from a certificate.
    pub token: Option<TokenId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenId {
    pub digest: String,
    pub expires_at: i64,
}

struct Keys {
    keys: Vec<Jwk>,
    fetched: Option<Instant>,
}

pub struct Verifier {
    config: OidcConfig,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    last_attempt: Mutex<Option<Instant>>,
}

impl Verifier {
    pub fn new(config: OidcConfig) -> Result<Self, String> {
        config.validate()?;
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
        Ok(Self {
            http: http.build().map_err(|e| format!("HTTP client: {e}"))?,
            config,
            keys: RwLock::new(Keys {
                keys: Vec::new(),
                fetched: None,
            }),
            last_attempt: Mutex::new(None),
        })
    }

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
mod tests {
    use super::*;

    fn verifier() -> Verifier {
        Verifier::new(OidcConfig {
            issuer: "https://id.example.uz".into(),
            audience: "muhr".into(),
            jwks_url: None,
            jwks_file: Some("/nonexistent".into()),
            jwks_ca_file: None,
            jwks_refresh_seconds: 3600,
            jwks_min_refetch_seconds: 10,
            leeway_seconds: 60,
            max_auth_age_seconds: 3600,
            assurance: Assurance::default(),
            claims: ClaimNames::default(),
        })
        .unwrap()
    }

    fn claims(now: i64) -> serde_json::Map<String, Value> {
        serde_json::json!({
            "iss": "https://id.example.uz", "aud": ["other", "muhr"], "azp": "muhr",
            "sub": "u1", "exp": now + 300, "iat": now - 10, "auth_time": now - 20,
            "acr": "high",
            "pinfl": "31505851234567", "family_name": "Toshmatov", "given_name": "Sardor",
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn claim_rules() {
        let v = verifier();
        let t = SystemTime::now();
        let now = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
        let c = v.check_claims(&claims(now), t).unwrap();
        assert_eq!(
            (c.pinfl.as_str(), c.assurance.as_str()),
            ("31505851234567", "high")
        );
        assert_eq!(c.patronymic, None);
        let cases: Vec<(&str, Value, &str)> = vec![
            ("iss", "https://evil".into(), "iss"),
            ("aud", "other".into(), "aud"),
            ("exp", (now - 61).into(), "expired"),
            ("nbf", (now + 61).into(), "not valid yet"),
            ("iat", (now + 61).into(), "future"),
            ("iat", Value::Null, "iat"),
            ("acr", "low".into(), "below"),
            ("acr", "unheard-of".into(), "below"),
            ("pinfl", "".into(), "pinfl"),
            // A token issued to another client that lists us among several.
            ("azp", "other".into(), "azp"),
            ("azp", Value::Null, "azp is required"),
            // A login older than the configured hour, or none stated.
            ("auth_time", (now - 3661 - 60).into(), "older than"),
            ("auth_time", Value::Null, "auth_time"),
            ("auth_time", (now + 61).into(), "future"),
        ];
        for (claim, value, want) in cases {
            let mut c = claims(now);
            c.insert(claim.into(), value.clone());
            let e = v.check_claims(&c, t).unwrap_err();
            let text = format!("{e:?}");
            assert!(text.contains(want), "{claim}={value}: {text}");
        }
        // A token that does not say when its login was.
        let mut c = claims(now);
        c.remove("auth_time");
        let e = format!("{:?}", v.check_claims(&c, t).unwrap_err());
        assert!(e.contains("auth_time is required"), "{e}");
        // One audience needs no azp.
        let mut c = claims(now);
        c.insert("aud".into(), "muhr".into());
        c.remove("azp");
        assert!(v.check_claims(&c, t).is_ok());
        // Within the leeway, a just-expired token still counts.
        let mut c = claims(now);
        c.insert("exp".into(), (now - 30).into());
        assert!(v.check_claims(&c, t).is_ok());
    }

    #[test]
    fn config_rules() {
        let mut c = verifier().config().clone();
        c.jwks_url = Some("http://x".into());
        assert!(c.validate().is_err());
        c.jwks_file = None;
        c.assurance.minimum = "top".into();
        assert!(c.validate().is_err());
    }

    /// The key set that decides who a citizen is never crosses the network
    /// in the clear: a man in the middle would serve their own keys.
    #[test]
    fn a_plain_http_key_set_off_this_machine_is_refused() {
        let mut c = verifier().config().clone();
        c.jwks_file = None;
        for (url, ok) in [
            ("https://id.egov.uz/jwks", true),
            ("http://127.0.0.1:9000/jwks", true),
            ("http://localhost/jwks", true),
            ("http://[::1]:80/jwks", true),
            ("http://id.egov.uz/jwks", false),
            ("http://127.0.0.1.evil.example/jwks", false),
            ("http://localhost@evil.example/jwks", false),
            ("ftp://127.0.0.1/jwks", false),
        ] {
            c.jwks_url = Some(url.into());
            assert_eq!(c.validate().is_ok(), ok, "{url}");
        }
        c.jwks_url = Some("https://id.egov.uz/jwks".into());
        c.max_auth_age_seconds = 2 * 86_400;
        assert!(c.validate().is_err(), "more than a day");
    }
}

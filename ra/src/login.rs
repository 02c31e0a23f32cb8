//! Login into the identity system by certificate, the flow the country
//! already uses made standard: a relying party asks for a challenge, the
//! citizen's key signs it (CMS SignedData, attached or detached), Muhr checks
//! the signature and the certificate and answers with a signed identity
//! assertion for that relying party.
//!
//! Order of checks: the signature first (no database), then the certificate
//! (one read), and only then the challenge is consumed (one conditional
//! write): a refused login leaves its challenge unused, and a used one is a
//! login that happened, which is what usage is metered from.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use muhr_store::rp::{Consumed, RelyingParty};
use serde::Deserialize;
use serde_json::{Value, json};
use x509_cert::Certificate;

use crate::assertion::Assertions;
use crate::trust::{Assessment, Problem, Purpose, Trust};

/// `[login]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// `iss` of the identity assertions: Muhr's public URL.
    pub issuer: String,
    /// Label of the P-256 key in the key store that signs assertions; made
    /// on the first start when missing.
    pub assertion_key: String,
    pub assertion_seconds: u64,
    pub challenge_seconds: u64,
    /// How long a relying party's credentials are trusted from memory.
    pub rp_cache_seconds: u64,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".into(),
            assertion_key: "muhr-assertion".into(),
            assertion_seconds: 300,
            challenge_seconds: 120,
            rp_cache_seconds: 30,
        }
    }
}

impl LoginConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.issuer.trim().is_empty() {
            return Err("login.issuer: required (Muhr's public URL)".into());
        }
        if !(10..=600).contains(&self.challenge_seconds) {
            return Err("login.challenge_seconds: 10 to 600".into());
        }
        if !(30..=3600).contains(&self.assertion_seconds) {
            return Err("login.assertion_seconds: 30 to 3600".into());
        }
        Ok(())
    }
}

#[derive(Debug)]
pub enum LoginError {
    /// The login is refused; each reason as a code and a sentence (401).
    Refused(Vec<Problem>),
    Internal(String),
}

fn refused(code: &'static str, detail: impl Into<String>) -> LoginError {
    LoginError::Refused(vec![Problem {
        code,
        detail: detail.into(),
    }])
}

/// A successful login.
#[derive(Debug)]
pub struct LoggedIn {
    pub assertion: String,
    pub claims: BTreeMap<String, Value>,
}

pub struct Login {
    pub trust: Arc<Trust>,
    pub assertions: Arc<Assertions>,
    config: LoginConfig,
}

/// Challenges are 32 random bytes, base64url: what the client signs is this
/// text's UTF-8 bytes.
const CHALLENGE_LEN: usize = 43;

impl Login {
    pub fn new(trust: Arc<Trust>, assertions: Arc<Assertions>, config: LoginConfig) -> Self {
        Self {
            trust,
            assertions,
            config,
        }
    }

    /// A fresh challenge for `rp`, and when it expires (Unix seconds).
    pub async fn challenge(&self, rp: &RelyingParty) -> Result<(String, i64), LoginError> {
        let mut b = [0u8; 32];
        aws_lc_rs::rand::fill(&mut b)
            .map_err(|_| LoginError::Internal("random generator failed".into()))?;
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let expires = muhr_store::now_secs() + self.config.challenge_seconds as i64;
        self.trust
            .ca()
            .store()
            .add_challenge(&challenge, &rp.id, expires)
            .await
            .map_err(|e| LoginError::Internal(format!("database: {e}")))?;
        Ok((challenge, expires))
    }

    /// A login with a CMS signature over a challenge `rp` was given.
    pub async fn with_signature(
        &self,
        rp: &RelyingParty,
        signature: &[u8],
        detached_challenge: Option<&str>,
    ) -> Result<LoggedIn, LoginError> {
        let v = crate::cms::verify(signature, detached_challenge.map(str::as_bytes))
            .map_err(|e| refused(e.code, e.detail))?;
        let challenge = std::str::from_utf8(&v.content)
            .ok()
            .filter(|c| c.len() == CHALLENGE_LEN)
            .ok_or_else(|| refused("unknown_challenge", "the signed content is not a challenge"))?;
        let now = SystemTime::now();
        let a = self.assess(&v.signer, now).await?;
        let consumed = self
            .trust
            .ca()
            .store()
            .consume_challenge(challenge, &rp.id, &a.serial, muhr_store::now_secs())
            .await
            .map_err(|e| LoginError::Internal(format!("database: {e}")))?;
        match consumed {
            Consumed::Fresh => {}
            Consumed::Unknown => {
                return Err(refused(
                    "unknown_challenge",
                    "no such challenge was issued to this relying party",
                ));
            }
            Consumed::Expired => {
                return Err(refused(
                    "expired_challenge",
                    format!(
                        "the challenge expired ({} s to use it)",
                        self.config.challenge_seconds
                    ),
                ));
            }
            Consumed::Used => {
                return Err(refused(
                    "replayed_challenge",
                    "the challenge was used already",
                ));
            }
        }
        self.assert(rp, &a, "cms", now)
    }

    /// A login by the certificate of a mutual-TLS connection, for `rp`.
    pub async fn with_tls(
        &self,
        rp: &RelyingParty,
        certificate: &Certificate,
    ) -> Result<LoggedIn, LoginError> {
        let now = SystemTime::now();
        let a = self.assess(certificate, now).await?;
        let mut id = [0u8; 24];
        aws_lc_rs::rand::fill(&mut id)
            .map_err(|_| LoginError::Internal("random generator failed".into()))?;
        self.trust
            .ca()
            .store()
            .record_tls_login(
                &format!("tls:{}", hex::encode(id)),
                &rp.id,
                &a.serial,
                muhr_store::now_secs(),
            )
            .await
            .map_err(|e| LoginError::Internal(format!("database: {e}")))?;
        self.assert(rp, &a, "tls", now)
    }

    async fn assess(&self, cert: &Certificate, now: SystemTime) -> Result<Assessment, LoginError> {
        let a = self
            .trust
            .assess(cert, Purpose::Authentication, now)
            .await
            .map_err(LoginError::Internal)?;
        if !a.valid() {
            return Err(LoginError::Refused(a.problems));
        }
        if !a.identity.contains_key("pinfl") {
            return Err(refused(
                "no_identity",
                "the certificate names no person (no PINFL)",
            ));
        }
        Ok(a)
    }

    fn assert(
        &self,
        rp: &RelyingParty,
        a: &Assessment,
        method: &str,
        now: SystemTime,
    ) -> Result<LoggedIn, LoginError> {
        let claims = claims(a, method, now);
        let pinfl = a.identity.get("pinfl").cloned().unwrap_or_default();
        let assertion = self
            .assertions
            .issue(&rp.id, &pinfl, claims.clone(), now)
            .map_err(LoginError::Internal)?;
        Ok(LoggedIn { assertion, claims })
    }

    pub fn config(&self) -> &LoginConfig {
        &self.config
    }

    pub fn challenge_lifetime(&self) -> Duration {
        Duration::from_secs(self.config.challenge_seconds)
    }
}

/// The assertion's claims about the person: OpenID Connect names where one
/// exists, the country's identifiers by their own names.
fn claims(a: &Assessment, method: &str, now: SystemTime) -> BTreeMap<String, Value> {
    let mut c = BTreeMap::new();
    for (field, claim) in [
        ("pinfl", "pinfl"),
        ("surname", "family_name"),
        ("given_name", "given_name"),
        ("patronymic", "middle_name"),
        ("tin", "tin"),
        ("organization.tin", "org_tin"),
        ("organization.name", "org_name"),
        ("organization.title", "org_title"),
    ] {
        if let Some(v) = a.identity.get(field) {
            c.insert(claim.to_string(), json!(v));
        }
    }
    c.insert("amr".into(), json!(["cert"]));
    c.insert("login_method".into(), json!(method));
    c.insert("cert_serial".into(), json!(a.serial));
    if let Some(p) = &a.profile {
        c.insert("cert_profile".into(), json!(p));
    }
    c.insert(
        "auth_time".into(),
        json!(
            now.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ),
    );
    c
}

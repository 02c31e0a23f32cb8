//! Login into the identity system by certificate, the flow the country
//! already uses made standard: a relying party asks for a challenge, the
//! citizen's key signs it (CMS SignedData, attached or detached), Muhr checks
//! the signature and the certificate and answers with a signed identity
//! assertion for that relying party.
//!
//! The same over the mutual-TLS listener: the browser brings the relying
//! party's challenge, and the TLS client certificate stands in for the
//! signature.
//!
//! Order of checks: the challenge's MAC and expiry and the signature first,
//! then the certificate (remembered once seen: no database), and only then
//! the challenge is used: one INSERT, shared by the logins arriving together
//! (see [`crate::record`]), that also reads the certificate's status
//! and records nothing unless it is good. A refused login leaves its
//! challenge unused, and a used one is a login that happened, which is what
//! usage is metered from.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use muhr_store::rp::RelyingParty;
use serde::Deserialize;
use serde_json::{Value, json};
use x509_cert::Certificate;

use crate::assertion::Assertions;
use crate::challenge::{ChallengeError, Challenges, Opened};
use crate::relying::{RelyingParties, RpError};
use muhr_validation::trust::{Assessment, Problem, Purpose, Trust};

/// `[login]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// `iss` of the identity assertions: Muhr's public URL.
    pub issuer: String,
    /// Label of the P-256 key in the key store that signs assertions; made
    /// on the first start when missing.
    pub assertion_key: String,
    /// How long an assertion is good for, `exp` - `iat` (30 to 3600 s,
    /// default 300).
    pub assertion_seconds: u64,
    /// How long a challenge may be used once issued (10 to 600 s, default 120).
    pub challenge_seconds: u64,
    /// How long a relying party's credentials are trusted from memory.
    pub rp_cache_seconds: u64,
    /// Other CAs whose certificates may log in and sign.
    pub external_cas: Vec<muhr_validation::external::ExternalCaConfig>,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".into(),
            assertion_key: "muhr-assertion".into(),
            assertion_seconds: 300,
            challenge_seconds: 120,
            rp_cache_seconds: 30,
            external_cas: Vec::new(),
        }
    }
}

impl LoginConfig {
    /// Refuses settings the service must not start with, naming the key at
    /// fault. The external CAs are checked when they are loaded instead.
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

/// Why a login, or handing out a challenge, did not succeed.
#[derive(Debug)]
pub enum LoginError {
    /// The login is refused; each reason as a code and a sentence (401).
    Refused(Vec<Problem>),
    /// Not the request's fault (database, key store, random generator): a
    /// 500, or a 503 when the database cannot be reached. The text is logged,
    /// never sent.
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
    /// The signed assertion for the relying party, a compact ES256 JWT.
    pub assertion: String,
    /// The claims inside it about the person and the login, also answered
    /// beside it as plain JSON; the JWT adds `iss`, `aud`, `sub`, `iat`,
    /// `nbf`, `exp` and `jti`.
    pub claims: BTreeMap<String, Value>,
}

/// The login service: opens challenges, checks the signature and the
/// certificate, records each login once and issues the assertion. One per
/// process, shared by both listeners.
pub struct Login {
    /// Decides on the certificate; the verification service uses it too.
    pub trust: Arc<Trust>,
    /// Signs the assertions.
    pub assertions: Arc<Assertions>,
    challenges: Challenges,
    records: crate::record::Recorder,
    config: LoginConfig,
}

impl Login {
    /// Reads (or, on the first start, makes) the challenge key every node
    /// shares.
    pub async fn open(
        trust: Arc<Trust>,
        assertions: Arc<Assertions>,
        config: LoginConfig,
    ) -> Result<Self, String> {
        let mut fresh = [0u8; 32];
        aws_lc_rs::rand::fill(&mut fresh).map_err(|_| "random generator failed".to_string())?;
        let key = trust
            .store()
            .login_challenge_key(&fresh)
            .await
            .map_err(|e| format!("database: {e}"))?;
        let challenges = Challenges::new(&key, config.challenge_seconds);
        let records = crate::record::Recorder::start(trust.store().clone());
        Ok(Self {
            trust,
            assertions,
            challenges,
            records,
            config,
        })
    }

    /// A fresh challenge for `rp`, and when it expires (Unix seconds).
    pub fn challenge(&self, rp: &RelyingParty) -> Result<(String, i64), LoginError> {
        self.challenges
            .issue(&rp.id, muhr_store::now_secs())
            .map_err(LoginError::Internal)
    }

    fn open_challenge(&self, text: &str) -> Result<Opened, LoginError> {
        self.challenges
            .open(text, muhr_store::now_secs())
            .map_err(|e| match e {
                ChallengeError::Unknown => {
                    refused("unknown_challenge", "not a challenge this service issued")
                }
                ChallengeError::Expired => refused(
                    "expired_challenge",
                    format!(
                        "the challenge expired ({} s to use it)",
                        self.config.challenge_seconds
                    ),
                ),
            })
    }

    /// A login with a CMS signature over a challenge `rp` was given.
    pub async fn with_signature(
        &self,
        rp: &RelyingParty,
        signature: &[u8],
        detached_challenge: Option<&str>,
    ) -> Result<LoggedIn, LoginError> {
        let v = muhr_validation::cms::verify(signature, detached_challenge.map(str::as_bytes))
            .map_err(|e| refused(e.code, e.detail))?;
        let challenge = std::str::from_utf8(&v.content)
            .map_err(|_| refused("unknown_challenge", "the signed content is not a challenge"))?;
        let opened = self.open_challenge(challenge)?;
        if opened.rp != rp.id {
            return Err(refused(
                "unknown_challenge",
                "the challenge was issued to another relying party",
            ));
        }
        let now = SystemTime::now();
        let a = self.assess(&v.signer, &v.signer_der, now, true).await?;
        self.use_challenge(
            challenge,
            &opened,
            "cms",
            &a,
            (&v.signer, &v.signer_der),
            now,
        )
        .await?;
        self.assert(rp, &a, "cms", challenge, now)
    }

    /// A login by the certificate of a mutual-TLS connection, with a
    /// challenge a relying party issued: the assertion is for that party.
    pub async fn with_tls(
        &self,
        parties: &RelyingParties,
        challenge: &str,
        certificate: &Certificate,
        der: &[u8],
    ) -> Result<LoggedIn, LoginError> {
        let opened = self.open_challenge(challenge)?;
        let rp = parties.active(&opened.rp).await.map_err(|e| match e {
            RpError::Unauthorized(why) => refused("relying_party", why),
            RpError::Internal(why) => LoginError::Internal(why),
        })?;
        let now = SystemTime::now();
        let a = self.assess(certificate, der, now, true).await?;
        self.use_challenge(challenge, &opened, "tls", &a, (certificate, der), now)
            .await?;
        self.assert(&rp, &a, "tls", challenge, now)
    }

    async fn use_challenge(
        &self,
        challenge: &str,
        opened: &Opened,
        kind: &'static str,
        a: &Assessment,
        (cert, der): (&Certificate, &[u8]),
        now: SystemTime,
    ) -> Result<(), LoginError> {
        let require_good = a.external_ca.is_none();
        let recorded = self
            .records
            .record(muhr_store::rp::ChallengeUse {
                challenge: challenge.to_string(),
                rp: opened.rp.clone(),
                kind,
                expires_at: opened.expires_at,
                serial: a.serial.clone(),
                now: muhr_store::now_secs(),
                require_good,
            })
            .await
            .map_err(LoginError::Internal)?;
        if recorded {
            return Ok(());
        }
        if require_good {
            // Not recorded: either the challenge was used, or the
            // certificate is no longer good. Say which (a rare path: one
            // read).
            if let Err(LoginError::Refused(problems)) = self.assess(cert, der, now, false).await {
                return Err(LoginError::Refused(problems));
            }
        }
        Err(refused(
            "replayed_challenge",
            "the challenge was used already",
        ))
    }

    /// The certificate's checks; with `status_deferred`, this CA's own
    /// certificates have their status checked by the statement that records
    /// the login instead (see [`Trust::assess_now_status_deferred`]).
    async fn assess(
        &self,
        cert: &Certificate,
        der: &[u8],
        now: SystemTime,
        status_deferred: bool,
    ) -> Result<Assessment, LoginError> {
        let a = if status_deferred {
            self.trust
                .assess_now_status_deferred(cert, der, Purpose::Login, now)
                .await
        } else {
            self.trust.assess(cert, der, Purpose::Login, now).await
        }
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
        challenge: &str,
        now: SystemTime,
    ) -> Result<LoggedIn, LoginError> {
        let mut claims = claims(a, method, now);
        // The relying party matches the assertion to the login it started,
        // as OpenID Connect's nonce does (the TLS flow passes through a
        // browser).
        claims.insert("nonce".into(), json!(challenge));
        let pinfl = a.identity.get("pinfl").cloned().unwrap_or_default();
        let assertion = self
            .assertions
            .issue(&rp.id, &pinfl, claims.clone(), now)
            .map_err(LoginError::Internal)?;
        Ok(LoggedIn { assertion, claims })
    }

    /// The `[login]` settings it was opened with.
    pub fn config(&self) -> &LoginConfig {
        &self.config
    }

    /// How long a challenge issued now stays usable (`challenge_seconds`).
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
    if let Some(ca) = &a.external_ca {
        c.insert("cert_issuer".into(), json!(ca));
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

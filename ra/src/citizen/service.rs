//! Remote issuance to citizens the identity system has already authenticated
//! with verified personal data, and their self-service.
//!
//! The subject comes from the verified ID token, never from the CSR. A retry
//! never issues twice: a certificate is tied to the job `remote:PINFL:KEY`
//! (KEY: SHA-256 of the public key, first 16 bytes in hex) and its profile,
//! which the database lets exist once. So the same key and profile get the
//! same certificate back while it is valid; a key certified before whose
//! certificate has since been revoked or has expired is refused: a new
//! certificate needs a new key.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use muhr_ca::{Ca, FieldError, IssueError, Request};
use muhr_policies::identity::{IdentityRules, SubjectRequest};
use muhr_store::{AuditEvent, IssueOnce, StoreError, Transition};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::citizen::oidc::{Citizen, OidcConfig, Verifier};
use muhr_http::ratelimit::RateLimiter;
use muhr_login::challenge::Challenges;
use muhr_validation::trust::Trust;

/// `[citizens]`: remote issuance. Absent, the citizen routes are not mounted (404).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CitizensConfig {
    /// The identity system's provider, whose ID tokens authenticate citizens.
    pub oidc: OidcConfig,
    /// Profiles a citizen may ask for.
    #[serde(default = "default_profiles")]
    pub profiles: Vec<String>,
    /// Defaults: 20 acts per person per hour, 120 requests per address per
    /// minute.
    #[serde(default)]
    pub rate_limits: RateLimits,
}

fn default_profiles() -> Vec<String> {
    vec!["individual-auth".into(), "individual-sign".into()]
}

/// How often one person or one client address may ask; over a limit
/// answers 429 with Retry-After.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Acts (issue, renew, suspend, revoke) per person per hour; 0: no limit.
    pub person_per_hour: u32,
    /// Requests of any kind per client address per minute; 0: no limit.
    pub address_per_minute: u32,
    /// Take the client address from `X-Forwarded-For` (its last entry, the one
    /// the proxy in front of Muhr added). Only behind such a proxy.
    pub trust_forwarded_for: bool,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            person_per_hour: 20,
            address_per_minute: 120,
            trust_forwarded_for: false,
        }
    }
}

/// Why a citizen's request failed; the citizens' API turns each variant
/// into one HTTP status.
#[derive(Debug)]
pub enum CitizenError {
    /// The request breaks a rule: field and rule (4xx, nothing written).
    Refused(FieldError),
    /// Not the caller's, or no such thing (404: the two are not told apart).
    NotFound(String),
    /// Done already, or not possible in the certificate's state: a used ID
    /// token or challenge, a key certified before (409).
    Conflict(String),
    /// Allowed to nobody in this way (403).
    Forbidden(String),
    /// Over a rate limit; retry after this long (429 with Retry-After).
    TooMany(Duration),
    /// The key store or the database is down; the same request succeeds later.
    Unavailable(String),
    /// A bug or a record that does not add up (500); the log has the cause.
    Internal(String),
}

impl From<StoreError> for CitizenError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            CitizenError::Unavailable(format!("database: {e}"))
        } else {
            CitizenError::Internal(format!("database: {e}"))
        }
    }
}

impl From<IssueError> for CitizenError {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::Refused(f) => CitizenError::Refused(f),
            IssueError::Key(k) if k.is_unavailable() => CitizenError::Unavailable(k.to_string()),
            IssueError::Store(s) => CitizenError::from(s),
            e => CitizenError::Internal(e.to_string()),
        }
    }
}

pub(super) fn refuse(field: &str, rule: impl Into<String>) -> CitizenError {
    CitizenError::Refused(FieldError {
        field: field.into(),
        rule: rule.into(),
    })
}

/// A certificate handed to a citizen.
#[derive(Debug, Clone)]
pub struct RemoteCertificate {
    /// Upper-case hex.
    pub serial: String,
    /// The profile it was issued under.
    pub profile: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The same key and profile were certified before; this is that answer.
    pub replayed: bool,
}

/// How a certificate came to be, from its job.
pub fn origin(job: Option<&str>) -> &'static str {
    match job {
        Some(j) if j.starts_with("remote:") => "remote",
        Some(j) if j.starts_with("renewal:") => "renewal",
        Some(j) if j.contains('/') => "card",
        _ => "operator",
    }
}

/// Remote issuance and self-service: issue, renew, list, suspend and
/// revoke. Made once at start-up when `[citizens]` is configured.
pub struct Citizens {
    pub(super) ca: Arc<Ca>,
    pub(super) renewal_challenges: Challenges,
    pub(super) identity: IdentityRules,
    pub(super) config: CitizensConfig,
    /// Checks the ID tokens; the server loads its keys at start-up.
    pub verifier: Verifier,
    pub(super) per_person: RateLimiter,
    pub(super) per_address: RateLimiter,
    pub(super) trust: Trust,
}

impl Citizens {
    /// `challenge_key`: the key every node shares for challenges
    /// ([`muhr_store::Store::login_challenge_key`]); renewal challenges are
    /// MACed with it under their own domain.
    pub fn new(
        ca: Arc<Ca>,
        identity: IdentityRules,
        config: CitizensConfig,
        challenge_key: &[u8],
    ) -> Result<Self, String> {
        for p in &config.profiles {
            if ca.profiles().get(p).is_none() {
                return Err(format!("citizens.profiles: unknown profile {p:?}"));
            }
        }
        let verifier = Verifier::new(config.oidc.clone())?;
        let l = &config.rate_limits;
        Ok(Self {
            per_person: RateLimiter::new(l.person_per_hour, Duration::from_secs(3600)),
            per_address: RateLimiter::new(l.address_per_minute, Duration::from_secs(60)),
            trust: Trust::new(ca.clone()),
            renewal_challenges: Challenges::for_domain(
                challenge_key,
                super::renew::RENEWAL_CHALLENGE_SECONDS,
                muhr_login::challenge::RENEWAL,
            ),
            ca,
            identity,
            config,
            verifier,
        })
    }

    /// The CA it issues with; the routes take its chain and store from it.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The `[citizens]` section it was made with.
    pub fn config(&self) -> &CitizensConfig {
        &self.config
    }

    /// Counts one request from `address` (a rate key, not a raw header);
    /// `TooMany` past `address_per_minute`.
    pub fn limit_address(&self, address: &str) -> Result<(), CitizenError> {
        self.per_address
            .take(address, Instant::now())
            .map_err(CitizenError::TooMany)
    }

    pub(super) fn limit_person(&self, who: &Citizen) -> Result<(), CitizenError> {
        self.per_person
            .take(&who.pinfl, Instant::now())
            .map_err(CitizenError::TooMany)
    }

    /// The audit log's actor for a citizen's acts: `citizen:PINFL`.
    pub fn actor(who: &Citizen) -> String {
        format!("citizen:{}", who.pinfl)
    }

    /// The subject fields the token's identity gives, checked as a card's are.
    pub(super) fn subject_fields(
        &self,
        who: &Citizen,
    ) -> Result<std::collections::BTreeMap<String, String>, CitizenError> {
        let claims = &self.config.oidc.claims;
        let pinfl = self
            .identity
            .pinfl(&format!("token.{}", claims.pinfl), &who.pinfl)
            .map_err(CitizenError::Refused)?;
        if let Some(b) = &who.birth_date {
            let (y, m, d) = pinfl.birth;
            if *b != format!("{y:04}-{m:02}-{d:02}") {
                return Err(refuse(
                    &format!("token.{}", claims.birth_date),
                    format!(
                        "{b} is not the date of birth the PINFL encodes ({y:04}-{m:02}-{d:02})"
                    ),
                ));
            }
        }
        let request = SubjectRequest {
            pinfl: who.pinfl.clone(),
            surname: who.surname.clone(),
            given_name: who.given_name.clone(),
            patronymic: who.patronymic.clone(),
            tin: who.tin.clone(),
            organization: None,
        };
        self.identity.subject_fields(&request).map_err(|e| {
            let claim = match e.field.as_str() {
                "surname" => &claims.surname,
                "given_name" => &claims.given_name,
                "patronymic" => &claims.patronymic,
                "tin" => &claims.tin,
                "pinfl" => &claims.pinfl,
                other => other,
            };
            refuse(&format!("token.{claim}"), e.rule)
        })
    }

    pub(super) async fn refuse_deceased(&self, who: &Citizen) -> Result<(), CitizenError> {
        // The extract's death record or a `person.deceased` event's.
        if !self.ca.store().deaths(&[&who.pinfl]).await?.is_empty() {
            return Err(refuse(
                &format!("token.{}", self.config.oidc.claims.pinfl),
                "the population registry records this person as deceased",
            ));
        }
        Ok(())
    }

    /// Issues a certificate under `profile` for the key in `csr`, to `who`.
    pub async fn issue(
        &self,
        who: &Citizen,
        csr: &str,
        profile: &str,
    ) -> Result<RemoteCertificate, CitizenError> {
        if !self.config.profiles.iter().any(|p| p == profile) {
            return Err(refuse(
                "profile",
                format!("one of {}", self.config.profiles.join(", ")),
            ));
        }
        let (fields, parsed) = self.checked(who, csr.as_bytes(), profile).await?;
        self.one_role_per_key(&who.pinfl, &parsed.public_key, profile)
            .await?;
        let spki = der::Encode::to_der(&parsed.public_key)
            .map_err(|e| CitizenError::Internal(e.to_string()))?;
        let job = format!(
            "remote:{}:{}",
            who.pinfl,
            hex::encode(&Sha256::digest(&spki)[..16])
        );
        // One ID token issues at most one certificate: a stolen or leaked
        // token cannot mint more. Its retries (same key, same profile) are
        // the same issuance and get the same certificate.
        let token = who.token.as_ref().ok_or_else(|| {
            CitizenError::Internal("an issuance without the token it came from".into())
        })?;
        if !self
            .ca
            .store()
            .use_proof(
                &format!("id-token:{}", token.digest),
                &format!("{job}/{profile}"),
                token.expires_at,
            )
            .await?
        {
            return Err(CitizenError::Conflict(
                "this ID token has already been used to issue a certificate: \
                 log in to the identity system again for another"
                    .into(),
            ));
        }
        self.bind_key_purpose(&who.pinfl, &parsed.public_key, profile)
            .await?;
        self.certify(who, parsed, profile, fields, job).await
    }

    /// The identity, the key and the person checked for a new certificate.
    pub(super) async fn checked(
        &self,
        who: &Citizen,
        csr: &[u8],
        profile: &str,
    ) -> Result<
        (
            std::collections::BTreeMap<String, String>,
            muhr_ca::csr::Parsed,
        ),
        CitizenError,
    > {
        let fields = self.subject_fields(who)?;
        let loaded = self
            .ca
            .profiles()
            .get(profile)
            .ok_or_else(|| refuse("profile", "not loaded"))?;
        let parsed = muhr_ca::csr::parse(csr).map_err(|e| refuse("csr", e))?;
        muhr_ca::goodkey::check(&parsed.public_key, &loaded.keys).map_err(|e| refuse("csr", e))?;
        parsed.verify().map_err(|e| refuse("csr", e))?;
        muhr_ca::build::subject_name(loaded, &fields)
            .map_err(|e| refuse(&format!("token.{}", e.field), e.rule))?;
        self.refuse_deceased(who).await?;
        self.limit_person(who)?;
        Ok((fields, parsed))
    }

    pub(super) async fn certify(
        &self,
        who: &Citizen,
        parsed: muhr_ca::csr::Parsed,
        profile: &str,
        fields: std::collections::BTreeMap<String, String>,
        job: String,
    ) -> Result<RemoteCertificate, CitizenError> {
        let actor = Self::actor(who);
        let public_key = parsed.public_key;
        let request = Request {
            profile: profile.to_string(),
            fields,
            public_key: public_key.clone(),
            not_after_limit: None,
            alt_names: Vec::new(),
            actor: actor.clone(),
            once: Some(IssueOnce {
                key: job.clone(),
                role: profile.to_string(),
            }),
        };
        match self.ca.issue(request).await {
            Ok(i) => Ok(RemoteCertificate {
                serial: i.serial,
                profile: i.profile,
                der: i.der,
                replayed: false,
            }),
            Err(IssueError::AlreadyIssued { .. }) => {
                self.again(&job, profile, &actor, &public_key).await
            }
            Err(e) => Err(CitizenError::from(e)),
        }
    }

    /// A key serves one purpose: a key that already holds a certificate of
    /// another profile (an authentication key asking to sign, or the
    /// reverse) is refused, whatever that certificate's state, as the card
    /// path refuses one key in two roles. Keys of the person's certificates
    /// by every path (card, remote, renewal) are compared.
    pub(super) async fn one_role_per_key(
        &self,
        pinfl: &str,
        key: &spki::SubjectPublicKeyInfoOwned,
        profile: &str,
    ) -> Result<(), CitizenError> {
        use der::Decode;
        for (serial, other, signed, bytes) in
            self.ca.store().certificate_bytes_of_person(pinfl).await?
        {
            if other == profile {
                continue;
            }
            let same = if signed {
                x509_cert::Certificate::from_der(&bytes)
                    .map(|c| c.tbs_certificate().subject_public_key_info() == key)
            } else {
                x509_cert::TbsCertificate::from_der(&bytes)
                    .map(|t| t.subject_public_key_info() == key)
            }
            .map_err(|e| CitizenError::Internal(format!("certificate {serial}: {e}")))?;
            if same {
                return Err(refuse(
                    "csr",
                    format!(
                        "this key already holds a {other} certificate (serial {serial}): \
                         each purpose needs its own key"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The scan in [`Self::one_role_per_key`] sees committed certificates;
    /// two requests racing with one key for two profiles are told apart
    /// here, by the database: the key's first profile is recorded once.
    /// Called just before issuance, after every other check (and after the
    /// token or challenge is consumed), so a refused request binds nothing.
    pub(super) async fn bind_key_purpose(
        &self,
        pinfl: &str,
        key: &spki::SubjectPublicKeyInfoOwned,
        profile: &str,
    ) -> Result<(), CitizenError> {
        let spki = der::Encode::to_der(key).map_err(|e| CitizenError::Internal(e.to_string()))?;
        let proof = format!("key:{pinfl}:{}", hex::encode(Sha256::digest(&spki)));
        if !self.ca.store().use_proof(&proof, profile, i64::MAX).await? {
            return Err(refuse(
                "csr",
                "this key is being certified for another purpose: each purpose needs its own key",
            ));
        }
        Ok(())
    }

    /// The certificate an earlier request got for this key and profile.
    pub(super) async fn again(
        &self,
        job: &str,
        profile: &str,
        actor: &str,
        key: &spki::SubjectPublicKeyInfoOwned,
    ) -> Result<RemoteCertificate, CitizenError> {
        let store = self.ca.store();
        let rec = store
            .job_certificates(job)
            .await?
            .into_iter()
            .find(|r| r.intent.once.as_ref().is_some_and(|j| j.role == profile))
            .ok_or_else(|| CitizenError::Internal(format!("{job}: no {profile} certificate")))?;
        let serial = rec.intent.serial.clone();
        let der = match rec.der {
            Some(der) => der,
            // The first request died between intent and signature.
            None => {
                self.ca
                    .finish_intent(rec.intent, actor)
                    .await
                    .map_err(|e| CitizenError::Internal(e.to_string()))?
                    .der
            }
        };
        let certified = <x509_cert::Certificate as der::Decode>::from_der(&der)
            .map_err(|e| CitizenError::Internal(format!("{serial}: {e}")))?;
        if certified.tbs_certificate().subject_public_key_info() != key {
            return Err(CitizenError::Conflict(format!(
                "this was done already, for another key (serial {serial})"
            )));
        }
        let summary = store
            .certificate_summary(&serial)
            .await?
            .ok_or_else(|| CitizenError::Internal(format!("{serial} vanished")))?;
        let now = muhr_store::now_secs();
        if summary.revocation != "good" || summary.not_after <= now {
            return Err(CitizenError::Conflict(format!(
                "this key was certified before (serial {serial}, now {}): make a new key",
                if summary.not_after <= now {
                    "expired"
                } else {
                    summary.revocation.as_str()
                }
            )));
        }
        Ok(RemoteCertificate {
            serial,
            profile: profile.to_string(),
            der,
            replayed: true,
        })
    }

    /// The caller's certificates, newest first; the read is audited.
    pub async fn certificates(
        &self,
        who: &Citizen,
    ) -> Result<Vec<muhr_store::people::CertificateSummary>, CitizenError> {
        let store = self.ca.store();
        store
            .audit(&[&AuditEvent {
                actor: Self::actor(who),
                action: "citizen.certificates.read".into(),
                object: who.pinfl.clone(),
                details: serde_json::json!({}),
            }])
            .await?;
        Ok(store.certificates_of_person(&who.pinfl).await?)
    }

    /// The caller's notices, newest first (at most 200): what they were, or
    /// will be, told about their certificates. Only their own, whatever
    /// they ask: the PINFL comes from the verified token. The read is audited.
    pub async fn notices(
        &self,
        who: &Citizen,
    ) -> Result<Vec<muhr_store::notices::Notice>, CitizenError> {
        let store = self.ca.store();
        store
            .audit(&[&AuditEvent {
                actor: Self::actor(who),
                action: "citizen.notices.read".into(),
                object: who.pinfl.clone(),
                details: serde_json::json!({}),
            }])
            .await?;
        Ok(store.notices_of_person(&who.pinfl, 200).await?)
    }

    /// Suspends or revokes one of the caller's own certificates. Restoring
    /// is an operator's act, done after the person is identified again: a
    /// stolen token must not undo a suspension.
    pub async fn change(
        &self,
        who: &Citizen,
        serial: &str,
        transition: Transition,
    ) -> Result<muhr_store::Status, CitizenError> {
        let serial = serial.to_ascii_uppercase();
        let mine = self
            .ca
            .store()
            .certificate(&serial)
            .await?
            .is_some_and(|r| r.intent.pinfl.as_deref() == Some(who.pinfl.as_str()));
        if !mine {
            return Err(CitizenError::NotFound(format!(
                "you hold no certificate with serial {serial}"
            )));
        }
        self.limit_person(who)?;
        match self
            .ca
            .change_status(&serial, transition, &Self::actor(who))
            .await
        {
            Ok(s) => Ok(s),
            Err(IssueError::Refused(f)) if f.field == "reason" => Err(CitizenError::Refused(f)),
            Err(IssueError::Refused(f)) => Err(CitizenError::Conflict(f.rule)),
            Err(e) => Err(CitizenError::Internal(e.to_string())),
        }
    }

    /// Checks a bearer token now.
    pub async fn authenticate(
        &self,
        token: &str,
    ) -> Result<Citizen, crate::citizen::oidc::TokenError> {
        self.verifier.verify(token, SystemTime::now()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(origin(Some("LINE-01/r1")), "card");
        assert_eq!(origin(Some("remote:31505851234567:ab")), "remote");
        assert_eq!(origin(Some("renewal:0A1B")), "renewal");
        assert_eq!(origin(None), "operator");
    }
}

//! Certificates of other CAs the operator chose to trust for login and
//! signature checks: the country's existing signature CAs, whose citizens
//! should not need a second certificate to log in.
//!
//! Each is configured (`[[login.external_cas]]`) with its CA certificate,
//! the URLs of its OCSP responder and/or CRL, and the subject attributes
//! that carry the identity. Decisions:
//! - the URLs come from the configuration, never from the certificate being
//!   checked: a signer does not get to pick where Muhr connects;
//! - OCSP is asked first, the CRL when OCSP gives no usable answer; when
//!   neither does, the certificate is refused (`status_unavailable`): a
//!   login that cannot be checked does not happen;
//! - answers are reused until their nextUpdate, at most
//!   `status_cache_seconds` (default 60), so a login storm costs the other
//!   CA one question per certificate per minute;
//! - the chain is one level: the configured certificate issued the signer's.
//!   A CA with intermediates is configured once per issuing CA.

pub mod crl;
pub mod ocsp;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use der::{Decode, Encode};
use serde::Deserialize;
use x509_cert::Certificate;

/// Identity fields an external certificate may be mapped to (the names the
/// assertion and the verdict use for Muhr's own certificates).
pub const FIELDS: [&str; 8] = [
    "pinfl",
    "surname",
    "given_name",
    "patronymic",
    "tin",
    "organization.tin",
    "organization.name",
    "organization.title",
];

/// `[[login.external_cas]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalCaConfig {
    /// Shown in verdicts and assertions (`cert_issuer`).
    pub name: String,
    /// PEM file with the CA certificate that issues the signers'.
    pub certificate: PathBuf,
    #[serde(default)]
    pub ocsp_url: Option<String>,
    /// A complete CRL (DER or PEM).
    #[serde(default)]
    pub crl_url: Option<String>,
    /// Subject attribute OID (dotted) → identity field; `pinfl` is required.
    pub identity: BTreeMap<String, String>,
    #[serde(default = "default_cache_seconds")]
    pub status_cache_seconds: u64,
}

fn default_cache_seconds() -> u64 {
    60
}

/// A certificate's status as the other CA states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Good,
    Revoked {
        at: SystemTime,
        /// RFC 5280 CRLReason code.
        reason: Option<u8>,
    },
    /// The responder does not know the certificate.
    Unknown,
}

/// One trusted external CA.
pub struct Anchor {
    pub name: String,
    pub certificate: Certificate,
    identity: Vec<(der::oid::ObjectIdentifier, String)>,
    ocsp_url: Option<String>,
    crl_url: Option<String>,
    cache_for: Duration,
}

impl Anchor {
    fn load(c: &ExternalCaConfig) -> Result<Self, String> {
        let at = |what: &str| format!("login.external_cas[{:?}].{what}", c.name);
        if c.name.trim().is_empty() {
            return Err("login.external_cas: every CA needs a name".into());
        }
        let text = std::fs::read(&c.certificate)
            .map_err(|e| format!("{}: {}: {e}", at("certificate"), c.certificate.display()))?;
        let der = if text.starts_with(b"-----BEGIN") {
            der::pem::decode_vec(&text)
                .map_err(|e| format!("{}: PEM: {e}", at("certificate")))?
                .1
        } else {
            text
        };
        let certificate = Certificate::from_der(&der)
            .map_err(|e| format!("{}: not a certificate: {e}", at("certificate")))?;
        if c.ocsp_url.is_none() && c.crl_url.is_none() {
            return Err(format!(
                "{}: give ocsp_url, crl_url or both (status must be checkable)",
                at("ocsp_url")
            ));
        }
        for (url, what) in [(&c.ocsp_url, "ocsp_url"), (&c.crl_url, "crl_url")] {
            if let Some(u) = url
                && reqwest::Url::parse(u)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .is_none()
            {
                return Err(format!("{}: {u:?} is not an http(s) URL", at(what)));
            }
        }
        let mut identity = Vec::new();
        for (oid, field) in &c.identity {
            let parsed = oid
                .parse()
                .map_err(|_| format!("{}: {oid:?} is not a dotted OID", at("identity")))?;
            if !FIELDS.contains(&field.as_str()) {
                return Err(format!(
                    "{}: {field:?} is not one of {}",
                    at("identity"),
                    FIELDS.join(", ")
                ));
            }
            identity.push((parsed, field.clone()));
        }
        if !identity.iter().any(|(_, f)| f == "pinfl") {
            return Err(format!(
                "{}: map the attribute that carries the PINFL",
                at("identity")
            ));
        }
        if !(1..=3600).contains(&c.status_cache_seconds) {
            return Err(format!("{}: 1 to 3600", at("status_cache_seconds")));
        }
        Ok(Self {
            name: c.name.clone(),
            certificate,
            identity,
            ocsp_url: c.ocsp_url.clone(),
            crl_url: c.crl_url.clone(),
            cache_for: Duration::from_secs(c.status_cache_seconds),
        })
    }

    /// Names this CA as issuer and carries its signature.
    pub fn issued(&self, c: &Certificate) -> bool {
        let ca = self.certificate.tbs_certificate();
        if c.tbs_certificate().issuer() != ca.subject() {
            return false;
        }
        let (Ok(tbs), Some(sig)) = (c.tbs_certificate().to_der(), c.signature().as_bytes()) else {
            return false;
        };
        muhr_hsm::verify::verify_signature(
            ca.subject_public_key_info(),
            c.signature_algorithm(),
            &tbs,
            sig,
        )
        .is_ok()
    }

    pub fn within_validity(&self, c: &Certificate, at: SystemTime) -> bool {
        let v = c.tbs_certificate().validity();
        v.not_before.to_system_time() <= at && at <= v.not_after.to_system_time()
    }

    /// The identity fields, read from the configured subject attributes.
    pub fn identity(&self, c: &Certificate) -> BTreeMap<String, String> {
        self.identity
            .iter()
            .filter_map(|(oid, field)| {
                crate::trust::attribute(c, oid).map(|v| (field.clone(), v.trim().to_string()))
            })
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }
}

/// OCSP answers by (CA, serial): until when each may be reused.
type Answers = HashMap<(usize, Vec<u8>), (SystemTime, Status)>;

/// The configured external CAs and what they last said.
pub struct External {
    anchors: Vec<Anchor>,
    http: reqwest::Client,
    answers: Mutex<Answers>,
    crls: Mutex<HashMap<usize, (SystemTime, Arc<crl::Index>)>>,
}

/// Where a status came from, for the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Ocsp,
    Crl,
    Cache,
}

impl External {
    pub fn none() -> Self {
        Self::from_anchors(Vec::new())
    }

    fn from_anchors(anchors: Vec<Anchor>) -> Self {
        // No idle connections kept: answers are remembered, so questions
        // are rare, and simple responders (OpenSSL's among them) serve one
        // request per connection.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default();
        Self {
            anchors,
            http,
            answers: Mutex::default(),
            crls: Mutex::default(),
        }
    }

    /// Reads every configured CA certificate; any mistake stops the start.
    pub fn load(configs: &[ExternalCaConfig]) -> Result<Self, String> {
        let anchors = configs
            .iter()
            .map(Anchor::load)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_anchors(anchors))
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// The external CA that issued `c`, if any (by name and signature).
    pub fn issuer_of(&self, c: &Certificate) -> Option<(usize, &Anchor)> {
        self.anchors.iter().enumerate().find(|(_, a)| a.issued(c))
    }

    /// The status of `c` (issued by anchor `i`): a remembered answer, OCSP,
    /// or the CRL, in that order.
    pub async fn status(&self, i: usize, c: &Certificate) -> Result<(Status, Source), String> {
        let a = &self.anchors[i];
        let serial = c.tbs_certificate().serial_number().as_bytes().to_vec();
        let now = SystemTime::now();
        let key = (i, serial.clone());
        if let Some((until, s)) = lock(&self.answers).get(&key)
            && now < *until
        {
            return Ok((*s, Source::Cache));
        }
        let mut why = Vec::new();
        if let Some(url) = &a.ocsp_url {
            match self.ask_ocsp(a, url, &serial, now).await {
                Ok(answer) => {
                    let until = answer
                        .fresh_until
                        .map_or(now + a.cache_for, |n| n.min(now + a.cache_for));
                    let mut m = lock(&self.answers);
                    if m.len() > 100_000 {
                        m.clear();
                    }
                    m.insert(key, (until, answer.status));
                    return Ok((answer.status, Source::Ocsp));
                }
                Err(e) => {
                    tracing::warn!(ca = %a.name, error = %e, "external OCSP gave no usable answer");
                    why.push(format!("OCSP: {e}"));
                }
            }
        }
        if let Some(url) = &a.crl_url {
            match self.crl(i, a, url, now).await {
                Ok(index) => return Ok((index.status(&serial), Source::Crl)),
                Err(e) => {
                    tracing::warn!(ca = %a.name, error = %e, "external CRL unusable");
                    why.push(format!("CRL: {e}"));
                }
            }
        }
        Err(why.join("; "))
    }

    async fn ask_ocsp(
        &self,
        a: &Anchor,
        url: &str,
        serial: &[u8],
        now: SystemTime,
    ) -> Result<ocsp::Answer, String> {
        let body = ocsp::request(a, serial)?;
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/ocsp-request")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let bytes = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        ocsp::answer(a, serial, &bytes, now)
    }

    async fn crl(
        &self,
        i: usize,
        a: &Anchor,
        url: &str,
        now: SystemTime,
    ) -> Result<Arc<crl::Index>, String> {
        if let Some((until, index)) = lock(&self.crls).get(&i)
            && now < *until
        {
            return Ok(index.clone());
        }
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let bytes = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        let index = Arc::new(crl::read(a, &bytes, now)?);
        let until = index
            .next_update
            .map_or(now + a.cache_for, |n| n.min(now + a.cache_for));
        lock(&self.crls).insert(i, (until, index.clone()));
        Ok(index)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

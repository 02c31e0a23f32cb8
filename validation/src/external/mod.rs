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
//!   A CA with intermediates is configured once per issuing CA;
//! - an answer or CRL without nextUpdate is believed for
//!   `max_age_without_next_update_seconds` after its thisUpdate, and none
//!   dated more than `SKEW` ahead of our clock;
//! - only the CA's complete CRL is read ([`crl`] refuses scoped, delta and
//!   not-understood critical ones), and its CRL number may not go back: the
//!   highest accepted is remembered per CA, in this process only. A restart
//!   forgets it and the first CRL read afterwards sets it again, so an old
//!   CRL replayed at exactly that moment is bounded only by its own
//!   nextUpdate (or the age bound), as every CRL was before. Keeping it in
//!   the database would close that gap at the cost of a write per CRL read
//!   and a table shared by every RA process; in memory was judged enough;
//! - the other CA's servers are asked over HTTP without following
//!   redirects (a 3xx is a failure: the configured URL is the one trusted,
//!   and a redirect could point Muhr anywhere), with a cap on the body
//!   ([`OCSP_BODY_LIMIT`], [`CRL_BODY_LIMIT`]) enforced while reading, and
//!   one deadline ([`FETCH_TIMEOUT`]) for the whole exchange, body included.

pub mod crl;
pub mod ocsp;
#[cfg(test)]
mod testing;

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
    /// The CA's OCSP responder, asked first (RFC 5019: POST, SHA-1 CertID).
    #[serde(default)]
    pub ocsp_url: Option<String>,
    /// A complete CRL (DER or PEM).
    #[serde(default)]
    pub crl_url: Option<String>,
    /// Subject attribute OID (dotted) → identity field; `pinfl` is required.
    pub identity: BTreeMap<String, String>,
    /// Longest time an OCSP answer or a CRL is reused, even when its
    /// nextUpdate is later (1 to 3600 s, default 60).
    #[serde(default = "default_cache_seconds")]
    pub status_cache_seconds: u64,
    /// How long an OCSP answer or a CRL without nextUpdate is believed
    /// after its thisUpdate (1 to 86400 s). The default, 3600, because such
    /// a statement should be young: RFC 6960 §4.2.2.1 reads a missing
    /// nextUpdate as "newer information is always available" (an answer
    /// made on demand), and RFC 5280 requires nextUpdate in every CRL. An
    /// hour leaves room for responders that pre-produce answers and for
    /// clocks that drift, equals the longest `status_cache_seconds`, and
    /// bounds how long a captured statement can be replayed.
    #[serde(default = "default_max_age_without_next_update")]
    pub max_age_without_next_update_seconds: u64,
}

fn default_cache_seconds() -> u64 {
    60
}

fn default_max_age_without_next_update() -> u64 {
    3600
}

/// How far the other CA's clock may run ahead of ours.
pub(crate) const SKEW: Duration = Duration::from_secs(300);

/// The whole of one exchange with another CA's server (connection,
/// request, headers and body): a server that drips its answer cannot hold
/// a login longer than this.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// An OCSP response about one certificate is a few kilobytes, even with
/// the responder's certificate chain: 64 KiB is generous.
pub const OCSP_BODY_LIMIT: usize = 64 * 1024;

/// A CRL is held whole in memory while it is read, and its index is kept.
/// 32 MiB holds some 700,000 entries, more than a national signature CA's
/// revocations; a CA that outgrows it should be asked by OCSP.
pub const CRL_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// A certificate's status as the other CA states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not revoked: the responder says good, or the CRL does not list it.
    Good,
    /// Revoked, or on hold (reason 6, certificateHold), which
    /// [`crate::trust`] reports as suspended.
    Revoked {
        /// The revocation time the CA states.
        at: SystemTime,
        /// RFC 5280 CRLReason code.
        reason: Option<u8>,
    },
    /// The responder does not know the certificate.
    Unknown,
}

/// One trusted external CA.
pub struct Anchor {
    /// The configured name, shown in verdicts, assertions and problems.
    pub name: String,
    /// The CA certificate that issues the signers' and signs the CRL (and,
    /// unless it delegates, the OCSP answers).
    pub certificate: Certificate,
    identity: Vec<(der::oid::ObjectIdentifier, String)>,
    ocsp_url: Option<String>,
    crl_url: Option<String>,
    cache_for: Duration,
    max_age_without_next_update: Duration,
}

impl Anchor {
    /// The issuer `certificate` of a certificate whose OCSP answer is to be
    /// read ([`ocsp::answer`]): a signer embedding validation data in a
    /// signature (CAdES-LT) checks what it embeds this way. No identity
    /// mapping; answers without nextUpdate count for an hour.
    pub fn issuer(name: &str, certificate: Certificate) -> Self {
        Self {
            name: name.to_string(),
            certificate,
            identity: Vec::new(),
            ocsp_url: None,
            crl_url: None,
            cache_for: Duration::from_secs(60),
            max_age_without_next_update: Duration::from_secs(3600),
        }
    }

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
        // More than a day without nextUpdate is the unbounded replay window
        // this setting exists to close.
        if !(1..=86_400).contains(&c.max_age_without_next_update_seconds) {
            return Err(format!(
                "{}: 1 to 86400",
                at("max_age_without_next_update_seconds")
            ));
        }
        Ok(Self {
            name: c.name.clone(),
            certificate,
            identity,
            ocsp_url: c.ocsp_url.clone(),
            crl_url: c.crl_url.clone(),
            cache_for: Duration::from_secs(c.status_cache_seconds),
            max_age_without_next_update: Duration::from_secs(c.max_age_without_next_update_seconds),
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

    /// Whether `at` lies within `c`'s notBefore..=notAfter (bounds
    /// included). Used for a delegated OCSP responder's certificate.
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
    /// An error when the client could not be built: every fetch then fails
    /// (a default client would follow redirects).
    http: Result<reqwest::Client, String>,
    deadline: Duration,
    answers: Mutex<Answers>,
    crls: Mutex<HashMap<usize, (SystemTime, Arc<crl::Index>)>>,
    /// The highest CRL number accepted per CA (see the module's decisions
    /// on why it lives in memory only).
    crl_numbers: Mutex<HashMap<usize, crl::CrlNumber>>,
}

/// Where a status came from, for the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The CA's OCSP responder, asked now.
    Ocsp,
    /// The CA's CRL, fetched now or still within its reuse time.
    Crl,
    /// An OCSP answer remembered from an earlier question.
    Cache,
}

impl External {
    /// No external CA: only Muhr's own certificates are trusted.
    pub fn none() -> Self {
        Self::from_anchors(Vec::new())
    }

    fn from_anchors(anchors: Vec<Anchor>) -> Self {
        Self::with_deadline(anchors, FETCH_TIMEOUT)
    }

    fn with_deadline(anchors: Vec<Anchor>, deadline: Duration) -> Self {
        // No idle connections kept: answers are remembered, so questions
        // are rare, and simple responders (OpenSSL's among them) serve one
        // request per connection. The overall deadline is `fetch`'s, not
        // the client's, so that one rule covers the body too and gives one
        // message.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(deadline)
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| format!("the HTTP client could not be built: {e}"));
        Self {
            anchors,
            http,
            deadline,
            answers: Mutex::default(),
            crls: Mutex::default(),
            crl_numbers: Mutex::default(),
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

    /// True when no external CA is configured.
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
                    let until = answer.fresh_until.min(now + a.cache_for);
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
        let bytes = self
            .fetch(url, OCSP_BODY_LIMIT, |http| {
                http.post(url)
                    .header("content-type", "application/ocsp-request")
                    .body(body)
            })
            .await?;
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
        let bytes = self
            .fetch(url, CRL_BODY_LIMIT, |http| http.get(url))
            .await?;
        let index = Arc::new(crl::read(a, &bytes, now)?);
        {
            // Checked and raised under one lock, so two fetches racing
            // cannot both pass against the same old highest.
            let mut highest = lock(&self.crl_numbers);
            if let Some(h) = highest.get(&i)
                && index.number < *h
            {
                return Err(format!(
                    "CRL number {} is lower than {h}, already accepted: an older CRL \
                     replayed",
                    index.number
                ));
            }
            highest.insert(i, index.number.clone());
        }
        let until = index.fresh_until.min(now + a.cache_for);
        lock(&self.crls).insert(i, (until, index.clone()));
        Ok(index)
    }

    /// One exchange with another CA's server: no redirect followed, the
    /// body read in chunks and abandoned past `limit` (a Content-Length
    /// only allows refusing early; it is not relied on), all of it within
    /// the deadline.
    async fn fetch(
        &self,
        url: &str,
        limit: usize,
        request: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, String> {
        let http = self.http.as_ref().map_err(Clone::clone)?;
        let exchange = async {
            let mut resp = request(http)
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let status = resp.status();
            if status.is_redirection() {
                return Err(format!(
                    "{url}: HTTP {status}: redirects are not followed (configure the final URL)"
                ));
            }
            if !status.is_success() {
                return Err(format!("{url}: HTTP {status}"));
            }
            let too_big = || format!("{url}: the body exceeds the limit of {limit} bytes");
            if resp.content_length().is_some_and(|n| n > limit as u64) {
                return Err(too_big());
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
                if chunk.len() > limit - body.len() {
                    return Err(too_big());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        tokio::time::timeout(self.deadline, exchange)
            .await
            .map_err(|_| {
                format!(
                    "{url}: no complete answer within {} ms",
                    self.deadline.as_millis()
                )
            })?
    }
}

/// Whether a statement made at `this_update`, valid until `next_update` if
/// given, may be believed `now`; until when it may be used.
///
/// An issuer that omits nextUpdate promises nothing about when it will next
/// speak, so without a bound a statement captured once could be replayed
/// for ever: it is then believed for `max_age` after thisUpdate.
fn current(
    what: &str,
    this_update: SystemTime,
    next_update: Option<SystemTime>,
    max_age: Duration,
    now: SystemTime,
) -> Result<SystemTime, String> {
    if now.checked_add(SKEW).is_some_and(|n| this_update > n) {
        return Err(format!(
            "the {what}'s thisUpdate is in the future (beyond {} s of clock skew)",
            SKEW.as_secs()
        ));
    }
    match next_update {
        Some(n) if n < now => Err(format!("the {what} is stale (nextUpdate has passed)")),
        Some(n) => Ok(n),
        None => {
            let until = this_update.checked_add(max_age).unwrap_or(this_update);
            if until < now {
                Err(format!(
                    "the {what} has no nextUpdate and its thisUpdate is more than {} s old",
                    max_age.as_secs()
                ))
            } else {
                Ok(until)
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;

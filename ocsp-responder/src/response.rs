//! Answering: cache, status look-up, signing, stale-if-error.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use der::Encode;
use der::asn1::{AnyRef, BitString, GeneralizedTime, Null, OctetString};
use muhr_pkix::ocsp::{
    CertStatus, ID_PKIX_OCSP_NONCE, OcspResponse, OcspResponseStatus, ResponseData, RevokedInfo,
    SingleResponse, Version,
};
use x509_cert::ext::Extension;

use crate::request::{Refusal, parse};
use crate::{Cached, Responder, Signer};

/// What goes back over HTTP: the DER body and, for a cacheable response, the
/// cache entry that carries its validity and validators.
pub struct Answer {
    pub der: axum::body::Bytes,
    pub(crate) cache: Option<Arc<Cached>>,
}

impl Answer {
    fn error(status: OcspResponseStatus) -> Self {
        Self {
            der: OcspResponse::status_der(status).into(),
            cache: None,
        }
    }

    fn cached(c: &Arc<Cached>) -> Self {
        Self {
            der: c.der.clone(),
            cache: Some(c.clone()),
        }
    }
}

fn time(unix: i64) -> Result<GeneralizedTime, der::Error> {
    GeneralizedTime::from_unix_duration(Duration::from_secs(unix.max(0) as u64))
}

/// Builds and signs a BasicOCSPResponse (blocking: the key store may be an HSM).
fn sign(
    signer: &Signer,
    queries: &[crate::Query],
    statuses: &[Option<muhr_store::Status>],
    nonce: Option<&[u8]>,
    now: i64,
    validity: i64,
) -> Result<Vec<u8>, String> {
    let e = |e: der::Error| e.to_string();
    let mut responses = Vec::with_capacity(queries.len());
    for (q, s) in queries.iter().zip(statuses) {
        let cert_status = match s {
            None => CertStatus::Unknown(Null),
            Some(s) if s.revocation == "good" => CertStatus::Good(Null),
            Some(s) => CertStatus::Revoked(RevokedInfo {
                revocation_time: time(s.revoked_at.unwrap_or(0)).map_err(e)?,
                revocation_reason: s.reason.and_then(muhr_pkix::reason::from_code),
            }),
        };
        responses.push(SingleResponse {
            cert_id: q.cert_id.clone(),
            cert_status,
            this_update: time(now).map_err(e)?,
            next_update: Some(time(now + validity).map_err(e)?),
            single_extensions: None,
        });
    }
    let response_extensions = match nonce {
        Some(n) => Some(vec![Extension {
            extn_id: ID_PKIX_OCSP_NONCE,
            critical: false,
            extn_value: OctetString::new(OctetString::new(n).map_err(e)?.to_der().map_err(e)?)
                .map_err(e)?,
        }]),
        None => None,
    };
    let data = ResponseData {
        version: Version::V1,
        responder_id: signer.responder_id.clone(),
        produced_at: time(now).map_err(e)?,
        responses,
        response_extensions,
    };
    let tbs = data.to_der().map_err(e)?;
    let sig = signer.key.sign(&tbs).map_err(|e| e.to_string())?;
    let basic = BasicResponseEncoded {
        tbs_response_data: AnyRef::try_from(tbs.as_slice()).map_err(e)?,
        signature_algorithm: signer.algorithm.clone(),
        signature: BitString::from_bytes(&sig).map_err(e)?,
        certs: Some(vec![
            AnyRef::try_from(signer.cert_der.as_slice()).map_err(e)?,
        ]),
    };
    OcspResponse::basic(basic.to_der().map_err(e)?)
        .map_err(e)?
        .to_der()
        .map_err(e)
}

/// BasicOCSPResponse (RFC 6960 4.2.1) holding the signed ResponseData as the
/// exact bytes that were signed and the signer's certificate as encoded once
/// at load, so neither is encoded again for every response.
/// (`muhr_pkix::ocsp::BasicOcspResponse` with those two fields kept as bytes.)
#[derive(der::Sequence)]
struct BasicResponseEncoded<'a> {
    tbs_response_data: AnyRef<'a>,
    signature_algorithm: spki::AlgorithmIdentifierOwned,
    signature: BitString,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    certs: Option<Vec<AnyRef<'a>>>,
}

impl Responder {
    /// Answers one OCSP request (DER). Never fails: every problem becomes an
    /// OCSP error status.
    pub async fn respond(&self, body: &[u8]) -> Answer {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let now = muhr_store::now_secs();
        if let Some(c) = self.by_request_bytes(body, now) {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Answer::cached(&c);
        }
        let parsed = match parse(body, self.config.max_requests, &self.issuer) {
            Ok(p) => p,
            Err(Refusal::Malformed) => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                return Answer::error(OcspResponseStatus::MalformedRequest);
            }
            Err(Refusal::Unauthorized) => {
                self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                return Answer::error(OcspResponseStatus::Unauthorized);
            }
        };
        let key = (parsed.nonce.is_none() && parsed.queries.len() == 1)
            .then(|| (parsed.queries[0].alg, parsed.queries[0].serial.clone()));
        let cached = key.as_ref().and_then(|k| {
            let (c, old) = self
                .cache
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(k)?;
            if old {
                self.keep(k, &c);
            }
            Some(c)
        });
        if let Some(c) = &cached
            && self.fresh(c, now)
        {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            self.remember_request_bytes(
                body,
                key.clone().expect("cached implies a key"),
                c.clone(),
            );
            return Answer::cached(c);
        }
        let stale_or_try_later = |why: &str| {
            tracing::warn!(reason = why, "OCSP: cannot answer fresh");
            match &cached {
                Some(c) if now < c.next_update => {
                    self.counters.stale_served.fetch_add(1, Ordering::Relaxed);
                    Answer::cached(c)
                }
                _ => {
                    self.counters.try_later.fetch_add(1, Ordering::Relaxed);
                    Answer::error(OcspResponseStatus::TryLater)
                }
            }
        };
        let generation = self.generation.load(Ordering::SeqCst);
        // With a signed response in hand that is still before its nextUpdate,
        // the database gets a short time to confirm the status: a stale
        // change feed may mean the database is down, or only busy, and a
        // revocation since the response was signed must still be seen when
        // it can be. Past that time the response is served (stale-if-error)
        // instead of making the client wait for a database that is gone.
        let servable = cached.as_ref().is_some_and(|c| now < c.next_update);
        if servable && now < self.db_suspect_until.load(Ordering::Relaxed) {
            return stale_or_try_later("the database failed a moment ago");
        }
        let suspect = || {
            self.db_suspect_until
                .store(now + DB_SUSPECT_SECS, Ordering::Relaxed)
        };
        let lookup = async {
            let mut statuses = Vec::with_capacity(parsed.queries.len());
            for q in &parsed.queries {
                statuses.push(self.status(&q.serial, now, generation).await?);
            }
            Ok::<_, muhr_store::StoreError>(statuses)
        };
        let looked_up = if servable {
            match tokio::time::timeout(STATUS_WAIT_WITH_CACHE, lookup).await {
                Ok(Err(e)) => {
                    suspect();
                    return stale_or_try_later(&e.to_string());
                }
                Ok(r) => r,
                Err(_) => {
                    suspect();
                    return stale_or_try_later("the database did not answer in time");
                }
            }
        } else {
            lookup.await
        };
        let statuses = match looked_up {
            Ok(s) => s,
            Err(e) => return stale_or_try_later(&e.to_string()),
        };
        let Some(signer) = self.signer() else {
            return stale_or_try_later("no delegated OCSP signer is loaded");
        };
        let validity = self.config.validity.as_secs() as i64;
        let nonce = parsed.nonce.clone();
        let queries = parsed.queries;
        // In place rather than on the blocking pool: a software signature takes
        // microseconds, and the hop would cost as much; block_in_place still
        // moves this worker's other tasks away while an HSM is busy.
        let sign_now = || {
            sign(
                &signer,
                &queries,
                &statuses,
                nonce.as_deref(),
                now,
                validity,
            )
        };
        let signed = if signer.key.is_quick() {
            sign_now()
        } else {
            tokio::task::block_in_place(sign_now)
        };
        match signed {
            Ok(der) => {
                self.counters.signed.fetch_add(1, Ordering::Relaxed);
                match key {
                    Some(k) => {
                        let c = Arc::new(crate::http::cached(der, now, now + validity));
                        // Checked under the lock the change feed holds while it
                        // bumps the generation, so a response that may predate
                        // a change is never cached after the change was seen.
                        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
                        if self.generation.load(Ordering::SeqCst) != generation {
                            return Answer {
                                der: c.der.clone(),
                                cache: None,
                            };
                        }
                        cache.insert(k.clone(), c.clone(), response_weight(&k, &c));
                        drop(cache);
                        self.remember_request_bytes(body, k, c.clone());
                        Answer::cached(&c)
                    }
                    None => Answer {
                        der: der.into(),
                        cache: None,
                    },
                }
            }
            Err(e) => stale_or_try_later(&format!("signing failed: {e}")),
        }
    }
}

/// Bytes a cache entry holds besides its key and body: map slots, the Arc,
/// the HTTP header values.
const ENTRY_OVERHEAD: usize = 160;

fn response_weight(k: &crate::CacheKey, c: &Cached) -> usize {
    k.1.len() + c.der.len() + ENTRY_OVERHEAD
}

impl Responder {
    fn fresh(&self, c: &Cached, now: i64) -> bool {
        now < c.this_update + self.config.refresh.as_secs() as i64 && now < c.next_update
    }

    /// Cacheable requests from one client library are byte-identical, so the
    /// exact request bytes find the response without parsing. The entry counts
    /// only while the per-serial cache still holds the very same response, so
    /// invalidation by the change feed applies to it too.
    fn by_request_bytes(&self, body: &[u8], now: i64) -> Option<Arc<Cached>> {
        let ((key, c), old_bytes) = self
            .by_bytes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(body)?;
        let (current, old) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)?;
        if !(Arc::ptr_eq(&current, &c) && self.fresh(&c, now)) {
            return None;
        }
        if old {
            self.keep(&key, &c);
        }
        if old_bytes {
            self.remember_request_bytes(body, key, c.clone());
        }
        Some(c)
    }

    /// Moves a response found in the old generation back to the young one,
    /// unless the change feed replaced or dropped it meanwhile.
    fn keep(&self, key: &crate::CacheKey, c: &Arc<Cached>) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if let Some((current, true)) = cache.get(key)
            && Arc::ptr_eq(&current, c)
        {
            cache.insert(key.clone(), c.clone(), response_weight(key, c));
        }
    }

    fn remember_request_bytes(&self, body: &[u8], key: crate::CacheKey, c: Arc<Cached>) {
        let weight = body.len() + key.1.len() + ENTRY_OVERHEAD;
        self.by_bytes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(body.to_vec(), (key, c), weight);
    }
}

/// The status cache is trusted only while the change feed was read this recently.
const FEED_FRESH_SECS: i64 = 2;

/// How long a status look-up may take when a signed response that is still
/// valid could be served instead.
const STATUS_WAIT_WITH_CACHE: std::time::Duration = std::time::Duration::from_millis(300);

/// After a status look-up failed, signed responses are served without trying
/// the database again for this long.
const DB_SUSPECT_SECS: i64 = 2;

impl Responder {
    /// A certificate's status: from memory while the change feed is being
    /// followed (every change drops the serial within `FEED_POLL`), else from
    /// the database.
    async fn status(
        &self,
        serial: &[u8],
        now: i64,
        generation: u64,
    ) -> Result<Option<muhr_store::Status>, muhr_store::StoreError> {
        let feed_fresh = now - self.feed_ok_at.load(Ordering::Relaxed) <= FEED_FRESH_SECS;
        if feed_fresh
            && let Some((s, _)) = self
                .statuses
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(serial)
        {
            return Ok(s);
        }
        let s = self
            .store
            .status_under(&self.issuer.name, &hex::encode_upper(serial))
            .await?;
        if feed_fresh {
            let mut map = self.statuses.write().unwrap_or_else(|p| p.into_inner());
            if self.generation.load(Ordering::SeqCst) != generation {
                return Ok(s);
            }
            // A Status holds two short strings besides the serial.
            map.insert(
                serial.to_vec(),
                s.clone(),
                2 * serial.len() + ENTRY_OVERHEAD,
            );
        }
        Ok(s)
    }
}

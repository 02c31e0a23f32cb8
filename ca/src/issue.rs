//! Issuance: each request prepared (profile, subject, lint), its intent
//! committed, signed, and its certificate committed with its audit entry
//! before it is returned; and recovery of intents a crash left pending.

use super::*;
use crate::sign::{finish_sign, sign_all, spawn_sign};

/// A certificate fully decided, waiting for the key.
struct Prepared {
    intent: Intent,
    profile: String,
    signer: Arc<dyn KeySigner>,
    issuer_spki: SubjectPublicKeyInfoOwned,
    actor: String,
}

pub(crate) fn issue_event(actor: &str, intent: &Intent, der: &[u8]) -> AuditEvent {
    use sha2::Digest;
    AuditEvent {
        actor: actor.to_string(),
        action: "certificate.issue".into(),
        object: intent.serial.clone(),
        details: serde_json::json!({
            "issuer": intent.issuer,
            "profile": intent.profile,
            "subject": intent.subject,
            "not_before": intent.not_before,
            "not_after": intent.not_after,
            "sha256": hex::encode(sha2::Sha256::digest(der)),
        }),
    }
}

impl Ca {
    fn prepare_request(&self, req: Request) -> Result<Prepared, IssueError> {
        let profile = self.profiles.get(&req.profile).ok_or_else(|| {
            let known: Vec<&str> = self.profiles.names().collect();
            refused(
                "profile",
                format!(
                    "unknown profile {:?} (known: {})",
                    req.profile,
                    known.join(", ")
                ),
            )
        })?;
        if profile.kind == Kind::Ca {
            return Err(refused(
                "profile",
                format!(
                    "{} certificates are made only by the key ceremony",
                    profile.name
                ),
            ));
        }
        let issuer = self.issuing.view()?;
        let pinfl = req.fields.get("pinfl").cloned();
        let p = prepare(
            profile,
            &req.fields,
            req.public_key,
            Some(&issuer),
            None,
            &self.policy,
            req.not_after_limit,
            self.policy.crl_shards,
            &req.alt_names,
        )?;
        Ok(Prepared {
            intent: Intent {
                serial: muhr_pkix::serial::to_hex(&p.serial),
                issuer: ISSUING.to_string(),
                profile: profile.name.clone(),
                subject: p.subject,
                pinfl,
                not_before: muhr_store::unix_secs(p.not_before),
                not_after: muhr_store::unix_secs(p.not_after),
                tbs: p.tbs,
                crl_shard: p.crl_shard.map(i64::from),
                once: req.once,
            },
            profile: profile.name.clone(),
            signer: self
                .issuing
                .signer
                .clone()
                .expect("view() checked the signer"),
            issuer_spki: issuer.spki.clone(),
            actor: req.actor,
        })
    }

    /// Issues one certificate. See the module documentation for the steps.
    pub async fn issue(&self, req: Request) -> Result<Issued, IssueError> {
        self.issue_many(vec![req])
            .await
            .pop()
            .expect("one result per request")
    }

    /// Issues several certificates with one commit for their intents and one for
    /// the results. Each request succeeds or fails on its own; a database failure
    /// fails them all (and nothing is handed out).
    pub async fn issue_many(&self, reqs: Vec<Request>) -> Vec<Result<Issued, IssueError>> {
        self.issue_many_recording(reqs, &recording::Plain).await
    }

    /// [`Ca::issue_many`], with the caller's records joining the two commits
    /// (see [`recording`]).
    pub async fn issue_many_recording(
        &self,
        reqs: Vec<Request>,
        recording: &impl Recording,
    ) -> Vec<Result<Issued, IssueError>> {
        let started = Instant::now();
        let mut results: Vec<Option<Result<Issued, IssueError>>> = Vec::with_capacity(reqs.len());
        let mut prepared = Vec::new();
        for (i, req) in reqs.into_iter().enumerate() {
            match self.prepare_request(req) {
                Ok(p) => {
                    prepared.push((i, p));
                    results.push(None);
                }
                Err(e) => {
                    if let IssueError::Refused(f) = &e {
                        self.metrics.refused(&f.field);
                    }
                    results.push(Some(Err(e)));
                }
            }
        }
        let fail_all = |results: &mut Vec<Option<Result<Issued, IssueError>>>,
                        prepared: &[(usize, Prepared)],
                        msg: String| {
            for (i, _) in prepared {
                results[*i] = Some(Err(IssueError::Internal(msg.clone())));
            }
        };
        if !prepared.is_empty() {
            let intents: Vec<Intent> = prepared.iter().map(|(_, p)| p.intent.clone()).collect();
            let recorded = match recording.record(&self.store, &intents).await {
                Ok(r) => r,
                Err(e) => {
                    fail_all(&mut results, &prepared, format!("recording intent: {e}"));
                    return results.into_iter().map(|r| r.expect("filled")).collect();
                }
            };
            // A job's role recorded by someone else: this request signs nothing.
            let mut kept = Vec::with_capacity(prepared.len());
            for ((i, p), recorded) in prepared.into_iter().zip(recorded) {
                if recorded {
                    kept.push((i, p));
                } else {
                    let once = p.intent.once.clone().unwrap_or(muhr_store::IssueOnce {
                        key: String::new(),
                        role: String::new(),
                    });
                    results[i] = Some(Err(IssueError::AlreadyIssued {
                        key: once.key,
                        role: once.role,
                    }));
                }
            }
            let prepared = kept;
            let items = prepared
                .iter()
                .map(|(_, p)| {
                    (
                        p.signer.clone(),
                        p.issuer_spki.clone(),
                        p.intent.tbs.clone(),
                    )
                })
                .collect();
            let signed = sign_all(items, self.metrics.clone()).await;
            let mut done = Vec::new();
            let mut commit = Vec::new();
            let mut signed_from: Vec<&Intent> = Vec::new();
            for ((i, p), s) in prepared.iter().zip(signed) {
                match s {
                    Ok(der) => {
                        signed_from.push(&p.intent);
                        commit.push((
                            p.intent.serial.clone(),
                            der.clone(),
                            issue_event(&p.actor, &p.intent, &der),
                        ));
                        done.push((
                            *i,
                            Issued {
                                serial: p.intent.serial.clone(),
                                profile: p.profile.clone(),
                                der,
                            },
                        ));
                    }
                    Err(e) => results[*i] = Some(Err(e)),
                }
            }
            let outcome = recording.complete(&self.store, &commit, &signed_from).await;
            if let Err(muhr_store::StoreError::Conflict(why)) = &outcome {
                // Another request finished one of these very intents first
                // (a retry that found it pending and signed it, as
                // `finish_intent` does): what it stored is what was handed
                // out. Nothing of this commit was stored.
                for (i, issued) in done {
                    results[i] = Some(self.stored_instead(issued, why).await);
                }
            } else if let Err(e) = outcome {
                for (i, _) in &done {
                    results[*i] = Some(Err(IssueError::Internal(format!(
                        "storing certificate: {e}"
                    ))));
                }
            } else {
                let per = started.elapsed() / (done.len().max(1) as u32);
                for (i, issued) in done {
                    self.metrics.issued(&issued.profile);
                    self.metrics.issuance.observe(per);
                    results[i] = Some(Ok(issued));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every request has a result"))
            .collect()
    }

    /// The certificate another request stored for `issued`'s serial (the
    /// one handed out, signed from the same recorded bytes).
    async fn stored_instead(&self, issued: Issued, why: &str) -> Result<Issued, IssueError> {
        match self
            .store
            .certificate(&issued.serial)
            .await?
            .and_then(|r| r.der)
        {
            Some(der) => Ok(Issued { der, ..issued }),
            None => Err(IssueError::Internal(format!("storing certificate: {why}"))),
        }
    }

    /// Finishes intents left pending by a crash: the recorded bytes are signed
    /// again, so the certificate is exactly the one that was being issued.
    ///
    /// Only intents at least `min_age` old are taken (see
    /// [`Store::pending_intents`]); `muhr` passes 30 seconds.
    pub async fn recover(&self, min_age: Duration) -> Result<usize, IssueError> {
        let pending = self.store.pending_intents(min_age.as_secs() as i64).await?;
        let mut n = 0;
        for intent in pending {
            if intent.issuer != ISSUING {
                tracing::warn!(serial = %intent.serial, issuer = %intent.issuer, "pending intent of a CA whose key is not loaded; left pending");
                continue;
            }
            let serial = intent.serial.clone();
            self.finish_intent(intent, "recovery").await?;
            tracing::info!(%serial, "finished a certificate left pending by an interrupted issuance");
            n += 1;
        }
        Ok(n)
    }

    /// Signs a recorded intent exactly as recorded and stores the certificate.
    /// Used by recovery and by an RA retry that finds its job's intent pending.
    /// If another process finished it meanwhile, returns that certificate.
    pub async fn finish_intent(&self, intent: Intent, actor: &str) -> Result<Issued, IssueError> {
        let profile = self.profiles.get(&intent.profile).ok_or_else(|| {
            IssueError::Internal(format!(
                "pending certificate {} names unknown profile {}",
                intent.serial, intent.profile
            ))
        })?;
        let findings = lint::lint(&intent.tbs, profile, Some(&self.issuing.view()?));
        if !findings.is_empty() {
            return Err(IssueError::Internal(format!(
                "pending certificate {} no longer passes lint: {}",
                intent.serial,
                findings.join("; ")
            )));
        }
        let signer = self.issuing.signer.clone().expect("issuing key loaded");
        let spki = self
            .issuing
            .certificate
            .tbs_certificate()
            .subject_public_key_info()
            .clone();
        let der = finish_sign(spawn_sign(signer, spki, intent.tbs.clone(), None)).await?;
        let event = issue_event(actor, &intent, &der);
        match self
            .store
            .complete_issuance(&[(intent.serial.clone(), der.clone(), event)])
            .await
        {
            Ok(()) => {
                self.metrics.issued(&intent.profile);
                Ok(Issued {
                    serial: intent.serial,
                    profile: intent.profile,
                    der,
                })
            }
            Err(muhr_store::StoreError::Conflict(_)) => {
                let stored = self
                    .store
                    .certificate(&intent.serial)
                    .await?
                    .and_then(|r| r.der)
                    .ok_or_else(|| {
                        IssueError::Internal(format!(
                            "certificate {} is neither pending nor issued",
                            intent.serial
                        ))
                    })?;
                Ok(Issued {
                    serial: intent.serial,
                    profile: intent.profile,
                    der: stored,
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

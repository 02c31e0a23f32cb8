//! Renewal on proof of the current key: a one-time challenge, then a CMC
//! request (RFC 5272 PKIData) signed by the certificate being renewed, at
//! most [`MAX_RENEWALS`] times in a row before the person must
//! authenticate with the identity system again.

use crate::citizen::oidc::Citizen;
use muhr_login::challenge::ChallengeError;
use muhr_validation::trust::Purpose;
use sha2::{Digest, Sha256};
use std::time::SystemTime;

use super::service::*;

/// How long a renewal challenge may be used.
pub(super) const RENEWAL_CHALLENGE_SECONDS: u64 = 300;

/// Renewals in a row the law allows before the person must authenticate
/// with the identity system again.
pub const MAX_RENEWALS: u32 = 2;

/// A renewal's outcome.
#[derive(Debug, Clone)]
pub struct Renewed {
    /// The new certificate; `replayed` when a retry of this renewal got it
    /// back.
    pub certificate: RemoteCertificate,
    /// The certificate that signed the request.
    pub renewed: String,
    /// Renewals in the chain, this one included.
    pub renewals: u32,
}

impl Citizens {
    /// A one-time challenge for renewing certificate `serial`: the renewal
    /// request must echo it. It names the certificate and expires; it is
    /// used up by the renewal it serves.
    pub async fn renewal_challenge(&self, serial: &str) -> Result<(String, i64), CitizenError> {
        let serial = muhr_pkix::serial::normalize_hex(serial).map_err(|e| refuse("serial", e))?;
        let s = self
            .ca
            .store()
            .certificate_summary(&serial)
            .await?
            .ok_or_else(|| CitizenError::NotFound(format!("no certificate {serial}")))?;
        const CLIENT_AUTH: der::oid::ObjectIdentifier =
            der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
        let for_authentication = self
            .ca
            .profiles()
            .get(&s.profile)
            .is_some_and(|p| p.extended_key_usage.contains(&CLIENT_AUTH));
        if !self.config.profiles.contains(&s.profile) || !for_authentication {
            return Err(refuse(
                "serial",
                format!(
                    "a {} certificate is not renewed here: only authentication certificates \
                     renew without a new login",
                    s.profile
                ),
            ));
        }
        self.renewal_challenges
            .issue(&format!("renew-{serial}"), muhr_store::now_secs())
            .map_err(CitizenError::Internal)
    }

    /// Renewal without a new login at the identity system. `signature` is a
    /// CMS SignedData of content type id-cct-PKIData ([`crate::citizen::cmc`])
    /// carrying the CSR of a new key and a renewal challenge for the
    /// certificate to renew, signed with that certificate's own key; it
    /// must be an authentication certificate (clientAuth) of this CA, valid
    /// and good now. A signature made for any other purpose (a document, a
    /// login, a bare CSR as data) never renews. The new certificate has the
    /// renewed one's profile and person; the old one stays valid (the
    /// citizen may revoke it). The law allows two renewals in a row; a
    /// third needs the person to authenticate with the identity system.
    pub async fn renew(&self, signature: &[u8]) -> Result<Renewed, CitizenError> {
        self.renew_checked(signature, None).await
    }

    /// As [`Citizens::renew`], for a caller already known to be `pinfl`
    /// (the portal's session): a request signed with another person's
    /// certificate is refused before its challenge is used.
    pub async fn renew_for(&self, pinfl: &str, signature: &[u8]) -> Result<Renewed, CitizenError> {
        self.renew_checked(signature, Some(pinfl)).await
    }

    async fn renew_checked(
        &self,
        signature: &[u8],
        expected_pinfl: Option<&str>,
    ) -> Result<Renewed, CitizenError> {
        let v = muhr_validation::cms::verify(signature, None)
            .map_err(|e| refuse("signature", format!("{}: {}", e.code, e.detail)))?;
        if !v.attached {
            return Err(refuse(
                "signature",
                "the signature must carry the renewal request (attached)",
            ));
        }
        if v.content_type != crate::citizen::cmc::ID_CCT_PKI_DATA {
            return Err(refuse(
                "signature",
                format!(
                    "content type {} is not a renewal request: renewal takes a CMC PKIData \
                     ({}) signed with the authentication certificate; a signature over \
                     anything else, a bare CSR included, never renews",
                    v.content_type,
                    crate::citizen::cmc::ID_CCT_PKI_DATA
                ),
            ));
        }
        let now = SystemTime::now();
        let signer = self
            .trust
            .assess(&v.signer, &v.signer_der, Purpose::Login, now)
            .await
            .map_err(CitizenError::Internal)?;
        if let Some(p) = signer.problems.first() {
            return Err(refuse("signature", format!("{}: {}", p.code, p.detail)));
        }
        if let Some(expected) = expected_pinfl
            && signer.identity.get("pinfl").map(String::as_str) != Some(expected)
        {
            return Err(CitizenError::NotFound(format!(
                "you hold no certificate with serial {}",
                signer.serial
            )));
        }
        let request = crate::citizen::cmc::parse(&v.content).map_err(|e| refuse("signature", e))?;
        let challenge = std::str::from_utf8(&request.recipient_nonce)
            .map_err(|_| refuse("challenge", "not a renewal challenge of this service"))?;
        let opened = self
            .renewal_challenges
            .open(challenge, muhr_store::now_secs())
            .map_err(|e| match e {
                ChallengeError::Unknown => {
                    refuse("challenge", "not a renewal challenge of this service")
                }
                ChallengeError::Expired => refuse(
                    "challenge",
                    "the renewal challenge has expired: ask for a new one",
                ),
            })?;
        let serial = opened
            .rp
            .strip_prefix("renew-")
            .ok_or_else(|| refuse("challenge", "not a renewal challenge"))?
            .to_string();
        // A certificate is renewed only by its own key: a challenge for
        // another certificate, even the same person's, is refused. Otherwise
        // one authentication certificate (got with one stolen ID token)
        // would renew every certificate of its holder, signing ones
        // included, for keys of the thief's choosing.
        if serial != signer.serial {
            return Err(CitizenError::Forbidden(format!(
                "certificate {serial} is renewed only by a request signed with its own key \
                 (the signer is {}); a signing certificate is renewed by logging in to the \
                 identity system",
                signer.serial
            )));
        }
        let a = signer;
        let pinfl = a.identity.get("pinfl").cloned().unwrap_or_default();
        if pinfl.is_empty() {
            return Err(refuse(
                "signature",
                "the certificate names no person (PINFL)",
            ));
        }
        let profile = a.profile.clone().unwrap_or_default();
        if !self.config.profiles.contains(&profile) {
            return Err(refuse(
                "challenge",
                format!(
                    "a {profile} certificate is not renewed here (only {})",
                    self.config.profiles.join(", ")
                ),
            ));
        }
        let renewals = self.renewals_before(a.job.as_deref()).await?;
        if renewals >= MAX_RENEWALS {
            return Err(CitizenError::Forbidden(format!(
                "certificate {} is already the result of {renewals} renewals in a row: \
                 authenticate with the identity system and request a new certificate",
                a.serial
            )));
        }
        let id = |k: &str| a.identity.get(k).cloned();
        let who = Citizen {
            subject: format!("certificate:{}", a.serial),
            pinfl,
            surname: id("surname").unwrap_or_default(),
            given_name: id("given_name").unwrap_or_default(),
            patronymic: id("patronymic"),
            tin: id("tin"),
            birth_date: None,
            assurance: "certificate".into(),
            token: None,
        };
        // A death recorded since the renewed certificate was issued (its
        // revocation may still be on its way to the responders).
        self.refuse_deceased(&who).await?;
        let (fields, parsed) = self.checked(&who, &request.csr, &profile).await?;
        self.one_role_per_key(&who.pinfl, &parsed.public_key, &profile)
            .await?;
        let job = format!("renewal:{}", a.serial);
        // The challenge is used once: by this renewal (and its retries,
        // same key), never by another.
        let key = der::Encode::to_der(&parsed.public_key)
            .map_err(|e| CitizenError::Internal(e.to_string()))?;
        let binding = format!("{job}:{}", hex::encode(Sha256::digest(&key)));
        if !self
            .ca
            .store()
            .use_proof(&format!("renewal:{challenge}"), &binding, opened.expires_at)
            .await?
        {
            return Err(CitizenError::Conflict(
                "this renewal challenge was used already: ask for a new one".into(),
            ));
        }
        self.bind_key_purpose(&who.pinfl, &parsed.public_key, &profile)
            .await?;
        let certificate = self.certify(&who, parsed, &profile, fields, job).await?;
        Ok(Renewed {
            certificate,
            renewed: a.serial,
            renewals: renewals + 1,
        })
    }

    /// How many renewals led to the certificate whose job is `job`.
    async fn renewals_before(&self, mut job: Option<&str>) -> Result<u32, CitizenError> {
        let mut n = 0;
        let mut owned;
        while let Some(prev) = job.and_then(|j| j.strip_prefix("renewal:")) {
            n += 1;
            if n > MAX_RENEWALS {
                break;
            }
            owned = self
                .ca
                .store()
                .certificate_summary(prev)
                .await?
                .and_then(|s| s.job);
            job = owned.as_deref();
        }
        Ok(n)
    }
}

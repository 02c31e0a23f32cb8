//! Login challenges that cost no database write to hand out.
//!
//! A challenge is `RP.EXPIRES.NONCE.TAG`: the relying party it was issued
//! to, when it expires (Unix seconds), 16 random bytes, and an HMAC-SHA256
//! over the three, truncated to 16 bytes, under a key every node shares
//! (kept in the database, made once). Issuing one is a MAC; opening one is a
//! MAC and a comparison. Single use is enforced where it has to be, when a
//! login succeeds: the challenge becomes the primary key of its login
//! record, so a second use is a key conflict, on any node.
//!
//! The relying party and the expiry are readable by anyone holding the
//! challenge; that is by design (a relying party can hand it to a browser
//! for a TLS login and know what it says). Only the key's holders can make
//! one, and the nonce keeps each unique.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// Longest text accepted as a challenge, before any parsing.
pub const MAX_LEN: usize = 160;
const TAG_LEN: usize = 16;
const NONCE_LEN: usize = 16;
/// Each use of the shared key MACs under its own domain, so a challenge
/// made for one purpose is never accepted for another (a login challenge
/// never renews a certificate).
pub const LOGIN: &[u8] = b"muhr login challenge v1\0";
/// The domain of the RA's renewal challenges (issued to `renew-SERIAL`).
pub const RENEWAL: &[u8] = b"muhr renewal challenge v1\0";

/// A challenge whose tag checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Whom it was issued to: a relying party's id for a login.
    pub rp: String,
    /// When it stops being accepted, Unix seconds (that second included).
    pub expires_at: i64,
}

/// Why a challenge given back is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeError {
    /// Not a challenge this system made (wrong shape or tag).
    Unknown,
    /// Made here, but past its expiry.
    Expired,
}

/// Issues and opens the challenges of one purpose under the key every node
/// shares. Holds no state besides the key: any node opens any node's.
pub struct Challenges {
    key: hmac::Key,
    lifetime_secs: i64,
    domain: &'static [u8],
}

impl Challenges {
    /// Login challenges; `secret`: the shared key (32 bytes or more).
    pub fn new(secret: &[u8], lifetime_secs: u64) -> Self {
        Self::for_domain(secret, lifetime_secs, LOGIN)
    }

    /// Challenges of one purpose (`LOGIN`, `RENEWAL`).
    pub fn for_domain(secret: &[u8], lifetime_secs: u64, domain: &'static [u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            lifetime_secs: lifetime_secs as i64,
            domain,
        }
    }

    fn tag(&self, rp: &str, expires_at: i64, nonce: &str) -> [u8; TAG_LEN] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(self.domain);
        // Lengths first, so no two (rp, expiry, nonce) triples share bytes.
        for part in [
            rp.as_bytes(),
            expires_at.to_string().as_bytes(),
            nonce.as_bytes(),
        ] {
            ctx.update(&(part.len() as u32).to_be_bytes());
            ctx.update(part);
        }
        let full = ctx.sign();
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(&full.as_ref()[..TAG_LEN]);
        t
    }

    /// A fresh challenge for `rp`, and when it expires.
    pub fn issue(&self, rp: &str, now: i64) -> Result<(String, i64), String> {
        if rp.is_empty() || rp.contains('.') {
            return Err(format!(
                "relying party id {rp:?} cannot be put in a challenge"
            ));
        }
        let mut n = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut n).map_err(|_| "random generator failed".to_string())?;
        let nonce = B64.encode(n);
        let expires_at = now + self.lifetime_secs;
        let tag = B64.encode(self.tag(rp, expires_at, &nonce));
        Ok((format!("{rp}.{expires_at}.{nonce}.{tag}"), expires_at))
    }

    /// Checks the tag, then the expiry, of a challenge given back.
    pub fn open(&self, text: &str, now: i64) -> Result<Opened, ChallengeError> {
        if text.len() > MAX_LEN {
            return Err(ChallengeError::Unknown);
        }
        let mut parts = text.split('.');
        let (Some(rp), Some(exp), Some(nonce), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ChallengeError::Unknown);
        };
        let expires_at: i64 = exp.parse().map_err(|_| ChallengeError::Unknown)?;
        // The canonical decimal only: "+5" or "05" would MAC differently.
        if expires_at.to_string() != exp {
            return Err(ChallengeError::Unknown);
        }
        let given = B64.decode(tag).map_err(|_| ChallengeError::Unknown)?;
        let want = self.tag(rp, expires_at, nonce);
        aws_lc_rs::constant_time::verify_slices_are_equal(&given, &want)
            .map_err(|_| ChallengeError::Unknown)?;
        if now > expires_at {
            return Err(ChallengeError::Expired);
        }
        Ok(Opened {
            rp: rp.to_string(),
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_challenges_open_until_they_expire() {
        let c = Challenges::new(&[7u8; 32], 120);
        let (text, exp) = c.issue("rp-abc_DEF-12", 1_000).unwrap();
        assert_eq!(exp, 1_120);
        let o = c.open(&text, 1_100).unwrap();
        assert_eq!(o.rp, "rp-abc_DEF-12");
        assert_eq!(o.expires_at, 1_120);
        assert_eq!(c.open(&text, 1_120).unwrap().rp, "rp-abc_DEF-12");
        assert_eq!(c.open(&text, 1_121), Err(ChallengeError::Expired));
        let (other, _) = c.issue("rp-abc_DEF-12", 1_000).unwrap();
        assert_ne!(text, other, "every challenge is unique");
    }

    #[test]
    fn altered_or_foreign_challenges_are_unknown() {
        let c = Challenges::new(&[7u8; 32], 120);
        let (text, _) = c.issue("rp-one", 1_000).unwrap();
        let parts: Vec<&str> = text.split('.').collect();
        for forged in [
            format!("rp-two.{}.{}.{}", parts[1], parts[2], parts[3]),
            format!("rp-one.99999.{}.{}", parts[2], parts[3]),
            format!("rp-one.+{}.{}.{}", parts[1], parts[2], parts[3]),
            format!("rp-one.{}.{}A.{}", parts[1], parts[2], parts[3]),
            format!("{text}.x"),
            "rp-one".to_string(),
            String::new(),
            "a".repeat(MAX_LEN + 1),
        ] {
            assert_eq!(
                c.open(&forged, 1_000),
                Err(ChallengeError::Unknown),
                "{forged}"
            );
        }
        let other_key = Challenges::new(&[8u8; 32], 120);
        assert_eq!(other_key.open(&text, 1_000), Err(ChallengeError::Unknown));
        // The same key, another purpose: a login challenge never renews.
        let renewal = Challenges::for_domain(&[7u8; 32], 120, RENEWAL);
        assert_eq!(renewal.open(&text, 1_000), Err(ChallengeError::Unknown));
        assert!(c.issue("rp.dotted", 1_000).is_err());
    }
}

//! Identity assertions: the JWT (ES256) Muhr hands a relying party after a
//! login by certificate, signed by a P-256 key in the key store, whose public
//! half is published at `/.well-known/jwks.json`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use muhr_hsm::{KeySigner, KeySpec};
use serde_json::{Value, json};

/// r ‖ s, each left-padded to 32 bytes, as JWS wants (RFC 7518 3.4).
fn fixed_p256(der_sig: &[u8]) -> Result<Vec<u8>, String> {
    muhr_pkix::jws::es256_from_der(der_sig)
}

/// Issues identity assertions with the assertion key and publishes its
/// public half. One per process, shared by every login.
pub struct Assertions {
    signer: Arc<dyn KeySigner>,
    kid: String,
    jwk: Value,
    issuer: String,
    lifetime_secs: u64,
}

impl Assertions {
    /// Fails unless `signer` is an ECDSA P-256 key. `issuer` becomes every
    /// assertion's `iss`; `lifetime_secs` is the gap from `iat` to `exp`.
    pub fn new(
        signer: Arc<dyn KeySigner>,
        issuer: String,
        lifetime_secs: u64,
    ) -> Result<Self, String> {
        if signer.spec() != KeySpec::EcdsaP256 {
            return Err(format!(
                "the assertion key {:?} must be ecdsa-p256 (ES256)",
                signer.label()
            ));
        }
        let point = signer
            .public_key()
            .subject_public_key
            .as_bytes()
            .ok_or("the assertion key's public point is not an uncompressed P-256 point")?;
        let (kid, jwk) = muhr_pkix::jws::p256_jwk(point)
            .map_err(|e| format!("the assertion key's public point: {e}"))?;
        Ok(Self {
            signer,
            kid,
            jwk,
            issuer,
            lifetime_secs,
        })
    }

    /// The JWK Set served at `/.well-known/jwks.json`: the one assertion key,
    /// `use` sig, `alg` ES256.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// The key's `kid`, its RFC 7638 thumbprint: it changes only when the key does.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The `iss` every assertion carries.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A signed assertion for `audience` about `subject` with `claims`.
    pub fn issue(
        &self,
        audience: &str,
        subject: &str,
        claims: BTreeMap<String, Value>,
        now: SystemTime,
    ) -> Result<String, String> {
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| "random generator failed")?;
        let mut body = serde_json::Map::new();
        for (k, v) in claims {
            body.insert(k, v);
        }
        for (k, v) in [
            ("iss", json!(self.issuer)),
            ("aud", json!(audience)),
            ("sub", json!(subject)),
            ("iat", json!(iat)),
            ("nbf", json!(iat)),
            ("exp", json!(iat + self.lifetime_secs)),
            ("jti", json!(URL_SAFE_NO_PAD.encode(jti))),
        ] {
            body.insert(k.into(), v);
        }
        muhr_pkix::jws::sign_es256(&self.kid, &Value::Object(body), |input| {
            let der_sig = self.signer.sign(input).map_err(|e| e.to_string())?;
            fixed_p256(&der_sig)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_pads_short_components() {
        // SEQUENCE { INTEGER 1, INTEGER 0x00FF (leading zero kept by DER) }
        let der_sig = [0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0xff];
        let f = fixed_p256(&der_sig).unwrap();
        assert_eq!(f.len(), 64);
        assert_eq!(f[31], 1);
        assert_eq!(f[63], 0xff);
        assert!(f[..31].iter().all(|b| *b == 0) && f[32..63].iter().all(|b| *b == 0));
    }
}

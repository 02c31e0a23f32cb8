//! JSON Web Signatures in compact form (RFC 7515), as ID tokens and Muhr's
//! identity assertions use them — only the two algorithms the identity
//! system's provider signs with, RS256 and ES256.
//!
//! Written here rather than taken from a JWT library because the rules that
//! matter are ours to enforce whatever a library allows: `none` and the HMAC
//! algorithms are refused (an HMAC "verified" with a public key is the classic
//! algorithm-confusion attack), a key is used only with the algorithm its type
//! and its JWK `alg` allow, and unknown critical header parameters are refused.
//! Muhr's identity assertions are signed by a key in the HSM, which no JWT
//! library reaches.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// Longest token accepted: real ID tokens are a few kilobytes.
pub const MAX_TOKEN: usize = 16 * 1024;

/// The signature algorithms accepted. `none`, the HMAC algorithms and every
/// other name are refused when a header is parsed, so no value of this type
/// can stand for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3), keys of 2048 to 8192 bits.
    Rs256,
    /// ECDSA on P-256 with SHA-256 (RFC 7518 §3.4), signature as raw r ‖ s.
    Es256,
}

impl Alg {
    /// The JOSE `alg` name, as in headers and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    /// The algorithms accepted; anything else is refused by name.
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "RS256" => Ok(Alg::Rs256),
            "ES256" => Ok(Alg::Es256),
            "none" => Err("alg \"none\" (an unsigned token) is refused".into()),
            a if a.starts_with("HS") => Err(format!(
                "alg {a:?} (a shared-secret MAC) is refused: tokens must be signed with the provider's key"
            )),
            a => Err(format!("alg {a:?} is not accepted (RS256, ES256)")),
        }
    }
}

/// A public key from a JWK Set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// An RSA key, usable only with RS256.
    Rsa {
        /// The modulus, big-endian unsigned.
        n: Vec<u8>,
        /// The public exponent, big-endian unsigned.
        e: Vec<u8>,
    },
    /// The uncompressed point, 0x04 ‖ x ‖ y.
    P256(Vec<u8>),
}

/// A signature key from a JWK Set, with what limits its use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    /// The key ID tokens name it by; None when the set gave none, and then
    /// only a token without `kid` can pick it.
    pub kid: Option<String>,
    /// The JWK's own `alg`, when it names one: the key is used with nothing else.
    pub alg: Option<Alg>,
    /// The key material; its type alone already fixes the algorithm.
    pub key: PublicKey,
}

impl Jwk {
    fn alg_fits(&self, alg: Alg) -> bool {
        let by_type = matches!(
            (&self.key, alg),
            (PublicKey::Rsa { .. }, Alg::Rs256) | (PublicKey::P256(_), Alg::Es256)
        );
        by_type && self.alg.is_none_or(|a| a == alg)
    }
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

fn b64(field: &str, s: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| format!("{field} is not base64url without padding"))
}

/// The signature keys of a JWK Set. Encryption keys and key types this module
/// does not verify with are left out; a set with no usable key is an error.
pub fn parse_jwks(json: &[u8]) -> Result<Vec<Jwk>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(json).map_err(|e| format!("not a JWK Set: {e}"))?;
    let mut keys = Vec::new();
    for (i, v) in set.keys.into_iter().enumerate() {
        let raw: RawJwk = serde_json::from_value(v).map_err(|e| format!("keys[{i}]: {e}"))?;
        if raw.use_.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        let alg = match raw.alg.as_deref() {
            None => None,
            Some(a) => match Alg::parse(a) {
                Ok(a) => Some(a),
                Err(_) => continue,
            },
        };
        let key = match raw.kty.as_str() {
            "RSA" => {
                let (Some(n), Some(e)) = (&raw.n, &raw.e) else {
                    return Err(format!("keys[{i}]: an RSA key needs n and e"));
                };
                PublicKey::Rsa {
                    n: b64(&format!("keys[{i}].n"), n)?,
                    e: b64(&format!("keys[{i}].e"), e)?,
                }
            }
            "EC" if raw.crv.as_deref() == Some("P-256") => {
                let (Some(x), Some(y)) = (&raw.x, &raw.y) else {
                    return Err(format!("keys[{i}]: an EC key needs x and y"));
                };
                let (x, y) = (
                    b64(&format!("keys[{i}].x"), x)?,
                    b64(&format!("keys[{i}].y"), y)?,
                );
                if x.len() != 32 || y.len() != 32 {
                    return Err(format!("keys[{i}]: P-256 coordinates are 32 bytes"));
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                PublicKey::P256(point)
            }
            _ => continue,
        };
        keys.push(Jwk {
            kid: raw.kid,
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err("the JWK Set holds no RS256 or ES256 signature key".into());
    }
    Ok(keys)
}

/// A token split and decoded, its signature not yet checked.
#[derive(Debug)]
pub struct Unverified {
    /// The header's `alg`, already one of the accepted algorithms.
    pub alg: Alg,
    /// The header's `kid`; None when the token names no key.
    pub kid: Option<String>,
    signing_input: String,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

impl Unverified {
    /// Splits a compact JWS; refuses what no key could make acceptable.
    pub fn parse(token: &str) -> Result<Self, String> {
        if token.len() > MAX_TOKEN {
            return Err(format!("longer than {MAX_TOKEN} bytes"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a compact JWS (three base64url parts joined by '.')".into());
        };
        let header: Header = serde_json::from_slice(&b64("the header", h)?)
            .map_err(|e| format!("the header is not a JOSE header: {e}"))?;
        let alg = Alg::parse(&header.alg)?;
        if header.crit.is_some() {
            return Err("critical header extensions (crit) are not understood".into());
        }
        Ok(Self {
            alg,
            kid: header.kid,
            signing_input: format!("{h}.{p}"),
            payload: b64("the payload", p)?,
            signature: b64("the signature", s)?,
        })
    }

    /// The payload, once `key` verified the signature.
    /// `header.payload` as it arrived: what the signature covers, so a
    /// digest of it names one token however its signature is re-encoded.
    pub fn signing_input(&self) -> &str {
        &self.signing_input
    }

    /// Checks the signature with `key` and gives the decoded payload. Fails
    /// when the key's type or its JWK `alg` does not allow the token's
    /// algorithm, or when the signature does not verify. The claims inside
    /// (`exp`, `aud`, ...) are the caller's to check.
    pub fn verify(self, key: &Jwk) -> Result<Vec<u8>, String> {
        if !key.alg_fits(self.alg) {
            return Err(format!(
                "the key {} is not for {}",
                key.kid.as_deref().unwrap_or("(no kid)"),
                self.alg.name()
            ));
        }
        let msg = self.signing_input.as_bytes();
        let ok = match &key.key {
            PublicKey::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, msg, &self.signature)
                .is_ok(),
            PublicKey::P256(point) => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(msg, &self.signature)
                .is_ok(),
        };
        if !ok {
            return Err("the signature does not verify".into());
        }
        Ok(self.payload)
    }

    /// The key this token names among `keys`: by `kid`, or the only key
    /// that fits the algorithm when the token names none.
    pub fn pick<'k>(&self, keys: &'k [Jwk]) -> Option<&'k Jwk> {
        match &self.kid {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid.as_str())),
            None => {
                let mut fitting = keys.iter().filter(|k| k.alg_fits(self.alg));
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Some(k),
                    _ => None,
                }
            }
        }
    }
}

/// The key store's ECDSA P-256 signature, DER `Ecdsa-Sig-Value` (RFC 3279).
#[derive(der::Sequence)]
struct EcdsaSig<'a> {
    r: der::asn1::UintRef<'a>,
    s: der::asn1::UintRef<'a>,
}

/// A DER ECDSA P-256 signature (what key stores make) as JOSE wants it:
/// r ‖ s, each left-padded to 32 bytes (RFC 7518 §3.4).
pub fn es256_from_der(der_sig: &[u8]) -> Result<Vec<u8>, String> {
    use der::Decode;
    let sig = EcdsaSig::from_der(der_sig).map_err(|e| format!("ECDSA signature: {e}"))?;
    let mut out = vec![0u8; 64];
    for (i, n) in [sig.r.as_bytes(), sig.s.as_bytes()].into_iter().enumerate() {
        if n.len() > 32 {
            return Err("ECDSA signature component longer than 32 bytes".into());
        }
        out[i * 32 + 32 - n.len()..(i + 1) * 32].copy_from_slice(n);
    }
    Ok(out)
}

/// The public JWK (`kty` EC, `crv` P-256, `alg` ES256, `use` sig) of an
/// uncompressed P-256 point (0x04 ‖ x ‖ y), and its `kid`: the RFC 7638
/// thumbprint, which changes only when the key does.
pub fn p256_jwk(point: &[u8]) -> Result<(String, serde_json::Value), String> {
    if point.len() != 65 || point[0] != 4 {
        return Err("not an uncompressed P-256 point".into());
    }
    let (x, y) = (
        URL_SAFE_NO_PAD.encode(&point[1..33]),
        URL_SAFE_NO_PAD.encode(&point[33..]),
    );
    // RFC 7638: the required members, in lexical order, no spaces.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        canonical.as_bytes(),
    ));
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": x, "y": y,
        "kid": kid, "alg": "ES256", "use": "sig",
    });
    Ok((kid, jwk))
}

/// A compact ES256 JWS over `claims`, the raw r ‖ s signature made by `sign`
/// (which sees the signing input).
pub fn sign_es256(
    kid: &str,
    claims: &serde_json::Value,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<String, String> {
    let header = serde_json::json!({ "alg": "ES256", "typ": "JWT", "kid": kid });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = sign(input.as_bytes())?;
    if sig.len() != 64 {
        return Err(format!("an ES256 signature is 64 bytes, not {}", sig.len()));
    }
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    use super::*;

    fn es256_key() -> (EcdsaKeyPair, Jwk) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let kp =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let jwk = Jwk {
            kid: Some("k1".into()),
            alg: None,
            key: PublicKey::P256(kp.public_key().as_ref().to_vec()),
        };
        (kp, jwk)
    }

    fn token(kp: &EcdsaKeyPair, claims: serde_json::Value) -> String {
        sign_es256("k1", &claims, |m| {
            Ok(kp.sign(&SystemRandom::new(), m).unwrap().as_ref().to_vec())
        })
        .unwrap()
    }

    #[test]
    fn es256_round_trip_and_tampering() {
        let (kp, jwk) = es256_key();
        let t = token(&kp, serde_json::json!({"sub": "a"}));
        let u = Unverified::parse(&t).unwrap();
        assert_eq!(u.pick(std::slice::from_ref(&jwk)), Some(&jwk));
        assert_eq!(u.verify(&jwk).unwrap(), br#"{"sub":"a"}"#);

        let mut parts: Vec<&str> = t.split('.').collect();
        let other = URL_SAFE_NO_PAD.encode(r#"{"sub":"b"}"#);
        parts[1] = &other;
        let tampered = parts.join(".");
        let e = Unverified::parse(&tampered)
            .unwrap()
            .verify(&jwk)
            .unwrap_err();
        assert!(e.contains("does not verify"), "{e}");

        let (_, stranger) = es256_key();
        assert!(Unverified::parse(&t).unwrap().verify(&stranger).is_err());
    }

    #[test]
    fn none_hmac_and_crit_are_refused() {
        let body = URL_SAFE_NO_PAD.encode(r#"{"sub":"a"}"#);
        for (header, want) in [
            (r#"{"alg":"none"}"#, "none"),
            (r#"{"alg":"HS256","kid":"k1"}"#, "shared-secret"),
            (r#"{"alg":"PS512"}"#, "not accepted"),
            (r#"{"alg":"ES256","crit":["exp"]}"#, "crit"),
        ] {
            let t = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(header));
            let e = Unverified::parse(&t).unwrap_err();
            assert!(e.contains(want), "{header}: {e}");
        }
        assert!(Unverified::parse("a.b").is_err());
        assert!(Unverified::parse(&"a".repeat(MAX_TOKEN + 1)).is_err());
    }

    #[test]
    fn a_key_serves_only_its_algorithm() {
        let (kp, mut jwk) = es256_key();
        let t = token(&kp, serde_json::json!({}));
        jwk.alg = Some(Alg::Rs256);
        assert!(Unverified::parse(&t).unwrap().verify(&jwk).is_err());
    }

    #[test]
    fn jwks_parsing() {
        let (_, jwk) = es256_key();
        let PublicKey::P256(p) = &jwk.key else {
            unreachable!()
        };
        let set = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
             "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])},
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "r1", "alg": "RS256", "n": "AQAB", "e": "AQAB"},
        ]});
        let keys = parse_jwks(set.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], jwk);
        assert_eq!(keys[1].alg, Some(Alg::Rs256));
        assert!(parse_jwks(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).is_err());
        assert!(parse_jwks(b"[]").is_err());
    }
}

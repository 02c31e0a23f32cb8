//! The webhook's signature: over `TIMESTAMP "." BODY` (the decimal Unix
//! seconds of `X-Muhr-Timestamp`, a dot, the exact body bytes), so a
//! receiver that checks the timestamp's age also refuses a replayed
//! message, and the body cannot be changed or moved to another time.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use muhr_hsm::{KeySigner, KeySpec};
use zeroize::Zeroizing;

/// Shortest HMAC key accepted: as long as the hash, as RFC 2104 advises.
const MIN_HMAC_KEY: usize = 32;

/// How notices are signed. Its `Debug` never shows the HMAC key.
#[derive(Clone)]
pub enum Signer {
    /// HMAC-SHA256 under a shared secret (`X-Muhr-Signature: hmac-sha256=HEX`).
    Hmac {
        /// The secret, wiped when dropped.
        key: Arc<Zeroizing<Vec<u8>>>,
        /// Sent as `X-Muhr-Key-Id`.
        key_id: String,
    },
    /// ES256 by a P-256 key in the key store (`X-Muhr-Signature:
    /// es256=BASE64URL` of r ‖ s).
    Es256 {
        /// The key; it never leaves the key store.
        key: Arc<dyn KeySigner>,
        /// Sent as `X-Muhr-Key-Id`.
        key_id: String,
        /// The public half as a JWK, for the receiver.
        jwk: serde_json::Value,
    },
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signer::Hmac { key_id, .. } => write!(f, "Signer::Hmac({key_id})"),
            Signer::Es256 { key_id, .. } => write!(f, "Signer::Es256({key_id})"),
        }
    }
}

/// HMAC-SHA256 of `message` under `key`, lower-case hex: the value after
/// `hmac-sha256=` (exposed so tests and tools compute it the receiver's way).
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    hex::encode(aws_lc_rs::hmac::sign(&k, message).as_ref())
}

impl Signer {
    /// The HMAC key in `path`: refused when others can read the file (mode
    /// bits for group or others) or when it is shorter than 32 bytes. A
    /// trailing newline is not part of the key. Messages name the file,
    /// never its content.
    pub fn hmac_from_file(path: &Path, key_id: Option<&str>) -> Result<Self, String> {
        let shown = path.display();
        let md =
            std::fs::metadata(path).map_err(|e| format!("notices.hmac_key_file {shown}: {e}"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = md.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "refused: notices.hmac_key_file {shown} is readable by others (mode {mode:o}) \
                     and holds a secret. Close it with: chmod go-rwx {shown}"
                ));
            }
        }
        if !md.is_file() {
            return Err(format!("notices.hmac_key_file {shown}: not a file"));
        }
        let mut key = Zeroizing::new(
            std::fs::read(path).map_err(|e| format!("notices.hmac_key_file {shown}: {e}"))?,
        );
        while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            key.pop();
        }
        if key.len() < MIN_HMAC_KEY {
            return Err(format!(
                "notices.hmac_key_file {shown}: the key must be at least {MIN_HMAC_KEY} bytes \
                 (e.g. 64 hex digits from `openssl rand -hex 32`)"
            ));
        }
        Ok(Signer::Hmac {
            key: Arc::new(key),
            key_id: key_id.unwrap_or("hmac-1").to_string(),
        })
    }

    /// ES256 with `key`, which must be ECDSA P-256. `key_id` defaults to
    /// the key's RFC 7638 thumbprint.
    pub fn es256(key: Arc<dyn KeySigner>, key_id: Option<&str>) -> Result<Self, String> {
        if key.spec() != KeySpec::EcdsaP256 {
            return Err(format!(
                "notices.es256_key {:?} must be an ecdsa-p256 key",
                key.label()
            ));
        }
        let point = key
            .public_key()
            .subject_public_key
            .as_bytes()
            .ok_or("notices.es256_key: the public key is not a whole number of bytes")?;
        let (thumbprint, mut jwk) =
            muhr_pkix::jws::p256_jwk(point).map_err(|e| format!("notices.es256_key: {e}"))?;
        let key_id = key_id.map(str::to_string).unwrap_or(thumbprint);
        jwk["kid"] = serde_json::Value::String(key_id.clone());
        Ok(Signer::Es256 { key, key_id, jwk })
    }

    /// Sent as `X-Muhr-Key-Id`.
    pub fn key_id(&self) -> &str {
        match self {
            Signer::Hmac { key_id, .. } | Signer::Es256 { key_id, .. } => key_id,
        }
    }

    /// The public key as a JWK for ES256; `None` for HMAC (a shared secret
    /// has no public half).
    pub fn public_jwk(&self) -> Option<&serde_json::Value> {
        match self {
            Signer::Es256 { jwk, .. } => Some(jwk),
            Signer::Hmac { .. } => None,
        }
    }

    /// The `X-Muhr-Signature` value for `body` sent at `timestamp` (Unix
    /// seconds). Fails only when the key store does. The key store is asked
    /// on a blocking thread: an HSM that stalls holds that thread, never the
    /// runtime serving OCSP and the RA.
    pub async fn sign(&self, timestamp: i64, body: &[u8]) -> Result<String, String> {
        let mut input = Vec::with_capacity(body.len() + 24);
        input.extend_from_slice(timestamp.to_string().as_bytes());
        input.push(b'.');
        input.extend_from_slice(body);
        match self {
            Signer::Hmac { key, .. } => Ok(format!("hmac-sha256={}", hmac_sha256_hex(key, &input))),
            Signer::Es256 { key, .. } => {
                let key = key.clone();
                let der = tokio::task::spawn_blocking(move || key.sign(&input))
                    .await
                    .map_err(|e| format!("key store: {e}"))?
                    .map_err(|e| format!("key store: {e}"))?;
                let raw = muhr_pkix::jws::es256_from_der(&der)?;
                Ok(format!("es256={}", URL_SAFE_NO_PAD.encode(raw)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", "what do ya want for nothing?".
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_key_file_others_can_read_or_a_short_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("muhr-notices-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("hmac.key");
        std::fs::write(&f, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Signer::hmac_from_file(&f, None).unwrap_err();
        assert!(
            e.contains("readable by others") && !e.contains("0123"),
            "{e}"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Signer::hmac_from_file(&f, None).unwrap();
        assert_eq!(s.key_id(), "hmac-1");
        assert!(!format!("{s:?}").contains("0123"));
        assert_eq!(
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(s.sign(1_700_000_000, b"{}"))
                .unwrap(),
            format!(
                "hmac-sha256={}",
                hmac_sha256_hex(b"0123456789abcdef0123456789abcdef", b"1700000000.{}")
            )
        );
        std::fs::write(&f, "short\n").unwrap();
        assert!(
            Signer::hmac_from_file(&f, None)
                .unwrap_err()
                .contains("at least 32")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

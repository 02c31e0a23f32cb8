//! Every private key in Muhr is used through this crate, and only through it.
//!
//! One interface ([`KeyStore`] to create or find keys, [`KeySigner`] to use them)
//! has two backends: [`pkcs11`] for an HSM (SoftHSM2 in tests) and [`software`]
//! for the embedded development default. Callers never see key material, only a
//! label, a public key and signatures ready to be placed in X.509 structures.
//!
//! It must never let key material out: no export, no raw private key in
//! memory outside the software backend's encrypted files, no PIN in an error.

#![forbid(unsafe_code)]

pub mod algorithm;
pub mod pkcs11;
pub mod software;
pub mod verify;

use std::sync::Arc;

pub use algorithm::KeySpec;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

/// Errors never carry a PIN or passphrase, whatever went wrong.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("key store configuration: {0}")]
    Config(String),
    #[error("no key labelled {0:?} in the key store")]
    NotFound(String),
    #[error("a key labelled {0:?} already exists in the key store")]
    Exists(String),
    #[error("key {label:?} is not a {expected} key")]
    Mismatch { label: String, expected: String },
    #[error("PKCS#11 {op} failed: {rv}")]
    Pkcs11 { op: &'static str, rv: String },
    /// The key store cannot be used now (token removed, device error); it
    /// is being reopened in the background. Callers answer 503, not 500.
    #[error("key store unavailable: {0}")]
    Unavailable(String),
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, HsmError>;

impl HsmError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, HsmError::Unavailable(_))
    }
}

/// A private key that can sign, and knows how its signatures are described in X.509.
pub trait KeySigner: Send + Sync {
    fn label(&self) -> &str;
    fn spec(&self) -> KeySpec;
    fn public_key(&self) -> &SubjectPublicKeyInfoOwned;
    /// The AlgorithmIdentifier to put next to this key's signatures.
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        self.spec().signature_algorithm()
    }
    /// Signs `message` (hashing it as the scheme requires) and returns the signature
    /// in its X.509 encoding: a DER `Ecdsa-Sig-Value` for ECDSA, the raw block for RSA.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;
    /// How many signatures this key makes at once at best: a caller with
    /// many to make splits them into this many sequential lanes rather than
    /// one task each, which would only queue for the same sessions.
    fn parallelism(&self) -> usize {
        1
    }
}

/// Where keys live. Generation happens inside the store; keys never leave it.
pub trait KeyStore: Send + Sync {
    /// Creates a new key pair; refuses a label that is already taken.
    fn generate(&self, label: &str, spec: KeySpec) -> Result<Arc<dyn KeySigner>>;
    /// Finds an existing key and checks that it is of the expected kind.
    fn open(&self, label: &str, spec: KeySpec) -> Result<Arc<dyn KeySigner>>;
    /// Answers only when the store can be used to sign right now.
    fn health(&self) -> Result<()>;
    /// A short human description for logs and `/healthz` ("pkcs11 token muhr").
    fn describe(&self) -> String;
    /// False while the store is known to be down and reconnecting; cheap, for
    /// gauges. `health` is the check that asks the device.
    fn is_up(&self) -> bool {
        true
    }
}

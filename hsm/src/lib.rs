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
#![deny(missing_docs)]

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
    /// Something an operator must fix: an unknown key kind, a bad label, a
    /// module that does not load, a missing token, a refused PIN. Trying
    /// again does not help.
    #[error("key store configuration: {0}")]
    Config(String),
    /// No key has this label.
    #[error("no key labelled {0:?} in the key store")]
    NotFound(String),
    /// [`KeyStore::generate`] was asked for a label that is taken; the
    /// existing key is left alone.
    #[error("a key labelled {0:?} already exists in the key store")]
    Exists(String),
    /// The key exists, but its type, curve or size is not the one asked for.
    #[error("key {label:?} is not a {expected} key")]
    Mismatch {
        /// The key's label.
        label: String,
        /// The kind asked for, written as in configuration (`rsa-3072`).
        expected: String,
    },
    /// A PKCS#11 call failed for a reason that is not a device fault (those
    /// give [`HsmError::Unavailable`]).
    #[error("PKCS#11 {op} failed: {rv}")]
    Pkcs11 {
        /// The PKCS#11 function (`C_Sign`) or step (`read public key`) that failed.
        op: &'static str,
        /// The module's return value, as cryptoki prints it.
        rv: String,
    },
    /// The key store cannot be used now (token removed, device error); it
    /// is being reopened in the background. Callers answer 503, not 500.
    #[error("key store unavailable: {0}")]
    Unavailable(String),
    /// Generating, signing, encoding or decrypting failed: a wrong passphrase
    /// for a software key, a malformed public key, a signature of the wrong size.
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),
    /// A software key store file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// The result of every key store operation.
pub type Result<T> = std::result::Result<T, HsmError>;

impl HsmError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, HsmError::Unavailable(_))
    }
}

/// A private key that can sign, and knows how its signatures are described in X.509.
pub trait KeySigner: Send + Sync {
    /// The label the key was generated or opened under.
    fn label(&self) -> &str;
    /// The key's kind, which fixes its signature scheme.
    fn spec(&self) -> KeySpec;
    /// The public half, ready for a certificate or CSR.
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
    /// True when a signature is computation of tens of microseconds that
    /// never waits on a device: an async caller then signs in place, as
    /// telling the runtime it blocks (`block_in_place`) costs about as much
    /// as the signature. False for a device or a slow scheme (RSA).
    fn is_quick(&self) -> bool {
        false
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

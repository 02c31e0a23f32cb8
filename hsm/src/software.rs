//! Development key store: each key is an encrypted PKCS#8 file (PBES2, scrypt,
//! AES-256-CBC) in a directory, used through aws-lc-rs.
//!
//! It exists so that `muhr serve` works on a laptop with nothing installed. The
//! passphrase comes from the configuration (a file or an environment variable);
//! the decrypted key lives only in this process's memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{self, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair, RsaEncoding};
use der::Decode;
use pkcs8::{EncryptedPrivateKeyInfoRef, PrivateKeyInfoRef};
use spki::SubjectPublicKeyInfoOwned;
use zeroize::Zeroizing;

use crate::{HsmError, KeySigner, KeySpec, KeyStore, Result};

/// Keys as passphrase-encrypted PKCS#8 files, `<label>.p8.pem`, in one
/// directory. For development: the keys are only as safe as the passphrase.
pub struct SoftwareStore {
    dir: PathBuf,
    passphrase: Zeroizing<String>,
}

impl SoftwareStore {
    /// Uses `dir`, creating it if needed. The passphrase encrypts every key and
    /// must be at least 12 characters; a wrong one shows only when a key is
    /// opened.
    pub fn new(dir: impl Into<PathBuf>, passphrase: Zeroizing<String>) -> Result<Self> {
        if passphrase.len() < 12 {
            return Err(HsmError::Config(
                "software key store passphrase must be at least 12 characters".into(),
            ));
        }
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| HsmError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self { dir, passphrase })
    }

    fn path(&self, label: &str) -> Result<PathBuf> {
        let ok = !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !label.starts_with('.');
        if !ok {
            return Err(HsmError::Config(format!(
                "key label {label:?} must be letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(self.dir.join(format!("{label}.p8.pem")))
    }
}

fn crypto<E: std::fmt::Display>(e: E) -> HsmError {
    HsmError::Crypto(e.to_string())
}

fn ecdsa_alg(spec: KeySpec) -> Option<&'static EcdsaSigningAlgorithm> {
    match spec {
        KeySpec::EcdsaP256 => Some(&signature::ECDSA_P256_SHA256_ASN1_SIGNING),
        KeySpec::EcdsaP384 => Some(&signature::ECDSA_P384_SHA384_ASN1_SIGNING),
        _ => None,
    }
}

enum Material {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair, &'static dyn RsaEncoding),
}

struct SoftwareKey {
    label: String,
    spec: KeySpec,
    spki: SubjectPublicKeyInfoOwned,
    material: Material,
    rng: SystemRandom,
}

impl SoftwareKey {
    fn from_pkcs8(label: &str, spec: KeySpec, pkcs8: &[u8]) -> Result<Self> {
        let mismatch = || HsmError::Mismatch {
            label: label.to_string(),
            expected: spec.to_string(),
        };
        let (material, spki_der) = if let Some(alg) = ecdsa_alg(spec) {
            let kp = EcdsaKeyPair::from_pkcs8(alg, pkcs8).map_err(|_| mismatch())?;
            let spki = kp.public_key().as_der().map_err(crypto)?;
            (Material::Ecdsa(kp), spki.as_ref().to_vec())
        } else {
            let kp = RsaKeyPair::from_pkcs8(pkcs8).map_err(|_| mismatch())?;
            if Some(kp.public_modulus_len() as u32 * 8) != spec.rsa_bits() {
                return Err(mismatch());
            }
            let spki = kp.public_key().as_der().map_err(crypto)?;
            let enc: &'static dyn RsaEncoding = match spec {
                KeySpec::RsaPss { .. } => &signature::RSA_PSS_SHA256,
                _ => &signature::RSA_PKCS1_SHA256,
            };
            (Material::Rsa(kp, enc), spki.as_ref().to_vec())
        };
        Ok(Self {
            label: label.to_string(),
            spec,
            spki: SubjectPublicKeyInfoOwned::from_der(&spki_der).map_err(crypto)?,
            material,
            rng: SystemRandom::new(),
        })
    }
}

impl KeySigner for SoftwareKey {
    fn label(&self) -> &str {
        &self.label
    }
    fn spec(&self) -> KeySpec {
        self.spec
    }
    fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.spki
    }
    /// Signing is computation: one lane per core.
    fn parallelism(&self) -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
    /// P-256 signs in about 20 µs; P-384 takes several times that and RSA
    /// milliseconds, long enough to tell the runtime.
    fn is_quick(&self) -> bool {
        matches!(self.material, Material::Ecdsa(_)) && self.spec == KeySpec::EcdsaP256
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        match &self.material {
            Material::Ecdsa(kp) => Ok(kp
                .sign(&self.rng, message)
                .map_err(crypto)?
                .as_ref()
                .to_vec()),
            Material::Rsa(kp, enc) => {
                let mut out = vec![0u8; kp.public_modulus_len()];
                kp.sign(*enc, &self.rng, message, &mut out)
                    .map_err(crypto)?;
                Ok(out)
            }
        }
    }
}

fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| HsmError::Io {
        path: path.display().to_string(),
        source,
    })
}

impl KeyStore for SoftwareStore {
    fn generate(&self, label: &str, spec: KeySpec) -> Result<Arc<dyn KeySigner>> {
        let path = self.path(label)?;
        if path.exists() {
            return Err(HsmError::Exists(label.to_string()));
        }
        let rng = SystemRandom::new();
        let pkcs8: Zeroizing<Vec<u8>> = Zeroizing::new(if let Some(alg) = ecdsa_alg(spec) {
            EcdsaKeyPair::generate_pkcs8(alg, &rng)
                .map_err(crypto)?
                .as_ref()
                .to_vec()
        } else {
            let size = match spec.rsa_bits() {
                Some(2048) => KeySize::Rsa2048,
                Some(3072) => KeySize::Rsa3072,
                Some(4096) => KeySize::Rsa4096,
                _ => return Err(HsmError::Config(format!("cannot generate {spec}"))),
            };
            let kp = RsaKeyPair::generate(size).map_err(crypto)?;
            AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp)
                .map_err(crypto)?
                .as_ref()
                .to_vec()
        });
        let key = SoftwareKey::from_pkcs8(label, spec, &pkcs8)?;
        let encrypted = PrivateKeyInfoRef::try_from(pkcs8.as_slice())
            .map_err(crypto)?
            .encrypt(self.passphrase.as_bytes())
            .map_err(crypto)?;
        let pem = encrypted
            .to_pem("ENCRYPTED PRIVATE KEY", der::pem::LineEnding::LF)
            .map_err(crypto)?;
        write_new_private(&path, pem.as_bytes())?;
        Ok(Arc::new(key))
    }

    fn open(&self, label: &str, spec: KeySpec) -> Result<Arc<dyn KeySigner>> {
        let path = self.path(label)?;
        if !path.exists() {
            return Err(HsmError::NotFound(label.to_string()));
        }
        let pem = Zeroizing::new(read_file(&path)?);
        let (tag, der) = der::pem::decode_vec(pem.as_bytes()).map_err(crypto)?;
        if tag != "ENCRYPTED PRIVATE KEY" {
            return Err(HsmError::Crypto(format!(
                "{}: expected an ENCRYPTED PRIVATE KEY",
                path.display()
            )));
        }
        let decrypted = EncryptedPrivateKeyInfoRef::try_from(der.as_slice())
            .map_err(crypto)?
            .decrypt(self.passphrase.as_bytes())
            .map_err(|_| {
                HsmError::Crypto(format!(
                    "{}: cannot decrypt (wrong passphrase?)",
                    path.display()
                ))
            })?;
        Ok(Arc::new(SoftwareKey::from_pkcs8(
            label,
            spec,
            decrypted.as_bytes(),
        )?))
    }

    fn health(&self) -> Result<()> {
        std::fs::read_dir(&self.dir)
            .map(|_| ())
            .map_err(|source| HsmError::Io {
                path: self.dir.display().to_string(),
                source,
            })
    }

    fn describe(&self) -> String {
        format!("software keys in {}", self.dir.display())
    }
}

/// Writes a file that must not exist yet, readable by its owner only, and syncs it.
fn write_new_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| HsmError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::verify_signature;

    fn store(dir: &Path) -> SoftwareStore {
        SoftwareStore::new(dir, Zeroizing::new("correct horse battery".into())).unwrap()
    }

    #[test]
    fn generated_keys_sign_verifiably_and_reopen() {
        let dir = std::env::temp_dir().join(format!("muhr-sw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = store(&dir);
        for (label, spec) in [
            ("p256", KeySpec::EcdsaP256),
            ("p384", KeySpec::EcdsaP384),
            ("rsa", KeySpec::Rsa { bits: 2048 }),
            ("pss", KeySpec::RsaPss { bits: 2048 }),
        ] {
            let k = s.generate(label, spec).unwrap();
            let sig = k.sign(b"hello").unwrap();
            verify_signature(k.public_key(), &k.signature_algorithm(), b"hello", &sig).unwrap();
            assert!(
                verify_signature(k.public_key(), &k.signature_algorithm(), b"hellO", &sig).is_err()
            );
            let again = s.open(label, spec).unwrap();
            assert_eq!(again.public_key(), k.public_key());
            assert!(matches!(s.generate(label, spec), Err(HsmError::Exists(_))));
        }
        assert!(matches!(
            s.open("p256", KeySpec::EcdsaP384),
            Err(HsmError::Mismatch { .. })
        ));
        let wrong = SoftwareStore::new(&dir, Zeroizing::new("not the passphrase".into())).unwrap();
        let err = wrong.open("p256", KeySpec::EcdsaP256).err().unwrap();
        assert!(err.to_string().contains("wrong passphrase"));
        assert!(!err.to_string().contains("correct horse"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

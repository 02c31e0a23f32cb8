//! The RA's mutual-TLS listener and the credentials around it: the server's
//! own certificate, and the client credentials `muhr client add` hands out.
//!
//! TLS accepts only client certificates our issuing CA made (webpki checks the
//! chain, validity and clientAuth); which of them may do what is the RA
//! registry's decision, made per request (`muhr_http::clients`).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use der::Decode;
use muhr_ca::Ca;
use muhr_ca::alt_name::AltName;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;
use zeroize::Zeroizing;

use crate::Fail;
use crate::app::App;

/// A server certificate is replaced when it has less life left than this.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86400);

/// A certificate chain (leaf first, DER) and its PKCS#8 key.
pub struct Credential {
    /// The certificates, leaf first, DER.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's private key, PKCS#8 DER; wiped when dropped.
    pub key: Zeroizing<Vec<u8>>,
}

/// A fresh P-256 key in software: for TLS endpoints and RA clients, never for a CA.
pub fn software_key() -> Result<(Zeroizing<Vec<u8>>, SubjectPublicKeyInfoOwned), Fail> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
        .map_err(|_| Fail::internal("key generation failed"))?;
    let pkcs8 = kp
        .to_pkcs8v1()
        .map_err(|_| Fail::internal("key encoding failed"))?;
    let spki = kp
        .public_key()
        .as_der()
        .map_err(|_| Fail::internal("public key encoding failed"))?;
    let spki = SubjectPublicKeyInfoOwned::from_der(spki.as_ref())
        .map_err(|e| Fail::internal(format!("public key: {e}")))?;
    Ok((Zeroizing::new(pkcs8.as_ref().to_vec()), spki))
}

/// Writes a file only its owner can read, replacing it atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Fail> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Fail::invalid(format!("{}: {e}", tmp.display())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Fail::invalid(format!("{}: {e}", path.display())))
}

fn pem_all(text: &str, label: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut rest = text;
    while let Some(i) = rest.find(&begin) {
        let Some(j) = rest[i..].find(&end) else { break };
        let block = &rest[i..i + j + end.len()];
        if let Ok((_, der)) = der::pem::decode_vec(block.as_bytes()) {
            out.push(der);
        }
        rest = &rest[i + j + end.len()..];
    }
    out
}

fn load_pem(cert: &Path, key: &Path) -> Result<Credential, Fail> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| Fail::invalid(format!("{}: {e}", p.display())))
    };
    let chain = pem_all(&read(cert)?, "CERTIFICATE");
    if chain.is_empty() {
        return Err(Fail::invalid(format!(
            "{}: no CERTIFICATE in PEM",
            cert.display()
        )));
    }
    let key_text = Zeroizing::new(read(key)?);
    let mut keys = pem_all(&key_text, "PRIVATE KEY");
    let key = keys
        .pop()
        .ok_or_else(|| Fail::invalid(format!("{}: no PKCS#8 PRIVATE KEY in PEM", key.display())))?;
    Ok(Credential {
        chain,
        key: Zeroizing::new(key),
    })
}

use muhr_pkix::pem::encode as pem;

/// The listener's certificate: configured files, or one the CA issues for
/// `server.tls_names` and keeps in DATA/tls until it nears expiry.
pub async fn server_credential(app: &App, ca: &Ca) -> Result<Credential, Fail> {
    let s = &app.config.server;
    if let (Some(cert), Some(key)) = (&s.tls_cert, &s.tls_key) {
        return load_pem(cert, key);
    }
    if s.tls_cert.is_some() || s.tls_key.is_some() {
        return Err(Fail::invalid(
            "server.tls_cert and server.tls_key go together",
        ));
    }
    let dir = app.data_dir.join("tls");
    let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    if cert_path.exists() && key_path.exists() {
        let cred = load_pem(&cert_path, &key_path)?;
        let leaf = Certificate::from_der(&cred.chain[0])
            .map_err(|e| Fail::invalid(format!("{}: {e}", cert_path.display())))?;
        let left = leaf
            .tbs_certificate()
            .validity()
            .not_after
            .to_system_time()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let same_ca = cred.chain.get(1) == Some(&ca.issuing.der);
        if left > RENEW_BEFORE && same_ca {
            return Ok(cred);
        }
        tracing::info!("renewing the mTLS listener's certificate");
    }
    let alt_names = s
        .tls_names
        .iter()
        .map(|n| AltName::parse(n).map_err(|e| Fail::invalid(format!("server.tls_names: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let first = s
        .tls_names
        .first()
        .ok_or_else(|| Fail::invalid("server.tls_names: name at least one host"))?;
    let (key, spki) = software_key()?;
    let issued = ca
        .issue(muhr_ca::Request {
            profile: "tls-server".into(),
            fields: [
                ("common_name".to_string(), first.clone()),
                (
                    "organization.name".to_string(),
                    app.config.ceremony.issuing.organization.clone(),
                ),
            ]
            .into(),
            public_key: spki,
            not_after_limit: None,
            alt_names,
            actor: "serve".into(),
            once: None,
        })
        .await?;
    std::fs::create_dir_all(&dir).map_err(|e| Fail::invalid(format!("{}: {e}", dir.display())))?;
    let chain = vec![issued.der, ca.issuing.der.clone()];
    let key_pem = Zeroizing::new(pem("PRIVATE KEY", &key));
    write_private(&key_path, key_pem.as_bytes())?;
    let chain_pem: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
    write_private(&cert_path, chain_pem.as_bytes())?;
    Ok(Credential { chain, key })
}

/// TLS 1.2/1.3 with a client certificate required, chaining to our issuing CA.
pub fn server_config(cred: &Credential, client_ca: &[u8]) -> Result<rustls::ServerConfig, Fail> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(client_ca.to_vec()))
        .map_err(|e| Fail::internal(format!("client CA: {e}")))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| Fail::internal(format!("client verifier: {e}")))?;
    let chain = cred
        .chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cred.key.to_vec()));
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| Fail::invalid(format!("mTLS server certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The transport of the RA's listener: TLS with the client certificate
/// required; the client's leaf reaches the RA's authorization as
/// `PeerCertificate` (see `crate::listener`).
pub fn transport(config: rustls::ServerConfig) -> crate::listener::Transport {
    crate::listener::Transport::Tls(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// `muhr client add`: a key, an `ra-client` certificate naming the client, and
/// both with the chain in a PKCS#12 file under the given password; then the
/// certificate is registered with its role.
pub async fn client_add(
    app: &App,
    role: &str,
    name: &str,
    out: &Path,
    password_file: &Path,
) -> Result<(), Fail> {
    let role: muhr_http::clients::Role = role
        .parse()
        .map_err(|e: String| Fail::invalid(format!("refused: role: {e}")))?;
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Fail::invalid(
            "refused: name: 1 to 64 characters: letters, digits, '-', '_', '.'",
        ));
    }
    let password = crate::config::secret("PKCS#12 password", None, Some(password_file))
        .map_err(Fail::invalid)?;
    if password.chars().count() < 8 {
        return Err(Fail::invalid(
            "refused: password: the PKCS#12 password must have at least 8 characters",
        ));
    }
    if out.exists() {
        return Err(Fail::invalid(format!(
            "refused: out: {} exists; choose another file",
            out.display()
        )));
    }
    let ca = app.ca().await?;
    let (credential, serial) = issue_client(app, &ca, role, name).await?;
    let p12 = pkcs12(
        "muhr-ra-client",
        &[&credential.chain[0], &ca.issuing.der, &ca.root.der],
        &credential.key,
        &password,
    )?;
    write_private(out, &p12)?;
    println!("client     {name} ({})", role.as_str());
    println!("serial     {serial}");
    println!("credential {}", out.display());
    Ok(())
}

/// Issues an `ra-client` certificate for a new software key and registers it
/// with `role`. Returns the credential (leaf, issuing CA) and the serial.
pub async fn issue_client(
    app: &App,
    ca: &Ca,
    role: muhr_http::clients::Role,
    name: &str,
) -> Result<(Credential, String), Fail> {
    let (key, spki) = software_key()?;
    let issued = ca
        .issue(muhr_ca::Request {
            profile: "ra-client".into(),
            fields: [
                ("common_name".to_string(), name.to_string()),
                (
                    "organization.name".to_string(),
                    app.config.ceremony.issuing.organization.clone(),
                ),
            ]
            .into(),
            public_key: spki,
            not_after_limit: None,
            alt_names: Vec::new(),
            actor: crate::commands::cli_actor(),
            once: None,
        })
        .await?;
    let event = muhr_store::AuditEvent {
        actor: crate::commands::cli_actor(),
        action: "ra_client.add".into(),
        object: issued.serial.clone(),
        details: serde_json::json!({ "name": name, "role": role.as_str() }),
    };
    ca.store()
        .add_ra_client(&issued.serial, name, role.as_str(), &event)
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    Ok((
        Credential {
            chain: vec![issued.der, ca.issuing.der.clone()],
            key,
        },
        issued.serial,
    ))
}
/// A PKCS#12 file (PBES2, PBKDF2-SHA256, AES-256-CBC: what OpenSSL 3 reads
/// without `-legacy`) holding `key` and `chain`, leaf first.
pub fn pkcs12(alias: &str, chain: &[&[u8]], key: &[u8], password: &str) -> Result<Vec<u8>, Fail> {
    use p12_keystore::{KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let cert = |der: &[u8]| {
        p12_keystore::Certificate::from_der(der)
            .map_err(|e| Fail::internal(format!("PKCS#12 certificate: {e}")))
    };
    let key = PrivateKey::from_der(key).map_err(|e| Fail::internal(format!("PKCS#12 key: {e}")))?;
    let leaf = chain
        .first()
        .ok_or_else(|| Fail::internal("PKCS#12: no certificate"))?;
    let certs = chain
        .iter()
        .map(|c| cert(c))
        .collect::<Result<Vec<_>, _>>()?;
    let chain = PrivateKeyChain::new(leaf[leaf.len().saturating_sub(20)..].to_vec(), key, certs);
    let mut store = KeyStore::new();
    store.add_entry(alias, KeyStoreEntry::PrivateKeyChain(chain));
    store
        .writer(password)
        .write()
        .map_err(|e| Fail::internal(format!("PKCS#12: {e}")))
}

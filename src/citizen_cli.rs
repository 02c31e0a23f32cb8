//! `muhr client request`: what a citizen runs on their own machine. It makes
//! a P-256 key locally (the key never leaves the machine), asks Muhr's public
//! API for a certificate with the ID token the identity system gave them, and
//! keeps key and chain in a PKCS#12 file under a password of their choice.
//! It needs no Muhr installation: no configuration, database or key store.

use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use der::asn1::BitString;
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::request::{CertReq, CertReqInfo, Version};
use zeroize::Zeroizing;

use crate::Fail;

/// A PKCS#10 request for `kp`'s public key, signed by it (proof of
/// possession). The subject is empty: Muhr takes it from the verified identity.
pub fn csr_pem(kp: &EcdsaKeyPair) -> Result<String, Fail> {
    let spki = kp
        .public_key()
        .as_der()
        .map_err(|_| Fail::internal("public key"))?;
    let info = CertReqInfo {
        version: Version::V1,
        subject: Default::default(),
        public_key: SubjectPublicKeyInfoOwned::from_der(spki.as_ref())
            .map_err(|e| Fail::internal(e.to_string()))?,
        attributes: Default::default(),
    };
    let tbs = info.to_der().map_err(|e| Fail::internal(e.to_string()))?;
    let sig = kp
        .sign(&SystemRandom::new(), &tbs)
        .map_err(|_| Fail::internal("CSR signature"))?;
    let req = CertReq {
        info,
        algorithm: AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        },
        signature: BitString::from_bytes(sig.as_ref())
            .map_err(|e| Fail::internal(e.to_string()))?,
    };
    let der = req.to_der().map_err(|e| Fail::internal(e.to_string()))?;
    Ok(muhr_pkix::pem::encode("CERTIFICATE REQUEST", &der))
}

/// The PKCS#12 password: from a file, or asked twice on the terminal.
pub fn password(file: Option<&Path>) -> Result<Zeroizing<String>, Fail> {
    let p = match file {
        Some(f) => {
            crate::config::secret("PKCS#12 password", None, Some(f)).map_err(Fail::invalid)?
        }
        None => {
            let first = Zeroizing::new(
                rpassword::prompt_password("PKCS#12 password: ")
                    .map_err(|e| Fail::invalid(format!("password: {e}")))?,
            );
            let again = Zeroizing::new(
                rpassword::prompt_password("again: ")
                    .map_err(|e| Fail::invalid(format!("password: {e}")))?,
            );
            if first != again {
                return Err(Fail::invalid("refused: password: the two entries differ"));
            }
            first
        }
    };
    if p.chars().count() < 8 {
        return Err(Fail::invalid(
            "refused: password: the PKCS#12 password must have at least 8 characters",
        ));
    }
    Ok(p)
}

/// The server's address: `https`, or plain `http` only to this machine (a
/// token and a certificate must not cross a network in the clear).
pub fn server_url(server: &str) -> Result<String, Fail> {
    let s = server.trim_end_matches('/');
    let loopback = || {
        let rest = s.strip_prefix("http://").unwrap_or_default();
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return false;
        }
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.split(':').next().unwrap_or_default(),
        };
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    if s.starts_with("https://") || (s.starts_with("http://") && loopback()) {
        Ok(s.to_string())
    } else {
        Err(Fail::invalid(format!(
            "refused: server: {s:?} must be https (plain http only to this machine)"
        )))
    }
}

/// POSTs `body` and returns the JSON answer, or the refusal as a message.
async fn post_json(
    url: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> Result<serde_json::Value, Fail> {
    // No redirects: a server could send the token to another host, or
    // over plain http.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Fail::internal(format!("HTTP client: {e}")))?;
    let mut req = client.post(url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let response = req
        .send()
        .await
        .map_err(|e| Fail::invalid(format!("{url}: {e}")))?;
    let status = response.status();
    let answer: serde_json::Value = response
        .json()
        .await
        .map_err(|e| Fail::invalid(format!("{url}: HTTP {status}, not JSON: {e}")))?;
    if !status.is_success() {
        return Err(Fail::invalid(format!(
            "refused (HTTP {}): {}: {}",
            status.as_u16(),
            answer["error"]["field"].as_str().unwrap_or("-"),
            answer["error"]["rule"]
                .as_str()
                .unwrap_or("no reason given")
        )));
    }
    Ok(answer)
}

/// A new P-256 key, made here, and its PKCS#8 encoding.
fn new_key() -> Result<(EcdsaKeyPair, Zeroizing<Vec<u8>>), Fail> {
    let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
        .map_err(|_| Fail::internal("key generation failed"))?;
    let pkcs8 = Zeroizing::new(
        kp.to_pkcs8v1()
            .map_err(|_| Fail::internal("key encoding failed"))?
            .as_ref()
            .to_vec(),
    );
    Ok((kp, pkcs8))
}

/// Keeps the answer's certificate and chain with the key in a PKCS#12 file.
fn write_credential(
    answer: &serde_json::Value,
    profile: &str,
    pkcs8: &[u8],
    password: &str,
    out: &Path,
) -> Result<(), Fail> {
    let leaf = answer["der"]
        .as_str()
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
        .ok_or_else(|| Fail::internal("the answer holds no certificate"))?;
    let mut chain: Vec<Vec<u8>> = vec![leaf];
    for pem in answer["chain"].as_array().into_iter().flatten() {
        let (_, der) = pem
            .as_str()
            .and_then(|p| der::pem::decode_vec(p.as_bytes()).ok())
            .ok_or_else(|| Fail::internal("the answer's chain is not PEM"))?;
        chain.push(der);
    }
    let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
    let p12 = crate::mtls::pkcs12(profile, &refs, pkcs8, password)?;
    crate::mtls::write_private(out, &p12)?;
    println!("serial     {}", answer["serial"].as_str().unwrap_or("-"));
    println!("profile    {profile}");
    println!("credential {}", out.display());
    Ok(())
}

fn refuse_existing(out: &Path) -> Result<(), Fail> {
    if out.exists() {
        return Err(Fail::invalid(format!(
            "refused: out: {} exists; choose another file",
            out.display()
        )));
    }
    Ok(())
}

/// `muhr client request`: a new P-256 key made here, certified by Muhr at
/// `server` on the strength of the ID token in `token_file`, and kept with
/// its chain in the new PKCS#12 file `out`. Opens no installation.
pub async fn request(
    server: &str,
    token_file: &Path,
    profile: &str,
    out: &Path,
    password_file: Option<&Path>,
) -> Result<(), Fail> {
    let server = server_url(server)?;
    refuse_existing(out)?;
    let token = Zeroizing::new(
        std::fs::read_to_string(token_file)
            .map_err(|e| Fail::invalid(format!("token file {}: {e}", token_file.display())))?
            .trim()
            .to_string(),
    );
    if token.is_empty() {
        return Err(Fail::invalid(format!(
            "token file {}: empty",
            token_file.display()
        )));
    }
    let password = password(password_file)?;
    let (kp, pkcs8) = new_key()?;
    let answer = post_json(
        &format!("{server}/api/v1/certificates"),
        Some(token.as_str()),
        &serde_json::json!({ "csr": csr_pem(&kp)?, "profile": profile }),
    )
    .await?;
    write_credential(&answer, profile, &pkcs8, &password, out)
}

/// `muhr client renew --p12 AUTH.p12`: a new key made here, and a
/// certificate for it renewing the one in AUTH.p12, asked for with a CMC
/// request signed by that certificate's key (no new login at the identity
/// system). The new key and chain go to a new PKCS#12 file.
pub async fn renew(
    server: &str,
    p12: &Path,
    p12_password_file: Option<&Path>,
    out: &Path,
    password_file: Option<&Path>,
) -> Result<(), Fail> {
    let server = server_url(server)?;
    refuse_existing(out)?;
    let bytes = std::fs::read(p12).map_err(|e| Fail::invalid(format!("{}: {e}", p12.display())))?;
    let auth = Credential::open(&bytes, &open_password(p12_password_file)?)?;
    let serial = muhr_pkix::serial::to_hex(auth.certificate.tbs_certificate().serial_number());
    let password = password(password_file)?;
    let challenge = post_json(
        &format!("{server}/api/v1/certificates/renew/challenge"),
        None,
        &serde_json::json!({ "serial": &serial }),
    )
    .await?;
    let challenge = challenge["challenge"]
        .as_str()
        .ok_or_else(|| Fail::internal("the answer holds no challenge"))?;
    let (kp, pkcs8) = new_key()?;
    let (_, csr) = der::pem::decode_vec(csr_pem(&kp)?.as_bytes())
        .map_err(|e| Fail::internal(e.to_string()))?;
    let pki_data = muhr_ra::citizen::cmc::request(&csr, challenge.as_bytes())
        .map_err(|e| Fail::internal(format!("CMC: {e}")))?;
    let signature = auth.sign_typed_cms(muhr_ra::citizen::cmc::ID_CCT_PKI_DATA, &pki_data)?;
    let answer = post_json(
        &format!("{server}/api/v1/certificates/renew"),
        None,
        &serde_json::json!({
            "signature": base64::engine::general_purpose::STANDARD.encode(&signature)
        }),
    )
    .await?;
    let profile = answer["profile"].as_str().unwrap_or("renewed").to_string();
    write_credential(&answer, &profile, &pkcs8, &password, out)?;
    println!(
        "renewals   {} (left: {})",
        answer["renewals"], answer["renewals_left"]
    );
    Ok(())
}

/// A key and its certificate chain, opened from a PKCS#12 file.
pub struct Credential {
    /// The certificate for the file's private key.
    pub certificate: x509_cert::Certificate,
    /// The file's other certificates, in the order they are stored.
    pub chain: Vec<x509_cert::Certificate>,
    /// The signature algorithm for the key: ECDSA with SHA-256 (P-256) or
    /// SHA-384 (P-384), or RSA PKCS#1 v1.5 with SHA-256.
    pub algorithm: AlgorithmIdentifierOwned,
    key: Key,
}

enum Key {
    Ecdsa(EcdsaKeyPair),
    Rsa(aws_lc_rs::signature::RsaKeyPair),
}

impl Credential {
    /// Opens `file` with `password`; the certificate is the one whose public
    /// key is the private key's, the others are its chain.
    pub fn open(bytes: &[u8], password: &str) -> Result<Self, Fail> {
        use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1_SIGNING, RsaKeyPair};
        use const_oid::db::rfc5912;
        let store = p12_keystore::KeyStore::from_pkcs12(
            bytes,
            password,
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .map_err(|e| Fail::invalid(format!("refused: PKCS#12: {e} (wrong password?)")))?;
        let (_, entry) = store
            .private_key_chain()
            .ok_or_else(|| Fail::invalid("refused: PKCS#12: no private key in it"))?;
        let pkcs8 = entry.key().as_der();
        let alg = |oid| AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        };
        let (key, algorithm) =
            if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8) {
                (Key::Ecdsa(k), alg(rfc5912::ECDSA_WITH_SHA_256))
            } else if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8) {
                (Key::Ecdsa(k), alg(rfc5912::ECDSA_WITH_SHA_384))
            } else if let Ok(k) = RsaKeyPair::from_pkcs8(pkcs8) {
                (Key::Rsa(k), alg(rfc5912::SHA_256_WITH_RSA_ENCRYPTION))
            } else {
                return Err(Fail::invalid(
                    "refused: PKCS#12: the key is not ECDSA P-256/P-384 or RSA",
                ));
            };
        let public = match &key {
            Key::Ecdsa(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
            Key::Rsa(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| Fail::internal("public key"))?;
        let mut certificate = None;
        let mut chain = Vec::new();
        for c in entry.certs() {
            let c = x509_cert::Certificate::from_der(c.as_der())
                .map_err(|e| Fail::invalid(format!("refused: PKCS#12 certificate: {e}")))?;
            let spki = c
                .tbs_certificate()
                .subject_public_key_info()
                .to_der()
                .map_err(|e| Fail::internal(e.to_string()))?;
            if certificate.is_none() && spki == public {
                certificate = Some(c);
            } else {
                chain.push(c);
            }
        }
        let certificate = certificate
            .ok_or_else(|| Fail::invalid("refused: PKCS#12: no certificate for its key"))?;
        Ok(Self {
            certificate,
            chain,
            algorithm,
            key,
        })
    }

    /// A signature in the encoding X.509 and CMS use.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        match &self.key {
            Key::Ecdsa(k) => k
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "signing failed".to_string()),
            Key::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &rng,
                    message,
                    &mut sig,
                )
                .map_err(|_| "signing failed".to_string())?;
                Ok(sig)
            }
        }
    }

    /// An attached CMS SignedData of content type `content_type`.
    pub fn sign_typed_cms(
        &self,
        content_type: const_oid::ObjectIdentifier,
        content: &[u8],
    ) -> Result<Vec<u8>, Fail> {
        let sign = |m: &[u8]| self.sign(m);
        muhr_validation::cms::sign_typed(
            &muhr_validation::cms::Signer {
                certificate: &self.certificate,
                chain: &self.chain,
                algorithm: self.algorithm.clone(),
                sign: &sign,
            },
            content_type,
            content,
            true,
            std::time::SystemTime::now(),
        )
        .map_err(|e| Fail::internal(format!("CMS: {e}")))
    }

    /// A CMS SignedData over `content` made with this key.
    pub fn sign_cms(&self, content: &[u8], attached: bool) -> Result<Vec<u8>, Fail> {
        let sign = |m: &[u8]| self.sign(m);
        muhr_validation::cms::sign(
            &muhr_validation::cms::Signer {
                certificate: &self.certificate,
                chain: &self.chain,
                algorithm: self.algorithm.clone(),
                sign: &sign,
            },
            content,
            attached,
            std::time::SystemTime::now(),
        )
        .map_err(|e| Fail::internal(format!("CMS: {e}")))
    }
}

/// A password to open a PKCS#12 file: from a file, or asked once.
pub fn open_password(file: Option<&Path>) -> Result<Zeroizing<String>, Fail> {
    match file {
        Some(f) => crate::config::secret("PKCS#12 password", None, Some(f)).map_err(Fail::invalid),
        None => rpassword::prompt_password("PKCS#12 password: ")
            .map(Zeroizing::new)
            .map_err(|e| Fail::invalid(format!("password: {e}"))),
    }
}

/// `muhr client sign FILE --p12 me.p12`: a CMS signature of FILE, detached
/// unless `attached`, written to `out` (FILE.p7s by default), DER; with a
/// signature time-stamp from `timestamp` (a TSA URL; empty: MUHR_TSA_URL).
pub async fn sign(
    file: &Path,
    p12: &Path,
    password_file: Option<&Path>,
    out: Option<&Path>,
    attached: bool,
    timestamp: Option<&str>,
    long_term: bool,
) -> Result<(), Fail> {
    let tsa_url = match timestamp {
        None => None,
        Some("") => Some(std::env::var("MUHR_TSA_URL").map_err(|_| {
            Fail::invalid("refused: timestamp: give the TSA's URL, or set MUHR_TSA_URL")
        })?),
        Some(u) => Some(u.to_string()),
    };
    if let Some(u) = &tsa_url
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        return Err(Fail::invalid(format!(
            "refused: timestamp: {u:?} is not an http(s) URL"
        )));
    }
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| {
        let mut o = file.as_os_str().to_owned();
        o.push(".p7s");
        o.into()
    });
    if out.exists() {
        return Err(Fail::invalid(format!(
            "refused: out: {} exists; choose another file",
            out.display()
        )));
    }
    let content = std::fs::read(file)
        .map_err(|e| Fail::invalid(format!("refused: {}: {e}", file.display())))?;
    let bytes = std::fs::read(p12)
        .map_err(|e| Fail::invalid(format!("refused: p12: {}: {e}", p12.display())))?;
    let password = open_password(password_file)?;
    let credential = Credential::open(&bytes, &password)?;
    let mut cms = credential.sign_cms(&content, attached)?;
    let mut stamped = None;
    if let Some(url) = &tsa_url {
        let (req, nonce) = muhr_validation::cades::request(&cms).map_err(Fail::internal)?;
        let reply = post_der(url, "application/timestamp-query", req, "timestamp").await?;
        let token = muhr_validation::cades::token_from_reply(&cms, &reply, &nonce)
            .map_err(|e| Fail::invalid(format!("refused: timestamp: {e}")))?;
        // The reply may have crossed a network in the clear (RFC 3161 over
        // HTTP): a TSA certificate the holder's own CA did not issue is
        // someone else's word for the time.
        muhr_validation::cades::tsa_issued_by(&token, &credential.chain)
            .map_err(|e| Fail::invalid(format!("refused: timestamp: {e}")))?;
        cms = muhr_validation::cades::add_token(&cms, &token).map_err(Fail::internal)?;
        stamped = Some(url);
        if long_term {
            cms = with_validation_data(&cms, &credential.chain).await?;
        }
    }
    std::fs::write(&out, cms)
        .map_err(|e| Fail::invalid(format!("refused: out: {}: {e}", out.display())))?;
    println!(
        "signed     {} ({})",
        file.display(),
        if attached { "attached" } else { "detached" }
    );
    println!(
        "signer     {}",
        muhr_pkix::dn_text::to_string(credential.certificate.tbs_certificate().subject())
    );
    println!("signature  {}", out.display());
    if let Some(url) = stamped {
        println!("time-stamp {} (CAdES-T)", muhr_store::redact::redact(url));
    }
    Ok(())
}

/// CAdES-LT: the OCSP responses for the signer's and the TSA's
/// certificates, each checked (signed by the issuer or its delegated
/// responder, about that certificate, current, good), embedded with the
/// certificates that validate them.
async fn with_validation_data(
    cms: &[u8],
    chain: &[x509_cert::Certificate],
) -> Result<Vec<u8>, Fail> {
    use muhr_validation::external::{Anchor, Status, ocsp};
    let needed = muhr_validation::cades::status_needed(cms, chain)
        .map_err(|e| Fail::invalid(format!("refused: level lt: {e}")))?;
    let mut certificates = chain.to_vec();
    let mut responses = Vec::new();
    for n in needed {
        let subject = muhr_pkix::dn_text::to_string(n.certificate.tbs_certificate().subject());
        let anchor = Anchor::issuer("issuer", n.issuer.clone());
        let serial = n.certificate.tbs_certificate().serial_number().as_bytes();
        let req = ocsp::request(&anchor, serial).map_err(Fail::internal)?;
        let der = post_der(&n.ocsp_url, "application/ocsp-request", req, "level lt").await?;
        let answer = ocsp::answer(&anchor, serial, &der, std::time::SystemTime::now())
            .map_err(|e| Fail::invalid(format!("refused: level lt: {subject}: {e}")))?;
        if !matches!(answer.status, Status::Good) {
            return Err(Fail::invalid(format!(
                "refused: level lt: {subject} is not good ({:?})",
                answer.status
            )));
        }
        responses.push(der);
        certificates.push(n.issuer);
        certificates.push(n.certificate);
    }
    muhr_validation::cades::add_validation_data(cms, &certificates, &responses)
        .map_err(Fail::internal)
}

/// Sends `body` by HTTP POST as `content_type` (a TimeStampReq, RFC 3161
/// 3.4; an OCSP request); the reply's body. `what` names the option in
/// errors.
async fn post_der(
    url: &str,
    content_type: &str,
    req: Vec<u8>,
    what: &str,
) -> Result<Vec<u8>, Fail> {
    let shown = muhr_store::redact::redact(url);
    let url_text = url;
    let url = shown.as_str();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| Fail::internal(e.to_string()))?;
    let resp = client
        .post(url_text)
        .header("content-type", content_type)
        .body(req)
        .send()
        .await
        .map_err(|e| Fail::invalid(format!("refused: {what}: {url}: {}", e.without_url())))?;
    if !resp.status().is_success() {
        return Err(Fail::invalid(format!(
            "refused: {what}: {url} answered HTTP {}",
            resp.status()
        )));
    }
    // A reply is a few kilobytes; a server sending more is not one.
    const LIMIT: usize = 1 << 20;
    let mut resp = resp;
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Fail::invalid(format!("refused: {what}: {url}: {}", e.without_url())))?
    {
        if body.len() + chunk.len() > LIMIT {
            return Err(Fail::invalid(format!(
                "refused: {what}: {url} answered more than 1 MiB"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

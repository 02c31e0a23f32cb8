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
    der::pem::encode_string("CERTIFICATE REQUEST", der::pem::LineEnding::LF, &der)
        .map_err(|e| Fail::internal(e.to_string()))
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

pub async fn request(
    server: &str,
    token_file: &Path,
    profile: &str,
    out: &Path,
    password_file: Option<&Path>,
) -> Result<(), Fail> {
    if out.exists() {
        return Err(Fail::invalid(format!(
            "refused: out: {} exists; choose another file",
            out.display()
        )));
    }
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
    let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
        .map_err(|_| Fail::internal("key generation failed"))?;
    let pkcs8 = Zeroizing::new(
        kp.to_pkcs8v1()
            .map_err(|_| Fail::internal("key encoding failed"))?
            .as_ref()
            .to_vec(),
    );
    let url = format!("{}/api/v1/certificates", server.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token.as_str())
        .json(&serde_json::json!({ "csr": csr_pem(&kp)?, "profile": profile }))
        .send()
        .await
        .map_err(|e| Fail::invalid(format!("{url}: {e}")))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|e| Fail::invalid(format!("{url}: HTTP {status}, not JSON: {e}")))?;
    if !status.is_success() {
        return Err(Fail::invalid(format!(
            "refused (HTTP {}): {}: {}",
            status.as_u16(),
            body["error"]["field"].as_str().unwrap_or("-"),
            body["error"]["rule"].as_str().unwrap_or("no reason given")
        )));
    }
    let leaf = body["der"]
        .as_str()
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
        .ok_or_else(|| Fail::internal("the answer holds no certificate"))?;
    let mut chain: Vec<Vec<u8>> = vec![leaf];
    for pem in body["chain"].as_array().into_iter().flatten() {
        let (_, der) = pem
            .as_str()
            .and_then(|p| der::pem::decode_vec(p.as_bytes()).ok())
            .ok_or_else(|| Fail::internal("the answer's chain is not PEM"))?;
        chain.push(der);
    }
    let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
    let p12 = crate::mtls::pkcs12(profile, &refs, &pkcs8, &password)?;
    crate::mtls::write_private(out, &p12)?;
    println!("serial     {}", body["serial"].as_str().unwrap_or("-"));
    println!("profile    {profile}");
    println!("credential {}", out.display());
    Ok(())
}

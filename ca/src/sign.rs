//! Asking the key to sign recorded to-be-signed bytes, on the blocking pool
//! (the key store may be an HSM), in as many lanes as the key allows, each
//! signature verified before its certificate exists.

use std::sync::Arc;

use muhr_hsm::KeySigner;
use spki::SubjectPublicKeyInfoOwned;

use std::time::Instant;

use crate::{IssueError, Metrics, build};

pub(crate) type SignTask = tokio::task::JoinHandle<Result<Vec<u8>, IssueError>>;

/// Starts signing recorded TBS bytes on the blocking pool (the key store may
/// block on an HSM), checking the signature before building the certificate.
pub(crate) fn spawn_sign(
    signer: Arc<dyn KeySigner>,
    issuer_spki: SubjectPublicKeyInfoOwned,
    tbs: Vec<u8>,
    metrics: Option<Arc<Metrics>>,
) -> SignTask {
    tokio::task::spawn_blocking(move || sign_one(&*signer, &issuer_spki, &tbs, metrics.as_deref()))
}

/// Signs, checks the signature and assembles the certificate.
pub(crate) fn sign_one(
    signer: &dyn KeySigner,
    issuer_spki: &SubjectPublicKeyInfoOwned,
    tbs: &[u8],
    metrics: Option<&Metrics>,
) -> Result<Vec<u8>, IssueError> {
    let started = Instant::now();
    let sig = signer.sign(tbs)?;
    if let Some(m) = metrics {
        m.signing.observe(started.elapsed());
    }
    let alg = signer.signature_algorithm();
    muhr_hsm::verify::verify_signature(issuer_spki, &alg, tbs, &sig).map_err(|e| {
        IssueError::Internal(format!(
            "the key store returned a signature that does not verify ({e}); nothing issued"
        ))
    })?;
    build::assemble(tbs, &alg, &sig).map_err(|e| IssueError::Internal(format!("assembling: {e}")))
}

/// Signs a group's certificates in as many blocking tasks as the key signs at
/// once, each going through its share in order, and returns the results in
/// the order given. One task per certificate woke a thread for each, most of
/// them only to wait for a session another held.
pub(crate) async fn sign_all(
    items: Vec<(Arc<dyn KeySigner>, SubjectPublicKeyInfoOwned, Vec<u8>)>,
    metrics: Arc<Metrics>,
) -> Vec<Result<Vec<u8>, IssueError>> {
    let Some((first, _, _)) = items.first() else {
        return Vec::new();
    };
    let lanes = first.parallelism().clamp(1, items.len());
    let per_lane = items.len().div_ceil(lanes);
    let mut tasks = Vec::with_capacity(lanes);
    let mut items = items.into_iter();
    loop {
        let lane: Vec<_> = items.by_ref().take(per_lane).collect();
        if lane.is_empty() {
            break;
        }
        let n = lane.len();
        let m = metrics.clone();
        let task = tokio::task::spawn_blocking(move || {
            lane.into_iter()
                .map(|(signer, spki, tbs)| sign_one(&*signer, &spki, &tbs, Some(&m)))
                .collect::<Vec<_>>()
        });
        tasks.push((n, task));
    }
    let mut out = Vec::new();
    for (n, task) in tasks {
        match task.await {
            Ok(results) => out.extend(results),
            Err(e) => {
                out.extend((0..n).map(|_| Err(IssueError::Internal(format!("signing task: {e}")))))
            }
        }
    }
    out
}

pub(crate) async fn finish_sign(task: SignTask) -> Result<Vec<u8>, IssueError> {
    task.await
        .map_err(|e| IssueError::Internal(format!("signing task: {e}")))?
}

#[cfg(test)]
mod tests {
    use der::Encode;
    use muhr_hsm::KeySpec;

    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    use const_oid::db::rfc5912;
    use spki::AlgorithmIdentifierOwned;

    /// Signs in three lanes; refuses one message and signs another wrongly.
    struct Key {
        pair: EcdsaKeyPair,
        spki: SubjectPublicKeyInfoOwned,
        refuse: Vec<u8>,
        forge: Vec<u8>,
    }

    impl KeySigner for Key {
        fn label(&self) -> &str {
            "lanes"
        }
        fn spec(&self) -> KeySpec {
            KeySpec::EcdsaP256
        }
        fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
            &self.spki
        }
        fn parallelism(&self) -> usize {
            3
        }
        fn sign(&self, message: &[u8]) -> muhr_hsm::Result<Vec<u8>> {
            if message == self.refuse {
                return Err(muhr_hsm::HsmError::Crypto("refused".into()));
            }
            let signed = if message == self.forge {
                b"something else".as_slice()
            } else {
                message
            };
            let sig = self.pair.sign(&SystemRandom::new(), signed).expect("sign");
            Ok(sig.as_ref().to_vec())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lanes_keep_order_and_each_result_its_own() {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let spki = SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: rfc5912::ID_EC_PUBLIC_KEY,
                parameters: Some(der::asn1::Any::encode_from(&rfc5912::SECP_256_R_1).unwrap()),
            },
            subject_public_key: der::asn1::BitString::from_bytes(pair.public_key().as_ref())
                .unwrap(),
        };
        let tbs: Vec<Vec<u8>> = (0..8u8)
            .map(|i| {
                der::asn1::OctetString::new(vec![i; 3 + i as usize])
                    .unwrap()
                    .to_der()
                    .unwrap()
            })
            .collect();
        let key: Arc<dyn KeySigner> = Arc::new(Key {
            pair,
            spki: spki.clone(),
            refuse: tbs[2].clone(),
            forge: tbs[5].clone(),
        });
        let items = tbs
            .iter()
            .map(|t| (key.clone(), spki.clone(), t.clone()))
            .collect();
        let metrics = Arc::new(Metrics::default());
        let out = sign_all(items, metrics).await;
        assert_eq!(out.len(), tbs.len());
        for (i, (r, t)) in out.iter().zip(&tbs).enumerate() {
            match (i, r) {
                (2, Err(IssueError::Key(e))) => assert!(e.to_string().contains("refused"), "{e}"),
                (5, Err(IssueError::Internal(e))) => assert!(e.contains("does not verify"), "{e}"),
                (2 | 5, other) => panic!("certificate {i}: {other:?}"),
                (_, Ok(der)) => {
                    // SEQUENCE { tbs, algorithm, signature }, under 128 bytes
                    // here (a two-byte header): this item's TBS first.
                    assert!(
                        der.len() < 128 && der[2..].starts_with(t),
                        "certificate {i}"
                    );
                }
                (_, Err(e)) => panic!("certificate {i}: {e:?}"),
            }
        }
        assert!(
            sign_all(Vec::new(), Arc::new(Metrics::default()))
                .await
                .is_empty()
        );
    }
}

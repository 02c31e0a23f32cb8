//! Test fixtures: an external CA made here (a P-256 key, its certificate,
//! CRLs of any shape signed with it) and a small HTTP server on 127.0.0.1
//! that answers as the tests want, well or badly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use const_oid::db::rfc5280::{ID_CE_AUTHORITY_KEY_IDENTIFIER, ID_CE_CRL_NUMBER};
use const_oid::db::rfc5912::{ECDSA_WITH_SHA_256, ID_EC_PUBLIC_KEY, SECP_256_R_1};
use der::asn1::{Any, BitString, OctetString};
use der::oid::ObjectIdentifier;
use der::{Decode, Encode, Sequence};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_cert::Certificate;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;

use super::Anchor;

#[derive(Sequence)]
struct Validity {
    not_before: Time,
    not_after: Time,
}

/// TBSCertificate with only what the fixtures need (x509-cert keeps its
/// own type's fields to itself).
#[derive(Sequence)]
struct Tbs {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    version: x509_cert::Version,
    serial: SerialNumber,
    signature: AlgorithmIdentifierOwned,
    issuer: Name,
    validity: Validity,
    subject: Name,
    spki: SubjectPublicKeyInfoOwned,
}

#[derive(Sequence)]
struct Signed {
    tbs: Any,
    algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

pub fn ecdsa_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ECDSA_WITH_SHA_256,
        parameters: None,
    }
}

pub fn time(t: SystemTime) -> Time {
    Time::try_from(t).expect("a time x509-cert can encode")
}

/// An extension with a DER value given as bytes.
pub fn ext(oid: ObjectIdentifier, critical: bool, value: &[u8]) -> Extension {
    Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value).unwrap(),
    }
}

/// What a test CRL says; [`CrlSpec::fresh`] is a well-formed one.
pub struct CrlSpec {
    pub this_update: SystemTime,
    pub next_update: Option<SystemTime>,
    /// Serials (content octets), each with `entry_extensions`.
    pub revoked: Vec<Vec<u8>>,
    pub entry_extensions: Vec<Extension>,
    pub extensions: Vec<Extension>,
}

impl CrlSpec {
    /// Made a minute ago, valid for a day, numbered `number`, empty.
    pub fn fresh(number: u8) -> Self {
        let now = SystemTime::now();
        Self {
            this_update: now - Duration::from_secs(60),
            next_update: Some(now + Duration::from_secs(86_400)),
            revoked: Vec::new(),
            entry_extensions: Vec::new(),
            extensions: vec![crl_number(number)],
        }
    }

    /// Lists `serial` as revoked an hour ago.
    pub fn revoking(mut self, serial: &[u8]) -> Self {
        self.revoked.push(serial.to_vec());
        self
    }
}

pub fn crl_number(n: u8) -> Extension {
    let value = x509_cert::ext::pkix::CrlNumber::try_from(n)
        .unwrap()
        .to_der()
        .unwrap();
    ext(ID_CE_CRL_NUMBER, false, &value)
}

fn key_pair() -> EcdsaKeyPair {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
        .unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap()
}

fn spki_of(pair: &EcdsaKeyPair) -> SubjectPublicKeyInfoOwned {
    SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: ID_EC_PUBLIC_KEY,
            parameters: Some(Any::encode_from(&SECP_256_R_1).unwrap()),
        },
        subject_public_key: BitString::from_bytes(pair.public_key().as_ref()).unwrap(),
    }
}

/// An ECDSA-SHA256 signature (DER) over `message`.
fn sign(pair: &EcdsaKeyPair, message: &[u8]) -> Vec<u8> {
    pair.sign(&SystemRandom::new(), message)
        .unwrap()
        .as_ref()
        .to_vec()
}

/// A certificate signed by `pair` in the name of `issuer`.
fn issue(
    pair: &EcdsaKeyPair,
    issuer: &Name,
    serial: &[u8],
    subject: &Name,
    spki: &SubjectPublicKeyInfoOwned,
) -> Certificate {
    let now = SystemTime::now();
    let tbs = Tbs {
        version: x509_cert::Version::V3,
        serial: SerialNumber::new(serial).unwrap(),
        signature: ecdsa_sha256(),
        issuer: issuer.clone(),
        validity: Validity {
            not_before: time(now - Duration::from_secs(86_400)),
            not_after: time(now + Duration::from_secs(30 * 86_400)),
        },
        subject: subject.clone(),
        spki: spki.clone(),
    }
    .to_der()
    .unwrap();
    let signed = Signed {
        tbs: Any::from_der(&tbs).unwrap(),
        algorithm: ecdsa_sha256(),
        signature: BitString::from_bytes(&sign(pair, &tbs)).unwrap(),
    };
    Certificate::from_der(&signed.to_der().unwrap()).unwrap()
}

/// An external CA: a key and its self-signed certificate.
pub struct TestCa {
    pair: EcdsaKeyPair,
    spki: SubjectPublicKeyInfoOwned,
    name: Name,
    pub certificate: Certificate,
}

impl TestCa {
    pub fn new(cn: &str) -> Self {
        let pair = key_pair();
        let spki = spki_of(&pair);
        let name: Name = format!("CN={cn},O=Example,C=UZ").parse().unwrap();
        let certificate = issue(&pair, &name, &[0x01], &name, &spki);
        Self {
            pair,
            spki,
            name,
            certificate,
        }
    }

    /// A citizen's certificate with this serial.
    pub fn leaf(&self, serial: &[u8]) -> Certificate {
        let subject = "CN=Citizen,C=UZ".parse().unwrap();
        issue(
            &self.pair,
            &self.name,
            serial,
            &subject,
            &spki_of(&key_pair()),
        )
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        sign(&self.pair, message)
    }

    /// This CA as configured: no URLs, nothing cached, an hour's age
    /// allowed without nextUpdate (the default).
    pub fn anchor(&self) -> Anchor {
        self.anchor_at(None, None)
    }

    pub fn anchor_at(&self, ocsp_url: Option<String>, crl_url: Option<String>) -> Anchor {
        Anchor {
            name: "Test".into(),
            certificate: self.certificate.clone(),
            identity: Vec::new(),
            ocsp_url,
            crl_url,
            cache_for: Duration::ZERO,
            max_age_without_next_update: Duration::from_secs(3600),
        }
    }

    /// Authority Key Identifier { keyIdentifier SHA-1(key) }.
    pub fn aki(&self) -> Extension {
        let id = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            self.spki.subject_public_key.raw_bytes(),
        );
        let mut value = vec![0x30, 0x16, 0x80, 0x14];
        value.extend_from_slice(id.as_ref());
        ext(ID_CE_AUTHORITY_KEY_IDENTIFIER, false, &value)
    }

    /// A v2 CRL (DER) as `spec` says, signed by this CA.
    pub fn crl(&self, spec: CrlSpec) -> Vec<u8> {
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let entry_extensions =
            (!spec.entry_extensions.is_empty()).then(|| spec.entry_extensions.clone());
        let revoked: Vec<RevokedCert> = spec
            .revoked
            .iter()
            .map(|s| RevokedCert {
                serial_number: SerialNumber::new(s).unwrap(),
                revocation_date: time(hour_ago),
                crl_entry_extensions: entry_extensions.clone(),
            })
            .collect();
        let tbs = TbsCertList {
            version: x509_cert::Version::V2,
            signature: ecdsa_sha256(),
            issuer: self.name.clone(),
            this_update: time(spec.this_update),
            next_update: spec.next_update.map(time),
            revoked_certificates: (!revoked.is_empty()).then_some(revoked),
            crl_extensions: (!spec.extensions.is_empty()).then_some(spec.extensions),
        };
        let tbs_der = tbs.to_der().unwrap();
        CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: ecdsa_sha256(),
            signature: BitString::from_bytes(&self.sign(&tbs_der)).unwrap(),
        }
        .to_der()
        .unwrap()
    }
}

/// How the test server answers every request.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this body and its Content-Length.
    Body(Vec<u8>),
    /// 302 to this location.
    Redirect(String),
    /// 200, chunked, `total` bytes offered as fast as the client reads.
    Stream { total: usize },
    /// 200 announcing this Content-Length, then silence.
    Announce(u64),
    /// 200, chunked, one byte every 100 ms (for at most a minute).
    Drip,
}

/// An HTTP/1.1 server on 127.0.0.1 for the tests of one runtime.
pub struct Server {
    pub port: u16,
    reply: Arc<Mutex<Reply>>,
    /// Connections accepted, and finished.
    pub accepted: Arc<AtomicUsize>,
    pub finished: Arc<AtomicUsize>,
    /// Body bytes the server managed to hand to the socket.
    pub sent: Arc<AtomicUsize>,
}

impl Server {
    pub async fn start(reply: Reply) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = Self {
            port,
            reply: Arc::new(Mutex::new(reply)),
            accepted: Arc::default(),
            finished: Arc::default(),
            sent: Arc::default(),
        };
        let (reply, accepted, finished, sent) = (
            server.reply.clone(),
            server.accepted.clone(),
            server.finished.clone(),
            server.sent.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let reply = reply.lock().unwrap().clone();
                let (finished, sent) = (finished.clone(), sent.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, reply, &sent).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    /// Waits (at most 10 s) until every connection has been dealt with.
    pub async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.finished.load(Ordering::SeqCst) < self.accepted.load(Ordering::SeqCst) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the test server's connections never ended"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    reply: Reply,
    sent: &AtomicUsize,
) -> std::io::Result<()> {
    // The request: its head, then as many body bytes as it announces.
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if request.len() > 64 * 1024 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = request.len() - head_end;
    while have < length {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        have += n;
    }
    match reply {
        Reply::Body(body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
            sent.fetch_add(body.len(), Ordering::SeqCst);
        }
        Reply::Redirect(location) => {
            let head = format!(
                "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\
                 connection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
        }
        Reply::Stream { total } => {
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
                )
                .await?;
            let chunk = vec![b'A'; 64 * 1024];
            let mut left = total;
            while left > 0 {
                let n = left.min(chunk.len());
                stream.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                stream.write_all(&chunk[..n]).await?;
                stream.write_all(b"\r\n").await?;
                sent.fetch_add(n, Ordering::SeqCst);
                left -= n;
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
        Reply::Announce(length) => {
            let head =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            // Silence until the client gives up (or a minute passes).
            let _ = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await;
        }
        Reply::Drip => {
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
                )
                .await?;
            for _ in 0..600 {
                stream.write_all(b"1\r\nA\r\n").await?;
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    stream.shutdown().await
}

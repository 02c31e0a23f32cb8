//! Turning untrusted request bytes into queries, or a reason to refuse them.

use der::Decode;
use muhr_pkix::ocsp::{CertId, ID_PKIX_OCSP_NONCE, ID_SHA1, ID_SHA256, OcspRequest};

/// The hash a CertID names its issuer with, and how its parameters are
/// written (NULL, or absent: both are seen in the field). Part of the cache
/// key: the response echoes the CertID, and a client that compares CertIDs
/// byte for byte must get its own form back, never the form of whoever
/// asked first. Any other algorithm or parameter is `malformedRequest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-1 with NULL parameters, the RFC 5019 default most clients send.
    Sha1,
    /// SHA-1 with the parameters left out.
    Sha1Bare,
    /// SHA-256 with NULL parameters.
    Sha256,
    /// SHA-256 with the parameters left out.
    Sha256Bare,
}

impl HashAlg {
    /// Every form, for dropping a serial's cached responses.
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha1Bare,
        HashAlg::Sha256,
        HashAlg::Sha256Bare,
    ];
}

/// One certificate asked about.
#[derive(Clone, Debug)]
pub struct Query {
    /// The hash of the CertID, already checked against the issuer's name and key.
    pub alg: HashAlg,
    /// The serial's minimal big-endian bytes (no sign padding).
    pub serial: Vec<u8>,
    /// The CertID exactly as requested, echoed in the response.
    pub cert_id: CertId,
}

pub(crate) enum Refusal {
    Malformed,
    Unauthorized,
}

pub(crate) struct Parsed {
    pub queries: Vec<Query>,
    pub nonce: Option<Vec<u8>>,
}

pub(crate) fn parse(
    body: &[u8],
    max_requests: usize,
    issuer: &crate::IssuerHashes,
) -> Result<Parsed, Refusal> {
    let req = OcspRequest::from_der(body).map_err(|_| Refusal::Malformed)?;
    let list = &req.tbs_request.request_list;
    if list.is_empty() || list.len() > max_requests {
        return Err(Refusal::Malformed);
    }
    let mut nonce = None;
    let mut seen = std::collections::HashSet::new();
    for ext in req.tbs_request.request_extensions.iter().flatten() {
        // One instance of an extension (RFC 5280 4.2): two nonces would leave
        // the client unsure which one the response echoes.
        if !seen.insert(ext.extn_id) {
            return Err(Refusal::Malformed);
        }
        if ext.extn_id == ID_PKIX_OCSP_NONCE {
            // RFC 8954: the value is an OCTET STRING of 1 to 32 octets.
            let n = der::asn1::OctetString::from_der(ext.extn_value.as_bytes())
                .map_err(|_| Refusal::Malformed)?;
            if n.as_bytes().is_empty() || n.as_bytes().len() > 32 {
                return Err(Refusal::Malformed);
            }
            nonce = Some(n.as_bytes().to_vec());
        } else if ext.critical {
            return Err(Refusal::Malformed);
        }
    }
    let mut queries = Vec::with_capacity(list.len());
    for r in list {
        let id = &r.req_cert;
        let bare = match &id.hash_algorithm.parameters {
            None => true,
            Some(p) if der::Tagged::tag(p) == der::Tag::Null && p.value().is_empty() => false,
            Some(_) => return Err(Refusal::Malformed),
        };
        let (alg, ok) = match id.hash_algorithm.oid {
            ID_SHA1 => (
                if bare {
                    HashAlg::Sha1Bare
                } else {
                    HashAlg::Sha1
                },
                id.issuer_name_hash.as_bytes() == issuer.sha1.0
                    && id.issuer_key_hash.as_bytes() == issuer.sha1.1,
            ),
            ID_SHA256 => (
                if bare {
                    HashAlg::Sha256Bare
                } else {
                    HashAlg::Sha256
                },
                id.issuer_name_hash.as_bytes() == issuer.sha256.0
                    && id.issuer_key_hash.as_bytes() == issuer.sha256.1,
            ),
            _ => return Err(Refusal::Malformed),
        };
        if !ok {
            return Err(Refusal::Unauthorized);
        }
        let raw = id.serial_number.as_bytes();
        let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
        queries.push(Query {
            alg,
            serial: raw[start..].to_vec(),
            cert_id: id.clone(),
        });
    }
    Ok(Parsed { queries, nonce })
}

#[cfg(test)]
mod tests {
    use der::Encode;
    use der::asn1::OctetString;
    use muhr_pkix::ocsp::{Request, TbsRequest, Version};
    use x509_cert::ext::Extension;

    use super::*;
    use crate::IssuerHashes;

    const SHA1: &str = "1.3.14.3.2.26";
    const SHA256: &str = "2.16.840.1.101.3.4.2.1";

    fn issuer() -> IssuerHashes {
        IssuerHashes {
            name: "issuing".into(),
            sha1: ([1; 20], [2; 20]),
            sha256: ([3; 32], [4; 32]),
        }
    }

    fn request(alg: &str, name: &[u8], key: &[u8], n: usize, nonce: Option<Vec<u8>>) -> Vec<u8> {
        request_with(alg, name, key, n, nonce.into_iter().collect())
    }

    fn request_with(alg: &str, name: &[u8], key: &[u8], n: usize, nonces: Vec<Vec<u8>>) -> Vec<u8> {
        let id = CertId {
            hash_algorithm: spki::AlgorithmIdentifierOwned {
                oid: alg.parse().unwrap(),
                parameters: None,
            },
            issuer_name_hash: OctetString::new(name).unwrap(),
            issuer_key_hash: OctetString::new(key).unwrap(),
            serial_number: x509_cert::serial_number::SerialNumber::new(&[0x4a, 0x01]).unwrap(),
        };
        let exts = (!nonces.is_empty()).then(|| {
            nonces
                .into_iter()
                .map(|n| Extension {
                    extn_id: ID_PKIX_OCSP_NONCE,
                    critical: false,
                    extn_value: OctetString::new(OctetString::new(n).unwrap().to_der().unwrap())
                        .unwrap(),
                })
                .collect()
        });
        OcspRequest {
            tbs_request: TbsRequest {
                version: Version::V1,
                requestor_name: None,
                request_list: vec![
                    Request {
                        req_cert: id,
                        single_request_extensions: None
                    };
                    n
                ],
                request_extensions: exts,
            },
            optional_signature: None,
        }
        .to_der()
        .unwrap()
    }

    /// `request` with the CertID's hash parameters written as given.
    fn with_parameters(parameters: Option<der::Any>) -> Vec<u8> {
        let mut req = OcspRequest::from_der(&request(SHA1, &[1; 20], &[2; 20], 1, None)).unwrap();
        req.tbs_request.request_list[0]
            .req_cert
            .hash_algorithm
            .parameters = parameters;
        req.to_der().unwrap()
    }

    /// A client that writes the parameters one way gets its own CertID
    /// back, never the cached form of whoever asked first (a client that
    /// compares CertIDs byte for byte would reject the other), and junk
    /// parameters are refused rather than echoed into a cached response.
    #[test]
    fn hash_parameters_key_the_cache_and_junk_is_refused() {
        let alg = |body: &[u8]| parse(body, 4, &issuer()).ok().unwrap().queries[0].alg;
        assert_eq!(alg(&with_parameters(None)), HashAlg::Sha1Bare);
        assert_eq!(
            alg(&with_parameters(Some(der::asn1::Null.into()))),
            HashAlg::Sha1
        );
        let junk = der::Any::encode_from(&OctetString::new(vec![1u8]).unwrap()).unwrap();
        assert_eq!(refused(&with_parameters(Some(junk))), "malformed");
    }

    fn refused(body: &[u8]) -> &'static str {
        match parse(body, 4, &issuer()) {
            Ok(_) => "accepted",
            Err(Refusal::Malformed) => "malformed",
            Err(Refusal::Unauthorized) => "unauthorized",
        }
    }

    #[test]
    fn requests_are_checked() {
        let ok = parse(
            &request(SHA1, &[1; 20], &[2; 20], 2, Some(vec![7; 32])),
            4,
            &issuer(),
        )
        .ok()
        .unwrap();
        assert_eq!(ok.queries.len(), 2);
        assert_eq!(ok.queries[0].serial, [0x4a, 0x01]);
        assert_eq!(ok.nonce, Some(vec![7; 32]));
        assert!(parse(&request(SHA256, &[3; 32], &[4; 32], 1, None), 4, &issuer()).is_ok());
        assert_eq!(
            refused(&request(SHA1, &[1; 20], &[2; 20], 1, Some(vec![7; 33]))),
            "malformed"
        );
        assert_eq!(
            refused(&request(SHA1, &[1; 20], &[2; 20], 1, Some(vec![]))),
            "malformed"
        );
        assert_eq!(
            refused(&request(SHA1, &[1; 20], &[2; 20], 5, None)),
            "malformed"
        );
        assert_eq!(
            refused(&request(SHA1, &[1; 20], &[2; 20], 0, None)),
            "malformed"
        );
        assert_eq!(
            refused(&request(
                "2.16.840.1.101.3.4.2.3",
                &[1; 20],
                &[2; 20],
                1,
                None
            )),
            "malformed"
        );
        assert_eq!(
            refused(&request(SHA1, &[9; 20], &[2; 20], 1, None)),
            "unauthorized"
        );
        assert_eq!(
            refused(&request(SHA256, &[3; 32], &[9; 32], 1, None)),
            "unauthorized"
        );
        // A replayed or confused client sending two nonces gets no answer
        // echoing one of them.
        assert_eq!(
            refused(&request_with(
                SHA1,
                &[1; 20],
                &[2; 20],
                1,
                vec![vec![7; 16], vec![8; 16]]
            )),
            "malformed"
        );
        let good = request(SHA1, &[1; 20], &[2; 20], 1, None);
        for cut in 0..good.len() {
            assert_eq!(refused(&good[..cut]), "malformed", "truncated at {cut}");
        }
        assert_eq!(refused(b"\x30\x80\x00\x00"), "malformed");
    }
}

//! The renewal request's envelope: a Certificate Management over CMS (RFC
//! 5272) Full PKI Request, PKIData, in a SignedData whose content type is
//! id-cct-PKIData. Muhr accepts one shape of it: one PKCS#10 request, the
//! server's renewal challenge echoed in id-cmc-recipientNonce, nothing else.
//!
//! Why not a signature over a bare CSR: a CSR signed as plain data (id-data)
//! is what any "please sign this document" or login client makes, so a
//! citizen tricked into signing one would hand out a certificate in their
//! name. A PKIData is made only by a client that means to ask for a
//! certificate, and the content type is signed, so no other signature can
//! be presented as one.

use der::asn1::{OctetString, SetOfVec};
use der::oid::ObjectIdentifier;
use der::{Any, Choice, Decode, Encode, Sequence};

/// id-cct-PKIData (RFC 5272 §3.2.1).
pub const ID_CCT_PKI_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.12.2");
/// id-cmc-recipientNonce (RFC 5272 §6.6): the nonce the server gave, echoed.
pub const ID_CMC_RECIPIENT_NONCE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.7.7");

/// The body part of the request and of the nonce control.
const REQUEST_PART: u32 = 1;
const NONCE_PART: u32 = 2;

/// `PKIData` (RFC 5272 §3.2.1); the module's tags are implicit.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct PkiData {
    /// The controls; [`parse`] accepts only one, the recipientNonce.
    pub control_sequence: Vec<TaggedAttribute>,
    /// The requests; [`parse`] accepts exactly one.
    pub req_sequence: Vec<TaggedRequest>,
    /// Nested CMS content; [`parse`] refuses any.
    pub cms_sequence: Vec<Any>,
    /// Other messages; [`parse`] refuses any.
    pub other_msg_sequence: Vec<Any>,
}

/// `TaggedAttribute`: one control of a PKIData.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct TaggedAttribute {
    /// Its body part id ([`request`] writes 2); not checked when read.
    pub body_part_id: u32,
    /// Which control; [`parse`] knows only [`ID_CMC_RECIPIENT_NONCE`].
    pub attr_type: ObjectIdentifier,
    /// The control's values; the nonce needs exactly one, an OCTET STRING.
    pub attr_values: SetOfVec<Any>,
}

/// `TaggedRequest`; only its PKCS#10 alternative (`tcr`) is accepted: a
/// certificate request message (`crm`) or another kind fails to decode.
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
pub enum TaggedRequest {
    /// A PKCS#10 request (`tcr`, tag `[0]`).
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", constructed = "true")]
    Tcr(TaggedCertificationRequest),
}

/// `TaggedCertificationRequest`: a PKCS#10 request and its body part id.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct TaggedCertificationRequest {
    /// [`request`] writes 1; not checked when read.
    pub body_part_id: u32,
    /// Kept as it came: its own signature covers these exact bytes.
    pub certification_request: Any,
}

/// What a renewal request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The PKCS#10 request, DER.
    pub csr: Vec<u8>,
    /// The server's challenge, as echoed.
    pub recipient_nonce: Vec<u8>,
}

/// A PKIData carrying `csr` (DER) and the server's `nonce`.
pub fn request(csr: &[u8], nonce: &[u8]) -> Result<Vec<u8>, der::Error> {
    let nonce = Any::encode_from(&OctetString::new(nonce)?)?;
    PkiData {
        control_sequence: vec![TaggedAttribute {
            body_part_id: NONCE_PART,
            attr_type: ID_CMC_RECIPIENT_NONCE,
            attr_values: SetOfVec::try_from(vec![nonce])?,
        }],
        req_sequence: vec![TaggedRequest::Tcr(TaggedCertificationRequest {
            body_part_id: REQUEST_PART,
            certification_request: Any::from_der(csr)?,
        })],
        cms_sequence: Vec::new(),
        other_msg_sequence: Vec::new(),
    }
    .to_der()
}

/// Reads a renewal request: exactly one PKCS#10 request and one
/// recipientNonce; any other control, nested message or request is refused
/// (RFC 5272 makes an unrecognised control a failure).
pub fn parse(bytes: &[u8]) -> Result<Request, String> {
    let p = PkiData::from_der(bytes).map_err(|e| format!("not a CMC PKIData: {e}"))?;
    if !p.cms_sequence.is_empty() || !p.other_msg_sequence.is_empty() {
        return Err("nested CMS content and other messages are not accepted".into());
    }
    let [TaggedRequest::Tcr(tcr)] = p.req_sequence.as_slice() else {
        return Err(format!(
            "exactly one PKCS#10 request is accepted; this one has {}",
            p.req_sequence.len()
        ));
    };
    let mut nonce = None;
    for c in &p.control_sequence {
        if c.attr_type != ID_CMC_RECIPIENT_NONCE {
            return Err(format!("control {} is not supported", c.attr_type));
        }
        let ([value], None) = (c.attr_values.as_slice(), nonce.as_ref()) else {
            return Err("exactly one recipientNonce with one value is required".into());
        };
        let o = value
            .decode_as::<OctetString>()
            .map_err(|e| format!("recipientNonce: {e}"))?;
        nonce = Some(o.as_bytes().to_vec());
    }
    Ok(Request {
        csr: tcr
            .certification_request
            .to_der()
            .map_err(|e| e.to_string())?,
        recipient_nonce: nonce.ok_or("the renewal challenge (recipientNonce) is missing")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal DER SEQUENCE standing in for a CSR: PKIData keeps it as is.
    const CSR: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x05];

    #[test]
    fn a_request_reads_back() {
        let der = request(CSR, b"renew-ABC.1.n.t").unwrap();
        assert_eq!(
            parse(&der).unwrap(),
            Request {
                csr: CSR.to_vec(),
                recipient_nonce: b"renew-ABC.1.n.t".to_vec()
            }
        );
    }

    #[test]
    fn other_shapes_are_refused() {
        let good = PkiData::from_der(&request(CSR, b"n").unwrap()).unwrap();
        let mut no_nonce = good.clone();
        no_nonce.control_sequence.clear();
        let mut two_requests = good.clone();
        two_requests.req_sequence.push(good.req_sequence[0].clone());
        let mut unknown_control = good.clone();
        unknown_control.control_sequence[0].attr_type =
            ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.7.6");
        let mut nested = good.clone();
        nested.cms_sequence.push(Any::from_der(CSR).unwrap());
        for (what, p, want) in [
            ("no nonce", no_nonce, "missing"),
            ("two requests", two_requests, "exactly one PKCS#10"),
            ("unknown control", unknown_control, "not supported"),
            ("nested", nested, "nested"),
        ] {
            let e = parse(&p.to_der().unwrap()).unwrap_err();
            assert!(e.contains(want), "{what}: {e}");
        }
        assert!(parse(b"\x30\x00").unwrap_err().contains("PKIData"));
        assert!(parse(CSR).is_err());
    }
}

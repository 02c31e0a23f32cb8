//! CRL entries. Reason extensions and revocation times repeat across a
//! million entries; each distinct one is encoded once.

use std::collections::HashMap;

use der::Encode;
use der::asn1::{AnyRef, UintRef};
use x509_cert::ext::pkix::crl::CrlReason;
use x509_cert::time::Time;

use super::sign::{ext, internal, time};
use crate::IssueError;

pub use muhr_pkix::reason::REMOVE_FROM_CRL;

/// The reason as an entry carries it: none for `unspecified` (0), whose
/// extension RFC 5280 §5.3.1 says to leave out.
fn reason_enum(code: i64) -> Option<CrlReason> {
    (code != 0)
        .then(|| muhr_pkix::reason::from_code(code))
        .flatten()
}

/// revokedCertificates' element (RFC 5280 5.1), with the entry extensions
/// held as their already encoded SEQUENCE: a million entries share a handful
/// of distinct reason extensions, each encoded once from the typed value.
#[derive(der::Sequence)]
struct Entry<'a> {
    serial_number: UintRef<'a>,
    revocation_date: Time,
    crl_entry_extensions: Option<AnyRef<'a>>,
}

#[derive(Default)]
pub struct EntryEncoder {
    /// Reason code → DER of `SEQUENCE OF Extension` (None: no extension).
    reasons: HashMap<i64, Option<Vec<u8>>>,
    times: HashMap<i64, Time>,
}

impl EntryEncoder {
    /// Appends the DER of one entry to `out`.
    pub fn encode(
        &mut self,
        serial_hex: &str,
        at: i64,
        reason: Option<i64>,
        out: &mut Vec<u8>,
    ) -> Result<(), IssueError> {
        let mut buf = [0u8; 20];
        let serial = buf.get_mut(..serial_hex.len() / 2).ok_or_else(|| {
            IssueError::Internal(format!("stored serial {serial_hex} is too long"))
        })?;
        hex::decode_to_slice(serial_hex, serial).map_err(internal("stored serial"))?;
        // As x509-cert's SerialNumber: unsigned, at most 20 octets encoded.
        let serial_number = UintRef::new(serial).map_err(internal("stored serial"))?;
        if der::EncodeValue::value_len(&serial_number).map_err(internal("stored serial"))?
            > der::Length::new(20)
        {
            return Err(IssueError::Internal(format!(
                "stored serial {serial_hex} needs more than 20 octets"
            )));
        }
        let extensions = match reason {
            None => None,
            Some(code) => {
                if let std::collections::hash_map::Entry::Vacant(slot) = self.reasons.entry(code) {
                    let encoded = reason_enum(code)
                        .map(|reason| -> Result<Vec<u8>, IssueError> {
                            vec![ext(&reason)?]
                                .to_der()
                                .map_err(internal("CRL entry extensions"))
                        })
                        .transpose()?;
                    slot.insert(encoded);
                }
                self.reasons.get(&code).and_then(|e| e.as_deref())
            }
        };
        let revocation_date = match self.times.get(&at) {
            Some(t) => *t,
            None => {
                let t = time(at)?;
                self.times.insert(at, t);
                t
            }
        };
        Entry {
            serial_number,
            revocation_date,
            crl_entry_extensions: extensions
                .map(AnyRef::try_from)
                .transpose()
                .map_err(internal("CRL entry extensions"))?,
        }
        .encode_to_vec(out)
        .map_err(internal("encoding a CRL entry"))?;
        Ok(())
    }
}

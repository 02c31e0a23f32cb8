//! CRL entries. Reason extensions and revocation times repeat across a
//! million entries; each distinct one is encoded once.

use std::collections::HashMap;

use x509_cert::crl::RevokedCert;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::crl::CrlReason;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;

use super::sign::{ext, internal, time};
use crate::IssueError;

/// removeFromCRL (RFC 5280 5.3.1): in a delta CRL, a certificate restored
/// from hold.
pub const REMOVE_FROM_CRL: i64 = 8;

fn reason_enum(code: i64) -> Option<CrlReason> {
    Some(match code {
        1 => CrlReason::KeyCompromise,
        2 => CrlReason::CaCompromise,
        3 => CrlReason::AffiliationChanged,
        4 => CrlReason::Superseded,
        5 => CrlReason::CessationOfOperation,
        6 => CrlReason::CertificateHold,
        8 => CrlReason::RemoveFromCRL,
        9 => CrlReason::PrivilegeWithdrawn,
        10 => CrlReason::AaCompromise,
        // unspecified (0): RFC 5280 5.3.1 says leave the extension out.
        _ => return None,
    })
}

#[derive(Default)]
pub struct EntryEncoder {
    reasons: HashMap<i64, Option<Extension>>,
    times: HashMap<i64, Time>,
}

impl EntryEncoder {
    pub fn entry(
        &mut self,
        serial_hex: &str,
        at: i64,
        reason: Option<i64>,
    ) -> Result<RevokedCert, IssueError> {
        let serial = hex::decode(serial_hex).map_err(internal("stored serial"))?;
        let extension = match reason {
            Some(code) => match self.reasons.get(&code) {
                Some(e) => e.clone(),
                None => {
                    let e = reason_enum(code).map(|reason| ext(&reason)).transpose()?;
                    self.reasons.insert(code, e.clone());
                    e
                }
            },
            None => None,
        };
        let revocation_date = match self.times.get(&at) {
            Some(t) => *t,
            None => {
                let t = time(at)?;
                self.times.insert(at, t);
                t
            }
        };
        Ok(RevokedCert {
            serial_number: SerialNumber::new(&serial).map_err(internal("stored serial"))?,
            revocation_date,
            crl_entry_extensions: extension.map(|e| vec![e]),
        })
    }
}

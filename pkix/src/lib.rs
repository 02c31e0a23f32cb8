//! The formats every part of Muhr reads and writes, one copy each: PEM,
//! certificate serial numbers, distinguished names as text, JSON Web
//! Signatures, the OCSP messages as typed ASN.1 ([`ocsp`]) and the
//! revocation reason codes ([`reason`]).
//!
//! It holds no key, no policy and no state: functions from bytes to values
//! and back. It must never depend on another Muhr crate, so that every one
//! of them can use it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod dn_text;
pub mod jws;
pub mod ocsp;
pub mod pem;
pub mod reason;
pub mod serial;

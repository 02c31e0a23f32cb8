//! Signature validation: is this CMS signature intact, who made it, and may
//! it be relied on now.
//!
//! Owns the CMS verification ([`cms`]), the trust decision over a
//! certificate — Muhr's own CA read from the store, or another CA the
//! operator chose to trust, asked through its OCSP responder or CRL
//! ([`external`]) — and the verification service built on both
//! ([`signatures`]). Login and citizens' renewals use it to know who signed.
//!
//! It must never decide what a person may obtain (that is the RA's) nor
//! write to the store: it only reads status.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cades;
pub mod cms;
pub mod external;
pub mod pdf;
pub mod signatures;
pub mod timestamp;
pub mod trust;

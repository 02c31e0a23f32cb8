//! Login into the identity system by certificate, and the relying parties'
//! API around it.
//!
//! A relying party (a state body, a bank) asks for a one-time challenge
//! ([`challenge`]), the citizen signs it, and [`login`] checks the signature
//! and the certificate through `muhr-validation`, consumes the challenge
//! once across all nodes ([`record`]) and answers with an identity
//! assertion signed by a key in the HSM ([`assertion`]). Relying parties are
//! registered, authenticated and metered in [`relying`]; [`http`] is their
//! API, including the signature verification service.
//!
//! It must never issue, revoke or change a certificate: login reads status
//! and writes only challenge uses (the login record), usage counts, and the
//! relying-party registry with its audit entries (`muhr rp add`). It gets
//! the store from `muhr-validation`'s trust, never the CA.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod assertion;
pub mod challenge;
pub mod http;
pub mod login;
pub mod record;
pub mod relying;

//! The registration authority: it decides, the CA only signs.
//!
//! Two ways in, one folder each. The personalization line sends each card it
//! makes ([`card`]): the RA checks the person, the document and the chip's
//! keys, claims the card job so a retry never issues twice, asks the CA for
//! the certificates and supersedes the person's previous card. Citizens
//! already authenticated by the identity system ask remotely ([`citizen`]).
//! The population registry's events (deaths, lost and invalidated
//! documents, name changes) change the certificates they concern
//! ([`registry`]).
//! Operators look up people and certificates and change their status
//! ([`http`], the mutual-TLS API of the line and the operators; callers are
//! known to `muhr_http::clients`).
//!
//! The RA must never hold a key or sign: identity checks, policy and
//! idempotency are decided here, and the CA is asked only to record and sign.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod card;
pub mod citizen;
pub mod http;
pub mod registry;

pub use card::config::PersonalizationConfig;
pub use card::personalize::{CardError, CardOutcome, Personalizer};
pub use card::{CardRequest, Refusal, Rules};

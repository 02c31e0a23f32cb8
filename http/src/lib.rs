//! The HTTP edge every service shares: who the caller is, how much it may
//! send, and how a refusal looks.
//!
//! Owns the registry of mutual-TLS callers and their roles ([`clients`]),
//! the per-client rate limits ([`ratelimit`]), the one error shape and the
//! body rules ([`answer`]) and the published route description
//! ([`openapi`]). The RA, login and the citizens' API build their routes on
//! it; it knows none of them.
//!
//! It must never decide anything about a person or a certificate beyond
//! "may this caller call": decisions belong to the services.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod answer;
pub mod clients;
pub mod openapi;
pub mod ratelimit;

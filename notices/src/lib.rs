//! Notices to people about their certificates, delivered to the
//! e-government notification system: the delivery worker, which takes due
//! notices from the store's outbox (`muhr_store::notices`) and POSTs each,
//! signed, to the configured webhook, retrying with backoff; and the
//! periodic scan that queues notices for certificates nearing expiry.
//!
//! What it owns: the webhook's message (JSON and headers, see
//! `docs/notices.md`), its signature (HMAC-SHA256 with a key from a file, or
//! ES256 with a key in the key store), the retry schedule, and when the
//! expiry scan runs.
//!
//! It must never decide what happens to a certificate or a person (notices
//! are recorded by whoever acts, in the act's own transaction); never send a
//! notice's cause twice on its own account (a delivery is leased, and a
//! notice accepted by the receiver is marked so before another is taken);
//! never put more personal data in a message than the notice holds (PINFL,
//! serial, kind, reason, date); and never write a secret (the HMAC key, a
//! password in the webhook's URL) into a log line or a stored error.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod signing;
mod worker;

pub use config::{DEFAULT_EXPIRY_DAYS, DEFAULT_SCAN, NoticesConfig};
pub use signing::{Signer, hmac_sha256_hex};
pub use worker::{Outcome, Worker, run_expiry_scan};

//! Citizens served remotely: people the identity system has already
//! authenticated, with verified personal data, get and manage their own
//! certificates.
//!
//! [`oidc`] verifies the identity system's ID tokens; [`service`] issues
//! from a CSR, renews on proof of the current key (a CMC request, [`cmc`]),
//! lists, suspends and revokes; [`http`] is the citizens' API on the public
//! listener. The subject always comes from the verified token, never from
//! what the citizen sends.

pub mod cmc;
pub mod http;
pub mod oidc;
pub mod renew;
pub mod service;

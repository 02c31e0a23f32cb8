//! The registration authority: it decides, the CA only signs.
//!
//! The personalization line sends each card it makes; the RA checks the person,
//! the document and the chip's keys, claims the card job so a retry never issues
//! twice, asks the CA for the certificates and supersedes the person's previous
//! card. Operators look up people and certificates and change their status.
//! Callers are mutual-TLS clients known to the registry in [`clients`].

pub mod assertion;
pub mod card;
pub mod challenge;
pub mod citizen_http;
pub mod clients;
pub mod cmc;
pub mod cms;
pub mod config;
pub mod external;
pub mod http;
pub mod job_recording;
pub mod jws;
pub mod login;
pub mod login_record;
pub mod oidc;
pub mod personalize;
pub mod ratelimit;
pub mod relying;
pub mod remote;
pub mod report;
pub mod rp_http;
pub mod signatures;
pub mod trust;

pub use card::{CardRequest, Refusal, Rules};
pub use config::PersonalizationConfig;
pub use personalize::{CardError, CardOutcome, Personalizer};

//! The personalization line's cards: one card job becomes the person's
//! certificates, exactly once.
//!
//! [`request`] holds what the line sends and the checks that need no
//! database; [`personalize`] claims the job, asks the CA for the
//! certificates and supersedes the person's previous card, with the jobs
//! kept in the CA's two commits by [`jobs`]; [`report`] gives the pilot's
//! figures per district; [`config`] the line's settings.

pub mod config;
pub mod jobs;
pub mod personalize;
pub mod report;
pub mod request;

pub use request::{CardRequest, Date, Refusal, Rules};

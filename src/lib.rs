//! The `muhr` binary's parts: the CLI's commands and the HTTP wiring over
//! the library crates. A library so that the benchmark binary
//! (`muhr-bench`, in `bench/`) can drive the same server in its own
//! process without any benchmark code being linked into `muhr`.

#![deny(missing_docs)]

pub mod app;
pub mod approval_cli;
pub mod citizen_cli;
pub mod commands;
pub mod config;
pub mod crl_http;
pub mod listener;
pub mod mtls;
pub mod notices_cli;
pub mod ra_cli;
pub mod registry_cli;
pub mod rp_cli;
pub mod serve;

/// A command's failure: the message for stderr and the exit code.
#[derive(Debug)]
pub struct Fail {
    /// The process's exit code: 1 for a refusal or an internal error, 2 when
    /// `muhr verify` cannot read its input.
    pub code: u8,
    /// Printed on stderr after `muhr: `, with any password in a URL masked.
    pub message: String,
}

impl Fail {
    /// Refused or invalid input: exit 1.
    pub fn invalid(m: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: m.into(),
        }
    }
    /// Something broke on our side: also exit 1, but worded as such.
    pub fn internal(m: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: format!("internal error: {}", m.into()),
        }
    }
}

impl From<muhr_ca::IssueError> for Fail {
    fn from(e: muhr_ca::IssueError) -> Self {
        match e {
            muhr_ca::IssueError::Refused(f) => Fail::invalid(format!("refused: {f}")),
            other => Fail::internal(other.to_string()),
        }
    }
}

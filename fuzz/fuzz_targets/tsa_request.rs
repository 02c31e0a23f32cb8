//! Untrusted TimeStampReq bytes (`POST /tsa` bodies) through the TSA's
//! parser, and the same bytes read as replies and TSTInfos: any input must
//! end in an accepted request or a rejection, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    muhr_tsa::fuzz::request(data);
});

//! Untrusted OCSP request bytes (POST bodies, decoded GET paths) through the
//! responder's parser: any input must end in a query list or a refusal.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    muhr_ocsp_responder::fuzz::request(data);
});

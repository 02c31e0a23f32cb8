//! Untrusted CMS bytes, as login, renewal and the verification service get
//! them: any input must end in a verified signature or a refusal with a
//! reason, never a panic. Both modes are tried: the content carried, and a
//! detached content given beside (here the input itself).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = muhr_validation::cms::verify(data, None);
    let _ = muhr_validation::cms::verify(data, Some(data));
    // The renewal request inside such a signature.
    let _ = muhr_ra::citizen::cmc::parse(data);
});

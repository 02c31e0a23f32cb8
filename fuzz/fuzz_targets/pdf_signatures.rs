//! Untrusted PDF bytes, as the verification service gets them: any input
//! must end in signatures whose byte ranges obey the rules, or a refusal
//! with a reason, never a panic nor a hang. What is checked of each
//! signature found is what `validation/tests/pdf.rs` asserts of every
//! signature it is given: the range starts at the first byte, its gap is
//! exactly a `<hex>` string, and the signed bytes are those it names.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sigs) = muhr_validation::pdf::signatures(data) else {
        return;
    };
    assert!(sigs.len() <= muhr_validation::pdf::MAX_SIGNATURES);
    for sig in &sigs {
        let [a, b, c, d] = sig.byte_range.map(|v| usize::try_from(v).unwrap());
        assert_eq!(a, 0);
        assert!(b < c && c <= data.len() && d <= data.len() - c);
        assert_eq!(data[b], b'<');
        assert_eq!(data[c - 1], b'>');
        assert!(data[b + 1..c - 1].iter().all(u8::is_ascii_hexdigit));
        assert_eq!(sig.signed.len(), b + d);
        assert_eq!(&sig.signed[..b], &data[..b]);
        assert_eq!(&sig.signed[b..], &data[c..c + d]);
        assert_eq!(sig.covers_whole_file, c + d == data.len());
        // The CMS inside, as the verification service reads it next.
        let _ = muhr_validation::cms::verify(&sig.cms, Some(&sig.signed));
    }
});

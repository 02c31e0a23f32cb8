//! PDF signatures made by a real signer (pyHanko) read back by
//! `muhr_validation::pdf`, then bent the ways an attacker would bend them.
//! Every PDF is made at test time: a minimal PDF written here, signed,
//! updated and re-signed by pyHanko; nothing binary is committed.
//!
//! pyHanko is required (`tests/run.sh` installs it): without it these tests
//! fail, they never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use muhr_validation::cms;
use muhr_validation::pdf::{self, PdfError, PdfSignature};

/// A working directory with a P-256 key and a self-signed certificate.
struct Signer {
    dir: tempfile::TempDir,
}

impl Signer {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=Muhr PDF test signer",
                "-days",
                "2",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
            ])
            .current_dir(dir.path())
            .output()
            .expect("openssl not installed");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Signer { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    /// `pyhanko sign addsig` with the PEM key, the way the CLI is used.
    fn sign(&self, input: &[u8], field: &str, extra: &[&str]) -> Vec<u8> {
        let name = format!("{field}-{}", extra.join(""));
        let input = self.write(&format!("{name}-in.pdf"), input);
        let output = self.path(&format!("{name}-out.pdf"));
        let mut args = vec!["sign", "addsig", "--field", field];
        args.extend(extra);
        args.extend([
            "pemder",
            "--no-pass",
            "--key",
            "key.pem",
            "--cert",
            "cert.pem",
        ]);
        let input = input.to_str().unwrap();
        let out_str = output.to_str().unwrap();
        args.extend([input, out_str]);
        pyhanko(&args, self.dir.path());
        std::fs::read(output).expect("pyhanko wrote no output")
    }

    /// A script run with pyHanko's Python API.
    fn python(&self, script: &str, args: &[&Path]) {
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("pyhanko not installed: python3 cannot be run ({e})"));
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("No module named") {
                panic!(
                    "pyhanko not installed: {stderr} (python3 -m pip install pyhanko pyhanko-cli)"
                );
            }
            panic!("pyhanko script failed: {stderr}");
        }
    }
}

fn pyhanko(args: &[&str], dir: &Path) {
    let out = Command::new("python3")
        .args(["-m", "pyhanko"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("pyhanko not installed: python3 cannot be run ({e})"));
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No module named") {
            panic!(
                "pyhanko not installed: {stderr} (python3 -m pip install pyhanko pyhanko-cli, as tests/run.sh does)"
            );
        }
        panic!(
            "pyhanko {args:?} failed: {stderr}{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// A one-page PDF 1.7 with a classic cross-reference table, offsets
/// computed as written.
fn minimal_pdf() -> Vec<u8> {
    let content: &[u8] = b"BT /F1 12 Tf 72 720 Td (Muhr test document) Tj ET";
    let objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>".to_vec(),
        [
            format!("<< /Length {} >>\nstream\n", content.len()).as_bytes(),
            content,
            b"\nendstream",
        ]
        .concat(),
    ];
    let mut pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend(format!("{} 0 obj\n", i + 1).as_bytes());
        pdf.extend(o);
        pdf.extend(b"\nendobj\n");
    }
    let xref = pdf.len();
    pdf.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        pdf.extend(format!("{o:010} 00000 n \n").as_bytes());
    }
    pdf.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

/// A PDF whose objects sit in a compressed object stream and whose
/// cross-reference is a stream, as pyHanko and Acrobat write them.
const OBJECT_STREAMS: &str = r#"
import sys
from pyhanko.pdf_utils.writer import PdfFileWriter
from pyhanko.pdf_utils import generic
w = PdfFileWriter(stream_xrefs=True)
ostm = w.prepare_object_stream()
content = w.add_object(generic.StreamObject(stream_data=b"BT /F1 12 Tf 72 720 Td (Muhr) Tj ET"))
page = generic.DictionaryObject({
    generic.NameObject('/Type'): generic.NameObject('/Page'),
    generic.NameObject('/MediaBox'): generic.ArrayObject([generic.NumberObject(x) for x in (0, 0, 595, 842)]),
    generic.NameObject('/Contents'): content,
})
w.insert_page(page)
note = generic.DictionaryObject({generic.NameObject('/Note'): generic.TextStringObject('in an object stream')})
w.root['/MuhrNote'] = w.add_object(note, obj_stream=ostm)
with open(sys.argv[1], "wb") as o:
    w.write(o)
"#;

/// An incremental update that replaces the page's text: what anyone can
/// append to a signed PDF without the signer's key.
const FORGE: &str = r#"
import sys
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils import generic
with open(sys.argv[1], "rb") as f:
    w = IncrementalPdfFileWriter(f)
    page = w.root["/Pages"].raw_get("/Kids")[0].get_object()
    page["/Contents"] = w.add_object(generic.StreamObject(stream_data=b"BT /F1 12 Tf 72 720 Td (Forged) Tj ET"))
    w.update_container(page)
    with open(sys.argv[2], "wb") as o:
        w.write(o)
"#;

fn verify(sig: &PdfSignature) -> Result<cms::Verified, cms::CmsError> {
    cms::verify(&sig.cms, Some(&sig.signed))
}

/// What must hold of every signature reported, whatever the input.
fn assert_sound(pdf: &[u8], sig: &PdfSignature) {
    let [a, b, c, d] = sig.byte_range.map(|v| usize::try_from(v).unwrap());
    assert_eq!(a, 0);
    assert!(b < c && c + d <= pdf.len());
    assert_eq!(pdf[b], b'<');
    assert_eq!(pdf[c - 1], b'>');
    assert!(pdf[b + 1..c - 1].iter().all(u8::is_ascii_hexdigit));
    assert_eq!(sig.signed.len(), b + d);
    assert_eq!(&sig.signed[..b], &pdf[..b]);
    assert_eq!(&sig.signed[b..], &pdf[c..c + d]);
    assert_eq!(sig.covers_whole_file, c + d == pdf.len());
}

fn find(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// Overwrites `pdf[at..]` with `text` padded with spaces to `width` bytes,
/// keeping every other offset where it was.
fn overwrite(pdf: &[u8], at: usize, width: usize, text: &str) -> Vec<u8> {
    assert!(text.len() <= width, "{text} does not fit in {width} bytes");
    let mut out = pdf.to_vec();
    out[at..at + width].copy_from_slice(format!("{text:width$}").as_bytes());
    out
}

/// The `[...]` of the `n`th `/ByteRange` and the padding pyHanko leaves
/// after it (it writes the array before knowing the numbers).
fn byte_range_slot(pdf: &[u8], n: usize) -> (usize, usize) {
    let key = find(pdf, b"/ByteRange [")[n];
    let at = key + b"/ByteRange ".len();
    let width = pdf[at..].iter().position(|&c| c == b'\n').unwrap();
    (at, width)
}

fn with_byte_range(pdf: &[u8], n: usize, text: &str) -> Vec<u8> {
    let (at, width) = byte_range_slot(pdf, n);
    overwrite(pdf, at, width, text)
}

fn expect_error(pdf: &[u8], code: &str, what: &str) -> PdfError {
    match pdf::signatures(pdf) {
        Err(e) => {
            assert_eq!(e.code, code, "{what}: {e}");
            e
        }
        Ok(sigs) => panic!("{what}: accepted as {} signature(s)", sigs.len()),
    }
}

fn signed_once() -> (Signer, Vec<u8>) {
    let s = Signer::new();
    let pdf = s.sign(&minimal_pdf(), "Sig1", &[]);
    (s, pdf)
}

#[test]
fn a_pyhanko_signature_is_found_and_verifies() {
    let (_s, pdf) = signed_once();
    let sigs = pdf::signatures(&pdf).unwrap();
    assert_eq!(sigs.len(), 1);
    let sig = &sigs[0];
    assert_sound(&pdf, sig);
    assert_eq!(sig.field.as_deref(), Some("Sig1"));
    assert!(sig.covers_whole_file);
    assert_eq!(sig.later_revisions, 0);
    assert_eq!(sig.sub_filter.as_deref(), Some("adbe.pkcs7.detached"));
    // pyHanko reserves far more room than the CMS needs.
    let gap = (sig.byte_range[2] - sig.byte_range[1]) as usize;
    assert!(sig.cms.len() * 2 + 2 < gap);
    let v = verify(sig).expect("pyHanko's signature verifies");
    assert!(!v.attached);
    assert_eq!(
        v.signer.tbs_certificate().subject().to_string(),
        "CN=Muhr PDF test signer"
    );
}

#[test]
fn a_pades_signature_in_a_file_with_object_streams_and_an_xref_stream() {
    let s = Signer::new();
    let unsigned = s.path("objstm.pdf");
    s.python(OBJECT_STREAMS, &[&unsigned]);
    let unsigned = std::fs::read(unsigned).unwrap();
    assert!(!find(&unsigned, b"/ObjStm").is_empty() && !find(&unsigned, b"/XRef").is_empty());
    let pdf = s.sign(&unsigned, "Sig1", &["--use-pades"]);
    let sigs = pdf::signatures(&pdf).unwrap();
    assert_eq!(sigs.len(), 1);
    assert_sound(&pdf, &sigs[0]);
    assert_eq!(sigs[0].sub_filter.as_deref(), Some("ETSI.CAdES.detached"));
    assert_eq!(sigs[0].field.as_deref(), Some("Sig1"));
    assert!(sigs[0].covers_whole_file);
    // PAdES forbids the signingTime attribute: the signer's claim is absent.
    assert_eq!(verify(&sigs[0]).unwrap().signing_time, None);
}

#[test]
fn a_second_signature_leaves_the_first_not_covering_the_whole_file() {
    let (s, once) = signed_once();
    let twice = s.sign(&once, "Sig2", &[]);
    let sigs = pdf::signatures(&twice).unwrap();
    assert_eq!(sigs.len(), 2);
    for sig in &sigs {
        assert_sound(&twice, sig);
        verify(sig).expect("both signatures verify");
    }
    assert_eq!(sigs[0].field.as_deref(), Some("Sig1"));
    assert_eq!(sigs[1].field.as_deref(), Some("Sig2"));
    assert!(!sigs[0].covers_whole_file);
    assert_eq!(sigs[0].later_revisions, 1);
    assert_eq!(
        sigs[0].byte_range[2] + sigs[0].byte_range[3],
        once.len() as u64
    );
    assert!(sigs[1].covers_whole_file);
    assert_eq!(sigs[1].later_revisions, 0);
}

#[test]
fn an_appended_revision_is_reported_though_the_signature_still_verifies() {
    let (s, pdf) = signed_once();
    let signed = s.write("signed.pdf", &pdf);
    let forged = s.path("forged.pdf");
    s.python(FORGE, &[&signed, &forged]);
    let forged = std::fs::read(forged).unwrap();
    assert!(forged.starts_with(&pdf) && forged.len() > pdf.len());
    let sigs = pdf::signatures(&forged).unwrap();
    assert_eq!(sigs.len(), 1);
    assert_sound(&forged, &sigs[0]);
    // The signed bytes are intact, so the CMS verifies: only
    // covers_whole_file tells that the page now says something else.
    verify(&sigs[0]).unwrap();
    assert!(!sigs[0].covers_whole_file);
    assert_eq!(sigs[0].later_revisions, 1);

    // Bytes appended with no new revision marker count too.
    let mut junk = pdf.clone();
    junk.extend(b"\n% appended\n");
    let sigs = pdf::signatures(&junk).unwrap();
    assert!(!sigs[0].covers_whole_file);
    assert_eq!(sigs[0].later_revisions, 0);
}

#[test]
fn one_changed_byte_inside_the_signed_range_is_content_changed() {
    let (_s, pdf) = signed_once();
    let at = find(&pdf, b"Muhr test document")[0];
    let mut changed = pdf.clone();
    changed[at] = b'N';
    let sigs = pdf::signatures(&changed).unwrap();
    assert_eq!(sigs.len(), 1);
    assert!(sigs[0].covers_whole_file);
    assert_eq!(verify(&sigs[0]).unwrap_err().code, "content_changed");

    // In the second range too (after the signature value).
    let sig = &pdf::signatures(&pdf).unwrap()[0];
    let c = sig.byte_range[2] as usize;
    let at = c + find(&pdf[c..], b"/Filter")[0] + 1;
    let mut changed = pdf.clone();
    changed[at] = b'f';
    let sigs = pdf::signatures(&changed).unwrap();
    assert_eq!(verify(&sigs[0]).unwrap_err().code, "content_changed");
}

#[test]
fn byte_ranges_an_attacker_would_write_are_refused() {
    let (_s, pdf) = signed_once();
    let [_, b, c, d] = pdf::signatures(&pdf).unwrap()[0].byte_range;
    let len = pdf.len() as u64;
    let cases: Vec<(String, &str)> = vec![
        (format!("[1 {} {c} {d}]", b - 1), "not from the first byte"),
        (
            format!("[0 {} {c} {d}]", b - 1),
            "a byte before the value unsigned",
        ),
        (
            format!("[0 {} {c} {d}]", b + 1),
            "the value's first byte signed",
        ),
        (
            format!("[0 {b} {} {}]", c + 10, d - 10),
            "bytes after the value left unsigned",
        ),
        (
            format!("[0 {b} {} {d}]", c - 1),
            "the ranges overlap the value",
        ),
        (
            format!("[0 {} {c} {d}]", c + 5),
            "the first range overlaps the second",
        ),
        (format!("[0 {b} {c} {}]", d + 1), "past the end of the file"),
        (
            format!("[0 {b} {len} 0]"),
            "the second range empty at the end",
        ),
        (format!("[0 {b} {c} {}]", u64::MAX), "c + d overflows"),
        (format!("[0 {} {c} {d}]", u64::MAX), "a + b huge"),
        (format!("[0 {b} {c} 18446744073709551616]"), "beyond u64"),
        (
            format!("[0 {b} {c} 99999999999999999999999999999]"),
            "far beyond u64",
        ),
        (format!("[0 {b} {c}]"), "three numbers"),
        (format!("[0 {b} {c} {d} 0]"), "five numbers"),
        (format!("[0 {b} {c} -{d}]"), "a negative number"),
        (format!("[0 {b} {c} {d}.0]"), "a real number"),
        (format!("[0 {b} {c} [{d}]]"), "a nested array"),
        (format!("[0 {b} {c} /{d}]"), "a name"),
        (format!("[0 {b} {c} ({d})]"), "a string"),
    ];
    for (text, what) in cases {
        let bad = with_byte_range(&pdf, 0, &text);
        expect_error(&bad, "bad_byte_range", what);
    }
    // The signature dictionary's own last bytes (after /ByteRange, in
    // pyHanko's order) left unsigned: a range ending just after the value.
    let (at, _) = byte_range_slot(&pdf, 0);
    let short = with_byte_range(&pdf, 0, &format!("[0 {b} {c} {}]", at as u64 - c));
    let e = expect_error(&short, "bad_byte_range", "ends inside the dictionary");
    assert!(e.detail.contains("inside the signature dictionary"), "{e}");
    // An indirect /ByteRange: its numbers could be changed by a later
    // revision without touching the signed bytes.
    let key = find(&pdf, b"/ByteRange [")[0];
    let width = byte_range_slot(&pdf, 0).1 + b"/ByteRange ".len();
    let indirect = overwrite(&pdf, key, width, "/ByteRange 1 0 R");
    expect_error(&indirect, "bad_byte_range", "an indirect reference");
}

#[test]
fn contents_that_are_not_exact_padded_hex_are_refused() {
    let (_s, pdf) = signed_once();
    let [_, b, c, d] = pdf::signatures(&pdf).unwrap()[0].byte_range;
    let (b, c) = (b as usize, c as usize);

    let mut not_hex = pdf.clone();
    not_hex[c - 2] = b'g';
    expect_error(&not_hex, "bad_contents", "a non-hex digit in the padding");

    let mut spaced = pdf.clone();
    spaced[c - 2] = b' ';
    expect_error(&spaced, "bad_contents", "whitespace in the value");

    let mut smuggled = pdf.clone();
    smuggled[c - 2] = b'1';
    expect_error(&smuggled, "bad_contents", "non-zero bytes after the CMS");

    // Odd length: the closing `>` moved one byte left and the byte range
    // made to match, so only the hex itself is wrong.
    let mut odd = pdf.clone();
    odd[c - 2] = b'>';
    odd[c - 1] = b' ';
    let odd = with_byte_range(&odd, 0, &format!("[0 {b} {} {}]", c - 1, d + 1));
    let e = expect_error(&odd, "bad_contents", "odd-length hex");
    assert!(e.detail.contains("odd"), "{e}");

    // A value that is all padding: a placeholder never signed.
    let mut empty = pdf.clone();
    empty[b + 1..c - 1].fill(b'0');
    expect_error(&empty, "bad_contents", "an all-zero value");

    // /Contents as a literal string.
    let mut literal = pdf.clone();
    literal[b] = b'(';
    literal[c - 1] = b')';
    expect_error(&literal, "bad_contents", "a literal string");
}

#[test]
fn a_second_byte_range_or_contents_even_spelled_with_escapes_is_refused() {
    let (_s, pdf) = signed_once();
    let filter = b"/Filter /Adobe.PPKLite";
    let at = find(&pdf, filter)[0];
    for text in [
        "/ByteRange [0 1 2 3]",
        "/ByteR#61nge [0 1 2 3]",
        "/Contents <3000>",
        "/C#6fntents <3000>",
    ] {
        let dup = overwrite(&pdf, at, filter.len(), text);
        expect_error(&dup, "malformed", text);
    }
}

#[test]
fn a_truncated_file_never_yields_a_signature() {
    let (_s, pdf) = signed_once();
    for cut in 0..pdf.len() {
        if let Ok(sigs) = pdf::signatures(&pdf[..cut]) {
            assert!(sigs.is_empty(), "cut at {cut}: {} signature(s)", sigs.len());
        }
    }
    // Cut inside the value, before /ByteRange is even read.
    let b = pdf::signatures(&pdf).unwrap()[0].byte_range[1] as usize;
    expect_error(&pdf[..b + 100], "malformed", "cut inside /Contents");
}

/// Random flips, insertions and deletions around the signature: no panic,
/// and any signature still reported obeys the byte-range rules.
#[test]
fn mutated_files_never_panic() {
    let (s, once) = signed_once();
    let pdf = s.sign(&once, "Sig2", &[]);
    let hot: Vec<usize> = find(&pdf, b"/ByteRange")
        .into_iter()
        .chain(find(&pdf, b"/Contents <"))
        .collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut m = pdf.clone();
        for _ in 0..1 + next() % 4 {
            let near = hot[(next() as usize) % hot.len()];
            let at = if next() % 2 == 0 {
                (near + (next() as usize) % 64).min(m.len() - 1)
            } else {
                (next() as usize) % m.len()
            };
            let alphabet = b"0123456789 []<>()/%\\\nR-#ef";
            let byte = alphabet[(next() as usize) % alphabet.len()];
            match next() % 3 {
                0 => m[at] = byte,
                1 => m.insert(at, byte),
                _ => {
                    m.remove(at);
                }
            }
        }
        if let Ok(sigs) = pdf::signatures(&m) {
            for sig in &sigs {
                assert_sound(&m, sig);
                let _ = verify(sig);
            }
        }
    }
}

#[test]
fn hostile_hand_written_inputs_are_errors_or_nothing() {
    expect_error(b"", "not_pdf", "empty");
    expect_error(b"<< /ByteRange [0 1 2 3] >>", "not_pdf", "no header");
    assert!(pdf::signatures(b"%PDF-1.7\n").unwrap().is_empty());
    for text in [
        "%PDF-1.7\n(unterminated",
        "%PDF-1.7\n<unterminated",
        "%PDF-1.7\n<< << [ ( ) ] >>",
        "%PDF-1.7\n>> ] ) > } { 1 0 R R R obj endobj stream",
        "%PDF-1.7\n1 0 obj << /Length 999999999999999999999 >> stream\nabc",
        "%PDF-1.7\n1 0 obj << /Length 18446744073709551615 >> stream\nabc endstream",
        "%PDF-1.7\n/ByteRange [0 1 2 3]",
        "%PDF-1.7\n[/ByteRange [0 1 2 3] /Contents <30>]",
    ] {
        assert!(
            pdf::signatures(text.as_bytes()).is_ok_and(|s| s.is_empty()),
            "{text}"
        );
    }
    let cut = "%PDF-1.7\n<< /Contents <3003";
    expect_error(cut.as_bytes(), "malformed", "cut in /Contents");
    let cut = "%PDF-1.7\n<< /ByteRange [0 1 2";
    expect_error(cut.as_bytes(), "malformed", "cut in /ByteRange");
    let no_contents = "%PDF-1.7\n<< /ByteRange [0 1 2 3] >>";
    expect_error(no_contents.as_bytes(), "bad_contents", "no /Contents");

    let deep = format!("%PDF-1.7\n{}", "[<<".repeat(100_000));
    expect_error(deep.as_bytes(), "malformed", "deep nesting");

    let many = format!(
        "%PDF-1.7\n{}",
        "<< /ByteRange [0 0 0 0] /Contents <00> >>\n".repeat(pdf::MAX_SIGNATURES + 1)
    );
    expect_error(many.as_bytes(), "too_many_signatures", "65 signatures");

    // A signature dictionary inside a stream's data or a string is not a
    // signature of the document.
    let inner = "<< /ByteRange [0 9 9 9] /Contents <00> >>";
    let hidden = format!(
        "%PDF-1.7\n1 0 obj << /Length {} >> stream\n{inner}\nendstream endobj\n2 0 obj ({inner}) endobj\n% {inner}\n",
        inner.len()
    );
    assert!(pdf::signatures(hidden.as_bytes()).unwrap().is_empty());
}

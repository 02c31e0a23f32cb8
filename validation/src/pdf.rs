//! The signatures inside a PDF (ISO 32000-2 12.8): for each signature
//! dictionary, the CMS in its `/Contents` and the bytes its `/ByteRange`
//! says were signed, so that [`crate::cms::verify`] can check one against
//! the other.
//!
//! A PDF signature signs bytes, not objects: whatever a reader shows is
//! only signed if it lies inside the byte range. So what matters for safety
//! is the byte range, and it is checked as an attacker would bend it: it
//! must start at the first byte, its one gap must be exactly the `<hex>`
//! string that is that same dictionary's `/Contents` (so everything but the
//! signature value is covered), it must end inside the file and after the
//! signature dictionary itself. Anything appended after the range (an
//! incremental update: new objects that can change every page) is reported,
//! never hidden: [`PdfSignature::covers_whole_file`]. The gap must hold
//! nothing but hex digits between its `<` and `>`, so whatever the
//! unsigned value is, no reader can split the signed bytes into different
//! tokens because of it: how the scan below reads the rest of the file
//! decides which dictionaries are found, never which bytes are signed.
//!
//! The file is read by a lexical scan, not a full object parser: a
//! tokenizer that knows PDF strings, comments, names (with `#xx` escapes),
//! dictionaries, arrays and streams (skipped whole), and looks for
//! dictionaries holding `/ByteRange`. The check needs the byte offset of
//! the `/Contents` token, which object parsers (lopdf among them) do not
//! keep, and a scan is a few hundred lines that cannot panic, where an
//! object parser is a large surface for hostile files (lopdf has had
//! fuzzing crashes). Its limit: a signature dictionary inside an object
//! stream is not seen. No signer puts one there (a compressed dictionary's
//! `/Contents` cannot sit at the byte offset its range names), and a
//! signature not found is a document reported unsigned, the safe side.
//! Equally, a dictionary the scan finds inside a stream it failed to skip
//! gains an attacker nothing: its byte range is held to the same rules, and
//! the CMS must still verify over the bytes it names.

use std::collections::HashMap;
use std::ops::Range;

/// More signatures than any real document carries (each one is a copy of
/// the file in [`PdfSignature::signed`]): a bound on the memory one upload
/// can cost.
pub const MAX_SIGNATURES: usize = 64;

/// No PDF nests dictionaries and arrays this deep; a file that does is an
/// attempt to make the scan's stack grow without end.
const MAX_DEPTH: usize = 256;

/// Readers look for the header this far in (ISO 32000-2 7.5.2 allows
/// nothing before it; Acrobat tolerates a prefix of this size).
const HEADER_WINDOW: usize = 1024;

/// Why a PDF's signatures cannot be read, as a stable code and a sentence
/// (the same shape as [`crate::cms::CmsError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct PdfError {
    /// `not_pdf`, `malformed`, `bad_byte_range`, `bad_contents`,
    /// `too_many_signatures`.
    pub code: &'static str,
    /// What exactly failed, in a sentence for people; not to be matched on.
    pub detail: String,
}

fn fail(code: &'static str, detail: impl Into<String>) -> PdfError {
    PdfError {
        code,
        detail: detail.into(),
    }
}

/// One signature dictionary whose byte range passed every check; whether
/// its CMS verifies over [`Self::signed`] is the caller's question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdfSignature {
    /// The signature field's partial name (`/T`), when the field names the
    /// signature dictionary directly or by reference: what a person sees in
    /// a viewer's signature panel. Not signed by this signature necessarily,
    /// so for display only.
    pub field: Option<String>,
    /// `[a, b, c, d]`: bytes `a..a+b` and `c..c+d` were signed.
    pub byte_range: [u64; 4],
    /// The DER CMS (a SignedData, or a time-stamp token for a document
    /// time-stamp), without the zero padding signers reserve room with.
    pub cms: Vec<u8>,
    /// The two ranges' bytes, concatenated: what the CMS's message digest
    /// must match.
    pub signed: Vec<u8>,
    /// Nothing follows the signed range: the document is exactly what was
    /// signed. False means bytes were added after signing, which may
    /// change what a reader shows (later signatures, form filling, or an
    /// attacker's new revision).
    pub covers_whole_file: bool,
    /// How many `%%EOF` markers (revisions) follow the signed range: a hint
    /// for people about how many times the file was updated since. Bytes
    /// appended without a marker still make `covers_whole_file` false.
    pub later_revisions: usize,
    /// `/SubFilter`: `adbe.pkcs7.detached`, `ETSI.CAdES.detached`
    /// (PAdES), `ETSI.RFC3161` (a document time-stamp).
    pub sub_filter: Option<String>,
}

/// Every signature in `pdf`, in file order; an unsigned PDF gives none.
/// Any signature dictionary whose byte range or value is not exactly as a
/// signer writes it makes the whole file an error: a verifier that skipped
/// it would let an attacker choose which signatures are shown.
pub fn signatures(pdf: &[u8]) -> Result<Vec<PdfSignature>, PdfError> {
    Ok(signatures_one_by_one(pdf)?.collect())
}

/// As [`signatures`], with each signature's copy of its signed bytes
/// ([`PdfSignature::signed`]) made only when the iterator reaches it: every
/// dictionary is checked before the first is returned (an error anywhere
/// is still the whole file's), but a verifier that drops each signature
/// before taking the next holds one copy at a time, not
/// [`MAX_SIGNATURES`] of them (64 copies of a 20 MiB upload are 1.3 GB).
pub fn signatures_one_by_one(
    pdf: &[u8],
) -> Result<impl Iterator<Item = PdfSignature> + '_, PdfError> {
    let header = &pdf[..pdf.len().min(HEADER_WINDOW)];
    if find(header, b"%PDF-", 0).is_none() {
        return Err(fail("not_pdf", "no %PDF- header in the first 1024 bytes"));
    }
    let scan = Scanner::new(pdf).run()?;
    let checked = scan
        .found
        .iter()
        .map(|f| {
            let (mut sig, ranges) = check(pdf, f, &scan.eofs)?;
            sig.field = match f.parent {
                Some(id) => scan.direct_names.get(&id).cloned(),
                None => f.object.and_then(|n| scan.field_names.get(&n).cloned()),
            };
            Ok((sig, ranges))
        })
        .collect::<Result<Vec<_>, PdfError>>()?;
    Ok(checked.into_iter().map(|(mut sig, [first, second])| {
        // Both ranges were read once already by `check`: they are inside
        // the file.
        sig.signed = [
            pdf.get(first).unwrap_or_default(),
            pdf.get(second).unwrap_or_default(),
        ]
        .concat();
        sig
    }))
}

/// A signature dictionary as the scan saw it, before its range is judged.
struct Found {
    byte_range: [u64; 4],
    /// The `/Contents` token, `<` to `>` inclusive.
    contents: Range<usize>,
    /// The dictionary, `<<` to `>>` inclusive.
    dict: Range<usize>,
    sub_filter: Option<String>,
    /// The indirect object it is, when it is one (a field's `/V` names it).
    object: Option<u64>,
    /// The field dictionary it is the direct `/V` value of.
    parent: Option<usize>,
}

/// The signature as its byte range was judged, without its copy of the
/// signed bytes, and the two ranges that copy is made of.
fn check(
    pdf: &[u8],
    f: &Found,
    eofs: &[usize],
) -> Result<(PdfSignature, [Range<usize>; 2]), PdfError> {
    let [a, b, c, d] = f.byte_range;
    let range_err = |detail: String| fail("bad_byte_range", detail);
    let len = pdf.len() as u64;
    if a != 0 {
        return Err(range_err(format!(
            "the signed bytes start at {a}, not at the file's first byte"
        )));
    }
    let first_end = a
        .checked_add(b)
        .ok_or_else(|| range_err("the first range's end overflows".into()))?;
    let end = c
        .checked_add(d)
        .ok_or_else(|| range_err("the second range's end overflows".into()))?;
    if first_end != f.contents.start as u64 || c != f.contents.end as u64 {
        return Err(range_err(format!(
            "the unsigned gap {first_end}..{c} is not this signature's /Contents string at {}..{}",
            f.contents.start, f.contents.end
        )));
    }
    if end > len {
        return Err(range_err(format!(
            "the signed bytes end at {end}, past the end of the {len}-byte file"
        )));
    }
    if end < f.dict.end as u64 {
        return Err(range_err(format!(
            "the signed bytes end at {end}, inside the signature dictionary (which ends at {})",
            f.dict.end
        )));
    }
    // Every bound is now within the file, so none of these can fail; they
    // are written as checked operations so that fuzzing finds an error, not
    // a panic, if that reasoning is ever wrong.
    let to = |v: u64| usize::try_from(v).map_err(|_| range_err(format!("{v} exceeds memory")));
    let (b, c, end) = (to(b)?, to(c)?, to(end)?);
    if pdf.get(..b).is_none() {
        return Err(range_err("first range outside the file".into()));
    }
    if pdf.get(c..end).is_none() {
        return Err(range_err("second range outside the file".into()));
    }
    let hex = pdf
        .get(f.contents.start + 1..f.contents.end - 1)
        .ok_or_else(|| fail("bad_contents", "the /Contents string is cut off"))?;
    let cms = strip_padding(decode_hex(hex)?)?;
    let sig = PdfSignature {
        field: None,
        byte_range: f.byte_range,
        cms,
        signed: Vec::new(),
        covers_whole_file: end == pdf.len(),
        later_revisions: eofs.iter().filter(|&&p| p >= end).count(),
        sub_filter: f.sub_filter.clone(),
    };
    Ok((sig, [0..b, c..end]))
}

/// The PDF syntax allows whitespace and an odd count in hex strings; no
/// signer writes either into `/Contents`, whose size it reserved exactly,
/// so both are refused rather than given a meaning.
fn decode_hex(hex: &[u8]) -> Result<Vec<u8>, PdfError> {
    if !hex.len().is_multiple_of(2) {
        return Err(fail(
            "bad_contents",
            format!("the /Contents hex string has an odd length ({})", hex.len()),
        ));
    }
    hex.chunks_exact(2)
        .map(|pair| match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(fail(
                "bad_contents",
                format!(
                    "the /Contents string holds {:?}, not hexadecimal digits",
                    String::from_utf8_lossy(pair)
                ),
            )),
        })
        .collect()
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Signers reserve room for the CMS before they know its size and fill
/// the rest with zeros. Trimming zeros would cut a CMS that itself ends in
/// a zero byte; the DER length of the outer SEQUENCE says exactly where it
/// ends. What follows must be padding: a value that smuggles other bytes
/// in the unsigned gap is refused.
fn strip_padding(mut value: Vec<u8>) -> Result<Vec<u8>, PdfError> {
    let bad = |detail: &str| fail("bad_contents", detail.to_string());
    match value.first() {
        None => {
            return Err(bad(
                "the /Contents string is empty: the signature was never made",
            ));
        }
        Some(0x30) => {}
        Some(_) => return Err(bad("the /Contents value is not a DER SEQUENCE")),
    }
    let (header, body) = match value.get(1).copied() {
        None => return Err(bad("the /Contents value ends in its DER length")),
        Some(0x80) => {
            return Err(bad(
                "the /Contents value is BER with an indefinite length; DER is required",
            ));
        }
        Some(n) if n < 0x80 => (2usize, usize::from(n)),
        Some(n) => {
            let count = usize::from(n & 0x7f);
            if count > 4 {
                return Err(bad("the /Contents value's DER length is too long"));
            }
            let digits = value
                .get(2..2 + count)
                .ok_or_else(|| bad("the /Contents value ends in its DER length"))?;
            let length = digits
                .iter()
                .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
            (2 + count, length)
        }
    };
    let total = header
        .checked_add(body)
        .filter(|&t| t <= value.len())
        .ok_or_else(|| bad("the /Contents value is shorter than its DER length says"))?;
    if value[total..].iter().any(|&x| x != 0) {
        return Err(bad(
            "the /Contents string holds bytes after the CMS that are not zero padding",
        ));
    }
    value.truncate(total);
    Ok(value)
}

/// `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn is_white(c: u8) -> bool {
    matches!(c, 0 | b'\t' | b'\n' | 0x0c | b'\r' | b' ')
}

fn is_delimiter(c: u8) -> bool {
    matches!(
        c,
        b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%'
    )
}

fn is_regular(c: u8) -> bool {
    !is_white(c) && !is_delimiter(c)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    DictOpen,
    DictClose,
    ArrayOpen,
    ArrayClose,
    /// `/` and the name's bytes (undecoded).
    Name,
    /// `(` to `)` inclusive.
    Literal,
    /// `<` to `>` inclusive.
    Hex,
    /// A number, a keyword (`obj`, `R`, `stream`…), or a stray delimiter.
    Word,
    Comment,
    /// The file ends inside a string: what follows cannot be read.
    Unterminated,
}

/// The keys the scan needs; every other key is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    ByteRange,
    Contents,
    SubFilter,
    Ft,
    T,
    V,
    Length,
    Other,
}

impl Key {
    fn of(name: &[u8]) -> Key {
        match name {
            b"ByteRange" => Key::ByteRange,
            b"Contents" => Key::Contents,
            b"SubFilter" => Key::SubFilter,
            b"FT" => Key::Ft,
            b"T" => Key::T,
            b"V" => Key::V,
            b"Length" => Key::Length,
            _ => Key::Other,
        }
    }
}

#[derive(Default)]
struct Dict {
    id: usize,
    start: usize,
    object: Option<u64>,
    /// The key whose value comes next; `None` when a key comes next.
    pending: Option<Key>,
    /// The key of the last value read, and that value when it was an
    /// integer, and whether a second integer followed: `n g R` is one
    /// value in three tokens.
    last: Option<Key>,
    last_int: Option<u64>,
    ref_generation: bool,
    byte_range: Vec<Vec<u8>>,
    byte_range_bad: Option<&'static str>,
    byte_ranges: usize,
    contents: Option<Range<usize>>,
    contents_bad: Option<&'static str>,
    contents_seen: usize,
    sub_filter: Option<String>,
    ft_sig: bool,
    t: Option<String>,
    v_ref: Option<u64>,
    length: Option<u64>,
    /// A signature dictionary is this one's direct `/V`.
    has_sig_child: bool,
}

struct Array {
    /// The dictionary key this array is the value of.
    role: Option<Key>,
    items: Vec<Vec<u8>>,
    bad: Option<&'static str>,
}

enum Frame {
    Dict(Box<Dict>),
    Array(Array),
}

#[derive(Default)]
struct Scan {
    found: Vec<Found>,
    /// Offsets of `%%EOF` comments.
    eofs: Vec<usize>,
    /// Signature dictionary object number → field name (`/T` of the field
    /// whose `/V` references it). Later revisions override earlier ones,
    /// as they do for a reader.
    field_names: HashMap<u64, String>,
    /// Field dictionary id → name, for signature dictionaries written
    /// directly as the field's `/V`.
    direct_names: HashMap<usize, String>,
}

struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    stack: Vec<Frame>,
    next_id: usize,
    /// Outside every dictionary: the last two words when they were
    /// integers (`n g obj`), the object being read, and the `/Length` of
    /// the last dictionary closed (a stream's).
    top_ints: [Option<u64>; 2],
    object: Option<u64>,
    stream_length: Option<u64>,
    scan: Scan,
}

/// A PDF integer as signers write it: digits only, no sign, within u64.
fn parse_u64(word: &[u8]) -> Option<u64> {
    if word.is_empty() || word.len() > 20 || !word.iter().all(u8::is_ascii_digit) {
        return None;
    }
    word.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Names may spell any byte as `#xx`: `/ByteR#61nge` is `/ByteRange` to
/// a reader, so it must be to the scan too.
fn decode_name(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'#'
            && let (Some(h), Some(l)) = (
                raw.get(i + 1).copied().and_then(hex_digit),
                raw.get(i + 2).copied().and_then(hex_digit),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// A text string (a field name) for display: UTF-16BE or UTF-8 with their
/// byte-order marks, else PDFDocEncoding read as Latin-1, which it matches
/// for letters and digits.
fn text_string(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(&[0xfe, 0xff]) {
        let units: Vec<u16> = rest
            .chunks(2)
            .map(|p| u16::from_be_bytes([p[0], p.get(1).copied().unwrap_or(0)]))
            .collect();
        String::from_utf16_lossy(&units)
    } else if let Some(rest) = bytes.strip_prefix(&[0xef, 0xbb, 0xbf]) {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        bytes.iter().map(|&b| char::from(b)).collect()
    }
}

/// The bytes of a literal string token `(…)`, escapes resolved.
fn literal_bytes(token: &[u8]) -> Vec<u8> {
    let inner = token
        .get(1..token.len().saturating_sub(1))
        .unwrap_or_default();
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = inner.get(i) else { break };
        i += 1;
        match e {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match inner.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'\r' => {
                if inner.get(i) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => {}
            other => out.push(other),
        }
    }
    out
}

/// The bytes of a hex string token `<…>`, leniently (a field name, not a
/// signature value): whitespace skipped, a final odd digit taken as `x0`.
fn hex_bytes(token: &[u8]) -> Vec<u8> {
    let digits: Vec<u8> = token.iter().filter_map(|&c| hex_digit(c)).collect();
    digits
        .chunks(2)
        .map(|p| p[0] << 4 | p.get(1).copied().unwrap_or(0))
        .collect()
}

impl<'a> Scanner<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Scanner {
            buf,
            pos: 0,
            stack: Vec::new(),
            next_id: 0,
            top_ints: [None, None],
            object: None,
            stream_length: None,
            scan: Scan::default(),
        }
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.buf.get(i).copied()
    }

    /// The next token and its span; `None` at the end of the file.
    fn token(&mut self) -> Option<(Tok, Range<usize>)> {
        while self.at(self.pos).is_some_and(is_white) {
            self.pos += 1;
        }
        let start = self.pos;
        let c = self.at(start)?;
        let tok = match c {
            b'%' => {
                while self.at(self.pos).is_some_and(|c| c != b'\n' && c != b'\r') {
                    self.pos += 1;
                }
                Tok::Comment
            }
            b'<' if self.at(start + 1) == Some(b'<') => {
                self.pos += 2;
                Tok::DictOpen
            }
            b'>' if self.at(start + 1) == Some(b'>') => {
                self.pos += 2;
                Tok::DictClose
            }
            b'<' => match find(self.buf, b">", start + 1) {
                Some(end) => {
                    self.pos = end + 1;
                    Tok::Hex
                }
                None => {
                    self.pos = self.buf.len();
                    Tok::Unterminated
                }
            },
            b'(' => {
                let mut depth = 0usize;
                let mut i = start;
                loop {
                    match self.at(i) {
                        None => {
                            self.pos = self.buf.len();
                            return Some((Tok::Unterminated, start..self.pos));
                        }
                        Some(b'\\') => i += 2,
                        Some(b'(') => {
                            depth += 1;
                            i += 1;
                        }
                        Some(b')') => {
                            depth -= 1;
                            i += 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        Some(_) => i += 1,
                    }
                }
                self.pos = i;
                Tok::Literal
            }
            b'[' => {
                self.pos += 1;
                Tok::ArrayOpen
            }
            b']' => {
                self.pos += 1;
                Tok::ArrayClose
            }
            b'/' => {
                self.pos += 1;
                while self.at(self.pos).is_some_and(is_regular) {
                    self.pos += 1;
                }
                Tok::Name
            }
            c if is_regular(c) => {
                while self.at(self.pos).is_some_and(is_regular) {
                    self.pos += 1;
                }
                Tok::Word
            }
            // A stray `)`, `>`, `{` or `}`: not valid here, but not the
            // scan's to judge.
            _ => {
                self.pos += 1;
                Tok::Word
            }
        };
        Some((tok, start..self.pos))
    }

    fn run(mut self) -> Result<Scan, PdfError> {
        while let Some((tok, span)) = self.token() {
            match tok {
                Tok::Comment => {
                    if self
                        .buf
                        .get(span.clone())
                        .unwrap_or_default()
                        .starts_with(b"%%EOF")
                    {
                        self.scan.eofs.push(span.start);
                    }
                }
                Tok::Unterminated => break,
                Tok::DictOpen => self.open_dict(span.start)?,
                Tok::ArrayOpen => self.open_array()?,
                Tok::DictClose => self.close_dict(span.end)?,
                Tok::ArrayClose => self.close_array(),
                Tok::Name | Tok::Literal | Tok::Hex | Tok::Word => self.value(tok, span),
            }
        }
        // A file cut inside a signature dictionary has lost its signature:
        // that must be said, not read as an unsigned document.
        let truncated_signature = self.stack.iter().any(|f| match f {
            Frame::Dict(d) => {
                d.byte_ranges > 0
                    || d.contents_seen > 0
                    || matches!(d.pending, Some(Key::ByteRange | Key::Contents))
            }
            Frame::Array(a) => a.role == Some(Key::ByteRange),
        });
        if truncated_signature {
            return Err(fail(
                "malformed",
                "the file ends inside a signature dictionary: it was cut off",
            ));
        }
        Ok(self.scan)
    }

    fn push(&mut self, frame: Frame) -> Result<(), PdfError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(fail(
                "malformed",
                format!("dictionaries and arrays nest deeper than {MAX_DEPTH}"),
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn open_dict(&mut self, start: usize) -> Result<(), PdfError> {
        let object = if self.stack.is_empty() {
            self.object
        } else {
            None
        };
        self.next_id += 1;
        self.push(Frame::Dict(Box::new(Dict {
            id: self.next_id,
            start,
            object,
            ..Dict::default()
        })))
    }

    fn open_array(&mut self) -> Result<(), PdfError> {
        let role = match self.stack.last() {
            Some(Frame::Dict(d)) => d.pending,
            _ => None,
        };
        self.push(Frame::Array(Array {
            role,
            items: Vec::new(),
            bad: None,
        }))
    }

    fn close_array(&mut self) {
        match self.stack.last() {
            Some(Frame::Array(_)) => {}
            // A stray `]` inside a dictionary or at the top: ignored.
            _ => return,
        }
        let Some(Frame::Array(array)) = self.stack.pop() else {
            return;
        };
        match self.stack.last_mut() {
            Some(Frame::Dict(d)) => {
                if d.pending == Some(Key::ByteRange) {
                    d.byte_range = array.items;
                    d.byte_range_bad = array.bad;
                }
                Self::complete(d, None);
            }
            Some(Frame::Array(parent)) if parent.role == Some(Key::ByteRange) => {
                parent.bad = Some("it holds an array");
            }
            _ => {}
        }
    }

    fn close_dict(&mut self, end: usize) -> Result<(), PdfError> {
        if !matches!(self.stack.last(), Some(Frame::Dict(_))) {
            // A stray `>>`: ignored, as for `]`.
            return Ok(());
        }
        let Some(Frame::Dict(dict)) = self.stack.pop() else {
            return Ok(());
        };
        let is_v = matches!(self.stack.last(), Some(Frame::Dict(p)) if p.pending == Some(Key::V));
        let mut is_signature = false;
        if dict.byte_ranges > 0 {
            is_signature = true;
            let parent = match self.stack.last() {
                Some(Frame::Dict(p)) if is_v => Some(p.id),
                _ => None,
            };
            self.signature(&dict, end, parent)?;
        }
        if dict.ft_sig
            && let (Some(n), Some(t)) = (dict.v_ref, &dict.t)
        {
            self.scan.field_names.insert(n, t.clone());
        }
        if dict.has_sig_child
            && let Some(t) = &dict.t
        {
            self.scan.direct_names.insert(dict.id, t.clone());
        }
        match self.stack.last_mut() {
            Some(Frame::Dict(p)) => {
                if is_v && is_signature {
                    p.has_sig_child = true;
                }
                match p.pending {
                    Some(Key::ByteRange) => p.byte_range_bad = Some("it is a dictionary"),
                    Some(Key::Contents) => p.contents_bad = Some("it is a dictionary"),
                    _ => {}
                }
                Self::complete(p, None);
            }
            Some(Frame::Array(a)) => {
                if a.role == Some(Key::ByteRange) {
                    a.bad = Some("it holds a dictionary");
                }
            }
            None => {
                self.stream_length = dict.length;
            }
        }
        Ok(())
    }

    fn signature(&mut self, d: &Dict, end: usize, parent: Option<usize>) -> Result<(), PdfError> {
        if self.scan.found.len() >= MAX_SIGNATURES {
            return Err(fail(
                "too_many_signatures",
                format!("more than {MAX_SIGNATURES} signature dictionaries"),
            ));
        }
        let at = d.start;
        if d.byte_ranges > 1 || d.contents_seen > 1 {
            return Err(fail(
                "malformed",
                format!(
                    "the signature dictionary at {at} has /ByteRange or /Contents twice: readers differ on which counts"
                ),
            ));
        }
        if let Some(why) = d.byte_range_bad {
            return Err(fail(
                "bad_byte_range",
                format!("the /ByteRange at {at} is not four integers: {why}"),
            ));
        }
        if d.byte_range.len() != 4 {
            return Err(fail(
                "bad_byte_range",
                format!("the /ByteRange at {at} does not hold exactly four numbers"),
            ));
        }
        let mut range = [0u64; 4];
        for (slot, word) in range.iter_mut().zip(&d.byte_range) {
            *slot = parse_u64(word).ok_or_else(|| {
                fail(
                    "bad_byte_range",
                    format!(
                        "the /ByteRange at {at} holds {:?}, not an integer from 0 to 2^64-1",
                        String::from_utf8_lossy(word)
                    ),
                )
            })?;
        }
        if let Some(why) = d.contents_bad {
            return Err(fail(
                "bad_contents",
                format!("the signature's /Contents at {at} is not a hex string: {why}"),
            ));
        }
        let contents = d.contents.clone().ok_or_else(|| {
            fail(
                "bad_contents",
                format!("the signature dictionary at {at} has no /Contents"),
            )
        })?;
        self.scan.found.push(Found {
            byte_range: range,
            contents,
            dict: d.start..end,
            sub_filter: d.sub_filter.clone(),
            object: d.object,
            parent,
        });
        Ok(())
    }

    /// A value (or a key) that is a single token.
    fn value(&mut self, tok: Tok, span: Range<usize>) {
        let bytes = self.buf.get(span.clone()).unwrap_or_default();
        match self.stack.last_mut() {
            None => self.top_level(tok, bytes, span.end),
            Some(Frame::Array(a)) => {
                if a.role == Some(Key::ByteRange) {
                    if tok != Tok::Word {
                        a.bad = Some("it holds something other than a number");
                    } else if a.items.len() < 5 {
                        a.items.push(bytes.to_vec());
                    }
                }
            }
            Some(Frame::Dict(d)) => {
                let Some(key) = d.pending else {
                    match tok {
                        Tok::Name => {
                            d.pending =
                                Some(Key::of(&decode_name(bytes.get(1..).unwrap_or_default())))
                        }
                        Tok::Word => Self::reference_part(d, bytes),
                        _ => {}
                    }
                    return;
                };
                match (key, tok) {
                    (Key::ByteRange, _) => d.byte_range_bad = Some("it is not an array"),
                    (Key::Contents, Tok::Hex) => d.contents = Some(span),
                    (Key::Contents, _) => d.contents_bad = Some("it is not a <hex> string"),
                    (Key::SubFilter, Tok::Name) => {
                        d.sub_filter = Some(text_string(&decode_name(
                            bytes.get(1..).unwrap_or_default(),
                        )));
                    }
                    (Key::Ft, Tok::Name) => {
                        d.ft_sig = decode_name(bytes.get(1..).unwrap_or_default()) == b"Sig"
                    }
                    (Key::T, Tok::Literal) => d.t = Some(text_string(&literal_bytes(bytes))),
                    (Key::T, Tok::Hex) => {
                        d.t = Some(text_string(&hex_bytes(
                            bytes
                                .get(1..bytes.len().saturating_sub(1))
                                .unwrap_or_default(),
                        )));
                    }
                    (Key::Length, Tok::Word) => d.length = parse_u64(bytes),
                    _ => {}
                }
                let int = if tok == Tok::Word {
                    parse_u64(bytes)
                } else {
                    None
                };
                Self::complete(d, int);
            }
        }
    }

    /// Records that the pending key has its value.
    fn complete(d: &mut Dict, int: Option<u64>) {
        let key = d.pending.take();
        if key == Some(Key::ByteRange) {
            d.byte_ranges += 1;
        }
        if key == Some(Key::Contents) {
            d.contents_seen += 1;
        }
        d.last = key;
        d.last_int = int;
        d.ref_generation = false;
    }

    /// The `g` and `R` of an indirect reference `n g R`, read where a key
    /// was expected.
    fn reference_part(d: &mut Dict, word: &[u8]) {
        if d.last_int.is_none() {
            return;
        }
        if !d.ref_generation && parse_u64(word).is_some() {
            d.ref_generation = true;
            return;
        }
        if d.ref_generation && word == b"R" {
            match d.last {
                Some(Key::V) => d.v_ref = d.last_int,
                Some(Key::Length) => d.length = None,
                Some(Key::ByteRange) => d.byte_range_bad = Some("it is an indirect reference"),
                Some(Key::Contents) => d.contents_bad = Some("it is an indirect reference"),
                _ => {}
            }
        }
        d.last_int = None;
        d.ref_generation = false;
    }

    fn top_level(&mut self, tok: Tok, bytes: &[u8], end: usize) {
        if tok != Tok::Word {
            self.top_ints = [None, None];
            return;
        }
        match bytes {
            b"obj" => {
                if let [Some(n), Some(_)] = self.top_ints {
                    self.object = Some(n);
                }
            }
            b"endobj" => self.object = None,
            b"stream" => self.skip_stream(end),
            _ => {}
        }
        self.top_ints = [self.top_ints[1], parse_u64(bytes)];
    }

    /// A stream's data may hold any bytes, `/ByteRange` among them: it is
    /// skipped by its `/Length` when that is a direct number followed by
    /// `endstream`, else up to the first `endstream`.
    fn skip_stream(&mut self, after_keyword: usize) {
        let mut start = after_keyword;
        if self.at(start) == Some(b'\r') {
            start += 1;
        }
        if self.at(start) == Some(b'\n') {
            start += 1;
        }
        let by_length = self
            .stream_length
            .take()
            .and_then(|l| usize::try_from(l).ok())
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= self.buf.len())
            .and_then(|mut e| {
                while self.at(e).is_some_and(is_white) {
                    e += 1;
                }
                self.buf[e..].starts_with(b"endstream").then_some(e)
            });
        self.pos = by_length
            .or_else(|| find(self.buf, b"endstream", start))
            .map_or(self.buf.len(), |e| e + b"endstream".len());
        self.top_ints = [None, None];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(len: usize) -> Vec<u8> {
        let mut v = vec![0x30, 0x82, (len >> 8) as u8, len as u8];
        v.extend(std::iter::repeat_n(0u8, len));
        v
    }

    #[test]
    fn padding_is_cut_at_the_der_length_even_when_the_cms_ends_in_zero() {
        let mut v = der(300);
        let exact = v.clone();
        v.extend([0u8; 50]);
        assert_eq!(strip_padding(v).unwrap(), exact);
        assert_eq!(
            strip_padding(vec![0x30, 0x01, 0x00, 0, 0]).unwrap(),
            [0x30, 1, 0]
        );
    }

    #[test]
    fn contents_that_are_not_a_padded_der_value_are_refused() {
        for v in [
            vec![],
            vec![0x31, 0],
            vec![0x30],
            vec![0x30, 0x80, 0, 0],
            vec![0x30, 0x85, 1, 1, 1, 1, 1],
            vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            vec![0x30, 0x01, 0x00, 0x00, 0x01],
        ] {
            assert_eq!(strip_padding(v).unwrap_err().code, "bad_contents");
        }
    }

    #[test]
    fn names_are_compared_after_their_escapes() {
        assert_eq!(decode_name(b"ByteR#61nge"), b"ByteRange");
        assert_eq!(decode_name(b"a#2"), b"a#2");
    }

    #[test]
    fn literal_escapes() {
        assert_eq!(literal_bytes(br"(a\(b\)\101\\\n)"), b"a(b)A\\\n");
    }
}

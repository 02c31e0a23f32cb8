//! Signed PDFs (PAdES) through the verification service, end to end:
//! citizens' PKCS#12 credentials issued by Muhr, a PDF signed with them by
//! pyHanko (the independent signer) with a signature time-stamp from Muhr's
//! own TSA (PAdES-B-T), then judged by `muhr verify FILE.pdf` and by
//! `POST /api/v1/signatures/verify`, and by pyHanko's own validator with
//! Muhr's root as its only trust anchor. Then bent the ways a forger would:
//! a page changed after signing (and time-stamped to look vouched for), a
//! revocation after the fact, an unsupported or cut-off signature.
//!
//! The TSA's clock is vouched for by a real NTP server (Debian's chrony, on
//! loopback, never touching the system clock). pyHanko and chrony are
//! required (`tests/run.sh` installs both): without them these tests fail,
//! they never skip.
//!
//! Longer than 600 lines on purpose: every integration test file is a
//! binary of its own, and linking dominates the suite's build; the whole
//! PDF path shares one set-up (chrony, `muhr serve` and its TSA, pyHanko).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

mod common;
use common::oidc::call_as;
use common::tsa::*;
use common::*;

const VERIFY: &str = "/api/v1/signatures/verify";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running installation: chrony, `muhr serve` with its TSA granting
/// tokens, and a relying party of the verification service.
struct Site {
    // Dropped in this order: the server before its data, chrony last.
    _server: Server,
    env: Env,
    _ntp: Chronyd,
    port: u16,
    rp: String,
}

impl Site {
    fn start(db: Db, keys: Keys) -> Self {
        require("openssl");
        pyhanko_present();
        let ntp = Chronyd::start();
        // Every certificate (the CAs', the TSA's, the citizens') names this
        // server's OCSP responder and CRLs, so pyHanko checks revocation
        // with Muhr itself: the port is chosen before the key ceremony.
        let port = free_port();
        let env = Env::with_extra(
            db,
            keys,
            &format!(
                "{}\n[urls]\nbase = \"http://127.0.0.1:{port}\"\n",
                tsa_config(&ntp)
            ),
        );
        env.init();
        let server = serve_on(&env, port);
        let out = env.ok(&[
            "rp",
            "add",
            "--name",
            "Hujjat Bank",
            "--class",
            "commercial",
        ]);
        let field = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {k} in {out}"))
        };
        let rp = format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", field("id"), field("secret")))
        );
        let site = Self {
            _server: server,
            env,
            _ntp: ntp,
            port,
            rp,
        };
        site.wait_until_granting();
        site
    }

    fn tsa_url(&self) -> String {
        format!("http://127.0.0.1:{}/tsa", self.port)
    }

    /// Waits until the TSA's clock check has heard from chrony.
    fn wait_until_granting(&self) {
        let data = self.env.write("warmup.txt", "warm-up\n");
        let query = self.env.path("warmup.tsq");
        openssl(&[
            "ts",
            "-query",
            "-data",
            data.to_str().unwrap(),
            "-sha256",
            "-cert",
            "-out",
            query.to_str().unwrap(),
        ]);
        let query = std::fs::read(query).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, _, body) = post(self.port, "/tsa", "application/timestamp-query", &query);
            assert_eq!(status, 200);
            let reply = self.env.write("warmup.tsr", body);
            let t = openssl(&["ts", "-reply", "-in", reply.to_str().unwrap(), "-text"]);
            if t.contains("Status: Granted") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the TSA never granted a token:\n{t}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A citizen's `individual-sign` certificate and key in a PKCS#12
    /// file, with the issuing CA's certificate.
    fn citizen(&self, name: &str, subject: Value) -> Citizen {
        let s = signer(&self.env, name, subject.clone());
        Citizen {
            p12: s.p12,
            password: s.password,
            serial: s.serial,
            pinfl: subject["pinfl"].as_str().unwrap().to_string(),
        }
    }

    /// `pyhanko sign addsig --use-pades` with a signature time-stamp from
    /// Muhr's TSA: PAdES-B-T.
    fn sign(&self, who: &Citizen, input: &Path, field: &str, out: &str) -> PathBuf {
        let out = self.env.path(out);
        pyhanko(&[
            "sign",
            "addsig",
            "--field",
            field,
            "--use-pades",
            "--timestamp-url",
            &self.tsa_url(),
            "pkcs12",
            "--passfile",
            who.password.to_str().unwrap(),
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            who.p12.to_str().unwrap(),
        ]);
        out
    }

    /// `pyhanko sign timestamp`: a document time-stamp from Muhr's TSA,
    /// then (pyHanko always does, given trust roots) a revision with the
    /// validation data for it (a /DSS, as PAdES-B-LTA has).
    fn stamp(&self, input: &Path, out: &str) -> PathBuf {
        let out = self.env.path(out);
        pyhanko(&[
            "sign",
            "timestamp",
            "--timestamp-url",
            &self.tsa_url(),
            "--trust-replace",
            "--trust",
            self.env.root_pem().to_str().unwrap(),
            "--other-certs",
            self.env.issuing_pem().to_str().unwrap(),
            input.to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        out
    }

    /// A document time-stamp from Muhr's TSA and nothing after it
    /// (pyHanko's API without a validation context): the token covers the
    /// whole file.
    fn stamp_bare(&self, input: &Path, out: &str) -> PathBuf {
        let out = self.env.path(out);
        python(
            STAMP,
            &[
                input.to_str().unwrap(),
                out.to_str().unwrap(),
                &self.tsa_url(),
            ],
        );
        out
    }

    /// `muhr verify FILE --json`: (exit code, verdict).
    fn verify(&self, pdf: &Path) -> (i32, Value) {
        let o = self.env.run(&["verify", pdf.to_str().unwrap(), "--json"]);
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("muhr verify printed no JSON: {}", text(&o)));
        (o.status.code().unwrap(), v)
    }

    /// `POST /api/v1/signatures/verify` with `body`: (status, answer).
    fn call(&self, body: &Value) -> (u16, Value) {
        let (status, _, v) = call_as(self.port, "POST", VERIFY, Some(self.rp.clone()), Some(body));
        (status, v)
    }

    /// As [`Self::call`] through curl, which reads the answer to a body the
    /// server stops reading (over its limit).
    fn curl(&self, body: &Value) -> (u16, Value) {
        require("curl");
        let file = self.env.write("body.json", body.to_string());
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "-H",
                &format!("authorization: {}", self.rp),
            ])
            .args(["-H", "content-type: application/json", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(format!("http://127.0.0.1:{}{VERIFY}", self.port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.parse().unwrap(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    /// The same PDF through the API: the verdict, which must equal the
    /// command line's but for the times it was judged at.
    fn verify_api(&self, pdf: &Path) -> Value {
        let (status, v) =
            self.call(&json!({ "pdf": STANDARD.encode(std::fs::read(pdf).unwrap()) }));
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Both ways, which must agree: (exit code, verdict).
    fn judge(&self, pdf: &Path) -> (i32, Value) {
        let (code, cli) = self.verify(pdf);
        let api = self.verify_api(pdf);
        assert_eq!(without_now(&cli), without_now(&api), "CLI and API differ");
        assert_eq!(code == 0, cli["valid"] == true, "exit code {code}: {cli}");
        (code, cli)
    }

    /// pyHanko's validator with Muhr's root as the only trust anchor,
    /// revocation checked with Muhr's OCSP responder and CRLs: whether it
    /// judged every signature valid, its status lines
    /// (`FIELD:FINGERPRINT:INTACT:TRUSTED,...`), and its prose.
    fn pyhanko_validate(&self, pdf: &Path) -> (bool, String, String) {
        let (root, issuing) = (self.env.root_pem(), self.env.issuing_pem());
        let run = |pretty: bool| {
            let mut args = vec!["sign", "validate"];
            if pretty {
                args.push("--pretty-print");
            }
            args.extend([
                "--trust-replace",
                "--trust",
                root.to_str().unwrap(),
                "--other-certs",
                issuing.to_str().unwrap(),
                pdf.to_str().unwrap(),
            ]);
            pyhanko_output(&args)
        };
        let (status, prose) = (run(false), run(true));
        assert_eq!(status.status.success(), prose.status.success());
        (status.status.success(), text(&status), text(&prose))
    }
}

/// The parts of a verdict that depend on the moment it was asked for.
fn without_now(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(sigs) = v["signatures"].as_array_mut() {
        for s in sigs {
            if s["verdict"]["judged_at_source"] == "verification_time" {
                s["verdict"]["judged_at"] = Value::Null;
            }
        }
    }
    v
}

struct Citizen {
    p12: PathBuf,
    password: PathBuf,
    serial: String,
    pinfl: String,
}

/// Born 12 April 1937 in Samarkand; Uzbek Latin with the ʻ (U+02BB).
fn oktam() -> Value {
    citizen_subject("3120437218045", "GʻOFUROV", "OʻKTAM", "SHUKUR OʻGʻLI")
}

/// Born 8 March 2001 in Nukus; Karakalpak name.
fn arujan() -> Value {
    citizen_subject("6080301735012", "QALLIBEKOVA", "ARUJAN", "ERNAZAR QIZI")
}

/// Born 25 July 1984 in Andijan; Cyrillic name.
fn malika() -> Value {
    citizen_subject("4250784301077", "ЮСУПОВА", "МАЛИКА", "РУСТАМОВНА")
}

/// Born 30 September 1955 in Fergana.
fn baxtiyor() -> Value {
    citizen_subject("3300955401310", "ABDURAHMONOV", "BAXTIYOR", "ISMOIL OʻGʻLI")
}

fn pyhanko_output(args: &[&str]) -> Output {
    let out = Command::new("python3")
        .args(["-m", "pyhanko"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("pyhanko not installed: python3 cannot be run ({e})"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "pyhanko not installed: {stderr} (python3 -m pip install pyhanko pyhanko-cli, as tests/run.sh does)"
    );
    out
}

fn pyhanko(args: &[&str]) {
    let out = pyhanko_output(args);
    assert!(
        out.status.success(),
        "pyhanko {args:?} failed: {}",
        text(&out)
    );
}

fn pyhanko_present() {
    let out = pyhanko_output(&["--version"]);
    assert!(out.status.success(), "pyhanko is required: {}", text(&out));
}

fn python(script: &str, args: &[&str]) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3 cannot be run ({e})"));
    assert!(
        out.status.success(),
        "pyhanko script failed: {}",
        text(&out)
    );
}

/// A one-page PDF 1.7 with a classic cross-reference table, offsets
/// computed as written (as in validation/tests/pdf.rs).
fn minimal_pdf(line: &str) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 720 Td ({line}) Tj ET");
    let objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>".to_vec(),
        format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        )
        .into_bytes(),
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

/// An incremental update that replaces the page's text: what anyone can
/// append to a signed PDF without the signer's key.
const FORGE: &str = r#"
import sys
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils import generic
with open(sys.argv[1], "rb") as f:
    w = IncrementalPdfFileWriter(f)
    page = w.root["/Pages"].raw_get("/Kids")[0].get_object()
    page["/Contents"] = w.add_object(generic.StreamObject(stream_data=b"BT /F1 12 Tf 72 720 Td (Qarz: 900 000 000 som) Tj ET"))
    w.update_container(page)
    with open(sys.argv[2], "wb") as o:
        w.write(o)
"#;

/// A document time-stamp without validation data after it.
const STAMP: &str = r#"
import sys
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko.sign.signers.pdf_signer import PdfTimeStamper
with open(sys.argv[1], "rb") as f:
    w = IncrementalPdfFileWriter(f)
    with open(sys.argv[2], "wb") as o:
        PdfTimeStamper(HTTPTimeStamper(sys.argv[3])).timestamp_pdf(w, "sha256", output=o)
"#;

/// pyHanko's validation of every document time-stamp, one status line
/// each (`FIELD:INTACT:TRUSTED,...`).
const VALIDATE_DOCUMENT_TIME_STAMPS: &str = r#"
import sys
from pyhanko.keys import load_cert_from_pemder
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_timestamp
from pyhanko_certvalidator import ValidationContext
vc = ValidationContext(
    trust_roots=[load_cert_from_pemder(sys.argv[2])],
    other_certs=[load_cert_from_pemder(sys.argv[3])],
    allow_fetching=True,
)
with open(sys.argv[1], "rb") as f:
    stamps = PdfFileReader(f).embedded_timestamp_signatures
    assert stamps, "pyHanko found no document time-stamp"
    for s in stamps:
        print(f"{s.field_name}:{validate_pdf_timestamp(s, validation_context=vc).summary()}")
"#;

fn forge(site: &Site, signed: &Path, out: &str) -> PathBuf {
    let out = site.env.path(out);
    python(FORGE, &[signed.to_str().unwrap(), out.to_str().unwrap()]);
    out
}

fn contract(site: &Site, name: &str) -> PathBuf {
    site.env.write(
        name,
        minimal_pdf("Shartnoma 17: Samarqand, 2026-yil 2-dekabr. Qarz: 9 000 000 som"),
    )
}

fn codes(problems: &Value) -> Vec<String> {
    problems
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {problems}"))
        .iter()
        .map(|p| p["code"].as_str().unwrap().to_string())
        .collect()
}

/// The signer's time-stamp proves the signing time: a later revocation for
/// any reason but key compromise leaves the signature standing.
fn sleep_past_the_proven_time() {
    // genTime plus the 1.5 s accuracy, rounded up to 2 s, genTime's own
    // rounding to the second, and the revocation time's truncation to its
    // second.
    std::thread::sleep(Duration::from_millis(4100));
}

fn pades_b_t_is_valid_for_muhr_and_for_pyhanko(db: Db, keys: Keys) {
    let site = Site::start(db, keys);
    let oktam = site.citizen("oktam", oktam());
    let signed = site.sign(
        &oktam,
        &contract(&site, "contract.pdf"),
        "Sig1",
        "signed.pdf",
    );

    let (code, v) = site.judge(&signed);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["problems"], json!([]), "{v}");
    let sigs = v["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), 1, "{v}");
    let s = &sigs[0];
    assert_eq!(s["field"], "Sig1", "{v}");
    assert_eq!(s["sub_filter"], "ETSI.CAdES.detached", "{v}");
    assert_eq!(s["kind"], "signature", "{v}");
    assert_eq!(s["covers_whole_file"], true, "{v}");
    assert_eq!(s["changed_after"], false, "{v}");
    assert_eq!(s["later_revisions"], 0, "{v}");
    assert_eq!(s["valid"], true, "{v}");
    let verdict = &s["verdict"];
    assert_eq!(verdict["judged_at_source"], "time_stamp", "{v}");
    assert_eq!(verdict["attached"], false, "{v}");
    // PAdES forbids the signingTime attribute: no claim at all.
    assert_eq!(verdict["claimed_signing_time"], Value::Null, "{v}");
    assert_eq!(verdict["time_stamp"]["valid"], true, "{v}");
    assert_eq!(verdict["time_stamp"]["logged"], true, "{v}");
    assert_eq!(verdict["signer"]["identity"]["pinfl"], oktam.pinfl.as_str());
    assert!(
        verdict["signer"]["subject"]
            .as_str()
            .unwrap()
            .contains("OʻKTAM"),
        "{v}"
    );
    let [a, b, c, d] = [0, 1, 2, 3].map(|i| s["byte_range"][i].as_u64().unwrap());
    assert_eq!(a, 0);
    assert!(b < c);
    assert_eq!(c + d, std::fs::metadata(&signed).unwrap().len());

    // The text output says the same, per signature.
    let o = site.env.run(&["verify", signed.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    for want in [
        "document      VALID",
        "signature 1: field Sig1, /SubFilter ETSI.CAdES.detached",
        "  unchanged     it covers the whole file",
        "  verdict       VALID",
        "  signer        ",
        "OʻKTAM",
        &format!("  pinfl         {}", oktam.pinfl),
        "  time-stamp    valid",
        "  signing time  none claimed",
    ] {
        assert!(t.contains(want), "{want:?} missing:\n{t}");
    }

    // pyHanko, trusting Muhr's root alone, agrees: intact, trusted, with
    // a valid signature time-stamp, at PAdES level B-T or better.
    // pyHanko, trusting Muhr's root alone and asking Muhr's OCSP
    // responder and CRLs, agrees: intact, trusted, with a valid signature
    // time-stamp from a trusted TSA (PAdES-B-T), nothing added since.
    let (ok, status, prose) = site.pyhanko_validate(&signed);
    assert!(ok, "pyHanko:\n{status}\n{prose}");
    assert!(
        status.contains(":INTACT:TRUSTED,TIMESTAMP_TOKEN<INTACT:TRUSTED>,UNTOUCHED"),
        "pyHanko:\n{status}"
    );
    for want in [
        "The signer's certificate is trusted.",
        "Trust anchor: \"Common Name: Muhr Development Root CA",
        "Signature timestamp token: ",
        "This timestamp is backed by a time stamping authority.",
        "The TSA certificate is trusted.",
        "The signature covers the entire file.",
        "The signature is judged VALID.",
    ] {
        assert!(prose.contains(want), "pyHanko: {want:?} missing:\n{prose}");
    }
}

#[test]
fn a_pades_b_t_signature_is_valid_for_muhr_and_for_pyhanko_sqlite_software_keys() {
    pades_b_t_is_valid_for_muhr_and_for_pyhanko(Db::Sqlite, Keys::Software)
}

#[test]
fn a_pades_b_t_signature_is_valid_for_muhr_and_for_pyhanko_postgres_softhsm() {
    pades_b_t_is_valid_for_muhr_and_for_pyhanko(Db::Postgres, Keys::SoftHsm)
}

#[test]
fn a_revocation_after_the_time_stamp_leaves_the_signature_valid_unless_the_key_was_stolen() {
    let site = Site::start(Db::Sqlite, Keys::Software);
    let arujan = site.citizen("arujan", arujan());
    let baxtiyor = site.citizen("baxtiyor", baxtiyor());
    let first = site.sign(&arujan, &contract(&site, "a.pdf"), "Sig1", "arujan.pdf");
    let second = site.sign(&baxtiyor, &contract(&site, "b.pdf"), "Sig1", "baxtiyor.pdf");
    assert_eq!(site.judge(&first).0, 0);
    assert_eq!(site.judge(&second).0, 0);
    sleep_past_the_proven_time();

    // Superseded (a new card): the signature keeps the force it had.
    site.env
        .ok(&["revoke", &arujan.serial, "--reason", "superseded"]);
    let (code, v) = site.judge(&first);
    assert_eq!(code, 0, "{v}");
    let verdict = &v["signatures"][0]["verdict"];
    assert_eq!(verdict["judged_at_source"], "time_stamp", "{v}");
    assert_eq!(verdict["signer"]["status_now"], "revoked", "{v}");
    assert_eq!(verdict["signer"]["status_at"], "good", "{v}");

    // Key compromise: whoever held the key could have signed and had it
    // time-stamped before the report.
    site.env
        .ok(&["revoke", &baxtiyor.serial, "--reason", "keyCompromise"]);
    let (code, v) = site.judge(&second);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(codes(&v["problems"]), ["signature_not_valid"], "{v}");
    assert!(
        v["problems"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("keyCompromise"),
        "{v}"
    );
    assert_eq!(codes(&v["signatures"][0]["problems"]), ["revoked"], "{v}");
}

#[test]
fn a_page_changed_after_signing_is_reported() {
    let site = Site::start(Db::Sqlite, Keys::Software);
    let malika = site.citizen("malika", malika());
    let signed = site.sign(&malika, &contract(&site, "c.pdf"), "Sig1", "signed.pdf");
    let forged = forge(&site, &signed, "forged.pdf");

    let (code, v) = site.judge(&forged);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(codes(&v["problems"]), ["changed_after_signing"], "{v}");
    let s = &v["signatures"][0];
    // The signed bytes are intact: the signature itself is valid, for
    // what it covers; the document is not what was signed.
    assert_eq!(s["valid"], true, "{v}");
    assert_eq!(s["changed_after"], true, "{v}");
    assert_eq!(s["covers_whole_file"], false, "{v}");
    assert_eq!(s["later_revisions"], 1, "{v}");
    let o = site.env.run(&["verify", forged.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("document      INVALID"), "{t}");
    assert!(t.contains("problem       changed_after_signing"), "{t}");
    assert!(
        t.contains("  CHANGED       bytes were added after it (1 later revision(s))"),
        "{t}"
    );

    // pyHanko sees the same: the signature intact, the file modified.
    // pyHanko sees the same: the signature intact, the file modified
    // beyond what its policy allows.
    let (ok, status, prose) = site.pyhanko_validate(&forged);
    assert!(!ok, "pyHanko:\n{status}\n{prose}");
    assert!(
        status.contains(":INTACT:TRUSTED,TIMESTAMP_TOKEN<INTACT:TRUSTED>,")
            && status.contains("ILLEGAL_MODIFICATIONS")
            && !status.contains("UNTOUCHED"),
        "pyHanko:\n{status}"
    );
    assert!(
        prose.contains("The signature does not cover the entire file."),
        "pyHanko:\n{prose}"
    );
}

#[test]
fn a_page_changed_and_then_time_stamped_by_the_public_tsa_is_still_reported() {
    let site = Site::start(Db::Sqlite, Keys::Software);
    let oktam = site.citizen("oktam", oktam());
    let signed = site.sign(&oktam, &contract(&site, "c.pdf"), "Sig1", "signed.pdf");
    // The forger needs no credential to have the forgery time-stamped.
    let forged = forge(&site, &signed, "forged.pdf");
    // Its token covers every byte of the file.
    let stamped = site.stamp_bare(&forged, "stamped.pdf");

    let (code, v) = site.judge(&stamped);
    assert_eq!(code, 1, "{v}");
    assert_eq!(codes(&v["problems"]), ["changed_after_signing"], "{v}");
    assert!(
        v["problems"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("a document time-stamp proves when bytes existed, not who wrote them"),
        "{v}"
    );
    let sigs = v["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), 2, "{v}");
    assert_eq!(sigs[0]["kind"], "signature", "{v}");
    assert_eq!(sigs[0]["changed_after"], true, "{v}");
    assert_eq!(sigs[0]["later_revisions"], 2, "{v}");
    // The token itself is good: it proves when, not who.
    assert_eq!(sigs[1]["kind"], "document_time_stamp", "{v}");
    assert_eq!(sigs[1]["valid"], true, "{v}");
    assert_eq!(sigs[1]["covers_whole_file"], true, "{v}");
}

#[test]
fn a_document_time_stamp_proves_when_not_who() {
    let site = Site::start(Db::Sqlite, Keys::Software);
    let unsigned = contract(&site, "unsigned.pdf");
    let stamped = site.stamp(&unsigned, "stamped.pdf");

    let (code, v) = site.judge(&stamped);
    // Nobody signed it: the document is not valid as a signed document...
    assert_eq!(code, 1, "{v}");
    assert_eq!(codes(&v["problems"]), ["no_signature"], "{v}");
    // ...but its time-stamp is reported, and valid, as a proof of existence
    // of the revision it covers.
    let s = &v["signatures"][0];
    assert_eq!(s["kind"], "document_time_stamp", "{v}");
    assert_eq!(s["sub_filter"], "ETSI.RFC3161", "{v}");
    assert_eq!(s["valid"], true, "{v}");
    assert_eq!(s["verdict"], Value::Null, "{v}");
    // pyHanko appended the token's validation data (a /DSS) after it.
    assert_eq!(s["changed_after"], true, "{v}");
    assert_eq!(s["later_revisions"], 1, "{v}");
    let t = &s["time_stamp"];
    assert_eq!(t["valid"], true, "{v}");
    assert_eq!(t["logged"], true, "{v}");
    assert_eq!(t["accuracy_ms"], 1500, "{v}");
    assert!(
        t["tsa"]["subject"]
            .as_str()
            .unwrap()
            .contains("Muhr TSA test"),
        "{v}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // genTime is rounded to the second, possibly up.
    let made = t["gen_time"].as_i64().unwrap();
    assert!((now - 120..=now + 1).contains(&made), "{v}");
    // pyHanko, trusting Muhr's root alone, accepts the token too (its
    // command line validates signatures only: its API, then).
    let root = site.env.root_pem();
    let issuing = site.env.issuing_pem();
    let out = Command::new("python3")
        .arg("-c")
        .arg(VALIDATE_DOCUMENT_TIME_STAMPS)
        .args([&stamped, &root, &issuing])
        .output()
        .unwrap();
    let p = text(&out);
    assert!(out.status.success(), "pyHanko:\n{p}");
    assert!(
        p.starts_with("Timestamp-") && p.trim_end().ends_with(":INTACT:TRUSTED"),
        "pyHanko:\n{p}"
    );

    // The text output names it for what it is.
    let t = text(&site.env.run(&["verify", stamped.to_str().unwrap()]));
    assert!(t.contains("document time-stamp 1: field Timestamp"), "{t}");
    assert!(t.contains("problem       no_signature"), "{t}");

    // A token moved onto another document's revision proves nothing
    // about it: two documents stamped alike, the first one's token
    // written into the second's /Contents.
    let first = site.stamp_bare(&unsigned, "bare.pdf");
    let (_, v) = site.judge(&first);
    assert_eq!(v["signatures"][0]["covers_whole_file"], true, "{v}");
    assert_eq!(v["signatures"][0]["valid"], true, "{v}");
    let other = site.env.write("other.pdf", minimal_pdf("Boshqa hujjat"));
    let other = site.stamp_bare(&other, "other-stamped.pdf");
    let value = |pdf: &[u8]| {
        let at = pdf.windows(11).position(|w| w == b"/Contents <").unwrap() + 11;
        let len = pdf[at..].iter().position(|&c| c == b'>').unwrap();
        (at, len)
    };
    let (from, into) = (
        std::fs::read(&first).unwrap(),
        std::fs::read(&other).unwrap(),
    );
    let ((fa, fl), (ia, il)) = (value(&from), value(&into));
    // The first token, zero-padded (or its padding cut) to the room the
    // second one had.
    let mut token = from[fa..fa + fl].to_vec();
    token.resize(il, b'0');
    assert!(
        from[fa + il.min(fl)..fa + fl].iter().all(|&c| c == b'0'),
        "the token does not fit"
    );
    let mut grafted = into.clone();
    grafted[ia..ia + il].copy_from_slice(&token);
    let grafted = site.env.write("grafted.pdf", grafted);
    let (_, v) = site.judge(&grafted);
    let s = &v["signatures"][0];
    assert_eq!(s["valid"], false, "{v}");
    assert_eq!(codes(&s["problems"]), ["timestamp_mismatch"], "{v}");
    assert!(
        s["problems"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("/ByteRange"),
        "{v}"
    );
    assert_eq!(
        codes(&v["problems"]),
        ["time_stamp_not_valid", "no_signature"],
        "{v}"
    );
}

#[test]
fn a_countersignature_keeps_the_document_valid_and_says_what_each_signer_signed() {
    let site = Site::start(Db::Sqlite, Keys::Software);
    let oktam = site.citizen("oktam", oktam());
    let malika = site.citizen("malika", malika());
    let once = site.sign(&oktam, &contract(&site, "c.pdf"), "Sig1", "once.pdf");
    let twice = site.sign(&malika, &once, "Sig2", "twice.pdf");

    let (code, v) = site.judge(&twice);
    assert_eq!(code, 0, "{v}");
    let sigs = v["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), 2, "{v}");
    assert_eq!(sigs[0]["field"], "Sig1", "{v}");
    assert_eq!(sigs[0]["changed_after"], true, "{v}");
    assert_eq!(sigs[0]["later_revisions"], 1, "{v}");
    assert_eq!(sigs[1]["field"], "Sig2", "{v}");
    assert_eq!(sigs[1]["changed_after"], false, "{v}");
    for (s, who) in sigs.iter().zip([&oktam, &malika]) {
        assert_eq!(s["valid"], true, "{v}");
        assert_eq!(s["verdict"]["judged_at_source"], "time_stamp", "{v}");
        assert_eq!(
            s["verdict"]["signer"]["identity"]["pinfl"],
            who.pinfl.as_str()
        );
    }

    // A page changed after both: the last signature no longer covers the
    // file either.
    let forged = forge(&site, &twice, "forged.pdf");
    let (code, v) = site.judge(&forged);
    assert_eq!(code, 1, "{v}");
    assert_eq!(codes(&v["problems"]), ["changed_after_signing"], "{v}");
    assert_eq!(v["signatures"][1]["changed_after"], true, "{v}");
}

#[test]
fn a_sha1_or_unknown_sub_filter_is_refused_not_checked() {
    let site = Site::start(Db::Sqlite, Keys::Software);
    let arujan = site.citizen("arujan", arujan());
    let signed =
        std::fs::read(site.sign(&arujan, &contract(&site, "c.pdf"), "Sig1", "s.pdf")).unwrap();
    let name = b"/ETSI.CAdES.detached";
    let at = signed.windows(name.len()).position(|w| w == name).unwrap();
    for (sub_filter, why) in [
        ("/adbe.pkcs7.sha1", "SHA-1"),
        ("/adbe.x509.rsa_sha1", "not supported"),
    ] {
        let mut bent = signed.clone();
        bent[at..at + name.len()].copy_from_slice(format!("{sub_filter:20}").as_bytes());
        let bent = site.env.write("bent.pdf", bent);
        let (code, v) = site.judge(&bent);
        assert_eq!(code, 1, "{v}");
        let s = &v["signatures"][0];
        assert_eq!(s["kind"], "unsupported", "{v}");
        assert_eq!(s["sub_filter"], &sub_filter[1..], "{v}");
        assert_eq!(codes(&s["problems"]), ["unsupported"], "{v}");
        assert!(
            s["problems"][0]["detail"].as_str().unwrap().contains(why),
            "{v}"
        );
        assert_eq!(s["verdict"], Value::Null, "{v}");
        assert_eq!(codes(&v["problems"]), ["signature_not_valid"], "{v}");
    }
}

#[test]
fn unreadable_cut_or_misaddressed_inputs_are_refused_with_their_reason() {
    let site = Site::start(Db::Sqlite, Keys::Software);
    let oktam = site.citizen("oktam", oktam());
    let signed =
        std::fs::read(site.sign(&oktam, &contract(&site, "c.pdf"), "Sig1", "s.pdf")).unwrap();

    // Cut inside the signature value: the signature is lost, and said so.
    let at = signed
        .windows(11)
        .position(|w| w == b"/Contents <")
        .unwrap()
        + 200;
    let cut = site.env.write("cut.pdf", &signed[..at]);
    let (code, v) = site.judge(&cut);
    assert_eq!(code, 1, "{v}");
    assert_eq!(codes(&v["problems"]), ["malformed"], "{v}");
    assert_eq!(v["signatures"], json!([]), "{v}");

    // An unsigned PDF.
    let unsigned = contract(&site, "unsigned.pdf");
    let (code, v) = site.judge(&unsigned);
    assert_eq!(code, 1, "{v}");
    assert_eq!(codes(&v["problems"]), ["no_signature"], "{v}");

    // A PDF given as a CMS signature with --content: a usage error.
    let o = site.env.run(&[
        "verify",
        unsigned.to_str().unwrap(),
        "--content",
        unsigned.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("without --content"), "{}", text(&o));
    // A missing file.
    let o = site.env.run(&["verify", "/nonexistent/contract.pdf"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // The API: not a PDF is a verdict; malformed requests name the field.
    let (status, v) = site.call(&json!({ "pdf": STANDARD.encode(b"GIF89a not a PDF") }));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(codes(&v["problems"]), ["not_pdf"], "{v}");
    let b64 = STANDARD.encode(&signed);
    for (body, field) in [
        (json!({ "pdf": "%PDF-1.7 not base64" }), "pdf"),
        (json!({ "pdf": b64, "signature": b64 }), "pdf"),
        (json!({ "pdf": b64, "content": b64 }), "content"),
        (json!({}), "signature"),
        (json!({ "pdf": b64, "pages": 1 }), "body"),
    ] {
        let (status, v) = site.call(&body);
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }

    // 20 MiB of document at most: a larger one is refused before it is
    // judged, whether its base64 fits the body limit or not.
    let mut big = signed.clone();
    big.resize((20 << 20) + 1, b'\n');
    let (status, v) = site.call(&json!({ "pdf": STANDARD.encode(&big) }));
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["field"], "pdf", "{v}");
    big.resize(22 << 20, b'\n');
    let (status, v) = site.curl(&json!({ "pdf": STANDARD.encode(&big) }));
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (413, Some("body")),
        "{v}"
    );
    // 20 MiB exactly is judged (its appended bytes are reported).
    big.truncate(20 << 20);
    let (status, v) = site.call(&json!({ "pdf": STANDARD.encode(&big) }));
    assert_eq!(status, 200, "{v}");
    assert_eq!(codes(&v["problems"]), ["changed_after_signing"], "{v}");
    assert_eq!(v["signatures"][0]["valid"], true, "{v}");
}

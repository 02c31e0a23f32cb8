//! Relying parties on the command line: registering one, their monthly
//! usage, and checking a signature as the verification service does.

use std::path::Path;
use std::sync::Arc;

use crate::Fail;
use crate::app::App;
use crate::commands::cli_actor;

/// `muhr rp add`: prints the id and the secret, which is never shown again.
pub async fn rp_add(app: &App, name: &str, class: &str) -> Result<(), Fail> {
    let parties = muhr_login::relying::RelyingParties::new(app.store.clone(), 0);
    let c = parties
        .add(name, class, &cli_actor())
        .await
        .map_err(|e| Fail::invalid(format!("refused: {e}")))?;
    println!("id      {}", c.id);
    println!("secret  {}", c.secret);
    eprintln!(
        "Keep the secret: it is shown only now. The relying party sends `Authorization: Basic base64(id:secret)`."
    );
    Ok(())
}

/// `muhr rp disable --id ID`.
pub async fn rp_disable(app: &App, id: &str) -> Result<(), Fail> {
    muhr_login::relying::RelyingParties::new(app.store.clone(), 0)
        .disable(id, &cli_actor())
        .await
        .map_err(|e| Fail::invalid(format!("refused: {e}")))?;
    println!("disabled {id}");
    Ok(())
}

/// `muhr report usage --month YYYY-MM`.
pub async fn report_usage(
    app: &App,
    month: &str,
    format: crate::ra_cli::ReportFormat,
) -> Result<(), Fail> {
    let bad = || Fail::invalid(format!("refused: month: {month:?} is not YYYY-MM"));
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let (y, m): (u16, u8) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if y.to_string().len() != 4 || m.to_string().len() > 2 || month.len() != 7 {
        return Err(bad());
    }
    let start = |y: u16, m: u8| {
        der::DateTime::new(y, m, 1, 0, 0, 0)
            .map(|d| d.unix_duration().as_secs() as i64)
            .map_err(|_| bad())
    };
    let from = start(y, m)?;
    let to = if m == 12 {
        start(y + 1, 1)?
    } else {
        start(y, m + 1)?
    };
    let rows = app
        .store
        .usage(month, from, to)
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    match format {
        crate::ra_cli::ReportFormat::Json => {
            let list: Vec<_> = rows
                .iter()
                .map(|u| {
                    serde_json::json!({
                        "rp": u.rp, "name": u.name, "class": u.class,
                        "logins": u.logins, "verifications": u.verifications,
                        "billable": u.class == "commercial",
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({ "month": month, "relying_parties": list })
            );
        }
        crate::ra_cli::ReportFormat::Csv => {
            println!("month,rp,name,class,logins,verifications,billable");
            for u in &rows {
                println!(
                    "{month},{},{},{},{},{},{}",
                    u.rp,
                    csv_field(&u.name),
                    u.class,
                    u.logins,
                    u.verifications,
                    if u.class == "commercial" { "yes" } else { "no" }
                );
            }
        }
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `muhr verify SIG [--content FILE]`: exit 0 valid, 1 invalid (reasons on
/// stdout), 2 when the files cannot be read. A file starting with `%PDF-`
/// and no `--content` is a signed PDF: every signature and document
/// time-stamp in it is judged, and the document as a whole
/// ([`muhr_validation::signatures::verify_pdf`]).
pub async fn verify(
    app: &App,
    signature: &Path,
    content: Option<&Path>,
    json: bool,
) -> Result<(), Fail> {
    let usage = |what: &str, p: &Path, e: std::io::Error| Fail {
        code: 2,
        message: format!("{what} {}: {e}", p.display()),
    };
    let sig = std::fs::read(signature).map_err(|e| usage("signature", signature, e))?;
    let is_pdf = sig.starts_with(b"%PDF-");
    if is_pdf && content.is_some() {
        return Err(Fail {
            code: 2,
            message: format!(
                "{} is a PDF, which carries its signed content: give it without --content",
                signature.display()
            ),
        });
    }
    let content = content
        .map(|p| std::fs::read(p).map_err(|e| usage("content", p, e)))
        .transpose()?;
    let ca = Arc::new(app.ca().await?);
    let external = muhr_validation::external::External::load(&app.config.login.external_cas)
        .map_err(Fail::invalid)?;
    let trust = muhr_validation::trust::Trust::with_external(ca, external);
    let valid = if is_pdf {
        let verdict = muhr_validation::signatures::verify_pdf(&trust, &sig)
            .await
            .map_err(Fail::internal)?;
        if json {
            print_json(&verdict)?;
        } else {
            print_pdf_verdict(&verdict, sig.len());
        }
        verdict.valid
    } else {
        let verdict = muhr_validation::signatures::verify(&trust, &sig, content.as_deref())
            .await
            .map_err(Fail::internal)?;
        if json {
            print_json(&verdict)?;
        } else {
            print_verdict(&verdict, "");
        }
        verdict.valid
    };
    if valid {
        Ok(())
    } else {
        Err(Fail {
            code: 1,
            message: if is_pdf {
                "the PDF's signatures are not valid".into()
            } else {
                "the signature is not valid".into()
            },
        })
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<(), Fail> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).map_err(|e| Fail::internal(e.to_string()))?
    );
    Ok(())
}

/// The document's verdict, then each signature's, indented under it.
fn print_pdf_verdict(v: &muhr_validation::signatures::PdfVerdict, len: usize) {
    use muhr_validation::signatures::PdfSignatureKind;
    println!(
        "document      {}",
        if v.valid { "VALID" } else { "INVALID" }
    );
    for p in &v.problems {
        println!("problem       {}: {}", p.code, p.detail);
    }
    for (i, s) in v.signatures.iter().enumerate() {
        let kind = match s.kind {
            PdfSignatureKind::Signature => "signature",
            PdfSignatureKind::DocumentTimeStamp => "document time-stamp",
            PdfSignatureKind::Unsupported => "unsupported signature",
        };
        println!();
        println!(
            "{kind} {}: field {}, /SubFilter {}",
            i + 1,
            s.field.as_deref().unwrap_or("(unnamed)"),
            s.sub_filter.as_deref().unwrap_or("(none)")
        );
        let [_, b, c, d] = s.byte_range;
        println!(
            "{}bytes 0..{b} and {c}..{} of {len}",
            label("  ", "covers"),
            c.saturating_add(d)
        );
        if s.changed_after {
            println!(
                "{}bytes were added after it ({} later revision(s))",
                label("  ", "CHANGED"),
                s.later_revisions
            );
        } else {
            println!("{}it covers the whole file", label("  ", "unchanged"));
        }
        if let Some(verdict) = &s.verdict {
            print_verdict(verdict, "  ");
        } else if let Some(t) = &s.time_stamp {
            println!(
                "{}{}",
                label("  ", "verdict"),
                if t.valid { "VALID" } else { "INVALID" }
            );
            print_time_stamp(t, "  ");
        } else {
            println!("{}INVALID", label("  ", "verdict"));
            for p in &s.problems {
                println!("{}{}: {}", label("  ", "reason"), p.code, p.detail);
            }
        }
    }
}

/// A line's label: values start 14 columns after the indent.
fn label(indent: &str, l: &str) -> String {
    format!("{indent}{l:<14}")
}

/// One signature's verdict, each line after `indent` (empty for a CMS
/// signature on its own: the output `muhr verify` always had).
fn print_verdict(verdict: &muhr_validation::signatures::Verdict, indent: &str) {
    let label = |l: &str| label(indent, l);
    println!(
        "{}{}",
        label("verdict"),
        if verdict.valid { "VALID" } else { "INVALID" }
    );
    for r in &verdict.reasons {
        println!("{}{}: {}", label("reason"), r.code, r.detail);
    }
    if let Some(s) = &verdict.signer {
        println!("{}{}", label("signer"), s.subject);
        println!("{}{}", label("serial"), s.serial);
        if let Some(p) = s.identity.get("pinfl") {
            println!("{}{p}", label("pinfl"));
        }
        println!("{}{}", label("status now"), s.status_now);
    }
    println!(
        "{}{} ({})",
        label("judged at"),
        crate::commands::date(verdict.judged_at),
        verdict.judged_at_why
    );
    if let Some(t) = &verdict.time_stamp {
        println!(
            "{}{}",
            label("time-stamp"),
            if t.valid {
                "valid"
            } else {
                "NOT VALID (ignored)"
            }
        );
        print_time_stamp(t, indent);
    }
    match verdict.claimed_signing_time {
        Some(t) => println!(
            "{}{} (claimed by the signer, not proven)",
            label("signing time"),
            crate::commands::date(t)
        ),
        None => println!("{}none claimed", label("signing time")),
    }
}

/// A time-stamp token's details, two spaces deeper than `indent`.
fn print_time_stamp(t: &muhr_validation::timestamp::TimeStampReport, indent: &str) {
    if let Some(g) = t.gen_time {
        println!(
            "{indent}  gen time    {} (accuracy {} ms)",
            crate::commands::date(g),
            t.accuracy_ms.unwrap_or(0)
        );
    }
    if let Some(a) = &t.tsa {
        println!("{indent}  TSA         {} (serial {})", a.subject, a.serial);
    }
    if let Some(s) = &t.serial {
        println!("{indent}  serial      {s}");
    }
    if let Some(l) = t.logged {
        println!("{indent}  in the log  {}", if l { "yes" } else { "NO" });
    }
    for p in &t.problems {
        println!("{indent}  problem     {}: {}", p.code, p.detail);
    }
}

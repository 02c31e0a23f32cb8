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
/// stdout), 2 when the files cannot be read.
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
    let content = content
        .map(|p| std::fs::read(p).map_err(|e| usage("content", p, e)))
        .transpose()?;
    let ca = Arc::new(app.ca().await?);
    let external = muhr_validation::external::External::load(&app.config.login.external_cas)
        .map_err(Fail::invalid)?;
    let trust = muhr_validation::trust::Trust::with_external(ca, external);
    let verdict = muhr_validation::signatures::verify(&trust, &sig, content.as_deref())
        .await
        .map_err(Fail::internal)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&verdict).map_err(|e| Fail::internal(e.to_string()))?
        );
    } else {
        println!(
            "verdict       {}",
            if verdict.valid { "VALID" } else { "INVALID" }
        );
        for r in &verdict.reasons {
            println!("reason        {}: {}", r.code, r.detail);
        }
        if let Some(s) = &verdict.signer {
            println!("signer        {}", s.subject);
            println!("serial        {}", s.serial);
            if let Some(p) = s.identity.get("pinfl") {
                println!("pinfl         {p}");
            }
            println!("status now    {}", s.status_now);
        }
        println!(
            "judged at     {} ({})",
            crate::commands::date(verdict.judged_at),
            verdict.judged_at_why
        );
        if let Some(t) = &verdict.time_stamp {
            println!(
                "time-stamp    {}",
                if t.valid {
                    "valid"
                } else {
                    "NOT VALID (ignored)"
                }
            );
            if let Some(g) = t.gen_time {
                println!(
                    "  gen time    {} (accuracy {} ms)",
                    crate::commands::date(g),
                    t.accuracy_ms.unwrap_or(0)
                );
            }
            if let Some(a) = &t.tsa {
                println!("  TSA         {} (serial {})", a.subject, a.serial);
            }
            if let Some(s) = &t.serial {
                println!("  serial      {s}");
            }
            if let Some(l) = t.logged {
                println!("  in the log  {}", if l { "yes" } else { "NO" });
            }
            for p in &t.problems {
                println!("  problem     {}: {}", p.code, p.detail);
            }
        }
        match verdict.claimed_signing_time {
            Some(t) => println!(
                "signing time  {} (claimed by the signer, not proven)",
                crate::commands::date(t)
            ),
            None => println!("signing time  none claimed"),
        }
    }
    if verdict.valid {
        Ok(())
    } else {
        Err(Fail {
            code: 1,
            message: "the signature is not valid".into(),
        })
    }
}

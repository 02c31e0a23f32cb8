//! RA commands: the population-registry import and the pilot report.

use std::path::Path;

use muhr_ra::card::Date;
use muhr_store::registry::RegistryPerson;

use crate::Fail;
use crate::app::App;

const REGISTRY_HEADER: [&str; 6] = [
    "pinfl",
    "surname",
    "given_name",
    "patronymic",
    "birth_date",
    "deceased_on",
];

/// Splits one CSV line (RFC 4180 quoting; no line breaks inside fields).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => out.push(std::mem::take(&mut cur)),
            (_, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    out.push(cur);
    Ok(out)
}

/// `muhr registry import FILE.csv`: every line is checked before any is
/// written; then all are loaded in one transaction (all or nothing).
pub async fn registry_import(app: &App, file: &Path) -> Result<(), Fail> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Fail::invalid(format!("{}: {e}", file.display())))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| Fail::invalid(format!("{}: empty file", file.display())))?;
    let header = csv_fields(header.trim_start_matches('\u{feff}')).map_err(Fail::invalid)?;
    if header.iter().map(|h| h.trim()).ne(REGISTRY_HEADER) {
        return Err(Fail::invalid(format!(
            "{}: line 1: the header must be {}",
            file.display(),
            REGISTRY_HEADER.join(",")
        )));
    }
    let rules = &app.config.identity;
    let mut people = Vec::new();
    for (i, line) in lines {
        let at = |m: String| Fail::invalid(format!("{}: line {}: {m}", file.display(), i + 1));
        let f = csv_fields(line).map_err(at)?;
        if f.len() != REGISTRY_HEADER.len() {
            return Err(at(format!(
                "{} fields, expected {}",
                f.len(),
                REGISTRY_HEADER.len()
            )));
        }
        let pinfl = rules
            .pinfl("pinfl", f[0].trim())
            .map_err(|e| at(e.to_string()))?;
        let birth = Date::parse("birth_date", f[4].trim()).map_err(|r| at(r.error.to_string()))?;
        if (birth.year, birth.month, birth.day) != pinfl.birth {
            return Err(at("birth_date: is not the date the PINFL encodes".into()));
        }
        let deceased = match f[5].trim() {
            "" => None,
            d => Some(
                Date::parse("deceased_on", d)
                    .map_err(|r| at(r.error.to_string()))?
                    .to_string(),
            ),
        };
        let name = |field: &str, v: &str| rules.name(field, v).map_err(|e| at(e.to_string()));
        people.push(RegistryPerson {
            pinfl: pinfl.digits,
            surname: name("surname", &f[1])?,
            given_name: name("given_name", &f[2])?,
            patronymic: match f[3].trim() {
                "" => None,
                p => Some(name("patronymic", p)?),
            },
            birth_date: birth.to_string(),
            deceased_on: deceased,
        });
    }
    let deceased = people.iter().filter(|p| p.deceased_on.is_some()).count();
    let event = muhr_store::AuditEvent {
        actor: crate::commands::cli_actor(),
        action: "registry.import".into(),
        object: file.display().to_string(),
        details: serde_json::json!({ "people": people.len(), "deceased": deceased }),
    };
    app.store
        .import_registry(&people, &event)
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    println!(
        "imported {} people ({deceased} recorded as deceased)",
        people.len()
    );
    Ok(())
}

/// `--format` of `muhr report pilot` and `muhr report usage`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    /// CSV with a header line.
    Csv,
    /// One JSON document.
    Json,
}

/// `muhr report pilot`: both dates inclusive, in UTC.
pub async fn report_pilot(
    app: &App,
    from: &str,
    to: &str,
    format: ReportFormat,
) -> Result<(), Fail> {
    let refuse = |r: muhr_ra::Refusal| Fail::invalid(format!("refused: {}", r.error));
    let start = Date::parse("from", from).map_err(refuse)?;
    let end = Date::parse("to", to).map_err(refuse)?;
    if end < start {
        return Err(Fail::invalid("refused: to: is before from"));
    }
    let from_us = muhr_store::unix_micros(start.to_system_time());
    let to_us = muhr_store::unix_micros(end.to_system_time()) + 86_400_000_000;
    let outcomes = app
        .store
        .outcomes(from_us, to_us)
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    let districts = crate::app::districts(&app.config)?;
    let report = muhr_ra::card::report::build(from, to, &outcomes, |code| {
        districts.name(code).map(str::to_string)
    });
    match format {
        ReportFormat::Csv => print!("{}", report.csv()),
        ReportFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| Fail::internal(e.to_string()))?
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::csv_fields;

    #[test]
    fn quoted_fields() {
        assert_eq!(
            csv_fields(r#"a,"b,c","d""e",,"#).unwrap(),
            ["a", "b,c", "d\"e", "", ""]
        );
        assert!(csv_fields(r#"a,"b"#).is_err());
    }
}

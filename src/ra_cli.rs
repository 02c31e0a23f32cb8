//! RA commands: the pilot report.

use muhr_ra::card::Date;

use crate::Fail;
use crate::app::App;

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

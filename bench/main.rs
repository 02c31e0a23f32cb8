//! `muhr-bench`: Muhr's benchmarks, a binary of their own. Nothing here is
//! linked into `muhr`, which operators run: a benchmark signs with a CA key
//! for made-up people and writes synthetic rows, which must never reach a
//! database holding real certificates.
//!
//! By default each run makes a throw-away data directory (software keys,
//! SQLite, a development CA) and deletes it afterwards. `--data DIR` keeps
//! one across runs, `--config FILE` points at PostgreSQL or a PKCS#11 token
//! for measurements on the production components; either way the database
//! must be one this binary made (it carries the benchmark marker) or an
//! empty one, which it marks before writing anything. A database holding
//! real certificates is refused.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commands;
mod http;
mod login;
mod personalization;
mod registry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use muhr::Fail;

#[derive(Parser)]
#[command(
    name = "muhr-bench",
    version,
    about = "Muhr's benchmarks, on a throw-away installation (never a real one)"
)]
struct Cli {
    /// Configuration file (TOML) of a benchmark installation (PostgreSQL,
    /// PKCS#11). Its database must be empty or made by muhr-bench.
    #[arg(long, global = true, env = "MUHR_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory to use and keep (default: a new one, removed after).
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: commands::BenchCommand,
}

fn main() -> ExitCode {
    muhr::app::private_files();
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("MUHR_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("muhr-bench: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("muhr-bench: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// A data directory removed when the run ends.
struct Scratch(Option<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn run(cli: Cli) -> Result<(), Fail> {
    // A configuration names its own data directory; with neither, a new one.
    let (data, _scratch) = match (&cli.data, &cli.config) {
        (Some(d), _) => (Some(d.clone()), Scratch(None)),
        (None, Some(_)) => (None, Scratch(None)),
        (None, None) => {
            let mut id = [0u8; 8];
            aws_lc_rs::rand::fill(&mut id).map_err(|_| Fail::internal("no randomness"))?;
            let dir = std::env::temp_dir().join(format!("muhr-bench-{}", hex::encode(id)));
            std::fs::create_dir_all(&dir)
                .map_err(|e| Fail::invalid(format!("{}: {e}", dir.display())))?;
            (Some(dir.clone()), Scratch(Some(dir)))
        }
    };
    let app = muhr::app::App::load(cli.config.as_deref(), data.as_deref()).await?;
    let claimed = app
        .store
        .claim_for_benchmark()
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    if !claimed {
        return Err(Fail::invalid(
            "refused: this database holds real certificates (it was not made by muhr-bench); \
             benchmarks run only on a database of their own",
        ));
    }
    if app
        .store
        .authority_count()
        .await
        .map_err(|e| Fail::internal(e.to_string()))?
        == 0
    {
        app.init_ca("bench").await?;
        app.audit_signer(true, "bench").await?;
    }
    if let commands::BenchCommand::Serve {
        listen,
        listen_mtls,
    } = cli.command
    {
        return muhr::serve::run(app, Some(listen), Some(listen_mtls)).await;
    }
    let result = commands::run(&app, cli.command).await;
    app.anchor_audit().await;
    result
}

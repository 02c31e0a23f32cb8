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
mod tsa;

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
    let mut cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("MUHR_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // Made before the runtime starts: `tsa --keys softhsm` sets
    // SOFTHSM2_CONF while this process has one thread.
    let _scratch = match prepare(&mut cli) {
        Ok(s) => s,
        Err(f) => {
            eprintln!("muhr-bench: {}", f.message);
            return ExitCode::from(f.code);
        }
    };
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
    let result = runtime.block_on(run(cli));
    // A server a benchmark ran in this process stops with it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
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

/// With neither `--data` nor `--config`, a new data directory, removed
/// after the run. `tsa --keys`/`--database` write the configuration of
/// the benchmark's own installation into the data directory.
fn prepare(cli: &mut Cli) -> Result<Scratch, Fail> {
    let scratch = if cli.data.is_none() && cli.config.is_none() {
        let mut id = [0u8; 8];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| Fail::internal("no randomness"))?;
        let dir = std::env::temp_dir().join(format!("muhr-bench-{}", hex::encode(id)));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Fail::invalid(format!("{}: {e}", dir.display())))?;
        cli.data = Some(dir.clone());
        Scratch(Some(dir))
    } else {
        Scratch(None)
    };
    if let commands::BenchCommand::Tsa { keys, database, .. } = &cli.command
        && (keys.is_some() || database.is_some())
    {
        if cli.config.is_some() {
            return Err(Fail::invalid(
                "--keys and --database describe the benchmark's own installation; \
                 with --config, its key store and database are used",
            ));
        }
        let dir = cli
            .data
            .clone()
            .ok_or_else(|| Fail::internal("no data directory"))?;
        // Its configuration, token and keys go into the data directory:
        // only into one of the benchmark's own, never beside real keys.
        let marked = dir.join(muhr::app::BENCHMARK_MARKER).is_file();
        let empty = std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none());
        if !marked && !empty {
            return Err(Fail::invalid(format!(
                "refused: the data directory {} is not empty and was not made by muhr-bench; \
                 benchmarks run only in a directory of their own",
                dir.display()
            )));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| Fail::invalid(format!("{}: {e}", dir.display())))?;
        std::fs::write(
            dir.join(muhr::app::BENCHMARK_MARKER),
            "made by muhr-bench: a throw-away installation; muhr refuses its database\n",
        )
        .map_err(|e| Fail::invalid(format!("{}: {e}", dir.display())))?;
        let made = tsa::own_installation(
            &dir,
            keys.unwrap_or(tsa::KeyChoice::Software),
            database.as_deref(),
        )?;
        if let Some(conf) = made.softhsm_conf {
            // SAFETY: no other thread exists yet (the runtime starts
            // after this), so nothing reads the environment concurrently.
            unsafe { std::env::set_var("SOFTHSM2_CONF", conf) };
        }
        cli.config = Some(made.config);
    }
    Ok(scratch)
}

async fn run(cli: Cli) -> Result<(), Fail> {
    // A configuration names its own data directory; with neither, `main`
    // made a new one.
    let app =
        muhr::app::App::load_for_benchmark(cli.config.as_deref(), cli.data.as_deref()).await?;
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
    if let commands::BenchCommand::Tsa {
        seconds,
        warmup,
        connections,
        threads,
        rounds,
        breakdown,
        json,
        ..
    } = cli.command
    {
        let options = tsa::Options {
            seconds,
            warmup,
            connections,
            threads,
            rounds,
            breakdown,
            json,
        };
        return tsa::run(app, options).await;
    }
    let result = commands::run(&app, cli.command).await;
    app.anchor_audit().await;
    result
}

//! `muhr`: the certificate authority of the national EDS system, as one binary.
//!
//! Longer than 600 lines on purpose: the command-line grammar (clap's
//! declarations and help texts) and the dispatch from each command to the
//! library module that runs it, read together as the CLI's one page.

/// glibc's malloc spent 7% of personalization CPU in its free lists (many
/// small short-lived allocations across threads); mimalloc is built for that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use muhr::{
    Fail, app, approval_cli, citizen_cli, commands, mtls, notices_cli, ra_cli, registry_cli,
    rp_cli, serve,
};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "muhr",
    version,
    about = "Muhr: HSM-backed certificate authority for Uzbekistan's e-government EDS"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct Global {
    /// Configuration file (TOML). Without one, development defaults are used.
    #[arg(long, global = true, env = "MUHR_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory; overrides the configuration's `data_dir`.
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve health, metrics, CA certificates, CRLs and OCSP over HTTP, and the
    /// RA (personalization, operators) over mutual TLS.
    Serve {
        /// Address to listen on (default: the configuration's, else 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        /// The RA's mutual-TLS address (default: server.listen_mtls, else 127.0.0.1:8443).
        #[arg(long)]
        listen_mtls: Option<String>,
    },
    /// Run the OCSP responder alone (status from the database; no CA key needed).
    Ocsp {
        /// Address to listen on (default: the configuration's server.listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Run the time-stamping authority alone (`POST /tsa`): its key and
    /// certificate (made by `muhr serve`), its clock check and token log.
    Tsa {
        /// Address to listen on (default: the configuration's server.listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Certification authority management.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Issue one certificate from a CSR and a subject description; prints the PEM.
    Issue {
        #[arg(long)]
        profile: String,
        /// PKCS#10 request, PEM or DER.
        #[arg(long)]
        csr: PathBuf,
        /// Subject JSON: pinfl, surname, given_name, patronymic, tin, organization {name, tin, title}.
        #[arg(long)]
        subject: PathBuf,
    },
    /// Certificates in the database.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Revoke a certificate (final). SERIAL in hex as OpenSSL prints it.
    /// A CA certificate is only requested here, by an operator: a second
    /// operator's `muhr approve` carries it out.
    Revoke {
        serial: String,
        /// RFC 5280 reason name: keyCompromise, affiliationChanged, superseded,
        /// cessationOfOperation, privilegeWithdrawn, unspecified, cACompromise (CA certificates).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Suspend a certificate (certificateHold): lost card, suspected compromise.
    /// A CA certificate needs dual control, as for revoke.
    Suspend {
        serial: String,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Restore a suspended certificate. A CA certificate needs dual control,
    /// as for revoke.
    Restore {
        serial: String,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Find what the benchmark commands of earlier versions left in this
    /// installation (synthetic rows, certificates for made-up people,
    /// benchmark relying parties); with --apply, remove them (audited).
    CleanupBenchmarkData {
        #[arg(long)]
        apply: bool,
    },
    /// Approve, as a second operator, an act another operator requested
    /// (a CA certificate's suspension, restoration or revocation); the act
    /// is carried out at once.
    Approve {
        /// The request's id, as its requester was told.
        id: String,
        #[arg(long)]
        operator_p12: PathBuf,
        /// File holding the PKCS#12 password; without it, it is asked for.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Generate the CRLs now and write them to files.
    Crl {
        /// Directory for the DER files (default: DATA/crl).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only delta CRLs, on the newest complete CRLs (which must exist).
        #[arg(long)]
        delta: bool,
    },
    /// Mutual-TLS clients of the RA.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// The population registry: its extract and its events.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Reports.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// The audit chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Notices to people about their certificates (docs/notices.md).
    Notices {
        #[command(subcommand)]
        command: NoticesCommand,
    },
    /// Relying parties (state bodies, banks) of login and verification.
    Rp {
        #[command(subcommand)]
        command: RpCommand,
    },
    /// Check a CMS signature or a signed PDF as the verification service does:
    /// exit 0 valid, 1 invalid (with the reasons), 2 when the input cannot be read.
    Verify {
        /// The signature (CMS SignedData, DER or PEM), or a signed PDF (`%PDF-`).
        signature: PathBuf,
        /// The signed content, for a detached signature.
        #[arg(long)]
        content: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// Who requests an act under dual control (CA certificates only).
#[derive(Args)]
struct OperatorArgs {
    /// The requesting operator's credential (`muhr client add --role operator`).
    #[arg(long)]
    operator_p12: Option<PathBuf>,
    /// File holding that PKCS#12's password; without it, it is asked for.
    #[arg(long, requires = "operator_p12")]
    password_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Key ceremony: create the root and issuing CAs from the configuration.
    Init,
    /// Make the audit key (for an installation whose ceremony predates it);
    /// `muhr serve` will not start without one.
    AuditKey,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Show one certificate; SERIAL in hex as OpenSSL prints it.
    Show { serial: String },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Issue a client credential (key, certificate and chain in a PKCS#12 file)
    /// and register it with a role. Revoke it with `muhr revoke SERIAL`.
    Add {
        /// personalization-line or operator.
        #[arg(long)]
        role: String,
        /// The client's name (its certificate's CN), e.g. LINE-01.
        #[arg(long)]
        name: String,
        /// The PKCS#12 file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// File holding the PKCS#12 password (at least 8 characters).
        #[arg(long)]
        password_file: PathBuf,
    },
    /// For citizens: make a P-256 key here, have Muhr certify it with your ID
    /// token from the identity system, keep both in a PKCS#12 file. Needs no
    /// configuration.
    Request {
        /// File holding the ID token.
        #[arg(long)]
        token_file: PathBuf,
        /// individual-sign or individual-auth.
        #[arg(long, default_value = "individual-sign")]
        profile: String,
        /// The PKCS#12 file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// File holding the PKCS#12 password; without it, it is asked for.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Muhr's public address: https (plain http only to this machine).
        #[arg(long, env = "MUHR_SERVER", default_value = "https://localhost")]
        server: String,
    },
    /// For citizens: renew the authentication certificate in a PKCS#12 file
    /// without a new login at the identity system: a new key made here, the
    /// request signed with the current key, the new key and certificate kept
    /// in a new PKCS#12 file. Needs no configuration.
    Renew {
        /// Your authentication certificate (individual-auth) and its key.
        #[arg(long)]
        p12: PathBuf,
        /// File holding that PKCS#12's password; without it, it is asked for.
        #[arg(long)]
        p12_password_file: Option<PathBuf>,
        /// The PKCS#12 file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// File holding the new PKCS#12's password; without it, it is asked for.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Muhr's public address: https (plain http only to this machine).
        #[arg(long, env = "MUHR_SERVER", default_value = "https://localhost")]
        server: String,
    },
    /// For citizens: sign FILE with the key in a PKCS#12 file; writes a CMS
    /// SignedData (DER) with signing time and message digest. Needs no
    /// configuration.
    Sign {
        file: PathBuf,
        #[arg(long)]
        p12: PathBuf,
        /// File holding the PKCS#12 password; without it, it is asked for.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Where to write the signature (default FILE.p7s; must not exist).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Carry the content inside the signature instead of beside it.
        #[arg(long)]
        attached: bool,
        /// Add a signature time-stamp from this TSA (CAdES-BASELINE-T): the
        /// proof that the signature existed then, which keeps it valid if
        /// the certificate is later revoked for a reason other than key
        /// compromise. Without a URL, MUHR_TSA_URL.
        #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "URL")]
        timestamp: Option<String>,
        /// `t` (the default with --timestamp): CAdES-BASELINE-T; `lt` also
        /// embeds the certificates and the OCSP responses that validate the
        /// signer's and the TSA's certificates later without the network
        /// (CAdES-BASELINE-LT).
        #[arg(long, value_parser = ["t", "lt"], requires = "timestamp")]
        level: Option<String>,
    },
}

#[derive(Subcommand)]
enum RpCommand {
    /// Register a relying party; prints its id and secret (shown once).
    Add {
        #[arg(long)]
        name: String,
        /// state (free of charge) or commercial (billed by contract).
        #[arg(long)]
        class: String,
    },
    /// Disable a relying party: its credentials and the challenges it was
    /// given stop working (within `login.rp_cache_seconds` on running servers).
    Disable {
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Load a CSV extract: pinfl,surname,given_name,patronymic,birth_date,deceased_on.
    /// Deaths it brings are applied as `person.deceased` events.
    Import { file: PathBuf },
    /// Apply a file of registry events, one JSON object a line (see
    /// docs/registry-events.md).
    Events { file: PathBuf },
    /// End the name reviews that are due now (`muhr serve` does it every
    /// minute): certificates naming a person's old name are revoked.
    Review,
    /// Events that found nobody known here, or were refused; newest first.
    Unmatched {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Personalization pilot figures per district and in total.
    Pilot {
        /// First day (YYYY-MM-DD, UTC), included.
        #[arg(long)]
        from: String,
        /// Last day (YYYY-MM-DD, UTC), included.
        #[arg(long)]
        to: String,
        #[arg(long, value_enum, default_value_t = ra_cli::ReportFormat::Csv)]
        format: ra_cli::ReportFormat,
    },
    /// Logins and verifications per relying party in one month (UTC).
    Usage {
        /// YYYY-MM.
        #[arg(long)]
        month: String,
        #[arg(long, value_enum, default_value_t = ra_cli::ReportFormat::Csv)]
        format: ra_cli::ReportFormat,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the chain and check its signed checkpoints; exit 1 naming the
    /// first entry changed, removed or reordered, a forged checkpoint, or
    /// old entries no checkpoint vouches for.
    Verify {
        /// The audit key's public half (PEM), instead of the key store's.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Check an export file instead of the database (needs --public-key;
        /// no configuration or database is opened).
        #[arg(long, requires = "public_key")]
        export: Option<PathBuf>,
    },
    /// Write the chain and its signed checkpoints to FILE (JSON lines; see
    /// docs/audit.md) for an offline verifier.
    Export { out: PathBuf },
}

#[derive(Subcommand)]
enum NoticesCommand {
    /// Notices, newest first, tab-separated with a header line.
    List {
        /// pending, delivered or failed.
        #[arg(long)]
        state: Option<String>,
        /// One person's notices.
        #[arg(long)]
        pinfl: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = notices_cli::DEFAULT_LIST_LIMIT)]
        limit: i64,
    },
    /// Put a failed notice back to pending, due now (audited).
    Retry { key: String },
    /// The ES256 key's public half (JWK and PEM), for the receiver.
    PublicKey,
}

/// Standard error with every password in a URL masked: log lines quote
/// other crates' errors, which name the URLs they failed on.
struct RedactedStderr;

impl std::io::Write for RedactedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(muhr_store::redact::redact(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("MUHR_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactedStderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    muhr::app::private_files();
    // A panic's message goes through the same masking as every log line.
    std::panic::set_hook(Box::new(|info| {
        let text = info.to_string();
        match std::panic::catch_unwind(|| muhr_store::redact::redact(&text)) {
            Ok(clean) => eprintln!("muhr: {clean}"),
            Err(_) => eprintln!("muhr: internal error (its message could not be cleaned)"),
        }
    }));
    let cli = Cli::parse();
    init_logging(cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("muhr: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("muhr: {}", muhr_store::redact::redact(&f.message));
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Fail> {
    // What a citizen runs on their own machine opens no installation.
    if let Command::Client {
        command:
            ClientCommand::Request {
                token_file,
                profile,
                out,
                password_file,
                server,
            },
    } = &cli.command
    {
        return citizen_cli::request(server, token_file, profile, out, password_file.as_deref())
            .await;
    }
    if let Command::Client {
        command:
            ClientCommand::Renew {
                p12,
                p12_password_file,
                out,
                password_file,
                server,
            },
    } = &cli.command
    {
        return citizen_cli::renew(
            server,
            p12,
            p12_password_file.as_deref(),
            out,
            password_file.as_deref(),
        )
        .await;
    }
    if let Command::Client {
        command:
            ClientCommand::Sign {
                file,
                p12,
                password_file,
                out,
                attached,
                timestamp,
                level,
            },
    } = &cli.command
    {
        return citizen_cli::sign(
            file,
            p12,
            password_file.as_deref(),
            out.as_deref(),
            *attached,
            timestamp.as_deref(),
            level.as_deref() == Some("lt"),
        )
        .await;
    }
    if let Command::Audit {
        command:
            AuditCommand::Verify {
                export: Some(export),
                public_key: Some(key),
            },
    } = &cli.command
    {
        return commands::audit_verify_export(export, key);
    }
    let g = cli.global;
    let app = app::App::load(g.config.as_deref(), g.data.as_deref()).await?;
    // Commands that append to the audit chain sign a checkpoint before they
    // exit (a server does it on its own schedule).
    let command = match cli.command {
        Command::Serve {
            listen,
            listen_mtls,
        } => {
            serve::refuse_benchmark_database(&app).await?;
            return serve::run(app, listen, listen_mtls).await;
        }
        Command::Tsa { listen } => {
            serve::refuse_benchmark_database(&app).await?;
            return serve::run_tsa(app, listen).await;
        }
        Command::Ocsp { listen } => {
            serve::refuse_benchmark_database(&app).await?;
            return serve::run_ocsp(app, listen).await;
        }
        other => other,
    };
    let appends = matches!(
        command,
        Command::Ca { .. }
            | Command::Issue { .. }
            | Command::Revoke { .. }
            | Command::Suspend { .. }
            | Command::Restore { .. }
            | Command::Approve { .. }
            | Command::CleanupBenchmarkData { apply: true }
            | Command::Crl { .. }
            | Command::Client { .. }
            | Command::Rp { .. }
            | Command::Registry { .. }
            | Command::Notices {
                command: NoticesCommand::Retry { .. } | NoticesCommand::PublicKey
            }
    );
    let result = run_installed(&app, command).await;
    if appends && result.is_ok() {
        app.anchor_audit().await;
    }
    result
}

async fn run_installed(app: &app::App, command: Command) -> Result<(), Fail> {
    match command {
        // Answered by `run`, which hands them the installation.
        Command::Serve { .. } | Command::Ocsp { .. } | Command::Tsa { .. } => Ok(()),
        Command::Client {
            command:
                ClientCommand::Add {
                    role,
                    name,
                    out,
                    password_file,
                },
        } => mtls::client_add(app, &role, &name, &out, &password_file).await,
        // Answered above, before any installation is opened.
        Command::Client {
            command:
                ClientCommand::Request { .. } | ClientCommand::Sign { .. } | ClientCommand::Renew { .. },
        } => Ok(()),
        Command::Rp {
            command: RpCommand::Add { name, class },
        } => rp_cli::rp_add(app, &name, &class).await,
        Command::Rp {
            command: RpCommand::Disable { id },
        } => rp_cli::rp_disable(app, &id).await,
        Command::Report {
            command: ReportCommand::Usage { month, format },
        } => rp_cli::report_usage(app, &month, format).await,
        Command::Verify {
            signature,
            content,
            json,
        } => rp_cli::verify(app, &signature, content.as_deref(), json).await,
        Command::Registry {
            command: RegistryCommand::Import { file },
        } => registry_cli::registry_import(app, &file).await,
        Command::Registry {
            command: RegistryCommand::Events { file },
        } => registry_cli::registry_events(app, &file).await,
        Command::Registry {
            command: RegistryCommand::Review,
        } => registry_cli::registry_review(app).await,
        Command::Registry {
            command: RegistryCommand::Unmatched { limit },
        } => registry_cli::registry_unmatched(app, limit).await,
        Command::Report {
            command: ReportCommand::Pilot { from, to, format },
        } => ra_cli::report_pilot(app, &from, &to, format).await,
        Command::Notices {
            command:
                NoticesCommand::List {
                    state,
                    pinfl,
                    limit,
                },
        } => notices_cli::list(app, state.as_deref(), pinfl.as_deref(), limit).await,
        Command::Notices {
            command: NoticesCommand::Retry { key },
        } => notices_cli::retry(app, &key).await,
        Command::Notices {
            command: NoticesCommand::PublicKey,
        } => notices_cli::public_key(app).await,
        Command::Ca {
            command: CaCommand::Init,
        } => commands::ca_init(app).await,
        Command::Ca {
            command: CaCommand::AuditKey,
        } => commands::ca_audit_key(app).await,
        Command::Issue {
            profile,
            csr,
            subject,
        } => commands::issue(app, &profile, &csr, &subject).await,
        Command::Cert {
            command: CertCommand::Show { serial },
        } => commands::cert_show(app, &serial).await,
        Command::Audit {
            command: AuditCommand::Verify { public_key, .. },
        } => commands::audit_verify(app, public_key.as_deref()).await,
        Command::Audit {
            command: AuditCommand::Export { out },
        } => commands::audit_export(app, &out).await,
        Command::Revoke {
            serial,
            reason,
            operator,
        } => {
            let reason: muhr_ca::revocation::Reason = reason
                .parse()
                .map_err(|e| Fail::invalid(format!("refused: reason: {e}")))?;
            let t = muhr_store::Transition::Revoke {
                reason: reason.code(),
            };
            status_change(app, &serial, t, operator).await
        }
        Command::Suspend { serial, operator } => {
            status_change(app, &serial, muhr_store::Transition::Suspend, operator).await
        }
        Command::Restore { serial, operator } => {
            status_change(app, &serial, muhr_store::Transition::Restore, operator).await
        }
        Command::Approve {
            id,
            operator_p12,
            password_file,
        } => approval_cli::approve(app, &id, &operator_p12, password_file.as_deref()).await,
        Command::CleanupBenchmarkData { apply } => {
            commands::cleanup_benchmark_data(app, apply).await
        }
        Command::Crl { out, delta } => commands::crl(app, out.as_deref(), delta).await,
    }
}

/// An end-entity certificate's status changes at once; with an operator's
/// credential, the change is a dual-control request instead (CA
/// certificates, which refuse the direct path).
async fn status_change(
    app: &app::App,
    serial: &str,
    t: muhr_store::Transition,
    operator: OperatorArgs,
) -> Result<(), Fail> {
    let serial = muhr_pkix::serial::normalize_hex(serial)
        .map_err(|e| Fail::invalid(format!("refused: serial: {e}")))?;
    match operator.operator_p12 {
        Some(p12) => {
            approval_cli::request(app, &serial, t, &p12, operator.password_file.as_deref()).await
        }
        None => commands::change_status(app, &serial, t).await,
    }
}

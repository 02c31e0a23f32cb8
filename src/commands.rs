//! The one-shot commands: ceremony, issuance, look-up, audit.

use std::path::Path;
use std::time::Duration;

use crate::Fail;
use crate::app::App;

/// Who is acting, for the audit chain: the local user of a CLI command.
pub fn cli_actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// `muhr ca audit-key`: makes the audit key of an installation whose
/// ceremony predates it (a key ceremony act, audited); shows it otherwise.
pub async fn ca_audit_key(app: &App) -> Result<(), Fail> {
    let signer = app
        .audit_signer(true, &cli_actor())
        .await?
        .ok_or_else(|| Fail::internal("the audit key was not made"))?;
    println!(
        "audit key {:?}: {}",
        app.config.audit.key,
        muhr_ca::audit_anchor::key_id(signer.public_key())?
    );
    println!(
        "public key          {}",
        app.audit_public_key_file().display()
    );
    Ok(())
}

/// `muhr ca init`: the key ceremony (root and issuing CAs from
/// `[ceremony]`) and the audit key; prints where the certificates went.
pub async fn ca_init(app: &App) -> Result<(), Fail> {
    app.init_ca(&cli_actor()).await?;
    app.audit_signer(true, &cli_actor()).await?;
    let dir = app.data_dir.join("ca");
    println!("created root CA     {}", dir.join("root.pem").display());
    println!("created issuing CA  {}", dir.join("issuing.pem").display());
    println!("keys in             {}", app.keys.describe());
    Ok(())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Fail> {
    std::fs::read(path).map_err(|e| Fail::invalid(format!("{what} {}: {e}", path.display())))
}

/// `muhr issue`: one certificate for the key in `csr` under `profile`, the
/// subject taken from the JSON file `subject`; prints the PEM. A bad request
/// is refused before the CA is opened, so it writes nothing.
pub async fn issue(app: &App, profile: &str, csr: &Path, subject: &Path) -> Result<(), Fail> {
    // Everything about the request is checked before the CA is even opened, so a
    // bad request writes nothing (not even a development CA).
    let p = app.profiles.get(profile).ok_or_else(|| {
        let known: Vec<&str> = app.profiles.names().collect();
        Fail::invalid(format!(
            "refused: profile: unknown profile {profile:?} (known: {})",
            known.join(", ")
        ))
    })?;
    let subject_json = read(subject, "subject")?;
    let request: muhr_policies::identity::SubjectRequest = serde_json::from_slice(&subject_json)
        .map_err(|e| Fail::invalid(format!("refused: subject {}: {e}", subject.display())))?;
    let fields = app
        .config
        .identity
        .subject_fields(&request)
        .map_err(|e| Fail::invalid(format!("refused: {e}")))?;
    muhr_ca::build::subject_name(p, &fields).map_err(|e| Fail::invalid(format!("refused: {e}")))?;
    let csr_bytes = read(csr, "CSR")?;
    let csr =
        muhr_ca::csr::parse(&csr_bytes).map_err(|e| Fail::invalid(format!("refused: csr: {e}")))?;
    muhr_ca::goodkey::check(&csr.public_key, &p.keys)
        .map_err(|e| Fail::invalid(format!("refused: public_key: {e}")))?;
    csr.verify()
        .map_err(|e| Fail::invalid(format!("refused: csr: {e}")))?;
    let public_key = csr.public_key;
    // Nothing is issued to a person whose death is recorded (by the
    // registry's extract or an event), whoever asks.
    if let Some(pinfl) = fields.get("pinfl")
        && let Some(date) = app
            .store
            .deaths(&[pinfl.as_str()])
            .await
            .map_err(|e| Fail::internal(e.to_string()))?
            .get(pinfl)
    {
        return Err(Fail::invalid(format!(
            "refused: pinfl: the population registry records this person as deceased ({date})"
        )));
    }

    let ca = app.ca().await?;
    let issued = ca
        .issue(muhr_ca::Request {
            alt_names: Vec::new(),
            profile: profile.to_string(),
            fields,
            public_key,
            not_after_limit: None,
            actor: cli_actor(),
            once: None,
        })
        .await?;
    print!("{}", issued.pem());
    Ok(())
}

/// A Unix time in seconds as a UTC date for people to read
/// (`2025-01-31T12:00:00Z`); a time before 1970 shows as 1970, one past
/// 9999 as the bare number.
pub fn date(unix: i64) -> String {
    der::DateTime::from_unix_duration(Duration::from_secs(unix.max(0) as u64))
        .map(|d| d.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// `muhr cert show SERIAL` (hex, as OpenSSL prints it): the certificate's
/// record and status as the database has them, then its PEM once signed.
pub async fn cert_show(app: &App, serial: &str) -> Result<(), Fail> {
    let serial = muhr_pkix::serial::normalize_hex(serial).map_err(Fail::invalid)?;
    let rec = app
        .store
        .certificate(&serial)
        .await
        .map_err(|e| Fail::internal(e.to_string()))?
        .ok_or_else(|| Fail::invalid(format!("no certificate with serial {serial}")))?;
    let i = &rec.intent;
    println!("serial:     {}", i.serial);
    println!("status:     {}", rec.status);
    println!("issuer:     {}", i.issuer);
    println!("profile:    {}", i.profile);
    println!("subject:    {}", i.subject);
    println!("not before: {}", date(i.not_before));
    println!("not after:  {}", date(i.not_after));
    if let Some(t) = rec.issued_at {
        println!("issued at:  {}", date(t));
    }
    if let Some(st) = app
        .store
        .status(&serial)
        .await
        .map_err(|e| Fail::internal(e.to_string()))?
    {
        let reason = st
            .reason
            .and_then(muhr_ca::revocation::Reason::from_code)
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let since = st
            .revoked_at
            .map(|t| format!(" since {}", date(t)))
            .unwrap_or_default();
        println!("revocation: {}{reason}{since}", st.revocation);
    }
    if let Some(der) = &rec.der {
        print!("{}", muhr_pkix::pem::certificate(der));
    }
    Ok(())
}

/// `muhr audit verify`: the chain, its signed checkpoints (their key from
/// the key store, or `public_key` when given: never from the database), that
/// old entries are anchored, and this node's own checkpoint file.
pub async fn audit_verify(app: &App, public_key: Option<&Path>) -> Result<(), Fail> {
    let key = match public_key {
        Some(p) => muhr_ca::audit_anchor::read_public_key(&read(p, "public key")?)
            .map_err(|e| Fail::invalid(format!("{}: {e}", p.display())))?,
        None => app
            .audit_signer(false, "")
            .await?
            .ok_or_else(|| {
                Fail::invalid(format!(
                    "the audit key {:?} is not in this key store: give --public-key FILE",
                    app.config.audit.key
                ))
            })?
            .public_key()
            .clone(),
    };
    let grace = Duration::from_secs(app.config.audit.anchor_grace_seconds);
    let v = muhr_ca::audit_anchor::verify(&app.store, &key, grace, Some(&app.local_checkpoints()))
        .await?;
    for w in &v.warnings {
        eprintln!("muhr: warning: {w}");
    }
    if v.problems.is_empty() {
        println!(
            "audit chain intact: {} entries, {} signed checkpoints, anchored up to entry {}",
            v.entries, v.checkpoints, v.anchored_to
        );
        Ok(())
    } else {
        for p in &v.problems {
            eprintln!("muhr: {p}");
        }
        Err(Fail::invalid(format!(
            "audit chain broken: {} ({} entries verified)",
            v.problems[0], v.entries
        )))
    }
}

/// `muhr audit export FILE`: the chain and its checkpoints as JSON lines.
pub async fn audit_export(app: &App, out: &Path) -> Result<(), Fail> {
    let signer = app.audit_signer(false, "").await?.ok_or_else(|| {
        Fail::invalid(format!(
            "the audit key {:?} is not in this key store",
            app.config.audit.key
        ))
    })?;
    if out.exists() {
        return Err(Fail::invalid(format!(
            "refused: {} exists; choose another file",
            out.display()
        )));
    }
    let file =
        std::fs::File::create(out).map_err(|e| Fail::invalid(format!("{}: {e}", out.display())))?;
    let mut w = std::io::BufWriter::new(file);
    let (entries, checkpoints) =
        muhr_ca::audit_anchor::export(&app.store, signer.public_key(), &mut w).await?;
    println!(
        "exported {entries} entries and {checkpoints} checkpoints to {}",
        out.display()
    );
    Ok(())
}

/// `muhr audit verify --export FILE --public-key KEY`: no database, no
/// configuration.
pub fn audit_verify_export(export: &Path, public_key: &Path) -> Result<(), Fail> {
    let key = muhr_ca::audit_anchor::read_public_key(&read(public_key, "public key")?)
        .map_err(|e| Fail::invalid(format!("{}: {e}", public_key.display())))?;
    let file = std::fs::File::open(export)
        .map_err(|e| Fail::invalid(format!("{}: {e}", export.display())))?;
    let (entries, checkpoints, anchored) =
        muhr_ca::audit_anchor::verify_export(std::io::BufReader::new(file), &key)
            .map_err(|e| Fail::invalid(format!("audit export broken: {e}")))?;
    println!(
        "audit export intact: {entries} entries, {checkpoints} signed checkpoints, anchored up to entry {anchored}"
    );
    if anchored < entries {
        println!(
            "entries {}..={entries} are after the last checkpoint: no signature vouches for them",
            anchored + 1
        );
    }
    Ok(())
}

/// `muhr revoke`, `suspend` or `restore` without an operator credential:
/// the change is made at once and the new status printed. CA certificates
/// refuse this path (dual control: see `approval_cli`). The holder gets a
/// notice (docs/notices.md).
pub async fn change_status(app: &App, serial: &str, t: muhr_store::Transition) -> Result<(), Fail> {
    let serial = muhr_pkix::serial::normalize_hex(serial)
        .map_err(|e| Fail::invalid(format!("refused: serial: {e}")))?;
    let ca = app.ca().await?;
    // The holder is told: the CA administrator acted on their certificate.
    let status = ca.change_status_notifying(&serial, t, &cli_actor()).await?;
    let reason = status
        .reason
        .and_then(muhr_ca::revocation::Reason::from_code)
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    println!("{serial}: {}{reason}", status.revocation);
    Ok(())
}

/// Signs fresh complete (unless `delta_only`) and delta CRLs of every scope
/// for every CA whose key is available, and writes them as NAME.crl, NAME
/// being what `{crl}` becomes in their URLs.
pub async fn crl(app: &App, out: Option<&Path>, delta_only: bool) -> Result<(), Fail> {
    let ca = app.ca().await?;
    let dir = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| app.data_dir.join("crl"));
    std::fs::create_dir_all(&dir).map_err(|e| Fail::invalid(format!("{}: {e}", dir.display())))?;
    let c = &app.config.crl;
    let validity = Duration::from_secs(c.validity_hours * 3600);
    let delta_validity = Duration::from_secs(c.delta_validity_minutes * 60);
    for authority in [&ca.issuing, &ca.root] {
        if authority.signer.is_none() {
            eprintln!(
                "muhr: the {} CA key is not available here: its CRLs were not generated",
                authority.name
            );
            continue;
        }
        let mut crls = Vec::new();
        if !delta_only {
            crls = muhr_ca::crl::generate(ca.store(), authority, validity).await?;
        }
        let deltas = muhr_ca::crl::delta::generate(ca.store(), authority, delta_validity).await?;
        if deltas.is_empty() {
            return Err(Fail::invalid(format!(
                "the {} CA has no complete CRL yet for a delta to extend: run `muhr crl` first",
                authority.name
            )));
        }
        crls.extend(deltas);
        // Shards: (complete, delta, entries in complete ones).
        let mut shard_files = (0, 0, 0);
        for crl in crls {
            let scope = muhr_ca::crl::Scope::from_shard(crl.shard)
                .ok_or_else(|| Fail::internal(format!("CRL shard {:?}", crl.shard)))?;
            let name = muhr_ca::crl::name(&authority.name, scope, crl.kind == "delta");
            let path = dir.join(format!("{name}.crl"));
            std::fs::write(&path, &crl.der)
                .map_err(|e| Fail::invalid(format!("{}: {e}", path.display())))?;
            let base = crl
                .base_number
                .map(|b| format!(" (delta of {b})"))
                .unwrap_or_default();
            if crl.shard.is_some() {
                if crl.kind == "delta" {
                    shard_files.1 += 1;
                } else {
                    shard_files.0 += 1;
                    shard_files.2 += crl.entries;
                }
                continue;
            }
            println!(
                "{}: CRL number {}{base}, {} entries, next update {}",
                path.display(),
                crl.number,
                crl.entries,
                date(crl.next_update)
            );
        }
        if shard_files.0 + shard_files.1 > 0 {
            println!(
                "{}: {} shard CRLs ({}-N.crl, {} entries in all), {} shard delta CRLs ({}-N-delta.crl)",
                dir.display(),
                shard_files.0,
                authority.name,
                shard_files.2,
                shard_files.1,
                authority.name,
            );
        }
    }
    Ok(())
}

/// `muhr cleanup-benchmark-data [--apply]`: finds what the benchmark
/// commands of earlier versions (`muhr bench …`, removed from this binary)
/// left in this installation, and with `--apply` removes it: synthetic
/// status-only rows are deleted (never signed, nothing was handed out),
/// certificates the benchmarks issued for made-up people are revoked
/// (cessationOfOperation: they were signed, so relying parties must see
/// them revoked, not unknown), benchmark relying parties are disabled.
/// Every act is audited.
pub async fn cleanup_benchmark_data(app: &App, apply: bool) -> Result<(), Fail> {
    let internal = |e: muhr_store::StoreError| Fail::internal(e.to_string());
    if app.profiles.get("bench").is_some() {
        return Err(Fail::invalid(
            "refused: a certificate profile named \"bench\" is loaded: its certificates are \
             not told apart from synthetic rows; rename it first",
        ));
    }
    let found = app.store.benchmark_leftovers().await.map_err(internal)?;
    println!(
        "synthetic status-only rows (profile bench): {}",
        found.synthetic
    );
    println!(
        "certificates issued by benchmarks:         {}",
        found.issued.len()
    );
    println!(
        "benchmark relying parties enabled:         {}",
        found.relying_parties.len()
    );
    if !apply {
        println!("nothing changed: run again with --apply to remove them");
        return Ok(());
    }
    let actor = cli_actor();
    if found.synthetic > 0 {
        let n = app
            .store
            .delete_synthetic_rows(&muhr_store::AuditEvent {
                actor: actor.clone(),
                action: "benchmark.cleanup".into(),
                object: "certificates".into(),
                details: serde_json::json!({ "synthetic_rows_deleted": found.synthetic }),
            })
            .await
            .map_err(internal)?;
        println!("deleted {n} synthetic rows");
    }
    if !found.issued.is_empty() {
        let ca = app.ca().await?;
        let reason = muhr_ca::revocation::Reason::CessationOfOperation.code();
        for serial in &found.issued {
            ca.change_status(
                serial,
                muhr_store::Transition::Revoke { reason },
                &format!("{actor} (benchmark cleanup)"),
            )
            .await?;
        }
        println!(
            "revoked {} certificates issued by benchmarks (cessationOfOperation)",
            found.issued.len()
        );
    }
    for id in &found.relying_parties {
        app.store
            .disable_relying_party(
                id,
                &muhr_store::AuditEvent {
                    actor: actor.clone(),
                    action: "rp.disable".into(),
                    object: id.clone(),
                    details: serde_json::json!({ "why": "benchmark cleanup" }),
                },
            )
            .await
            .map_err(internal)?;
    }
    if !found.relying_parties.is_empty() {
        println!(
            "disabled {} benchmark relying parties",
            found.relying_parties.len()
        );
    }
    Ok(())
}

//! Notices to people (`[notices]`, `muhr_notices`): the delivery worker and
//! the expiry scan as `muhr serve` runs them, and the operators' commands
//! `muhr notices list`, `retry` and `public-key`.

use muhr_notices::{NoticesConfig, Signer, Worker};
use tokio::sync::watch;

use crate::Fail;
use crate::app::App;
use crate::commands::cli_actor;

/// Most notices `muhr notices list` prints unless told otherwise.
pub const DEFAULT_LIST_LIMIT: i64 = 100;

/// How notices are signed, as `[notices]` says: the HMAC key file
/// (relative paths inside the data directory), or the ES256 key of the key
/// store, made (and audited, as every key that speaks for Muhr) on first use.
pub async fn signer(app: &App, c: &NoticesConfig, actor: &str) -> Result<Signer, Fail> {
    if let Some(file) = &c.hmac_key_file {
        let path = if file.is_absolute() {
            file.clone()
        } else {
            app.data_dir.join(file)
        };
        return Signer::hmac_from_file(&path, c.key_id.as_deref()).map_err(Fail::invalid);
    }
    let Some(label) = &c.es256_key else {
        return Err(Fail::invalid(
            "notices: set hmac_key_file or es256_key (how notices are signed)",
        ));
    };
    // A key that speaks for something else (a CA, the audit chain, login
    // assertions, an OCSP signer) must never sign webhook messages: a
    // configuration mistake would hand the notification system signatures
    // by that key over bytes of Muhr's choosing.
    let mut reserved = vec![
        app.config.ceremony.root.key_label.clone(),
        app.config.ceremony.issuing.key_label.clone(),
        app.config.audit.key.clone(),
        app.config.login.assertion_key.clone(),
    ];
    for ca in ["root", "issuing"] {
        if let Some(a) = app
            .store
            .authority(ca)
            .await
            .map_err(|e| Fail::internal(e.to_string()))?
        {
            reserved.push(a.key_label);
        }
    }
    if reserved.contains(label) || label.starts_with("muhr-ocsp-") {
        return Err(Fail::invalid(format!(
            "refused: notices.es256_key: {label:?} is the key of a CA, the audit chain, login \
             assertions or an OCSP signer; notices need a key of their own"
        )));
    }
    let spec = muhr_hsm::KeySpec::EcdsaP256;
    let key = match app.keys.open(label, spec) {
        Ok(k) => k,
        Err(muhr_hsm::HsmError::NotFound(_)) => {
            tracing::info!(%label, "making the notices' signing key");
            let k = app
                .keys
                .generate(label, spec)
                .map_err(|e| Fail::internal(format!("notices.es256_key {label:?}: {e}")))?;
            app.store
                .audit(&[&muhr_store::AuditEvent {
                    actor: actor.into(),
                    action: "key.generate".into(),
                    object: label.clone(),
                    details: serde_json::json!({
                        "purpose": "notices to the notification system",
                        "spec": spec.to_string(),
                        "key_id": muhr_ca::audit_anchor::key_id(k.public_key())?,
                    }),
                }])
                .await
                .map_err(|e| Fail::internal(e.to_string()))?;
            k
        }
        Err(e) => return Err(Fail::internal(format!("notices.es256_key {label:?}: {e}"))),
    };
    Signer::es256(key, c.key_id.as_deref()).map_err(Fail::invalid)
}

/// The delivery worker `[notices]` asks for; `None` without the section
/// (notices are then recorded, never sent). Fails on a key that cannot be
/// used, before anything is served.
pub async fn worker(app: &App) -> Result<Option<Worker>, Fail> {
    let Some(c) = app.config.notices.clone() else {
        tracing::info!("no [notices]: notices are recorded but not delivered");
        return Ok(None);
    };
    let signer = signer(app, &c, "serve").await?;
    Worker::new(app.store.clone(), c, signer)
        .map(Some)
        .map_err(Fail::invalid)
}

/// Starts the worker (when there is one) and the expiry scan (always: a
/// citizen sees an expiring certificate's notice even where none is
/// delivered); both stop when `stop` turns true.
pub fn spawn(
    app: &App,
    worker: Option<Worker>,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (days, every) = match &app.config.notices {
        Some(c) => (
            c.expiry_days.clone(),
            std::time::Duration::from_secs(c.scan_minutes * 60),
        ),
        None => (
            muhr_notices::DEFAULT_EXPIRY_DAYS.to_vec(),
            muhr_notices::DEFAULT_SCAN,
        ),
    };
    let mut tasks = vec![tokio::spawn(muhr_notices::run_expiry_scan(
        app.store.clone(),
        days,
        every,
        stop.clone(),
    ))];
    if let Some(w) = worker {
        tasks.push(tokio::spawn(w.run(stop)));
    }
    tasks
}

fn when(secs: i64) -> String {
    let (y, m, d) = muhr_policies::identity::civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// `muhr notices list`: newest first, tab-separated with a header line:
/// key, state, attempts, kind, PINFL, serial, reason, date, created,
/// next attempt or delivery time, last error.
pub async fn list(
    app: &App,
    state: Option<&str>,
    pinfl: Option<&str>,
    limit: i64,
) -> Result<(), Fail> {
    let notices = app
        .store
        .notices(state, pinfl, limit)
        .await
        .map_err(|e| match e {
            muhr_store::StoreError::Conflict(why) => Fail::invalid(format!("refused: {why}")),
            e => Fail::internal(e.to_string()),
        })?;
    println!(
        "key\tstate\tattempts\tkind\tpinfl\tserial\treason\tdate\tcreated\tnext_or_delivered\tlast_error"
    );
    for n in notices {
        let next = match (n.state.as_str(), n.delivered_at) {
            ("delivered", Some(t)) => when(t),
            ("pending", _) => when(n.next_attempt_at),
            _ => "-".into(),
        };
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            n.key,
            n.state,
            n.attempts,
            n.kind,
            n.pinfl,
            n.serial.as_deref().unwrap_or("-"),
            n.reason.as_deref().unwrap_or("-"),
            n.on_date,
            when(n.created_at.div_euclid(1_000_000)),
            next,
            n.last_error
                .as_deref()
                .map(|e| e.replace(['\t', '\n'], " "))
                .unwrap_or_else(|| "-".into()),
        );
    }
    Ok(())
}

/// `muhr notices retry KEY`: a failed notice back to pending, due now, its
/// attempts counted afresh (audited).
pub async fn retry(app: &App, key: &str) -> Result<(), Fail> {
    let n = app
        .store
        .retry_notice(
            key,
            &muhr_store::AuditEvent {
                actor: cli_actor(),
                action: "notice.retry".into(),
                object: key.to_string(),
                details: serde_json::json!({}),
            },
        )
        .await
        .map_err(|e| match e {
            muhr_store::StoreError::Conflict(why) => Fail::invalid(format!("refused: {why}")),
            e => Fail::internal(e.to_string()),
        })?;
    println!("{}: {} (due now)", n.key, n.state);
    Ok(())
}

/// `muhr notices public-key`: the ES256 key's public half, as a JWK (one
/// line) and as PEM, for the notification system's receiver.
pub async fn public_key(app: &App) -> Result<(), Fail> {
    let Some(c) = &app.config.notices else {
        return Err(Fail::invalid("no [notices] in the configuration"));
    };
    match signer(app, c, &cli_actor()).await? {
        Signer::Es256 { key, jwk, .. } => {
            use der::Encode;
            let der = key
                .public_key()
                .to_der()
                .map_err(|e| Fail::internal(e.to_string()))?;
            println!("{jwk}");
            print!("{}", muhr_pkix::pem::encode("PUBLIC KEY", &der));
            Ok(())
        }
        Signer::Hmac { key_id, .. } => Err(Fail::invalid(format!(
            "notices are signed with the HMAC key {key_id:?} (notices.hmac_key_file): a shared \
             secret has no public half; give the receiver the file's content over a safe channel"
        ))),
    }
}

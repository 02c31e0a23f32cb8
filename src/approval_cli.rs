//! The CLI's half of dual control: each operator proves who they are by
//! signing the act's statement with their own operator credential (the
//! PKCS#12 file `muhr client add --role operator` made), and that credential
//! must be the registered, unrevoked one this CA issued. Two people, two
//! credentials, two passwords: one person with the database and a shell
//! still cannot act alone without a second operator's file and password.

use std::path::Path;

use muhr_ca::dual_control::{Act, Operator};

use crate::Fail;
use crate::app::App;

/// Opens the operator's PKCS#12, signs `act`'s statement, and checks the
/// signature and the credential as any verifier would.
async fn operator(
    app: &App,
    act: &Act,
    p12: &Path,
    password_file: Option<&Path>,
) -> Result<Operator, Fail> {
    let bytes = std::fs::read(p12).map_err(|e| Fail::invalid(format!("{}: {e}", p12.display())))?;
    let password = crate::citizen_cli::open_password(password_file)?;
    let credential = crate::citizen_cli::Credential::open(&bytes, &password)?;
    let statement = muhr_ca::dual_control::statement(act);
    let signature = credential.sign_cms(statement.as_bytes(), false)?;
    let verified = muhr_ra::cms::verify(&signature, Some(statement.as_bytes()))
        .map_err(|e| Fail::invalid(format!("refused: operator signature: {}", e.detail)))?;
    let serial = muhr_ca::serial::to_hex(verified.signer.tbs_certificate().serial_number());
    // The very certificate this CA issued under that serial, not one that
    // merely claims its serial and issuer.
    let record = app
        .store
        .certificate(&serial)
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    if record.and_then(|r| r.der).as_deref() != Some(verified.signer_der.as_slice()) {
        return Err(Fail::invalid(format!(
            "refused: operator: certificate {serial} was not issued by this CA"
        )));
    }
    let registry = muhr_ra::clients::Registry::new(app.store.clone());
    let caller = registry
        .caller(Some(&muhr_ra::clients::PeerCertificate(
            verified.signer_der.clone(),
        )))
        .await
        .map_err(|e| Fail::invalid(format!("refused: operator: {e}")))?;
    if caller.role != muhr_ra::clients::Role::Operator {
        return Err(Fail::invalid(format!(
            "refused: operator: {} is a {} credential, not an operator's",
            caller.name,
            caller.role.as_str()
        )));
    }
    Ok(Operator {
        serial,
        name: caller.name,
        signature,
    })
}

/// `muhr revoke|suspend|restore CA-SERIAL --operator-p12 FILE`: records
/// the request; nothing changes until a second operator approves it.
pub async fn request(
    app: &App,
    serial: &str,
    t: muhr_store::Transition,
    p12: &Path,
    password_file: Option<&Path>,
) -> Result<(), Fail> {
    let ca = app.ca().await?;
    let act = ca.ca_status_act(serial, t).await?;
    let by = operator(app, &act, p12, password_file).await?;
    let a = ca.request_ca_status_change(&act, &by).await?;
    println!(
        "approval {} requested by {}: {} {}",
        a.id, by.name, act.action, serial
    );
    println!(
        "nothing has changed yet: a second operator runs `muhr approve {} --operator-p12 FILE` \
         within {} hours",
        a.id,
        muhr_ca::dual_control::REQUEST_SECONDS / 3600
    );
    Ok(())
}

/// `muhr approve ID --operator-p12 FILE`: the second operator approves, and
/// the act is carried out in the same transaction.
pub async fn approve(
    app: &App,
    id: &str,
    p12: &Path,
    password_file: Option<&Path>,
) -> Result<(), Fail> {
    let ca = app.ca().await?;
    let (a, act) = ca.approval(id).await?;
    println!(
        "approving {}: {} {} (reason {}) requested by {} at {}",
        a.id,
        act.action,
        act.serial,
        act.reason.as_deref().unwrap_or("-"),
        a.requester_name,
        crate::commands::date(a.requested_at)
    );
    let by = operator(app, &act, p12, password_file).await?;
    let status = ca.approve_ca_status_change(&a, &by).await?;
    let reason = status
        .reason
        .and_then(muhr_ca::revocation::Reason::from_code)
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    println!("{}: {}{reason}", act.serial, status.revocation);
    Ok(())
}

//! The CLI's half of dual control: each operator proves who they are by
//! signing the act's statement with their own operator credential (the
//! PKCS#12 file `muhr client add --role operator` made), and that credential
//! must verify under this CA's key and be registered, valid and good. Two
//! people, two credentials, two passwords: one person with the database and
//! a shell cannot act alone without a second operator's file and password,
//! and the request is checked again when it is approved.

use std::path::Path;

use muhr_ca::dual_control::{Act, Operator};

use crate::Fail;
use crate::app::App;

/// Opens the operator's PKCS#12 and signs `act`'s statement with it.
fn sign_statement(act: &Act, p12: &Path, password_file: Option<&Path>) -> Result<Vec<u8>, Fail> {
    let bytes = std::fs::read(p12).map_err(|e| Fail::invalid(format!("{}: {e}", p12.display())))?;
    let password = crate::citizen_cli::open_password(password_file)?;
    let credential = crate::citizen_cli::Credential::open(&bytes, &password)?;
    credential.sign_cms(muhr_ca::dual_control::statement(act).as_bytes(), false)
}

/// Who made `signature` over `act`'s statement, checked as a relying party
/// would check a login, and more: the certificate verifies under this CA's
/// key (a row a database administrator planted does not), is valid and
/// good now, is made for authentication, and is registered with the
/// operator role.
async fn operator_of(
    app: &App,
    trust: &muhr_validation::trust::Trust,
    act: &Act,
    signature: &[u8],
) -> Result<Operator, Fail> {
    let statement = muhr_ca::dual_control::statement(act);
    let verified = muhr_validation::cms::verify(signature, Some(statement.as_bytes()))
        .map_err(|e| Fail::invalid(format!("refused: operator signature: {}", e.detail)))?;
    let a = trust
        .assess(
            &verified.signer,
            &verified.signer_der,
            muhr_validation::trust::Purpose::Login,
            std::time::SystemTime::now(),
        )
        .await
        .map_err(Fail::internal)?;
    if let Some(p) = a.problems.first() {
        return Err(Fail::invalid(format!(
            "refused: operator: certificate {}: {}: {}",
            a.serial, p.code, p.detail
        )));
    }
    // An RA client credential (a citizen's authentication certificate is
    // clientAuth too, and a registry row is only a database row).
    if a.profile.as_deref() != Some("ra-client") {
        return Err(Fail::invalid(format!(
            "refused: operator: certificate {} is not an RA client credential",
            a.serial
        )));
    }
    let registry = muhr_http::clients::Registry::new(app.store.clone());
    let caller = registry
        .caller(Some(&muhr_http::clients::PeerCertificate(
            verified.signer_der.clone(),
        )))
        .await
        .map_err(|e| Fail::invalid(format!("refused: operator: {e}")))?;
    // The registry's name is the certificate's own (its CN), so two rows
    // cannot make one credential two people.
    let cn = muhr_validation::trust::attribute(&verified.signer, &const_oid::db::rfc4519::CN);
    if cn.as_deref() != Some(caller.name.as_str()) {
        return Err(Fail::invalid(format!(
            "refused: operator: the registry names {} but the certificate {}",
            caller.name,
            cn.unwrap_or_default()
        )));
    }
    if caller.role != muhr_http::clients::Role::Operator {
        return Err(Fail::invalid(format!(
            "refused: operator: {} is a {} credential, not an operator's",
            caller.name,
            caller.role.as_str()
        )));
    }
    Ok(Operator {
        serial: a.serial,
        name: caller.name,
        signature: signature.to_vec(),
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
    let ca = std::sync::Arc::new(app.ca().await?);
    let trust = muhr_validation::trust::Trust::new(ca.clone());
    let act = ca.ca_status_act(serial, t).await?;
    let signature = sign_statement(&act, p12, password_file)?;
    let by = operator_of(app, &trust, &act, &signature).await?;
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
    let ca = std::sync::Arc::new(app.ca().await?);
    let trust = muhr_validation::trust::Trust::new(ca.clone());
    let (a, act) = ca.approval(id).await?;
    // The request as recorded must still stand: signed by the operator it
    // names, whose credential is still good. A row a database
    // administrator wrote, or a request made with a credential revoked
    // since, approves nothing.
    let requester = operator_of(app, &trust, &act, &a.request_sig)
        .await
        .map_err(|f| Fail::invalid(format!("refused: the request: {}", f.message)))?;
    if requester.serial != a.requested_by || requester.name != a.requester_name {
        return Err(Fail::invalid(format!(
            "refused: the request names {} but was signed by {}",
            a.requester_name, requester.name
        )));
    }
    println!(
        "approving {}: {} {} (reason {}) requested by {} at {}",
        a.id,
        act.action,
        act.serial,
        act.reason.as_deref().unwrap_or("-"),
        a.requester_name,
        crate::commands::date(a.requested_at)
    );
    let signature = sign_statement(&act, p12, password_file)?;
    let by = operator_of(app, &trust, &act, &signature).await?;
    let status = ca.approve_ca_status_change(&a, &by).await?;
    let reason = status
        .reason
        .and_then(muhr_ca::revocation::Reason::from_code)
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    println!("{}: {}{reason}", act.serial, status.revocation);
    Ok(())
}

//! The key ceremony: creates the root CA (self-signed) and the issuing CA from
//! one declarative description, with keys generated inside the configured key
//! store. It runs once per installation and refuses to run over an existing CA.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use muhr_hsm::{KeySigner, KeySpec, KeyStore};
use muhr_policies::{Kind, Profiles};
use muhr_store::{AuditEvent, Authority as StoredAuthority, Intent, Store};

use crate::{
    Authority, ISSUING, IssuancePolicy, IssueError, ROOT,
    issue::issue_event,
    prepare,
    sign::{finish_sign, spawn_sign},
};
use muhr_pkix::serial;

/// One CA of the ceremony, as configuration describes it.
#[derive(Clone, Debug)]
pub struct CaSpec {
    /// A profile of kind CA; [`init`] refuses any other.
    pub profile: String,
    /// Label of the key generated in the key store. Root and issuing must
    /// differ, and the label must not be taken.
    pub key_label: String,
    /// Algorithm and size of that key.
    pub key_spec: KeySpec,
    /// Subject field `common_name`; the profile's subject template decides
    /// where it goes.
    pub common_name: String,
    /// Subject field `organization`.
    pub organization: String,
    /// Subject field `country`: a two-letter code (`UZ`).
    pub country: String,
}

/// The two CAs [`init`] creates, as the configuration describes them.
#[derive(Clone, Debug)]
pub struct Ceremony {
    /// The self-signed root.
    pub root: CaSpec,
    /// The issuing CA, certified by the root.
    pub issuing: CaSpec,
}

/// The CA certificates the ceremony made, as PEM; also written under
/// `data_dir`.
pub struct Outcome {
    /// The root certificate, as `ca/root.pem` holds it.
    pub root_pem: String,
    /// The issuing certificate, as `ca/issuing.pem` holds it.
    pub issuing_pem: String,
}

fn fields(spec: &CaSpec) -> BTreeMap<String, String> {
    [
        ("common_name", &spec.common_name),
        ("organization", &spec.organization),
        ("country", &spec.country),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect()
}

/// Creates both CAs, writes `ca/root.pem` and `ca/issuing.pem` under `data_dir`.
pub async fn init(
    store: &Store,
    keys: &dyn KeyStore,
    profiles: &Profiles,
    policy: &IssuancePolicy,
    ceremony: &Ceremony,
    data_dir: &Path,
    actor: &str,
) -> Result<Outcome, IssueError> {
    let ca_dir = data_dir.join("ca");
    let root_path = ca_dir.join("root.pem");
    let issuing_path = ca_dir.join("issuing.pem");
    if store.authority_count().await? > 0 || root_path.exists() || issuing_path.exists() {
        return Err(IssueError::Refused(crate::FieldError {
            field: "ca".into(),
            rule: format!(
                "a CA already exists in {} (or its database); refusing to create another",
                data_dir.display()
            ),
        }));
    }
    for spec in [&ceremony.root, &ceremony.issuing] {
        let p = profiles.get(&spec.profile).ok_or_else(|| {
            IssueError::Internal(format!("ceremony names unknown profile {:?}", spec.profile))
        })?;
        if p.kind != Kind::Ca {
            return Err(IssueError::Internal(format!(
                "ceremony profile {:?} is not a CA profile",
                spec.profile
            )));
        }
    }
    if ceremony.root.key_label == ceremony.issuing.key_label {
        return Err(IssueError::Internal(
            "root and issuing CA need different key labels".into(),
        ));
    }

    let root_key = keys.generate(&ceremony.root.key_label, ceremony.root.key_spec)?;
    let root_der = make(
        store,
        profiles,
        policy,
        &ceremony.root,
        ROOT,
        root_key.clone(),
        None,
        actor,
    )
    .await?;
    let root = Authority::from_der(
        ROOT,
        root_der.clone(),
        Some(root_key),
        policy.urls.for_ca(ROOT),
    )
    .map_err(IssueError::Internal)?;

    let issuing_key = keys.generate(&ceremony.issuing.key_label, ceremony.issuing.key_spec)?;
    let issuing_der = make(
        store,
        profiles,
        policy,
        &ceremony.issuing,
        ROOT,
        issuing_key,
        Some(&root),
        actor,
    )
    .await?;

    let event = AuditEvent {
        actor: actor.to_string(),
        action: "ca.init".into(),
        object: "ceremony".into(),
        details: serde_json::json!({
            "root": { "key_label": ceremony.root.key_label, "key_spec": ceremony.root.key_spec.to_string(), "key_store": keys.describe() },
            "issuing": { "key_label": ceremony.issuing.key_label, "key_spec": ceremony.issuing.key_spec.to_string() },
        }),
    };
    store
        .save_authorities(
            &[
                StoredAuthority {
                    name: ROOT.into(),
                    key_label: ceremony.root.key_label.clone(),
                    key_spec: ceremony.root.key_spec.to_string(),
                    der: root_der.clone(),
                },
                StoredAuthority {
                    name: ISSUING.into(),
                    key_label: ceremony.issuing.key_label.clone(),
                    key_spec: ceremony.issuing.key_spec.to_string(),
                    der: issuing_der.clone(),
                },
            ],
            &event,
        )
        .await?;
    let pem = |d: &[u8]| Ok::<_, IssueError>(muhr_pkix::pem::certificate(d));
    let outcome = Outcome {
        root_pem: pem(&root_der)?,
        issuing_pem: pem(&issuing_der)?,
    };
    std::fs::create_dir_all(&ca_dir)
        .map_err(|e| IssueError::Internal(format!("{}: {e}", ca_dir.display())))?;
    for (path, text) in [
        (&root_path, &outcome.root_pem),
        (&issuing_path, &outcome.issuing_pem),
    ] {
        std::fs::write(path, text)
            .map_err(|e| IssueError::Internal(format!("{}: {e}", path.display())))?;
    }
    Ok(outcome)
}

/// Builds, records, signs and stores one CA certificate.
#[allow(clippy::too_many_arguments)]
async fn make(
    store: &Store,
    profiles: &Profiles,
    policy: &IssuancePolicy,
    spec: &CaSpec,
    issuer_name: &str,
    key: Arc<dyn KeySigner>,
    issuer: Option<&Authority>,
    actor: &str,
) -> Result<Vec<u8>, IssueError> {
    let profile = profiles.get(&spec.profile).expect("checked by init");
    let view = issuer.map(|i| i.view()).transpose()?;
    let self_signer = issuer.is_none().then_some(&key);
    // CA certificates are few: they point to their issuer's whole CRL.
    let p = prepare(
        profile,
        &fields(spec),
        key.public_key().clone(),
        view.as_ref(),
        self_signer,
        policy,
        None,
        0,
        &[],
    )?;
    let tbs = p.tbs;
    let intent = Intent {
        serial: serial::to_hex(&p.serial),
        issuer: issuer_name.to_string(),
        profile: profile.name.clone(),
        subject: p.subject,
        pinfl: None,
        not_before: muhr_store::unix_secs(p.not_before),
        not_after: muhr_store::unix_secs(p.not_after),
        tbs: tbs.clone(),
        crl_shard: None,
        once: None,
    };
    store.record_intents(std::slice::from_ref(&intent)).await?;
    let (signer, spki) = match issuer {
        Some(i) => (
            i.signer.clone().expect("issuer key loaded"),
            i.certificate
                .tbs_certificate()
                .subject_public_key_info()
                .clone(),
        ),
        None => (key.clone(), key.public_key().clone()),
    };
    let der = finish_sign(spawn_sign(signer, spki, tbs, None)).await?;
    store
        .complete_issuance(&[(
            intent.serial.clone(),
            der.clone(),
            issue_event(actor, &intent, &der),
        )])
        .await?;
    Ok(der)
}

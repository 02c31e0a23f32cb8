//! Anchoring the audit chain to a key. The hash chain alone shows that an
//! entry was changed only to someone who did not recompute the hashes after
//! it; whoever can write the database can. So the chain's head is signed at
//! intervals by the audit key, which lives in the key store (the HSM) like
//! the CA keys: a checkpoint vouches for every entry up to it, and nobody
//! without the key can make a rewritten chain agree with the signatures.
//!
//! What a checkpoint cannot see is the tail after it (at most
//! `checkpoint_entries` entries or `checkpoint_seconds`), and the whole
//! chain rolled back to an older checkpoint with the newer ones deleted.
//! Against the first, `verify` refuses a chain whose entries older than a
//! grace period are not anchored; against the second, every checkpoint a
//! node signs is also appended to a file of its own data directory
//! (`audit/checkpoints.jsonl`, which a database administrator cannot
//! reach), and `verify` requires every checkpoint in that file to be in
//! the database and the chain.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use der::Encode;
use muhr_hsm::KeySigner;
use muhr_store::{Checkpoint, Store};
use serde::{Deserialize, Serialize};
use spki::SubjectPublicKeyInfoOwned;

use crate::IssueError;

mod export;
pub use export::{EXPORT_FORMAT, export, read_public_key, verify_export};

const DOMAIN: &[u8] = b"muhr audit checkpoint v1\0";

/// The audit key is an ECDSA P-256 key: its signatures are small and any
/// token Muhr supports makes them.
pub const KEY_SPEC: muhr_hsm::KeySpec = muhr_hsm::KeySpec::EcdsaP256;

/// What the audit key signs for a checkpoint: every field, fixed width or
/// length-prefixed, under a domain no other signature of Muhr's uses; the
/// previous checkpoint is part of it, so checkpoints chain too.
pub fn statement(c: &Checkpoint) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 32 + c.hash.len() + c.prev_hash.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&c.seq.to_be_bytes());
    m.extend_from_slice(&c.at.to_be_bytes());
    m.extend_from_slice(&(c.hash.len() as u32).to_be_bytes());
    m.extend_from_slice(&c.hash);
    m.extend_from_slice(&c.prev_seq.to_be_bytes());
    m.extend_from_slice(&(c.prev_hash.len() as u32).to_be_bytes());
    m.extend_from_slice(&c.prev_hash);
    m
}

/// The (seq, hash) a first checkpoint names as its predecessor.
fn genesis() -> (i64, Vec<u8>) {
    (0, vec![0u8; 32])
}

/// SHA-256 of the key's SubjectPublicKeyInfo, hex: which key signed.
pub fn key_id(spki: &SubjectPublicKeyInfoOwned) -> Result<String, IssueError> {
    let der = spki
        .to_der()
        .map_err(|e| IssueError::Internal(format!("audit key: {e}")))?;
    Ok(hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &der,
    )))
}

/// One line of the local checkpoint file and of an export.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckpointLine {
    /// The newest audit entry the checkpoint vouches for.
    pub seq: i64,
    /// When it was signed: Unix seconds, by the signer's clock.
    pub at: i64,
    /// The chain's hash at entry `seq`, hex.
    pub hash: String,
    /// Which key signed it ([`key_id`]).
    pub key_id: String,
    /// The previous checkpoint's entry (0 for the first checkpoint).
    pub prev_seq: i64,
    /// The previous checkpoint's hash, hex (32 zero bytes for the first).
    pub prev_hash: String,
    /// The audit key's signature over [`statement`], hex.
    pub signature: String,
}

impl From<&Checkpoint> for CheckpointLine {
    fn from(c: &Checkpoint) -> Self {
        Self {
            seq: c.seq,
            at: c.at,
            hash: hex::encode(&c.hash),
            key_id: c.key_id.clone(),
            prev_seq: c.prev_seq,
            prev_hash: hex::encode(&c.prev_hash),
            signature: hex::encode(&c.signature),
        }
    }
}

impl CheckpointLine {
    fn decode(&self) -> Result<Checkpoint, String> {
        Ok(Checkpoint {
            seq: self.seq,
            at: self.at,
            hash: hex::decode(&self.hash).map_err(|e| format!("checkpoint {}: {e}", self.seq))?,
            key_id: self.key_id.clone(),
            prev_seq: self.prev_seq,
            prev_hash: hex::decode(&self.prev_hash)
                .map_err(|e| format!("checkpoint {}: {e}", self.seq))?,
            signature: hex::decode(&self.signature)
                .map_err(|e| format!("checkpoint {}: {e}", self.seq))?,
        })
    }
}

/// Whether `c` is signed by `public_key`.
pub fn check_signature(c: &Checkpoint, public_key: &SubjectPublicKeyInfoOwned) -> bool {
    let Ok(id) = key_id(public_key) else {
        return false;
    };
    let alg = KEY_SPEC.signature_algorithm();
    id == c.key_id
        && muhr_hsm::verify::verify_signature(public_key, &alg, &statement(c), &c.signature).is_ok()
}

/// Signs checkpoints with the audit key.
pub struct AuditSigner {
    key: Arc<dyn KeySigner>,
    key_id: String,
    /// This node's own record of what it signed (see the module's doc).
    local: Option<PathBuf>,
}

impl AuditSigner {
    /// Refuses a key that is not [`KEY_SPEC`]. `local` is this node's own
    /// checkpoint file; with None, a rollback to an older checkpoint goes
    /// unnoticed when signing.
    pub fn new(key: Arc<dyn KeySigner>, local: Option<PathBuf>) -> Result<Self, IssueError> {
        if key.spec() != KEY_SPEC {
            return Err(IssueError::Internal(format!(
                "the audit key {} is not {KEY_SPEC}",
                key.label()
            )));
        }
        let key_id = key_id(key.public_key())?;
        Ok(Self { key, key_id, local })
    }

    /// The audit key's public half, to check checkpoints and exports against.
    pub fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        self.key.public_key()
    }

    /// Signs the head when it has moved past the last checkpoint; the new
    /// checkpoint, or None when there was nothing to sign (or another node
    /// signed first). Before signing it makes sure it is not asked to
    /// vouch for a rewritten chain: the last checkpoint must be signed by
    /// this key, the last checkpoint this node signed (its own file) must
    /// still be in the database, and every entry since the last checkpoint
    /// must follow from it. Otherwise it refuses, and says why.
    pub async fn checkpoint(&self, store: &Store) -> Result<Option<Checkpoint>, IssueError> {
        let (seq, hash) = store.audit_head().await?;
        let last = store.last_checkpoint().await?;
        if seq == 0 || last.as_ref().is_some_and(|l| l.seq >= seq) {
            return Ok(None);
        }
        let refuse = |why: String| {
            IssueError::Internal(format!(
                "audit checkpoint refused (the chain may have been tampered with): {why}"
            ))
        };
        if let Some(l) = &last
            && !check_signature(l, self.public_key())
        {
            return Err(refuse(format!(
                "the newest checkpoint (entry {}) is not signed by this audit key",
                l.seq
            )));
        }
        if let Some(mine) = self.local.as_deref().map(read_local).transpose()?.flatten() {
            let theirs = store.checkpoints_after(mine.seq - 1, 1).await?.pop();
            if theirs.is_none() && self.restore_lost(store, last.as_ref()).await? {
                // The database lost this node's newest checkpoints (a
                // restore, a failover) but still holds the entries they
                // vouch for: they are back, and signing goes on.
                return Box::pin(self.checkpoint(store)).await;
            }
            if theirs
                .as_ref()
                .is_none_or(|t| t.seq != mine.seq || t.hash != mine.hash)
            {
                return Err(refuse(format!(
                    "the checkpoint this node signed at entry {} is missing from the database \
                     or differs",
                    mine.seq
                )));
            }
        }
        let (prev_seq, prev_hash) = last
            .as_ref()
            .map(|l| (l.seq, l.hash.clone()))
            .unwrap_or_else(genesis);
        // Every entry since the last checkpoint, from its hash.
        let mut chained = prev_hash.clone();
        const PAGE: i64 = 5000;
        let mut from = prev_seq + 1;
        while from <= seq {
            let to = (from + PAGE - 1).min(seq);
            let entries = store.audit_entries(from, to).await?;
            if entries.len() as i64 != to - from + 1 {
                return Err(refuse(format!(
                    "audit entries {from}..={to} are not all there"
                )));
            }
            for e in entries {
                if !e.holds_after(&chained) {
                    return Err(refuse(format!(
                        "audit entry {} does not follow the last checkpoint's chain",
                        e.seq
                    )));
                }
                chained = e.hash;
            }
            from = to + 1;
        }
        if chained != hash {
            return Err(refuse("the head is not the chain's last entry".into()));
        }
        let mut c = Checkpoint {
            seq,
            at: muhr_store::now_secs(),
            hash,
            key_id: self.key_id.clone(),
            prev_seq,
            prev_hash,
            signature: Vec::new(),
        };
        let key = self.key.clone();
        let message = statement(&c);
        c.signature = tokio::task::spawn_blocking(move || key.sign(&message))
            .await
            .map_err(|e| IssueError::Internal(format!("audit signing task: {e}")))??;
        if !store.save_checkpoint(&c).await? {
            return Ok(None);
        }
        if let Some(path) = &self.local {
            append_local(path, &c)?;
        }
        Ok(Some(c))
    }

    /// Puts back the checkpoints this node signed after the database's
    /// newest (`last`), when the database lost them but not the entries:
    /// each must be signed by this key, follow the one before, and name the
    /// hash the chain has at its entry. False when any does not (then the
    /// chain itself was changed, and signing stays refused).
    async fn restore_lost(
        &self,
        store: &Store,
        last: Option<&Checkpoint>,
    ) -> Result<bool, IssueError> {
        let Some(path) = self.local.as_deref() else {
            return Ok(false);
        };
        let (mut prev_seq, mut prev_hash) = last
            .map(|l| (l.seq, l.hash.clone()))
            .unwrap_or_else(genesis);
        let lost: Vec<Checkpoint> = read_local_all(path)?
            .into_iter()
            .filter(|c| c.seq > prev_seq)
            .collect();
        if lost.is_empty() {
            return Ok(false);
        }
        for c in &lost {
            let entry = store.audit_entries(c.seq, c.seq).await?.pop();
            if !check_signature(c, self.public_key())
                || c.prev_seq != prev_seq
                || c.prev_hash != prev_hash
                || entry.is_none_or(|e| e.hash != c.hash)
            {
                return Ok(false);
            }
            prev_seq = c.seq;
            prev_hash = c.hash.clone();
        }
        for c in &lost {
            if !store.save_checkpoint(c).await? {
                return Ok(false);
            }
        }
        tracing::warn!(
            from = lost[0].seq,
            to = prev_seq,
            "restored audit checkpoints the database had lost, from this node's record"
        );
        Ok(true)
    }

    /// Signs a checkpoint whenever `entries` entries or `every` have passed
    /// since the last one (and something was appended). Runs until the
    /// process ends; failures are logged and tried again.
    pub async fn run(self: Arc<Self>, store: Store, entries: i64, every: Duration) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_error: Option<(String, std::time::Instant)> = None;
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let due = async {
                let (seq, _) = store.audit_head().await?;
                let last = store.last_checkpoint().await?;
                let (last_seq, last_at) = last.map(|l| (l.seq, l.at)).unwrap_or((0, 0));
                Ok::<_, IssueError>(
                    seq > last_seq
                        && (seq - last_seq >= entries
                            || muhr_store::now_secs() - last_at >= every.as_secs() as i64),
                )
            };
            match due.await {
                Ok(true) => {
                    if let Err(e) = self.checkpoint(&store).await {
                        // Said again only when it changes or once a minute.
                        let now = std::time::Instant::now();
                        let text = e.to_string();
                        if last_error.as_ref().is_none_or(|(t, at)| {
                            *t != text || now.duration_since(*at) >= Duration::from_secs(60)
                        }) {
                            tracing::error!(error = %text, "audit checkpoint failed");
                            last_error = Some((text, now));
                        }
                    } else {
                        last_error = None;
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "audit head unreadable"),
            }
        }
    }
}

/// Every checkpoint in the node's file, oldest first.
fn read_local_all(path: &Path) -> Result<Vec<Checkpoint>, IssueError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| IssueError::Internal(format!("{}: {e}", path.display())))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<CheckpointLine>(l)
                .map_err(|e| e.to_string())
                .and_then(|l| l.decode())
                .map_err(|e| IssueError::Internal(format!("{}: {e}", path.display())))
        })
        .collect()
}

/// The last checkpoint in the node's file, if any.
fn read_local(path: &Path) -> Result<Option<Checkpoint>, IssueError> {
    Ok(read_local_all(path)?.pop())
}

/// Appends `c` to the node's file, created readable by its owner only.
fn append_local(path: &Path, c: &Checkpoint) -> Result<(), IssueError> {
    let io = |e: std::io::Error| IssueError::Internal(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(io)?;
    let mut line = serde_json::to_string(&CheckpointLine::from(c))
        .map_err(|e| IssueError::Internal(e.to_string()))?;
    // One write: a server and a command of the same node appending at once
    // never interleave within a line.
    line.push('\n');
    f.write_all(line.as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)
}

/// The outcome of `muhr audit verify`.
#[derive(Debug, Default)]
pub struct Verification {
    /// Entries verified, from the first up to the head or the first break.
    pub entries: i64,
    /// Checkpoints in the database, valid or not.
    pub checkpoints: usize,
    /// The newest entry a valid checkpoint vouches for.
    pub anchored_to: i64,
    /// Everything wrong, first found first; empty when the chain holds.
    pub problems: Vec<String>,
    /// What could not be checked from here.
    pub warnings: Vec<String>,
}

/// Checks the chain, every checkpoint's signature against `public_key`
/// (from the key store, never from the database), that entries older than
/// `grace` are anchored, and that the node's own checkpoint file (when
/// given and present) agrees with the database.
pub async fn verify(
    store: &Store,
    public_key: &SubjectPublicKeyInfoOwned,
    grace: Duration,
    local: Option<&Path>,
) -> Result<Verification, IssueError> {
    let mut v = Verification::default();
    // Taken before anything is read, so that what a live node writes while
    // the chain is walked is never mistaken for tampering: the grace cut-off
    // is checked against checkpoints read after it, and the node's own file
    // is read before the database's checkpoints (a node saves a checkpoint
    // to the database first, then to its file, so every line read here is
    // in the database by the time it is read).
    let cutoff = muhr_store::now_micros().saturating_sub(grace.as_micros() as i64);
    let local_lines = match local.filter(|p| p.exists()) {
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| IssueError::Internal(format!("{}: {e}", path.display())))?;
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(file).lines() {
                lines.push(
                    line.map_err(|e| IssueError::Internal(format!("{}: {e}", path.display())))?,
                );
            }
            Some((path, lines))
        }
        None => None,
    };
    let checkpoints = store.checkpoints().await?;
    v.checkpoints = checkpoints.len();
    let mut hashes = BTreeMap::new();
    let mut expected = genesis();
    let mut after_forgery = false;
    for c in &checkpoints {
        if !check_signature(c, public_key) {
            v.problems.push(format!(
                "the checkpoint at entry {} is not signed by the audit key: it was forged or altered",
                c.seq
            ));
            after_forgery = true;
            continue;
        }
        // The link after a forged checkpoint is reported once, as the forgery.
        if !std::mem::take(&mut after_forgery)
            && (c.prev_seq, &c.prev_hash) != (expected.0, &expected.1)
        {
            v.problems.push(format!(
                "the checkpoint at entry {} follows entry {}, not the checkpoint before it \
                 (entry {}): checkpoints were deleted",
                c.seq, c.prev_seq, expected.0
            ));
        }
        hashes.insert(c.seq, c.hash.clone());
        v.anchored_to = v.anchored_to.max(c.seq);
        expected = (c.seq, c.hash.clone());
    }
    let report = store.verify_audit(&hashes).await?;
    v.entries = report.entries;
    if let Some(f) = report.finding {
        v.problems.push(f.to_string());
    }
    if let Some(old) = store.last_audit_entry_before(cutoff).await?
        && old > v.anchored_to
    {
        v.problems.push(format!(
            "audit entries {}..={old} are older than {} s and no signed checkpoint vouches for \
             them: checkpoints were deleted, or nothing signs them (is `muhr serve` running \
             with the audit key?)",
            v.anchored_to + 1,
            grace.as_secs()
        ));
    }
    if let Some(path) = local.filter(|p| !p.exists()) {
        v.warnings.push(format!(
            "this node has no record of checkpoints it signed ({}): a rollback of the whole \
             database to an older checkpoint is not detectable from here; verify on a node \
             that runs `muhr serve`, or against an export kept elsewhere",
            path.display()
        ));
    }
    if let Some((path, lines)) = local_lines {
        let by_seq: BTreeMap<i64, &Checkpoint> = checkpoints.iter().map(|c| (c.seq, c)).collect();
        for (n, line) in lines.iter().enumerate() {
            let mine = serde_json::from_str::<CheckpointLine>(line)
                .map_err(|e| e.to_string())
                .and_then(|l| l.decode());
            match mine {
                Ok(c) if by_seq.get(&c.seq).is_some_and(|d| d.hash == c.hash) => {}
                Ok(c) => v.problems.push(format!(
                    "the checkpoint this node signed at entry {} is missing from the database or \
                     differs: the chain was rolled back or rewritten",
                    c.seq
                )),
                Err(e) => v
                    .problems
                    .push(format!("{} line {}: {e}", path.display(), n + 1)),
            }
        }
    }
    Ok(v)
}

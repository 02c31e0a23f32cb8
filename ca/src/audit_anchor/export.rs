//! The chain and its checkpoints written out for an offline check, and
//! that check: with the export and the audit key's public half, no
//! database or configuration is needed (format: `docs/audit.md`).

use std::collections::BTreeMap;

use base64::Engine;
use der::{Decode, Encode};
use muhr_store::Store;
use serde::{Deserialize, Serialize};
use spki::SubjectPublicKeyInfoOwned;

use super::*;
use crate::IssueError;

/// The first line of an export.
#[derive(Debug, Serialize, Deserialize)]
struct ExportHeader {
    format: String,
    /// The audit key's SubjectPublicKeyInfo, base64 DER (for reference: an
    /// offline verifier should take the key from the ceremony's record).
    audit_key: String,
    entries: i64,
    checkpoints: usize,
}

/// One exported entry.
#[derive(Debug, Serialize, Deserialize)]
struct EntryLine {
    seq: i64,
    at: i64,
    actor: String,
    action: String,
    object: String,
    details: String,
    prev_hash: String,
    hash: String,
}

impl From<muhr_store::audit::Entry> for EntryLine {
    fn from(e: muhr_store::audit::Entry) -> Self {
        Self {
            seq: e.seq,
            at: e.at,
            actor: e.actor,
            action: e.action,
            object: e.object,
            details: e.details,
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
        }
    }
}

impl EntryLine {
    fn decode(self) -> Result<muhr_store::audit::Entry, String> {
        Ok(muhr_store::audit::Entry {
            seq: self.seq,
            at: self.at,
            actor: self.actor,
            action: self.action,
            object: self.object,
            details: self.details,
            prev_hash: hex::decode(&self.prev_hash).map_err(|e| e.to_string())?,
            hash: hex::decode(&self.hash).map_err(|e| e.to_string())?,
        })
    }
}

/// A line of an export: the header, an entry or a checkpoint.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ExportLine {
    Header(ExportHeader),
    Entry(EntryLine),
    Checkpoint(CheckpointLine),
}

/// The `format` of an export's header line; [`verify_export`] refuses any other.
pub const EXPORT_FORMAT: &str = "muhr-audit-export-v1";

/// Writes the whole chain and its checkpoints as JSON lines: a header, the
/// entries in order, then the checkpoints (docs/audit.md describes it).
pub async fn export(
    store: &Store,
    public_key: &SubjectPublicKeyInfoOwned,
    out: &mut impl Write,
) -> Result<(i64, usize), IssueError> {
    let io = |e: std::io::Error| IssueError::Internal(format!("export: {e}"));
    let (head, _) = store.audit_head().await?;
    let checkpoints = store.checkpoints().await?;
    let key = public_key
        .to_der()
        .map_err(|e| IssueError::Internal(e.to_string()))?;
    let line =
        |l: &ExportLine| serde_json::to_string(l).map_err(|e| IssueError::Internal(e.to_string()));
    writeln!(
        out,
        "{}",
        line(&ExportLine::Header(ExportHeader {
            format: EXPORT_FORMAT.into(),
            audit_key: base64::engine::general_purpose::STANDARD.encode(key),
            entries: head,
            checkpoints: checkpoints.len(),
        }))?
    )
    .map_err(io)?;
    const PAGE: i64 = 5000;
    let mut from = 1;
    while from <= head {
        for e in store
            .audit_entries(from, (from + PAGE - 1).min(head))
            .await?
        {
            writeln!(out, "{}", line(&ExportLine::Entry(e.into()))?).map_err(io)?;
        }
        from += PAGE;
    }
    for c in checkpoints.iter().filter(|c| c.seq <= head) {
        writeln!(out, "{}", line(&ExportLine::Checkpoint(c.into()))?).map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok((head, checkpoints.len()))
}

/// Verifies an export with no database: the chain from its first entry,
/// each checkpoint's signature by `public_key` and its hash against the
/// chain. Returns (entries, checkpoints, the newest anchored entry); an
/// entry after that is not vouched for by any signature.
pub fn verify_export(
    input: impl BufRead,
    public_key: &SubjectPublicKeyInfoOwned,
) -> Result<(i64, usize, i64), String> {
    let mut prev = vec![0u8; 32];
    let mut hashes: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let mut expected = 1i64;
    let mut header = false;
    let mut checkpoints = 0;
    let mut anchored = 0;
    let mut previous = genesis();
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        let at = |what: String| format!("line {}: {what}", n + 1);
        match serde_json::from_str::<ExportLine>(&line).map_err(|e| at(e.to_string()))? {
            ExportLine::Header(h) => {
                if header || n != 0 || h.format != EXPORT_FORMAT {
                    return Err(at(format!("not a {EXPORT_FORMAT} header")));
                }
                header = true;
            }
            ExportLine::Entry(e) => {
                let entry = e.decode().map_err(at)?;
                if entry.seq != expected || !entry.holds_after(&prev) {
                    return Err(at(format!(
                        "entry {} does not follow the chain: changed, removed or reordered",
                        entry.seq
                    )));
                }
                hashes.insert(entry.seq, entry.hash.clone());
                prev = entry.hash;
                expected += 1;
            }
            ExportLine::Checkpoint(l) => {
                let c = l.decode().map_err(at)?;
                if !check_signature(&c, public_key) {
                    return Err(at(format!(
                        "the checkpoint at entry {} is not signed by the audit key",
                        c.seq
                    )));
                }
                if hashes.get(&c.seq) != Some(&c.hash) {
                    return Err(at(format!(
                        "the checkpoint at entry {} does not match the chain",
                        c.seq
                    )));
                }
                if (c.prev_seq, &c.prev_hash) != (previous.0, &previous.1) {
                    return Err(at(format!(
                        "the checkpoint at entry {} does not follow the checkpoint before it: \
                         checkpoints were removed",
                        c.seq
                    )));
                }
                previous = (c.seq, c.hash.clone());
                checkpoints += 1;
                anchored = anchored.max(c.seq);
            }
        }
    }
    if !header {
        return Err(format!("not a {EXPORT_FORMAT} file"));
    }
    Ok((expected - 1, checkpoints, anchored))
}

/// Reads a public key from PEM (`PUBLIC KEY`) or DER.
pub fn read_public_key(bytes: &[u8]) -> Result<SubjectPublicKeyInfoOwned, String> {
    let der = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        der::pem::decode_vec(bytes)
            .map_err(|e| format!("PEM: {e}"))?
            .1
    } else {
        bytes.to_vec()
    };
    SubjectPublicKeyInfoOwned::from_der(&der).map_err(|e| format!("not a public key: {e}"))
}

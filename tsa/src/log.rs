//! The token log's writer: tokens made at the same moment are logged by one
//! transaction (group commit), and each reply waits for the commit that
//! holds its token. A token is never sent before it is logged, and logging
//! costs a commit per batch rather than one per token.

use muhr_store::Store;
use muhr_store::timestamps::TokenRecord;
use tokio::sync::{mpsc, oneshot};

/// Most tokens in one transaction.
const BATCH: usize = 1000;

/// The longest a reply waits for its token's commit.
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

type Entry = (TokenRecord, oneshot::Sender<Result<(), String>>);

/// A handle on the writer task; cheap to clone.
#[derive(Clone)]
pub struct TokenLog {
    tx: mpsc::Sender<Entry>,
}

impl TokenLog {
    /// Starts the writer on the current runtime.
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(4 * BATCH);
        tokio::spawn(write(store, rx));
        Self { tx }
    }

    /// Logs `record`; returns once it is committed, or why it is not.
    pub async fn record(&self, record: TokenRecord) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((record, done))
            .await
            .map_err(|_| "the token log's writer has stopped".to_string())?;
        // A database that does not answer must not hold the requester:
        // the token is then never sent (it may still be logged later, a
        // token nobody holds).
        match tokio::time::timeout(WAIT, wait).await {
            Ok(r) => r.map_err(|_| "the token log's writer has stopped".to_string())?,
            Err(_) => Err("the token log did not answer in time".to_string()),
        }
    }
}

async fn write(store: Store, mut rx: mpsc::Receiver<Entry>) {
    let mut batch: Vec<Entry> = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let (records, waiters): (Vec<TokenRecord>, Vec<_>) = batch.drain(..).unzip();
        let result = store
            .log_timestamp_tokens(&records)
            .await
            .map_err(|e| format!("the token log could not be written: {e}"));
        if let Err(e) = &result {
            tracing::error!(tokens = records.len(), error = %e, "time-stamp tokens not logged: none sent");
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

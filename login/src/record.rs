//! The login record, written with group commit: the one write a login
//! costs. Logins arriving together are recorded by one statement and one
//! commit, and each is answered only after that commit, so an assertion
//! handed out always has its record (what usage is billed from, and what
//! makes a challenge single-use) on disk.
//!
//! One writer task: while a commit is under way the next logins queue, and
//! the busier the service, the larger the groups (up to [`MAX_GROUP`]).

use muhr_store::Store;
use muhr_store::rp::ChallengeUse;
use tokio::sync::{mpsc, oneshot};

/// Logins per statement at most (seven parameters each: well inside SQLite's
/// and PostgreSQL's limits).
pub const MAX_GROUP: usize = 512;

type Reply = oneshot::Sender<Result<bool, String>>;

/// Hands logins to the writer task and waits for their group's commit.
/// Dropping it ends the task once the queue is drained.
pub struct Recorder {
    tx: mpsc::Sender<(ChallengeUse, Reply)>,
}

impl Recorder {
    /// Starts the writer task (on the current Tokio runtime).
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(writer(store, rx));
        Self { tx }
    }

    /// Records a login; false when its challenge was used already.
    pub async fn record(&self, u: ChallengeUse) -> Result<bool, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((u, reply))
            .await
            .map_err(|_| "the login recorder has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the login recorder has stopped".to_string())?
    }
}

async fn writer(store: Store, mut rx: mpsc::Receiver<(ChallengeUse, Reply)>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let uses: Vec<ChallengeUse> = group.iter().map(|(u, _)| u.clone()).collect();
        match store.use_challenges(&uses).await {
            Ok(mut recorded) => {
                for (u, reply) in group.drain(..) {
                    // The first use of a challenge in the group takes it;
                    // a repeat finds it gone from the set.
                    let _ = reply.send(Ok(recorded.remove(&u.challenge)));
                }
            }
            Err(e) => {
                let why = format!("database: {e}");
                for (_, reply) in group.drain(..) {
                    let _ = reply.send(Err(why.clone()));
                }
            }
        }
    }
}

//! The token log's writer. A token is never sent before it is logged, and
//! logging must not cost a commit, nor a row, per token:
//!
//! - Before signing, a token takes a place in the open batch
//!   ([`TokenLog::reserve`]); its serial is made from that place, so the
//!   serial alone finds its row later (`muhr_store::timestamps::LogPlace`).
//! - Once signed, its record joins the batch ([`Reservation::commit`]) and
//!   the request waits for the batch's commit.
//! - One writer task seals the open batch, waits for the tokens still being
//!   signed in it, and writes every sealed batch in one transaction, a row
//!   each; meanwhile the next batch fills. One wake-up per batch, not per
//!   token.
//!
//! A token whose signature takes longer than [`WAIT`] misses its batch and
//! is refused; a batch whose commit fails or does not answer in [`WAIT`]
//! refuses all its tokens (some may be logged all the same: tokens nobody
//! holds).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use muhr_store::Store;
use muhr_store::timestamps::{LogPlace, TokenBatch, TokenRecord};
use tokio::sync::Notify;

/// Most tokens in one batch (its places are numbered in two octets).
const BATCH: u16 = 1024;

/// Most batches waiting for the writer: beyond them the database is not
/// keeping up, and requests are refused rather than queued without end.
const QUEUED: usize = 64;

/// The longest a batch gathers tokens before it is sealed.
const GATHER: Duration = Duration::from_millis(2);

/// The longest the writer waits for a batch's last signatures, and for the
/// database to commit it.
pub const WAIT: Duration = Duration::from_secs(10);

/// A handle on the log and its writer task; cheap to clone.
#[derive(Clone)]
pub struct TokenLog {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    state: Mutex<State>,
    /// Wakes the writer: tokens wait, or the last handle is gone.
    work: Arc<Notify>,
    /// A sealed batch's last outstanding place was settled.
    drained: Notify,
    /// One stream is numbered at a time.
    numbering: tokio::sync::Mutex<()>,
    /// Batch rows and tokens written, for `/metrics`.
    written: [AtomicU64; 2],
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.work.notify_one();
    }
}

#[derive(Default)]
struct State {
    /// The stream's number and salt.
    stream: Option<(u32, [u8; 8])>,
    /// Why the writer stopped, if it did: nothing is logged any more.
    stopped: Option<String>,
    next_batch: u32,
    /// Sealed batches first, then at most one open batch, last.
    batches: VecDeque<Batch>,
    /// The writer is woken, or working: committers need not wake it.
    writer_busy: bool,
}

struct Batch {
    stream: u32,
    salt: [u8; 8],
    number: u32,
    sealed: bool,
    next_index: u16,
    /// Places taken whose token is neither committed nor abandoned.
    outstanding: usize,
    tokens: Vec<(u16, TokenRecord)>,
    done: Arc<Done>,
}

/// Why every token is refused once the writer has stopped.
const STOPPED: &str = "the token log's writer has stopped";

/// A batch dropped before its outcome was told (the writer stopped in the
/// middle of writing it: a panic, the runtime shutting down) refuses its
/// tokens: none of them may wait without end, nor be sent unlogged.
impl Drop for Batch {
    fn drop(&mut self) {
        self.done.finish(Err(STOPPED.into()));
    }
}

impl Batch {
    fn is(&self, place: LogPlace) -> bool {
        self.stream == place.stream && self.number == place.batch
    }
}

/// A batch's outcome, told once to all its waiters.
#[derive(Default)]
struct Done {
    result: OnceLock<Result<(), String>>,
    notify: Notify,
}

impl Done {
    fn finish(&self, result: Result<(), String>) {
        if self.result.set(result).is_ok() {
            self.notify.notify_waiters();
        }
    }

    async fn wait(&self) -> Result<(), String> {
        loop {
            let told = self.notify.notified();
            tokio::pin!(told);
            // Registered before the check, so a finish in between wakes it.
            told.as_mut().enable();
            if let Some(r) = self.result.get() {
                return r.clone();
            }
            told.await;
        }
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A place in an open batch, taken before signing. Dropped without
/// [`Reservation::commit`] (a signature failed, the client went away), it
/// is given up and its batch does not wait for it.
pub struct Reservation {
    inner: Arc<Inner>,
    place: LogPlace,
    done: Arc<Done>,
    settled: bool,
}

impl Reservation {
    /// Where the token will be logged; its serial is `place().serial()`.
    pub fn place(&self) -> LogPlace {
        self.place
    }

    /// Adds the signed token's record to its batch; returns once the batch
    /// is committed, or why it is not (the token must then not be sent).
    pub async fn commit(mut self, record: TokenRecord) -> Result<(), String> {
        self.settled = true;
        {
            let mut st = lock(&self.inner.state);
            if let Some(why) = &st.stopped {
                return Err(why.clone());
            }
            let Some(batch) = st.batches.iter_mut().find(|b| b.is(self.place)) else {
                return Err(
                    "the token took too long to sign: its batch was logged without it".into(),
                );
            };
            batch.tokens.push((self.place.index, record));
            batch.outstanding -= 1;
            if batch.sealed && batch.outstanding == 0 {
                self.inner.drained.notify_one();
            }
            if !st.writer_busy {
                st.writer_busy = true;
                self.inner.work.notify_one();
            }
        }
        // No timer of its own (one per token showed in the profile): the
        // writer bounds each of its steps, and should it stop, its guard
        // and every batch it held refuse their waiting tokens.
        self.done.wait().await
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut st = lock(&self.inner.state);
        if let Some(batch) = st.batches.iter_mut().find(|b| b.is(self.place)) {
            batch.outstanding -= 1;
            if batch.sealed && batch.outstanding == 0 {
                self.inner.drained.notify_one();
            }
        }
    }
}

impl TokenLog {
    /// Starts the writer on the current runtime. It ends when the last
    /// handle (and reservation) is gone.
    pub fn start(store: Store) -> Self {
        let work = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            store,
            state: Mutex::new(State::default()),
            work: work.clone(),
            drained: Notify::new(),
            numbering: tokio::sync::Mutex::new(()),
            written: Default::default(),
        });
        // The guard is made before the task: dropped unpolled, it still
        // stops the log.
        tokio::spawn(write(Stopped(Arc::downgrade(&inner)), work));
        Self { inner }
    }

    /// Batch rows and tokens committed so far by this process.
    pub fn written(&self) -> (u64, u64) {
        let [rows, tokens] = &self.inner.written;
        (rows.load(Ordering::Relaxed), tokens.load(Ordering::Relaxed))
    }

    /// Whether the writer has stopped: nothing is logged, so nothing is
    /// stamped, until the process restarts (`muhr_tsa_log_stopped`).
    pub fn is_stopped(&self) -> bool {
        lock(&self.inner.state).stopped.is_some()
    }

    /// A place for the next token. The first one of a process (and of
    /// every 2^32 batches) numbers a new stream in the database.
    pub async fn reserve(&self) -> Result<Reservation, String> {
        loop {
            if let Some(r) = self.take_place()? {
                return Ok(r);
            }
            let Ok(_one) = tokio::time::timeout(WAIT, self.inner.numbering.lock()).await else {
                return Err("the token log did not answer in time".into());
            };
            if lock(&self.inner.state).stream.is_some() {
                continue;
            }
            let stream =
                match tokio::time::timeout(WAIT, self.inner.store.new_timestamp_stream()).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(format!("the token log could not be opened: {e}")),
                    Err(_) => return Err("the token log did not answer in time".into()),
                };
            let mut salt = [0u8; 8];
            aws_lc_rs::rand::fill(&mut salt)
                .map_err(|_| "the random generator failed".to_string())?;
            let mut st = lock(&self.inner.state);
            st.stream = Some((stream, salt));
            st.next_batch = 0;
        }
    }

    fn take_place(&self) -> Result<Option<Reservation>, String> {
        let mut st = lock(&self.inner.state);
        if let Some(why) = &st.stopped {
            return Err(why.clone());
        }
        let Some((stream, salt)) = st.stream else {
            return Ok(None);
        };
        let open = st
            .batches
            .back()
            .is_some_and(|b| !b.sealed && b.stream == stream && b.next_index < BATCH);
        if !open {
            // Sealed batches whose every place was given up (signatures
            // that failed) hold nothing to write and nobody waits on them;
            // the writer is not woken for them, so they go here, or a key
            // store that failed for a while would leave the log refusing.
            st.batches
                .retain(|b| !(b.sealed && b.outstanding == 0 && b.tokens.is_empty()));
            if st.batches.len() >= QUEUED {
                return Err("the token log is not keeping up: try again later".into());
            }
            if let Some(full) = st.batches.back_mut().filter(|b| !b.sealed) {
                full.sealed = true;
                if full.outstanding == 0 {
                    self.inner.drained.notify_one();
                }
            }
            let number = st.next_batch;
            match number.checked_add(1) {
                Some(next) => st.next_batch = next,
                None => {
                    // The stream's batch numbers are spent: a new stream.
                    st.stream = None;
                    return Ok(None);
                }
            }
            st.batches.push_back(Batch {
                stream,
                salt,
                number,
                sealed: false,
                next_index: 0,
                outstanding: 0,
                tokens: Vec::new(),
                done: Arc::new(Done::default()),
            });
        }
        let Some(batch) = st.batches.back_mut() else {
            return Ok(None);
        };
        let place = LogPlace {
            stream,
            batch: batch.number,
            index: batch.next_index,
            salt,
        };
        batch.next_index += 1;
        batch.outstanding += 1;
        Ok(Some(Reservation {
            inner: self.inner.clone(),
            place,
            done: batch.done.clone(),
            settled: false,
        }))
    }
}

async fn write(stopped: Stopped, work: Arc<Notify>) {
    loop {
        work.notified().await;
        let Some(inner) = stopped.0.upgrade() else {
            return;
        };
        while write_sealed(&inner).await {}
    }
}

/// Should the writer end while handles remain (a panic, the runtime
/// shutting down), every waiting token is refused and no new one reserved.
struct Stopped(Weak<Inner>);

impl Drop for Stopped {
    fn drop(&mut self) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        let mut st = lock(&inner.state);
        st.stopped = Some(STOPPED.into());
        // Each batch refuses its waiting tokens as it is dropped.
        st.batches.clear();
    }
}

/// Lets the tokens being made join the open batch before it is sealed:
/// while a round of the scheduler (every ready task, and the sockets'
/// news) adds tokens or leaves some being signed, and for at most
/// [`GATHER`]. Without it a batch held the few tokens of one commit's time,
/// and a commit costs as much CPU as a hundred tokens' logging; an idle
/// TSA's lone token waits one round, microseconds.
async fn gather(inner: &Inner) {
    let start = std::time::Instant::now();
    let mut seen = usize::MAX;
    while start.elapsed() < GATHER {
        let (committed, outstanding) = match lock(&inner.state).batches.back() {
            Some(b) if !b.sealed => (b.tokens.len(), b.outstanding),
            _ => return,
        };
        if committed >= usize::from(BATCH) / 2 || (committed == seen && outstanding == 0) {
            return;
        }
        seen = committed;
        tokio::task::yield_now().await;
    }
}

/// Seals the open batch, waits for its last signatures, writes every
/// sealed batch; returns whether more tokens wait already.
async fn write_sealed(inner: &Inner) -> bool {
    gather(inner).await;
    if let Some(open) = lock(&inner.state).batches.back_mut() {
        open.sealed = true;
    }
    // Sealed batches are taken once none of them waits on a signature, in
    // the same hold of the lock as the check (a batch sealed in between
    // is not taken half signed); after WAIT, as they are.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut taken: Vec<Batch> = loop {
        let told = inner.drained.notified();
        tokio::pin!(told);
        told.as_mut().enable();
        {
            let mut st = lock(&inner.state);
            let sealed = st.batches.iter().take_while(|b| b.sealed).count();
            let late = tokio::time::Instant::now() >= deadline;
            if late || st.batches.iter().take(sealed).all(|b| b.outstanding == 0) {
                if late {
                    tracing::warn!(
                        "time-stamp tokens still unsigned after {WAIT:?}: their batch is logged without them"
                    );
                }
                break st.batches.drain(..sealed).collect();
            }
        }
        let _ = tokio::time::timeout_at(deadline, told).await;
    };
    let batches: Vec<TokenBatch> = taken
        .iter_mut()
        .map(|b| TokenBatch {
            stream: b.stream,
            salt: b.salt,
            batch: b.number,
            tokens: std::mem::take(&mut b.tokens),
        })
        .collect();
    let tokens: usize = batches.iter().map(|b| b.tokens.len()).sum();
    let result = if tokens == 0 {
        Ok(())
    } else {
        match tokio::time::timeout(WAIT, inner.store.log_timestamp_batches(&batches)).await {
            Ok(Ok(())) => {
                let rows = batches.iter().filter(|b| !b.tokens.is_empty()).count();
                inner.written[0].fetch_add(rows as u64, Ordering::Relaxed);
                inner.written[1].fetch_add(tokens as u64, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("the token log could not be written: {e}")),
            Err(_) => Err("the token log did not answer in time".to_string()),
        }
    };
    if let Err(e) = &result {
        tracing::error!(tokens, error = %e, "time-stamp tokens not logged: none sent");
    }
    for b in &taken {
        b.done.finish(result.clone());
    }
    let mut st = lock(&inner.state);
    let more = st.batches.iter().any(|b| !b.tokens.is_empty());
    if !more {
        st.writer_busy = false;
    }
    more
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tokio::runtime::Runtime;

    use super::*;

    fn record(i: u8) -> TokenRecord {
        TokenRecord {
            serial: String::new(),
            gen_time: 1_800_000_000,
            policy: "1.3.6.1.4.1.32473.3161.1".into(),
            hash_algorithm: "sha256".into(),
            imprint: vec![i; 32],
            nonce: None,
            signer_serial: "4A".into(),
            token_sha256: vec![i; 32],
        }
    }

    /// A test's database directory, removed when the test ends.
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn store() -> (Store, Dir) {
        let dir = std::env::temp_dir().join(format!(
            "muhr-tsa-log-{}-{}",
            std::process::id(),
            aws_lc_rs::rand::generate::<[u8; 8]>(&aws_lc_rs::rand::SystemRandom::new())
                .map(|r| hex::encode(r.expose()))
                .unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("log.db").display());
        (Store::connect(&url).await.unwrap(), Dir(dir))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_store_failing_for_a_while_does_not_leave_the_log_refusing() {
        let (store, _dir) = store().await;
        let log = TokenLog::start(store.clone());
        // Every signature failing (an HSM away): each place is taken and
        // given up, more than the queue's worth of batches.
        for _ in 0..(QUEUED + 2) * usize::from(BATCH) {
            drop(log.reserve().await.expect("places given up are not queued"));
        }
        // The HSM back: tokens are logged again.
        let p = log.reserve().await.unwrap();
        let serial = hex::encode_upper(p.place().serial());
        p.commit(record(1)).await.unwrap();
        assert!(store.timestamp_token(&serial).await.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_unfinished_tokens_is_refused_not_queued_without_end() {
        let (store, _dir) = store().await;
        let log = TokenLog::start(store.clone());
        // Places held and never settled (signatures that hang) fill the
        // queue: the next request is refused at once, not made to wait.
        let mut held = Vec::new();
        for _ in 0..QUEUED * usize::from(BATCH) {
            held.push(log.reserve().await.unwrap());
        }
        let refused = log.reserve().await.err().expect("refused");
        assert!(refused.contains("not keeping up"), "{refused}");
        // Once they are settled the log takes tokens again.
        drop(held);
        let p = log.reserve().await.unwrap();
        p.commit(record(2)).await.unwrap();
    }

    /// The test's runtime, and a log whose writer runs on a runtime of its
    /// own, to be shut down under it (a panic, a process shutting down).
    fn writer_apart() -> (Runtime, Store, Dir, Runtime, TokenLog) {
        let main = Runtime::new().unwrap();
        let (store, dir) = main.block_on(store());
        let writer = Runtime::new().unwrap();
        let log = writer.block_on(async { TokenLog::start(store.clone()) });
        (main, store, dir, writer, log)
    }

    #[test]
    fn a_stopped_writer_refuses_the_waiting_token_and_every_later_one() {
        let (main, _store, _dir, writer, log) = writer_apart();
        let p = main.block_on(log.reserve()).unwrap();
        assert!(!log.is_stopped());
        writer.shutdown_timeout(Duration::from_secs(5));
        assert!(log.is_stopped(), "operators are told");
        main.block_on(async {
            let why = p.commit(record(3)).await.unwrap_err();
            assert!(why.contains("stopped"), "{why}");
            let why = log.reserve().await.err().expect("refused");
            assert!(why.contains("stopped"), "{why}");
        });
    }

    #[test]
    fn a_writer_stopped_while_the_database_holds_its_commit_refuses_the_waiting_token() {
        let (main, _store, dir, writer, log) = writer_apart();
        let url = format!("sqlite://{}", dir.0.join("log.db").display());
        main.block_on(async move {
            // The stream is numbered before the database is held.
            let p = log.reserve().await.unwrap();
            // Another writer holds the database: the batch's INSERT waits.
            let mut blocker = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut blocker)
                .await
                .unwrap();
            let waiting = tokio::spawn(p.commit(record(4)));
            // The writer has taken the batch off the queue: it is writing.
            tokio::time::timeout(Duration::from_secs(10), async {
                while !lock(&log.inner.state).batches.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .expect("the writer took the batch");
            // It stops in the middle (a panic, the runtime shutting down):
            // the token waiting on that commit is refused, not left waiting.
            writer.shutdown_background();
            let why = tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .expect("the waiting token is answered")
                .unwrap()
                .unwrap_err();
            assert!(why.contains("stopped"), "{why}");
            sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_places_do_not_hold_a_batch_and_each_serial_finds_only_its_token() {
        let (store, _dir) = store().await;
        let log = TokenLog::start(store.clone());
        // A signature that failed (its place dropped) and a client that went
        // away mid-batch must not hold the others' replies.
        let dropped = log.reserve().await.unwrap();
        let mut places = Vec::new();
        for _ in 0..20 {
            places.push(log.reserve().await.unwrap());
        }
        drop(dropped);
        let tasks: Vec<_> = places
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let place = p.place();
                tokio::spawn(async move { (place, p.commit(record(i as u8)).await) })
            })
            .collect();
        let mut serials = std::collections::BTreeSet::new();
        for (i, t) in tasks.into_iter().enumerate() {
            let (place, committed) = t.await.unwrap();
            committed.unwrap();
            let serial = hex::encode_upper(place.serial());
            assert!(serials.insert(serial.clone()), "serial repeated");
            let logged = store.timestamp_token(&serial).await.unwrap().unwrap();
            assert_eq!(logged.token_sha256, vec![i as u8; 32]);
            // The same place with another salt (a stream numbered again by a
            // restored database) confirms nothing.
            let mut other = place;
            other.salt[0] ^= 1;
            let forged = hex::encode_upper(other.serial());
            assert_eq!(store.timestamp_token(&forged).await.unwrap(), None);
        }
        assert_eq!(store.timestamp_token_count().await.unwrap(), 20);
        // A second log on the same database (another node) numbers its own
        // stream: its serials never meet the first's.
        let other = TokenLog::start(store.clone());
        let p = other.reserve().await.unwrap();
        assert!(!serials.contains(&hex::encode_upper(p.place().serial())));
        p.commit(record(99)).await.unwrap();
    }
}

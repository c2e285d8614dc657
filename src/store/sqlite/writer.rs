//! The writer thread: the only connection that changes the file, so writes never contend with
//! each other and their order is the order callers queued them in.
//!
//! Each round it takes whatever is queued (up to `batch_max` requests) and applies it in one
//! `BEGIN IMMEDIATE` transaction, commits once, then answers every caller: the cost of a commit
//! is shared by the whole group, which is what keeps throughput up when many sessions write at
//! once. Requests that read before writing (`put_if_absent`) run inside the same transaction, so
//! they are atomic with respect to every other write.
//!
//! If one request's statement fails, the group is rolled back and replayed one request per
//! transaction, so a single bad request cannot fail its neighbours and each caller gets its own
//! true answer. A failure to begin or commit (lock held elsewhere, disk full, read-only file)
//! fails the whole group at once rather than retrying each request into the same wall.
//!
//! Garbage collection runs here too, between groups, in bounded steps.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::cache::HotCache;
use super::filter::KeyFilter;
use super::{record_at, Counters, Reply, SqliteOptions, GET_LIVE};
use crate::store::{Record, StoreError};

/// Insert or replace one record, as smtpf writes (creation time supplied on replace).
const PUT: &str = "INSERT OR REPLACE INTO mcc (k, v, e, c) VALUES (?1, ?2, ?3, ?4)";
/// Remove one key.
const DELETE: &str = "DELETE FROM mcc WHERE k = ?1";
/// One garbage-collection step: at most `?2` rows expired at `?1`, found through `mcc_expire`.
const GC_STEP: &str = "DELETE FROM mcc WHERE rowid IN (SELECT rowid FROM mcc WHERE e <= ?1 LIMIT ?2)";

/// How long detached writes gather before they are committed, unless a waited-for write
/// comes first and takes them along.
const DETACHED_LINGER: Duration = Duration::from_millis(10);

/// Writes nobody waits for (see [`super::SqliteStore::put_detached`]). They skip the channel so
/// queueing one never wakes the writer; only the first one after a drain sends a
/// [`WriterMsg::Wake`]. The writer takes them all whenever it commits, ordered with the
/// channel's writes by sequence number.
pub(super) struct Detached {
    queue: std::sync::Mutex<Vec<Write>>,
    limit: usize,
}

impl Detached {
    pub(super) fn new(limit: usize) -> Detached {
        Detached { queue: std::sync::Mutex::new(Vec::new()), limit }
    }

    /// Queues `w`; Busy when the side queue is full, Closed when the writer is gone.
    pub(super) fn push(&self, w: Write, writes: &std::sync::mpsc::SyncSender<WriterMsg>) -> Result<(), StoreError> {
        self.push_within(w, writes, self.limit)
    }

    /// Queues a greylisting first sight: these may use four times the queue (a bounded overflow,
    /// about 200 bytes each), because a spam run brings them by the thousand exactly when their
    /// records matter most; refreshes and duplicate records give way first.
    pub(super) fn push_claim(&self, w: Write, writes: &std::sync::mpsc::SyncSender<WriterMsg>) -> Result<(), StoreError> {
        self.push_within(w, writes, self.limit.saturating_mul(4))
    }

    fn push_within(&self, w: Write, writes: &std::sync::mpsc::SyncSender<WriterMsg>, limit: usize) -> Result<(), StoreError> {
        let was_empty = {
            let mut q = crate::sync::lock(&self.queue);
            if q.len() >= limit {
                return Err(StoreError::Busy);
            }
            q.push(w);
            q.len() == 1
        };
        if was_empty {
            // A full channel means the writer is busy and will take the side queue with its
            // next group; only a vanished writer is an error.
            if let Err(std::sync::mpsc::TrySendError::Disconnected(_)) = writes.try_send(WriterMsg::Wake) {
                return Err(StoreError::Closed);
            }
        }
        Ok(())
    }

    fn take_into(&self, batch: &mut Vec<Write>) {
        batch.append(&mut crate::sync::lock(&self.queue));
    }
}

/// Requested collections that may wait behind the running one before more are refused.
const MAX_GC_JOBS: usize = 16;

/// What the writer thread is asked to do.
pub(super) enum WriterMsg {
    /// A change to apply in the next group.
    Write(Write),
    /// Detached writes are waiting in the side queue (sent once when it stops being empty).
    Wake,
    /// Delete everything expired at `now` and report how many rows went.
    Expire { now: i64, reply: Reply<u64> },
    /// Finish the queued work and stop.
    Close,
}

/// One change, carrying its reply channel and the result it will send once committed.
/// `seq` is the hot cache's sequence number for the write (see the `cache` module).
pub(super) enum Write {
    /// `reply` is None for a detached put nobody waits for.
    Put {
        key: String,
        record: Record,
        seq: u64,
        reply: Option<Reply<()>>,
    },
    PutIfAbsent {
        key: String,
        record: Record,
        now: i64,
        seq: u64,
        found: Option<Record>,
        reply: Option<Reply<Option<Record>>>,
    },
    Delete {
        key: String,
        seq: u64,
        removed: bool,
        reply: Reply<bool>,
    },
}

impl Write {
    /// Applies the change inside the current transaction and keeps what the caller will be told.
    fn apply(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        match self {
            Write::Put { key, record, .. } => insert(conn, key, record),
            Write::PutIfAbsent { key, record, now, found, .. } => {
                *found = conn.prepare_cached(GET_LIVE)?.query_row(params![&*key, *now], |r| record_at(r, 0)).optional()?;
                if found.is_none() {
                    insert(conn, key, record)?;
                }
                Ok(())
            }
            Write::Delete { key, removed, .. } => {
                *removed = conn.prepare_cached(DELETE)?.execute(params![&*key])? > 0;
                Ok(())
            }
        }
    }

    fn seq(&self) -> u64 {
        match self {
            Write::Put { seq, .. } | Write::PutIfAbsent { seq, .. } | Write::Delete { seq, .. } => *seq,
        }
    }

    /// Tells the caller how it ended (after commit or failure). A caller that gave up waiting is
    /// simply not told.
    fn answer(self, outcome: Result<(), StoreError>) {
        match self {
            Write::Put { reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
            Write::PutIfAbsent { found, reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(outcome.map(|()| found));
                }
            }
            Write::Delete { removed, reply, .. } => {
                let _ = reply.send(outcome.map(|()| removed));
            }
        }
    }
}

/// SQLite's count of commits by other connections to this file (`PRAGMA data_version`).
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
}

fn insert(conn: &Connection, key: &str, record: &Record) -> rusqlite::Result<()> {
    conn.prepare_cached(PUT)?.execute(params![key, record.value, record.expires, record.created]).map(|_| ())
}

/// Why a group failed: in one request's statement (worth replaying one by one) or around them.
struct Failure {
    in_statement: bool,
    error: rusqlite::Error,
}

/// Applies `writes` in one transaction and commits it.
fn run_group(conn: &mut Connection, writes: &mut [Write]) -> Result<(), Failure> {
    let tx =
        conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|error| Failure { in_statement: false, error })?;
    for w in writes.iter_mut() {
        w.apply(&tx).map_err(|error| Failure { in_statement: true, error })?;
    }
    // A failed commit drops the transaction, which rolls it back.
    tx.commit().map_err(|error| Failure { in_statement: false, error })
}

/// A collection in progress: the time it collects for, rows removed so far, who asked (none for
/// the background timer).
struct GcJob {
    now: i64,
    deleted: u64,
    reply: Option<Reply<u64>>,
}

/// The writer thread's state.
pub(super) struct Writer {
    conn: Connection,
    rx: Receiver<WriterMsg>,
    counters: Arc<Counters>,
    batch: Vec<Write>,
    batch_max: usize,
    gc_batch: i64,
    gc_interval: Duration,
    clock: fn() -> i64,
    jobs: VecDeque<GcJob>,
    /// Messages still taken after a close request, so a caller that keeps writing cannot hold
    /// the shutdown open forever.
    closing_budget: usize,
    cache: Arc<HotCache>,
    filter: Arc<KeyFilter>,
    detached: Arc<Detached>,
    /// When the detached writes gathering now are due (None: none announced).
    detached_due: Option<Instant>,
    /// SQLite's `data_version` as last seen: it changes when another connection commits.
    data_version: i64,
    outside_change_poll: Duration,
}

/// `from + after`, or a day later if that overflows; never panics.
fn later(from: Instant, after: Duration) -> Instant {
    from.checked_add(after).or_else(|| from.checked_add(Duration::from_secs(86_400))).unwrap_or(from)
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        rx: Receiver<WriterMsg>,
        counters: Arc<Counters>,
        cache: Arc<HotCache>,
        filter: Arc<KeyFilter>,
        detached: Arc<Detached>,
        o: &SqliteOptions,
    ) -> rusqlite::Result<Writer> {
        let data_version = data_version(&conn)?;
        Ok(Writer {
            conn,
            rx,
            counters,
            batch: Vec::with_capacity(o.batch_max),
            batch_max: o.batch_max,
            gc_batch: i64::try_from(o.gc_batch).unwrap_or(i64::MAX),
            gc_interval: o.gc_interval,
            clock: o.clock,
            jobs: VecDeque::new(),
            closing_budget: o.write_queue,
            cache,
            filter,
            detached,
            detached_due: None,
            data_version,
            outside_change_poll: o.outside_change_poll,
        })
    }

    /// Clears the hot cache's committed slots when another process has committed since the
    /// last look (an operator's `grey allow`, `sqlite3`), so what it changed is read afresh.
    fn notice_outside_change(&mut self) {
        match data_version(&self.conn) {
            Ok(v) if v == self.data_version => {}
            Ok(v) => {
                self.data_version = v;
                self.cache.clear(false);
                self.filter.outside_change();
            }
            // Cannot tell: assume the worst.
            Err(_) => {
                self.cache.clear(false);
                self.filter.outside_change();
            }
        }
    }

    /// The thread's life: gather a group, commit it, advance collection; until closed or every
    /// handle is gone, and then only after the queued work is done.
    pub(super) fn run(mut self) {
        let mut next_gc = later(Instant::now(), self.gc_interval);
        let mut closing = false;
        loop {
            // Sleep only when there is nothing to do; wake for the collection timer.
            if !closing && self.jobs.is_empty() {
                let now = Instant::now();
                let mut wake = next_gc.saturating_duration_since(now).min(self.outside_change_poll);
                if let Some(due) = self.detached_due {
                    wake = wake.min(due.saturating_duration_since(now));
                }
                match self.rx.recv_timeout(wake) {
                    Ok(msg) => closing |= self.take(msg),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => closing = true,
                }
            }
            let mut drained = false;
            while self.batch.len() < self.batch_max {
                if closing {
                    if self.closing_budget == 0 {
                        drained = true;
                        break;
                    }
                    self.closing_budget -= 1;
                }
                match self.rx.try_recv() {
                    Ok(msg) => closing |= self.take(msg),
                    Err(TryRecvError::Empty) => {
                        drained = true;
                        break;
                    }
                    Err(TryRecvError::Disconnected) => {
                        closing = true;
                        drained = true;
                        break;
                    }
                }
            }
            // Detached writes go with any group, or on their own once they have gathered.
            if !self.batch.is_empty() || closing || self.detached_due.is_some_and(|d| Instant::now() >= d) {
                self.detached_due = None;
                self.detached.take_into(&mut self.batch);
                // Both queues are in sequence order; merged, the group must be too.
                self.batch.sort_by_key(Write::seq);
            }
            if !self.batch.is_empty() {
                self.commit_batch();
            }
            self.notice_outside_change();
            if closing {
                // Nobody waits for a background pass; requested ones still finish.
                self.jobs.retain(|j| j.reply.is_some());
            } else if Instant::now() >= next_gc {
                if self.jobs.is_empty() {
                    self.jobs.push_back(GcJob { now: (self.clock)(), deleted: 0, reply: None });
                }
                next_gc = later(Instant::now(), self.gc_interval);
            }
            self.gc_step();
            if closing && drained && self.batch.is_empty() && self.jobs.is_empty() {
                break;
            }
        }
    }

    /// Files one message; true when it asks the writer to stop.
    fn take(&mut self, msg: WriterMsg) -> bool {
        match msg {
            WriterMsg::Write(w) => self.batch.push(w),
            WriterMsg::Wake => {
                self.detached_due.get_or_insert_with(|| later(Instant::now(), DETACHED_LINGER));
            }
            WriterMsg::Expire { now, reply } => {
                if self.jobs.len() >= MAX_GC_JOBS {
                    Counters::add(&self.counters.refused_busy, 1);
                    let _ = reply.send(Err(StoreError::Busy));
                } else {
                    self.jobs.push_back(GcJob { now, deleted: 0, reply: Some(reply) });
                }
            }
            WriterMsg::Close => return true,
        }
        false
    }

    /// Commits the gathered group and answers its callers.
    fn commit_batch(&mut self) {
        let mut batch = std::mem::take(&mut self.batch);
        let n = batch.len() as u64;
        let last_seq = batch.iter().map(Write::seq).max().unwrap_or(0);
        // Any failure below leaves the file without writes the hot cache already shows.
        let mut failed = false;
        match run_group(&mut self.conn, &mut batch) {
            Ok(()) => {
                Counters::add(&self.counters.commits, 1);
                Counters::add(&self.counters.written, n);
                batch.drain(..).for_each(|w| w.answer(Ok(())));
            }
            Err(f) if f.in_statement && batch.len() > 1 => {
                for mut w in batch.drain(..) {
                    match run_group(&mut self.conn, std::slice::from_mut(&mut w)) {
                        Ok(()) => {
                            Counters::add(&self.counters.commits, 1);
                            Counters::add(&self.counters.written, 1);
                            w.answer(Ok(()));
                        }
                        Err(f) => {
                            failed = true;
                            let reason = f.error.to_string();
                            self.counters.write_failed(1, &reason);
                            w.answer(Err(StoreError::Backend(reason)));
                        }
                    }
                }
            }
            Err(f) => {
                failed = true;
                let reason = f.error.to_string();
                self.counters.write_failed(n, &reason);
                let e = StoreError::Backend(reason);
                batch.drain(..).for_each(|w| w.answer(Err(e.clone())));
            }
        }
        self.cache.committed_up_to(last_seq);
        if failed {
            self.cache.clear(true);
        }
        // Keep the allocation for the next group.
        self.batch = batch;
    }

    /// Deletes one bounded slice of expired rows for the oldest collection in progress, and
    /// finishes it when a slice comes back short.
    fn gc_step(&mut self) {
        let Some(job) = self.jobs.front_mut() else {
            return;
        };
        let step = self.conn.prepare_cached(GC_STEP).and_then(|mut s| s.execute(params![job.now, self.gc_batch]));
        let done = match step {
            Ok(n) => {
                let n = n as u64;
                job.deleted += n;
                Counters::add(&self.counters.gc_deleted, n);
                n < self.gc_batch as u64
            }
            Err(e) => {
                Counters::add(&self.counters.gc_errors, 1);
                if let Some(job) = self.jobs.pop_front() {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err(StoreError::Backend(e.to_string())));
                    }
                }
                return;
            }
        };
        if done {
            Counters::add(&self.counters.gc_runs, 1);
            if let Some(job) = self.jobs.pop_front() {
                if let Some(reply) = job.reply {
                    let _ = reply.send(Ok(job.deleted));
                }
            }
        }
    }
}

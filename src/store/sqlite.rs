//! The embedded store: one SQLite file in smtpf's `mcc` layout, served by dedicated threads.
//!
//! SQLite calls block, so none of them runs on an async worker. One writer thread owns the only
//! write connection and applies requests in arrival order, grouping whatever is queued into one
//! transaction (group commit: one commit for up to `batch_max` writes, so throughput holds up
//! under load). A small pool of reader threads, each with its own connection,
//! answers reads; in WAL mode readers never wait for the writer, and since a write is only
//! acknowledged after its commit returned, a read issued after that acknowledgement sees it.
//! Both queues are bounded and refuse at once when full ([`StoreError::Busy`]), which checks treat
//! like any other store error: log it and let the mail through.
//!
//! In front of the readers sits a hot cache (module `cache`): records this process wrote or read
//! recently are answered from memory, which is what a busy MX asks for most (the same hosts and
//! tuples again and again); another process's changes to the file are noticed within 100 ms.
//! Writes nobody acts on at once (duplicate-message records, greylist refreshes) are queued
//! "detached": they are visible to this process at once and reach the file within milliseconds,
//! gathered into a group without waking the writer for each one.
//!
//! The readers share one multi-consumer queue (crossbeam's), so a request wakes exactly one idle
//! reader. Readers are dedicated threads rather than `spawn_blocking` tasks because the blocking pool's
//! queue is unbounded and its threads would each need a connection; fixed threads give a fixed
//! number of connections with cached statements and a queue whose length we control.
//!
//! Durability: `journal_mode=WAL` with `synchronous=NORMAL`. A commit is in the WAL file when it
//! returns, so killing the process loses nothing acknowledged; only a power loss or OS crash can
//! lose the last transactions before the next checkpoint, and WAL never leaves the file corrupt.
//! Losing a few greylist records costs at most one extra retry from a sender; a sync per commit
//! would cost far more under load.
//!
//! Expired rows are deleted by the writer every `gc_interval`, a bounded number of rows per
//! statement so writes queued meanwhile are applied between the steps instead of waiting behind
//! one huge delete.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use tokio::sync::oneshot;

use super::{unix_now, PrefixStats, Record, StoreCounters, StoreError};
use crate::log::os_error;
use crate::sync::lock;

mod cache;
mod filter;
mod writer;

use cache::{HotCache, Lookup};
use filter::KeyFilter;
use writer::{Detached, Write, WriterMsg};

/// The schema: smtpf's `mcc` table (k key, v value, e expiry, c creation; unix seconds) and the
/// index garbage collection walks.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mcc (k TEXT PRIMARY KEY, v TEXT NOT NULL, e INTEGER NOT NULL, c INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS mcc_expire ON mcc(e);
";

/// The live record under a key (`?1` key, `?2` now).
const GET_LIVE: &str = "SELECT v, c, e FROM mcc WHERE k = ?1 AND e > ?2";
/// Live records in a key range (`?1` first key, `?2` bound, `?3` now, `?4` limit).
const SCAN_RANGE: &str = "SELECT k, v, c, e FROM mcc WHERE k >= ?1 AND k < ?2 AND e > ?3 ORDER BY k LIMIT ?4";
/// Live records from a key on (`?1` first key, `?2` now, `?3` limit).
const SCAN_FROM: &str = "SELECT k, v, c, e FROM mcc WHERE k >= ?1 AND e > ?2 ORDER BY k LIMIT ?3";
/// Live counts by smtpf code in a key range.
const LIVE_RANGE: &str =
    "SELECT substr(v, 1, 1), instr(k, '@') = 0, count(*) FROM mcc WHERE k >= ?1 AND k < ?2 AND e > ?3 GROUP BY 1, 2";
/// Live counts by smtpf code from a key on.
const LIVE_FROM: &str = "SELECT substr(v, 1, 1), instr(k, '@') = 0, count(*) FROM mcc WHERE k >= ?1 AND e > ?2 GROUP BY 1, 2";
/// Expired rows in a key range.
const EXPIRED_RANGE: &str = "SELECT count(*) FROM mcc WHERE k >= ?1 AND k < ?2 AND e <= ?3";
/// Expired rows from a key on.
const EXPIRED_FROM: &str = "SELECT count(*) FROM mcc WHERE k >= ?1 AND e <= ?2";

/// How a SQLite store is tuned; the defaults suit a busy MX.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How often expired rows are deleted in the background (smtpf's `cache-gc-interval`, 300 s).
    pub gc_interval: Duration,
    /// Reader threads, each with its own connection (1..=64).
    pub readers: usize,
    /// Write requests that may wait for the writer before new ones are refused.
    pub write_queue: usize,
    /// Read requests that may wait for a reader before new ones are refused.
    pub read_queue: usize,
    /// Most writes grouped into one transaction.
    pub batch_max: usize,
    /// Most rows one garbage-collection statement deletes before queued writes get their turn.
    pub gc_batch: usize,
    /// How long a statement waits for a lock held by another process (an operator's `sqlite3`).
    pub busy_timeout: Duration,
    /// The clock the background collector uses (unix seconds); callers pass their own time to
    /// every other call. Replaceable so tests can pin it.
    pub clock: fn() -> i64,
    /// Records kept in memory so repeated lookups skip the reader threads (0: none). About
    /// 200 bytes each; see the `cache` module for why it never contradicts the file.
    pub hot_cache: usize,
    /// How often an idle writer checks whether another process changed the file, so the hot
    /// cache forgets what that change may contradict.
    pub outside_change_poll: Duration,
    /// WAL pages (4 KiB each) past which the checkpoint thread cuts the WAL back (see
    /// `checkpoint_loop`); 4096 is 16 MiB.
    pub wal_bound_pages: i64,
    /// Permissions of a state file this store creates, and the most an existing one keeps: the
    /// records name senders and recipients, so never world-readable (0600; 0640 with run-group).
    pub file_mode: u32,
    /// Keep a Bloom filter of the file's keys so lookups of keys never stored skip the readers
    /// (about 2.5 bytes per stored key; see the `filter` module).
    pub key_filter: bool,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions {
            gc_interval: Duration::from_secs(300),
            readers: 4,
            write_queue: 4096,
            read_queue: 1024,
            batch_max: 256,
            gc_batch: 1000,
            busy_timeout: Duration::from_secs(5),
            clock: unix_now,
            hot_cache: 65_536,
            outside_change_poll: Duration::from_millis(100),
            key_filter: true,
            file_mode: 0o600,
            wal_bound_pages: WAL_BOUND_PAGES,
        }
    }
}

impl SqliteOptions {
    /// Clamps every setting into a range the threads can work with (no zero-sized queue, no
    /// busy-looping collector).
    fn normalized(mut self) -> SqliteOptions {
        self.gc_interval = self.gc_interval.max(Duration::from_millis(1));
        self.readers = self.readers.clamp(1, 64);
        self.write_queue = self.write_queue.max(1);
        self.read_queue = self.read_queue.max(1);
        self.batch_max = self.batch_max.max(1);
        self.gc_batch = self.gc_batch.max(1);
        self.outside_change_poll = self.outside_change_poll.max(Duration::from_millis(1));
        self
    }
}

/// The SQLite library version, for the start-up line #606.
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}

/// A reply channel back to the async caller.
type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Requests for the reader threads.
enum ReaderMsg {
    Get { key: String, now: i64, reply: Reply<Option<Record>> },
    Scan { prefix: String, now: i64, limit: usize, reply: Reply<Vec<(String, Record)>> },
    Stats { prefix: String, now: i64, reply: Reply<PrefixStats> },
    Close,
}

/// Totals shared by the handle and the threads.
#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    written: AtomicU64,
    commits: AtomicU64,
    refused_busy: AtomicU64,
    write_errors: AtomicU64,
    gc_runs: AtomicU64,
    gc_deleted: AtomicU64,
    gc_errors: AtomicU64,
    last_write_error: Mutex<String>,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` failed writes and keeps the reason.
    fn write_failed(&self, n: u64, reason: &str) {
        Counters::add(&self.write_errors, n);
        let mut last = lock(&self.last_write_error);
        if *last != reason {
            *last = reason.to_string();
        }
    }

    fn snapshot(&self) -> StoreCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreCounters {
            submitted: get(&self.submitted),
            written: get(&self.written),
            commits: get(&self.commits),
            refused_busy: get(&self.refused_busy),
            write_errors: get(&self.write_errors),
            gc_runs: get(&self.gc_runs),
            gc_deleted: get(&self.gc_deleted),
            gc_errors: get(&self.gc_errors),
            last_write_error: lock(&self.last_write_error).clone(),
        }
    }
}

/// An open SQLite store: a cheap, clonable handle to the writer and reader threads.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// What the clones share. The threads hold none of it except the counters, so dropping the last
/// handle drops the senders and the threads finish the queued work and exit on their own.
struct Inner {
    path: PathBuf,
    writes: SyncSender<WriterMsg>,
    reads: crossbeam_channel::Sender<ReaderMsg>,
    readers: usize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    counters: Arc<Counters>,
    cache: Arc<HotCache>,
    filter: Arc<KeyFilter>,
    detached: Arc<Detached>,
    /// Dropped by `close` to stop the checkpoint thread at once.
    checkpoint_stop: Mutex<Option<mpsc::Sender<()>>>,
    /// Set by `close`: the hot cache must not answer for a closed store.
    closed: std::sync::atomic::AtomicBool,
    /// Device and inode of the file when it was opened, to notice it being deleted or replaced.
    identity: Option<(u64, u64)>,
}

/// Device and inode of the file at `path` now.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Creates the state file with `mode` when it does not exist (SQLite then keeps that mode for its
/// -wal and -shm files), and takes from an existing one any permission `mode` does not grant
/// to group and others.
fn restrict_file(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed =
        |what: &str, e: std::io::Error| StoreError::Unavailable(format!("cannot {what} {}: {}", path.display(), os_error(&e)));
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| failed("create", e))?;
            // The umask may have taken bits away, never added them; set exactly `mode`.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| failed("chmod", e))
        }
        Err(e) => Err(failed("inspect", e)),
        Ok(meta) => {
            use std::os::unix::fs::MetadataExt;
            // Only a file of our own is tightened; one an admin set up for us stays as it is.
            if meta.uid() != nix::unistd::geteuid().as_raw() {
                return Ok(());
            }
            let current = meta.permissions().mode() & 0o777;
            let allowed = current & (0o700 | (mode & 0o077));
            if allowed != current {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(allowed)).map_err(|e| failed("chmod", e))?;
            }
            Ok(())
        }
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// An error while opening: the filesystem's state (full, read-only, permissions, I/O) can change
/// and the daemon waits it out; anything else (not a database, damaged) is the admin's to fix.
fn open_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(DiskFull | ReadOnly | CannotOpen | SystemIoFailure | PermissionDenied | DatabaseBusy | DatabaseLocked) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Open(e.to_string()),
    }
}

/// Opens one connection with the settings every connection needs. No URI parsing, so any file
/// name is taken literally.
fn connect(path: &Path, create: bool, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.busy_timeout(busy_timeout).map_err(open_error)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens or creates the file with default tuning (see [`SqliteStore::open_with`]). Blocking.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    /// Opens or creates the file and starts the threads. Every problem that would otherwise fail
    /// mail later is reported here: an uncreatable directory, a file that is not a database or is
    /// corrupt (`PRAGMA quick_check`), a read-only file or directory, an incompatible `mcc` table.
    /// Blocking.
    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let options = options.normalized();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create directory {}: {}", dir.display(), os_error(&e)))
                })?;
            } else if !dir.is_dir() {
                return Err(StoreError::Unavailable(format!("{} is not a directory", dir.display())));
            }
        }
        restrict_file(path, options.file_mode)?;
        let conn = connect(path, true, options.busy_timeout)?;
        // SQLite silently falls back to read-only on a write-protected file; refuse instead.
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(open_error)? {
            return Err(StoreError::Unavailable("database file is read-only".into()));
        }
        // Before anything is written: a file that is not a database, or a damaged one, stops here.
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(open_error)?;
        if check != "ok" {
            return Err(StoreError::Open(format!("integrity check failed: {check}")));
        }
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(open_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open(format!("cannot switch to WAL mode (got {mode})")));
        }
        // Checkpoints (copying the WAL into the file, with an fsync) run on a thread of their own
        // (see `checkpoint_loop`), never inside a commit that sessions wait for.
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA journal_size_limit=67108864; PRAGMA wal_autocheckpoint=0;")
            .map_err(open_error)?;
        conn.execute_batch(SCHEMA).map_err(open_error)?;
        // An existing table from another layout would fail every statement; say so once, now.
        conn.prepare("SELECT k, v, c, e FROM mcc LIMIT 0")
            .map_err(|e| StoreError::Open(format!("table mcc has an unexpected layout: {e}")))?;
        // A real write, so a read-only directory or file fails at start-up rather than at the
        // first message: rewrite the header's user_version with its own value.
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(open_error)?;
        conn.pragma_update(None, "user_version", version).map_err(open_error)?;

        let mut reader_conns = Vec::with_capacity(options.readers);
        for _ in 0..options.readers {
            let r = connect(path, false, options.busy_timeout)?;
            r.execute_batch("PRAGMA query_only=ON;").map_err(open_error)?;
            reader_conns.push(r);
        }

        let counters = Arc::new(Counters::default());
        let cache = Arc::new(HotCache::new(options.hot_cache));
        let filter = Arc::new(KeyFilter::new(path.to_path_buf(), options.busy_timeout, cache.clone(), options.key_filter));
        let detached = Arc::new(Detached::new(options.write_queue));
        let (write_tx, write_rx) = mpsc::sync_channel(options.write_queue);
        let (read_tx, read_rx) = crossbeam_channel::bounded(options.read_queue);
        let mut threads = Vec::with_capacity(options.readers + 1);
        let w = writer::Writer::new(conn, write_rx, counters.clone(), cache.clone(), filter.clone(), detached.clone(), &options)
            .map_err(open_error)?;
        threads.push(spawn("store-writer", move || w.run())?);
        let (checkpoint_stop, checkpoint_rx) = mpsc::channel::<()>();
        // Its own short busy timeout: a bounding checkpoint waits for readers a moment at most.
        let checkpointer = connect(path, false, CHECKPOINT_WAIT)?;
        let bound = options.wal_bound_pages;
        threads.push(spawn("store-checkpoint", move || checkpoint_loop(checkpointer, checkpoint_rx, bound))?);
        for (i, r) in reader_conns.into_iter().enumerate() {
            let rx = read_rx.clone();
            threads.push(spawn(&format!("store-reader-{i}"), move || reader_loop(r, rx))?);
        }
        filter.rebuild();
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writes: write_tx,
                reads: read_tx,
                readers: options.readers,
                threads: Mutex::new(threads),
                counters,
                cache,
                filter: filter.clone(),
                detached,
                checkpoint_stop: Mutex::new(Some(checkpoint_stop)),
                closed: std::sync::atomic::AtomicBool::new(false),
                identity: file_identity(path),
            }),
        })
    }

    /// Whether the file at the store's path is no longer the one it opened: deleted, or replaced
    /// (a restore from backup, an admin's `mv`). Writes would go on into the old, unlinked file
    /// and be lost, so the daemon reopens the path.
    pub fn file_replaced(&self) -> bool {
        self.inner.identity.is_some() && file_identity(&self.inner.path) != self.inner.identity
    }

    /// The file in use, for logs.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// See [`super::Store::get`]. Answered from the hot cache when it knows the key.
    pub async fn get(&self, key: &str, now: i64) -> Result<Option<Record>, StoreError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let generation = match self.inner.cache.lookup(key, now) {
            Lookup::Known(found) => return Ok(found),
            Lookup::Unknown(generation) => generation,
        };
        if !self.inner.filter.may_contain(key) {
            return Ok(None);
        }
        let (reply, rx) = oneshot::channel();
        self.read(ReaderMsg::Get { key: key.to_owned(), now, reply })?;
        let found = rx.await.unwrap_or(Err(StoreError::Closed))?;
        self.inner.cache.fill(key, found.clone(), generation);
        Ok(found)
    }

    /// See [`super::Store::scan`].
    pub async fn scan(&self, prefix: &str, now: i64, limit: usize) -> Result<Vec<(String, Record)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.read(ReaderMsg::Scan { prefix: prefix.to_owned(), now, limit, reply })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// See [`super::Store::stats`].
    pub async fn stats(&self, prefix: &str, now: i64) -> Result<PrefixStats, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.read(ReaderMsg::Stats { prefix: prefix.to_owned(), now, reply })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// See [`super::Store::put`].
    pub async fn put(&self, key: &str, record: Record) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.queue_put(key, record, Some(reply))?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// See [`super::Store::put_detached`].
    pub fn put_detached(&self, key: &str, record: Record) -> Result<(), StoreError> {
        self.queue_put(key, record, None)
    }

    fn queue_put(&self, key: &str, record: Record, reply: Option<Reply<()>>) -> Result<(), StoreError> {
        let cached = record.clone();
        self.inner.cache.write(key, Some(cached), |seq| {
            self.inner.filter.insert(key);
            if reply.is_some() {
                return self.write(WriterMsg::Write(Write::Put { key: key.to_owned(), record, seq, reply }));
            }
            let queued = self.inner.detached.push(Write::Put { key: key.to_owned(), record, seq, reply }, &self.inner.writes);
            match &queued {
                Ok(()) => Counters::add(&self.inner.counters.submitted, 1),
                Err(StoreError::Busy) => Counters::add(&self.inner.counters.refused_busy, 1),
                Err(_) => {}
            }
            queued
        })
    }

    /// See [`super::Store::put_if_absent`].
    pub async fn put_if_absent(&self, key: &str, record: Record, now: i64) -> Result<Option<Record>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let mine = record.clone();
        let ticket = self.inner.cache.reserve(|seq| {
            self.inner.filter.insert(key);
            self.write(WriterMsg::Write(Write::PutIfAbsent {
                key: key.to_owned(),
                record,
                now,
                seq,
                found: None,
                reply: Some(reply),
            }))
        })?;
        let found = rx.await.unwrap_or(Err(StoreError::Closed))?;
        self.inner.cache.settle(key, Some(found.clone().unwrap_or(mine)), ticket);
        Ok(found)
    }

    /// See [`super::Store::claim`]: `put_if_absent` decided by what this process knows (the hot
    /// cache holds every write it queued), the write itself detached. The writer still applies
    /// it only over nothing, so a record another process stored meanwhile is kept in the file.
    pub fn claim_detached(&self, key: &str, record: Record, now: i64) -> Result<Option<Record>, StoreError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let queued = record.clone();
        self.inner.cache.claim(key, record, now, |seq| {
            self.inner.filter.insert(key);
            let w = Write::PutIfAbsent { key: key.to_owned(), record: queued, now, seq, found: None, reply: None };
            let pushed = self.inner.detached.push_claim(w, &self.inner.writes);
            match &pushed {
                Ok(()) => Counters::add(&self.inner.counters.submitted, 1),
                Err(StoreError::Busy) => Counters::add(&self.inner.counters.refused_busy, 1),
                Err(_) => {}
            }
            pushed
        })
    }

    /// See [`super::Store::delete`].
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.inner.cache.write(key, None, |seq| {
            self.write(WriterMsg::Write(Write::Delete { key: key.to_owned(), seq, removed: false, reply }))
        })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// See [`super::Store::expire`]. Runs on the writer in bounded steps like the background
    /// collector, so other writes keep flowing meanwhile.
    pub async fn expire(&self, now: i64) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.write(WriterMsg::Expire { now, reply })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// See [`super::Store::counters`].
    pub fn counters(&self) -> StoreCounters {
        self.inner.counters.snapshot()
    }

    /// See [`super::Store::close`]. The waiting happens on the blocking pool, never on an async
    /// worker.
    pub async fn close(&self) {
        let inner = self.inner.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let _ = handle.spawn_blocking(move || inner.shutdown()).await;
            }
            Err(_) => inner.shutdown(),
        }
    }

    /// Queues a write without waiting; a full queue or a stopped writer is an immediate error.
    fn write(&self, msg: WriterMsg) -> Result<(), StoreError> {
        let is_write = matches!(msg, WriterMsg::Write(_));
        match self.inner.writes.try_send(msg) {
            Ok(()) => {
                if is_write {
                    Counters::add(&self.inner.counters.submitted, 1);
                }
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                Counters::add(&self.inner.counters.refused_busy, 1);
                Err(StoreError::Busy)
            }
            Err(TrySendError::Disconnected(_)) => Err(StoreError::Closed),
        }
    }

    /// Queues a read without waiting, like [`SqliteStore::write`].
    fn read(&self, msg: ReaderMsg) -> Result<(), StoreError> {
        match self.inner.reads.try_send(msg) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::TrySendError::Full(_)) => {
                Counters::add(&self.inner.counters.refused_busy, 1);
                Err(StoreError::Busy)
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(StoreError::Closed),
        }
    }
}

impl Inner {
    /// Asks every thread to stop after the work queued before the request, and waits for them.
    /// The lock is held throughout so a second caller returns only once everything has stopped.
    fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        lock(&self.checkpoint_stop).take();
        let mut threads = lock(&self.threads);
        if threads.is_empty() {
            return;
        }
        // Blocking sends: the threads keep draining, so there is room soon; a stopped thread has
        // dropped its receiver and the send fails at once.
        let _ = self.writes.send(WriterMsg::Close);
        for _ in 0..self.readers {
            let _ = self.reads.send(ReaderMsg::Close);
        }
        for t in threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Lowers the calling thread's scheduling priority (Linux: nice applies per thread), for
/// background work that must not take CPU time from sessions on a small machine.
fn background_priority() {
    // SAFETY: gettid has no preconditions; setpriority only reads its arguments.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid);
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| StoreError::Open(format!("cannot start thread {name}: {e}")))
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A WAL longer than this is cut back: truncated once everything in it is in the database file,
/// or restarted (so the next commit writes from its start) when readers kept a checkpoint short.
const WAL_BOUND_PAGES: i64 = 4096;

/// How long a bounding checkpoint may wait for readers (they read one row at a time).
const CHECKPOINT_WAIT: Duration = Duration::from_millis(20);

/// The checkpoint thread: a passive checkpoint every second, on a connection of its own, so the
/// fsync it implies never delays the writer's commits (and the sessions waiting on them); it
/// neither blocks nor waits for readers or the writer. Stops when its channel is dropped.
///
/// Under a steady load some reader is almost always in the middle of a read, and SQLite only
/// rewinds the WAL when none is: passive checkpoints alone let it grow by hundreds of megabytes
/// during a burst. So when it passes `bound_pages` ([`WAL_BOUND_PAGES`] by default), a TRUNCATE checkpoint (everything was
/// copied) or a RESTART checkpoint (readers held some back) waits up to [`CHECKPOINT_WAIT`] for
/// readers and cuts it back; if they are still busy it is simply tried again next second.
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>, bound_pages: i64) {
    background_priority();
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        // (busy, pages in the WAL, pages copied back); a failed checkpoint is tried again later.
        let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)));
        if let Ok((log, copied)) = passive {
            if log > bound_pages {
                let mode = if copied >= log { "TRUNCATE" } else { "RESTART" };
                let _ = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
            }
        }
    }
}

/// One reader thread: takes the next request from the shared queue and answers it.
fn reader_loop(conn: Connection, rx: crossbeam_channel::Receiver<ReaderMsg>) {
    loop {
        let msg = rx.recv();
        match msg {
            Ok(ReaderMsg::Get { key, now, reply }) => {
                let _ = reply.send(read_get(&conn, &key, now).map_err(backend));
            }
            Ok(ReaderMsg::Scan { prefix, now, limit, reply }) => {
                let _ = reply.send(read_scan(&conn, &prefix, now, limit).map_err(backend));
            }
            Ok(ReaderMsg::Stats { prefix, now, reply }) => {
                let _ = reply.send(read_stats(&conn, &prefix, now).map_err(backend));
            }
            Ok(ReaderMsg::Close) | Err(_) => break,
        }
    }
}

fn read_get(conn: &Connection, key: &str, now: i64) -> rusqlite::Result<Option<Record>> {
    conn.prepare_cached(GET_LIVE)?.query_row(params![key, now], |r| record_at(r, 0)).optional()
}

fn read_scan(conn: &Connection, prefix: &str, now: i64, limit: usize) -> rusqlite::Result<Vec<(String, Record)>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let row = |r: &Row<'_>| Ok((text_at(r, 0)?, record_at(r, 1)?));
    match prefix_end(prefix) {
        Some(end) => conn.prepare_cached(SCAN_RANGE)?.query_map(params![prefix, end, now, limit], row)?.collect(),
        None => conn.prepare_cached(SCAN_FROM)?.query_map(params![prefix, now, limit], row)?.collect(),
    }
}

fn read_stats(conn: &Connection, prefix: &str, now: i64) -> rusqlite::Result<PrefixStats> {
    let row = |r: &Row<'_>| Ok((text_at(r, 0)?, int_at(r, 1)? != 0, int_at(r, 2)?));
    let (by_code, expired): (Vec<(String, bool, i64)>, i64) = match prefix_end(prefix) {
        Some(end) => (
            conn.prepare_cached(LIVE_RANGE)?.query_map(params![prefix, end, now], row)?.collect::<Result<_, _>>()?,
            conn.prepare_cached(EXPIRED_RANGE)?.query_row(params![prefix, end, now], |r| int_at(r, 0))?,
        ),
        None => (
            conn.prepare_cached(LIVE_FROM)?.query_map(params![prefix, now], row)?.collect::<Result<_, _>>()?,
            conn.prepare_cached(EXPIRED_FROM)?.query_row(params![prefix, now], |r| int_at(r, 0))?,
        ),
    };
    let mut stats = PrefixStats { expired: count(expired), ..PrefixStats::default() };
    for (code, no_address, n) in by_code {
        stats.live += count(n);
        if no_address && code == "0" {
            stats.live_passed_without_address += count(n);
        }
        *stats.live_by_code.entry(code).or_insert(0) += count(n);
    }
    Ok(stats)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The smallest key above every key that starts with `prefix`, so a prefix becomes an index
/// range (`k >= prefix AND k < end`). UTF-8 sorts bytewise in code-point order, so bumping the
/// last character that can be bumped (and dropping what follows) is exact. `None` when there is
/// no such key: an empty prefix, or one made only of U+10FFFF.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        let next = match u32::from(c) + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(n) = next {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A record from the `v, c, e` columns starting at `first`. Lenient, because the file may have
/// been edited by hand or written by smtpf itself (whose `v` may be NULL): odd values are read as
/// best they can be rather than failing the lookup.
fn record_at(row: &Row<'_>, first: usize) -> rusqlite::Result<Record> {
    Ok(Record { value: text_at(row, first)?, created: int_at(row, first + 1)?, expires: int_at(row, first + 2)? })
}

fn text_at(row: &Row<'_>, i: usize) -> rusqlite::Result<String> {
    Ok(match row.get_ref(i)? {
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Null => String::new(),
    })
}

fn int_at(row: &Row<'_>, i: usize) -> rusqlite::Result<i64> {
    Ok(match row.get_ref(i)? {
        ValueRef::Integer(n) => n,
        // Saturating float-to-int conversion; NaN becomes 0.
        ValueRef::Real(f) => f as i64,
        ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0),
        ValueRef::Blob(_) | ValueRef::Null => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bumps_the_last_bumpable_character() {
        assert_eq!(prefix_end("grey:").as_deref(), Some("grey;"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("\u{10FFFF}\u{10FFFF}"), None);
    }

    #[test]
    fn prefix_end_bounds_exactly_the_keys_with_the_prefix() {
        let prefix = "gr\u{10FFFF}";
        let end = prefix_end(prefix).unwrap_or_default();
        for inside in ["gr\u{10FFFF}", "gr\u{10FFFF}\u{10FFFF}x", "gr\u{10FFFF}\0"] {
            assert!(inside >= prefix && inside < end.as_str(), "{inside:?}");
        }
        for outside in ["gs", "gr\u{10FFFE}z", "gq"] {
            assert!(!(outside >= prefix && outside < end.as_str()), "{outside:?}");
        }
    }
}

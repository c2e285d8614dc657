//! Persistent state: greylist and duplicate-message records with expiry.
//!
//! Checks keep what they learn about senders in one key/value space with smtpf's layout: each
//! record has a text value, a creation time and an expiry time (unix seconds), and its key starts
//! with the check that owns it (`grey:`, `dupmsg:`). A record whose expiry is not after "now" is
//! gone as far as readers can tell, whether or not garbage collection has removed it yet.
//!
//! [`Store`] is what checks hold. It is an enum rather than a trait object so its async methods
//! need no boxing; the backends are an embedded SQLite file (one host) and Redis (several MX
//! hosts sharing state), picked by a [`StoreSpec`] in [`Store::open`]. Every method takes the current time from the caller,
//! so tests control the clock and all hosts sharing a backend agree on what "now" means for a
//! given request.
//!
//! A store error never rejects mail: checks log it (#542 read, #544 write, #546 delete) and carry
//! on as if the record were absent (fail open). Every error therefore comes back quickly as a
//! [`StoreError`]; nothing here blocks an async worker or panics on bad data or I/O failures. A
//! shared backend that is down fails every call until it returns; those repeats come back as
//! [`StoreError::Outage`] so the log gets one line per outage rather than one per message.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

pub mod redis;
pub mod sqlite;

pub use redis::{RedisOptions, RedisStore};
pub use sqlite::{sqlite_version, SqliteOptions, SqliteStore};

use crate::log::Logger;

/// The system clock in unix seconds (one definition for the whole daemon), for callers that
/// need "now" and for the background collector's default clock.
pub use crate::ids::unix_now;

/// Where greylist and duplicate records live (`cache-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheType {
    /// The SQLite file at `cache-path`: one host.
    Sqlite,
    /// The Redis server at `cache-redis-url`: several MX hosts share one memory.
    Redis,
}

impl CacheType {
    /// The word used in the file.
    pub fn word(self) -> &'static str {
        match self {
            CacheType::Sqlite => "sqlite",
            CacheType::Redis => "redis",
        }
    }
}

/// Which store to open and how, resolved from the config (`cache-type` and its keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// The SQLite file at `path`, expired rows collected every `gc_interval`, created with
    /// `file_mode` (and never more open than that).
    Sqlite { path: std::path::PathBuf, gc_interval: Duration, file_mode: u32 },
    /// A Redis server.
    Redis(RedisOptions),
}

impl StoreSpec {
    /// The backend's word, as `cache-type` spells it.
    pub fn cache_type(&self) -> CacheType {
        match self {
            StoreSpec::Sqlite { .. } => CacheType::Sqlite,
            StoreSpec::Redis(_) => CacheType::Redis,
        }
    }

    /// Where the store lives, for messages: the file's path or the server's URL without
    /// credentials.
    pub fn shown(&self) -> String {
        match self {
            StoreSpec::Sqlite { path, .. } => path.display().to_string(),
            StoreSpec::Redis(options) => redis::redact(&options.url),
        }
    }
}

/// One stored record: what a check remembers about a key, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The check's data; by smtpf convention its first character is the smtpf code
    /// (`0` passed, `4` temp-failed, `5` reject, `6` discard).
    pub value: String,
    /// When the record was first created (unix seconds); greylisting measures its delay from it.
    pub created: i64,
    /// When the record stops existing (unix seconds); live while `expires > now`.
    pub expires: i64,
}

impl Record {
    /// Builds a record; a shorthand so call sites read as one line.
    pub fn new(value: impl Into<String>, created: i64, expires: i64) -> Record {
        Record { value: value.into(), created, expires }
    }

    /// Whether the record still exists at `now`; the one rule every backend applies.
    pub fn is_live(&self, now: i64) -> bool {
        self.expires > now
    }

    /// Seconds left before expiry at `now` (0 when expired), as smtpf derives a row's ttl.
    pub fn ttl(&self, now: i64) -> i64 {
        self.expires.saturating_sub(now).max(0)
    }
}

/// Why a store call failed. The text is short so it fits the #542/#544/#546 log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store could not be opened or validated at start-up (the daemon refuses to start, #172):
    /// the file is not a database, is damaged, or has another layout — a mistake to fix.
    Open(String),
    /// The store cannot be opened or written for now: a full or read-only filesystem, missing
    /// permissions, an I/O error, a directory that cannot be created. The daemon serves without
    /// it (fail open) and keeps trying (#2047/#2048).
    Unavailable(String),
    /// Too many requests are already queued; the call is refused at once instead of waiting, so a
    /// slow disk degrades to "check skipped" rather than stalled sessions.
    Busy,
    /// The store has been closed (shutting down) or its worker has stopped.
    Closed,
    /// The backend reported an error (I/O, disk full, read-only file, corrupt page, Redis
    /// unreachable, ...).
    Backend(String),
    /// The backend failed again during an outage whose first error was already logged; checks
    /// fail open without logging it, and the recovery line (#2025) gives the count.
    Outage(String),
}

impl StoreError {
    /// Whether this error repeats an outage already logged, so the caller should not log it.
    pub fn already_logged(&self) -> bool {
        matches!(self, StoreError::Outage(_))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open(reason) | StoreError::Unavailable(reason) => f.write_str(reason),
            StoreError::Busy => f.write_str("store busy: request queue full"),
            StoreError::Closed => f.write_str("store closed"),
            StoreError::Backend(reason) | StoreError::Outage(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for StoreError {}

/// Record counts under one key prefix, for `grey stats`-style reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Live records (expiry after "now").
    pub live: u64,
    /// Expired records not yet removed by garbage collection.
    pub expired: u64,
    /// Live records by the first character of their value (the smtpf code: `"0"` passed,
    /// `"4"` temp-failed, ...); an empty value counts under `""`.
    pub live_by_code: BTreeMap<String, u64>,
    /// Live passed records (`"0"`) whose key holds no address: greylisting's host records
    /// (`grey:<ptr-domain>`, `grey:spf:<domain>`) and auto-whitelisted clients, as opposed to
    /// passed tuples, which always name a sender or a recipient (except with a key of host
    /// words only, whose tuples are hosts).
    pub live_passed_without_address: u64,
}

/// Running totals since the store was opened, so operators and tests can see group commit and
/// garbage collection at work without reading the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCounters {
    /// Write requests accepted into the queue.
    pub submitted: u64,
    /// Write requests applied and committed.
    pub written: u64,
    /// Write transactions committed (fewer than `written` when writes are grouped).
    pub commits: u64,
    /// Requests refused because a queue was full.
    pub refused_busy: u64,
    /// Write requests that failed in the backend.
    pub write_errors: u64,
    /// Garbage-collection passes finished (background or requested).
    pub gc_runs: u64,
    /// Rows removed by garbage collection.
    pub gc_deleted: u64,
    /// Garbage-collection passes that stopped on an error.
    pub gc_errors: u64,
    /// The backend's text for the latest failed write (empty: none yet), for the line that
    /// reports failed writes nobody waited for (#2045).
    pub last_write_error: String,
}

/// The store checks use: one handle, cheap to clone, shared by every session.
#[derive(Clone)]
pub enum Store {
    /// One SQLite file on the local host (the default).
    Sqlite(SqliteStore),
    /// A Redis server shared by several MX hosts.
    Redis(RedisStore),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Sqlite(s) => f.debug_tuple("Sqlite").field(&s.path()).finish(),
            Store::Redis(s) => f.debug_tuple("Redis").field(&s.url_shown()).finish(),
        }
    }
}

impl Store {
    /// Opens the backend `spec` names: a SQLite file or a Redis server. The one constructor the
    /// daemon and the `grey` command use. A SQLite file that is not a database is
    /// [`StoreError::Open`] (the daemon refuses to start, #172); one that cannot be opened for
    /// now is [`StoreError::Unavailable`] (the daemon serves and retries, #2047); an unreachable
    /// Redis is no error (logged with #2024 to `log`, the store reconnects and checks fail open
    /// meanwhile). Needs a Tokio runtime.
    pub async fn open(spec: &StoreSpec, log: Option<&Logger>) -> Result<Store, StoreError> {
        match spec {
            StoreSpec::Sqlite { path, gc_interval, file_mode } => {
                let options = SqliteOptions { gc_interval: *gc_interval, file_mode: *file_mode, ..SqliteOptions::default() };
                let path = path.clone();
                tokio::task::spawn_blocking(move || Store::open_sqlite_with(&path, options))
                    .await
                    .unwrap_or_else(|e| Err(StoreError::Open(e.to_string())))
            }
            StoreSpec::Redis(options) => RedisStore::open(options.clone(), log.cloned()).await.map(Store::Redis),
        }
    }

    /// Opens (creating if needed) the SQLite file at `path` with default tuning, collecting
    /// expired rows every `gc_interval`. Blocking: call it from `spawn_blocking` or before the
    /// runtime serves mail, since it checks the whole file.
    pub fn open_sqlite(path: &Path, gc_interval: Duration) -> Result<Store, StoreError> {
        SqliteStore::open_with(path, SqliteOptions { gc_interval, ..SqliteOptions::default() }).map(Store::Sqlite)
    }

    /// Opens the SQLite file with explicit tuning (queue sizes, reader count, clock), for tests
    /// and unusual loads.
    pub fn open_sqlite_with(path: &Path, options: SqliteOptions) -> Result<Store, StoreError> {
        SqliteStore::open_with(path, options).map(Store::Sqlite)
    }

    /// Whether the store's file was deleted or replaced under it (SQLite; never for Redis).
    pub fn file_replaced(&self) -> bool {
        match self {
            Store::Sqlite(s) => s.file_replaced(),
            Store::Redis(_) => false,
        }
    }

    /// A one-line description for start-up logs: backend and location.
    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(s) => format!("sqlite {}", s.path().display()),
            Store::Redis(s) => s.describe(),
        }
    }

    /// The live record under `key` at `now`, or `None`; an expired record reads as absent.
    pub async fn get(&self, key: &str, now: i64) -> Result<Option<Record>, StoreError> {
        match self {
            Store::Sqlite(s) => s.get(key, now).await,
            Store::Redis(s) => s.get(key, now).await,
        }
    }

    /// Stores `record` under `key`, replacing any previous one; resolves once it is durable in
    /// the backend, so a later `get` sees it.
    pub async fn put(&self, key: &str, record: Record) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.put(key, record).await,
            Store::Redis(s) => s.put(key, record).await,
        }
    }

    /// Queues `record` for `key` without waiting for it to be stored, for writes nobody acts on
    /// at once (duplicate-message records, greylist refreshes): the session answers the MTA
    /// without a round trip to the backend. Later reads in this process see the record at once;
    /// a failure after queueing is counted in the store's counters, not reported here.
    pub fn put_detached(&self, key: &str, record: Record) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.put_detached(key, record),
            // The multiplexed connection pipelines it; a failure counts towards the outage the
            // store itself logs (#2024).
            Store::Redis(s) => {
                let (s, key) = (s.clone(), key.to_owned());
                tokio::spawn(async move {
                    let _ = s.put(&key, record).await;
                });
                Ok(())
            }
        }
    }

    /// Stores `record` only when no live record exists under `key` at `now`, atomically; returns
    /// the live record that won instead, if any. Greylisting's "first sight" uses it so two
    /// sessions racing on one tuple agree on its creation time.
    pub async fn put_if_absent(&self, key: &str, record: Record, now: i64) -> Result<Option<Record>, StoreError> {
        match self {
            Store::Sqlite(s) => s.put_if_absent(key, record, now).await,
            Store::Redis(s) => s.put_if_absent(key, record, now).await,
        }
    }

    /// First sight: like [`Store::put_if_absent`], but on SQLite decided from what this process
    /// knows (every write it made is in its memory cache) and written detached, so greylisting a
    /// new tuple does not wait for a commit. The record reaches the file within milliseconds; a
    /// crash in that window costs the sender one more temp-failure. A shared backend (Redis),
    /// where other hosts write too, still asks the server and waits.
    pub async fn claim(&self, key: &str, record: Record, now: i64) -> Result<Option<Record>, StoreError> {
        match self {
            Store::Sqlite(s) => s.claim_detached(key, record, now),
            Store::Redis(s) => s.put_if_absent(key, record, now).await,
        }
    }

    /// Removes `key`; true when a row was removed (live or expired but not yet collected).
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.delete(key).await,
            Store::Redis(s) => s.delete(key).await,
        }
    }

    /// Up to `limit` live records whose key starts with `prefix`, ordered by key, for listing and
    /// maintenance commands.
    pub async fn scan(&self, prefix: &str, now: i64, limit: usize) -> Result<Vec<(String, Record)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.scan(prefix, now, limit).await,
            Store::Redis(s) => s.scan(prefix, now, limit).await,
        }
    }

    /// Counts the records under `prefix` (`""` for all), for statistics commands.
    pub async fn stats(&self, prefix: &str, now: i64) -> Result<PrefixStats, StoreError> {
        match self {
            Store::Sqlite(s) => s.stats(prefix, now).await,
            Store::Redis(s) => s.stats(prefix, now).await,
        }
    }

    /// Removes every record with `expires <= now` and returns how many went; the background
    /// collector does the same on its own, this is for tools and tests.
    pub async fn expire(&self, now: i64) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.expire(now).await,
            Store::Redis(s) => s.expire(now).await,
        }
    }

    /// Totals since opening (queued, committed, refused, collected).
    pub fn counters(&self) -> StoreCounters {
        match self {
            Store::Sqlite(s) => s.counters(),
            Store::Redis(s) => s.counters(),
        }
    }

    /// Stops the background work after applying every write already accepted, and waits for it.
    /// Later calls on any clone fail with [`StoreError::Closed`]. Dropping the last clone also
    /// stops the work and applies queued writes, but without waiting.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Redis(s) => s.close().await,
        }
    }
}

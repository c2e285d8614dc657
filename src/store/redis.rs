//! The shared store: greylist and duplicate records in Redis, so several MX hosts share one memory.
//!
//! Each record is one Redis string under `cache-key-prefix` + the store key, holding
//! `"<created> <expires> <value>"` (unix seconds, then the check's value, which may contain
//! spaces). Liveness is judged from the `expires` in the value against the caller's `now`, exactly
//! as the SQLite store does, so every host and every test clock agrees; the native expiry only
//! does the garbage collection, and no collector runs here. It is relative (`EX expires -
//! created`, the record's whole lifetime), not absolute: a host clock a little off from the
//! server's then cannot make Redis drop a record its writer still considers live, and a record
//! is never kept much longer than its lifetime. First sight is
//! one Lua script (atomic on the server): a record stored by another host wins, keeping the
//! earlier of the two creation times, so a tuple seen by two MX hosts at the same moment ends up
//! as one record. Keys are listed with `SCAN`, never `KEYS`, so admin commands do not stall a
//! busy server.
//!
//! One multiplexed connection carries every session's calls; each call is bounded by
//! `cache-timeout`. When the connection breaks (or a call times out) it is dropped and a
//! background task reconnects with exponential backoff while calls fail at once, so Redis being
//! down or slow never holds a session longer than `cache-timeout`. Checks fail open on errors;
//! to keep an outage from writing one line per message, the first failed call of an outage is
//! returned as a normal error (and #2024 is logged), the following ones as
//! [`StoreError::Outage`], which checks count rather than log. The same background task ends
//! the outage: once connected, after a quiet period without failures and a `PING` of its own, it
//! logs #2025 with the count. Waiting for quiet (rather than ending at the first successful
//! call) keeps a half-working server, say one refusing writes when full while reads succeed, at
//! one #2024/#2025 pair instead of one per message.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{unix_now, PrefixStats, Record, StoreCounters, StoreError};
use crate::log::{catalog, Logger};
use crate::sync::lock;

/// First sight (KEYS[1]; ARGV: now, encoded record, seconds to keep it, created). A live record
/// (its expiry after `now`) is returned instead of storing ours, its creation time lowered to
/// ours when ours is earlier (two hosts racing, clocks a little apart); a missing, expired or
/// unreadable one is replaced. The native expiry is only garbage collection.
const PUT_IF_ABSENT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local c, e, v = string.match(cur, '^(%-?%d+) (%-?%d+) (.*)$')
  if e and tonumber(e) > tonumber(ARGV[1]) then
    if tonumber(c) > tonumber(ARGV[4]) then
      cur = ARGV[4] .. ' ' .. e .. ' ' .. v
      redis.call('SET', KEYS[1], cur, 'KEEPTTL')
    end
    return cur
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return false
";

/// Deletes KEYS[1] only if the record it holds has expired at ARGV[1] (another host may have
/// rewritten it since it was read); returns 1 when deleted.
const DELETE_IF_EXPIRED: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local e = string.match(cur, '^%-?%d+ (%-?%d+) ')
if e and tonumber(e) <= tonumber(ARGV[1]) then
  return redis.call('DEL', KEYS[1])
end
return 0
";

static PUT_IF_ABSENT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_IF_ABSENT));
static DELETE_IF_EXPIRED_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE_IF_EXPIRED));

/// Keys asked for per `SCAN` step and values per `MGET`, so no single call is long.
const SCAN_BATCH: usize = 1000;
const MGET_BATCH: usize = 500;
/// Reconnection backoff: first wait and ceiling.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Shortest time without a failed call before an outage is declared over.
const QUIET_MIN: Duration = Duration::from_secs(1);

/// How a Redis store is reached; built from the `cache-*` keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://`, `rediss://` (TLS) or `redis+unix://` URL, credentials included.
    pub url: String,
    /// Prepended to every key so deployments can share one server.
    pub key_prefix: String,
    /// Bound on each call (and on each connection attempt).
    pub timeout: Duration,
}

/// Checks a `cache-redis-url` without connecting, for config validation; the message says why
/// it is unusable.
pub fn check_url(url: &str) -> Result<(), String> {
    let client = Client::open(url).map_err(|e| format!("\"{}\": {e}", redact(url)))?;
    if !client.get_connection_info().addr().is_supported() {
        return Err(format!("\"{}\": this address type is not supported", redact(url)));
    }
    Ok(())
}

/// The URL without its password, for logs and `describe`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        // Not a URL: still hide whatever sits between the scheme and an '@'.
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
            _ => url.to_string(),
        },
    }
}

/// An open Redis store: a cheap, clonable handle on one shared connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

/// What the clones share; the reconnect task holds only a weak reference, so dropping the last
/// handle stops it.
struct Inner {
    client: Client,
    shown: String,
    prefix: String,
    timeout: Duration,
    /// The connection in use; `None` while (re)connecting.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Why the last connection attempt failed, for the errors of calls made meanwhile.
    last_error: Mutex<String>,
    wake: Arc<Notify>,
    closed: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
    health: Health,
    /// How long the connection must go without failures before an outage ends.
    quiet: Duration,
    /// The origin of `Health::last_failure_ms`.
    started: Instant,
    log: Option<Logger>,
    submitted: AtomicU64,
    written: AtomicU64,
    write_errors: AtomicU64,
}

/// Outage bookkeeping: whether an outage is going on, how many calls failed in it, since when
/// (unix seconds), and when the last call failed (milliseconds after opening).
#[derive(Default)]
struct Health {
    down: AtomicBool,
    failed: AtomicU64,
    since: AtomicI64,
    last_failure_ms: AtomicU64,
}

/// Whether the connection itself is suspect after this error (rather than one command failing).
fn breaks_connection(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() || e.is_timeout()
}

/// Encodes a record as the stored string.
fn encode(r: &Record) -> String {
    format!("{} {} {}", r.created, r.expires, r.value)
}

/// Decodes a stored string; anything that is not `"<int> <int> <value>"` is `None` (absent), never
/// a panic.
fn decode(raw: &[u8]) -> Option<Record> {
    let text = String::from_utf8_lossy(raw);
    let mut parts = text.splitn(3, ' ');
    let created = parts.next()?.parse().ok()?;
    let expires = parts.next()?.parse().ok()?;
    let value = parts.next()?.to_string();
    Some(Record { value, created, expires })
}

/// The native expiry of a record, in seconds from now: its lifetime (`expires - created`), at
/// least 1 (`EX` refuses 0) and at most about 68 years (Redis refuses times that overflow).
fn keep_for(r: &Record) -> i64 {
    r.expires.saturating_sub(r.created).clamp(1, i64::from(i32::MAX))
}

/// Escapes `SCAN MATCH` glob characters so a prefix is matched literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisStore {
    /// Prepares the client and tries to connect once (bounded by the timeout). A malformed URL is
    /// an error; an unreachable server is not: the store starts disconnected, logs #2024 and keeps
    /// reconnecting in the background while checks fail open, because refusing to start would stop
    /// the MTA's mail flow over a cache. Needs a Tokio runtime.
    pub async fn open(options: RedisOptions, log: Option<Logger>) -> Result<RedisStore, StoreError> {
        let client = Client::open(options.url.as_str()).map_err(|e| StoreError::Open(e.to_string()))?;
        if matches!(client.get_connection_info().addr(), redis::ConnectionAddr::TcpTls { .. }) {
            // rustls needs a process-wide crypto provider; ring is the one compiled in. A second
            // install (another store) fails harmlessly.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            client,
            shown: redact(&options.url),
            prefix: options.key_prefix,
            timeout: options.timeout.max(Duration::from_millis(1)),
            quiet: (options.timeout * 2).max(QUIET_MIN),
            started: Instant::now(),
            conn: Mutex::new(None),
            last_error: Mutex::new("not connected yet".into()),
            wake: wake.clone(),
            closed: AtomicBool::new(false),
            task: Mutex::new(None),
            health: Health::default(),
            log,
            submitted: AtomicU64::new(0),
            written: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        });
        let task = tokio::spawn(reconnect_loop(Arc::downgrade(&inner), wake));
        *lock(&inner.task) = Some(task);
        match inner.connect().await {
            Ok(conn) => *lock(&inner.conn) = Some(conn),
            Err(reason) => {
                *lock(&inner.last_error) = reason.clone();
                let _ = inner.failure(reason);
                inner.wake.notify_one();
            }
        }
        Ok(RedisStore { inner })
    }

    /// The server (password hidden) and key prefix, for logs.
    pub fn describe(&self) -> String {
        format!("redis {} prefix \"{}\"", self.inner.shown, self.inner.prefix)
    }

    /// The URL with its password hidden.
    pub fn url_shown(&self) -> &str {
        &self.inner.shown
    }

    /// Whether a connection is established now (tests and tools).
    pub fn is_connected(&self) -> bool {
        lock(&self.inner.conn).is_some()
    }

    /// See [`super::Store::get`].
    pub async fn get(&self, key: &str, now: i64) -> Result<Option<Record>, StoreError> {
        let k = self.inner.key(key);
        let raw: Option<Vec<u8>> =
            self.inner.call(|mut c| async move { redis::cmd("GET").arg(k).query_async(&mut c).await }).await?;
        Ok(raw.as_deref().and_then(decode).filter(|r| r.is_live(now)))
    }

    /// See [`super::Store::put`]. Resolves once the server has applied it; the key's native
    /// expiry is the record's lifetime.
    pub async fn put(&self, key: &str, record: Record) -> Result<(), StoreError> {
        let k = self.inner.key(key);
        let value = encode(&record);
        let ex = keep_for(&record);
        self.inner
            .write(|mut c| async move { redis::cmd("SET").arg(k).arg(value).arg("EX").arg(ex).query_async::<()>(&mut c).await })
            .await
    }

    /// See [`super::Store::put_if_absent`]: one atomic script on the server.
    pub async fn put_if_absent(&self, key: &str, record: Record, now: i64) -> Result<Option<Record>, StoreError> {
        let k = self.inner.key(key);
        let value = encode(&record);
        let (ex, created) = (keep_for(&record), record.created);
        let found: Option<Vec<u8>> = self
            .inner
            .write(|mut c| async move {
                PUT_IF_ABSENT_SCRIPT.key(k).arg(now).arg(value).arg(ex).arg(created).invoke_async(&mut c).await
            })
            .await?;
        // A winner that cannot be read back (it was garbage and has been replaced: the script
        // returns false then) reads as "ours was stored".
        Ok(found.as_deref().and_then(decode))
    }

    /// See [`super::Store::delete`].
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let k = self.inner.key(key);
        let n: i64 = self.inner.write(|mut c| async move { redis::cmd("DEL").arg(k).query_async(&mut c).await }).await?;
        Ok(n > 0)
    }

    /// See [`super::Store::scan`]: every key under the prefix is listed with `SCAN`, sorted, and
    /// values are fetched in batches until `limit` live records are found.
    pub async fn scan(&self, prefix: &str, now: i64, limit: usize) -> Result<Vec<(String, Record)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut keys = self.keys(prefix).await?;
        keys.sort_unstable();
        let mut out = Vec::new();
        for chunk in keys.chunks(MGET_BATCH) {
            for (key, record) in self.fetch(chunk).await? {
                if record.is_live(now) {
                    out.push((key, record));
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// See [`super::Store::stats`]. Unreadable values are not counted.
    pub async fn stats(&self, prefix: &str, now: i64) -> Result<PrefixStats, StoreError> {
        let keys = self.keys(prefix).await?;
        let mut stats = PrefixStats::default();
        for chunk in keys.chunks(MGET_BATCH) {
            for (key, r) in self.fetch(chunk).await? {
                if r.is_live(now) {
                    stats.live += 1;
                    let code: String = r.value.chars().take(1).collect();
                    if code == "0" && !key.contains('@') {
                        stats.live_passed_without_address += 1;
                    }
                    *stats.live_by_code.entry(code).or_insert(0) += 1;
                } else {
                    stats.expired += 1;
                }
            }
        }
        Ok(stats)
    }

    /// See [`super::Store::expire`]. Redis expires keys by itself; this removes the records that
    /// are dead at `now` but still held by the server (a clock moved forward, a record whose
    /// creation time was kept from an earlier one), each checked again atomically before it goes.
    pub async fn expire(&self, now: i64) -> Result<u64, StoreError> {
        let keys = self.keys("").await?;
        let mut removed = 0;
        for chunk in keys.chunks(MGET_BATCH) {
            for (key, r) in self.fetch(chunk).await? {
                if r.is_live(now) {
                    continue;
                }
                let k = self.inner.key(&key);
                let n: i64 = self
                    .inner
                    .call(|mut c| async move { DELETE_IF_EXPIRED_SCRIPT.key(k).arg(now).invoke_async(&mut c).await })
                    .await?;
                removed += u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(removed)
    }

    /// See [`super::Store::counters`]. Every write is its own commit; there is no queue and no
    /// collector, so those counters stay 0.
    pub fn counters(&self) -> StoreCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreCounters {
            submitted: get(&self.inner.submitted),
            written: get(&self.inner.written),
            commits: get(&self.inner.written),
            write_errors: get(&self.inner.write_errors),
            ..StoreCounters::default()
        }
    }

    /// See [`super::Store::close`]: writes are acknowledged by the server before their call
    /// returns, so there is nothing to flush; the connection and the reconnect task stop.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        lock(&self.inner.conn).take();
        self.inner.wake.notify_one();
        let task = lock(&self.inner.task).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Store keys (prefix removed) under `prefix`, listed with `SCAN` in bounded steps.
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{}*", glob_escape(&self.inner.key(prefix)));
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let p = pattern.clone();
            let (next, batch): (u64, Vec<Vec<u8>>) = self
                .inner
                .call(|mut c| async move {
                    redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(p).arg("COUNT").arg(SCAN_BATCH).query_async(&mut c).await
                })
                .await?;
            for raw in batch {
                // Keys that are not UTF-8 or outside our prefix are not ours.
                if let Ok(k) = String::from_utf8(raw) {
                    if let Some(stripped) = k.strip_prefix(&self.inner.prefix) {
                        keys.push(stripped.to_string());
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        // SCAN may return a key twice (rehashing); each record counts once.
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// The readable records of `keys` (store keys), in the same order; missing or garbled ones are
    /// left out.
    async fn fetch(&self, keys: &[String]) -> Result<Vec<(String, Record)>, StoreError> {
        let full: Vec<String> = keys.iter().map(|k| self.inner.key(k)).collect();
        let values: Vec<Option<Vec<u8>>> =
            self.inner.call(|mut c| async move { redis::cmd("MGET").arg(full).query_async(&mut c).await }).await?;
        Ok(keys.iter().zip(values).filter_map(|(k, v)| v.as_deref().and_then(decode).map(|r| (k.clone(), r))).collect())
    }
}

impl Inner {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// One connection attempt, bounded by the timeout; the error text says why.
    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new().set_connection_timeout(Some(self.timeout)).set_response_timeout(None);
        match tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection_with_config(&config)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err(format!("redis: connecting timed out after {} ms", self.timeout.as_millis())),
        }
    }

    /// Runs one request on the current connection within the timeout, keeping the outage
    /// bookkeeping; never waits for a connection to be made.
    async fn call<T, F, Fut>(&self, request: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let Some(conn) = lock(&self.conn).clone() else {
            let reason = format!("not connected ({})", lock(&self.last_error));
            self.wake.notify_one();
            return Err(self.failure(reason));
        };
        match tokio::time::timeout(self.timeout, request(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if breaks_connection(&e) {
                    self.reconnect();
                }
                Err(self.failure(format!("redis: {e}")))
            }
            Err(_) => {
                // A server that stopped answering: new calls go to a new connection (calls
                // still waiting on the old one finish or time out on their own).
                self.reconnect();
                Err(self.failure(format!("redis: no answer within {} ms", self.timeout.as_millis())))
            }
        }
    }

    /// [`Inner::call`] for writes, counted.
    async fn write<T, F, Fut>(&self, request: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        self.submitted.fetch_add(1, Ordering::Relaxed);
        let r = self.call(request).await;
        match &r {
            Ok(_) => self.written.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.write_errors.fetch_add(1, Ordering::Relaxed),
        };
        r
    }

    /// Drops the connection and asks the background task for a new one.
    fn reconnect(&self) {
        lock(&self.conn).take();
        self.wake.notify_one();
    }

    /// Records a failed call. The first of an outage is returned as a plain error (the check logs
    /// it) and announced with #2024; later ones become [`StoreError::Outage`], counted silently.
    /// The background task is woken in any case: to reconnect, or to watch for the recovery.
    fn failure(&self, reason: String) -> StoreError {
        self.health.failed.fetch_add(1, Ordering::SeqCst);
        self.health.last_failure_ms.store(self.elapsed_ms(), Ordering::SeqCst);
        self.wake.notify_one();
        if self.health.down.swap(true, Ordering::SeqCst) {
            return StoreError::Outage(reason);
        }
        self.health.since.store(unix_now(), Ordering::SeqCst);
        if let Some(log) = &self.log {
            log.emit(&catalog::CACHE_UNAVAILABLE, None, &[&self.shown, &reason]);
        }
        StoreError::Backend(reason)
    }

    /// Ends an outage with #2025 (the count of calls that failed during it).
    fn recovered(&self) {
        if !self.health.down.swap(false, Ordering::SeqCst) {
            return;
        }
        let failed = self.health.failed.swap(0, Ordering::SeqCst);
        let seconds = (unix_now() - self.health.since.load(Ordering::SeqCst)).max(0);
        if let Some(log) = &self.log {
            log.emit(&catalog::CACHE_RECOVERED, None, &[&self.shown, &seconds, &failed]);
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// One background step while something is wrong: connect when there is no connection;
    /// otherwise, during an outage, wait for a quiet period and end it with a `PING`. Returns
    /// whether there is more to do, and how long to wait before trying to connect again.
    async fn repair(&self) -> Option<bool> {
        let Some(conn) = lock(&self.conn).clone() else {
            return match self.connect().await {
                Ok(conn) => {
                    *lock(&self.conn) = Some(conn);
                    Some(true)
                }
                Err(reason) => {
                    *lock(&self.last_error) = reason;
                    None
                }
            };
        };
        if !self.health.down.load(Ordering::SeqCst) {
            return Some(false);
        }
        let mark = self.elapsed_ms();
        tokio::time::sleep(self.quiet).await;
        if self.health.last_failure_ms.load(Ordering::SeqCst) >= mark {
            // Calls are still failing: keep watching.
            return Some(true);
        }
        let mut c = conn;
        match tokio::time::timeout(self.timeout, redis::cmd("PING").query_async::<()>(&mut c)).await {
            Ok(Ok(())) => self.recovered(),
            Ok(Err(e)) => {
                if breaks_connection(&e) {
                    lock(&self.conn).take();
                }
                *lock(&self.last_error) = format!("redis: {e}");
            }
            Err(_) => {
                lock(&self.conn).take();
            }
        }
        Some(true)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the reconnect task notice that nobody needs it any more.
        self.wake.notify_one();
    }
}

/// Reconnects whenever asked, with exponential backoff, and declares outages over; ends when
/// the store is closed or gone.
async fn reconnect_loop(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let mut delay = BACKOFF_FIRST;
        loop {
            let Some(store) = inner.upgrade() else { return };
            if store.closed.load(Ordering::SeqCst) {
                return;
            }
            match store.repair().await {
                Some(false) => break,
                Some(true) => {
                    delay = BACKOFF_FIRST;
                    continue;
                }
                None => {}
            }
            drop(store);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_absent() {
        let r = Record::new("4 abc def", 100, 200);
        assert_eq!(decode(encode(&r).as_bytes()), Some(r));
        assert_eq!(decode(b"100 200 "), Some(Record::new("", 100, 200)));
        assert_eq!(decode(b"-5 -1 0"), Some(Record::new("0", -5, -1)));
        for garbage in [&b""[..], b"4", b"x 1 0", b"1 y 0", b"1 2", b"99999999999999999999 1 0", b"\xff\xfe 1 0"] {
            assert_eq!(decode(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn native_expiry_is_the_lifetime_within_what_redis_accepts() {
        assert_eq!(keep_for(&Record::new("4", 100, 90_100)), 90_000);
        assert_eq!(keep_for(&Record::new("4", 100, 100)), 1);
        assert_eq!(keep_for(&Record::new("4", i64::MAX, i64::MIN)), 1);
        assert_eq!(keep_for(&Record::new("4", i64::MIN, i64::MAX)), i64::from(i32::MAX));
    }

    #[test]
    fn scan_patterns_match_prefixes_literally() {
        assert_eq!(glob_escape("a*b?[c]\\d:"), "a\\*b\\?\\[c\\]\\\\d:");
    }

    #[test]
    fn urls_are_checked_and_passwords_hidden() {
        assert!(check_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(check_url("rediss://user:pw@redis.example:6380/1").is_ok());
        assert!(check_url("redis+unix:///run/redis.sock?db=2").is_ok());
        assert!(check_url("http://127.0.0.1/").is_err());
        assert!(check_url("redis://127.0.0.1:notaport/").is_err());
        assert!(check_url("not a url").is_err());
        assert_eq!(redact("redis://smtpf:secret@10.0.0.5:6379/0"), "redis://smtpf:***@10.0.0.5:6379/0");
        assert!(!check_url("redis://u:secret@h:99999/").unwrap_err().contains("secret"));
    }
}

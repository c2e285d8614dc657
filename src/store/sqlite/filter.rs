//! The key filter: a Bloom filter of every key in the file, so a lookup for a key that was never
//! stored (a new message's duplicate check, a new tuple's first sight) is answered "absent"
//! from memory instead of by a reader thread.
//!
//! A Bloom filter never forgets a key it was given, so "not in the filter" proves "not in the
//! file" as long as every key the file can hold went through [`KeyFilter::insert`]:
//! - it is built from a scan of the file, on a thread of its own; until the first build is done,
//!   and while a rebuild after an outside change runs, it answers "maybe" for everything;
//! - every write made through this process inserts its key when it is queued, before the file
//!   has it; writes queued while a rebuild scans are logged and added to the new filter, and the
//!   scan only starts once every write queued before the log was opened is committed, so no key
//!   falls between the old filter and the new one;
//! - another process's commit (seen by the writer through `data_version`) may add any key, so
//!   the filter is dropped and rebuilt.
//!
//! Deleted and expired keys stay in the filter (they only cost a read); once more keys went in
//! than it was sized for, it is rebuilt at twice the size of what the file then holds.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::cache::HotCache;
use crate::sync::{lock, read, write};

/// Bits per key the filter is sized for: about 1 % false "maybe" answers with 7 probes.
const BITS_PER_KEY: usize = 10;
const PROBES: u64 = 7;
/// Smallest number of keys a filter is sized for.
const MIN_KEYS: usize = 100_000;
/// Longest wait for earlier writes to commit before a rebuild gives up (and is retried later).
const COMMIT_WAIT: Duration = Duration::from_secs(10);

struct Bits {
    words: Box<[AtomicU64]>,
    nbits: u64,
    capacity: usize,
    inserted: AtomicUsize,
}

impl Bits {
    fn new(keys: usize) -> Bits {
        let capacity = keys.max(MIN_KEYS);
        let nwords = (capacity * BITS_PER_KEY).div_ceil(64);
        Bits {
            words: (0..nwords).map(|_| AtomicU64::new(0)).collect(),
            nbits: (nwords * 64) as u64,
            capacity,
            inserted: AtomicUsize::new(0),
        }
    }

    fn positions(&self, hash: u64) -> impl Iterator<Item = u64> + '_ {
        let (h1, h2) = (hash & 0xffff_ffff, (hash >> 32) | 1);
        (0..PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % self.nbits)
    }

    fn set(&self, hash: u64) {
        for p in self.positions(hash) {
            self.words[(p / 64) as usize].fetch_or(1 << (p % 64), Ordering::Relaxed);
        }
        self.inserted.fetch_add(1, Ordering::Relaxed);
    }

    fn has(&self, hash: u64) -> bool {
        self.positions(hash).all(|p| self.words[(p / 64) as usize].load(Ordering::Relaxed) & (1 << (p % 64)) != 0)
    }
}

fn hash_key(key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Shared by the store handle (lookups, inserts) and the writer (outside changes).
pub(super) struct KeyFilter {
    bits: RwLock<Option<Arc<Bits>>>,
    /// Some while a rebuild scans: hashes of the keys queued meanwhile.
    log: Mutex<Option<Vec<u64>>>,
    rebuilding: AtomicBool,
    path: PathBuf,
    busy_timeout: Duration,
    cache: Arc<HotCache>,
    enabled: bool,
}

impl KeyFilter {
    /// A filter for the file at `path`, not built yet (see [`KeyFilter::rebuild`]); `enabled`
    /// false makes it answer "maybe" forever.
    pub(super) fn new(path: PathBuf, busy_timeout: Duration, cache: Arc<HotCache>, enabled: bool) -> KeyFilter {
        KeyFilter {
            bits: RwLock::new(None),
            log: Mutex::new(None),
            rebuilding: AtomicBool::new(false),
            path,
            busy_timeout,
            cache,
            enabled,
        }
    }

    /// False only when `key` is certainly not in the file.
    pub(super) fn may_contain(&self, key: &str) -> bool {
        match &*read(&self.bits) {
            Some(bits) => bits.has(hash_key(key)),
            None => true,
        }
    }

    /// Records a key about to be written. Called before the write is queued.
    pub(super) fn insert(self: &Arc<Self>, key: &str) {
        if !self.enabled {
            return;
        }
        let hash = hash_key(key);
        let full = {
            // The log lock orders this insert with a rebuild's swap (see the module notes).
            let mut log = lock(&self.log);
            if let Some(pending) = log.as_mut() {
                pending.push(hash);
            }
            match &*read(&self.bits) {
                Some(bits) => {
                    bits.set(hash);
                    bits.inserted.load(Ordering::Relaxed) > bits.capacity
                }
                None => false,
            }
        };
        if full {
            self.rebuild();
        }
    }

    /// Forgets everything (another process changed the file) and builds afresh.
    pub(super) fn outside_change(self: &Arc<Self>) {
        if !self.enabled {
            return;
        }
        *write(&self.bits) = None;
        self.rebuild();
    }

    /// Starts a rebuild on a thread of its own unless one is running. Until it is done the
    /// current filter (if any) keeps answering.
    pub(super) fn rebuild(self: &Arc<Self>) {
        if !self.enabled || self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("store-filter".into()).spawn(move || {
            super::background_priority();
            let _ = me.build();
            me.rebuilding.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.rebuilding.store(false, Ordering::Release);
        }
    }

    fn build(&self) -> Result<(), String> {
        *lock(&self.log) = Some(Vec::new());
        let built = self.scan();
        let mut log = lock(&self.log);
        let logged = log.take().unwrap_or_default();
        match built {
            Ok(bits) => {
                for hash in logged {
                    bits.set(hash);
                }
                *write(&self.bits) = Some(Arc::new(bits));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Waits for the writes queued before the log opened, then reads every key.
    fn scan(&self) -> Result<Bits, String> {
        let queued = self.cache.queued_seq();
        let started = Instant::now();
        while self.cache.committed_seq() < queued {
            if started.elapsed() > COMMIT_WAIT {
                return Err("earlier writes are not committed".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let conn = super::connect(&self.path, false, self.busy_timeout).map_err(|e| e.to_string())?;
        let count: i64 = conn.query_row("SELECT count(*) FROM mcc", [], |r| r.get(0)).map_err(|e| e.to_string())?;
        let bits = Bits::new(usize::try_from(count).unwrap_or(0).saturating_mul(2));
        let mut stmt = conn.prepare("SELECT k FROM mcc").map_err(|e| e.to_string())?;
        let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
        while let Some(row) = rows.next().map_err(|e| e.to_string())? {
            if let Ok(key) = super::text_at(row, 0) {
                bits.set(hash_key(&key));
            }
        }
        Ok(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_keys_are_always_found_and_few_others_are() {
        let bits = Bits::new(10_000);
        for i in 0..10_000 {
            bits.set(hash_key(&format!("grey:key{i}")));
        }
        assert!((0..10_000).all(|i| bits.has(hash_key(&format!("grey:key{i}")))));
        let false_maybes = (0..10_000).filter(|i| bits.has(hash_key(&format!("dupmsg:other{i}")))).count();
        assert!(false_maybes < 300, "{false_maybes} false positives in 10000");
    }
}

//! State shared by all sessions of one daemon: the policy in force, the logger and counters.
//!
//! Sessions take a snapshot of the policy when they start, so a reload never changes the rules in
//! the middle of an SMTP session, and the next session sees the new ones.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::ids::unix_now;
use crate::log::Logger;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::store::Store;
use crate::sync::{lock, read, write};

/// What every session of the daemon shares.
pub struct Shared {
    /// Where lines go.
    pub log: Logger,
    /// The counters `metrics-listen` serves; they live as long as the daemon, across reloads.
    pub metrics: Arc<Metrics>,
    policy: RwLock<Arc<Policy>>,
    /// Milter connections open now (`cn=`).
    pub active: AtomicUsize,
    /// Runtime worker threads (`th=`).
    pub workers: usize,
    second: AtomicI64,
    in_second: AtomicU32,
    /// None until opened (or while a file that could not be opened is awaited).
    store: RwLock<Option<Store>>,
    clock_offset: AtomicI64,
    /// Store errors: the second one was last logged, how many were not logged since, from when.
    store_errors: Mutex<(i64, u64, i64)>,
}

impl Shared {
    /// Builds the shared state for a config.
    pub fn new(policy: Policy, log: Logger, workers: usize) -> Arc<Shared> {
        let metrics = Arc::new(Metrics::new());
        metrics.watch_log(&log);
        Arc::new(Shared {
            log,
            metrics,
            policy: RwLock::new(Arc::new(policy)),
            active: AtomicUsize::new(0),
            workers,
            second: AtomicI64::new(0),
            in_second: AtomicU32::new(0),
            store: RwLock::new(None),
            clock_offset: AtomicI64::new(0),
            store_errors: Mutex::new((0, 0, 0)),
        })
    }

    /// The policy (config, access-map, lists, resolver) in force now.
    pub fn policy(&self) -> Arc<Policy> {
        read(&self.policy).clone()
    }

    /// Puts a new policy in force for sessions that start from now on.
    pub fn set_policy(&self, policy: Policy) {
        self.log.set_verbose(policy.config.verbose.clone());
        *write(&self.policy) = Arc::new(policy);
    }

    /// Hands an opened store to the sessions (at start-up, or when the file was reopened);
    /// returns the one it replaces, for the caller to close.
    pub fn set_store(&self, store: Store) -> Option<Store> {
        self.metrics.watch_store(Some(store.clone()));
        write(&self.store).replace(store)
    }

    /// Withdraws the store in force (its file was replaced): new sessions run without one until
    /// [`Shared::set_store`] hands them the reopened file.
    pub fn take_store(&self) -> Option<Store> {
        self.metrics.watch_store(None);
        write(&self.store).take()
    }

    /// The state store in force, once opened (a cheap handle: clones share one store).
    pub fn store(&self) -> Option<Store> {
        read(&self.store).clone()
    }

    /// Unix seconds on the daemon's clock: the system clock plus an offset that tests move to
    /// step through greylisting periods without waiting.
    pub fn now(&self) -> i64 {
        unix_now() + self.clock_offset.load(Ordering::Relaxed)
    }

    /// Moves the daemon's clock forward (tests, and `grey` tooling dry runs).
    pub fn advance_clock(&self, seconds: i64) {
        self.clock_offset.fetch_add(seconds, Ordering::Relaxed);
    }

    /// Decides whether a store error may be logged now: None while one was logged this second
    /// (the error is counted instead); otherwise Some, holding the count of errors not logged and
    /// the seconds they span, when there were any.
    pub fn store_error_gate(&self) -> Option<Option<(u64, i64)>> {
        let now = unix_now();
        let mut gate = lock(&self.store_errors);
        let (last, suppressed, since) = *gate;
        if last == now {
            *gate = (last, suppressed + 1, if suppressed == 0 { now } else { since });
            return None;
        }
        *gate = (now, 0, now);
        Some((suppressed > 0).then(|| (suppressed, (now - since).max(1))))
    }

    /// Counts a new connection; returns the connections in the current second (`cs=`).
    pub fn count_connection(&self) -> u32 {
        let now = unix_now();
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.in_second.store(0, Ordering::Relaxed);
        }
        self.in_second.fetch_add(1, Ordering::Relaxed) + 1
    }
}

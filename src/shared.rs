//! State shared by all sessions of one daemon: the config in force, the logger and counters.
//!
//! Sessions take a snapshot of the config when they start, so a reload never changes the rules in
//! the middle of an SMTP session, and the next session sees the new ones.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::ids::unix_now;
use crate::log::Logger;

/// What every session of the daemon shares.
pub struct Shared {
    /// Where lines go.
    pub log: Logger,
    config: RwLock<Arc<Config>>,
    /// Milter connections open now (`cn=`).
    pub active: AtomicUsize,
    /// Runtime worker threads (`th=`).
    pub workers: usize,
    second: AtomicI64,
    in_second: AtomicU32,
}

impl Shared {
    /// Builds the shared state for a config.
    pub fn new(config: Config, log: Logger, workers: usize) -> Arc<Shared> {
        Arc::new(Shared {
            log,
            config: RwLock::new(Arc::new(config)),
            active: AtomicUsize::new(0),
            workers,
            second: AtomicI64::new(0),
            in_second: AtomicU32::new(0),
        })
    }

    /// The config in force now.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts a new config in force for sessions that start from now on.
    pub fn set_config(&self, config: Config) {
        self.log.set_verbose(config.verbose.clone());
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
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

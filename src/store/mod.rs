//! Persistent state: greylist and duplicate-message records with expiry.
//!
//! The embedded default is one SQLite file (`cache-path`) in WAL mode with smtpf's layout: one
//! table of key, value, expiry and creation time, keys prefixed by the check that owns them
//! (`grey:`, `dupmsg:`). At start-up the file is opened (created if missing) so that a wrong path or
//! permission stops the daemon with a clear error instead of failing mail later.

pub mod sqlite;

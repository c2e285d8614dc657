//! The SQLite store file: opening, schema, and basic record access.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// An open SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    conn: Connection,
}

/// The schema: smtpf's `mcc` layout (k key, v value, e expiry epoch, c creation epoch).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mcc (k TEXT PRIMARY KEY, v TEXT NOT NULL, e INTEGER NOT NULL, c INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS mcc_expire ON mcc(e);
";

impl SqliteStore {
    /// Opens or creates the file, switches it to WAL and makes sure the schema exists. Creates a
    /// missing parent directory.
    pub fn open(path: &Path) -> Result<SqliteStore, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let conn = Connection::open(path).map_err(|e| e.to_string())?;
        conn.busy_timeout(std::time::Duration::from_secs(2)).map_err(|e| e.to_string())?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(|e| e.to_string())?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("cannot switch to WAL mode (got {mode})"));
        }
        conn.execute_batch("PRAGMA synchronous=NORMAL;").map_err(|e| e.to_string())?;
        conn.execute_batch(SCHEMA).map_err(|e| e.to_string())?;
        // A file that is not a database, or a corrupt one, fails here rather than at the first message.
        let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(|e| e.to_string())?;
        if ok != "ok" {
            return Err(format!("integrity check failed: {ok}"));
        }
        Ok(SqliteStore { path: path.to_path_buf(), conn })
    }

    /// The file in use.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of records (for tools and tests).
    pub fn count(&self) -> Result<u64, String> {
        self.conn.query_row("SELECT count(*) FROM mcc", [], |r| r.get::<_, i64>(0)).map(|n| n as u64).map_err(|e| e.to_string())
    }
}

/// The SQLite library version, for the start-up line #606.
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_creates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/cache.sq3");
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.count().unwrap(), 0);
        drop(s);
        assert!(SqliteStore::open(&path).is_ok());
    }

    #[test]
    fn garbage_file_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sq3");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let e = SqliteStore::open(&path).err().unwrap();
        assert!(e.contains("not a database"), "{e}");
    }
}

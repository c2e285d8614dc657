//! The state store against real SQLite files: record semantics greylisting and duplicate-message
//! detection rely on, garbage collection, group commit under concurrency, refusal instead of
//! blocking when overloaded, durability across reopen, and clear errors for unusable files.
//!
//! Tests that need the writer to be stuck mid-transaction hold the database's write lock from a
//! second connection, as an operator's `sqlite3` session would; nothing depends on timing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use smtpf_milter::store::{Record, SqliteOptions, Store, StoreError};

const NOW: i64 = 1_700_000_000;
/// Upper bound for waiting on background work; reaching it means the test failed, not "slow".
const PATIENCE: Duration = Duration::from_secs(60);

fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.sq3");
    (dir, path)
}

fn open(path: &Path) -> Store {
    Store::open_sqlite(path, Duration::from_secs(300)).expect("open store")
}

/// Options for tests that hold the write lock from outside: the writer waits for it instead of
/// giving up.
fn patient() -> SqliteOptions {
    SqliteOptions { busy_timeout: PATIENCE, ..SqliteOptions::default() }
}

fn rec(value: &str, created: i64, expires: i64) -> Record {
    Record::new(value, created, expires)
}

/// Takes the database write lock from a second connection, as another process would.
fn hold_write_lock(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("second connection");
    conn.execute_batch("BEGIN IMMEDIATE").expect("write lock");
    conn
}

fn release(conn: Connection) {
    conn.execute_batch("COMMIT").expect("release write lock");
}

/// Waits until `cond` holds, failing the test after [`PATIENCE`].
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn live_count(store: &Store, prefix: &str) -> u64 {
    store.stats(prefix, NOW).await.expect("stats").live
}

#[tokio::test]
async fn get_put_delete_round_trip() {
    let (_dir, path) = temp();
    let store = open(&path);
    assert_eq!(store.get("grey:a", NOW).await, Ok(None));
    store.put("grey:a", rec("4", NOW, NOW + 60)).await.expect("put");
    assert_eq!(store.get("grey:a", NOW).await, Ok(Some(rec("4", NOW, NOW + 60))));
    // INSERT OR REPLACE: everything, the creation time included, comes from the new record.
    store.put("grey:a", rec("0", NOW - 100, NOW + 600)).await.expect("replace");
    assert_eq!(store.get("grey:a", NOW).await, Ok(Some(rec("0", NOW - 100, NOW + 600))));
    assert_eq!(store.delete("grey:a").await, Ok(true));
    assert_eq!(store.delete("grey:a").await, Ok(false));
    assert_eq!(store.get("grey:a", NOW).await, Ok(None));
    // Keys and values are taken literally, whatever they contain.
    let odd = "dupmsg:0123abcd,Üser@Example.ORG 'x' \"y\" %_\0end";
    store.put(odd, rec("6 sid-1\nline", NOW, NOW + 1)).await.expect("odd put");
    assert_eq!(store.get(odd, NOW).await, Ok(Some(rec("6 sid-1\nline", NOW, NOW + 1))));
    store.close().await;
}

#[tokio::test]
async fn expired_record_reads_as_absent() {
    let (_dir, path) = temp();
    let store = open(&path);
    store.put("grey:x", rec("4", NOW - 10, NOW)).await.expect("put");
    // Live while expires > now.
    assert!(store.get("grey:x", NOW - 1).await.expect("get").is_some());
    assert_eq!(store.get("grey:x", NOW).await, Ok(None));
    assert_eq!(store.get("grey:x", NOW + 1).await, Ok(None));
    // Still a row until collected.
    let stats = store.stats("grey:", NOW).await.expect("stats");
    assert_eq!((stats.live, stats.expired), (0, 1));
    let r = rec("4", NOW - 10, NOW);
    assert!(!r.is_live(NOW) && r.is_live(NOW - 1));
    assert_eq!((r.ttl(NOW - 4), r.ttl(NOW + 5)), (4, 0));
}

#[tokio::test]
async fn put_if_absent_inserts_only_over_nothing_or_expired() {
    let (_dir, path) = temp();
    let store = open(&path);
    let first = rec("4", NOW, NOW + 3600);
    assert_eq!(store.put_if_absent("grey:t", first.clone(), NOW).await, Ok(None));
    // A live record wins and is returned unchanged.
    let second = rec("4", NOW + 5, NOW + 3605);
    assert_eq!(store.put_if_absent("grey:t", second, NOW + 5).await, Ok(Some(first.clone())));
    assert_eq!(store.get("grey:t", NOW + 5).await, Ok(Some(first)));
    // Once expired, the old record does not count.
    let later = rec("4", NOW + 4000, NOW + 8000);
    assert_eq!(store.put_if_absent("grey:t", later.clone(), NOW + 4000).await, Ok(None));
    assert_eq!(store.get("grey:t", NOW + 4000).await, Ok(Some(later)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_first_sights_agree_on_one_record() {
    let (_dir, path) = temp();
    let store = open(&path);
    let mut tasks = Vec::new();
    for i in 0..64i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { (i, store.put_if_absent("grey:race", rec("4", NOW + i, NOW + 3600), NOW).await) }));
    }
    let mut winners = Vec::new();
    let mut seen = Vec::new();
    for t in tasks {
        let (i, r) = t.await.expect("task");
        match r.expect("put_if_absent") {
            None => winners.push(i),
            Some(existing) => seen.push(existing),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one session creates the record");
    let stored = store.get("grey:race", NOW).await.expect("get").expect("record");
    assert_eq!(stored.created, NOW + winners[0]);
    assert!(seen.iter().all(|r| *r == stored), "every loser sees the winner's record");
}

#[tokio::test]
async fn scan_returns_live_keys_with_the_prefix_in_order() {
    let (_dir, path) = temp();
    let store = open(&path);
    for (k, e) in [
        ("grey:c", NOW + 10),
        ("grey:a", NOW + 10),
        ("grey:b", NOW - 1),
        ("grey:ab", NOW + 10),
        ("grey;", NOW + 10),
        ("grey", NOW + 10),
        ("dupmsg:x", NOW + 10),
        ("GREY:z", NOW + 10),
    ] {
        store.put(k, rec("0", NOW, e)).await.expect("put");
    }
    let keys = |v: Vec<(String, Record)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(keys(store.scan("grey:", NOW, 100).await.expect("scan")), ["grey:a", "grey:ab", "grey:c"]);
    assert_eq!(keys(store.scan("grey:", NOW, 2).await.expect("scan")), ["grey:a", "grey:ab"]);
    assert!(store.scan("grey:", NOW, 0).await.expect("scan").is_empty());
    assert_eq!(keys(store.scan("dupmsg:", NOW, 100).await.expect("scan")), ["dupmsg:x"]);
    assert_eq!(store.scan("", NOW, 100).await.expect("scan").len(), 7);
    let (k, r) = store.scan("grey:c", NOW, 1).await.expect("scan").remove(0);
    assert_eq!((k.as_str(), r), ("grey:c", rec("0", NOW, NOW + 10)));
    // Prefixes ending in the highest code point have no simple upper bound.
    store.put("x\u{10FFFF}1", rec("0", NOW, NOW + 10)).await.expect("put");
    store.put("y", rec("0", NOW, NOW + 10)).await.expect("put");
    assert_eq!(keys(store.scan("x\u{10FFFF}", NOW, 100).await.expect("scan")), ["x\u{10FFFF}1"]);
}

#[tokio::test]
async fn stats_count_live_records_by_code() {
    let (_dir, path) = temp();
    let store = open(&path);
    store.put("grey:1", rec("4", NOW, NOW + 10)).await.expect("put");
    store.put("grey:2", rec("4 abc def", NOW, NOW + 10)).await.expect("put");
    store.put("grey:3", rec("0", NOW, NOW + 10)).await.expect("put");
    store.put("grey:4", rec("0", NOW, NOW - 10)).await.expect("put");
    store.put("grey:5", rec("", NOW, NOW + 10)).await.expect("put");
    store.put("dupmsg:1", rec("6 sid", NOW, NOW + 10)).await.expect("put");
    let s = store.stats("grey:", NOW).await.expect("stats");
    assert_eq!((s.live, s.expired), (4, 1));
    let codes: Vec<(&str, u64)> = s.live_by_code.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(codes, [("", 1), ("0", 1), ("4", 2)]);
    assert_eq!(live_count(&store, "").await, 5);
}

#[tokio::test]
async fn expire_removes_exactly_the_expired_rows() {
    let (_dir, path) = temp();
    let store = open(&path);
    for (k, e) in [("a", 10), ("b", 20), ("c", 30), ("d", 20)] {
        store.put(k, rec("4", 0, e)).await.expect("put");
    }
    assert_eq!(store.expire(20).await, Ok(3));
    assert_eq!(store.expire(20).await, Ok(0));
    let left = store.scan("", 0, 10).await.expect("scan");
    assert_eq!(left, vec![("c".to_string(), rec("4", 0, 30))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_expiry_runs_in_steps_and_counts_everything() {
    let (_dir, path) = temp();
    let store = Store::open_sqlite_with(&path, SqliteOptions { gc_batch: 100, ..SqliteOptions::default() }).expect("open");
    let mut tasks = Vec::new();
    for i in 0..1050 {
        let store = store.clone();
        let e = if i % 3 == 0 { NOW + 10 } else { NOW - 10 };
        tasks.push(tokio::spawn(async move { store.put(&format!("grey:{i:05}"), rec("4", 0, e)).await }));
    }
    for t in tasks {
        t.await.expect("task").expect("put");
    }
    assert_eq!(store.expire(NOW).await, Ok(700));
    let s = store.stats("", NOW).await.expect("stats");
    assert_eq!((s.live, s.expired), (350, 0));
}

fn pinned_clock() -> i64 {
    NOW
}

#[tokio::test]
async fn garbage_collection_runs_by_itself() {
    let (_dir, path) = temp();
    let options = SqliteOptions { gc_interval: Duration::from_millis(20), clock: pinned_clock, ..SqliteOptions::default() };
    let store = Store::open_sqlite_with(&path, options).expect("open");
    store.put("grey:old", rec("4", 0, NOW - 1)).await.expect("put");
    store.put("grey:edge", rec("4", 0, NOW)).await.expect("put");
    store.put("grey:keep", rec("4", 0, NOW + 1)).await.expect("put");
    // A pass that finishes after the writes were acknowledged has seen them.
    let runs = store.counters().gc_runs;
    wait_for("a garbage-collection pass", || store.counters().gc_runs > runs).await;
    let left = store.scan("", 0, 10).await.expect("scan");
    assert_eq!(left, vec![("grey:keep".to_string(), rec("4", 0, NOW + 1))]);
    assert!(store.counters().gc_deleted >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn ten_thousand_concurrent_puts_all_land() {
    let (_dir, path) = temp();
    let store = Store::open_sqlite_with(&path, SqliteOptions { write_queue: 10_000, ..SqliteOptions::default() }).expect("open");
    let mut tasks = Vec::new();
    for i in 0..10_000 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.put(&format!("grey:{i}"), rec(&format!("4 {i}"), NOW, NOW + 60)).await }));
    }
    for t in tasks {
        t.await.expect("task").expect("put");
    }
    assert_eq!(live_count(&store, "grey:").await, 10_000);
    assert_eq!(store.get("grey:9999", NOW).await, Ok(Some(rec("4 9999", NOW, NOW + 60))));
    let c = store.counters();
    assert_eq!((c.submitted, c.written, c.write_errors, c.refused_busy), (10_000, 10_000, 0, 0));
    store.close().await;
    // And from a fresh connection, independently of the store.
    let conn = Connection::open(&path).expect("reopen");
    let n: i64 = conn.query_row("SELECT count(*) FROM mcc", [], |r| r.get(0)).expect("count");
    assert_eq!(n, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_writes_are_committed_in_groups() {
    let (_dir, path) = temp();
    let store = Store::open_sqlite_with(&path, patient()).expect("open");
    let lock = hold_write_lock(&path);
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.put(&format!("k{i}"), rec("0", NOW, NOW + 60)).await }));
    }
    wait_for("all writes queued", || store.counters().submitted == 1000).await;
    release(lock);
    for t in tasks {
        t.await.expect("task").expect("put");
    }
    let c = store.counters();
    assert_eq!(c.written, 1000);
    // The first group was stuck on the lock; the other 999 or fewer were queued by then and go in
    // groups of at most 256: no more than 1 + 4 commits.
    assert!(c.commits <= 5, "{c:?}");
    assert_eq!(live_count(&store, "").await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_proceed_while_writes_wait() {
    let (_dir, path) = temp();
    let store = Store::open_sqlite_with(&path, patient()).expect("open");
    for i in 0..100 {
        store.put(&format!("grey:{i:03}"), rec(&format!("0 {i}"), NOW, NOW + 60)).await.expect("put");
    }
    let lock = hold_write_lock(&path);
    let mut writes = Vec::new();
    for i in 0..500 {
        let store = store.clone();
        writes.push(tokio::spawn(async move { store.put(&format!("new:{i}"), rec("4", NOW, NOW + 60)).await }));
    }
    wait_for("the writes to be queued", || store.counters().submitted == 600).await;
    // The writer is stuck inside a group; readers are not.
    for i in 0..100 {
        let got = store.get(&format!("grey:{i:03}"), NOW).await.expect("get");
        assert_eq!(got, Some(rec(&format!("0 {i}"), NOW, NOW + 60)));
    }
    assert_eq!(store.scan("grey:", NOW, 1000).await.expect("scan").len(), 100);
    assert_eq!(live_count(&store, "new:").await, 0, "nothing committed yet");
    assert_eq!(store.get("new:0", NOW).await, Ok(Some(rec("4", NOW, NOW + 60))), "queued writes read back at once");
    assert!(writes.iter().all(|w| !w.is_finished()), "no write acknowledged before its commit");
    release(lock);
    for w in writes {
        w.await.expect("task").expect("put");
    }
    assert_eq!(live_count(&store, "new:").await, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_write_queue_refuses_at_once() {
    let (_dir, path) = temp();
    let store = Store::open_sqlite_with(&path, SqliteOptions { write_queue: 4, ..patient() }).expect("open");
    let lock = hold_write_lock(&path);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.put(&format!("k{i}"), rec("0", NOW, NOW + 60)).await }));
    }
    // Refusals arrive while the writer is still stuck: nothing waited for queue space.
    wait_for("every request accepted or refused", || {
        let c = store.counters();
        c.submitted + c.refused_busy == 64
    })
    .await;
    assert!(store.counters().refused_busy > 0);
    release(lock);
    let (mut ok, mut busy) = (0u64, 0u64);
    for t in tasks {
        match t.await.expect("task") {
            Ok(()) => ok += 1,
            Err(StoreError::Busy) => busy += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok + busy, 64);
    assert!(ok >= 1 && busy >= 1);
    assert_eq!(live_count(&store, "").await, ok);
    assert_eq!(StoreError::Busy.to_string(), "store busy: request queue full");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_failing_write_does_not_fail_its_group() {
    let (_dir, path) = temp();
    let store = Store::open_sqlite_with(&path, patient()).expect("open");
    // A trigger stands in for any per-row failure.
    let lock = hold_write_lock(&path);
    lock.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON mcc WHEN NEW.k = 'bad' BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END;",
    )
    .expect("trigger");
    let mut tasks = Vec::new();
    for k in ["a", "b", "bad", "c", "d"] {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { (k, store.put(k, rec("0", NOW, NOW + 60)).await) }));
    }
    wait_for("the writes to be queued", || store.counters().submitted == 5).await;
    release(lock);
    for t in tasks {
        let (k, r) = t.await.expect("task");
        if k == "bad" {
            let e = r.expect_err("refused");
            assert!(matches!(&e, StoreError::Backend(m) if m.contains("refused by trigger")), "{e:?}");
        } else {
            r.expect("neighbour lands");
        }
    }
    assert_eq!(live_count(&store, "").await, 4);
    assert_eq!(store.counters().write_errors, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_after_an_acknowledged_write_sees_it() {
    let (_dir, path) = temp();
    let store = open(&path);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let key = format!("grey:{t}:{i}");
                store.put(&key, rec(&i.to_string(), NOW, NOW + 60)).await.expect("put");
                assert_eq!(store.get(&key, NOW).await.expect("get").map(|r| r.value), Some(i.to_string()));
                assert!(store.delete(&key).await.expect("delete"));
                assert_eq!(store.get(&key, NOW).await, Ok(None));
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

#[tokio::test]
async fn records_survive_drop_and_reopen() {
    let (_dir, path) = temp();
    {
        let store = open(&path);
        for i in 0..500 {
            store.put(&format!("dupmsg:{i}"), rec(&format!("6 sid{i}"), NOW + i, NOW + 90_000)).await.expect("put");
        }
        assert_eq!(store.put_if_absent("grey:t", rec("4", NOW, NOW + 100), NOW).await, Ok(None));
        assert!(store.delete("dupmsg:0").await.expect("delete"));
        // Dropped without close: acknowledged writes are already committed.
    }
    let store = open(&path);
    assert_eq!(live_count(&store, "dupmsg:").await, 499);
    assert_eq!(store.get("dupmsg:7", NOW).await, Ok(Some(rec("6 sid7", NOW + 7, NOW + 90_000))));
    assert_eq!(store.get("grey:t", NOW).await, Ok(Some(rec("4", NOW, NOW + 100))));
    assert_eq!(store.get("dupmsg:0", NOW).await, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_applies_queued_writes_then_refuses() {
    let (_dir, path) = temp();
    let store = Store::open_sqlite_with(&path, patient()).expect("open");
    let lock = hold_write_lock(&path);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.put(&format!("k{i}"), rec("0", NOW, NOW + 60)).await }));
    }
    wait_for("the writes to be queued", || store.counters().submitted == 300).await;
    let closing = {
        let store = store.clone();
        tokio::spawn(async move { store.close().await })
    };
    release(lock);
    closing.await.expect("close");
    for t in tasks {
        t.await.expect("task").expect("queued write applied before stopping");
    }
    assert_eq!(store.put("late", rec("0", NOW, NOW + 60)).await, Err(StoreError::Closed));
    assert_eq!(store.get("k1", NOW).await, Err(StoreError::Closed));
    assert_eq!(store.expire(NOW).await, Err(StoreError::Closed));
    store.close().await; // twice is fine
    let reopened = open(&path);
    assert_eq!(live_count(&reopened, "").await, 300);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_at_open() {
    let (_dir, path) = temp();
    std::fs::write(&path, vec![0x42u8; 8192]).expect("write");
    let e = Store::open_sqlite(&path, Duration::from_secs(300)).expect_err("refused");
    assert!(matches!(&e, StoreError::Open(m) if m.contains("not a database")), "{e:?}");
}

#[tokio::test]
async fn a_corrupt_database_is_refused_at_open() {
    let (_dir, path) = temp();
    let store = open(&path);
    for i in 0..3000 {
        store.put(&format!("grey:{i:06}"), rec("4 0123456789abcdef0123456789abcdef", NOW, NOW + 60)).await.expect("put");
    }
    store.close().await;
    drop(store);
    let mut bytes = std::fs::read(&path).expect("read");
    assert!(bytes.len() > 3 * 4096, "the table spans several pages");
    // Keep the header page (the schema) readable; smash the table and index pages.
    let end = bytes.len();
    bytes[4096..end].iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8);
    std::fs::write(&path, bytes).expect("write");
    let e = Store::open_sqlite(&path, Duration::from_secs(300)).expect_err("refused");
    assert!(matches!(&e, StoreError::Open(m) if !m.is_empty()), "{e:?}");
}

#[test]
fn unusable_paths_are_errors_not_panics() {
    let (dir, _) = temp();
    // The parent "directory" is a regular file.
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").expect("write");
    let e = Store::open_sqlite(&file.join("cache.sq3"), Duration::from_secs(300)).expect_err("refused");
    // The filesystem's state, not the file's content: the daemon waits it out (fail open).
    assert!(matches!(&e, StoreError::Unavailable(m) if m.contains("is not a directory")), "{e:?}");
    // A missing directory below a regular file cannot be created.
    let e = Store::open_sqlite(&file.join("sub/cache.sq3"), Duration::from_secs(300)).expect_err("refused");
    assert!(matches!(&e, StoreError::Unavailable(m) if m.contains("cannot create directory")), "{e:?}");
    // The path is a directory.
    let e = Store::open_sqlite(dir.path(), Duration::from_secs(300)).expect_err("refused");
    assert!(matches!(e, StoreError::Open(_) | StoreError::Unavailable(_)), "{e:?}");
}

#[test]
fn a_missing_parent_directory_is_created() {
    let (dir, _) = temp();
    let path = dir.path().join("a/b/cache.sq3");
    let store = Store::open_sqlite(&path, Duration::from_secs(300)).expect("open");
    assert!(path.exists());
    assert!(store.describe().starts_with("sqlite ") && store.describe().ends_with("cache.sq3"));
}

#[tokio::test]
async fn read_only_file_or_directory_is_refused_at_open() {
    use std::os::unix::fs::PermissionsExt;
    if nix::unistd::geteuid().is_root() {
        eprintln!("skipped: permissions do not apply to root");
        return;
    }
    let set = |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    let (dir, path) = temp();
    Store::open_sqlite(&path, Duration::from_secs(300)).expect("create").close().await;
    set(&path, 0o444);
    let e = Store::open_sqlite(&path, Duration::from_secs(300)).expect_err("read-only file refused");
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    set(&path, 0o644);
    for leftover in ["cache.sq3-wal", "cache.sq3-shm"] {
        let _ = std::fs::remove_file(dir.path().join(leftover));
    }
    set(dir.path(), 0o555);
    let r = Store::open_sqlite(&path, Duration::from_secs(300));
    set(dir.path(), 0o755);
    let e = r.expect_err("read-only directory refused");
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
}

#[tokio::test]
async fn a_file_in_smtpf_layout_is_read_leniently() {
    let (_dir, path) = temp();
    {
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch(
            "CREATE TABLE mcc( k TEXT PRIMARY KEY, v TEXT, e INTEGER, c INTEGER DEFAULT (strftime('%s','now')) );
             CREATE INDEX mcc_expire ON mcc(e);
             INSERT INTO mcc (k, v, e, c) VALUES ('grey:null', NULL, 1800000000, 1700000000);
             INSERT INTO mcc (k, v, e, c) VALUES ('grey:blob', x'34ff', 1800000000, 1700000000);",
        )
        .expect("smtpf layout");
    }
    let store = open(&path);
    assert_eq!(store.get("grey:null", NOW).await, Ok(Some(rec("", 1_700_000_000, 1_800_000_000))));
    assert_eq!(store.get("grey:blob", NOW).await.expect("get").map(|r| r.value), Some("4\u{FFFD}".to_string()));
    store.put("grey:new", rec("0", NOW, NOW + 1)).await.expect("put");
    assert_eq!(live_count(&store, "grey:").await, 3);
}

#[test]
fn errors_read_as_short_reasons() {
    assert_eq!(StoreError::Closed.to_string(), "store closed");
    assert_eq!(StoreError::Backend("disk I/O error".into()).to_string(), "disk I/O error");
    assert_eq!(StoreError::Open("file is not a database".into()).to_string(), "file is not a database");
    let _: Arc<dyn std::error::Error + Send + Sync> = Arc::new(StoreError::Busy);
    // Sessions on any worker share one handle.
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Store>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_writes_read_back_at_once_and_reach_the_file() {
    let (_dir, path) = temp();
    let store = open(&path);
    for i in 0..200 {
        store.put_detached(&format!("dupmsg:{i}"), rec("1 sid", NOW, NOW + 60)).expect("queued");
    }
    // This process sees them before any commit...
    assert_eq!(store.get("dupmsg:199", NOW).await, Ok(Some(rec("1 sid", NOW, NOW + 60))));
    // ...and the file gets them soon, without anyone waiting on them.
    let start = Instant::now();
    while live_count(&store, "dupmsg:").await < 200 {
        assert!(start.elapsed() < PATIENCE, "detached writes never committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A few groups, not one commit per write.
    assert!(store.counters().commits < 50, "{:?}", store.counters());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_applies_detached_writes() {
    let (_dir, path) = temp();
    let store = open(&path);
    for i in 0..50 {
        store.put_detached(&format!("dupmsg:{i}"), rec("1 sid", NOW, NOW + 60)).expect("queued");
    }
    store.close().await;
    assert_eq!(store.put_detached("late", rec("0", NOW, NOW + 60)), Err(StoreError::Closed));
    let reopened = open(&path);
    assert_eq!(live_count(&reopened, "dupmsg:").await, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_by_another_process_are_seen_despite_the_memory_cache() {
    let (_dir, path) = temp();
    let store = open(&path);
    store.put("grey:192.0.2.1,a@example.org,b@example.net", rec("4", NOW, NOW + 3600)).await.expect("put");
    store.put("grey:gone", rec("0", NOW, NOW + 3600)).await.expect("put");
    // Remembered in memory now.
    assert_eq!(
        store.get("grey:192.0.2.1,a@example.org,b@example.net", NOW).await.expect("get").map(|r| r.value),
        Some("4".into())
    );
    assert!(store.get("grey:absent", NOW).await.expect("get").is_none());
    // An operator's tool (`grey allow`, sqlite3) changes the file.
    let other = Connection::open(&path).expect("second connection");
    other
        .execute_batch(
            "UPDATE mcc SET v = '0' WHERE k = 'grey:192.0.2.1,a@example.org,b@example.net';
             DELETE FROM mcc WHERE k = 'grey:gone';
             INSERT INTO mcc (k, v, e, c) VALUES ('grey:absent', '0', 1700003600, 1700000000);",
        )
        .expect("outside change");
    let start = Instant::now();
    loop {
        let allowed = store.get("grey:192.0.2.1,a@example.org,b@example.net", NOW).await.expect("get");
        let gone = store.get("grey:gone", NOW).await.expect("get");
        let added = store.get("grey:absent", NOW).await.expect("get");
        if allowed.map(|r| r.value).as_deref() == Some("0") && gone.is_none() && added.is_some() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the outside change was not noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_written_while_the_key_filter_is_built_are_never_reported_absent() {
    let (_dir, path) = temp();
    let store = open(&path);
    for i in 0..20_000 {
        // A full queue refuses at once; wait for room as a patient caller would.
        while store.put_detached(&format!("grey:old{i}"), rec("0", NOW, NOW + 600)) == Err(StoreError::Busy) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    store.close().await;
    // Without the memory cache every answer comes from the key filter or the file.
    let store = Store::open_sqlite_with(&path, SqliteOptions { hot_cache: 0, ..SqliteOptions::default() }).expect("reopen");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                let key = format!("dupmsg:new{t}-{i}");
                if i % 2 == 0 {
                    store.put(&key, rec("1 sid", NOW, NOW + 600)).await.expect("put");
                } else {
                    store.put_detached(&key, rec("1 sid", NOW, NOW + 600)).expect("put");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    // Let any rebuild finish, then every key must be found and unknown ones not.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in (0..20_000).step_by(7) {
        assert!(store.get(&format!("grey:old{i}"), NOW).await.expect("get").is_some(), "grey:old{i}");
    }
    for t in 0..8 {
        for i in 0..250 {
            assert!(store.get(&format!("dupmsg:new{t}-{i}"), NOW).await.expect("get").is_some(), "dupmsg:new{t}-{i}");
        }
    }
    assert_eq!(store.get("grey:never", NOW).await, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_agree_in_process_and_never_overwrite_a_record_in_the_file() {
    let (_dir, path) = temp();
    let store = open(&path);
    let first = rec("4", NOW, NOW + 3600);
    assert_eq!(store.claim("grey:t", first.clone(), NOW).await, Ok(None));
    // A second session a moment later sees the first one's record, before any commit.
    assert_eq!(store.claim("grey:t", rec("4", NOW + 1, NOW + 3601), NOW + 1).await, Ok(Some(first.clone())));
    // Another process stored a record the cache cannot know about; the claim is still applied
    // only over nothing, so the file keeps theirs.
    let other = Connection::open(&path).expect("second connection");
    other.execute_batch("INSERT INTO mcc (k, v, e, c) VALUES ('grey:u', '0', 1700009999, 1699999000)").expect("outside write");
    store.claim("grey:u", rec("4", NOW, NOW + 3600), NOW).await.expect("claim");
    let start = Instant::now();
    while store.counters().written < 2 {
        assert!(start.elapsed() < PATIENCE, "claims never reached the file");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let scanned = store.scan("grey:", NOW, 10).await.expect("scan");
    assert_eq!(scanned, vec![("grey:t".to_string(), first), ("grey:u".to_string(), rec("0", 1_699_999_000, 1_700_009_999))]);
}

/// The state file names senders and recipients: created 0600 (0640 when a run-group is named),
/// and an existing world-readable file is closed to others.
#[tokio::test]
async fn the_state_file_is_never_world_readable() {
    use smtpf_milter::config::Config;
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    for (extra, want) in [("", 0o600), ("run-group = \"staff\"\n", 0o640)] {
        let path = dir.path().join(format!("s{want:o}.sq3"));
        let text = format!("cache-path = \"{}\"\n{extra}", path.display());
        let store = Store::open(&Config::from_toml(&text, None).unwrap().store_spec(), None).await.unwrap();
        store.put("grey:a", rec("4", 1, i64::MAX / 2)).await.unwrap();
        store.close().await;
        assert_eq!(mode(&path), want, "{extra}");
        for side in ["-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{side}", path.display()));
            if p.exists() {
                assert_eq!(mode(&p) & 0o007, 0, "{side}");
            }
        }
    }
    let open_to_all = dir.path().join("old.sq3");
    std::fs::write(&open_to_all, b"").unwrap();
    std::fs::set_permissions(&open_to_all, std::fs::Permissions::from_mode(0o666)).unwrap();
    let text = format!("cache-path = \"{}\"\n", open_to_all.display());
    let store = Store::open(&Config::from_toml(&text, None).unwrap().store_spec(), None).await.unwrap();
    store.close().await;
    assert_eq!(mode(&open_to_all), 0o600);
}

/// A burst while readers are busy must not leave a WAL of hundreds of megabytes: once it passes
/// the bound it is cut back as soon as the readers let go, without waiting for more writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_cut_back_after_a_burst() {
    let (_dir, path) = temp();
    // A bound of 1 MiB (256 pages) instead of 16, so a test-sized burst passes it.
    let options = SqliteOptions { write_queue: 100_000, wal_bound_pages: 256, ..patient() };
    let store = Store::open_sqlite_with(&path, options).expect("open");
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let wal_size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    // A reader in the middle of a long read keeps every checkpoint short.
    let reader = Connection::open(&path).unwrap();
    reader.execute_batch("BEGIN; SELECT count(*) FROM mcc;").unwrap();
    let n = 40_000u64;
    for i in 0..n {
        while store
            .put_detached(&format!("grey:burst{i:08}-{}", i.wrapping_mul(2_654_435_761) % 1_000_003), rec("4", 1, i64::MAX / 2))
            == Err(StoreError::Busy)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    wait_for("the burst committed", || store.counters().written >= n).await;
    let peak = wal_size();
    assert!(peak > 2 << 20, "the burst made a WAL of only {peak} bytes; the test needs more");
    reader.execute_batch("COMMIT").unwrap();
    wait_for("the WAL cut back", || wal_size() <= 1 << 20).await;
    store.close().await;
}

/// A state file someone else owns (an admin's `root:smtpf 0660`) is used as it is, not chmodded.
#[tokio::test]
async fn a_state_file_of_another_owner_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only root can give a file to another user");
        return;
    }
    let (_dir, path) = temp();
    Store::open_sqlite(&path, Duration::from_secs(300)).expect("create").close().await;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
    nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(1)), None).unwrap();
    let store = Store::open_sqlite(&path, Duration::from_secs(300)).expect("opened as it is");
    store.close().await;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o664);
}

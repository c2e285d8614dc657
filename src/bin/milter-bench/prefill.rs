//! The `prefill` subcommand: a state file that already holds many greylist records, written
//! through the store's own writer before the daemon starts on it, to measure the milter with a
//! store some days into greylisting.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use smtpf_milter::store::{unix_now, Record, SqliteOptions, Store, StoreError};

/// The key of prefilled record `i`, shaped like a ptr,mail,rcpt tuple.
fn prefill_key(i: u64) -> String {
    format!("grey:p{}.prefill.example.org,sender{}@s{}.example.net,rcpt{}@example.net", i / 3, i % 5000, i % 101, i % 3)
}

/// `prefill`: greylist records into the SQLite state file, through the store's own writer.
pub async fn prefill(path: PathBuf, records: u64) -> ExitCode {
    let start = Instant::now();
    let options = SqliteOptions { write_queue: 65_536, batch_max: 4096, hot_cache: 0, ..SqliteOptions::default() };
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || Store::open_sqlite_with(&path, options)).await
    };
    let store = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            eprintln!("milter-bench: cannot open {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("milter-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = unix_now();
    let mut busy = 0u64;
    for i in 0..records {
        let key = prefill_key(i);
        // A quarter passed, the rest pending, as a store some days into greylisting holds.
        let value = if i % 4 == 0 { "0" } else { "4" };
        loop {
            match store.put_detached(&key, Record::new(value, now, now + 90_000)) {
                Ok(()) => break,
                Err(StoreError::Busy) => {
                    busy += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => {
                    eprintln!("milter-bench: prefill: {e}");
                    store.close().await;
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    store.close().await;
    let c = store.counters();
    println!(
        "prefill      {} records written to {} in {:.1} s ({} commits, {} write errors, {busy} waits for a full queue)",
        c.written,
        path.display(),
        start.elapsed().as_secs_f64(),
        c.commits,
        c.write_errors
    );
    if c.write_errors > 0 || c.written < records {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

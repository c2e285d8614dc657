//! What a spammer or a broken MTA can send cannot forge a log line, inject a header, crash a
//! session or hold a connection: each case here was reproduced against an earlier build.

mod common;

use std::time::{Duration, Instant};

use common::{open_session, send_message, Message, TestDaemon};
use smtpf_milter::milter::codec::{Command, Family, Response};

/// The answer to DATA for a new tuple (`sender` to b@example.net) from `ip`, on a connection of
/// its own to the milter at `socket`.
async fn data_answer(socket: &std::path::Path, ip: &str, sender: &str) -> Vec<Response> {
    let mut c = smtpf_milter::milter::client::MtaClient::connect_unix(socket).await.unwrap();
    open_session(&mut c, &format!("[{ip}]"), ip, "h.example").await;
    c.command(&Command::Mail { sender: format!("<{sender}>"), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: "<b@example.net>".into(), params: vec![] }).await.unwrap();
    let answer = c.command(&Command::Data).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    answer
}

/// A config for a daemon started by hand (for a store of the test's own making): a unix socket
/// in `dir`, the state file at `state`, greylisting on with 451 answers, nothing else.
/// A config by hand for tests that open the store themselves. The name server is a local one that
/// answers at once (`dns`), so the MX, SPF and backup-MX lookups never wait on the machine's
/// resolver in timing-sensitive tests.
fn hand_config(
    dir: &std::path::Path,
    state: &std::path::Path,
    dns: &common::dns::TestDns,
) -> (std::path::PathBuf, smtpf_milter::config::Config) {
    let socket = dir.join("m.sock");
    let text = format!(
        "milter-socket = \"unix:{}\"\ncache-path = \"{}\"\nmail-require-mx = false\ndupmsg-ttl = 0\ngrey-drop = false\ndns-servers = [\"{}\"]\n",
        socket.display(),
        state.display(),
        dns.addr()
    );
    (socket, smtpf_milter::config::Config::from_toml(&text, None).unwrap())
}

fn is_greylisted(answer: &[Response]) -> bool {
    matches!(answer, [Response::ReplyCode(t)] if t.starts_with("451 4.7.0 try again later #552"))
}

/// Every captured line is one event: no line break inside (the forged text shows escaped, inside
/// the field it came in).
fn assert_one_event_per_line(d: &TestDaemon) {
    for line in d.lines() {
        assert!(!line.contains('\n') && !line.contains('\r'), "line break inside a log line: {line:?}");
    }
}

#[tokio::test]
async fn peer_text_cannot_forge_log_lines_or_break_quoted_fields() {
    let d = TestDaemon::start("").await;
    let mut c = d.client().await;
    c.negotiate(6, 0x1ff, 0x1fffff).await.unwrap();
    let forged = "x\r\nsmtpf-milter[1]: FAKE #721 end";
    c.macros(b'C', &[("{client_ptr}", forged)]).await.unwrap();
    let connect = Command::Connect { hostname: forged.into(), family: Family::Inet, port: 25, address: "192.0.2.66".into() };
    c.command(&connect).await.unwrap();
    c.command(&Command::Helo { name: "ev\"il x=\"y\r\nFAKE #637 start".into() }).await.unwrap();
    c.macros(b'M', &[("i", forged)]).await.unwrap();
    c.command(&Command::Mail { sender: format!("<a{forged}@example.org>"), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: format!("<b{forged}@example.net>"), params: vec![] }).await.unwrap();
    c.command(&Command::Data).await.unwrap();
    c.command(&Command::Header { name: "Message-ID".into(), value: format!("<m@x>\r\n\t{forged}") }).await.unwrap();
    c.command(&Command::EndOfHeaders).await.unwrap();
    c.command(&Command::EndOfMessage(Vec::new())).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    let end = d.wait_for("#721 end i=", 1).await;
    assert_one_event_per_line(&d);
    // The quote in the HELO stays inside h="...": the field parses back with \" as an escape.
    assert!(end[0].contains(r#"h="ev\"il x=\"y\r\nFAKE #637 start""#), "{}", end[0]);
    let message = d.grep("#720 message tid=");
    assert!(message[0].contains(r"m=<m@x>\r\n\tx\r\nsmtpf-milter[1]: FAKE #721 end"), "{message:?}");
}

#[tokio::test]
async fn the_report_header_cannot_carry_a_second_header() {
    let d = TestDaemon::start("grey-key = \"helo,mail,rcpt\"\ngrey-drop = false\n").await;
    let helo = "h.example\r\nInjected: yes";
    let attempt = |d: &TestDaemon| {
        let sock = d.socket.clone();
        async move {
            let mut c = smtpf_milter::milter::client::MtaClient::connect_unix(&sock).await.unwrap();
            open_session(&mut c, "[192.0.2.67]", "192.0.2.67", helo).await;
            c.command(&Command::Mail { sender: "<a@example.org>".into(), params: vec![] }).await.unwrap();
            c.command(&Command::Rcpt { recipient: "<b@example.net>".into(), params: vec![] }).await.unwrap();
            let data = c.command(&Command::Data).await.unwrap();
            if data != vec![Response::Continue] {
                return (data, Vec::new());
            }
            c.command(&Command::EndOfHeaders).await.unwrap();
            (data, c.command(&Command::EndOfMessage(Vec::new())).await.unwrap())
        }
    };
    let (first, _) = attempt(&d).await;
    assert!(matches!(&first[..], [Response::ReplyCode(t)] if t.starts_with("451 4.7.0 try again later #552")), "{first:?}");
    d.running().shared().advance_clock(601);
    let (_, eom) = attempt(&d).await;
    let value = eom
        .iter()
        .find_map(|r| match r {
            Response::AddHeader { name, value } if name == "X-Grey-Report" => Some(value.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no report header: {eom:?}"));
    assert!(!value.contains('\r') && !value.contains('\n'), "{value:?}");
    assert!(value.contains("key=grey:h.example  injected: yes,a@example.org,b@example.net"), "{value:?}");
    assert_one_event_per_line(&d);
}

#[tokio::test]
async fn a_multi_byte_client_address_neither_panics_nor_leaks_the_connection_count() {
    let d = TestDaemon::start("").await;
    let mut c = d.client().await;
    c.negotiate(6, 0x1ff, 0x1fffff).await.unwrap();
    // The fifth byte falls inside 'é': slicing there used to panic the session.
    let connect = Command::Connect { hostname: "x.example".into(), family: Family::Inet, port: 25, address: "ééé".into() };
    c.command(&connect).await.unwrap();
    let answer = c.command(&Command::Helo { name: "x.example".into() }).await;
    assert!(answer.is_ok(), "the session still answers: {answer:?}");
    c.command(&Command::Quit).await.unwrap();
    d.wait_for("#721 end", 1).await;
    assert!(d.grep("#2041").is_empty(), "{:?}", d.grep("#2041"));

    // The count of open connections came back down: the next session sees itself alone.
    let mut next = d.client().await;
    open_session(&mut next, "mail.example.org", "192.0.2.68", "mail.example.org").await;
    let start = d.wait_for("#637 start", 2).await;
    assert!(start[1].contains(" cn=1 "), "{}", start[1]);
    assert_eq!(send_message(&mut next, &Message::simple("Q1")).await, vec![Response::Continue]);
    next.command(&Command::Quit).await.unwrap();
    d.wait_for("#721 end", 2).await;
    let mut d = d;
    let begun = Instant::now();
    assert_eq!(d.stop(Duration::from_secs(20)).await.closed_at_deadline, 0);
    assert!(begun.elapsed() < Duration::from_secs(5), "stop waited {:?} with no session open", begun.elapsed());
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_closed_after_milter_timeout() {
    let d = TestDaemon::start("milter-timeout = 1\n").await;
    let mut c = d.client().await;
    // Ask for an answer at every step, then send HELOs and never read the answers.
    c.negotiate(6, 0x1ff, 0).await.unwrap();
    c.command(&Command::Connect {
        hostname: "slow.example".into(),
        family: Family::Inet,
        port: 25,
        address: "192.0.2.69".into(),
    })
    .await
    .unwrap();
    let mut helo = Vec::new();
    let payload = b"Hslow.example\0";
    helo.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    helo.extend_from_slice(payload);
    let burst: Vec<u8> = helo.iter().copied().cycle().take(helo.len() * 200_000).collect();
    // Written from a task: it blocks once the milter stops reading, and fails once it closes.
    let writer = tokio::spawn(async move {
        let _ = c.send_raw(&burst).await;
    });
    let lines = d.wait_for("#2040", 1).await;
    assert!(lines[0].contains("did not read our answer for 1 seconds"), "{}", lines[0]);
    d.wait_for("#721 end", 1).await;
    writer.abort();
}

/// A spam run that fills the store's write queue must not switch greylisting off: a tuple never
/// seen is temp-failed whether or not its record could be queued, and the store's complaints are
/// a line or two, not one per message.
#[tokio::test]
async fn overload_never_lets_a_new_tuple_through() {
    use smtpf_milter::log::Logger;
    use smtpf_milter::store::{SqliteOptions, Store};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.sq3");
    let dns = common::dns::TestDns::start("").await;
    let (socket, config) = hand_config(dir.path(), &state, &dns);
    let options = SqliteOptions { write_queue: 1, busy_timeout: Duration::from_secs(60), ..SqliteOptions::default() };
    let store = Store::open_sqlite_with(&state, options).unwrap();
    let (log, lines) = Logger::memory(config.verbose.clone());
    let running = smtpf_milter::daemon::start_with_store(config, log, Some(store)).await.unwrap();
    // Another process holds the write lock: nothing queued can be committed meanwhile.
    let blocker = rusqlite::Connection::open(&state).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut passed = 0;
    for i in 0..20 {
        let answer = data_answer(&socket, "192.0.2.71", &format!("s{i}@example.org")).await;
        if !is_greylisted(&answer) {
            passed += 1;
            eprintln!("tuple {i} got {answer:?}");
        }
    }
    assert_eq!(passed, 0, "new tuples let through while the store was busy");
    let log: Vec<String> = lines.lock().unwrap().clone();
    let busy = log.iter().filter(|l| l.contains("#544") && l.contains("store busy")).count();
    assert!((1..=2).contains(&busy), "{busy} #544 lines for 20 refused writes:\n{}", log.join("\n"));
    // In a later second the next error is logged, after a line counting those that were not.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(is_greylisted(&data_answer(&socket, "192.0.2.71", "s99@example.org").await));
    let log: Vec<String> = lines.lock().unwrap().clone();
    let counted = log.iter().find(|l| l.contains("#2043")).unwrap_or_else(|| panic!("no #2043:\n{}", log.join("\n")));
    assert!(counted.contains("more store errors in the last"), "{counted}");
    let n: u64 = counted.split(" #2043 ").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    let refused = running.shared().store().unwrap().counters().refused_busy;
    let logged = log.iter().filter(|l| l.contains("#544") && l.contains("store busy")).count();
    assert_eq!(n + logged as u64, refused, "every refused write is either logged or counted: {counted}");
    blocker.execute_batch("COMMIT").unwrap();
    running.stop(Duration::from_secs(5)).await;
}

/// Records written without waiting fail where no session sees them (a full disk, a locked file):
/// the loss is logged when it starts (#2045, with the reason) and when it ends (#2046).
#[tokio::test]
async fn failed_background_writes_are_logged_not_lost_in_silence() {
    use smtpf_milter::log::Logger;
    use smtpf_milter::store::{SqliteOptions, Store};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.sq3");
    let dns = common::dns::TestDns::start("").await;
    let (socket, config) = hand_config(dir.path(), &state, &dns);
    let options = SqliteOptions { busy_timeout: Duration::from_millis(50), ..SqliteOptions::default() };
    let store = Store::open_sqlite_with(&state, options).unwrap();
    let (log, lines) = Logger::memory(config.verbose.clone());
    let running = smtpf_milter::daemon::start_with_store(config, log, Some(store)).await.unwrap();
    let first_sight = |i: u32| {
        let socket = socket.clone();
        async move { assert!(is_greylisted(&data_answer(&socket, "192.0.2.72", &format!("w{i}@example.org")).await)) }
    };
    let grep = |needle: &str| lines.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect::<Vec<_>>();
    let wait = |needle: &'static str| {
        let grep = &grep;
        async move {
            for _ in 0..500 {
                if let Some(l) = grep(needle).first() {
                    return l.clone();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("no {needle} line");
        }
    };
    let blocker = rusqlite::Connection::open(&state).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    first_sight(1).await;
    let failed = wait("#2045").await;
    assert!(failed.contains("record writes failed in the last 1 seconds: database is locked"), "{failed}");
    blocker.execute_batch("COMMIT").unwrap();
    first_sight(2).await;
    let back = wait("#2046").await;
    assert!(back.contains("writes succeed again; 1 record writes failed meanwhile"), "{back}");
    assert_eq!(grep("#2045").len(), 1);
    running.stop(Duration::from_secs(5)).await;
}

/// A state file that cannot be created at start (here its directory is blocked by a file; a full
/// or read-only disk behaves alike) does not stop mail: the daemon serves without greylisting,
/// says so (#172, #2047), and picks the file up once it can (#2048).
#[tokio::test]
async fn an_unwritable_state_file_at_start_fails_open_and_recovers() {
    use smtpf_milter::log::Logger;
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("state");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let dns = common::dns::TestDns::start("").await;
    let (socket, config) = hand_config(dir.path(), &blocker.join("sub/cache.sq3"), &dns);
    let (log, lines) = Logger::memory(config.verbose.clone());
    let running = smtpf_milter::daemon::start(config, log).await.expect("serves without its state file");
    let grep = |needle: &str| lines.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect::<Vec<_>>();
    assert!(grep("#172 cache-path=").first().is_some_and(|l| l.contains("cannot create directory")), "{:?}", grep("#172"));
    assert_eq!(grep("#2047 cache").len(), 1);
    let data = |i: u32| {
        let socket = socket.clone();
        async move { data_answer(&socket, "192.0.2.73", &format!("f{i}@example.org")).await }
    };
    assert_eq!(data(1).await, vec![Response::Continue], "fail open: no store, no greylisting");
    std::fs::remove_file(&blocker).unwrap();
    for _ in 0..500 {
        if !grep("#2048 cache").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(grep("#2048 cache").len(), 1, "the state file was picked up");
    assert_eq!(grep("#172 cache-path=").len(), 1, "the reason is logged once, not again by the retries");
    let answer = data(2).await;
    assert!(is_greylisted(&answer), "{answer:?}");
    running.stop(Duration::from_secs(5)).await;
}

/// A state file deleted (or replaced) under the running daemon is reopened at its path, so new
/// records are not written into an unlinked file and lost (#2049, then #2048).
#[tokio::test]
async fn a_state_file_deleted_under_the_daemon_is_reopened() {
    let d = TestDaemon::start("grey-key = \"mail,rcpt\"\ngrey-drop = false\n").await;
    let state = d.dir.path().join("cache.sq3");
    let data = |i: u32| {
        let socket = d.socket.clone();
        async move { data_answer(&socket, "192.0.2.74", &format!("r{i}@example.org")).await }
    };
    assert!(is_greylisted(&data(1).await));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", state.display()));
    }
    d.wait_for("#2049 cache", 1).await;
    d.wait_for("#2048 cache", 1).await;
    assert!(state.exists(), "the path holds a fresh file");
    assert!(is_greylisted(&data(2).await));
    // The new tuple's record reaches the new file.
    let key = "grey:r2@example.org,b@example.net";
    for _ in 0..500 {
        let conn = rusqlite::Connection::open(&state).unwrap();
        let found: i64 = conn.query_row("SELECT count(*) FROM mcc WHERE k = ?1", [key], |r| r.get(0)).unwrap_or(0);
        if found == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} never reached the reopened file");
}

/// A state file replaced under the daemon (a restore from backup moved into place) is the one
/// the daemon reads afterwards: a tuple passed in the restored file passes at once.
#[tokio::test]
async fn a_state_file_replaced_under_the_daemon_is_read_after_the_reopen() {
    use smtpf_milter::store::{Record, Store};
    let d = TestDaemon::start("grey-key = \"mail,rcpt\"\ngrey-drop = false\n").await;
    let state = d.dir.path().join("cache.sq3");
    assert!(is_greylisted(&data_answer(&d.socket, "192.0.2.75", "q1@example.org").await));
    // The restore: another file, with the tuple passed, moved over the one in use.
    let restored = d.dir.path().join("restored.sq3");
    let store = Store::open_sqlite(&restored, Duration::from_secs(300)).unwrap();
    let now = d.running().shared().now();
    store.put("grey:q9@example.org,b@example.net", Record::new("0", now - 900, now + 86_400)).await.unwrap();
    store.close().await;
    drop(store);
    // A backup is one file: fold the WAL in (waiting for the store's last threads to let go).
    // Switching the journal mode needs the file to itself, and SQLite answers "locked" at once
    // rather than waiting, so the test asks again until it gets it.
    let conn = rusqlite::Connection::open(&restored).unwrap();
    let mut mode = String::new();
    for _ in 0..500 {
        match conn.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get::<_, String>(0)) {
            Ok(m) => {
                mode = m;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert_eq!(mode, "delete");
    drop(conn);
    std::fs::rename(&restored, &state).unwrap();
    d.wait_for("#2049 cache", 1).await;
    d.wait_for("#2048 cache", 1).await;
    let answer = data_answer(&d.socket, "192.0.2.75", "q9@example.org").await;
    if answer != vec![Response::Continue] {
        let conn = rusqlite::Connection::open(&state).unwrap();
        let rows: Vec<(String, String)> = conn
            .prepare("SELECT k, v FROM mcc")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        panic!("{answer:?}\nrows: {rows:?}\nlog:\n{}", d.lines().join("\n"));
    }
    assert!(d.grep("malformed").is_empty(), "{:?}", d.grep("malformed"));
}

//! Coming from smtpf: its `cache.sq3` (libsnert's `mcc` table, made here the way smtpf makes it)
//! opens as the state file, and what it remembers still counts: hosts that passed greylisting
//! pass at once, tuples waiting out their period pass on time, duplicate records are found.

mod common;

use std::time::Duration;

use common::open_session;
use smtpf_milter::log::Logger;
use smtpf_milter::milter::client::MtaClient;
use smtpf_milter::milter::codec::{Command, Response};

/// smtpf's table and index, as libsnert creates them (rollback journal, `c` defaulting to now).
const SMTPF_SCHEMA: &str = "CREATE TABLE mcc( k TEXT PRIMARY KEY, v TEXT, e INTEGER, c INTEGER DEFAULT (strftime('%s', 'now')) );
     CREATE INDEX mcc_expire ON mcc(e);";

async fn data_answer(socket: &std::path::Path, name: &str, ip: &str, from: &str, to: &str) -> Vec<Response> {
    let mut c = MtaClient::connect_unix(socket).await.unwrap();
    open_session(&mut c, name, ip, name).await;
    c.command(&Command::Mail { sender: from.into(), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: to.into(), params: vec![] }).await.unwrap();
    let r = c.command(&Command::Data).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    r
}

#[tokio::test]
async fn an_smtpf_cache_opens_and_its_records_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("cache.sq3");
    let now = smtpf_milter::ids::unix_now();
    {
        let conn = rusqlite::Connection::open(&state).unwrap();
        conn.execute_batch(SMTPF_SCHEMA).unwrap();
        let rows: [(&str, &str, i64, i64); 4] = [
            // A host that passed greylisting a day ago (smtpf's host record, key = PTR suffix).
            ("grey:pool.example.com", "0", now - 86_400, now + 6 * 86_400),
            // A tuple first seen 20 minutes ago: its retry passes now.
            ("grey:192.0.2.9,a@example.org,b@example.net", "4", now - 1200, now + 88_800),
            // A tuple first seen a minute ago: still in its period.
            ("grey:192.0.2.10,a@example.org,b@example.net", "4", now - 60, now + 89_940),
            // Expired rows are left for the clean-up and never used.
            ("grey:old.example.net", "0", now - 900_000, now - 10),
        ];
        for (k, v, c, e) in rows {
            conn.execute("INSERT INTO mcc (k, v, e, c) VALUES (?1, ?2, ?3, ?4)", rusqlite::params![k, v, e, c]).unwrap();
        }
    }
    let dns = common::dns::TestDns::builder().zone("com").zone("org").zone("net").zone("arpa").start().await;
    let socket = dir.path().join("m.sock");
    let text = format!(
        "milter-socket = \"unix:{}\"\ncache-path = \"{}\"\nmail-require-mx = false\ndupmsg-ttl = 0\ngrey-drop = false\ndns-servers = [\"{}\"]\n",
        socket.display(),
        state.display(),
        dns.addr()
    );
    let config = smtpf_milter::config::Config::from_toml(&text, None).unwrap();
    let (log, lines) = Logger::memory(config.verbose.clone());
    let running = smtpf_milter::daemon::start(config, log).await.expect("smtpf's cache.sq3 opens");

    // Another host of the passed farm, a sender and recipient never seen: passes at once.
    let r = data_answer(&socket, "mta7.pool.example.com", "198.51.100.7", "<new@example.org>", "<x@example.net>").await;
    assert_eq!(r, vec![Response::Continue]);
    // The waiting tuple passes its retry; the young one is still refused with the time left.
    let r = data_answer(&socket, "[192.0.2.9]", "192.0.2.9", "<a@example.org>", "<b@example.net>").await;
    assert_eq!(r, vec![Response::Continue]);
    let r = data_answer(&socket, "[192.0.2.10]", "192.0.2.10", "<a@example.org>", "<b@example.net>").await;
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.starts_with("451 4.7.0 try again later #552")), "{r:?}");
    // The expired host record does not let its farm through.
    let r = data_answer(&socket, "mx.old.example.net", "198.51.100.8", "<new@example.org>", "<x@example.net>").await;
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.contains("#552")), "{r:?}");
    running.stop(Duration::from_secs(5)).await;

    let log = lines.lock().unwrap().clone();
    let listed: Vec<&String> = log.iter().filter(|l| l.contains("#387 grey listed")).collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed[0].contains("{grey:192.0.2.10,a@example.org,b@example.net} for "), "{}", listed[0]);
    let left: i64 = listed[0].rsplit(" for ").next().unwrap().trim_end_matches(" seconds").parse().unwrap();
    assert!((530..=540).contains(&left), "the period counts from smtpf's first sight: {}", listed[0]);
    // The retry's pass is recorded as a host record for the IP, keeping smtpf's first-seen time.
    let conn = rusqlite::Connection::open(&state).unwrap();
    let (v, c): (String, i64) =
        conn.query_row("SELECT v, c FROM mcc WHERE k = 'grey:192.0.2.9'", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!((v.as_str(), c), ("0", now - 1200));
}

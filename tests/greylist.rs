//! Greylisting and duplicate detection through whole milter sessions, against a real SQLite
//! state file, with the daemon's clock moved forward instead of waiting.

mod common;

use common::{open_session, TestDaemon};
use smtpf_milter::milter::client::MtaClient;
use smtpf_milter::milter::codec::{Command, Response};
use tokio::net::UnixStream;

/// Sends MAIL, RCPTs and DATA; returns the answer to DATA (empty when none was due).
async fn to_data(c: &mut MtaClient<UnixStream>, from: &str, to: &[&str]) -> Vec<Response> {
    let mail = c.command(&Command::Mail { sender: from.into(), params: vec![] }).await.unwrap();
    assert!(mail.iter().all(|r| *r == Response::Continue), "MAIL: {mail:?}");
    for r in to {
        c.command(&Command::Rcpt { recipient: (*r).into(), params: vec![] }).await.unwrap();
    }
    c.command(&Command::Data).await.unwrap()
}

/// Headers, body and end of message; returns every response to end of message.
async fn finish(c: &mut MtaClient<UnixStream>, headers: &[(&str, &str)], body: &[u8]) -> Vec<Response> {
    for (n, v) in headers {
        c.command(&Command::Header { name: (*n).into(), value: (*v).into() }).await.unwrap();
    }
    c.command(&Command::EndOfHeaders).await.unwrap();
    c.command(&Command::Body(body.to_vec())).await.unwrap();
    let r = c.command(&Command::EndOfMessage(Vec::new())).await.unwrap();
    c.command(&Command::Abort).await.unwrap();
    r
}

fn sid(d: &TestDaemon, ip: &str) -> String {
    d.grep(&format!("[{ip}]:4711")).last().unwrap().split(' ').next().unwrap().to_string()
}

/// The row under `key` in the state file. First-sight records are written detached (the reply
/// does not wait for them), so a missing row is looked for again for up to two seconds.
fn db_value(d: &TestDaemon, key: &str) -> Option<(String, i64, i64)> {
    let conn = rusqlite::Connection::open(d.dir.path().join("cache.sq3")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let row = conn.query_row("SELECT v, c, e FROM mcc WHERE k = ?1", [key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).ok();
        if row.is_some() || std::time::Instant::now() > deadline {
            return row;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

const HEADERS: &[(&str, &str)] = &[("Message-ID", "<g1@example.org>"), ("Subject", "hi")];

#[tokio::test]
async fn first_sight_retry_and_pass() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"ptr,mail,rcpt\"").await;
    let mut c = d.client().await;
    open_session(&mut c, "[192.0.2.1]", "192.0.2.1", "client.example.org").await;
    let r = to_data(&mut c, "<Alice+news@Example.org>", &["<bob@example.net>"]).await;
    let s1 = sid(&d, "192.0.2.1");
    // No verified PTR: ptr falls back to the IP; the key names the host, so smtpf drops: 421.
    assert_eq!(r, vec![Response::ReplyCode(format!("421 4.7.0 try again later #552 {s1}"))]);
    d.wait_for(&format!("{s1} #387 grey listed {{grey:192.0.2.1,alice@example.org,bob@example.net}} for 600 seconds"), 1).await;
    assert!(d.grep(&format!("{s1} #719 data tid="))[0].ends_with(&format!("f=\"\" x=\"421 4.7.0 try again later #552 {s1}\"")));
    let (v, created, expires) = db_value(&d, "grey:192.0.2.1,alice@example.org,bob@example.net").expect("tuple stored");
    assert_eq!(v, "4");
    assert_eq!(expires - created, 90_000, "grey-temp-fail-ttl");

    // A retry within the period: still refused, with the time left; the record is not extended.
    d.running().shared().advance_clock(300);
    let mut c = d.client().await;
    open_session(&mut c, "[192.0.2.1]", "192.0.2.1", "client.example.org").await;
    let r = to_data(&mut c, "<alice@example.org>", &["<bob@example.net>"]).await;
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.starts_with("421 4.7.0 try again later #552 ")));
    // 300 s of the period are left (a second or two less on a slow machine).
    let listed = d.wait_for("#387 grey listed", 2).await;
    let left: i64 = listed[1].rsplit(" for ").next().unwrap().trim_end_matches(" seconds").parse().unwrap();
    assert!((290..=300).contains(&left), "{}", listed[1]);
    assert_eq!(db_value(&d, "grey:192.0.2.1,alice@example.org,bob@example.net").unwrap().2, expires);

    // After the period: DATA passes, and the message gets the report header.
    d.running().shared().advance_clock(300);
    let mut c = d.client().await;
    open_session(&mut c, "[192.0.2.1]", "192.0.2.1", "client.example.org").await;
    assert_eq!(to_data(&mut c, "<alice@example.org>", &["<bob@example.net>"]).await, vec![Response::Continue]);
    let eom = finish(&mut c, HEADERS, b"hello\r\n").await;
    assert_eq!(eom.len(), 2, "{eom:?}");
    match &eom[0] {
        Response::AddHeader { name, value } => {
            assert_eq!(name, "X-Grey-Report");
            let age: i64 = value.strip_prefix("age=").unwrap().split(' ').next().unwrap().parse().unwrap();
            assert!((600..=610).contains(&age), "{value}");
            assert!(
                value.contains(&format!(
                    "({:02}:{:02}:{:02}) key=grey:192.0.2.1,alice@example.org,bob@example.net at=\"",
                    age / 3600,
                    age / 60 % 60,
                    age % 60
                )),
                "{value}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(eom[1], Response::Continue);
    assert!(d.grep("#2052").is_empty(), "no report header was there to remove: {:?}", d.grep("#2052"));
    // The host record now lets everything from this client through at once, for
    // cache-accept-ttl from the pass; it keeps the tuple's first-seen time.
    let (v, host_created, host_expires) = db_value(&d, "grey:192.0.2.1").unwrap();
    assert_eq!((v.as_str(), host_created), ("0", created));
    assert_eq!(host_expires - d.running().shared().now(), 604_800, "cache-accept-ttl from the pass");
    let mut c = d.client().await;
    open_session(&mut c, "[192.0.2.1]", "192.0.2.1", "client.example.org").await;
    assert_eq!(to_data(&mut c, "<someone@else.example>", &["<carol@example.net>"]).await, vec![Response::Continue]);
    assert_eq!(finish(&mut c, HEADERS, b"x\r\n").await, vec![Response::Continue], "no report header for a host pass");
}

#[tokio::test]
async fn key_without_host_answers_451_and_one_recipient_passes_all() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"mail,rcpt\"").await;
    let mut c = d.client().await;
    open_session(&mut c, "[192.0.2.2]", "192.0.2.2", "c.example").await;
    let r = to_data(&mut c, "<a@example.org>", &["<x@example.net>"]).await;
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.starts_with("451 4.7.0 try again later #552 ")), "{r:?}");
    d.running().shared().advance_clock(601);
    // x@ has waited long enough; y@ is new. One passing recipient passes the message.
    let mut c = d.client().await;
    open_session(&mut c, "[192.0.2.99]", "192.0.2.99", "c.example").await;
    assert_eq!(to_data(&mut c, "<a@example.org>", &["<y@example.net>", "<x@example.net>"]).await, vec![Response::Continue]);
    assert_eq!(db_value(&d, "grey:a@example.org,x@example.net").unwrap().0, "0", "no host part: the key itself is upgraded");
}

#[tokio::test]
async fn verified_ptr_is_keyed_by_its_suffix_and_prefixes_aggregate() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"ptr,mail,rcpt\"").await;
    let mut c = d.client().await;
    open_session(&mut c, "mta.pool.example.com", "192.0.2.7", "mta.pool.example.com").await;
    to_data(&mut c, "<a@example.com>", &["<b@example.net>"]).await;
    d.wait_for("#387 grey listed {grey:pool.example.com,a@example.com,b@example.net} for 600 seconds", 1).await;

    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"ip,mail,rcpt\"\ngrey-ipv4-prefix = 24").await;
    let mut c = d.client().await;
    open_session(&mut c, "[192.0.2.7]", "192.0.2.7", "h.example").await;
    to_data(&mut c, "<a@example.com>", &["<b@example.net>"]).await;
    d.wait_for("#387 grey listed {grey:192.0.2.0/24,a@example.com,b@example.net}", 1).await;
    d.running().shared().advance_clock(700);
    // The retry comes from another address of the same /24: it passes.
    let mut c = d.client().await;
    open_session(&mut c, "[192.0.2.8]", "192.0.2.8", "h.example").await;
    assert_eq!(to_data(&mut c, "<a@example.com>", &["<b@example.net>"]).await, vec![Response::Continue]);
}

#[tokio::test]
async fn exemptions() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("access.cf");
    std::fs::write(&map, "Connect:192.0.2.20 OK\nGrey-Connect:192.0.2.21 0\nGrey-To:fast@example.net 60\nTo:postmaster@ OK\n")
        .unwrap();
    let d = TestDaemon::start(&format!("dupmsg-ttl = 0\ngrey-key = \"ptr,mail,rcpt\"\naccess-map = \"{}\"", map.display())).await;
    for (ip, from, to) in [
        ("192.0.2.20", "<a@example.org>", "<b@example.net>"), // white-listed client
        ("192.0.2.21", "<a@example.org>", "<b@example.net>"), // Grey-Connect: 0
        ("127.0.0.1", "<a@example.org>", "<b@example.net>"),  // localhost
        ("192.0.2.22", "<a@example.org>", "<postmaster@example.net>"), // white-listed recipient
    ] {
        let mut c = d.client().await;
        open_session(&mut c, "h.example", ip, "h.example").await;
        assert_eq!(to_data(&mut c, from, &[to]).await, vec![Response::Continue], "{ip} {to}");
    }
    // Authenticated senders are not greylisted.
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.23", "h.example").await;
    c.macros(b'M', &[("{auth_authen}", "alice")]).await.unwrap();
    assert_eq!(to_data(&mut c, "<a@example.org>", &["<b@example.net>"]).await, vec![Response::Continue]);
    // Grey-To: lowers the period for that recipient.
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.24", "h.example").await;
    to_data(&mut c, "<a@example.org>", &["<fast@example.net>"]).await;
    d.wait_for("fast@example.net} for 60 seconds", 1).await;
    assert!(d.grep("#387").len() == 1, "{:?}", d.grep("#387"));
}

#[tokio::test]
async fn dry_run_only_logs() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-dry-run = true").await;
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.30", "h.example").await;
    assert_eq!(to_data(&mut c, "<a@example.org>", &["<b@example.net>"]).await, vec![Response::Continue]);
    d.wait_for("#387 grey listed", 1).await;
    d.wait_for("#2022 grey-dry-run: would have refused", 1).await;
}

#[tokio::test]
async fn forged_report_header_is_replaced() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"mail,rcpt\"").await;
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.31", "h.example").await;
    to_data(&mut c, "<a@example.org>", &["<b@example.net>"]).await;
    d.running().shared().advance_clock(600);
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.31", "h.example").await;
    to_data(&mut c, "<a@example.org>", &["<b@example.net>"]).await;
    let eom = finish(&mut c, &[("X-Grey-Report", "age=999999 forged"), ("Subject", "x")], b"b\r\n").await;
    assert_eq!(eom[0], Response::ChangeHeader { index: 1, name: "X-Grey-Report".into(), value: String::new() });
    assert!(matches!(&eom[1], Response::AddHeader { name, .. } if name == "X-Grey-Report"));
    d.wait_for("#2052 removed previous instance of header \"X-Grey-Report\"", 1).await;
}

#[tokio::test]
async fn store_failure_fails_open() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"ptr,mail,rcpt\"").await;
    d.running().shared().store().unwrap().close().await;
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.40", "h.example").await;
    assert_eq!(to_data(&mut c, "<a@example.org>", &["<b@example.net>"]).await, vec![Response::Continue]);
    d.wait_for("#542 cache get error key={grey:", 1).await;
}

/// grey-key = "" or grey-temp-fail-period = 0 switch greylisting off: the message passes DATA,
/// nothing is logged as greylisted and no tuple is stored.
#[tokio::test]
async fn switched_off_greylisting_holds_and_records_nothing() {
    for extra in ["grey-key = \"\"", "grey-key = \"ptr,mail,rcpt\"\ngrey-temp-fail-period = 0"] {
        let d = TestDaemon::start(&format!("dupmsg-ttl = 0\n{extra}")).await;
        let mut c = d.client().await;
        open_session(&mut c, "h.example", "192.0.2.41", "h.example").await;
        let data = to_data(&mut c, "<a@example.org>", &["<b@example.net>"]).await;
        assert!(data.is_empty() || data == vec![Response::Continue], "{extra}: {data:?}");
        assert_eq!(finish(&mut c, HEADERS, b"x\r\n").await, vec![Response::Continue], "{extra}");
        d.wait_for("#720 message", 1).await;
        assert!(d.grep("#387").is_empty() && d.grep("#539").is_empty(), "{extra}: {:?}", d.lines());
        eprintln!("LINES {:?}", d.lines());
        let conn = rusqlite::Connection::open(d.dir.path().join("cache.sq3")).unwrap();
        let rows: i64 = conn.query_row("SELECT count(*) FROM mcc WHERE k LIKE 'grey%'", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 0, "{extra}");
    }
}

/// A key made of the host alone (grey-key = "ip") is both the tuple and the host record: a retry
/// within grey-temp-fail-period is still temp-failed, with the time left; after it, it passes.
#[tokio::test]
async fn a_host_only_key_still_waits_out_the_period() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"ip\"").await;
    let attempt = || async {
        let mut c = d.client().await;
        open_session(&mut c, "h.example", "192.0.2.42", "h.example").await;
        to_data(&mut c, "<a@example.org>", &["<b@example.net>"]).await
    };
    let r = attempt().await;
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.starts_with("421 4.7.0 try again later #552 ")), "{r:?}");
    d.running().shared().advance_clock(300);
    let r = attempt().await;
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.starts_with("421 4.7.0 try again later #552 ")), "{r:?}");
    let listed = d.wait_for("#387 grey listed {grey:192.0.2.42} for ", 2).await;
    let left: i64 = listed[1].rsplit(" for ").next().unwrap().trim_end_matches(" seconds").parse().unwrap();
    assert!((290..=300).contains(&left), "{}", listed[1]);
    d.running().shared().advance_clock(301);
    assert_eq!(attempt().await, vec![Response::Continue]);
    assert_eq!(db_value(&d, "grey:192.0.2.42").unwrap().0, "0");
}

// ---- duplicate messages ------------------------------------------------------------------

async fn send_copy(d: &TestDaemon, ip: &str, body: &[u8]) -> Vec<Response> {
    let mut c = d.client().await;
    open_session(&mut c, "h.example", ip, "h.example").await;
    to_data(&mut c, "<a@example.org>", &["<Bob@example.net>", "<carol@example.net>"]).await;
    finish(&mut c, &[("Message-ID", "<dup-1@example.org> (x)")], body).await
}

#[tokio::test]
async fn duplicate_is_tagged_by_default() {
    let d = TestDaemon::start("grey-key = \"\"\ndupmsg-ttl = 90000").await;
    assert_eq!(send_copy(&d, "192.0.2.50", b"same body\r\n").await, vec![Response::Continue]);
    let first = sid(&d, "192.0.2.50");
    let again = send_copy(&d, "192.0.2.51", b"same body\r\n").await;
    assert_eq!(again, vec![Response::AddHeader { name: "X-Smtpf-Duplicate".into(), value: first.clone() }, Response::Continue]);
    let line = d.wait_for("#337 TAG duplicate key=dupmsg:", 1).await;
    assert!(line[0].ends_with(&format!(",<Bob@example.net> previous session={first}")), "{}", line[0]);
    // Another body is another message.
    assert_eq!(send_copy(&d, "192.0.2.52", b"other body\r\n").await, vec![Response::Continue]);
}

#[tokio::test]
async fn duplicate_discard_and_reject_policies() {
    let d = TestDaemon::start("grey-key = \"\"\ndupmsg-policy = \"discard\"").await;
    send_copy(&d, "192.0.2.53", b"b\r\n").await;
    assert_eq!(send_copy(&d, "192.0.2.54", b"b\r\n").await, vec![Response::Discard]);
    d.wait_for("#337 DISCARD duplicate", 1).await;

    let d = TestDaemon::start("grey-key = \"\"\ndupmsg-policy = \"reject\"").await;
    send_copy(&d, "192.0.2.55", b"b\r\n").await;
    let r = send_copy(&d, "192.0.2.56", b"b\r\n").await;
    let s = sid(&d, "192.0.2.56");
    assert_eq!(r, vec![Response::ReplyCode(format!("550 5.3.4 duplicate message rejected #340 {s}"))]);
}

/// A copy is a duplicate for dupmsg-ttl after the message was recorded, and a new message after
/// that: the record is stored with that lifetime (its row in the state file says so).
#[tokio::test]
async fn a_copy_is_a_duplicate_only_within_dupmsg_ttl() {
    let d = TestDaemon::start("grey-key = \"\"\ndupmsg-ttl = 3600\ndupmsg-policy = \"reject\"").await;
    assert_eq!(send_copy(&d, "192.0.2.57", b"ttl\r\n").await, vec![Response::Continue]);
    let first = sid(&d, "192.0.2.57");
    let conn = rusqlite::Connection::open(d.dir.path().join("cache.sq3")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let (value, created, expires) = loop {
        let row = conn.query_row("SELECT v, c, e FROM mcc WHERE k LIKE 'dupmsg:%'", [], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match row {
            Ok(row) => break row,
            Err(e) => assert!(std::time::Instant::now() < deadline, "no dupmsg record: {e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert_eq!(expires - created, 3600, "dupmsg-ttl");
    assert!(value.ends_with(&format!(" {first}")), "{value}");
    d.running().shared().advance_clock(3590);
    let r = send_copy(&d, "192.0.2.58", b"ttl\r\n").await;
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.starts_with("550 5.3.4 duplicate message rejected #340 ")), "{r:?}");
    d.running().shared().advance_clock(20);
    assert_eq!(send_copy(&d, "192.0.2.59", b"ttl\r\n").await, vec![Response::Continue], "dupmsg-ttl has passed");
}

/// smtpf records a message for duplicate detection only from clients that are not localhost,
/// relays or white listed: a site's own resends (a mailing list run twice, a monitoring probe)
/// are never discarded or refused. An authenticated client counts as a relay.
#[tokio::test]
async fn duplicates_of_trusted_clients_are_never_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("access.cf");
    std::fs::write(&map, "Connect:192.0.2.60 OK\n").unwrap();
    let d = TestDaemon::start(&format!("grey-key = \"\"\ndupmsg-policy = \"reject\"\naccess-map = \"{}\"", map.display())).await;
    // White listed by the access-map, and localhost: both copies go through, nothing is stored.
    for ip in ["192.0.2.60", "127.0.0.1"] {
        assert_eq!(send_copy(&d, ip, b"own\r\n").await, vec![Response::Continue], "{ip}");
        assert_eq!(send_copy(&d, ip, b"own\r\n").await, vec![Response::Continue], "{ip}, again");
    }
    // Authenticated (Postfix sends {auth_authen} with MAIL).
    for _ in 0..2 {
        let mut c = d.client().await;
        open_session(&mut c, "h.example", "192.0.2.61", "h.example").await;
        c.macros(b'M', &[("{auth_authen}", "alice")]).await.unwrap();
        to_data(&mut c, "<a@example.org>", &["<Bob@example.net>", "<carol@example.net>"]).await;
        let r = finish(&mut c, &[("Message-ID", "<dup-1@example.org> (x)")], b"auth\r\n").await;
        assert_eq!(r, vec![Response::Continue]);
    }
    let conn = rusqlite::Connection::open(d.dir.path().join("cache.sq3")).unwrap();
    let rows: i64 = conn.query_row("SELECT count(*) FROM mcc WHERE k LIKE 'dupmsg:%'", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0, "no record for trusted clients");
    // Any other client's message is recorded, and its copy refused.
    send_copy(&d, "192.0.2.62", b"theirs\r\n").await;
    let r = send_copy(&d, "192.0.2.63", b"theirs\r\n").await;
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.starts_with("550 5.3.4 duplicate message rejected #340 ")), "{r:?}");
}

// ---- content greylisting ------------------------------------------------------------------

/// One message through a fresh session; returns (answer to DATA, answer to end of message).
async fn content_try(d: &TestDaemon, headers: &[(&str, &str)], body: &[u8]) -> (Vec<Response>, Vec<Response>) {
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.90", "h.example").await;
    let data = to_data(&mut c, "<a@example.org>", &["<b@example.net>"]).await;
    if data != vec![Response::Continue] {
        return (data, Vec::new());
    }
    (data, finish(&mut c, headers, body).await)
}

fn mime(boundary: &str, text: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let headers = vec![
        ("Message-ID".to_string(), "<c1@example.org>".to_string()),
        ("MIME-Version".to_string(), "1.0".to_string()),
        ("Content-Type".to_string(), format!("multipart/alternative; boundary=\"{boundary}\"")),
    ];
    let body = format!("--{boundary}\r\nContent-Type: text/plain\r\n\r\n{text}\r\n--{boundary}--\r\n").into_bytes();
    (headers, body)
}

fn refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

#[tokio::test]
async fn content_greylisting_identical_changed_and_reboundaried_retries() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"mail,rcpt\"\ngrey-content = true").await;
    let (h, b) = mime("AAA", "Hello Bob, the meeting is at ten.");
    // First message: DATA is let through so the body can be hashed, then temp-failed at its end.
    let (data, eom) = content_try(&d, &refs(&h), &b).await;
    assert_eq!(data, vec![Response::Continue]);
    assert!(matches!(&eom[..], [Response::ReplyCode(t)] if t.starts_with("451 4.7.0 try again later #552 ")), "{eom:?}");
    d.wait_for("#394 grey-content listed {grey:a@example.org,b@example.net} for 600 seconds", 1).await;

    // A retry inside the period is refused at DATA already.
    d.running().shared().advance_clock(100);
    let (data, _) = content_try(&d, &refs(&h), &b).await;
    assert!(matches!(&data[..], [Response::ReplyCode(t)] if t.starts_with("451 ")), "{data:?}");

    // After the period, a changed body is a mismatch: 450 4.4.5 #553.
    d.running().shared().advance_clock(600);
    let (h2, b2) = mime("AAA", "Hello Bob, buy cheap watches now.");
    let (_, eom) =
        content_try(&d, &[("Message-ID", "<other@x>"), ("Content-Type", "multipart/alternative; boundary=\"AAA\"")], &b2).await;
    let _ = h2;
    assert!(matches!(&eom[..], [Response::ReplyCode(t)] if t.starts_with("450 4.4.5 try again later #553 ")), "{eom:?}");
    d.wait_for("#393 grey-content message mismatch", 1).await;
    // Another Message-ID than the first message's: no rebuilt-copy workaround.
    assert!(d.grep("#964").is_empty(), "{:?}", d.grep("#964"));

    // The original text with only the MIME boundary changed hashes the same: it passes.
    let (h3, b3) = mime("ZZZ-other-boundary", "Hello Bob, the meeting is at ten.");
    let (_, eom) = content_try(&d, &refs(&h3), &b3).await;
    assert!(matches!(&eom[..], [Response::AddHeader { name, .. }, Response::Continue] if name == "X-Grey-Report"), "{eom:?}");
}

/// The first complete message of a content-greylisted tuple is remembered for
/// grey-temp-fail-ttl with its content hash, and its Message-ID for two hours (smtpf's
/// cache-temp-fail-ttl), the window in which a rebuilt copy with that Message-ID is let through.
#[tokio::test]
async fn content_greylisting_stores_the_hash_and_the_message_id_for_their_lifetimes() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"mail,rcpt\"\ngrey-content = true").await;
    let (h, b) = mime("R1", "Minutes of the meeting.");
    content_try(&d, &refs(&h), &b).await;
    let (value, created, expires) = db_value(&d, "grey:a@example.org,b@example.net").unwrap();
    let fields: Vec<&str> = value.split(' ').collect();
    assert!(fields.len() == 3 && fields[0] == "4" && fields[1] == fields[2] && !fields[1].is_empty(), "{value}");
    assert_eq!(expires - created, 90_000, "grey-temp-fail-ttl");
    let (value, created, expires) = db_value(&d, "grey-msgid:<c1@example.org>").unwrap();
    assert_eq!(value, "4");
    assert_eq!(expires - created, 7200);
}

/// A retry of the same content when the period has just ended passes at end of message: the
/// report header gives its age, and the tuple's record now passes for cache-accept-ttl.
#[tokio::test]
async fn content_retry_at_the_end_of_the_period_passes() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"mail,rcpt\"\ngrey-content = true").await;
    let (h, b) = mime("P1", "Lunch at noon?");
    content_try(&d, &refs(&h), &b).await;
    let (_, first_seen, _) = db_value(&d, "grey:a@example.org,b@example.net").unwrap();
    let now = d.running().shared().now();
    d.running().shared().advance_clock(first_seen + 600 - now);
    let (data, eom) = content_try(&d, &refs(&h), &b).await;
    assert_eq!(data, vec![Response::Continue]);
    let age = match &eom[..] {
        [Response::AddHeader { name, value }, Response::Continue] if name == "X-Grey-Report" => {
            value.strip_prefix("age=").unwrap().split(' ').next().unwrap().parse::<i64>().unwrap()
        }
        other => panic!("{other:?}"),
    };
    assert!((600..=602).contains(&age), "age={age}");
    let (value, created, expires) = db_value(&d, "grey:a@example.org,b@example.net").unwrap();
    assert_eq!(value, "0");
    assert_eq!(created, first_seen, "the first-seen time is kept");
    assert_eq!(expires - created, age + 604_800, "cache-accept-ttl from the pass");
    // The next message of the tuple passes at DATA, as a passed tuple does.
    let (data, eom) = content_try(&d, &refs(&h), b"another text\r\n").await;
    assert_eq!((data, eom), (vec![Response::Continue], vec![Response::Continue]));
}

/// A message let through DATA whose tuple was started afresh by another session before its end
/// (the record expired and a new first sight took its place) is refused at its end with the
/// time left of the new record's period.
#[tokio::test]
async fn content_end_of_message_against_a_record_started_meanwhile() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"mail,rcpt\"\ngrey-content = true").await;
    let (h, b) = mime("S1", "Status report.");
    content_try(&d, &refs(&h), &b).await;
    d.running().shared().advance_clock(700);
    // B: past the period, DATA is let through so that its content can be compared.
    let mut b_session = d.client().await;
    open_session(&mut b_session, "h.example", "192.0.2.90", "h.example").await;
    assert_eq!(to_data(&mut b_session, "<a@example.org>", &["<b@example.net>"]).await, vec![Response::Continue]);
    let b_sid = d.grep("#637 start").last().unwrap().split(' ').next().unwrap().to_string();
    // Meanwhile the record goes, and C starts the tuple afresh (first sight, another text).
    let store = d.running().shared().store().unwrap();
    assert!(store.delete("grey:a@example.org,b@example.net").await.unwrap());
    let (h2, b2) = mime("S2", "Another text.");
    let (data, _) = content_try(&d, &refs(&h2), &b2).await;
    assert_eq!(data, vec![Response::Continue]);
    d.running().shared().advance_clock(100);
    // B's end of message meets C's record: 500 seconds of its period are left.
    let eom = finish(&mut b_session, &refs(&h), &b).await;
    assert!(matches!(&eom[..], [Response::ReplyCode(t)] if t.starts_with("451 4.7.0 try again later #552 ")), "{eom:?}");
    let listed = d.wait_for(&format!("{b_sid} #394 grey-content listed"), 1).await;
    let left: i64 = listed[0].rsplit(" for ").next().unwrap().trim_end_matches(" seconds").parse().unwrap();
    assert!((495..=500).contains(&left), "{}", listed[0]);
}

#[tokio::test]
async fn content_mismatch_with_the_same_message_id_is_let_through_next_time() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"mail,rcpt\"\ngrey-content = true").await;
    let (h, b) = mime("B1", "Quarterly report attached.");
    content_try(&d, &refs(&h), &b).await;
    d.running().shared().advance_clock(700);
    // Exchange-style: same Message-ID, rebuilt content (a disclaimer appended).
    let (h2, b2) = mime("B1", "Quarterly report attached. -- Disclaimer: confidential.");
    let (_, eom) = content_try(&d, &refs(&h2), &b2).await;
    assert!(matches!(&eom[..], [Response::ReplyCode(t)] if t.starts_with("450 4.4.5 ")), "{eom:?}");
    d.wait_for("#964 grey content hash replaced msg-id=<c1@example.org>", 1).await;
    let (_, eom) = content_try(&d, &refs(&h2), &b2).await;
    assert_eq!(eom.last(), Some(&Response::Continue), "{eom:?}");
}

#[tokio::test]
async fn every_key_word_builds_its_element() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"rcpt,helos,helo,ptrn,ptr,ip,mail\"\ngrey-drop = false").await;
    let mut c = d.client().await;
    open_session(&mut c, "dyn-56-34.pool.example.com", "192.0.2.12", "Mail7.Client.Example.ORG").await;
    let r = to_data(&mut c, "<Fred+x@Example.com>", &["<Bob@Example.NET>"]).await;
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.starts_with("451 ")), "grey-drop off: {r:?}");
    // smtpf's fixed order: ip, ptr, ptrn, helo, helos, mail, rcpt; lower case.
    d.wait_for(
        "#387 grey listed {grey:192.0.2.12,pool.example.com,dyn-#-#.pool.example.com,mail7.client.example.org,client.example.org,fred@example.com,bob@example.net} for 600 seconds",
        1,
    )
    .await;
}

/// Negotiates as an MTA speaking milter protocol 2 (old Sendmail: no DATA step) and connects
/// from `ip`.
async fn protocol_2_connect(c: &mut MtaClient<UnixStream>, ip: &str) {
    c.negotiate(2, 0x3f, 0x7f).await.unwrap();
    let connect = Command::Connect {
        hostname: "h.example".into(),
        family: smtpf_milter::milter::codec::Family::Inet,
        port: 25,
        address: ip.into(),
    };
    c.command(&connect).await.unwrap();
}

#[tokio::test]
async fn protocol_2_mtas_are_greylisted_at_end_of_headers() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"mail,rcpt\"").await;
    let mut c = d.client().await;
    protocol_2_connect(&mut c, "192.0.2.95").await;
    c.command(&Command::Mail { sender: "<a@example.org>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: "<b@example.net>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Header { name: "Subject".into(), value: "x".into() }).await.unwrap();
    let r = c.command(&Command::EndOfHeaders).await.unwrap();
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.starts_with("451 4.7.0 try again later #552 ")), "{r:?}");
    d.wait_for("#387 grey listed {grey:a@example.org,b@example.net}", 1).await;
}

/// A passed host record slides forward when it is used, at most once an hour: a use within the
/// hour writes nothing (the debug line of the verbose word cache shows every store call), a use
/// an hour after the record was written stores it afresh, for cache-accept-ttl from then.
#[tokio::test]
async fn passed_host_record_slides_forward_at_most_hourly() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"ip,mail,rcpt\"\nverbose = \"info,cache\"").await;
    let pass = |ip: &'static str| {
        let d = &d;
        async move {
            let mut c = d.client().await;
            open_session(&mut c, "h.example", ip, "h.example").await;
            to_data(&mut c, "<a@example.org>", &["<b@example.net>"]).await
        }
    };
    let refreshes = || d.grep("#2063 cache put-detached key=grey:192.0.2.110: \"0 (refresh)\"").len();
    pass("192.0.2.110").await;
    d.running().shared().advance_clock(601);
    assert_eq!(pass("192.0.2.110").await, vec![Response::Continue]);
    let (_, _, first_expiry) = db_value(&d, "grey:192.0.2.110").unwrap();
    let accept = 604_800;
    // A use soon after does not rewrite the record...
    d.running().shared().advance_clock(60);
    assert_eq!(pass("192.0.2.110").await, vec![Response::Continue]);
    assert_eq!(refreshes(), 0, "a use within the hour wrote the record");
    assert_eq!(db_value(&d, "grey:192.0.2.110").unwrap().2, first_expiry);
    // ...a use an hour after it was written slides it forward.
    let now = d.running().shared().now();
    d.running().shared().advance_clock(first_expiry - accept + 3600 - now);
    assert_eq!(pass("192.0.2.110").await, vec![Response::Continue]);
    assert_eq!(refreshes(), 1, "a use an hour later did not refresh the record");
    // The refresh is written in the background (the MTA's answer does not wait for it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (value, created, expires) = loop {
        let row = db_value(&d, "grey:192.0.2.110").unwrap();
        if row.2 != first_expiry {
            break row;
        }
        assert!(std::time::Instant::now() < deadline, "the refresh never reached the file");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(value, "0");
    assert!(expires >= first_expiry + 3600, "{expires} {first_expiry}");
    assert_eq!(expires - created, accept, "a refreshed record lives cache-accept-ttl from the refresh");
}

/// One host of a dynamic pool passing greylisting must not open it for the whole pool: a PTR name
/// built from the address (`ip_in_ptr`) is keyed by the IP, as smtpf does. A fixed host farm's
/// name still stands for the farm.
#[tokio::test]
async fn a_dynamic_pool_is_keyed_by_address_not_by_its_domain() {
    let d = TestDaemon::start("dupmsg-ttl = 0\ngrey-key = \"ptr,mail,rcpt\"").await;
    let mut c = d.client().await;
    open_session(&mut c, "dsl-203-0-113-60.pool.bigisp.net", "203.0.113.60", "pc1.home").await;
    to_data(&mut c, "<a@example.org>", &["<b@example.net>"]).await;
    d.wait_for("#387 grey listed {grey:203.0.113.60,a@example.org,b@example.net} for 600 seconds", 1).await;
    assert!(d.grep("#637 start dsl-203-0-113-60")[0].contains("f=\"ip_in_ptr\""));
    d.running().shared().advance_clock(700);
    let mut c = d.client().await;
    open_session(&mut c, "dsl-203-0-113-60.pool.bigisp.net", "203.0.113.60", "pc1.home").await;
    assert_eq!(to_data(&mut c, "<a@example.org>", &["<b@example.net>"]).await, vec![Response::Continue]);
    // Another host of the same pool, another sender and recipient: greylisted on its own.
    let mut c = d.client().await;
    open_session(&mut c, "c-203-0-113-61.pool.bigisp.net", "203.0.113.61", "pc2.home").await;
    let r = to_data(&mut c, "<x@example.org>", &["<y@example.net>"]).await;
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.contains("#552")), "{r:?}");
    d.wait_for("#387 grey listed {grey:203.0.113.61,x@example.org,y@example.net}", 1).await;

    // A dotless PTR name has no suffix to drop: its ptrn form is the element.
    let mut c = d.client().await;
    open_session(&mut c, "mx7", "192.0.2.40", "mx7").await;
    to_data(&mut c, "<a@example.org>", &["<b@example.net>"]).await;
    d.wait_for("#387 grey listed {grey:mx#,a@example.org,b@example.net}", 1).await;
}

/// A client whose PTR names span unrelated domains (a web host carrying many customers' names)
/// is keyed by IP (`ptr_multidomain`); several names in one domain keep the domain key.
#[tokio::test]
async fn ptr_names_of_unrelated_domains_fall_back_to_the_address() {
    let dns = common::dns::TestDns::builder()
        .ptr("198.51.100.20", "www.shop-one.com")
        .ptr("198.51.100.20", "www.shop-two.net")
        .ptr("198.51.100.21", "out1.mail.farm-example.com")
        .ptr("198.51.100.21", "out1.backup.mail.farm-example.com")
        .start()
        .await;
    let d = TestDaemon::start(&format!("dns-servers = [\"{}\"]\ndupmsg-ttl = 0\ngrey-key = \"ptr,mail,rcpt\"", dns.addr())).await;
    let mut c = d.client().await;
    open_session(&mut c, "www.shop-one.com", "198.51.100.20", "www.shop-one.com").await;
    to_data(&mut c, "<a@example.org>", &["<b@example.net>"]).await;
    c.command(&Command::Quit).await.unwrap();
    d.wait_for("#387 grey listed {grey:198.51.100.20,a@example.org,b@example.net}", 1).await;
    assert!(d.wait_for("#721 end i=198.51.100.20 ", 1).await[0].contains("ptr_multidomain"));
    let mut c = d.client().await;
    open_session(&mut c, "out1.mail.farm-example.com", "198.51.100.21", "out1.mail.farm-example.com").await;
    to_data(&mut c, "<a@example.org>", &["<b@example.net>"]).await;
    d.wait_for("#387 grey listed {grey:mail.farm-example.com,a@example.org,b@example.net}", 1).await;
}

/// Either setting switches greylisting off on its own: an empty grey-key (whatever the period),
/// or a period of 0 (whatever the key). Nothing is greylisted, recorded or logged. A protocol-2
/// MTA (old Sendmail) is used: it has no DATA step to leave out, so the daemon itself must know.
#[tokio::test]
async fn an_empty_key_or_a_zero_period_each_turn_greylisting_off() {
    for extra in ["grey-key = \"\"\ngrey-temp-fail-period = 600", "grey-key = \"ptr,mail,rcpt\"\ngrey-temp-fail-period = 0"] {
        let d = TestDaemon::start(&format!("dupmsg-ttl = 0\n{extra}")).await;
        let mut c = d.client().await;
        protocol_2_connect(&mut c, "192.0.2.90").await;
        c.command(&Command::Mail { sender: "<carol@example.org>".into(), params: vec![] }).await.unwrap();
        c.command(&Command::Rcpt { recipient: "<bob@example.net>".into(), params: vec![] }).await.unwrap();
        c.command(&Command::Header { name: "Subject".into(), value: "x".into() }).await.unwrap();
        let r = c.command(&Command::EndOfHeaders).await.unwrap();
        assert_eq!(r, vec![Response::Continue], "{extra}");
        c.command(&Command::Quit).await.unwrap();
        d.wait_for("#721 end i=192.0.2.90 ", 1).await;
        assert!(d.grep("#387").is_empty(), "{extra}: {:?}", d.lines());
        let conn = rusqlite::Connection::open(d.dir.path().join("cache.sq3")).unwrap();
        let rows: i64 = conn.query_row("SELECT count(*) FROM mcc WHERE k LIKE 'grey:%'", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 0, "{extra}: no greylist record");
    }
}

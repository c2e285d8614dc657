//! postgrey's whitelist files as greylisting exemptions, through whole milter sessions: the
//! exempt client or recipient is not greylisted and the log names the file and line; others are;
//! a reload picks up a changed file; check-config names the lines it skips.

mod common;

use common::{open_session, TestDaemon};
use smtpf_milter::milter::codec::{Command, Response};

async fn data(d: &TestDaemon, name: &str, ip: &str, rcpt: &str) -> Vec<Response> {
    let mut c = d.client().await;
    open_session(&mut c, name, ip, "helo.example").await;
    c.command(&Command::Mail { sender: "<a@example.org>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: rcpt.into(), params: vec![] }).await.unwrap();
    let r = c.command(&Command::Data).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    r
}

fn greylisted(r: &[Response]) -> bool {
    matches!(r, [Response::ReplyCode(t)] if t.contains("#552"))
}

#[tokio::test]
async fn listed_clients_and_recipients_are_not_greylisted() {
    let dir = tempfile::tempdir().unwrap();
    let clients = dir.path().join("whitelist_clients");
    let recipients = dir.path().join("whitelist_recipients");
    std::fs::write(
        &clients,
        "# postgrey format\nbigbank.com\n/^mx[0-9]+\\.lists\\.example\\.net$/\n198.51.100.0/24\n203.0.113\nnot a name\n",
    )
    .unwrap();
    std::fs::write(&recipients, "postmaster@\nexample.org\n").unwrap();
    let d = TestDaemon::start(&format!(
        "grey-key = \"ip,mail,rcpt\"\ngrey-whitelist-clients = [\"{}\"]\ngrey-whitelist-recipients = \"{}\"",
        clients.display(),
        recipients.display()
    ))
    .await;
    let c = clients.display().to_string();
    let r = recipients.display().to_string();
    d.wait_for(&format!("#2064 grey-whitelist {c}:6: \"not a name\" does not look like a host name; line skipped"), 1).await;

    assert_eq!(data(&d, "mail.bigbank.com", "192.0.2.10", "<bob@example.net>").await, vec![Response::Continue]);
    d.wait_for(&format!("#2065 grey-whitelist: mail.bigbank.com [192.0.2.10]:4711 not greylisted ({c}:2)"), 1).await;
    assert_eq!(data(&d, "mx3.lists.example.net", "192.0.2.11", "<bob@example.net>").await, vec![Response::Continue]);
    d.wait_for(&format!("({c}:3)"), 1).await;
    assert_eq!(data(&d, "[198.51.100.9]", "198.51.100.9", "<bob@example.net>").await, vec![Response::Continue]);
    assert_eq!(data(&d, "[203.0.113.77]", "203.0.113.77", "<bob@example.net>").await, vec![Response::Continue]);
    assert_eq!(data(&d, "[192.0.2.12]", "192.0.2.12", "<postmaster@example.net>").await, vec![Response::Continue]);
    d.wait_for(&format!("#2065 grey-whitelist: recipient <postmaster@example.net> not greylisted ({r}:1)"), 1).await;
    assert_eq!(data(&d, "[192.0.2.13]", "192.0.2.13", "<anyone@sub.example.org>").await, vec![Response::Continue]);

    // Not listed: greylisted as usual. A PTR that only claims a listed name (not confirmed) is not
    // exempt, as in postgrey (Postfix's client_name is the verified name).
    assert!(greylisted(&data(&d, "mail.smallbank.com", "192.0.2.14", "<bob@example.net>").await));
    assert!(greylisted(&data(&d, "unknown", "192.0.2.15", "<bob@example.net>").await));

    // A changed file is read at reload.
    std::fs::write(&recipients, "postmaster@\nexample.org\nbob@example.net\n").unwrap();
    d.running().reload().expect("reload");
    assert_eq!(data(&d, "[192.0.2.16]", "192.0.2.16", "<bob@example.net>").await, vec![Response::Continue]);
    d.wait_for(&format!("({r}:3)"), 1).await;
}

#[test]
fn check_config_names_skipped_lines_and_a_missing_file_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("wl");
    std::fs::write(&list, "example.com\nbad line\n").unwrap();
    let (_sock, config) = common::config_file(dir.path(), &format!("grey-whitelist-clients = \"{}\"\n", list.display()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smtpf-milter"))
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("#2064 grey-whitelist {}:2: \"bad line\" does not look like a host name", list.display())),
        "{err}"
    );
    let (_sock, config) = common::config_file(dir.path(), "grey-whitelist-recipients = \"/nonexistent/wl\"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smtpf-milter"))
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("grey-whitelist: /nonexistent/wl: No such file or directory (2)"));
}

async fn data_from(d: &TestDaemon, ip: &str, sender: &str) -> Vec<Response> {
    let mut c = d.client().await;
    open_session(&mut c, &format!("[{ip}]"), ip, "helo.example").await;
    c.command(&Command::Mail { sender: sender.into(), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: "<bob@example.net>".into(), params: vec![] }).await.unwrap();
    let r = c.command(&Command::Data).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    r
}

/// postgrey's auto-whitelist: after N messages of one client passed greylisting (each tuple
/// retried), its new tuples pass at once; other clients are still greylisted.
#[tokio::test]
async fn a_client_whose_messages_keep_passing_is_auto_whitelisted() {
    let d = TestDaemon::start("grey-key = \"mail,rcpt\"\ngrey-auto-whitelist-clients = 3").await;
    for i in 0..3 {
        let sender = format!("<s{i}@example.org>");
        assert!(greylisted(&data_from(&d, "192.0.2.50", &sender).await), "tuple {i} first seen");
        d.running().shared().advance_clock(700);
        assert_eq!(data_from(&d, "192.0.2.50", &sender).await, vec![Response::Continue], "tuple {i} retried");
        if i == 1 {
            // Two passes are not enough.
            assert!(greylisted(&data_from(&d, "192.0.2.50", "<probe@example.org>").await));
            assert!(d.grep("#2066").is_empty());
        }
    }
    assert_eq!(data_from(&d, "192.0.2.50", "<never-seen@example.org>").await, vec![Response::Continue]);
    d.wait_for("#2066 grey auto-whitelist: client 192.0.2.50 not greylisted (grey:awl:192.0.2.50)", 1).await;
    assert!(greylisted(&data_from(&d, "192.0.2.51", "<never-seen@example.org>").await), "another client");
    let conn = rusqlite::Connection::open(d.dir.path().join("cache.sq3")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let row: Option<(String, i64)> =
            conn.query_row("SELECT v, e FROM mcc WHERE k = 'grey:awl:192.0.2.50'", [], |r| Ok((r.get(0)?, r.get(1)?))).ok();
        let v = row.as_ref().map(|(v, _)| v.clone());
        if let Some((v, expires)) = &row {
            if v == "0" {
                assert_eq!(*expires - d.running().shared().now(), 604_800, "whitelisted for cache-accept-ttl");
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "record {v:?}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    // With a key that names the host (the default), the host record does this job: no awl record.
    let d = TestDaemon::start("grey-key = \"ip,mail,rcpt\"\ngrey-auto-whitelist-clients = 1").await;
    assert!(greylisted(&data_from(&d, "192.0.2.52", "<a@example.org>").await));
    d.running().shared().advance_clock(700);
    assert_eq!(data_from(&d, "192.0.2.52", "<a@example.org>").await, vec![Response::Continue]);
    assert_eq!(data_from(&d, "192.0.2.52", "<b@example.org>").await, vec![Response::Continue], "host record");
    assert!(d.grep("#2066").is_empty());
}

/// `grey-auto-whitelist-clients = 0` turns the auto-whitelist off: however many of its messages
/// pass, a client's new tuples are greylisted, and no count is kept.
#[tokio::test]
async fn auto_whitelist_zero_is_off() {
    let d = TestDaemon::start("grey-key = \"mail,rcpt\"\ngrey-auto-whitelist-clients = 0").await;
    for i in 0..3 {
        let sender = format!("<z{i}@example.org>");
        assert!(greylisted(&data_from(&d, "192.0.2.53", &sender).await), "tuple {i} first seen");
        d.running().shared().advance_clock(700);
        assert_eq!(data_from(&d, "192.0.2.53", &sender).await, vec![Response::Continue], "tuple {i} retried");
    }
    assert!(greylisted(&data_from(&d, "192.0.2.53", "<new@example.org>").await), "still greylisted");
    assert!(d.grep("#2066").is_empty());
    // Give detached writes their moment, then look: no auto-whitelist record of any kind.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let conn = rusqlite::Connection::open(d.dir.path().join("cache.sq3")).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM mcc WHERE k LIKE 'grey:awl:%'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
}

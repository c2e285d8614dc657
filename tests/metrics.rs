//! `metrics-listen`: Prometheus scrapes `/metrics` over HTTP while the daemon serves mail. A
//! scrape before and after known sessions must show exactly their deltas (connections,
//! transactions, the reply sent with its number, the greylisting outcome, the stage latency,
//! the numbered log lines), a reload must not reset anything, and only `GET /metrics` is served.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{open_session, TestDaemon};
use smtpf_milter::milter::codec::{Command, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free loopback port (bound and released, as tests do for daemons that must own their port).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 request; (status line, body).
async fn http(port: u16, request_line: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("{request_line}\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text)).await.expect("an answer within 5 s").unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

/// Every sample of a scrape: `name{labels}` -> value.
async fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (status, body) = http(port, "GET /metrics HTTP/1.1").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v))))
        .collect()
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, key: &str) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

/// One message from 192.0.2.44 to bob@example.net: the answer at DATA.
async fn message(d: &TestDaemon, from: &str) -> Vec<Response> {
    let mut c = d.client().await;
    open_session(&mut c, "[192.0.2.44]", "192.0.2.44", "client.example.org").await;
    c.command(&Command::Mail { sender: format!("<{from}>"), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: "<bob@example.net>".into(), params: vec![] }).await.unwrap();
    let r = c.command(&Command::Data).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    r
}

#[tokio::test]
async fn a_scrape_shows_each_session_and_survives_a_reload() {
    let port = free_port();
    let d = TestDaemon::start(&format!("grey-key = \"ptr,mail,rcpt\"\nmetrics-listen = \"127.0.0.1:{port}\"\n")).await;
    d.wait_for(&format!("#2067 metrics-listen=127.0.0.1:{port} ready"), 1).await;
    let before = scrape(port).await;
    assert_eq!(before.get("smtpf_milter_connections_open"), Some(&0.0), "{before:?}");

    // A first sight: 421 #552 at DATA.
    let r = message(&d, "alice@example.org").await;
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.starts_with("421 4.7.0 try again later #552")), "{r:?}");
    d.wait_for("#721 end", 1).await;
    let after = scrape(port).await;
    for (key, want) in [
        ("smtpf_milter_connections_total", 1.0),
        ("smtpf_milter_transactions_total", 1.0),
        ("smtpf_milter_replies_total{number=\"552\",code=\"421\"}", 1.0),
        ("smtpf_milter_greylist_verdicts_total{outcome=\"first_sight\"}", 1.0),
        ("smtpf_milter_greylist_verdicts_total{outcome=\"pass\"}", 0.0),
        ("smtpf_milter_answer_seconds_count{stage=\"data\"}", 1.0),
        ("smtpf_milter_answer_seconds_count{stage=\"connect\"}", 1.0),
        ("smtpf_milter_log_messages_total{number=\"387\"}", 1.0),
        ("smtpf_milter_log_messages_total{number=\"721\"}", 1.0),
    ] {
        assert_eq!(delta(&before, &after, key), want, "{key}: {after:?}");
    }
    assert_eq!(after.get("smtpf_milter_connections_open"), Some(&0.0));

    // A reload counts, and resets nothing.
    d.running().reload().expect("reload");
    // The retry after the period passes; its delay goes into the histogram.
    d.running().shared().advance_clock(700);
    assert_eq!(message(&d, "alice@example.org").await, vec![Response::Continue]);
    d.wait_for("#721 end", 2).await;
    let later = scrape(port).await;
    for (key, want) in [
        ("smtpf_milter_config_reloads_total{result=\"applied\"}", 1.0),
        ("smtpf_milter_config_last_reload_successful", 0.0),
        ("smtpf_milter_connections_total", 1.0),
        ("smtpf_milter_greylist_verdicts_total{outcome=\"pass\"}", 1.0),
        ("smtpf_milter_greylist_retry_delay_seconds_count", 1.0),
        ("smtpf_milter_greylist_retry_delay_seconds_bucket{le=\"900.0\"}", 1.0),
        ("smtpf_milter_greylist_retry_delay_seconds_bucket{le=\"600.0\"}", 0.0),
    ] {
        assert_eq!(delta(&after, &later, key), want, "{key}: {later:?}");
    }
    assert_eq!(later.get("smtpf_milter_connections_total"), Some(&2.0), "not reset by the reload");
    // The store holds the tuple (still pending: passing writes the host record) and the host.
    smtpf_milter::metrics_http::refresh_records(d.running().shared()).await;
    let records = scrape(port).await;
    for (state, n) in [("pending", 1.0), ("passed", 0.0), ("host", 1.0)] {
        assert_eq!(records.get(&format!("smtpf_milter_greylist_records{{state=\"{state}\"}}")), Some(&n), "{state}: {records:?}");
    }
    assert_eq!(later.get("smtpf_milter_config_last_reload_successful"), Some(&1.0));

    assert_eq!(http(port, "GET / HTTP/1.1").await.0, "HTTP/1.1 404 Not Found");
    assert_eq!(http(port, "POST /metrics HTTP/1.1").await.0, "HTTP/1.1 405 Method Not Allowed");

    // A scraper asking for keep-alive (Prometheus does) gets its answer and the connection
    // closed: a kept connection would be cut by the lifetime bound in the middle of a later scrape.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text)).await.expect("closed after one answer").unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK") && text.ends_with("# EOF\n"), "{text}");
}

/// An address that cannot be opened is logged and the milter serves all the same.
#[tokio::test]
async fn a_taken_metrics_address_does_not_stop_mail() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let d = TestDaemon::start(&format!("metrics-listen = \"127.0.0.1:{port}\"\n")).await;
    d.wait_for(&format!("#2068 metrics-listen=127.0.0.1:{port} error: "), 1).await;
    // Greylisting is off here: DATA is let through without a reply.
    assert_eq!(message(&d, "carol@example.org").await, vec![]);
    d.wait_for("#721 end i=192.0.2.44 ", 1).await;
}

/// The base name of a sample or a name in a query (histogram and counter suffixes removed).
fn base(name: &str) -> String {
    let name = name.split('{').next().unwrap_or(name);
    for suffix in ["_bucket", "_count", "_sum", "_total", "_info"] {
        if let Some(b) = name.strip_suffix(suffix) {
            return b.to_string();
        }
    }
    name.to_string()
}

/// docs/metrics.md documents every metric the daemon serves and nothing else, and the shipped
/// dashboard and alert rules only query metrics that exist.
#[tokio::test]
async fn every_metric_is_documented_and_the_contrib_files_query_real_ones() {
    let port = free_port();
    // A listed client and a reload, so that the families filled on first use appear too.
    let dns = common::dns::TestDns::builder()
        .zone("org")
        .zone("net")
        .zone("test")
        .listed("192.0.2.44", "bl.test", "127.0.0.2")
        .start()
        .await;
    let d = TestDaemon::start(&format!(
        "dns-servers = [\"{}\"]\ndns-bl = [\"bl.test\"]\nmetrics-listen = \"127.0.0.1:{port}\"\n",
        dns.addr()
    ))
    .await;
    d.wait_for("#2067 ", 1).await;
    message(&d, "dave@example.org").await;
    d.wait_for("#721 end", 1).await;
    d.running().reload().expect("reload");
    let served: std::collections::BTreeSet<String> = scrape(port).await.keys().map(|k| base(k)).collect();
    let root = env!("CARGO_MANIFEST_DIR");
    let docs = std::fs::read_to_string(format!("{root}/docs/metrics.md")).unwrap();
    let table = docs.split("<!-- metrics:begin -->").nth(1).and_then(|t| t.split("<!-- metrics:end -->").next()).unwrap();
    let documented: std::collections::BTreeSet<String> =
        table.lines().filter_map(|l| l.strip_prefix("| `")).filter_map(|l| l.split('`').next()).map(base).collect();
    // Counted once a minute from start: present after the first count.
    let mut served = served;
    served.insert("smtpf_milter_greylist_records".into());
    assert_eq!(documented, served, "docs/metrics.md and /metrics disagree");
    let name = regex::Regex::new(r"smtpf_milter_[a-z_]+").unwrap();
    for file in ["contrib/prometheus/alerts.yml", "contrib/prometheus/grafana-dashboard.json"] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        for m in name.find_iter(&text) {
            assert!(documented.contains(&base(m.as_str())), "{file} queries {}, which is not a metric", m.as_str());
        }
    }
}

/// A DNS list that times out is counted per list as a timeout; transactions open and close.
#[tokio::test]
async fn list_timeouts_per_list_and_open_transactions() {
    let port = free_port();
    let dns =
        common::dns::TestDns::builder().zone("org").zone("net").zone("test").blackhole("44.2.0.192.slow.test").start().await;
    let d = TestDaemon::start(&format!(
        "dns-servers = [\"{}\"]\ndns-timeout = \"300ms\"\ndns-bl = [\"slow.test\"]\nmetrics-listen = \"127.0.0.1:{port}\"\n",
        dns.addr()
    ))
    .await;
    d.wait_for("#2067 ", 1).await;
    let mut c = d.client().await;
    open_session(&mut c, "[192.0.2.44]", "192.0.2.44", "client.example.org").await;
    c.command(&Command::Mail { sender: "<erin@example.org>".into(), params: vec![] }).await.unwrap();
    let open = scrape(port).await;
    assert_eq!(open.get("smtpf_milter_transactions_open"), Some(&1.0), "{open:?}");
    c.command(&Command::Abort).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    d.wait_for("#721 end", 1).await;
    let after = scrape(port).await;
    assert_eq!(after.get("smtpf_milter_transactions_open"), Some(&0.0));
    assert_eq!(after.get("smtpf_milter_transactions_total"), Some(&1.0));
    assert_eq!(
        after.get("smtpf_milter_list_lookups_total{option=\"dns-bl\",list=\"slow.test.\",result=\"timeout\"}"),
        Some(&1.0),
        "{:?}",
        d.grep("#20")
    );
    assert_eq!(
        after.get("smtpf_milter_list_lookups_total{option=\"dns-bl\",list=\"slow.test.\",result=\"queried\"}"),
        Some(&1.0)
    );
}

/// A unix metrics socket is bound as the milter socket is: a file that is not a socket is never
/// replaced (#2068, the file kept), a free path serves /metrics and is removed at stop.
#[tokio::test]
async fn a_unix_metrics_socket_is_bound_and_removed_as_the_milter_socket_is() {
    let dir = tempfile::tempdir().unwrap();
    let in_the_way = dir.path().join("notes.txt");
    std::fs::write(&in_the_way, "keep me").unwrap();
    let d = TestDaemon::start(&format!("metrics-listen = \"unix:{}\"\n", in_the_way.display())).await;
    d.wait_for("#2068 ", 1).await;
    assert!(d.grep("#2068 ")[0].contains("exists and is not a socket"), "{:?}", d.grep("#2068"));
    assert_eq!(std::fs::read_to_string(&in_the_way).unwrap(), "keep me");
    drop(d);

    let path = dir.path().join("metrics.sock");
    let mut d = TestDaemon::start(&format!("metrics-listen = \"unix:{}\"\n", path.display())).await;
    d.wait_for("#2067 ", 1).await;
    let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text)).await.unwrap().unwrap();
    assert!(text.starts_with("HTTP/1.0 200 OK") && text.contains("smtpf_milter_connections_total 0"), "{text}");
    d.stop(Duration::from_secs(5)).await;
    assert!(!path.exists(), "the metrics socket is removed at stop");
}

/// A client that connects and never sends a request does not keep the others out: connections
/// beyond the limit are closed at once, and the slots come back.
#[tokio::test]
async fn idle_metrics_connections_cannot_lock_the_scraper_out() {
    let port = free_port();
    let d = TestDaemon::start(&format!("metrics-listen = \"127.0.0.1:{port}\"\n")).await;
    d.wait_for("#2067 ", 1).await;
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // The 17th is closed at once, without an answer.
    let mut extra = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut buf))
        .await
        .expect("closed, not left hanging")
        .unwrap();
    assert_eq!(n, 0);
    drop(idle);
    // Freed slots serve the scraper again.
    let start = std::time::Instant::now();
    loop {
        let got = tokio::time::timeout(Duration::from_secs(2), http(port, "GET /metrics HTTP/1.1")).await;
        if matches!(&got, Ok((status, _)) if status == "HTTP/1.1 200 OK") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

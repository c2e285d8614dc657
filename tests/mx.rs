//! Sender-domain MX verification at MAIL against a real (in-process) DNS server: the reply the MTA
//! gets, the numbered lines, and the `mx` flag.

mod common;

use common::dns::TestDns;
use common::{open_session, TestDaemon};
use smtpf_milter::milter::codec::{Command, Response};

async fn mx_dns() -> TestDns {
    TestDns::builder()
        .zone("test")
        .mx("good.test", 10, "mx1.good.test")
        .a("mx1.good.test", "64.0.2.25")
        .a("aonly.test", "64.0.2.26")
        .mx("nullmx.test", 0, ".")
        .a("nullmx.test", "64.0.2.27")
        .mx("private.test", 10, "lo.private.test")
        .mx("private.test", 20, "lan.private.test")
        .a("lo.private.test", "127.0.0.1")
        .a("lan.private.test", "10.0.0.1")
        .mx("noaddr.test", 10, "ghost.noaddr.test")
        .nxdomain("nx.test")
        .servfail("broken.test")
        .blackhole("slow.test")
        .mx("partial.test", 10, "a.broken.test")
        .mx("partial.test", 20, "lo.private.test")
        .mx("mine.test", 10, "mx.mine.test")
        .a("mx.mine.test", "64.0.2.60")
        .start()
        .await
}

async fn daemon(dns: &TestDns, extra: &str) -> TestDaemon {
    TestDaemon::start(&format!("dns-servers = [\"{}\"]\ndns-timeout = 1\nmail-require-mx = true\n{extra}", dns.addr())).await
}

/// MAIL FROM `sender` from client `ip`; returns the answer and the session id.
async fn mail_from(d: &TestDaemon, ip: &str, helo: &str, sender: &str) -> (Vec<Response>, String) {
    let mut c = d.client().await;
    open_session(&mut c, "client.example", ip, helo).await;
    let r = c.command(&Command::Mail { sender: sender.into(), params: vec![] }).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    let start = d.wait_for(&format!("[{ip}]:4711"), 1).await;
    (r, start.last().unwrap().split(' ').next().unwrap().to_string())
}

fn reply(r: &[Response]) -> &str {
    match r {
        [Response::ReplyCode(s)] => s,
        other => panic!("expected a reply code, got {other:?}"),
    }
}

#[tokio::test]
async fn usable_domains_pass() {
    let dns = mx_dns().await;
    let d = daemon(&dns, "").await;
    assert_eq!(mail_from(&d, "192.0.2.1", "c.example", "<a@good.test>").await.0, vec![Response::Continue]);
    assert_eq!(mail_from(&d, "192.0.2.2", "c.example", "<a@aonly.test>").await.0, vec![Response::Continue], "implicit MX");
    assert!(d.grep("#435").is_empty() && d.grep("#438").is_empty());
}

#[tokio::test]
async fn nxdomain_sender_is_refused() {
    let dns = mx_dns().await;
    let d = daemon(&dns, "").await;
    let (r, sid) = mail_from(&d, "192.0.2.3", "c.example", "<a@nx.test>").await;
    assert_eq!(reply(&r), format!("553 5.1.8 sender <a@nx.test> from nx.test has no MX record #434 {sid}"));
    // smtpf answers NXDOMAIN with #434 alone: no #435 beside it.
    assert!(d.grep(&format!("{sid} #435")).is_empty(), "{:?}", d.grep("#435"));
    assert!(d.grep("#717 sender <a@nx.test>")[0]
        .contains(&format!("x=\"553 5.1.8 sender <a@nx.test> from nx.test has no MX record #434 {sid}\"")));
}

#[tokio::test]
async fn unusable_mx_lists_are_refused() {
    let dns = mx_dns().await;
    let d = daemon(&dns, "").await;
    for domain in ["nullmx.test", "private.test", "noaddr.test"] {
        let (r, sid) = mail_from(&d, "192.0.2.4", "c.example", &format!("<a@{domain}>")).await;
        assert_eq!(reply(&r), format!("553 5.1.8 sender <a@{domain}> from {domain} MX invalid #439 {sid}"), "{domain}");
        assert_eq!(d.grep(&format!("{sid} #438 empty MX list after pruning")).len(), 1, "{domain}");
    }
}

#[tokio::test]
async fn lookup_failures_tempfail() {
    let dns = mx_dns().await;
    let d = daemon(&dns, "").await;
    let (r, sid) = mail_from(&d, "192.0.2.5", "c.example", "<a@broken.test>").await;
    assert_eq!(reply(&r), format!("451 4.4.3 sender <a@broken.test> from broken.test MX lookup error #436 {sid}"));
    d.wait_for(&format!("{sid} #435 MX broken.test error SERVFAIL"), 1).await;
    let (r, sid) = mail_from(&d, "192.0.2.6", "c.example", "<a@slow.test>").await;
    assert_eq!(reply(&r), format!("451 4.4.3 sender <a@slow.test> from slow.test MX lookup error #436 {sid}"));
    d.wait_for(&format!("{sid} #435 MX slow.test error timeout"), 1).await;
    // An MX host whose address lookup fails, and no other usable host: 451 #907, not a 553.
    let (r, sid) = mail_from(&d, "192.0.2.7", "c.example", "<a@partial.test>").await;
    assert_eq!(reply(&r), format!("451 4.1.8 sender <a@partial.test> from partial.test MX lookup error #907 {sid}"));
    d.wait_for(&format!("{sid} #906 MX list incomplete..."), 1).await;
}

#[tokio::test]
async fn client_that_is_the_senders_mx_is_flagged() {
    let dns = mx_dns().await;
    let d = daemon(&dns, "").await;
    let (r, sid) = mail_from(&d, "64.0.2.60", "mx.mine.test", "<a@mine.test>").await;
    assert_eq!(r, vec![Response::Continue]);
    d.wait_for(&format!("{sid} #437 client.example [64.0.2.60]:4711 is MX for mine.test"), 1).await;
    assert!(d.wait_for(&format!("{sid} #721 end"), 1).await[0].contains("f=\"mx,"));
}

#[tokio::test]
async fn null_sender_uses_helo_and_is_never_refused() {
    let dns = mx_dns().await;
    let d = daemon(&dns, "").await;
    let (r, sid) = mail_from(&d, "192.0.2.8", "host.nx.test", "<>").await;
    assert_eq!(r, vec![Response::Continue], "bounces are never refused by the MX check");
    d.wait_for(&format!("{sid} #435 MX host.nx.test error NXDOMAIN"), 1).await;
    let before = d.grep("#435").len();
    let (r, _) = mail_from(&d, "192.0.2.9", "[192.0.2.9]", "<>").await;
    assert_eq!(r, vec![Response::Continue]);
    assert_eq!(d.grep("#435").len(), before, "an address-literal HELO is not looked up");
}

#[tokio::test]
async fn exemptions_and_switch() {
    let dns = mx_dns().await;
    let d = daemon(&dns, "local-domains = [\"nx.test\"]").await;
    assert_eq!(mail_from(&d, "192.0.2.10", "c.example", "<a@sub.nx.test>").await.0, vec![Response::Continue], "local domain");
    assert_eq!(mail_from(&d, "127.0.0.1", "localhost", "<a@nx.test2>").await.0, vec![Response::Continue], "localhost");
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("access.cf");
    std::fs::write(&map, "Connect:192.0.2.11 OK\nFrom:friend@nx.test OK\n").unwrap();
    let d = daemon(&dns, &format!("access-map = \"{}\"", map.display())).await;
    assert_eq!(mail_from(&d, "192.0.2.11", "c.example", "<a@nx.test>").await.0, vec![Response::Continue], "white client");
    assert_eq!(mail_from(&d, "192.0.2.12", "c.example", "<friend@nx.test>").await.0, vec![Response::Continue], "white sender");
    let d = TestDaemon::start(&format!("dns-servers = [\"{}\"]\nmail-require-mx = false", dns.addr())).await;
    let (r, sid) = mail_from(&d, "192.0.2.13", "c.example", "<a@nx.test>").await;
    assert_eq!(r, Vec::<Response>::new(), "switched off: no check answers MAIL, so none is promised");
    // The lookup is still made and told (smtpf: "regardless of mail-require-mx"): only the
    // refusal is off.
    d.wait_for(&format!("{sid} #435 MX nx.test error NXDOMAIN"), 1).await;
    let (_, sid) = mail_from(&d, "192.0.2.14", "c.example", "<a@broken.test>").await;
    d.wait_for(&format!("{sid} #435 MX broken.test error SERVFAIL"), 1).await;
    let (_, sid) = mail_from(&d, "64.0.2.60", "mx.mine.test", "<a@mine.test>").await;
    d.wait_for(&format!("{sid} #437 client.example [64.0.2.60]:4711 is MX for mine.test"), 1).await;
    assert!(d.grep("#438").is_empty() && d.grep("#906").is_empty(), "no refusal lines");
}

/// The `mx` flag is about one sender: a later MAIL of the session for another domain clears it.
#[tokio::test]
async fn mx_flag_is_cleared_at_each_mail() {
    let dns = mx_dns().await;
    let d = daemon(&dns, "").await;
    let mut c = d.client().await;
    open_session(&mut c, "client.example", "64.0.2.60", "mx.mine.test").await;
    c.command(&Command::Mail { sender: "<a@mine.test>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Abort).await.unwrap();
    c.command(&Command::Mail { sender: "<b@good.test>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    d.wait_for("#437", 1).await;
    let end = d.wait_for("#721 end", 1).await;
    assert!(end[0].contains(" f=\"quit\" "), "no mx left from the first sender: {end:?}");
}

/// A backup MX of ours (the client is an MX of the recipient's domain) relays mail it queued for
/// us: smtpf does not greylist it (flag 2nd_mx). A LAN address counts: backup MX hosts often sit
/// on private networks. Another client, same tuple shape, is greylisted.
#[tokio::test]
async fn backup_mx_of_the_recipient_domain_is_not_greylisted() {
    let dns = TestDns::builder()
        .zone("test")
        .mx("ours.test", 10, "mx1.ours.test")
        .mx("ours.test", 20, "backup.ours.test")
        .mx("ours.test", 30, "lan.ours.test")
        .a("mx1.ours.test", "64.0.2.10")
        .a("backup.ours.test", "64.0.2.20")
        .a("lan.ours.test", "10.1.2.3")
        .mx("good.test", 10, "mx1.good.test")
        .a("mx1.good.test", "64.0.2.25")
        .start()
        .await;
    let d = TestDaemon::start(&format!(
        "dns-servers = [\"{}\"]\ndns-timeout = 1\nmail-require-mx = false\ngrey-key = \"ptr,mail,rcpt\"",
        dns.addr()
    ))
    .await;
    for (ip, greylisted) in [("64.0.2.20", false), ("10.1.2.3", false), ("64.0.2.99", true)] {
        let mut c = d.client().await;
        open_session(&mut c, "relay.example", ip, "relay.example").await;
        c.command(&Command::Mail { sender: "<a@good.test>".into(), params: vec![] }).await.unwrap();
        c.command(&Command::Rcpt { recipient: "<b@ours.test>".into(), params: vec![] }).await.unwrap();
        let data = c.command(&Command::Data).await.unwrap();
        c.command(&Command::Quit).await.unwrap();
        let end = d.wait_for(&format!("#721 end i={ip} "), 1).await;
        if greylisted {
            assert!(matches!(&data[..], [Response::ReplyCode(r)] if r.contains("#552")), "{ip}: {data:?}");
            assert!(!end[0].contains("2nd_mx"), "{end:?}");
        } else {
            assert_eq!(data, vec![Response::Continue], "{ip}");
            assert!(end[0].contains("2nd_mx"), "{end:?}");
            d.wait_for(&format!("#2050 relay.example [{ip}]:4711 is MX for recipient domain ours.test"), 1).await;
        }
    }
}

#[tokio::test]
async fn every_message_of_a_connection_reports_both_spf_results() {
    let dns = TestDns::builder()
        .zone("test")
        .mx("good.test", 10, "mx1.good.test")
        .a("mx1.good.test", "64.0.2.25")
        .txt("good.test", "v=spf1 ip4:64.0.2.0/24 -all")
        .txt("helo.good.test", "v=spf1 ip4:64.0.2.80 -all")
        .start()
        .await;
    let d = daemon(&dns, "").await;
    let mut c = d.client().await;
    open_session(&mut c, "client.example", "64.0.2.80", "helo.good.test").await;
    for n in 0..3 {
        let r = c.command(&Command::Mail { sender: format!("<u{n}@good.test>"), params: vec![] }).await.unwrap();
        assert_eq!(r, vec![Response::Continue]);
        c.command(&Command::Abort).await.unwrap();
    }
    // A second HELO name is evaluated afresh: this one has no SPF record.
    c.command(&Command::Helo { name: "other.test".into() }).await.unwrap();
    c.command(&Command::Mail { sender: "<u3@good.test>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    let lines = d.wait_for("#717 sender", 4).await;
    for n in 0..3 {
        assert!(
            lines.iter().any(|l| l.contains(&format!("<u{n}@good.test>")) && l.contains("spf-mail=Pass spf-helo=Pass")),
            "{lines:?}"
        );
    }
    assert!(lines.iter().any(|l| l.contains("<u3@good.test>") && l.contains("spf-mail=Pass spf-helo=None")), "{lines:?}");
}

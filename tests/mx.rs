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

/// Whether an MX host is usable is decided by the special-use range its address falls in. Inside
/// a range the sender is refused (553 #439: no reply could ever reach it); a public address just
/// outside the range takes mail, so a range drawn too wide would refuse a legitimate sender for
/// good.
#[tokio::test]
async fn special_use_ranges_decide_at_their_edges() {
    let cases: &[(&str, &str, bool)] = &[
        ("ietf", "192.0.0.8", false),
        ("ietf-top", "192.0.0.255", false),
        ("ietf-next", "192.0.1.25", true),
        ("ietf-other", "192.1.0.25", true),
        ("bench-top", "198.19.255.254", false),
        ("bench-below", "198.17.255.254", true),
        ("bench-above", "198.20.0.25", true),
        ("shared-top", "100.127.255.254", false),
        ("shared-below", "100.63.255.254", true),
        ("discard6", "100::25", false),
        ("teredo", "2001::25", false),
        ("ietf6-top", "2001:1ff:ffff::25", false),
        ("ietf6-next", "2001:200::25", true),
        ("public6", "2001:4860:4860::8888", true),
        ("doc6-next", "2001:db9::25", true),
    ];
    let mut builder = TestDns::builder().zone("test");
    for (label, addr, _) in cases {
        let host = format!("mx.{label}.test");
        builder = builder.mx(&format!("{label}.test"), 10, &host);
        builder = if addr.contains(':') { builder.aaaa(&host, addr) } else { builder.a(&host, addr) };
    }
    let dns = builder.start().await;
    let d = daemon(&dns, "").await;
    for (n, (label, addr, usable)) in cases.iter().enumerate() {
        let (r, sid) = mail_from(&d, &format!("64.0.3.{}", n + 1), "c.example", &format!("<a@{label}.test>")).await;
        if *usable {
            assert_eq!(r, vec![Response::Continue], "MX at {addr} is usable");
        } else {
            assert_eq!(
                reply(&r),
                format!("553 5.1.8 sender <a@{label}.test> from {label}.test MX invalid #439 {sid}"),
                "MX at {addr} can never answer"
            );
        }
    }
}

/// A bounce (null sender) is never refused by the MX check, whatever its HELO domain answers: a
/// lookup that fails (SERVFAIL, timeout) is logged (#435) and nothing else, and a domain without
/// a usable MX is not a reason either. Refusing bounces would lose delivery reports.
#[tokio::test]
async fn null_sender_is_never_refused_when_the_helo_lookup_fails() {
    let dns = mx_dns().await;
    let d = daemon(&dns, "").await;
    let cases = [
        ("192.0.2.40", "mail.broken.test", Some("#435 MX mail.broken.test error SERVFAIL")),
        ("192.0.2.41", "mail.slow.test", Some("#435 MX mail.slow.test error timeout")),
        ("192.0.2.42", "nullmx.test", None),
        ("192.0.2.43", "private.test", None),
        ("192.0.2.44", "partial.test", None),
    ];
    for (ip, helo, line) in cases {
        let (r, sid) = mail_from(&d, ip, helo, "<>").await;
        assert_eq!(r, vec![Response::Continue], "HELO {helo}");
        if let Some(line) = line {
            d.wait_for(&format!("{sid} {line}"), 1).await;
        }
        let sender = d.wait_for(&format!("{sid} #717 sender <>"), 1).await;
        assert!(sender[0].ends_with(" x=\"\""), "{sender:?}");
    }
    assert!(d.grep("#436").is_empty() && d.grep("#438").is_empty() && d.grep("#906").is_empty(), "no refusal lines");
}

/// With mail-require-mx off, a failing MX lookup is told (#435) and the sender goes on: no check
/// answers MAIL, and none tries to (an answer at a step promised silent is an internal error).
#[tokio::test]
async fn switched_off_a_failing_lookup_only_informs() {
    let dns = mx_dns().await;
    let d = TestDaemon::start(&format!("dns-servers = [\"{}\"]\ndns-timeout = 1\nmail-require-mx = false", dns.addr())).await;
    for (ip, sender, line) in [
        ("192.0.2.45", "<a@broken.test>", "#435 MX broken.test error SERVFAIL"),
        ("192.0.2.46", "<a@slow.test>", "#435 MX slow.test error timeout"),
        ("192.0.2.47", "<a@nullmx.test>", "#717 sender <a@nullmx.test>"),
        ("192.0.2.48", "<a@private.test>", "#717 sender <a@private.test>"),
    ] {
        let (_, sid) = mail_from(&d, ip, "c.example", sender).await;
        d.wait_for(&format!("{sid} {line}"), 1).await;
        let told = d.wait_for(&format!("{sid} #717 sender {sender}"), 1).await;
        assert!(told[0].ends_with(" x=\"\""), "{told:?}");
    }
    assert!(d.grep("#539").is_empty(), "{:?}", d.grep("#539"));
}

/// An address without a domain (`<user@>`, `<user@.>`, `<postmaster>`) has nothing to verify:
/// no lookup is made (no #435) and the sender is not refused.
#[tokio::test]
async fn a_sender_without_a_domain_is_not_looked_up() {
    let dns = mx_dns().await;
    let d = daemon(&dns, "verbose = \"info,mx\"").await;
    for (ip, sender) in [("192.0.2.50", "<user@>"), ("192.0.2.51", "<user@.>"), ("192.0.2.52", "<postmaster>")] {
        let (r, sid) = mail_from(&d, ip, "c.example", sender).await;
        assert_eq!(r, vec![Response::Continue], "{sender}");
        d.wait_for(&format!("{sid} #717 sender {sender}"), 1).await;
        assert!(d.grep(&format!("{sid} #2058")).is_empty(), "{sender}: {:?}", d.grep("#2058"));
        assert!(d.grep(&format!("{sid} #435")).is_empty(), "{sender}: {:?}", d.grep("#435"));
    }
}

/// The MX debug line (verbose word mx) tells a null MX from an MX list that holds no usable host:
/// a postmaster asking why a domain was refused with #439 learns which of the two it was.
#[tokio::test]
async fn the_debug_line_names_a_null_mx() {
    let dns = mx_dns().await;
    let d = daemon(&dns, "verbose = \"info,mx\"").await;
    let (_, sid) = mail_from(&d, "192.0.2.53", "c.example", "<a@nullmx.test>").await;
    d.wait_for(&format!("{sid} #2058 MX nullmx.test: NullMx"), 1).await;
    let (_, sid) = mail_from(&d, "192.0.2.54", "c.example", "<a@private.test>").await;
    d.wait_for(&format!("{sid} #2058 MX private.test: Hosts {{ addresses: [127.0.0.1, 10.0.0.1], failed: false }}"), 1).await;
}

/// Whether the client is a backup MX of ours matters only to greylisting: with greylisting off a
/// recipient costs no DNS question and the client is not flagged.
#[tokio::test]
async fn backup_mx_is_not_looked_up_when_greylisting_is_off() {
    let dns = TestDns::builder()
        .zone("test")
        .mx("ours.test", 10, "backup.ours.test")
        .a("backup.ours.test", "64.0.2.20")
        .mx("good.test", 10, "mx1.good.test")
        .a("mx1.good.test", "64.0.2.25")
        .start()
        .await;
    for extra in ["grey-key = \"\"", "grey-key = \"ptr,mail,rcpt\"\ngrey-temp-fail-period = 0"] {
        let d =
            TestDaemon::start(&format!("dns-servers = [\"{}\"]\ndns-timeout = 1\nmail-require-mx = false\n{extra}", dns.addr()))
                .await;
        let mut c = d.client().await;
        open_session(&mut c, "backup.ours.test", "64.0.2.20", "backup.ours.test").await;
        c.command(&Command::Mail { sender: "<a@good.test>".into(), params: vec![] }).await.unwrap();
        d.wait_for("#717 sender <a@good.test>", 1).await;
        let asked = dns.queries();
        c.command(&Command::Rcpt { recipient: "<b@ours.test>".into(), params: vec![] }).await.unwrap();
        c.command(&Command::Quit).await.unwrap();
        let end = d.wait_for("#721 end", 1).await;
        assert_eq!(dns.queries(), asked, "{extra}: RCPT asked the DNS");
        assert!(!end[0].contains("2nd_mx"), "{extra}: {end:?}");
        assert!(d.grep("#2050").is_empty(), "{extra}");
    }
}

/// The backup-MX question is asked once per recipient domain and connection: further recipients
/// of a domain already answered cost nothing, not even a debug line (verbose word mx).
#[tokio::test]
async fn each_recipient_domain_is_asked_once_per_connection() {
    let dns = TestDns::builder()
        .zone("test")
        .mx("ours.test", 10, "mx1.ours.test")
        .a("mx1.ours.test", "64.0.2.10")
        .mx("other.test", 10, "mx1.other.test")
        .a("mx1.other.test", "64.0.2.11")
        .mx("good.test", 10, "mx1.good.test")
        .a("mx1.good.test", "64.0.2.25")
        .start()
        .await;
    let d = TestDaemon::start(&format!(
        "dns-servers = [\"{}\"]\ndns-timeout = 1\nmail-require-mx = false\ngrey-key = \"ptr,mail,rcpt\"\nverbose = \"info,mx\"",
        dns.addr()
    ))
    .await;
    let mut c = d.client().await;
    open_session(&mut c, "relay.example", "64.0.2.99", "relay.example").await;
    c.command(&Command::Mail { sender: "<a@good.test>".into(), params: vec![] }).await.unwrap();
    for rcpt in ["<b@ours.test>", "<c@ours.test>", "<d@other.test>", "<e@Ours.Test>", "<f@other.test>"] {
        c.command(&Command::Rcpt { recipient: rcpt.into(), params: vec![] }).await.unwrap();
    }
    c.command(&Command::Quit).await.unwrap();
    d.wait_for("#721 end", 1).await;
    assert_eq!(d.grep("#2058 MX ours.test: ").len(), 1, "{:?}", d.grep("#2058"));
    assert_eq!(d.grep("#2058 MX other.test: ").len(), 1, "{:?}", d.grep("#2058"));
}

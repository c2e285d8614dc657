//! URI lists at end of message: hosts found in plain, quoted-printable, base64 and HTML parts are
//! looked up in a real (in-process) DNS server; the reply, the flags and the log lines.

mod common;

use common::dns::TestDns;
use common::{open_session, TestDaemon};
use smtpf_milter::milter::client::MtaClient;
use smtpf_milter::milter::codec::{Command, Response};
use tokio::net::UnixStream;

async fn uri_dns() -> TestDns {
    TestDns::builder()
        .zone("uribl.test")
        .zone("ipbl.test")
        .zone("net")
        .a("evil.com.uribl.test", "127.0.0.2")
        .a("spam.co.uk.uribl.test", "127.0.0.2")
        .a("shady.net.uribl.test", "127.255.255.254")
        .a("www.ipfarm.net", "64.0.2.9")
        .listed("64.0.2.9", "ipbl.test", "127.0.0.2")
        .listed("64.0.2.10", "ipbl.test", "127.0.0.2")
        .start()
        .await
}

async fn daemon(dns: &TestDns, extra: &str) -> TestDaemon {
    TestDaemon::start(&format!(
        "dns-servers = [\"{}\"]\ndns-timeout = 1\nuri-bl = [\"uribl.test\"]\nuri-dns-bl = [\"ipbl.test\"]\n{extra}",
        dns.addr()
    ))
    .await
}

/// Sends one message with these headers (name, value) and raw body; returns the end-of-message answer.
async fn send(c: &mut MtaClient<UnixStream>, from: &str, headers: &[(&str, &str)], body: &str) -> Vec<Response> {
    c.command(&Command::Mail { sender: from.into(), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: "<bob@example.net>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Data).await.unwrap();
    for (n, v) in headers {
        c.command(&Command::Header { name: (*n).into(), value: (*v).into() }).await.unwrap();
    }
    c.command(&Command::EndOfHeaders).await.unwrap();
    c.command(&Command::Body(body.as_bytes().to_vec())).await.unwrap();
    let r = c.command(&Command::EndOfMessage(Vec::new())).await.unwrap();
    c.command(&Command::Abort).await.unwrap();
    r
}

/// Header lines of a test message.
type Headers<'a> = Vec<(&'a str, &'a str)>;

const PLAIN: &[(&str, &str)] = &[("Subject", "x"), ("Content-Type", "text/plain")];

fn sid(d: &TestDaemon) -> String {
    d.grep("#637 start").last().unwrap().split(' ').next().unwrap().to_string()
}

#[tokio::test]
async fn listed_uri_in_each_kind_of_part_is_rejected() {
    let dns = uri_dns().await;
    let d = daemon(&dns, "").await;
    let multipart = [("Subject", "x"), ("MIME-Version", "1.0"), ("Content-Type", "multipart/alternative; boundary=\"BB\"")];
    let bodies: Vec<(Headers, String, &str)> = vec![
        (PLAIN.to_vec(), "Visit http://www.evil.com/offer now.\r\n".into(), "evil.com"),
        (PLAIN.to_vec(), "Cheap at shop.spam.co.uk today\r\n".into(), "spam.co.uk"),
        (
            multipart.to_vec(),
            "--BB\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nSee http://ev=\r\nil.com/a=3Db\r\n--BB--\r\n".into(),
            "evil.com",
        ),
        (
            multipart.to_vec(),
            "--BB\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nR28gdG8gaHR0cHM6Ly9ldmlsLmNvbS9wYXRoIG5vdwo=\r\n--BB--\r\n".into(),
            "evil.com",
        ),
        (
            multipart.to_vec(),
            "--BB\r\nContent-Type: text/html\r\n\r\n<p><a href=\"http://www&#46;evil&#46;com/\">click</a></p>\r\n--BB--\r\n".into(),
            "evil.com",
        ),
    ];
    for (i, (headers, body, host)) in bodies.iter().enumerate() {
        let mut c = d.client().await;
        open_session(&mut c, "h.example", &format!("192.0.2.{}", 10 + i), "h.example").await;
        let r = send(&mut c, "<a@example.org>", headers, body).await;
        let s = sid(&d);
        assert_eq!(
            r,
            vec![Response::ReplyCode(format!("550 5.7.1 rejected content, black listed {host} by uribl.test. #762 #895 {s}"))],
            "case {i}"
        );
        d.wait_for(&format!("{s} #523 uri-bl found {host} uribl.test."), 1).await;
        let m = d.wait_for(&format!("{s} #720 message"), 1).await;
        assert!(m[0].contains("f=\"uri_bl"), "{}", m[0]);
    }
}

#[tokio::test]
async fn unlisted_error_codes_attachments_and_white_senders_pass() {
    let dns = uri_dns().await;
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("access.cf");
    std::fs::write(&map, "From:friend@example.org OK\n").unwrap();
    let d = daemon(&dns, &format!("access-map = \"{}\"", map.display())).await;
    let cases: Vec<(&str, Headers, &str)> = vec![
        ("<a@example.org>", PLAIN.to_vec(), "Fine: https://www.example.com/ and http://good.org/\r\n"),
        ("<a@example.org>", PLAIN.to_vec(), "Error code only: http://shady.net/\r\n"),
        (
            "<a@example.org>",
            vec![("Content-Type", "multipart/mixed; boundary=\"Z\"")],
            "--Z\r\nContent-Type: text/plain\r\n\r\nhello\r\n--Z\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\naHR0cDovL2V2aWwuY29tLw==\r\n--Z--\r\n",
        ),
        ("<friend@example.org>", PLAIN.to_vec(), "White-listed sender: http://evil.com/\r\n"),
    ];
    for (i, (from, headers, body)) in cases.iter().enumerate() {
        let mut c = d.client().await;
        open_session(&mut c, "h.example", &format!("192.0.2.{}", 30 + i), "h.example").await;
        assert_eq!(send(&mut c, from, headers, body).await, vec![Response::Continue], "case {i}");
    }
    assert!(d.grep("#523").is_empty(), "{:?}", d.grep("#523"));
}

#[tokio::test]
async fn uri_dns_bl_tests_host_addresses_and_ip_literals() {
    let dns = uri_dns().await;
    let d = daemon(&dns, "").await;
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.40", "h.example").await;
    let r = send(&mut c, "<a@example.org>", PLAIN, "Go http://www.ipfarm.net/x\r\n").await;
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.contains("black listed ipfarm.net by ipbl.test. #762 #895")), "{r:?}");
    d.wait_for("#523 uri-dns-bl found ipfarm.net ipbl.test.", 1).await;
    let r = send(&mut c, "<a@example.org>", PLAIN, "Go http://64.0.2.10/x\r\n").await;
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.contains("black listed 64.0.2.10 by ipbl.test. #762 #895")), "{r:?}");
}

#[tokio::test]
async fn discard_and_none_policies() {
    let dns = uri_dns().await;
    let d = daemon(&dns, "uri-bl-policy = \"discard\"").await;
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.50", "h.example").await;
    assert_eq!(send(&mut c, "<a@example.org>", PLAIN, "http://evil.com/\r\n").await, vec![Response::Discard]);
    d.wait_for("#785 discarded: black listed evil.com by uribl.test", 1).await;

    let d = daemon(&dns, "uri-bl-policy = \"none\"").await;
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.51", "h.example").await;
    assert_eq!(send(&mut c, "<a@example.org>", PLAIN, "http://evil.com/\r\n").await, vec![Response::Continue]);
    d.wait_for("#523 uri-bl found evil.com uribl.test.", 1).await;
}

#[tokio::test]
async fn spf_results_are_logged_with_the_sender() {
    let dns = TestDns::builder()
        .zone("test")
        .txt("pass.test", "v=spf1 ip4:192.0.2.0/24 -all")
        .txt("fail.test", "v=spf1 -all")
        .txt("helo.test", "v=spf1 a:helo.test ~all")
        .a("helo.test", "198.51.100.1")
        .start()
        .await;
    let d = TestDaemon::start(&format!("dns-servers = [\"{}\"]\ndns-timeout = 1", dns.addr())).await;
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.60", "helo.test").await;
    c.command(&Command::Mail { sender: "<a@pass.test>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Abort).await.unwrap();
    c.command(&Command::Mail { sender: "<a@fail.test>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    d.wait_for("#721 end", 1).await;
    let senders = d.grep("#717 sender");
    assert!(senders[0].contains("<a@pass.test>") && senders[0].contains("spf-mail=Pass spf-helo=SoftFail"), "{}", senders[0]);
    assert!(senders[1].contains("<a@fail.test>") && senders[1].contains("spf-mail=Fail spf-helo=SoftFail"), "{}", senders[1]);
}

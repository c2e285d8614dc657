//! Whole milter sessions against the in-process daemon: what the MTA gets back and what is logged.

mod common;

use std::time::Duration;

use common::{open_session, send_message, Message, TestDaemon};
use smtpf_milter::milter::codec::{proto, Command, Response};

#[tokio::test]
async fn two_messages_abort_between_and_quit() {
    let d = TestDaemon::start("").await;
    let mut c = d.client().await;
    let replies = open_session(&mut c, "mail.example.org", "192.0.2.10", "mail.example.org").await;
    assert!(replies.is_empty(), "no check answers at CONNECT/HELO: promised no reply, got {replies:?}");
    assert_ne!(c.protocol & proto::NR_CONN, 0);
    assert_ne!(c.protocol & proto::NOUNKNOWN, 0);

    let first = send_message(&mut c, &Message::simple("4XyZ1")).await;
    assert_eq!(first, vec![Response::Continue]);
    let big = Message {
        from: "<>",
        to: &["<a@example.net>", "<b@example.net>"],
        queue_id: "4XyZ2",
        message_id: "<m2@x>",
        body: &[b'x'; 60_000],
    };
    assert_eq!(send_message(&mut c, &big).await, vec![Response::Continue]);
    c.command(&Command::Quit).await.unwrap();
    assert!(c.recv().await.unwrap().is_none(), "milter closes after QUIT");

    let end = d.wait_for("#721 end", 1).await;
    let start = d.grep("#637 start");
    assert_eq!(start.len(), 1);
    let sid = start[0].split(' ').next().unwrap().to_string();
    assert_eq!(sid.len(), 18, "smtpf session id layout: {sid}");
    // The test runtime has one worker thread; one connection is open and it is the first this second.
    assert_eq!(start[0], format!("{sid} #637 start mail.example.org [192.0.2.10]:4711 f=\"\" th=1 cn=1 cs=1"));

    let senders = d.grep("#717 sender");
    assert_eq!(senders.len(), 2);
    assert!(senders[0].starts_with(&format!("{sid} #717 sender <alice@example.org> tid=")), "{}", senders[0]);
    assert!(senders[0].ends_with("f=\"\" spf-mail=None spf-helo=None x=\"\""), "{}", senders[0]);
    assert!(senders[1].contains("#717 sender <> tid="), "{}", senders[1]);
    let tid1 = senders[0].split("tid=").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let tid2 = senders[1].split("tid=").nth(1).unwrap().split(' ').next().unwrap().to_string();
    assert_ne!(tid1, tid2);
    assert_eq!(&tid1[6..16], &sid[6..16], "transaction ids share pid and session counter");

    assert_eq!(d.grep("#718 recipient").len(), 3);
    assert!(d.grep("#718 recipient")[0].ends_with(&format!("#718 recipient <bob@example.net> tid={tid1} f=\"\" x=\"\"")));

    // The Postfix queue id leads to the session with one grep.
    let q1 = d.grep("4XyZ1");
    assert_eq!(q1, vec![format!("{sid} #2005 queue-id 4XyZ1 tid={tid1}")]);
    assert_eq!(d.grep("#2005 queue-id 4XyZ2").len(), 1, "logged once per transaction");

    let messages = d.grep("#720 message");
    assert_eq!(messages.len(), 2);
    // Headers: "Received: ...\r\n" 36, "Message-ID: <m1@example.org>\r\n" 32, "Subject: test\r\n" 15, blank line 2, body 8.
    let expected_b1 = 4
        + "Received".len()
        + "from client.example.org".len()
        + 4
        + "Message-ID".len()
        + "<m1@example.org>".len()
        + 4
        + "Subject".len()
        + 4
        + 2
        + 8;
    assert_eq!(messages[0], format!("{sid} #720 message tid={tid1} f=\"\" b={expected_b1} r=1/0 m=<m1@example.org> R=0 x=\"\""));
    assert!(messages[1].contains("r=2/0 m=<m2@x> R=0"), "{}", messages[1]);

    assert_eq!(end.len(), 1);
    let expected_total =
        expected_b1 + (messages[1].split(" b=").nth(1).unwrap().split(' ').next().unwrap().parse::<usize>().unwrap());
    assert!(
        end[0].starts_with(&format!("{sid} #721 end i=192.0.2.10 p=\"mail.example.org\" f=\"quit\" h=\"mail.example.org\" m=2/2 b={expected_total} R=0 t=")),
        "{}",
        end[0]
    );
    assert!(end[0].ends_with(" l=\"\""), "{}", end[0]);
}

#[tokio::test]
async fn unverified_client_and_ipv6_flags() {
    let d = TestDaemon::start("").await;
    let mut c = d.client().await;
    open_session(&mut c, "[2001:db8::25]", "IPv6:2001:db8::25", "[IPv6:2001:db8::25]").await;
    c.command(&Command::Quit).await.unwrap();
    let end = d.wait_for("#721 end", 1).await;
    assert!(d.grep("#637 start [2001:db8::25]:4711 f=\"forged,no_ptr,ipv6\"").len() == 1, "{:?}", d.lines());
    assert!(
        end[0].contains(
            "#721 end i=2001:db8::25 p=\"\" f=\"forged,helo_ip,no_ptr,quit,ipv6\" h=\"[IPv6:2001:db8::25]\" m=0/0 b=0 R=0"
        ),
        "{}",
        end[0]
    );
}

#[tokio::test]
async fn postfix_client_ptr_and_resolve_macros() {
    let d = TestDaemon::start("").await;
    let mut c = d.client().await;
    c.negotiate(6, 0x1ff, 0x1fffff).await.unwrap();
    c.macros(b'C', &[("{client_ptr}", "dyn-1-2.isp.example"), ("{client_resolve}", "FORGED")]).await.unwrap();
    c.command(&Command::Connect {
        hostname: "[198.51.100.7]".into(),
        family: smtpf_milter::milter::codec::Family::Inet,
        port: 25,
        address: "198.51.100.7".into(),
    })
    .await
    .unwrap();
    drop(c);
    let end = d.wait_for("#721 end", 1).await;
    assert!(end[0].contains("i=198.51.100.7 p=\"dyn-1-2.isp.example\" f=\"forged\""), "{}", end[0]);
    assert!(!end[0].contains("quit"), "peer closed without QUIT");
}

#[tokio::test]
async fn loopback_client_is_localhost() {
    let d = TestDaemon::start("").await;
    let mut c = d.client().await;
    open_session(&mut c, "localhost", "127.0.0.1", "localhost").await;
    c.command(&Command::Quit).await.unwrap();
    let end = d.wait_for("#721 end", 1).await;
    assert!(end[0].contains("f=\"localhost,quit\""), "{}", end[0]);
}

#[tokio::test]
async fn repeated_helo_then_abort_like_postfix() {
    let d = TestDaemon::start("").await;
    let mut c = d.client().await;
    open_session(&mut c, "mail.example.org", "192.0.2.10", "first.example.org").await;
    // Postfix reports the new HELO, then resets with ABORT, even with no MAIL open.
    c.command(&Command::Helo { name: "second.example.org".into() }).await.unwrap();
    c.command(&Command::Abort).await.unwrap();
    c.command(&Command::Abort).await.unwrap();
    assert_eq!(send_message(&mut c, &Message::simple("Q1")).await, vec![Response::Continue]);
    c.command(&Command::Quit).await.unwrap();
    let end = d.wait_for("#721 end", 1).await;
    assert!(end[0].contains("h=\"second.example.org\" m=1/1"), "{}", end[0]);
}

#[tokio::test]
async fn mail_without_abort_starts_a_new_transaction() {
    let d = TestDaemon::start("").await;
    let mut c = d.client().await;
    open_session(&mut c, "mail.example.org", "192.0.2.10", "h.example.org").await;
    c.command(&Command::Mail { sender: "<a@x.example>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: "<b@y.example>".into(), params: vec![] }).await.unwrap();
    // Sendmail-style: a new MAIL without ABORT after an RSET.
    assert_eq!(send_message(&mut c, &Message::simple("Q2")).await, vec![Response::Continue]);
    c.command(&Command::Quit).await.unwrap();
    let end = d.wait_for("#721 end", 1).await;
    assert!(end[0].contains("m=1/2"), "{}", end[0]);
    assert_eq!(d.grep("#720 message").len(), 1);
}

#[tokio::test]
async fn sendmail_style_session_with_macros_on_mail() {
    // Sendmail sends the queue id already at MAIL and bracketed IPv6 hostnames.
    let d = TestDaemon::start("").await;
    let mut c = d.client().await;
    c.negotiate(6, 0x1ff, 0x1fffff).await.unwrap();
    c.macros(b'C', &[("j", "mx.example.net"), ("{daemon_name}", "MTA"), ("{if_name}", "mx")]).await.unwrap();
    c.command(&Command::Connect {
        hostname: "client.example.org".into(),
        family: smtpf_milter::milter::codec::Family::Inet,
        port: 1025,
        address: "192.0.2.99".into(),
    })
    .await
    .unwrap();
    c.command(&Command::Helo { name: "client.example.org".into() }).await.unwrap();
    c.macros(b'M', &[("i", "5AMq1X012345"), ("{mail_host}", "example.org.")]).await.unwrap();
    c.command(&Command::Mail { sender: "<a@example.org>".into(), params: vec!["BODY=8BITMIME".into()] }).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    d.wait_for("#721 end", 1).await;
    assert_eq!(d.grep("#2005 queue-id 5AMq1X012345").len(), 1);
    assert!(d.grep("#717 sender <a@example.org>")[0].contains("f=\"8bitmime\""));
}

#[tokio::test]
async fn concurrent_connections_are_served() {
    let d = TestDaemon::start("").await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let socket = d.socket.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = smtpf_milter::milter::client::MtaClient::connect_unix(&socket).await.unwrap();
            let ip = format!("192.0.2.{}", i % 250 + 1);
            open_session(&mut c, "client.example.org", &ip, "client.example.org").await;
            let qid = format!("Q{i}");
            let r = send_message(&mut c, &Message::simple(&qid)).await;
            c.command(&Command::Quit).await.unwrap();
            r
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), vec![Response::Continue]);
    }
    let ends = d.wait_for("#721 end", 200).await;
    assert_eq!(ends.len(), 200);
    let mut sids: Vec<_> = ends.iter().map(|l| l.split(' ').next().unwrap().to_string()).collect();
    sids.sort();
    sids.dedup();
    assert_eq!(sids.len(), 200, "every session has its own id");
    for _ in 0..100 {
        if d.running().active() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("connections still counted as active");
}

#[tokio::test]
async fn bare_connect_and_close_is_quiet() {
    let d = TestDaemon::start("verbose = \"info,milter\"").await;
    drop(d.client().await);
    let mut c = d.client().await;
    c.negotiate(6, 0x1ff, 0x1fffff).await.unwrap();
    drop(c);
    d.wait_for("#2017 milter connection closed before CONNECT", 2).await;
    assert!(d.grep("#721").is_empty());
    assert!(d.grep("#2001").is_empty(), "an empty session is not an error");
    assert_eq!(d.grep("#2003 negotiated version=6").len(), 1);
}

#[tokio::test]
async fn older_protocol_versions_are_served() {
    let d = TestDaemon::start("").await;
    let mut c = d.client().await;
    let r = c.negotiate(2, 0x3f, 0x7f).await.unwrap();
    assert!(matches!(r, Response::OptNeg { version: 2, ref macros, .. } if macros.is_empty()), "{r:?}");
    // Version 2 has no no-reply flags: every step is answered.
    let got = c
        .command(&Command::Connect {
            hostname: "h.example".into(),
            family: smtpf_milter::milter::codec::Family::Inet,
            port: 25,
            address: "192.0.2.1".into(),
        })
        .await
        .unwrap();
    assert_eq!(got, vec![Response::Continue]);
    assert_eq!(c.command(&Command::Helo { name: "h.example".into() }).await.unwrap(), vec![Response::Continue]);
    assert_eq!(send_message(&mut c, &Message::simple("V2")).await, vec![Response::Continue]);
}

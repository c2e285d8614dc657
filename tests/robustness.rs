//! Bad input ends in a numbered line and at most that one connection closed; the daemon keeps
//! serving everyone else.

mod common;

use std::time::Duration;

use common::{open_session, send_message, Message, TestDaemon};
use smtpf_milter::milter::codec::{Command, Family, Response};

/// Sends `bytes` on a fresh connection after negotiation and expects the milter to close it with
/// a #2001 line containing `why`.
async fn refused(d: &TestDaemon, negotiate: bool, bytes: &[u8], why: &str) {
    let before = d.grep("#2001").len();
    let mut c = d.client().await;
    if negotiate {
        c.negotiate(6, 0x1ff, 0x1fffff).await.unwrap();
    }
    c.send_raw(bytes).await.unwrap();
    assert!(matches!(c.recv().await, Ok(None) | Err(_)), "connection closed for {why}");
    let lines = d.wait_for("#2001 milter protocol error", before + 1).await;
    assert!(lines.last().unwrap().contains(why), "expected {why:?} in {:?}", lines.last());
}

#[tokio::test]
async fn malformed_frames_close_only_that_connection() {
    let d = TestDaemon::start("").await;
    // A healthy session stays open across all the bad ones.
    let mut good = d.client().await;
    open_session(&mut good, "mail.example.org", "192.0.2.10", "mail.example.org").await;

    refused(&d, true, &[0x7f, 0xff, 0xff, 0xff, b'B'], "exceeds the limit").await;
    refused(&d, true, &[0xff, 0xff, 0xff, 0xf0, b'B'], "negative frame length").await;
    refused(&d, true, &[0, 0, 0, 0], "frame length 0").await;
    refused(&d, true, &[0, 0, 0, 1, b'Z'], "unknown command 'Z'").await;
    refused(&d, true, &[0, 0, 0, 3, b'C', b'x', 0], "malformed 'C'").await;
    refused(&d, true, &[0, 0, 0, 4, b'H', b'a', b'b', b'c'], "not NUL-terminated").await;
    refused(&d, false, &[0, 0, 0, 1, b'A', 0, 0, 0, 4, b'H', b'a', b'b', 0], "before option negotiation").await;
    refused(&d, true, &[0, 0, 0, 1, b'T'], "DATA outside a MAIL transaction").await;
    refused(&d, true, &[0, 0, 0, 4, b'M', b'<', b'>', 0], "MAIL before CONNECT").await;

    // Truncated frame: half a payload, then the peer half-closes its side.
    let before = d.grep("#2001").len();
    let c = d.client().await;
    drop(c);
    let mut c = d.client().await;
    c.negotiate(6, 0x1ff, 0x1fffff).await.unwrap();
    c.send_raw(&[0, 0, 0, 20, b'H', b'a']).await.unwrap();
    drop(c);
    let lines = d.wait_for("#2001 milter protocol error", before + 1).await;
    assert!(lines.last().unwrap().contains("connection closed inside a frame"), "{lines:?}");

    // The good session still works.
    assert_eq!(send_message(&mut good, &Message::simple("OK1")).await, vec![Response::Continue]);
    good.command(&Command::Quit).await.unwrap();
    d.wait_for("#721 end", 1).await;
}

#[tokio::test]
async fn second_connect_and_repeated_negotiation_are_refused() {
    let d = TestDaemon::start("").await;
    let mut c = d.client().await;
    open_session(&mut c, "a.example", "192.0.2.1", "a.example").await;
    c.send(&Command::Connect { hostname: "b.example".into(), family: Family::Inet, port: 1, address: "192.0.2.2".into() })
        .await
        .unwrap();
    assert!(c.recv().await.unwrap().is_none());
    let e = d.wait_for("#2001", 1).await;
    assert!(e[0].contains("second CONNECT"), "{e:?}");
    // The session that broke the protocol still gets its summary line.
    d.wait_for("#721 end i=192.0.2.1", 1).await;

    let mut c = d.client().await;
    c.negotiate(6, 0x1ff, 0x1fffff).await.unwrap();
    c.send(&Command::OptNeg { version: 6, actions: 0x1ff, protocol: 0x1fffff }).await.unwrap();
    assert!(c.recv().await.unwrap().is_none());
    assert!(d.wait_for("#2001", 2).await[1].contains("option negotiation repeated"));
}

#[tokio::test]
async fn unsupported_version_is_refused_with_a_line() {
    let d = TestDaemon::start("").await;
    let mut c = d.client().await;
    c.send(&Command::OptNeg { version: 1, actions: 0xf, protocol: 0x3f }).await.unwrap();
    assert!(c.recv().await.unwrap().is_none());
    d.wait_for("#2004 MTA offers milter protocol version 1; versions 2 to 6 are supported", 1).await;
}

#[tokio::test]
async fn silent_peer_is_timed_out() {
    let d = TestDaemon::start("milter-timeout = 1").await;
    let mut c = d.client().await;
    open_session(&mut c, "slow.example", "192.0.2.3", "slow.example").await;
    // Say nothing: the milter gives up after milter-timeout and closes.
    let closed = tokio::time::timeout(Duration::from_secs(10), c.recv()).await.expect("closed within the timeout");
    assert!(matches!(closed, Ok(None)));
    d.wait_for("#2002 milter connection idle for 1 seconds, closing", 1).await;
    d.wait_for("#721 end i=192.0.2.3", 1).await;
}

#[tokio::test]
async fn garbage_strings_do_not_end_the_session() {
    let d = TestDaemon::start("").await;
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.4", "h.example").await;
    // 8-bit junk in the envelope and headers is common in spam; it is kept lossily.
    let mut raw = Vec::new();
    let payload = b"<caf\xe9@example.org>\0";
    raw.extend_from_slice(&((payload.len() + 1) as u32).to_be_bytes());
    raw.push(b'M');
    raw.extend_from_slice(payload);
    c.send_raw(&raw).await.unwrap();
    c.command(&Command::Rcpt { recipient: "<x@example.net>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Header { name: "Subject".into(), value: "\u{fffd}".into() }).await.unwrap();
    let eom = c.command(&Command::EndOfMessage(Vec::new())).await.unwrap();
    assert_eq!(eom, vec![Response::Continue]);
    assert!(d.grep("#717 sender <caf\u{fffd}@example.org>").len() == 1, "{:?}", d.lines());
}

#[tokio::test]
async fn huge_macro_and_header_floods_stay_bounded() {
    let d = TestDaemon::start("").await;
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.5", "h.example").await;
    c.command(&Command::Mail { sender: "<a@b.example>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: "<c@d.example>".into(), params: vec![] }).await.unwrap();
    // Many large macro packets for the same stage replace each other instead of piling up.
    for _ in 0..200 {
        c.macros(b'R', &[("{rcpt_addr}", &"x".repeat(60_000))]).await.unwrap();
    }
    for _ in 0..2000 {
        c.command(&Command::Header { name: "X-Junk".into(), value: "y".repeat(1000) }).await.unwrap();
    }
    assert_eq!(c.command(&Command::EndOfMessage(Vec::new())).await.unwrap(), vec![Response::Continue]);
    let m = d.wait_for("#720 message", 1).await;
    assert!(m[0].contains(&format!("b={}", 2000 * (6 + 1000 + 4))), "{}", m[0]);
}

//! Library events (hickory's `tracing` events) in the daemon's numbered log: a real resolver
//! warning provoked by a DNS server that answers with the wrong message id, the verbose gate of
//! debug events per daemon, the level filter that keeps them free while off, and text that
//! cannot break out of its line.
//!
//! The subscriber is process-wide, so the tests of this file run one at a time.

mod common;

use std::time::Duration;

use common::{open_session, TestDaemon};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tracing::level_filters::LevelFilter;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// A UDP "name server" on 127.0.0.1 that answers every query with a copy of it whose message id
/// is wrong, as a spoofer guessing ids would. Stops when the test's runtime ends.
async fn wrong_id_server() -> std::net::SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            if len < 12 {
                continue;
            }
            buf[0] ^= 0x5a; // another id
            buf[2] |= 0x80; // QR: a response
            let _ = socket.send_to(&buf[..len], from).await;
        }
    });
    addr
}

/// Gives events emitted just now a moment to reach the in-memory logs.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_resolver_warning_is_a_numbered_line_of_the_daemon() {
    let _serial = SERIAL.lock().await;
    let server = wrong_id_server().await;
    let d = TestDaemon::start(&format!("dns-servers = [\"{server}\"]\ndns-timeout = 1\ndns-bl = [\"bl.test\"]\n")).await;
    let mut c = d.client().await;
    // CONNECT asks bl.test about the client; every answer has the wrong id, so hickory warns and
    // the lookup times out (#2020, counted as not listed).
    open_session(&mut c, "[192.0.2.2]", "192.0.2.2", "client.example").await;
    let warned = d.wait_for("#2027 hickory_net::udp::udp_client_stream: ignoring response with wrong message id", 1).await;
    assert!(warned[0].starts_with("#2027 "), "a process line, not a session's: {}", warned[0]);
    assert!(warned[0].contains(" expected_id=") && warned[0].contains(" received_id="), "{}", warned[0]);
    d.wait_for("#2020 dns-bl bl.test. lookup of", 1).await;
    // The resolver's per-query debug events are off by default.
    assert!(d.grep("#2028 ").is_empty(), "{:?}", d.grep("#2028 "));
}

#[tokio::test]
async fn debug_events_follow_each_daemons_verbose_words_and_cost_a_level_check_when_off() {
    let _serial = SERIAL.lock().await;
    assert_eq!(LevelFilter::current(), LevelFilter::OFF, "no daemon runs: nothing is recorded");

    let mut quiet = TestDaemon::start("").await;
    assert_eq!(LevelFilter::current(), LevelFilter::WARN, "debug events stop at the level check");
    tracing::debug!(target: "hickory_proto::test", "debug marker one");
    tracing::info!(target: "hickory_proto::test", "info marker one");
    tracing::warn!(target: "hickory_proto::test", zone = "bl.test", "warn marker one");
    tracing::error!(target: "hickory_proto::test", "error marker one");
    settle().await;
    assert_eq!(
        quiet.grep("marker one"),
        ["#2027 hickory_proto::test: warn marker one zone=\"bl.test\"", "#2026 hickory_proto::test: error marker one",]
    );

    // A second daemon in the same process asks for library debug lines; only its log gets them.
    let mut chatty = TestDaemon::start("verbose = [\"info\", \"library\"]\n").await;
    assert_eq!(LevelFilter::current(), LevelFilter::DEBUG);
    tracing::debug!(target: "hickory_proto::test", n = 2, "debug marker two");
    tracing::trace!(target: "hickory_proto::test", "trace marker two");
    tracing::warn!(target: "hickory_proto::test", "warn marker two");
    settle().await;
    assert_eq!(
        chatty.grep("marker two"),
        ["#2028 hickory_proto::test: debug marker two n=2", "#2027 hickory_proto::test: warn marker two",]
    );
    assert_eq!(quiet.grep("marker two"), ["#2027 hickory_proto::test: warn marker two"]);

    // Stopped, it gets nothing more, and the level check closes again.
    chatty.stop(Duration::from_secs(5)).await;
    assert_eq!(LevelFilter::current(), LevelFilter::WARN);
    tracing::debug!(target: "hickory_proto::test", "debug marker three");
    tracing::warn!(target: "hickory_proto::test", "warn marker three");
    settle().await;
    assert!(chatty.grep("marker three").is_empty());
    assert_eq!(quiet.grep("marker three"), ["#2027 hickory_proto::test: warn marker three"]);

    // A reload that adds the word turns them on for that daemon.
    let text = std::fs::read_to_string(&quiet.config_path).unwrap();
    std::fs::write(&quiet.config_path, format!("{text}verbose = \"info,library\"\n")).unwrap();
    quiet.running().reload().unwrap();
    assert_eq!(LevelFilter::current(), LevelFilter::DEBUG);
    tracing::debug!(target: "hickory_proto::test", "debug marker four");
    settle().await;
    assert_eq!(quiet.grep("marker four"), ["#2028 hickory_proto::test: debug marker four"]);

    quiet.stop(Duration::from_secs(5)).await;
    assert_eq!(LevelFilter::current(), LevelFilter::OFF);
}

#[tokio::test]
async fn library_text_cannot_forge_a_line() {
    let _serial = SERIAL.lock().await;
    let d = TestDaemon::start("").await;
    tracing::warn!(target: "hickory_proto::test", "bad name\r\n#721 forged");
    tracing::warn!(target: "hickory_proto::test", name = "x\r\n#721 forged field", "odd field");
    tracing::warn!(target: "hickory_proto::test\n#721 forged target", "odd target");
    tracing::warn!(target: "hickory_proto::test", "{}", "x".repeat(10_000));
    settle().await;
    let lines = d.lines();
    assert!(lines.iter().all(|l| !l.chars().any(char::is_control)), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("#721")), "{lines:?}");
    assert_eq!(
        d.grep("forged"),
        [
            "#2027 hickory_proto::test: bad name\\r\\n#721 forged",
            "#2027 hickory_proto::test: odd field name=\"x\\r\\n#721 forged field\"",
            "#2027 hickory_proto::test\\n#721 forged target: odd target",
        ]
    );
    let long = d.grep("xxxxxxxx");
    assert_eq!(long.len(), 1);
    assert!(long[0].len() < 2100 && long[0].ends_with("x..."), "{} bytes", long[0].len());
}

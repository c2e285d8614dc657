//! The real binary: a greylist record committed before `kill -9` survives the restart, and
//! `smtpf-milter grey list/allow/delete/stats` read and change the same store while it runs.

mod common;

use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};

use common::{open_session, spawn_daemon, KillOnDrop};
use smtpf_milter::milter::client::MtaClient;
use smtpf_milter::milter::codec::{Command, Response};

fn bin() -> Proc {
    Proc::new(env!("CARGO_BIN_EXE_smtpf-milter"))
}

fn start(cfg: &std::path::Path, sock: &std::path::Path) -> KillOnDrop {
    spawn_daemon(cfg, sock, Stdio::null())
}

fn grey(cfg: &std::path::Path, args: &[&str]) -> String {
    let out = bin().args(["--config", cfg.to_str().unwrap(), "grey"]).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

async fn data_answer(sock: &std::path::Path) -> Vec<Response> {
    let mut c = MtaClient::connect_unix(sock).await.unwrap();
    open_session(&mut c, "[192.0.2.77]", "192.0.2.77", "h.example").await;
    c.command(&Command::Mail { sender: "<a@example.org>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: "<b@example.net>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Data).await.unwrap()
}

#[test]
fn records_survive_kill_9_and_the_grey_tool_manages_them() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, cfg) = common::config_file(dir.path(), "mail-require-mx = false\ndupmsg-ttl = 0\n");
    let rt = tokio::runtime::Runtime::new().unwrap();

    let mut first = start(&cfg, &sock);
    let r = rt.block_on(data_answer(&sock));
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.starts_with("421 4.7.0 try again later #552")), "{r:?}");
    // The record reaches the file within milliseconds of the answer (it is written detached);
    // once there, SIGKILL loses nothing.
    let written = Instant::now();
    while !grey(&cfg, &["list", "--pending"]).contains("192.0.2.77,a@example.org,b@example.net") {
        assert!(written.elapsed() < Duration::from_secs(5), "the greylist record never reached the file");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut child = first.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    let listing = grey(&cfg, &["list", "--pending"]);
    assert!(listing.contains("pending") && listing.contains("192.0.2.77,a@example.org,b@example.net"), "{listing}");
    let json = grey(&cfg, &["list", "--json", "192.0.2.77"]);
    assert!(json.starts_with("{\"key\":\"192.0.2.77,a@example.org,b@example.net\",\"state\":\"pending\""), "{json}");
    assert!(grey(&cfg, &["stats"]).contains("grey pending 1\n"));

    // The restarted daemon (stale socket removed) still knows the tuple; an admin releases it.
    let _second = start(&cfg, &sock);
    assert!(matches!(&rt.block_on(data_answer(&sock))[..], [Response::ReplyCode(t)] if t.starts_with("421 ")));
    assert!(grey(&cfg, &["allow", "192.0.2.77,a@example.org,b@example.net"]).contains("passed"));
    // The daemon notices the outside change within a fraction of a second.
    let released = Instant::now();
    while rt.block_on(data_answer(&sock)) != vec![Response::Continue] {
        assert!(released.elapsed() < Duration::from_secs(5), "not released while the daemon runs");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(grey(&cfg, &["list", "--passed"]).contains("192.0.2.77,a@example.org,b@example.net"));
    assert!(grey(&cfg, &["delete", "192.0.2.77,a@example.org,b@example.net"]).contains("deleted"));
    assert!(grey(&cfg, &["delete", "nothing-here"]).contains("not found"));
}

/// One message from `ip`, sender `from`, to b@example.net: the answer at DATA.
async fn data_from(sock: &std::path::Path, ip: &str, from: &str) -> Vec<Response> {
    let mut c = MtaClient::connect_unix(sock).await.unwrap();
    open_session(&mut c, &format!("[{ip}]"), ip, "h.example").await;
    c.command(&Command::Mail { sender: format!("<{from}>"), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: "<b@example.net>".into(), params: vec![] }).await.unwrap();
    let r = c.command(&Command::Data).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    r
}

/// Waits until `grey ARGS` prints `needle` (records are written detached, within milliseconds).
fn grey_until(cfg: &std::path::Path, args: &[&str], needle: &str) -> String {
    let start = Instant::now();
    loop {
        let out = grey(cfg, args);
        if out.contains(needle) {
            return out;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "grey {args:?} never showed {needle:?}: {out}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The auto-whitelist's records are greylist records like any other: the grey tool lists a
/// candidate's count and a whitelisted client, allows a client by hand, and deleting the record
/// puts the client back under greylisting.
#[test]
fn the_grey_tool_lists_allows_and_deletes_auto_whitelist_records() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, cfg) = common::config_file(
        dir.path(),
        "mail-require-mx = false\ndupmsg-ttl = 0\ngrey-key = \"mail,rcpt\"\ngrey-auto-whitelist-clients = 2\n",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _daemon = start(&cfg, &sock);
    let temp_failed = |r: &[Response]| matches!(r, [Response::ReplyCode(t)] if t.starts_with("451 4.7.0 try again later #552"));

    // The daemon sees changes made from outside within a fraction of a second (its cache
    // checks the file's version): ask again until it does.
    let until = |ip: &str, from: &str, passed: bool| {
        let start = Instant::now();
        loop {
            let r = rt.block_on(data_from(&sock, ip, from));
            if (r == vec![Response::Continue]) == passed {
                assert!(passed || temp_failed(&r), "{r:?}");
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "{ip} {from}: still {r:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // One message of 192.0.2.80 passes (its tuple released by hand): a candidate with count 1.
    assert!(temp_failed(&rt.block_on(data_from(&sock, "192.0.2.80", "a@example.org"))));
    grey_until(&cfg, &["list", "--pending"], "a@example.org,b@example.net");
    grey(&cfg, &["allow", "a@example.org,b@example.net"]);
    until("192.0.2.80", "a@example.org", true);
    let listing = grey_until(&cfg, &["list", "--json", "awl:"], "awl:192.0.2.80");
    assert!(listing.contains("\"key\":\"awl:192.0.2.80\",\"state\":\"pending\""), "a candidate, not yet whitelisted: {listing}");
    assert!(temp_failed(&rt.block_on(data_from(&sock, "192.0.2.80", "c@example.org"))), "one pass is not enough");

    // The admin whitelists it by hand: its new tuples pass at once.
    assert!(grey(&cfg, &["allow", "awl:192.0.2.80"]).contains("awl:192.0.2.80 passed"));
    assert!(grey(&cfg, &["list", "--passed"]).contains("awl:192.0.2.80"));
    until("192.0.2.80", "d@example.org", true);
    assert!(temp_failed(&rt.block_on(data_from(&sock, "192.0.2.81", "d@example.org"))), "another client is still greylisted");

    // Deleted, the client is greylisted again.
    assert!(grey(&cfg, &["delete", "awl:192.0.2.80"]).contains("deleted"));
    until("192.0.2.80", "e@example.org", false);
}

//! The Redis store against a real `redis-server` started for each test on a free loopback port
//! (never a mock): record semantics, the greylist state machine through whole milter sessions,
//! two milter instances sharing one Redis, concurrent first sight, Redis stopped or stalled while
//! mail flows (fail open, one line per outage, recovery), native TTLs, and the `grey` tool.
//!
//! When no `redis-server` is installed every test prints `SKIP: ...` and passes; CI installs it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use common::{open_session, send_message, Message, TestDaemon};
use smtpf_milter::config::Config;
use smtpf_milter::ids::unix_now;
use smtpf_milter::milter::client::MtaClient;
use smtpf_milter::milter::codec::{Command, Response};
use smtpf_milter::store::{Record, Store, StoreError};

/// A `redis-server` child on a loopback port, killed when dropped.
struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server, or says why not (`SKIP: ...` on stderr) and returns `None`.
    fn start(test: &str) -> Option<RedisServer> {
        let Some(binary) = redis_binary() else {
            eprintln!("SKIP: {test}: redis-server is not installed (/usr/bin/redis-server or on PATH)");
            return None;
        };
        let mut server = RedisServer { binary, port: free_port(), dir: tempfile::tempdir().unwrap(), child: None };
        server.launch();
        Some(server)
    }

    fn launch(&mut self) {
        let child = Proc::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (its data is gone: no persistence).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// SIGSTOP / SIGCONT: a server that accepts connections but answers nothing.
    fn pause(&self, paused: bool) {
        let pid = nix::unistd::Pid::from_raw(self.child.as_ref().unwrap().id() as i32);
        let sig = if paused { nix::sys::signal::Signal::SIGSTOP } else { nix::sys::signal::Signal::SIGCONT };
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// A connection for inspecting what the milter stored.
    async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            // A paused server ignores SIGKILL only until continued; make sure it goes.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGCONT);
        }
        self.stop();
    }
}

fn redis_binary() -> Option<PathBuf> {
    let usual = PathBuf::from("/usr/bin/redis-server");
    if usual.is_file() {
        return Some(usual);
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("redis-server")).find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

macro_rules! redis_or_skip {
    ($test:expr) => {
        match RedisServer::start($test) {
            Some(r) => r,
            None => return,
        }
    };
}

/// TOML selecting the Redis store.
fn redis_toml(r: &RedisServer, prefix: &str, extra: &str) -> String {
    format!("cache-type = \"redis\"\ncache-redis-url = \"{}\"\ncache-key-prefix = \"{prefix}\"\n{extra}", r.url())
}

/// A store opened the way the daemon opens it.
async fn open_store(r: &RedisServer, prefix: &str) -> Store {
    let config = Config::from_toml(&redis_toml(r, prefix, ""), None).unwrap();
    Store::open(&config.store_spec(), None).await.unwrap()
}

async fn raw_get(c: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(c).await.unwrap()
}

async fn ttl(c: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query_async(c).await.unwrap()
}

/// The record the milter stored under `key` (prefix included), as (value, created, expires).
async fn stored(c: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<(String, i64, i64)> {
    let raw = raw_get(c, key).await?;
    let mut p = raw.splitn(3, ' ');
    let created = p.next()?.parse().ok()?;
    let expires = p.next()?.parse().ok()?;
    Some((p.next()?.to_string(), created, expires))
}

async fn all_keys(c: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(c).await.unwrap();
    keys.sort();
    keys
}

/// One session up to DATA (MAIL, RCPTs, DATA); returns the answer to DATA and aborts.
async fn data_answer(socket: &Path, ip: &str, from: &str, to: &[&str]) -> Vec<Response> {
    let mut c = MtaClient::connect_unix(socket).await.unwrap();
    open_session(&mut c, &format!("[{ip}]"), ip, "client.example.org").await;
    c.command(&Command::Mail { sender: from.into(), params: vec![] }).await.unwrap();
    for r in to {
        c.command(&Command::Rcpt { recipient: (*r).into(), params: vec![] }).await.unwrap();
    }
    let answer = c.command(&Command::Data).await.unwrap();
    c.command(&Command::Abort).await.unwrap();
    answer
}

fn is_grey(r: &[Response], code: &str) -> bool {
    matches!(r, [Response::ReplyCode(t)] if t.starts_with(&format!("{code} 4.7.0 try again later #552")))
}

const NOW: i64 = 1_700_000_000;

#[tokio::test]
async fn record_semantics_match_the_sqlite_store() {
    let r = redis_or_skip!("record_semantics_match_the_sqlite_store");
    let store = open_store(&r, "t[1]*:").await;
    let mut c = r.client().await;

    // Liveness follows the caller's clock, not Redis's.
    store.put("grey:a", Record::new("4", NOW, NOW + 100)).await.unwrap();
    assert_eq!(store.get("grey:a", NOW + 99).await.unwrap(), Some(Record::new("4", NOW, NOW + 100)));
    assert_eq!(store.get("grey:a", NOW + 100).await.unwrap(), None);
    assert_eq!(raw_get(&mut c, "t[1]*:grey:a").await.as_deref(), Some("1700000000 1700000100 4"));

    // First sight: a live record wins; an expired one (at `now`) is replaced.
    assert_eq!(
        store.put_if_absent("grey:a", Record::new("4", NOW + 5, NOW + 500), NOW + 5).await.unwrap(),
        Some(Record::new("4", NOW, NOW + 100))
    );
    assert_eq!(store.put_if_absent("grey:a", Record::new("4", NOW + 200, NOW + 900), NOW + 200).await.unwrap(), None);
    assert_eq!(store.get("grey:a", NOW + 200).await.unwrap(), Some(Record::new("4", NOW + 200, NOW + 900)));
    // Two hosts racing with clocks apart: one record, with the earlier creation time.
    assert_eq!(store.put_if_absent("grey:b", Record::new("4", NOW + 3, NOW + 90), NOW + 3).await.unwrap(), None);
    assert_eq!(
        store.put_if_absent("grey:b", Record::new("4", NOW, NOW + 87), NOW).await.unwrap(),
        Some(Record::new("4", NOW, NOW + 90))
    );
    assert_eq!(store.get("grey:b", NOW + 1).await.unwrap(), Some(Record::new("4", NOW, NOW + 90)));

    // Values with spaces (grey-content hashes) survive.
    store.put("grey:c", Record::new("4 h1 h2", NOW, NOW + 50)).await.unwrap();
    assert_eq!(store.get("grey:c", NOW).await.unwrap().unwrap().value, "4 h1 h2");

    // Garbage under our keys reads as absent (or an error), never a panic; first sight replaces it.
    for (k, v) in [
        ("t[1]*:grey:g1", "garbage"),
        ("t[1]*:grey:g2", "1 x 4"),
        ("t[1]*:grey:g3", ""),
        ("t[1]*:grey:g4", "99999999999999999999999 1 4"),
    ] {
        redis::cmd("SET").arg(k).arg(v).query_async::<()>(&mut c).await.unwrap();
    }
    for k in ["grey:g1", "grey:g2", "grey:g3", "grey:g4"] {
        assert_eq!(store.get(k, NOW).await.unwrap(), None, "{k}");
    }
    assert_eq!(store.put_if_absent("grey:g1", Record::new("4", NOW, NOW + 10), NOW).await.unwrap(), None);
    assert_eq!(store.get("grey:g1", NOW).await.unwrap(), Some(Record::new("4", NOW, NOW + 10)));
    redis::cmd("HSET").arg("t[1]*:grey:h").arg("f").arg("v").query_async::<()>(&mut c).await.unwrap();
    assert!(matches!(store.get("grey:h", NOW).await, Err(StoreError::Backend(_))));

    // Delete, scan (ordered, limited, prefix taken literally), stats.
    assert!(store.delete("grey:c").await.unwrap());
    assert!(!store.delete("grey:c").await.unwrap());
    // Another deployment's keys on the same server are invisible, even with a look-alike prefix.
    redis::cmd("SET").arg("t11:grey:z").arg(format!("{NOW} {} 4", NOW + 99)).query_async::<()>(&mut c).await.unwrap();
    for i in 0..1200 {
        store.put(&format!("grey:n{i:04}"), Record::new(if i % 3 == 0 { "0" } else { "4" }, NOW, NOW + 1000)).await.unwrap();
    }
    store.put("dupmsg:x", Record::new("1 sid", NOW, NOW + 1000)).await.unwrap();
    // A passed tuple names addresses; the passed hosts above (grey:nNNNN) do not.
    store.put("grey:z.example,a@example.org,b@example.net", Record::new("0", NOW, NOW + 1000)).await.unwrap();
    let rows = store.scan("grey:", NOW + 150, 5).await.unwrap();
    let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
    // b and g1 have expired at +150; garbage and the hash are not records.
    assert_eq!(keys, ["grey:a", "grey:n0000", "grey:n0001", "grey:n0002", "grey:n0003"]);
    let all = store.scan("grey:", NOW + 150, 100_000).await.unwrap();
    assert_eq!(all.len(), 1202, "1200 + grey:a + the tuple; b and g1 have expired at +150");
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    let s = store.stats("grey:", NOW + 150).await.unwrap();
    assert_eq!((s.live, s.expired), (1202, 2));
    assert_eq!(s.live_by_code.get("0"), Some(&401));
    assert_eq!(s.live_by_code.get("4"), Some(&801));
    assert_eq!(s.live_passed_without_address, 400, "every passed record but the tuple");
    assert_eq!(store.stats("dupmsg:", NOW).await.unwrap().live, 1);

    // expire(now) removes what is dead at `now` (here: ahead of Redis's clock), nothing else.
    assert_eq!(store.expire(NOW + 150).await.unwrap(), 2);
    assert_eq!(raw_get(&mut c, "t[1]*:grey:b").await, None);
    assert!(raw_get(&mut c, "t11:grey:z").await.is_some());
    let counters = store.counters();
    assert!(counters.written >= 1200 && counters.write_errors == 0, "{counters:?}");

    store.close().await;
    assert_eq!(store.get("grey:a", NOW).await, Err(StoreError::Closed));
}

#[tokio::test]
async fn native_ttls_follow_the_configured_lifetimes() {
    let r = redis_or_skip!("native_ttls_follow_the_configured_lifetimes");
    let d = TestDaemon::start(&redis_toml(
        &r,
        "ttl:",
        "grey-key = \"ptr,mail,rcpt\"\ngrey-temp-fail-ttl = 5000\ncache-accept-ttl = 86400\ndupmsg-ttl = 7200\n",
    ))
    .await;
    let mut c = r.client().await;
    let tuple = "ttl:grey:192.0.2.1,alice@example.org,bob@example.net";
    assert!(is_grey(&data_answer(&d.socket, "192.0.2.1", "<alice@example.org>", &["<bob@example.net>"]).await, "421"));
    let t = ttl(&mut c, tuple).await;
    assert!((4990..=5000).contains(&t), "temp-fail TTL {t}");
    let (v, created, expires) = stored(&mut c, tuple).await.unwrap();
    assert_eq!((v.as_str(), expires - created), ("4", 5000));

    // Without moving the clock, a "passed" record written by `grey allow` gets cache-accept-ttl.
    let out = Proc::new(env!("CARGO_BIN_EXE_smtpf-milter"))
        .args(["--config", d.config_path.to_str().unwrap(), "grey", "allow", "192.0.2.9"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = ttl(&mut c, "ttl:grey:192.0.2.9").await;
    assert!((86_390..=86_400).contains(&t), "accept TTL {t}");

    // A message from the allowed host passes and is remembered for dupmsg-ttl.
    let mut m = MtaClient::connect_unix(&d.socket).await.unwrap();
    open_session(&mut m, "[192.0.2.9]", "192.0.2.9", "client.example.org").await;
    assert_eq!(send_message(&mut m, &Message::simple("Q1")).await, vec![Response::Continue]);
    let dup = all_keys(&mut c, "ttl:dupmsg:*").await;
    assert_eq!(dup.len(), 1, "{dup:?}");
    let t = ttl(&mut c, &dup[0]).await;
    assert!((7190..=7200).contains(&t), "dupmsg TTL {t}");
}

#[tokio::test]
async fn greylist_state_machine_through_redis() {
    let r = redis_or_skip!("greylist_state_machine_through_redis");
    let d = TestDaemon::start(&redis_toml(&r, "sm:", "grey-key = \"ptr,mail,rcpt\"\n")).await;
    let mut c = r.client().await;
    let tuple = "sm:grey:192.0.2.1,alice@example.org,bob@example.net";
    let ask = || data_answer(&d.socket, "192.0.2.1", "<alice@example.org>", &["<bob@example.net>"]);

    assert!(is_grey(&ask().await, "421"));
    d.wait_for("#387 grey listed {grey:192.0.2.1,alice@example.org,bob@example.net} for 600 seconds", 1).await;
    let (v, created, expires) = stored(&mut c, tuple).await.expect("tuple stored in Redis");
    assert_eq!((v.as_str(), expires - created), ("4", 90_000));
    assert!(d.grep("#2023 cache-type=redis cache-redis-url=redis://127.0.0.1:").len() == 1, "{:?}", d.lines());

    // Within the period: still refused, the record untouched.
    d.running().shared().advance_clock(300);
    assert!(is_grey(&ask().await, "421"));
    let listed = d.wait_for("#387 grey listed", 2).await;
    let left: i64 = listed[1].rsplit(" for ").next().unwrap().trim_end_matches(" seconds").parse().unwrap();
    assert!((290..=300).contains(&left), "{}", listed[1]);
    assert_eq!(stored(&mut c, tuple).await.unwrap(), (v, created, expires));

    // After the period: passes, and the host record lets the client's other mail through.
    d.running().shared().advance_clock(300);
    assert_eq!(ask().await, vec![Response::Continue]);
    assert_eq!(stored(&mut c, "sm:grey:192.0.2.1").await.unwrap().0, "0");
    assert_eq!(
        data_answer(&d.socket, "192.0.2.1", "<someone@else.example>", &["<carol@example.net>"]).await,
        vec![Response::Continue]
    );

    // After the temp-fail TTL (by the daemon's clock; Redis still holds the key), a new tuple
    // starts over: the expired record counts as absent.
    let other = "sm:grey:192.0.2.2,x@example.org,y@example.net";
    assert!(is_grey(&data_answer(&d.socket, "192.0.2.2", "<x@example.org>", &["<y@example.net>"]).await, "421"));
    let first = stored(&mut c, other).await.unwrap();
    d.running().shared().advance_clock(90_001);
    assert!(is_grey(&data_answer(&d.socket, "192.0.2.2", "<x@example.org>", &["<y@example.net>"]).await, "421"));
    let second = stored(&mut c, other).await.unwrap();
    assert!(second.1 > first.1 + 90_000, "{first:?} {second:?}");
    assert!(d.grep(" #54").is_empty(), "no store errors: {:?}", d.grep(" #54"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_milters_share_one_redis() {
    let r = redis_or_skip!("two_milters_share_one_redis");
    let extra = "grey-key = \"ptr,mail,rcpt\"\n";
    let a = TestDaemon::start(&redis_toml(&r, "mx:", extra)).await;
    let b = TestDaemon::start(&redis_toml(&r, "mx:", extra)).await;
    let mut c = r.client().await;

    // First sight on A; the sender retries through B, within the period: refused there too.
    assert!(is_grey(&data_answer(&a.socket, "192.0.2.10", "<s@example.org>", &["<r@example.net>"]).await, "421"));
    b.running().shared().advance_clock(200);
    assert!(is_grey(&data_answer(&b.socket, "192.0.2.10", "<s@example.org>", &["<r@example.net>"]).await, "421"));
    let wait = b.wait_for("#387 grey listed", 1).await;
    assert!(wait[0].ends_with("for 400 seconds") || wait[0].ends_with("for 399 seconds"), "{wait:?}");

    // After the period, B lets the retry through ...
    b.running().shared().advance_clock(401);
    assert_eq!(data_answer(&b.socket, "192.0.2.10", "<s@example.org>", &["<r@example.net>"]).await, vec![Response::Continue]);
    // ... and the host record B wrote lets the client through A at once.
    assert_eq!(stored(&mut c, "mx:grey:192.0.2.10").await.unwrap().0, "0");
    assert_eq!(data_answer(&a.socket, "192.0.2.10", "<new@example.org>", &["<r@example.net>"]).await, vec![Response::Continue]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_sight_on_two_milters_makes_one_record() {
    let r = redis_or_skip!("concurrent_first_sight_on_two_milters_makes_one_record");
    let extra = "grey-key = \"mail,rcpt\"\n";
    let a = TestDaemon::start(&redis_toml(&r, "race:", extra)).await;
    let b = TestDaemon::start(&redis_toml(&r, "race:", extra)).await;
    // The same 20 new tuples reach both hosts at the same moment.
    let before = unix_now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        for socket in [a.socket.clone(), b.socket.clone()] {
            tasks.push(tokio::spawn(async move {
                let from = format!("<s{i}@example.org>");
                data_answer(&socket, "192.0.2.20", &from, &["<r@example.net>"]).await
            }));
        }
    }
    for t in tasks {
        let answer = t.await.unwrap();
        assert!(is_grey(&answer, "451"), "{answer:?}");
    }
    let after = unix_now();
    let mut c = r.client().await;
    let keys = all_keys(&mut c, "race:*").await;
    assert_eq!(keys.len(), 20, "one record per tuple: {keys:?}");
    for k in keys {
        let (v, created, expires) = stored(&mut c, &k).await.unwrap();
        assert_eq!(v, "4");
        assert!((before..=after).contains(&created), "{k}: created {created}");
        assert_eq!(expires - created, 90_000, "{k}");
    }
    // Both hosts told the client the same full period.
    let listed: Vec<String> = a.grep("#387 grey listed").into_iter().chain(b.grep("#387 grey listed")).collect();
    assert_eq!(listed.len(), 40);
    assert!(listed.iter().all(|l| l.ends_with(" for 600 seconds") || l.ends_with(" for 599 seconds")), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_first_sight_keeps_the_earliest_creation_time() {
    let r = redis_or_skip!("racing_first_sight_keeps_the_earliest_creation_time");
    // Two hosts (two stores, two connections) whose clocks are 7 s apart race on 200 new keys.
    let (a, b) = (open_store(&r, "race2:").await, open_store(&r, "race2:").await);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (a, b) = (a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            let key = format!("grey:k{i}");
            let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let (x, y) = tokio::join!(
                first.put_if_absent(&key, Record::new("4", NOW, NOW + 600), NOW),
                second.put_if_absent(&key, Record::new("4", NOW + 7, NOW + 607), NOW + 7),
            );
            let (x, y) = (x.unwrap(), y.unwrap());
            // Exactly one of the two stored; the other got the winner back.
            assert!(x.is_none() != y.is_none(), "{key}: {x:?} {y:?}");
            let got = first.get(&key, NOW + 8).await.unwrap().unwrap();
            assert_eq!(got.created, NOW, "{key}: the earliest creation time wins: {got:?}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(a.scan("grey:", NOW + 8, 1000).await.unwrap().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_or_stalled_fails_open_logs_once_and_recovers() {
    let mut r = redis_or_skip!("redis_down_or_stalled_fails_open_logs_once_and_recovers");
    let d =
        TestDaemon::start(&redis_toml(&r, "down:", "grey-key = \"mail,rcpt\"\ncache-timeout = \"300ms\"\ndupmsg-ttl = 3600\n"))
            .await;
    let ask = || data_answer(&d.socket, "192.0.2.30", "<s@example.org>", &["<r@example.net>"]);

    // Redis stops mid-load: sessions go on (fail open), each within cache-timeout.
    r.stop();
    let mut tasks = Vec::new();
    for i in 0..30u32 {
        let socket = d.socket.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut c = MtaClient::connect_unix(&socket).await.unwrap();
            open_session(&mut c, "[192.0.2.31]", "192.0.2.31", "client.example.org").await;
            let qid = format!("Q{i}");
            let m = Message { to: &["<bob@example.net>"], ..Message::simple(&qid) };
            let eom = send_message(&mut c, &m).await;
            (eom, started.elapsed())
        }));
    }
    for t in tasks {
        let (eom, took) = t.await.unwrap();
        assert_eq!(eom, vec![Response::Continue], "fail open");
        assert!(took < Duration::from_secs(5), "a session took {took:?}");
    }
    for _ in 0..10 {
        assert_eq!(ask().await, vec![Response::Continue], "greylisting fails open");
    }
    // One outage line and one store-error line, not one per message.
    let down = d.wait_for("#2024 cache redis://127.0.0.1:", 1).await;
    assert!(down[0].contains("failing open"), "{down:?}");
    let errors: Vec<String> = d.lines().into_iter().filter(|l| l.contains(" #542 ") || l.contains(" #544 ")).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(d.grep("#2025").is_empty());

    // Redis returns (empty): the milter reconnects on its own, says how many calls failed open,
    // and greylists again.
    r.restart();
    let up = d.wait_for("#2025 cache redis://127.0.0.1:", 1).await;
    let failed: u64 = up[0].rsplit(" seconds; ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(failed >= 40, "{up:?}");
    assert!(is_grey(&ask().await, "451"));
    assert_eq!(d.grep("#2024").len(), 1);

    // A stalled server (SIGSTOP): calls give up after cache-timeout, mail flows, one new outage.
    r.pause(true);
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(ask().await, vec![Response::Continue], "stalled Redis fails open");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
    d.wait_for("#2024", 2).await;
    let errors = d.lines().into_iter().filter(|l| l.contains(" #542 ") || l.contains(" #544 ")).count();
    assert_eq!(errors, 2);
    r.pause(false);
    d.wait_for("#2025", 2).await;
    assert_eq!(d.grep("#2024").len(), 2);
}

#[tokio::test]
async fn unreachable_redis_at_start_does_not_stop_the_daemon() {
    let Some(binary) = redis_binary() else {
        eprintln!("SKIP: unreachable_redis_at_start_does_not_stop_the_daemon: redis-server is not installed");
        return;
    };
    let port = free_port();
    let toml = format!(
        "cache-type = \"redis\"\ncache-redis-url = \"redis://127.0.0.1:{port}/0\"\ncache-timeout = \"200ms\"\n\
         grey-key = \"mail,rcpt\"\n"
    );
    let d = TestDaemon::start(&toml).await;
    d.wait_for(&format!("#2024 cache redis://127.0.0.1:{port}/0 unavailable:"), 1).await;
    assert_eq!(
        data_answer(&d.socket, "192.0.2.40", "<s@example.org>", &["<r@example.net>"]).await,
        vec![Response::Continue],
        "fails open"
    );
    // The outage was announced at start; sessions add no line of their own.
    assert!(d.grep(" #542 ").is_empty() && d.grep(" #544 ").is_empty(), "{:?}", d.lines());

    // The server appears: the store connects by itself and greylisting starts.
    let mut r = RedisServer { binary, port, dir: tempfile::tempdir().unwrap(), child: None };
    r.launch();
    d.wait_for("#2025", 1).await;
    assert!(is_grey(&data_answer(&d.socket, "192.0.2.40", "<s@example.org>", &["<r@example.net>"]).await, "451"));
}

#[tokio::test]
async fn grey_tool_works_against_redis_with_scan() {
    let r = redis_or_skip!("grey_tool_works_against_redis_with_scan");
    let d = TestDaemon::start(&redis_toml(&r, "tool:", "grey-key = \"ptr,mail,rcpt\"\n")).await;
    let mut c = r.client().await;
    redis::cmd("CONFIG").arg("RESETSTAT").query_async::<()>(&mut c).await.unwrap();
    assert!(is_grey(&data_answer(&d.socket, "192.0.2.50", "<a@example.org>", &["<b@example.net>"]).await, "421"));
    // Another deployment's record on the same server is not ours to list.
    redis::cmd("SET")
        .arg("other:grey:192.0.2.99")
        .arg(format!("{} {} 0", unix_now(), unix_now() + 99))
        .query_async::<()>(&mut c)
        .await
        .unwrap();

    let grey = |args: &[&str]| {
        let out = Proc::new(env!("CARGO_BIN_EXE_smtpf-milter"))
            .args(["--config", d.config_path.to_str().unwrap(), "grey"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let list = grey(&["list", "--pending"]);
    assert!(list.contains("pending") && list.contains("192.0.2.50,a@example.org,b@example.net"), "{list}");
    assert!(!list.contains("192.0.2.99"), "{list}");
    let json = grey(&["list", "--json", "192.0.2.50"]);
    assert!(json.contains("\"state\":\"pending\""), "{json}");
    assert!(grey(&["allow", "192.0.2.50,a@example.org,b@example.net"]).contains("passed for 7d00h"));
    assert_eq!(
        data_answer(&d.socket, "192.0.2.50", "<a@example.org>", &["<b@example.net>"]).await,
        vec![Response::Continue],
        "released by grey allow"
    );
    let stats = grey(&["stats"]);
    assert!(stats.contains("grey pending 0\ngrey passed 1\n"), "{stats}");
    assert!(grey(&["delete", "192.0.2.50,a@example.org,b@example.net"]).contains("deleted"));
    assert!(grey(&["delete", "192.0.2.50,a@example.org,b@example.net"]).contains("not found"));
    assert_eq!(raw_get(&mut c, "tool:grey:192.0.2.50,a@example.org,b@example.net").await, None);

    // Listing walked the keys with SCAN; KEYS (which blocks a busy server) was never sent.
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut c).await.unwrap();
    assert!(info.contains("cmdstat_scan:"), "{info}");
    assert!(!info.contains("cmdstat_keys:"), "{info}");

    // Redis down: the tool says so and fails, naming the server without its password.
    drop(r);
    let out = Proc::new(env!("CARGO_BIN_EXE_smtpf-milter"))
        .args(["--config", d.config_path.to_str().unwrap(), "grey", "stats"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("redis://127.0.0.1:") && err.contains("not connected"), "{err}");
}

#[test]
fn check_config_refuses_a_malformed_redis_url() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "cache-type = \"redis\"\ncache-redis-url = \"redis://smtpf:hunter2@mx-redis:port/0\"\n").unwrap();
    let out =
        Proc::new(env!("CARGO_BIN_EXE_smtpf-milter")).args(["--config", cfg.to_str().unwrap(), "check-config"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":2: cache-redis-url: "), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn an_acl_user_limited_to_the_prefix_is_enough() {
    let r = redis_or_skip!("an_acl_user_limited_to_the_prefix_is_enough");
    let mut admin = r.client().await;
    // The ACL line docs/several-mx.md recommends.
    let rule = "on >s3cret ~smtpf-milter:* resetchannels -@all +get +set +del +mget +scan +evalsha +script|load +select";
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("smtpf")
        .arg(rule.split(' ').collect::<Vec<_>>())
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    redis::cmd("SET").arg("secret:other").arg("x").query_async::<()>(&mut admin).await.unwrap();

    let toml = format!(
        "cache-type = \"redis\"\ncache-redis-url = \"redis://smtpf:s3cret@127.0.0.1:{}/0\"\ncache-key-prefix = \"smtpf-milter:\"\n",
        r.port
    );
    let store = Store::open(&Config::from_toml(&toml, None).unwrap().store_spec(), None).await.unwrap();
    assert!(store.describe().contains("redis://smtpf:***@127.0.0.1:"), "{}", store.describe());
    store.put("grey:a", Record::new("4", NOW, NOW + 600)).await.unwrap();
    assert_eq!(store.get("grey:a", NOW).await.unwrap().unwrap().value, "4");
    assert!(store.put_if_absent("grey:a", Record::new("4", NOW, NOW + 600), NOW).await.unwrap().is_some());
    assert_eq!(store.put_if_absent("grey:b", Record::new("4", NOW, NOW + 600), NOW).await.unwrap(), None);
    assert_eq!(store.scan("grey:", NOW, 10).await.unwrap().len(), 2);
    assert_eq!(store.stats("", NOW).await.unwrap().live, 2);
    assert!(store.delete("grey:b").await.unwrap());
    store.expire(NOW).await.unwrap();
    // The user cannot touch what is not under its prefix.
    let mut limited = redis::Client::open(format!("redis://smtpf:s3cret@127.0.0.1:{}/0", r.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let denied: Result<Option<String>, _> = redis::cmd("GET").arg("secret:other").query_async(&mut limited).await;
    assert!(denied.is_err(), "{denied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_redis_refusing_writes_is_one_outage_not_one_per_message() {
    let r = redis_or_skip!("a_full_redis_refusing_writes_is_one_outage_not_one_per_message");
    let d = TestDaemon::start(&redis_toml(
        &r,
        "oom:",
        "grey-key = \"mail,rcpt\"\ngrey-auto-whitelist-clients = 0\ncache-timeout = \"1s\"\n",
    ))
    .await;
    let mut admin = r.client().await;
    // Full, with nothing to evict: reads work, every write is refused (OOM).
    redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").query_async::<()>(&mut admin).await.unwrap();
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1").query_async::<()>(&mut admin).await.unwrap();
    for i in 0..10 {
        let from = format!("<s{i}@example.org>");
        assert_eq!(data_answer(&d.socket, "192.0.2.60", &from, &["<r@example.net>"]).await, vec![Response::Continue]);
    }
    let down = d.wait_for("#2024", 1).await;
    assert!(down[0].contains("OOM") || down[0].contains("maxmemory"), "{down:?}");
    assert_eq!(d.grep(" #544 ").len(), 1, "{:?}", d.grep(" #544 "));
    assert!(d.grep("#2025").is_empty(), "reads succeeding in between do not end the outage");

    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0").query_async::<()>(&mut admin).await.unwrap();
    let up = d.wait_for("#2025", 1).await;
    assert!(up[0].ends_with("10 store calls failed open meanwhile"), "{up:?}");
    assert!(is_grey(&data_answer(&d.socket, "192.0.2.60", "<s0@example.org>", &["<r@example.net>"]).await, "451"));
    assert_eq!(d.grep("#2024").len(), 1);
}

#[test]
fn rediss_verifies_the_server_certificate() {
    let Some(binary) = redis_binary() else {
        eprintln!("SKIP: rediss_verifies_the_server_certificate: redis-server is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    // A private CA and a certificate for localhost, made with the openssl tool.
    let openssl = |args: &[&str]| Proc::new("openssl").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
    std::fs::write(p("ext"), "subjectAltName=DNS:localhost\n").unwrap();
    let made = [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
        ],
        vec!["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &p("srv.key"), "-out", &p("srv.csr"), "-subj", "/CN=localhost"],
        vec![
            "x509",
            "-req",
            "-in",
            &p("srv.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-out",
            &p("srv.pem"),
            "-days",
            "2",
            "-extfile",
            &p("ext"),
        ],
    ]
    .iter()
    .all(|args| openssl(args).is_ok_and(|s| s.success()));
    if !made {
        eprintln!("SKIP: rediss_verifies_the_server_certificate: the openssl tool is not available");
        return;
    }
    let port = free_port();
    let child = Proc::new(binary)
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--tls-cert-file", &p("srv.pem"), "--tls-key-file", &p("srv.key"), "--tls-ca-cert-file", &p("ca.pem")])
        .args(["--tls-auth-clients", "no", "--dir", &p("")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = common::KillOnDrop(Some(child));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server with TLS did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("cache-type = \"redis\"\ncache-redis-url = \"rediss://localhost:{port}/0\"\n")).unwrap();
    let grey = |ca: Option<&str>, args: &[&str]| {
        let mut cmd = Proc::new(env!("CARGO_BIN_EXE_smtpf-milter"));
        cmd.args(["--config", cfg.to_str().unwrap(), "grey"]).args(args);
        // rustls-native-certs reads the trust store from SSL_CERT_FILE when it is set.
        match ca {
            Some(ca) => cmd.env("SSL_CERT_FILE", ca),
            None => cmd.env("SSL_CERT_FILE", "/nonexistent-trust-store.pem"),
        };
        cmd.output().unwrap()
    };
    let ca = p("ca.pem");
    let out = grey(Some(&ca), &["allow", "192.0.2.70"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = grey(Some(&ca), &["stats"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("grey passed 1\n"), "{out:?}");
    // A server whose certificate the trust store does not vouch for is refused.
    let out = grey(None, &["stats"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rediss://localhost:") && err.contains("not connected"), "{err}");
}

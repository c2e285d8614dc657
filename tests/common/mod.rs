//! Test harness: an in-process daemon on a temporary unix socket, with its log lines captured,
//! and an MTA-side driver that plays Postfix.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smtpf_milter::config::Config;
use smtpf_milter::daemon::{start, Running};
use smtpf_milter::log::{Logger, Verbose};
use smtpf_milter::milter::client::{MtaClient, POSTFIX_ACTIONS, POSTFIX_PROTOCOL};
use smtpf_milter::milter::codec::{Command, Family, Response};
use tokio::net::UnixStream;

/// A daemon under test.
pub struct TestDaemon {
    pub running: Option<Running>,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config_path: PathBuf,
    /// The name server the daemon asks, unless the test named its own.
    pub dns: Option<dns::TestDns>,
}

impl TestDaemon {
    /// Starts a daemon whose config is the socket and state file in a temp dir plus `extra` TOML.
    pub async fn start(extra: &str) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        // `{dir}` in the extra TOML is this daemon's temporary directory.
        let extra = &extra.replace("{dir}", &dir.path().display().to_string());
        let socket = dir.path().join("run/milter.sock");
        let config_path = dir.path().join("smtpf-milter.toml");
        // MX verification needs DNS; tests that do not exercise it switch it off.
        let mx = if extra.contains("mail-require-mx") { "" } else { "mail-require-mx = false\n" };
        // Greylisting answers DATA; tests about other things switch it off.
        let mx = if extra.contains("grey-key") || extra.contains("grey-dry-run") {
            mx.to_string()
        } else {
            format!("{mx}grey-key = \"\"\n")
        };
        // Duplicate detection would tag the identical test messages; off unless asked for.
        let mx = if extra.contains("dupmsg-") { mx } else { format!("{mx}dupmsg-ttl = 0\n") };
        // Lookups (SPF, MX, backup MX, PTR) go to a local name server that answers at once:
        // NXDOMAIN in the zones tests use, REFUSED elsewhere. The machine's resolver would make
        // timings depend on the network the tests run on.
        let dns = if extra.contains("dns-servers") {
            None
        } else {
            let zones = ["org", "net", "com", "example", "test", "arpa", "home", "invalid"];
            Some(zones.iter().fold(dns::TestDns::builder(), |b, z| b.zone(z)).start().await)
        };
        let mx = match &dns {
            Some(server) => format!("{mx}dns-servers = [\"{}\"]\n", server.addr()),
            None => mx,
        };
        let text = format!(
            "milter-socket = \"unix:{}\"\ncache-path = \"{}\"\n{mx}{extra}\n",
            socket.display(),
            dir.path().join("cache.sq3").display()
        );
        std::fs::write(&config_path, text).unwrap();
        let config = Config::load(&config_path).unwrap();
        let (log, lines) = Logger::memory(config.verbose.clone());
        let running = start(config, log).await.expect("daemon starts");
        TestDaemon { running: Some(running), lines, dir, socket, config_path, dns }
    }

    /// A new MTA connection.
    pub async fn client(&self) -> MtaClient<UnixStream> {
        MtaClient::connect_unix(&self.socket).await.unwrap()
    }

    /// The running handle.
    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    /// All lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Lines containing `needle`.
    pub fn grep(&self, needle: &str) -> Vec<String> {
        self.lines().into_iter().filter(|l| l.contains(needle)).collect()
    }

    /// Waits (up to 10 s) until `count` lines contain `needle`; returns them.
    pub async fn wait_for(&self, needle: &str, count: usize) -> Vec<String> {
        for _ in 0..1000 {
            let found = self.grep(needle);
            if found.len() >= count {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {count} line(s) with {needle:?}; log:\n{}", self.lines().join("\n"));
    }

    /// Stops gracefully.
    pub async fn stop(&mut self, deadline: Duration) -> smtpf_milter::daemon::StopReport {
        self.running.take().unwrap().stop(deadline).await
    }
}

/// Silences unused-variable noise for the verbose type in some tests.
pub fn verbose(words: &[&str]) -> Verbose {
    Verbose::parse(words.iter().copied()).unwrap()
}

/// One message of a scripted session.
pub struct Message<'a> {
    pub from: &'a str,
    pub to: &'a [&'a str],
    pub queue_id: &'a str,
    pub message_id: &'a str,
    pub body: &'a [u8],
}

impl Message<'_> {
    pub fn simple(queue_id: &str) -> Message<'_> {
        Message {
            from: "<alice@example.org>",
            to: &["<bob@example.net>"],
            queue_id,
            message_id: "<m1@example.org>",
            body: b"Hello.\r\n",
        }
    }
}

/// Negotiates like Postfix 3.x and sends CONNECT and HELO with Postfix's default macros.
pub async fn open_session(c: &mut MtaClient<UnixStream>, hostname: &str, ip: &str, helo: &str) -> Vec<Response> {
    let r = c.negotiate(6, POSTFIX_ACTIONS, POSTFIX_PROTOCOL).await.unwrap();
    assert!(matches!(r, Response::OptNeg { version: 6, .. }), "{r:?}");
    c.macros(b'C', &[("j", "mx.example.net"), ("{daemon_name}", "smtpd"), ("_", &format!("{hostname} [{ip}]"))]).await.unwrap();
    let family = if ip.contains(':') { Family::Inet6 } else { Family::Inet };
    let mut got =
        c.command(&Command::Connect { hostname: hostname.into(), family, port: 4711, address: ip.into() }).await.unwrap();
    got.extend(c.command(&Command::Helo { name: helo.into() }).await.unwrap());
    got
}

/// Runs one transaction like Postfix (queue id known from RCPT on) and the ABORT Postfix sends
/// after it. Returns the verdict at end of message.
pub async fn send_message(c: &mut MtaClient<UnixStream>, m: &Message<'_>) -> Vec<Response> {
    c.macros(b'M', &[("{mail_addr}", m.from.trim_matches(|ch| ch == '<' || ch == '>'))]).await.unwrap();
    let mut all = c.command(&Command::Mail { sender: m.from.into(), params: vec!["SIZE=100".into()] }).await.unwrap();
    for rcpt in m.to {
        c.macros(b'R', &[("i", m.queue_id), ("{rcpt_addr}", rcpt)]).await.unwrap();
        all.extend(c.command(&Command::Rcpt { recipient: (*rcpt).into(), params: vec![] }).await.unwrap());
    }
    c.macros(b'T', &[("i", m.queue_id)]).await.unwrap();
    all.extend(c.command(&Command::Data).await.unwrap());
    for (n, v) in [("Received", "from client.example.org"), ("Message-ID", m.message_id), ("Subject", "test")] {
        all.extend(c.command(&Command::Header { name: n.into(), value: v.into() }).await.unwrap());
    }
    c.macros(b'N', &[("i", m.queue_id)]).await.unwrap();
    all.extend(c.command(&Command::EndOfHeaders).await.unwrap());
    all.extend(c.command(&Command::Body(m.body.to_vec())).await.unwrap());
    c.macros(b'E', &[("i", m.queue_id)]).await.unwrap();
    let eom = c.command(&Command::EndOfMessage(Vec::new())).await.unwrap();
    assert!(all.iter().all(|r| *r == Response::Continue), "before end of message: {all:?}");
    c.command(&Command::Abort).await.unwrap();
    eom
}

pub mod dns;

/// A child process (the real daemon binary) killed when the test ends, pass or fail, so that a
/// failing test never leaves a daemon holding the test runner's pipes.
pub struct KillOnDrop(pub Option<std::process::Child>);

impl KillOnDrop {
    /// The child's pid (0 once taken).
    pub fn id(&self) -> u32 {
        self.0.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts the real `smtpf-milter` binary on `config` and waits until `socket` accepts
/// connections; the daemon is killed when the returned guard drops.
pub fn spawn_daemon(config: &std::path::Path, socket: &std::path::Path, stderr: std::process::Stdio) -> KillOnDrop {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_smtpf-milter"))
        .args(["--config", config.to_str().unwrap()])
        .stderr(stderr)
        .spawn()
        .unwrap();
    let guard = KillOnDrop(Some(child));
    wait_for_socket(socket, "the daemon");
    guard
}

/// Waits up to 5 s for something to accept connections on a unix socket; panics naming `what`.
pub fn wait_for_socket(socket: &std::path::Path, what: &str) {
    for _ in 0..500 {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what} did not start listening on {}", socket.display());
}

/// Writes `c.toml` in `dir`: a unix milter socket and a state file there, then `extra` keys.
/// Returns the socket's and the file's paths, for tests that run the real binary.
pub fn config_file(dir: &std::path::Path, extra: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let sock = dir.join("m.sock");
    let cfg = dir.join("c.toml");
    let text = format!("milter-socket = \"unix:{}\"\ncache-path = \"{}\"\n{extra}", sock.display(), dir.join("c.sq3").display());
    std::fs::write(&cfg, text).unwrap();
    (sock, cfg)
}

//! Start-up, reload and graceful stop of the in-process daemon, and the command-line tool.

mod common;

use std::process::Command as Proc;
use std::time::Duration;

use common::{open_session, send_message, spawn_daemon, Message, TestDaemon};
use smtpf_milter::milter::codec::{Command, Response};

#[tokio::test]
async fn start_up_lines_and_socket() {
    let d = TestDaemon::start("").await;
    assert_eq!(d.grep(&format!("#595 interface=unix:{} ready", d.socket.display())).len(), 1);
    assert_eq!(d.grep("#599 ready").len(), 1);
    assert!(d.grep("#606 SQLite").len() == 1);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777, 0o660);
    assert!(d.dir.path().join("cache.sq3").exists(), "state file created");
}

#[tokio::test]
async fn graceful_stop_lets_open_sessions_finish() {
    let mut d = TestDaemon::start("").await;
    let mut c = d.client().await;
    open_session(&mut c, "mail.example.org", "192.0.2.20", "mail.example.org").await;
    let socket = d.socket.clone();
    let running = d.running.take().unwrap();
    let stop = tokio::spawn(async move { running.stop(Duration::from_secs(10)).await });
    // The listener goes away at once: no new connections, socket file removed.
    for _ in 0..100 {
        if !socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!socket.exists(), "socket removed when stopping");
    // The open session still completes its message.
    assert_eq!(send_message(&mut c, &Message::simple("G1")).await, vec![Response::Continue]);
    c.command(&Command::Quit).await.unwrap();
    let report = stop.await.unwrap();
    assert_eq!(report.closed_at_deadline, 0);
    assert!(d.grep("#721 end i=192.0.2.20")[0].contains("m=1/1"));
    assert!(d.grep("#2010").is_empty());
}

#[tokio::test]
async fn stop_deadline_closes_idle_sessions_with_their_summary() {
    let mut d = TestDaemon::start("").await;
    let mut c = d.client().await;
    open_session(&mut c, "idle.example", "192.0.2.21", "idle.example").await;
    let report = d.stop(Duration::from_millis(300)).await;
    assert_eq!(report.closed_at_deadline, 1);
    d.wait_for("#2010 shutdown deadline of 0 seconds reached, closing 1 sessions", 1).await;
    d.wait_for("#721 end i=192.0.2.21", 1).await;
    assert!(c.recv().await.unwrap().is_none(), "the MTA sees the connection close");
}

#[tokio::test]
async fn reload_applies_good_config_and_keeps_old_on_error() {
    let d = TestDaemon::start("").await;
    let path = d.config_path.clone();
    let original = std::fs::read_to_string(&path).unwrap();

    std::fs::write(&path, format!("{original}\nmilter-timeout = \"oops\"\n")).unwrap();
    let err = d.running().reload().unwrap_err();
    assert!(err.contains("milter-timeout"), "{err}");
    d.wait_for("#2007 reload:", 1).await;
    assert_eq!(d.running().shared().policy().config.milter_timeout, Duration::from_secs(7210), "old config kept");

    std::fs::write(&path, "this is not toml").unwrap();
    assert!(d.running().reload().is_err());
    assert!(d.grep("#2007")[1].contains("not valid TOML"));

    std::fs::write(&path, format!("{original}\nmilter-timeout = \"2m\"\nverbose = \"info,milter\"\n")).unwrap();
    d.running().reload().unwrap();
    d.wait_for("#2006 reload: config", 1).await;
    assert_eq!(d.running().shared().policy().config.milter_timeout, Duration::from_secs(120));
    // New sessions see the new verbose words.
    let mut c = d.client().await;
    open_session(&mut c, "a.example", "192.0.2.30", "a.example").await;
    d.wait_for("#2003 negotiated", 1).await;

    // A socket change needs a restart: said, and not applied.
    std::fs::write(&path, original.replace("run/milter.sock", "other.sock")).unwrap();
    d.running().reload().unwrap();
    d.wait_for("#2008 reload: milter-socket changed, which needs a restart", 1).await;
    assert!(d.socket.exists());
    assert_eq!(d.running().shared().policy().config.milter_socket.to_string(), format!("unix:{}", d.socket.display()));
}

#[tokio::test]
async fn second_daemon_on_the_same_socket_is_refused() {
    let d = TestDaemon::start("").await;
    let config = smtpf_milter::config::Config::load(&d.config_path).unwrap();
    let (log, lines) = smtpf_milter::log::Logger::memory(config.verbose.clone());
    let err = smtpf_milter::daemon::start(config, log).await.err().expect("refused");
    assert!(err.contains("in use by a live process"), "{err}");
    assert!(lines.lock().unwrap().iter().any(|l| l.starts_with("#596 interface=unix:") && l.contains("live process")));
    // The first daemon is untouched.
    let mut c = d.client().await;
    open_session(&mut c, "a.example", "192.0.2.31", "a.example").await;
}

#[tokio::test]
async fn unwritable_state_file_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("cache.sq3");
    std::fs::write(&bad, vec![7u8; 4096]).unwrap();
    let text = format!("milter-socket = \"unix:{}\"\ncache-path = \"{}\"\n", dir.path().join("m.sock").display(), bad.display());
    let config = smtpf_milter::config::Config::from_toml(&text, None).unwrap();
    let (log, lines) = smtpf_milter::log::Logger::memory(config.verbose.clone());
    assert!(smtpf_milter::daemon::start(config, log).await.is_err());
    assert!(lines.lock().unwrap().iter().any(|l| l.starts_with("#172 cache-path=") && l.contains("not a database")));
    assert!(!dir.path().join("m.sock").exists(), "socket cleaned up after a failed start");
}

fn bin() -> Proc {
    Proc::new(env!("CARGO_BIN_EXE_smtpf-milter"))
}

#[test]
fn check_config_exit_codes_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "milter-socket = \"inet:8894@127.0.0.1\"\ndns-timeout = \"3s\"\n").unwrap();
    let out = bin().args(["--config", good.to_str().unwrap(), "check-config"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "# comment\nmilter-socket = \"inet:8894@127.0.0.1\"\ndns-timeuot = 3\n").unwrap();
    let out = bin().args(["--config", bad.to_str().unwrap(), "check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3: dns-timeuot: unknown key; did you mean \"dns-timeout\"?"), "{err}");

    let out = bin().args(["--config", dir.path().join("missing.toml").to_str().unwrap(), "check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn check_config_refuses_values_that_break_features_and_warns_about_odd_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = bin().args(["--config", path.to_str().unwrap(), "check-config"]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for (text, needle) in [
        ("grey-temp-fail-ttl = 9223372036854775807\n", "c.toml:1: grey-temp-fail-ttl: must be from 1s to 366d"),
        ("\ndns-servers = [\"127.0.0.1:0\"]\n", "c.toml:2: dns-servers: \"127.0.0.1:0\": port 0"),
        ("cache-accept-ttl = \"99999999999999w\"\n", "c.toml:1: cache-accept-ttl: \"99999999999999w\": too large"),
        ("dupmsg-ttl = 9223372036854775807\n", "c.toml:1: dupmsg-ttl: must be from 0s to 366d"),
    ] {
        let (code, err) = check(text);
        assert_eq!(code, Some(1), "{text}: {err}");
        assert!(err.contains(needle), "{text}: {err}");
    }
    let (code, err) = check("dns-timeout = 20\nmilter-timeout = 60\n");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("warning: dns-timeout = 20s: longer than Sendmail's default milter read timeout"), "{err}");
    assert!(err.contains("warning: milter-timeout = 1m: shorter than Postfix's milter_content_timeout"), "{err}");
}

#[test]
fn check_config_names_the_steps_the_mta_waits_for() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("access.cf");
    std::fs::write(&map, "Connect:192.0.2.1\tREJECT\n").unwrap();
    let map = map.to_str().unwrap().to_owned();
    let cases = [
        // The embedded defaults: MX check at MAIL, greylisting at DATA.
        ("", "mail,data,eom"),
        ("dns-bl = [\"bl.test\"]\n", "connect,mail,data,eom"),
        (&format!("access-map = \"{map}\"\n"), "connect,helo,mail,rcpt,data,eom"),
        // Held refusals are given at RCPT, so nothing answers before MAIL.
        (&format!("access-map = \"{map}\"\ndns-bl = [\"bl.test\"]\nsmtp-delay-checks = true\n"), "mail,rcpt,data,eom"),
        ("mail-require-mx = false\ngrey-key = \"\"\n", "eom"),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let cfg = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&cfg, body).unwrap();
        let out = bin().args(["--config", cfg.to_str().unwrap(), "check-config"]).output().unwrap();
        assert!(out.status.success(), "{body}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().find(|l| l.starts_with("replies: ")).unwrap_or_default();
        assert_eq!(line.split_whitespace().nth(1), Some(*want), "{body}: {stdout}");
    }
}

#[test]
fn shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/smtpf-milter.toml");
    let out = bin().args(["--config", path, "check-config"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn explain_prints_level_format_and_meaning() {
    let out = bin().args(["explain", "637"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("#637 INFO start %s f=\"%s\" th=%u cn=%u cs=%lu\n"), "{text}");
    assert!(text.contains("SMTP client connected"));
    let out = bin().args(["explain", "#2001"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("#2001 ERR milter protocol error: %s"));
    let out = bin().args(["explain", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn binary_runs_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, cfg) = common::config_file(dir.path(), "mail-require-mx = false\ngrey-key = \"\"\n");
    // Whatever happens in this test, the daemon does not outlive it.
    let mut child = spawn_daemon(&cfg, &sock, std::process::Stdio::piped());
    assert!(sock.exists(), "daemon listening");
    // One session through the real binary.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = smtpf_milter::milter::client::MtaClient::connect_unix(&sock).await.unwrap();
        open_session(&mut c, "bin.example", "192.0.2.40", "bin.example").await;
        assert_eq!(send_message(&mut c, &Message::simple("B1")).await, vec![Response::Continue]);
        c.command(&Command::Quit).await.unwrap();
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "#604 smtpf-milter",
        "#2000 config",
        "#599 ready",
        "#637 start bin.example [192.0.2.40]:4711",
        "#721 end i=192.0.2.40",
        "#2051 signal 1 received, reloading",
        "#2006 reload: config",
        "#722 signal 15, stopping sessions, cn=0",
        "#725 signal 15, terminating process",
        "#732 terminated",
    ] {
        assert!(log.contains(needle), "missing {needle:?} in:\n{log}");
    }
    assert!(!sock.exists(), "socket removed at exit");
}

/// The daemon logs the same warnings check-config prints (#2042), at start and at reload.
#[tokio::test]
async fn odd_settings_are_logged_at_start_and_reload() {
    let d = TestDaemon::start("milter-timeout = 60\n").await;
    d.wait_for("#2042 config: milter-timeout = 1m: shorter than Postfix's milter_content_timeout", 1).await;
    let text = std::fs::read_to_string(&d.config_path).unwrap();
    std::fs::write(&d.config_path, format!("{text}dns-timeout = 20\n")).unwrap();
    d.running().reload().unwrap();
    d.wait_for("#2042 config: dns-timeout = 20s: longer than Sendmail's default milter read timeout", 1).await;
    d.wait_for("#2042 config: milter-timeout = 1m", 2).await;
}

/// Under systemd (the shipped unit's RuntimeDirectory= and StateDirectory=) the daemon, not root,
/// finds its socket and state file in the directories systemd made for it, with no
/// milter-socket or cache-path in the config: the packaged config works as shipped.
#[test]
fn under_systemd_the_socket_and_state_file_go_to_its_directories() {
    let dir = tempfile::tempdir().unwrap();
    let (run, state) = (dir.path().join("run"), dir.path().join("state"));
    std::fs::create_dir_all(&run).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "mail-require-mx = false\n").unwrap();
    let child = Proc::new(env!("CARGO_BIN_EXE_smtpf-milter"))
        .args(["--config", cfg.to_str().unwrap()])
        .env("RUNTIME_DIRECTORY", &run)
        .env("STATE_DIRECTORY", &state)
        .env_remove("XDG_RUNTIME_DIR")
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = common::KillOnDrop(Some(child));
    common::wait_for_socket(&run.join("milter.sock"), "the daemon under systemd's directories");
    // The store's thread creates the file as the daemon starts listening.
    let start = std::time::Instant::now();
    while !state.join("cache.sq3").exists() {
        assert!(start.elapsed() < Duration::from_secs(5), "the state file is in STATE_DIRECTORY");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!dir.path().join("smtpf-milter.sock").exists());
}

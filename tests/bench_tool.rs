//! `milter-bench serve`, the null milter the benchmark and the end-to-end figures measure against:
//! it must carry a whole MTA conversation, bind its socket as the daemon does (never taking over
//! a running milter's socket or clobbering a file), and leave nothing behind when stopped. And
//! `milter-bench delay`, the greylisting-delay benchmark: its figures must tell the settings apart.
//! And `milter-bench policy`, which drives the policy door: known tuples pass, new ones do not.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::KillOnDrop;

const BENCH: &str = env!("CARGO_BIN_EXE_milter-bench");

/// Starts `milter-bench serve` on `socket` and waits until it accepts connections.
fn spawn_serve(socket: &Path, extra: &[&str]) -> KillOnDrop {
    let spec = format!("unix:{}", socket.display());
    let child = Command::new(BENCH).args(["serve", "--socket", &spec]).args(extra).stderr(Stdio::null()).spawn().unwrap();
    let guard = KillOnDrop(Some(child));
    common::wait_for_socket(socket, "milter-bench serve");
    guard
}

/// Runs `milter-bench ARGS` that must exit by itself; a run still going after 10 s fails the test
/// (a `serve` that wrongly took a socket over would otherwise serve forever).
fn run_to_exit(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(BENCH).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    for _ in 0..1000 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("milter-bench {args:?} did not exit within 10 s");
}

/// Runs `milter-bench` against `socket` and returns its JSON report.
fn bench_against(socket: &Path, messages: u32) -> (bool, String) {
    let spec = format!("unix:{}", socket.display());
    let out = run_to_exit(&["--socket", &spec, "--messages", &messages.to_string(), "--json", "--connections", "4"]);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn serve_answers_a_whole_conversation_and_removes_its_socket_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("null.sock");
    let mut null = spawn_serve(&socket, &["--socket-mode", "0666"]);
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o666);

    let (ok, json) = bench_against(&socket, 60);
    assert!(ok, "{json}");
    assert!(json.contains("\"accepted\":60,"), "every transaction accepted: {json}");
    assert!(json.contains("\"errors\":0,"), "{json}");

    let mut child = null.0.take().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(!socket.exists(), "the socket file is removed on exit");
}

#[test]
fn serve_never_takes_over_a_live_socket_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("m.sock");
    let _running = spawn_serve(&socket, &[]);

    let second = run_to_exit(&["serve", "--socket", &format!("unix:{}", socket.display())]);
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by a live process"), "{err}");
    let (ok, json) = bench_against(&socket, 10);
    assert!(ok && json.contains("\"accepted\":10,"), "the first one still serves: {json}");

    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let on_file = run_to_exit(&["serve", "--socket", &format!("unix:{}", file.display())]);
    assert_eq!(on_file.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&on_file.stderr).contains("not a socket"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    let other = format!("unix:{}", dir.path().join("x.sock").display());
    let bad_mode = run_to_exit(&["serve", "--socket", &other, "--socket-mode", "0999"]);
    assert_eq!(bad_mode.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_mode.stderr).contains("not an octal mode"));
}

/// Runs `milter-bench delay` (time scaled by 600: the daemon's 1 s period is 600 simulated s)
/// against a daemon with the given big-sender settings, and returns its JSON report.
async fn delay_run(spf_identity: bool, awl: u32) -> String {
    let dns = common::dns::TestDns::builder()
        .zone("org")
        .zone("com")
        .zone("net")
        .txt("pool0.example.org", "v=spf1 ip4:198.18.0.0/15 -all")
        .txt("corp0.example.com", "v=spf1 ip4:203.0.113.0/24 -all")
        .txt("corp1.example.com", "v=spf1 ip4:203.0.113.0/24 -all")
        .start()
        .await;
    let daemon = common::TestDaemon::start(&format!(
        "dns-servers = [\"{}\"]\ngrey-key = \"ptr,mail,rcpt\"\ngrey-temp-fail-period = 1\n\
         grey-spf-identity = {spf_identity}\ngrey-auto-whitelist-clients = {awl}\n",
        dns.addr()
    ))
    .await;
    let spec = format!("unix:{}", daemon.socket.display());
    #[rustfmt::skip]
    let args = [
        "delay", "--socket", &spec, "--json", "--time-scale", "600", "--period", "1", "--window", "600",
        "--give-up", "3600", "--providers", "1", "--pool-size", "200", "--pool-messages", "12",
        "--mtas", "2", "--mta-messages", "6", "--bot-messages", "10", "--recipients", "4", "--seed", "3",
    ];
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || Command::new(BENCH).args(args).output().unwrap()).await.unwrap();
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{json} {}", String::from_utf8_lossy(&out.stderr));
    json
}

/// The figures of one class from the report: (delivered_pct, by_first_retry_pct, delivered).
fn class_figures(json: &str, class: &str) -> (f64, f64, u64) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let c = v["classes"].as_array().unwrap().iter().find(|c| c["class"] == class).unwrap_or_else(|| panic!("{class} in {json}"));
    (c["delivered_pct"].as_f64().unwrap(), c["by_first_retry_pct"].as_f64().unwrap(), c["delivered"].as_u64().unwrap())
}

/// The delay benchmark tells the settings apart the way the greylisting docs promise: with the SPF
/// identity, every pool sender is through by its first retry after the period, although each
/// retry comes from another address; with smtpf's keys most of them are not; bots that never
/// retry get nothing through either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_bench_shows_pool_senders_through_on_first_retry_only_with_the_spf_identity() {
    let (on, off) = tokio::join!(delay_run(true, 5), delay_run(false, 0));
    let (pool_on, first_on, _) = class_figures(&on, "pool senders");
    assert_eq!((pool_on, first_on), (100.0, 100.0), "{on}");
    let (_, first_off, _) = class_figures(&off, "pool senders");
    assert!(first_off < 50.0, "smtpf's key makes a retry from another address a new tuple: {off}");
    for json in [&on, &off] {
        assert_eq!(class_figures(json, "bots (never retry)").2, 0, "no bot gets through: {json}");
        assert_eq!(class_figures(json, "single-IP MTAs").0, 100.0, "{json}");
        assert!(json.contains("\"errors\":0"), "{json}");
    }
}

/// `milter-bench policy` drives the policy door as Postfix's smtpd processes do: after its
/// warm-up the known tuples pass, never-seen ones are temp-failed, and nothing is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_bench_drives_the_policy_door() {
    let d = common::TestDaemon::start(
        "policy-socket = \"unix:{dir}/run/policy.sock\"\ngrey-key = \"ptr,mail,rcpt\"\ngrey-temp-fail-period = 1",
    )
    .await;
    let spec = format!("unix:{}", d.dir.path().join("run/policy.sock").display());
    let out = tokio::task::spawn_blocking(move || {
        let args = ["policy", "--socket", &spec, "--messages", "60", "--connections", "4", "--new-tuples", "0.5"];
        run_to_exit(&[&args[..], &["--warm-up", "--warm-up-wait", "1.2", "--json"]].concat())
    })
    .await
    .unwrap();
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{json} {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let num = |key: &str| v[key].as_u64().unwrap_or_else(|| panic!("{key} in {json}"));
    // 60 messages of 1 to 3 recipients: 120 requests (20 of each count).
    assert_eq!(num("requests"), 120, "{json}");
    assert_eq!(num("errors"), 0, "{json}");
    assert!(num("passed") >= 50 && num("refused") >= 50, "known tuples pass, new ones are temp-failed: {json}");
    assert_eq!(num("passed") + num("refused"), 120);
    assert!(d.grep("#387 grey listed").len() as u64 >= num("refused"), "each refusal is a greylisting line");
}

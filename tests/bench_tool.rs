//! `milter-bench serve`, the null milter the benchmark and the end-to-end figures measure against:
//! it must carry a whole MTA conversation, bind its socket as the daemon does (never taking over
//! a running milter's socket or clobbering a file), and leave nothing behind when stopped.

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

//! Coming from smtpf: smtpf options the milter does not apply are accepted in its TOML with a
//! numbered warning each (at start and in `check-config`), and `check-config` names the
//! access-map lines the daemon will skip. All through the real binary, as an admin would run it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_smtpf-milter"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn check_config(path: &Path) -> Output {
    bin().args(["--config", path.to_str().unwrap(), "check-config"]).output().unwrap()
}

#[test]
fn check_config_warns_once_per_smtpf_option_and_hints_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("c.toml");
    std::fs::write(&toml, "cache-reject-ttl = 3600\ninterfaces = \"[::0]:25\"\n").unwrap();
    let out = check_config(&toml);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(!err.contains("did you mean"), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: #206")).collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(
        warnings[0]
            .starts_with("warning: #2061 config: cache-reject-ttl: smtpf option smtpf-milter does not implement, ignored: "),
        "{err}"
    );
    assert!(
        warnings[1].starts_with("warning: #2060 config: interfaces: smtpf option with no meaning in a milter, ignored: "),
        "{err}"
    );

    // A name that is not an smtpf option is still refused; near one, the hint says what it is.
    std::fs::write(&toml, "cache-reject-tll = 3600\n").unwrap();
    let out = check_config(&toml);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("c.toml:1: cache-reject-tll: unknown key; did you mean \"cache-reject-ttl\" (an smtpf option smtpf-milter accepts but does not apply)?"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_daemon_starts_with_smtpf_options_and_says_it_ignores_them() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "mail-require-mx = false\ngrey-key = \"\"\ncache-reject-ttl = 3600\nrun-pid-file = \"/run/smtpf.pid\"\n";
    let (sock, cfg) = common::config_file(dir.path(), extra);
    let mut child = common::spawn_daemon(&cfg, &sock, std::process::Stdio::piped());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let log = text(&out.stderr);
    assert!(log.contains("#2061 config: cache-reject-ttl: smtpf option smtpf-milter does not implement, ignored: "), "{log}");
    assert!(log.contains("#2060 config: run-pid-file: smtpf option with no meaning in a milter, ignored: the service manager tracks the process"), "{log}");
    assert_eq!(log.matches("#206").count(), 2, "{log}");
}

#[test]
fn check_config_names_the_access_map_lines_the_daemon_skips() {
    let dir = tempfile::tempdir().unwrap();
    // As smtpf's access-defaults.cf has them: body: entries among the ones the milter reads.
    let map = dir.path().join("access.cf");
    std::fs::write(
        &map,
        "# access-defaults.cf\nconnect:127.0.0.1\t\tOK\nbody:127.0.0\t\t\tOK\nbody:localhost\t\t\tOK\n\
         connect:localhost\t\tOK\nBody:example.com\t\tOK\nrate-connect:\t\t\t60\n192.0.2.9 REJECT\n",
    )
    .unwrap();
    let toml = dir.path().join("c.toml");
    std::fs::write(&toml, format!("access-map = \"{}\"\n", map.display())).unwrap();
    let out = check_config(&toml);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let m = map.display();
    for needle in [
        format!(
            "warning: #2021 access-map {m}:3: tag \"body:\" is not supported by this milter, 3 lines ignored: lines 3-4, 6\n"
        ),
        format!("warning: #2021 access-map {m}:7: tag \"rate-connect:\" is not supported by this milter, line ignored\n"),
        format!("warning: #2021 access-map {m}:8: key \"192.0.2.9\" has no tag (such as Connect:), line ignored\n"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
}

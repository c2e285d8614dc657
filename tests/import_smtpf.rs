//! Coming from smtpf: `check-config` names the access-map lines the daemon will skip, through the
//! real binary, as an admin would run it.

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

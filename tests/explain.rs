//! `smtpf-milter explain N` explains every number the daemon can put in a reply or a log line,
//! so an admin handed a bounce (`451 4.7.0 try again later #552 <sid>`) can look it up.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use smtpf_milter::reply::catalog;

fn explain(arg: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smtpf-milter")).args(["explain", arg]).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Names of reply catalog entries the daemon's source uses (`replies::NAME`).
fn reply_sites() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("reply/catalog.rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, _) in text.match_indices("replies::") {
                    let name: String = text[i + 9..].chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
                    if !name.is_empty() {
                        out.insert(name);
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")), &mut out);
    out
}

#[test]
fn explain_552_as_the_docs_promise() {
    let (ok, out, err) = explain("552");
    assert!(ok, "{err}");
    assert!(out.starts_with("#552 reply 451 4.7.0 try again later\n"), "{out}");
    assert!(out.contains("Greylisting"), "{out}");
    // With the '#' a bounce shows.
    assert_eq!(explain("#552").1, out);
}

#[test]
fn every_reply_site_is_explained() {
    let sites = reply_sites();
    assert!(sites.len() >= 20, "the source scan found only {sites:?}");
    for name in &sites {
        let entry = catalog::ALL
            .iter()
            .find(|m| m.name == name.as_str())
            .unwrap_or_else(|| panic!("replies::{name} is used but not in the catalog"));
        let (ok, out, err) = explain(&entry.num.to_string());
        assert!(ok, "explain {}: {err}", entry.num);
        let head = format!("#{} reply {} {} {}", entry.num, entry.code, entry.ecode, entry.format);
        assert!(out.starts_with(&head), "explain {}: {out}", entry.num);
        assert!(out.contains(entry.meaning), "explain {}: {out}", entry.num);
    }
    // And no entry is dead: each one is sent from somewhere.
    for m in catalog::ALL {
        assert!(sites.contains(m.name), "#{} ({}) is in the catalog but never sent", m.num, m.name);
    }
}

#[test]
fn no_reply_is_built_outside_the_catalog() {
    fn walk(dir: &Path, bad: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("reply") {
                    walk(&path, bad);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    if line.contains("Reply {") && line.contains("num") {
                        bad.push(format!("{}:{}: {line}", path.display(), n + 1));
                    }
                }
            }
        }
    }
    let mut bad = Vec::new();
    walk(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")), &mut bad);
    assert!(bad.is_empty(), "replies built by hand:\n{}", bad.join("\n"));
}

#[test]
fn log_numbers_still_explain_and_unknown_numbers_fail() {
    let (ok, out, _) = explain("637");
    assert!(ok && out.starts_with("#637 INFO start "), "{out}");
    let (ok, _, err) = explain("1");
    assert!(!ok && err.contains("#1 is neither"), "{err}");
    let (ok, _, err) = explain("five");
    assert!(!ok && err.contains("not a message number"), "{err}");
}

#[test]
fn the_full_list_holds_replies_too() {
    let out = Command::new(env!("CARGO_BIN_EXE_smtpf-milter")).arg("explain").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("#552 reply 451 4.7.0 try again later\n"), "{text}");
    assert!(text.contains("#637 INFO start"), "{text}");
}

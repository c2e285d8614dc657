//! `verbose` module words: each one turns on its module's debug lines and nothing else, and
//! smtpf's own words load with a warning instead of stopping the daemon.

mod common;

use common::dns::TestDns;
use common::{open_session, TestDaemon};
use smtpf_milter::milter::codec::{Command, Response};

/// A message that goes through every module: the access-map, a DNS list, MX and SPF at MAIL,
/// greylisting (dry run, so the message goes on), a URI in the body, duplicate detection.
async fn one_message(d: &TestDaemon) {
    let mut c = d.client().await;
    open_session(&mut c, "client.good.test", "192.0.2.80", "client.good.test").await;
    c.command(&Command::Mail { sender: "<a@good.test>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: "<b@example.net>".into(), params: vec![] }).await.unwrap();
    assert_eq!(c.command(&Command::Data).await.unwrap(), vec![Response::Continue]);
    c.command(&Command::Header { name: "Message-ID".into(), value: "<v1@good.test>".into() }).await.unwrap();
    c.command(&Command::EndOfHeaders).await.unwrap();
    c.command(&Command::Body(b"see http://www.shop.example.com/ now\r\n".to_vec())).await.unwrap();
    c.command(&Command::EndOfMessage(Vec::new())).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    d.wait_for("#721 end", 1).await;
}

/// The debug lines of each word; every other debug line number must stay silent.
const WORDS: &[(&str, &str, &str)] = &[
    ("access", "#2054", "#2054 access Connect:client.good.test [192.0.2.80]:4711: no entry"),
    ("dns", "#2055", "#2055 dns MX good.test: 10 mx1.good.test"),
    ("rbl", "#2056", "#2056 dns-bl 192.0.2.80 (every list): not listed"),
    ("uri", "#2057", "#2057 uri www.shop.example.com found in message (1 of at most"),
    ("mx", "#2058", "#2058 MX good.test: Hosts { addresses: [64.0.2.25]"),
    ("spf", "#2059", "#2059 spf mail a@good.test: Pass"),
    ("dupmsg", "#2062", "#2062 dupmsg key=dupmsg:"),
    ("cache", "#2063", "#2063 cache claim key=grey:a@good.test,b@example.net: None"),
];

#[tokio::test]
async fn each_module_word_turns_on_its_debug_lines_only() {
    let dns = TestDns::builder()
        .mx("good.test", 10, "mx1.good.test")
        .a("mx1.good.test", "64.0.2.25")
        .txt("good.test", "v=spf1 ip4:192.0.2.0/24 -all")
        .zone("bl.test")
        .zone("uribl.test")
        .zone("com")
        .zone("net")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("access.cf");
    std::fs::write(&map, "Connect:198.51.100.1 REJECT\n").unwrap();
    let base = format!(
        "dns-servers = [\"{}\"]\ndns-timeout = 1\nmail-require-mx = true\ngrey-key = \"mail,rcpt\"\ngrey-dry-run = true\n\
         dupmsg-ttl = 90000\ndns-bl = [\"bl.test\"]\nuri-bl = [\"uribl.test\"]\naccess-map = \"{}\"\n",
        dns.addr(),
        map.display()
    );
    let all: Vec<&str> = WORDS.iter().map(|(_, n, _)| *n).collect();
    // Plain info: none of them.
    let d = TestDaemon::start(&format!("{base}verbose = \"info\"")).await;
    one_message(&d).await;
    for n in &all {
        assert!(d.grep(&format!("{n} ")).is_empty(), "{n} without its word: {:?}", d.grep(n));
    }
    for (word, number, needle) in WORDS {
        let d = TestDaemon::start(&format!("{base}verbose = \"info,{word}\"")).await;
        one_message(&d).await;
        d.wait_for(needle, 1).await;
        for other in all.iter().filter(|n| *n != number) {
            let stray: Vec<String> = d.lines().into_iter().filter(|l| l.contains(&format!("{other} "))).collect();
            assert!(stray.is_empty(), "verbose {word} wrote {other}: {stray:?}");
        }
    }
}

/// smtpf's default `verbose` and its words for things a milter does not have load, with one
/// numbered warning naming them; a word of neither kind still stops the config.
#[test]
fn smtpf_words_load_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (_socket, config) = common::config_file(dir.path(), "verbose = \"info,smtp=1,tls,subject,dns=0\"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smtpf-milter"))
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("verbose: smtpf's word(s) smtp, tls, subject have no meaning in a milter"), "{text}");
    let (_socket, config) = common::config_file(dir.path(), "verbose = \"info,frobnicate\"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smtpf-milter"))
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown verbose word \"frobnicate\""));
}

//! White, grey and black listing through whole milter sessions: access-map entries and DNS lists
//! answered by a real (in-process) DNS server. Asserts the replies the MTA gets, the flags of
//! #721 and the numbered lines.

mod common;

use common::dns::TestDns;
use common::{open_session, send_message, Message, TestDaemon};
use smtpf_milter::milter::codec::{Command, Response};

fn reply(r: &[Response]) -> String {
    match r {
        [Response::ReplyCode(s)] => s.clone(),
        other => panic!("expected one reply code, got {other:?}"),
    }
}

async fn lists_dns() -> TestDns {
    TestDns::builder()
        .zone("bl.test")
        .zone("wl.test")
        .zone("gl.test")
        .zone("w.test")
        .zone("slow.test")
        .listed("192.0.2.2", "bl.test", "127.0.0.2")
        .listed("192.0.2.3", "bl.test", "127.0.0.4")
        .listed("192.0.2.9", "bl.test", "127.255.255.254")
        .listed("192.0.2.10", "bl.test", "127.0.1.255")
        .listed("192.0.2.11", "bl.test", "10.0.0.2")
        .listed("2001:db8::2", "bl.test", "127.0.0.2")
        .listed("192.0.2.5", "wl.test", "127.0.0.2")
        .listed("192.0.2.5", "bl.test", "127.0.0.2")
        .listed("192.0.2.6", "gl.test", "127.0.0.2")
        .listed("192.0.2.7", "w.test", "127.0.0.3")
        .blackhole("slow.test")
        .start()
        .await
}

async fn daemon(dns: &TestDns, extra: &str) -> TestDaemon {
    TestDaemon::start(&format!("dns-servers = [\"{}\"]\ndns-timeout = 1\n{extra}", dns.addr())).await
}

#[tokio::test]
async fn dns_bl_listed_client_is_refused_at_connect() {
    let dns = lists_dns().await;
    let d = daemon(&dns, "dns-bl = [\"bl.test\"]").await;
    let mut c = d.client().await;
    let got = open_session(&mut c, "[192.0.2.2]", "192.0.2.2", "spam.example").await;
    let sid = d.grep("#637 start")[0].split(' ').next().unwrap().to_string();
    // The 550 comes at CONNECT (Postfix then refuses every command of the session with it).
    assert_eq!(reply(&got[..1]), format!("550 5.7.0 [192.0.2.2]:4711 black listed by bl.test. #525 {sid}"));
    assert_eq!(d.grep(&format!("{sid} #523 dns-bl found 192.0.2.2 bl.test.")).len(), 1);
    c.command(&Command::Quit).await.unwrap();
    let end = d.wait_for("#721 end", 1).await;
    assert!(end[0].contains("f=\"forged,black,no_ptr,quit\""), "{}", end[0]);
    assert!(
        end[0].contains("R=1 t=")
            && end[0].ends_with(&format!("l=\"550 5.7.0 [192.0.2.2]:4711 black listed by bl.test. #525 {sid}\"")),
        "{}",
        end[0]
    );
}

#[tokio::test]
async fn unlisted_and_non_list_answers_pass() {
    let dns = lists_dns().await;
    let d = daemon(&dns, "dns-bl = \"bl.test\"").await;
    // 192.0.2.1 not listed; .9 answers Spamhaus's 127.255.255.254 (an error code); .10 answers
    // 127.0.1.255 (DBL's IP-query code); .11 answers outside 127/8: none is a listing.
    for ip in ["192.0.2.1", "192.0.2.9", "192.0.2.10", "192.0.2.11"] {
        let mut c = d.client().await;
        let got = open_session(&mut c, "client.example.org", ip, "client.example.org").await;
        assert_eq!(got, vec![Response::Continue], "{ip}: answered at CONNECT; HELO needs no answer");
        assert_eq!(send_message(&mut c, &Message::simple("Q")).await, vec![Response::Continue]);
    }
    assert!(d.grep("#523").is_empty(), "{:?}", d.grep("#523"));
}

#[tokio::test]
async fn ipv6_client_is_looked_up_by_nibbles() {
    let dns = lists_dns().await;
    let d = daemon(&dns, "dns-bl = [\"bl.test\"]").await;
    let mut c = d.client().await;
    let got = open_session(&mut c, "[2001:db8::2]", "IPv6:2001:db8::2", "x.example").await;
    assert!(reply(&got[..1]).starts_with("550 5.7.0 [2001:db8::2]:4711 black listed by bl.test. #525 "), "{got:?}");
}

#[tokio::test]
async fn mask_and_weights_decide() {
    let dns = lists_dns().await;
    // 192.0.2.3 answers 127.0.0.4: bit 0x04 is outside mask 0x02, so not listed by a masked entry.
    let d = daemon(&dns, "dns-bl = [\"bl.test/0x02\"]").await;
    let mut c = d.client().await;
    assert_eq!(open_session(&mut c, "h.example", "192.0.2.3", "h.example").await, vec![Response::Continue]);
    let mut c = d.client().await;
    assert!(reply(&open_session(&mut c, "h.example", "192.0.2.2", "h.example").await[..1]).contains("black listed by bl.test"));

    // postscreen weights: one list of weight 1 under threshold 2 does not list; two do.
    let d = daemon(&dns, "dns-bl = [\"bl.test=127.0.0.[2..4]*1\", \"w.test*1\"]\ndns-bl-threshold = 2").await;
    let mut c = d.client().await;
    assert_eq!(open_session(&mut c, "h.example", "192.0.2.2", "h.example").await, vec![Response::Continue]);
    let d = daemon(&dns, "dns-bl = [\"bl.test=127.0.0.[2..4]*2\"]\ndns-bl-threshold = 2").await;
    let mut c = d.client().await;
    assert!(reply(&open_session(&mut c, "h.example", "192.0.2.3", "h.example").await[..1]).contains("#525"));
}

#[tokio::test]
async fn white_list_wins_over_black_list() {
    let dns = lists_dns().await;
    let d = daemon(&dns, "dns-wl = [\"wl.test\"]\ndns-gl = [\"gl.test\"]\ndns-bl = [\"bl.test\"]").await;
    let mut c = d.client().await;
    let got = open_session(&mut c, "good.example", "192.0.2.5", "good.example").await;
    assert_eq!(got, vec![Response::Continue], "white, although also in bl.test");
    assert_eq!(send_message(&mut c, &Message::simple("W1")).await, vec![Response::Continue]);
    c.command(&Command::Quit).await.unwrap();
    d.wait_for("#523 dns-wl found 192.0.2.5 wl.test.", 1).await;
    assert!(d.wait_for("#721 end", 1).await[0].contains("f=\"white,quit\""));
    assert!(d.grep("dns-bl found").is_empty());

    let mut c = d.client().await;
    open_session(&mut c, "grey.example", "192.0.2.6", "grey.example").await;
    c.command(&Command::Quit).await.unwrap();
    d.wait_for("#523 dns-gl found 192.0.2.6 gl.test.", 1).await;
    assert!(d.wait_for("#721 end", 2).await[1].contains("f=\"grey,quit\""));
}

#[tokio::test]
async fn a_list_that_never_answers_counts_as_not_listed() {
    let dns = lists_dns().await;
    let d = daemon(&dns, "dns-bl = [\"slow.test\", \"bl.test\"]").await;
    let mut c = d.client().await;
    let started = std::time::Instant::now();
    let got = open_session(&mut c, "h.example", "192.0.2.1", "h.example").await;
    assert_eq!(got, vec![Response::Continue]);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "bounded by dns-timeout: {:?}", started.elapsed());
    d.wait_for("#2020 dns-bl slow.test. lookup of 192.0.2.1: timeout; counted as not listed", 1).await;
    // The other list still works in the same lookup round.
    let mut c = d.client().await;
    assert!(reply(&open_session(&mut c, "h.example", "192.0.2.2", "h.example").await[..1]).contains("black listed by bl.test"));
}

#[tokio::test]
async fn delay_checks_hold_the_refusal_until_rcpt_and_spare_white_recipients() {
    let dns = lists_dns().await;
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("access.cf");
    std::fs::write(&map, "To:postmaster@ OK\n").unwrap();
    let d = daemon(&dns, &format!("dns-bl = [\"bl.test\"]\nsmtp-delay-checks = true\naccess-map = \"{}\"", map.display())).await;
    let mut c = d.client().await;
    assert!(open_session(&mut c, "[192.0.2.2]", "192.0.2.2", "h.example").await.is_empty(), "no answer promised before RCPT");
    let sid = d.wait_for("#637 start", 1).await[0].split(' ').next().unwrap().to_string();
    d.wait_for(&format!("#1034 delayed: 550 5.7.0 [192.0.2.2]:4711 black listed by bl.test. #525 {sid}"), 1).await;
    assert_eq!(
        c.command(&Command::Mail { sender: "<a@example.org>".into(), params: vec![] }).await.unwrap(),
        vec![Response::Continue]
    );
    let pm = c.command(&Command::Rcpt { recipient: "<postmaster@example.net>".into(), params: vec![] }).await.unwrap();
    assert_eq!(pm, vec![Response::Continue], "postmaster is white listed");
    let other = c.command(&Command::Rcpt { recipient: "<bob@example.net>".into(), params: vec![] }).await.unwrap();
    assert_eq!(reply(&other), format!("550 5.7.0 [192.0.2.2]:4711 black listed by bl.test. #525 {sid}"));
    d.wait_for("#138 recipient <postmaster@example.net> white listed (to:postmaster@)", 1).await;
    assert!(d.grep("#718 recipient <bob@example.net>")[0]
        .contains(&format!("x=\"550 5.7.0 [192.0.2.2]:4711 black listed by bl.test. #525 {sid}\"")));
}

fn access_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.cf");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[tokio::test]
async fn access_map_every_tag() {
    let (_dir, map) = access_file(
        "Connect:192.0.2.50        OK\n\
         Connect:192.0.2.51        REJECT:\"go away\"\n\
         Connect:198.51.100        TEMPFAIL\n\
         Connect:192.0.2.52        DISCARD\n\
         Connect:192.0.2.53        IREJECT\n\
         Helo:bad.example          REJECT\n\
         Helo:friend.example       OK\n\
         From:spammer@example.com  REJECT\n\
         From:example.org          OK\n\
         From:slow.example         TEMPFAIL\n\
         Connect:192.0.2.60:From:boss@partner.example OK\n\
         From:trash.example        DISCARD\n\
         To:nobody@example.net     REJECT\n\
         From:a@x.example:To:b@example.net OK\n\
         To:                       CONTINUE\n",
    );
    let d = TestDaemon::start(&format!("access-map = \"{}\"", map.display())).await;
    let sid_of =
        |d: &TestDaemon, ip: &str| -> String { d.grep(&format!("[{ip}]:4711"))[0].split(' ').next().unwrap().to_string() };

    // Connect: OK white lists: #119 with the key, and skips the Helo: entry; but local black-list
    // entries for senders and recipients still hold, as in smtpf.
    let mut c = d.client().await;
    assert_eq!(
        open_session(&mut c, "partner.example", "192.0.2.50", "bad.example").await,
        vec![Response::Continue, Response::Continue]
    );
    d.wait_for("#119 host partner.example [192.0.2.50]:4711 white listed (connect:192.0.2.50)", 1).await;
    let sid = sid_of(&d, "192.0.2.50");
    let r = c.command(&Command::Mail { sender: "<spammer@example.com>".into(), params: vec![] }).await.unwrap();
    assert_eq!(reply(&r), format!("550 5.7.1 sender <spammer@example.com> black listed #127 {sid}"));
    c.command(&Command::Abort).await.unwrap();
    assert_eq!(send_message(&mut c, &Message::simple("A1")).await, vec![Response::Continue]);
    c.command(&Command::Mail { sender: "<alice@example.org>".into(), params: vec![] }).await.unwrap();
    let r = c.command(&Command::Rcpt { recipient: "<nobody@example.net>".into(), params: vec![] }).await.unwrap();
    assert_eq!(reply(&r), format!("550 5.7.1 recipient <nobody@example.net> black listed #139 {sid}"));

    // REJECT with a message.
    let mut c = d.client().await;
    let got = open_session(&mut c, "x.example", "192.0.2.51", "x.example").await;
    let sid = sid_of(&d, "192.0.2.51");
    assert_eq!(reply(&got[..1]), format!("550 5.7.1 host x.example [192.0.2.51]:4711 go away #120 {sid}"));

    // TEMPFAIL by network prefix.
    let mut c = d.client().await;
    let got = open_session(&mut c, "y.example", "198.51.100.7", "y.example").await;
    assert!(reply(&got[..1]).starts_with("450 4.7.1 host y.example [198.51.100.7]:4711 temporary failure #853 "), "{got:?}");

    // IREJECT.
    let mut c = d.client().await;
    assert!(reply(&open_session(&mut c, "z.example", "192.0.2.53", "z.example").await[..1]).contains("black listed #854"));

    // DISCARD: every message accepted and thrown away.
    let mut c = d.client().await;
    open_session(&mut c, "d.example", "192.0.2.52", "d.example").await;
    assert_eq!(send_message(&mut c, &Message::simple("D1")).await, vec![Response::Discard]);
    d.wait_for("#974 host d.example [192.0.2.52]:4711 discard", 1).await;

    // Helo: REJECT.
    let mut c = d.client().await;
    let got = open_session(&mut c, "h.example", "192.0.2.70", "bad.example").await;
    assert_eq!(got[0], Response::Continue);
    assert!(reply(&got[1..]).starts_with("550 5.7.1 helo bad.example black listed #924 "), "{got:?}");
    // Helo: OK white lists.
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.71", "friend.example").await;
    d.wait_for("#923 helo friend.example white listed (helo:friend.example)", 1).await;

    // From: REJECT / OK / TEMPFAIL / DISCARD, and Connect:From: OK.
    let mut c = d.client().await;
    open_session(&mut c, "m.example", "192.0.2.72", "m.example").await;
    let sid = sid_of(&d, "192.0.2.72");
    let r = c.command(&Command::Mail { sender: "<spammer@example.com>".into(), params: vec![] }).await.unwrap();
    assert_eq!(reply(&r), format!("550 5.7.1 sender <spammer@example.com> black listed #127 {sid}"));
    assert!(d.grep("#717 sender <spammer@example.com>").last().unwrap().contains("f=\"black,local_black\""));
    c.command(&Command::Abort).await.unwrap();
    let r = c.command(&Command::Mail { sender: "<x@slow.example>".into(), params: vec![] }).await.unwrap();
    assert!(reply(&r).starts_with("450 4.7.1 sender <x@slow.example> temporary failure #815 "));
    c.command(&Command::Abort).await.unwrap();
    assert_eq!(
        c.command(&Command::Mail { sender: "<anyone@example.org>".into(), params: vec![] }).await.unwrap(),
        vec![Response::Continue]
    );
    d.wait_for("#126 sender <anyone@example.org> white listed (from:example.org)", 1).await;
    c.command(&Command::Abort).await.unwrap();
    let m = Message { from: "<junk@trash.example>", ..Message::simple("T1") };
    assert_eq!(send_message(&mut c, &m).await, vec![Response::Discard]);
    d.wait_for("#975 message", 1).await;

    let mut c = d.client().await;
    open_session(&mut c, "p.example", "192.0.2.60", "p.example").await;
    c.command(&Command::Mail { sender: "<boss@partner.example>".into(), params: vec![] }).await.unwrap();
    d.wait_for("#124 host p.example [192.0.2.60]:4711 sender <boss@partner.example> white listed (connect:192.0.2.60:from:boss@partner.example)", 1).await;

    // To: REJECT, From:To: OK, bare To: CONTINUE.
    let mut c = d.client().await;
    open_session(&mut c, "r.example", "192.0.2.73", "r.example").await;
    let sid = sid_of(&d, "192.0.2.73");
    c.command(&Command::Mail { sender: "<a@x.example>".into(), params: vec![] }).await.unwrap();
    let r = c.command(&Command::Rcpt { recipient: "<nobody@example.net>".into(), params: vec![] }).await.unwrap();
    assert_eq!(reply(&r), format!("550 5.7.1 recipient <nobody@example.net> black listed #139 {sid}"));
    assert_eq!(
        c.command(&Command::Rcpt { recipient: "<b@example.net>".into(), params: vec![] }).await.unwrap(),
        vec![Response::Continue]
    );
    d.wait_for("#136 sender <a@x.example> recipient <b@example.net> white listed (from:a@x.example:to:b@example.net)", 1).await;
    assert_eq!(
        c.command(&Command::Rcpt { recipient: "<c@example.net>".into(), params: vec![] }).await.unwrap(),
        vec![Response::Continue]
    );
    c.command(&Command::Data).await.unwrap();
    assert_eq!(c.command(&Command::EndOfMessage(Vec::new())).await.unwrap(), vec![Response::Continue]);
    let m = d.wait_for("#720 message", 1).await;
    assert!(m.iter().any(|l| l.contains("r=2/1")), "{m:?}");
}

#[tokio::test]
async fn broken_access_map_stops_start_and_is_refused_at_reload() {
    let (_dir, map) = access_file("Connect:192.0.2.1 OK\nConnect:192.0.2.2 [192.0.2.0/24OK\n");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "milter-socket = \"unix:{}\"\ncache-path = \"{}\"\naccess-map = \"{}\"\n",
        dir.path().join("m.sock").display(),
        dir.path().join("c.sq3").display(),
        map.display()
    );
    let config = smtpf_milter::config::Config::from_toml(&text, None).unwrap();
    let (log, lines) = smtpf_milter::log::Logger::memory(config.verbose.clone());
    let err = smtpf_milter::daemon::start(config, log).await.err().expect("refused");
    assert!(err.contains("access.cf:2"), "{err}");
    let lines = lines.lock().unwrap().clone();
    assert!(lines.iter().any(|l| l.starts_with("#103 ") && l.contains("access.cf:2:")), "{lines:?}");

    // A good map loads; a broken edit at reload keeps the old one in force.
    std::fs::write(&map, "Connect:192.0.2.51 REJECT\n").unwrap();
    let d = TestDaemon::start(&format!("access-map = \"{}\"", map.display())).await;
    std::fs::write(&map, "Connect:192.0.2.51 /unclosed\n").unwrap();
    assert!(d.running().reload().is_err());
    d.wait_for("#108 ", 1).await;
    d.wait_for("#2007 reload: access-map:", 1).await;
    let mut c = d.client().await;
    assert!(reply(&open_session(&mut c, "x.example", "192.0.2.51", "x.example").await[..1]).contains("#120"));
}

#[test]
fn check_config_validates_the_access_map() {
    let (_dir, map) = access_file("Connect:192.0.2.1 MAYBE\n");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("access-map = \"{}\"\n", map.display())).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smtpf-milter"))
        .args(["--config", cfg.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("access.cf:1"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// IREJECT refuses at once whatever `smtp-delay-checks` says (docs/access-map.md): with the delay
/// on, CONNECT and HELO must still be answered, or the refusal is dropped and the mail accepted.
#[tokio::test]
async fn ireject_refuses_at_once_even_with_smtp_delay_checks() {
    let (_dir, map) = access_file("Connect:192.0.2.53        IREJECT\nHelo:worse.example        IREJECT\n");
    let d = TestDaemon::start(&format!("smtp-delay-checks = true\naccess-map = \"{}\"", map.display())).await;
    let mut c = d.client().await;
    let got = open_session(&mut c, "z.example", "192.0.2.53", "z.example").await;
    assert!(reply(&got[..1]).contains("black listed #854"), "{got:?}");
    let mut c = d.client().await;
    let got = open_session(&mut c, "h.example", "192.0.2.54", "worse.example").await;
    assert_eq!(got[0], Response::Continue);
    assert!(reply(&got[1..]).starts_with("550 5.7.1 helo worse.example black listed #926 "), "{got:?}");
    assert!(d.grep("#539").is_empty(), "no refusal dropped: {:?}", d.grep("#539"));
}

/// Opens a session for a client whose PTR name is not forward-confirmed, the way Postfix tells
/// it: host name `unknown`, `{client_resolve}` FORGED and the PTR in `{client_ptr}`.
async fn open_forged(
    c: &mut smtpf_milter::milter::client::MtaClient<tokio::net::UnixStream>,
    ptr: &str,
    ip: &str,
) -> Vec<Response> {
    use smtpf_milter::milter::client::{POSTFIX_ACTIONS, POSTFIX_PROTOCOL};
    use smtpf_milter::milter::codec::Family;
    c.negotiate(6, POSTFIX_ACTIONS, POSTFIX_PROTOCOL).await.unwrap();
    c.macros(b'C', &[("j", "mx.example.net"), ("{client_ptr}", ptr), ("{client_resolve}", "FORGED")]).await.unwrap();
    let mut got = c
        .command(&Command::Connect { hostname: "unknown".into(), family: Family::Inet, port: 4711, address: ip.into() })
        .await
        .unwrap();
    got.extend(c.command(&Command::Helo { name: "helo.example".into() }).await.unwrap());
    got
}

/// smtpf matches `Connect:` name keys against the PTR even when it is not forward-confirmed: a
/// refusing entry catches the forged-PTR client. A granting entry does not (anyone can make their
/// PTR claim a partner's name), and a confirmed name still matches both.
#[tokio::test]
async fn connect_name_keys_refuse_unconfirmed_ptrs_but_do_not_white_list_them() {
    let (_dir, map) = access_file(
        "Connect:spam.example            REJECT\n\
         Connect:partner.example         OK\n\
         Connect:hold.example            TEMPFAIL\n\
         Connect:cf.example:From:a@x.example REJECT\n\
         From:x.example                  REJECT\n",
    );
    let d = TestDaemon::start(&format!("access-map = \"{}\"", map.display())).await;
    let sid_of =
        |d: &TestDaemon, ip: &str| -> String { d.grep(&format!("[{ip}]:4711"))[0].split(' ').next().unwrap().to_string() };

    let mut c = d.client().await;
    let got = open_forged(&mut c, "dsl-7.pool.spam.example", "198.51.100.7").await;
    let sid = sid_of(&d, "198.51.100.7");
    assert_eq!(reply(&got[..1]), format!("550 5.7.1 host [198.51.100.7]:4711 black listed #120 {sid}"));

    let mut c = d.client().await;
    let got = open_forged(&mut c, "mx.hold.example", "198.51.100.9").await;
    assert!(reply(&got[..1]).starts_with("450 4.7.1 host [198.51.100.9]:4711 temporary failure #853 "), "{got:?}");

    // The same name, unconfirmed, does not white-list: the sender's REJECT entry decides.
    let mut c = d.client().await;
    assert_eq!(open_forged(&mut c, "mail.partner.example", "198.51.100.8").await, vec![Response::Continue; 2]);
    assert!(d.grep("#119").is_empty(), "{:?}", d.grep("#119"));
    let sid = sid_of(&d, "198.51.100.8");
    let r = c.command(&Command::Mail { sender: "<a@x.example>".into(), params: vec![] }).await.unwrap();
    assert_eq!(reply(&r), format!("550 5.7.1 sender <a@x.example> black listed #127 {sid}"));

    // A combo key with an unconfirmed name refuses too, naming the host.
    let mut c = d.client().await;
    open_forged(&mut c, "h.cf.example", "198.51.100.10").await;
    let sid = sid_of(&d, "198.51.100.10");
    let r = c.command(&Command::Mail { sender: "<a@x.example>".into(), params: vec![] }).await.unwrap();
    assert_eq!(reply(&r), format!("550 5.7.1 host [198.51.100.10]:4711 sender <a@x.example> black listed #125 {sid}"));

    // Confirmed, the partner is white listed (and its sender REJECT entry still holds).
    let mut c = d.client().await;
    open_session(&mut c, "mail.partner.example", "198.51.100.11", "mail.partner.example").await;
    d.wait_for("#119 host mail.partner.example [198.51.100.11]:4711 white listed (connect:partner.example)", 1).await;
}

/// At RCPT each kind of recipient entry answers with its own reply, naming what matched (the
/// client for `Connect:To:`, the sender for `From:To:`), logs its own white-list line, and the
/// access debug line (verbose word access) names the tag that matched.
#[tokio::test]
async fn recipient_entries_name_what_matched() {
    let (_dir, map) = access_file(
        "Connect:192.0.2.80:To:ops@example.net    REJECT\n\
         Connect:192.0.2.80:To:hold@example.net   TEMPFAIL\n\
         Connect:192.0.2.80:To:vip@example.net    OK\n\
         From:a@x.example:To:b@example.net        REJECT\n\
         From:a@x.example:To:c@example.net        TEMPFAIL\n\
         From:a@x.example:To:d@example.net        OK\n\
         To:nobody@example.net                    REJECT\n\
         To:later@example.net                     TEMPFAIL\n\
         To:boss@example.net                      OK\n",
    );
    let d = TestDaemon::start(&format!("access-map = \"{}\"\nverbose = \"info,access\"", map.display())).await;
    let mut c = d.client().await;
    open_session(&mut c, "h.example", "192.0.2.80", "h.example").await;
    let sid = d.grep("[192.0.2.80]:4711")[0].split(' ').next().unwrap().to_string();
    c.command(&Command::Mail { sender: "<a@x.example>".into(), params: vec![] }).await.unwrap();
    let host = "host h.example [192.0.2.80]:4711";
    let sender = "sender <a@x.example>";
    for (rcpt, answer, tag) in [
        ("ops@example.net", Some(format!("550 5.7.1 {host} recipient <ops@example.net> black listed #135")), "Connect:To:"),
        (
            "hold@example.net",
            Some(format!("450 4.7.1 {host} recipient <hold@example.net> temporary failure #816")),
            "Connect:To:",
        ),
        ("vip@example.net", None, "Connect:To:"),
        ("b@example.net", Some(format!("550 5.7.1 {sender} recipient <b@example.net> black listed #137")), "From:To:"),
        ("c@example.net", Some(format!("450 4.7.1 {sender} recipient <c@example.net> temporary failure #817")), "From:To:"),
        ("d@example.net", None, "From:To:"),
        ("nobody@example.net", Some("550 5.7.1 recipient <nobody@example.net> black listed #139".to_string()), "To:"),
        ("later@example.net", Some("450 4.7.1 recipient <later@example.net> temporary failure #818".to_string()), "To:"),
        ("boss@example.net", None, "To:"),
    ] {
        let r = c.command(&Command::Rcpt { recipient: format!("<{rcpt}>"), params: vec![] }).await.unwrap();
        match answer {
            Some(text) => assert_eq!(reply(&r), format!("{text} {sid}"), "{rcpt}"),
            None => assert_eq!(r, vec![Response::Continue], "{rcpt}"),
        }
        d.wait_for(&format!("{sid} #2054 access {tag}{rcpt}: found "), 1).await;
    }
    d.wait_for(&format!("{sid} #134 {host} recipient <vip@example.net> white listed (connect:192.0.2.80:to:vip@example.net)"), 1)
        .await;
    d.wait_for(&format!("{sid} #136 {sender} recipient <d@example.net> white listed (from:a@x.example:to:d@example.net)"), 1)
        .await;
    d.wait_for(&format!("{sid} #138 recipient <boss@example.net> white listed (to:boss@example.net)"), 1).await;
}

/// A zone of weight 0 counts for nothing: when it lists the client beside the list that does
/// the refusing, the reply and the #523 line name the refusing list, not the informational one.
#[tokio::test]
async fn the_refusal_names_the_list_that_listed_not_a_weight_0_zone() {
    let dns = TestDns::builder()
        .zone("info.test")
        .zone("bl.test")
        .listed("192.0.2.2", "info.test", "127.0.0.2")
        .listed("192.0.2.2", "bl.test", "127.0.0.2")
        .start()
        .await;
    let d = daemon(&dns, "dns-bl = [\"info.test*0\", \"bl.test\"]").await;
    let mut c = d.client().await;
    let got = open_session(&mut c, "[192.0.2.2]", "192.0.2.2", "spam.example").await;
    let sid = d.grep("#637 start")[0].split(' ').next().unwrap().to_string();
    assert_eq!(reply(&got[..1]), format!("550 5.7.0 [192.0.2.2]:4711 black listed by bl.test. #525 {sid}"));
    d.wait_for(&format!("{sid} #523 dns-bl found 192.0.2.2 bl.test."), 1).await;
}

/// The list debug lines (verbose word rbl) say what each list answered, and "not listed" only
/// when no list listed the client and none failed.
#[tokio::test]
async fn list_debug_lines_say_not_listed_only_when_nothing_was_found() {
    let dns =
        TestDns::builder().zone("bl.test").listed("192.0.2.2", "bl.test", "127.0.0.2").servfail("broken.test").start().await;
    let d = daemon(&dns, "dns-wl = [\"broken.test\"]\ndns-bl = [\"bl.test\"]\nverbose = \"info,rbl\"").await;
    for ip in ["192.0.2.1", "192.0.2.2"] {
        let mut c = d.client().await;
        open_session(&mut c, "h.example", ip, "h.example").await;
        c.command(&Command::Quit).await.unwrap();
    }
    d.wait_for("#721 end", 2).await;
    d.wait_for("#2056 dns-bl 192.0.2.1 (every list): not listed", 1).await;
    d.wait_for("#2056 dns-bl 192.0.2.2 bl.test.: listed 127.0.0.2 (weight 1)", 1).await;
    for ip in ["192.0.2.1", "192.0.2.2"] {
        d.wait_for(&format!("#2056 dns-wl {ip} broken.test.: failed: SERVFAIL"), 1).await;
        assert!(d.grep(&format!("#2056 dns-wl {ip} (every list)")).is_empty(), "{:?}", d.grep("#2056"));
    }
    assert!(d.grep("#2056 dns-bl 192.0.2.2 (every list)").is_empty(), "{:?}", d.grep("#2056"));
}

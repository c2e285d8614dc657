//! The policy-service front door (`policy-socket`), driven as Postfix's smtpd drives
//! `check_policy_service`: one connection, many requests of Postfix 3.x's attributes, an answer
//! per request. The daemon's clock is moved instead of waiting; records are read from the real
//! SQLite file; the milter door is driven beside it for the tuples both doors share.

mod common;

use common::dns::TestDns;
use common::{open_session, TestDaemon};
use smtpf_milter::milter::codec::{Command, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const POLICY: &str = "policy-socket = \"unix:{dir}/run/policy.sock\"\n";

/// Postfix's side of one policy connection.
struct Smtpd {
    r: BufReader<tokio::net::unix::OwnedReadHalf>,
    w: tokio::net::unix::OwnedWriteHalf,
}

impl Smtpd {
    async fn connect(d: &TestDaemon) -> Smtpd {
        let s = UnixStream::connect(d.dir.path().join("run/policy.sock")).await.unwrap();
        let (r, w) = s.into_split();
        Smtpd { r: BufReader::new(r), w }
    }

    /// Sends raw bytes; returns the answer's lines (without the empty line), or None when the
    /// daemon closed the connection.
    async fn raw(&mut self, bytes: &[u8]) -> Option<Vec<String>> {
        if self.w.write_all(bytes).await.is_err() {
            return None;
        }
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), self.r.read_line(&mut line)).await.unwrap().ok()?;
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n').to_string();
            if line.is_empty() {
                return Some(lines);
            }
            lines.push(line);
        }
    }

    /// Sends one request; returns the action's value.
    async fn ask(&mut self, request: &Req<'_>) -> String {
        let lines = self.raw(request.text().as_bytes()).await.expect("an answer");
        assert_eq!(lines.len(), 1, "{lines:?}");
        lines[0].strip_prefix("action=").expect("action=").to_string()
    }
}

/// The attributes Postfix 3.x sends, with the ones a test varies.
#[derive(Clone)]
struct Req<'a> {
    state: &'a str,
    ip: &'a str,
    port: &'a str,
    name: &'a str,
    helo: &'a str,
    sender: &'a str,
    recipient: &'a str,
    instance: &'a str,
    sasl: &'a str,
    size: &'a str,
    queue_id: &'a str,
    /// `reverse_client_name`; empty: the same as `name`.
    ptr: &'a str,
}

impl<'a> Req<'a> {
    fn rcpt(ip: &'a str, sender: &'a str, recipient: &'a str, instance: &'a str) -> Req<'a> {
        Req {
            state: "RCPT",
            ip,
            port: "40000",
            name: "unknown",
            helo: "client.example.org",
            sender,
            recipient,
            instance,
            sasl: "",
            size: "0",
            queue_id: "",
            ptr: "",
        }
    }

    fn text(&self) -> String {
        format!(
            "request=smtpd_access_policy\nprotocol_state={}\nprotocol_name=ESMTP\nclient_address={}\nclient_name={}\nclient_port={}\n\
             reverse_client_name={}\nserver_address=192.0.2.25\nserver_port=25\nhelo_name={}\nsender={}\nrecipient={}\n\
             recipient_count=0\nqueue_id={}\ninstance={}\nsize={}\netrn_domain=\nstress=\nsasl_method=\nsasl_username={}\n\
             sasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\nencryption_protocol=\nencryption_cipher=\n\
             encryption_keysize=0\npolicy_context=\ncompatibility_level=3.6\nmail_version=3.7.11\n\n",
            self.state,
            self.ip,
            self.name,
            self.port,
            if self.ptr.is_empty() { self.name } else { self.ptr },
            self.helo,
            self.sender,
            self.recipient,
            self.queue_id,
            self.instance,
            self.size,
            self.sasl
        )
    }
}

/// The session id of the last #637 for this client address.
fn sid(d: &TestDaemon, ip: &str) -> String {
    let starts = d.grep(&format!("[{ip}]:"));
    starts.iter().rev().find(|l| l.contains("#637 ")).expect("a session").split(' ').next().unwrap().to_string()
}

/// The row under `key`, waited for up to two seconds (first sight is written detached).
fn db_value(d: &TestDaemon, key: &str) -> Option<String> {
    let conn = rusqlite::Connection::open(d.dir.path().join("cache.sq3")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let row = conn.query_row("SELECT v FROM mcc WHERE k = ?1", [key], |r| r.get(0)).ok();
        if row.is_some() || std::time::Instant::now() > deadline {
            return row;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[tokio::test]
async fn first_sight_temp_fails_at_rcpt_and_the_retry_passes_with_the_report_header() {
    let d = TestDaemon::start(&format!("{POLICY}grey-key = \"ptr,mail,rcpt\"")).await;
    let mut p = Smtpd::connect(&d).await;
    let req = Req::rcpt("192.0.2.1", "alice@example.org", "bob@example.net", "a1.1");
    let a = p.ask(&req).await;
    let s1 = sid(&d, "192.0.2.1");
    // Not 421 although grey-drop is on: Postfix asks per recipient, and dropping at the first
    // would leave the others unrecorded.
    assert_eq!(a, format!("451 4.7.0 try again later #552 {s1}"));
    d.wait_for(&format!("{s1} #387 grey listed {{grey:192.0.2.1,alice@example.org,bob@example.net}} for 600 seconds"), 1).await;
    assert_eq!(db_value(&d, "grey:192.0.2.1,alice@example.org,bob@example.net").as_deref(), Some("4"));
    // /metrics times the policy door's steps under the same stages as the milter's.
    let exposition = d.running().shared().metrics.render();
    for stage in ["connect", "helo", "mail", "rcpt"] {
        let sample = format!("smtpf_milter_answer_seconds_count{{stage=\"{stage}\"}} 1\n");
        assert!(exposition.contains(&sample), "{sample:?} in\n{exposition}");
    }
    // The summary lines of a milter session, from the same session id.
    assert_eq!(d.grep(&format!("{s1} #637 start [192.0.2.1]:40000")).len(), 1, "{:?}", d.lines());
    let tid = d.wait_for(&format!("{s1} #2071 policy instance a1.1 tid="), 1).await[0].rsplit('=').next().unwrap().to_string();
    assert!(d.grep(&format!("{s1} #717 sender <alice@example.org> tid={tid}")).len() == 1, "{:?}", d.lines());
    let rcpt = d.grep(&format!("{s1} #718 recipient <bob@example.net> tid={tid}"));
    assert!(rcpt[0].ends_with(&format!("x=\"451 4.7.0 try again later #552 {s1}\"")), "{rcpt:?}");

    // A second recipient of the same transaction: its own tuple, recorded now too.
    let second = Req { recipient: "carol@example.net", ..req.clone() };
    assert!(p.ask(&second).await.starts_with("451 4.7.0 try again later #552 "));
    assert_eq!(db_value(&d, "grey:192.0.2.1,alice@example.org,carol@example.net").as_deref(), Some("4"));
    assert_eq!(d.grep("#2071 policy instance a1.1").len(), 1, "one instance, one transaction");

    // The retry within the period (a new SMTP session: another client port): still refused.
    d.running().shared().advance_clock(300);
    let retry = Req { port: "40001", instance: "a1.2", ..req.clone() };
    assert!(p.ask(&retry).await.starts_with("451 4.7.0 try again later #552 "));
    // The first session ended when the request named another client.
    d.wait_for(&format!("{s1} #721 end i=192.0.2.1"), 1).await;

    // After the period: passes, and the first recipient to pass brings the report header.
    d.running().shared().advance_clock(301);
    let pass = Req { port: "40002", instance: "a1.3", ..req.clone() };
    let a = p.ask(&pass).await;
    assert!(a.starts_with("PREPEND X-Grey-Report: "), "{a}");
    d.wait_for("#2069 grey passed {grey:192.0.2.1,alice@example.org,bob@example.net} after 60", 1).await;
    // The host has passed: the second recipient passes at once, without a second header.
    assert_eq!(p.ask(&Req { recipient: "carol@example.net", ..pass.clone() }).await, "DUNNO");
    assert_eq!(db_value(&d, "grey:192.0.2.1").as_deref(), Some("0"), "the host record");
    // End of message: #720 with Postfix's size, nothing to add.
    let eom = Req { state: "END-OF-MESSAGE", size: "1234", recipient: "", ..pass.clone() };
    assert_eq!(p.ask(&eom).await, "DUNNO");
    let s3 = sid(&d, "192.0.2.1");
    let m = d.wait_for(&format!("{s3} #720 message tid="), 1).await;
    assert!(m[0].contains(" b=1234 r=2/0 "), "{m:?}");
    drop(p);
    let end = d.wait_for(&format!("{s3} #721 end i=192.0.2.1"), 1).await;
    assert!(end[0].contains(" h=\"client.example.org\" "), "the HELO name reached the session: {end:?}");
}

#[tokio::test]
async fn a_tuple_greylisted_at_one_door_passes_at_the_other() {
    let d = TestDaemon::start(&format!("{POLICY}grey-key = \"ip,mail,rcpt\"")).await;
    // Milter door first: 421 at DATA (the key names the host, grey-drop).
    let mut c = d.client().await;
    open_session(&mut c, "[192.0.2.2]", "192.0.2.2", "client.example.org").await;
    c.command(&Command::Mail { sender: "<alice@example.org>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: "<bob@example.net>".into(), params: vec![] }).await.unwrap();
    let r = c.command(&Command::Data).await.unwrap();
    assert!(matches!(&r[..], [Response::ReplyCode(t)] if t.starts_with("421 4.7.0 try again later #552 ")), "{r:?}");
    drop(c);
    // The policy door, after the period: the same record passes.
    d.running().shared().advance_clock(601);
    let mut p = Smtpd::connect(&d).await;
    let a = p.ask(&Req::rcpt("192.0.2.2", "alice@example.org", "bob@example.net", "b1")).await;
    assert!(a.starts_with("PREPEND X-Grey-Report: "), "{a}");
    d.wait_for("#2069 grey passed {grey:192.0.2.2,alice@example.org,bob@example.net} after 601 seconds", 1).await;

    // Policy door first, milter door after the period.
    let a = p.ask(&Req::rcpt("192.0.2.3", "dave@example.org", "erin@example.net", "b2")).await;
    assert!(a.starts_with("451 4.7.0 try again later #552 "), "{a}");
    assert_eq!(db_value(&d, "grey:192.0.2.3,dave@example.org,erin@example.net").as_deref(), Some("4"));
    d.running().shared().advance_clock(601);
    let mut c = d.client().await;
    open_session(&mut c, "[192.0.2.3]", "192.0.2.3", "client.example.org").await;
    c.command(&Command::Mail { sender: "<dave@example.org>".into(), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: "<erin@example.net>".into(), params: vec![] }).await.unwrap();
    assert_eq!(c.command(&Command::Data).await.unwrap(), vec![Response::Continue]);
    d.wait_for("#2069 grey passed {grey:192.0.2.3,dave@example.org,erin@example.net} after 601 seconds", 1).await;
}

#[tokio::test]
async fn access_map_and_dns_lists_answer_at_rcpt_and_lists_are_asked_once_per_client() {
    let dns = TestDns::builder()
        .zone("example")
        .zone("test")
        .zone("org")
        .zone("net")
        .listed("192.0.2.66", "bl.test", "127.0.0.2")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("access.cf");
    std::fs::write(&map, "Connect:192.0.2.9 REJECT\nConnect:192.0.2.10 OK\nTo:abuse@example.net OK\n").unwrap();
    let d = TestDaemon::start(&format!(
        "{POLICY}dns-servers = [\"{}\"]\ndns-bl = [\"bl.test\"]\naccess-map = \"{}\"\nmail-require-mx = false\n",
        dns.addr(),
        map.display()
    ))
    .await;
    let mut p = Smtpd::connect(&d).await;
    // Black-listed by the access-map: refused at RCPT, every recipient, with our reply.
    let a = p.ask(&Req::rcpt("192.0.2.9", "a@example.org", "b@example.net", "c1")).await;
    let s = sid(&d, "192.0.2.9");
    assert!(a.starts_with("550 5.7.1 ") && a.ends_with(&format!(" {s}")), "{a}");
    assert_eq!(p.ask(&Req::rcpt("192.0.2.9", "a@example.org", "c@example.net", "c1")).await, a);
    // White-listed: not greylisted.
    assert_eq!(p.ask(&Req::rcpt("192.0.2.10", "a@example.org", "b@example.net", "c2")).await, "DUNNO");
    // Listed by a DNS list: refused; the list is asked once for the session's requests.
    let before = dns.queries();
    let listed = Req::rcpt("192.0.2.66", "a@example.org", "b@example.net", "c3");
    let a = p.ask(&listed).await;
    assert!(a.starts_with("550 5.7.0 ") && a.contains("black listed by bl.test"), "{a}");
    assert_eq!(p.ask(&Req { recipient: "c@example.net", ..listed.clone() }).await, a);
    assert_eq!(p.ask(&Req { recipient: "d@example.net", instance: "c4", ..listed.clone() }).await, a);
    assert_eq!(dns.queries() - before, 1, "one dns-bl query for three requests of one client");
    // A recipient white-listed by To: passes where greylisting would have answered.
    let a = p.ask(&Req::rcpt("192.0.2.11", "a@example.org", "abuse@example.net", "c5")).await;
    assert_eq!(a, "DUNNO");
}

#[tokio::test]
async fn authenticated_clients_and_other_states_are_let_through() {
    let d = TestDaemon::start(&format!("{POLICY}grey-key = \"ptr,mail,rcpt\"")).await;
    let mut p = Smtpd::connect(&d).await;
    let auth = Req { sasl: "alice", ..Req::rcpt("192.0.2.20", "alice@example.org", "bob@example.net", "d1") };
    assert_eq!(p.ask(&auth).await, "DUNNO");
    // CONNECT, HELO, MAIL and VRFY requests: nothing to refuse here.
    for state in ["CONNECT", "EHLO", "MAIL", "VRFY"] {
        let req = Req { state, recipient: "", ..Req::rcpt("192.0.2.21", "x@example.org", "", "d2") };
        assert_eq!(p.ask(&req).await, "DUNNO", "{state}");
    }
    // Asked only at DATA with the one recipient named: decided as at RCPT.
    let data = Req { state: "DATA", ..Req::rcpt("192.0.2.22", "x@example.org", "y@example.net", "d3") };
    assert!(p.ask(&data).await.starts_with("451 4.7.0 try again later #552 "));
}

#[tokio::test]
async fn requests_that_cannot_be_decided_are_answered_dunno_and_named() {
    let d = TestDaemon::start(&format!("{POLICY}grey-key = \"ptr,mail,rcpt\"")).await;
    let mut p = Smtpd::connect(&d).await;
    let answer = p.raw(b"request=junk_policy\nclient_address=192.0.2.1\n\n").await.unwrap();
    assert_eq!(answer, vec!["action=DUNNO"]);
    d.wait_for("#2070 policy-socket request error: request=junk_policy is not smtpd_access_policy; answered DUNNO", 1).await;
    let answer = p.raw(b"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=b@example.net\n\n").await.unwrap();
    assert_eq!(answer, vec!["action=DUNNO"]);
    d.wait_for("#2070 policy-socket request error: client_address=(none) is not an IP address; answered DUNNO", 1).await;
    let answer =
        p.raw(b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\ninstance=x\n\n").await.unwrap();
    assert_eq!(answer, vec!["action=DUNNO"]);
    d.wait_for("#2070 policy-socket request error: RCPT request without a recipient; answered DUNNO", 1).await;
    let answer = p.raw(b"request=smtpd_access_policy\nprotocol_state=QUIT\nclient_address=192.0.2.1\n\n").await.unwrap();
    assert_eq!(answer, vec!["action=DUNNO"]);
    d.wait_for("protocol_state=QUIT is not an SMTP state", 1).await;
    // The connection still serves real requests after all that.
    let a = p.ask(&Req::rcpt("192.0.2.30", "a@example.org", "b@example.net", "e1")).await;
    assert!(a.starts_with("451 4.7.0 "), "{a}");
}

#[tokio::test]
async fn unreadable_requests_close_the_connection_and_the_next_one_serves() {
    let d = TestDaemon::start(&format!("{POLICY}grey-key = \"ptr,mail,rcpt\"")).await;
    // An endless line: bounded, closed.
    let mut p = Smtpd::connect(&d).await;
    let long = format!("request=smtpd_access_policy\nsender={}\n\n", "a".repeat(1 << 20));
    assert_eq!(p.raw(long.as_bytes()).await, None);
    d.wait_for("#2070 policy-socket request error: attribute line longer than 4096 bytes; connection closed", 1).await;
    // A line that is not name=value.
    let mut p = Smtpd::connect(&d).await;
    assert_eq!(p.raw(b"request=smtpd_access_policy\nHELO there\n\n").await, None);
    d.wait_for("#2070 policy-socket request error: not a name=value line: \"HELO there\"; connection closed", 1).await;
    // Too many attributes.
    let mut p = Smtpd::connect(&d).await;
    let many: String = (0..200).map(|i| format!("x{i}=y\n")).collect();
    assert_eq!(p.raw(format!("{many}\n").as_bytes()).await, None);
    d.wait_for("more than 128 attributes in one request; connection closed", 1).await;
    // Cut in the middle of a request.
    let mut p = Smtpd::connect(&d).await;
    p.w.write_all(b"request=smtpd_access_policy\nclient_addr").await.unwrap();
    p.w.shutdown().await.unwrap();
    let mut rest = String::new();
    assert_eq!(p.r.read_line(&mut rest).await.unwrap(), 0);
    d.wait_for("connection closed in the middle of a request; connection closed", 1).await;
    // Still serving.
    let mut p = Smtpd::connect(&d).await;
    let a = p.ask(&Req::rcpt("192.0.2.31", "a@example.org", "b@example.net", "f1")).await;
    assert!(a.starts_with("451 4.7.0 "), "{a}");
}

#[tokio::test]
async fn stop_closes_idle_policy_connections_and_removes_the_socket() {
    let mut d = TestDaemon::start(&format!("{POLICY}grey-key = \"ptr,mail,rcpt\"")).await;
    let mut p = Smtpd::connect(&d).await;
    p.ask(&Req::rcpt("192.0.2.40", "a@example.org", "b@example.net", "g1")).await;
    let s = sid(&d, "192.0.2.40");
    // Postfix keeps its policy connection open between sessions; a stop does not wait for it
    // past the deadline, and the session in progress still logs its #721.
    let report = d.stop(std::time::Duration::from_millis(200)).await;
    assert_eq!(report.closed_at_deadline, 1);
    assert_eq!(d.grep(&format!("{s} #721 end i=192.0.2.40")).len(), 1, "{:?}", d.lines());
    assert!(!d.dir.path().join("run/policy.sock").exists(), "the socket file is removed at stop");
}

/// check-config says which content checks the policy door cannot run, and only when it is on.
#[test]
fn check_config_names_the_content_checks_the_policy_door_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = |text: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_smtpf-milter"))
            .args(["--config", path.to_str().unwrap(), "check-config"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let policy = "policy-socket = \"inet:10023@127.0.0.1\"\nmail-require-mx = false\n";
    let warned = run(&format!("{policy}grey-content = true\nuri-bl = [\"uribl.test\"]\n"));
    assert!(
        warned.contains("the content checks in force (dupmsg, uri-bl, grey-content) need the message and run only for mail that comes through the milter socket"),
        "{warned}"
    );
    assert!(!run(&format!("{policy}dupmsg-ttl = 0\n")).contains("content checks"), "nothing to say without content checks");
    assert!(
        !run("mail-require-mx = false\ngrey-content = true\n").contains("policy-socket"),
        "nothing to say without the policy door"
    );
}

/// What an outside sender controls (sender, recipient, HELO name; Postfix passes them on) in
/// 8-bit and control characters: answered, logged on one line each, never a panic.
#[tokio::test]
async fn hostile_envelope_text_is_answered_and_logged_on_one_line() {
    let d = TestDaemon::start(&format!("{POLICY}grey-key = \"ptr,mail,rcpt\"")).await;
    let mut p = Smtpd::connect(&d).await;
    let long = format!("{}@example.org", "ü".repeat(600));
    let req = Req {
        helo: "evil\u{1} #721 end i=6.6.6.6\rx",
        instance: "inst\r#2071 policy instance forged",
        ..Req::rcpt("192.0.2.50", &long, "δοκιμή@παράδειγμα.net", "unused")
    };
    let a = p.ask(&req).await;
    assert!(a.starts_with("451 4.7.0 try again later #552 "), "{a}");
    let s = sid(&d, "192.0.2.50");
    d.wait_for(&format!("{s} #718 recipient <δοκιμή@παράδειγμα.net>"), 1).await;
    drop(p);
    d.wait_for(&format!("{s} #721 end i=192.0.2.50"), 1).await;
    for line in d.lines() {
        assert!(!line.contains('\r') && !line.contains('\u{1}'), "a raw control character reached the log: {line:?}");
    }
    assert_eq!(d.grep("#721 end").len(), 1, "{:?}", d.lines());
    assert_eq!(d.grep("#2071 policy instance").len(), 1);
}

/// A Postfix that sends no `instance` (or repeats one): each new sender is a new transaction.
#[tokio::test]
async fn a_new_sender_is_a_new_transaction_without_instance() {
    let d = TestDaemon::start(&format!("{POLICY}grey-key = \"ptr,mail,rcpt\"")).await;
    let mut p = Smtpd::connect(&d).await;
    p.ask(&Req::rcpt("192.0.2.60", "a@example.org", "b@example.net", "")).await;
    p.ask(&Req::rcpt("192.0.2.60", "a@example.org", "c@example.net", "")).await;
    p.ask(&Req::rcpt("192.0.2.60", "z@example.org", "b@example.net", "")).await;
    assert_eq!(d.grep("#717 sender <a@example.org>").len(), 1, "{:?}", d.lines());
    assert_eq!(d.grep("#717 sender <z@example.org>").len(), 1, "{:?}", d.lines());
}

/// Requests at CONNECT, HELO and MAIL get the verdict of that step (a client or sender refused
/// there), as when check_policy_service sits in smtpd_client_restrictions or
/// smtpd_sender_restrictions; the HELO name is looked up once per session, not per request.
#[tokio::test]
async fn earlier_states_get_their_own_step_s_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("access.cf");
    std::fs::write(&map, "Connect:192.0.2.70 REJECT\nFrom:spam@example.org REJECT\nHelo:friendly.example.org OK\n").unwrap();
    let d = TestDaemon::start(&format!("{POLICY}grey-key = \"ptr,mail,rcpt\"\naccess-map = \"{}\"", map.display())).await;
    let mut p = Smtpd::connect(&d).await;
    let connect = Req { state: "CONNECT", helo: "", sender: "", recipient: "", ..Req::rcpt("192.0.2.70", "", "", "") };
    let a = p.ask(&connect).await;
    assert!(a.starts_with("550 5.7.1 "), "a client refused at CONNECT: {a}");
    let mail = Req { state: "MAIL", recipient: "", ..Req::rcpt("192.0.2.71", "spam@example.org", "", "h1") };
    let a = p.ask(&mail).await;
    assert!(a.starts_with("550 5.7.1 "), "a sender refused at MAIL: {a}");
    // The HELO name's white-listing is logged once for the session's three requests.
    for r in ["a@example.net", "b@example.net", "c@example.net"] {
        let req = Req { helo: "friendly.example.org", ..Req::rcpt("192.0.2.72", "x@example.org", r, "h2") };
        assert_eq!(p.ask(&req).await, "DUNNO", "white-listed by HELO: not greylisted");
    }
    assert_eq!(d.grep("#923 helo friendly.example.org").len(), 1, "{:?}", d.grep("#923"));
    assert!(d.grep("#2070").is_empty(), "every state was understood: {:?}", d.grep("#2070"));
}

/// Postfix gone before the answer is written: the session's #721 says io_error.
#[tokio::test]
async fn a_peer_gone_before_the_answer_marks_the_session_io_error() {
    let d = TestDaemon::start(&format!("{POLICY}grey-key = \"ptr,mail,rcpt\"")).await;
    let mut p = Smtpd::connect(&d).await;
    // One answered request first, so that the session exists when the peer vanishes.
    p.ask(&Req::rcpt("192.0.2.80", "a@example.org", "b@example.net", "j1")).await;
    // A new transaction costs DNS lookups (the sender's MX, SPF): the peer is gone well before
    // its answer is ready.
    let next = Req::rcpt("192.0.2.80", "z@example.org", "c@example.net", "j2").text();
    let Smtpd { r, mut w } = p;
    w.write_all(next.as_bytes()).await.unwrap();
    let stream = r.into_inner().reunite(w).unwrap().into_std().unwrap();
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);
    let end = d.wait_for("#721 end i=192.0.2.80", 1).await;
    assert!(end[0].contains("io_error"), "{end:?}");
}

/// The client as Postfix names it (verified name, PTR), its queue id and an access-map DISCARD:
/// each reaches the session as the milter's macros would.
#[tokio::test]
async fn names_queue_ids_data_and_discard_reach_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("access.cf");
    std::fs::write(&map, "Connect:192.0.2.91 DISCARD\n").unwrap();
    let d = TestDaemon::start(&format!("{POLICY}grey-key = \"ptr,mail,rcpt\"\naccess-map = \"{}\"", map.display())).await;
    let mut p = Smtpd::connect(&d).await;
    // A verified name: #637 shows it and greylisting keys the client by its domain.
    let named = Req { name: "mail7.client.example.com", ..Req::rcpt("192.0.2.90", "a@example.org", "b@example.net", "k1") };
    assert!(p.ask(&named).await.starts_with("451 "));
    let s = sid(&d, "192.0.2.90");
    assert_eq!(d.grep(&format!("{s} #637 start mail7.client.example.com [192.0.2.90]:40000")).len(), 1, "{:?}", d.lines());
    d.wait_for(&format!("{s} #387 grey listed {{grey:client.example.com,a@example.org,b@example.net}}"), 1).await;
    // Postfix's queue id, from the first request of a transaction or a later one.
    let first = Req { queue_id: "QID1", ..Req::rcpt("192.0.2.90", "c@example.org", "b@example.net", "k2") };
    p.ask(&first).await;
    d.wait_for(&format!("{s} #2005 queue-id QID1 tid="), 1).await;
    p.ask(&Req::rcpt("192.0.2.90", "e@example.org", "b@example.net", "k3")).await;
    let later = Req { queue_id: "QID2", ..Req::rcpt("192.0.2.90", "e@example.org", "f@example.net", "k3") };
    p.ask(&later).await;
    d.wait_for(&format!("{s} #2005 queue-id QID2 tid="), 1).await;
    // DATA after RCPT requests of ours: decided already, nothing asked twice.
    let data = Req { state: "DATA", ..Req::rcpt("192.0.2.90", "e@example.org", "f@example.net", "k3") };
    assert_eq!(p.ask(&data).await, "DUNNO");
    assert_eq!(d.grep("#718 recipient <f@example.net>").len(), 1);
    // Asked only at END-OF-MESSAGE: the queue id still reaches the log.
    let eom_only = Req { state: "END-OF-MESSAGE", queue_id: "QID3", ..Req::rcpt("192.0.2.90", "g@example.org", "", "k5") };
    assert_eq!(p.ask(&eom_only).await, "DUNNO");
    d.wait_for(&format!("{s} #2005 queue-id QID3 tid="), 1).await;
    // An unconfirmed PTR name (Postfix's reverse_client_name) is the session's p=.
    let ptr = Req { ptr: "dyn-192-0-2-92.pool.example.net", ..Req::rcpt("192.0.2.92", "a@example.org", "b@example.net", "k6") };
    p.ask(&ptr).await;
    // An access-map DISCARD is answered where it can be: at END-OF-MESSAGE.
    let rcpt = Req::rcpt("192.0.2.91", "a@example.org", "b@example.net", "k4");
    p.ask(&rcpt).await;
    let eom = Req { state: "END-OF-MESSAGE", recipient: "", ..rcpt.clone() };
    assert_eq!(p.ask(&eom).await, "DISCARD");
    drop(p);
    let end = d.wait_for("#721 end i=192.0.2.92", 1).await;
    assert!(end[0].contains(" p=\"dyn-192-0-2-92.pool.example.net\" "), "{end:?}");
}

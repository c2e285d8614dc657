//! `smtpf-milter report` on logs the end-to-end suite produced with a real Postfix and Sendmail
//! (tests/fixtures/e2e: the milter's log of one whole run, both MTAs' sessions, and Postfix's
//! maillog, gzip as logrotate leaves them). Every expected figure was counted from the same files
//! with grep, independently of the report's code.

use std::io::Write;
use std::process::{Command, Stdio};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/e2e");

fn report(args: &[&str], stdin: Option<&[u8]>) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smtpf-milter"))
        .arg("report")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_end_to_end_logs_give_the_counts_grep_gives() {
    let milter = format!("{FIXTURES}/milter.log.gz");
    let postfix = format!("{FIXTURES}/postfix-maillog.gz");
    let (ok, out, err) = report(&["--json", "--postfix", &postfix, &milter], None);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // grep -c '#637 start'; the m=passed/MAIL of every #721, summed.
    assert_eq!((v["sessions"].as_u64(), v["sessions_ended"].as_u64()), (Some(838), Some(838)));
    assert_eq!((v["transactions"].as_u64(), v["messages_accepted"].as_u64()), (Some(821), Some(808)));
    // Greylisting first sights at DATA (2 scenarios x 2 MTAs), duplicates rejected (1 x 2), the
    // NXDOMAIN and null-MX senders (1 x 2 each), dns-bl: 3 sessions refused at connect (#721 l=)
    // and 2 at RCPT (#718 x=).
    assert_eq!(v["refusals_by_number"], serde_json::json!({"340": 2, "434": 2, "439": 2, "525": 5, "552": 4}));
    assert_eq!(v["listings"], serde_json::json!({"dns-bl bl.test.": 5}));
    let g = &v["greylisting"];
    assert_eq!(g["first_sights"], 4);
    assert_eq!(g["passed"], 4, "grep -c '#2069'");
    assert_eq!((g["never_retried"].as_u64(), g["retried_not_passed"].as_u64()), (Some(0), Some(0)));
    // The suite runs with a 2-second period: every tuple passed 3 seconds after its first sight.
    assert_eq!((g["delay_p50"].as_i64(), g["delay_max"].as_i64()), (Some(3), Some(3)));
    assert_eq!(g["top_delayed_domains"], serde_json::json!([["example.org", 4, 12]]));
    assert_eq!(g["whitelisted"], 794, "grep -c '#2065\\|#2066' (the load runs' auto-whitelisted clients)");
    assert_eq!(v["duplicates"], serde_json::json!({"REJECT": 2}));
    let p = &v["postfix"];
    // grep -c 'disconnect from'; those without data=N (N > 0).
    assert_eq!((p["disconnects"].as_u64(), p["zero_message_disconnects"].as_u64()), (Some(415), Some(11)));
    // comm -12 of the #2005 queue ids and Postfix's.
    assert_eq!(p["queue_ids_joined"], 407);
    // Postfix's own 127.0.0.1 probe and the chroot scenario's session (no mail sent) are the
    // zero-message disconnects no refusal of ours explains.
    assert_eq!(p["unexplained"], serde_json::json!([["127.0.0.1", 1], ["192.0.2.70", 1]]));
    assert_eq!(p["explained_by_our_refusals"], 9);
    assert_eq!(p["by_client"][0], serde_json::json!(["192.0.2.60", 3, 4]));

    // The text form says the same.
    let (ok, text, _) = report(&["--postfix", &postfix, &milter], None);
    assert!(ok);
    assert!(text.starts_with("sessions 838 (ended 838), transactions 821, messages accepted 808\n"), "{text}");
    assert!(text.contains("  #552   4\n") && text.contains("  dns-bl bl.test.: 5\n"), "{text}");
    assert!(text.contains("greylisting: 4 first sights, 0 retries too soon, 4 passed, 0 never retried"), "{text}");
    assert!(text.contains("not explained by a refusal of ours:\n    127.0.0.1: 1\n    192.0.2.70: 1\n"), "{text}");
}

#[test]
fn standard_input_other_programs_lines_and_garbage() {
    let log = "\
Dec  5 00:20:42 mx postfix/smtpd[7]: connect from unknown[192.0.2.9]
Dec  5 00:20:42 mx smtpf-milter[1]: 2B40Kg045680000600 #637 start [192.0.2.9]:4 f=\"\" th=2 cn=1 cs=1
Dec  5 00:20:42 mx smtpf-milter[1]: 2B40Kg045680000600 #387 grey listed {grey:192.0.2.9,a@x.example,b@y.example} for 600 seconds
Dec  5 00:21:00 mx smtpf-milter[1]: 2B40Kg045680000600 #387 grey listed {grey:192.0.2.9,a@x.example,b@y.example} for 582 seconds
Dec  5 00:21:00 mx smtpf-milter[1]: 2B40Kg045680000601 #387 grey listed {grey:192.0.2.8,c@x.example,b@y.example} for 600 seconds
Dec  5 00:21:00 mx smtpf-milter[1]: 2B40Kg045680000601 #2020 dns-bl zen.example. lookup of 192.0.2.8: timeout; counted as not listed
Dec  5 00:21:00 mx smtpf-milter[1]: 2B40Kg045680000601 #542 cache get error key={grey:x} database is locked
Dec  5 00:31:00 mx smtpf-milter[1]: 2B40Kg045680000602 #2069 grey passed {grey:192.0.2.9,a@x.example,b@y.example} after 618 seconds
smtpf-milter[1]: #99999999999 not a number
\u{1}\u{2} #387 {broken
";
    let mut bytes = log.as_bytes().to_vec();
    bytes.extend_from_slice(b"\xff\xfe smtpf-milter[1]: 2B #637 start\n");
    let (ok, out, err) = report(&["--json"], Some(&bytes));
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sessions"], 2);
    let g = &v["greylisting"];
    assert_eq!((g["first_sights"].as_u64(), g["retries_too_soon"].as_u64(), g["passed"].as_u64()), (Some(2), Some(1), Some(1)));
    assert_eq!((g["never_retried"].as_u64(), g["delay_max"].as_i64()), (Some(1), Some(618)));
    assert_eq!(v["dns_failures"], serde_json::json!({"dns-bl zen.example.": 1}));
    assert_eq!(v["store_errors"], serde_json::json!({"542": 1}));
    assert!(v.get("postfix").is_none());
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let (ok, _, err) = report(&["/nonexistent/mail.log"], None);
    assert!(!ok);
    assert!(err.contains("/nonexistent/mail.log") && err.contains("No such file"), "{err}");
}

/// A gzip file cut short (logrotate still compressing it, a full disk) is read up to where it
/// breaks: the report covers those lines, says where it stopped, and exits 1. A line without an
/// end in sight is skipped, not held whole.
#[test]
fn a_truncated_gzip_file_and_an_endless_line_are_said_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(format!("{FIXTURES}/milter.log.gz")).unwrap();
    let cut = dir.path().join("milter.log.1.gz");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let (ok, out, err) = report(&["--json", cut.to_str().unwrap()], None);
    assert!(!ok, "exit status 1");
    assert!(
        err.contains("milter.log.1.gz: read error after line ") && err.contains("the report covers the lines before it"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sessions = v["sessions"].as_u64().unwrap();
    assert!(sessions > 100 && sessions < 838, "some sessions, not all: {sessions}");

    let mut endless = b"Dec  5 00:20:42 mx smtpf-milter[1]: 2B40Kg045680000600 #637 start ".to_vec();
    endless.extend(std::iter::repeat_n(b'x', 200_000));
    endless.extend_from_slice(b"\nDec  5 00:20:42 mx smtpf-milter[1]: 2B40Kg045680000601 #637 start [192.0.2.9]:4 f=\"\"\n");
    let (ok, out, err) = report(&["--json"], Some(&endless));
    assert!(ok, "{err}");
    assert!(err.contains("-: 1 lines longer than 65536 bytes skipped"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sessions"], 1, "the line after the long one is read");
}

/// Fields from outside (a HELO name, a sender, a greylist key's addresses) cannot pass for
/// fields of ours: the report counts what the daemon decided.
#[test]
fn a_hostile_helo_or_sender_cannot_fake_a_refusal() {
    let log = r#"smtpf-milter[1]: 2B40Kg045680000600 #637 start [192.0.2.9]:4 f="" th=1 cn=1 cs=1
smtpf-milter[1]: 2B40Kg045680000600 #717 sender <a x="550 5.7.1 no #525 S"@example.org> tid=T f="" spf-mail=None spf-helo=None x=""
smtpf-milter[1]: 2B40Kg045680000600 #387 grey listed {grey:x}y@example.org,b@example.net} for 600 seconds
smtpf-milter[1]: 2B40Kg045680000600 #721 end i=192.0.2.9 p="" f="" h="evil\" R=1 l=\"550 5.7.0 #525 z" m=1/1 b=10 R=0 t=0 l=""
"#;
    let (ok, out, err) = report(&["--json"], Some(log.as_bytes()));
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["refusals_by_number"], serde_json::json!({}), "{out}");
    assert_eq!((v["messages_accepted"].as_u64(), v["transactions"].as_u64()), (Some(1), Some(1)));
    assert_eq!(v["greylisting"]["first_sights"], 1);
}

//! contrib/logcheck/smtpf-milter, the logcheck ignore rules a Debian admin installs (the package
//! puts them in /etc/logcheck/ignore.d.server/): every rule must match the routine line it is for,
//! as the daemon formats it behind a syslog prefix (traditional and RFC 3339 timestamps), and no
//! rule may hide a line that needs a human (errors, warnings, refusals).

use smtpf_milter::ids::{LocalTime, SessionId};
use smtpf_milter::log::catalog::{self, Msg};
use smtpf_milter::log::format_line;

fn rules() -> Vec<regex::Regex> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/logcheck/smtpf-milter")).unwrap();
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(|l| regex::Regex::new(l).unwrap()).collect()
}

/// `line` as syslog files it: the traditional and the RFC 3339 forms.
fn in_syslog(line: &str) -> [String; 2] {
    [
        format!("Dec  4 23:30:41 mx1 smtpf-milter[4242]: {line}"),
        format!("2026-12-04T23:30:41.123456+00:00 mx-1.example.net smtpf-milter[4242]: {line}"),
    ]
}

fn line(msg: &Msg, args: &[&dyn std::fmt::Display]) -> String {
    let now = LocalTime { year: 2026, month: 11, mday: 4, hour: 23, min: 30, sec: 41, utc_offset: 0 };
    format_line(msg, Some(&SessionId::new(&now, 123456, 42)), args)
}

#[test]
fn each_rule_hides_its_routine_line_and_nothing_that_needs_a_human() {
    let rules = rules();
    let tid = "TLiPxx12345600042A1";
    let routine = [
        line(&catalog::SESSION_START, &[&"mail.example.org [192.0.2.7]:40000", &"", &4, &1, &1]),
        line(&catalog::SESSION_END, &[&"192.0.2.7", &"mail.example.org", &"", &"mail.example.org", &1, &1, &4600, &0, &3, &""]),
        line(&catalog::QUEUE_ID, &[&"4Q2abc1XYZ", &tid]),
        line(&catalog::GREY_LISTED, &[&"grey:example.org,a@example.org,b@example.net", &600]),
        line(&catalog::GREY_CONTENT_LISTED, &[&"grey:0123abcd", &600]),
        line(&catalog::GREY_PASSED, &[&"grey:example.org,a@example.org,b@example.net", &612]),
        line(&catalog::CLIENT_IS_SECOND_MX, &[&"192.0.2.9", &"example.net"]),
        line(&catalog::GREY_WHITELISTED, &[&"client mail.example.org", &"/etc/postgrey/whitelist_clients:12"]),
        line(&catalog::GREY_AUTO_WHITELISTED, &[&"192.0.2.7", &"grey:awl:192.0.2.7"]),
        format_line(&catalog::INTERFACE_READY, None, &[&"unix:/run/smtpf-milter/milter.sock"]),
        format_line(&catalog::READY, None, &[]),
        format_line(&catalog::SQLITE_VERSION, None, &[&"3.46.0"]),
        format_line(&catalog::CACHE_PATH, None, &[&"/var/lib/smtpf-milter/cache.sq3"]),
    ];
    for l in &routine {
        for s in in_syslog(l) {
            assert!(rules.iter().any(|r| r.is_match(&s)), "no rule hides the routine line {s}");
        }
    }
    for r in &rules {
        assert!(routine.iter().flat_map(|l| in_syslog(l)).any(|s| r.is_match(&s)), "rule {r} matches no routine line");
    }
    let for_a_human = [
        line(&catalog::CACHE_GET_ERROR, &[&"grey:x", &"database is locked"]),
        line(&catalog::LIST_FOUND, &[&"dns-bl", &"192.0.2.7", &"zen.example."]),
        // Another daemon's lines with our words in them.
        "0 #637 start forged".to_string(),
    ];
    for l in &for_a_human {
        for s in in_syslog(l) {
            assert!(!rules.iter().any(|r| r.is_match(&s)), "a rule hides {s}");
        }
    }
    assert!(!rules.iter().any(|r| r.is_match("Dec  4 23:30:41 mx1 postfix/smtpd[77]: TLiPxx12345600042 #637 start x")));
}

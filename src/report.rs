//! `smtpf-milter report`: answers a postmaster's questions from our own log lines (a syslog file,
//! `journalctl -o short-iso` output, or the daemon's stderr; plain or gzip; several files, several
//! days): how many sessions and messages, which replies refused what and on whose word (DNS list,
//! access-map entry), what greylisting delayed and for how long, duplicates, DNS list timeouts,
//! store errors. With Postfix's log beside it, it asks the question of the seed articles on
//! reading SMTP logs: do our refusals account for the clients that disconnect without sending a
//! message?
//!
//! Everything is read from the numbered lines (docs: README "Numbered log messages"); lines of
//! other programs and unnumbered lines are skipped, so a whole mail.log can be given as it is.
//! A line is read by its number and its format, never trusted beyond that: a field that does not
//! parse is counted as "unknown", never a panic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;

use serde::Serialize;

/// One of our numbered lines, from wherever it was logged.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub sid: Option<&'a str>,
    pub num: u16,
    pub text: &'a str,
}

/// Finds our line in `raw`: after a syslog or journal prefix ending in `smtpf-milter[PID]: `,
/// or the whole line as the daemon writes it on stderr. None for anything else.
pub fn parse_line(raw: &str) -> Option<Line<'_>> {
    let rest = match raw.find("smtpf-milter[") {
        Some(i) => {
            let after = &raw[i..];
            let end = after.find("]: ")?;
            &after[end + 3..]
        }
        None => raw,
    };
    let rest = rest.trim_end_matches(['\r', '\n']);
    let (sid, rest) = if rest.starts_with('#') {
        (None, rest)
    } else {
        let (sid, tail) = rest.split_once(' ')?;
        if sid.is_empty() || !sid.chars().all(|c| c.is_ascii_alphanumeric()) || !tail.starts_with('#') {
            return None;
        }
        (Some(sid), tail)
    };
    let digits = rest[1..].find(|c: char| !c.is_ascii_digit()).map(|n| n + 1).unwrap_or(rest.len());
    let num: u16 = rest[1..digits].parse().ok()?;
    let text = rest[digits..].strip_prefix(' ').unwrap_or("");
    Some(Line { sid, num, text })
}

/// The value of `name="..."` or `name=...` in a line's text (quoted values may hold spaces;
/// our log escapes quotes inside them).
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.match_indices(&format!("{name}=")).find(|(i, _)| *i == 0 || text.as_bytes()[i - 1] == b' ')?.0;
    let value = &text[start + name.len() + 1..];
    if let Some(quoted) = value.strip_prefix('"') {
        let mut prev = ' ';
        for (i, c) in quoted.char_indices() {
            if c == '"' && prev != '\\' {
                return Some(&quoted[..i]);
            }
            prev = c;
        }
        Some(quoted)
    } else {
        Some(value.split(' ').next().unwrap_or(""))
    }
}

/// The reply number at the end of a reply text (`... #552 SID`).
fn reply_number(reply: &str) -> Option<u16> {
    reply.rsplit(' ').find_map(|w| w.strip_prefix('#').and_then(|n| n.parse().ok()))
}

/// The text between the first `{` and its `}` (a greylist key).
fn braced(text: &str) -> Option<&str> {
    let start = text.find('{')? + 1;
    let end = text[start..].find('}')? + start;
    Some(&text[start..end])
}

/// p-quantile (nearest rank) of sorted values; 0 when none.
fn quantile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// What the report says; serialised as is for `--json`.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Report {
    /// Milter sessions (#637).
    pub sessions: u64,
    /// Sessions that ended (#721).
    pub sessions_ended: u64,
    /// MAIL commands (the m=passed/MAIL of #721, summed).
    pub transactions: u64,
    /// Messages that passed every check (m=, summed).
    pub messages_accepted: u64,
    /// Replies we made the MTA send, by reply number (x= of #717-#720, or l= of #721 for a
    /// session refused before MAIL).
    pub refusals_by_number: BTreeMap<u16, u64>,
    /// Who listed the clients we refused or exempted: "dns-bl zen.example." (#523), and the
    /// access-map entries that matched (#119-#138, #923, #974-#976).
    pub listings: BTreeMap<String, u64>,
    pub greylisting: Greylisting,
    /// Duplicates by policy (#337).
    pub duplicates: BTreeMap<String, u64>,
    /// DNS list lookups that failed or timed out, by "option zone" (#2020).
    pub dns_failures: BTreeMap<String, u64>,
    /// Store errors by number (#542, #544, #546, #2024, #2045, #2047).
    pub store_errors: BTreeMap<u16, u64>,
    /// With Postfix's log: the reconciliation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postfix: Option<Reconciliation>,
}

/// What greylisting did, from #387 (temp-failed), #2069 (passed, with the delay) and #2065/#2066.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Greylisting {
    /// Tuples seen for the first time (their first #387).
    pub first_sights: u64,
    /// Retries that came before the period ended (later #387 of a known tuple).
    pub retries_too_soon: u64,
    /// Tuples that came back after the period and passed (#2069).
    pub passed: u64,
    /// Tuples temp-failed once and never seen again (likely spam).
    pub never_retried: u64,
    /// Tuples that retried but had not passed by the end of the log.
    pub retried_not_passed: u64,
    /// Delay from first sight to pass, seconds.
    pub delay_p50: i64,
    pub delay_p90: i64,
    pub delay_max: i64,
    /// Sender domains whose passed tuples waited longest in total: (domain, tuples, seconds).
    pub top_delayed_domains: Vec<(String, u64, i64)>,
    /// Messages exempted by a postgrey whitelist file or the auto-whitelist.
    pub whitelisted: u64,
}

/// Our refusals against Postfix's zero-message disconnects, per client address.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Reconciliation {
    /// Postfix `disconnect from` lines.
    pub disconnects: u64,
    /// Of which with no message accepted (no `data=N` with N > 0: nothing was queued).
    pub zero_message_disconnects: u64,
    /// Of those, at addresses where we refused as many sessions or more.
    pub explained_by_our_refusals: u64,
    /// Postfix queue ids that we logged too (#2005): the join of the two logs.
    pub queue_ids_joined: u64,
    /// Per client address with zero-message disconnects: (address, disconnects, our refused sessions).
    pub by_client: Vec<(String, u64, u64)>,
    /// Zero-message disconnects our refusals do not account for, by address.
    pub unexplained: Vec<(String, u64)>,
}

/// Reads our lines and builds the report.
#[derive(Default)]
pub struct Reader {
    report: Report,
    /// Greylist keys: (times temp-failed, passed).
    tuples: HashMap<String, (u64, bool)>,
    delays: Vec<i64>,
    domains: HashMap<String, (u64, i64)>,
    /// Sessions that refused something at or after MAIL (their refusals are counted from x=).
    refused_in_transaction: BTreeSet<String>,
    /// Refused sessions per client address (R>0 in #721).
    refused_sessions: HashMap<String, u64>,
    queue_ids: BTreeSet<String>,
}

impl Reader {
    /// Takes one raw line (any program's; ours are recognised by their prefix and number).
    pub fn line(&mut self, raw: &str) {
        let Some(l) = parse_line(raw) else { return };
        let r = &mut self.report;
        match l.num {
            637 => r.sessions += 1,
            717..=720 => {
                if let Some(n) = field(l.text, "x").filter(|x| !x.is_empty()).and_then(reply_number) {
                    *r.refusals_by_number.entry(n).or_default() += 1;
                    if let Some(sid) = l.sid {
                        self.refused_in_transaction.insert(sid.to_string());
                    }
                }
            }
            721 => {
                r.sessions_ended += 1;
                if let Some((passed, mails)) = field(l.text, "m").and_then(|m| m.split_once('/')) {
                    r.messages_accepted += passed.parse::<u64>().unwrap_or(0);
                    r.transactions += mails.parse::<u64>().unwrap_or(0);
                }
                let refusals: u64 = field(l.text, "R").and_then(|n| n.parse().ok()).unwrap_or(0);
                if refusals > 0 {
                    let ip = field(l.text, "i").unwrap_or("").to_string();
                    *self.refused_sessions.entry(ip).or_default() += 1;
                    let before_mail = l.sid.is_none_or(|sid| !self.refused_in_transaction.contains(sid));
                    if before_mail {
                        if let Some(n) = field(l.text, "l").and_then(reply_number) {
                            *r.refusals_by_number.entry(n).or_default() += 1;
                        }
                    }
                }
                if let Some(sid) = l.sid {
                    self.refused_in_transaction.remove(sid);
                }
            }
            523 => {
                // "dns-bl found 192.0.2.7 zen.example."
                let words: Vec<&str> = l.text.split(' ').collect();
                if let (Some(option), Some(list)) = (words.first(), words.get(3)) {
                    *r.listings.entry(format!("{option} {list}")).or_default() += 1;
                }
            }
            119 | 124 | 126 | 134 | 136 | 138 | 923 | 974..=976 => {
                // The entry that matched is the last parenthesised word, when there is one.
                let entry = l.text.rsplit_once(" (").map(|(_, e)| e.trim_end_matches(')')).unwrap_or(l.text);
                *r.listings.entry(format!("access-map {entry}")).or_default() += 1;
            }
            387 | 394 => {
                if let Some(key) = braced(l.text) {
                    let t = self.tuples.entry(key.to_string()).or_default();
                    if t.0 == 0 {
                        r.greylisting.first_sights += 1;
                    } else {
                        r.greylisting.retries_too_soon += 1;
                    }
                    t.0 += 1;
                }
            }
            2069 => {
                if let Some(key) = braced(l.text) {
                    self.tuples.entry(key.to_string()).or_default().1 = true;
                    r.greylisting.passed += 1;
                    let age: i64 = l.text.rsplit(' ').nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
                    self.delays.push(age);
                    // The sender is the first element holding an '@'.
                    let domain = key
                        .split(',')
                        .find_map(|e| e.rsplit_once('@').map(|(_, d)| d.to_string()))
                        .or_else(|| key.strip_prefix("grey:spf:").map(|d| d.split(',').next().unwrap_or(d).to_string()))
                        .unwrap_or_else(|| "(no sender in key)".into());
                    let d = self.domains.entry(domain).or_default();
                    d.0 += 1;
                    d.1 += age;
                }
            }
            2065 | 2066 => r.greylisting.whitelisted += 1,
            337 => {
                let policy = l.text.split(' ').next().unwrap_or("").to_string();
                *r.duplicates.entry(policy).or_default() += 1;
            }
            2020 => {
                // "dns-bl zen.example. lookup of 192.0.2.7: timeout; counted as not listed"
                let mut words = l.text.split(' ');
                if let (Some(option), Some(zone)) = (words.next(), words.next()) {
                    *r.dns_failures.entry(format!("{option} {zone}")).or_default() += 1;
                }
            }
            542 | 544 | 546 | 2024 | 2045 | 2047 => *r.store_errors.entry(l.num).or_default() += 1,
            2005 => {
                // "queue-id C0752C490A tid=..."
                if let Some(qid) = l.text.strip_prefix("queue-id ").and_then(|t| t.split(' ').next()) {
                    self.queue_ids.insert(qid.to_string());
                }
            }
            _ => {}
        }
    }

    /// Reads Postfix's log and adds the reconciliation.
    pub fn postfix(&mut self, lines: impl Iterator<Item = String>) {
        let mut rec = Reconciliation::default();
        let mut zero: BTreeMap<String, u64> = BTreeMap::new();
        let mut postfix_qids = BTreeSet::new();
        for raw in lines {
            if !raw.contains("postfix/") && !raw.contains("postfix[") {
                continue;
            }
            if let Some(i) = raw.find("disconnect from ") {
                rec.disconnects += 1;
                let rest = &raw[i + "disconnect from ".len()..];
                let ip = rest.split_once('[').and_then(|(_, t)| t.split_once(']')).map(|(ip, _)| ip).unwrap_or("unknown");
                // "data=1" (or "data=1/1"): a message was accepted in this session.
                let sent = rest.split(' ').any(|w| {
                    w.strip_prefix("data=")
                        .and_then(|v| v.split('/').next())
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                });
                if !sent {
                    rec.zero_message_disconnects += 1;
                    *zero.entry(ip.to_string()).or_default() += 1;
                }
                continue;
            }
            // "postfix/smtpd[123]: 4QxYz1abc: client=..." : a queue id.
            if let Some((_, tail)) = raw.split_once("]: ") {
                if let Some((qid, _)) = tail.split_once(": ") {
                    if !qid.is_empty() && qid.chars().all(|c| c.is_ascii_alphanumeric()) {
                        postfix_qids.insert(qid.to_string());
                    }
                }
            }
        }
        rec.queue_ids_joined = postfix_qids.intersection(&self.queue_ids).count() as u64;
        for (ip, n) in zero {
            let ours = self.refused_sessions.get(&ip).copied().unwrap_or(0);
            rec.explained_by_our_refusals += n.min(ours);
            if n > ours {
                rec.unexplained.push((ip.clone(), n - ours));
            }
            rec.by_client.push((ip, n, ours));
        }
        rec.by_client.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rec.unexplained.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.report.postfix = Some(rec);
    }

    /// The finished report.
    pub fn finish(mut self) -> Report {
        let g = &mut self.report.greylisting;
        for (times, passed) in self.tuples.values() {
            if !passed {
                if *times == 1 {
                    g.never_retried += 1;
                } else {
                    g.retried_not_passed += 1;
                }
            }
        }
        self.delays.sort_unstable();
        g.delay_p50 = quantile(&self.delays, 0.5);
        g.delay_p90 = quantile(&self.delays, 0.9);
        g.delay_max = self.delays.last().copied().unwrap_or(0);
        let mut domains: Vec<(String, u64, i64)> = self.domains.into_iter().map(|(d, (n, s))| (d, n, s)).collect();
        domains.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        domains.truncate(10);
        g.top_delayed_domains = domains;
        self.report
    }
}

/// Lines of a file, plain or gzip (by its magic bytes), or of stdin for "-"; invalid UTF-8 is
/// replaced, never fatal.
pub fn open_lines(path: &str) -> std::io::Result<Box<dyn Iterator<Item = String>>> {
    let raw: Box<dyn std::io::Read> = if path == "-" { Box::new(std::io::stdin()) } else { Box::new(std::fs::File::open(path)?) };
    let mut buffered = std::io::BufReader::new(raw);
    let gz = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn BufRead> =
        if gz { Box::new(std::io::BufReader::new(flate2::bufread::MultiGzDecoder::new(buffered))) } else { Box::new(buffered) };
    Ok(Box::new(reader.split(b'\n').map_while(Result::ok).map(|b| String::from_utf8_lossy(&b).into_owned())))
}

/// `h:mm:ss`.
fn clock(secs: i64) -> String {
    let s = secs.max(0);
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

impl Report {
    /// The report for people.
    pub fn text(&self) -> String {
        let mut o = String::new();
        o.push_str(&format!(
            "sessions {} (ended {}), transactions {}, messages accepted {}\n",
            self.sessions, self.sessions_ended, self.transactions, self.messages_accepted
        ));
        o.push_str("\nrefusals by reply number (smtpf-milter explain N):\n");
        if self.refusals_by_number.is_empty() {
            o.push_str("  none\n");
        }
        for (n, c) in &self.refusals_by_number {
            o.push_str(&format!("  #{n:<5} {c}\n"));
        }
        o.push_str("\nlisted by:\n");
        if self.listings.is_empty() {
            o.push_str("  none\n");
        }
        for (what, c) in &self.listings {
            o.push_str(&format!("  {what}: {c}\n"));
        }
        let g = &self.greylisting;
        o.push_str(&format!(
            "\ngreylisting: {} first sights, {} retries too soon, {} passed, {} never retried, {} retried but not passed, {} whitelisted\n",
            g.first_sights, g.retries_too_soon, g.passed, g.never_retried, g.retried_not_passed, g.whitelisted
        ));
        o.push_str(&format!(
            "  delay of passed tuples: p50 {} p90 {} max {}\n",
            clock(g.delay_p50),
            clock(g.delay_p90),
            clock(g.delay_max)
        ));
        for (d, n, s) in &g.top_delayed_domains {
            o.push_str(&format!("  {d}: {n} tuples, {} in total\n", clock(*s)));
        }
        let map = |title: &str, m: &BTreeMap<String, u64>, o: &mut String| {
            o.push_str(&format!("\n{title}:"));
            if m.is_empty() {
                o.push_str(" none\n");
            } else {
                o.push('\n');
                for (k, v) in m {
                    o.push_str(&format!("  {k}: {v}\n"));
                }
            }
        };
        map("duplicates by policy", &self.duplicates, &mut o);
        map("DNS list lookups failed or timed out", &self.dns_failures, &mut o);
        o.push_str("\nstore errors:");
        if self.store_errors.is_empty() {
            o.push_str(" none\n");
        } else {
            o.push('\n');
            for (n, c) in &self.store_errors {
                o.push_str(&format!("  #{n}: {c}\n"));
            }
        }
        if let Some(p) = &self.postfix {
            o.push_str(&format!(
                "\npostfix: {} disconnects, {} without a message; {} of those explained by our refusals; {} queue ids in both logs\n",
                p.disconnects, p.zero_message_disconnects, p.explained_by_our_refusals, p.queue_ids_joined
            ));
            o.push_str("  client               zero-message disconnects   sessions we refused\n");
            for (ip, n, ours) in &p.by_client {
                o.push_str(&format!("  {ip:<20} {n:>24}   {ours:>19}\n"));
            }
            if !p.unexplained.is_empty() {
                o.push_str("  not explained by a refusal of ours:\n");
                for (ip, n) in &p.unexplained {
                    o.push_str(&format!("    {ip}: {n}\n"));
                }
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_lines_are_found_behind_any_prefix_and_nothing_else_is() {
        let l = parse_line(
            "2026-12-04T23:30:41+0000 mx smtpf-milter[42]: 2B3NxI0891900003 #387 grey listed {grey:a,b} for 600 seconds",
        );
        assert_eq!(l, Some(Line { sid: Some("2B3NxI0891900003"), num: 387, text: "grey listed {grey:a,b} for 600 seconds" }));
        assert_eq!(
            parse_line("Dec  4 23:30:41 mx smtpf-milter[42]: #599 ready"),
            Some(Line { sid: None, num: 599, text: "ready" })
        );
        assert_eq!(parse_line("2B3NxI0891900003 #721 end i=1").map(|l| l.num), Some(721));
        for other in [
            "Dec  4 23:30:41 mx postfix/smtpd[7]: connect from x[192.0.2.1]",
            "smtpf-milter[42]: not numbered",
            "",
            "#",
            "#99999999 overflow",
            "x y #387",
        ] {
            assert_eq!(parse_line(other), None, "{other}");
        }
    }

    #[test]
    fn fields_quoted_or_not() {
        let t = r#"end i=192.0.2.7 p="a b" f="" h="x" m=1/2 b=10 R=1 t=0 l="451 4.7.0 try again later #552 SID""#;
        assert_eq!(field(t, "i"), Some("192.0.2.7"));
        assert_eq!(field(t, "p"), Some("a b"));
        assert_eq!(field(t, "f"), Some(""));
        assert_eq!(field(t, "m"), Some("1/2"));
        assert_eq!(field(t, "l").and_then(reply_number), Some(552));
        assert_eq!(field(t, "zz"), None);
    }
}

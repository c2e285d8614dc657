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

/// Finds our line in `raw`: the whole line as the daemon writes it on stderr, or the message of
/// a syslog or journal line whose program tag is `smtpf-milter[PID]`. The tag is the line's
/// first `]: `, so another program's line that merely quotes ours (a Postfix reject naming a
/// HELO of `smtpf-milter[1]: ... #721 ...`) is not taken for one. None for anything else.
pub fn parse_line(raw: &str) -> Option<Line<'_>> {
    let raw = raw.trim_end_matches(['\r', '\n']);
    if let Some(line) = parse_message(raw) {
        return Some(line);
    }
    parse_message(tagged(raw, |tag| tag.strip_prefix("smtpf-milter[").is_some_and(all_digits))?)
}

/// The message of a syslog or journal line whose program tag `tag_ok` accepts (the tag is the
/// last word before the line's first `]: `, without its `]`).
fn tagged(raw: &str, tag_ok: impl Fn(&str) -> bool) -> Option<&str> {
    let (head, message) = raw.split_once("]: ")?;
    let tag = head.rsplit(' ').next().unwrap_or(head);
    tag_ok(tag).then_some(message)
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `SID #NUM text` or `#NUM text`, our line without a prefix.
fn parse_message(rest: &str) -> Option<Line<'_>> {
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

/// The `name=value` fields of a line whose every field from outside is quoted (#721: `p`, `f`,
/// `h`, `l`), in order; words without `=` are skipped. A quoted value runs to the first `"` that
/// is not escaped (our log writes a `"` inside it as `\"`), so a HELO name carrying ` R=5` or
/// ` l="..."` stays inside its own field.
fn fields(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            return out;
        }
        let word_end = rest.find([' ', '=']).unwrap_or(rest.len());
        if !rest[word_end..].starts_with('=') {
            rest = &rest[word_end..];
            continue;
        }
        let name = &rest[..word_end];
        let after = &rest[word_end + 1..];
        if let Some(quoted) = after.strip_prefix('"') {
            let mut escaped = false;
            let end = quoted
                .char_indices()
                .find(|&(_, c)| {
                    let closes = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    closes
                })
                .map(|(i, _)| i)
                .unwrap_or(quoted.len());
            out.push((name, &quoted[..end]));
            rest = quoted.get(end + 1..).unwrap_or("");
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            out.push((name, &after[..end]));
            rest = &after[end..];
        }
    }
}

/// The value of `name` among [`fields`].
fn field<'a>(fields: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// The quoted value of the field `name` that ends the line (`x="..."` of #717-#720). Found from
/// the end: the fields before it hold an address or a Message-ID as sent, which may contain
/// anything, but its own value cannot hold an unescaped `"`.
fn last_quoted<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.rfind(&format!(" {name}=\""))? + name.len() + 3;
    text[start..].strip_suffix('"')
}

/// The reply number at the end of a reply text (`... #552 SID`).
fn reply_number(reply: &str) -> Option<u16> {
    reply.rsplit(' ').find_map(|w| w.strip_prefix('#').and_then(|n| n.parse().ok()))
}

/// The greylist key of a line `PREFIX{KEY}SUFFIX...`: the key holds addresses as sent, braces
/// included, so it ends at the last `SUFFIX`, not at the first `}`.
fn key_between<'a>(text: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    text.strip_prefix(prefix)?.rsplit_once(suffix).map(|(key, _)| key)
}

/// The value below which `q` of the sorted values lie (nearest rank); zero when there are none.
/// (Also the delay benchmark's.)
pub fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
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
    /// What Postfix's log said, once a line of it was given.
    postfix: Option<PostfixTally>,
}

/// Postfix's side of the reconciliation, gathered line by line.
#[derive(Default)]
struct PostfixTally {
    disconnects: u64,
    /// Zero-message disconnects per client address.
    zero: BTreeMap<String, u64>,
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
                if let Some(n) = last_quoted(l.text, "x").filter(|x| !x.is_empty()).and_then(reply_number) {
                    *r.refusals_by_number.entry(n).or_default() += 1;
                    if let Some(sid) = l.sid {
                        self.refused_in_transaction.insert(sid.to_string());
                    }
                }
            }
            721 => {
                r.sessions_ended += 1;
                let fields = fields(l.text);
                if let Some((passed, mails)) = field(&fields, "m").and_then(|m| m.split_once('/')) {
                    // Sums of numbers read from a file: saturating, so an absurd line cannot wrap them.
                    r.messages_accepted = r.messages_accepted.saturating_add(passed.parse().unwrap_or(0));
                    r.transactions = r.transactions.saturating_add(mails.parse().unwrap_or(0));
                }
                let refusals: u64 = field(&fields, "R").and_then(|n| n.parse().ok()).unwrap_or(0);
                if refusals > 0 {
                    let ip = field(&fields, "i").unwrap_or("").to_string();
                    *self.refused_sessions.entry(ip).or_default() += 1;
                    let before_mail = l.sid.is_none_or(|sid| !self.refused_in_transaction.contains(sid));
                    if before_mail {
                        if let Some(n) = field(&fields, "l").and_then(reply_number) {
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
            119 | 124 | 126 | 134 | 136 | 138 | 923 => {
                // The entry that matched is the last parenthesised word (the HELO name or address
                // before it is the client's; the key after it is ours).
                if let Some((_, entry)) = l.text.rsplit_once(" (") {
                    *r.listings.entry(format!("access-map {}", entry.trim_end_matches(')'))).or_default() += 1;
                }
            }
            // smtpf's DISCARD lines name the client, not the entry: counted by kind, so a client's
            // HELO name never becomes a row of its own.
            974 => *r.listings.entry("access-map DISCARD (Connect:)".into()).or_default() += 1,
            975 => *r.listings.entry("access-map DISCARD (message)".into()).or_default() += 1,
            976 => *r.listings.entry("access-map DISCARD (Helo:)".into()).or_default() += 1,
            387 | 394 => {
                let key = key_between(l.text, "grey listed {", "} for ")
                    .or_else(|| key_between(l.text, "grey-content listed {", "} for "));
                if let Some(key) = key {
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
                if let Some(key) = key_between(l.text, "grey passed {", "} after ") {
                    self.tuples.entry(key.to_string()).or_default().1 = true;
                    r.greylisting.passed += 1;
                    // A delay is never negative; none is longer than a record lives (a year is plenty).
                    let age: i64 = l.text.rsplit(' ').nth(1).and_then(|n| n.parse().ok()).unwrap_or(0).clamp(0, 366 * 86_400);
                    self.delays.push(age);
                    // The sender is the first element holding an '@'.
                    let domain = key
                        .split(',')
                        .find_map(|e| e.rsplit_once('@').map(|(_, d)| d.to_string()))
                        .or_else(|| key.strip_prefix("grey:spf:").map(|d| d.split(',').next().unwrap_or(d).to_string()))
                        .unwrap_or_else(|| "(no sender in key)".into());
                    let d = self.domains.entry(domain).or_default();
                    d.0 += 1;
                    d.1 = d.1.saturating_add(age);
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

    /// Takes one line of Postfix's log (other programs' lines are skipped); [`Reader::finish`]
    /// then adds the reconciliation.
    pub fn postfix_line(&mut self, raw: &str) {
        let tally = self.postfix.get_or_insert_with(PostfixTally::default);
        // Only Postfix's own lines, by their program tag (postfix/smtpd[PID], postfix-in/..., or
        // postfix[PID]): a line of ours quoting "disconnect from" in a sender is not one.
        let is_postfix = |tag: &str| {
            let (name, pid) = tag.split_once('[').unwrap_or((tag, ""));
            name.starts_with("postfix") && all_digits(pid)
        };
        let Some(message) = tagged(raw, is_postfix) else { return };
        if let Some(rest) = message.strip_prefix("disconnect from ") {
            tally.disconnects += 1;
            let ip = rest.split_once('[').and_then(|(_, t)| t.split_once(']')).map(|(ip, _)| ip).unwrap_or("unknown");
            // "data=1" (or "data=1/1"): a message was accepted in this session.
            let sent = rest.split(' ').any(|w| {
                w.strip_prefix("data=")
                    .and_then(|v| v.split('/').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            });
            if !sent {
                *tally.zero.entry(ip.to_string()).or_default() += 1;
            }
            return;
        }
        // "postfix/smtpd[123]: 4QxYz1abc: client=..." : a queue id.
        if let Some((qid, _)) = message.split_once(": ") {
            if !qid.is_empty() && qid.chars().all(|c| c.is_ascii_alphanumeric()) {
                tally.queue_ids.insert(qid.to_string());
            }
        }
    }

    /// Our refusals against Postfix's zero-message disconnects, per client address.
    fn reconcile(&self, tally: &PostfixTally) -> Reconciliation {
        let mut rec = Reconciliation {
            disconnects: tally.disconnects,
            zero_message_disconnects: tally.zero.values().sum(),
            queue_ids_joined: tally.queue_ids.intersection(&self.queue_ids).count() as u64,
            ..Reconciliation::default()
        };
        for (ip, &n) in &tally.zero {
            let ours = self.refused_sessions.get(ip).copied().unwrap_or(0);
            rec.explained_by_our_refusals += n.min(ours);
            if n > ours {
                rec.unexplained.push((ip.clone(), n - ours));
            }
            rec.by_client.push((ip.clone(), n, ours));
        }
        rec.by_client.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rec.unexplained.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rec
    }

    /// The finished report.
    pub fn finish(mut self) -> Report {
        if let Some(tally) = self.postfix.take() {
            self.report.postfix = Some(self.reconcile(&tally));
        }
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

/// Longest line read; a longer one is skipped (counted in [`LogFile::long_lines`]), so a file
/// without line breaks cannot make the report hold it whole. Our own lines are far shorter.
pub const MAX_LINE: usize = 64 * 1024;

/// A log to read: a file, plain or gzip (by its magic bytes), or standard input for "-".
/// Invalid UTF-8 is replaced; a read error (a truncated gzip file) ends the lines and is kept in
/// [`LogFile::error`], so the caller can say the report stops short.
pub struct LogFile {
    reader: Box<dyn BufRead>,
    /// Lines read so far.
    pub lines: u64,
    /// Lines skipped for being longer than [`MAX_LINE`].
    pub long_lines: u64,
    /// Why reading stopped before the end, if it did.
    pub error: Option<std::io::Error>,
}

impl LogFile {
    /// Opens `path` ("-": standard input).
    pub fn open(path: &str) -> std::io::Result<LogFile> {
        let raw: Box<dyn std::io::Read> =
            if path == "-" { Box::new(std::io::stdin()) } else { Box::new(std::fs::File::open(path)?) };
        let mut buffered = std::io::BufReader::new(raw);
        let gz = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn BufRead> = if gz {
            Box::new(std::io::BufReader::new(flate2::bufread::MultiGzDecoder::new(buffered)))
        } else {
            Box::new(buffered)
        };
        Ok(LogFile { reader, lines: 0, long_lines: 0, error: None })
    }

    /// Reads up to and including the next line break, at most [`MAX_LINE`] + 1 bytes.
    fn read_bounded(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        buf.clear();
        std::io::Read::take(&mut self.reader, MAX_LINE as u64 + 1).read_until(b'\n', buf)
    }
}

impl Iterator for LogFile {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        loop {
            let n = match self.read_bounded(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    self.error = Some(e);
                    return None;
                }
            };
            if n == 0 {
                return None;
            }
            if buf.len() > MAX_LINE && !buf.ends_with(b"\n") {
                // Too long: skip to the end of this line.
                self.long_lines += 1;
                loop {
                    match self.read_bounded(&mut buf) {
                        Ok(0) => return None,
                        Ok(_) if buf.ends_with(b"\n") => break,
                        Ok(_) => {}
                        Err(e) => {
                            self.error = Some(e);
                            return None;
                        }
                    }
                }
                continue;
            }
            self.lines += 1;
            if buf.ends_with(b"\n") {
                buf.pop();
            }
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
    }
}

/// `h:mm:ss` for a number of seconds, hours unbounded (also the delay benchmark's).
pub fn clock(secs: i64) -> String {
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
            // Another program's line quoting one of ours (a client's HELO name) is not ours.
            "Dec  5 00:31:00 mx postfix/smtpd[7]: NOQUEUE: reject: RCPT from x[198.51.100.7]: 550 no; helo=<smtpf-milter[1]: 0 #721 end i=198.51.100.7 m=999/999 R=1 l=\"550 5.7.0 x #525 S\">",
            "Dec  5 00:31:00 mx smtpf-milterX[1]: 0 #721 end",
        ] {
            assert_eq!(parse_line(other), None, "{other}");
        }
    }

    #[test]
    fn access_map_listings_are_counted_by_entry_never_by_client_text() {
        let mut r = Reader::default();
        r.line("S1 #923 helo evil (x) host OK (Helo:friendly.example)");
        r.line("S1 #976 helo spam-4711.example DISCARD");
        r.line("S2 #976 helo spam-4712.example DISCARD");
        let report = r.finish();
        let rows: Vec<(&str, u64)> = report.listings.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(rows, vec![("access-map DISCARD (Helo:)", 2), ("access-map Helo:friendly.example", 1)]);
    }

    #[test]
    fn absurd_numbers_in_a_line_neither_wrap_nor_panic() {
        let mut r = Reader::default();
        for _ in 0..2 {
            r.line(
                "S1 #721 end i=192.0.2.1 p=\"\" f=\"\" h=\"x\" m=18446744073709551615/18446744073709551615 b=0 R=0 t=0 l=\"\"",
            );
            r.line("S1 #2069 grey passed {grey:192.0.2.1,a@b.example,c@d.example} after 9223372036854775807 seconds");
        }
        let report = r.finish();
        assert_eq!((report.messages_accepted, report.transactions), (u64::MAX, u64::MAX));
        assert_eq!(report.greylisting.passed, 2);
    }

    #[test]
    fn only_postfix_s_own_lines_count_as_its_disconnects() {
        let mut r = Reader::default();
        for line in [
            "Dec  5 00:31:00 mx postfix/smtpd[7]: disconnect from unknown[192.0.2.1] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4",
            "Dec  5 00:31:01 mx postfix/smtpd[7]: disconnect from a.example[192.0.2.2] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
            // Ours, quoting a sender that reads like Postfix's line: not a disconnect.
            "Dec  5 00:31:02 mx smtpf-milter[1]: S1 #717 sender <disconnect from x[6.6.6.6]@example.org> tid=T1 f=\"\" x=\"\"",
            // Another program's line, with postfix/ in its text.
            "Dec  5 00:31:03 mx cron[9]: postfix/smtpd[7]: disconnect from y[6.6.6.7] commands=0",
        ] {
            r.postfix_line(line);
        }
        let p = r.finish().postfix.expect("a reconciliation");
        assert_eq!((p.disconnects, p.zero_message_disconnects), (2, 1));
        assert_eq!(p.by_client, vec![("192.0.2.1".to_string(), 1, 0)]);
    }

    #[test]
    fn fields_quoted_or_not() {
        let t = r#"end i=192.0.2.7 p="a b" f="" h="x" m=1/2 b=10 R=1 t=0 l="451 4.7.0 try again later #552 SID""#;
        let f = fields(t);
        assert_eq!(field(&f, "i"), Some("192.0.2.7"));
        assert_eq!(field(&f, "p"), Some("a b"));
        assert_eq!(field(&f, "f"), Some(""));
        assert_eq!(field(&f, "m"), Some("1/2"));
        assert_eq!(field(&f, "l").and_then(reply_number), Some(552));
        assert_eq!(field(&f, "zz"), None);
        // A HELO name dressed up as fields stays in h=.
        let t = r#"end i=192.0.2.7 p="" f="" h="x\" R=9 l=\"550 #525 y" m=1/1 b=10 R=0 t=0 l="""#;
        let f = fields(t);
        assert_eq!(field(&f, "h"), Some(r#"x\" R=9 l=\"550 #525 y"#));
        assert_eq!((field(&f, "R"), field(&f, "l")), (Some("0"), Some("")));
        // x= is read from the end, past a sender that imitates it.
        let t = r#"sender <a x="550 5.7.1 no #525 S"@example.org> tid=T f="" spf-mail=None spf-helo=None x="""#;
        assert_eq!(last_quoted(t, "x"), Some(""));
        assert_eq!(
            key_between("grey listed {grey:a}b@x,c@y} for 600 seconds", "grey listed {", "} for "),
            Some("grey:a}b@x,c@y")
        );
    }
}

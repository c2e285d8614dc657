//! The access-map: the postmaster's own black, white and grey list, in smtpf's `access.cf` syntax.
//!
//! smtpf sites keep their local policy in an access-map: one `key value` line per client address,
//! network, host name, HELO name, sender or recipient, saying OK (white list), REJECT, TEMPFAIL,
//! DISCARD and so on, plus per-client and per-recipient greylisting periods. This module reads such
//! a text file once (at start-up and again at SIGHUP) into an in-memory index, so that the checks
//! at each SMTP stage can ask "what does the map say about this client / HELO / address?" without
//! any file I/O. Lookups try keys from most to least specific in smtpf's order and stop at the first
//! key found; the right-hand side is either one action or a pattern list (`!glob!`, `[net/cidr]`,
//! `/regex/`, each followed by an action) that is matched against the client, HELO or address.
//! Syntax errors are returned with the file name, line and smtpf's log message number; nothing is
//! left to be discovered while mail is flowing. Turning a [`Hit`] into an SMTP reply is the job of
//! the calling check, which knows the stage.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};
use regex::{Regex, RegexBuilder};

/// The access-map tags this milter understands; a lookup only ever sees keys of its own tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tag {
    /// `Connect:` - the client, by IP address, CIDR network or verified PTR name (connect stage).
    Connect,
    /// `Helo:` - the HELO/EHLO argument, by name or address literal.
    Helo,
    /// `From:` - the envelope sender (MAIL FROM).
    From,
    /// `To:` - an envelope recipient (RCPT TO).
    To,
    /// `Connect:From:` - a client and sender pair (MAIL FROM).
    ConnectFrom,
    /// `Connect:To:` - a client and recipient pair (RCPT TO).
    ConnectTo,
    /// `From:To:` - a sender and recipient pair (RCPT TO).
    FromTo,
    /// `Grey-Connect:` - greylisting period in seconds for a client.
    GreyConnect,
    /// `Grey-To:` - greylisting period in seconds for a recipient.
    GreyTo,
}

impl Tag {
    /// Every tag, for callers that report per-tag counts.
    pub const ALL: [Tag; 9] = [
        Tag::Connect,
        Tag::Helo,
        Tag::From,
        Tag::To,
        Tag::ConnectFrom,
        Tag::ConnectTo,
        Tag::FromTo,
        Tag::GreyConnect,
        Tag::GreyTo,
    ];

    /// The tag as written in access.cf (`Connect:From:`), for log lines and messages.
    pub fn label(self) -> &'static str {
        match self {
            Tag::Connect => "Connect:",
            Tag::Helo => "Helo:",
            Tag::From => "From:",
            Tag::To => "To:",
            Tag::ConnectFrom => "Connect:From:",
            Tag::ConnectTo => "Connect:To:",
            Tag::FromTo => "From:To:",
            Tag::GreyConnect => "Grey-Connect:",
            Tag::GreyTo => "Grey-To:",
        }
    }

    /// The lower-case prefix every stored key of this tag starts with.
    fn prefix(self) -> &'static str {
        match self {
            Tag::Connect | Tag::ConnectFrom | Tag::ConnectTo => "connect:",
            Tag::Helo => "helo:",
            Tag::From | Tag::FromTo => "from:",
            Tag::To => "to:",
            Tag::GreyConnect => "grey-connect:",
            Tag::GreyTo => "grey-to:",
        }
    }

    /// What joins the two halves of a combo key.
    fn infix(self) -> &'static str {
        match self {
            Tag::ConnectFrom => ":from:",
            Tag::ConnectTo | Tag::FromTo => ":to:",
            _ => "",
        }
    }

    /// Whether the right-hand sides are periods in seconds rather than action words.
    fn is_grey(self) -> bool {
        matches!(self, Tag::GreyConnect | Tag::GreyTo)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What an access-map entry decides; the calling check maps it onto the stage's reply (see
/// docs/access-map.md for the per-stage effects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `OK`: white list.
    Ok,
    /// `REJECT`: black list (550, delayable as in smtpf).
    Reject,
    /// `IREJECT`: immediate reject, never delayed.
    IReject,
    /// `TEMPFAIL`: 450.
    TempFail,
    /// `DISCARD`: accept and throw the message away.
    Discard,
    /// `CONTINUE`, `DUNNO`, `SKIP` or `NEXT`: the key was found but decides nothing; the caller
    /// carries on with its other checks. Also the result of a pattern list that has no default
    /// action and no matching pattern. (For `Grey-*` tags: keep the configured period.)
    Continue,
    /// `CONTENT`: treat the client as grey (skip greylisting, keep content checks).
    Content,
    /// `Grey-Connect:` / `Grey-To:` value: greylisting period in seconds (`SKIP` is 0).
    Seconds(u32),
}

impl Action {
    /// smtpf's reply text when the entry carries no message of its own.
    pub fn default_text(self) -> &'static str {
        match self {
            Action::Ok => "white listed",
            Action::Reject | Action::IReject => "black listed",
            Action::TempFail => "temporary failure",
            Action::Discard => "discard",
            Action::Continue | Action::Content | Action::Seconds(_) => "",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Ok => f.write_str("OK"),
            Action::Reject => f.write_str("REJECT"),
            Action::IReject => f.write_str("IREJECT"),
            Action::TempFail => f.write_str("TEMPFAIL"),
            Action::Discard => f.write_str("DISCARD"),
            Action::Continue => f.write_str("CONTINUE"),
            Action::Content => f.write_str("CONTENT"),
            Action::Seconds(n) => write!(f, "{n}"),
        }
    }
}

/// The outcome of a lookup that found a key: what to do, and what to log (smtpf logs the key found,
/// e.g. `(connect:192.0.2)`). Borrows from the map, so a lookup allocates no result strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit<'a> {
    /// The key found, lower case, as stored: `connect:192.0.2`, `from:user@`, `to:`.
    pub key: &'a str,
    /// The decision: the single action, or that of the first matching pattern, or the pattern
    /// list's default, or [`Action::Continue`] when none applies.
    pub action: Action,
    /// The reply text given after the action (`REJECT:"go away"`), quotes removed.
    pub message: Option<&'a str>,
    /// The right-hand side as written in the file.
    pub value: &'a str,
    /// Line of the file the entry came from.
    pub line: usize,
}

impl<'a> Hit<'a> {
    /// The text for the reply or log line: the entry's message, else smtpf's default for the action.
    pub fn text(&self) -> &'a str {
        self.message.unwrap_or(self.action.default_text())
    }
}

/// A problem that stops the map from loading; names the file and line (0 when the file itself
/// cannot be read) and, where smtpf has one, its log message number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessError {
    /// File name as given to [`AccessMap::parse`] or [`AccessMap::load`].
    pub file: String,
    /// 1-based line number; 0 for an open error.
    pub line: usize,
    /// smtpf's message number (#100-#110 pattern errors, #117 open error), if any.
    pub num: Option<u16>,
    /// The message, in smtpf's wording where it has one.
    pub message: String,
}

impl AccessError {
    /// The smtpf message number to log the error under: the pattern error's own (#100-#110) or
    /// #117, smtpf's "access-map cannot be used" start-up error, for everything else.
    pub fn number(&self) -> u16 {
        self.num.unwrap_or(117)
    }
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.file, self.line)?;
        }
        if let Some(num) = self.num {
            write!(f, "#{num} ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for AccessError {}

/// Something odd but harmless in the file (a duplicate key, a tag this milter does not implement);
/// the map still loads and the caller logs these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// File name as given to the parser.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is odd.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// The parsed access-map: an index from lower-case key to entry, plus per-tag CIDR indexes.
/// Immutable once built; a reload builds a new one and swaps it in.
#[derive(Debug, Default)]
pub struct AccessMap {
    index: HashMap<String, Entry>,
    cidr: Vec<(Tag, CidrIndex)>,
    counts: [usize; 9],
}

#[derive(Debug)]
struct Entry {
    value: String,
    rhs: Rhs,
    line: usize,
}

#[derive(Debug)]
enum Rhs {
    Single(Decision),
    List(Box<PatternList>),
}

#[derive(Debug)]
struct PatternList {
    rules: Vec<(Pattern, Decision)>,
    default: Option<Decision>,
}

#[derive(Debug)]
struct Decision {
    action: Action,
    message: Option<String>,
}

#[derive(Debug)]
enum Pattern {
    Glob(Vec<GlobTok>),
    Net(IpNet),
    Regex(Regex),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GlobTok {
    Lit(char),
    One,
    Any,
}

/// CIDR keys of one tag, grouped by prefix length, longest first, so the first hit is the longest
/// matching prefix and a lookup costs one hash probe per distinct length.
#[derive(Debug, Default)]
struct CidrIndex {
    v4: Vec<(u8, HashSet<u32>)>,
    v6: Vec<(u8, HashSet<u128>)>,
}

impl CidrIndex {
    fn insert(&mut self, net: IpNet) {
        match net {
            IpNet::V4(n) => insert_by_len(&mut self.v4, n.prefix_len(), u32::from(n.network())),
            IpNet::V6(n) => insert_by_len(&mut self.v6, n.prefix_len(), u128::from(n.network())),
        }
    }
}

/// Adds a network to its prefix-length group, keeping the groups longest first.
fn insert_by_len<T: Eq + Hash>(groups: &mut Vec<(u8, HashSet<T>)>, len: u8, net: T) {
    let at = groups.partition_point(|(l, _)| *l > len);
    if !matches!(groups.get(at), Some((l, _)) if *l == len) {
        groups.insert(at, (len, HashSet::new()));
    }
    groups[at].1.insert(net);
}

/// What a pattern is matched against: the text (lower case) and, when it is an IP, the address.
#[derive(Clone, Copy)]
struct Subject<'s> {
    text: &'s str,
    ip: Option<IpAddr>,
}

/// A line-level error before the file name is attached.
struct LineErr {
    num: Option<u16>,
    message: String,
}

impl LineErr {
    fn plain(message: impl Into<String>) -> LineErr {
        LineErr { num: None, message: message.into() }
    }

    fn numbered(num: u16, message: String) -> LineErr {
        LineErr { num: Some(num), message }
    }
}

/// A left-hand side after normalisation.
enum KeyKind {
    Text(String),
    Cidr(IpNet),
}

enum ParsedKey {
    Known(Tag, KeyKind),
    Unsupported(String),
    NoTag,
}

/// Tags in the order they are recognised (longer tags sharing a start come first).
const TAG_PREFIXES: [(&str, Tag); 6] = [
    ("grey-connect:", Tag::GreyConnect),
    ("grey-to:", Tag::GreyTo),
    ("connect:", Tag::Connect),
    ("helo:", Tag::Helo),
    ("from:", Tag::From),
    ("to:", Tag::To),
];

/// Action words; matched case-insensitively.
const ACTION_WORDS: [(&str, Action); 10] = [
    ("OK", Action::Ok),
    ("REJECT", Action::Reject),
    ("IREJECT", Action::IReject),
    ("TEMPFAIL", Action::TempFail),
    ("DISCARD", Action::Discard),
    ("CONTINUE", Action::Continue),
    ("DUNNO", Action::Continue),
    ("SKIP", Action::Continue),
    ("NEXT", Action::Continue),
    ("CONTENT", Action::Content),
];

/// smtpf action words this milter does not implement; named in the error so a ported file gets a
/// clear message instead of "unknown action".
const UNSUPPORTED_WORDS: [&str; 10] =
    ["OK+AV", "PROTOCOL", "POLICY-OK", "POLICY-PASS", "SPF-PASS", "SAVE", "TAG", "TRAP", "REQUIRE", "VERIFY"];

impl AccessMap {
    /// Parses access.cf text. `file_name` only labels errors and warnings. Returns the map and the
    /// warnings to log, or the first error.
    pub fn parse(text: &str, file_name: &str) -> Result<(AccessMap, Vec<Warning>), AccessError> {
        let mut map = AccessMap::default();
        let mut warnings = Vec::new();
        // Unsupported tag -> (first line, number of lines).
        let mut unsupported: Vec<(String, usize, usize)> = Vec::new();
        let warn = |line: usize, message: String| Warning { file: file_name.to_string(), line, message };
        let fail = |line: usize, e: LineErr| AccessError { file: file_name.to_string(), line, num: e.num, message: e.message };

        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.split('\n').enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = match line.find(char::is_whitespace) {
                Some(p) => (&line[..p], line[p..].trim()),
                None => (line, ""),
            };
            let key = key.to_lowercase();
            let (tag, kind) = match parse_key(&key).map_err(|e| fail(line_no, e))? {
                ParsedKey::Known(tag, kind) => (tag, kind),
                ParsedKey::Unsupported(name) => {
                    match unsupported.iter_mut().find(|u| u.0 == name) {
                        Some(u) => u.2 += 1,
                        None => unsupported.push((name, line_no, 1)),
                    }
                    continue;
                }
                ParsedKey::NoTag => {
                    warnings.push(warn(line_no, format!("key \"{key}\" has no tag (such as Connect:), line ignored")));
                    continue;
                }
            };
            if value.is_empty() {
                return Err(fail(line_no, LineErr::plain(format!("key \"{key}\" has no value"))));
            }
            let mut notes = Vec::new();
            let rhs = parse_rhs(value, tag, &mut notes).map_err(|e| fail(line_no, e))?;
            warnings.extend(notes.into_iter().map(|n| warn(line_no, n)));

            let stored = match &kind {
                KeyKind::Text(body) => body_key(tag, body),
                KeyKind::Cidr(net) => cidr_key(tag, net),
            };
            if let Some(first) = map.index.get(&stored) {
                let message = format!("duplicate key \"{stored}\" ignored, first defined at line {}", first.line);
                warnings.push(warn(line_no, message));
                continue;
            }
            if let KeyKind::Cidr(net) = kind {
                let at = match map.cidr.iter().position(|(t, _)| *t == tag) {
                    Some(at) => at,
                    None => {
                        map.cidr.push((tag, CidrIndex::default()));
                        map.cidr.len() - 1
                    }
                };
                map.cidr[at].1.insert(net);
            }
            map.counts[tag.index()] += 1;
            map.index.insert(stored, Entry { value: value.to_string(), rhs, line: line_no });
        }

        for (name, line, count) in unsupported {
            let what = if count == 1 { "line ignored".to_string() } else { format!("{count} lines ignored, this is the first") };
            warnings.push(warn(line, format!("tag \"{name}\" is not supported by this milter, {what}")));
        }
        warnings.sort_by_key(|w| w.line);
        Ok((map, warnings))
    }

    /// Reads and parses an access.cf file (at start-up and at SIGHUP). An unreadable file is smtpf's
    /// `#117` open error; bytes that are not UTF-8 are replaced rather than refused, so a Latin-1
    /// comment does not stop the daemon.
    pub fn load(path: impl AsRef<Path>) -> Result<(AccessMap, Vec<Warning>), AccessError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| AccessError {
            file: name.clone(),
            line: 0,
            num: Some(117),
            message: format!("access-map={name} open error: {e}"),
        })?;
        AccessMap::parse(&String::from_utf8_lossy(&bytes), &name)
    }

    /// Number of entries loaded (all tags), for the start-up log line.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the map has no entries at all (then every lookup is `None`).
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Number of entries of one tag, so a caller can skip a stage's lookups when there are none.
    pub fn count(&self, tag: Tag) -> usize {
        self.counts[tag.index()]
    }

    /// `Connect:` or `Grey-Connect:` lookup for a client (any other tag gives `None`). Tries
    /// `tag:a.b.c.d`, `tag:a.b.c`, `tag:a.b`, `tag:a` (IPv6: the full form reduced by 16-bit groups),
    /// then CIDR keys (longest prefix), then, when `ptr` is a verified host name, `tag:host.domain.tld`,
    /// `tag:domain.tld`, `tag:tld`, and finally the bare `tag:`. Pass `None` for a client without a
    /// (forward-confirmed) name. A pattern list found by an IP or CIDR key is matched against the IP;
    /// one found by a name or the bare tag against the name first, then the IP.
    pub fn lookup_client(&self, tag: Tag, ip: IpAddr, ptr: Option<&str>) -> Option<Hit<'_>> {
        if !matches!(tag, Tag::Connect | Tag::GreyConnect) || self.count(tag) == 0 {
            return None;
        }
        let ip = unmap(ip);
        let full = ip_key_text(ip);
        let ip_text = ip_subject_text(ip, &full);
        let ip_subject = Subject { text: &ip_text, ip: Some(ip) };
        let mut buf = String::with_capacity(64);
        if let Some(hit) = self.probe_ip(tag, ip, &full, &mut buf, &[ip_subject]) {
            return Some(hit);
        }
        let name = ptr.map(normal_name).filter(|n| !n.is_empty());
        if let Some(name) = name.as_deref() {
            let subjects = [Subject { text: name, ip: None }, ip_subject];
            for suffix in domain_suffixes(name) {
                if let Some(hit) = self.probe_with(&mut buf, &[tag.prefix(), suffix], &subjects) {
                    return Some(hit);
                }
            }
            return self.probe_with(&mut buf, &[tag.prefix()], &subjects);
        }
        self.probe_with(&mut buf, &[tag.prefix()], &[ip_subject])
    }

    /// `Helo:` lookup. An address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`, or a bare address)
    /// is looked up like a client IP (reductions, then CIDR keys); a name by its domain suffixes
    /// (`helo:mx.example.com`, `helo:example.com`, `helo:com`); then the bare `helo:`. Pattern
    /// lists are matched against the name, or the address for a literal.
    pub fn lookup_helo(&self, helo: &str) -> Option<Hit<'_>> {
        if self.count(Tag::Helo) == 0 {
            return None;
        }
        let tag = Tag::Helo;
        let helo = normal_name(helo);
        let literal = helo.strip_prefix('[').and_then(|s| s.strip_suffix(']'));
        let mut buf = String::with_capacity(64);
        if let Some(ip) = parse_ip(literal.unwrap_or(&helo)) {
            let ip = unmap(ip);
            let full = ip_key_text(ip);
            let ip_text = ip_subject_text(ip, &full);
            let subjects = [Subject { text: &ip_text, ip: Some(ip) }];
            return self
                .probe_ip(tag, ip, &full, &mut buf, &subjects)
                .or_else(|| self.probe_with(&mut buf, &[tag.prefix()], &subjects));
        }
        let subjects = [Subject { text: &helo, ip: None }];
        if literal.is_some() {
            if let Some(hit) = self.probe_with(&mut buf, &[tag.prefix(), &helo], &subjects) {
                return Some(hit);
            }
        } else {
            for suffix in domain_suffixes(&helo) {
                if let Some(hit) = self.probe_with(&mut buf, &[tag.prefix(), suffix], &subjects) {
                    return Some(hit);
                }
            }
        }
        self.probe_with(&mut buf, &[tag.prefix()], &subjects)
    }

    /// `From:`, `To:` or `Grey-To:` lookup for an address, with or without `<>` (any other tag gives
    /// `None`). Tries `tag:local+detail@sub.dom`, `tag:local@sub.dom` (detail stripped),
    /// `tag:sub.dom`, `tag:dom`, `tag:tld`, `tag:local@` (detail stripped), then the bare `tag:`.
    /// The null sender (`<>` or empty) tries `tag:<>`, then the bare tag. Pattern lists are matched
    /// against the address (lower case, without `<>`; empty for the null sender).
    pub fn lookup_mail(&self, tag: Tag, address: &str) -> Option<Hit<'_>> {
        if !matches!(tag, Tag::From | Tag::To | Tag::GreyTo) || self.count(tag) == 0 {
            return None;
        }
        let mail = normal_mail(address);
        let subjects = [Subject { text: &mail, ip: None }];
        let mut cands = Vec::with_capacity(8);
        mail_candidates(&mail, &mut cands);
        let mut buf = String::with_capacity(tag.prefix().len() + mail.len() + 8);
        for (a, b) in cands {
            if let Some(hit) = self.probe_with(&mut buf, &[tag.prefix(), a, b], &subjects) {
                return Some(hit);
            }
        }
        self.probe_with(&mut buf, &[tag.prefix()], &subjects)
    }

    /// `Connect:From:` (sender) or `Connect:To:` (recipient) lookup (any other tag gives `None`):
    /// every client IP reduction with every address reduction (as [`AccessMap::lookup_client`] and
    /// [`AccessMap::lookup_mail`], without the bare forms), then, with a verified `ptr` name, every
    /// domain suffix of the name with every address reduction. The null sender is `<>`. Pattern
    /// lists are matched against the address.
    pub fn lookup_client_mail(&self, tag: Tag, ip: IpAddr, ptr: Option<&str>, address: &str) -> Option<Hit<'_>> {
        if !matches!(tag, Tag::ConnectFrom | Tag::ConnectTo) || self.count(tag) == 0 {
            return None;
        }
        let ip = unmap(ip);
        let full = ip_key_text(ip);
        let mail = normal_mail(address);
        let subjects = [Subject { text: &mail, ip: None }];
        let mut cands = Vec::with_capacity(8);
        mail_candidates(&mail, &mut cands);
        let mut buf = String::with_capacity(64 + mail.len());
        for host in ip_reductions(&full, ip_separator(ip)) {
            for &(a, b) in &cands {
                if let Some(hit) = self.probe_with(&mut buf, &[tag.prefix(), host, tag.infix(), a, b], &subjects) {
                    return Some(hit);
                }
            }
        }
        let name = ptr.map(normal_name).filter(|n| !n.is_empty())?;
        for host in domain_suffixes(&name) {
            for &(a, b) in &cands {
                if let Some(hit) = self.probe_with(&mut buf, &[tag.prefix(), host, tag.infix(), a, b], &subjects) {
                    return Some(hit);
                }
            }
        }
        None
    }

    /// `From:To:` lookup: every sender reduction with every recipient reduction (no bare forms), the
    /// sender's most specific first. Pattern lists are matched against the recipient.
    pub fn lookup_from_to(&self, sender: &str, recipient: &str) -> Option<Hit<'_>> {
        if self.count(Tag::FromTo) == 0 {
            return None;
        }
        let from = normal_mail(sender);
        let to = normal_mail(recipient);
        let subjects = [Subject { text: &to, ip: None }];
        let (mut from_cands, mut to_cands) = (Vec::with_capacity(8), Vec::with_capacity(8));
        mail_candidates(&from, &mut from_cands);
        mail_candidates(&to, &mut to_cands);
        let mut buf = String::with_capacity(16 + from.len() + to.len());
        for &(a, b) in &from_cands {
            for &(c, d) in &to_cands {
                if let Some(hit) = self.probe_with(&mut buf, &["from:", a, b, ":to:", c, d], &subjects) {
                    return Some(hit);
                }
            }
        }
        None
    }

    /// IP reductions, then CIDR keys, for one client or HELO address.
    fn probe_ip<'a>(&'a self, tag: Tag, ip: IpAddr, full: &str, buf: &mut String, subjects: &[Subject]) -> Option<Hit<'a>> {
        for cand in ip_reductions(full, ip_separator(ip)) {
            if let Some(hit) = self.probe_with(buf, &[tag.prefix(), cand], subjects) {
                return Some(hit);
            }
        }
        let (_, index) = self.cidr.iter().find(|(t, _)| *t == tag)?;
        match ip {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                for (len, set) in &index.v4 {
                    let net = bits & mask32(*len);
                    if set.contains(&net) {
                        buf.clear();
                        let _ = write!(buf, "{}{}/{}", tag.prefix(), Ipv4Addr::from(net), len);
                        if let Some((key, entry)) = self.index.get_key_value(buf.as_str()) {
                            return Some(evaluate(key, entry, subjects));
                        }
                    }
                }
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                for (len, set) in &index.v6 {
                    let net = bits & mask128(*len);
                    if set.contains(&net) {
                        buf.clear();
                        let _ = write!(buf, "{}{}/{}", tag.prefix(), Ipv6Addr::from(net), len);
                        if let Some((key, entry)) = self.index.get_key_value(buf.as_str()) {
                            return Some(evaluate(key, entry, subjects));
                        }
                    }
                }
            }
        }
        None
    }

    /// Builds the key from `parts` in `buf` and looks it up.
    fn probe_with<'a>(&'a self, buf: &mut String, parts: &[&str], subjects: &[Subject]) -> Option<Hit<'a>> {
        buf.clear();
        for part in parts {
            buf.push_str(part);
        }
        let (key, entry) = self.index.get_key_value(buf.as_str())?;
        Some(evaluate(key, entry, subjects))
    }
}

/// Applies an entry's right-hand side to the lookup's subjects.
fn evaluate<'a>(key: &'a str, entry: &'a Entry, subjects: &[Subject]) -> Hit<'a> {
    let decision = match &entry.rhs {
        Rhs::Single(d) => Some(d),
        Rhs::List(list) => {
            subjects.iter().find_map(|s| list.rules.iter().find(|(p, _)| p.matches(s)).map(|(_, d)| d)).or(list.default.as_ref())
        }
    };
    let (action, message) = match decision {
        Some(d) => (d.action, d.message.as_deref()),
        None => (Action::Continue, None),
    };
    Hit { key, action, message, value: &entry.value, line: entry.line }
}

impl Pattern {
    fn matches(&self, subject: &Subject) -> bool {
        match self {
            Pattern::Glob(toks) => glob_match(toks, subject.text),
            Pattern::Net(net) => subject.ip.is_some_and(|ip| net.contains(&ip)),
            Pattern::Regex(re) => re.is_match(subject.text),
        }
    }
}

/// `*` any run, `?` one character, everything else literal; anchored at both ends. Both sides are
/// already lower case. Linear backtracking on the last `*` only, so no pattern can blow up.
fn glob_match(pat: &[GlobTok], s: &str) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pat.len() {
            let next = s[i..].chars().next();
            match (pat[p], next) {
                (GlobTok::Any, _) => {
                    star = Some((p + 1, i));
                    p += 1;
                    continue;
                }
                (GlobTok::One, Some(c)) => {
                    p += 1;
                    i += c.len_utf8();
                    continue;
                }
                (GlobTok::Lit(l), Some(c)) if l == c => {
                    p += 1;
                    i += c.len_utf8();
                    continue;
                }
                _ => {}
            }
        } else if i == s.len() {
            return true;
        }
        match star {
            Some((sp, si)) => match s[si..].chars().next() {
                Some(c) => {
                    star = Some((sp, si + c.len_utf8()));
                    p = sp;
                    i = si + c.len_utf8();
                }
                None => return false,
            },
            None => return false,
        }
    }
}

/// Splits the key into tag and normalised body.
fn parse_key(key: &str) -> Result<ParsedKey, LineErr> {
    let Some((prefix, tag)) = TAG_PREFIXES.iter().find(|(p, _)| key.starts_with(p)) else {
        return Ok(match key.find(':') {
            Some(p) => ParsedKey::Unsupported(key[..=p].to_string()),
            None => ParsedKey::NoTag,
        });
    };
    let body = &key[prefix.len()..];
    let combo = match tag {
        Tag::Connect => [Tag::ConnectFrom, Tag::ConnectTo]
            .into_iter()
            .filter_map(|t| body.find(t.infix()).map(|p| (p, t)))
            .min_by_key(|(p, _)| *p),
        Tag::From => body.find(":to:").map(|p| (p, Tag::FromTo)),
        _ => None,
    };
    if let Some((pos, combo)) = combo {
        let (left, right) = (&body[..pos], &body[pos + combo.infix().len()..]);
        if left.is_empty() || right.is_empty() {
            return Err(LineErr::plain(format!("{} key \"{key}\" needs both parts", combo.label())));
        }
        let left = match combo {
            Tag::FromTo => normal_mail_key(left)?,
            _ => match normal_host_key(left)? {
                KeyKind::Text(t) => t,
                KeyKind::Cidr(_) => {
                    return Err(LineErr::plain(format!(
                        "{} key \"{key}\": CIDR networks are not allowed in combo keys",
                        combo.label()
                    )))
                }
            },
        };
        let right = normal_mail_key(right)?;
        return Ok(ParsedKey::Known(combo, KeyKind::Text(format!("{left}{}{right}", combo.infix()))));
    }
    let kind = match tag {
        Tag::Connect | Tag::GreyConnect | Tag::Helo => normal_host_key(body)?,
        _ => KeyKind::Text(normal_mail_key(body)?),
    };
    Ok(ParsedKey::Known(*tag, kind))
}

/// The stored key for a text body.
fn body_key(tag: Tag, body: &str) -> String {
    let mut key = String::with_capacity(tag.prefix().len() + body.len());
    key.push_str(tag.prefix());
    key.push_str(body);
    key
}

/// The stored key for a CIDR network, in the form lookups rebuild it.
fn cidr_key(tag: Tag, net: &IpNet) -> String {
    format!("{}{}/{}", tag.prefix(), net.network(), net.prefix_len())
}

/// Normalises a host part: empty (bare tag), IPv4 address or leading octets, IPv6 address (any
/// form) or leading groups, CIDR network, or domain name.
fn normal_host_key(body: &str) -> Result<KeyKind, LineErr> {
    if body.is_empty() {
        return Ok(KeyKind::Text(String::new()));
    }
    let inner = body.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(body);
    let inner = inner.strip_prefix("ipv6:").unwrap_or(inner);
    if inner.contains('/') {
        return parse_net(inner, body).map(KeyKind::Cidr);
    }
    if inner.contains(':') {
        if let Ok(a) = inner.parse::<Ipv6Addr>() {
            return Ok(KeyKind::Text(ip_key_text(unmap(IpAddr::V6(a)))));
        }
        let groups: Vec<&str> = inner.split(':').collect();
        let valid =
            groups.len() < 8 && groups.iter().all(|g| (1..=4).contains(&g.len()) && g.bytes().all(|b| b.is_ascii_hexdigit()));
        if !valid {
            return Err(LineErr::plain(format!("\"{body}\" is not an IPv6 address or leading groups of one")));
        }
        let mut out = String::with_capacity(inner.len());
        for (i, g) in groups.iter().enumerate() {
            let n = u16::from_str_radix(g, 16).map_err(|_| LineErr::plain(format!("bad IPv6 group in \"{body}\"")))?;
            let _ = write!(out, "{}{n:x}", if i > 0 { ":" } else { "" });
        }
        return Ok(KeyKind::Text(out));
    }
    let numeric = inner.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if numeric {
        let parts: Vec<&str> = inner.split('.').collect();
        let octets: Vec<u8> = parts.iter().filter_map(|p| p.parse::<u8>().ok()).collect();
        if parts.len() == 1 && octets.is_empty() {
            // One number above 255: the first group of an IPv6 address, kept as written.
            return Ok(KeyKind::Text(inner.to_string()));
        }
        if parts.len() > 4 || octets.len() != parts.len() {
            return Err(LineErr::plain(format!("\"{body}\" is not an IPv4 address or leading octets of one")));
        }
        let text: Vec<String> = octets.iter().map(u8::to_string).collect();
        return Ok(KeyKind::Text(text.join(".")));
    }
    let name = inner.trim_end_matches('.');
    if name.is_empty() {
        return Err(LineErr::plain(format!("\"{body}\" is not a host name")));
    }
    Ok(KeyKind::Text(name.to_string()))
}

/// Normalises an address part: empty (bare tag), `<>`, `local@domain`, `local@` or a domain.
fn normal_mail_key(body: &str) -> Result<String, LineErr> {
    if body == "<>" {
        return Ok(body.to_string());
    }
    let s = body.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(body);
    match s.rfind('@') {
        Some(0) => Err(LineErr::plain(format!(
            "\"{body}\" has no local part; write the domain alone (From:example.com) for a whole domain"
        ))),
        Some(at) => Ok(format!("{}@{}", &s[..at], s[at + 1..].trim_end_matches('.'))),
        None if s.contains('/') => {
            Err(LineErr::plain(format!("\"{body}\": CIDR networks are only allowed for Connect:, Grey-Connect: and Helo: keys")))
        }
        None => Ok(s.trim_end_matches('.').to_string()),
    }
}

/// Parses `address[/len]` for a CIDR key or a `[net/cidr]` pattern. `shown` is the text quoted in
/// errors. Bad address: #105; bad or out of range length: #106. IPv4-mapped IPv6 networks become
/// IPv4 networks so they match IPv4 clients.
fn parse_net(text: &str, shown: &str) -> Result<IpNet, LineErr> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let Some(ip) = parse_ip(addr) else {
        return Err(LineErr::numbered(105, format!("network specifier error: \"{}...\"", snip(shown))));
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max && !l.starts_with('+') => n,
            _ => return Err(LineErr::numbered(106, format!("network specifier error, \"{}...\"", snip(shown)))),
        },
    };
    let net =
        IpNet::new(ip, len).map_err(|_| LineErr::numbered(106, format!("network specifier error, \"{}...\"", snip(shown))))?;
    Ok(unmap_net(net.trunc()))
}

/// Turns `::ffff:a.b.c.d/96+n` into `a.b.c.d/n`.
fn unmap_net(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net {
        if let (Some(v4), true) = (n.network().to_ipv4_mapped(), n.prefix_len() >= 96) {
            if let Ok(v4net) = Ipv4Net::new(v4, n.prefix_len() - 96) {
                return IpNet::V4(v4net);
            }
        }
    }
    net
}

/// Parses a right-hand side: one action (with optional message), or `pattern ACTION` pairs and an
/// optional default action.
fn parse_rhs(value: &str, tag: Tag, notes: &mut Vec<String>) -> Result<Rhs, LineErr> {
    let mut rules = Vec::new();
    let mut pos = 0;
    loop {
        pos += value[pos..].len() - value[pos..].trim_start().len();
        let rest = &value[pos..];
        let Some(first) = rest.chars().next() else {
            break;
        };
        if !matches!(first, '!' | '[' | '/') {
            let decision = parse_final_action(rest, tag, notes)?;
            if rules.is_empty() {
                return Ok(Rhs::Single(decision));
            }
            return Ok(Rhs::List(Box::new(PatternList { rules, default: Some(decision) })));
        }
        let token = rest.split(char::is_whitespace).next().unwrap_or(rest);
        let close_char = if first == '[' { ']' } else { first };
        let Some(close) = find_close(&token[1..], close_char).map(|c| c + 1) else {
            let (num, what) = match first {
                '!' => (100, "pattern delimiter error"),
                '[' => (103, "network delimiter error"),
                _ => (108, "regular expression delimiter error"),
            };
            return Err(LineErr::numbered(num, format!("{what}: \"{}...\"", snip(rest))));
        };
        let body = &rest[1..close];
        let pattern = match first {
            '!' => Pattern::Glob(compile_glob(body)),
            '[' => Pattern::Net(parse_net(&body.to_lowercase(), rest)?),
            _ => Pattern::Regex(RegexBuilder::new(body).case_insensitive(true).build().map_err(|e| {
                LineErr::numbered(110, format!("regular expression error: {} \"{}...\"", regex_reason(&e), snip(rest)))
            })?),
        };
        let (decision, used) = parse_glued_action(&rest[close + 1..], tag, notes)?;
        rules.push((pattern, decision));
        pos += close + 1 + used;
    }
    Ok(Rhs::List(Box::new(PatternList { rules, default: None })))
}

/// Finds the first closing delimiter not escaped by a backslash.
fn find_close(s: &str, delim: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == delim {
            return Some(i);
        }
    }
    None
}

fn compile_glob(body: &str) -> Vec<GlobTok> {
    let mut toks = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if toks.last() != Some(&GlobTok::Any) {
                    toks.push(GlobTok::Any);
                }
            }
            '?' => toks.push(GlobTok::One),
            '\\' => {
                let lit = chars.next().unwrap_or('\\');
                toks.extend(lit.to_lowercase().map(GlobTok::Lit));
            }
            _ => toks.extend(c.to_lowercase().map(GlobTok::Lit)),
        }
    }
    toks
}

/// The one-line reason of a regex error (the crate's message spans several lines).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    match text.lines().rev().find_map(|l| l.strip_prefix("error: ")) {
        Some(reason) => reason.to_string(),
        None => text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// The action glued to a pattern (`!x!REJECT`, `!x!REJECT:"go away"`, `!x!REJECT:text`, or nothing,
/// which decides nothing as in smtpf). Returns the decision and the bytes used.
fn parse_glued_action(s: &str, tag: Tag, notes: &mut Vec<String>) -> Result<(Decision, usize), LineErr> {
    let word_end = s.find(|c: char| c.is_whitespace() || c == ':').unwrap_or(s.len());
    let action = action_word(&s[..word_end], tag, true, notes)?;
    if !s[word_end..].starts_with(':') {
        return Ok((Decision { action, message: None }, word_end));
    }
    let after = &s[word_end + 1..];
    let (message, used) = if let Some(quoted) = after.strip_prefix('"') {
        let Some(end) = quoted.find('"') else {
            return Err(LineErr::plain(format!("unterminated quoted message: \"{}...\"", snip(s))));
        };
        if quoted[end + 1..].chars().next().is_some_and(|c| !c.is_whitespace()) {
            return Err(LineErr::plain(format!("text glued after a quoted message: \"{}...\"", snip(s))));
        }
        (&quoted[..end], end + 2)
    } else {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        (&after[..end], end)
    };
    let message = Some(message.to_string()).filter(|m| !m.is_empty());
    Ok((Decision { action, message }, word_end + 1 + used))
}

/// The last action: a word, then an optional message after `:` or whitespace, to the end of the
/// line, outer quotes removed.
fn parse_final_action(s: &str, tag: Tag, notes: &mut Vec<String>) -> Result<Decision, LineErr> {
    let word_end = s.find(|c: char| c.is_whitespace() || c == ':').unwrap_or(s.len());
    let action = action_word(&s[..word_end], tag, false, notes)?;
    let rest = &s[word_end..];
    let rest = rest.strip_prefix(':').unwrap_or(rest).trim();
    let rest = rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(rest);
    let message = Some(rest.to_string()).filter(|m| !m.is_empty());
    Ok(Decision { action, message })
}

/// Classifies an action word for the tag. Grey tags take seconds or `SKIP` (0); the others the
/// action words. An empty word (only possible after a pattern) decides nothing.
fn action_word(word: &str, tag: Tag, glued: bool, notes: &mut Vec<String>) -> Result<Action, LineErr> {
    if word.is_empty() && glued {
        return Ok(if tag.is_grey() { Action::Seconds(0) } else { Action::Continue });
    }
    let numeric = !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit());
    if tag.is_grey() {
        if numeric {
            return word
                .parse::<u32>()
                .map(Action::Seconds)
                .map_err(|_| LineErr::plain(format!("{} period \"{word}\" is too large", tag.label())));
        }
        if word.eq_ignore_ascii_case("SKIP") {
            return Ok(Action::Seconds(0));
        }
        return Err(LineErr::plain(format!("{} value \"{word}\" is not a number of seconds or SKIP", tag.label())));
    }
    if let Some((_, action)) = ACTION_WORDS.iter().find(|(w, _)| w.eq_ignore_ascii_case(word)) {
        if word.eq_ignore_ascii_case("NEXT") {
            notes.push("NEXT does not resume the lookup (nor does it in smtpf); treated as CONTINUE".to_string());
        }
        return Ok(*action);
    }
    if UNSUPPORTED_WORDS.iter().any(|w| w.eq_ignore_ascii_case(word)) {
        return Err(LineErr::plain(format!("smtpf action \"{word}\" is not supported by this milter")));
    }
    if word.is_empty() {
        return Err(LineErr::plain("missing action word before the message"));
    }
    let hint = if numeric { " (numbers are only for Grey-Connect: and Grey-To:)" } else { "" };
    Err(LineErr::plain(format!("unknown action \"{word}\"{hint}")))
}

/// At most the first 50 characters, as smtpf's `%.50s`.
fn snip(s: &str) -> &str {
    match s.char_indices().nth(50) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// An address, IPv6 literal text with or without `ipv6:`, parsed.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.get(..5).filter(|p| p.eq_ignore_ascii_case("ipv6:")).map_or(s, |_| &s[5..]);
    s.parse().ok()
}

/// IPv4-mapped IPv6 addresses are the IPv4 client they stand for.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The full text form keys use: dotted quad, or eight lower-case hex groups without leading zeros
/// (`2001:db8:0:0:0:0:0:1`), whose prefixes at the separators are the reductions.
fn ip_key_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => {
            let mut s = String::with_capacity(39);
            for (i, g) in a.segments().iter().enumerate() {
                let _ = write!(s, "{}{g:x}", if i > 0 { ":" } else { "" });
            }
            s
        }
    }
}

/// The text patterns see for an address: dotted quad, or the usual compressed IPv6 form.
fn ip_subject_text(ip: IpAddr, full: &str) -> Cow<'_, str> {
    match ip {
        IpAddr::V4(_) => Cow::Borrowed(full),
        IpAddr::V6(a) => Cow::Owned(a.to_string()),
    }
}

fn ip_separator(ip: IpAddr) -> char {
    if ip.is_ipv4() {
        '.'
    } else {
        ':'
    }
}

/// `a.b.c.d`, `a.b.c`, `a.b`, `a` (or the IPv6 groups likewise).
fn ip_reductions(full: &str, sep: char) -> impl Iterator<Item = &str> {
    std::iter::once(full).chain(full.rmatch_indices(sep).map(move |(i, _)| &full[..i]))
}

/// `sub.domain.tld`, `domain.tld`, `tld`.
fn domain_suffixes(name: &str) -> impl Iterator<Item = &str> {
    std::iter::once(name).chain(name.match_indices('.').map(move |(i, _)| &name[i + 1..])).filter(|s| !s.is_empty())
}

/// Lower case, no surrounding space, no trailing dot.
fn normal_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_lowercase()
}

/// Lower case, without `<>`, source route or trailing dot; empty for the null sender.
fn normal_mail(address: &str) -> String {
    let s = address.trim();
    let s = s.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(s);
    let s = if s.starts_with('@') { s.split_once(':').map_or(s, |(_, rest)| rest) } else { s };
    s.trim_end_matches('.').to_lowercase()
}

/// The address reductions in lookup order, as pairs of slices to concatenate.
fn mail_candidates<'m>(mail: &'m str, out: &mut Vec<(&'m str, &'m str)>) {
    if mail.is_empty() {
        out.push(("<>", ""));
        return;
    }
    let (local, domain) = match mail.rfind('@') {
        Some(at) => (&mail[..at], Some((&mail[at..], &mail[at + 1..]))),
        None => (mail, None),
    };
    let base = local.find('+').map_or(local, |p| &local[..p]);
    if let Some((at_domain, domain)) = domain {
        out.push((mail, ""));
        if base.len() < local.len() && !base.is_empty() {
            out.push((base, at_domain));
        }
        if domain.starts_with('[') {
            out.push((domain, ""));
        } else {
            out.extend(domain_suffixes(domain).map(|d| (d, "")));
        }
    }
    if !base.is_empty() {
        out.push((base, "@"));
    }
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> AccessMap {
        match AccessMap::parse(text, "access.cf") {
            Ok((m, _)) => m,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn err(text: &str) -> AccessError {
        match AccessMap::parse(text, "access.cf") {
            Ok(_) => panic!("expected an error for {text:?}"),
            Err(e) => e,
        }
    }

    fn warnings(text: &str) -> Vec<Warning> {
        AccessMap::parse(text, "access.cf").map(|(_, w)| w).unwrap_or_else(|e| panic!("unexpected error: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn client<'a>(m: &'a AccessMap, addr: &str, ptr: Option<&str>) -> Option<Hit<'a>> {
        m.lookup_client(Tag::Connect, ip(addr), ptr)
    }

    fn key_of(hit: Option<Hit<'_>>) -> Option<&str> {
        hit.map(|h| h.key)
    }

    #[test]
    fn every_tag_is_looked_up() {
        let m = map("Connect:192.0.2.1 OK\n\
                     Helo:mx.example.com REJECT\n\
                     From:a@example.com TEMPFAIL\n\
                     To:b@example.net DISCARD\n\
                     Connect:192.0.2.1:From:a@example.com IREJECT\n\
                     Connect:192.0.2.1:To:b@example.net OK\n\
                     From:a@example.com:To:b@example.net REJECT\n\
                     Grey-Connect:192.0.2.1 300\n\
                     Grey-To:b@example.net 0\n");
        assert_eq!(m.len(), 9);
        for tag in Tag::ALL {
            assert_eq!(m.count(tag), 1, "{tag}");
        }
        let c = ip("192.0.2.1");
        assert_eq!(m.lookup_client(Tag::Connect, c, None).unwrap().action, Action::Ok);
        assert_eq!(m.lookup_helo("mx.example.com").unwrap().action, Action::Reject);
        assert_eq!(m.lookup_mail(Tag::From, "<a@example.com>").unwrap().action, Action::TempFail);
        assert_eq!(m.lookup_mail(Tag::To, "b@example.net").unwrap().action, Action::Discard);
        assert_eq!(m.lookup_client_mail(Tag::ConnectFrom, c, None, "a@example.com").unwrap().action, Action::IReject);
        assert_eq!(m.lookup_client_mail(Tag::ConnectTo, c, None, "b@example.net").unwrap().action, Action::Ok);
        assert_eq!(m.lookup_from_to("a@example.com", "b@example.net").unwrap().action, Action::Reject);
        assert_eq!(m.lookup_client(Tag::GreyConnect, c, None).unwrap().action, Action::Seconds(300));
        assert_eq!(m.lookup_mail(Tag::GreyTo, "b@example.net").unwrap().action, Action::Seconds(0));
        // Tags a lookup does not serve give nothing rather than a wrong answer.
        assert!(m.lookup_client(Tag::From, c, None).is_none());
        assert!(m.lookup_mail(Tag::Connect, "a@example.com").is_none());
        assert!(m.lookup_client_mail(Tag::FromTo, c, None, "a@example.com").is_none());
        assert!(m.lookup_from_to("b@example.net", "a@example.com").is_none());
    }

    #[test]
    fn tags_and_actions_are_case_insensitive_values_are_not() {
        let m = map("CONNECT:192.0.2.1 ok:\"Hello There\"\nfrom:User@Example.COM Reject\n");
        let hit = client(&m, "192.0.2.1", None).unwrap();
        assert_eq!((hit.key, hit.action, hit.message), ("connect:192.0.2.1", Action::Ok, Some("Hello There")));
        assert_eq!(hit.value, "ok:\"Hello There\"");
        let hit = m.lookup_mail(Tag::From, "<USER@example.com>").unwrap();
        assert_eq!((hit.key, hit.action), ("from:user@example.com", Action::Reject));
    }

    #[test]
    fn ipv4_reduction_steps() {
        for (key, expect) in [
            ("Connect:192.0.2.1", "connect:192.0.2.1"),
            ("Connect:192.0.2", "connect:192.0.2"),
            ("Connect:192.0", "connect:192.0"),
            ("Connect:192", "connect:192"),
        ] {
            let m = map(&format!("{key} REJECT\nConnect:198.51.100 OK\n"));
            assert_eq!(key_of(client(&m, "192.0.2.1", None)), Some(expect), "{key}");
            assert!(client(&m, "203.0.113.1", None).is_none());
        }
        // Leading zeros in a key are the same octets.
        let m = map("Connect:192.000.002 REJECT\n");
        assert_eq!(key_of(client(&m, "192.0.2.77", None)), Some("connect:192.0.2"));
    }

    #[test]
    fn first_key_found_wins() {
        let m = map("Connect:192.0.2 REJECT\nConnect:192.0.2.1 OK\nConnect:192 TEMPFAIL\nConnect: DISCARD\n");
        assert_eq!(client(&m, "192.0.2.1", None).unwrap().action, Action::Ok);
        assert_eq!(client(&m, "192.0.2.2", None).unwrap().action, Action::Reject);
        assert_eq!(client(&m, "192.9.9.9", None).unwrap().action, Action::TempFail);
        let hit = client(&m, "10.0.0.1", None).unwrap();
        assert_eq!((hit.key, hit.action, hit.line), ("connect:", Action::Discard, 4));
    }

    #[test]
    fn ipv6_compressed_and_full_forms_are_the_same_key() {
        for key in ["2001:db8::1", "2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8:0:0:0:0:0:1", "[IPv6:2001:db8::1]"] {
            let m = map(&format!("Connect:{key} OK\n"));
            assert_eq!(key_of(client(&m, "2001:db8::1", None)), Some("connect:2001:db8:0:0:0:0:0:1"), "{key}");
            assert_eq!(key_of(client(&m, "2001:0db8:0:0::1", None)), Some("connect:2001:db8:0:0:0:0:0:1"));
            assert!(client(&m, "2001:db8::2", None).is_none());
        }
        let w = warnings("Connect:2001:db8::1 OK\nConnect:2001:0DB8:0:0:0:0:0:1 REJECT\n");
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].line, 2);
        assert!(w[0].message.contains("first defined at line 1"), "{}", w[0]);
    }

    #[test]
    fn ipv6_reduction_by_groups() {
        let m = map("Connect:2001:0DB8:0:0 REJECT\nConnect:2001:db8:0:0:0:0:1234 OK\nConnect:2001 TEMPFAIL\n");
        assert_eq!(key_of(client(&m, "2001:db8::1234:5678", None)), Some("connect:2001:db8:0:0:0:0:1234"));
        assert_eq!(key_of(client(&m, "2001:db8::5", None)), Some("connect:2001:db8:0:0"));
        assert_eq!(key_of(client(&m, "2001:db9::5", None)), Some("connect:2001"));
        assert!(client(&m, "2002::1", None).is_none());
    }

    #[test]
    fn ipv4_mapped_clients_use_ipv4_keys() {
        let m = map("Connect:192.0.2 REJECT\nConnect:::ffff:198.51.100.7 OK\nConnect:::ffff:203.0.113.0/120 TEMPFAIL\n");
        assert_eq!(key_of(client(&m, "::ffff:192.0.2.9", None)), Some("connect:192.0.2"));
        assert_eq!(key_of(client(&m, "198.51.100.7", None)), Some("connect:198.51.100.7"));
        assert_eq!(key_of(client(&m, "203.0.113.9", None)), Some("connect:203.0.113.0/24"));
    }

    #[test]
    fn cidr_longest_prefix_after_exact_keys() {
        let m = map("Connect:10.0.0.0/8 REJECT\n\
                     Connect:10.1.0.0/16 TEMPFAIL\n\
                     Connect:10.1.2.0/24 OK\n\
                     Connect:10.1.2.128/25 DISCARD\n\
                     Connect:10.9 CONTENT\n\
                     Connect:2001:db8::/32 REJECT\n\
                     Connect:2001:db8:1::/48 OK\n");
        assert_eq!(key_of(client(&m, "10.1.2.3", None)), Some("connect:10.1.2.0/24"));
        assert_eq!(key_of(client(&m, "10.1.2.200", None)), Some("connect:10.1.2.128/25"));
        assert_eq!(key_of(client(&m, "10.1.3.3", None)), Some("connect:10.1.0.0/16"));
        assert_eq!(key_of(client(&m, "10.2.3.3", None)), Some("connect:10.0.0.0/8"));
        // An octet key comes before any CIDR key, however long.
        assert_eq!(key_of(client(&m, "10.9.0.1", None)), Some("connect:10.9"));
        assert_eq!(key_of(client(&m, "2001:db8:1::9", None)), Some("connect:2001:db8:1::/48"));
        assert_eq!(key_of(client(&m, "2001:db8:2::9", None)), Some("connect:2001:db8::/32"));
        assert!(client(&m, "11.0.0.1", None).is_none());
        // Host bits are cleared, and /0 matches everything of its family.
        let m = map("Connect:192.0.2.77/24 OK\nConnect:0.0.0.0/0 REJECT\n");
        assert_eq!(key_of(client(&m, "192.0.2.1", None)), Some("connect:192.0.2.0/24"));
        assert_eq!(key_of(client(&m, "8.8.8.8", None)), Some("connect:0.0.0.0/0"));
        assert!(client(&m, "2001:db8::1", None).is_none());
    }

    #[test]
    fn cidr_comes_before_ptr_name() {
        let m = map("Connect:192.0.2.0/24 OK\nConnect:example.com REJECT\n");
        assert_eq!(key_of(client(&m, "192.0.2.1", Some("mail.example.com"))), Some("connect:192.0.2.0/24"));
        assert_eq!(key_of(client(&m, "192.0.3.1", Some("mail.example.com"))), Some("connect:example.com"));
    }

    #[test]
    fn ptr_domain_suffix_order() {
        let m = map("Connect:example.com REJECT\nConnect:mail.example.com OK\nConnect:net TEMPFAIL\nConnect: DISCARD\n");
        assert_eq!(key_of(client(&m, "192.0.2.1", Some("Mail.Example.COM."))), Some("connect:mail.example.com"));
        assert_eq!(key_of(client(&m, "192.0.2.1", Some("a.b.example.com"))), Some("connect:example.com"));
        assert_eq!(key_of(client(&m, "192.0.2.1", Some("host.example.net"))), Some("connect:net"));
        assert_eq!(key_of(client(&m, "192.0.2.1", Some("host.example.org"))), Some("connect:"));
        // No verified name: straight from the IP keys to the bare tag (smtpf tries no [ip] key).
        assert_eq!(key_of(client(&m, "192.0.2.1", None)), Some("connect:"));
        assert_eq!(key_of(client(&m, "192.0.2.1", Some(""))), Some("connect:"));
    }

    #[test]
    fn ip_keys_come_before_name_keys() {
        let m = map("Connect:example.com REJECT\nConnect:192.0.2 OK\n");
        assert_eq!(client(&m, "192.0.2.1", Some("mx.example.com")).unwrap().action, Action::Ok);
        assert_eq!(client(&m, "192.0.3.1", Some("mx.example.com")).unwrap().action, Action::Reject);
    }

    #[test]
    fn bare_tag_is_the_default() {
        let m = map("Connect: TEMPFAIL\nFrom: REJECT\nTo:postmaster@ OK\n");
        assert_eq!(key_of(client(&m, "203.0.113.5", Some("x.example"))), Some("connect:"));
        assert_eq!(key_of(m.lookup_mail(Tag::From, "someone@example.org")), Some("from:"));
        assert!(m.lookup_mail(Tag::To, "someone@example.org").is_none());
        // Without bare keys nothing is found.
        let m = map("Connect:192.0.2.1 OK\n");
        assert!(client(&m, "192.0.2.2", Some("x.example")).is_none());
    }

    #[test]
    fn mail_lookup_order() {
        let keys = [
            "From:user+tag@sub.example.com",
            "From:user@sub.example.com",
            "From:sub.example.com",
            "From:example.com",
            "From:com",
            "From:user@",
            "From:",
        ];
        for skip in 0..keys.len() {
            let text: String = keys[skip..].iter().map(|k| format!("{k} OK\n")).collect();
            let m = map(&text);
            let want = keys[skip].to_lowercase();
            assert_eq!(key_of(m.lookup_mail(Tag::From, "<User+Tag@Sub.Example.com>")), Some(want.as_str()));
        }
        // Without a detail, the exact address is the only address key; local@ still comes last.
        let m = map("From:user@ REJECT\nFrom:example.com OK\nFrom:user@example.com TEMPFAIL\n");
        assert_eq!(key_of(m.lookup_mail(Tag::From, "user@example.com")), Some("from:user@example.com"));
        assert_eq!(key_of(m.lookup_mail(Tag::From, "user@mx.example.com")), Some("from:example.com"));
        assert_eq!(key_of(m.lookup_mail(Tag::From, "user+x@example.org")), Some("from:user@"));
        assert!(m.lookup_mail(Tag::From, "other@example.org").is_none());
        // An address without a domain (RCPT TO:<postmaster>) tries local@.
        let m = map("To:postmaster@ OK\nTo:abuse@ OK\n");
        assert_eq!(key_of(m.lookup_mail(Tag::To, "<Postmaster>")), Some("to:postmaster@"));
        assert_eq!(key_of(m.lookup_mail(Tag::To, "abuse@example.com")), Some("to:abuse@"));
        // Source routes are dropped; address literals are not split into labels.
        let m = map("To:[192.0.2.1] REJECT\n");
        assert_eq!(key_of(m.lookup_mail(Tag::To, "<@relay.example:user@[192.0.2.1]>")), Some("to:[192.0.2.1]"));
    }

    #[test]
    fn null_sender() {
        let m = map("From:<> OK\nFrom: REJECT\n");
        assert_eq!(key_of(m.lookup_mail(Tag::From, "<>")), Some("from:<>"));
        assert_eq!(key_of(m.lookup_mail(Tag::From, "")), Some("from:<>"));
        assert_eq!(key_of(m.lookup_mail(Tag::From, "a@b.example")), Some("from:"));
        let m = map("From: REJECT\nFrom:example.com OK\n");
        assert_eq!(key_of(m.lookup_mail(Tag::From, "<>")), Some("from:"));
        // Keys written with angle brackets are the plain address.
        let m = map("From:<a@b.example> OK\n");
        assert_eq!(key_of(m.lookup_mail(Tag::From, "a@b.example")), Some("from:a@b.example"));
    }

    #[test]
    fn connect_mail_combos() {
        let m = map("Connect:192.0.2:From:example.com OK\n\
                     Connect:192.0.2.1:From:user@ REJECT\n\
                     Connect:mx.example.net:From:<> TEMPFAIL\n\
                     Connect:example.net:To:postmaster@example.org DISCARD\n\
                     Connect:2001:db8:0:0:From:example.com IREJECT\n");
        let c = ip("192.0.2.1");
        // IP reductions outside, address reductions inside: 192.0.2.1 x all before 192.0.2 x all.
        assert_eq!(
            key_of(m.lookup_client_mail(Tag::ConnectFrom, c, None, "user@example.com")),
            Some("connect:192.0.2.1:from:user@")
        );
        assert_eq!(
            key_of(m.lookup_client_mail(Tag::ConnectFrom, ip("192.0.2.2"), None, "user@a.example.com")),
            Some("connect:192.0.2:from:example.com")
        );
        assert!(m.lookup_client_mail(Tag::ConnectFrom, ip("192.0.2.2"), None, "user@example.org").is_none());
        assert_eq!(
            key_of(m.lookup_client_mail(Tag::ConnectFrom, ip("203.0.113.1"), Some("mx.example.net"), "<>")),
            Some("connect:mx.example.net:from:<>")
        );
        // Name combos only with a name.
        assert!(m.lookup_client_mail(Tag::ConnectFrom, ip("203.0.113.1"), None, "<>").is_none());
        assert_eq!(
            key_of(m.lookup_client_mail(Tag::ConnectTo, ip("203.0.113.1"), Some("a.mx.example.net"), "Postmaster@example.org")),
            Some("connect:example.net:to:postmaster@example.org")
        );
        // The tags are distinct: a Connect:From: key does not answer Connect:To:.
        assert!(m.lookup_client_mail(Tag::ConnectTo, c, None, "user@example.com").is_none());
        assert_eq!(
            key_of(m.lookup_client_mail(Tag::ConnectFrom, ip("2001:db8::7"), None, "x@example.com")),
            Some("connect:2001:db8:0:0:from:example.com")
        );
        // No bare forms: Connect:From: keys never turn up for Connect: lookups and vice versa.
        assert!(client(&m, "192.0.2.1", None).is_none());
    }

    #[test]
    fn from_to_combo() {
        let m = map("From:a@example.com:To:example.org OK\nFrom:example.com:To:b@example.org REJECT\nFrom:<>:To:list@ DISCARD\n");
        assert_eq!(key_of(m.lookup_from_to("a@example.com", "b@example.org")), Some("from:a@example.com:to:example.org"));
        assert_eq!(key_of(m.lookup_from_to("c@example.com", "b@example.org")), Some("from:example.com:to:b@example.org"));
        assert_eq!(key_of(m.lookup_from_to("<>", "list@lists.example")), Some("from:<>:to:list@"));
        assert!(m.lookup_from_to("c@example.com", "c@example.org").is_none());
    }

    #[test]
    fn helo_lookups() {
        let m = map("Helo:example.com REJECT\n\
                     Helo:192.0.2 TEMPFAIL\n\
                     Helo:[198.51.100.1] DISCARD\n\
                     Helo:2001:db8:0:0:0:0:0:1 OK\n\
                     Helo:203.0.113.0/24 CONTENT\n\
                     Helo:localhost IREJECT\n");
        assert_eq!(key_of(m.lookup_helo("MX.Example.com")), Some("helo:example.com"));
        assert_eq!(key_of(m.lookup_helo("[192.0.2.9]")), Some("helo:192.0.2"));
        assert_eq!(key_of(m.lookup_helo("192.0.2.9")), Some("helo:192.0.2"));
        assert_eq!(key_of(m.lookup_helo("[198.51.100.1]")), Some("helo:198.51.100.1"));
        assert_eq!(key_of(m.lookup_helo("[IPv6:2001:db8::1]")), Some("helo:2001:db8:0:0:0:0:0:1"));
        assert_eq!(key_of(m.lookup_helo("[203.0.113.9]")), Some("helo:203.0.113.0/24"));
        assert_eq!(key_of(m.lookup_helo("localhost")), Some("helo:localhost"));
        assert!(m.lookup_helo("mail.example.org").is_none());
        assert!(m.lookup_helo("[not-an-ip]").is_none());
        let m = map("Helo: OK\n");
        assert_eq!(key_of(m.lookup_helo("anything")), Some("helo:"));
    }

    #[test]
    fn glob_patterns() {
        let m = map("Connect:example.com !*.dyn.example.com!REJECT !mx?.example.com!OK\n\
                     Connect: !*.dsl.*!TEMPFAIL !192.0.2.*!DISCARD\n");
        let hit = client(&m, "203.0.113.1", Some("host-1.dyn.example.com")).unwrap();
        assert_eq!((hit.key, hit.action), ("connect:example.com", Action::Reject));
        assert_eq!(client(&m, "203.0.113.1", Some("MX1.example.com")).unwrap().action, Action::Ok);
        // No match, no default: found, but no decision.
        let hit = client(&m, "203.0.113.1", Some("mx10.example.com")).unwrap();
        assert_eq!((hit.key, hit.action, hit.message), ("connect:example.com", Action::Continue, None));
        // Bare tag: name first, then the IP.
        assert_eq!(client(&m, "203.0.113.1", Some("a.dsl.example.net")).unwrap().action, Action::TempFail);
        assert_eq!(client(&m, "192.0.2.5", Some("a.example.net")).unwrap().action, Action::Discard);
        assert_eq!(client(&m, "192.0.2.5", None).unwrap().action, Action::Discard);
        // With a default.
        let m = map("From:example.com !*+*@example.com!REJECT OK\n");
        assert_eq!(m.lookup_mail(Tag::From, "a+b@example.com").unwrap().action, Action::Reject);
        assert_eq!(m.lookup_mail(Tag::From, "ab@example.com").unwrap().action, Action::Ok);
    }

    #[test]
    fn glob_matcher() {
        let g = |p: &str, s: &str| glob_match(&compile_glob(p), s);
        assert!(g("abc", "abc"));
        assert!(!g("abc", "abcd"));
        assert!(!g("abc", "xabc"));
        assert!(g("abc*", "abcdef"));
        assert!(g("*abc", "xxabc"));
        assert!(g("abc*def", "abc-x-def"));
        assert!(g("*abc*def*", "zabcxdefz"));
        assert!(!g("*abc*def*", "zdefxabcz"));
        assert!(g("a?c", "abc"));
        assert!(g("a?c", "aéc"));
        assert!(!g("a?c", "ac"));
        assert!(g("*", ""));
        assert!(g("", ""));
        assert!(!g("", "a"));
        assert!(g("a\\*c", "a*c"));
        assert!(!g("a\\*c", "abc"));
        assert!(g("ABC", "abc"));
        assert!(g("**a**", "a"));
        assert!(!g(&"*a".repeat(30), &"a".repeat(29)));
    }

    #[test]
    fn escaped_delimiters() {
        let m = map("To:example.com !a\\!b@*!REJECT /^c\\/d@/DISCARD\n");
        assert_eq!(m.lookup_mail(Tag::To, "a!b@example.com").unwrap().action, Action::Reject);
        assert_eq!(m.lookup_mail(Tag::To, "c/d@example.com").unwrap().action, Action::Discard);
    }

    #[test]
    fn network_patterns() {
        let m = map("Connect:example.com [192.0.2.0/24]OK [2001:db8::/32]DISCARD [198.51.100.7]TEMPFAIL REJECT\n");
        assert_eq!(client(&m, "192.0.2.200", Some("mx.example.com")).unwrap().action, Action::Ok);
        assert_eq!(client(&m, "2001:db8::25", Some("mx.example.com")).unwrap().action, Action::Discard);
        assert_eq!(client(&m, "198.51.100.7", Some("mx.example.com")).unwrap().action, Action::TempFail);
        assert_eq!(client(&m, "198.51.100.8", Some("mx.example.com")).unwrap().action, Action::Reject);
        // Without a default the non-matching address gives no decision.
        let m = map("Connect:192.0.2 [192.0.2.128/25]REJECT\n");
        assert_eq!(client(&m, "192.0.2.200", None).unwrap().action, Action::Reject);
        assert_eq!(client(&m, "192.0.2.1", None).unwrap().action, Action::Continue);
        // A network never matches an address lookup's subject.
        let m = map("From:example.com [0.0.0.0/0]REJECT OK\n");
        assert_eq!(m.lookup_mail(Tag::From, "a@example.com").unwrap().action, Action::Ok);
    }

    #[test]
    fn ip_key_patterns_see_the_ip_only() {
        let m = map("Connect:192.0.2 !*.example.com!REJECT !192.0.2.1?!OK\n");
        assert_eq!(client(&m, "192.0.2.1", Some("mx.example.com")).unwrap().action, Action::Continue);
        assert_eq!(client(&m, "192.0.2.15", Some("mx.example.com")).unwrap().action, Action::Ok);
    }

    #[test]
    fn regex_patterns() {
        let m = map("Connect:example.com /^mail[0-9]+\\./DISCARD /\\.dyn\\./REJECT\n");
        assert_eq!(client(&m, "203.0.113.1", Some("Mail12.example.com")).unwrap().action, Action::Discard);
        assert_eq!(client(&m, "203.0.113.1", Some("a.dyn.example.com")).unwrap().action, Action::Reject);
        assert_eq!(client(&m, "203.0.113.1", Some("www.example.com")).unwrap().action, Action::Continue);
        let m = map("To:example.com /^(abuse|postmaster)@/OK REJECT:\"no such user\"\n");
        assert_eq!(m.lookup_mail(Tag::To, "Abuse@example.com").unwrap().action, Action::Ok);
        let hit = m.lookup_mail(Tag::To, "x@example.com").unwrap();
        assert_eq!((hit.action, hit.message), (Action::Reject, Some("no such user")));
    }

    #[test]
    fn empty_action_after_a_pattern_decides_nothing() {
        let m = map("Connect: !*.example.com! REJECT\n");
        assert_eq!(client(&m, "192.0.2.1", Some("a.example.com")).unwrap().action, Action::Continue);
        assert_eq!(client(&m, "192.0.2.1", Some("a.example.org")).unwrap().action, Action::Reject);
    }

    #[test]
    fn messages_in_every_form() {
        for value in ["REJECT:\"go away\"", "REJECT:go away", "REJECT \"go away\"", "REJECT go away", "reject:  \"go away\"  "] {
            let m = map(&format!("From:example.com {value}\n"));
            let hit = m.lookup_mail(Tag::From, "a@example.com").unwrap();
            assert_eq!((hit.action, hit.message, hit.text()), (Action::Reject, Some("go away"), "go away"), "{value}");
        }
        let m = map("From:a.example !x@*!REJECT:\"go away now\" !y@*!TEMPFAIL:later OK:\"fine by us\"\nFrom:b.example REJECT:\n");
        let hit = m.lookup_mail(Tag::From, "x@a.example").unwrap();
        assert_eq!((hit.action, hit.message), (Action::Reject, Some("go away now")));
        let hit = m.lookup_mail(Tag::From, "y@a.example").unwrap();
        assert_eq!((hit.action, hit.message), (Action::TempFail, Some("later")));
        let hit = m.lookup_mail(Tag::From, "z@a.example").unwrap();
        assert_eq!((hit.action, hit.message), (Action::Ok, Some("fine by us")));
        // An empty message is no message; the text falls back to smtpf's defaults.
        let hit = m.lookup_mail(Tag::From, "z@b.example").unwrap();
        assert_eq!((hit.message, hit.text()), (None, "black listed"));
        assert_eq!(Action::Ok.default_text(), "white listed");
        assert_eq!(Action::TempFail.default_text(), "temporary failure");
        assert_eq!(Action::Discard.default_text(), "discard");
        // Quoted messages glued to a pattern must be closed.
        let e = err("From:a.example !x@*!REJECT:\"go away\n");
        assert_eq!((e.line, e.num), (1, None));
    }

    #[test]
    fn action_words() {
        let words = [
            ("OK", Action::Ok),
            ("REJECT", Action::Reject),
            ("IREJECT", Action::IReject),
            ("TEMPFAIL", Action::TempFail),
            ("DISCARD", Action::Discard),
            ("CONTINUE", Action::Continue),
            ("DUNNO", Action::Continue),
            ("SKIP", Action::Continue),
            ("CONTENT", Action::Content),
            ("tempfail", Action::TempFail),
        ];
        for (word, action) in words {
            let m = map(&format!("To:example.com {word}\n"));
            assert_eq!(m.lookup_mail(Tag::To, "a@example.com").unwrap().action, action, "{word}");
        }
        let w = warnings("To:example.com NEXT\n");
        assert_eq!(w.len(), 1);
        assert!(w[0].message.contains("NEXT"));
        let e = err("# header\nTo:example.com REJECTED\n");
        assert_eq!((e.line, e.num), (2, None));
        assert_eq!(e.to_string(), "access.cf:2: unknown action \"REJECTED\"");
        assert_eq!(e.number(), 117);
        let e = err("To:example.com SAVE\n");
        assert!(e.message.contains("not supported"), "{e}");
        let e = err("To:example.com 300\n");
        assert!(e.message.contains("Grey-Connect:"), "{e}");
        let e = err("To:example.com !x!BOGUS\n");
        assert!(e.message.contains("BOGUS"), "{e}");
        let e = err("To:example.com :\"just a message\"\n");
        assert!(e.message.contains("missing action"), "{e}");
    }

    #[test]
    fn grey_values() {
        let m = map("Grey-Connect:192.0.2.1  300\nGrey-Connect:example.com SKIP\nGrey-Connect: 900\n\
                     Grey-To:user@example.com 0\nGrey-To:example.org !*@list.example.org!0 60\n");
        let g = |a: &str, p: Option<&str>| m.lookup_client(Tag::GreyConnect, ip(a), p).map(|h| h.action);
        assert_eq!(g("192.0.2.1", None), Some(Action::Seconds(300)));
        assert_eq!(g("192.0.2.2", Some("mx.example.com")), Some(Action::Seconds(0)));
        assert_eq!(g("192.0.2.2", None), Some(Action::Seconds(900)));
        let t = |a: &str| m.lookup_mail(Tag::GreyTo, a).map(|h| h.action);
        assert_eq!(t("user@example.com"), Some(Action::Seconds(0)));
        assert_eq!(t("x@list.example.org"), Some(Action::Seconds(0)));
        assert_eq!(t("x@example.org"), Some(Action::Seconds(60)));
        assert_eq!(t("x@example.net"), None);
        // Grey keys are separate from Connect: keys.
        assert!(client(&m, "192.0.2.1", None).is_none());
        assert_eq!(Action::Seconds(300).to_string(), "300");
        let e = err("\nGrey-Connect:192.0.2.1 REJECT\n");
        assert_eq!((e.line, e.num), (2, None));
        assert!(err("Grey-To:a@b.example 99999999999\n").message.contains("too large"));
        assert!(err("Grey-To:a@b.example -5\n").message.contains("not a number"));
    }

    #[test]
    fn comments_blank_lines_and_crlf() {
        let text = "# a comment\r\n\r\n   # indented comment\r\n\t\r\nConnect:192.0.2.1\tOK:\"hi there\"\r\n  Connect:192.0.2.2 REJECT  \r\n";
        let (m, w) = AccessMap::parse(text, "access.cf").unwrap();
        assert!(w.is_empty());
        assert_eq!(m.len(), 2);
        let hit = client(&m, "192.0.2.1", None).unwrap();
        assert_eq!((hit.message, hit.line, hit.value), (Some("hi there"), 5, "OK:\"hi there\""));
        let hit = client(&m, "192.0.2.2", None).unwrap();
        assert_eq!((hit.action, hit.line, hit.value), (Action::Reject, 6, "REJECT"));
        // A byte-order mark is not part of the first key.
        let m = map("\u{feff}Connect:192.0.2.3 OK\n");
        assert!(client(&m, "192.0.2.3", None).is_some());
        // An error line number counts comment and blank lines.
        let e = err("# one\r\n\r\nConnect:192.0.2.1 [192.0.2.0/24OK\r\n");
        assert_eq!((e.line, e.num), (3, Some(103)));
    }

    #[test]
    fn pattern_error_numbers_and_lines() {
        let cases: [(&str, u16, &str); 9] = [
            ("Connect: !*.example.com REJECT", 100, "pattern delimiter error: \"!*.example.com REJECT...\""),
            ("Connect: [192.0.2.0/24OK", 103, "network delimiter error: \"[192.0.2.0/24OK...\""),
            ("Connect: [192.0.2.300/24]OK", 105, "network specifier error: \"[192.0.2.300/24]OK...\""),
            ("Connect: []OK", 105, "network specifier error: \"[]OK...\""),
            ("Connect: [192.0.2.0/33]OK", 106, "network specifier error, \"[192.0.2.0/33]OK...\""),
            ("Connect: [192.0.2.0/x]OK", 106, "network specifier error, \"[192.0.2.0/x]OK...\""),
            ("Connect: [2001:db8::/129]OK", 106, "network specifier error, \"[2001:db8::/129]OK...\""),
            ("Connect: /^mail[0-9]+DISCARD", 108, "regular expression delimiter error: \"/^mail[0-9]+DISCARD...\""),
            ("Connect: /(abc/DISCARD", 110, "regular expression error: unclosed group \"/(abc/DISCARD...\""),
        ];
        for (i, (line, num, message)) in cases.iter().enumerate() {
            let text = format!("{}{line}\n", "# filler\n".repeat(i + 1));
            let e = err(&text);
            assert_eq!((e.line, e.num, e.message.as_str()), (i + 2, Some(*num), *message), "{line}");
            assert_eq!(e.to_string(), format!("access.cf:{}: #{num} {message}", i + 2));
            assert_eq!(e.number(), *num);
        }
        // The quoted text is cut at 50 characters, as smtpf's %.50s.
        let long = format!("Connect: !{}", "a".repeat(80));
        let e = err(&long);
        assert_eq!(e.message, format!("pattern delimiter error: \"!{}...\"", "a".repeat(49)));
        // A pattern cannot span whitespace.
        assert_eq!(err("Connect: !foo bar!OK\n").num, Some(100));
    }

    #[test]
    fn key_errors() {
        let e = err("Connect:192.0.2.1\n");
        assert_eq!((e.line, e.num), (1, None));
        assert!(e.message.contains("no value"), "{e}");
        assert!(err("Connect:192.0.2.300 OK\n").message.contains("IPv4"));
        assert!(err("Connect:1.2.3.4.5 OK\n").message.contains("IPv4"));
        assert!(err("Connect:2001:db8::1::2 OK\n").message.contains("IPv6"));
        assert!(err("Connect:2001:gggg OK\n").message.contains("IPv6"));
        assert_eq!(err("Connect:192.0.2.0/40 OK\n").num, Some(106));
        assert_eq!(err("Connect:192.0.2.x/24 OK\n").num, Some(105));
        assert!(err("From:192.0.2.0/24 OK\n").message.contains("CIDR"));
        assert!(err("Connect:192.0.2.0/24:From:a@b.example OK\n").message.contains("CIDR"));
        assert!(err("Connect::From:a@b.example OK\n").message.contains("both parts"));
        assert!(err("From:a@b.example:To: OK\n").message.contains("both parts"));
        assert!(err("From:@example.com OK\n").message.contains("local part"));
        assert!(err("Connect:. OK\n").message.contains("host name"));
    }

    #[test]
    fn unsupported_and_untagged_keys_are_warnings() {
        let text = "Rate-Connect:192.0.2.1 10\nConnect:192.0.2.1 OK\nrate-connect: 100\nbody:example.com OK\n192.0.2.9 REJECT\n";
        let (m, w) = AccessMap::parse(text, "access.cf").unwrap();
        assert_eq!(m.len(), 1);
        let lines: Vec<usize> = w.iter().map(|w| w.line).collect();
        assert_eq!(lines, [1, 4, 5]);
        assert!(w[0].message.contains("rate-connect:") && w[0].message.contains("2 lines"), "{}", w[0]);
        assert_eq!(w[2].to_string(), "access.cf:5: key \"192.0.2.9\" has no tag (such as Connect:), line ignored");
    }

    #[test]
    fn duplicates_keep_the_first() {
        let text = "Connect:192.0.2.1 OK\nconnect:192.0.2.1 REJECT\nFrom:A@example.com OK\nFrom:a@Example.com. REJECT\nConnect:10.0.0.0/8 OK\nConnect:10.1.2.3/8 REJECT\n";
        let (m, w) = AccessMap::parse(text, "access.cf").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(w.iter().map(|w| w.line).collect::<Vec<_>>(), [2, 4, 6]);
        assert_eq!(client(&m, "192.0.2.1", None).unwrap().action, Action::Ok);
        assert_eq!(m.lookup_mail(Tag::From, "a@example.com").unwrap().action, Action::Ok);
        assert_eq!(client(&m, "10.9.9.9", None).unwrap().action, Action::Ok);
    }

    #[test]
    fn open_error() {
        let e = AccessMap::load("/nonexistent-dir/access.cf").unwrap_err();
        assert_eq!((e.line, e.num, e.number()), (0, Some(117), 117));
        assert!(e.to_string().starts_with("#117 access-map=/nonexistent-dir/access.cf open error: "), "{e}");
    }

    #[test]
    fn load_reads_a_file() {
        let path = std::env::temp_dir().join(format!("access-map-test-{}.cf", std::process::id()));
        std::fs::write(&path, b"# caf\xe9 (Latin-1 comment)\nConnect:192.0.2.1 OK\n").unwrap();
        let loaded = AccessMap::load(&path);
        let _ = std::fs::remove_file(&path);
        let (m, w) = loaded.unwrap();
        assert!(w.is_empty());
        assert_eq!(client(&m, "192.0.2.1", None).unwrap().action, Action::Ok);
    }

    #[test]
    fn empty_map() {
        let m = AccessMap::default();
        assert!(m.is_empty());
        assert!(client(&m, "192.0.2.1", Some("x.example")).is_none());
        assert!(m.lookup_helo("x.example").is_none());
        assert!(m.lookup_mail(Tag::From, "<>").is_none());
        assert!(m.lookup_from_to("a@b.example", "c@d.example").is_none());
        let (m, w) = AccessMap::parse("", "access.cf").unwrap();
        assert!(m.is_empty() && w.is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let junk = [
            "Connect:",
            "Connect: ",
            ":",
            "::",
            "Connect::: OK",
            "Connect:[ OK",
            "Connect:[] OK",
            "Connect:[/] OK",
            "Connect:/ OK",
            "Connect:/0 OK",
            "Connect:1:2:3:4:5:6:7:8:9 OK",
            "From:<> <>",
            "From:<",
            "From:<<>> OK",
            "To:@ OK",
            "To:a@ !",
            "To:a@ [",
            "To:a@ /",
            "To:a@ !!",
            "To:a@ []",
            "To:a@ //",
            "To:a@ !x!:",
            "To:a@ !x!:\"",
            "To:a@ !x!OK:\"\"",
            "To:a@ OK:",
            "To:a@ \"",
            "Connect:é.example ÉOK",
            "Connect:é OK:é",
            "Grey-To: !",
            "Grey-To: :",
            "Grey-To: /x/:",
            "Connect: [::ffff:1.2.3.4/200]OK",
            "Connect: [ipv6:]OK",
            "Connect: /\\/OK",
            "Connect: !\\!OK",
            "Connect: [\\]OK",
            "From:a:to:b:to:c OK",
            "Connect:1.2.3.4:from:a:to:b OK",
            "\u{0}\u{1} \u{2}",
            "Connect:ǅ.example OK",
            "Connect:İ OK",
        ];
        for line in junk {
            if let Ok((m, _)) = AccessMap::parse(line, "access.cf") {
                for addr in ["192.0.2.1", "2001:db8::1", "::ffff:1.2.3.4", "0.0.0.0", "::"] {
                    let _ = m.lookup_client(Tag::Connect, ip(addr), Some("é.İ.example"));
                    let _ = m.lookup_client_mail(Tag::ConnectFrom, ip(addr), Some("."), "<@:>");
                }
                for s in ["", "<>", "@", "[", "[]", "[ipv6:]", "a@", "@b", "a+@b", "+@b", "a@b.", ".", "..", "İ@İ", "<<a@b>>"] {
                    let _ = m.lookup_helo(s);
                    let _ = m.lookup_mail(Tag::From, s);
                    let _ = m.lookup_mail(Tag::GreyTo, s);
                    let _ = m.lookup_from_to(s, s);
                }
            }
        }
    }

    #[test]
    fn large_map_parses() {
        let mut text = String::with_capacity(4_000_000);
        for i in 0..100_000u32 {
            let [_, b, c, d] = i.to_be_bytes();
            match i % 4 {
                0 => text.push_str(&format!("Connect:10.{b}.{c}.{d} REJECT\n")),
                1 => text.push_str(&format!("From:user{i}@example.com OK\n")),
                2 => text.push_str(&format!("To:host{i}.example.net !*@mx.*!DISCARD TEMPFAIL:\"busy\"\n")),
                _ => text.push_str(&format!("Connect:172.{b}.{c}.0/24 OK\n")),
            }
        }
        let (m, w) = AccessMap::parse(&text, "big.cf").unwrap();
        assert!(!w.is_empty(), "the /24 keys repeat");
        assert!(m.len() > 75_000);
        assert_eq!(client(&m, "10.1.134.156", None).unwrap().action, Action::Reject);
        assert_eq!(m.lookup_mail(Tag::From, "user99997@example.com").unwrap().action, Action::Ok);
        assert_eq!(m.lookup_mail(Tag::To, "a@host99998.example.net").unwrap().action, Action::TempFail);
        assert_eq!(client(&m, "172.1.134.99", None).unwrap().key, "connect:172.1.134.0/24");
    }

    #[test]
    fn display_forms() {
        assert_eq!(Tag::ConnectFrom.to_string(), "Connect:From:");
        assert_eq!(Tag::GreyTo.label(), "Grey-To:");
        assert_eq!(Action::IReject.to_string(), "IREJECT");
        let w = Warning { file: "a.cf".into(), line: 3, message: "x".into() };
        assert_eq!(w.to_string(), "a.cf:3: x");
    }

    #[test]
    fn cidr_groups_stay_longest_first() {
        let mut index = CidrIndex::default();
        for net in ["10.0.0.0/8", "10.1.2.0/24", "10.1.0.0/16", "10.2.0.0/16", "0.0.0.0/0", "10.1.2.3/32", "2001:db8::/32"] {
            index.insert(net.parse().unwrap());
        }
        let lens: Vec<(u8, usize)> = index.v4.iter().map(|(l, set)| (*l, set.len())).collect();
        assert_eq!(lens, [(32, 1), (24, 1), (16, 2), (8, 1), (0, 1)]);
        assert_eq!(index.v6.len(), 1);
    }

    #[test]
    fn contrib_example_does_what_it_says() {
        let (m, _) = AccessMap::parse(include_str!("../../contrib/access.cf"), "access.cf").unwrap();
        let c = |a: &str, p: Option<&str>| client(&m, a, p).map(|h| (h.key, h.action));
        assert_eq!(c("192.0.2.9", None), Some(("connect:192.0.2", Action::Ok)));
        assert_eq!(c("198.51.100.3", None), Some(("connect:198.51.100.0/26", Action::Ok)));
        assert_eq!(c("198.51.100.99", None), None);
        assert_eq!(c("203.0.113.66", None), Some(("connect:203.0.113.66", Action::IReject)));
        assert_eq!(c("203.0.113.13", None), Some(("connect:203.0.113.13", Action::Discard)));
        assert_eq!(c("203.0.113.200", None), Some(("connect:203.0.113.128/25", Action::TempFail)));
        assert_eq!(c("203.0.113.20", Some("a1.dyn.isp.example")), Some(("connect:isp.example", Action::Reject)));
        assert_eq!(c("203.0.113.20", Some("dsl-10-2.isp.example")), Some(("connect:isp.example", Action::Reject)));
        assert_eq!(c("203.0.113.20", Some("smtp2.isp.example")), Some(("connect:isp.example", Action::Ok)));
        assert_eq!(c("203.0.113.20", Some("www.isp.example")), Some(("connect:isp.example", Action::Continue)));
        assert_eq!(c("2001:db8:2::25", None), Some(("connect:2001:db8:2", Action::Ok)));
        assert_eq!(c("2001:db8:2:1::25", None), Some(("connect:2001:db8:2", Action::Reject)));
        assert_eq!(c("2001:db8:2:2::25", None), Some(("connect:2001:db8:2", Action::Continue)));
        assert_eq!(c("2001:db8:1:5::1", None), Some(("connect:2001:db8:1::/48", Action::Ok)));
        assert_eq!(m.lookup_helo("[127.0.0.1]").unwrap().action, Action::Reject);
        let f = |a: &str| m.lookup_mail(Tag::From, a).map(|h| h.action);
        assert_eq!(f("x@spam-source.example"), Some(Action::Reject));
        assert_eq!(f("ceo@spam-source.example"), Some(Action::Continue));
        assert_eq!(f("a+b@mailer.example"), Some(Action::Reject));
        assert_eq!(f("ab@mailer.example"), Some(Action::Ok));
        assert_eq!(f("<>"), Some(Action::Continue));
        let t = |a: &str| m.lookup_mail(Tag::To, a).map(|h| h.action);
        assert_eq!(t("postmaster@anything.example"), Some(Action::Ok));
        assert_eq!(t("abuse@our-domain.example"), Some(Action::Ok));
        assert_eq!(t("trap@our-domain.example"), Some(Action::Discard));
        let cf = m.lookup_client_mail(Tag::ConnectFrom, ip("203.0.113.7"), Some("mx.partner.example"), "joe@partner.example");
        assert_eq!(cf.map(|h| h.action), Some(Action::Ok));
        let g = |a: &str, p: Option<&str>| m.lookup_client(Tag::GreyConnect, ip(a), p).map(|h| h.action);
        assert_eq!(g("203.0.113.7", None), Some(Action::Seconds(300)));
        assert_eq!(g("198.51.100.77", None), Some(Action::Seconds(0)));
        assert_eq!(g("203.0.113.7", Some("mx.partner.example")), Some(Action::Seconds(0)));
        assert_eq!(m.lookup_mail(Tag::GreyTo, "x@lists.our-domain.example").map(|h| h.action), Some(Action::Seconds(900)));
    }

    #[test]
    fn contrib_example_parses() {
        let (m, w) = AccessMap::parse(include_str!("../../contrib/access.cf"), "access.cf").unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert!(m.len() > 10);
        for tag in Tag::ALL {
            assert!(m.count(tag) > 0, "example has no {tag} entry");
        }
    }
}

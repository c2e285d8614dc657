//! The access-map in memory and the questions the checks ask it. [`AccessMap`] holds every entry
//! under its lower-case key, plus per tag an index of the CIDR keys by prefix length; each lookup
//! builds the candidate keys in smtpf's order (most specific first, the bare tag last), stops at
//! the first key found, and applies that entry's right-hand side: its single action, or its
//! pattern list matched against the client, HELO or address. Lookups borrow from the map and do
//! no I/O. The text of the file is the `syntax` module's business; it fills the index through
//! [`AccessMap::insert`].

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use regex::Regex;

use crate::checks::access::vocab::{Action, Hit, Tag};

/// The parsed access-map: an index from lower-case key to entry, plus per-tag CIDR indexes.
/// Immutable once built; a reload builds a new one and swaps it in.
#[derive(Debug, Default)]
pub struct AccessMap {
    index: HashMap<String, Entry>,
    cidr: Vec<(Tag, CidrIndex)>,
    counts: [usize; 9],
    /// Tags with an entry that can answer IREJECT (directly or through one of its patterns).
    irejects: [bool; 9],
}

/// One line of the map as the index keeps it: the parsed right-hand side for lookups, and the
/// text and line a [`Hit`] reports.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) value: String,
    pub(super) rhs: Rhs,
    pub(super) line: usize,
}

/// A parsed right-hand side: one decision, or a pattern list (boxed: rarer and larger).
#[derive(Debug)]
pub(super) enum Rhs {
    Single(Decision),
    List(Box<PatternList>),
}

impl Rhs {
    /// Whether this right-hand side can decide `action` (itself or in any of its patterns).
    fn can_answer(&self, action: Action) -> bool {
        match self {
            Rhs::Single(d) => d.action == action,
            Rhs::List(list) => {
                list.rules.iter().any(|(_, d)| d.action == action) || list.default.as_ref().is_some_and(|d| d.action == action)
            }
        }
    }
}

/// Patterns tried in file order, each with its decision; the default applies when none matches.
#[derive(Debug)]
pub(super) struct PatternList {
    pub(super) rules: Vec<(Pattern, Decision)>,
    pub(super) default: Option<Decision>,
}

/// An action and the reply text written after it, if any.
#[derive(Debug)]
pub(super) struct Decision {
    pub(super) action: Action,
    pub(super) message: Option<String>,
}

/// One pattern of a list: `!glob!`, `[net/cidr]` or `/regex/`, compiled at load time.
#[derive(Debug)]
pub(super) enum Pattern {
    Glob(Vec<GlobTok>),
    Net(IpNet),
    Regex(Regex),
}

/// A compiled glob: literal characters (lower case), `?` and `*` (runs of `*` folded into one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GlobTok {
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

/// A left-hand side after normalisation, as the parser hands it to [`AccessMap::insert`].
pub(super) enum KeyKind {
    Text(String),
    Cidr(IpNet),
}

impl AccessMap {
    /// Adds a parsed entry of `tag` under the key it is stored as (a CIDR key also goes into the
    /// tag's CIDR index). A key already present keeps its first entry: the stored key and the first
    /// entry's line come back for the duplicate warning.
    pub(super) fn insert(&mut self, tag: Tag, kind: KeyKind, entry: Entry) -> Result<(), (String, usize)> {
        let stored = match &kind {
            KeyKind::Text(body) => body_key(tag, body),
            KeyKind::Cidr(net) => cidr_key(tag, net),
        };
        if let Some(first) = self.index.get(&stored) {
            return Err((stored, first.line));
        }
        if let KeyKind::Cidr(net) = kind {
            let at = match self.cidr.iter().position(|(t, _)| *t == tag) {
                Some(at) => at,
                None => {
                    self.cidr.push((tag, CidrIndex::default()));
                    self.cidr.len() - 1
                }
            };
            self.cidr[at].1.insert(net);
        }
        self.counts[tag.index()] += 1;
        if entry.rhs.can_answer(Action::IReject) {
            self.irejects[tag.index()] = true;
        }
        self.index.insert(stored, entry);
        Ok(())
    }

    /// Number of entries loaded (all tags), for the start-up log line.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the map has no entries at all (then every lookup is `None`).
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether some entry of `tag` can answer IREJECT, which refuses at once whatever
    /// `smtp-delay-checks` says: the milter must then ask for a reply at that step.
    pub fn may_ireject(&self, tag: Tag) -> bool {
        self.irejects[tag.index()]
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

/// An address, IPv6 literal text with or without `ipv6:`, parsed.
pub(super) fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.get(..5).filter(|p| p.eq_ignore_ascii_case("ipv6:")).map_or(s, |_| &s[5..]);
    s.parse().ok()
}

/// IPv4-mapped IPv6 addresses are the IPv4 client they stand for.
pub(super) fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The full text form keys use: dotted quad, or eight lower-case hex groups without leading zeros
/// (`2001:db8:0:0:0:0:0:1`), whose prefixes at the separators are the reductions.
pub(super) fn ip_key_text(ip: IpAddr) -> String {
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
    use crate::checks::access::syntax::compile_glob;
    use crate::checks::access::test_support::{client, ip, key_of, map};

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
        let (m, _) = AccessMap::parse(include_str!("../../../contrib/access.cf"), "access.cf").unwrap();
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
}

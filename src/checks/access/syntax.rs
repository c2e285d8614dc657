//! The access.cf file format: how a line splits into key and value, how each tag's key is brought
//! to the one form the index stores (case, IPv4 octets, IPv6 groups, CIDR networks, addresses),
//! and how a right-hand side reads (one action with its message, or `!glob!`, `[net/cidr]` and
//! `/regex/` patterns each followed by an action). Everything is checked here, at load time, and
//! refused with the file, line and smtpf's message number, or noted as a warning; what comes out
//! is an [`AccessMap`] ready for lookups.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};
use regex::RegexBuilder;

use crate::checks::access::index::{
    ip_key_text, parse_ip, unmap, AccessMap, Decision, Entry, GlobTok, KeyKind, Pattern, PatternList, Rhs,
};
use crate::checks::access::vocab::{Action, Tag};

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
        // Unsupported tag -> the lines that carry it.
        let mut unsupported: Vec<(String, Vec<usize>)> = Vec::new();
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
                        Some(u) => u.1.push(line_no),
                        None => unsupported.push((name, vec![line_no])),
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

            if let Err((stored, first)) = map.insert(tag, kind, Entry { value: value.to_string(), rhs, line: line_no }) {
                let message = format!("duplicate key \"{stored}\" ignored, first defined at line {first}");
                warnings.push(warn(line_no, message));
            }
        }

        for (name, lines) in unsupported {
            let what = match lines.len() {
                1 => "line ignored".to_string(),
                n => format!("{n} lines ignored: {}", line_ranges(&lines)),
            };
            warnings.push(warn(lines[0], format!("tag \"{name}\" is not supported by this milter, {what}")));
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
}

/// Ascending line numbers as ranges (`50-52, 60, 70-290`), so a warning names every skipped line
/// in one line of text; past 20 ranges the rest is counted, not listed.
fn line_ranges(lines: &[usize]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &l in lines {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == l => *end = l,
            _ => ranges.push((l, l)),
        }
    }
    let mut parts: Vec<String> =
        ranges.iter().take(20).map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    if ranges.len() > 20 {
        parts.push(format!("and {} more ranges", ranges.len() - 20));
    }
    format!("lines {}", parts.join(", "))
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

/// Compiles a `!glob!` body: `*` and `?` are wild, a backslash makes the next character literal.
pub(super) fn compile_glob(body: &str) -> Vec<GlobTok> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::access::test_support::{client, err, ip, key_of, map, warnings};

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
    fn escaped_delimiters() {
        let m = map("To:example.com !a\\!b@*!REJECT /^c\\/d@/DISCARD\n");
        assert_eq!(m.lookup_mail(Tag::To, "a!b@example.com").unwrap().action, Action::Reject);
        assert_eq!(m.lookup_mail(Tag::To, "c/d@example.com").unwrap().action, Action::Discard);
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
        assert!(w[0].message.contains("rate-connect:") && w[0].message.contains("2 lines ignored: lines 1, 3"), "{}", w[0]);
        assert_eq!(line_ranges(&[5, 6, 7, 9, 11, 12]), "lines 5-7, 9, 11-12");
        let many: Vec<usize> = (1..=50).map(|n| n * 2).collect();
        assert!(line_ranges(&many).ends_with(", 40, and 30 more ranges"), "{}", line_ranges(&many));
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
    fn contrib_example_parses() {
        let (m, w) = AccessMap::parse(include_str!("../../../contrib/access.cf"), "access.cf").unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert!(m.len() > 10);
        for tag in Tag::ALL {
            assert!(m.count(tag) > 0, "example has no {tag} entry");
        }
    }
}

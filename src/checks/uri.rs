//! URI host extraction for the `uri-bl` and `uri-dns-bl` checks.
//!
//! smtpf looks up the hosts named by the links in a message body on domain block
//! lists (SURBL style, queried with the registered domain) and, through their
//! addresses, on IP block lists. This module turns the raw message handed to the
//! milter into the ordered list of distinct hosts to look up. It decodes the MIME
//! structure (quoted-printable, base64, charsets) and reads only the parts a
//! reader sees as text, because links decoded out of images or archives are
//! mostly noise. It undoes the obfuscation spammers rely on (HTML entities,
//! look-alike dots, soft hyphens), finds links with and without a scheme as well
//! as e-mail addresses, and also reports the hosts of links carried inside other
//! links (redirectors). The input is hostile by assumption: the bytes examined,
//! the hosts returned and the depth of attached messages are capped, and
//! malformed data yields fewer hosts, never a panic.
//!
//! Host names are returned as lower-case ASCII, with internationalised names in
//! punycode (`bücher.de` becomes `xn--bcher-kva.de`), without a trailing dot,
//! and only when they end in a suffix of the public-suffix list.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::panic::{self, AssertUnwindSafe};

use linkify::{LinkFinder, LinkKind};
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};
use percent_encoding::percent_decode_str;
use url::{Host, Url};

/// How many messages attached inside messages (`message/rfc822`) are opened, one
/// inside the other; each level costs another parse of its bytes.
const MAX_MESSAGE_DEPTH: usize = 5;

/// Longest host text (after any user info) handed to the URL parser: a DNS name
/// has at most 253 characters, three times that when fully percent-encoded.
const MAX_HOST_TEXT: usize = 1024;

/// How far past `://` an IP-literal URL is followed, so that a text made of
/// nothing but `://1` stays linear to scan.
const MAX_IP_URL: usize = 4096;

/// MIME subtypes after which the MIME parser would open a nested message by
/// itself, without a depth limit of its own: `message/rfc822`,
/// `message/global` and the children of `multipart/digest`.
const NESTING_SUBTYPES: [&[u8]; 3] = [b"rfc822", b"global", b"digest"];

/// The same subtypes once disarmed by [`defuse_nesting`]; parts of these types
/// are opened here instead, with [`MAX_MESSAGE_DEPTH`] enforced.
const DEFUSED_MESSAGE: [&str; 2] = ["xfc822", "xlobal"];
const DEFUSED_DIGEST: &str = "xigest";

/// A host named by a link in the message body: what `uri-bl` (domain lists) and
/// `uri-dns-bl` (IP lists on the host's addresses) look up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UriHost {
    /// A host name with a known public suffix.
    Domain {
        /// Lower-case ASCII (punycode for IDN), no trailing dot: the name as
        /// looked up in DNS and reported in log lines.
        host: String,
        /// The domain a `uri-bl` is queried with first: the label left of the
        /// public suffix (`example.co.uk` for `www.example.co.uk`), as given by
        /// [`registered_domain`]; `None` when the host is itself an ICANN public
        /// suffix (`co.uk`).
        registered: Option<String>,
        /// Found without a scheme (`www.example.com/x`, a bare e-mail address),
        /// which smtpf reports with the `uri_implicit` flag.
        implicit: bool,
    },
    /// The IP-literal host of a URL written with a scheme (`http://192.0.2.1/`,
    /// `http://[2001:db8::1]/`, also `http://3221225985/`), which the lists are
    /// queried with directly (reversed). A bare address in the text is not a
    /// link and is not reported, so every `Ip` is what `uri-require-domain`
    /// rejects.
    Ip(IpAddr),
}

impl UriHost {
    /// Whether the host was found without a scheme, for the `uri_implicit` flag;
    /// IP hosts always come with one.
    pub fn implicit(&self) -> bool {
        match self {
            UriHost::Domain { implicit, .. } => *implicit,
            UriHost::Ip(_) => false,
        }
    }
}

/// Shows the host as queried and logged: the name, or the bare IP address.
impl fmt::Display for UriHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UriHost::Domain { host, .. } => f.write_str(host),
            UriHost::Ip(addr) => write!(f, "{addr}"),
        }
    }
}

/// Returns the distinct URI hosts of a message's text parts, in order of first
/// appearance, so the caller can look each up once on its block lists.
///
/// `message` is the whole message as the MTA passes it to a milter: header
/// lines, a blank line, then the raw body. Only its first `max_bytes` bytes
/// (headers included) are examined, and at most `max_hosts` hosts are returned;
/// the scan stops as soon as that many are found. Headers themselves are not
/// scanned, as in smtpf without `uri-bl-headers`.
pub fn extract_hosts(message: &[u8], max_bytes: usize, max_hosts: usize) -> Vec<UriHost> {
    let mut found = Found::new(max_hosts);
    if max_hosts > 0 && max_bytes > 0 {
        let examined = &message[..message.len().min(max_bytes)];
        let scanner = scanner();
        match plain_ascii_body(examined) {
            Some(text) => scanner.text(&mut found, text),
            None => scanner.message(&mut found, examined, 0),
        }
    }
    found.hosts
}

/// The scanner is built once: its link finder and MIME parser are configuration only.
fn scanner() -> &'static Scanner {
    static SCANNER: std::sync::OnceLock<Scanner> = std::sync::OnceLock::new();
    SCANNER.get_or_init(Scanner::new)
}

/// The body of a message that is one plain-text part in ASCII, which is most mail: no
/// `Content-Type` or a single `text/plain` one, no transfer encoding other than 7bit/8bit/binary,
/// no `Content-Disposition`, and nothing but ASCII in the body. Such a body is its own decoded
/// text, so it is scanned as it is instead of going through the MIME parser and a charset
/// decoder. Anything else (or anything unusual in those headers) returns `None` and takes the
/// full path, so the hosts found are the same either way.
fn plain_ascii_body(message: &[u8]) -> Option<&str> {
    let (headers, body) = split_header_body(message)?;
    let mut content_type = None;
    let mut encoding = None;
    let mut lines = headers.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = line[..colon].trim_ascii();
        let slot = if name.eq_ignore_ascii_case(b"content-type") {
            &mut content_type
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            &mut encoding
        } else if name.eq_ignore_ascii_case(b"content-disposition") {
            return None;
        } else {
            // Skip this header's continuation lines.
            while lines.next_if(|l| l.first().is_some_and(|b| *b == b' ' || *b == b'\t')).is_some() {}
            continue;
        };
        // A repeated MIME header is left to the MIME parser.
        if slot.is_some() {
            return None;
        }
        *slot = Some(line[colon + 1..].trim_ascii());
        // Folded parameters (`;\r\n\tcharset=...`) are common and harmless; a comment
        // anywhere, or a folded transfer encoding, is not.
        while let Some(more) = lines.next_if(|l| l.first().is_some_and(|b| *b == b' ' || *b == b'\t')) {
            if encoding.is_some_and(|_| name.eq_ignore_ascii_case(b"content-transfer-encoding")) || more.contains(&b'(') {
                return None;
            }
        }
    }
    if let Some(ct) = content_type {
        let media = ct.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        if !media.eq_ignore_ascii_case(b"text/plain") || ct.contains(&b'(') {
            return None;
        }
    }
    if let Some(cte) = encoding {
        if ![&b"7bit"[..], b"8bit", b"binary"].iter().any(|e| cte.eq_ignore_ascii_case(e)) {
            return None;
        }
    }
    if !body.is_ascii() {
        return None;
    }
    std::str::from_utf8(body).ok()
}

/// Splits a message at its first empty line; `None` when there is none (no body).
fn split_header_body(message: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut at = 0;
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            let headers = &message[..at];
            return Some((
                headers.strip_suffix(b"\n").map_or(headers, |h| h.strip_suffix(b"\r").unwrap_or(h)),
                &message[at + line.len()..],
            ));
        }
        if !line.ends_with(b"\n") {
            return None;
        }
        at += line.len();
    }
    None
}

/// Returns the registered domain of `host`, the name a `uri-bl` is queried with
/// first: the label left of the public suffix, e.g. `example.co.uk` for
/// `www.example.co.uk`.
///
/// The private section of the public-suffix list counts, so each customer site
/// of a hosting platform is looked up on its own: `x.github.io` is its own
/// registered domain, not `github.io`. A host that is itself a private suffix
/// (`github.io`) falls back to the ICANN rule and is its own registered domain.
/// Returns `None` for IP addresses, for a bare public suffix (`com`, `co.uk`) and
/// for names without a known suffix. Input may be in any case, in Unicode or
/// punycode, with a trailing dot; the result is lower-case punycode.
pub fn registered_domain(host: &str) -> Option<String> {
    let host = host.trim();
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.parse::<IpAddr>().is_ok() {
        return None;
    }
    match Host::parse(host).ok()? {
        Host::Domain(name) if is_valid_domain(&name) => registered_of(&name),
        _ => None,
    }
}

/// The hosts collected so far, with the sets that keep them distinct.
struct Found {
    hosts: Vec<UriHost>,
    names: HashSet<String>,
    addrs: HashSet<IpAddr>,
    max_hosts: usize,
}

impl Found {
    fn new(max_hosts: usize) -> Self {
        Found { hosts: Vec::new(), names: HashSet::new(), addrs: HashSet::new(), max_hosts }
    }

    fn is_full(&self) -> bool {
        self.hosts.len() >= self.max_hosts
    }

    /// Keeps the first sighting of a host, with its `implicit` flag.
    fn add(&mut self, host: UriHost) {
        if self.is_full() {
            return;
        }
        let new = match &host {
            UriHost::Domain { host, .. } => !self.names.contains(host) && self.names.insert(host.clone()),
            UriHost::Ip(addr) => self.addrs.insert(*addr),
        };
        if new {
            self.hosts.push(host);
        }
    }
}

/// What is done with one MIME part.
enum PartKind {
    /// Scanned for links.
    Text,
    /// Opened as a message of its own.
    Message,
    /// Ignored: an image, an archive, a multipart container.
    Skip,
}

/// The configured link finder and MIME parser, built once for the process.
struct Scanner {
    links: LinkFinder,
    mime: MessageParser,
}

impl Scanner {
    fn new() -> Self {
        let mut links = LinkFinder::new();
        links.url_must_have_scheme(false).kinds(&[LinkKind::Url, LinkKind::Email]);
        Scanner { links, mime: MessageParser::new().with_mime_headers() }
    }

    /// Parses one message (the top level or an attached one) and scans its parts.
    fn message(&self, found: &mut Found, raw: &[u8], depth: usize) {
        let raw = defuse_nesting(raw);
        // The MIME parser is the widest attack surface; a bug in it must cost
        // this message its URI check, not the milter its process.
        let parsed = panic::catch_unwind(AssertUnwindSafe(|| self.mime.parse(raw.as_ref())));
        match parsed {
            Ok(Some(message)) => self.parts(found, &message, depth),
            Ok(None) => self.text(found, &String::from_utf8_lossy(&raw)),
            Err(_) => {}
        }
    }

    fn parts(&self, found: &mut Found, message: &Message<'_>, depth: usize) {
        let mut digest_children = HashSet::new();
        for part in &message.parts {
            if let PartType::Multipart(children) = &part.body {
                if part.content_type().is_some_and(|ct| ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case(DEFUSED_DIGEST))) {
                    digest_children.extend(children.iter().copied());
                }
            }
        }
        for (id, part) in message.parts.iter().enumerate() {
            if found.is_full() {
                return;
            }
            let in_digest = u32::try_from(id).is_ok_and(|id| digest_children.contains(&id));
            match &part.body {
                PartType::Text(text) | PartType::Html(text) => match part_kind(part, in_digest) {
                    PartKind::Text => self.text(found, text),
                    PartKind::Message => self.nested(found, text.as_bytes(), depth),
                    PartKind::Skip => {}
                },
                PartType::Binary(bytes) | PartType::InlineBinary(bytes) => match part_kind(part, in_digest) {
                    PartKind::Text => self.text(found, &binary_text(part, bytes)),
                    PartKind::Message => self.nested(found, bytes, depth),
                    PartKind::Skip => {}
                },
                // Not produced once nesting is defused; walked with the same cap.
                PartType::Message(inner) if depth < MAX_MESSAGE_DEPTH => self.parts(found, inner, depth + 1),
                PartType::Message(_) | PartType::Multipart(_) => {}
            }
        }
    }

    fn nested(&self, found: &mut Found, raw: &[u8], depth: usize) {
        if depth < MAX_MESSAGE_DEPTH {
            self.message(found, raw, depth + 1);
        }
    }

    /// Scans the decoded text of one part.
    fn text(&self, found: &mut Found, text: &str) {
        let text = plain_text(text);
        self.links(found, &text, true);
    }

    /// Reports the hosts of every link in `text`, in order; `follow` also scans
    /// each link's path and query for further links (one level deep).
    fn links(&self, found: &mut Found, text: &str, follow: bool) {
        // The link finder skips IPv6 and numeric IPv4 hosts, so URLs with those
        // are located apart and merged in by position.
        let mut ip_urls = ip_literal_urls(text).peekable();
        for link in self.links.links(text) {
            while let Some((_, url)) = ip_urls.next_if(|(start, _)| *start < link.start()) {
                self.url(found, url, follow);
            }
            if found.is_full() {
                return;
            }
            match link.kind() {
                LinkKind::Email => self.email(found, text, link.start(), link.as_str()),
                LinkKind::Url => self.url(found, link.as_str(), follow),
                _ => {}
            }
        }
        for (_, url) in ip_urls {
            if found.is_full() {
                return;
            }
            self.url(found, url, follow);
        }
    }

    /// Handles one link, with or without a scheme.
    fn url(&self, found: &mut Found, link: &str, follow: bool) {
        // Only a leading `scheme://` counts: in `www.example.com/?u=http://x/`
        // the `://` belongs to the query.
        let scheme = link
            .find("://")
            .filter(|&at| at > 0 && link[..at].bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')));
        let (explicit, rest) = match scheme {
            Some(at) => (true, &link[at + 3..]),
            None => (false, link),
        };
        let (authority, tail) = rest.split_at(rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len()));
        if let Some(host) = host_of(authority, !explicit) {
            found.add(host);
        }
        if follow && !tail.is_empty() && !found.is_full() {
            self.redirect_targets(found, tail);
        }
    }

    /// Handles an e-mail address: its domain is the host, explicit only after
    /// `mailto:`.
    fn email(&self, found: &mut Found, text: &str, start: usize, address: &str) {
        let explicit = start >= 7 && text.as_bytes()[start - 7..start].eq_ignore_ascii_case(b"mailto:");
        if let Some(host) = address.rsplit_once('@').and_then(|(_, domain)| host_of(domain, !explicit)) {
            found.add(host);
        }
    }

    /// Redirectors carry their target in the path or query
    /// (`http://r.example/?u=http://evil.example/`): the percent-decoded tail is
    /// split into elements on `/`, `&`, `?`, `=` and the like, and each element is
    /// scanned again as text.
    fn redirect_targets(&self, found: &mut Found, tail: &str) {
        let decoded = percent_decode_str(tail).decode_utf8_lossy();
        let folded = fold_obfuscation(&decoded);
        self.links(found, &split_elements(&folded), false);
    }
}

/// Decides from the part's own headers whether it is read as text, so that a
/// part the MIME parser fell back to text for (say, an image with broken
/// base64) stays unread.
fn part_kind(part: &MessagePart<'_>, in_digest: bool) -> PartKind {
    let Some(ct) = part.content_type() else {
        // RFC 2045 default, or RFC 2046 default inside a digest.
        return if in_digest { PartKind::Message } else { PartKind::Text };
    };
    let ctype = ct.ctype();
    let subtype = ct.subtype().unwrap_or("");
    if ctype.eq_ignore_ascii_case("text") {
        PartKind::Text
    } else if ctype.eq_ignore_ascii_case("message") && DEFUSED_MESSAGE.iter().any(|d| subtype.eq_ignore_ascii_case(d)) {
        PartKind::Message
    } else if ctype.eq_ignore_ascii_case("application") && part.attachment_name().is_some_and(is_text_file_name) {
        PartKind::Text
    } else if ctype.eq_ignore_ascii_case("multipart") && matches!(part.body, PartType::Text(_)) {
        // A multipart whose boundary never occurs: the parser keeps it as text.
        PartKind::Text
    } else {
        PartKind::Skip
    }
}

/// smtpf also reads `application/*` parts named like text or HTML files.
fn is_text_file_name(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    name.ends_with(".txt") || name.ends_with(".htm") || name.ends_with(".html")
}

/// Decodes a text-like binary part with its declared charset, else as UTF-8.
fn binary_text<'a>(part: &MessagePart<'_>, bytes: &'a [u8]) -> Cow<'a, str> {
    match part.content_type().and_then(|ct| ct.attribute("charset")).and_then(|c| charset_decoder(c.as_bytes())) {
        Some(decode) => Cow::Owned(decode(bytes)),
        None => String::from_utf8_lossy(bytes),
    }
}

/// Disarms the subtypes after which the MIME parser would recurse into nested
/// messages on its own: deep nesting there overflows the stack (when such a
/// message is dropped, or parsed inside an encoded part). Their first letter is
/// replaced by `x`, and [`part_kind`] opens those parts here, depth-limited.
/// Only whole tokens that the parser would read as the subtype are touched; the
/// next character never belongs to a host name, so links keep their hosts.
/// The input is copied only when something is replaced.
pub(crate) fn defuse_nesting(raw: &[u8]) -> Cow<'_, [u8]> {
    let mut copy: Option<Vec<u8>> = None;
    let mut at = 0;
    while at + 6 <= raw.len() {
        // Cheapest tests first: most bytes do not start with r, g or d after a delimiter.
        let candidate = matches!(raw[at] | 0x20, b'r' | b'g' | b'd') && (at == 0 || BEFORE_SUBTYPE[raw[at - 1] as usize]);
        if candidate
            && raw.get(at + 6).is_none_or(|&b| AFTER_SUBTYPE[b as usize])
            && NESTING_SUBTYPES.iter().any(|s| raw[at..at + 6].eq_ignore_ascii_case(s))
        {
            copy.get_or_insert_with(|| raw.to_vec())[at] = b'x';
            at += 6;
        } else {
            at += 1;
        }
    }
    copy.map_or(Cow::Borrowed(raw), Cow::Owned)
}

/// Bytes that may precede a MIME subtype token (`message/rfc822`, `"rfc822"`, `(x)rfc822`).
const BEFORE_SUBTYPE: [bool; 256] = byte_set(b"/ \t\"\\)\r\n");
/// Bytes that may follow one (or the end of the text).
const AFTER_SUBTYPE: [bool; 256] = byte_set(b" \t\r\n;(\"\\");

const fn byte_set(bytes: &[u8]) -> [bool; 256] {
    let mut set = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        set[bytes[i] as usize] = true;
        i += 1;
    }
    set
}

/// Resolves HTML entities (numeric and named, in every text part as smtpf
/// does) and folds look-alike dots and invisible characters.
fn plain_text(text: &str) -> Cow<'_, str> {
    match html_escape::decode_html_entities(text) {
        Cow::Borrowed(text) => fold_obfuscation(text),
        Cow::Owned(text) => match fold_obfuscation(&text) {
            Cow::Owned(folded) => Cow::Owned(folded),
            Cow::Borrowed(_) => Cow::Owned(text),
        },
    }
}

/// Full stops from CJK text (what Big5's dots decode to) that browsers and IDNA
/// read as `.`.
fn is_dot_like(c: char) -> bool {
    matches!(c, '\u{3002}' | '\u{FF0E}' | '\u{FF61}' | '\u{FE52}')
}

/// Characters a reader does not see, spliced into names to break them up.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}')
}

fn fold_obfuscation(text: &str) -> Cow<'_, str> {
    // Both kinds of character are outside ASCII; the ASCII test is vectorised.
    if text.is_ascii() || !text.chars().any(|c| is_dot_like(c) || is_invisible(c)) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().filter(|&c| !is_invisible(c)).map(|c| if is_dot_like(c) { '.' } else { c }).collect())
}

/// Turns a link's path and query into space-separated elements, keeping the
/// `//` of any `scheme://` so embedded links keep their scheme.
fn split_elements(tail: &str) -> String {
    let mut out = String::with_capacity(tail.len());
    let (mut before, mut last) = ('\0', '\0');
    for c in tail.chars() {
        let scheme_slash = c == '/' && (last == ':' || (last == '/' && before == ':'));
        let separator = matches!(c, '&' | '?' | '#' | '=' | ';' | '+' | '\\') || (c == '/' && !scheme_slash);
        out.push(if separator { ' ' } else { c });
        (before, last) = (last, c);
    }
    out
}

/// Finds `scheme://` URLs whose host is an IP literal, with their start
/// offsets, in order: bracketed IPv6 and all-numeric IPv4 forms such as
/// `http://3232235777/` or `http://0x7f.1/`, which the link finder passes over.
/// Candidates never overlap, so each byte is examined a bounded number of times.
fn ip_literal_urls(text: &str) -> impl Iterator<Item = (usize, &str)> + '_ {
    let mut free_from = 0;
    text.match_indices("://").filter_map(move |(at, _)| {
        if at < free_from {
            return None;
        }
        let first = text.as_bytes().get(at + 3)?;
        if *first != b'[' && !first.is_ascii_digit() {
            return None;
        }
        let scheme_len =
            text[..at].bytes().rev().take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')).count();
        if scheme_len == 0 {
            return None;
        }
        let end = text[at..]
            .char_indices()
            .find(|&(i, c)| i >= MAX_IP_URL || c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .map_or(text.len(), |(i, _)| at + i);
        free_from = end;
        Some((at - scheme_len, &text[at - scheme_len..end]))
    })
}

/// Parses the authority of a link (`user@host:port`, or an e-mail domain) with
/// the WHATWG URL rules browsers use, so the host is the one a click would reach.
fn host_of(authority: &str, implicit: bool) -> Option<UriHost> {
    let host_text = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if host_text.is_empty() || host_text.len() > MAX_HOST_TEXT {
        return None;
    }
    let url = Url::parse(&format!("http://{authority}/")).ok()?;
    match url.host()? {
        Host::Domain(name) => {
            let name = name.strip_suffix('.').unwrap_or(name);
            if !is_valid_domain(name) {
                return None;
            }
            Some(UriHost::Domain { host: name.to_owned(), registered: registered_of(name), implicit })
        }
        // Numbers in running text (versions, addresses in quoted logs) are not links.
        Host::Ipv4(_) | Host::Ipv6(_) if implicit => None,
        Host::Ipv4(addr) => Some(UriHost::Ip(IpAddr::V4(addr))),
        Host::Ipv6(addr) => Some(UriHost::Ip(IpAddr::V6(addr))),
    }
}

/// A lower-case ASCII DNS name of at least two labels whose suffix is in the
/// public-suffix list (smtpf skips hosts without a valid TLD).
fn is_valid_domain(name: &str) -> bool {
    name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
        && psl::suffix(name.as_bytes()).is_some_and(|suffix| suffix.is_known())
}

/// The registered domain of a valid lower-case name (see [`registered_domain`]).
fn registered_of(name: &str) -> Option<String> {
    if let Some(domain) = psl::domain(name.as_bytes()) {
        return if domain.suffix().is_known() { std::str::from_utf8(domain.as_bytes()).ok().map(str::to_owned) } else { None };
    }
    // The name is itself a public suffix; only a private one (`github.io`) is
    // somebody's domain, registered under the longest ICANN suffix it ends in.
    if psl::suffix(name.as_bytes())?.typ() != Some(psl::Type::Private) {
        return None;
    }
    let mut start = 0;
    while let Some(dot) = name[start..].find('.') {
        let tail = &name[start + dot + 1..];
        let is_icann_suffix =
            psl::suffix(tail.as_bytes()).is_some_and(|s| s.typ() == Some(psl::Type::Icann) && s.as_bytes() == tail.as_bytes());
        if is_icann_suffix {
            return Some(name[start..].to_owned());
        }
        start += dot + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1 << 20;

    fn domain(host: &str, registered: &str, implicit: bool) -> UriHost {
        UriHost::Domain { host: host.into(), registered: Some(registered.into()), implicit }
    }

    fn ip(addr: &str) -> UriHost {
        UriHost::Ip(addr.parse().unwrap())
    }

    fn names(hosts: &[UriHost]) -> Vec<String> {
        hosts.iter().map(ToString::to_string).collect()
    }

    /// Every test message also checks that the plain-text shortcut, when it applies, finds
    /// exactly what the MIME parser finds.
    fn hosts_of(message: &str) -> Vec<UriHost> {
        let hosts = extract_hosts(message.as_bytes(), 10 * MB, 1000);
        let mut parsed = Found::new(1000);
        scanner().message(&mut parsed, message.as_bytes(), 0);
        assert_eq!(hosts, parsed.hosts, "shortcut and MIME parser disagree on {message:?}");
        hosts
    }

    #[test]
    fn plain_ascii_bodies_skip_the_mime_parser_and_everything_else_does_not() {
        let body = "See http://www.example.com/x and mail me@example.org.\r\n";
        let plain = [
            "Subject: x\r\n\r\n",
            "Content-Type: text/plain; charset=us-ascii\r\nSubject: y\r\n\r\n",
            "content-type: TEXT/PLAIN;charset=utf-8\r\nX-A: b\r\n\r\n",
            "Content-Type: text/plain;\r\n\tcharset=\"us-ascii\"\r\nX-A: b\r\n\r\n",
            "Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n\r\n",
            "Content-Transfer-Encoding: 8BIT\nSubject: bare newlines\n\n",
            "X-Long: a\r\n\tcontinued: with colon\r\n\r\n",
        ];
        for headers in plain {
            let message = format!("{headers}{body}");
            assert_eq!(plain_ascii_body(message.as_bytes()), Some(body), "{headers:?}");
            assert_eq!(names(&hosts_of(&message)), ["www.example.com", "example.org"]);
        }
        let full_path = [
            format!("Content-Type: text/html\r\n\r\n{body}"),
            format!("Content-Type: multipart/mixed; boundary=b\r\n\r\n{body}"),
            format!("Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\n{body}"),
            format!("Content-Type:\r\n text/plain\r\n\r\n{body}"),
            format!("Content-Type: text/plain;\r\n charset=us-ascii (comment)\r\n\r\n{body}"),
            format!("Content-Transfer-Encoding:\r\n 7bit\r\n\r\n{body}"),
            format!("Content-Type: text/plain (comment)\r\n\r\n{body}"),
            format!("Content-Transfer-Encoding: quoted-printable\r\n\r\n{body}"),
            format!("Content-Transfer-Encoding: base64\r\n\r\n{body}"),
            format!("Content-Disposition: attachment\r\n\r\n{body}"),
            format!("Subject: x\r\n\r\n{body}caf\u{e9} www.example.net\r\n"),
            format!("no colon in this header\r\n\r\n{body}"),
            format!("Subject: no body {body}"),
        ];
        for message in &full_path {
            assert_eq!(plain_ascii_body(message.as_bytes()), None, "{message:?}");
            hosts_of(message);
        }
    }

    /// Test-only base64 encoder with 76-character lines, for building messages.
    fn base64(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for (i, chunk) in data.chunks(3).enumerate() {
            let n = chunk.iter().enumerate().fold(0u32, |n, (k, &b)| n | u32::from(b) << (16 - 8 * k));
            for k in 0..4 {
                out.push(if k <= chunk.len() { char::from(ALPHABET[(n >> (18 - 6 * k)) as usize & 63]) } else { '=' });
            }
            if i % 19 == 18 {
                out.push_str("\r\n");
            }
        }
        out
    }

    #[test]
    fn plain_text_with_schemes_mailto_and_implicit_hosts() {
        let message = "From: sender@header-only.com\r\nTo: rcpt@header-only.net\r\nSubject: see www.subject-only.com\r\n\
            Content-Type: text/plain; charset=us-ascii\r\n\r\n\
            Visit http://WWW.Explicit.Example.COM./a, https://secure.example.org:8443/x?y=1 or ftp://files.example.net/pub.\r\n\
            Mail mailto:Sales@Mail.Example.co.uk?subject=x or write to info@contact.example.com.\r\n\
            See www.implicit.example.com/path and plain-host.org today; not file.txt nor index.html.\r\n";
        assert_eq!(
            hosts_of(message),
            vec![
                domain("www.explicit.example.com", "example.com", false),
                domain("secure.example.org", "example.org", false),
                domain("files.example.net", "example.net", false),
                domain("mail.example.co.uk", "example.co.uk", false),
                domain("contact.example.com", "example.com", true),
                domain("www.implicit.example.com", "example.com", true),
                domain("plain-host.org", "plain-host.org", true),
            ]
        );
    }

    #[test]
    fn message_without_content_type_is_plain_text() {
        let message = "Subject: no MIME at all\r\n\r\nGo to http://no-mime.example.com/ now\r\n";
        assert_eq!(hosts_of(message), vec![domain("no-mime.example.com", "example.com", false)]);
        // LF-only line ends, as some MTAs pass them.
        let message = "Subject: bare LF\n\nGo to http://lf-only.example.com/ now\n";
        assert_eq!(names(&hosts_of(message)), ["lf-only.example.com"]);
    }

    #[test]
    fn quoted_printable_with_soft_breaks_and_encoded_equals() {
        let message = "Subject: qp\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\r\n\
            Click <http://www.qp-split.exa=\r\nmple.com/track?id=3D42> now.=\r\n\
            Or http://redirect.example.com/?u=3Dwww.qp-eq.example.org&x=3D1\r\n";
        assert_eq!(
            hosts_of(message),
            vec![
                domain("www.qp-split.example.com", "example.com", false),
                domain("redirect.example.com", "example.com", false),
                domain("www.qp-eq.example.org", "example.org", true),
            ]
        );
    }

    #[test]
    fn base64_text_part() {
        let message = "Subject: b64\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
            VmlzaXQgaHR0cHM6Ly9iNjQtcGFydC5leGFtcGxlLmNvbS93ZWxjb21lIHRvZGF5Lg0K\r\n";
        assert_eq!(hosts_of(message), vec![domain("b64-part.example.com", "example.com", false)]);
    }

    #[test]
    fn html_entities_and_attributes() {
        let message = "Subject: html\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
            <html><body><p>Go to www&#46;entity-dec&#x2E;com or sub&period;named-entity&period;org\r\n\
            or soft&shy;hyphen.example.com</p>\r\n\
            <a href=\"https://href-only.example.com/landing?a=1&amp;b=2\">click here</a>\r\n\
            <img src='http://img.example.net/pixel.gif'><a href=http://unquoted.example.org/x>y</a>\r\n\
            <a href=\"mailto:boss@mailto-attr.example.com\">mail</a></body></html>\r\n";
        assert_eq!(
            hosts_of(message),
            vec![
                domain("www.entity-dec.com", "entity-dec.com", true),
                domain("sub.named-entity.org", "named-entity.org", true),
                domain("softhyphen.example.com", "example.com", true),
                domain("href-only.example.com", "example.com", false),
                domain("img.example.net", "example.net", false),
                domain("unquoted.example.org", "example.org", false),
                domain("mailto-attr.example.com", "example.com", false),
            ]
        );
    }

    #[test]
    fn nested_multiparts_scan_text_parts_and_text_named_attachments_only() {
        let message = "Subject: mixed\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
            This is the preamble, never shown: http://preamble.example.com/\r\n\
            --outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n\
            --inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain http://alt-plain.example.com/\r\n\
            --inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<a href=\"http://alt-html.example.com/\">x</a>\r\n\
            --inner--\r\n\
            --outer\r\nContent-Type: application/pdf; name=\"doc.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
            JVBERi0xLjQgc3RyZWFtIGh0dHA6Ly9oaWRkZW4tcGRmLmV4YW1wbGUuY29tLyBlbmRzdHJlYW0=\r\n\
            --outer\r\nContent-Type: image/png; name=\"pic.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
            iVBORw0KGgogaHR0cDovL2hpZGRlbi1wbmcuZXhhbXBsZS5jb20vIElFTkQ=\r\n\
            --outer\r\nContent-Type: image/gif\r\nContent-Transfer-Encoding: base64\r\n\r\n\
            !!! broken base64 http://hidden-gif.example.com/ !!!\r\n\
            --outer\r\nContent-Type: application/octet-stream; name=\"notes.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
            Tm90ZXM6IHNlZSBodHRwOi8vbm90ZXMtdHh0LmV4YW1wbGUub3JnL2xpc3QNCg==\r\n\
            --outer\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"Page.HTM\"\r\n\r\n\
            <a href=\"http://page-htm.example.org/\">x</a>\r\n\
            --outer--\r\nEpilogue http://epilogue.example.com/\r\n";
        let found = names(&hosts_of(message));
        assert_eq!(found, ["alt-plain.example.com", "alt-html.example.com", "notes-txt.example.org", "page-htm.example.org"]);
    }

    #[test]
    fn attached_messages_are_opened_to_a_limited_depth() {
        let message = "Subject: fwd\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
            --b\r\nContent-Type: text/plain\r\n\r\nSee attached, http://outer.example.com/\r\n\
            --b\r\nContent-Type: message/rfc822\r\n\r\n\
            From: x@inner-header.example.com\r\nSubject: inner\r\nContent-Type: text/html\r\n\r\n\
            <a href=\"http://forwarded.example.com/\">x</a>\r\n\
            --b--\r\n";
        assert_eq!(names(&hosts_of(message)), ["outer.example.com", "forwarded.example.com"]);

        // Base64 is not allowed on message/rfc822 but occurs; it is decoded too.
        let inner = "Subject: inner\r\n\r\nhttp://encoded-inner.example.com/\r\n";
        let message = format!(
            "Subject: x\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64(inner.as_bytes())
        );
        assert_eq!(names(&hosts_of(&message)), ["encoded-inner.example.com"]);

        // Each level is reached only within MAX_MESSAGE_DEPTH.
        let mut message = String::new();
        for level in 0..=MAX_MESSAGE_DEPTH + 2 {
            message.push_str(&format!("Subject: level {level}\r\nContent-Type: multipart/mixed; boundary=\"l{level}\"\r\n\r\n"));
            message.push_str(&format!("--l{level}\r\nContent-Type: text/plain\r\n\r\nhttp://level{level}.example.com/\r\n"));
            message.push_str(&format!("--l{level}\r\nContent-Type: Message/RFC822\r\n\r\n"));
        }
        let found = names(&hosts_of(&message));
        let expected: Vec<String> = (0..=MAX_MESSAGE_DEPTH).map(|level| format!("level{level}.example.com")).collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn digest_children_are_messages() {
        let message = "Subject: digest\r\nContent-Type: multipart/digest; boundary=\"d\"\r\n\r\n\
            --d\r\n\r\nFrom: a@digest-header.example.com\r\nSubject: one\r\n\r\nhttp://digest-body.example.com/\r\n\
            --d--\r\n";
        assert_eq!(names(&hosts_of(message)), ["digest-body.example.com"]);
    }

    #[test]
    fn deeply_nested_messages_do_not_exhaust_the_stack() {
        let mut inner = String::new();
        for _ in 0..50_000 {
            inner.push_str("Content-Type: message/rfc822\r\n\r\n");
        }
        inner.push_str("Content-Type: text/plain\r\n\r\nhttp://deepest.example.com/\r\n");
        assert!(hosts_of(&inner).is_empty());
        let encoded = format!(
            "Subject: x\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64(inner.as_bytes())
        );
        assert!(hosts_of(&encoded).is_empty());
        let mut multipart = String::from("Subject: x\r\n");
        for level in 0..20_000 {
            multipart.push_str(&format!("Content-Type: multipart/mixed; boundary=\"m{level}\"\r\n\r\n--m{level}\r\n"));
        }
        multipart.push_str("Content-Type: text/plain\r\n\r\nhttp://deep-multipart.example.com/\r\n");
        assert_eq!(names(&hosts_of(&multipart)), ["deep-multipart.example.com"]);
    }

    #[test]
    fn ip_literal_hosts() {
        let message = "Subject: ip\r\n\r\nhttp://192.0.2.1/x and <http://[2001:DB8::1]:8080/y> and https://0x7f.1/ \
            and http://3221225986/z, not a bare 198.51.100.7 nor 1.2.3 nor v2.5.1\r\n";
        assert_eq!(hosts_of(message), vec![ip("192.0.2.1"), ip("2001:db8::1"), ip("127.0.0.1"), ip("192.0.2.2"),]);
        assert_eq!(ip("2001:db8::1").to_string(), "2001:db8::1");
        assert!(!ip("192.0.2.1").implicit());
    }

    #[test]
    fn redirector_targets() {
        let message = "Subject: r\r\n\r\n\
            http://r.example.com/?u=http://evil-redirect.com/&v=www.second-hop.net\r\n\
            http://r.example.com/go?to=https%3A%2F%2Fencoded-hop.org%2Fx\r\n\
            http://r.example.com/out/www.path-hop.com/index.html\r\n\
            http://[2001:db8::2]/?next=http://after-ipv6.com/\r\n\
            www.implicit-redirect.com/go?u=http://after-implicit.com/\r\n";
        assert_eq!(
            hosts_of(message),
            vec![
                domain("r.example.com", "example.com", false),
                domain("evil-redirect.com", "evil-redirect.com", false),
                domain("www.second-hop.net", "second-hop.net", true),
                domain("encoded-hop.org", "encoded-hop.org", false),
                domain("www.path-hop.com", "path-hop.com", true),
                ip("2001:db8::2"),
                domain("after-ipv6.com", "after-ipv6.com", false),
                domain("www.implicit-redirect.com", "implicit-redirect.com", true),
                domain("after-implicit.com", "after-implicit.com", false),
            ]
        );
    }

    #[test]
    fn duplicates_reported_once_at_first_sighting() {
        let message =
            "Subject: d\r\n\r\nwww.dup.example.com then HTTP://WWW.DUP.EXAMPLE.COM./x and http://www.dup.example.com/y \
            http://192.0.2.9/ http://192.0.2.9:80/ http://bücher.de/ bücher.de xn--bcher-kva.de\r\n";
        assert_eq!(
            hosts_of(message),
            vec![
                domain("www.dup.example.com", "example.com", true),
                ip("192.0.2.9"),
                domain("xn--bcher-kva.de", "xn--bcher-kva.de", false),
            ]
        );
    }

    #[test]
    fn registered_domain_of_multi_label_suffix() {
        let message = "Subject: uk\r\n\r\nhttp://www.shop.example.co.uk/ and http://x.github.io/\r\n";
        assert_eq!(
            hosts_of(message),
            vec![domain("www.shop.example.co.uk", "example.co.uk", false), domain("x.github.io", "x.github.io", false)]
        );
    }

    #[test]
    fn look_alike_dots_in_big5_and_unicode() {
        let mut message = b"Subject: big5\r\nContent-Type: text/plain; charset=big5\r\n\r\nwww".to_vec();
        message.extend_from_slice(b"\xa1\x44big5-dot\xa1\x43com \xa4\xa4\xa4\xe5\r\n");
        assert_eq!(names(&extract_hosts(&message, MB, 10)), ["www.big5-dot.com"]);
        let message = "Subject: u\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nwww\u{FF0E}fullwidth\u{3002}com\r\n";
        assert_eq!(names(&hosts_of(message)), ["www.fullwidth.com"]);
    }

    #[test]
    fn caps_on_hosts_and_bytes() {
        let message = "Subject: caps\r\n\r\nhttp://one.example.com/ http://two.example.com/ http://three.example.com/\r\n";
        assert_eq!(names(&extract_hosts(message.as_bytes(), MB, 2)), ["one.example.com", "two.example.com"]);
        assert!(extract_hosts(message.as_bytes(), MB, 0).is_empty());
        assert!(extract_hosts(message.as_bytes(), 0, 10).is_empty());
        let cut = message.find("http://three").unwrap();
        assert_eq!(names(&extract_hosts(message.as_bytes(), cut, 10)), ["one.example.com", "two.example.com"]);
        assert_eq!(extract_hosts(message.as_bytes(), usize::MAX, usize::MAX).len(), 3);
    }

    #[test]
    fn a_million_links() {
        let mut message = String::from("Subject: many\r\n\r\n");
        for i in 0..1_000_000 {
            message.push_str(&format!("http://h{i}.example.com/\n"));
        }
        let found = extract_hosts(message.as_bytes(), usize::MAX, 100);
        assert_eq!(found.len(), 100);
        assert_eq!(found[99].to_string(), "h99.example.com");

        let mut message = String::from("Subject: same\r\n\r\n");
        for _ in 0..200_000 {
            message.push_str("http://same.example.com/?u=www.again.example.com ");
        }
        assert_eq!(names(&extract_hosts(message.as_bytes(), usize::MAX, 100)), ["same.example.com", "www.again.example.com"]);
    }

    #[test]
    fn hostile_bytes_do_not_panic() {
        let mut message = b"Subject: bad\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xff\xfe\xc3(http://after-junk.example.com/ \xed\xa0\x80"
            .to_vec();
        message.extend_from_slice(b"\r\n");
        assert_eq!(names(&extract_hosts(&message, MB, 10)), ["after-junk.example.com"]);

        let broken = "Subject: b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n\
            %%%% not base64 at all http://broken-b64.example.com/ ====\r\nQUJD=\r\n=\r\n";
        let _ = hosts_of(broken);
        let broken_qp = "Subject: q\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
            =ZZ=\r\n=3 http://broken=-qp.example.com/ =";
        let _ = hosts_of(broken_qp);
        let unclosed =
            "Subject: u\r\nContent-Type: multipart/mixed; boundary=\"never\"\r\n\r\nhttp://no-boundary.example.com/\r\n";
        assert_eq!(names(&hosts_of(unclosed)), ["no-boundary.example.com"]);

        // Pathological runs for the link finder and the splitters stay linear.
        for unit in ["a.", "@", ":", "://[", "://1", "http://", "a@b.", "&#", "%", "/", "xn--", "\u{3002}", "message/rfc822 "] {
            let body = unit.repeat(200_000 / unit.len());
            let message = format!("Subject: p\r\n\r\n{body}\r\nhttp://tail.example.com/{body}\r\n");
            let _ = extract_hosts(message.as_bytes(), usize::MAX, 10);
        }

        // Pseudo-random MIME fragments.
        let fragments: [&[u8]; 12] = [
            b"Content-Type: multipart/mixed; boundary=\"z\"\r\n",
            b"Content-Type: message/rfc822\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            b"Content-Transfer-Encoding: quoted-printable\r\n",
            b"\r\n",
            b"--z\r\n",
            b"--z--\r\n",
            b"http://frag.example.com/?u=",
            b"=C3=A9=\r\n",
            b"aHR0cDovL2I2NC5leGFtcGxlLmNvbS8=",
            b"\xff\xfe\x00\x80",
            b"&#x2e;&amp;",
        ];
        let mut state = 0x2545_f491_u32;
        for _ in 0..300 {
            let mut message = b"Subject: f\r\n".to_vec();
            for _ in 0..40 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                message.extend_from_slice(fragments[state as usize % fragments.len()]);
            }
            let _ = extract_hosts(&message, MB, 50);
        }
    }

    #[test]
    fn registered_domains() {
        assert_eq!(registered_domain("a.b.example.com").as_deref(), Some("example.com"));
        assert_eq!(registered_domain("example.co.uk").as_deref(), Some("example.co.uk"));
        assert_eq!(registered_domain("www.example.co.uk").as_deref(), Some("example.co.uk"));
        assert_eq!(registered_domain("WWW.Example.COM.").as_deref(), Some("example.com"));
        assert_eq!(registered_domain("x.github.io").as_deref(), Some("x.github.io"));
        assert_eq!(registered_domain("a.x.github.io").as_deref(), Some("x.github.io"));
        assert_eq!(registered_domain("github.io").as_deref(), Some("github.io"));
        assert_eq!(registered_domain("bücher.de").as_deref(), Some("xn--bcher-kva.de"));
        assert_eq!(registered_domain("city.kawasaki.jp").as_deref(), Some("city.kawasaki.jp"));
        assert_eq!(registered_domain("192.0.2.1"), None);
        assert_eq!(registered_domain("[2001:db8::1]"), None);
        assert_eq!(registered_domain("2001:db8::1"), None);
        assert_eq!(registered_domain("com"), None);
        assert_eq!(registered_domain("co.uk"), None);
        assert_eq!(registered_domain("host.no-such-tld"), None);
        assert_eq!(registered_domain(""), None);
        assert_eq!(registered_domain("bad..example.com"), None);
    }
}

//! DNS lists (dns-wl, dns-gl, dns-bl, uri-bl, uri-dns-bl): parsing the configured zones and
//! asking them about an IP address or a domain. One list syntax serves all of them: smtpf's
//! `zone` and `zone/mask` (the mask is ANDed with the A answer) and postscreen's
//! `zone=FILTER*WEIGHT` (FILTER like `127.0.0.[2..11]`, WEIGHT a possibly negative integer), so
//! configurations written for either tool keep their meaning. All zones are asked concurrently,
//! each lookup bounded by the resolver timeout; a zone that times out or fails counts as "not
//! listed" and is reported so the caller can log it, never blocking or rejecting mail by itself.
//! Only answers in 127.0.0.0/8 or 0.0.0.0/8 count, and never 127.0.1.255 or 127.255.255.0/24,
//! which list operators use for "query refused / open resolver / bad query" rather than listings.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::future::join_all;

use crate::dns::{reverse_ip, Dns, Lookup};

/// The `dns-bl-threshold` default: with no weights every hit scores 1, so any hit lists the
/// client, as smtpf does.
pub const DEFAULT_THRESHOLD: i32 = 1;

/// One configured list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The zone as written in the configuration, without mask, filter or weight, and with a final
    /// dot (as smtpf shows it); this is the name reported in log lines and reply texts.
    pub name: String,
    /// The zone queried: lower case, without the final dot.
    suffix: String,
    /// ANDed with the 32-bit answer; the result must be non-zero (all bits when not given).
    pub mask: u32,
    /// postscreen-style answer filter, when given.
    pub filter: Option<Filter>,
    /// Added to the score when the zone lists the subject (1 when not given).
    pub weight: i32,
}

impl Zone {
    /// The zone name as queried (lower case, no final dot), so callers can group or compare.
    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    /// True when `answer` is a listing for this entry: a list code (see [`is_list_code`]) that
    /// passes the mask and the filter.
    pub fn accepts(&self, answer: Ipv4Addr) -> bool {
        is_list_code(answer)
            && u32::from(answer) & self.mask != 0
            && self.filter.as_ref().is_none_or(|filter| filter.matches(answer))
    }
}

/// A postscreen answer filter `d.d.d.d`, each octet a number or a `[n;n..m;...]` set, so that
/// only some return codes of a list count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// One 256-bit set of allowed values per octet.
    octets: [[u64; 4]; 4],
}

impl Filter {
    /// True when every octet of `addr` is in its allowed set.
    pub fn matches(&self, addr: Ipv4Addr) -> bool {
        addr.octets()
            .iter()
            .zip(self.octets.iter())
            .all(|(&value, set)| set[usize::from(value / 64)] & (1u64 << (value % 64)) != 0)
    }
}

/// True when an A answer can be a listing at all: inside 127.0.0.0/8 or 0.0.0.0/8, and neither
/// 127.0.1.255 (Spamhaus DBL "IP queried as a domain") nor 127.255.255.0/24 (Spamhaus "query
/// refused / open or public resolver / typing error" codes). Anything else is an error answer
/// or a wildcard and must never reject mail.
pub fn is_list_code(addr: Ipv4Addr) -> bool {
    let [a, b, c, _] = addr.octets();
    (a == 127 || a == 0) && addr != Ipv4Addr::new(127, 0, 1, 255) && !(a == 127 && b == 255 && c == 255)
}

/// Parses one configured list given as a single string, entries separated by `,`, `;` or white
/// space (a `;` inside a filter's brackets belongs to the filter).
pub fn parse_list(value: &str) -> Result<Vec<Zone>, String> {
    split_entries(value).into_iter().map(parse_zone).collect()
}

/// Parses one configured list given as a TOML array of strings; each string may itself hold
/// several entries as in [`parse_list`].
pub fn parse_zones<S: AsRef<str>>(values: &[S]) -> Result<Vec<Zone>, String> {
    let mut zones = Vec::new();
    for value in values {
        zones.extend(parse_list(value.as_ref())?);
    }
    Ok(zones)
}

/// Parses one entry: `zone[/mask][=filter][*weight]`.
pub fn parse_zone(entry: &str) -> Result<Zone, String> {
    let fail = |what: String| format!("DNS list entry {entry:?}: {what}");
    let (head, weight) = match entry.split_once('*') {
        Some((head, weight)) => (head, Some(weight)),
        None => (entry, None),
    };
    let (head, filter) = match head.split_once('=') {
        Some((head, filter)) => (head, Some(filter)),
        None => (head, None),
    };
    let (name, mask) = match head.split_once('/') {
        Some((name, mask)) => (name, Some(mask)),
        None => (head, None),
    };
    let suffix = check_zone_name(name).map_err(fail)?;
    let mask = match mask {
        None => u32::MAX,
        Some(text) => parse_mask(text).map_err(fail)?,
    };
    let filter = match filter {
        None => None,
        Some(text) => Some(parse_filter(text).map_err(fail)?),
    };
    let weight = match weight {
        None => 1,
        Some(text) => text
            .parse::<i32>()
            .ok()
            .filter(|w| w.unsigned_abs() <= 1_000_000)
            .ok_or_else(|| fail(format!("weight {text:?} is not an integer (between -1000000 and 1000000) after \"*\"")))?,
    };
    // libsnert roots every list name, so smtpf's lines and replies show `zen.spamhaus.org.`.
    let name = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    Ok(Zone { name, suffix, mask, filter, weight })
}

/// Splits a list value on `,`, `;` and white space outside `[...]`.
fn split_entries(value: &str) -> Vec<&str> {
    let mut entries = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    for (at, ch) in value.char_indices() {
        match ch {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' | ';' if depth == 0 => {
                entries.push(&value[start..at]);
                start = at + ch.len_utf8();
            }
            c if c.is_whitespace() && depth == 0 => {
                entries.push(&value[start..at]);
                start = at + ch.len_utf8();
            }
            _ => {}
        }
    }
    entries.push(&value[start..]);
    entries.into_iter().filter(|entry| !entry.is_empty()).collect()
}

/// Checks a zone name and returns its query form (lower case, no final dot).
fn check_zone_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("the zone name is missing".to_string());
    }
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() || bare.len() > 253 {
        return Err(format!("zone name {name:?} is not a valid domain name"));
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return Err(format!("zone name {name:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!("zone name {name:?} has a label longer than 63 characters"));
        }
        if let Some(bad) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return Err(format!("zone name {name:?} contains {bad:?}"));
        }
    }
    Ok(bare.to_ascii_lowercase())
}

/// A mask: decimal or `0x` hex, non-zero, at most 32 bits.
fn parse_mask(text: &str) -> Result<u32, String> {
    let parsed = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).ok()
    } else if text.len() > 1 && text.starts_with('0') {
        return Err(format!("mask {text:?} has a leading zero (smtpf would read it as octal); write it in decimal or as 0x hex"));
    } else {
        text.parse::<u32>().ok()
    };
    match parsed {
        None if text.is_empty() => Err("the mask after \"/\" is missing".to_string()),
        None => Err(format!("mask {text:?} is not a 32-bit number (decimal or 0x hex)")),
        Some(0) => Err("mask 0 can never match an answer".to_string()),
        Some(mask) => Ok(mask),
    }
}

/// A filter `d.d.d.d` where each `d` is `n` or `[n;n..m;...]` with 0 <= n <= m <= 255.
fn parse_filter(text: &str) -> Result<Filter, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    for (at, ch) in text.char_indices() {
        match ch {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    if parts.len() != 4 {
        return Err(format!("filter {text:?} must have four octets like 127.0.0.2 or 127.0.0.[2..11]"));
    }
    let mut octets = [[0u64; 4]; 4];
    for (set, part) in octets.iter_mut().zip(parts) {
        parse_octet(part, set).map_err(|what| format!("filter {text:?}: {what}"))?;
    }
    Ok(Filter { octets })
}

/// Fills `set` from one filter octet.
fn parse_octet(part: &str, set: &mut [u64; 4]) -> Result<(), String> {
    let items = match part.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(|| format!("{part:?} lacks its closing \"]\""))?,
        None => part,
    };
    if items.is_empty() {
        return Err(format!("empty octet {part:?}"));
    }
    if !part.starts_with('[') && (items.contains(';') || items.contains("..")) {
        return Err(format!("sets and ranges like {part:?} must be written in brackets"));
    }
    for item in items.split(';') {
        let (low, high) = match item.split_once("..") {
            Some((low, high)) => (octet_value(low)?, octet_value(high)?),
            None => {
                let value = octet_value(item)?;
                (value, value)
            }
        };
        if low > high {
            return Err(format!("range {item:?} runs backwards"));
        }
        for value in low..=high {
            set[usize::from(value / 64)] |= 1u64 << (value % 64);
        }
    }
    Ok(())
}

fn octet_value(text: &str) -> Result<u8, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a number from 0 to 255"));
    }
    text.parse::<u8>().map_err(|_| format!("{text:?} is not a number from 0 to 255"))
}

/// A zone that lists the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The zone as configured, for log lines ("dns-bl found 192.0.2.1 zen.spamhaus.org").
    pub zone: String,
    /// The first qualifying answer (the return code), for logs and reply texts.
    pub answer: Ipv4Addr,
    /// The zone's weight, already counted in [`ListResult::score`].
    pub weight: i32,
}

/// A zone that could not be asked; the lookup counts as "not listed".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The zone as configured.
    pub zone: String,
    /// Short reason word: "timeout", "SERVFAIL", "REFUSED", "network"...
    pub reason: String,
}

/// What a set of zones says about one IP address or domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListResult {
    /// The zones that list the subject, in configuration order.
    pub hits: Vec<Hit>,
    /// Sum of the weights of the hits (postscreen's DNSBL score).
    pub score: i32,
    /// The zones that timed out or failed, in configuration order, so the caller can log them.
    pub failed: Vec<Failure>,
}

impl ListResult {
    /// True when at least one zone lists the subject and the score reaches `threshold`
    /// ([`DEFAULT_THRESHOLD`] gives smtpf's "any hit").
    pub fn listed(&self, threshold: i32) -> bool {
        !self.hits.is_empty() && self.score >= threshold
    }

    /// The zone to name in log lines and replies ("black listed by zen.spamhaus.org"): that of
    /// [`ListResult::reported`].
    pub fn first_hit(&self) -> Option<&str> {
        self.reported().map(|hit| hit.zone.as_str())
    }

    /// The hit to report: the first with a positive weight (an allow-list zone with negative
    /// weight is not what listed the subject), else the first.
    pub fn reported(&self) -> Option<&Hit> {
        self.hits.iter().find(|hit| hit.weight > 0).or_else(|| self.hits.first())
    }

    /// The zones that timed out or failed and why, as (zone, reason) pairs for log lines.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.failed.iter().map(|failure| (failure.zone.as_str(), failure.reason.as_str()))
    }
}

/// Asks every zone about an IP address (`<reversed ip>.<zone>`), all concurrently.
pub async fn query_ip(dns: &Dns, zones: &[Zone], ip: IpAddr) -> ListResult {
    query(dns, zones, &reverse_ip(ip)).await
}

/// Asks every zone about a domain (`<domain>.<zone>`), all concurrently; for uri-bl and
/// similar domain lists. An empty domain asks nothing.
pub async fn query_domain(dns: &Dns, zones: &[Zone], domain: &str) -> ListResult {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        return ListResult::default();
    }
    query(dns, zones, &domain).await
}

/// Queries each distinct zone once and evaluates every entry against its zone's answer.
async fn query(dns: &Dns, zones: &[Zone], prefix: &str) -> ListResult {
    let mut suffixes: Vec<&str> = Vec::new();
    for zone in zones {
        if !suffixes.contains(&zone.suffix.as_str()) {
            suffixes.push(&zone.suffix);
        }
    }
    let names: Vec<String> = suffixes.iter().map(|suffix| format!("{prefix}.{suffix}")).collect();
    let answers = join_all(names.iter().map(|name| dns.a(name))).await;

    let mut result = ListResult::default();
    let mut reported: Vec<usize> = Vec::new();
    for zone in zones {
        let Some(at) = suffixes.iter().position(|suffix| *suffix == zone.suffix) else { continue };
        match answers.get(at) {
            Some(Lookup::Found(addrs)) => {
                if let Some(&answer) = addrs.iter().find(|&&addr| zone.accepts(addr)) {
                    result.score = result.score.saturating_add(zone.weight);
                    result.hits.push(Hit { zone: zone.name.clone(), answer, weight: zone.weight });
                }
            }
            Some(Lookup::Failed(reason)) => {
                // Report each queried zone once, under the first entry that names it.
                if !reported.contains(&at) {
                    reported.push(at);
                    result.failed.push(Failure { zone: zone.name.clone(), reason: reason.clone() });
                }
            }
            Some(Lookup::NoRecords | Lookup::NxDomain) | None => {}
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn ip4(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn plain_zone() {
        let zone = parse_zone("zen.spamhaus.org").unwrap();
        assert_eq!(zone.name, "zen.spamhaus.org.");
        assert_eq!(zone.suffix(), "zen.spamhaus.org");
        assert_eq!(zone.mask, u32::MAX);
        assert_eq!(zone.filter, None);
        assert_eq!(zone.weight, 1);
        assert!(zone.accepts(ip4("127.0.0.2")));
        assert!(zone.accepts(ip4("127.0.0.11")));
    }

    #[test]
    fn trailing_dot_and_case() {
        let zone = parse_zone("Bl.Example.TEST.").unwrap();
        assert_eq!(zone.name, "Bl.Example.TEST.");
        assert_eq!(zone.suffix(), "bl.example.test");
    }

    #[test]
    fn masks() {
        let zone = parse_zone("multi.surbl.org/0x04").unwrap();
        assert_eq!(zone.name, "multi.surbl.org.");
        assert_eq!(zone.mask, 4);
        assert!(zone.accepts(ip4("127.0.0.4")));
        assert!(zone.accepts(ip4("127.0.0.6")));
        assert!(!zone.accepts(ip4("127.0.0.2")));
        assert_eq!(parse_zone("x.test/16777214").unwrap().mask, 0x00FF_FFFE);
        assert_eq!(parse_zone("x.test/0XFF").unwrap().mask, 0xFF);
        assert_eq!(parse_zone("x.test/0xFFFFFFFF").unwrap().mask, u32::MAX);
    }

    #[test]
    fn filters_and_weights() {
        let zone = parse_zone("zen.spamhaus.org=127.0.0.[2..11]*3").unwrap();
        assert_eq!(zone.name, "zen.spamhaus.org.");
        assert_eq!(zone.weight, 3);
        assert!(zone.accepts(ip4("127.0.0.2")));
        assert!(zone.accepts(ip4("127.0.0.11")));
        assert!(!zone.accepts(ip4("127.0.0.12")));
        assert!(!zone.accepts(ip4("127.0.0.1")));

        let zone = parse_zone("list.dnswl.org=127.0.[0..255].[1;2;3]*-5").unwrap();
        assert_eq!(zone.weight, -5);
        assert!(zone.accepts(ip4("127.0.9.3")));
        assert!(!zone.accepts(ip4("127.0.9.0")));

        let zone = parse_zone("b.test=127.0.0.[2;4..5;9]").unwrap();
        assert_eq!(zone.weight, 1);
        let accepted: Vec<u8> = (0..=255u8).filter(|d| zone.accepts(Ipv4Addr::new(127, 0, 0, *d))).collect();
        assert_eq!(accepted, vec![2, 4, 5, 9]);

        let zone = parse_zone("c.test=127.0.0.2").unwrap();
        assert!(zone.accepts(ip4("127.0.0.2")));
        assert!(!zone.accepts(ip4("127.0.0.3")));

        let zone = parse_zone("w.test*2").unwrap();
        assert_eq!(zone.weight, 2);
        assert_eq!(zone.filter, None);
        assert_eq!(parse_zone("w.test*+4").unwrap().weight, 4);
        assert_eq!(parse_zone("w.test*0").unwrap().weight, 0);

        let zone = parse_zone("m.test/0x02=127.0.0.[0..7]*2").unwrap();
        assert_eq!(zone.name, "m.test.");
        assert!(zone.accepts(ip4("127.0.0.2")));
        assert!(!zone.accepts(ip4("127.0.0.4")));
        assert!(!zone.accepts(ip4("127.0.0.10")));
    }

    #[test]
    fn error_codes_never_count() {
        let zone = parse_zone("zen.spamhaus.org").unwrap();
        for code in ["127.255.255.254", "127.255.255.252", "127.255.255.255", "127.0.1.255"] {
            assert!(!zone.accepts(ip4(code)), "{code}");
        }
        for outside in ["192.0.2.1", "10.0.0.2", "128.0.0.2", "255.255.255.255"] {
            assert!(!zone.accepts(ip4(outside)), "{outside}");
        }
        assert!(zone.accepts(ip4("0.0.0.2")));
        assert!(!zone.accepts(ip4("0.0.0.0")), "a zero answer fails the mask");
        assert!(zone.accepts(ip4("127.0.1.2")), "DBL codes other than 127.0.1.255 count");
        // Only 127.255.255.0/24 is the lists' error space: codes beside it are listings.
        for code in ["127.0.255.2", "127.255.0.2", "127.255.254.2", "127.254.255.2"] {
            assert!(zone.accepts(ip4(code)), "{code}");
        }
        // Even a filter that explicitly allows them cannot make them count.
        assert!(!parse_zone("x.test=127.255.255.[0..255]").unwrap().accepts(ip4("127.255.255.254")));
    }

    #[test]
    fn list_splitting() {
        let zones = parse_list(" a.test, b.test;c.test\td.test\n e.test=127.0.0.[2;3]*2 ;; ").unwrap();
        let names: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
        assert_eq!(names, vec!["a.test.", "b.test.", "c.test.", "d.test.", "e.test."]);
        assert!(zones[4].accepts(ip4("127.0.0.3")));
        assert!(parse_list("").unwrap().is_empty());
        assert!(parse_list(" ,; ").unwrap().is_empty());

        let zones = parse_zones(&["a.test", "b.test/0x02, c.test*3"]).unwrap();
        assert_eq!(zones.len(), 3);
        assert_eq!(zones[2].weight, 3);
        assert!(parse_zones::<&str>(&[]).unwrap().is_empty());
        let owned: Vec<String> = vec!["a.test".into(), "b.test=127.0.0.[2;3]".into()];
        assert_eq!(parse_zones(&owned).unwrap().len(), 2);
        assert!(parse_zones(&["a.test", "bad..test"]).is_err());
    }

    #[test]
    fn parse_errors_name_the_entry_and_problem() {
        let cases = [
            ("/0x02", "zone name is missing"),
            ("=127.0.0.2", "zone name is missing"),
            ("bad..test", "empty label"),
            (".lead.test", "empty label"),
            ("bl.te st", "contains"),
            ("bl.test!", "contains '!'"),
            ("x.test/", "mask after \"/\" is missing"),
            ("x.test/0xZZ", "not a 32-bit number"),
            ("x.test/abc", "not a 32-bit number"),
            ("x.test/0x1FFFFFFFF", "not a 32-bit number"),
            ("x.test/4294967296", "not a 32-bit number"),
            ("x.test/0", "never match"),
            ("x.test/010", "leading zero"),
            ("x.test=127.0.0", "four octets"),
            ("x.test=127.0.0.2.1", "four octets"),
            ("x.test=127.0.0.256", "0 to 255"),
            ("x.test=127.0.0.[2..300]", "0 to 255"),
            ("x.test=127.0.0.[11..2]", "runs backwards"),
            ("x.test=127.0.0.[2", "closing"),
            ("x.test=127.0.0.[]", "empty octet"),
            ("x.test=127.0.0.[2;]", "not a number"),
            ("x.test=127.0.0.2..5", "four octets"),
            ("x.test=127.0.0.2;5", "brackets"),
            ("x.test=127.0.0.x", "not a number"),
            ("x.test=127.0.0.+2", "not a number"),
            ("x.test=127.0.0.[+2..4]", "not a number"),
            ("x.test=", "four octets"),
            ("x.test*", "weight"),
            ("x.test*two", "weight"),
            ("x.test*1*2", "weight"),
            ("x.test*99999999", "weight"),
        ];
        for (entry, expected) in cases {
            let error = parse_zone(entry).expect_err(entry);
            assert!(error.contains(&format!("{entry:?}")), "{entry}: {error}");
            assert!(error.contains(expected), "{entry}: {error}");
        }
        let long = format!("{}.test", "a".repeat(64));
        assert!(parse_zone(&long).unwrap_err().contains("longer than 63"));
        let too_long = vec!["abcdefghi"; 30].join(".");
        assert!(parse_zone(&too_long).unwrap_err().contains("not a valid domain name"));
        assert!(parse_list("ok.test x.test/0").unwrap_err().contains("\"x.test/0\""));
    }

    /// Zone names are held to the DNS's own limits and no tighter: a 63-octet label and a
    /// 253-octet name are valid, one octet more is not.
    /// Hyphens and underscores are legal in list names (`bl.spam-cop.test`,
    /// `_dnsbl` labels); other punctuation is not.
    #[test]
    fn zone_names_with_hyphens_and_underscores() {
        assert_eq!(parse_zone("bl.spam-cop.test").unwrap().suffix(), "bl.spam-cop.test");
        assert_eq!(parse_zone("_dnsbl.example.test").unwrap().suffix(), "_dnsbl.example.test");
        assert!(parse_zone("bl!.example.test").unwrap_err().contains("contains '!'"));
    }

    #[test]
    fn zone_names_at_the_dns_limits() {
        let label63 = format!("{}.test", "a".repeat(63));
        assert_eq!(parse_zone(&label63).unwrap().suffix(), label63);
        // 3 labels of 63, one of 61: 63*3 + 61 + 3 dots = 253 octets.
        let name253 = format!("{0}.{0}.{0}.{1}", "b".repeat(63), "c".repeat(61));
        assert_eq!(name253.len(), 253);
        assert_eq!(parse_zone(&name253).unwrap().suffix(), name253);
        assert_eq!(parse_zone(&format!("{name253}.")).unwrap().name, format!("{name253}."), "the final dot is not counted");
        let name254 = format!("{0}.{0}.{0}.{1}", "b".repeat(63), "c".repeat(62));
        assert_eq!(name254.len(), 254);
        assert!(parse_zone(&name254).unwrap_err().contains("not a valid domain name"));
    }

    #[test]
    fn reversed_names() {
        assert_eq!(reverse_ip("192.0.2.1".parse().unwrap()), "1.2.0.192");
        assert_eq!(reverse_ip("127.0.0.2".parse().unwrap()), "2.0.0.127");
        let mapped = IpAddr::V6("::ffff:7f00:2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(reverse_ip(mapped), "2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0");
        let v6: IpAddr = "2001:DB8::1".parse().unwrap();
        assert_eq!(reverse_ip(v6), "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2");
        assert_eq!(reverse_ip(v6).split('.').count(), 32);
    }

    #[test]
    fn result_helpers() {
        let empty = ListResult::default();
        assert!(!empty.listed(DEFAULT_THRESHOLD));
        assert!(!empty.listed(0), "no hit is never listed");
        assert_eq!(empty.first_hit(), None);
        assert_eq!(empty.reported(), None);

        let hit = |zone: &str, weight| Hit { zone: zone.into(), answer: ip4("127.0.0.2"), weight };
        let result =
            ListResult { hits: vec![hit("wl.test", -2), hit("bl.test", 1), hit("b2.test", 3)], score: 2, failed: vec![] };
        assert!(result.listed(1));
        assert!(result.listed(2));
        assert!(!result.listed(3));
        assert_eq!(result.first_hit(), Some("bl.test"));
        assert_eq!(result.reported().map(|h| h.weight), Some(1));

        // A weight-0 zone (listed for information) is not what listed the subject either.
        let info_first = ListResult { hits: vec![hit("info.test", 0), hit("bl.test", 1)], score: 1, failed: vec![] };
        assert_eq!(info_first.first_hit(), Some("bl.test"));

        let only_allow = ListResult { hits: vec![hit("wl.test", -2)], score: -2, failed: vec![] };
        assert!(!only_allow.listed(DEFAULT_THRESHOLD));
        assert_eq!(only_allow.first_hit(), Some("wl.test"));
        assert_eq!(only_allow.failures().count(), 0);
        let failing =
            ListResult { failed: vec![Failure { zone: "slow.test".into(), reason: "timeout".into() }], ..ListResult::default() };
        assert_eq!(failing.failures().collect::<Vec<_>>(), vec![("slow.test", "timeout")]);
        assert!(!failing.listed(DEFAULT_THRESHOLD));
    }
}

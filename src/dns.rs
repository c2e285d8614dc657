//! The DNS resolver every check in the daemon goes through. It wraps hickory's resolver so that
//! each lookup is bounded by the configured `dns-timeout`, answers are cached for their TTL (a
//! burst of identical lookups costs one query), only the configured name servers (or the system's
//! `/etc/resolv.conf` ones) are ever asked, and every outcome keeps the distinctions the checks act
//! on: found, exists-but-empty (NODATA), does-not-exist (NXDOMAIN), or failed (SERVFAIL, REFUSED,
//! timeout, network trouble). Nothing here panics on bad names or bad networks.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::TXT;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;

use crate::dns_raw::RawTxt;
use crate::log::{catalog, Logger};
use crate::sync::lock;

/// The outcome of one lookup, keeping apart what the checks treat differently: a name with data,
/// a name that exists without data of the asked type, a name that does not exist, and a lookup
/// that could not be answered (which checks turn into "not listed" or a temporary failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    /// The name has records of the asked type (never an empty collection).
    Found(T),
    /// NOERROR without records of the asked type (NODATA): the name exists.
    NoRecords,
    /// NXDOMAIN: the name does not exist. Also given, without a query, for a name that cannot
    /// exist in the DNS (an empty label, a label over 63 or a name over 255 octets).
    NxDomain,
    /// No usable answer: a short reason word such as "timeout", "SERVFAIL", "REFUSED",
    /// "network" or "truncated", suitable for log lines and reply texts.
    Failed(String),
}

impl<T> Lookup<T> {
    /// The records, if any were found; for callers that only care about positive answers.
    pub fn found(&self) -> Option<&T> {
        match self {
            Lookup::Found(value) => Some(value),
            _ => None,
        }
    }

    /// True when the lookup could not be answered, so the caller may log it or defer a decision.
    pub fn is_failed(&self) -> bool {
        matches!(self, Lookup::Failed(_))
    }

    /// The failure reason, so a caller can log "timeout" or "SERVFAIL" without matching.
    pub fn failure(&self) -> Option<&str> {
        match self {
            Lookup::Failed(reason) => Some(reason),
            _ => None,
        }
    }

    /// Converts the found value, keeping every other outcome, so wrappers need no full match.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Lookup::Found(value) => Lookup::Found(f(value)),
            Lookup::NoRecords => Lookup::NoRecords,
            Lookup::NxDomain => Lookup::NxDomain,
            Lookup::Failed(reason) => Lookup::Failed(reason),
        }
    }
}

/// One MX record, as the sender-domain check needs it: the preference and the exchange host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mx {
    /// Lower is preferred (RFC 5321 §5.1).
    pub preference: u16,
    /// The exchange host in lower case without the trailing dot; the root name (RFC 7505 null
    /// MX) is written ".".
    pub exchange: String,
}

impl Mx {
    /// True for an exchange of "." (RFC 7505): the domain states it accepts no mail.
    pub fn is_null(&self) -> bool {
        self.exchange == "."
    }
}

/// True when an MX answer is an RFC 7505 null MX (a single record whose exchange is "."), so
/// the MX check can reject "domain accepts no mail" instead of looking for hosts.
pub fn is_null_mx(records: &[Mx]) -> bool {
    records.len() == 1 && records[0].is_null()
}

/// The shared resolver: cheap to clone (one `Arc`), usable from every session task at once.
#[derive(Clone)]
pub struct Dns {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: TokioResolver,
    timeout: Duration,
    memo: Memo,
    /// Where the verbose word `dns` writes each lookup (#2055), once the daemon says.
    log: std::sync::OnceLock<Logger>,
    /// The name servers the resolver asks, for the raw TXT query ([`crate::dns_raw`]).
    servers: Vec<SocketAddr>,
}

/// Answers remembered for their TTL, in front of the resolver's own cache. The resolver's cache
/// is correct but general (name parsing, a concurrent LRU, a lookup object per question); a busy
/// MX asks the same few questions per message (the sender's MX and SPF record, the lists for
/// the client), and a hash lookup answers those for a fraction of the cost. Only definite
/// answers are kept: records until their TTL runs out, NXDOMAIN/NODATA for the SOA's negative
/// TTL when the server gave one; failures are never remembered.
struct Memo {
    answers: Mutex<HashMap<(RecordType, Box<str>), Remembered>>,
}

struct Remembered {
    answer: Answer,
    until: Instant,
}

enum Answer {
    Records(Arc<[RData]>),
    NoRecords,
    NxDomain,
}

/// Most answers remembered; when full, the memo starts afresh (the resolver's cache still has them).
const MEMO_ANSWERS: usize = 20_000;
/// Longest time an answer is remembered, whatever its TTL says.
const MEMO_MAX_TTL: Duration = Duration::from_secs(3600);

impl Memo {
    fn get(&self, key: &(RecordType, Box<str>), now: Instant) -> Option<(Answer, Instant)> {
        let answers = lock(&self.answers);
        let r = answers.get(key).filter(|r| r.until > now)?;
        let answer = match &r.answer {
            Answer::Records(records) => Answer::Records(records.clone()),
            Answer::NoRecords => Answer::NoRecords,
            Answer::NxDomain => Answer::NxDomain,
        };
        Some((answer, r.until))
    }

    fn put(&self, key: (RecordType, Box<str>), answer: Answer, until: Instant) {
        let until = until.min(Instant::now() + MEMO_MAX_TTL);
        let mut answers = lock(&self.answers);
        if answers.len() >= MEMO_ANSWERS {
            let now = Instant::now();
            answers.retain(|_, r| r.until > now);
            if answers.len() >= MEMO_ANSWERS {
                answers.clear();
            }
        }
        answers.insert(key, Remembered { answer, until });
    }
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").field("timeout", &self.inner.timeout).finish()
    }
}

impl Dns {
    /// Builds the resolver. An empty `servers` uses the name servers of the system configuration
    /// (`/etc/resolv.conf`); otherwise exactly those servers are asked (UDP, with TCP when an
    /// answer is truncated) and nothing else. Every lookup is one attempt bounded by `timeout`
    /// (UDP retransmissions happen inside it). `/etc/hosts` is never consulted, so list and MX
    /// answers always come from the DNS.
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> Result<Dns, String> {
        if timeout.is_zero() {
            return Err("DNS timeout must be greater than zero".to_string());
        }
        let mut builder = if servers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| format!("cannot read the system DNS configuration: {e}"))?
        } else {
            let name_servers = servers
                .iter()
                .map(|server| {
                    let mut udp = ConnectionConfig::new(ProtocolConfig::Udp);
                    udp.port = server.port();
                    let mut tcp = ConnectionConfig::new(ProtocolConfig::Tcp);
                    tcp.port = server.port();
                    NameServerConfig::new(server.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(name_servers), TokioRuntimeProvider::default())
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = timeout;
        options.attempts = 0;
        options.edns0 = true;
        options.use_hosts_file = ResolveHosts::Never;
        options.preserve_intermediates = true;
        let resolver = builder.build().map_err(|e| format!("cannot build the DNS resolver: {e}"))?;
        let memo = Memo { answers: Mutex::new(HashMap::new()) };
        let servers = if servers.is_empty() { system_servers() } else { servers.to_vec() };
        Ok(Dns { inner: Arc::new(Inner { resolver, timeout, memo, log: std::sync::OnceLock::new(), servers }) })
    }

    /// Names the log that `verbose = "dns"` writes every lookup to (#2055). Lookups carry no
    /// session id: one answer may serve several sessions.
    pub fn log_to(&self, log: &Logger) {
        let _ = self.inner.log.set(log.clone());
    }

    /// Writes one lookup's outcome when the verbose word `dns` is on.
    fn debug(&self, rtype: RecordType, name: &str, outcome: impl FnOnce() -> String) {
        if let Some(log) = self.inner.log.get().filter(|l| l.enabled(&catalog::DEBUG_DNS)) {
            log.emit(&catalog::DEBUG_DNS, None, &[&rtype, &name, &outcome()]);
        }
    }

    /// The per-lookup bound, so callers can describe or budget their own waits.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// IPv4 addresses of `name` (DNS list answers, MX hosts, URI hosts).
    pub async fn a(&self, name: &str) -> Lookup<Vec<Ipv4Addr>> {
        self.query(name, RecordType::A, |rdata| match rdata {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .await
    }

    /// IPv6 addresses of `name` (MX hosts and URI hosts reachable over IPv6).
    pub async fn aaaa(&self, name: &str) -> Lookup<Vec<Ipv6Addr>> {
        self.query(name, RecordType::AAAA, |rdata| match rdata {
            RData::AAAA(aaaa) => Some(aaaa.0),
            _ => None,
        })
        .await
    }

    /// A and AAAA together, queried concurrently, IPv4 first. Found when either family has
    /// addresses (a failure of the other family is then ignored); otherwise Failed if either
    /// failed, NxDomain if either said NXDOMAIN, else NoRecords. Callers that must know about a
    /// partial failure use [`Dns::a`] and [`Dns::aaaa`].
    pub async fn ip_addrs(&self, name: &str) -> Lookup<Vec<IpAddr>> {
        let (v4, v6) = tokio::join!(self.a(name), self.aaaa(name));
        let mut addrs: Vec<IpAddr> = Vec::new();
        if let Lookup::Found(list) = &v4 {
            addrs.extend(list.iter().copied().map(IpAddr::V4));
        }
        if let Lookup::Found(list) = &v6 {
            addrs.extend(list.iter().copied().map(IpAddr::V6));
        }
        if !addrs.is_empty() {
            return Lookup::Found(addrs);
        }
        match (v4, v6) {
            (Lookup::Failed(reason), _) | (_, Lookup::Failed(reason)) => Lookup::Failed(reason),
            (Lookup::NxDomain, _) | (_, Lookup::NxDomain) => Lookup::NxDomain,
            _ => Lookup::NoRecords,
        }
    }

    /// MX records of `name`, sorted by preference (then name, for stable output). A null MX
    /// (`MX 0 .`, RFC 7505) is kept and detectable with [`Mx::is_null`] / [`is_null_mx`].
    pub async fn mx(&self, name: &str) -> Lookup<Vec<Mx>> {
        let found = self
            .query(name, RecordType::MX, |rdata| match rdata {
                RData::MX(mx) => Some(Mx { preference: mx.preference, exchange: host_name(&mx.exchange) }),
                _ => None,
            })
            .await;
        found.map(|mut list| {
            list.sort();
            list
        })
    }

    /// TXT records of `name`, one string per record with its character-strings concatenated
    /// without separator (the SPF rule, RFC 7208 §3.3); bytes that are not UTF-8 are replaced.
    pub async fn txt(&self, name: &str) -> Lookup<Vec<String>> {
        self.query(name, RecordType::TXT, |rdata| match rdata {
            RData::TXT(txt) => {
                let bytes: Vec<u8> = txt.txt_data.iter().flat_map(|part| part.iter().copied()).collect();
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            _ => None,
        })
        .await
    }

    /// The PTR names of `ip` (lower case, without the trailing dot), all of them: a client may
    /// have several, and whether they share a domain matters to greylisting.
    pub async fn ptr(&self, ip: IpAddr) -> Lookup<Vec<String>> {
        let zone = if ip.is_ipv4() { "in-addr.arpa" } else { "ip6.arpa" };
        self.query(&format!("{}.{zone}", reverse_ip(ip)), RecordType::PTR, |rdata| match rdata {
            RData::PTR(ptr) => Some(host_name(&ptr.0)),
            _ => None,
        })
        .await
    }

    /// The TXT records of `name` through [`crate::dns_raw`], as an answer to remember; `None` on
    /// failure.
    async fn raw_txt(&self, name: &Name) -> Option<(Answer, Instant)> {
        let labels: Vec<&[u8]> = name.iter().collect();
        match crate::dns_raw::query_txt(&self.inner.servers, &labels, self.inner.timeout).await {
            RawTxt::Records(records, ttl) => {
                let rdata: Arc<[RData]> = records
                    .iter()
                    .map(|strings| RData::TXT(TXT::from_bytes(strings.iter().map(Vec::as_slice).collect())))
                    .collect();
                Some((Answer::Records(rdata), Instant::now() + Duration::from_secs(u64::from(ttl))))
            }
            RawTxt::NoRecords => Some((Answer::NoRecords, Instant::now())),
            RawTxt::NxDomain => Some((Answer::NxDomain, Instant::now())),
            RawTxt::Failed(_) => None,
        }
    }

    /// One bounded lookup of `rtype`, keeping the answer records `pick` accepts.
    async fn query<T>(&self, name: &str, rtype: RecordType, pick: impl Fn(&RData) -> Option<T>) -> Lookup<Vec<T>> {
        let key = (rtype, name.trim().trim_end_matches('.').to_ascii_lowercase().into_boxed_str());
        if let Some((answer, _)) = self.inner.memo.get(&key, Instant::now()) {
            self.debug(rtype, name, || format!("{} (cached)", describe(&answer)));
            return answer_lookup(&answer, &pick);
        }
        let Some(fqdn) = fqdn(name) else {
            self.debug(rtype, name, || "NXDOMAIN (not a DNS name)".to_string());
            return Lookup::NxDomain;
        };
        let lookup = self.inner.resolver.lookup(fqdn.clone(), rtype);
        let answer = match tokio::time::timeout(self.inner.timeout, lookup).await {
            Err(_) => {
                self.debug(rtype, name, || "failed: timeout".to_string());
                return Lookup::Failed("timeout".to_string());
            }
            Ok(Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords { response_code, negative_ttl: Some(ttl), .. }))))
                if matches!(response_code, ResponseCode::NXDomain | ResponseCode::NoError) =>
            {
                let answer = if response_code == ResponseCode::NXDomain { Answer::NxDomain } else { Answer::NoRecords };
                (answer, Instant::now() + Duration::from_secs(u64::from(ttl)))
            }
            // A TXT answer with an empty record (zero strings) is refused whole by the library;
            // ask again ourselves and keep the other records (RFC 7208 §3.3).
            Ok(Err(error)) if rtype == RecordType::TXT && format!("{error:?}").contains("InvalidEmptyRecord") => {
                match self.raw_txt(&fqdn).await {
                    Some(answer) => answer,
                    None => {
                        self.debug(rtype, name, || "failed: bad-response".to_string());
                        return Lookup::Failed("bad-response".to_string());
                    }
                }
            }
            Ok(Err(error)) => {
                let failed = classify(&error);
                self.debug(rtype, name, || format!("failed: {}", failed.failure().unwrap_or("?")));
                return failed;
            }
            Ok(Ok(answer)) => {
                let records: Arc<[RData]> = answer.answers().iter().map(|record| record.data.clone()).collect();
                (Answer::Records(records), answer.valid_until())
            }
        };
        let lookup = answer_lookup(&answer.0, &pick);
        self.debug(rtype, name, || describe(&answer.0));
        self.inner.memo.put(key, answer.0, answer.1);
        lookup
    }
}

/// The name servers of the system configuration (`/etc/resolv.conf`), as the resolver reads them.
fn system_servers() -> Vec<SocketAddr> {
    let Ok((config, _)) = hickory_resolver::system_conf::read_system_conf() else { return Vec::new() };
    config.name_servers().iter().map(|ns| SocketAddr::new(ns.ip, ns.connections.first().map(|c| c.port).unwrap_or(53))).collect()
}

/// An answer as a debug line shows it: the records (at most 8), NODATA or NXDOMAIN.
fn describe(answer: &Answer) -> String {
    match answer {
        Answer::NxDomain => "NXDOMAIN".to_string(),
        Answer::NoRecords => "NODATA".to_string(),
        Answer::Records(records) => {
            let shown: Vec<String> = records.iter().take(8).map(|r| r.to_string()).collect();
            let more = records.len().saturating_sub(8);
            if more > 0 {
                format!("{} and {more} more", shown.join(", "))
            } else {
                shown.join(", ")
            }
        }
    }
}

/// What a remembered (or fresh) answer means for one question's record type.
fn answer_lookup<T>(answer: &Answer, pick: &impl Fn(&RData) -> Option<T>) -> Lookup<Vec<T>> {
    match answer {
        Answer::NxDomain => Lookup::NxDomain,
        Answer::NoRecords => Lookup::NoRecords,
        Answer::Records(records) => {
            let values: Vec<T> = records.iter().filter_map(pick).collect();
            if values.is_empty() {
                Lookup::NoRecords
            } else {
                Lookup::Found(values)
            }
        }
    }
}

/// The reversed form of `ip` under which the DNS publishes it (PTR names under in-addr.arpa / ip6.arpa, DNS lists): reversed octets for IPv4, the 32
/// reversed lower-case nibbles of the expanded address for IPv6. An IPv4-mapped IPv6 address
/// stays IPv6; callers wanting IPv4 lists for it convert it with `to_canonical()` first.
pub fn reverse_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut name = String::with_capacity(63);
            for byte in v6.octets().iter().rev() {
                if !name.is_empty() {
                    name.push('.');
                }
                name.push(char::from(HEX[usize::from(byte & 0x0f)]));
                name.push('.');
                name.push(char::from(HEX[usize::from(byte >> 4)]));
            }
            name
        }
    }
}

/// Turns `name` into an absolute DNS name; `None` when it cannot be one (an empty label, a label
/// over 63 octets, a name over 255). A label may hold any octet in the DNS: a name the usual
/// parser refuses (a space, `%`, `:`, `/`, which SPF macros and domain-specs can produce) is
/// asked for as raw labels, never turned into "does not exist" without asking.
fn fqdn(name: &str) -> Option<Name> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed == "." {
        return None;
    }
    let mut parsed = match Name::from_str_relaxed(trimmed) {
        Ok(parsed) if !trimmed.contains(' ') => parsed,
        _ => {
            let labels: Vec<&[u8]> = trimmed.strip_suffix('.').unwrap_or(trimmed).split('.').map(str::as_bytes).collect();
            if labels.iter().any(|l| l.is_empty()) {
                return None;
            }
            Name::from_labels(labels).ok()?
        }
    };
    parsed.set_fqdn(true);
    Some(parsed)
}

/// A host name as the checks compare it: lower case, no trailing dot, "." for the root.
fn host_name(name: &Name) -> String {
    if name.is_root() {
        return ".".to_string();
    }
    let text = name.to_ascii().to_ascii_lowercase();
    match text.strip_suffix('.') {
        Some(stripped) => stripped.to_string(),
        None => text,
    }
}

/// Maps hickory's error for a completed lookup onto the outcome the checks use.
fn classify<T>(error: &NetError) -> Lookup<T> {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(NoRecords { response_code, .. })) => match response_code {
            ResponseCode::NXDomain => Lookup::NxDomain,
            ResponseCode::NoError => Lookup::NoRecords,
            code => Lookup::Failed(rcode_word(*code)),
        },
        NetError::Dns(DnsError::ResponseCode(code)) => Lookup::Failed(rcode_word(*code)),
        NetError::Timeout => Lookup::Failed("timeout".to_string()),
        NetError::Io(_) | NetError::NoConnections => Lookup::Failed("network".to_string()),
        NetError::Busy => Lookup::Failed("busy".to_string()),
        NetError::Truncated => Lookup::Failed("truncated".to_string()),
        NetError::Proto(_) => Lookup::Failed("bad-response".to_string()),
        _ => Lookup::Failed("error".to_string()),
    }
}

/// The conventional upper-case name of a response code ("SERVFAIL"), as log lines show it.
fn rcode_word(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".to_string(),
        ResponseCode::FormErr => "FORMERR".to_string(),
        ResponseCode::ServFail => "SERVFAIL".to_string(),
        ResponseCode::NXDomain => "NXDOMAIN".to_string(),
        ResponseCode::NotImp => "NOTIMP".to_string(),
        ResponseCode::Refused => "REFUSED".to_string(),
        ResponseCode::YXDomain => "YXDOMAIN".to_string(),
        ResponseCode::YXRRSet => "YXRRSET".to_string(),
        ResponseCode::NXRRSet => "NXRRSET".to_string(),
        ResponseCode::NotAuth => "NOTAUTH".to_string(),
        ResponseCode::NotZone => "NOTZONE".to_string(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_exist_are_rejected() {
        assert!(fqdn("").is_none());
        assert!(fqdn(".").is_none());
        assert!(fqdn("a..b").is_none());
        // Octets the usual parser refuses are asked for as they are, label by label.
        for odd in ["macro%percent  space%20url-space.example.com", "foo:bar/baz.example.com"] {
            let name = fqdn(odd).unwrap_or_else(|| panic!("{odd} can be asked for"));
            assert_eq!(name.num_labels(), 3, "{odd}");
            assert_eq!(name.iter().next().unwrap(), odd.split('.').next().unwrap().as_bytes());
        }
        assert!(fqdn(&format!("{}.test", "x".repeat(64))).is_none());
        assert!(fqdn(&vec!["abcdefghi"; 30].join(".")).is_none());
        let name = fqdn("Example.TEST").unwrap();
        assert!(name.is_fqdn());
        assert!(fqdn("example.test.").unwrap().is_fqdn());
        assert!(fqdn("_dmarc.example.test").is_some());
    }

    #[test]
    fn host_names_are_lower_case_without_dot() {
        assert_eq!(host_name(&Name::root()), ".");
        assert_eq!(host_name(&Name::from_ascii("MX.Example.TEST.").unwrap()), "mx.example.test");
    }

    #[test]
    fn null_mx_detection() {
        let null = Mx { preference: 0, exchange: ".".into() };
        let real = Mx { preference: 10, exchange: "mx.example.test".into() };
        assert!(null.is_null());
        assert!(!real.is_null());
        assert!(is_null_mx(std::slice::from_ref(&null)));
        assert!(!is_null_mx(&[null, real.clone()]));
        assert!(!is_null_mx(&[real]));
        assert!(!is_null_mx(&[]));
    }

    #[test]
    fn rcode_words() {
        assert_eq!(rcode_word(ResponseCode::ServFail), "SERVFAIL");
        assert_eq!(rcode_word(ResponseCode::Refused), "REFUSED");
        assert_eq!(rcode_word(ResponseCode::Unknown(3841)), "RCODE3841");
    }

    #[test]
    fn classify_maps_each_error() {
        let query = hickory_resolver::proto::op::Query::new();
        let nx: Lookup<()> = classify(&NoRecords::new(query.clone(), ResponseCode::NXDomain).into());
        assert_eq!(nx, Lookup::NxDomain);
        let empty: Lookup<()> = classify(&NoRecords::new(query, ResponseCode::NoError).into());
        assert_eq!(empty, Lookup::NoRecords);
        let servfail: Lookup<()> = classify(&NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)));
        assert_eq!(servfail, Lookup::Failed("SERVFAIL".into()));
        let timeout: Lookup<()> = classify(&NetError::Timeout);
        assert_eq!(timeout, Lookup::Failed("timeout".into()));
    }

    #[test]
    fn zero_timeout_is_refused() {
        assert!(Dns::new(&["127.0.0.1:53".parse().unwrap()], Duration::ZERO).is_err());
    }

    #[test]
    fn builds_outside_a_runtime() {
        let servers: [SocketAddr; 2] = ["127.0.0.1:5353".parse().unwrap(), "[::1]:53".parse().unwrap()];
        let dns = Dns::new(&servers, Duration::from_secs(3)).unwrap();
        assert_eq!(dns.timeout(), Duration::from_secs(3));
    }
}

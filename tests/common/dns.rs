//! An in-process authoritative DNS server for the integration tests, so DNS-dependent checks are
//! tested without system packages and without a single query leaving the machine. It listens on
//! UDP and TCP of the same 127.0.0.1 port, answers only names under its own zones (REFUSED for
//! anything else, never forwarding), and can be told to answer SERVFAIL for a name or to drop
//! queries for it so the client times out. UDP answers carry no EDNS, so any answer over 512
//! octets is truncated and the client has to retry over TCP. The server stops when dropped.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SOA, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;

/// TTL of records and of negative answers unless [`TestDnsBuilder::ttl`] says otherwise.
pub const DEFAULT_TTL: u32 = 300;

/// A running test server; dropping it stops it.
pub struct TestDns {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
    server: Server<Handler>,
}

impl TestDns {
    /// A builder collecting the records and special names the server will answer.
    pub fn builder() -> TestDnsBuilder {
        TestDnsBuilder::default()
    }

    /// Starts a server from zone-file-like text (see [`TestDnsBuilder::zone_text`]).
    pub async fn start(text: &str) -> TestDns {
        TestDns::builder().zone_text(text).start().await
    }

    /// The address (127.0.0.1, same port for UDP and TCP) to configure as the only name server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many queries reached the server so far (dropped ones included), to check caching.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// How many of those queries came over TCP, to check the fallback after truncation.
    pub fn tcp_queries(&self) -> usize {
        self.tcp_queries.load(Ordering::SeqCst)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        // Dropping `server` aborts its tasks; cancelling first also stops them cleanly.
        self.server.shutdown_token().cancel();
    }
}

/// Collects the data for a [`TestDns`]. Names may be given with or without the final dot and
/// in any case. The server's zones are the ones named with [`TestDnsBuilder::zone`] plus the
/// top-level label of every name given (so `a("x.bl.test", ..)` makes the server answer for all
/// of `test`): other names in those zones are NXDOMAIN, names outside them REFUSED.
#[derive(Default)]
pub struct TestDnsBuilder {
    records: Vec<(String, RData)>,
    ttl: Option<u32>,
    zones: Vec<String>,
    nxdomain: Vec<String>,
    servfail: Vec<String>,
    blackhole: Vec<String>,
}

impl TestDnsBuilder {
    /// TTL for all records and for negative answers (the SOA minimum).
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Declares a zone the server is authoritative for even without records in it.
    pub fn zone(mut self, zone: &str) -> Self {
        self.zones.push(key(zone));
        self
    }

    /// An A record.
    pub fn a(mut self, name: &str, addr: &str) -> Self {
        let addr: Ipv4Addr = addr.parse().unwrap_or_else(|_| panic!("bad IPv4 address {addr:?}"));
        self.records.push((key(name), RData::A(A(addr))));
        self
    }

    /// An AAAA record.
    pub fn aaaa(mut self, name: &str, addr: &str) -> Self {
        let addr: Ipv6Addr = addr.parse().unwrap_or_else(|_| panic!("bad IPv6 address {addr:?}"));
        self.records.push((key(name), RData::AAAA(AAAA(addr))));
        self
    }

    /// An A or AAAA record for a DNS list entry: `ip` is the listed client address, queried as
    /// reversed octets or nibbles under `zone`; `answer` is the IPv4 code returned.
    pub fn listed(self, ip: &str, zone: &str, answer: &str) -> Self {
        let ip: IpAddr = ip.parse().unwrap_or_else(|_| panic!("bad IP address {ip:?}"));
        let name = format!("{}.{}", reversed(ip), key(zone));
        self.a(&name, answer)
    }

    /// An MX record; an exchange of "." makes an RFC 7505 null MX.
    pub fn mx(mut self, name: &str, preference: u16, exchange: &str) -> Self {
        let exchange = if exchange == "." { Name::root() } else { name_of(&key(exchange)) };
        self.records.push((key(name), RData::MX(MX::new(preference, exchange))));
        self
    }

    /// A TXT record holding `text`, split into 255-octet character-strings when longer.
    pub fn txt(self, name: &str, text: &str) -> Self {
        let parts: Vec<String> = text.as_bytes().chunks(255).map(|chunk| String::from_utf8_lossy(chunk).into_owned()).collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.txt_parts(name, &parts)
    }

    /// A TXT record made of exactly these character-strings (each at most 255 octets).
    pub fn txt_parts(mut self, name: &str, parts: &[&str]) -> Self {
        let parts = if parts.is_empty() { vec![String::new()] } else { parts.iter().map(|p| p.to_string()).collect() };
        self.records.push((key(name), RData::TXT(TXT::new(parts))));
        self
    }

    /// A PTR record for `ip` (under in-addr.arpa or ip6.arpa) naming `host`; call again for a
    /// client with several PTR names.
    pub fn ptr(mut self, ip: &str, host: &str) -> Self {
        let ip: IpAddr = ip.parse().unwrap_or_else(|_| panic!("bad IP address {ip:?}"));
        let zone = if ip.is_ipv4() { "in-addr.arpa" } else { "ip6.arpa" };
        self.records.push((format!("{}.{zone}", reversed(ip)), RData::PTR(PTR(name_of(&key(host))))));
        self
    }

    /// A TXT record of zero character-strings (illegal, but published: SPF must not fail on it).
    pub fn txt_empty(mut self, name: &str) -> Self {
        self.records.push((key(name), RData::TXT(TXT::new(Vec::<String>::new()))));
        self
    }

    /// A CNAME record.
    pub fn cname(mut self, name: &str, target: &str) -> Self {
        self.records.push((key(name), RData::CNAME(CNAME(name_of(&key(target))))));
        self
    }

    /// The name and everything under it answer NXDOMAIN, whatever records exist there.
    pub fn nxdomain(mut self, name: &str) -> Self {
        self.nxdomain.push(key(name));
        self
    }

    /// The name and everything under it answer SERVFAIL.
    pub fn servfail(mut self, name: &str) -> Self {
        self.servfail.push(key(name));
        self
    }

    /// Queries for the name and everything under it are dropped without answer.
    pub fn blackhole(mut self, name: &str) -> Self {
        self.blackhole.push(key(name));
        self
    }

    /// Adds lines of the form `name TYPE data`: `A addr`, `AAAA addr`, `MX pref host`,
    /// `TXT text...` (the rest of the line, surrounding double quotes removed), `CNAME target`,
    /// and the data-less `NXDOMAIN`, `SERVFAIL`, `BLACKHOLE`, `ZONE`. Blank lines and lines
    /// starting with `;` or `#` are ignored. Panics on a malformed line (it is test data).
    pub fn zone_text(mut self, text: &str) -> Self {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(3, char::is_whitespace);
            let name = fields.next().unwrap_or_default();
            let rtype = fields.next().unwrap_or_else(|| panic!("no type in test zone line {line:?}")).to_ascii_uppercase();
            let data = fields.next().unwrap_or_default().trim();
            self = match rtype.as_str() {
                "A" => self.a(name, data),
                "AAAA" => self.aaaa(name, data),
                "MX" => {
                    let (pref, host) = data.split_once(char::is_whitespace).unwrap_or_else(|| panic!("bad MX data in {line:?}"));
                    let pref = pref.parse().unwrap_or_else(|_| panic!("bad MX preference in {line:?}"));
                    self.mx(name, pref, host.trim())
                }
                "TXT" => {
                    let text = data.strip_prefix('"').and_then(|d| d.strip_suffix('"')).unwrap_or(data);
                    self.txt(name, text)
                }
                "CNAME" => self.cname(name, data),
                "NXDOMAIN" => self.nxdomain(name),
                "SERVFAIL" => self.servfail(name),
                "BLACKHOLE" => self.blackhole(name),
                "ZONE" => self.zone(name),
                other => panic!("unsupported type {other} in test zone line {line:?}"),
            };
        }
        self
    }

    /// Binds UDP and TCP on the same 127.0.0.1 port and starts answering.
    pub async fn start(self) -> TestDns {
        let ttl = self.ttl.unwrap_or(DEFAULT_TTL);
        let mut zones = self.zones.clone();
        let all_names =
            self.records.iter().map(|(name, _)| name).chain(&self.nxdomain).chain(&self.servfail).chain(&self.blackhole);
        for name in all_names {
            let top = name.rsplit('.').next().unwrap_or_default().to_string();
            if !top.is_empty() && !zones.contains(&top) {
                zones.push(top);
            }
        }
        let mut records: HashMap<String, Vec<Record>> = HashMap::new();
        for (name, rdata) in self.records {
            let owner = name_of(&name);
            // Keyed as the handler spells a query's name, so raw labels are found again.
            let shown = key(&owner.to_string());
            records.entry(shown).or_default().push(Record::from_rdata(owner, ttl, rdata));
        }
        let queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let handler = Handler {
            data: Arc::new(Data {
                records,
                ttl,
                zones,
                nxdomain: self.nxdomain,
                servfail: self.servfail,
                blackhole: self.blackhole,
            }),
            queries: queries.clone(),
            tcp_queries: tcp_queries.clone(),
        };

        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().expect("bound UDP socket has an address");
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64);
        TestDns { addr, queries, tcp_queries, server }
    }
}

/// A UDP socket and a TCP listener on the same 127.0.0.1 port.
async fn bind_pair() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP on 127.0.0.1");
        let port = udp.local_addr().expect("bound UDP socket has an address").port();
        if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            return (udp, tcp);
        }
    }
    panic!("no 127.0.0.1 port free for both UDP and TCP");
}

/// The normalised form names are kept in: lower case, no final dot.
fn key(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The DNS name of a key; a name the usual parser refuses (spaces, `%`, `:`, `/` in a label) is
/// made of raw labels, as SPF macro expansions can produce.
fn name_of(key: &str) -> Name {
    Name::from_ascii(format!("{key}.")).ok().filter(|_| !key.contains(' ')).unwrap_or_else(|| {
        let mut name =
            Name::from_labels(key.split('.').map(str::as_bytes)).unwrap_or_else(|_| panic!("bad test DNS name {key:?}"));
        name.set_fqdn(true);
        name
    })
}

/// Reversed octets (IPv4) or nibbles (IPv6) of `ip`, as DNS lists are queried.
pub fn reversed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => {
            let hex: Vec<String> = v6.octets().iter().map(|byte| format!("{byte:02x}")).collect();
            hex.concat().chars().rev().map(|c| c.to_string()).collect::<Vec<_>>().join(".")
        }
    }
}

/// True when `name` is `base` or under it.
fn under(name: &str, base: &str) -> bool {
    name == base || (name.len() > base.len() && name.ends_with(base) && name[..name.len() - base.len()].ends_with('.'))
}

struct Data {
    records: HashMap<String, Vec<Record>>,
    ttl: u32,
    zones: Vec<String>,
    nxdomain: Vec<String>,
    servfail: Vec<String>,
    blackhole: Vec<String>,
}

/// The reply to one query; the SOA goes to the authority section of negative answers.
struct Reply {
    code: ResponseCode,
    answers: Vec<Record>,
    soa: Option<Record>,
}

impl Reply {
    fn error(code: ResponseCode) -> Option<Reply> {
        Some(Reply { code, answers: Vec::new(), soa: None })
    }
}

impl Data {
    /// The reply for a query, `None` when the query is to be dropped.
    fn answer(&self, qname: &str, qtype: RecordType) -> Option<Reply> {
        if self.blackhole.iter().any(|b| under(qname, b)) {
            return None;
        }
        if self.servfail.iter().any(|s| under(qname, s)) {
            return Reply::error(ResponseCode::ServFail);
        }
        // The most specific zone owns the name; anything outside all zones is refused.
        let Some(zone) = self.zones.iter().filter(|z| under(qname, z)).max_by_key(|z| z.len()) else {
            return Reply::error(ResponseCode::Refused);
        };
        let soa = Some(self.soa(zone));
        if self.nxdomain.iter().any(|n| under(qname, n)) {
            return Some(Reply { code: ResponseCode::NXDomain, answers: Vec::new(), soa });
        }

        let mut answers = Vec::new();
        let mut name = qname.to_string();
        for _ in 0..8 {
            let Some(here) = self.records.get(&name) else { break };
            let wanted: Vec<Record> = here.iter().filter(|r| r.record_type() == qtype).cloned().collect();
            if !wanted.is_empty() {
                answers.extend(wanted);
                return Some(Reply { code: ResponseCode::NoError, answers, soa: None });
            }
            let Some(alias) = here.iter().find(|r| r.record_type() == RecordType::CNAME) else { break };
            answers.push(alias.clone());
            let RData::CNAME(CNAME(target)) = &alias.data else { break };
            name = key(&target.to_ascii());
            if !self.zones.iter().any(|z| under(&name, z)) {
                // Out-of-zone target: the client resolves it itself.
                return Some(Reply { code: ResponseCode::NoError, answers, soa: None });
            }
        }
        let exists = self.records.keys().any(|owner| under(owner, &name));
        let code = if exists { ResponseCode::NoError } else { ResponseCode::NXDomain };
        Some(Reply { code, answers, soa })
    }

    fn soa(&self, zone: &str) -> Record {
        let mname = name_of(&format!("ns.{zone}"));
        let rname = name_of(&format!("hostmaster.{zone}"));
        Record::from_rdata(name_of(zone), self.ttl, RData::SOA(SOA::new(mname, rname, 1, 3600, 600, 86400, self.ttl)))
    }
}

struct Handler {
    data: Arc<Data>,
    queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
}

impl Handler {
    async fn respond<R: ResponseHandler>(&self, request: &Request, mut response_handle: R) -> ResponseInfo {
        self.queries.fetch_add(1, Ordering::SeqCst);
        if request.protocol() == Protocol::Tcp {
            self.tcp_queries.fetch_add(1, Ordering::SeqCst);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let builder = MessageResponseBuilder::from_message_request(request);
        let reply = match request.queries.queries().first() {
            Some(query) => self.data.answer(&key(&query.name().to_string()), query.query_type()),
            None => Reply::error(ResponseCode::FormErr),
        };
        let Some(Reply { code, answers, soa }) = reply else {
            // Not answering at all is what makes the client time out.
            metadata.response_code = ResponseCode::ServFail;
            return ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() });
        };
        metadata.response_code = code;
        metadata.authoritative = matches!(code, ResponseCode::NoError | ResponseCode::NXDomain);
        let response = builder.build(metadata, answers.iter(), std::iter::empty(), soa.iter(), std::iter::empty());
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() }),
        }
    }
}

// Written out instead of using the `async_trait` attribute the trait is declared with, so the
// tests need no dependency beyond hickory-server and tokio.
impl RequestHandler for Handler {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: ResponseHandler + 'async_trait,
        T: Time + 'async_trait,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.respond(request, response_handle))
    }
}

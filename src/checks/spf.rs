//! SPF (RFC 7208) for the two identities smtpf reports: MAIL FROM (`spf-mail=` in #717) and
//! HELO (`spf-helo=`). The result is kept on the session because greylisting uses it; SPF never
//! rejects mail by itself here.
//!
//! check_host() is implemented in this module on top of the project's resolver
//! ([`crate::dns::Dns`]) instead of coming from a crate. The maintained, permissively licensed
//! candidate, `mail-auth`, only builds on the supported toolchain at 0.13 (later releases need a
//! newer compiler through `mail-parser`), and that release answers Pass where RFC 7208 requires
//! PermError (two SPF records, an unknown mechanism), loses the qualifier of an include nested in
//! an include, has no void-lookup limit, and brings in RSA, Ed25519 and MIME parsing that SPF
//! does not need. Going through [`Dns`] also means SPF asks exactly the configured `dns-servers`,
//! is bounded by the same `dns-timeout` and shares the resolver's cache with the other checks.
//!
//! What is covered: the mechanisms `all`, `include`, `a`, `mx`, `ip4`, `ip6`, `exists` and `ptr`,
//! the modifiers `redirect` and `exp`, the qualifiers `+ - ~ ?`, macros with transformers and
//! delimiters (upper-case letters URL-escaped), the limit of 10 DNS-querying terms and of 2 void
//! lookups, PermError for several SPF records or any syntax error (the whole record is parsed
//! before it is evaluated), TempError for DNS failures and None when the domain has no record or
//! does not exist. `ptr` and `%{p}` use the client's validated PTR names (§5.5: at most 10 PTR
//! names, each kept only when its address records include the client; a failed PTR lookup makes
//! `ptr` not match, a failed address lookup skips that name), looked up once per evaluation.
//! Terms are separated by spaces only (a record with a tab, CR or LF between terms is a
//! PermError), a CIDR length is only a trailing `/digits` or `//digits` (a domain-spec may hold
//! `:` and `/`), names with octets such as spaces or `%` after expansion are asked for as they
//! are, and a TXT record of zero strings counts as an empty one.
//!
//! Two limits that never change a result: `exp` is checked for syntax but its explanation is
//! never fetched (nothing is rejected here, so there is no reply text to explain), and a
//! domain-spec whose expansion grows beyond [`MAX_EXPANSION`] octets is a PermError, so a hostile
//! record cannot make one term allocate without bound.
//!
//! Every evaluation is bounded: each lookup by the resolver's timeout, the whole check by one
//! timeout ([`time_limit`]), after which the result is TempError. Recursion through `include` and
//! `redirect` is bounded by the 10-term limit, so include loops and long redirect chains end in
//! PermError. Nothing here panics on hostile input.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::time::Duration;

use futures_util::future::join_all;

use crate::dns::{Dns, Lookup};

/// The seven results of RFC 7208 §2.6. The names, as [`fmt::Display`] writes them, are the
/// words smtpf logs in `spf-mail=` and `spf-helo=`, so log readers and greylisting rules written
/// for smtpf keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpfResult {
    /// The client is authorised to use the identity.
    Pass,
    /// The domain says the client is not authorised (`-`).
    Fail,
    /// The domain says the client is probably not authorised (`~`).
    SoftFail,
    /// The domain makes no statement about the client (`?`, or nothing matched).
    Neutral,
    /// No SPF record: the domain does not exist, has no record, or the identity is not a domain
    /// at all (an IP-literal or dotless HELO).
    None,
    /// A transient DNS failure (SERVFAIL, timeout) or the time limit was reached; a later try
    /// may give a definite answer.
    TempError,
    /// The published record cannot be interpreted: a syntax error, several SPF records, or a
    /// limit of the RFC exceeded.
    PermError,
}

impl SpfResult {
    /// The smtpf word for the result, for log lines and for comparing with configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            SpfResult::Pass => "Pass",
            SpfResult::Fail => "Fail",
            SpfResult::SoftFail => "SoftFail",
            SpfResult::Neutral => "Neutral",
            SpfResult::None => "None",
            SpfResult::TempError => "TempError",
            SpfResult::PermError => "PermError",
        }
    }
}

impl fmt::Display for SpfResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 7208 §4.6.4: at most this many terms that query the DNS (include, a, mx, ptr, exists,
/// redirect) in one evaluation, nested records included; one more is a PermError.
pub const MAX_DNS_TERMS: usize = 10;

/// RFC 7208 §4.6.4: at most this many terms whose lookup finds nothing (NXDOMAIN or no data);
/// one more is a PermError. This stops records built to make receivers query random names.
pub const MAX_VOID_LOOKUPS: usize = 2;

/// RFC 7208 §4.6.4: an `mx` mechanism whose domain has more MX records than this is a
/// PermError, so one term cannot cause more than this many address lookups.
pub const MAX_MX_HOSTS: usize = 10;

/// The longest expansion of one domain-spec accepted before the term is a PermError. Real names
/// are at most 253 octets (longer expansions are cut from the left, RFC 7208 §7.3); this only
/// stops hostile records from repeating large macros.
pub const MAX_EXPANSION: usize = 8192;

/// The longest a whole evaluation may take before it is TempError: one DNS timeout. SPF only
/// informs (#717, the greylisting key), runs beside the MX check, and must never push the MAIL
/// answer towards the MTA's command timeout; a normal evaluation is a few cached lookups.
pub fn time_limit(dns: &Dns) -> Duration {
    dns.timeout()
}

/// SPF for the MAIL FROM identity. `sender` is the bare reverse-path address (angle brackets
/// are tolerated); an empty sender (a bounce) is checked as `postmaster@<helo>` per RFC 7208
/// §2.4, and a sender without local part as `postmaster@<domain>`. Returns None when the domain
/// to check is not a usable domain name.
pub async fn check_mail(dns: &Dns, client_ip: IpAddr, helo: &str, sender: &str) -> SpfResult {
    let sender = bare(sender);
    let (local, domain) = if sender.is_empty() {
        if is_ip_literal(helo) {
            return SpfResult::None;
        }
        ("postmaster", helo)
    } else {
        match sender.rsplit_once('@') {
            Some(("", domain)) => ("postmaster", domain),
            Some((local, domain)) => (local, domain),
            None => ("postmaster", sender),
        }
    };
    evaluate(dns, client_ip, helo, local, domain).await
}

/// SPF for the HELO identity (`postmaster@<helo>`, RFC 7208 §2.3). An IP-literal or dotless
/// HELO cannot have a record, so it is None without a lookup.
pub async fn check_helo(dns: &Dns, client_ip: IpAddr, helo: &str) -> SpfResult {
    if is_ip_literal(helo) {
        return SpfResult::None;
    }
    evaluate(dns, client_ip, helo, "postmaster", helo).await
}

/// Removes surrounding white space and angle brackets from an address.
fn bare(address: &str) -> &str {
    let trimmed = address.trim();
    let trimmed = trimmed.strip_prefix('<').unwrap_or(trimmed);
    let trimmed = trimmed.strip_suffix('>').unwrap_or(trimmed);
    // A source route (`@a,@b:user@domain`, RFC 5321 §4.1.2) is ignored.
    match trimmed.strip_prefix('@').and_then(|_| trimmed.split_once(':')) {
        Some((_, rest)) => rest,
        None => trimmed,
    }
}

/// True for `[1.2.3.4]`, `[IPv6:...]` and a bare address: not a domain, so no SPF record.
fn is_ip_literal(helo: &str) -> bool {
    let helo = helo.trim();
    helo.starts_with('[') || helo.parse::<IpAddr>().is_ok()
}

/// The domain as check_host() uses it: trimmed, lower case, without the final dot; `None` when
/// it is malformed or not multi-label, which RFC 7208 §4.3 makes a None result.
fn normalise_domain(domain: &str) -> Option<String> {
    let domain = domain.trim();
    let domain = domain.strip_suffix('.').unwrap_or(domain).to_lowercase();
    if domain.is_empty() || domain.len() > 253 {
        return None;
    }
    let mut labels = 0;
    let mut last = "";
    for label in domain.split('.') {
        let allowed = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
        if label.is_empty() || label.len() > 63 || !label.chars().all(allowed) {
            return None;
        }
        labels += 1;
        last = label;
    }
    // A numeric top label is an address, not a domain.
    if labels < 2 || last.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(domain)
}

/// The facts one evaluation is about, the sources of the macros.
struct Identity {
    /// The client address; an IPv4-mapped IPv6 address is stored as IPv4 so `ip4` matches it.
    ip: IpAddr,
    /// The local part of the checked identity (`postmaster` when it has none).
    local: String,
    /// The domain of the checked identity (`%{o}`), normalised.
    domain: String,
    /// The HELO name as the client gave it (`%{h}`).
    helo: String,
    /// The client's validated PTR names, looked up the first time `ptr` or `%{p}` needs them.
    validated: std::sync::OnceLock<PtrNames>,
}

/// What the client's PTR names gave (§5.5).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PtrNames {
    /// The PTR lookup failed: `ptr` does not match, `%{p}` is `unknown`.
    Failed,
    /// No PTR record (a void lookup for `ptr`).
    Void,
    /// The names (lower case, without the final dot) whose A/AAAA records include the client.
    Validated(Vec<String>),
}

/// RFC 7208 §4.6.4: at most this many PTR names are looked up and checked.
pub const MAX_PTR_NAMES: usize = 10;

/// The client's validated PTR names, looked up once per evaluation.
async fn validated_names<'a>(dns: &Dns, identity: &'a Identity) -> &'a PtrNames {
    if let Some(known) = identity.validated.get() {
        return known;
    }
    let found = match dns.ptr(identity.ip).await {
        Lookup::Failed(_) => PtrNames::Failed,
        Lookup::NoRecords | Lookup::NxDomain => PtrNames::Void,
        Lookup::Found(names) => {
            let names: Vec<String> = names.into_iter().take(MAX_PTR_NAMES).collect();
            let checks = names.iter().map(|name| address_match(dns, name, identity.ip, 32, 128));
            let answers = join_all(checks).await;
            // An address lookup that fails skips that name (§5.5).
            PtrNames::Validated(
                names.into_iter().zip(answers).filter(|(_, answer)| answer == &Lookup::Found(true)).map(|(n, _)| n).collect(),
            )
        }
    };
    identity.validated.get_or_init(|| found)
}

/// Whether `name` is `domain` or a name under it (case already folded).
fn is_at_or_under(name: &str, domain: &str) -> bool {
    name == domain || name.strip_suffix(domain).is_some_and(|head| head.ends_with('.'))
}

/// The running counts the RFC limits, shared by nested records.
#[derive(Default)]
struct Budget {
    terms: usize,
    voids: usize,
}

impl Budget {
    /// Counts one DNS-querying term; PermError past the limit.
    fn term(&mut self) -> Result<(), SpfResult> {
        self.terms += 1;
        if self.terms > MAX_DNS_TERMS {
            Err(SpfResult::PermError)
        } else {
            Ok(())
        }
    }

    /// Counts one void lookup; PermError past the limit.
    fn void(&mut self) -> Result<(), SpfResult> {
        self.voids += 1;
        if self.voids > MAX_VOID_LOOKUPS {
            Err(SpfResult::PermError)
        } else {
            Ok(())
        }
    }
}

/// Runs check_host() for one identity under the overall time limit.
async fn evaluate(dns: &Dns, client_ip: IpAddr, helo: &str, local: &str, domain: &str) -> SpfResult {
    let Some(domain) = normalise_domain(domain) else {
        return SpfResult::None;
    };
    let ip = match client_ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client_ip, IpAddr::V4),
        v4 => v4,
    };
    let identity = Identity {
        ip,
        local: local.to_string(),
        domain: domain.clone(),
        helo: helo.trim().to_string(),
        validated: std::sync::OnceLock::new(),
    };
    let mut budget = Budget::default();
    let work = check_host(dns, &identity, domain, &mut budget);
    tokio::time::timeout(time_limit(dns), work).await.unwrap_or(SpfResult::TempError)
}

type Evaluation<'a> = Pin<Box<dyn Future<Output = SpfResult> + Send + 'a>>;

/// check_host() of RFC 7208 §4 for `domain`: fetch the record, parse it whole, evaluate it.
/// Boxed because `include` and `redirect` recurse into it.
fn check_host<'a>(dns: &'a Dns, identity: &'a Identity, domain: String, budget: &'a mut Budget) -> Evaluation<'a> {
    Box::pin(async move {
        let Some(domain) = normalise_domain(&domain) else {
            return SpfResult::None;
        };
        let texts = match dns.txt(&domain).await {
            Lookup::Found(texts) => texts,
            Lookup::NoRecords | Lookup::NxDomain => return SpfResult::None,
            Lookup::Failed(_) => return SpfResult::TempError,
        };
        let mut spf = texts.iter().filter(|text| is_spf_record(text));
        let Some(text) = spf.next() else {
            return SpfResult::None;
        };
        if spf.next().is_some() {
            return SpfResult::PermError;
        }
        let Ok(record) = parse_record(text) else {
            return SpfResult::PermError;
        };
        for directive in &record.directives {
            match matches(dns, identity, &domain, &directive.mechanism, budget).await {
                Ok(true) => return directive.qualifier,
                Ok(false) => {}
                Err(result) => return result,
            }
        }
        if let Some(target) = &record.redirect {
            if let Err(result) = budget.term() {
                return result;
            }
            let target = match expand_spec(dns, target, identity, &domain).await {
                Ok(target) => target,
                Err(result) => return result,
            };
            // §6.1: a redirect to a domain without a record is a PermError.
            return match check_host(dns, identity, target, budget).await {
                SpfResult::None => SpfResult::PermError,
                result => result,
            };
        }
        SpfResult::Neutral
    })
}

/// Whether one mechanism matches the client; `Err` carries a TempError or PermError that ends
/// the evaluation.
async fn matches(
    dns: &Dns,
    identity: &Identity,
    domain: &str,
    mechanism: &Mechanism,
    budget: &mut Budget,
) -> Result<bool, SpfResult> {
    match mechanism {
        Mechanism::All => Ok(true),
        Mechanism::Ip4 { network, prefix } => Ok(matches!(identity.ip, IpAddr::V4(ip) if in_v4(ip, *network, *prefix))),
        Mechanism::Ip6 { network, prefix } => Ok(matches!(identity.ip, IpAddr::V6(ip) if in_v6(ip, *network, *prefix))),
        Mechanism::Include(spec) => {
            budget.term()?;
            let target = expand_spec(dns, spec, identity, domain).await?;
            // §5.2: only Pass matches; an included domain without a record is a PermError.
            match check_host(dns, identity, target, budget).await {
                SpfResult::Pass => Ok(true),
                SpfResult::Fail | SpfResult::SoftFail | SpfResult::Neutral => Ok(false),
                SpfResult::TempError => Err(SpfResult::TempError),
                SpfResult::PermError | SpfResult::None => Err(SpfResult::PermError),
            }
        }
        Mechanism::A { domain: spec, v4_prefix, v6_prefix } => {
            budget.term()?;
            let target = match spec {
                Some(spec) => expand_spec(dns, spec, identity, domain).await?,
                None => domain.to_string(),
            };
            match address_match(dns, &target, identity.ip, *v4_prefix, *v6_prefix).await {
                Lookup::Found(found) => Ok(found),
                Lookup::NoRecords | Lookup::NxDomain => budget.void().map(|()| false),
                Lookup::Failed(_) => Err(SpfResult::TempError),
            }
        }
        Mechanism::Mx { domain: spec, v4_prefix, v6_prefix } => {
            budget.term()?;
            let target = match spec {
                Some(spec) => expand_spec(dns, spec, identity, domain).await?,
                None => domain.to_string(),
            };
            let hosts = match dns.mx(&target).await {
                Lookup::Found(records) => records,
                Lookup::NoRecords | Lookup::NxDomain => return budget.void().map(|()| false),
                Lookup::Failed(_) => return Err(SpfResult::TempError),
            };
            if hosts.len() > MAX_MX_HOSTS {
                return Err(SpfResult::PermError);
            }
            let lookups = hosts
                .iter()
                .filter(|mx| !mx.is_null())
                .map(|mx| address_match(dns, &mx.exchange, identity.ip, *v4_prefix, *v6_prefix));
            let answers = join_all(lookups).await;
            if answers.iter().any(|answer| answer == &Lookup::Found(true)) {
                Ok(true)
            } else if answers.iter().any(Lookup::is_failed) {
                Err(SpfResult::TempError)
            } else {
                Ok(false)
            }
        }
        Mechanism::Ptr(spec) => {
            budget.term()?;
            let target = match spec {
                Some(spec) => expand_spec(dns, spec, identity, domain).await?,
                None => domain.to_string(),
            }
            .to_lowercase();
            match validated_names(dns, identity).await {
                PtrNames::Failed => Ok(false),
                PtrNames::Void => budget.void().map(|()| false),
                PtrNames::Validated(names) => Ok(names.iter().any(|name| is_at_or_under(name, &target))),
            }
        }
        Mechanism::Exists(spec) => {
            budget.term()?;
            let target = expand_spec(dns, spec, identity, domain).await?;
            // §5.7: always an A lookup, whatever the client's address family.
            match dns.a(&target).await {
                Lookup::Found(_) => Ok(true),
                Lookup::NoRecords | Lookup::NxDomain => budget.void().map(|()| false),
                Lookup::Failed(_) => Err(SpfResult::TempError),
            }
        }
    }
}

/// Looks up the addresses of `name` in the client's family and says whether one of them, cut
/// to the prefix length, contains the client; other outcomes are passed through.
async fn address_match(dns: &Dns, name: &str, ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> Lookup<bool> {
    match ip {
        IpAddr::V4(ip) => dns.a(name).await.map(|addrs| addrs.iter().any(|&addr| in_v4(ip, addr, v4_prefix))),
        IpAddr::V6(ip) => dns.aaaa(name).await.map(|addrs| addrs.iter().any(|&addr| in_v6(ip, addr, v6_prefix))),
    }
}

/// True when `ip` is in `network`/`prefix` (prefix at most 32).
fn in_v4(ip: Ipv4Addr, network: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
    u32::from(ip) & mask == u32::from(network) & mask
}

/// True when `ip` is in `network`/`prefix` (prefix at most 128).
fn in_v6(ip: Ipv6Addr, network: Ipv6Addr, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
    u128::from(ip) & mask == u128::from(network) & mask
}

// ---- records ----------------------------------------------------------------------------

/// True for a TXT record that is an SPF record: `v=spf1` (any case) alone or followed by a space
/// (§4.5: the version is ended by SP or the end of the record). Others, such as `v=spf10`,
/// verification tokens or `v=spf1` followed by a tab, are not SPF.
fn is_spf_record(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 6 && bytes[..6].eq_ignore_ascii_case(b"v=spf1") && bytes.get(6).is_none_or(|b| *b == b' ')
}

/// A parsed SPF record: the directives in order and the redirect target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    directives: Vec<Directive>,
    redirect: Option<MacroString>,
}

/// A qualifier (kept as the result it gives on a match) and a mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Directive {
    qualifier: SpfResult,
    mechanism: Mechanism,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mechanism {
    All,
    Include(MacroString),
    A { domain: Option<MacroString>, v4_prefix: u8, v6_prefix: u8 },
    Mx { domain: Option<MacroString>, v4_prefix: u8, v6_prefix: u8 },
    Ptr(Option<MacroString>),
    Ip4 { network: Ipv4Addr, prefix: u8 },
    Ip6 { network: Ipv6Addr, prefix: u8 },
    Exists(MacroString),
}

/// Marks a syntax error; the record's result is then PermError.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SyntaxError;

/// Parses a whole record (which [`is_spf_record`] accepted); any bad term fails it all (§4.6).
fn parse_record(text: &str) -> Result<Record, SyntaxError> {
    // §4.6.1: terms are separated by one or more spaces, and only spaces; any other white space
    // is then inside a term, which fails its syntax.
    let mut terms = text.split(' ').filter(|term| !term.is_empty());
    terms.next();
    let mut record = Record { directives: Vec::new(), redirect: None };
    let mut seen_exp = false;
    for term in terms {
        let separator = term.find([':', '/', '=']);
        if let Some(at) = separator.filter(|&at| term.as_bytes()[at] == b'=') {
            let (name, value) = (&term[..at], &term[at + 1..]);
            if !is_modifier_name(name) {
                return Err(SyntaxError);
            }
            if name.eq_ignore_ascii_case("redirect") {
                if record.redirect.is_some() {
                    return Err(SyntaxError);
                }
                record.redirect = Some(parse_domain_spec(value)?);
            } else if name.eq_ignore_ascii_case("exp") {
                if seen_exp {
                    return Err(SyntaxError);
                }
                seen_exp = true;
                parse_domain_spec(value)?;
            } else {
                // §6: unknown modifiers are ignored, but must still be well formed.
                parse_macro_string(value, true)?;
            }
        } else {
            record.directives.push(parse_directive(term)?);
        }
    }
    Ok(record)
}

/// `name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )`.
fn is_modifier_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parses `[qualifier] mechanism`.
fn parse_directive(term: &str) -> Result<Directive, SyntaxError> {
    let (qualifier, rest) = match term.as_bytes().first() {
        Some(b'+') => (SpfResult::Pass, &term[1..]),
        Some(b'-') => (SpfResult::Fail, &term[1..]),
        Some(b'~') => (SpfResult::SoftFail, &term[1..]),
        Some(b'?') => (SpfResult::Neutral, &term[1..]),
        _ => (SpfResult::Pass, term),
    };
    let name_end = rest.find([':', '/']).unwrap_or(rest.len());
    let (name, argument) = rest.split_at(name_end);
    let mechanism = match name.to_ascii_lowercase().as_str() {
        "all" if argument.is_empty() => Mechanism::All,
        "include" => Mechanism::Include(required_domain(argument)?),
        "exists" => Mechanism::Exists(required_domain(argument)?),
        "ptr" => Mechanism::Ptr(optional_domain(argument)?),
        "a" | "mx" => {
            let (spec, cidr) = split_cidr(argument);
            let domain = optional_domain(spec)?;
            let (v4_prefix, v6_prefix) = parse_dual_cidr(cidr)?;
            if name.eq_ignore_ascii_case("a") {
                Mechanism::A { domain, v4_prefix, v6_prefix }
            } else {
                Mechanism::Mx { domain, v4_prefix, v6_prefix }
            }
        }
        "ip4" => {
            let value = argument.strip_prefix(':').ok_or(SyntaxError)?;
            let (address, prefix) = match value.split_once('/') {
                Some((address, prefix)) => (address, parse_prefix(prefix, 32)?),
                None => (value, 32),
            };
            Mechanism::Ip4 { network: address.parse().map_err(|_| SyntaxError)?, prefix }
        }
        "ip6" => {
            let value = argument.strip_prefix(':').ok_or(SyntaxError)?;
            let (address, prefix) = match value.split_once('/') {
                Some((address, prefix)) => (address, parse_prefix(prefix, 128)?),
                None => (value, 128),
            };
            Mechanism::Ip6 { network: address.parse().map_err(|_| SyntaxError)?, prefix }
        }
        _ => return Err(SyntaxError),
    };
    Ok(Directive { qualifier, mechanism })
}

/// `":" domain-spec`, required.
fn required_domain(argument: &str) -> Result<MacroString, SyntaxError> {
    parse_domain_spec(argument.strip_prefix(':').ok_or(SyntaxError)?)
}

/// `[":" domain-spec]`.
fn optional_domain(argument: &str) -> Result<Option<MacroString>, SyntaxError> {
    if argument.is_empty() {
        Ok(None)
    } else {
        required_domain(argument).map(Some)
    }
}

/// Splits the argument of `a` or `mx` into the domain part and the dual-cidr part, which is only
/// a trailing `/digits`, `//digits` or `/digits//digits` (§5.3, §5.4): a domain-spec may itself
/// contain `/` and `:` (`a:foo:bar/baz.example.com`), and a macro may use `/` as a delimiter.
fn split_cidr(argument: &str) -> (&str, &str) {
    let trailing_digits = |text: &str| text.len() - text.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let mut cut = argument.len();
    let digits = trailing_digits(argument);
    if digits > 0 && argument[..cut - digits].ends_with("//") {
        cut -= digits + 2;
    }
    let digits = trailing_digits(&argument[..cut]);
    let head = &argument[..cut - digits];
    if digits > 0 && head.ends_with('/') && !head.ends_with("//") {
        cut -= digits + 1;
    }
    argument.split_at(cut)
}

/// `[ "/" ip4-cidr-length ] [ "//" ip6-cidr-length ]`, with the defaults 32 and 128.
fn parse_dual_cidr(text: &str) -> Result<(u8, u8), SyntaxError> {
    if text.is_empty() {
        return Ok((32, 128));
    }
    if let Some(v6) = text.strip_prefix("//") {
        return Ok((32, parse_prefix(v6, 128)?));
    }
    let rest = text.strip_prefix('/').ok_or(SyntaxError)?;
    match rest.split_once("//") {
        Some((v4, v6)) => Ok((parse_prefix(v4, 32)?, parse_prefix(v6, 128)?)),
        None => Ok((parse_prefix(rest, 32)?, 128)),
    }
}

/// A prefix length: decimal digits without a leading zero, at most `max`.
fn parse_prefix(text: &str, max: u8) -> Result<u8, SyntaxError> {
    let well_formed = !text.is_empty()
        && text.len() <= 3
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    match text.parse::<u8>() {
        Ok(value) if well_formed && value <= max => Ok(value),
        _ => Err(SyntaxError),
    }
}

// ---- macros -----------------------------------------------------------------------------

/// A macro-string (§7.1), parsed once so a syntax error is found before evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MacroString(Vec<Token>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Text copied as is (including what `%%`, `%_` and `%-` stand for).
    Literal(String),
    /// `%%`, `%_` or `%-`: a macro-expand in the grammar, literal text once expanded.
    Escape(&'static str),
    /// `%{letter digits r delimiters}`.
    Macro(Macro),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Macro {
    /// The macro letter in lower case.
    letter: u8,
    /// An upper-case letter: URL-escape the value.
    escape: bool,
    /// Keep only this many right-hand parts.
    keep: Option<usize>,
    /// Reverse the parts first.
    reverse: bool,
    /// The characters that split the value into parts; "." when none are given.
    delimiters: String,
}

/// A domain-spec (§7.1): a macro-string that ends in a macro or in `.toplabel` (an optional
/// final dot allowed), and whose macros are not the explanation-only `c`, `r` and `t`.
fn parse_domain_spec(text: &str) -> Result<MacroString, SyntaxError> {
    let spec = parse_macro_string(text, false)?;
    let ends_well = match spec.0.last() {
        None => false,
        Some(Token::Macro(_) | Token::Escape(_)) => true,
        Some(Token::Literal(literal)) => {
            let literal = literal.strip_suffix('.').unwrap_or(literal);
            match literal.rsplit_once('.') {
                Some((_, top)) => is_top_label(top),
                // A final dot straight after a macro.
                None => literal.is_empty() && spec.0.len() > 1 && text.ends_with('.'),
            }
        }
    };
    if ends_well {
        Ok(spec)
    } else {
        Err(SyntaxError)
    }
}

/// `toplabel`: letters, digits and inner hyphens, not all digits (§7.1, RFC 3696).
fn is_top_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && bytes.iter().any(|b| b.is_ascii_alphabetic() || *b == b'-')
}

/// Parses a macro-string. `explanation` also allows the letters `c`, `r` and `t`, which only
/// explanation texts may use (and which unknown modifiers are given the benefit of).
fn parse_macro_string(text: &str, explanation: bool) -> Result<MacroString, SyntaxError> {
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c != '%' {
            // macro-literal: visible ASCII other than "%".
            if !c.is_ascii_graphic() {
                return Err(SyntaxError);
            }
            literal.push(c);
            rest = &rest[1..];
            continue;
        }
        let escape = match rest.as_bytes().get(1) {
            Some(b'%') => Some("%"),
            Some(b'_') => Some(" "),
            Some(b'-') => Some("%20"),
            Some(b'{') => None,
            _ => return Err(SyntaxError),
        };
        if !literal.is_empty() {
            tokens.push(Token::Literal(std::mem::take(&mut literal)));
        }
        if let Some(escape) = escape {
            tokens.push(Token::Escape(escape));
            rest = &rest[2..];
            continue;
        }
        let body_end = rest.find('}').ok_or(SyntaxError)?;
        tokens.push(Token::Macro(parse_macro(&rest[2..body_end], explanation)?));
        rest = &rest[body_end + 1..];
    }
    if !literal.is_empty() {
        tokens.push(Token::Literal(literal));
    }
    Ok(MacroString(tokens))
}

/// Parses the inside of `%{...}`: `macro-letter transformers *delimiter`.
fn parse_macro(body: &str, explanation: bool) -> Result<Macro, SyntaxError> {
    let bytes = body.as_bytes();
    let letter = *bytes.first().ok_or(SyntaxError)?;
    let allowed: &[u8] = if explanation { b"slodiphvcrt" } else { b"slodiphv" };
    if !allowed.contains(&letter.to_ascii_lowercase()) {
        return Err(SyntaxError);
    }
    let mut at = 1;
    let digits_end = at + bytes[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    let keep = if digits_end > at {
        // Anything over 128 parts keeps them all (an IPv6 address has 32), so saturate.
        let value = body[at..digits_end].bytes().fold(0usize, |n, b| n.saturating_mul(10).saturating_add(usize::from(b - b'0')));
        if value == 0 {
            return Err(SyntaxError);
        }
        Some(value.min(1024))
    } else {
        None
    };
    at = digits_end;
    let reverse = bytes.get(at).is_some_and(|b| b.eq_ignore_ascii_case(&b'r'));
    if reverse {
        at += 1;
    }
    let delimiters = &body[at..];
    if !delimiters.bytes().all(|b| matches!(b, b'.' | b'-' | b'+' | b',' | b'/' | b'_' | b'=')) {
        return Err(SyntaxError);
    }
    Ok(Macro {
        letter: letter.to_ascii_lowercase(),
        escape: letter.is_ascii_uppercase(),
        keep,
        reverse,
        delimiters: if delimiters.is_empty() { ".".to_string() } else { delimiters.to_string() },
    })
}

/// Expands a domain-spec, looking up the client's validated PTR names first when the spec uses
/// `%{p}`.
async fn expand_spec(dns: &Dns, spec: &MacroString, identity: &Identity, domain: &str) -> Result<String, SpfResult> {
    if spec.0.iter().any(|t| matches!(t, Token::Macro(m) if m.letter == b'p')) {
        validated_names(dns, identity).await;
    }
    expand_domain(spec, identity, domain)
}

/// Expands a domain-spec for a lookup and cuts it to 253 octets from the left, whole labels at
/// a time (§7.3). PermError when the expansion exceeds [`MAX_EXPANSION`].
fn expand_domain(spec: &MacroString, identity: &Identity, domain: &str) -> Result<String, SpfResult> {
    let expanded = expand(spec, identity, domain).ok_or(SpfResult::PermError)?;
    let mut name = expanded.strip_suffix('.').unwrap_or(&expanded);
    while name.len() > 253 {
        match name.split_once('.') {
            Some((_, rest)) => name = rest,
            None => break,
        }
    }
    Ok(name.to_string())
}

/// Expands a macro-string for `domain` (the `%{d}` of the record being evaluated); `None` when
/// the result grows beyond [`MAX_EXPANSION`].
fn expand(spec: &MacroString, identity: &Identity, domain: &str) -> Option<String> {
    let mut out = String::new();
    for token in &spec.0 {
        match token {
            Token::Literal(text) => out.push_str(text),
            Token::Escape(text) => out.push_str(text),
            Token::Macro(m) => {
                let value = macro_value(m.letter, identity, domain);
                let mut parts: Vec<&str> = value.split(|c: char| m.delimiters.contains(c)).collect();
                if m.reverse {
                    parts.reverse();
                }
                if let Some(keep) = m.keep {
                    parts.drain(..parts.len().saturating_sub(keep));
                }
                let joined = parts.join(".");
                if m.escape {
                    url_escape(&joined, &mut out);
                } else {
                    out.push_str(&joined);
                }
            }
        }
        if out.len() > MAX_EXPANSION {
            return None;
        }
    }
    Some(out)
}

/// The value of one macro letter (§7.2).
fn macro_value<'a>(letter: u8, identity: &'a Identity, domain: &'a str) -> Cow<'a, str> {
    match letter {
        b's' => Cow::Owned(format!("{}@{}", identity.local, identity.domain)),
        b'l' => Cow::Borrowed(&identity.local),
        b'o' => Cow::Borrowed(&identity.domain),
        b'd' => Cow::Borrowed(domain),
        b'i' => Cow::Owned(dotted_ip(identity.ip)),
        b'v' => Cow::Borrowed(if identity.ip.is_ipv4() { "in-addr" } else { "ip6" }),
        b'h' => Cow::Borrowed(&identity.helo),
        b'c' => Cow::Owned(identity.ip.to_string()),
        b'r' => Cow::Borrowed("unknown"),
        b't' => {
            Cow::Owned(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()).to_string())
        }
        // §7.3: a validated name that is <domain> or under it, else any validated name.
        b'p' => match identity.validated.get() {
            Some(PtrNames::Validated(names)) => {
                let domain = domain.to_lowercase();
                let best = names.iter().find(|n| **n == domain).or_else(|| names.iter().find(|n| is_at_or_under(n, &domain)));
                match best.or(names.first()) {
                    Some(name) => Cow::Owned(name.clone()),
                    None => Cow::Borrowed("unknown"),
                }
            }
            _ => Cow::Borrowed("unknown"),
        },
        _ => Cow::Borrowed("unknown"),
    }
}

/// `%{i}`: dotted quad for IPv4, 32 dot-separated nibbles for IPv6 (§7.3).
fn dotted_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let nibbles: Vec<String> =
                v6.octets().iter().flat_map(|byte| [byte >> 4, byte & 0x0f]).map(|nibble| format!("{nibble:x}")).collect();
            nibbles.join(".")
        }
    }
}

/// Appends `text` URL-escaped (RFC 3986 unreserved characters kept, every other octet `%XX`),
/// as upper-case macro letters require.
fn url_escape(text: &str, out: &mut String) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(sender: &str, ip: &str) -> Identity {
        let (local, domain) = sender.rsplit_once('@').unwrap();
        Identity {
            ip: ip.parse().unwrap(),
            local: local.into(),
            domain: domain.into(),
            helo: "mx.example.org".into(),
            validated: std::sync::OnceLock::new(),
        }
    }

    fn expand_text(text: &str, ip: &str) -> String {
        let id = identity("strong-bad@email.example.com", ip);
        let spec = parse_macro_string(text, false).unwrap();
        expand(&spec, &id, "email.example.com").unwrap()
    }

    #[test]
    fn result_words_are_smtpf_words() {
        let all = [
            (SpfResult::Pass, "Pass"),
            (SpfResult::Fail, "Fail"),
            (SpfResult::SoftFail, "SoftFail"),
            (SpfResult::Neutral, "Neutral"),
            (SpfResult::None, "None"),
            (SpfResult::TempError, "TempError"),
            (SpfResult::PermError, "PermError"),
        ];
        for (result, word) in all {
            assert_eq!(result.to_string(), word);
        }
    }

    // The examples of RFC 7208 §7.4.
    #[test]
    fn macro_examples_of_the_rfc() {
        let v4 = "192.0.2.3";
        let cases = [
            ("%{s}", "strong-bad@email.example.com"),
            ("%{o}", "email.example.com"),
            ("%{d}", "email.example.com"),
            ("%{d4}", "email.example.com"),
            ("%{d3}", "email.example.com"),
            ("%{d2}", "example.com"),
            ("%{d1}", "com"),
            ("%{dr}", "com.example.email"),
            ("%{d2r}", "example.email"),
            ("%{l}", "strong-bad"),
            ("%{l-}", "strong.bad"),
            ("%{lr}", "strong-bad"),
            ("%{lr-}", "bad.strong"),
            ("%{l1r-}", "strong"),
            ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
            ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
            ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
            ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
            ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
        ];
        for (text, expected) in cases {
            assert_eq!(expand_text(text, v4), expected, "{text}");
        }
        assert_eq!(
            expand_text("%{ir}.%{v}._spf.%{d2}", "2001:db8::cb01"),
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
        );
    }

    #[test]
    fn macro_escapes_and_url_encoding() {
        assert_eq!(expand_text("a%%b%_c%-d.example.com", "192.0.2.3"), "a%b c%20d.example.com");
        assert_eq!(expand_text("%{h}", "192.0.2.3"), "mx.example.org");
        assert_eq!(expand_text("%{p}", "192.0.2.3"), "unknown");
        let id = identity("a b+c@example.com", "192.0.2.3");
        let spec = parse_macro_string("%{L}.%{S}", false).unwrap();
        assert_eq!(expand(&spec, &id, "example.com").unwrap(), "a%20b%2Bc.a%20b%2Bc%40example.com");
        let spec = parse_macro_string("%{l+}", false).unwrap();
        assert_eq!(expand(&spec, &id, "example.com").unwrap(), "a b.c");
        let spec = parse_macro_string("%{i2R}", false).unwrap();
        assert_eq!(expand(&spec, &id, "example.com").unwrap(), "0.192");
    }

    #[test]
    fn macro_syntax_errors() {
        for bad in ["%", "%{", "%{d", "%{x}", "%{c}", "%{d0}", "%{d2x}", "%{}", "%x", "a%b", "é"] {
            assert!(parse_macro_string(bad, false).is_err(), "{bad:?}");
        }
        assert!(parse_macro_string("%{c}.%{r}.%{t}", true).is_ok());
        assert!(parse_macro_string("%{d99999999999999999999999}", false).is_ok());
    }

    #[test]
    fn domain_specs_need_a_top_label_or_a_macro() {
        for good in ["example.com", "example.com.", "_spf.%{d}", "%{d}", "%{i}.%{d}.", "x.1-2", "%{ir}.bl.test"] {
            assert!(parse_domain_spec(good).is_ok(), "{good:?}");
        }
        for bad in ["", "localhost", "example.123", "example.-com", "example.com-", "%{d}com", "a..b:c"] {
            assert!(parse_domain_spec(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_expansions_are_cut_from_the_left_or_refused() {
        let id = identity(&format!("{}@example.com", "x".repeat(60)), "192.0.2.3");
        // Five 60-octet labels and "example.com": 316 octets; four labels would still be 255.
        let spec = parse_domain_spec("%{l}.%{l}.%{l}.%{l}.%{l}.example.com").unwrap();
        let name = expand_domain(&spec, &id, "example.com").unwrap();
        assert_eq!(name, format!("{0}.{0}.{0}.example.com", "x".repeat(60)));

        let huge = parse_domain_spec(&format!("{}.example.com", "%{s}".repeat(1000))).unwrap();
        assert_eq!(expand_domain(&huge, &id, "example.com"), Err(SpfResult::PermError));
    }

    #[test]
    fn records_parse_into_directives() {
        let record = parse_record(concat!(
            "v=spf1 +a -mx:mail.example.com/24 ~ip4:192.0.2.0/24 ?ip6:2001:db8::/32 include:_spf.example.com",
            " exists:%{ir}.bl.example.com ptr a//64 mx/26//60 redirect=_spf.example.org exp=exp.example.com",
            " x-unknown=%{c} -all"
        ))
        .unwrap();
        let kinds: Vec<(SpfResult, &Mechanism)> = record.directives.iter().map(|d| (d.qualifier, &d.mechanism)).collect();
        assert_eq!(kinds.len(), 10);
        assert_eq!(kinds[0], (SpfResult::Pass, &Mechanism::A { domain: None, v4_prefix: 32, v6_prefix: 128 }));
        assert!(matches!(kinds[1], (SpfResult::Fail, Mechanism::Mx { domain: Some(_), v4_prefix: 24, v6_prefix: 128 })));
        assert_eq!(kinds[2], (SpfResult::SoftFail, &Mechanism::Ip4 { network: Ipv4Addr::new(192, 0, 2, 0), prefix: 24 }));
        assert_eq!(kinds[3], (SpfResult::Neutral, &Mechanism::Ip6 { network: "2001:db8::".parse().unwrap(), prefix: 32 }));
        assert!(matches!(kinds[4].1, Mechanism::Include(_)));
        assert!(matches!(kinds[5].1, Mechanism::Exists(_)));
        assert_eq!(kinds[6].1, &Mechanism::Ptr(None));
        assert_eq!(kinds[7].1, &Mechanism::A { domain: None, v4_prefix: 32, v6_prefix: 64 });
        assert_eq!(kinds[8].1, &Mechanism::Mx { domain: None, v4_prefix: 26, v6_prefix: 60 });
        assert_eq!(kinds[9], (SpfResult::Fail, &Mechanism::All));
        assert!(record.redirect.is_some());
        // A "/" inside a macro is a delimiter, not a prefix length.
        let record = parse_record("v=spf1 a:%{l/}.example.com/24").unwrap();
        assert!(matches!(record.directives[0].mechanism, Mechanism::A { domain: Some(_), v4_prefix: 24, v6_prefix: 128 }));
        assert!(parse_record("V=SPF1 -ALL").is_ok());
    }

    #[test]
    fn record_syntax_errors() {
        let bad = [
            "v=spf1 foo",
            "v=spf1 foo:bar",
            "v=spf1 all:x",
            "v=spf1 all/24",
            "v=spf1 ip4:192.0.2.1/33",
            "v=spf1 ip4:192.0.2.1/024",
            "v=spf1 ip4:192.0.2",
            "v=spf1 ip4:192.0.2.001",
            "v=spf1 ip4",
            "v=spf1 ip6:2001:db8::/129",
            "v=spf1 ip6:192.0.2.1",
            "v=spf1 a:",
            "v=spf1 a/",
            "v=spf1 a//",
            "v=spf1 a/33",
            "v=spf1 mx//129",
            "v=spf1 include",
            "v=spf1 include:localhost",
            "v=spf1 exists:%{x}.example.com",
            "v=spf1 redirect=a.example.com redirect=b.example.com",
            "v=spf1 exp=a.example.com exp=b.example.com",
            "v=spf1 redirect=",
            "v=spf1 1bad=x",
            "v=spf1 -redirect=a.example.com",
            "v=spf1 *all",
        ];
        for text in bad {
            assert!(is_spf_record(text));
            assert_eq!(parse_record(text), Err(SyntaxError), "{text:?}");
        }
    }

    #[test]
    fn only_version_one_records_are_spf() {
        assert!(is_spf_record("v=spf1"));
        assert!(is_spf_record("v=spf1 -all"));
        assert!(is_spf_record("V=Spf1 -all"));
        assert!(!is_spf_record("v=spf10 -all"));
        assert!(!is_spf_record(" v=spf1 -all"));
        assert!(!is_spf_record("spf2.0/pra -all"));
        assert!(!is_spf_record("google-site-verification=x"));
        assert!(!is_spf_record("v=spf"));
        assert!(!is_spf_record("v=spf\u{e9}"));
    }

    #[test]
    fn network_matching() {
        let ip = Ipv4Addr::new(192, 0, 2, 130);
        assert!(in_v4(ip, Ipv4Addr::new(192, 0, 2, 128), 25));
        assert!(!in_v4(ip, Ipv4Addr::new(192, 0, 2, 0), 25));
        assert!(in_v4(ip, Ipv4Addr::new(10, 0, 0, 0), 0));
        assert!(!in_v4(ip, Ipv4Addr::new(192, 0, 2, 131), 32));
        let ip: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert!(in_v6(ip, "2001:db8::".parse().unwrap(), 32));
        assert!(!in_v6(ip, "2001:db9::".parse().unwrap(), 32));
        assert!(in_v6(ip, "::".parse().unwrap(), 0));
        assert!(in_v6(ip, ip, 128));
    }

    #[test]
    fn identities() {
        assert_eq!(bare("<user@example.com>"), "user@example.com");
        assert_eq!(bare(" <@relay.example,@other.example:user@example.com> "), "user@example.com");
        assert_eq!(bare("<>"), "");
        assert!(is_ip_literal("[192.0.2.1]"));
        assert!(is_ip_literal("[IPv6:2001:db8::1]"));
        assert!(is_ip_literal("192.0.2.1"));
        assert!(!is_ip_literal("mx.example.com"));
        assert_eq!(normalise_domain("Example.COM."), Some("example.com".to_string()));
        assert_eq!(normalise_domain("_spf.example.com"), Some("_spf.example.com".to_string()));
        for bad in ["", ".", "localhost", "a..b", "1.2.3.4", "exa mple.com", "a@b.com", "[1.2.3.4]"] {
            assert_eq!(normalise_domain(bad), None, "{bad:?}");
        }
        assert_eq!(normalise_domain(&format!("{}.com", "x".repeat(64))), None);
    }
}

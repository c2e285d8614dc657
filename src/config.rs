//! The configuration file: TOML whose keys are smtpf's option names, validated into [`Config`].
//!
//! Every key has a default (smtpf's, unless the project documents otherwise), every error names the
//! key and the line it is on, and unknown keys are refused with a hint for near-misses, because a
//! silently ignored typo in a mail filter's config is a policy that quietly is not applied. The same
//! code validates at start-up, for `check-config`, and for a SIGHUP reload.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checks::digest::DupPolicy;
use crate::checks::dnslist::{parse_list, parse_zones, Zone};
use crate::checks::greykey::{parse_key, KeyWord};
use crate::log::{Target, Verbose};
use crate::milter::listen::{parse_octal_mode, SocketSpec};
use crate::store::{CacheType, RedisOptions, StoreSpec};

/// The validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it came from (None: the embedded defaults).
    pub path: Option<PathBuf>,
    pub milter_socket: SocketSpec,
    pub milter_socket_mode: u32,
    pub run_user: Option<String>,
    pub run_group: Option<String>,
    pub log_target: Target,
    pub verbose: Verbose,
    /// Which store holds greylist and duplicate records.
    pub cache_type: CacheType,
    /// None: the default, resolved at start-up by [`Config::effective_cache_path`].
    pub cache_path: Option<PathBuf>,
    /// The Redis server (`cache-type = "redis"`); validated, credentials included.
    pub cache_redis_url: String,
    /// Prepended to every Redis key, so deployments can share a server.
    pub cache_key_prefix: String,
    /// Bound on each Redis call.
    pub cache_timeout: Duration,
    pub dns_servers: Vec<SocketAddr>,
    pub dns_timeout: Duration,
    pub milter_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// The access-map text file; None: no access-map (#115).
    pub access_map: Option<PathBuf>,
    /// DNS lists consulted at connect, in smtpf/postscreen syntax (validated entries).
    pub dns_bl: Vec<Zone>,
    pub dns_wl: Vec<Zone>,
    pub dns_gl: Vec<Zone>,
    /// Sum of dns-bl weights that makes a client black listed.
    pub dns_bl_threshold: i32,
    /// Hold pre-RCPT rejects and give them at each RCPT (white-listed recipients still get mail).
    pub smtp_delay_checks: bool,
    /// Domain lists for hosts of URIs in message bodies.
    pub uri_bl: Vec<Zone>,
    /// IP lists for the addresses of URI hosts.
    pub uri_dns_bl: Vec<Zone>,
    pub uri_bl_policy: UriPolicy,
    /// Most URI hosts looked up per message.
    pub uri_max_test: usize,
    /// Refuse senders whose domain has no usable MX (smtpf's `mail-require-mx`).
    pub mail_require_mx: bool,
    /// Domains (and their subdomains) that are ours: never MX-verified (split DNS).
    pub local_domains: Vec<String>,
    /// Greylisting key elements, in smtpf's order; empty: greylisting off.
    pub grey_key: Vec<KeyWord>,
    pub grey_temp_fail_period: u64,
    pub grey_temp_fail_ttl: u64,
    /// Lifetime of a passed record (smtpf's generic accept TTL).
    pub cache_accept_ttl: u64,
    pub grey_report_header: String,
    pub grey_ipv4_prefix: u8,
    pub grey_ipv6_prefix: u8,
    /// Answer 421 (the MTA closes the session, smtpf's DROP) when the key names the host.
    pub grey_drop: bool,
    pub grey_dry_run: bool,
    /// Content greylisting: decide at end of message on a hash of the decoded body.
    pub grey_content: bool,
    pub cache_gc_interval: Duration,
    /// How long a message is remembered for duplicate detection; 0: off.
    pub dupmsg_ttl: u64,
    pub dupmsg_policy: DupPolicy,
}

/// The Redis server `cache-type = "redis"` uses unless `cache-redis-url` says otherwise.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// Longest `cache-timeout` accepted: a store call must end long before the MTA's milter timeouts
/// (Postfix waits 30 s for a milter command).
pub const MAX_CACHE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a URI list hit does to the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriPolicy {
    Reject,
    Discard,
    None,
}

/// The socket the embedded defaults listen on: loopback TCP, so a first run needs no root. 8894
/// avoids OpenDKIM's customary 8891 and OpenDMARC's 8893.
pub const DEFAULT_SOCKET: &str = "inet:8894@127.0.0.1";

/// The conventional config file, read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/smtpf-milter/smtpf-milter.toml";

impl Default for Config {
    fn default() -> Self {
        Config {
            path: None,
            milter_socket: SocketSpec::parse(DEFAULT_SOCKET).expect("default socket parses"),
            milter_socket_mode: 0o660,
            run_user: None,
            run_group: None,
            log_target: Target::Stderr,
            verbose: Verbose::default(),
            cache_type: CacheType::Sqlite,
            cache_path: None,
            cache_redis_url: DEFAULT_REDIS_URL.into(),
            cache_key_prefix: "smtpf-milter:".into(),
            cache_timeout: Duration::from_secs(1),
            dns_servers: Vec::new(),
            dns_timeout: Duration::from_secs(5),
            milter_timeout: Duration::from_secs(7210),
            shutdown_timeout: Duration::from_secs(30),
            access_map: None,
            dns_bl: Vec::new(),
            dns_wl: Vec::new(),
            dns_gl: Vec::new(),
            dns_bl_threshold: 1,
            smtp_delay_checks: false,
            uri_bl: Vec::new(),
            uri_dns_bl: Vec::new(),
            uri_bl_policy: UriPolicy::Reject,
            uri_max_test: 10,
            mail_require_mx: true,
            local_domains: Vec::new(),
            grey_key: vec![KeyWord::Ptr, KeyWord::Mail, KeyWord::Rcpt],
            grey_temp_fail_period: 600,
            grey_temp_fail_ttl: 90_000,
            cache_accept_ttl: 604_800,
            grey_report_header: "X-Grey-Report".into(),
            grey_ipv4_prefix: 32,
            grey_ipv6_prefix: 128,
            grey_drop: true,
            grey_dry_run: false,
            grey_content: false,
            cache_gc_interval: Duration::from_secs(300),
            dupmsg_ttl: 90_000,
            dupmsg_policy: DupPolicy::Tag,
        }
    }
}

/// One key the file may hold: its name, default (as written in the file) and meaning.
pub struct KeyDoc {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Every key, with default and meaning; also the source of near-miss hints.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc { name: "milter-socket", default: "\"inet:8894@127.0.0.1\"", meaning: "Where the MTA connects: unix:PATH, local:PATH, inet:PORT@HOST, inet:HOST:PORT, inet6:PORT@HOST. Ignored under systemd socket activation. Restart to change." },
    KeyDoc { name: "milter-socket-mode", default: "\"0660\"", meaning: "Permissions of a unix socket (octal string). Restart to change." },
    KeyDoc { name: "run-user", default: "\"\"", meaning: "When started as root: the user to switch to after binding the socket. Empty: stay as started. Restart to change." },
    KeyDoc { name: "run-group", default: "\"\"", meaning: "When started as root: the group to switch to (default: run-user's primary group). The unix socket is given to this group. Restart to change." },
    KeyDoc { name: "log-target", default: "\"stderr\"", meaning: "\"stderr\" (the journal under systemd) or \"syslog\" (facility mail, ident smtpf-milter, next to the MTA's lines)." },
    KeyDoc { name: "verbose", default: "\"info\"", meaning: "smtpf verbose words, comma separated or a list: info (default), debug, all, or module words milter, access, dns, rbl, uri, mx, spf, grey, dupmsg, cache; -word turns one off." },
    KeyDoc { name: "cache-type", default: "\"sqlite\"", meaning: "Where greylist and duplicate records live: \"sqlite\" (the cache-path file, one host) or \"redis\" (cache-redis-url, shared by several MX hosts; docs/several-mx.md). Restart to change." },
    KeyDoc { name: "cache-path", default: "(see text)", meaning: "SQLite state file. Default: $STATE_DIRECTORY/cache.sq3 under systemd, /var/lib/smtpf-milter/cache.sq3 as root, ./smtpf-milter-cache.sq3 otherwise. Restart to change." },
    KeyDoc { name: "cache-redis-url", default: "\"redis://127.0.0.1:6379/0\"", meaning: "With cache-type = \"redis\": the server, as redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss://... for TLS, or redis+unix:///PATH?db=N. An unreachable server does not stop the daemon: checks fail open until it answers. Restart to change." },
    KeyDoc { name: "cache-key-prefix", default: "\"smtpf-milter:\"", meaning: "With cache-type = \"redis\": prepended to every key, so several deployments can share one Redis (hosts sharing records must use the same prefix). Restart to change." },
    KeyDoc { name: "cache-timeout", default: "1", meaning: "With cache-type = \"redis\": how long one Redis call may take (seconds, or e.g. \"250ms\"; at most 10 s) before the check gives up and lets the message through. Restart to change." },
    KeyDoc { name: "dns-servers", default: "[]", meaning: "Name servers as \"IP\" or \"IP:PORT\"; empty: the system resolver (/etc/resolv.conf)." },
    KeyDoc { name: "dns-timeout", default: "5", meaning: "Seconds (or \"5s\") one DNS lookup may take; a list lookup that times out counts as not listed." },
    KeyDoc { name: "milter-timeout", default: "7210", meaning: "Seconds the MTA may stay silent on a milter connection before it is closed (libmilter's default)." },
    KeyDoc { name: "shutdown-timeout", default: "30", meaning: "On SIGTERM, how long open sessions may run before they are closed." },
    KeyDoc { name: "access-map", default: "\"\"", meaning: "smtpf access-map text file (docs/access-map.md): Connect:, Helo:, From:, To:, combos, Grey-Connect:, Grey-To:. Read at start and at reload; empty: none." },
    KeyDoc { name: "dns-bl", default: "[]", meaning: "IP block lists queried at connect: \"zone\", \"zone/mask\" (smtpf) or \"zone=127.0.0.[2..11]*weight\" (postscreen). A listed client gets 550 5.7.0 ... black listed by ZONE #525." },
    KeyDoc { name: "dns-bl-threshold", default: "1", meaning: "Sum of dns-bl weights from which a client counts as listed (1: any hit, as smtpf)." },
    KeyDoc { name: "dns-wl", default: "[]", meaning: "IP white lists queried at connect (same syntax): a hit makes the client white, skipping policy checks and greylisting." },
    KeyDoc { name: "dns-gl", default: "[]", meaning: "IP grey lists queried at connect (same syntax): a hit skips pre-DATA policy checks and greylisting; content checks still apply." },
    KeyDoc { name: "smtp-delay-checks", default: "false", meaning: "Hold rejects decided before RCPT (dns-bl, access-map) and give them at each RCPT, so white-listed recipients (To: OK) still get mail." },
    KeyDoc { name: "uri-bl", default: "[]", meaning: "Domain block lists (e.g. a SURBL-style zone) for hosts of URIs in the message body; queried with the registered domain (public suffix list)." },
    KeyDoc { name: "uri-dns-bl", default: "[]", meaning: "IP block lists applied to the addresses of URI hosts (and to IP-literal URIs)." },
    KeyDoc { name: "uri-bl-policy", default: "\"reject\"", meaning: "What a URI list hit does: \"reject\" (550 5.7.1 rejected content ... #895), \"discard\" (accept and throw away, #785), \"none\" (log only)." },
    KeyDoc { name: "uri-max-test", default: "10", meaning: "Most distinct URI hosts looked up per message." },
    KeyDoc { name: "mail-require-mx", default: "true", meaning: "At MAIL, verify the sender's domain: NXDOMAIN → 553 5.1.8 #434; no usable MX (null MX, only private/loopback/reserved addresses) → 553 5.1.8 #439; lookup failure → 451 #436/#907 (the sender retries). The null sender is checked by its HELO name but never refused." },
    KeyDoc { name: "local-domains", default: "[]", meaning: "Our own domains (and subdomains): senders from them are not MX-verified (split DNS)." },
    KeyDoc { name: "grey-key", default: "\"ptr,mail,rcpt\"", meaning: "Greylisting key elements: ip, ptr (PTR name minus its first label; the IP when the PTR is not verified or SPF failed), ptrn (PTR with digit runs as #), helo, helos, mail, rcpt. Empty: greylisting off." },
    KeyDoc { name: "grey-temp-fail-period", default: "600", meaning: "How long a new tuple is temp-failed before a retry passes; 0: greylisting off. Grey-Connect:/Grey-To: access-map entries override it." },
    KeyDoc { name: "grey-temp-fail-ttl", default: "90000", meaning: "How long a tuple that never retried is remembered (25 h)." },
    KeyDoc { name: "cache-accept-ttl", default: "604800", meaning: "How long a passed host/tuple passes at once (7 days); use slides it forward (at most once an hour)." },
    KeyDoc { name: "grey-report-header", default: "\"X-Grey-Report\"", meaning: "Header added to a message whose tuple passes for the first time (age, key, first-seen time); empty: none." },
    KeyDoc { name: "grey-ipv4-prefix", default: "32", meaning: "Aggregate the ip key element to this IPv4 prefix (postgrey users: 24)." },
    KeyDoc { name: "grey-ipv6-prefix", default: "128", meaning: "Aggregate the ip key element to this IPv6 prefix (postgrey users: 64)." },
    KeyDoc { name: "grey-drop", default: "true", meaning: "When the key names the host (ip, ptr, ptrn): answer 421 so the MTA closes the session, as smtpf drops the connection; false: 451." },
    KeyDoc { name: "grey-content", default: "false", meaning: "Content greylisting: a new tuple's first message is let through DATA, hashed (decoded MIME text, whitespace and MIME structure ignored) and temp-failed at end of message; a retry passes only if its content matches (else 450 4.4.5 #553)." },
    KeyDoc { name: "grey-dry-run", default: "false", meaning: "Only log what greylisting would do (#387, #2022) and let every message through." },
    KeyDoc { name: "dupmsg-ttl", default: "90000", meaning: "How long a message (body + Message-ID + first recipient) is remembered to recognise a copy sent again; 0: off." },
    KeyDoc { name: "dupmsg-policy", default: "\"tag\"", meaning: "What a duplicate gets: \"tag\" (header X-Smtpf-Duplicate: <first session id>), \"discard\" (accept and throw away), \"reject\" (550 5.3.4 #340). tag is the default because a milter cannot know whether the MTA finally queued the first copy." },
    KeyDoc { name: "cache-gc-interval", default: "300", meaning: "How often expired greylist and duplicate records are deleted from the SQLite state file (Redis expires its keys itself). Restart to change." },
];

/// A configuration error: names the file, line and key where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            write!(f, ": ")?;
        } else if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Parses a duration: an integer number of seconds, or a string such as `"600"`, `"10m"`, `"1h30m"`,
/// `"2d"`, `"1w"`.
pub fn parse_duration_text(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut saw_unit_last = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            saw_unit_last = false;
            continue;
        }
        let mult = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            ' ' => continue,
            _ => return Err(format!("\"{t}\" is not a duration (use seconds or e.g. \"10m\", \"1h30m\", \"2d\")")),
        };
        if num.is_empty() {
            return Err(format!("\"{t}\": unit without a number"));
        }
        let n: u64 = num.parse().map_err(|_| format!("\"{t}\": number too large"))?;
        total = n.checked_mul(mult).and_then(|v| total.checked_add(v)).ok_or_else(|| format!("\"{t}\": too large"))?;
        num.clear();
        saw_unit_last = true;
    }
    if !num.is_empty() {
        let n: u64 = num.parse().map_err(|_| format!("\"{t}\": number too large"))?;
        total = total.checked_add(n).ok_or_else(|| format!("\"{t}\": too large"))?;
    } else if !saw_unit_last {
        return Err(format!("\"{t}\" is not a duration"));
    }
    Ok(Duration::from_secs(total))
}

struct Parser<'a> {
    text: &'a str,
    file: Option<String>,
}

impl Parser<'_> {
    fn err(&self, key: Option<&str>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: key.and_then(|k| self.line_of(k)),
            key: key.map(str::to_string),
            message: message.into(),
        }
    }

    /// The 1-based line where a top-level key is assigned.
    fn line_of(&self, key: &str) -> Option<usize> {
        self.text
            .lines()
            .position(|l| {
                let l = l.trim_start();
                let rest = l
                    .strip_prefix(key)
                    .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
                    .or_else(|| l.strip_prefix(&format!("'{key}'")));
                matches!(rest, Some(r) if r.trim_start().starts_with('='))
            })
            .map(|i| i + 1)
    }

    fn string<'v>(&self, key: &str, v: &'v toml::Value) -> Result<&'v str, ConfigError> {
        v.as_str().ok_or_else(|| self.err(Some(key), format!("expected a string, found {}", v.type_str())))
    }

    fn duration(&self, key: &str, v: &toml::Value) -> Result<Duration, ConfigError> {
        match v {
            toml::Value::Integer(n) if *n >= 0 => Ok(Duration::from_secs(*n as u64)),
            toml::Value::Integer(_) => Err(self.err(Some(key), "a duration cannot be negative")),
            toml::Value::String(s) => parse_duration_text(s).map_err(|m| self.err(Some(key), m)),
            other => Err(self.err(Some(key), format!("expected seconds or a string like \"10m\", found {}", other.type_str()))),
        }
    }

    fn positive_duration(&self, key: &str, v: &toml::Value) -> Result<Duration, ConfigError> {
        let d = self.duration(key, v)?;
        if d.is_zero() {
            return Err(self.err(Some(key), "must be greater than 0"));
        }
        Ok(d)
    }

    fn integer(&self, key: &str, v: &toml::Value) -> Result<i64, ConfigError> {
        v.as_integer().ok_or_else(|| self.err(Some(key), format!("expected an integer, found {}", v.type_str())))
    }

    fn boolean(&self, key: &str, v: &toml::Value) -> Result<bool, ConfigError> {
        v.as_bool().ok_or_else(|| self.err(Some(key), format!("expected true or false, found {}", v.type_str())))
    }

    fn words<'v>(&self, key: &str, v: &'v toml::Value) -> Result<Vec<&'v str>, ConfigError> {
        match v {
            toml::Value::String(s) => Ok(s.split([',', ';', ' ']).filter(|w| !w.is_empty()).collect()),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str().ok_or_else(|| self.err(Some(key), format!("list items must be strings, found {}", i.type_str())))
                })
                .collect(),
            other => Err(self.err(Some(key), format!("expected a string or a list of strings, found {}", other.type_str()))),
        }
    }
}

fn hint(unknown: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|k| (k.name, strsim::damerau_levenshtein(unknown, k.name)))
        .filter(|(name, d)| *d <= 3.max(name.len() / 4))
        .min_by_key(|(_, d)| *d)
        .map(|(name, _)| name)
}

/// Parses a `dns-servers` entry: `IP`, `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    t.parse::<SocketAddr>().map_err(|_| format!("\"{t}\" is not IP or IP:PORT"))
}

impl Config {
    /// Parses and validates TOML text; `file` names it in errors.
    pub fn from_toml(text: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
        let p = Parser { text, file: file.map(|f| f.display().to_string()) };
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigError { file: p.file.clone(), line, key: None, message: format!("not valid TOML: {}", e.message()) }
        })?;
        let mut c = Config { path: file.map(Path::to_path_buf), ..Config::default() };
        for (key, v) in &table {
            match key.as_str() {
                "milter-socket" => {
                    c.milter_socket = SocketSpec::parse(p.string(key, v)?).map_err(|m| p.err(Some(key), m))?;
                }
                "milter-socket-mode" => {
                    c.milter_socket_mode = match v {
                        toml::Value::String(s) => parse_octal_mode(s).map_err(|m| p.err(Some(key), m))?,
                        toml::Value::Integer(n) if (0..=0o777).contains(n) => *n as u32,
                        _ => return Err(p.err(Some(key), "write the mode as an octal string, e.g. \"0660\"")),
                    };
                }
                "run-user" => c.run_user = Some(p.string(key, v)?.trim().to_string()).filter(|s| !s.is_empty()),
                "run-group" => c.run_group = Some(p.string(key, v)?.trim().to_string()).filter(|s| !s.is_empty()),
                "log-target" => {
                    c.log_target = match p.string(key, v)?.trim().to_ascii_lowercase().as_str() {
                        "stderr" => Target::Stderr,
                        "syslog" => Target::Syslog,
                        other => return Err(p.err(Some(key), format!("\"{other}\": use \"stderr\" or \"syslog\""))),
                    }
                }
                "verbose" => c.verbose = Verbose::parse(p.words(key, v)?).map_err(|m| p.err(Some(key), m))?,
                "cache-type" => {
                    c.cache_type = match p.string(key, v)?.trim().to_ascii_lowercase().as_str() {
                        "sqlite" => CacheType::Sqlite,
                        "redis" => CacheType::Redis,
                        other => return Err(p.err(Some(key), format!("\"{other}\": use \"sqlite\" or \"redis\""))),
                    }
                }
                "cache-redis-url" => {
                    let url = p.string(key, v)?.trim();
                    crate::store::redis::check_url(url).map_err(|m| p.err(Some(key), m))?;
                    c.cache_redis_url = url.to_string();
                }
                "cache-key-prefix" => {
                    let prefix = p.string(key, v)?;
                    if prefix.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
                        return Err(p.err(Some(key), "must not contain spaces or control characters"));
                    }
                    c.cache_key_prefix = prefix.to_string();
                }
                "cache-timeout" => {
                    let d = match v {
                        toml::Value::String(s) if s.trim().ends_with("ms") => s
                            .trim()
                            .trim_end_matches("ms")
                            .trim()
                            .parse::<u64>()
                            .map(Duration::from_millis)
                            .map_err(|_| p.err(Some(key), format!("\"{s}\" is not a duration")))?,
                        _ => p.duration(key, v)?,
                    };
                    if d.is_zero() || d > MAX_CACHE_TIMEOUT {
                        return Err(p.err(Some(key), "must be from 1ms to 10s"));
                    }
                    c.cache_timeout = d;
                }
                "cache-path" => {
                    let s = p.string(key, v)?.trim();
                    if s.is_empty() {
                        return Err(p.err(Some(key), "must name a file (leave the key out for the default)"));
                    }
                    c.cache_path = Some(PathBuf::from(s));
                }
                "dns-servers" => {
                    c.dns_servers = p
                        .words(key, v)?
                        .into_iter()
                        .map(|s| parse_dns_server(s).map_err(|m| p.err(Some(key), m)))
                        .collect::<Result<_, _>>()?;
                }
                "dns-timeout" => c.dns_timeout = p.positive_duration(key, v)?,
                "milter-timeout" => c.milter_timeout = p.positive_duration(key, v)?,
                "shutdown-timeout" => c.shutdown_timeout = p.duration(key, v)?,
                "access-map" => {
                    c.access_map = Some(PathBuf::from(p.string(key, v)?.trim())).filter(|p| !p.as_os_str().is_empty())
                }
                "dns-bl" | "dns-wl" | "dns-gl" | "uri-bl" | "uri-dns-bl" => {
                    // A string may hold several entries; postscreen filters contain ';' inside [...],
                    // which the list parser understands.
                    let entries = match v {
                        toml::Value::String(s) => parse_list(s),
                        toml::Value::Array(items) => {
                            let strings = items
                                .iter()
                                .map(|i| {
                                    i.as_str().ok_or_else(|| {
                                        p.err(Some(key), format!("list items must be strings, found {}", i.type_str()))
                                    })
                                })
                                .collect::<Result<Vec<_>, _>>()?;
                            parse_zones(&strings)
                        }
                        other => {
                            return Err(
                                p.err(Some(key), format!("expected a string or a list of strings, found {}", other.type_str()))
                            )
                        }
                    }
                    .map_err(|m| p.err(Some(key), m))?;
                    match key.as_str() {
                        "dns-bl" => c.dns_bl = entries,
                        "dns-wl" => c.dns_wl = entries,
                        "dns-gl" => c.dns_gl = entries,
                        "uri-bl" => c.uri_bl = entries,
                        _ => c.uri_dns_bl = entries,
                    }
                }
                "dns-bl-threshold" => {
                    c.dns_bl_threshold = p.integer(key, v)?.try_into().map_err(|_| p.err(Some(key), "out of range"))?;
                }
                "smtp-delay-checks" => c.smtp_delay_checks = p.boolean(key, v)?,
                "mail-require-mx" => c.mail_require_mx = p.boolean(key, v)?,
                "grey-key" => c.grey_key = parse_key(&p.words(key, v)?).map_err(|m| p.err(Some(key), m))?,
                "grey-temp-fail-period" => c.grey_temp_fail_period = p.duration(key, v)?.as_secs(),
                "grey-temp-fail-ttl" => c.grey_temp_fail_ttl = p.positive_duration(key, v)?.as_secs(),
                "cache-accept-ttl" => c.cache_accept_ttl = p.positive_duration(key, v)?.as_secs(),
                "grey-report-header" => {
                    let h = p.string(key, v)?.trim().to_string();
                    if !h.chars().all(|ch| ch.is_ascii_graphic() && ch != ':') {
                        return Err(p.err(Some(key), format!("\"{h}\" is not a header name")));
                    }
                    c.grey_report_header = h;
                }
                "grey-ipv4-prefix" | "grey-ipv6-prefix" => {
                    let max = if key == "grey-ipv4-prefix" { 32 } else { 128 };
                    let n = p.integer(key, v)?;
                    let n = u8::try_from(n)
                        .ok()
                        .filter(|n| *n <= max)
                        .ok_or_else(|| p.err(Some(key), format!("must be 0 to {max}")))?;
                    if key == "grey-ipv4-prefix" {
                        c.grey_ipv4_prefix = n;
                    } else {
                        c.grey_ipv6_prefix = n;
                    }
                }
                "grey-drop" => c.grey_drop = p.boolean(key, v)?,
                "grey-dry-run" => c.grey_dry_run = p.boolean(key, v)?,
                "grey-content" => c.grey_content = p.boolean(key, v)?,
                "cache-gc-interval" => c.cache_gc_interval = p.positive_duration(key, v)?,
                "dupmsg-ttl" => c.dupmsg_ttl = p.duration(key, v)?.as_secs(),
                "dupmsg-policy" => {
                    c.dupmsg_policy = match p.string(key, v)?.trim().to_ascii_lowercase().as_str() {
                        "tag" => DupPolicy::Tag,
                        "discard" => DupPolicy::Discard,
                        "reject" => DupPolicy::Reject,
                        other => return Err(p.err(Some(key), format!("\"{other}\": use \"tag\", \"discard\" or \"reject\""))),
                    }
                }
                "local-domains" => {
                    c.local_domains =
                        p.words(key, v)?.into_iter().map(|d| d.trim_end_matches('.').to_ascii_lowercase()).collect();
                }
                "uri-bl-policy" => {
                    c.uri_bl_policy = match p.string(key, v)?.trim().to_ascii_lowercase().as_str() {
                        "reject" => UriPolicy::Reject,
                        "discard" => UriPolicy::Discard,
                        "none" => UriPolicy::None,
                        other => return Err(p.err(Some(key), format!("\"{other}\": use \"reject\", \"discard\" or \"none\""))),
                    }
                }
                "uri-max-test" => {
                    let n = p.integer(key, v)?;
                    c.uri_max_test =
                        usize::try_from(n).ok().filter(|n| *n <= 1000).ok_or_else(|| p.err(Some(key), "must be 0 to 1000"))?;
                }
                other => {
                    let message = match (v.is_table(), hint(other)) {
                        (_, Some(h)) => format!("unknown key; did you mean \"{h}\"?"),
                        (true, None) => "unknown section; this file has no sections, write top-level keys".to_string(),
                        (false, None) => "unknown key (`smtpf-milter keys` lists every key)".to_string(),
                    };
                    return Err(p.err(Some(other), message));
                }
            }
        }
        Ok(c)
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.display().to_string()),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::from_toml(&text, Some(path))
    }

    /// The state file to use: the configured one, else the documented default.
    pub fn effective_cache_path(&self) -> PathBuf {
        if let Some(p) = &self.cache_path {
            return p.clone();
        }
        if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
            // systemd may pass several, colon separated; the first is ours.
            let first = dir.to_string_lossy().split(':').next().unwrap_or("").to_string();
            if !first.is_empty() {
                return Path::new(&first).join("cache.sq3");
            }
        }
        if nix::unistd::geteuid().is_root() {
            PathBuf::from("/var/lib/smtpf-milter/cache.sq3")
        } else {
            PathBuf::from("smtpf-milter-cache.sq3")
        }
    }

    /// The store these keys name, resolved (the default state file's path included), so the
    /// store opens without knowing the config file.
    pub fn store_spec(&self) -> StoreSpec {
        match self.cache_type {
            CacheType::Sqlite => StoreSpec::Sqlite { path: self.effective_cache_path(), gc_interval: self.cache_gc_interval },
            CacheType::Redis => StoreSpec::Redis(RedisOptions {
                url: self.cache_redis_url.clone(),
                key_prefix: self.cache_key_prefix.clone(),
                timeout: self.cache_timeout,
            }),
        }
    }

    /// Names of keys that differ from `other` but only take effect at restart.
    pub fn restart_only_changes(&self, other: &Config) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.milter_socket != other.milter_socket {
            v.push("milter-socket");
        }
        if self.milter_socket_mode != other.milter_socket_mode {
            v.push("milter-socket-mode");
        }
        if self.run_user != other.run_user {
            v.push("run-user");
        }
        if self.run_group != other.run_group {
            v.push("run-group");
        }
        if self.cache_path != other.cache_path {
            v.push("cache-path");
        }
        if self.cache_gc_interval != other.cache_gc_interval {
            v.push("cache-gc-interval");
        }
        if self.cache_type != other.cache_type {
            v.push("cache-type");
        }
        if self.cache_redis_url != other.cache_redis_url {
            v.push("cache-redis-url");
        }
        if self.cache_key_prefix != other.cache_key_prefix {
            v.push("cache-key-prefix");
        }
        if self.cache_timeout != other.cache_timeout {
            v.push("cache-timeout");
        }
        v
    }
}

/// The keys as a Markdown table (docs/configuration.md holds this text, checked by a test).
pub fn markdown_table() -> String {
    let mut s = String::from("| key | default | meaning |\n|---|---|---|\n");
    for k in KEYS {
        s.push_str(&format!("| `{}` | `{}` | {} |\n", k.name, k.default, k.meaning.replace('|', "\\|")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_text("600").unwrap().as_secs(), 600);
        assert_eq!(parse_duration_text("10m").unwrap().as_secs(), 600);
        assert_eq!(parse_duration_text("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration_text("2d").unwrap().as_secs(), 172_800);
        assert_eq!(parse_duration_text("1w").unwrap().as_secs(), 604_800);
        assert!(parse_duration_text("ten").is_err());
        assert!(parse_duration_text("m").is_err());
        assert!(parse_duration_text("").is_err());
        assert!(parse_duration_text("99999999999999999999").is_err());
    }

    #[test]
    fn full_file_parses() {
        let c = Config::from_toml(
            "milter-socket = \"unix:/var/spool/postfix/smtpf-milter/milter.sock\"\n\
             milter-socket-mode = \"0600\"\nrun-user = \"smtpf-milter\"\nlog-target = \"syslog\"\n\
             verbose = [\"info\", \"milter\"]\ncache-path = \"/tmp/x.sq3\"\n\
             dns-servers = [\"127.0.0.1:5353\", \"::1\"]\ndns-timeout = \"3s\"\nmilter-timeout = \"1h\"\n\
             shutdown-timeout = 0\n",
            None,
        )
        .unwrap();
        assert_eq!(c.milter_socket_mode, 0o600);
        assert_eq!(c.run_user.as_deref(), Some("smtpf-milter"));
        assert_eq!(c.log_target, Target::Syslog);
        assert_eq!(c.dns_servers, vec!["127.0.0.1:5353".parse().unwrap(), "[::1]:53".parse().unwrap()]);
        assert_eq!(c.dns_timeout, Duration::from_secs(3));
        assert_eq!(c.milter_timeout, Duration::from_secs(3600));
        assert!(c.shutdown_timeout.is_zero());
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::from_toml("# nothing\n", None).unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_names_line_and_hint() {
        let e = Config::from_toml("verbose = \"info\"\nmilter-sokcet = \"inet:1@127.0.0.1\"\n", Some(Path::new("f.toml")))
            .unwrap_err();
        assert_eq!(e.line, Some(2));
        assert_eq!(e.key.as_deref(), Some("milter-sokcet"));
        assert_eq!(e.to_string(), "f.toml:2: milter-sokcet: unknown key; did you mean \"milter-socket\"?");
        let e = Config::from_toml("frobnicate = 1\n", None).unwrap_err();
        assert!(e.message.starts_with("unknown key"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("milter-socket = \"inet:x@y\"", "milter-socket"),
            ("milter-socket = 5", "milter-socket"),
            ("milter-socket-mode = 660", "milter-socket-mode"),
            ("milter-socket-mode = \"0999\"", "milter-socket-mode"),
            ("log-target = \"file\"", "log-target"),
            ("verbose = \"info,gery\"", "verbose"),
            ("dns-servers = [\"1.2.3\"]", "dns-servers"),
            ("dns-timeout = 0", "dns-timeout"),
            ("dns-timeout = -3", "dns-timeout"),
            ("milter-timeout = \"soon\"", "milter-timeout"),
            ("cache-path = \"\"", "cache-path"),
            ("cache-type = \"memcached\"", "cache-type"),
            ("cache-redis-url = \"http://127.0.0.1/\"", "cache-redis-url"),
            ("cache-redis-url = \"redis://127.0.0.1:70000/\"", "cache-redis-url"),
            ("cache-key-prefix = \"a b\"", "cache-key-prefix"),
            ("cache-timeout = 0", "cache-timeout"),
            ("cache-timeout = 11", "cache-timeout"),
            ("cache-timeout = \"fastms\"", "cache-timeout"),
        ] {
            let e = Config::from_toml(&format!("\n{text}\n"), None).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert_eq!(e.line, Some(2), "{text}: {e}");
        }
    }

    #[test]
    fn not_toml_is_a_clear_error() {
        let e = Config::from_toml("a = 1\nthis is not toml\n", None).unwrap_err();
        assert!(e.message.starts_with("not valid TOML"), "{e}");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn restart_only_keys_are_reported() {
        let a = Config::default();
        let mut b = a.clone();
        b.milter_socket = SocketSpec::Unix("/x".into());
        b.dns_timeout = Duration::from_secs(9);
        assert_eq!(a.restart_only_changes(&b), vec!["milter-socket"]);
        b.cache_gc_interval = Duration::from_secs(60);
        assert_eq!(a.restart_only_changes(&b), vec!["milter-socket", "cache-gc-interval"]);
        let mut c = a.clone();
        c.cache_type = CacheType::Redis;
        c.cache_redis_url = "redis://10.0.0.5/0".into();
        c.cache_key_prefix = "other:".into();
        c.cache_timeout = Duration::from_millis(250);
        assert_eq!(a.restart_only_changes(&c), vec!["cache-type", "cache-redis-url", "cache-key-prefix", "cache-timeout"]);
    }

    #[test]
    fn redis_keys_parse() {
        let c = Config::from_toml(
            "cache-type = \"Redis\"\ncache-redis-url = \"rediss://smtpf:pw@10.0.0.5:6380/2\"\n\
             cache-key-prefix = \"mx-eu:\"\ncache-timeout = \"250ms\"\n",
            None,
        )
        .unwrap();
        assert_eq!(c.cache_type, CacheType::Redis);
        assert_eq!(c.cache_redis_url, "rediss://smtpf:pw@10.0.0.5:6380/2");
        assert_eq!(c.cache_key_prefix, "mx-eu:");
        assert_eq!(c.cache_timeout, Duration::from_millis(250));
        assert_eq!(Config::from_toml("cache-timeout = \"2s\"", None).unwrap().cache_timeout, Duration::from_secs(2));
        assert_eq!(Config::default().cache_timeout, Duration::from_secs(1));
        // A malformed URL is refused with the key and line, without echoing the password.
        let e = Config::from_toml("\ncache-redis-url = \"redis://u:secret@host:port/\"\n", None).unwrap_err();
        assert_eq!((e.key.as_deref(), e.line), (Some("cache-redis-url"), Some(2)), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}

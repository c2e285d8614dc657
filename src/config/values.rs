//! The value grammars of the config file: how a key's TOML value becomes a typed setting.
//!
//! Each parser takes the file (for the line of an error), the key and the value, and returns the
//! setting or a [`ConfigError`] naming both. The key table in [`super`] names one parser per key,
//! so a grammar (durations, word lists, choices) is written once and every key that speaks it
//! behaves the same. The typed settings at the end (sockets, lists, policies, ranges) are built on
//! those grammars; which key uses which is the table's business.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::{UriPolicy, MAX_CACHE_TIMEOUT};

/// What every parser here returns.
type Result<T> = std::result::Result<T, ConfigError>;
use crate::checks::digest::DupPolicy;
use crate::checks::dnslist::{parse_list, parse_zones, Zone};
use crate::checks::greykey::{parse_key, KeyWord};
use crate::log::{Target, Verbose};
use crate::milter::listen::{parse_octal_mode, SocketSpec};
use crate::store::CacheType;

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

/// Parses a duration: an integer number of seconds, or a string of numbers with units, such as
/// `"600"`, `"250ms"`, `"10m"`, `"1h30m"`, `"2d"`, `"1w"` (units `ms`, `s`, `m`, `h`, `d`, `w`, any
/// case, spaces allowed between parts). The one duration grammar of the file.
pub fn parse_duration_text(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let bad = || format!("\"{t}\" is not a duration (use seconds or e.g. \"250ms\", \"10m\", \"1h30m\", \"2d\")");
    let mut total_ms: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(if rest.starts_with(|c: char| c.is_alphabetic()) {
                format!("\"{t}\": unit without a number")
            } else {
                bad()
            });
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("\"{t}\": number too large"))?;
        rest = rest[digits..].trim_start();
        let letters = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit_ms: u64 = match rest[..letters].to_ascii_lowercase().as_str() {
            // A bare trailing number is seconds ("1h30" is not accepted: say "1h30m").
            "" if rest.is_empty() && total_ms == 0 => 1000,
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(bad()),
        };
        total_ms = n.checked_mul(unit_ms).and_then(|v| total_ms.checked_add(v)).ok_or_else(|| format!("\"{t}\": too large"))?;
        rest = &rest[letters..];
    }
    Ok(Duration::from_millis(total_ms))
}

/// Reads one key's value; `text` is the file, for the line an error is on.
pub struct Parser<'a> {
    pub text: &'a str,
    pub file: Option<String>,
}

impl Parser<'_> {
    /// An error about `key` (with its line, when the key is in the file).
    pub fn err(&self, key: Option<&str>, message: impl Into<String>) -> ConfigError {
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

    /// A string value.
    pub fn string<'v>(&self, key: &str, v: &'v toml::Value) -> Result<&'v str> {
        v.as_str().ok_or_else(|| self.err(Some(key), format!("expected a string, found {}", v.type_str())))
    }

    /// A duration within `min..=max`.
    pub fn duration(&self, key: &str, v: &toml::Value, min: Duration, max: Duration) -> Result<Duration> {
        let d = match v {
            toml::Value::Integer(n) if *n >= 0 => Duration::from_secs(*n as u64),
            toml::Value::Integer(_) => return Err(self.err(Some(key), "a duration cannot be negative")),
            toml::Value::String(s) => parse_duration_text(s).map_err(|m| self.err(Some(key), m))?,
            other => {
                return Err(self.err(Some(key), format!("expected seconds or a string like \"10m\", found {}", other.type_str())))
            }
        };
        if d < min || d > max {
            return Err(self.err(Some(key), format!("must be from {} to {}", show_duration(min), show_duration(max))));
        }
        Ok(d)
    }

    /// A duration in whole seconds within `min..=max` seconds (keys whose records count seconds).
    pub fn seconds(&self, key: &str, v: &toml::Value, min: u64, max: u64) -> Result<u64> {
        let d = self.duration(key, v, Duration::from_secs(min), Duration::from_secs(max))?;
        if d.subsec_nanos() != 0 {
            return Err(self.err(Some(key), "must be whole seconds"));
        }
        Ok(d.as_secs())
    }

    /// An integer within `min..=max`.
    pub fn integer(&self, key: &str, v: &toml::Value, min: i64, max: i64) -> Result<i64> {
        let n = v.as_integer().ok_or_else(|| self.err(Some(key), format!("expected an integer, found {}", v.type_str())))?;
        if n < min || n > max {
            return Err(self.err(Some(key), format!("must be {min} to {max}")));
        }
        Ok(n)
    }

    /// `true` or `false`.
    pub fn boolean(&self, key: &str, v: &toml::Value) -> Result<bool> {
        v.as_bool().ok_or_else(|| self.err(Some(key), format!("expected true or false, found {}", v.type_str())))
    }

    /// A list of words: a TOML array of strings, or one string split at commas, semicolons and
    /// spaces (smtpf's own spelling).
    pub fn words<'v>(&self, key: &str, v: &'v toml::Value) -> Result<Vec<&'v str>> {
        match v {
            toml::Value::String(s) => Ok(s.split([',', ';', ' ']).filter(|w| !w.is_empty()).collect()),
            toml::Value::Array(items) => items.iter().map(|i| self.item(key, i)).collect(),
            other => Err(self.err(Some(key), format!("expected a string or a list of strings, found {}", other.type_str()))),
        }
    }

    /// One string item of a list.
    pub fn item<'v>(&self, key: &str, i: &'v toml::Value) -> Result<&'v str> {
        i.as_str().ok_or_else(|| self.err(Some(key), format!("list items must be strings, found {}", i.type_str())))
    }

    /// One word of a fixed set (any case): the value paired with it.
    pub fn choice<T: Clone>(&self, key: &str, v: &toml::Value, words: &[(&str, T)]) -> Result<T> {
        let given = self.string(key, v)?.trim().to_ascii_lowercase();
        words.iter().find(|(w, _)| *w == given).map(|(_, t)| t.clone()).ok_or_else(|| {
            let names: Vec<String> = words.iter().map(|(w, _)| format!("\"{w}\"")).collect();
            self.err(Some(key), format!("\"{given}\": use {}", or_list(&names)))
        })
    }

    /// A string that may be empty: empty means "none".
    pub fn optional_string(&self, key: &str, v: &toml::Value) -> Result<Option<String>> {
        Ok(Some(self.string(key, v)?.trim().to_string()).filter(|s| !s.is_empty()))
    }

    /// A path that may be empty: empty means "none".
    pub fn optional_path(&self, key: &str, v: &toml::Value) -> Result<Option<PathBuf>> {
        Ok(self.optional_string(key, v)?.map(PathBuf::from))
    }
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// A duration as the file would say it: `250ms`, `10s`, `2d`.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    for (unit, n) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= n && s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// Parses a `dns-servers` entry: `IP`, `IP:PORT` or `[IPv6]:PORT`; port 0 and the unspecified
/// address are refused (nothing answers there: every lookup would time out).
pub fn parse_dns_server(text: &str) -> std::result::Result<SocketAddr, String> {
    let t = text.trim();
    let addr = match t.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, 53),
        Err(_) => t.parse::<SocketAddr>().map_err(|_| format!("\"{t}\" is not IP or IP:PORT"))?,
    };
    if addr.port() == 0 {
        return Err(format!("\"{t}\": port 0 cannot be a name server's port"));
    }
    if addr.ip().is_unspecified() {
        return Err(format!("\"{t}\": {} is no name server's address", addr.ip()));
    }
    Ok(addr)
}

// Typed settings. Each has the signature the key table expects: (file, key, value) -> setting.

const MINUTE: u64 = 60;
const DAY: u64 = 86_400;

/// `milter-socket`: the libmilter and Postfix forms.
pub fn socket(p: &Parser, key: &str, v: &toml::Value) -> Result<SocketSpec> {
    SocketSpec::parse(p.string(key, v)?).map_err(|m| p.err(Some(key), m))
}

/// `policy-socket`: a socket in `milter-socket`'s forms; empty: off.
pub fn optional_socket(p: &Parser, key: &str, v: &toml::Value) -> Result<Option<SocketSpec>> {
    match p.string(key, v)?.trim() {
        "" => Ok(None),
        text => SocketSpec::parse(text).map(Some).map_err(|m| p.err(Some(key), m)),
    }
}

/// `metrics-listen`: IP:PORT or unix:/path; empty: off.
pub fn metrics_listen(p: &Parser, key: &str, v: &toml::Value) -> Result<Option<crate::metrics::MetricsListen>> {
    crate::metrics::MetricsListen::parse(p.string(key, v)?).map_err(|m| p.err(Some(key), m))
}

/// A unix socket's permissions, as an octal string ("0660").
pub fn socket_mode(p: &Parser, key: &str, v: &toml::Value) -> Result<u32> {
    match v {
        toml::Value::String(s) => parse_octal_mode(s).map_err(|m| p.err(Some(key), m)),
        toml::Value::Integer(n) if (0..=0o777).contains(n) => Ok(*n as u32),
        _ => Err(p.err(Some(key), "write the mode as an octal string, e.g. \"0660\"")),
    }
}

/// A user or group name; empty: none.
pub fn optional_name(p: &Parser, key: &str, v: &toml::Value) -> Result<Option<String>> {
    p.optional_string(key, v)
}

/// A file that may be left out; empty: none.
pub fn optional_file(p: &Parser, key: &str, v: &toml::Value) -> Result<Option<PathBuf>> {
    p.optional_path(key, v)
}

/// A list of files (a TOML array of paths, or one path).
pub fn files(p: &Parser, key: &str, v: &toml::Value) -> Result<Vec<PathBuf>> {
    match v {
        toml::Value::String(s) if s.trim().is_empty() => Ok(Vec::new()),
        toml::Value::String(s) => Ok(vec![PathBuf::from(s.trim())]),
        toml::Value::Array(items) => items.iter().map(|i| p.item(key, i).map(|s| PathBuf::from(s.trim()))).collect(),
        other => Err(p.err(Some(key), format!("expected a path or a list of paths, found {}", other.type_str()))),
    }
}

/// Where log lines go.
pub fn log_target(p: &Parser, key: &str, v: &toml::Value) -> Result<Target> {
    p.choice(key, v, &[("stderr", Target::Stderr), ("syslog", Target::Syslog)])
}

/// smtpf's verbose words.
pub fn verbose(p: &Parser, key: &str, v: &toml::Value) -> Result<Verbose> {
    Verbose::parse(p.words(key, v)?).map_err(|m| p.err(Some(key), m))
}

/// Which store backend.
pub fn cache_type(p: &Parser, key: &str, v: &toml::Value) -> Result<CacheType> {
    p.choice(key, v, &[("sqlite", CacheType::Sqlite), ("redis", CacheType::Redis)])
}

/// The state file: must name a file when given (leaving the key out means the default).
pub fn cache_path(p: &Parser, key: &str, v: &toml::Value) -> Result<Option<PathBuf>> {
    match p.optional_path(key, v)? {
        Some(path) => Ok(Some(path)),
        None => Err(p.err(Some(key), "must name a file (leave the key out for the default)")),
    }
}

/// A Redis URL, checked without echoing credentials.
pub fn redis_url(p: &Parser, key: &str, v: &toml::Value) -> Result<String> {
    let url = p.string(key, v)?.trim();
    crate::store::redis::check_url(url).map_err(|m| p.err(Some(key), m))?;
    Ok(url.to_string())
}

/// A key prefix: no spaces or control characters (they would split or corrupt keys).
pub fn key_prefix(p: &Parser, key: &str, v: &toml::Value) -> Result<String> {
    let prefix = p.string(key, v)?;
    if prefix.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
        return Err(p.err(Some(key), "must not contain spaces or control characters"));
    }
    Ok(prefix.to_string())
}

/// How long one store call may take.
pub fn cache_timeout(p: &Parser, key: &str, v: &toml::Value) -> Result<Duration> {
    p.duration(key, v, Duration::from_millis(1), MAX_CACHE_TIMEOUT)
}

/// Name servers.
pub fn dns_servers(p: &Parser, key: &str, v: &toml::Value) -> Result<Vec<SocketAddr>> {
    p.words(key, v)?.into_iter().map(|s| parse_dns_server(s).map_err(|m| p.err(Some(key), m))).collect()
}

/// How long one DNS lookup may take.
pub fn dns_timeout(p: &Parser, key: &str, v: &toml::Value) -> Result<Duration> {
    p.duration(key, v, Duration::from_millis(1), Duration::from_secs(10 * MINUTE))
}

/// How long the MTA may stay silent on a milter connection.
pub fn milter_timeout(p: &Parser, key: &str, v: &toml::Value) -> Result<Duration> {
    p.duration(key, v, Duration::from_secs(1), Duration::from_secs(DAY))
}

/// How long open sessions may run after SIGTERM.
pub fn shutdown_timeout(p: &Parser, key: &str, v: &toml::Value) -> Result<Duration> {
    p.duration(key, v, Duration::ZERO, Duration::from_secs(DAY))
}

/// How often expired records are deleted.
pub fn gc_interval(p: &Parser, key: &str, v: &toml::Value) -> Result<Duration> {
    p.duration(key, v, Duration::from_secs(1), Duration::from_secs(DAY))
}

/// DNS lists: a string may hold several entries (postscreen filters contain ';' inside [...],
/// which the list parser understands), or a list of strings.
pub fn zones(p: &Parser, key: &str, v: &toml::Value) -> Result<Vec<Zone>> {
    match v {
        toml::Value::String(s) => parse_list(s),
        toml::Value::Array(items) => {
            let strings = items.iter().map(|i| p.item(key, i)).collect::<Result<Vec<_>>>()?;
            parse_zones(&strings)
        }
        other => return Err(p.err(Some(key), format!("expected a string or a list of strings, found {}", other.type_str()))),
    }
    .map_err(|m| p.err(Some(key), m))
}

/// The dns-bl weight sum from which a client counts as listed.
pub fn threshold(p: &Parser, key: &str, v: &toml::Value) -> Result<i32> {
    Ok(p.integer(key, v, i32::MIN.into(), i32::MAX.into())? as i32)
}

/// `true` or `false`.
pub fn boolean(p: &Parser, key: &str, v: &toml::Value) -> Result<bool> {
    p.boolean(key, v)
}

/// What a URI list hit does.
pub fn uri_policy(p: &Parser, key: &str, v: &toml::Value) -> Result<UriPolicy> {
    p.choice(key, v, &[("reject", UriPolicy::Reject), ("discard", UriPolicy::Discard), ("none", UriPolicy::None)])
}

/// Most URI hosts looked up per message.
pub fn uri_max_test(p: &Parser, key: &str, v: &toml::Value) -> Result<usize> {
    Ok(p.integer(key, v, 0, 1000)? as usize)
}

/// Messages before a client is auto-whitelisted (0: never).
pub fn auto_whitelist(p: &Parser, key: &str, v: &toml::Value) -> Result<u32> {
    Ok(p.integer(key, v, 0, 1_000_000)? as u32)
}

/// Domain names, lower case, without a trailing dot.
pub fn domains(p: &Parser, key: &str, v: &toml::Value) -> Result<Vec<String>> {
    Ok(p.words(key, v)?.into_iter().map(|d| d.trim_end_matches('.').to_ascii_lowercase()).collect())
}

/// Greylisting key elements.
pub fn grey_key(p: &Parser, key: &str, v: &toml::Value) -> Result<Vec<KeyWord>> {
    parse_key(&p.words(key, v)?).map_err(|m| p.err(Some(key), m))
}

/// The greylisting period in seconds; 0 turns greylisting off.
pub fn grey_period(p: &Parser, key: &str, v: &toml::Value) -> Result<u64> {
    p.seconds(key, v, 0, 30 * DAY)
}

/// How long a record lives, in seconds (at least 1 s, at most a year).
pub fn record_ttl(p: &Parser, key: &str, v: &toml::Value) -> Result<u64> {
    p.seconds(key, v, 1, 366 * DAY)
}

/// How long duplicate detection remembers a message, in seconds; 0 turns it off.
pub fn dupmsg_ttl(p: &Parser, key: &str, v: &toml::Value) -> Result<u64> {
    p.seconds(key, v, 0, 366 * DAY)
}

/// A header name (printable ASCII without ':'); empty: no header.
pub fn header_name(p: &Parser, key: &str, v: &toml::Value) -> Result<String> {
    let h = p.string(key, v)?.trim().to_string();
    if !h.chars().all(|ch| ch.is_ascii_graphic() && ch != ':') {
        return Err(p.err(Some(key), format!("\"{h}\" is not a header name")));
    }
    Ok(h)
}

/// An IPv4 prefix length.
pub fn ipv4_prefix(p: &Parser, key: &str, v: &toml::Value) -> Result<u8> {
    Ok(p.integer(key, v, 0, 32)? as u8)
}

/// An IPv6 prefix length.
pub fn ipv6_prefix(p: &Parser, key: &str, v: &toml::Value) -> Result<u8> {
    Ok(p.integer(key, v, 0, 128)? as u8)
}

/// What a duplicate gets.
pub fn dup_policy(p: &Parser, key: &str, v: &toml::Value) -> Result<DupPolicy> {
    p.choice(key, v, &[("tag", DupPolicy::Tag), ("discard", DupPolicy::Discard), ("reject", DupPolicy::Reject)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_text("600").unwrap().as_secs(), 600);
        assert_eq!(parse_duration_text("10m").unwrap().as_secs(), 600);
        assert_eq!(parse_duration_text("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration_text("1h 30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration_text("2d").unwrap().as_secs(), 172_800);
        assert_eq!(parse_duration_text("1W").unwrap().as_secs(), 604_800);
        assert_eq!(parse_duration_text("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration_text("1s500ms").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration_text("ten").is_err());
        assert!(parse_duration_text("m").is_err());
        assert!(parse_duration_text("").is_err());
        assert!(parse_duration_text("1h30").is_err());
        assert!(parse_duration_text("5 parsecs").is_err());
        assert!(parse_duration_text("99999999999999999999").is_err());
        assert!(parse_duration_text("9999999999999999w").is_err());
    }

    #[test]
    fn durations_read_back() {
        for text in ["250ms", "10s", "10m", "2h", "3d", "1w", "90000s"] {
            assert_eq!(show_duration(parse_duration_text(text).unwrap()), text.replace("90000s", "25h"));
        }
    }

    #[test]
    fn choices_name_the_words() {
        let p = Parser { text: "k = \"b\"\n", file: None };
        let v = toml::Value::String("B".into());
        assert_eq!(p.choice("k", &v, &[("a", 1), ("b", 2)]).unwrap(), 2);
        let e = p.choice("k", &toml::Value::String("z".into()), &[("a", 1), ("b", 2), ("c", 3)]).unwrap_err();
        assert_eq!(e.to_string(), "line 1: k: \"z\": use \"a\", \"b\" or \"c\"");
    }
}

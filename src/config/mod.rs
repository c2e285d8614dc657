//! The configuration file: TOML whose keys are smtpf's option names, validated into [`Config`].
//!
//! Every key has a default (smtpf's, unless the project documents otherwise), every error names the
//! key and the line it is on, and unknown keys are refused with a hint for near-misses, because a
//! silently ignored typo in a mail filter's config is a policy that quietly is not applied. The same
//! code validates at start-up, for `check-config`, and for a SIGHUP reload.
//!
//! Each key is one row of the table below: field, type, name, default (as the file spells it),
//! value parser, whether it needs a restart, and meaning. `Config::default()`, the file parser,
//! `smtpf-milter keys`, docs/configuration.md and the reload's restart-only check all read that
//! row, so a key cannot be documented with one default and built with another. The grammars
//! (durations, lists, choices) are in [`values`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod import;
pub mod smtpf;
mod values;

use values::Parser;
pub use values::{parse_dns_server, parse_duration_text, show_duration, ConfigError};

use crate::checks::digest::DupPolicy;
use crate::checks::dnslist::Zone;
use crate::checks::greykey::KeyWord;
use crate::log::catalog::{self, Msg};
use crate::log::{Target, Verbose};
use crate::milter::listen::SocketSpec;
use crate::store::redis::redact;
use crate::store::{CacheType, RedisOptions, StoreSpec};

/// What a URI list hit does to the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriPolicy {
    Reject,
    Discard,
    None,
}

/// The Redis server `cache-type = "redis"` uses unless `cache-redis-url` says otherwise.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// Longest `cache-timeout` accepted: a store call must end long before the MTA's milter timeouts
/// (Postfix waits 30 s for a milter command).
pub const MAX_CACHE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sendmail's default timeout for reading a milter's answer (`T=R:10s`).
const SENDMAIL_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Postfix's default `milter_content_timeout`: how long Postfix itself waits while sending content.
const POSTFIX_CONTENT_TIMEOUT: Duration = Duration::from_secs(300);

/// The conventional config file, read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/smtpf-milter/smtpf-milter.toml";

/// One key of the file: everything the daemon and its docs know about it.
pub struct Key {
    /// The name in the file (smtpf's option name).
    pub name: &'static str,
    /// The default as the file would spell it (TOML), or a description when it is computed at
    /// start-up (`cache-path`).
    pub default: &'static str,
    /// Whether [`Key::default`] is TOML the key's parser reads (false: computed).
    pub default_is_toml: bool,
    /// What it does, for `smtpf-milter keys` and docs/configuration.md.
    pub meaning: &'static str,
    /// Set when a SIGHUP cannot change it (sockets, users, the store): the reload keeps the old
    /// value and says so.
    pub restart: Option<Restart>,
    set: fn(&Parser, &mut Config, &toml::Value) -> Result<(), ConfigError>,
}

/// How a reload handles a key that needs a restart.
pub struct Restart {
    differs: fn(&Config, &Config) -> bool,
    keep: fn(&mut Config, &Config),
    /// The value in force, as the #2008 line shows it (secrets redacted).
    pub show: fn(&Config) -> String,
}

/// The embedded default socket: a unix socket, never TCP (any local user can connect to a TCP
/// port and play MTA). Root gets the conventional run directory; a user's demo run gets the
/// session's runtime directory, or the working directory.
///
/// Decided once per process (at start, before privileges are dropped), so a reload after the
/// switch to run-user does not see another default and report a change that needs a restart.
fn default_socket() -> SocketSpec {
    static DEFAULT: std::sync::OnceLock<SocketSpec> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(default_socket_now).clone()
}

fn default_socket_now() -> SocketSpec {
    // Under systemd with RuntimeDirectory= (the shipped unit): /run/smtpf-milter/milter.sock.
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        let first = dir.to_string_lossy().split(':').next().unwrap_or("").to_string();
        if first.starts_with('/') {
            return SocketSpec::Unix(Path::new(&first).join("milter.sock"));
        }
    }
    if nix::unistd::geteuid().is_root() {
        return SocketSpec::Unix(PathBuf::from("/run/smtpf-milter/milter.sock"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() && dir.as_os_str().len() < 80 => SocketSpec::Unix(dir.join("smtpf-milter.sock")),
        _ => SocketSpec::Unix(PathBuf::from("smtpf-milter.sock")),
    }
}

/// The state file when `cache-path` is not set: systemd's state directory, else the system's
/// when root, else the working directory.
fn default_cache_path() -> PathBuf {
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

/// Reads a TOML value literal (a key's default as written in the table).
fn toml_literal(text: &str) -> toml::Value {
    let table: toml::Table = format!("v = {text}").parse().unwrap_or_else(|e| panic!("default {text}: {e}"));
    table["v"].clone()
}

macro_rules! config_keys {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident : $ty:ty = $name:literal, $kind:ident($default:literal $(, $init:expr)?), $parse:path, $(restart($show:expr),)?
            $meaning:literal;
    )*) => {
        /// The validated configuration.
        #[derive(Clone, Debug, PartialEq)]
        pub struct Config {
            /// The file it came from (None: the embedded defaults).
            pub path: Option<PathBuf>,
            /// smtpf options the file sets that smtpf-milter does not apply (no meaning in a
            /// milter, or not implemented yet): accepted so that keys copied from smtpf.cf do not
            /// stop the daemon, and warned about one by one ([`Config::smtpf_warnings`]).
            pub smtpf_only: Vec<String>,
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        /// Every key, in the order of the docs; also the source of near-miss hints.
        pub const KEYS: &[Key] = &[ $(
            Key {
                name: $name,
                default: $default,
                default_is_toml: config_keys!(@is_toml $kind),
                meaning: $meaning,
                restart: config_keys!(@restart $field $(, $show)?),
                set: |p, c, v| {
                    c.$field = $parse(p, $name, v)?;
                    Ok(())
                },
            },
        )* ];

        impl Default for Config {
            /// The embedded defaults: each key's default from the table, read by its own parser.
            fn default() -> Self {
                let p = Parser { text: "", file: None };
                Config {
                    path: None,
                    smtpf_only: Vec::new(),
                    $( $field: config_keys!(@initial $kind, p, $name, $default, $parse $(, $init)?), )*
                }
            }
        }
    };
    (@is_toml default) => { true };
    (@is_toml computed) => { false };
    (@initial default, $p:ident, $name:literal, $default:literal, $parse:path) => {
        $parse(&$p, $name, &toml_literal($default)).unwrap_or_else(|e| panic!("the default of {}: {e}", $name))
    };
    (@initial computed, $p:ident, $name:literal, $default:literal, $parse:path, $init:expr) => { $init };
    (@restart $field:ident) => { None };
    (@restart $field:ident, $show:expr) => {
        Some(Restart { differs: |a, b| a.$field != b.$field, keep: |new, old| new.$field = old.$field.clone(), show: $show })
    };
}

config_keys! {
    milter_socket: SocketSpec = "milter-socket", computed("(see text)", default_socket()), values::socket, restart(|c: &Config| c.milter_socket.to_string()),
        "Where the MTA connects: unix:PATH, local:PATH, inet:PORT@HOST, inet:HOST:PORT, inet6:PORT@HOST. Default: a unix socket, $RUNTIME_DIRECTORY/milter.sock under systemd (/run/smtpf-milter/milter.sock with the shipped unit), /run/smtpf-milter/milter.sock as root, $XDG_RUNTIME_DIR/smtpf-milter.sock or ./smtpf-milter.sock otherwise (TCP only when configured: any local user could drive a TCP milter). Ignored under systemd socket activation. Restart to change.";
    milter_socket_mode: u32 = "milter-socket-mode", default("\"0660\""), values::socket_mode, restart(|c: &Config| format!("{:04o}", c.milter_socket_mode)),
        "Permissions of a unix socket (octal string). Restart to change.";
    /// Postfix's policy delegation front door; None: off.
    policy_socket: Option<SocketSpec> = "policy-socket", default("\"\""), values::optional_socket, restart(|c: &Config| c.policy_socket.as_ref().map(|s| s.to_string()).unwrap_or_default()),
        "Also serve Postfix's policy delegation protocol (check_policy_service) on this socket, in milter-socket's forms (unix:PATH, inet:PORT@HOST, ...): the same checks, records and log lines, decided at RCPT (docs/policy-service.md). Content checks (dupmsg, uri-bl, grey-content) need the message and run only for mail that comes through the milter socket. Empty: off. The unix socket gets milter-socket-mode and run-group. Restart to change.";
    run_user: Option<String> = "run-user", default("\"\""), values::optional_name, restart(|c: &Config| c.run_user.clone().unwrap_or_default()),
        "When started as root: the user to switch to after binding the socket. Empty: stay as started. Restart to change.";
    run_group: Option<String> = "run-group", default("\"\""), values::optional_name, restart(|c: &Config| c.run_group.clone().unwrap_or_default()),
        "When started as root: the group to switch to (default: run-user's primary group). The unix socket is given to this group. Restart to change.";
    log_target: Target = "log-target", default("\"stderr\""), values::log_target,
        "\"stderr\" (the journal under systemd) or \"syslog\" (facility mail, ident smtpf-milter, next to the MTA's lines).";
    verbose: Verbose = "verbose", default("\"info\""), values::verbose,
        "smtpf verbose words, comma separated or a list: info (default), debug (every module's debug lines), all, or module words, each turning on that module's debug lines: milter (each milter command, #2013), access (each access-map lookup and the entry found, #2054), dns (each DNS lookup and its answer, #2055), rbl (each DNS list's answer, #2056), uri (each URI host tested, #2057), mx (each MX lookup, #2058), spf (each SPF result, #2059), grey (#382), dupmsg (each duplicate-detection key and decision, #2062), cache (each state-store call, #2063), library (the DNS resolver's own info and debug events, #2028); -word turns one off; smtpf's word=level form is accepted (level 0 is off). smtpf's words that mean nothing in a milter (smtp, tls, subject, trace, warn, ...; smtpf's default is info,smtp=1,tls) are accepted and named in one warning (#2042).";
    /// Which store holds greylist and duplicate records.
    cache_type: CacheType = "cache-type", default("\"sqlite\""), values::cache_type, restart(|c: &Config| c.cache_type.word().to_string()),
        "Where greylist and duplicate records live: \"sqlite\" (the cache-path file, one host) or \"redis\" (cache-redis-url, shared by several MX hosts; docs/several-mx.md). Restart to change.";
    /// None: the default, resolved at start-up by [`Config::effective_cache_path`].
    cache_path: Option<PathBuf> = "cache-path", computed("(see text)", None), values::cache_path, restart(|c: &Config| c.effective_cache_path().display().to_string()),
        "SQLite state file. Default: $STATE_DIRECTORY/cache.sq3 under systemd, /var/lib/smtpf-milter/cache.sq3 as root, ./smtpf-milter-cache.sq3 otherwise. Restart to change.";
    /// The Redis server (`cache-type = "redis"`); validated, credentials included.
    cache_redis_url: String = "cache-redis-url", default("\"redis://127.0.0.1:6379/0\""), values::redis_url, restart(|c: &Config| redact(&c.cache_redis_url)),
        "With cache-type = \"redis\": the server, as redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss://... for TLS, or redis+unix:///PATH?db=N. An unreachable server does not stop the daemon: checks fail open until it answers. Restart to change.";
    /// Prepended to every Redis key, so deployments can share a server.
    cache_key_prefix: String = "cache-key-prefix", default("\"smtpf-milter:\""), values::key_prefix, restart(|c: &Config| format!("\"{}\"", c.cache_key_prefix)),
        "With cache-type = \"redis\": prepended to every key, so several deployments can share one Redis (hosts sharing records must use the same prefix). Restart to change.";
    /// Bound on each Redis call.
    cache_timeout: Duration = "cache-timeout", default("1"), values::cache_timeout, restart(|c: &Config| show_duration(c.cache_timeout)),
        "With cache-type = \"redis\": how long one Redis call may take (1ms to 10s, e.g. \"250ms\") before the check gives up and lets the message through. Restart to change.";
    dns_servers: Vec<SocketAddr> = "dns-servers", default("[]"), values::dns_servers,
        "Name servers as \"IP\" or \"IP:PORT\"; empty: the system resolver (/etc/resolv.conf).";
    dns_timeout: Duration = "dns-timeout", default("5"), values::dns_timeout,
        "How long one DNS lookup may take (1ms to 10m); a list lookup that times out counts as not listed.";
    milter_timeout: Duration = "milter-timeout", default("7210"), values::milter_timeout,
        "How long the MTA may stay silent on a milter connection before it is closed (libmilter's default; 1s to 1d).";
    shutdown_timeout: Duration = "shutdown-timeout", default("30"), values::shutdown_timeout,
        "On SIGTERM, how long open sessions may run before they are closed (0 to 1d).";
    /// Where Prometheus scrapes `/metrics`; None: off.
    metrics_listen: Option<crate::metrics::MetricsListen> = "metrics-listen", default("\"\""), values::metrics_listen, restart(|c: &Config| c.metrics_listen.as_ref().map(|m| m.to_string()).unwrap_or_default()),
        "Serve Prometheus/OpenMetrics text at /metrics on this address: \"127.0.0.1:9894\", \"[::1]:9894\" or unix:/path (docs/metrics.md). Empty: off. Counters survive reloads. Never a public address: anyone who reaches it sees your mail volumes. Restart to change.";
    /// The access-map text file; None: no access-map (#115).
    access_map: Option<PathBuf> = "access-map", default("\"\""), values::optional_file,
        "smtpf access-map text file (docs/access-map.md): Connect:, Helo:, From:, To:, combos, Grey-Connect:, Grey-To:. Read at start and at reload; empty: none.";
    /// DNS lists consulted at connect, in smtpf/postscreen syntax (validated entries).
    dns_bl: Vec<Zone> = "dns-bl", default("[]"), values::zones,
        "IP block lists queried at connect: \"zone\", \"zone/mask\" (smtpf) or \"zone=127.0.0.[2..11]*weight\" (postscreen). A listed client gets 550 5.7.0 ... black listed by ZONE #525.";
    /// Sum of dns-bl weights that makes a client black listed.
    dns_bl_threshold: i32 = "dns-bl-threshold", default("1"), values::threshold,
        "Sum of dns-bl weights from which a client counts as listed (1: any hit, as smtpf).";
    dns_wl: Vec<Zone> = "dns-wl", default("[]"), values::zones,
        "IP white lists queried at connect (same syntax): a hit makes the client white, skipping policy checks and greylisting.";
    dns_gl: Vec<Zone> = "dns-gl", default("[]"), values::zones,
        "IP grey lists queried at connect (same syntax): a hit skips pre-DATA policy checks and greylisting; content checks still apply.";
    /// Hold pre-RCPT rejects and give them at each RCPT (white-listed recipients still get mail).
    smtp_delay_checks: bool = "smtp-delay-checks", default("false"), values::boolean,
        "Hold rejects decided before RCPT (dns-bl, access-map) and give them at each RCPT, so white-listed recipients (To: OK) still get mail.";
    /// Domain lists for hosts of URIs in message bodies.
    uri_bl: Vec<Zone> = "uri-bl", default("[]"), values::zones,
        "Domain block lists (e.g. a SURBL-style zone) for hosts of URIs in the message body; queried with the registered domain (public suffix list).";
    /// IP lists for the addresses of URI hosts.
    uri_dns_bl: Vec<Zone> = "uri-dns-bl", default("[]"), values::zones,
        "IP block lists applied to the addresses of URI hosts (and to IP-literal URIs).";
    uri_bl_policy: UriPolicy = "uri-bl-policy", default("\"reject\""), values::uri_policy,
        "What a URI list hit does: \"reject\" (550 5.7.1 rejected content ... #895), \"discard\" (accept and throw away, #785), \"none\" (log only).";
    /// Most URI hosts looked up per message.
    uri_max_test: usize = "uri-max-test", default("10"), values::uri_max_test,
        "Most distinct URI hosts looked up per message.";
    /// Refuse senders whose domain has no usable MX (smtpf's `mail-require-mx`).
    mail_require_mx: bool = "mail-require-mx", default("true"), values::boolean,
        "At MAIL, verify the sender's domain: NXDOMAIN → 553 5.1.8 #434; no usable MX (null MX, only private/loopback/reserved addresses) → 553 5.1.8 #439; lookup failure → 451 #436/#907 (the sender retries). The null sender is checked by its HELO name but never refused.";
    /// Domains (and their subdomains) that are ours: never MX-verified (split DNS).
    local_domains: Vec<String> = "local-domains", default("[]"), values::domains,
        "Our own domains (and subdomains): senders from them are not MX-verified (split DNS).";
    /// Greylisting key elements, in smtpf's order; empty: greylisting off.
    grey_key: Vec<KeyWord> = "grey-key", default("\"ptr,mail,rcpt\""), values::grey_key,
        "Greylisting key elements: ip, ptr (PTR name minus its first label; the IP when the PTR is not verified or SPF failed), ptrn (PTR with digit runs as #), helo, helos, mail, rcpt. Empty: greylisting off.";
    grey_temp_fail_period: u64 = "grey-temp-fail-period", default("600"), values::grey_period,
        "How long a new tuple is temp-failed before a retry passes (whole seconds, up to 30d); 0: greylisting off. Grey-Connect:/Grey-To: access-map entries override it.";
    grey_temp_fail_ttl: u64 = "grey-temp-fail-ttl", default("90000"), values::record_ttl,
        "How long a tuple that never retried is remembered (25 h; 1s to 366d).";
    /// Lifetime of a passed record (smtpf's generic accept TTL).
    cache_accept_ttl: u64 = "cache-accept-ttl", default("604800"), values::record_ttl,
        "How long a passed host/tuple passes at once (7 days; 1s to 366d); use slides it forward (at most once an hour).";
    grey_report_header: String = "grey-report-header", default("\"X-Grey-Report\""), values::header_name,
        "Header added to a message whose tuple passes for the first time (age, key, first-seen time); empty: none.";
    grey_ipv4_prefix: u8 = "grey-ipv4-prefix", default("32"), values::ipv4_prefix,
        "Aggregate the ip key element to this IPv4 prefix (postgrey users: 24).";
    grey_ipv6_prefix: u8 = "grey-ipv6-prefix", default("128"), values::ipv6_prefix,
        "Aggregate the ip key element to this IPv6 prefix (postgrey users: 64).";
    /// Answer 421 (the MTA closes the session, smtpf's DROP) when the key names the host.
    grey_drop: bool = "grey-drop", default("true"), values::boolean,
        "When the key names the host (ip, ptr, ptrn): answer 421 so the MTA closes the session, as smtpf drops the connection; false: 451.";
    /// postgrey's --auto-whitelist-clients, for keys that do not name the host.
    grey_auto_whitelist_clients: u32 = "grey-auto-whitelist-clients", default("5"), values::auto_whitelist,
        "postgrey's auto-whitelist: after this many messages from one client passed greylisting, the client (its ip element, so grey-ipv4-prefix/grey-ipv6-prefix apply) is no longer greylisted for cache-accept-ttl (record grey:awl:IP, #2066). Only for a grey-key without ip/ptr/ptrn: with those, the host record already lets a client through after its first pass. 0: off.";
    /// postgrey's client whitelist files: clients never greylisted.
    grey_whitelist_clients: Vec<PathBuf> = "grey-whitelist-clients", default("[]"), values::files,
        "Files in postgrey's whitelist_clients format (host or domain names, /regex/ on the verified name, IPv4/IPv6 addresses, CIDRs, partial IPv4 a.b.c / a.b): clients that are never greylisted (#2065 names the file and line). Read at start and at reload.";
    /// postgrey's recipient whitelist files: recipients never greylisted.
    grey_whitelist_recipients: Vec<PathBuf> = "grey-whitelist-recipients", default("[]"), values::files,
        "Files in postgrey's whitelist_recipients format (user@domain, user@, domain, /regex/): a message to one of these recipients is not greylisted (#2065). Read at start and at reload.";
    /// Key SPF-authenticated senders by their domain, so retries from a big pool match.
    grey_spf_identity: bool = "grey-spf-identity", default("true"), values::boolean,
        "When SPF passes for the sender, the client part of the greylist key (ip, ptr, ptrn) is the sender's domain (spf:DOMAIN) instead of the address or PTR: a retry from any address the domain's SPF record authorises matches, so big senders whose retries come from another address of their pool are not greylisted again. false: smtpf's key.";
    /// Content greylisting: decide at end of message on a hash of the decoded body.
    grey_content: bool = "grey-content", default("false"), values::boolean,
        "Content greylisting: a new tuple's first message is let through DATA, hashed (decoded MIME text, whitespace and MIME structure ignored) and temp-failed at end of message; a retry passes only if its content matches (else 450 4.4.5 #553).";
    grey_dry_run: bool = "grey-dry-run", default("false"), values::boolean,
        "Only log what greylisting would do (#387, #2022) and let every message through.";
    /// How long a message is remembered for duplicate detection; 0: off.
    dupmsg_ttl: u64 = "dupmsg-ttl", default("90000"), values::dupmsg_ttl,
        "How long a message (body + Message-ID + first recipient) is remembered to recognise a copy sent again (up to 366d); 0: off.";
    dupmsg_policy: DupPolicy = "dupmsg-policy", default("\"tag\""), values::dup_policy,
        "What a duplicate gets: \"tag\" (header X-Smtpf-Duplicate: <first session id>), \"discard\" (accept and throw away), \"reject\" (550 5.3.4 #340). tag is the default because a milter cannot know whether the MTA finally queued the first copy.";
    cache_gc_interval: Duration = "cache-gc-interval", default("300"), values::gc_interval, restart(|c: &Config| show_duration(c.cache_gc_interval)),
        "How often expired greylist and duplicate records are deleted from the SQLite state file (1s to 1d; Redis expires its keys itself). Restart to change.";
}

/// The nearest name to a key the file misspelled: one of our keys, or an smtpf option the file
/// may set although smtpf-milter does not apply it (said so, so that the hint never passes one
/// option off as another).
fn hint(unknown: &str) -> Option<String> {
    let ours = KEYS.iter().map(|k| (k.name, true));
    let smtpf_only = smtpf::OPTIONS.iter().filter(|o| !o.applied()).map(|o| (o.name, false));
    ours.chain(smtpf_only)
        .map(|(name, ours)| (name, ours, strsim::damerau_levenshtein(unknown, name)))
        .filter(|(name, _, d)| *d <= 3.max(name.len() / 4))
        .min_by_key(|(_, ours, d)| (*d, !*ours))
        .map(|(name, ours, _)| match ours {
            true => format!("\"{name}\""),
            false => format!("\"{name}\" (an smtpf option smtpf-milter accepts but does not apply)"),
        })
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
        for (name, v) in &table {
            let smtpf = smtpf::find(name).filter(|o| o.name == name.as_str());
            match (KEYS.iter().find(|k| k.name == name.as_str()), smtpf) {
                (Some(key), _) => (key.set)(&p, &mut c, v)?,
                (None, Some(o)) if !o.applied() => c.smtpf_only.push(o.name.to_string()),
                (None, Some(o)) => {
                    // An smtpf option that one of our keys spells differently.
                    let key = match o.fate {
                        smtpf::Fate::Converted { key, conv: smtpf::Conv::DupmsgTrackAll } => {
                            format!("{key} (+{} is {key} = \"reject\")", o.name)
                        }
                        smtpf::Fate::Converted { key, .. } => key.to_string(),
                        _ => o.name.to_string(),
                    };
                    let message = format!(
                        "an smtpf option that smtpf-milter spells {key}; `smtpf-milter import-smtpf` converts a whole smtpf.cf"
                    );
                    return Err(p.err(Some(name), message));
                }
                (None, None) => {
                    let message = match (v.is_table(), hint(name)) {
                        (_, Some(h)) => format!("unknown key; did you mean {h}?"),
                        (true, None) => "unknown section; this file has no sections, write top-level keys".to_string(),
                        (false, None) => "unknown key (`smtpf-milter keys` lists every key)".to_string(),
                    };
                    return Err(p.err(Some(name), message));
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
        // Decided once per process, before privileges are dropped, like the default socket.
        static DEFAULT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        DEFAULT.get_or_init(default_cache_path).clone()
    }

    /// The store these keys name, resolved (the default state file's path included), so the
    /// store opens without knowing the config file.
    pub fn store_spec(&self) -> StoreSpec {
        match self.cache_type {
            CacheType::Sqlite => StoreSpec::Sqlite {
                path: self.effective_cache_path(),
                gc_interval: self.cache_gc_interval,
                // Group-readable only when a run-group is named (an admin group reading records).
                file_mode: if self.run_group.is_some() { 0o640 } else { 0o600 },
            },
            CacheType::Redis => StoreSpec::Redis(RedisOptions {
                url: self.cache_redis_url.clone(),
                key_prefix: self.cache_key_prefix.clone(),
                timeout: self.cache_timeout,
            }),
        }
    }

    /// Whether a URI list is on: the message must then be kept and scanned (the milter keeps the
    /// body for it; the policy door, which has no body, says it cannot).
    pub fn scans_uris(&self) -> bool {
        (!self.uri_bl.is_empty() || !self.uri_dns_bl.is_empty()) && self.uri_max_test > 0
    }

    /// Settings that are valid but probably not what the admin wants: each is a sentence naming
    /// the key. Logged at start and reload (#2042) and printed by `check-config`.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.dns_timeout > SENDMAIL_READ_TIMEOUT {
            out.push(format!(
                "dns-timeout = {}: longer than Sendmail's default milter read timeout (T=R:10s); a slow lookup makes the MTA give up on the milter and apply its default action (Postfix waits milter_command_timeout = 30s)",
                show_duration(self.dns_timeout)
            ));
        }
        if self.milter_timeout < POSTFIX_CONTENT_TIMEOUT {
            out.push(format!(
                "milter-timeout = {}: shorter than Postfix's milter_content_timeout (300s); a client slow to send its message can have its milter session closed midway",
                show_duration(self.milter_timeout)
            ));
        }
        if !self.verbose.ignored().is_empty() {
            out.push(format!(
                "verbose: smtpf's word(s) {} have no meaning in a milter (the MTA holds the SMTP dialogue, TLS and the message; smtpf-milter has none of smtpf's scanners) and are ignored",
                self.verbose.ignored().join(", ")
            ));
        }
        if let Some(socket) = &self.policy_socket {
            let mut content = Vec::new();
            if self.dupmsg_ttl > 0 {
                content.push("dupmsg");
            }
            if self.scans_uris() {
                content.push("uri-bl");
            }
            if self.grey_content {
                content.push("grey-content");
            }
            if !content.is_empty() {
                out.push(format!(
                    "policy-socket = \"{socket}\": the content checks in force ({}) need the message and run only for mail that comes through the milter socket; mail Postfix sends only to the policy service gets none of them (grey-content there is envelope greylisting)",
                    content.join(", ")
                ));
            }
        }
        if self.grey_temp_fail_ttl < self.grey_temp_fail_period {
            out.push(format!(
                "grey-temp-fail-ttl ({}s) is shorter than grey-temp-fail-period ({}s): a tuple is forgotten before its retry can pass, so it is greylisted again",
                self.grey_temp_fail_ttl, self.grey_temp_fail_period
            ));
        }
        out
    }

    /// One numbered warning per smtpf option the file sets that smtpf-milter does not apply
    /// (#2060 no meaning in a milter, #2061 not implemented): the catalog entry and its two
    /// arguments (the key, and why). Logged at start and reload, printed by `check-config`.
    pub fn smtpf_warnings(&self) -> Vec<(&'static Msg, [String; 2])> {
        self.smtpf_only
            .iter()
            .filter_map(|name| smtpf::find(name))
            .filter_map(|o| match o.fate {
                smtpf::Fate::NoMeaning(why) => Some((&catalog::SMTPF_NO_MEANING, [o.name.to_string(), why.to_string()])),
                smtpf::Fate::NotYet(what) | smtpf::Fate::Always(what) => {
                    Some((&catalog::SMTPF_NOT_IMPLEMENTED, [o.name.to_string(), what.to_string()]))
                }
                smtpf::Fate::Converted { .. } => None,
            })
            .collect()
    }

    /// Names of keys that differ from `other` but only take effect at restart.
    pub fn restart_only_changes(&self, other: &Config) -> Vec<&'static str> {
        KEYS.iter().filter(|k| k.restart.as_ref().is_some_and(|r| (r.differs)(self, other))).map(|k| k.name).collect()
    }

    /// Copies every restart-only key's value from `old` (what a reload keeps in force).
    pub fn keep_restart_only(&mut self, old: &Config) {
        for r in KEYS.iter().filter_map(|k| k.restart.as_ref()) {
            (r.keep)(self, old);
        }
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
    fn defaults_are_smtpfs() {
        // Spelled out as typed values, so a slip in the table's default text shows here.
        let c = Config::default();
        assert!(
            matches!(&c.milter_socket, SocketSpec::Unix(p) if p.ends_with("smtpf-milter.sock") || p.ends_with("milter.sock"))
        );
        assert_eq!(c.milter_socket_mode, 0o660);
        assert_eq!((c.run_user.as_deref(), c.run_group.as_deref(), c.cache_path.as_deref()), (None, None, None));
        assert_eq!((c.log_target, c.verbose.clone()), (Target::Stderr, Verbose::default()));
        assert_eq!(
            (c.cache_type, c.cache_redis_url.as_str(), c.cache_key_prefix.as_str()),
            (CacheType::Sqlite, DEFAULT_REDIS_URL, "smtpf-milter:")
        );
        assert_eq!((c.cache_timeout, c.dns_timeout), (Duration::from_secs(1), Duration::from_secs(5)));
        assert_eq!((c.milter_timeout, c.shutdown_timeout), (Duration::from_secs(7210), Duration::from_secs(30)));
        assert!(c.dns_servers.is_empty() && c.access_map.is_none() && c.local_domains.is_empty());
        assert!(
            c.dns_bl.is_empty() && c.dns_wl.is_empty() && c.dns_gl.is_empty() && c.uri_bl.is_empty() && c.uri_dns_bl.is_empty()
        );
        assert_eq!((c.dns_bl_threshold, c.uri_max_test, c.uri_bl_policy), (1, 10, UriPolicy::Reject));
        assert!(!c.smtp_delay_checks && c.mail_require_mx);
        assert_eq!(c.grey_key, vec![KeyWord::Ptr, KeyWord::Mail, KeyWord::Rcpt]);
        assert_eq!((c.grey_temp_fail_period, c.grey_temp_fail_ttl, c.cache_accept_ttl), (600, 90_000, 604_800));
        assert_eq!((c.grey_report_header.as_str(), c.grey_ipv4_prefix, c.grey_ipv6_prefix), ("X-Grey-Report", 32, 128));
        assert!(c.grey_drop && !c.grey_dry_run && !c.grey_content && c.grey_spf_identity);
        assert_eq!((c.cache_gc_interval, c.dupmsg_ttl, c.dupmsg_policy), (Duration::from_secs(300), 90_000, DupPolicy::Tag));
    }

    #[test]
    fn every_key_has_one_row_and_a_default_its_parser_reads() {
        let mut names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KEYS.len(), "a key appears twice in the table");
        for k in KEYS.iter().filter(|k| k.default_is_toml) {
            let text = format!("{} = {}\n", k.name, k.default);
            assert_eq!(Config::from_toml(&text, None), Ok(Config::default()), "{text}");
        }
    }

    #[test]
    fn ranges_are_refused_with_key_and_line() {
        for (text, message) in [
            ("grey-temp-fail-ttl = 9223372036854775807", "must be from 1s to 366d"),
            ("cache-accept-ttl = \"9999999w\"", "must be from 1s to 366d"),
            ("grey-temp-fail-period = \"500ms\"", "must be whole seconds"),
            ("dupmsg-ttl = \"1000d\"", "must be from 0s to 366d"),
            ("milter-timeout = \"2d\"", "must be from 1s to 1d"),
            ("grey-ipv4-prefix = 33", "must be 0 to 32"),
        ] {
            let e = Config::from_toml(&format!("\n{text}\n"), None).unwrap_err();
            assert_eq!(e.line, Some(2), "{text}: {e}");
            assert!(e.message.contains(message), "{text}: {e}");
        }
        assert_eq!(Config::from_toml("cache-timeout = \"250ms\"", None).unwrap().cache_timeout, Duration::from_millis(250));
        assert_eq!(Config::from_toml("dns-timeout = \"1500ms\"", None).unwrap().dns_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn the_defaults_draw_no_warning_and_odd_settings_do() {
        assert!(Config::default().warnings().is_empty(), "{:?}", Config::default().warnings());
        let c = Config::from_toml("grey-temp-fail-period = \"2h\"\ngrey-temp-fail-ttl = \"1h\"\n", None).unwrap();
        assert_eq!(c.warnings().len(), 1);
        assert!(c.warnings()[0].starts_with("grey-temp-fail-ttl (3600s) is shorter than grey-temp-fail-period (7200s)"));
        assert!(Config::from_toml("dns-servers = [\"0.0.0.0\"]", None).unwrap_err().message.contains("no name server's address"));
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
    fn smtpf_options_we_do_not_apply_are_accepted_with_one_warning_each() {
        let c = Config::from_toml("cache-reject-ttl = 3600\ninterfaces = \"[::0]:25\"\nverbose = \"info\"\n", None).unwrap();
        assert_eq!(c.smtpf_only, ["cache-reject-ttl", "interfaces"]);
        let w = c.smtpf_warnings();
        assert_eq!((w[0].0.num, w[0].1[0].as_str()), (2061, "cache-reject-ttl"));
        assert_eq!((w[1].0.num, w[1].1[0].as_str()), (2060, "interfaces"));
        assert!(w[1].1[1].contains("the MTA listens"), "{}", w[1].1[1]);
        // Otherwise the settings are the defaults, and a file without them draws no such line.
        assert_eq!(Config { smtpf_only: Vec::new(), ..c }, Config::default());
        assert!(Config::default().smtpf_warnings().is_empty());
        // smtpf's names are lower case; another spelling is no smtpf option.
        assert!(Config::from_toml("Cache-Reject-TTL = 1\n", None).is_err());
    }

    #[test]
    fn hints_never_pass_one_option_off_as_another() {
        let e = Config::from_toml("cache-reject-tll = 1\n", None).unwrap_err();
        assert_eq!(
            e.message,
            "unknown key; did you mean \"cache-reject-ttl\" (an smtpf option smtpf-milter accepts but does not apply)?"
        );
        let e = Config::from_toml("cache-accept-tll = 1\n", None).unwrap_err();
        assert_eq!(e.message, "unknown key; did you mean \"cache-accept-ttl\"?");
        let e = Config::from_toml("dupmsg-track-all = true\n", None).unwrap_err();
        assert!(e.message.contains("spells dupmsg-policy (+dupmsg-track-all is dupmsg-policy = \"reject\")"), "{e}");
        // Every smtpf option we do not apply is accepted as it is, so none of them can get a hint.
        for o in smtpf::OPTIONS.iter().filter(|o| !o.applied()) {
            let c = Config::from_toml(&format!("{} = 1\n", o.name), None).unwrap_or_else(|e| panic!("{}: {e}", o.name));
            assert_eq!(c.smtpf_warnings().len(), 1, "{}", o.name);
        }
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

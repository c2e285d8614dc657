//! Every option smtpf 2.6 registers, and what smtpf-milter makes of it.
//!
//! An admin moving from smtpf brings an `smtpf.cf`, and habits: keys copied from it into the TOML
//! file. This table is the one place that says, for each of smtpf's option names, whether
//! smtpf-milter reads it (and as which key, with which value conversion), whether it has no
//! meaning in a milter (the job belongs to the MTA or to the service manager, with the reason), or
//! whether it is a check smtpf-milter does not have yet. `smtpf-milter import-smtpf` converts a
//! whole `smtpf.cf` from it ([`super::import`]), and the config parser reads it to accept, with one
//! numbered warning each (#2060, #2061), the smtpf options it does not apply, instead of refusing
//! to start over a setting it could not have honoured anyway; its near-miss hints never offer a
//! different option for one of these names.
//!
//! The names and defaults are those smtpf 2.6.10 registers with `optionsRegister` (its own and the
//! few libsnert ones it registers), plus five cache-sharing options its documentation still
//! lists although the source no longer registers them.

/// smtpf's option: its name, default and fate here.
#[derive(Debug)]
pub struct SmtpfOption {
    /// The name in `smtpf.cf` (smtpf compares names case-insensitively; these are lower case).
    pub name: &'static str,
    /// smtpf's default as `smtpf.cf` spells it (`+`/`-` for booleans); a description in
    /// parentheses for the few long built-in lists. A `name+=value` line appends to it.
    pub default: &'static str,
    /// What smtpf-milter does with it: the importer converts or reports by it, the config
    /// parser accepts or refuses the key by it.
    pub fate: Fate,
}

/// What smtpf-milter does with an smtpf option.
#[derive(Debug)]
pub enum Fate {
    /// Read by smtpf-milter as `key`, the value converted as `conv` says.
    Converted {
        /// Our key (the same name, but for `dupmsg-track-all`).
        key: &'static str,
        /// How smtpf's value text becomes ours.
        conv: Conv,
    },
    /// Nothing in a milter corresponds; the reason (whose job it is instead).
    NoMeaning(&'static str),
    /// A check or setting smtpf-milter does not have yet; what it does in smtpf. A value that turns
    /// it off is what smtpf-milter does already, and is reported so.
    NotYet(&'static str),
    /// Not settable: smtpf-milter always behaves as smtpf's default of this option does (the text
    /// says how). Another value is a setting smtpf-milter does not have.
    Always(&'static str),
}

/// How an smtpf value becomes a TOML value; each follows smtpf's own reading of the text (its
/// numbers are C `strtol` with base 0, its lists split at `;`, `,` and spaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv {
    /// `+`/`-`, or a number (non-zero is true; smtpf reads other words as 0).
    Boolean,
    /// Seconds as a number (smtpf takes no units). `zero_is_off`: smtpf treats a negative value
    /// as 0, which turns the feature off.
    Seconds { zero_is_off: bool },
    /// `uri-max-test`: smtpf's 0 (or less) means unlimited, ours means none.
    UriMaxTest,
    /// DNS list entries (`zone`, `zone/mask`, `zone:code`).
    Zones,
    /// smtpf's verbose words; those naming lines smtpf-milter does not have are dropped.
    Verbose,
    /// `grey-key` words or bit mask.
    GreyKey,
    /// `uri-bl-policy`: smtpf looks at the first letter only.
    UriPolicy,
    /// A string taken as it is (header names, users, paths).
    Text,
    /// smtpf's map location (`type!path`); only a text file converts.
    AccessMap,
    /// `dupmsg-track-all`: on means copies are refused (`dupmsg-policy = "reject"`).
    DupmsgTrackAll,
}

impl SmtpfOption {
    /// Whether smtpf-milter applies the option in any way (otherwise a TOML file may set it and
    /// gets a warning).
    pub fn applied(&self) -> bool {
        matches!(self.fate, Fate::Converted { .. })
    }

    /// Whether smtpf treats it as a `+`/`-` switch.
    pub fn is_switch(&self) -> bool {
        matches!(self.default, "+" | "-")
    }

    /// Whether the value may be a secret, so reports do not repeat it.
    pub fn is_secret(&self) -> bool {
        self.name.contains("secret") || self.name.ends_with("-pass")
    }
}

/// The option of this name (any case), if smtpf 2.6 has one.
pub fn find(name: &str) -> Option<&'static SmtpfOption> {
    OPTIONS.iter().find(|o| o.name.eq_ignore_ascii_case(name))
}

const fn to(name: &'static str, default: &'static str, key: &'static str, conv: Conv) -> SmtpfOption {
    SmtpfOption { name, default, fate: Fate::Converted { key, conv } }
}

const fn same(name: &'static str, default: &'static str, conv: Conv) -> SmtpfOption {
    to(name, default, name, conv)
}

const fn no(name: &'static str, default: &'static str, why: &'static str) -> SmtpfOption {
    SmtpfOption { name, default, fate: Fate::NoMeaning(why) }
}

const fn later(name: &'static str, default: &'static str, what: &'static str) -> SmtpfOption {
    SmtpfOption { name, default, fate: Fate::NotYet(what) }
}

const fn always(name: &'static str, default: &'static str, how: &'static str) -> SmtpfOption {
    SmtpfOption { name, default, fate: Fate::Always(how) }
}

// Reasons shared by several options.
const COMMAND: &str = "a command to the smtpf process, not a setting: systemctl and smtpf-milter's own subcommands do this";
const LICENCE: &str = "smtpf's licence key; smtpf-milter needs none";
const LISTEN: &str = "where smtpf listened for SMTP clients: the MTA listens, and the milter's own socket is milter-socket";
const LISTENER: &str = "a setting of smtpf's SMTP listening socket: the MTA owns that socket";
const THREADS: &str = "smtpf's thread pool for SMTP clients: the milter serves the MTA's connections on a fixed runtime";
const DIALOGUE: &str =
    "an SMTP dialogue timeout: the MTA runs the dialogue (Postfix smtpd_timeout); milter-timeout bounds the MTA's milter connection";
const FORWARD: &str = "smtpf's connection to the MTA behind it: here the MTA delivers the mail itself";
const ESMTP: &str = "an SMTP extension smtpf offered: the MTA offers its own (Postfix smtpd_discard_ehlo_keywords)";
const GRAMMAR: &str = "how the client writes its SMTP commands: the MTA parses them (Postfix strict_rfc821_envelopes) and the milter sees the parsed values";
const PACING: &str = "pacing replies and dropping unruly clients are the MTA's (Postfix smtpd_error_sleep_time, smtpd_soft_error_limit, smtpd_hard_error_limit)";
const SHARING: &str = "smtpf's UDP record sharing between hosts: milters on several MX hosts share one Redis store instead (cache-type = \"redis\")";
const SHARING_OLD: &str = "an older cache-sharing option that smtpf 2.6 itself no longer reads; milters on several MX hosts share one Redis store (cache-type = \"redis\")";
const TLS: &str = "TLS is the MTA's (Postfix smtpd_tls_*)";
const TESTING: &str = "a testing aid of smtpf's own";
const SCANNER: &str = "scanning through an external daemon; run that scanner's own milter next to this one";
const SPAMD: &str = "SpamAssassin scoring through spamd; run a spamd milter (such as spamass-milter) next to this one";
const SPF: &str =
    "acting on SPF results: smtpf-milter evaluates SPF at MAIL and logs the result (#717) but refuses nothing on it yet";
const CONCURRENCY: &str =
    "per-client concurrency limits (access-map Concurrent-Connect:; Postfix: smtpd_client_connection_count_limit)";
const RATE: &str = "connection rate limits (access-map Rate-Connect:; Postfix: smtpd_client_connection_rate_limit)";
const MAIL_BL: &str = "block lists of hashed mail addresses (free-mail senders) found in the message";
const ATTACHMENTS: &str = "refusing attachments by MIME type or file name";
const SAVE: &str = "saving messages to files for diagnosis (access-map SAVE and TRAP)";
const STATS: &str = "smtpf's statistics counters and their HTTP upload";
const CALL_BACK: &str = "sender address verification by calling the sender's MX back (Postfix: reject_unverified_sender)";
const CALL_AHEAD: &str = "recipient verification against the MTA behind smtpf: the MTA knows its recipients (Postfix: local_recipient_maps, reject_unverified_recipient)";
const EMEW: &str = "enhanced Message-ID tagging (EMEW) to refuse bounces of mail not sent here";
const CLICK: &str = "click-to-white-list links appended to refusals";
const SIQ: &str = "SIQ reputation queries";
const P0F: &str = "a header reporting the client's operating system (passive fingerprinting by p0f)";
const CTASD: &str = "Cyren (Commtouch) content classification through ctasd";
const CLI: &str = "running an external command on the envelope or the content";

/// Every option, sorted by name: what `import-smtpf` and the config parser look names up in.
pub const OPTIONS: &[SmtpfOption] = &[
    same("access-map", "sql!/etc/smtpf/access.sq3", Conv::AccessMap),
    no("access-tag-words", "", "prints the access-map vocabulary and exits; docs/access-map.md lists the tags and actions smtpf-milter reads"),
    no("access-word-tags", "", "prints the access-map vocabulary and exits; docs/access-map.md lists the tags and actions smtpf-milter reads"),
    later("auth-delay-checks", "-", "holding connect and HELO checks until MAIL so that a client can authenticate first"),
    later("avastd-policy", "reject", SCANNER),
    later("avastd-socket", "", SCANNER),
    later("avastd-timeout", "120", SCANNER),
    same("cache-accept-ttl", "604800", Conv::Seconds { zero_is_off: false }),
    same("cache-gc-interval", "300", Conv::Seconds { zero_is_off: false }),
    no("cache-hosts", "", SHARING),
    no("cache-multicast-ip", "", SHARING_OLD),
    no("cache-multicast-port", "6920", SHARING_OLD),
    no("cache-multicast-ttl", "1", SHARING),
    later("cache-on-corrupt", "replace", "choosing what happens to a damaged state file: smtpf-milter stops with #172 and leaves the file alone"),
    same("cache-path", "/var/cache/smtpf/cache.sq3", Conv::Text),
    no("cache-port", "6920", SHARING),
    later("cache-reject-ttl", "604800", "the lifetime of refusal records of checks smtpf-milter does not have (call-back, call-ahead); greylisting uses grey-temp-fail-ttl"),
    no("cache-secret", "", SHARING),
    no("cache-sync-mode", "off", "SQLite's synchronous mode: smtpf-milter sets its own (WAL, commits grouped by one writer)"),
    later("cache-temp-fail-ttl", "7200", "the lifetime of temporary-failure records of checks smtpf-milter does not have (call-back, call-ahead); greylisting uses grey-temp-fail-ttl"),
    no("cache-unicast-domain", "", SHARING_OLD),
    no("cache-unicast-hosts", "", SHARING_OLD),
    no("cache-unicast-port", "6921", SHARING_OLD),
    no("call-ahead-as-sender", "-", CALL_AHEAD),
    no("call-ahead-command-timeout", "45", CALL_AHEAD),
    later("call-back", "-", CALL_BACK),
    later("call-back-pass-grey", "-", CALL_BACK),
    later("call-back-strict-greeting", "-", CALL_BACK),
    later("call-back-uri-greeting", "-", CALL_BACK),
    later("clamd-max-size", "10000", SCANNER),
    later("clamd-policy", "reject", SCANNER),
    later("clamd-scan-all", "+", SCANNER),
    later("clamd-socket", "", SCANNER),
    later("clamd-timeout", "120", SCANNER),
    later("cli-content", "", CLI),
    later("cli-envelope", "", CLI),
    later("cli-timeout", "60", CLI),
    later("click-secret", "", CLICK),
    later("click-ttl", "90000", CLICK),
    later("click-url", "", CLICK),
    later("client-ip-in-ptr", "-", "refusing clients whose PTR name is made from their IP address (grey-key's ptr element already falls back to the IP for them)"),
    later("client-is-mx", "-", "weakening PTR-based refusals until the sender's MX or SPF is known"),
    later("client-ptr-required", "-", "refusing clients without a PTR record (Postfix: reject_unknown_reverse_client_hostname)"),
    later("concurrent-421-delay", "15", CONCURRENCY),
    later("concurrent-drop", "+", CONCURRENCY),
    later("ctasd-policy", "reject", CTASD),
    later("ctasd-socket", "", CTASD),
    later("ctasd-stream", "0", CTASD),
    later("ctasd-subject-tag", "[SUSPECT]", CTASD),
    later("ctasd-timeout", "120", CTASD),
    no("daemon", "+", "background or foreground: smtpf-milter runs in the foreground, under systemd or another supervisor"),
    later("deny-compressed-name", "(Microsoft's unsafe file extensions)", ATTACHMENTS),
    later("deny-content", "-", ATTACHMENTS),
    later("deny-content-name", "(Microsoft's unsafe file extensions)", ATTACHMENTS),
    later("deny-content-type", "application/*executable;application/*msdos-program;application/*msdownload;message/partial", ATTACHMENTS),
    later("deny-top-content-type", "(application, script, audio, image and video types)", ATTACHMENTS),
    later("digest-bl", "", "block lists of message body digests"),
    same("dns-bl", "", Conv::Zones),
    later("dns-bl-headers", "", "checking IP addresses found in headers against dns-bl"),
    same("dns-gl", "", Conv::Zones),
    no("dns-max-timeout", "45", "smtpf's bound on one DNS query with all its retries, inside a long SMTP session: a milter must answer within the MTA's milter timeouts, so dns-timeout (default 5s) bounds each lookup instead"),
    no("dns-round-robin", "-", "how smtpf's resolver spread queries over name servers: the milter's resolver chooses among dns-servers itself"),
    same("dns-wl", "", Conv::Zones),
    later("domain-bl", "", "domain block lists for URI hosts queried by full name (uri-bl queries the registered domain)"),
    to("dupmsg-track-all", "-", "dupmsg-policy", Conv::DupmsgTrackAll),
    same("dupmsg-ttl", "90000", Conv::Seconds { zero_is_off: true }),
    later("emew-dsn-policy", "none", EMEW),
    later("emew-secret", "", EMEW),
    later("emew-ttl", "604800", EMEW),
    no("file", "/etc/smtpf/smtpf.cf", "the option file itself: smtpf-milter is given its TOML file with --config"),
    later("fpscand-policy", "reject", SCANNER),
    later("fpscand-socket", "", SCANNER),
    later("fpscand-timeout", "120", SCANNER),
    same("grey-content", "-", Conv::Boolean),
    later("grey-content-save", "-", "saving the hashed content of greylisted messages for diagnosis"),
    same("grey-key", "ptr,mail,rcpt", Conv::GreyKey),
    same("grey-report-header", "X-Grey-Report", Conv::Text),
    same("grey-temp-fail-period", "600", Conv::Seconds { zero_is_off: true }),
    same("grey-temp-fail-ttl", "90000", Conv::Seconds { zero_is_off: false }),
    later("helo-claims-us", "+", "dropping clients whose HELO claims one of our own domains"),
    later("helo-ip-mismatch", "-", "dropping clients whose HELO address literal is not their address"),
    later("helo-is-ptr", "-", "refusing a HELO that repeats a PTR name made from the client's IP address"),
    no("help", "", COMMAND),
    later("http-timeout", "60", "following HTTP links in messages (uri-links-policy)"),
    later("idle-retest-timer", "300", "testing long-running connections against dns-bl again"),
    no("info", "", COMMAND),
    no("interface-ip", "0.0.0.0:25", LISTEN),
    no("interface-name", "", LISTEN),
    no("interfaces", "[::0]:25;0.0.0.0:25", LISTEN),
    later("ixhash-bl", "", "iXhash block lists of message body hashes"),
    no("lickey-file", "/etc/smtpf/lickey.txt", LICENCE),
    no("lint", "-", "smtpf's licensed lint reports on the SMTP dialogue: the MTA parses the dialogue"),
    later("mail-bl", "", MAIL_BL),
    later("mail-bl-domains", "(free-mail domains: gmail.*, hotmail.*, yahoo.*, ...)", MAIL_BL),
    later("mail-bl-headers", "From;Reply-To", MAIL_BL),
    later("mail-bl-max", "10", MAIL_BL),
    later("mail-bl-policy", "reject", MAIL_BL),
    same("mail-require-mx", "+", Conv::Boolean),
    later("mail-retest-client", "-", "testing the client's IP again at each transaction of a session"),
    later("mail-strict", "-", "checking that free-mail senders come from their provider's servers"),
    later("msg-limit-report", "tempfail", "message limits per client or sender (access-map Msg-Limit tags) and their reports"),
    later("ns-a-bl", "", "IP block lists for the name servers of URI domains"),
    later("ns-bl", "", "name block lists for the name servers of URI domains"),
    later("one-domain-per-session", "-", "allowing one sender domain per session"),
    later("one-rcpt-per-null", "+", "allowing one recipient for the null sender"),
    later("p0f-report-header", "X-p0f-Report", P0F),
    later("p0f-socket", "", P0F),
    later("p0f-timeout", "5", P0F),
    no("quit", "", COMMAND),
    later("rate-421-delay", "15", RATE),
    later("rate-drop", "+", RATE),
    later("rate-throttle", "20", RATE),
    later("reject-percent-relay", "+", "refusing the % relay hack in addresses (Postfix: allow_percent_hack = no)"),
    later("reject-quoted-at-sign", "+", "refusing a quoted @ in the local part of an address"),
    later("reject-unknown-tld", "+", "refusing addresses in top-level domains IANA does not list"),
    later("reject-uucp-route", "+", "refusing UUCP !-path addresses (Postfix: swap_bangpath)"),
    no("relay-reply", "-", "passing on the RCPT errors of the MTA behind smtpf: here the MTA answers RCPT itself"),
    later("report-to", "postmaster", "where smtpf mailed its reports (message limits)"),
    no("restart", "", COMMAND),
    no("restart-if", "", COMMAND),
    no("rfc1652-8bitmime", "-", ESMTP),
    later("rfc2606-special-domains", "+", "refusing RFC 2606 reserved domains (.test, .example, .invalid, .localhost) in addresses"),
    no("rfc2821-angle-brackets", "+", GRAMMAR),
    no("rfc2821-command-length", "-", GRAMMAR),
    later("rfc2821-domain-length", "-", "refusing addresses whose domain is longer than RFC 2821 allows"),
    no("rfc2821-extra-spaces", "-", GRAMMAR),
    no("rfc2821-line-length", "-", GRAMMAR),
    later("rfc2821-literal-plus", "-", "access-map lookups reading + as part of the local part (smtpf-milter tries user+detail, then user)"),
    later("rfc2821-local-length", "-", "refusing addresses whose local part is longer than RFC 2821 allows"),
    no("rfc2821-pad-reply-octet", "", "padding smtpf's replies: the MTA writes the replies the client reads"),
    no("rfc2821-strict-dot", "-", GRAMMAR),
    later("rfc2821-strict-helo", "+", "requiring a domain name or address literal as HELO argument (Postfix: reject_invalid_helo_hostname)"),
    later("rfc2822-7bit-headers", "-", "refusing headers that are not 7-bit printable ASCII"),
    later("rfc2822-min-headers", "-", "requiring RFC 2822's minimum headers (From, Date)"),
    no("rfc2822-missing-eoh", "-", "the MTA parses the header block and passes headers one by one: a milter cannot see whether the blank line was there"),
    later("rfc2822-strict-date", "-", "refusing Date, Resent-Date and Received headers with a malformed date"),
    no("rfc2920-pipelining", "+", ESMTP),
    no("route-forward-selection", "ordered", FORWARD),
    no("route-map", "sql!/etc/smtpf/route.sq3", "smtpf's routes to the MTAs behind it and its recipient table: the MTA routes mail and knows its domains (transport_maps, relay_domains); the milter's own domains are local-domains"),
    same("run-group", "smtpf", Conv::Text),
    no("run-jailed", "-", "a chroot: use the service manager's (systemd RootDirectory= and sandboxing)"),
    no("run-open-file-limit", "8192", "smtpf-milter raises its soft limit to the hard limit at start; set the hard limit with systemd's LimitNOFILE="),
    no("run-pid-file", "/var/run/smtpf.pid", "the service manager tracks the process; smtpf-milter writes no pid file"),
    no("run-save-core", "-", "core dumps are the service manager's (systemd LimitCORE=)"),
    same("run-user", "smtpf", Conv::Text),
    no("run-work-dir", "/var/tmp", "the working directory is the service manager's (systemd WorkingDirectory=); state lives in cache-path"),
    later("savdid-policy", "reject", SCANNER),
    later("savdid-socket", "", SCANNER),
    later("savdid-timeout", "60", SCANNER),
    later("save-data", "-", SAVE),
    later("save-dir", "/tmp", SAVE),
    no("server-max-threads", "0", THREADS),
    no("server-min-threads", "10", THREADS),
    no("server-new-threads", "10", THREADS),
    no("service", "", COMMAND),
    later("siq-score-reject", "-1", SIQ),
    later("siq-score-tag", "50", SIQ),
    later("siq-servers", "", SIQ),
    later("siq-subject-tag", "[SPAM]", SIQ),
    no("slow-quit", "", COMMAND),
    no("smtp-accept-timeout", "10", THREADS),
    no("smtp-auth-enable", "-", ESMTP),
    no("smtp-auth-tls", "+", ESMTP),
    later("smtp-auth-white", "-", "letting authenticated clients skip the content checks (they already skip greylisting)"),
    no("smtp-command-timeout", "300", DIALOGUE),
    no("smtp-command-timeout-black", "30", DIALOGUE),
    no("smtp-connect-timeout", "60", FORWARD),
    no("smtp-data-line-timeout", "180", DIALOGUE),
    same("smtp-delay-checks", "-", Conv::Boolean),
    no("smtp-dot-timeout", "600", FORWARD),
    no("smtp-drop-after", "5", PACING),
    no("smtp-drop-dot", "-", PACING),
    no("smtp-drop-unknown", "-", PACING),
    no("smtp-dsn-reply-to", "", "smtpf's own delivery status notifications: the MTA writes the bounces"),
    no("smtp-enable-esmtp", "+", ESMTP),
    later("smtp-helo-schizo", "1", "refusing a client that changes its HELO argument within a session"),
    no("smtp-keep-alive-timeout", "60", FORWARD),
    no("smtp-linger", "3", LISTENER),
    no("smtp-reject-delay", "-", PACING),
    later("smtp-reject-file", "", "a site text appended to every refusal"),
    later("smtp-report-header", "X-smtpf-Report", "smtpf's report header summarising the checks a message passed"),
    no("smtp-server-queue", "20", LISTENER),
    no("smtp-slow-reply", "-", PACING),
    no("smtp-strict-relay", "-", "who may relay is the MTA's decision (Postfix smtpd_relay_restrictions)"),
    no("smtp-welcome-file", "", "the greeting banner is the MTA's (Postfix smtpd_banner)"),
    no("smtp-xclient-enable", "+", ESMTP),
    later("spamd-command", "CHECK", SPAMD),
    later("spamd-flag-header", "X-Spam-Flag", SPAMD),
    later("spamd-level-character", "x", SPAMD),
    later("spamd-level-header", "X-Spam-Level", SPAMD),
    later("spamd-max-size", "0", SPAMD),
    later("spamd-reject-sender-marked-spam", "+", SPAMD),
    later("spamd-report-header", "X-Spam-Report", SPAMD),
    later("spamd-score-reject", "10", SPAMD),
    later("spamd-skip-tagged", "-", SPAMD),
    later("spamd-socket", "", SPAMD),
    later("spamd-status-header", "X-Spam-Status", SPAMD),
    later("spamd-subject-tag", "[SPAM]", SPAMD),
    later("spamd-timeout", "120", SPAMD),
    later("spf-best-guess-txt", "", SPF),
    later("spf-helo-policy", "", SPF),
    later("spf-mail-policy", "fail-reject", SPF),
    later("spf-received-spf-headers", "+", SPF),
    always("spf-temp-error-dns", "+", "smtpf-milter's SPF evaluation gives TempError for a DNS failure, as RFC 7208 says and smtpf's default does"),
    later("stats-http-pass", "", STATS),
    later("stats-http-post", "", STATS),
    later("stats-http-user", "", STATS),
    later("stats-map", "", STATS),
    no("test-lickey", "-", LICENCE),
    no("test-mode", "-", TESTING),
    no("test-pause-after-dot", "0", TESTING),
    later("time-limit-delimiters", "", "recipient addresses that carry their own expiry time"),
    no("tld-level-one-file", "", "smtpf's table of top-level domains: smtpf-milter finds registered domains with the public suffix list built into it"),
    no("tld-level-two-file", "", "smtpf's table of second-level domains: smtpf-milter finds registered domains with the public suffix list built into it"),
    no("tls-cert-chain-file", "", TLS),
    no("tls-cert-dir", "", TLS),
    no("tls-server-cert", "", TLS),
    no("tls-server-dh", "", TLS),
    no("tls-server-key", "", TLS),
    no("tls-server-key-pass", "", TLS),
    later("trap-dir", "/tmp", SAVE),
    same("uri-bl", "", Conv::Zones),
    later("uri-bl-headers", "", "checking URIs found in headers"),
    later("uri-bl-helo", "-", "checking the HELO argument against uri-bl and uri-dns-bl"),
    later("uri-bl-mail", "-", "checking the sender's domain against uri-bl and uri-dns-bl"),
    same("uri-bl-policy", "reject", Conv::UriPolicy),
    later("uri-bl-ptr", "-", "checking the client's PTR name against uri-bl and uri-dns-bl"),
    always("uri-cite-list", "+", "smtpf-milter always names the list in URI refusals, as smtpf's default does"),
    same("uri-dns-bl", "", Conv::Zones),
    later("uri-ip-in-name", "-", "refusing URI hosts whose name is made from their IP address"),
    later("uri-ip-in-ptr", "0", "refusing URI hosts whose PTR names are made from their IP addresses"),
    later("uri-links-policy", "none", "refusing messages with broken HTTP links"),
    same("uri-max-test", "10", Conv::UriMaxTest),
    later("uri-reject-on-timeout", "-", "refusing URI hosts whose address lookup times out"),
    later("uri-reject-unknown", "-", "refusing URI hosts that do not exist"),
    later("uri-require-domain", "-", "refusing links to a bare IP address"),
    later("uri-require-ptr", "0", "refusing URI hosts whose addresses have no PTR record"),
    later("uri-sub-domains", "-", "querying uri-bl for the subdomains of a URI host too"),
    later("uri-valid-soa", "-", "refusing URI domains without a valid SOA record"),
    same("verbose", "info,smtp=1,tls", Conv::Verbose),
    no("version", "", COMMAND),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KEYS;

    #[test]
    fn one_row_per_option_in_order() {
        for pair in OPTIONS.windows(2) {
            assert!(pair[0].name < pair[1].name, "{} before {}", pair[0].name, pair[1].name);
        }
        for o in OPTIONS {
            assert_eq!(o.name, o.name.to_ascii_lowercase());
        }
        // smtpf 2.6.10 registers 236 options; five more are documented but ignored.
        assert_eq!(OPTIONS.len(), 241);
    }

    #[test]
    fn converted_options_name_our_keys_and_our_keys_named_after_smtpf_are_converted() {
        for o in OPTIONS {
            if let Fate::Converted { key, .. } = o.fate {
                assert!(KEYS.iter().any(|k| k.name == key), "{} converts to {key}, which is no key", o.name);
            }
        }
        for k in KEYS {
            if let Some(o) = find(k.name) {
                assert!(o.applied(), "{} is one of our keys but the smtpf table says it is not applied", k.name);
            }
        }
    }

    #[test]
    fn lookups_ignore_case() {
        assert_eq!(find("Grey-Key").map(|o| o.name), Some("grey-key"));
        assert!(find("grey-keys").is_none());
        assert!(find("cache-secret").unwrap().is_secret() && find("tls-server-key-pass").unwrap().is_secret());
        assert!(!find("cache-path").unwrap().is_secret());
        assert!(find("smtp-delay-checks").unwrap().is_switch() && !find("grey-key").unwrap().is_switch());
    }
}

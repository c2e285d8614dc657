//! The catalog of numbered log messages: the one place that knows numbers, levels and formats.
//!
//! Formats keep smtpf's printf style (`%s`, `%u`, `%lu`, ...) so that admins who know smtpf's
//! message list read the same text; [`super::render`] fills them. Numbers below 2000 are smtpf's own
//! and keep smtpf's meaning; numbers from 2000 on are smtpf-milter's, for events smtpf has no line
//! for (milter protocol errors, reloads, queue ids). `smtpf-milter explain N` prints an entry.

/// Severity, as syslog sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Err,
    Warn,
    Info,
    Debug,
}

impl Level {
    /// The word used by `explain` and smtpf's documentation.
    pub fn word(self) -> &'static str {
        match self {
            Level::Err => "ERR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }

    /// The syslog severity number.
    pub fn syslog_severity(self) -> u8 {
        match self {
            Level::Err => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug => 7,
        }
    }
}

/// What must be switched on in `verbose` for the line to be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Always written (errors, warnings, and the session summary lines smtpf cannot suppress).
    Always,
    /// Written when `verbose` contains `info` (the default).
    Info,
    /// Written when `verbose` contains this word (or `debug`).
    Verb(&'static str),
}

/// One numbered message.
#[derive(Debug)]
pub struct Msg {
    pub num: u16,
    pub level: Level,
    pub gate: Gate,
    /// Whether the line starts with the session id.
    pub session: bool,
    pub format: &'static str,
    pub meaning: &'static str,
}

macro_rules! catalog {
    ($( $name:ident = $num:literal $level:ident $gate:expr, $session:literal, $fmt:literal, $meaning:literal; )*) => {
        $(
            #[doc = $meaning]
            pub const $name: Msg = Msg {
                num: $num, level: Level::$level, gate: $gate, session: $session,
                format: $fmt, meaning: $meaning,
            };
        )*
        /// Every message, in number order (checked by a test).
        pub const ALL: &[&Msg] = &[ $( &$name, )* ];
    };
}

use Gate::{Always, Info as IfInfo, Verb};

catalog! {
    PATTERN_DELIMITER = 100 Err Always, false, "%s:%u: %s",
        "access-map: a !simple! pattern has no closing '!'. The map is refused (at start the daemon does not start; at reload the old map stays).";
    NETWORK_DELIMITER = 103 Err Always, false, "%s:%u: %s",
        "access-map: a [network/cidr] pattern has no closing ']'. The map is refused.";
    NETWORK_SPECIFIER = 105 Err Always, false, "%s:%u: %s",
        "access-map: the network of a [network/cidr] pattern is not an IPv4 or IPv6 address. The map is refused.";
    NETWORK_SPECIFIER_JUNK = 106 Err Always, false, "%s:%u: %s",
        "access-map: a [network/cidr] pattern has a bad prefix length or junk after the network. The map is refused.";
    REGEX_DELIMITER = 108 Err Always, false, "%s:%u: %s",
        "access-map: a /regex/ pattern has no closing '/'. The map is refused.";
    REGEX_ERROR = 110 Err Always, false, "%s:%u: %s",
        "access-map: a /regex/ pattern does not compile (Rust regex syntax, close to POSIX ERE). The map is refused.";
    ACCESS_DISABLED = 115 Warn Always, false, "access-map option disabled",
        "No access-map is configured: no Connect:/Helo:/From:/To: white or black listing.";
    ACCESS_OPEN_ERROR = 117 Err Always, false, "access-map=%s open error: %s",
        "The access-map file cannot be read or has an error (the reason names the line). At start the daemon does not start; at reload the old map stays.";
    ACCESS_CONNECT_OK = 119 Info IfInfo, true, "host %s %s (%s)",
        "Connect: entry with OK: the client is white listed (client, text, the key that matched). Later policy checks, DNS lists and greylisting are skipped; answers stay 'continue'.";
    ACCESS_CONNECT_FROM_OK = 124 Info IfInfo, true, "host %s sender <%s> %s (%s)",
        "Connect:From: entry with OK: this sender from this client is white listed for the message.";
    ACCESS_FROM_OK = 126 Info IfInfo, true, "sender <%s> %s (%s)",
        "From: entry with OK: the sender (address, domain or local part) is white listed for the message.";
    ACCESS_CONNECT_TO_OK = 134 Info IfInfo, true, "host %s recipient <%s> %s (%s)",
        "Connect:To: entry with OK: the recipient is white listed for this client; a delayed reject is not applied to it and the message skips later policy checks.";
    ACCESS_FROM_TO_OK = 136 Info IfInfo, true, "sender <%s> recipient <%s> %s (%s)",
        "From:To: entry with OK: the recipient is white listed for this sender.";
    ACCESS_TO_OK = 138 Info IfInfo, true, "recipient <%s> %s (%s)",
        "To: entry with OK: the recipient is white listed (e.g. postmaster@); a delayed reject is not applied to it.";
    CACHE_OPEN_ERROR = 172 Err Always, false, "cache-path=%s open error: %s",
        "The SQLite state file named by cache-path could not be opened or created; an OS error ends with its number, e.g. `Permission denied (13)`, as smtpf writes `%s (%d)`. The daemon does not start. Check that the directory exists and is writable by run-user (under systemd: StateDirectory=).";
    DUPLICATE = 337 Info IfInfo, true, "%s duplicate key=%s previous session=%s",
        "The message was seen before within dupmsg-ttl (same body, Message-ID and first recipient): the policy applied (TAG adds X-Smtpf-Duplicate, DISCARD throws it away, REJECT answers 550 5.3.4 #340), the key and the session that first let it through.";
    GREY_PASS = 382 Debug Verb("grey"), true, "grey pass key={%s} age=%lu",
        "A greylisted tuple passed: it was first seen age seconds ago, longer than the period (verbose word grey).";
    GREY_LISTED = 387 Info IfInfo, true, "grey listed {%s} for %ld seconds",
        "The message was greylisted at DATA: the key tried last and the seconds left before a retry can pass. The client got 451 4.7.0 try again later #552 (421 when the key has ip/ptr/ptrn and grey-drop is on, so the MTA closes the session).";
    GREY_CONTENT_MISMATCH = 393 Info IfInfo, true, "grey-content message mismatch",
        "grey-content: the retried message is not the one first seen (different decoded body). The client gets 450 4.4.5 try again later #553 and the newest content is remembered.";
    GREY_CONTENT_LISTED = 394 Info IfInfo, true, "grey-content listed {%s} for %ld seconds",
        "grey-content: the message's content was recorded at end of message and the tuple is temp-failed (451/421 4.7.0 #552) for this many seconds.";
    MX_ERROR = 435 Err Always, true, "MX %s error %s",
        "The MX lookup of the sender's domain failed (domain, DNS result: SERVFAIL, timeout, ..., or NXDOMAIN when it is not refused). With mail-require-mx, NXDOMAIN is refused with 553 #434 (and this line is not written) and other failures get 451 #436 so the sender retries; without it the lookup is still made and only this line is written.";
    CLIENT_IS_MX = 437 Info IfInfo, true, "%s is MX for %s",
        "The client is one of the mail exchangers of the sender's domain (flag mx).";
    MX_EMPTY = 438 Warn Always, true, "empty MX list after pruning",
        "The sender's domain has no usable MX: a null MX (RFC 7505), or every MX host points at loopback, private or reserved addresses or has no address. With mail-require-mx the sender gets 553 5.1.8 ... MX invalid #439.";
    LIST_FOUND = 523 Info IfInfo, true, "%s found %s %s",
        "A DNS list hit: the option (dns-bl, dns-wl, dns-gl, uri-bl, uri-dns-bl), what was looked up (client IP or URI host) and the list. dns-wl makes the client white, dns-gl grey, dns-bl black (reply #525); uri lists reject the message (#895).";
    INIT_ERROR = 537 Err Always, false, "init error %s: %s",
        "A start-up step failed (what, why). The daemon does not start.";
    INTERNAL_ERROR = 539 Err Always, true, "internal error %s",
        "An internal fault in this session. The milter answers continue (fails open) and the session goes on.";
    CACHE_GET_ERROR = 542 Err Always, true, "cache get error key={%s} %s",
        "Reading the state store failed; the check lets the message through (fails open).";
    CACHE_PUT_ERROR = 544 Err Always, true, "cache put error key={%s} value={%s} %s",
        "Writing the state store failed; the check lets the message through (fails open).";
    CACHE_DELETE_ERROR = 546 Err Always, true, "cache delete error key={%s} %s",
        "Deleting from the state store failed.";
    INTERFACE_READY = 595 Info IfInfo, false, "interface=%s ready",
        "The milter socket is listening and accepting MTA connections.";
    INTERFACE_ERROR = 596 Err Always, false, "interface=%s error: %s",
        "The milter socket could not be set up (address in use, socket path held by a live process, permission denied, bad socket spec); an OS error ends with its number, e.g. `bind: Address in use (98)`, as smtpf writes `%s (%d)`. The daemon does not start.";
    READY = 599 Info IfInfo, false, "ready",
        "Start-up is complete; the milter serves MTA connections.";
    ACCEPT_ERROR = 602 Err Always, false, "socket accept: %s; th=%u cn=%u",
        "Accepting an MTA connection failed, typically for lack of file descriptors (`Too many open files (24)`, the OS error and its number as smtpf writes them); th is the number of worker threads, cn the open sessions. The listener pauses briefly and retries; open sessions are not affected. Raise LimitNOFILE if it repeats.";
    VERSION = 604 Info Always, false, "smtpf-milter %s %s",
        "Version and licence, logged at start-up.";
    SQLITE_VERSION = 606 Info IfInfo, false, "SQLite %s Public Domain by D. Richard Hipp",
        "Version of the embedded SQLite library.";
    SESSION_START = 637 Info IfInfo, true, "start %s f=\"%s\" th=%u cn=%u cs=%lu",
        "An SMTP client connected to the MTA and the MTA opened its milter session: client (name [ip]:port, or [ip]:port without a verified PTR), client flags, worker threads, active milter connections, connections in the current second.";
    SENDER = 717 Info Always, true, "sender %s tid=%s f=\"%s\" spf-mail=%s spf-helo=%s x=\"%s\"",
        "A MAIL FROM: the sender, the transaction id, MAIL flags, SPF results for MAIL and HELO, and the reply this milter gave (empty when it let the MTA answer). Cannot be suppressed.";
    RECIPIENT = 718 Info Always, true, "recipient %s tid=%s f=\"%s\" x=\"%s\"",
        "A RCPT TO the MTA accepted: the recipient, the transaction id, RCPT flags (cumulative over the transaction) and the reply this milter gave (empty when it let the MTA answer). Cannot be suppressed.";
    DATA_REFUSED = 719 Info Always, true, "data tid=%s f=\"%s\" x=\"%s\"",
        "The DATA command was refused by this milter (for example greylisting): message flags and the reply. Not logged when DATA is allowed.";
    MESSAGE = 720 Info Always, true, "message tid=%s f=\"%s\" b=%lu r=%u/%u m=%s R=%d x=\"%s\"",
        "End of a message: message flags, bytes of headers and body, recipients accepted/rejected by this milter, the Message-ID header (<> when absent), rejects so far in the session, and the reply this milter gave to the end of message (empty when it let the MTA answer).";
    SESSION_END = 721 Info Always, true, "end i=%s p=\"%s\" f=\"%s\" h=\"%s\" m=%u/%u b=%lu R=%d t=%lu l=\"%s\"",
        "End of an SMTP session: client IP, PTR name, client flags, HELO argument, messages passed/MAIL commands, bytes of message content, 4xx/5xx replies given by this milter, session seconds, and the last 4xx/5xx reply given by this milter.";
    SIGNAL_STOPPING = 722 Info Always, false, "signal %d, stopping sessions, cn=%u",
        "SIGTERM or SIGINT: the milter stops accepting connections and lets open sessions finish, up to shutdown-timeout.";
    SIGNAL_TERMINATING_NOW = 723 Info Always, false, "signal %d, terminating process",
        "A second SIGTERM/SIGINT during a graceful stop: remaining sessions are closed at once.";
    SIGNAL_TERMINATING = 725 Info Always, false, "signal %d, terminating process",
        "All sessions have ended (or the shutdown deadline passed); the process exits.";
    USER_NOT_FOUND = 727 Err Always, false, "user \"%s\" not found",
        "run-user names no user on this system. The daemon does not start.";
    GROUP_NOT_FOUND = 728 Err Always, false, "group \"%s\" not found",
        "run-group names no group on this system. The daemon does not start.";
    CHOWN_ERROR = 729 Err Always, false, "chown(\"%s\", \"%s\", \"%s\") error: %s",
        "Giving the milter socket (or its directory) to run-user/run-group failed: path, user id, group id, and the OS error with its number (`Operation not permitted (1)`). The daemon does not start.";
    CHMOD_ERROR = 730 Err Always, false, "chmod(\"%s\", %s) error: %s",
        "Setting milter-socket-mode on the socket failed: path, mode in octal, and the OS error with its number. The daemon does not start.";
    TERMINATED = 732 Info Always, false, "terminated",
        "The process exits.";
    URI_DISCARDED = 785 Err Always, true, "discarded: %s",
        "uri-bl-policy = discard: the message had a listed URI and was accepted and thrown away.";
    MX_INCOMPLETE = 906 Warn Always, true, "MX list incomplete...",
        "No MX host of the sender's domain is usable and some address lookups failed. The sender gets 451 4.1.8 ... MX lookup error #907 and retries later.";
    ACCESS_HELO_OK = 923 Info IfInfo, true, "helo %s %s (%s)",
        "Helo: entry with OK: the client is white listed by its HELO name.";
    GREY_UNEXPECTED = 937 Warn Always, true, "WARNING grey list {%s} rc=%s unexpected, check cache",
        "A greylist record holds a value other than 4 (temp-fail) or 0 (passed), e.g. after a hand edit; the message is let through.";
    GREY_CONTENT_REPLACED = 964 Info IfInfo, true, "grey content hash replaced msg-id=%s key={%s} hash=%s",
        "grey-content: a mismatching retry kept its Message-ID (typical of Exchange rebuilding MIME on retry); its hash replaces the first one and the next retry passes.";
    ACCESS_CONNECT_DISCARD = 974 Info IfInfo, true, "host %s %s",
        "Connect: entry with DISCARD: every message of this session is accepted and thrown away.";
    ACCESS_MESSAGE_DISCARD = 975 Info IfInfo, true, "message %s",
        "From:/To:/combo entry with DISCARD: this message is accepted and thrown away.";
    ACCESS_HELO_DISCARD = 976 Info IfInfo, true, "helo %s %s",
        "Helo: entry with DISCARD: every message of this session is accepted and thrown away.";
    DELAYED = 1034 Info IfInfo, true, "delayed: %s",
        "smtp-delay-checks: a reject decided before RCPT is held and given at each RCPT instead (so white-listed recipients such as postmaster still get mail).";
    CONFIG_LOADED = 2000 Info Always, false, "config %s loaded",
        "The configuration file (or the embedded defaults) was read and validated at start-up.";
    PROTOCOL_ERROR = 2001 Err Always, true, "milter protocol error: %s",
        "The MTA (or whatever connected to the milter socket) sent something that is not valid milter protocol: an oversized or zero length, a truncated frame, an unknown command, a command out of order, a malformed payload. That one connection is closed; the MTA applies its milter_default_action to the SMTP session; other sessions are not affected.";
    READ_TIMEOUT = 2002 Warn Always, true, "milter connection idle for %lu seconds, closing",
        "The MTA sent nothing for milter-timeout seconds. The connection is closed (the MTA would apply milter_default_action if it comes back).";
    NEGOTIATED = 2003 Debug Verb("milter"), true, "negotiated version=%u actions=0x%x protocol=0x%x mta-version=%u mta-actions=0x%x mta-protocol=0x%x",
        "Result of the milter option negotiation: what this milter asked for and what the MTA offered.";
    VERSION_UNSUPPORTED = 2004 Err Always, true, "MTA offers milter protocol version %u; versions 2 to 6 are supported",
        "The MTA speaks a milter protocol version this milter cannot serve. The connection is closed.";
    QUEUE_ID = 2005 Info Always, true, "queue-id %s tid=%s",
        "The MTA's queue id (macro i) for a transaction, logged once when it becomes known, so that a Postfix or Sendmail queue id leads to the session id with one grep.";
    RELOADED = 2006 Info Always, false, "reload: config %s loaded",
        "SIGHUP: the new configuration was valid and is in force for new sessions.";
    RELOAD_FAILED = 2007 Err Always, false, "reload: %s; keeping the previous configuration",
        "SIGHUP: the new configuration is invalid; nothing changed. Fix the file and send SIGHUP again (smtpf-milter --config FILE check-config tells what is wrong).";
    RELOAD_NEEDS_RESTART = 2008 Warn Always, false, "reload: %s changed, which needs a restart; still using %s",
        "SIGHUP: an option that cannot change at run time (the socket, the user, the state file) differs. Everything else was reloaded.";
    STALE_SOCKET = 2009 Info IfInfo, false, "removed stale socket %s",
        "A socket file from a previous run was found with nobody listening; it was removed before binding.";
    SHUTDOWN_DEADLINE = 2010 Warn Always, false, "shutdown deadline of %lu seconds reached, closing %u sessions",
        "Graceful stop: sessions still open after shutdown-timeout are closed; their MTAs apply milter_default_action.";
    LOG_OVERFLOW = 2012 Err Always, false, "log output too slow: %lu lines dropped",
        "The log destination (stderr or syslog) could not keep up; lines were dropped rather than delaying the MTA.";
    EVENT_TRACE = 2013 Debug Verb("milter"), true, "%s %s",
        "Trace of each milter command received and response sent (verbose word milter).";
    IO_ERROR = 2015 Err Always, true, "milter I/O error: %s",
        "Reading from or writing to the MTA failed (connection reset, broken pipe). The session ends.";
    SOCKET_ACTIVATION = 2016 Info IfInfo, false, "socket activation: using inherited %s instead of milter-socket",
        "systemd passed a listening socket (LISTEN_FDS); milter-socket is ignored.";
    NO_CONNECT = 2017 Debug Verb("milter"), true, "milter connection closed before CONNECT",
        "The MTA opened and closed a milter connection without an SMTP client (for example a bare TCP probe of the MTA's port).";
    LOG_TARGET_ERROR = 2018 Err Always, false, "log-target=%s unavailable: %s; logging to stderr",
        "syslog was asked for but /dev/log could not be reached; lines go to stderr instead.";
    CACHE_PATH = 2019 Info IfInfo, false, "cache-path=%s",
        "Where state (greylist and duplicate-message records) is kept.";
    DNS_LIST_FAILED = 2020 Warn Always, true, "%s %s lookup of %s: %s; counted as not listed",
        "A DNS list query timed out or failed (option, zone, name, reason). It counts as not listed: mail is never refused because a list is unreachable. Frequent timeouts: check dns-servers (public resolvers are refused by most lists).";
    ACCESS_WARNING = 2021 Warn Always, false, "access-map %s",
        "access-map: something odd but harmless (a duplicate key: the first entry is used; a tag this milter does not implement: skipped). File and line are named; the rest of the map is in force.";
    GREY_DRY_RUN = 2022 Info Always, true, "grey-dry-run: would have refused {%s}; continuing",
        "grey-dry-run is on: greylisting only logs what it would have done (#387) and lets the message through.";
    CACHE_REDIS = 2023 Info IfInfo, false, "cache-type=redis cache-redis-url=%s cache-key-prefix=%s",
        "Greylist and duplicate records are kept in this Redis server (password hidden), under keys starting with the prefix; several MX hosts may share it (docs/several-mx.md).";
    CACHE_UNAVAILABLE = 2024 Err Always, false, "cache %s unavailable: %s; failing open, further store errors are counted until it answers",
        "The shared store (Redis) cannot be reached, refuses or answers later than cache-timeout, at start-up or while running. Greylisting and duplicate detection let mail through meanwhile; the first failed call is also logged by its check (#542/#544/#546), later ones only counted. The milter reconnects on its own, with backoff.";
    CACHE_RECOVERED = 2025 Info Always, false, "cache %s available again after %lu seconds; %lu store calls failed open meanwhile",
        "The shared store answers again after #2024 (no call has failed for a quiet period of twice cache-timeout, at least 1 s, and a PING succeeded): how long it was unavailable and how many store calls let mail through unchecked meanwhile.";
    LIBRARY_ERROR = 2026 Err Always, false, "%s: %s",
        "An error reported by a library the milter uses (the DNS resolver, hickory): the library's module, then its message and fields, on one line (line breaks and control characters escaped, cut after 2048 bytes). E.g. a DNS answer whose records have another class than the question was rejected. What the milter did about the failure has its own line (a list lookup that failed is #2020).";
    LIBRARY_WARNING = 2027 Warn Always, false, "%s: %s",
        "A warning from a library (the DNS resolver, hickory), written like #2026. E.g. hickory_net::udp::udp_client_stream: ignoring response with wrong message id: a DNS answer that does not match the query (spoofed, or late after a retry) was thrown away and the resolver kept waiting.";
    LIBRARY_DEBUG = 2028 Debug Verb("library"), false, "%s: %s",
        "Info and debug events of the libraries, written like #2026 (verbose word library, or debug): several lines per DNS query. Trace events are never written. Off, they cost nothing: the resolver checks a level before it formats anything.";
    WRITE_TIMEOUT = 2040 Warn Always, true, "MTA did not read our answer for %lu seconds, closing",
        "The MTA stopped reading the milter connection: our answer could not be written within milter-timeout. The connection is closed so that it cannot hold the session (or a shutdown) forever.";
    SESSION_PANIC = 2041 Err Always, true, "internal error in this session, closing its connection: %s",
        "A bug in smtpf-milter hit by what this session sent (please report it with this line). Only this connection is closed; the MTA applies milter_default_action to it, and every other session goes on.";
    CONFIG_WARNING = 2042 Warn Always, false, "config: %s",
        "A setting that is valid but probably not what was meant (a timeout longer than the MTA waits, a record lifetime shorter than the greylisting period). The daemon runs with it; check-config prints the same warning.";
    STORE_ERRORS_SUPPRESSED = 2043 Warn Always, true, "%lu more store errors in the last %lu seconds were not logged one by one",
        "Store errors (#542/#544/#546) are logged at most once a second; this line, written before the next one, counts those in between. Under overload (store busy: request queue full) greylisting still temp-fails tuples it has never seen; other errors let the message through.";
    SYSLOG_LOST = 2044 Err Always, false, "syslog: %lu lines lost while %s was unavailable",
        "The syslog receiver (rsyslog, journald) went away, e.g. while it restarted, and these lines could not be sent. The daemon reconnects on its own (at most one attempt a second) and writes this line first once it can.";
    STORE_WRITES_FAILED = 2045 Err Always, false, "cache: %lu record writes failed in the last %lu seconds: %s",
        "Records written without waiting (greylist first sights, duplicate-message records, refreshes) could not be stored: disk full, a read-only or locked file. Those records are lost (a greylisted sender may be temp-failed once more); mail keeps flowing. Logged when it starts, then at most once a minute with the count, until #2046.";
    STORE_WRITES_RECOVERED = 2046 Info Always, false, "cache: writes succeed again; %lu record writes failed meanwhile",
        "The state store stores records again after #2045: how many writes were lost in all.";
    STORE_WAITING = 2047 Err Always, false, "cache %s cannot be opened for now; serving without greylisting and duplicate detection (failing open) and trying again",
        "At start the state file could not be opened or written (full or read-only filesystem, permissions, a directory that cannot be created; #172 has the reason). Mail is not held up: greylisting and duplicate detection let messages through until the file opens, which is tried again after 1 s and then up to every 30 s (#2048). A file that is not a database still stops the daemon.";
    STORE_OPENED = 2048 Info Always, false, "cache %s opened; greylisting and duplicate detection resume",
        "The state file that could not be opened at start (#2047), or that was deleted or replaced under the daemon (#2049), is open: checks that keep state are back for new messages.";
    STORE_REPLACED = 2049 Warn Always, false, "cache %s was deleted or replaced under the daemon; reopening",
        "The state file at cache-path is no longer the file the daemon opened (deleted, or replaced by a restore or an admin's mv). Records written to the old file would be lost, so the old store is closed, a -wal/-shm left beside the path is set aside as *.replaced-TIME (replayed into the new file it would damage it), and the path is opened again (#2048 when done; #172 and retries with backoff if it cannot be; sessions run without greylisting meanwhile). Records only in the old file are gone, so a few senders may be greylisted once more.";
    CLIENT_IS_SECOND_MX = 2050 Info IfInfo, true, "%s is MX for recipient domain %s",
        "At RCPT: the client is one of the mail exchangers of the recipient's domain, i.e. one of your own backup MX hosts relaying mail it queued for you (flag 2nd_mx). Greylisting skips such clients, as smtpf does: the mail was greylisted, or not, when it reached the backup.";
    SIGNAL_RECEIVED = 2051 Info Always, false, "signal %d received, reloading, cn=%u",
        "SIGHUP: the configuration is re-read (see #2006/#2007). (smtpf's #724 means a signal it does not act upon, so ours has its own number.)";
    HEADER_REMOVED = 2052 Warn Always, true, "removed previous instance of header \"%s\"",
        "The message already carried our greylisting report header (forged by the sender, or added by another host); it was removed before ours was added. (smtpf's #851 is about its own X-smtpf-Report header.)";
    UNLINK_ERROR = 2053 Err Always, false, "unlink(\"%s\"): %s",
        "The milter's unix socket could not be removed at exit; the OS error and its number follow, as in smtpf's lines. The next start removes a stale socket itself. (smtpf's #731 is about its pid file.)";
    DEBUG_ACCESS = 2054 Debug Verb("access"), true, "access %s%s: %s",
        "An access-map lookup (verbose word access): the tag, what was looked up, and the entry found with its action, or `no entry`.";
    DEBUG_DNS = 2055 Debug Verb("dns"), false, "dns %s %s: %s",
        "A DNS lookup of any check (verbose word dns): record type, name, and the outcome (the answers, NODATA, NXDOMAIN, or the failure), with `cached` when the answer came from the resolver's memory.";
    DEBUG_RBL = 2056 Debug Verb("rbl"), true, "%s %s %s: %s",
        "A DNS list query of dns-bl, dns-wl, dns-gl, uri-bl or uri-dns-bl (verbose word rbl): the option, what was looked up, the list, and its answer (`listed A.B.C.D`, `not listed`, or the failure).";
    DEBUG_URI = 2057 Debug Verb("uri"), true, "uri %s found in message (%u of at most %u tested)",
        "A host named in the message that the URI lists will test (verbose word uri).";
    DEBUG_MX = 2058 Debug Verb("mx"), true, "MX %s: %s",
        "The MX lookup of a sender or recipient domain (verbose word mx): the mail exchangers' addresses found (usable ones for a sender domain), the null MX, NXDOMAIN or the failure.";
    DEBUG_SPF = 2059 Debug Verb("spf"), true, "spf %s %s: %s",
        "An SPF evaluation (verbose word spf): the identity (mail or helo), its domain, and the result.";
    SMTPF_NO_MEANING = 2060 Warn Always, false, "config: %s: smtpf option with no meaning in a milter, ignored: %s",
        "The config file sets one of smtpf's options that has nothing to act on in a milter (the MTA or the service manager does that job; the reason says whose). The daemon runs without it; remove the key to silence the line. Logged at start and reload, printed by check-config; `smtpf-milter import-smtpf` sorts a whole smtpf.cf this way.";
    SMTPF_NOT_IMPLEMENTED = 2061 Warn Always, false, "config: %s: smtpf option smtpf-milter does not implement, ignored: %s",
        "The config file sets one of smtpf's options for a check or setting smtpf-milter does not have (yet); the text says what it does in smtpf. The daemon runs without it, so mail it would have refused gets through: consider the MTA's own equivalent where the text names one. Logged at start and reload, printed by check-config.";
    DEBUG_DUPMSG = 2062 Debug Verb("dupmsg"), true, "dupmsg key=%s %s",
        "Duplicate detection at end of message (verbose word dupmsg): the key, and whether it was found, recorded, or not recorded because the client is exempt (localhost, authenticated, white listed).";
    DEBUG_CACHE = 2063 Debug Verb("cache"), true, "cache %s key=%s: %s",
        "A call on the state store (verbose word cache): get, claim (first sight), put, put-detached or delete, the key, and the result.";
    GREY_WHITELIST_SKIPPED = 2064 Warn Always, false, "grey-whitelist %s",
        "A line of a grey-whitelist-clients/-recipients file fits none of postgrey's forms (file:line and why); it is skipped, the other lines apply. Logged at start and reload, printed by check-config.";
    GREY_WHITELISTED = 2065 Info IfInfo, true, "grey-whitelist: %s not greylisted (%s)",
        "The client or a recipient is listed in a postgrey-format whitelist file (grey-whitelist-clients / grey-whitelist-recipients): the message is not greylisted. The file and line that matched follow.";
    GREY_AUTO_WHITELISTED = 2066 Info IfInfo, true, "grey auto-whitelist: client %s not greylisted (%s)",
        "The client has had grey-auto-whitelist-clients messages pass greylisting (postgrey's auto-whitelist, for a grey-key without ip/ptr/ptrn): it is not greylisted until the record (named last, listed by smtpf-milter grey list) expires after cache-accept-ttl without use.";
    METRICS_READY = 2067 Info IfInfo, false, "metrics-listen=%s ready",
        "Prometheus can scrape /metrics at this address (metrics-listen; docs/metrics.md).";
    METRICS_ERROR = 2068 Err Always, false, "metrics-listen=%s error: %s",
        "The metrics address could not be opened (in use, no permission, a file that is not a socket in the way): the milter serves mail all the same, without /metrics. Fix metrics-listen and restart.";
    GREY_PASSED = 2069 Info IfInfo, true, "grey passed {%s} after %ld seconds",
        "A greylisted tuple came back after its period and passed, this long after it was first seen: the delay greylisting cost this sender (smtpf-milter report sums these). Logged once per tuple, at its first pass; #382 (verbose grey) is smtpf's line for every pass.";
    POLICY_REQUEST_ERROR = 2070 Warn Always, false, "policy-socket request error: %s; %s",
        "A Postfix policy request could not be used: unreadable (a line or a request too long, a line that is not name=value, the connection cut mid-request: the connection is closed, Postfix reconnects), or readable but not one we can decide (another request= than smtpd_access_policy, no client_address or protocol_state, no recipient at RCPT: answered DUNNO, so Postfix goes on with its other restrictions).";
    POLICY_INSTANCE = 2071 Info IfInfo, true, "policy instance %s tid=%s",
        "A transaction that came through the policy socket, with Postfix's instance attribute: requests with the same instance are one transaction, so this ties Postfix's requests to our transaction id.";
    POLICY_READY = 2072 Info IfInfo, false, "policy-socket=%s ready",
        "Postfix's check_policy_service can connect to this address (policy-socket; docs/policy-service.md).";
}

/// Looks up a message by number.
pub fn find(num: u16) -> Option<&'static Msg> {
    ALL.iter().copied().find(|m| m.num == num)
}

/// The catalog as a Markdown table (the README's message list is this text, checked by a test).
pub fn markdown_table() -> String {
    let mut s = String::from("| # | level | format | meaning |\n|---|---|---|---|\n");
    for m in ALL {
        let format = m.format.replace('|', "\\|");
        s.push_str(&format!("| {} | {} | `{}` | {} |\n", m.num, m.level.word(), format, m.meaning.replace('|', "\\|")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_unique_and_sorted() {
        for pair in ALL.windows(2) {
            assert!(pair[0].num < pair[1].num, "#{} before #{}", pair[0].num, pair[1].num);
        }
    }

    #[test]
    fn find_known_and_unknown() {
        assert_eq!(find(637).unwrap().format, "start %s f=\"%s\" th=%u cn=%u cs=%lu");
        assert!(find(1).is_none());
    }

    #[test]
    fn gate_words_are_verbose_words_and_documented() {
        let doc = crate::config::KEYS.iter().find(|k| k.name == "verbose").unwrap().meaning;
        for m in ALL {
            if let Gate::Verb(word) = m.gate {
                assert!(crate::log::VERBOSE_WORDS.contains(&word), "#{}: {word} is not a verbose word", m.num);
                assert!(doc.contains(word), "#{}: the verbose key's text does not name {word}", m.num);
            }
        }
    }

    #[test]
    fn debug_lines_are_gated_by_a_word() {
        for m in ALL {
            if m.level == Level::Debug {
                assert!(matches!(m.gate, Gate::Verb(_)), "#{}", m.num);
            }
            if m.level <= Level::Warn {
                assert_eq!(m.gate, Gate::Always, "#{} errors must not be suppressible", m.num);
            }
        }
    }
}

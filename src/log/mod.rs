//! Numbered logging: `<session-id> #<n> <text>` lines to stderr, syslog or memory.
//!
//! Every line the daemon writes goes through [`Logger::emit`] with an entry of the [`catalog`], so
//! numbers and formats live in one place and `verbose` gating follows smtpf's rules (errors and
//! summary lines always, `info` lines by default, debug lines per verbose word).
//!
//! Design note: lines do not go through a global `tracing` subscriber. Each server owns a `Logger`
//! handle, which lets tests run several servers in one process and capture each one's lines, and
//! keeps the target switchable at reload. Writes to stderr/syslog happen on a dedicated thread fed
//! by a bounded queue, so a slow journal never stalls a milter session. Events that libraries
//! report through `tracing` reach the loggers of running daemons through a small process-wide
//! subscriber ([`library`]), as numbered lines like any other.

pub mod catalog;
pub mod library;

use std::fmt::{Display, Write as _};
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};

pub use catalog::{Gate, Level, Msg};

use crate::ids::SessionId;

/// An OS error as smtpf writes it: the system's text, then the error number in parentheses
/// (`Permission denied (13)`, smtpf's `%s (%d)`), so that admins can grep either. Errors without a
/// number (ours, a library's) are written as they are.
pub fn os_error(e: &std::io::Error) -> String {
    let Some(code) = e.raw_os_error() else { return e.to_string() };
    let text = e.to_string();
    let bare = text.strip_suffix(&format!(" (os error {code})")).unwrap_or(&text);
    format!("{bare} ({code})")
}

/// The verbose words understood, besides `info`, `debug` and `all`.
pub const VERBOSE_WORDS: &[&str] =
    &["info", "debug", "all", "milter", "access", "dns", "rbl", "uri", "mx", "spf", "grey", "dupmsg", "cache", "library"];

/// smtpf's verbose words that have nothing to switch on in a milter (the SMTP dialogue, TLS,
/// subjects, the scanners, ...): accepted, so that an smtpf setting such as its default
/// `info,smtp=1,tls` loads, and reported as ignored.
pub const SMTPF_ONLY_VERBOSE_WORDS: &[&str] = &[
    "attachment",
    "auth",
    "avastd",
    "clamd",
    "cli",
    "click",
    "connect",
    "ctasd",
    "data",
    "db",
    "digest",
    "emew",
    "fpscand",
    "headers",
    "helo",
    "ixhash",
    "kvm",
    "lua",
    "mail",
    "mail-bl",
    "mutex",
    "noop",
    "p0f",
    "rate",
    "rcpt",
    "reply",
    "rset",
    "sav",
    "savdid",
    "save",
    "siq",
    "size",
    "smtp",
    "socket",
    "spamd",
    "stats",
    "subject",
    "timelimitrcpt",
    "timers",
    "tls",
    "trace",
    "valgrind",
    "warn",
];

/// Which optional lines are written (smtpf's `verbose` option).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verbose {
    info: bool,
    all_debug: bool,
    words: Vec<String>,
    /// smtpf's words given that mean nothing here, for the config warning.
    ignored: Vec<String>,
}

impl Default for Verbose {
    fn default() -> Self {
        Verbose { info: true, all_debug: false, words: Vec::new(), ignored: Vec::new() }
    }
}

impl Verbose {
    /// Parses words such as `info,grey` or `-info`; smtpf's `word=level` form is accepted (level
    /// 0 is off). smtpf's words that mean nothing in a milter are kept aside ([`Self::ignored`]);
    /// any other unknown word is an error naming it.
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Verbose, String> {
        let mut v = Verbose { info: false, all_debug: false, words: Vec::new(), ignored: Vec::new() };
        for raw in words {
            let (on, word) = match raw.strip_prefix('-') {
                Some(w) => (false, w),
                None => (true, raw.strip_prefix('+').unwrap_or(raw)),
            };
            let (word, on) = match word.split_once('=') {
                Some((w, level)) => {
                    let level: u32 = level
                        .trim()
                        .parse()
                        .map_err(|_| format!("verbose word \"{raw}\": the level after = must be a number"))?;
                    (w, on && level > 0)
                }
                None => (word, on),
            };
            let word = word.trim().to_ascii_lowercase();
            if word.is_empty() {
                continue;
            }
            if SMTPF_ONLY_VERBOSE_WORDS.contains(&word.as_str()) {
                if !v.ignored.contains(&word) {
                    v.ignored.push(word);
                }
                continue;
            }
            if !VERBOSE_WORDS.contains(&word.as_str()) {
                return Err(format!("unknown verbose word \"{word}\" (known: {})", VERBOSE_WORDS.join(", ")));
            }
            match word.as_str() {
                "info" => v.info = on,
                "debug" => v.all_debug = on,
                "all" => {
                    v.info = on;
                    v.all_debug = on;
                }
                _ => {
                    v.words.retain(|w| w != &word);
                    if on {
                        v.words.push(word);
                    }
                }
            }
        }
        Ok(v)
    }

    /// Whether some debug line can pass (a module word or `debug`).
    pub fn any_debug(&self) -> bool {
        self.all_debug || !self.words.is_empty()
    }

    /// smtpf's words that were given but switch nothing on here.
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }

    /// Whether a message passes the gate.
    pub fn allows(&self, msg: &Msg) -> bool {
        match msg.gate {
            Gate::Always => true,
            Gate::Info => self.info,
            Gate::Verb(word) => self.all_debug || self.words.iter().any(|w| w == word),
        }
    }

    /// Whether debug lines of a word are on (to skip building costly arguments).
    pub fn has(&self, word: &str) -> bool {
        self.all_debug || self.words.iter().any(|w| w == word)
    }
}

/// Fills a printf-style format with arguments: each conversion (`%s`, `%lu`, `%.*s`, `%x`, ...)
/// takes the next argument; `%%` is a percent sign. Missing arguments render as `?`.
///
/// Arguments often carry text from outside (HELO names, addresses, header values), so each is
/// escaped as it is written: control characters become `\r`, `\n`, `\t` or `\xNN`, so one event
/// is always one line; inside a double-quoted field of the format (`h="%s"`) `"` and `\` are
/// escaped too, so every quoted field parses back.
pub fn render(format: &str, args: &[&dyn Display]) -> String {
    let mut out = String::with_capacity(format.len() + 32 * args.len());
    let mut args = args.iter();
    let bytes = format.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        // Copy the literal run up to the next conversion or quote in one go.
        let run = bytes[i..].iter().position(|&b| b == b'%' || b == b'"').unwrap_or(bytes.len() - i);
        out.push_str(&format[i..i + run]);
        i += run;
        match bytes.get(i) {
            None => break,
            Some(b'"') => {
                quoted = !quoted;
                out.push('"');
                i += 1;
                continue;
            }
            Some(_) => {}
        }
        if bytes.get(i + 1) == Some(&b'%') {
            out.push('%');
            i += 2;
            continue;
        }
        // Skip flags, width, precision and length modifiers up to the conversion letter.
        i += 1;
        while let Some(&n) = bytes.get(i) {
            i += 1;
            if n.is_ascii_alphabetic() && !matches!(n, b'l' | b'h' | b'z' | b'j' | b't' | b'L' | b'q') {
                break;
            }
        }
        match args.next() {
            Some(a) => {
                let start = out.len();
                let _ = write!(out, "{a}");
                escape_tail(&mut out, start, quoted);
            }
            None => out.push('?'),
        }
    }
    out
}

/// Escapes `out[start..]` in place when it holds anything that needs it (most arguments do not,
/// and cost one scan).
fn escape_tail(out: &mut String, start: usize, quoted: bool) {
    let tail = &out.as_bytes()[start..];
    // 0xC2 and 0xE2 lead the UTF-8 of NEL (U+0085) and of U+2028/U+2029, which some log readers
    // take for line breaks: such text takes the careful path below.
    let needs = if quoted {
        tail.iter().any(|&b| b < 0x20 || b == 0x7f || b == 0xc2 || b == 0xe2 || b == b'"' || b == b'\\')
    } else {
        tail.iter().any(|&b| b < 0x20 || b == 0x7f || b == 0xc2 || b == 0xe2)
    };
    if !needs {
        return;
    }
    let raw = out.split_off(start);
    for c in raw.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '"' | '\\' if quoted => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Standard error; under systemd (JOURNAL_STREAM set) with `<N>` priority prefixes for journald.
    Stderr,
    /// The local syslog socket, facility mail, ident smtpf-milter.
    Syslog,
    /// Kept in memory (tests).
    Memory,
}

enum Sink {
    /// Lines are queued to the writer thread.
    Thread(SyncSender<Item>),
    Memory(Arc<Mutex<Vec<String>>>),
}

/// A cheap, cloneable handle to the process's log output.
#[derive(Clone)]
pub struct Logger {
    inner: Arc<LoggerInner>,
}

struct LoggerInner {
    sink: RwLock<Sink>,
    verbose: RwLock<Arc<Verbose>>,
    /// Whether any debug word is on: the checks ask before every debug line, and with the usual
    /// `info` the answer is this one relaxed load, not a lock shared by every session.
    debug_on: AtomicBool,
    dropped: Arc<AtomicU64>,
    /// Lines emitted per message number (the metrics' `smtpf_milter_log_messages_total`): one
    /// relaxed add per line, indexed by number.
    counts: Box<[AtomicU64]>,
}

/// One past the highest message number [`LoggerInner::counts`] keeps.
const COUNTED_NUMBERS: usize = 4096;

impl LoggerInner {
    fn new(sink: Sink, verbose: Verbose, dropped: Arc<AtomicU64>) -> LoggerInner {
        let debug_on = AtomicBool::new(verbose.any_debug());
        let counts = (0..COUNTED_NUMBERS).map(|_| AtomicU64::new(0)).collect();
        LoggerInner { sink: RwLock::new(sink), verbose: RwLock::new(Arc::new(verbose)), debug_on, dropped, counts }
    }
}

/// How a line is framed for its destination.
#[derive(Clone, Copy)]
enum Framing {
    Journal,
    Plain,
    Syslog,
}

impl Logger {
    /// A logger writing to stderr or syslog. Falls back to stderr (and says so) when syslog is
    /// unreachable.
    pub fn new(target: &Target, verbose: Verbose) -> Logger {
        let dropped = Arc::new(AtomicU64::new(0));
        let (sink, fallback_reason) = Self::open_sink(target, &dropped);
        let logger = Logger { inner: Arc::new(LoggerInner::new(sink, verbose, dropped)) };
        if let Some(reason) = fallback_reason {
            logger.emit(&catalog::LOG_TARGET_ERROR, None, &[&"syslog", &reason]);
        }
        logger
    }

    /// A logger writing to the syslog socket at `path` instead of `/dev/log` (tests, or a site
    /// whose syslog listens elsewhere). The socket need not exist yet: lines sent before it does
    /// are counted and reported (#2044) once it answers.
    pub fn syslog_at(path: &Path, verbose: Verbose) -> Logger {
        let dropped = Arc::new(AtomicU64::new(0));
        let out = Output::Syslog(SyslogSocket {
            path: path.to_path_buf(),
            sock: SyslogSocket::connect(path).ok(),
            lost: 0,
            retry_at: std::time::Instant::now(),
        });
        let sink = Sink::Thread(spawn_writer(out, Framing::Syslog, dropped.clone()));
        Logger { inner: Arc::new(LoggerInner::new(sink, verbose, dropped)) }
    }

    /// A logger that keeps lines in memory; returns the shared buffer.
    pub fn memory(verbose: Verbose) -> (Logger, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let logger =
            Logger { inner: Arc::new(LoggerInner::new(Sink::Memory(lines.clone()), verbose, Arc::new(AtomicU64::new(0)))) };
        (logger, lines)
    }

    fn open_sink(target: &Target, dropped: &Arc<AtomicU64>) -> (Sink, Option<String>) {
        match target {
            Target::Memory => (Sink::Memory(Arc::new(Mutex::new(Vec::new()))), None),
            Target::Stderr => {
                let framing = if std::env::var_os("JOURNAL_STREAM").is_some() { Framing::Journal } else { Framing::Plain };
                (Sink::Thread(spawn_writer(Output::Stderr, framing, dropped.clone())), None)
            }
            Target::Syslog => {
                let path = PathBuf::from(SYSLOG_SOCKET);
                match SyslogSocket::connect(&path) {
                    Ok(s) => {
                        let out =
                            Output::Syslog(SyslogSocket { path, sock: Some(s), lost: 0, retry_at: std::time::Instant::now() });
                        (Sink::Thread(spawn_writer(out, Framing::Syslog, dropped.clone())), None)
                    }
                    Err(e) => {
                        let framing =
                            if std::env::var_os("JOURNAL_STREAM").is_some() { Framing::Journal } else { Framing::Plain };
                        (Sink::Thread(spawn_writer(Output::Stderr, framing, dropped.clone())), Some(e.to_string()))
                    }
                }
            }
        }
    }

    /// Switches destination (reload). Memory loggers stay in memory.
    pub fn set_target(&self, target: &Target) {
        if matches!(*crate::sync::read(&self.inner.sink), Sink::Memory(_)) {
            return;
        }
        let (sink, reason) = Self::open_sink(target, &self.inner.dropped);
        *crate::sync::write(&self.inner.sink) = sink;
        if let Some(reason) = reason {
            self.emit(&catalog::LOG_TARGET_ERROR, None, &[&"syslog", &reason]);
        }
    }

    /// Replaces the verbose words (reload).
    pub fn set_verbose(&self, verbose: Verbose) {
        self.inner.debug_on.store(verbose.any_debug(), Ordering::Relaxed);
        *crate::sync::write(&self.inner.verbose) = Arc::new(verbose);
        // Library debug events are recorded only while some running daemon's words ask for them.
        library::refresh();
    }

    /// The verbose words in force.
    pub fn verbose(&self) -> Arc<Verbose> {
        crate::sync::read(&self.inner.verbose).clone()
    }

    /// Whether `msg` would be written (to skip building its arguments).
    pub fn enabled(&self, msg: &Msg) -> bool {
        if matches!(msg.gate, Gate::Verb(_)) && !self.inner.debug_on.load(Ordering::Relaxed) {
            return false;
        }
        crate::sync::read(&self.inner.verbose).allows(msg)
    }

    /// Writes one numbered line, if `verbose` lets it through.
    pub fn emit(&self, msg: &Msg, sid: Option<&SessionId>, args: &[&dyn Display]) {
        if !self.enabled(msg) {
            return;
        }
        if let Some(c) = self.inner.counts.get(usize::from(msg.num)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let line = format_line(msg, sid, args);
        self.write_line(msg.level, line);
    }

    /// Lines emitted so far, per message number (numbers never emitted left out).
    pub fn counts(&self) -> Vec<(u16, u64)> {
        self.inner
            .counts
            .iter()
            .enumerate()
            .filter_map(|(num, c)| Some((num as u16, c.load(Ordering::Relaxed))).filter(|(_, n)| *n > 0))
            .collect()
    }

    /// Lines lost to a full queue since start.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Waits (at most `limit`) until every line logged so far has been written, and reports lines
    /// lost to a full queue (#2012). The daemon calls it last, so the final lines of a busy run
    /// are not cut off at exit. True when the writer confirmed in time (memory loggers: always).
    pub fn flush(&self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let mut item = Item::Flush(done_tx);
        loop {
            let sent = match &*crate::sync::read(&self.inner.sink) {
                Sink::Memory(_) => return true,
                Sink::Thread(tx) => tx.try_send(item),
            };
            match sent {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                    item = back;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        done_rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).is_ok()
    }

    fn write_line(&self, level: Level, line: String) {
        let sink = crate::sync::read(&self.inner.sink);
        match &*sink {
            Sink::Memory(lines) => crate::sync::lock(lines).push(line),
            Sink::Thread(tx) => match tx.try_send(Item::Line(level.syslog_severity(), line)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }
}

/// Formats `<sid> #<n> <text>` (or `#<n> <text>` for process lines).
pub fn format_line(msg: &Msg, sid: Option<&SessionId>, args: &[&dyn Display]) -> String {
    let text = render(msg.format, args);
    match (msg.session, sid) {
        (true, Some(sid)) => format!("{sid} #{} {text}", msg.num),
        (true, None) => format!("0 #{} {text}", msg.num),
        (false, _) => format!("#{} {text}", msg.num),
    }
}

enum Output {
    Stderr,
    Syslog(SyslogSocket),
}

/// The local syslog socket, reconnected when the receiver restarts (as glibc's syslog(3) does):
/// rsyslog or journald going away must not silence the daemon for the rest of its life.
struct SyslogSocket {
    path: PathBuf,
    sock: Option<UnixDatagram>,
    /// Lines that could not be sent since the socket went away.
    lost: u64,
    /// No reconnection attempt before this, so a dead receiver costs one attempt a second.
    retry_at: std::time::Instant,
}

impl SyslogSocket {
    fn connect(path: &Path) -> std::io::Result<UnixDatagram> {
        UnixDatagram::unbound().and_then(|s| s.connect(path).map(|_| s))
    }

    /// Sends one datagram; on failure reconnects once and retries, else counts the line lost.
    /// After a gap, the first line that gets through is preceded by one saying how many did not
    /// (#2044). `framed` frames a line of our own for that report.
    fn send(&mut self, datagram: &[u8], framed: impl Fn(&str) -> Vec<u8>) {
        if let Some(sock) = &self.sock {
            if sock.send(datagram).is_ok() {
                return;
            }
            self.sock = None;
            self.retry_at = std::time::Instant::now();
        }
        let now = std::time::Instant::now();
        if now < self.retry_at {
            self.lost += 1;
            return;
        }
        match Self::connect(&self.path) {
            Ok(sock) => {
                if self.lost > 0 {
                    let report = format_line(&catalog::SYSLOG_LOST, None, &[&self.lost, &self.path.display()]);
                    let _ = sock.send(&framed(&report));
                    self.lost = 0;
                }
                // A line the receiver refuses (too long, say) is lost alone; the socket stays.
                if sock.send(datagram).is_err() {
                    self.lost += 1;
                }
                self.sock = Some(sock);
            }
            Err(_) => {
                self.lost += 1;
                self.retry_at = now + std::time::Duration::from_secs(1);
            }
        }
    }
}

/// Queue depth before lines are dropped instead of delaying sessions.
const QUEUE_LINES: usize = 65_536;

/// How long the writer waits after a write before taking more lines, so a busy server's lines
/// are written in batches; a line is never held longer than this.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// Most bytes gathered into one write to stderr; bounds the writer's buffer.
const BATCH_BYTES: usize = 64 * 1024;

/// What the writer thread is handed.
enum Item {
    /// A line and its syslog severity.
    Line(u8, String),
    /// Write out everything queued before this, then say so on the channel.
    Flush(std::sync::mpsc::Sender<()>),
}

fn spawn_writer(output: Output, framing: Framing, dropped: Arc<AtomicU64>) -> SyncSender<Item> {
    let (tx, rx) = sync_channel::<Item>(QUEUE_LINES);
    let pid = std::process::id();
    let counter = dropped.clone();
    let spawned = std::thread::Builder::new().name("log-writer".into()).spawn(move || {
        let mut reported = 0u64;
        let mut out = LineWriter::new(output, framing, pid);
        // Block for the first line, then take whatever else is already queued and write it in
        // one go. After a write, linger a moment before looking again: lines queued meanwhile
        // need no wake-up (nobody waits on the queue), so under load one write(2) carries
        // dozens of lines and sessions almost never have to wake this thread. A quiet server
        // blocks again and writes a lone line at once.
        let mut report_lost = |out: &mut LineWriter| {
            let lost = dropped.load(Ordering::Relaxed);
            if lost > reported {
                let line = format_line(&catalog::LOG_OVERFLOW, None, &[&(lost - reported)]);
                out.push(Level::Err.syslog_severity(), &line);
                reported = lost;
            }
        };
        // A flush request is answered once everything queued before it is written.
        let take = |out: &mut LineWriter, item: Item, report_lost: &mut dyn FnMut(&mut LineWriter)| match item {
            Item::Line(severity, line) => out.push(severity, &line),
            Item::Flush(done) => {
                report_lost(out);
                out.flush();
                let _ = done.send(());
            }
        };
        while let Ok(item) = rx.recv() {
            report_lost(&mut out);
            take(&mut out, item, &mut report_lost);
            loop {
                while out.pending() < BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(item) => take(&mut out, item, &mut report_lost),
                        Err(_) => break,
                    }
                }
                if out.pending() == 0 {
                    break;
                }
                out.flush();
                std::thread::sleep(LINGER);
            }
        }
        out.flush();
    });
    if spawned.is_err() {
        // Without a writer thread lines are dropped and counted; the process still runs.
        counter.fetch_add(1, Ordering::Relaxed);
    }
    tx
}

/// The local syslog socket.
const SYSLOG_SOCKET: &str = "/dev/log";

/// `<PRI>smtpf-milter[pid]: `: facility mail (2); rsyslog and journald add the timestamp and host.
fn syslog_prefix(severity: u8, pid: u32) -> String {
    format!("<{}>smtpf-milter[{}]: ", 2 * 8 + severity as u32, pid)
}

/// One whole syslog datagram for a line.
fn syslog_datagram(severity: u8, pid: u32, line: &str) -> Vec<u8> {
    let mut d = syslog_prefix(severity, pid).into_bytes();
    d.extend_from_slice(line.as_bytes());
    d
}

/// Frames queued lines for their destination and writes them: stderr lines are gathered into
/// one buffer per batch, syslog lines go out as one datagram each (the protocol's unit).
struct LineWriter {
    output: Output,
    framing: Framing,
    pid: u32,
    buf: Vec<u8>,
    /// The `YYYY-MM-DD HH:MM:SS smtpf-milter[pid]: ` prefix and the second it was made for,
    /// so the local time is converted once a second rather than once a line.
    stamp: (i64, String),
}

impl LineWriter {
    fn new(output: Output, framing: Framing, pid: u32) -> LineWriter {
        LineWriter { output, framing, pid, buf: Vec::with_capacity(BATCH_BYTES), stamp: (i64::MIN, String::new()) }
    }

    fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Adds one line with its syslog severity.
    fn push(&mut self, severity: u8, line: &str) {
        match self.framing {
            Framing::Journal => {
                let _ = write!(self.buf, "<{severity}>");
            }
            Framing::Plain => {
                let now = crate::ids::unix_now();
                if self.stamp.0 != now {
                    let t = crate::ids::LocalTime::from_unix(now);
                    self.stamp = (
                        now,
                        format!(
                            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} smtpf-milter[{}]: ",
                            t.year,
                            t.month + 1,
                            t.mday,
                            t.hour,
                            t.min,
                            t.sec,
                            self.pid
                        ),
                    );
                }
                self.buf.extend_from_slice(self.stamp.1.as_bytes());
            }
            Framing::Syslog => {
                let _ = write!(self.buf, "{}", syslog_prefix(severity, self.pid));
            }
        }
        self.buf.extend_from_slice(line.as_bytes());
        match &self.output {
            Output::Stderr => self.buf.push(b'\n'),
            Output::Syslog(_) => self.flush(),
        }
    }

    /// Writes what is gathered; a failed write loses those lines, never the process.
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let pid = self.pid;
        match &mut self.output {
            Output::Stderr => {
                let _ = std::io::stderr().lock().write_all(&self.buf);
            }
            Output::Syslog(sock) => {
                sock.send(&self.buf, |line| syslog_datagram(Level::Err.syslog_severity(), pid, line));
            }
        }
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_end_with_their_number_as_in_smtpf() {
        assert_eq!(os_error(&std::io::Error::from_raw_os_error(13)), "Permission denied (13)");
        assert_eq!(os_error(&std::io::Error::from_raw_os_error(24)), "Too many open files (24)");
        let ours = std::io::Error::other("no socket");
        assert_eq!(os_error(&ours), "no socket");
    }

    #[test]
    fn render_fills_conversions_in_order() {
        assert_eq!(render("grey listed {%s} for %ld seconds", &[&"grey:a,b", &600]), "grey listed {grey:a,b} for 600 seconds");
        assert_eq!(render("%.*s x=%lu 100%% %x", &[&"k", &7, &"ff"]), "k x=7 100% ff");
        assert_eq!(render("a %s b %s", &[&1]), "a 1 b ?");
    }

    #[test]
    fn syslog_comes_back_after_the_receiver_restarts_and_says_what_was_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let log = Logger::syslog_at(&path, Verbose::default());
        let recv = |r: &UnixDatagram| {
            let mut buf = [0u8; 2048];
            let n = r.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        log.emit(&catalog::RELOADED, None, &[&"first"]);
        assert!(log.flush(std::time::Duration::from_secs(5)));
        assert!(recv(&receiver).contains("#2006 reload: config first loaded"));
        // The receiver restarts: its socket goes away and comes back under the same name.
        drop(receiver);
        std::fs::remove_file(&path).unwrap();
        for i in 0..3 {
            log.emit(&catalog::RELOADED, None, &[&format!("gone{i}")]);
        }
        assert!(log.flush(std::time::Duration::from_secs(5)));
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        // Reconnection is tried at most once a second.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        log.emit(&catalog::RELOADED, None, &[&"back"]);
        assert!(log.flush(std::time::Duration::from_secs(5)));
        let report = recv(&receiver);
        assert!(report.contains("#2044 syslog: 3 lines lost while"), "{report}");
        assert!(report.starts_with("<19>smtpf-milter["), "{report}");
        assert!(recv(&receiver).contains("#2006 reload: config back loaded"));
    }

    #[test]
    fn render_escapes_what_could_forge_a_line_or_a_field() {
        // A folded header or CR/LF in a HELO cannot start a new line.
        assert_eq!(render("m=%s", &[&"<a@b>\r\n\tFAKE #721 end"]), "m=<a@b>\\r\\n\\tFAKE #721 end");
        // A quote cannot close a quoted field early; a backslash is doubled there.
        assert_eq!(render("h=\"%s\" x=%s", &[&"ev\"il x=\"y", &"a\"b"]), "h=\"ev\\\"il x=\\\"y\" x=a\"b");
        assert_eq!(render("h=\"%s\"", &[&"a\\b"]), "h=\"a\\\\b\"");
        // Other control bytes show as hex; text without them is untouched (UTF-8 included).
        assert_eq!(render("%s", &[&"a\u{0}b\u{1b}c\u{7f}"]), "a\\x00b\\x1bc\\x7f");
        assert_eq!(render("\"%s\" %s", &[&"caf\u{e9}", &"ok"]), "\"caf\u{e9}\" ok");
        // Unicode line breaks (NEL, LS, PS) are escaped too; other text with the same lead bytes
        // (Â, ’) is left alone.
        assert_eq!(render("%s", &[&"a\u{85}b\u{2028}c\u{2029}d"]), "a\\u{0085}b\\u{2028}c\\u{2029}d");
        assert_eq!(render("%s", &[&"\u{c2}\u{2019}"]), "\u{c2}\u{2019}");
    }

    #[test]
    fn verbose_gates() {
        let v = Verbose::default();
        assert!(v.allows(&catalog::SESSION_START));
        assert!(!v.allows(&catalog::NEGOTIATED));
        let v = Verbose::parse(["-info", "milter"]).unwrap();
        assert!(!v.allows(&catalog::SESSION_START));
        assert!(v.allows(&catalog::SESSION_END), "summary lines cannot be suppressed");
        assert!(v.allows(&catalog::NEGOTIATED));
        assert!(Verbose::parse(["info", "gery"]).unwrap_err().contains("gery"));
    }

    /// Every number of the catalog has its slot in the per-number line counts (the metrics'
    /// `smtpf_milter_log_messages_total`): a number past them would never be counted.
    #[test]
    fn every_message_number_is_counted() {
        assert!(catalog::ALL.iter().all(|m| usize::from(m.num) < COUNTED_NUMBERS));
        let (log, _) = Logger::memory(Verbose::default());
        log.emit(&catalog::READY, None, &[]);
        log.emit(&catalog::READY, None, &[]);
        assert_eq!(log.counts(), vec![(catalog::READY.num, 2)]);
    }

    #[test]
    fn memory_logger_formats_lines() {
        let (log, lines) = Logger::memory(Verbose::default());
        let sid = SessionId::new(&crate::ids::LocalTime::from_unix(0), 1, 2);
        log.emit(&catalog::QUEUE_ID, Some(&sid), &[&"4XyZ", &"tid1"]);
        log.emit(&catalog::READY, None, &[]);
        log.emit(&catalog::NEGOTIATED, Some(&sid), &[&6]);
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], format!("{sid} #2005 queue-id 4XyZ tid=tid1"));
        assert_eq!(lines[1], "#599 ready");
    }
}

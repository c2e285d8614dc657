//! `milter-bench`: a load generator that plays Postfix against any milter socket and reports
//! throughput, latency and the milter's memory.
//!
//! Each of `--connections` workers claims messages one at a time and runs each as a full
//! transaction (MAIL, 1–3 RCPT, DATA, ten headers with a unique Message-ID, EOH, a 4 KiB body,
//! EOM, ABORT). Two kinds of message:
//!
//! - **known tuples** come from a pool of 200 client hosts (10 PTR domains) and 4 senders, on
//!   connections the worker reuses for `--per-connection` transactions before QUIT and reconnect;
//! - **new tuples** (a `--new-tuples` share, spread evenly) come from a client host never seen
//!   before (own PTR domain; a known address and HELO name, so DNS answers come from the milter's
//!   cache, or with `--fresh-addresses` an own address too), each on its own connection: negotiate,
//!   CONNECT, HELO, the one transaction, QUIT. A greylisting milter keys on the host, and a host
//!   that passed once passes at once afterwards, so only a new host makes it write a new tuple.
//!
//! A reject or temp-fail from the milter (a greylisting 4xx at DATA is normal) counts as
//! "refused"; a protocol or I/O error counts as an error and the process exits 1 when there was
//! any, or when no transaction got a verdict. `--raw-ceiling` benches an in-process responder that
//! answers "continue" to everything (at the steps `--raw-replies` names), which shows what the
//! socket and the protocol alone cost on this machine for the same conversation.
//!
//! Other modes: `--warm-up` (one transaction per known tuple before the measured run, so a milter
//! with a short `grey-temp-fail-period` lets the known tuples pass), `--rate` (open-loop pacing,
//! for latency at a fixed load), `--idle N` (hold N idle MTA connections and report the milter's
//! memory), the `prefill` subcommand (greylist records into a SQLite state file before the
//! daemon starts) and the `serve` subcommand (the raw responder on a real socket: a null milter
//! for measuring what an MTA pays for any milter at all). docs/performance.md describes them
//! and bench/run.sh, the full measurement.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use smtpf_milter::milter::client::{ClientError, MtaClient, POSTFIX_ACTIONS, POSTFIX_PROTOCOL};
use smtpf_milter::milter::codec::{decode_command, encode_response, read_frame, Command, Family, Response, MAX_PAYLOAD};
use smtpf_milter::milter::listen::{parse_octal_mode, SocketSpec};
use smtpf_milter::milter::listen::{Connection, Listener};
use smtpf_milter::milter::negotiate::{negotiate, Needs};
use smtpf_milter::store::{unix_now, Record, SqliteOptions, Store, StoreError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Semaphore;

/// Drive a milter socket like Postfix and measure transactions per second, reply latency and the
/// milter's memory.
#[derive(Parser, Debug)]
#[command(name = "milter-bench", version, subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Milter socket, in any form `milter-socket` takes (unix:/path, local:/path, inet:PORT@HOST,
    /// inet:HOST:PORT, inet6:PORT@HOST), or a bare /path.
    #[arg(long, required_unless_present = "raw_ceiling", conflicts_with = "raw_ceiling")]
    socket: Option<String>,
    /// Bench an in-process responder that answers "continue" to everything (socket and protocol ceiling).
    #[arg(long)]
    raw_ceiling: bool,
    /// Steps at which the --raw-ceiling responder replies (besides end of message), so that its
    /// conversation matches the milter compared with it: "all" (connect, helo, mail, rcpt and
    /// data: smtpf-milter with every check on) or a comma list of those steps, e.g. "data" (what
    /// a milter doing only greylisting answers).
    #[arg(long, value_name = "STEPS", default_value = "all", value_parser = parse_raw_replies, requires = "raw_ceiling")]
    raw_replies: Needs,
    /// Concurrent MTA connections (workers; each has at most one transaction in flight).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Transactions to run in total.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Share (0..=1) of messages from a never-seen client host and sender, so greylisting has to
    /// write a new tuple; each uses its own connection.
    #[arg(long, default_value_t = 0.2)]
    new_tuples: f64,
    /// Known-tuple transactions per connection before QUIT and reconnect.
    #[arg(long, default_value_t = 5)]
    per_connection: u32,
    /// Stop starting new transactions after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration_limit: Option<f64>,
    /// Open-loop pacing: message i is not started before start + i / RATE.
    #[arg(long, value_name = "MSGS_PER_S")]
    rate: Option<f64>,
    /// Before the measured run, send one transaction for every known tuple (not counted), then
    /// wait --warm-up-wait seconds.
    #[arg(long)]
    warm_up: bool,
    /// Seconds to wait after the warm-up (longer than the milter's grey-temp-fail-period).
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    warm_up_wait: f64,
    /// Instead of a load run: open N connections (CONNECT and HELO each), hold them, report the
    /// milter's memory, then QUIT them all.
    #[arg(long, value_name = "N")]
    idle: Option<usize>,
    /// The milter's process id for the memory figures (default: the peer of the first unix
    /// socket connection; needed for inet sockets).
    #[arg(long)]
    pid: Option<i32>,
    /// New-tuple hosts connect from never-seen addresses with never-seen HELO names, so each
    /// costs the milter real DNS lookups (default: known addresses, DNS from cache).
    #[arg(long)]
    fresh_addresses: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write greylist records into a SQLite state file (before the daemon starts on it).
    Prefill {
        /// The state file (the daemon's cache-path); created when missing.
        #[arg(long)]
        cache_path: PathBuf,
        /// How many records to write.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
    },
    /// Serve the raw-ceiling responder on a socket until stopped: a null milter that answers
    /// "continue" everywhere, so an MTA can be measured with a milter that costs nothing.
    Serve {
        /// unix:/path or inet:PORT@HOST, as `milter-socket` takes it. A stale unix socket is
        /// replaced; a live one, or a file that is not a socket, is refused.
        #[arg(long)]
        socket: String,
        /// Steps at which to reply besides end of message, as for --raw-replies.
        #[arg(long, value_name = "STEPS", default_value = "all", value_parser = parse_raw_replies)]
        replies: Needs,
        /// Permissions of a unix socket (octal, as `milter-socket-mode`), e.g. 0666 for an MTA
        /// running as another user.
        #[arg(long, value_name = "OCTAL", default_value = "0660", value_parser = parse_octal_mode)]
        socket_mode: u32,
    },
}

/// `serve`: the raw responder on a real socket, until SIGTERM or SIGINT. The socket is bound
/// as the daemon binds `milter-socket`: a live socket (a running milter's) or a file that is not
/// a socket is refused, never replaced.
async fn serve(socket: &str, needs: Needs, mode: u32) -> ExitCode {
    let listener = match SocketSpec::parse(socket) {
        Ok(spec) => match Listener::bind(&spec, mode, None).await {
            Ok((l, _)) => l,
            Err(e) => {
                eprintln!("milter-bench: cannot listen on {socket}: {e}");
                return ExitCode::from(2);
            }
        },
        Err(e) => {
            eprintln!("milter-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = Arc::new(listener);
    let accept = tokio::spawn(null_milter(listener.clone(), needs));
    eprintln!("milter-bench: null milter on {} (replies at {})", listener.describe(), needs.reply_steps());
    let stopped = async {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            }
            _ => std::future::pending::<()>().await,
        }
    };
    stopped.await;
    accept.abort();
    let _ = listener.cleanup();
    ExitCode::SUCCESS
}

/// Answers every connection on `listener` with the raw responder, for as long as it runs. An
/// accept error (out of descriptors) pauses instead of ending the loop, as the daemon does.
async fn null_milter(listener: Arc<Listener>, needs: Needs) {
    loop {
        match listener.accept().await {
            Ok(Connection::Unix(s)) => drop(tokio::spawn(raw_responder(s, needs))),
            Ok(Connection::Tcp(s)) => drop(tokio::spawn(raw_responder(s, needs))),
            Err(e) => {
                eprintln!("milter-bench: null milter: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Where to connect.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    Unix(PathBuf),
    Tcp(String),
}

/// The `--socket` to bench: the forms `milter-socket` takes, or a bare path.
fn parse_target(spec: &str) -> Result<Target, String> {
    // A bare path is a unix socket; everything else is spelled as `milter-socket` is.
    if spec.starts_with('/') {
        return Ok(Target::Unix(PathBuf::from(spec)));
    }
    match SocketSpec::parse(spec)? {
        SocketSpec::Unix(path) => Ok(Target::Unix(path)),
        SocketSpec::Inet { host, port, v6 } if v6 || host.contains(':') => Ok(Target::Tcp(format!("[{host}]:{port}"))),
        SocketSpec::Inet { host, port, .. } => Ok(Target::Tcp(format!("{host}:{port}"))),
    }
}

/// Any connected stream, so unix and TCP connections share one client type.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
type Client = MtaClient<Box<dyn Stream>>;

/// Connects; the first unix connection also learns the milter's pid (SO_PEERCRED).
async fn open(target: &Target, pid: &OnceLock<i32>) -> Result<Client, String> {
    match target {
        Target::Unix(p) => {
            let s = UnixStream::connect(p).await.map_err(|e| format!("connect {}: {e}", p.display()))?;
            if pid.get().is_none() {
                if let Some(id) = s.peer_cred().ok().and_then(|c| c.pid()) {
                    let _ = pid.set(id);
                }
            }
            Ok(MtaClient::new(Box::new(s)))
        }
        Target::Tcp(a) => {
            let s = TcpStream::connect(a).await.map_err(|e| format!("connect {a}: {e}"))?;
            let _ = s.set_nodelay(true);
            Ok(MtaClient::new(Box::new(s)))
        }
    }
}

/// Events whose reply latency is measured.
const EVENTS: [&str; 9] = ["connect", "helo", "mail", "rcpt", "data", "header", "eoh", "body", "eom"];
const TRANSACTION: usize = EVENTS.len();
/// Latencies are recorded in µs, 3 significant digits, up to this value (longer ones saturate).
const LAT_MAX_US: u64 = 120_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LAT_MAX_US, 3).expect("valid histogram bounds")
}

/// What one worker saw.
struct Tally {
    /// Latencies in microseconds per event, and for whole transactions (MAIL to EOM verdict);
    /// allocated on first use (about 140 KB each, and most events never get a reply).
    lat: Vec<Option<Histogram<u64>>>,
    responses: u64,
    transactions: u64,
    accepted: u64,
    refused: u64,
    refused_at: Vec<(String, u64)>,
    errors: u64,
    first_error: Option<String>,
    connections: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            lat: (0..=EVENTS.len()).map(|_| None).collect(),
            responses: 0,
            transactions: 0,
            accepted: 0,
            refused: 0,
            refused_at: Vec::new(),
            errors: 0,
            first_error: None,
            connections: 0,
        }
    }

    fn record(&mut self, ev: usize, since: Instant) {
        let us = since.elapsed().as_micros().min(LAT_MAX_US as u128) as u64;
        self.lat[ev].get_or_insert_with(histogram).saturating_record(us.max(1));
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn refused(&mut self, at: &str) {
        self.refused += 1;
        match self.refused_at.iter_mut().find(|(s, _)| s == at) {
            Some((_, n)) => *n += 1,
            None => self.refused_at.push((at.to_string(), 1)),
        }
    }

    fn merge(&mut self, o: Tally) {
        for (a, b) in self.lat.iter_mut().zip(o.lat) {
            match (a.as_mut(), b) {
                // Same bounds on both sides, so this cannot fail.
                (Some(a), Some(b)) => {
                    let _ = a.add(&b);
                }
                (None, b) => *a = b,
                (_, None) => {}
            }
        }
        self.responses += o.responses;
        self.transactions += o.transactions;
        self.accepted += o.accepted;
        self.refused += o.refused;
        self.errors += o.errors;
        self.connections += o.connections;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        for (at, n) in o.refused_at {
            match self.refused_at.iter_mut().find(|(s, _)| *s == at) {
                Some((_, m)) => *m += n,
                None => self.refused_at.push((at, n)),
            }
        }
    }
}

/// Known client hosts: addresses in TEST-NET-2/3, PTR names in 10 domains.
const CLIENT_POOL: u64 = 200;
/// Most recipients of one message.
const MAX_RCPTS: u64 = 3;

/// One SMTP client as the MTA presents it to the milter.
#[derive(Clone, Debug, PartialEq)]
struct ClientId {
    /// The verified PTR name the MTA reports.
    host: String,
    /// The HELO name it gives.
    helo: String,
    ip: String,
    port: u16,
}

/// Known client number `k` (taken modulo the pool size).
fn pool_client(k: u64) -> ClientId {
    let k = k % CLIENT_POOL;
    let ip = if k < 100 { format!("198.51.100.{}", k + 1) } else { format!("203.0.113.{}", k - 99) };
    let host = format!("mail{k}.client{}.example.org", k % 10);
    ClientId { helo: host.clone(), host, ip, port: 40000 + k as u16 }
}

/// The known client of a worker's `n`-th connection.
fn pool_client_for(worker: usize, n: u64) -> ClientId {
    pool_client(worker as u64 * 7919 + n)
}

/// A client host never seen before: the second label of its PTR name (what greylisting keys on)
/// is unique to this run and message. By default it connects from a known pool address with that
/// address's HELO name, so the milter's DNS questions (lists, SPF) are answered from its cache, as
/// the speed targets specify; with `fresh_address` its address is unique too (in 198.18.0.0/15)
/// and so is its HELO name, and every new host costs real DNS lookups, as on the Internet.
fn fresh_client(run_id: &str, seed: u64, i: u64, fresh_address: bool) -> ClientId {
    let host = format!("mail.n{run_id}-{i}.example.org");
    let port = 10000 + (i % 50000) as u16;
    if !fresh_address {
        let pool = pool_client(seed.wrapping_add(i));
        return ClientId { host, helo: pool.helo, ip: pool.ip, port };
    }
    let off = seed.wrapping_add(i) % (1 << 17);
    let ip = format!("198.{}.{}.{}", 18 + (off >> 16), (off >> 8) & 255, off & 255);
    ClientId { helo: host.clone(), host, ip, port }
}

/// The sender of known-tuple message `i`.
fn known_sender(i: u64) -> String {
    format!("user{}@pool{}.example.com", i % 4, i % 2)
}

/// Every sender [`known_sender`] produces (it repeats every 4 messages).
fn known_senders() -> Vec<String> {
    let set: BTreeSet<String> = (0..4).map(known_sender).collect();
    set.into_iter().collect()
}

/// The sender of new-tuple message `i`.
fn new_sender(run_id: &str, i: u64) -> String {
    format!("new-{run_id}-{i}@sender{}.example.org", i % 97)
}

/// How many recipients message `i` has (rcpt0.., 1 to MAX_RCPTS).
fn rcpt_count(i: u64) -> u64 {
    1 + i % MAX_RCPTS
}

/// Known clients to warm up: the first pool client of each distinct PTR domain (greylisting
/// keys on the domain, so one host per domain covers them all).
fn warm_up_clients() -> Vec<ClientId> {
    let mut seen = BTreeSet::new();
    (0..CLIENT_POOL).map(pool_client).filter(|c| seen.insert(c.host.split_once('.').map(|(_, d)| d.to_string()))).collect()
}

/// Exactly a `share` of message numbers, spread evenly.
fn is_new(share: f64, i: u64) -> bool {
    ((i + 1) as f64 * share).floor() > (i as f64 * share).floor()
}

/// When message `i` may start, after the run's start, at `rate` messages per second.
fn due_offset(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// Shared, read-only run parameters.
struct Plan {
    messages: u64,
    new_tuples: f64,
    per_connection: u32,
    deadline: Option<Instant>,
    start: Instant,
    rate: Option<f64>,
    run_id: String,
    seed: u64,
    fresh_addresses: bool,
    body: Vec<u8>,
    next: AtomicU64,
    /// The milter's pid, learnt from the first unix connection.
    peer_pid: OnceLock<i32>,
}

impl Plan {
    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Claims the next message number and waits until it is due; None when done.
    async fn claim(&self) -> Option<u64> {
        if self.past_deadline() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if i >= self.messages {
            return None;
        }
        if let Some(rate) = self.rate {
            tokio::time::sleep_until((self.start + due_offset(i, rate)).into()).await;
            if self.past_deadline() {
                return None;
            }
        }
        Some(i)
    }

    fn is_new(&self, i: u64) -> bool {
        is_new(self.new_tuples, i)
    }
}

/// How a transaction ended.
enum Outcome {
    Accepted,
    /// Refused; true when the milter wants the connection closed (421 or shutdown).
    Refused(bool),
}

/// Longest wait for one reply before it counts as an error.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a verdict lets the transaction go on.
fn verdict_ok(rs: &[Response]) -> bool {
    rs.last().is_none_or(|r| matches!(r, Response::Continue | Response::Accept | Response::Skip))
}

fn closes(rs: &[Response]) -> bool {
    rs.iter().any(|r| {
        matches!(r, Response::Shutdown | Response::ConnFail) || matches!(r, Response::ReplyCode(s) if s.starts_with("421"))
    })
}

/// Sends one command, times the reply, and returns the responses.
async fn step(c: &mut Client, t: &mut Tally, ev: usize, cmd: &Command) -> Result<Vec<Response>, String> {
    let start = Instant::now();
    let rs = match tokio::time::timeout(REPLY_TIMEOUT, c.command(cmd)).await {
        Err(_) => return Err(format!("no reply to {} within {}s", EVENTS[ev], REPLY_TIMEOUT.as_secs())),
        Ok(Err(e)) => return Err(format!("{}: {e}", EVENTS[ev])),
        Ok(Ok(rs)) => rs,
    };
    if !rs.is_empty() {
        t.record(ev, start);
        t.responses += rs.len() as u64;
    }
    Ok(rs)
}

fn io(e: std::io::Error) -> String {
    ClientError::Io(e).to_string()
}

/// Negotiation, connect macros, CONNECT and HELO. Ok(false) when the milter refused the client
/// (counted as refused).
async fn hello(c: &mut Client, t: &mut Tally, client: &ClientId) -> Result<bool, String> {
    t.connections += 1;
    let r = tokio::time::timeout(REPLY_TIMEOUT, c.negotiate(6, POSTFIX_ACTIONS, POSTFIX_PROTOCOL))
        .await
        .map_err(|_| "no reply to option negotiation".to_string())?
        .map_err(|e| format!("negotiate: {e}"))?;
    if !matches!(r, Response::OptNeg { .. }) {
        return Err(format!("negotiate: unexpected {r:?}"));
    }
    t.responses += 1;
    // What Postfix sends for a client whose PTR name resolved back to its address.
    c.macros(
        b'C',
        &[
            ("j", "mx.example.net"),
            ("{daemon_name}", "smtpd"),
            ("_", &format!("{} [{}]", client.host, client.ip)),
            ("{client_ptr}", &client.host),
            ("{client_resolve}", "OK"),
        ],
    )
    .await
    .map_err(io)?;
    let connect =
        Command::Connect { hostname: client.host.clone(), family: Family::Inet, port: client.port, address: client.ip.clone() };
    if !verdict_ok(&step(c, t, 0, &connect).await?) {
        t.refused("connect");
        return Ok(false);
    }
    if !verdict_ok(&step(c, t, 1, &Command::Helo { name: client.helo.clone() }).await?) {
        t.refused("helo");
        return Ok(false);
    }
    Ok(true)
}

/// One transaction, MAIL to ABORT.
async fn transaction(
    c: &mut Client,
    t: &mut Tally,
    plan: &Plan,
    i: u64,
    client: &ClientId,
    sender: &str,
    rcpts: u64,
) -> Result<Outcome, String> {
    let qid = format!("B{i:09X}");
    let start = Instant::now();
    macro_rules! check {
        ($rs:expr, $at:expr) => {{
            let rs = $rs;
            if !verdict_ok(&rs) {
                t.refused($at);
                let _ = c.command(&Command::Abort).await;
                return Ok(Outcome::Refused(closes(&rs)));
            }
            rs
        }};
    }
    c.macros(b'M', &[("i", &qid), ("{mail_addr}", sender)]).await.map_err(io)?;
    check!(step(c, t, 2, &Command::Mail { sender: format!("<{sender}>"), params: vec!["SIZE=4600".into()] }).await?, "mail");
    for r in 0..rcpts {
        let rcpt = format!("rcpt{r}@example.net");
        c.macros(b'R', &[("i", &qid), ("{rcpt_addr}", &rcpt)]).await.map_err(io)?;
        check!(step(c, t, 3, &Command::Rcpt { recipient: format!("<{rcpt}>"), params: vec![] }).await?, "rcpt");
    }
    c.macros(b'T', &[("i", &qid)]).await.map_err(io)?;
    check!(step(c, t, 4, &Command::Data).await?, "data");
    let mid = format!("<{}.{i}@bench.example.org>", plan.run_id);
    let from = format!("Sender <{sender}>");
    let received = format!("from {0} ({0} [{1}]) by mx.example.net", client.host, client.ip);
    let received2 = format!("from localhost by {}", client.host);
    let headers: [(&str, &str); 10] = [
        ("Received", &received),
        ("Received", &received2),
        ("From", &from),
        ("To", "Recipient <rcpt0@example.net>"),
        ("Subject", "benchmark message"),
        ("Date", "Mon, 2 Jun 2025 10:00:00 +0000"),
        ("Message-ID", &mid),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=us-ascii"),
        ("X-Mailer", "milter-bench"),
    ];
    for (name, value) in headers {
        check!(step(c, t, 5, &Command::Header { name: name.into(), value: value.into() }).await?, "header");
    }
    c.macros(b'N', &[("i", &qid)]).await.map_err(io)?;
    check!(step(c, t, 6, &Command::EndOfHeaders).await?, "eoh");
    check!(step(c, t, 7, &Command::Body(plan.body.clone())).await?, "body");
    c.macros(b'E', &[("i", &qid), ("{msg_id}", &mid)]).await.map_err(io)?;
    check!(step(c, t, 8, &Command::EndOfMessage(Vec::new())).await?, "eom");
    t.record(TRANSACTION, start);
    c.send(&Command::Abort).await.map_err(io)?;
    Ok(Outcome::Accepted)
}

/// Counts a transaction's verdict; true when the connection stays usable.
fn tally_outcome(t: &mut Tally, o: &Outcome) -> bool {
    t.transactions += 1;
    match o {
        Outcome::Accepted => {
            t.accepted += 1;
            true
        }
        Outcome::Refused(closes) => !closes,
    }
}

/// A whole connection for one message: connect, HELO, the transaction, QUIT.
async fn one_shot(
    target: &Target,
    plan: &Plan,
    t: &mut Tally,
    client: &ClientId,
    i: u64,
    sender: &str,
    rcpts: u64,
) -> Result<(), String> {
    let mut c = open(target, &plan.peer_pid).await?;
    if hello(&mut c, t, client).await? {
        let o = transaction(&mut c, t, plan, i, client, sender, rcpts).await?;
        if tally_outcome(t, &o) {
            let _ = c.send(&Command::Quit).await;
        }
    } else {
        // The message got its verdict at connect or HELO.
        t.transactions += 1;
    }
    Ok(())
}

/// A reused connection for known tuples.
struct Known {
    c: Client,
    client: ClientId,
    used: u32,
}

/// One worker: claims messages until the plan is exhausted.
async fn worker(target: Target, plan: Arc<Plan>, id: usize) -> Tally {
    let mut t = Tally::new();
    let mut known: Option<Known> = None;
    let mut n = 0u64;
    while let Some(i) = plan.claim().await {
        if plan.is_new(i) {
            let client = fresh_client(&plan.run_id, plan.seed, i, plan.fresh_addresses);
            let sender = new_sender(&plan.run_id, i);
            if let Err(e) = one_shot(&target, &plan, &mut t, &client, i, &sender, rcpt_count(i)).await {
                t.error(e);
            }
            continue;
        }
        let k = match known.take() {
            Some(k) => k,
            None => {
                n += 1;
                let client = pool_client_for(id, n);
                let opened = async {
                    let mut c = open(&target, &plan.peer_pid).await?;
                    let ok = hello(&mut c, &mut t, &client).await?;
                    Ok::<_, String>((c, ok))
                }
                .await;
                match opened {
                    Ok((c, true)) => Known { c, client, used: 0 },
                    Ok((_, false)) => {
                        t.transactions += 1;
                        continue;
                    }
                    Err(e) => {
                        t.error(e);
                        continue;
                    }
                }
            }
        };
        let Known { mut c, client, mut used } = k;
        match transaction(&mut c, &mut t, &plan, i, &client, &known_sender(i), rcpt_count(i)).await {
            Ok(o) => {
                used += 1;
                if !tally_outcome(&mut t, &o) {
                    continue;
                }
                if used >= plan.per_connection {
                    let _ = c.send(&Command::Quit).await;
                } else {
                    known = Some(Known { c, client, used });
                }
            }
            Err(e) => t.error(e),
        }
    }
    if let Some(mut k) = known {
        let _ = k.c.send(&Command::Quit).await;
    }
    t
}

/// Number of the first warm-up message (its queue id and Message-ID stay apart from the run's).
const WARM_UP_BASE: u64 = 1 << 40;

/// One transaction for every known tuple: each PTR domain × each known sender, with all
/// recipients. Returns the tally (not part of the measured run).
async fn warm_up(target: &Target, plan: &Arc<Plan>) -> Tally {
    let senders = known_senders();
    let mut set = tokio::task::JoinSet::new();
    let mut j = 0;
    for client in warm_up_clients() {
        for sender in &senders {
            let (target, plan, client, sender) = (target.clone(), plan.clone(), client.clone(), sender.clone());
            let i = WARM_UP_BASE + j;
            j += 1;
            set.spawn(async move {
                let mut t = Tally::new();
                if let Err(e) = one_shot(&target, &plan, &mut t, &client, i, &sender, MAX_RCPTS).await {
                    t.error(e);
                }
                t
            });
        }
    }
    let mut total = Tally::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(t) => total.merge(t),
            Err(e) => total.error(format!("warm-up task failed: {e}")),
        }
    }
    total
}

/// Parses `--raw-replies` into what the raw responder negotiates: the body and DATA always (the
/// bench sends them), replies at the steps named.
fn parse_raw_replies(text: &str) -> Result<Needs, String> {
    Needs { body: true, data: true, ..Needs::default() }.with_reply_steps(text)
}

/// The `--raw-ceiling` responder: negotiates the replies `needs` names (and every event with the
/// body), and answers "continue" wherever a reply is due.
async fn raw_responder<S: AsyncRead + AsyncWrite + Unpin>(stream: S, needs: Needs) {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::with_capacity(4096, r);
    let mut buf = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(256);
    let mut neg = None;
    while let Ok(Some(code)) = read_frame(&mut r, MAX_PAYLOAD, &mut buf).await {
        let Ok(cmd) = decode_command(code, &buf) else { break };
        let resp = match &cmd {
            Command::OptNeg { version, actions, protocol } => match negotiate(*version, *actions, *protocol, needs) {
                Ok((resp, n)) => {
                    neg = Some(n);
                    resp
                }
                Err(_) => break,
            },
            Command::Quit => break,
            Command::Macro { .. } | Command::Abort | Command::QuitNewConnection => continue,
            c if neg.is_some_and(|n| n.no_reply(c)) => continue,
            _ => Response::Continue,
        };
        out.clear();
        encode_response(&resp, &mut out);
        if w.write_all(&out).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// Memory of a process from /proc/PID/status: (VmRSS, VmHWM) in KiB, each None when unknown.
fn parse_status(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Whose memory is reported.
struct Memory {
    /// "milter" or "bench process (raw ceiling)".
    of: &'static str,
    pid: Option<i32>,
    rss_kib: Option<u64>,
    peak_kib: Option<u64>,
}

impl Memory {
    fn read(of: &'static str, pid: Option<i32>) -> Memory {
        let (rss_kib, peak_kib) = pid
            .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
            .map(|s| parse_status(&s))
            .unwrap_or((None, None));
        Memory { of, pid, rss_kib, peak_kib }
    }

    fn text(&self) -> String {
        let kib = |v: Option<u64>| v.map(|v| format!("{v} KiB")).unwrap_or_else(|| "unknown".into());
        let pid = self.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
        format!("rss {} peak {} ({}{pid})", kib(self.rss_kib), kib(self.peak_kib), self.of)
    }

    fn json(&self) -> String {
        let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "null".into());
        format!(
            "\"memory_of\":{:?},\"memory_pid\":{},\"milter_rss_kib\":{},\"milter_peak_rss_kib\":{}",
            self.of,
            self.pid.map(|p| p.to_string()).unwrap_or_else(|| "null".into()),
            n(self.rss_kib),
            n(self.peak_kib)
        )
    }
}

/// Raises the open-file limit to the hard limit (idle mode holds many connections).
fn raise_nofile() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// `--idle N`: hold N idle connections and report the milter's memory.
async fn idle(
    target: &Target,
    n: usize,
    memory_of: &'static str,
    pid: impl Fn(&OnceLock<i32>) -> Option<i32>,
    json: bool,
) -> ExitCode {
    let limit = raise_nofile();
    let peer_pid = Arc::new(OnceLock::new());
    let sem = Arc::new(Semaphore::new(64));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for j in 0..n {
        let (target, peer_pid, sem) = (target.clone(), peer_pid.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let mut t = Tally::new();
            let client = pool_client(j as u64);
            let c = match open(&target, &peer_pid).await {
                Ok(mut c) => match hello(&mut c, &mut t, &client).await {
                    Ok(true) => Some(c),
                    Ok(false) => None,
                    Err(e) => {
                        t.error(e);
                        None
                    }
                },
                Err(e) => {
                    t.error(e);
                    None
                }
            };
            (c, t)
        });
    }
    let mut held = Vec::with_capacity(n);
    let mut total = Tally::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((c, t)) => {
                held.extend(c);
                total.merge(t);
            }
            Err(e) => total.error(format!("task failed: {e}")),
        }
    }
    let opened_s = start.elapsed().as_secs_f64();
    // CONNECT and HELO usually get no reply: give the milter a moment to process the last ones.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mem = Memory::read(memory_of, pid(&peer_pid));
    let count = held.len();
    for mut c in held {
        let _ = c.send(&Command::Quit).await;
    }
    let limit = limit.map(|l| l.to_string()).unwrap_or_else(|| "unknown".into());
    if json {
        println!(
            "{{\"mode\":\"idle\",\"requested\":{n},\"idle_connections\":{count},\"open_s\":{opened_s:.3},\"refused\":{},\
             \"errors\":{},\"first_error\":{},\"nofile_limit\":{limit:?},{}}}",
            total.refused,
            total.errors,
            total.first_error.as_deref().map(quote).unwrap_or_else(|| "null".into()),
            mem.json()
        );
    } else {
        println!("idle         {count} of {n} connections held (opened in {opened_s:.3} s, open-file limit {limit})");
        println!("refused      {}", total.refused);
        println!(
            "errors       {}{}",
            total.errors,
            total.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        println!("memory       {}", mem.text());
    }
    if total.errors > 0 || count == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The key of prefilled record `i`, shaped like a ptr,mail,rcpt tuple.
fn prefill_key(i: u64) -> String {
    format!("grey:p{}.prefill.example.org,sender{}@s{}.example.net,rcpt{}@example.net", i / 3, i % 5000, i % 101, i % 3)
}

/// `prefill`: greylist records into the SQLite state file, through the store's own writer.
async fn prefill(path: PathBuf, records: u64) -> ExitCode {
    let start = Instant::now();
    let options = SqliteOptions { write_queue: 65_536, batch_max: 4096, hot_cache: 0, ..SqliteOptions::default() };
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || Store::open_sqlite_with(&path, options)).await
    };
    let store = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            eprintln!("milter-bench: cannot open {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("milter-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = unix_now();
    let mut busy = 0u64;
    for i in 0..records {
        let key = prefill_key(i);
        // A quarter passed, the rest pending, as a store some days into greylisting holds.
        let value = if i % 4 == 0 { "0" } else { "4" };
        loop {
            match store.put_detached(&key, Record::new(value, now, now + 90_000)) {
                Ok(()) => break,
                Err(StoreError::Busy) => {
                    busy += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => {
                    eprintln!("milter-bench: prefill: {e}");
                    store.close().await;
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    store.close().await;
    let c = store.counters();
    println!(
        "prefill      {} records written to {} in {:.1} s ({} commits, {} write errors, {busy} waits for a full queue)",
        c.written,
        path.display(),
        start.elapsed().as_secs_f64(),
        c.commits,
        c.write_errors
    );
    if c.write_errors > 0 || c.written < records {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Cmd::Prefill { cache_path, records }) => return prefill(cache_path, records).await,
        Some(Cmd::Serve { socket, replies, socket_mode }) => return serve(&socket, replies, socket_mode).await,
        None => {}
    }
    if !(0.0..=1.0).contains(&args.new_tuples) || args.connections == 0 || args.per_connection == 0 {
        eprintln!("milter-bench: --new-tuples must be within 0..=1, --connections and --per-connection at least 1");
        return ExitCode::from(2);
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        eprintln!("milter-bench: --rate must be a positive number");
        return ExitCode::from(2);
    }
    let mut temp_dir = None;
    let (target, label) = if args.raw_ceiling {
        let dir = std::env::temp_dir().join(format!("milter-bench-{}", std::process::id()));
        let path = dir.join("raw.sock");
        let _ = std::fs::remove_dir_all(&dir);
        let listener = match Listener::bind(&SocketSpec::Unix(path.clone()), 0o600, None).await {
            Ok((l, _)) => l,
            Err(e) => {
                eprintln!("milter-bench: cannot listen on {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let needs = args.raw_replies;
        tokio::spawn(null_milter(Arc::new(listener), needs));
        temp_dir = Some(dir);
        (Target::Unix(path), format!("raw-ceiling (replies at {})", needs.reply_steps()))
    } else {
        let spec = args.socket.clone().unwrap_or_default();
        match parse_target(&spec) {
            Ok(t) => (t, spec),
            Err(e) => {
                eprintln!("milter-bench: {e}");
                return ExitCode::from(2);
            }
        }
    };
    // Whose memory to report: the bench itself for the raw ceiling, else --pid or the socket's peer.
    let (memory_of, own_pid) =
        if args.raw_ceiling { ("bench process (raw ceiling)", Some(std::process::id() as i32)) } else { ("milter", args.pid) };
    let pid_of = move |peer: &OnceLock<i32>| own_pid.or_else(|| peer.get().copied());

    if let Some(n) = args.idle {
        let rc = idle(&target, n, memory_of, pid_of, args.json).await;
        if let Some(d) = temp_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        return rc;
    }

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let body: Vec<u8> = (0..)
        .map(|n| format!("Line {n:04} of the benchmark body, plain text to fill four kilobytes of message.\r\n"))
        .flat_map(String::into_bytes)
        .take(4096)
        .collect();
    let run_id = format!("{:x}{:x}", now.as_secs(), now.subsec_nanos());
    let seed = now.as_secs().wrapping_mul(1_000_003) ^ now.subsec_nanos() as u64;
    let make_plan = |start: Instant| Plan {
        messages: args.messages,
        new_tuples: args.new_tuples,
        per_connection: args.per_connection,
        deadline: args.duration_limit.map(|s| start + Duration::from_secs_f64(s.max(0.0))),
        start,
        rate: args.rate,
        run_id: run_id.clone(),
        seed,
        fresh_addresses: args.fresh_addresses,
        body: body.clone(),
        next: AtomicU64::new(0),
        peer_pid: OnceLock::new(),
    };

    let mut warm = None;
    if args.warm_up {
        let plan = Arc::new(make_plan(Instant::now()));
        let t = warm_up(&target, &plan).await;
        if t.errors > 0 {
            eprintln!("milter-bench: warm-up: {} errors (first: {})", t.errors, t.first_error.as_deref().unwrap_or("?"));
            return ExitCode::FAILURE;
        }
        warm = Some((t.transactions, t.refused));
        tokio::time::sleep(Duration::from_secs_f64(args.warm_up_wait.max(0.0))).await;
    }

    let start = Instant::now();
    let plan = Arc::new(make_plan(start));
    let handles: Vec<_> = (0..args.connections).map(|id| tokio::spawn(worker(target.clone(), plan.clone(), id))).collect();
    let mut total = Tally::new();
    for h in handles {
        match h.await {
            Ok(t) => total.merge(t),
            Err(e) => total.error(format!("worker failed: {e}")),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mem = Memory::read(memory_of, pid_of(&plan.peer_pid));
    if let Some(d) = temp_dir {
        let _ = std::fs::remove_dir_all(d);
    }

    let done = total.transactions;
    let rate = if elapsed > 0.0 { done as f64 / elapsed } else { 0.0 };
    let mut rows = Vec::new();
    for (ev, h) in total.lat.iter().enumerate() {
        let Some(h) = h.as_ref().filter(|h| !h.is_empty()) else { continue };
        let name = if ev == TRANSACTION { "transaction" } else { EVENTS[ev] };
        let q = |p: f64| h.value_at_quantile(p);
        rows.push((name, h.len(), q(0.5), q(0.99), q(0.999), h.max()));
    }
    let target_rate = args.rate.map(|r| format!("{r}")).unwrap_or_else(|| "null".into());
    if args.json {
        let lat = rows
            .iter()
            .map(|(n, c, a, b, d, m)| {
                format!(
                    "\"{n}\":{{\"count\":{c},\"p50_ms\":{},\"p99_ms\":{},\"p999_ms\":{},\"max_ms\":{}}}",
                    ms(*a),
                    ms(*b),
                    ms(*d),
                    ms(*m)
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let at = total.refused_at.iter().map(|(s, n)| format!("\"{s}\":{n}")).collect::<Vec<_>>().join(",");
        let err = total.first_error.as_deref().map(quote).unwrap_or_else(|| "null".into());
        let warm = warm.map(|(t, r)| format!("{{\"transactions\":{t},\"refused\":{r}}}")).unwrap_or_else(|| "null".into());
        println!(
            "{{\"target\":{},\"connections\":{},\"messages\":{},\"new_tuples\":{},\"target_rate\":{target_rate},\
             \"warm_up\":{warm},\"elapsed_s\":{elapsed:.3},\"transactions\":{done},\"messages_per_s\":{rate:.1},\
             \"accepted\":{},\"refused\":{},\"refused_at\":{{{at}}},\"errors\":{},\"first_error\":{err},\"responses\":{},\
             \"milter_connections\":{},{},\"latency\":{{{lat}}}}}",
            quote(&label),
            args.connections,
            args.messages,
            args.new_tuples,
            total.accepted,
            total.refused,
            total.errors,
            total.responses,
            total.connections,
            mem.json()
        );
    } else {
        println!("target       {label}");
        println!("connections  {} (milter connections opened: {})", args.connections, total.connections);
        if let Some((t, r)) = warm {
            println!("warm-up      {t} transactions ({r} refused), then {} s wait", args.warm_up_wait);
        }
        println!("elapsed      {elapsed:.3} s");
        match args.rate {
            Some(r) => println!("transactions {done} ({rate:.1} messages/s achieved, {r} paced)"),
            None => println!("transactions {done} ({rate:.1} messages/s)"),
        }
        println!("accepted     {}", total.accepted);
        let at = total.refused_at.iter().map(|(s, n)| format!("{s}: {n}")).collect::<Vec<_>>().join(", ");
        println!("refused      {}{}", total.refused, if at.is_empty() { String::new() } else { format!(" ({at})") });
        println!(
            "errors       {}{}",
            total.errors,
            total.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        println!("responses    {}", total.responses);
        println!("memory       {}", mem.text());
        println!("latency (ms)      count      p50      p99    p99.9      max");
        for (n, c, a, b, d, m) in &rows {
            println!("  {n:<12} {c:>10} {:>8.3} {:>8.3} {:>8.3} {:>8.3}", ms(*a), ms(*b), ms(*d), ms(*m));
        }
    }
    if total.errors > 0 || done == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smtpf_milter::checks::greykey::domain_suffix;

    #[test]
    fn targets() {
        assert_eq!(parse_target("unix:/run/m.sock"), Ok(Target::Unix("/run/m.sock".into())));
        assert_eq!(parse_target("local:/run/m.sock"), Ok(Target::Unix("/run/m.sock".into())));
        assert_eq!(parse_target("/run/m.sock"), Ok(Target::Unix("/run/m.sock".into())));
        assert_eq!(parse_target("inet:8894@127.0.0.1"), Ok(Target::Tcp("127.0.0.1:8894".into())));
        assert_eq!(parse_target("inet:127.0.0.1:8894"), Ok(Target::Tcp("127.0.0.1:8894".into())));
        assert_eq!(parse_target("inet6:8894@::1"), Ok(Target::Tcp("[::1]:8894".into())));
        assert_eq!(parse_target("inet:[::1]:8894"), Ok(Target::Tcp("[::1]:8894".into())));
        assert_eq!(parse_target("inet6:8894@[::1]"), Ok(Target::Tcp("[::1]:8894".into())));
        assert!(parse_target("inet:0@127.0.0.1").is_err(), "port 0 is refused as in milter-socket");
        assert!(parse_target("inet:nowhere").is_err());
        assert!(parse_target("tcp:1@x").is_err());
    }

    #[test]
    fn pacing() {
        assert_eq!(due_offset(0, 100.0), Duration::ZERO);
        assert_eq!(due_offset(100, 100.0), Duration::from_secs(1));
        assert_eq!(due_offset(250, 1000.0), Duration::from_millis(250));
    }

    #[test]
    fn new_share_is_exact() {
        for share in [0.0, 0.2, 0.5, 1.0] {
            let n = (0..1000).filter(|&i| is_new(share, i)).count();
            assert_eq!(n, (1000.0 * share) as usize, "share {share}");
        }
    }

    fn known_pool_ips() -> BTreeSet<String> {
        (0..CLIENT_POOL).map(|k| pool_client(k).ip).collect()
    }

    #[test]
    fn fresh_clients_are_distinct_hosts() {
        let a = fresh_client("r1", 7, 1, true);
        let b = fresh_client("r1", 7, 2, true);
        assert_ne!(domain_suffix(&a.host), domain_suffix(&b.host));
        assert_ne!(a.ip, b.ip);
        assert!(a.ip.starts_with("198.18.") || a.ip.starts_with("198.19."));
        // By default new hosts reuse known addresses and HELO names (DNS from cache).
        let c = fresh_client("r1", 7, 3, false);
        assert_ne!(domain_suffix(&c.host), domain_suffix(&a.host));
        assert!(known_pool_ips().contains(&c.ip) && c.helo.starts_with("mail"), "{c:?}");
        let ips: BTreeSet<String> = (0..100_000).map(|i| fresh_client("r", u64::MAX - 5, i, true).ip).collect();
        assert_eq!(ips.len(), 100_000);
    }

    /// The warm-up covers every (PTR domain, sender, recipient) tuple the known-tuple generator
    /// produces, and nothing is left out.
    #[test]
    fn warm_up_covers_known_tuples() {
        let mut warmed = BTreeSet::new();
        for c in warm_up_clients() {
            for s in known_senders() {
                for r in 0..MAX_RCPTS {
                    warmed.insert((domain_suffix(&c.host), s.clone(), r));
                }
            }
        }
        assert_eq!(warmed.len(), 10 * 4 * 3);
        for worker in 0..64 {
            for n in 1..50 {
                let c = pool_client_for(worker, n);
                for i in (0..500).filter(|&i| !is_new(0.2, i)) {
                    for r in 0..rcpt_count(i) {
                        assert!(warmed.contains(&(domain_suffix(&c.host), known_sender(i), r)));
                    }
                }
            }
        }
    }

    #[test]
    fn proc_status() {
        let s = "Name:\tsmtpf-milter\nVmPeak:\t  900000 kB\nVmHWM:\t   23456 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(parse_status(s), (Some(12345), Some(23456)));
        assert_eq!(parse_status("Name:\tx\n"), (None, None));
    }
}

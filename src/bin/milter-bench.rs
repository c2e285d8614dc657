//! `milter-bench`: a load generator that plays Postfix against any milter socket and reports
//! throughput and latency.
//!
//! Each of `--connections` workers opens a connection, negotiates like Postfix 3.x, sends the
//! connect macros, CONNECT and HELO, then runs a few transactions (MAIL, 1–3 RCPT, DATA, ten
//! headers with a unique Message-ID, EOH, a 4 KiB body, EOM, ABORT) before QUIT and a reconnect.
//! A `--new-tuples` share of the messages uses a sender never seen before, so greylisting has to
//! write a new record; the rest reuse a small pool. A reject or temp-fail from the milter (a
//! greylisting 4xx at DATA is normal) is counted as "refused"; a protocol or I/O error counts as an
//! error and the process exits 1 when there was any. `--raw-ceiling` benches an in-process
//! responder that answers "continue" to everything, which shows what the socket and the protocol
//! alone cost on this machine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use smtpf_milter::milter::client::{ClientError, MtaClient, POSTFIX_ACTIONS, POSTFIX_PROTOCOL};
use smtpf_milter::milter::codec::{decode_command, encode_response, read_frame, Command, Family, Response, MAX_PAYLOAD};
use smtpf_milter::milter::negotiate::{negotiate, Needs};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// Drive a milter socket like Postfix and measure transactions per second and reply latency.
#[derive(Parser, Debug)]
#[command(name = "milter-bench", version)]
struct Args {
    /// Milter socket: unix:/path, inet:PORT@HOST, inet:HOST:PORT or inet6:PORT@HOST.
    #[arg(long, required_unless_present = "raw_ceiling", conflicts_with = "raw_ceiling")]
    socket: Option<String>,
    /// Bench an in-process responder that answers "continue" to everything (socket and protocol ceiling).
    #[arg(long)]
    raw_ceiling: bool,
    /// Concurrent MTA connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Transactions to run in total.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Share (0..=1) of messages whose sender was never seen, so greylisting writes a new record.
    #[arg(long, default_value_t = 0.2)]
    new_tuples: f64,
    /// Transactions per connection before QUIT and reconnect.
    #[arg(long, default_value_t = 5)]
    per_connection: u32,
    /// Stop starting new transactions after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration_limit: Option<f64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Where to connect.
#[derive(Clone, Debug)]
enum Target {
    Unix(PathBuf),
    Tcp(String),
}

fn parse_target(spec: &str) -> Result<Target, String> {
    if let Some(p) = spec.strip_prefix("unix:").or_else(|| spec.strip_prefix("local:")) {
        return Ok(Target::Unix(PathBuf::from(p)));
    }
    if spec.starts_with('/') {
        return Ok(Target::Unix(PathBuf::from(spec)));
    }
    let (v6, rest) = match (spec.strip_prefix("inet6:"), spec.strip_prefix("inet:")) {
        (Some(r), _) => (true, r),
        (_, Some(r)) => (false, r),
        _ => return Err(format!("unknown socket {spec:?}: expected unix:/path, inet:PORT@HOST or inet:HOST:PORT")),
    };
    if let Some((port, host)) = rest.split_once('@') {
        let host = if v6 || host.contains(':') { format!("[{}]", host.trim_matches(['[', ']'])) } else { host.to_string() };
        return Ok(Target::Tcp(format!("{host}:{port}")));
    }
    if rest.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        return Ok(Target::Tcp(rest.to_string()));
    }
    Err(format!("cannot parse socket {spec:?}"))
}

/// Events whose reply latency is measured.
const EVENTS: [&str; 9] = ["connect", "helo", "mail", "rcpt", "data", "header", "eoh", "body", "eom"];
const TRANSACTION: usize = EVENTS.len();

/// What one worker saw.
#[derive(Default)]
struct Tally {
    /// Latencies in microseconds per event, and for whole transactions (MAIL to EOM verdict).
    lat: Vec<Vec<u32>>,
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
        Tally { lat: vec![Vec::new(); EVENTS.len() + 1], ..Tally::default() }
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
            a.extend(b);
        }
        self.responses += o.responses;
        self.transactions += o.transactions;
        self.accepted += o.accepted;
        self.errors += o.errors;
        self.connections += o.connections;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        for (at, n) in o.refused_at {
            for _ in 0..n {
                self.refused(&at);
            }
        }
    }
}

/// Shared, read-only run parameters.
struct Plan {
    messages: u64,
    new_tuples: f64,
    per_connection: u32,
    deadline: Option<Instant>,
    run_id: String,
    body: Vec<u8>,
    next: AtomicU64,
}

impl Plan {
    /// Claims the next message number, or None when done.
    fn claim(&self) -> Option<u64> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.messages).then_some(i)
    }

    /// Exactly a `new_tuples` share of message numbers, spread evenly.
    fn is_new(&self, i: u64) -> bool {
        ((i + 1) as f64 * self.new_tuples).floor() > (i as f64 * self.new_tuples).floor()
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
async fn step<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut MtaClient<S>,
    t: &mut Tally,
    ev: usize,
    cmd: &Command,
) -> Result<Vec<Response>, String> {
    let start = Instant::now();
    let rs = match tokio::time::timeout(REPLY_TIMEOUT, c.command(cmd)).await {
        Err(_) => return Err(format!("no reply to {} within {}s", EVENTS[ev], REPLY_TIMEOUT.as_secs())),
        Ok(Err(e)) => return Err(format!("{}: {e}", EVENTS[ev])),
        Ok(Ok(rs)) => rs,
    };
    if !rs.is_empty() {
        t.lat[ev].push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
        t.responses += rs.len() as u64;
    }
    Ok(rs)
}

fn io(e: std::io::Error) -> String {
    ClientError::Io(e).to_string()
}

/// One transaction, MAIL to ABORT.
async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut MtaClient<S>,
    t: &mut Tally,
    plan: &Plan,
    i: u64,
) -> Result<Outcome, String> {
    let qid = format!("B{i:09X}");
    let sender = if plan.is_new(i) {
        format!("new-{}-{i}@sender{}.example.org", plan.run_id, i % 97)
    } else {
        format!("user{}@pool{}.example.com", i % 4, i % 2)
    };
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
    c.macros(b'M', &[("i", &qid), ("{mail_addr}", &sender)]).await.map_err(io)?;
    check!(step(c, t, 2, &Command::Mail { sender: format!("<{sender}>"), params: vec!["SIZE=4600".into()] }).await?, "mail");
    let rcpts = 1 + (i % 3);
    for r in 0..rcpts {
        let rcpt = format!("rcpt{r}@example.net");
        c.macros(b'R', &[("i", &qid), ("{rcpt_addr}", &rcpt)]).await.map_err(io)?;
        check!(step(c, t, 3, &Command::Rcpt { recipient: format!("<{rcpt}>"), params: vec![] }).await?, "rcpt");
    }
    c.macros(b'T', &[("i", &qid)]).await.map_err(io)?;
    check!(step(c, t, 4, &Command::Data).await?, "data");
    let mid = format!("<{}.{i}@bench.example.org>", plan.run_id);
    let from = format!("Sender <{sender}>");
    let headers: [(&str, &str); 10] = [
        ("Received", "from client.example.org (client.example.org [198.51.100.7]) by mx.example.net"),
        ("Received", "from localhost by client.example.org"),
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
    t.lat[TRANSACTION].push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
    c.send(&Command::Abort).await.map_err(io)?;
    Ok(Outcome::Accepted)
}

/// One connection: negotiation, CONNECT, HELO, then transactions until the per-connection count,
/// a refusal that closes, or the end of the plan. Returns false when the plan is exhausted.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut c: MtaClient<S>,
    t: &mut Tally,
    plan: &Plan,
    worker: usize,
    n: u64,
) -> Result<bool, String> {
    t.connections += 1;
    let r = tokio::time::timeout(REPLY_TIMEOUT, c.negotiate(6, POSTFIX_ACTIONS, POSTFIX_PROTOCOL))
        .await
        .map_err(|_| "no reply to option negotiation".to_string())?
        .map_err(|e| format!("negotiate: {e}"))?;
    if !matches!(r, Response::OptNeg { .. }) {
        return Err(format!("negotiate: unexpected {r:?}"));
    }
    t.responses += 1;
    // A pool of client addresses (TEST-NET-2/3), one per connection in turn.
    let k = (worker as u64 * 7919 + n) % 200;
    let ip = if k < 100 { format!("198.51.100.{}", k + 1) } else { format!("203.0.113.{}", k - 99) };
    let host = format!("mail{k}.client{}.example.org", k % 10);
    c.macros(
        b'C',
        &[
            ("j", "mx.example.net"),
            ("{daemon_name}", "smtpd"),
            ("_", &format!("{host} [{ip}]")),
            ("{client_ptr}", &host),
            ("{client_resolve}", "OK"),
        ],
    )
    .await
    .map_err(io)?;
    let rs = step(
        &mut c,
        t,
        0,
        &Command::Connect { hostname: host.clone(), family: Family::Inet, port: 40000 + k as u16, address: ip },
    )
    .await?;
    let mut more = true;
    if verdict_ok(&rs) {
        let rs = step(&mut c, t, 1, &Command::Helo { name: host }).await?;
        if verdict_ok(&rs) {
            for _ in 0..plan.per_connection {
                let Some(i) = plan.claim() else {
                    more = false;
                    break;
                };
                t.transactions += 1;
                match transaction(&mut c, t, plan, i).await? {
                    Outcome::Accepted => t.accepted += 1,
                    Outcome::Refused(true) => break,
                    Outcome::Refused(false) => {}
                }
            }
        } else {
            t.refused("helo");
        }
    } else {
        t.refused("connect");
    }
    let _ = c.send(&Command::Quit).await;
    Ok(more)
}

/// One worker: connections until the plan is exhausted.
async fn worker(target: Target, plan: Arc<Plan>, id: usize) -> Tally {
    let mut t = Tally::new();
    let mut n = 0u64;
    loop {
        if plan.deadline.is_some_and(|d| Instant::now() >= d) || plan.next.load(Ordering::Relaxed) >= plan.messages {
            break;
        }
        n += 1;
        let r = match &target {
            Target::Unix(p) => match MtaClient::connect_unix(p).await {
                Ok(c) => session(c, &mut t, &plan, id, n).await,
                Err(e) => Err(format!("connect {}: {e}", p.display())),
            },
            Target::Tcp(a) => match MtaClient::connect_tcp(a).await {
                Ok(c) => session(c, &mut t, &plan, id, n).await,
                Err(e) => Err(format!("connect {a}: {e}")),
            },
        };
        match r {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                t.error(e);
                // A failed attempt uses up one message, so a dead socket ends the run.
                if plan.claim().is_none() {
                    break;
                }
            }
        }
    }
    t
}

/// The `--raw-ceiling` responder: negotiates like the daemon with greylisting and body checks on,
/// and answers "continue" wherever a reply is due.
async fn raw_responder<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::with_capacity(4096, r);
    let mut buf = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(256);
    let needs = Needs { body: true, data: true, reply_data: true, ..Needs::default() };
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

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u32) -> f64 {
    us as f64 / 1000.0
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.new_tuples) || args.connections == 0 || args.per_connection == 0 {
        eprintln!("milter-bench: --new-tuples must be within 0..=1, --connections and --per-connection at least 1");
        return ExitCode::from(2);
    }
    let mut temp_dir = None;
    let (target, label) = if args.raw_ceiling {
        let dir = std::env::temp_dir().join(format!("milter-bench-{}", std::process::id()));
        let path = dir.join("raw.sock");
        let _ = std::fs::remove_dir_all(&dir);
        let listener = match std::fs::create_dir_all(&dir).and_then(|_| UnixListener::bind(&path)) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("milter-bench: cannot bind {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(raw_responder(s));
            }
        });
        temp_dir = Some(dir);
        (Target::Unix(path), "raw-ceiling".to_string())
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

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let body: Vec<u8> = (0..)
        .map(|n| format!("Line {n:04} of the benchmark body, plain text to fill four kilobytes of message.\r\n"))
        .flat_map(String::into_bytes)
        .take(4096)
        .collect();
    let start = Instant::now();
    let plan = Arc::new(Plan {
        messages: args.messages,
        new_tuples: args.new_tuples,
        per_connection: args.per_connection,
        deadline: args.duration_limit.map(|s| start + Duration::from_secs_f64(s.max(0.0))),
        run_id: format!("{:x}{:x}", now.as_secs(), now.subsec_nanos()),
        body,
        next: AtomicU64::new(0),
    });
    let handles: Vec<_> = (0..args.connections).map(|id| tokio::spawn(worker(target.clone(), plan.clone(), id))).collect();
    let mut total = Tally::new();
    for h in handles {
        match h.await {
            Ok(t) => total.merge(t),
            Err(e) => total.error(format!("worker failed: {e}")),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(d) = temp_dir {
        let _ = std::fs::remove_dir_all(d);
    }

    let done = total.transactions;
    let rate = if elapsed > 0.0 { done as f64 / elapsed } else { 0.0 };
    let mut rows = Vec::new();
    for (ev, lat) in total.lat.iter_mut().enumerate() {
        if lat.is_empty() {
            continue;
        }
        lat.sort_unstable();
        let name = if ev == TRANSACTION { "transaction" } else { EVENTS[ev] };
        rows.push((name, lat.len(), percentile(lat, 50.0), percentile(lat, 99.0), percentile(lat, 99.9)));
    }
    if args.json {
        let lat = rows
            .iter()
            .map(|(n, c, a, b, d)| {
                format!("\"{n}\":{{\"count\":{c},\"p50_ms\":{},\"p99_ms\":{},\"p999_ms\":{}}}", ms(*a), ms(*b), ms(*d))
            })
            .collect::<Vec<_>>()
            .join(",");
        let at = total.refused_at.iter().map(|(s, n)| format!("\"{s}\":{n}")).collect::<Vec<_>>().join(",");
        let err = total.first_error.as_deref().map(|e| format!("{e:?}")).unwrap_or_else(|| "null".into());
        println!(
            "{{\"target\":{label:?},\"connections\":{},\"messages\":{},\"new_tuples\":{},\"elapsed_s\":{elapsed:.3},\
             \"transactions\":{done},\"messages_per_s\":{rate:.1},\"accepted\":{},\"refused\":{},\"refused_at\":{{{at}}},\
             \"errors\":{},\"first_error\":{err},\"responses\":{},\"milter_connections\":{},\"latency\":{{{lat}}}}}",
            args.connections,
            args.messages,
            args.new_tuples,
            total.accepted,
            total.refused,
            total.errors,
            total.responses,
            total.connections
        );
    } else {
        println!("target       {label}");
        println!("connections  {} (milter connections opened: {})", args.connections, total.connections);
        println!("elapsed      {elapsed:.3} s");
        println!("transactions {done} ({rate:.1} messages/s)");
        println!("accepted     {}", total.accepted);
        let at = total.refused_at.iter().map(|(s, n)| format!("{s}: {n}")).collect::<Vec<_>>().join(", ");
        println!("refused      {}{}", total.refused, if at.is_empty() { String::new() } else { format!(" ({at})") });
        println!(
            "errors       {}{}",
            total.errors,
            total.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        println!("responses    {}", total.responses);
        println!("latency (ms)      count      p50      p99    p99.9");
        for (n, c, a, b, d) in &rows {
            println!("  {n:<12} {c:>10} {:>8.3} {:>8.3} {:>8.3}", ms(*a), ms(*b), ms(*d));
        }
    }
    if total.errors > 0 || done == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

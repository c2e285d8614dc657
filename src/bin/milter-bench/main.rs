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
//! memory), the `policy` subcommand (a Postfix policy-service socket driven as smtpd drives it:
//! requests per second and answer latency), the `delay` subcommand (simulated senders replayed with time scaled down: what
//! greylisting costs good mail and what it stops), the `prefill` subcommand (greylist records
//! into a SQLite state file before the daemon starts) and the `serve` subcommand (the raw responder on a real socket: a null milter
//! for measuring what an MTA pays for any milter at all). docs/performance.md describes them
//! and bench/run.sh, the full measurement.
//!
//! The code is laid out by job: `load` (the plan, the workers and the transactions they run, the
//! tally of what they saw), `target` (where to connect), `null_milter` (the raw responder, for
//! `--raw-ceiling` and `serve`), `idle` (`--idle`), `policy` (the `policy` subcommand), `delay` (the `delay` subcommand), `prefill` (the `prefill` subcommand) and
//! `report` (the text and JSON output, and the memory figures). This file holds the command line
//! and the order of a run.

mod delay;
mod idle;
mod load;
mod null_milter;
mod policy;
mod prefill;
mod report;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use smtpf_milter::milter::listen::Listener;
use smtpf_milter::milter::listen::{parse_octal_mode, SocketSpec};
use smtpf_milter::milter::negotiate::Needs;

use load::{warm_up, worker, Plan, Tally};
use null_milter::{null_milter, parse_raw_replies, serve};
use report::Memory;
use target::{parse_target, Target};

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
    #[command(flatten)]
    work: Workload,
    /// Known-tuple transactions per connection before QUIT and reconnect.
    #[arg(long, default_value_t = 5)]
    per_connection: u32,
    /// Stop starting new transactions after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration_limit: Option<f64>,
    /// Open-loop pacing: message i is not started before start + i / RATE.
    #[arg(long, value_name = "MSGS_PER_S")]
    rate: Option<f64>,
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
}

/// The options the load run and `policy` share: how much load, the warm-up, the output.
#[derive(clap::Args, Debug)]
struct Workload {
    /// Concurrent connections (the load run: MTA connections, each with at most one transaction
    /// in flight; `policy`: policy connections, one per simulated smtpd process).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Messages to run in total (`policy`: one request per recipient, 1 to 3 each).
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Share (0..=1) of messages from a never-seen client host and sender, so greylisting has to
    /// write a new tuple (the load run: each on its own connection).
    #[arg(long, default_value_t = 0.2)]
    new_tuples: f64,
    /// Before the measured run, send every known tuple once (not counted), then wait
    /// --warm-up-wait seconds.
    #[arg(long)]
    warm_up: bool,
    /// Seconds to wait after the warm-up (longer than the server's greylisting period).
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    warm_up_wait: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

impl Workload {
    /// Why these options cannot run, if they cannot.
    fn invalid(&self) -> Option<&'static str> {
        (!(0.0..=1.0).contains(&self.new_tuples) || self.connections == 0)
            .then_some("--new-tuples must be within 0..=1, --connections at least 1")
    }
}

/// The socket to bench, or the exit status after saying why it is not one.
fn target_of(spec: &str) -> Result<Target, ExitCode> {
    parse_target(spec).map_err(|e| {
        eprintln!("milter-bench: {e}");
        ExitCode::from(2)
    })
}

/// A run id unique to this run (keeps its hosts, senders and ids apart from earlier runs') and
/// the seed that spreads its new hosts.
fn run_identity() -> (String, u64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (format!("{:x}{:x}", now.as_secs(), now.subsec_nanos()), now.as_secs().wrapping_mul(1_000_003) ^ now.subsec_nanos() as u64)
}

/// Prints a report as JSON or as its text.
fn print_report(json: bool, report: &impl serde::Serialize, text: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
    } else {
        print!("{}", text());
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Replay simulated senders (big providers' pools, single-IP MTAs, bots that never retry)
    /// with time scaled down, and report per class the share delivered, the delay greylisting
    /// caused and the temp-fails per message (bench/delay.sh runs it with features off and on).
    Delay(DelayArgs),
    /// Drive a Postfix policy-service socket (smtpf-milter's policy-socket, postgrey, ...) as
    /// Postfix's smtpd processes do: one connection each, one RCPT request per recipient; report
    /// requests per second and the answer latency.
    Policy(PolicyArgs),
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

/// The `policy` subcommand's options.
#[derive(clap::Args, Debug)]
struct PolicyArgs {
    /// The policy socket: unix:/path, inet:PORT@HOST, inet:HOST:PORT or a bare /path.
    #[arg(long)]
    socket: String,
    #[command(flatten)]
    work: Workload,
    /// A label for the report.
    #[arg(long, default_value = "")]
    label: String,
}

/// Runs `milter-bench policy`.
async fn policy_run(a: PolicyArgs) -> ExitCode {
    if let Some(why) = a.work.invalid() {
        eprintln!("milter-bench policy: {why}");
        return ExitCode::from(2);
    }
    let target = match target_of(&a.socket) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let (run_id, seed) = run_identity();
    if a.work.warm_up {
        if let Err(e) = policy::warm_up(&target, &run_id).await {
            eprintln!("milter-bench policy: warm-up: {e}");
            return ExitCode::FAILURE;
        }
        tokio::time::sleep(Duration::from_secs_f64(a.work.warm_up_wait.max(0.0))).await;
    }
    let plan =
        policy::PolicyPlan { messages: a.work.messages, new_tuples: a.work.new_tuples, seed, run_id, next: AtomicU64::new(0) };
    let label = if a.label.is_empty() { a.socket.clone() } else { a.label.clone() };
    let report = policy::run(target, a.work.connections, plan, label).await;
    print_report(a.work.json, &report, || report.text());
    if report.errors > 0 || report.requests == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The `delay` subcommand's options; times are simulated seconds unless said otherwise.
#[derive(clap::Args, Debug)]
struct DelayArgs {
    /// Milter socket, as for the load run.
    #[arg(long)]
    socket: String,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 60.0)]
    time_scale: f64,
    /// The milter's grey-temp-fail-period, in real seconds (600 simulated at the default scale).
    #[arg(long, value_name = "REAL_SECS", default_value_t = 10.0)]
    period: f64,
    /// First attempts are spread over this many simulated seconds.
    #[arg(long, default_value_t = 1200.0)]
    window: f64,
    /// Senders give up this many simulated seconds after their first attempt.
    #[arg(long, default_value_t = 7200.0)]
    give_up: f64,
    /// Large providers, each a pool of --pool-size addresses authorised by its SPF record.
    #[arg(long, default_value_t = 10)]
    providers: u32,
    /// Addresses per provider (1 to 254).
    #[arg(long, default_value_t = 200)]
    pool_size: u32,
    /// Messages from the providers.
    #[arg(long, default_value_t = 300)]
    pool_messages: u32,
    /// Single-IP MTAs (1 to 254).
    #[arg(long, default_value_t = 40)]
    mtas: u32,
    /// Messages from the single-IP MTAs.
    #[arg(long, default_value_t = 200)]
    mta_messages: u32,
    /// Messages from bots that never retry.
    #[arg(long, default_value_t = 300)]
    bot_messages: u32,
    /// Local recipients the messages are spread over.
    #[arg(long, default_value_t = 100)]
    recipients: u32,
    /// Seed of the workload (the same seed replays the same messages).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A label for the report, e.g. the milter's settings.
    #[arg(long, default_value = "")]
    label: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `milter-bench delay`.
async fn delay_run(a: DelayArgs) -> ExitCode {
    let positive = |v: f64| v > 0.0 && v.is_finite();
    if !positive(a.time_scale) || !positive(a.period) || !positive(a.window) || !positive(a.give_up) {
        eprintln!("milter-bench delay: --time-scale, --period, --window and --give-up must be positive numbers");
        return ExitCode::from(2);
    }
    if !(1..=254).contains(&a.pool_size) || !(1..=254).contains(&a.mtas) || !(1..=254).contains(&a.providers) || a.recipients == 0
    {
        eprintln!("milter-bench delay: --pool-size, --mtas and --providers must be within 1..=254, --recipients at least 1");
        return ExitCode::from(2);
    }
    let target = match target_of(&a.socket) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let model = delay::Model {
        scale: a.time_scale,
        period: a.period,
        window: a.window,
        give_up: a.give_up,
        providers: a.providers,
        pool_size: a.pool_size,
        pool_messages: a.pool_messages,
        mtas: a.mtas,
        mta_messages: a.mta_messages,
        bot_messages: a.bot_messages,
        recipients: a.recipients,
        seed: a.seed,
    };
    let label = if a.label.is_empty() { a.socket.clone() } else { a.label.clone() };
    let report = delay::run(target, model, label).await;
    print_report(a.json, &report, || report.text());
    if report.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Cmd::Delay(a)) => return delay_run(a).await,
        Some(Cmd::Policy(a)) => return policy_run(a).await,
        Some(Cmd::Prefill { cache_path, records }) => return prefill::prefill(cache_path, records).await,
        Some(Cmd::Serve { socket, replies, socket_mode }) => return serve(&socket, replies, socket_mode).await,
        None => {}
    }
    if let Some(why) = args.work.invalid().or((args.per_connection == 0).then_some("--per-connection must be at least 1")) {
        eprintln!("milter-bench: {why}");
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
        match target_of(&spec) {
            Ok(t) => (t, spec),
            Err(code) => return code,
        }
    };
    // Whose memory to report: the bench itself for the raw ceiling, else --pid or the socket's peer.
    let (memory_of, own_pid) =
        if args.raw_ceiling { ("bench process (raw ceiling)", Some(std::process::id() as i32)) } else { ("milter", args.pid) };
    let pid_of = move |peer: &OnceLock<i32>| own_pid.or_else(|| peer.get().copied());

    if let Some(n) = args.idle {
        let rc = idle::idle(&target, n, memory_of, pid_of, args.work.json).await;
        if let Some(d) = temp_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        return rc;
    }

    let body: Vec<u8> = (0..)
        .map(|n| format!("Line {n:04} of the benchmark body, plain text to fill four kilobytes of message.\r\n"))
        .flat_map(String::into_bytes)
        .take(4096)
        .collect();
    let (run_id, seed) = run_identity();
    let make_plan = |start: Instant| Plan {
        messages: args.work.messages,
        new_tuples: args.work.new_tuples,
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
    if args.work.warm_up {
        let plan = Arc::new(make_plan(Instant::now()));
        let t = warm_up(&target, &plan).await;
        if t.errors > 0 {
            eprintln!("milter-bench: warm-up: {} errors (first: {})", t.errors, t.first_error.as_deref().unwrap_or("?"));
            return ExitCode::FAILURE;
        }
        warm = Some((t.transactions, t.refused));
        tokio::time::sleep(Duration::from_secs_f64(args.work.warm_up_wait.max(0.0))).await;
    }

    let start = Instant::now();
    let plan = Arc::new(make_plan(start));
    let handles: Vec<_> = (0..args.work.connections).map(|id| tokio::spawn(worker(target.clone(), plan.clone(), id))).collect();
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

    let report = report::Run {
        label: &label,
        connections: args.work.connections,
        messages: args.work.messages,
        new_tuples: args.work.new_tuples,
        rate: args.rate,
        warm,
        warm_up_wait: args.work.warm_up_wait,
        elapsed,
        total: &total,
        mem: &mem,
    };
    report.print(args.work.json);
    let done = total.transactions;
    if total.errors > 0 || done == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

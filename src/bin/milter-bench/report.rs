//! What the bench prints: the report of a load run or of `--idle`, as text for people or as one
//! line of JSON for bench/run.sh, and the memory figures of the process measured.
//!
//! The JSON is written by serde_json from the `*Json` structs below, whose field order is the
//! key order: bench/run.sh reads the one-line output with grep and sed (`"warm_up":{"transactions":`
//! among them), so keys keep their order and the output stays compact. Figures printed with a
//! fixed number of decimals in the text keep them in the JSON too (see [`fixed`]).

use serde::{Serialize, Serializer};

use crate::load::{Tally, EVENTS, TRANSACTION};

/// Memory of a process from /proc/PID/status: (VmRSS, VmHWM) in KiB, each None when unknown.
fn parse_status(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Whose memory is reported.
pub struct Memory {
    /// "milter" or "bench process (raw ceiling)".
    of: &'static str,
    pid: Option<i32>,
    rss_kib: Option<u64>,
    peak_kib: Option<u64>,
}

impl Memory {
    pub fn read(of: &'static str, pid: Option<i32>) -> Memory {
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

    fn json(&self) -> MemoryJson {
        MemoryJson { memory_of: self.of, memory_pid: self.pid, milter_rss_kib: self.rss_kib, milter_peak_rss_kib: self.peak_kib }
    }
}

/// The memory figures as they appear, flattened, in both JSON reports.
#[derive(Serialize)]
struct MemoryJson {
    memory_of: &'static str,
    memory_pid: Option<i32>,
    milter_rss_kib: Option<u64>,
    milter_peak_rss_kib: Option<u64>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// `x` with `places` decimals, as the text report rounds it (`{:.3}`), so that the JSON number is
/// the same figure; serde_json then writes it without the trailing zeros.
fn fixed(x: f64, places: usize) -> f64 {
    format!("{x:.places$}").parse().unwrap_or(x)
}

/// Pairs written as one JSON object in the order given (refusals by step, latency by event),
/// where a map type would sort the keys.
struct InOrder<'a, K, V>(&'a [(K, V)]);

impl<K: Serialize, V: Serialize> Serialize for InOrder<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// The JSON of a load run.
#[derive(Serialize)]
struct RunJson<'a> {
    target: &'a str,
    connections: usize,
    messages: u64,
    new_tuples: f64,
    target_rate: Option<f64>,
    warm_up: Option<WarmUpJson>,
    elapsed_s: f64,
    transactions: u64,
    messages_per_s: f64,
    accepted: u64,
    refused: u64,
    refused_at: InOrder<'a, String, u64>,
    errors: u64,
    first_error: Option<&'a str>,
    responses: u64,
    milter_connections: u64,
    #[serde(flatten)]
    memory: MemoryJson,
    latency: InOrder<'a, &'static str, LatencyJson>,
}

/// The warm-up's transactions and refusals.
#[derive(Serialize)]
struct WarmUpJson {
    transactions: u64,
    refused: u64,
}

/// One event's latency figures, in milliseconds.
#[derive(Serialize)]
struct LatencyJson {
    count: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

/// The JSON of `--idle`.
#[derive(Serialize)]
struct IdleJson<'a> {
    mode: &'static str,
    requested: usize,
    idle_connections: usize,
    open_s: f64,
    refused: u64,
    errors: u64,
    first_error: Option<&'a str>,
    nofile_limit: &'a str,
    #[serde(flatten)]
    memory: MemoryJson,
}

/// One line of JSON; serialising these structs (strings, numbers, options) cannot fail.
fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("the report serialises")
}

/// A load run's figures, gathered once the workers are done, for [`Run::print`].
pub struct Run<'a> {
    /// What was benched: the `--socket` as given, or the raw ceiling and its reply steps.
    pub label: &'a str,
    /// `--connections`.
    pub connections: usize,
    /// `--messages`.
    pub messages: u64,
    /// `--new-tuples`.
    pub new_tuples: f64,
    /// `--rate`, when the run was paced.
    pub rate: Option<f64>,
    /// Transactions of the `--warm-up` and how many of them were refused, when it ran.
    pub warm: Option<(u64, u64)>,
    /// `--warm-up-wait`, named in the text report.
    pub warm_up_wait: f64,
    /// Seconds from the workers' start to the last one's end.
    pub elapsed: f64,
    /// What all the workers saw.
    pub total: &'a Tally,
    /// The memory of the process measured, read after the run.
    pub mem: &'a Memory,
}

/// One line of the latency table: event, count, p50, p99, p99.9 and max in µs.
type LatencyRow = (&'static str, u64, u64, u64, u64, u64);

impl Run<'_> {
    /// Prints the report: one JSON object on one line, or the text table.
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.json());
        } else {
            self.print_text();
        }
    }

    /// Messages per second over the whole run.
    fn rate(&self) -> f64 {
        if self.elapsed > 0.0 {
            self.total.transactions as f64 / self.elapsed
        } else {
            0.0
        }
    }

    /// Latency figures of every event that got a reply, in the order of a transaction, then the
    /// whole transaction.
    fn rows(&self) -> Vec<LatencyRow> {
        let mut rows = Vec::new();
        for (ev, h) in self.total.lat.iter().enumerate() {
            let Some(h) = h.as_ref().filter(|h| !h.is_empty()) else { continue };
            let name = if ev == TRANSACTION { "transaction" } else { EVENTS[ev] };
            let q = |p: f64| h.value_at_quantile(p);
            rows.push((name, h.len(), q(0.5), q(0.99), q(0.999), h.max()));
        }
        rows
    }

    fn json(&self) -> String {
        let total = self.total;
        let latency: Vec<(&'static str, LatencyJson)> = self
            .rows()
            .into_iter()
            .map(|(n, c, a, b, d, m)| (n, LatencyJson { count: c, p50_ms: ms(a), p99_ms: ms(b), p999_ms: ms(d), max_ms: ms(m) }))
            .collect();
        to_json(&RunJson {
            target: self.label,
            connections: self.connections,
            messages: self.messages,
            new_tuples: self.new_tuples,
            target_rate: self.rate,
            warm_up: self.warm.map(|(transactions, refused)| WarmUpJson { transactions, refused }),
            elapsed_s: fixed(self.elapsed, 3),
            transactions: total.transactions,
            messages_per_s: fixed(self.rate(), 1),
            accepted: total.accepted,
            refused: total.refused,
            refused_at: InOrder(&total.refused_at),
            errors: total.errors,
            first_error: total.first_error.as_deref(),
            responses: total.responses,
            milter_connections: total.connections,
            memory: self.mem.json(),
            latency: InOrder(&latency),
        })
    }

    fn print_text(&self) {
        let (total, elapsed, rate, done) = (self.total, self.elapsed, self.rate(), self.total.transactions);
        println!("target       {}", self.label);
        println!("connections  {} (milter connections opened: {})", self.connections, total.connections);
        if let Some((t, r)) = self.warm {
            println!("warm-up      {t} transactions ({r} refused), then {} s wait", self.warm_up_wait);
        }
        println!("elapsed      {elapsed:.3} s");
        match self.rate {
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
        println!("memory       {}", self.mem.text());
        println!("latency (ms)      count      p50      p99    p99.9      max");
        for (n, c, a, b, d, m) in &self.rows() {
            println!("  {n:<12} {c:>10} {:>8.3} {:>8.3} {:>8.3} {:>8.3}", ms(*a), ms(*b), ms(*d), ms(*m));
        }
    }
}

/// What `--idle` saw, for [`Idle::print`].
pub struct Idle<'a> {
    /// Connections asked for (`--idle N`).
    pub requested: usize,
    /// Connections that got through CONNECT and HELO and were held.
    pub held: usize,
    /// Seconds it took to open them all.
    pub opened_s: f64,
    /// The open-file limit the bench ran with, or "unknown".
    pub limit: &'a str,
    /// Refusals and errors while opening.
    pub total: &'a Tally,
    /// The memory of the process measured, read while the connections were held.
    pub mem: &'a Memory,
}

impl Idle<'_> {
    /// Prints the report: one JSON object on one line, or text.
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.json());
        } else {
            self.print_text();
        }
    }

    fn json(&self) -> String {
        to_json(&IdleJson {
            mode: "idle",
            requested: self.requested,
            idle_connections: self.held,
            open_s: fixed(self.opened_s, 3),
            refused: self.total.refused,
            errors: self.total.errors,
            first_error: self.total.first_error.as_deref(),
            nofile_limit: self.limit,
            memory: self.mem.json(),
        })
    }

    fn print_text(&self) {
        let Idle { requested: n, held: count, opened_s, limit, total, mem } = self;
        println!("idle         {count} of {n} connections held (opened in {opened_s:.3} s, open-file limit {limit})");
        println!("refused      {}", total.refused);
        println!(
            "errors       {}{}",
            total.errors,
            total.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        println!("memory       {}", mem.text());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;

    fn memory() -> Memory {
        Memory { of: "milter", pid: Some(42), rss_kib: Some(1000), peak_kib: None }
    }

    /// The layout bench/run.sh reads: one line, no spaces, keys in this order, the warm-up's
    /// transactions first in its object, numbers rounded as the text report rounds them.
    #[test]
    fn run_json_layout() {
        let mut total = Tally::new();
        total.transactions = 10;
        total.accepted = 9;
        total.refused = 1;
        total.refused_at = vec![("rcpt".into(), 1), ("data".into(), 0)];
        total.responses = 50;
        total.connections = 3;
        let mut h = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).unwrap();
        h.record(1500).unwrap();
        total.lat[2] = Some(h);
        let mem = memory();
        let run = Run {
            label: "unix:/run/m.sock",
            connections: 4,
            messages: 10,
            new_tuples: 0.2,
            rate: None,
            warm: Some((40, 2)),
            warm_up_wait: 2.0,
            elapsed: 1.23449,
            total: &total,
            mem: &mem,
        };
        assert_eq!(
            run.json(),
            "{\"target\":\"unix:/run/m.sock\",\"connections\":4,\"messages\":10,\"new_tuples\":0.2,\"target_rate\":null,\
             \"warm_up\":{\"transactions\":40,\"refused\":2},\"elapsed_s\":1.234,\"transactions\":10,\"messages_per_s\":8.1,\
             \"accepted\":9,\"refused\":1,\"refused_at\":{\"rcpt\":1,\"data\":0},\"errors\":0,\"first_error\":null,\"responses\":50,\
             \"milter_connections\":3,\"memory_of\":\"milter\",\"memory_pid\":42,\"milter_rss_kib\":1000,\"milter_peak_rss_kib\":null,\
             \"latency\":{\"mail\":{\"count\":1,\"p50_ms\":1.5,\"p99_ms\":1.5,\"p999_ms\":1.5,\"max_ms\":1.5}}}"
        );
        let idle = Idle { requested: 5, held: 4, opened_s: 0.5, limit: "unknown", total: &total, mem: &mem };
        assert_eq!(
            idle.json(),
            "{\"mode\":\"idle\",\"requested\":5,\"idle_connections\":4,\"open_s\":0.5,\"refused\":1,\"errors\":0,\
             \"first_error\":null,\"nofile_limit\":\"unknown\",\"memory_of\":\"milter\",\"memory_pid\":42,\
             \"milter_rss_kib\":1000,\"milter_peak_rss_kib\":null}"
        );
    }

    /// Text from outside (a socket spec, a milter's error message) is escaped as JSON requires:
    /// control characters, quotes, backslashes and non-ASCII all read back as they were.
    #[test]
    fn json_strings_are_escaped() {
        let label = "unix:/tmp/\"odd\"\\dir\u{1b}[31m/m\u{7f}.sock";
        let error = "data: reply \"451\u{0}\"\r\n\tfrom caf\u{e9} \u{2603} \u{1F600} \u{200b}\u{1b}";
        let mut total = Tally::new();
        total.errors = 1;
        total.first_error = Some(error.to_string());
        let mem = memory();
        let run = Run {
            label,
            connections: 1,
            messages: 1,
            new_tuples: 0.0,
            rate: Some(2.5),
            warm: None,
            warm_up_wait: 2.0,
            elapsed: 0.0,
            total: &total,
            mem: &mem,
        };
        let idle = Idle { requested: 1, held: 0, opened_s: 0.0, limit: "1024", total: &total, mem: &mem };
        for json in [run.json(), idle.json()] {
            assert!(!json.contains('\n') && !json.contains('\u{1b}'), "one line, no raw control characters: {json}");
            let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("invalid JSON ({e}): {json}"));
            assert_eq!(v["first_error"], error);
            assert_eq!(v["errors"], 1);
        }
        let v: serde_json::Value = serde_json::from_str(&run.json()).unwrap();
        assert_eq!(v["target"], label);
        assert_eq!(v["target_rate"], 2.5);
        assert_eq!(v["latency"], serde_json::json!({}));
    }

    #[test]
    fn proc_status() {
        let s = "Name:\tsmtpf-milter\nVmPeak:\t  900000 kB\nVmHWM:\t   23456 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(parse_status(s), (Some(12345), Some(23456)));
        assert_eq!(parse_status("Name:\tx\n"), (None, None));
    }
}

//! What the bench prints: the report of a load run or of `--idle`, as text for people or as one
//! line of JSON for bench/run.sh, and the memory figures of the process measured.

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

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn quote(s: &str) -> String {
    format!("{s:?}")
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
        let (total, elapsed, rate, done) = (self.total, self.elapsed, self.rate(), self.total.transactions);
        let target_rate = self.rate.map(|r| format!("{r}")).unwrap_or_else(|| "null".into());
        let lat = self
            .rows()
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
        let warm = self.warm.map(|(t, r)| format!("{{\"transactions\":{t},\"refused\":{r}}}")).unwrap_or_else(|| "null".into());
        format!(
            "{{\"target\":{},\"connections\":{},\"messages\":{},\"new_tuples\":{},\"target_rate\":{target_rate},\
             \"warm_up\":{warm},\"elapsed_s\":{elapsed:.3},\"transactions\":{done},\"messages_per_s\":{rate:.1},\
             \"accepted\":{},\"refused\":{},\"refused_at\":{{{at}}},\"errors\":{},\"first_error\":{err},\"responses\":{},\
             \"milter_connections\":{},{},\"latency\":{{{lat}}}}}",
            quote(self.label),
            self.connections,
            self.messages,
            self.new_tuples,
            total.accepted,
            total.refused,
            total.errors,
            total.responses,
            total.connections,
            self.mem.json()
        )
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
        let Idle { requested: n, held: count, opened_s, limit, total, mem } = self;
        format!(
            "{{\"mode\":\"idle\",\"requested\":{n},\"idle_connections\":{count},\"open_s\":{opened_s:.3},\"refused\":{},\
             \"errors\":{},\"first_error\":{},\"nofile_limit\":{limit:?},{}}}",
            total.refused,
            total.errors,
            total.first_error.as_deref().map(quote).unwrap_or_else(|| "null".into()),
            mem.json()
        )
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

    #[test]
    fn proc_status() {
        let s = "Name:\tsmtpf-milter\nVmPeak:\t  900000 kB\nVmHWM:\t   23456 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(parse_status(s), (Some(12345), Some(23456)));
        assert_eq!(parse_status("Name:\tx\n"), (None, None));
    }
}

//! The daemon's counters as Prometheus/OpenMetrics text (`metrics-listen`), so a postmaster can
//! graph and alert on what the log says line by line.
//!
//! One [`Metrics`] lives for the daemon's life (in `Shared`), so a reload never resets it. The
//! hot path only bumps atomics: counters whose labels are known in advance (reply numbers, the
//! stages, greylisting outcomes) are created at start and kept as handles, and the latency and
//! delay histograms are arrays of atomic buckets ([`AtomicHistogram`]). Counters per DNS list are
//! created on a list's first use (a map lookup under a read lock: a list lookup costs a DNS
//! query anyway). What other parts already count (numbered log lines, store queue and commits)
//! is read at scrape time by [`Sources`]; greylist records by state come from a count the daemon
//! refreshes every minute, never from a table scan per scrape. docs/metrics.md lists every metric.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::log::Logger;
use crate::reply::catalog as reply_catalog;
use crate::store::Store;

/// Where `metrics-listen` serves `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsListen {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

impl MetricsListen {
    /// `"HOST:PORT"` (an address, `[::1]:9894` for IPv6) or `unix:/path` (or a bare `/path`);
    /// empty: off.
    pub fn parse(text: &str) -> Result<Option<MetricsListen>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if let Some(path) = text.strip_prefix("unix:").or(text.starts_with('/').then_some(text)) {
            if !path.starts_with('/') {
                return Err(format!("\"{text}\": a unix socket needs an absolute path"));
            }
            // The milter socket's rules for a unix path (its length limit), so that check-config
            // refuses what binding would.
            crate::milter::listen::SocketSpec::parse(&format!("unix:{path}"))?;
            return Ok(Some(MetricsListen::Unix(path.into())));
        }
        match text.parse::<std::net::SocketAddr>() {
            Ok(a) if a.port() != 0 => Ok(Some(MetricsListen::Tcp(a))),
            _ => Err(format!("\"{text}\" is not IP:PORT (e.g. \"127.0.0.1:9894\", \"[::1]:9894\") or unix:/path")),
        }
    }
}

impl std::fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsListen::Tcp(a) => write!(f, "{a}"),
            MetricsListen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Label pairs of a family.
type Labels = Vec<(&'static str, String)>;

/// A histogram whose observation is a few relaxed atomic adds (prometheus-client's own takes a
/// lock). Buckets are upper bounds in the unit of the metric; clones share the counts.
#[derive(Clone, Debug)]
pub struct AtomicHistogram {
    inner: Arc<HistogramCounts>,
}

#[derive(Debug)]
struct HistogramCounts {
    bounds: &'static [f64],
    /// One count per bound, plus +Inf.
    counts: Box<[AtomicU64]>,
    /// The sum, in millionths of the unit.
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64]) -> AtomicHistogram {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        AtomicHistogram { inner: Arc::new(HistogramCounts { bounds, counts, sum_micros: AtomicU64::new(0) }) }
    }

    /// Counts one observation.
    pub fn observe(&self, value: f64) {
        let h = &self.inner;
        let i = h.bounds.iter().position(|b| value <= *b).unwrap_or(h.bounds.len());
        h.counts[i].fetch_add(1, Ordering::Relaxed);
        h.sum_micros.fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// (sum, count, per-bucket counts) as the encoder wants them (it writes them cumulative).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let h = &self.inner;
        let mut count = 0;
        let mut buckets = Vec::with_capacity(h.counts.len());
        for (i, c) in h.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            buckets.push((h.bounds.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        (h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6, count, buckets)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Seconds a milter event takes to answer: 100 µs to 10 s.
const LATENCY_BOUNDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Seconds from a tuple's first sight to its pass: 1 minute to 2 days.
const DELAY_BOUNDS: &[f64] = &[60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0, 172800.0];

/// The other checks' outcomes, created at start so that counting one is an atomic add.
const KNOWN_VERDICTS: &[(&str, &str)] = &[
    ("mx", "ok"),
    ("mx", "nxdomain"),
    ("mx", "null_mx"),
    ("mx", "no_usable_mx"),
    ("mx", "incomplete"),
    ("mx", "lookup_failed"),
    ("dupmsg", "TAG"),
    ("dupmsg", "DISCARD"),
    ("dupmsg", "REJECT"),
];

/// The milter events whose answer time is measured, in the order of [`Metrics::observe_stage`].
pub const STAGES: [&str; 8] = ["connect", "helo", "mail", "rcpt", "data", "header", "eoh", "eom"];

/// What greylisting decided for a message, one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GreyOutcome {
    /// A tuple never seen: temp-failed, record written.
    FirstSight,
    /// A known tuple retried before its period ended.
    RetryTooSoon,
    /// A tuple passed for the first time (its retry came after the period).
    Pass,
    /// A passed host or tuple, or the auto-whitelist: through at once.
    Known,
    /// Not greylisted: white-listed, authenticated, localhost, dns-gl, backup MX.
    ExemptClient,
    /// Not greylisted: a postgrey whitelist file.
    ExemptWhitelist,
    /// Not greylisted: an access-map Grey-Connect:/Grey-To: period of 0.
    ExemptAccessMap,
    /// The store failed: let through (fail open).
    StoreError,
    /// grey-content: decided at end of message.
    Deferred,
}

impl GreyOutcome {
    const ALL: [GreyOutcome; 9] = [
        GreyOutcome::FirstSight,
        GreyOutcome::RetryTooSoon,
        GreyOutcome::Pass,
        GreyOutcome::Known,
        GreyOutcome::ExemptClient,
        GreyOutcome::ExemptWhitelist,
        GreyOutcome::ExemptAccessMap,
        GreyOutcome::StoreError,
        GreyOutcome::Deferred,
    ];

    fn word(self) -> &'static str {
        match self {
            GreyOutcome::FirstSight => "first_sight",
            GreyOutcome::RetryTooSoon => "retry_too_soon",
            GreyOutcome::Pass => "pass",
            GreyOutcome::Known => "known",
            GreyOutcome::ExemptClient => "exempt_client",
            GreyOutcome::ExemptWhitelist => "exempt_whitelist",
            GreyOutcome::ExemptAccessMap => "exempt_access_map",
            GreyOutcome::StoreError => "store_error",
            GreyOutcome::Deferred => "deferred_to_content",
        }
    }
}

/// Every metric of the daemon.
pub struct Metrics {
    registry: Registry,
    connections: Counter,
    connections_open: Gauge,
    transactions: Counter,
    transactions_open: Gauge,
    /// One counter per reply catalog entry and code (a reply number may be sent as 421 or 451).
    replies: Family<Labels, Counter>,
    reply_handles: Vec<(u16, u16, Counter)>,
    stages: Vec<AtomicHistogram>,
    grey: Vec<Counter>,
    grey_delay: AtomicHistogram,
    /// dns-bl/dns-wl/dns-gl/uri-bl answers per list: listed, not listed, failed.
    lists: Family<Labels, Counter>,
    /// Other checks' outcomes (mx, dupmsg), with handles for the pairs known in advance.
    verdicts: Family<Labels, Counter>,
    verdict_handles: Vec<(&'static str, &'static str, Counter)>,
    reloads: Family<Labels, Counter>,
    last_reload_ok: Gauge,
    last_reload_time: Gauge,
    sources: Arc<Sources>,
}

/// What other parts of the daemon count, read at scrape time.
pub struct Sources {
    log: Mutex<Option<Logger>>,
    store: Mutex<Option<Store>>,
    /// Greylist records by state, refreshed by the daemon every minute: pending, passed, host.
    records: [AtomicI64; 3],
    records_at: AtomicI64,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(log) = crate::sync::lock(&self.log).clone() {
            let counts = log.counts();
            let family: Family<Labels, Counter> = Family::default();
            for (num, n) in counts {
                family.get_or_create(&vec![("number", num.to_string())]).inc_by(n);
            }
            let m = encoder.encode_descriptor(
                "log_messages",
                "Numbered log lines emitted, by number (smtpf-milter explain N); debug lines only while their verbose word is on",
                None,
                MetricType::Counter,
            )?;
            family.encode(m)?;
            let lost = Counter::<u64>::default();
            lost.inc_by(log.dropped());
            lost.encode(encoder.encode_descriptor(
                "log_lines_lost",
                "Log lines lost to a full log queue (#2012)",
                None,
                MetricType::Counter,
            )?)?;
        }
        if let Some(store) = crate::sync::lock(&self.store).clone() {
            let c = store.counters();
            let family: Family<Labels, Counter> = Family::default();
            for (what, n) in [
                ("submitted", c.submitted),
                ("written", c.written),
                ("commits", c.commits),
                ("refused_busy", c.refused_busy),
                ("write_errors", c.write_errors),
                ("gc_runs", c.gc_runs),
                ("gc_deleted", c.gc_deleted),
            ] {
                family.get_or_create(&vec![("operation", what.to_string())]).inc_by(n);
            }
            family.encode(encoder.encode_descriptor(
                "store_operations",
                "State store writes since start: queued, written, commits, refused (queue full), failed; garbage collection passes and rows removed",
                None,
                MetricType::Counter,
            )?)?;
            let depth = Gauge::<i64>::default();
            depth.set(c.submitted.saturating_sub(c.written + c.write_errors) as i64);
            depth.encode(encoder.encode_descriptor(
                "store_queue_depth",
                "Writes queued and not yet committed",
                None,
                MetricType::Gauge,
            )?)?;
        }
        if self.records_at.load(Ordering::Relaxed) > 0 {
            let family: Family<Labels, Gauge> = Family::default();
            for (i, state) in ["pending", "passed", "host"].iter().enumerate() {
                family.get_or_create(&vec![("state", state.to_string())]).set(self.records[i].load(Ordering::Relaxed));
            }
            family.encode(encoder.encode_descriptor(
                "greylist_records",
                "Live greylist records by state (pending: temp-failed tuples; passed: passed tuples; host: passed hosts, SPF domains and auto-whitelisted clients), counted every minute",
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Every metric at zero, with the build info.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("smtpf_milter");
        let connections = Counter::default();
        registry.register("connections", "Milter connections (SMTP sessions) opened", connections.clone());
        let connections_open = Gauge::default();
        registry.register("connections_open", "Milter connections open now", connections_open.clone());
        let transactions = Counter::default();
        registry.register("transactions", "SMTP transactions (MAIL commands) seen", transactions.clone());
        let transactions_open = Gauge::default();
        registry.register(
            "transactions_open",
            "SMTP transactions open now (MAIL seen, no end of message or abort yet)",
            transactions_open.clone(),
        );

        let replies = Family::<Labels, Counter>::default();
        let mut reply_handles = Vec::new();
        for m in reply_catalog::ALL {
            let mut codes = vec![m.code];
            if m.code == 451 {
                // Greylisting sends its 451 as 421 when it drops the connection.
                codes.push(421);
            }
            for code in codes {
                let c = replies.get_or_create(&vec![("number", m.num.to_string()), ("code", code.to_string())]).clone();
                reply_handles.push((m.num, code, c));
            }
        }
        registry.register("replies", "SMTP replies this milter made the MTA send, by reply number and code", replies.clone());

        let stage_family = Family::<Labels, AtomicHistogram, _>::new_with_constructor(|| AtomicHistogram::new(LATENCY_BOUNDS));
        let stages = STAGES.iter().map(|s| stage_family.get_or_create(&vec![("stage", s.to_string())]).clone()).collect();
        registry.register("answer_seconds", "Time to answer one milter event or policy-door step, by stage", stage_family);

        let grey_family = Family::<Labels, Counter>::default();
        let grey = GreyOutcome::ALL
            .iter()
            .map(|o| grey_family.get_or_create(&vec![("outcome", o.word().to_string())]).clone())
            .collect();
        registry.register("greylist_verdicts", "Greylisting decisions per message, by outcome", grey_family);
        let grey_delay = AtomicHistogram::new(DELAY_BOUNDS);
        registry.register(
            "greylist_retry_delay_seconds",
            "Seconds from a tuple's first sight to its pass: the delay greylisting cost a sender",
            grey_delay.clone(),
        );

        let lists = Family::<Labels, Counter>::default();
        registry.register(
            "list_lookups",
            "DNS list lookups by option (dns-bl, dns-wl, dns-gl, uri-bl, uri-dns-bl), list and result (queried, listed, timeout, error)",
            lists.clone(),
        );
        let verdicts = Family::<Labels, Counter>::default();
        let verdict_handles = KNOWN_VERDICTS
            .iter()
            .map(|&(check, outcome)| {
                (
                    check,
                    outcome,
                    verdicts.get_or_create(&vec![("check", check.to_string()), ("outcome", outcome.to_string())]).clone(),
                )
            })
            .collect();
        registry.register("verdicts", "Other checks' outcomes, by check and outcome", verdicts.clone());

        let reloads = Family::<Labels, Counter>::default();
        registry.register("config_reloads", "Configuration reloads (SIGHUP), by result", reloads.clone());
        let last_reload_ok = Gauge::default();
        registry.register(
            "config_last_reload_successful",
            "1 when the last reload was applied, 0 when it was refused",
            last_reload_ok.clone(),
        );
        let last_reload_time = Gauge::default();
        registry.register(
            "config_last_reload_time_seconds",
            "Unix time of the last reload attempt (0: none yet)",
            last_reload_time.clone(),
        );
        last_reload_ok.set(1);
        registry.register("build", "The running build", Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]));

        let sources = Arc::new(Sources {
            log: Mutex::new(None),
            store: Mutex::new(None),
            records: [AtomicI64::new(0), AtomicI64::new(0), AtomicI64::new(0)],
            records_at: AtomicI64::new(0),
        });
        registry.register_collector(Box::new(sources.clone()));
        Metrics {
            registry,
            connections,
            connections_open,
            transactions,
            transactions_open,
            replies,
            reply_handles,
            stages,
            grey,
            grey_delay,
            lists,
            verdicts,
            verdict_handles,
            reloads,
            last_reload_ok,
            last_reload_time,
            sources,
        }
    }

    /// The exposition text for one scrape (OpenMetrics text format).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The logger whose line counts are exposed.
    pub fn watch_log(&self, log: &Logger) {
        *crate::sync::lock(&self.sources.log) = Some(log.clone());
    }

    /// The store whose counters are exposed (replaced when the daemon reopens it).
    pub fn watch_store(&self, store: Option<Store>) {
        *crate::sync::lock(&self.sources.store) = store;
    }

    /// The latest greylist record counts (pending tuples, passed tuples, passed hosts).
    pub fn set_records(&self, pending: i64, passed: i64, hosts: i64, now: i64) {
        for (slot, v) in self.sources.records.iter().zip([pending, passed, hosts]) {
            slot.store(v, Ordering::Relaxed);
        }
        self.sources.records_at.store(now.max(1), Ordering::Relaxed);
    }

    /// A milter connection opened.
    pub fn connection_opened(&self) {
        self.connections.inc();
        self.connections_open.inc();
    }

    /// A milter connection ended.
    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// A MAIL command started a transaction.
    pub fn transaction_opened(&self) {
        self.transactions.inc();
        self.transactions_open.inc();
    }

    /// A transaction ended (end of message, abort, new MAIL, end of session).
    pub fn transaction_closed(&self) {
        self.transactions_open.dec();
    }

    /// A reply we made the MTA send.
    pub fn reply(&self, num: u16, code: u16) {
        if let Some((_, _, c)) = self.reply_handles.iter().find(|(n, k, _)| *n == num && *k == code) {
            c.inc();
        } else {
            // A code the catalog does not foresee for this number: counted all the same.
            self.replies.get_or_create(&vec![("number", num.to_string()), ("code", code.to_string())]).inc();
        }
    }

    /// How long stage `index` of [`STAGES`] took to answer.
    pub fn observe_stage(&self, index: usize, seconds: f64) {
        if let Some(h) = self.stages.get(index) {
            h.observe(seconds);
        }
    }

    /// One greylisting decision.
    pub fn grey(&self, outcome: GreyOutcome) {
        if let Some(i) = GreyOutcome::ALL.iter().position(|o| *o == outcome) {
            self.grey[i].inc();
        }
    }

    /// A tuple passed `seconds` after its first sight.
    pub fn grey_passed_after(&self, seconds: i64) {
        self.grey_delay.observe(seconds as f64);
    }

    /// One DNS list's answer: `result` is "listed", "timeout" or "error" ("queried" goes through
    /// [`Metrics::list_counter`] handles).
    pub fn list(&self, option: &str, list: &str, result: &'static str) {
        self.lists
            .get_or_create(&vec![("option", option.to_string()), ("list", list.to_string()), ("result", result.to_string())])
            .inc();
    }

    /// The counter of one DNS list's `result`, to keep and bump without a lookup.
    pub fn list_counter(&self, option: &str, list: &str, result: &str) -> Counter {
        self.lists
            .get_or_create(&vec![("option", option.to_string()), ("list", list.to_string()), ("result", result.to_string())])
            .clone()
    }

    /// Another check's outcome (e.g. "mx", "nxdomain").
    pub fn verdict(&self, check: &'static str, outcome: &'static str) {
        if let Some((_, _, c)) = self.verdict_handles.iter().find(|(k, o, _)| *k == check && *o == outcome) {
            c.inc();
            return;
        }
        self.verdicts.get_or_create(&vec![("check", check.to_string()), ("outcome", outcome.to_string())]).inc();
    }

    /// A reload attempt and whether it was applied.
    pub fn reloaded(&self, ok: bool, now: i64) {
        self.reloads.get_or_create(&vec![("result", if ok { "applied" } else { "refused" }.to_string())]).inc();
        self.last_reload_ok.set(i64::from(ok));
        self.last_reload_time.set(now);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(MetricsListen::parse(""), Ok(None));
        assert_eq!(MetricsListen::parse("127.0.0.1:9894"), Ok(Some(MetricsListen::Tcp("127.0.0.1:9894".parse().unwrap()))));
        assert_eq!(MetricsListen::parse("[::1]:9894"), Ok(Some(MetricsListen::Tcp("[::1]:9894".parse().unwrap()))));
        assert_eq!(MetricsListen::parse("unix:/run/m.sock"), Ok(Some(MetricsListen::Unix("/run/m.sock".into()))));
        assert_eq!(MetricsListen::parse("/run/m.sock"), Ok(Some(MetricsListen::Unix("/run/m.sock".into()))));
        let long = format!("unix:/{}", "x".repeat(100));
        assert!(MetricsListen::parse(&long).unwrap_err().contains("limited to 100 bytes"), "refused as the milter socket is");
        for bad in ["9894", "localhost:9894", "127.0.0.1:0", "unix:rel.sock", "127.0.0.1"] {
            assert!(MetricsListen::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn histogram_buckets_count_each_observation_once_and_the_sum_adds_up() {
        let h = AtomicHistogram::new(&[1.0, 10.0]);
        for v in [0.5, 1.0, 5.0, 50.0] {
            h.observe(v);
        }
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 4);
        assert!((sum - 56.5).abs() < 1e-6, "{sum}");
        assert_eq!(buckets, vec![(1.0, 2), (10.0, 1), (f64::INFINITY, 1)]);
    }

    #[test]
    fn the_exposition_names_what_the_docs_promise() {
        let m = Metrics::new();
        m.connection_opened();
        m.reply(552, 421);
        m.observe_stage(4, 0.002);
        m.observe_stage(4, 20.0);
        m.grey(GreyOutcome::FirstSight);
        m.list("dns-bl", "zen.example.", "listed");
        m.reloaded(false, 1_700_000_000);
        let text = m.render();
        for needle in [
            "smtpf_milter_connections_total 1",
            "smtpf_milter_connections_open 1",
            "smtpf_milter_replies_total{number=\"552\",code=\"421\"} 1",
            "smtpf_milter_answer_seconds_bucket{le=\"0.0025\",stage=\"data\"} 1\n",
            "smtpf_milter_answer_seconds_bucket{le=\"10.0\",stage=\"data\"} 1\n",
            "smtpf_milter_answer_seconds_bucket{le=\"+Inf\",stage=\"data\"} 2\n",
            "smtpf_milter_answer_seconds_count{stage=\"data\"} 2\n",
            "smtpf_milter_greylist_verdicts_total{outcome=\"first_sight\"} 1",
            "smtpf_milter_list_lookups_total{option=\"dns-bl\",list=\"zen.example.\",result=\"listed\"} 1",
            "smtpf_milter_config_reloads_total{result=\"refused\"} 1",
            "smtpf_milter_config_last_reload_successful 0",
            "smtpf_milter_build_info{version=\"",
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
    }
}

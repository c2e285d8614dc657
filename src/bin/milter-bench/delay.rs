//! `milter-bench delay`: what greylisting costs good mail and what it stops, measured by replaying
//! simulated senders against a running milter with time scaled down.
//!
//! Three kinds of sender, each message a task of its own that sleeps until its (scaled) time:
//!
//! - **pool senders**: large providers (`--providers`, each with `--pool-size` outbound addresses
//!   in 198.18.P.0/24 and SPF-authorised by their domain `poolP.example.org`) whose every attempt,
//!   the first and each retry, comes from a random address of the pool, with a PTR name built
//!   from the address as Amazon SES-style pools have. They retry at [`POOL_RETRIES`].
//! - **single-IP MTAs** (`--mtas`): one address each in 203.0.113.0/24 with a stable PTR name and
//!   their own domain `corpM.example.com`, SPF-authorised; retrying on Postfix's default schedule
//!   ([`MTA_RETRIES`]).
//! - **bots**: a random address in 192.0.2.0/24 with a dynamic-looking PTR name and a forged
//!   sender (a pool domain that does not authorise it, or a random one); they never retry.
//!
//! A message is delivered when the milter lets it through end of message; a 4xx (or 421, or a
//! temp-fail) makes its sender retry on its schedule until `--give-up` simulated seconds after
//! its first attempt; a 5xx is final. Delays are measured on the clock (real time × the scale),
//! so they include what the milter itself took. The milter must run with
//! `grey-temp-fail-period` = `--period` real seconds and resolve the names above (bench/delay.sh
//! sets both up); its clock counts whole seconds, so a retry counts as "after the period" only
//! from the period plus one real second on.
//!
//! The report gives, per class: the share delivered, the share delivered no later than the first
//! retry after the period, the delay from the first attempt to delivery (p50/p90/max, simulated),
//! and the temp-fails per delivered message; for bots, the share that got through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use smtpf_milter::milter::codec::{Command, Response};
use smtpf_milter::report::quantile;
use tokio::task::JoinSet;

use crate::load::{greet, step, verdict_ok, ClientId, Tally};
use crate::target::{open, Target};

/// When a pool sender retries, in simulated seconds after its first attempt: 5, 15 and 30
/// minutes, then hourly, the pattern large providers show in greylisting logs.
pub const POOL_RETRIES: [f64; 8] = [300.0, 900.0, 1800.0, 3600.0, 7200.0, 10800.0, 14400.0, 18000.0];
/// When a single-IP MTA retries: Postfix's defaults (first retry after 300 s, the back-off
/// doubling up to 4000 s).
pub const MTA_RETRIES: [f64; 8] = [300.0, 900.0, 2100.0, 4500.0, 8500.0, 12500.0, 16500.0, 20500.0];

/// The kinds of sender, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Pool,
    Mta,
    Bot,
}

impl Class {
    const ALL: [Class; 3] = [Class::Pool, Class::Mta, Class::Bot];

    fn name(self) -> &'static str {
        match self {
            Class::Pool => "pool senders",
            Class::Mta => "single-IP MTAs",
            Class::Bot => "bots (never retry)",
        }
    }

    /// Retry offsets from the first attempt; bots have none.
    fn retries(self) -> &'static [f64] {
        match self {
            Class::Pool => &POOL_RETRIES,
            Class::Mta => &MTA_RETRIES,
            Class::Bot => &[],
        }
    }
}

/// The workload and the time scale (see the module doc).
#[derive(Clone, Debug)]
pub struct Model {
    /// Simulated seconds per real second.
    pub scale: f64,
    /// The milter's grey-temp-fail-period, in real seconds.
    pub period: f64,
    /// First attempts are spread over this many simulated seconds.
    pub window: f64,
    /// A sender gives up this many simulated seconds after its first attempt.
    pub give_up: f64,
    pub providers: u32,
    pub pool_size: u32,
    pub pool_messages: u32,
    pub mtas: u32,
    pub mta_messages: u32,
    pub bot_messages: u32,
    /// Local recipients the messages go to (user0..@example.net).
    pub recipients: u32,
    pub seed: u64,
}

/// A small deterministic generator (splitmix64), so a seed replays the same workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in 0..n (n > 0).
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n.max(1))) as u32
    }

    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One message of the workload.
#[derive(Clone, Debug)]
pub struct Message {
    pub class: Class,
    /// Which provider, MTA or bot address sends it.
    pub origin: u32,
    /// Simulated seconds from the start of the run to its first attempt.
    pub arrival: f64,
    /// Retry offsets (simulated seconds after the first attempt), jittered ±10 %.
    pub retries: Vec<f64>,
    pub sender: String,
    pub rcpt: String,
    /// Seeds the pool address of each attempt.
    pub seed: u64,
}

impl Model {
    /// Every message of the run, in arrival order.
    pub fn messages(&self) -> Vec<Message> {
        let mut rng = Rng(self.seed);
        let mut out = Vec::new();
        let counts = [(Class::Pool, self.pool_messages), (Class::Mta, self.mta_messages), (Class::Bot, self.bot_messages)];
        for (class, n) in counts {
            for i in 0..n {
                let arrival = rng.unit() * self.window;
                let rcpt = format!("user{}@example.net", rng.below(self.recipients));
                let (origin, sender) = match class {
                    Class::Pool => {
                        let p = rng.below(self.providers);
                        (p, format!("news@pool{p}.example.org"))
                    }
                    Class::Mta => {
                        let m = rng.below(self.mtas);
                        (m, format!("user{}@corp{m}.example.com", rng.below(5)))
                    }
                    Class::Bot => {
                        let forged = if rng.below(2) == 0 {
                            format!("pool{}.example.org", rng.below(self.providers))
                        } else {
                            format!("spam{}.example.net", rng.below(1000))
                        };
                        (1 + rng.below(254), format!("offer{i}x{}@{forged}", rng.below(1_000_000)))
                    }
                };
                let retries = class.retries().iter().map(|r| r * (0.9 + 0.2 * rng.unit())).collect();
                out.push(Message { class, origin, arrival, retries, sender, rcpt, seed: rng.next() });
            }
        }
        out.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
        out
    }

    /// The greylisting period in simulated seconds.
    pub fn period_simulated(&self) -> f64 {
        self.period * self.scale
    }

    /// The first retry offset a milter counting whole seconds certainly sees as past the period.
    fn past_period(&self) -> f64 {
        (self.period + 1.0) * self.scale
    }

    /// Who connects for attempt `n` of message `m`.
    pub fn client(&self, m: &Message, n: usize) -> ClientId {
        match m.class {
            Class::Pool => {
                let mut rng = Rng(m.seed ^ (n as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
                let host = 1 + rng.below(self.pool_size);
                let ip = format!("198.18.{}.{host}", m.origin);
                let name = format!("o-198-18-{}-{host}.out.pool{}.example.org", m.origin, m.origin);
                ClientId::new(name, format!("out.pool{}.example.org", m.origin), ip, 30000 + n as u16)
            }
            Class::Mta => {
                let name = format!("mail.corp{}.example.com", m.origin);
                ClientId::new(name.clone(), name, format!("203.0.113.{}", 1 + m.origin % 254), 31000 + n as u16)
            }
            Class::Bot => {
                let name = format!("dsl-192-0-2-{}.dyn.isp.example.net", m.origin);
                ClientId::new(name.clone(), name, format!("192.0.2.{}", m.origin), 32000)
            }
        }
    }
}

/// How one attempt ended.
#[derive(Debug, PartialEq)]
enum Verdict {
    Delivered,
    /// 4xx, 421, temp-fail: the sender retries.
    TempFail,
    /// 5xx, reject, discard: final.
    Refused,
}

/// The verdict a refusing reply means.
fn verdict(rs: &[Response]) -> Verdict {
    match rs.last() {
        Some(Response::Reject | Response::Discard) => Verdict::Refused,
        Some(Response::ReplyCode(text)) if text.starts_with('5') => Verdict::Refused,
        _ => Verdict::TempFail,
    }
}

/// One step of the conversation: the event slot it is timed in, the macro stage sent before it
/// (0: none) with its macros, and the command.
type Step = (usize, u8, Vec<(&'static str, String)>, Command);

/// One SMTP session for one attempt of message `i`: connect, HELO, MAIL, RCPT, DATA, a few
/// headers (the same Message-ID on every retry, as an MTA's queue keeps it), a short body, EOM.
async fn attempt(target: &Target, t: &mut Tally, client: &ClientId, m: &Message, i: usize) -> Result<Verdict, String> {
    let pid = std::sync::OnceLock::new();
    let mut c = open(target, &pid).await?;
    let refused = greet(&mut c, t, client).await?;
    if !refused.is_empty() {
        return Ok(verdict(&refused));
    }
    let qid = format!("D{i:08X}");
    let mid = format!("<delay-{i}-{}@{}>", m.seed, m.sender.rsplit('@').next().unwrap_or("x"));
    let io = |e: std::io::Error| e.to_string();
    let steps: Vec<Step> = vec![
        (
            2,
            b'M',
            vec![("i", qid.clone()), ("{mail_addr}", m.sender.clone())],
            Command::Mail { sender: format!("<{}>", m.sender), params: vec![] },
        ),
        (
            3,
            b'R',
            vec![("i", qid.clone()), ("{rcpt_addr}", m.rcpt.clone())],
            Command::Rcpt { recipient: format!("<{}>", m.rcpt), params: vec![] },
        ),
        (4, b'T', vec![("i", qid.clone())], Command::Data),
        (5, 0, vec![], Command::Header { name: "From".into(), value: format!("<{}>", m.sender) }),
        (5, 0, vec![], Command::Header { name: "To".into(), value: format!("<{}>", m.rcpt) }),
        (5, 0, vec![], Command::Header { name: "Subject".into(), value: format!("message {i}") }),
        (5, 0, vec![], Command::Header { name: "Message-ID".into(), value: mid.clone() }),
        (6, b'N', vec![("i", qid.clone())], Command::EndOfHeaders),
        (7, 0, vec![], Command::Body(format!("Message {i} of the delay benchmark.\r\n").into_bytes())),
        (8, b'E', vec![("i", qid.clone()), ("{msg_id}", mid.clone())], Command::EndOfMessage(Vec::new())),
    ];
    for (ev, stage, macros, cmd) in steps {
        if stage != 0 {
            let pairs: Vec<(&str, &str)> = macros.iter().map(|(k, v)| (*k, v.as_str())).collect();
            c.macros(stage, &pairs).await.map_err(io)?;
        }
        let rs = step(&mut c, t, ev, &cmd).await?;
        if !verdict_ok(&rs) {
            let _ = c.send(&Command::Quit).await;
            return Ok(verdict(&rs));
        }
    }
    let _ = c.send(&Command::Quit).await;
    Ok(Verdict::Delivered)
}

/// What happened to one message.
#[derive(Debug, Default)]
struct Fate {
    delivered: bool,
    /// Delivered no later than the first retry certainly past the period.
    by_first_retry: bool,
    refused: bool,
    /// Simulated seconds from the first attempt to delivery.
    delay: f64,
    temp_fails: u32,
    error: Option<String>,
}

/// Plays one message: its first attempt, then its retries until delivered, refused or given up.
async fn play(target: Target, model: Arc<Model>, m: Message, i: usize, start: Instant) -> Fate {
    let at = |offset: f64| start + Duration::from_secs_f64((m.arrival + offset) / model.scale);
    let mut fate = Fate::default();
    let mut t = Tally::new();
    let offsets = std::iter::once(0.0).chain(m.retries.iter().copied().filter(|&r| r <= model.give_up));
    let mut first_retry_past = true;
    for (n, offset) in offsets.enumerate() {
        tokio::time::sleep_until(at(offset).into()).await;
        let result = attempt(&target, &mut t, &model.client(&m, n), &m, i).await;
        let past = offset >= model.past_period();
        match result {
            Ok(Verdict::Delivered) => {
                fate.delivered = true;
                fate.by_first_retry = first_retry_past;
                fate.delay = at(0.0).elapsed().as_secs_f64() * model.scale;
                return fate;
            }
            Ok(Verdict::Refused) => {
                fate.refused = true;
                return fate;
            }
            Ok(Verdict::TempFail) => fate.temp_fails += 1,
            Err(e) => {
                fate.error = Some(e);
                return fate;
            }
        }
        if past {
            first_retry_past = false;
        }
    }
    fate
}

/// The figures of one class.
#[derive(Serialize, Debug, PartialEq)]
pub struct ClassReport {
    pub class: &'static str,
    pub messages: u32,
    pub delivered: u32,
    pub delivered_pct: f64,
    /// Delivered no later than the first retry after the period.
    pub by_first_retry_pct: f64,
    pub refused: u32,
    pub gave_up: u32,
    /// Simulated seconds, over the delivered messages.
    pub delay_p50: f64,
    pub delay_p90: f64,
    pub delay_max: f64,
    pub temp_fails_per_delivered: f64,
}

fn pct(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (1000.0 * f64::from(part) / f64::from(whole)).round() / 10.0
    }
}

fn summarise(class: Class, fates: &[&Fate]) -> ClassReport {
    let delivered: Vec<&&Fate> = fates.iter().filter(|f| f.delivered).collect();
    let mut delays: Vec<f64> = delivered.iter().map(|f| f.delay).collect();
    delays.sort_by(f64::total_cmp);
    let n = fates.len() as u32;
    let d = delivered.len() as u32;
    let by_first = delivered.iter().filter(|f| f.by_first_retry).count() as u32;
    let refused = fates.iter().filter(|f| f.refused).count() as u32;
    let errors = fates.iter().filter(|f| f.error.is_some()).count() as u32;
    let temp_fails: u32 = delivered.iter().map(|f| f.temp_fails).sum();
    ClassReport {
        class: class.name(),
        messages: n,
        delivered: d,
        delivered_pct: pct(d, n),
        by_first_retry_pct: pct(by_first, n),
        refused,
        gave_up: n - d - refused - errors,
        delay_p50: quantile(&delays, 0.5).round(),
        delay_p90: quantile(&delays, 0.9).round(),
        delay_max: delays.last().copied().unwrap_or(0.0).round(),
        temp_fails_per_delivered: if d == 0 { 0.0 } else { (100.0 * f64::from(temp_fails) / f64::from(d)).round() / 100.0 },
    }
}

/// The whole report.
#[derive(Serialize, Debug)]
pub struct DelayReport {
    pub label: String,
    pub time_scale: f64,
    pub period_simulated: f64,
    pub window: f64,
    pub give_up: f64,
    pub elapsed_real: f64,
    pub errors: u32,
    pub first_error: Option<String>,
    pub classes: Vec<ClassReport>,
}

/// `h:mm:ss` for a number of simulated seconds.
fn clock(secs: f64) -> String {
    smtpf_milter::report::clock(secs.round() as i64)
}

impl DelayReport {
    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = format!(
            "milter-bench delay: {}\ntime scale {} (1 real s = {} simulated s), greylisting period {} simulated, first attempts over {}, senders give up after {}; ran {:.1} s\n",
            self.label,
            self.time_scale,
            self.time_scale,
            clock(self.period_simulated),
            clock(self.window),
            clock(self.give_up),
            self.elapsed_real
        );
        out.push_str(&format!(
            "{:<20} {:>8} {:>10} {:>14} {:>8} {:>8} {:>9} {:>9} {:>9} {:>11}\n",
            "class", "messages", "delivered", "by 1st retry*", "refused", "gave up", "delay p50", "p90", "max", "4xx/deliv."
        ));
        for c in &self.classes {
            out.push_str(&format!(
                "{:<20} {:>8} {:>9.1}% {:>13.1}% {:>8} {:>8} {:>9} {:>9} {:>9} {:>11.2}\n",
                c.class,
                c.messages,
                c.delivered_pct,
                c.by_first_retry_pct,
                c.refused,
                c.gave_up,
                clock(c.delay_p50),
                clock(c.delay_p90),
                clock(c.delay_max),
                c.temp_fails_per_delivered
            ));
        }
        out.push_str("* delivered no later than the first retry after the greylisting period (delays in simulated h:mm:ss)\n");
        if self.errors > 0 {
            out.push_str(&format!("errors: {} (first: {})\n", self.errors, self.first_error.as_deref().unwrap_or("?")));
        }
        out
    }
}

/// Runs the whole workload against `target` and reports.
pub async fn run(target: Target, model: Model, label: String) -> DelayReport {
    let model = Arc::new(model);
    let messages = model.messages();
    let start = Instant::now() + Duration::from_millis(100);
    let mut set = JoinSet::new();
    for (i, m) in messages.iter().cloned().enumerate() {
        let (target, model) = (target.clone(), model.clone());
        set.spawn(async move { (i, play(target, model, m, i, start).await) });
    }
    let mut fates: Vec<Fate> = (0..messages.len()).map(|_| Fate::default()).collect();
    let mut errors = 0;
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((i, f)) => fates[i] = f,
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("task failed: {e}"));
            }
        }
    }
    for f in &fates {
        if let Some(e) = &f.error {
            errors += 1;
            first_error.get_or_insert(e.clone());
        }
    }
    let classes = Class::ALL
        .iter()
        .map(|&class| {
            let of: Vec<&Fate> = messages.iter().zip(&fates).filter(|(m, _)| m.class == class).map(|(_, f)| f).collect();
            summarise(class, &of)
        })
        .collect();
    DelayReport {
        label,
        time_scale: model.scale,
        period_simulated: model.period_simulated(),
        window: model.window,
        give_up: model.give_up,
        elapsed_real: start.elapsed().as_secs_f64(),
        errors,
        first_error,
        classes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        Model {
            scale: 60.0,
            period: 10.0,
            window: 1200.0,
            give_up: 7200.0,
            providers: 10,
            pool_size: 200,
            pool_messages: 300,
            mtas: 40,
            mta_messages: 200,
            bot_messages: 300,
            recipients: 100,
            seed: 7,
        }
    }

    #[test]
    fn the_workload_is_what_the_options_say_and_a_seed_replays_it() {
        let m = model();
        let msgs = m.messages();
        assert_eq!(msgs.len(), 800);
        assert_eq!(msgs.iter().filter(|x| x.class == Class::Pool).count(), 300);
        assert_eq!(msgs.iter().filter(|x| x.class == Class::Bot).count(), 300);
        assert!(msgs.windows(2).all(|w| w[0].arrival <= w[1].arrival), "in arrival order");
        assert!(msgs.iter().all(|x| (0.0..1200.0).contains(&x.arrival)));
        assert!(msgs.iter().filter(|x| x.class == Class::Bot).all(|x| x.retries.is_empty()), "bots never retry");
        for x in msgs.iter().filter(|x| x.class == Class::Mta) {
            for (r, base) in x.retries.iter().zip(MTA_RETRIES) {
                assert!((base * 0.9..=base * 1.1).contains(r), "{r} jitters around {base}");
            }
        }
        let again = m.messages();
        assert!(msgs.iter().zip(&again).all(|(a, b)| a.sender == b.sender && a.arrival == b.arrival));
        assert_ne!(Model { seed: 8, ..m }.messages()[0].sender, msgs[0].sender, "another seed, another workload");
    }

    #[test]
    fn pool_retries_come_from_other_addresses_of_the_pool() {
        let m = model();
        let msg = m.messages().into_iter().find(|x| x.class == Class::Pool).unwrap();
        let addresses: std::collections::BTreeSet<String> = (0..8).map(|n| format!("{:?}", m.client(&msg, n))).collect();
        assert!(addresses.len() >= 6, "{addresses:?}");
        let first = format!("{:?}", m.client(&msg, 0));
        assert!(first.contains(&format!("198.18.{}.", msg.origin)), "{first}");
        let mta = m.messages().into_iter().find(|x| x.class == Class::Mta).unwrap();
        assert_eq!(
            format!("{:?}", m.client(&mta, 0)).replace("31000", "x"),
            format!("{:?}", m.client(&mta, 3)).replace("31003", "x")
        );
    }

    #[test]
    fn verdicts_and_figures() {
        assert_eq!(verdict(&[Response::ReplyCode("451 4.7.0 try again later".into())]), Verdict::TempFail);
        assert_eq!(verdict(&[Response::ReplyCode("421 4.7.0 closing".into())]), Verdict::TempFail);
        assert_eq!(verdict(&[Response::TempFail]), Verdict::TempFail);
        assert_eq!(verdict(&[Response::Shutdown]), Verdict::TempFail);
        assert_eq!(verdict(&[Response::ReplyCode("550 5.7.1 no".into())]), Verdict::Refused);
        assert_eq!(verdict(&[Response::Reject]), Verdict::Refused);
        assert_eq!(verdict(&[Response::Discard]), Verdict::Refused);

        let sorted: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&sorted, 0.5), 5.0);
        assert_eq!(quantile(&sorted, 0.9), 9.0);
        assert_eq!(quantile(&sorted, 1.0), 10.0);
        assert_eq!(quantile::<f64>(&[], 0.5), 0.0);
        assert_eq!(clock(3725.0), "1:02:05");

        let fates = [
            Fate { delivered: true, by_first_retry: true, delay: 0.0, ..Fate::default() },
            Fate { delivered: true, by_first_retry: true, delay: 900.0, temp_fails: 2, ..Fate::default() },
            Fate { delivered: true, delay: 3600.0, temp_fails: 4, ..Fate::default() },
            Fate { refused: true, ..Fate::default() },
            Fate { temp_fails: 6, ..Fate::default() },
        ];
        let r = summarise(Class::Pool, &fates.iter().collect::<Vec<_>>());
        assert_eq!((r.messages, r.delivered, r.refused, r.gave_up), (5, 3, 1, 1));
        assert_eq!((r.delivered_pct, r.by_first_retry_pct), (60.0, 40.0));
        assert_eq!((r.delay_p50, r.delay_p90, r.delay_max), (900.0, 3600.0, 3600.0));
        assert_eq!(r.temp_fails_per_delivered, 2.0);
    }
}

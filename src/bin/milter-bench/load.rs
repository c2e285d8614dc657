//! Load generation: the plan every worker reads (how many messages, which are new tuples, the
//! pacing), the clients and senders it makes up, the workers that claim messages and run each
//! as a full transaction on a reused or a one-shot connection, the warm-up, and the [`Tally`] of
//! latencies, verdicts and errors each of them keeps.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use smtpf_milter::milter::client::{ClientError, POSTFIX_ACTIONS, POSTFIX_PROTOCOL};
use smtpf_milter::milter::codec::{Command, Family, Response};

use crate::target::{open, Client, Target};

/// Events whose reply latency is measured.
pub const EVENTS: [&str; 9] = ["connect", "helo", "mail", "rcpt", "data", "header", "eoh", "body", "eom"];
/// The slot after the events: whole transactions, MAIL to the EOM verdict.
pub const TRANSACTION: usize = EVENTS.len();
/// Latencies are recorded in µs, 3 significant digits, up to this value (longer ones saturate).
const LAT_MAX_US: u64 = 120_000_000;

/// An empty latency histogram (µs), the bounds every figure of the bench uses.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LAT_MAX_US, 3).expect("valid histogram bounds")
}

/// What one worker saw.
pub struct Tally {
    /// Latencies in microseconds per event, and for whole transactions (MAIL to EOM verdict);
    /// allocated on first use (about 140 KB each, and most events never get a reply).
    pub lat: Vec<Option<Histogram<u64>>>,
    /// Replies received (negotiation included).
    pub responses: u64,
    /// Messages that got a verdict (accepted, refused, or refused already at connect or HELO).
    pub transactions: u64,
    /// Transactions accepted at end of message.
    pub accepted: u64,
    /// Transactions refused (reject or temp-fail) at any step.
    pub refused: u64,
    /// Refusals per step name, in the order the steps first refused.
    pub refused_at: Vec<(String, u64)>,
    /// Protocol and I/O errors: any of them fails the run.
    pub errors: u64,
    /// The first error's text, to say what went wrong.
    pub first_error: Option<String>,
    /// Milter connections opened.
    pub connections: u64,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
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

    /// Counts an error, keeping the first one's text.
    pub fn error(&mut self, e: String) {
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

    /// Adds another worker's tally to this one.
    pub fn merge(&mut self, o: Tally) {
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
pub const MAX_RCPTS: u64 = 3;

/// One SMTP client as the MTA presents it to the milter.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientId {
    /// The verified PTR name the MTA reports.
    pub host: String,
    /// The HELO name it gives.
    pub helo: String,
    pub ip: String,
    pub port: u16,
}

impl ClientId {
    /// A client as the MTA presents it: verified PTR name, HELO name, address and source port.
    pub fn new(host: String, helo: String, ip: String, port: u16) -> ClientId {
        ClientId { host, helo, ip, port }
    }
}

/// Known client number `k` (taken modulo the pool size).
pub fn pool_client(k: u64) -> ClientId {
    let k = k % CLIENT_POOL;
    let ip = if k < 100 { format!("198.51.100.{}", k + 1) } else { format!("203.0.113.{}", k - 99) };
    let host = format!("mail{k}.client{}.example.org", k % 10);
    ClientId { helo: host.clone(), host, ip, port: 40000 + k as u16 }
}

/// The known client of a worker's `n`-th connection.
pub fn pool_client_for(worker: usize, n: u64) -> ClientId {
    pool_client(worker as u64 * 7919 + n)
}

/// A client host never seen before: the second label of its PTR name (what greylisting keys on)
/// is unique to this run and message. By default it connects from a known pool address with that
/// address's HELO name, so the milter's DNS questions (lists, SPF) are answered from its cache, as
/// the speed targets specify; with `fresh_address` its address is unique too (in 198.18.0.0/15)
/// and so is its HELO name, and every new host costs real DNS lookups, as on the Internet.
pub fn fresh_client(run_id: &str, seed: u64, i: u64, fresh_address: bool) -> ClientId {
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
pub fn known_sender(i: u64) -> String {
    format!("user{}@pool{}.example.com", i % 4, i % 2)
}

/// Every sender [`known_sender`] produces (it repeats every 4 messages).
pub fn known_senders() -> Vec<String> {
    let set: BTreeSet<String> = (0..4).map(known_sender).collect();
    set.into_iter().collect()
}

/// The sender of new-tuple message `i`.
pub fn new_sender(run_id: &str, i: u64) -> String {
    format!("new-{run_id}-{i}@sender{}.example.org", i % 97)
}

/// How many recipients message `i` has (rcpt0.., 1 to MAX_RCPTS).
pub fn rcpt_count(i: u64) -> u64 {
    1 + i % MAX_RCPTS
}

/// Known clients to warm up: the first pool client of each distinct PTR domain (greylisting
/// keys on the domain, so one host per domain covers them all).
pub fn warm_up_clients() -> Vec<ClientId> {
    let mut seen = BTreeSet::new();
    (0..CLIENT_POOL).map(pool_client).filter(|c| seen.insert(c.host.split_once('.').map(|(_, d)| d.to_string()))).collect()
}

/// Exactly a `share` of message numbers, spread evenly.
pub fn is_new(share: f64, i: u64) -> bool {
    ((i + 1) as f64 * share).floor() > (i as f64 * share).floor()
}

/// When message `i` may start, after the run's start, at `rate` messages per second.
fn due_offset(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// Shared, read-only run parameters.
pub struct Plan {
    /// Messages to run in total (`--messages`).
    pub messages: u64,
    /// Share of messages from never-seen hosts (`--new-tuples`).
    pub new_tuples: f64,
    /// Known-tuple transactions per connection (`--per-connection`).
    pub per_connection: u32,
    /// No message starts after this (`--duration-limit`).
    pub deadline: Option<Instant>,
    /// The run's start, which `--rate` paces from.
    pub start: Instant,
    /// `--rate`, for open-loop pacing.
    pub rate: Option<f64>,
    /// Unique to this run: keeps its new hosts, senders and Message-IDs apart from earlier runs'.
    pub run_id: String,
    /// Spreads new hosts over the pool's (or the fresh) addresses.
    pub seed: u64,
    /// `--fresh-addresses`.
    pub fresh_addresses: bool,
    /// The 4 KiB body every message sends.
    pub body: Vec<u8>,
    /// The next message number to claim.
    pub next: AtomicU64,
    /// The milter's pid, learnt from the first unix connection.
    pub peer_pid: OnceLock<i32>,
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
pub fn verdict_ok(rs: &[Response]) -> bool {
    rs.last().is_none_or(|r| matches!(r, Response::Continue | Response::Accept | Response::Skip))
}

fn closes(rs: &[Response]) -> bool {
    rs.iter().any(|r| {
        matches!(r, Response::Shutdown | Response::ConnFail) || matches!(r, Response::ReplyCode(s) if s.starts_with("421"))
    })
}

/// Sends one command, times the reply, and returns the responses.
pub async fn step(c: &mut Client, t: &mut Tally, ev: usize, cmd: &Command) -> Result<Vec<Response>, String> {
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
pub async fn hello(c: &mut Client, t: &mut Tally, client: &ClientId) -> Result<bool, String> {
    Ok(greet(c, t, client).await?.is_empty())
}

/// [`hello`], returning the milter's refusing replies (empty when it let the client go on), for
/// callers that tell a temp-fail from a reject.
pub async fn greet(c: &mut Client, t: &mut Tally, client: &ClientId) -> Result<Vec<Response>, String> {
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
    let rs = step(c, t, 0, &connect).await?;
    if !verdict_ok(&rs) {
        t.refused("connect");
        return Ok(rs);
    }
    let rs = step(c, t, 1, &Command::Helo { name: client.helo.clone() }).await?;
    if !verdict_ok(&rs) {
        t.refused("helo");
        return Ok(rs);
    }
    Ok(Vec::new())
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
pub async fn worker(target: Target, plan: Arc<Plan>, id: usize) -> Tally {
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
pub async fn warm_up(target: &Target, plan: &Arc<Plan>) -> Tally {
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

#[cfg(test)]
mod tests {
    use super::*;
    use smtpf_milter::checks::greykey::domain_suffix;

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
}

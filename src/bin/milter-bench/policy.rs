//! `milter-bench policy`: drives a Postfix policy-service socket (smtpf-milter's `policy-socket`,
//! postgrey, any `check_policy_service` server) as Postfix's smtpd does, and reports requests per
//! second and the answer latency.
//!
//! Postfix keeps one policy connection per smtpd process and asks once per recipient at RCPT,
//! each request carrying the whole envelope. Each of `--connections` workers is such a process:
//! one connection, reused for every message it claims. The messages are the load run's: known
//! tuples from the pool of 200 client hosts and 4 senders, and a `--new-tuples` share from never
//! seen hosts and senders, with 1 to 3 recipients each (one request per recipient, one
//! `instance` per message). `DUNNO`, `OK` or `PREPEND ...` lets the recipient through; a 4xx/5xx
//! code, `REJECT` or `DEFER...` refuses it. `--warm-up` first asks once for every known tuple.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use smtpf_milter::postfix_policy::read_request;
use tokio::io::{AsyncWriteExt, BufReader};

use crate::load::{
    fresh_client, histogram, is_new, known_sender, known_senders, new_sender, pool_client_for, rcpt_count, warm_up_clients,
    ClientId, MAX_RCPTS,
};
use crate::target::{connect, Stream, Target};

/// Longest wait for one answer before it counts as an error.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the run asks for.
pub struct PolicyPlan {
    pub messages: u64,
    pub new_tuples: f64,
    pub run_id: String,
    pub seed: u64,
    pub next: AtomicU64,
}

/// One policy connection, as Postfix's smtpd holds it.
struct Conn {
    r: BufReader<tokio::io::ReadHalf<Box<dyn Stream>>>,
    w: tokio::io::WriteHalf<Box<dyn Stream>>,
}

impl Conn {
    async fn open(target: &Target) -> Result<Conn, String> {
        let (r, w) = tokio::io::split(connect(target, &OnceLock::new()).await?);
        Ok(Conn { r: BufReader::new(r), w })
    }

    /// One request and its action.
    async fn ask(&mut self, request: &str) -> Result<String, String> {
        self.w.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, read_request(&mut self.r))
            .await
            .map_err(|_| format!("no answer within {}s", ANSWER_TIMEOUT.as_secs()))?
            .map_err(|e| format!("answer: {e}"))?;
        answer.get("action").map(str::to_string).ok_or_else(|| format!("an answer without action=: {:?}", answer.attributes))
    }
}

/// The request Postfix 3.x sends at RCPT for this client, envelope and instance.
pub fn rcpt_request(client: &ClientId, sender: &str, recipient: &str, instance: &str) -> String {
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address={ip}\nclient_name={host}\n\
         client_port={port}\nreverse_client_name={host}\nserver_address=192.0.2.25\nserver_port=25\nhelo_name={helo}\n\
         sender={sender}\nrecipient={recipient}\nrecipient_count=0\nqueue_id=\ninstance={instance}\nsize=4600\n\
         etrn_domain=\nstress=\nsasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\n\
         ccert_fingerprint=\nencryption_protocol=\nencryption_cipher=\nencryption_keysize=0\npolicy_context=\n\
         compatibility_level=3.6\nmail_version=3.7.11\n\n",
        ip = client.ip,
        host = client.host,
        port = client.port,
        helo = client.helo,
    )
}

/// Whether an action lets the recipient through (anything but a reply code or REJECT/DEFER).
pub fn lets_through(action: &str) -> bool {
    let word = action.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
    !(word.starts_with('4') || word.starts_with('5') || matches!(word.as_str(), "REJECT" | "DEFER" | "DEFER_IF_PERMIT"))
}

/// What one worker saw.
pub struct PolicyTally {
    pub lat: Histogram<u64>,
    /// Messages whose every recipient got an answer.
    pub messages: u64,
    pub requests: u64,
    pub passed: u64,
    pub refused: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl PolicyTally {
    fn new() -> PolicyTally {
        PolicyTally { lat: histogram(), messages: 0, requests: 0, passed: 0, refused: 0, errors: 0, first_error: None }
    }

    /// Counts an error, keeping the first one's text.
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn merge(&mut self, o: PolicyTally) {
        let _ = self.lat.add(&o.lat);
        self.messages += o.messages;
        self.requests += o.requests;
        self.passed += o.passed;
        self.refused += o.refused;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

/// Asks about every recipient of one message; Err ends the connection.
async fn message(
    conn: &mut Conn,
    t: &mut PolicyTally,
    client: &ClientId,
    sender: &str,
    rcpts: u64,
    instance: &str,
) -> Result<(), String> {
    for r in 0..rcpts {
        let request = rcpt_request(client, sender, &format!("rcpt{r}@example.net"), instance);
        let start = Instant::now();
        let action = conn.ask(&request).await?;
        t.lat.saturating_record((start.elapsed().as_micros() as u64).max(1));
        t.requests += 1;
        if lets_through(&action) {
            t.passed += 1;
        } else {
            t.refused += 1;
        }
    }
    t.messages += 1;
    Ok(())
}

/// One smtpd process: one connection, messages until the plan is done.
async fn worker(target: Target, plan: Arc<PolicyPlan>, id: usize) -> PolicyTally {
    let mut t = PolicyTally::new();
    let mut conn: Option<Conn> = None;
    let mut n = 0u64;
    loop {
        let i = plan.next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.messages {
            break;
        }
        let (client, sender) = if is_new(plan.new_tuples, i) {
            (fresh_client(&plan.run_id, plan.seed, i, false), new_sender(&plan.run_id, i))
        } else {
            n += 1;
            (pool_client_for(id, n), known_sender(i))
        };
        let mut c = match conn.take() {
            Some(c) => c,
            None => match Conn::open(&target).await {
                Ok(c) => c,
                Err(e) => {
                    t.error(e);
                    continue;
                }
            },
        };
        let instance = format!("{}.{i}", plan.run_id);
        match message(&mut c, &mut t, &client, &sender, rcpt_count(i), &instance).await {
            Ok(()) => conn = Some(c),
            Err(e) => t.error(e),
        }
    }
    t
}

/// Every known tuple once (each PTR domain × each known sender × every recipient), not counted.
pub async fn warm_up(target: &Target, run_id: &str) -> Result<(), String> {
    let mut conn = Conn::open(target).await?;
    let mut t = PolicyTally::new();
    let mut j = 0u64;
    for client in warm_up_clients() {
        for sender in known_senders() {
            message(&mut conn, &mut t, &client, &sender, MAX_RCPTS, &format!("{run_id}.w{j}")).await?;
            j += 1;
        }
    }
    Ok(())
}

/// The run's figures.
#[derive(Serialize)]
pub struct PolicyReport {
    pub label: String,
    pub connections: usize,
    pub messages: u64,
    pub new_tuples: f64,
    pub elapsed_s: f64,
    pub requests: u64,
    pub requests_per_s: f64,
    pub messages_per_s: f64,
    pub passed: u64,
    pub refused: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Answer latency in microseconds.
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl PolicyReport {
    /// The report as text.
    pub fn text(&self) -> String {
        let mut out = format!(
            "policy service {}: {} connections, {} messages ({:.0} % new tuples), {} requests in {:.2} s\n",
            self.label,
            self.connections,
            self.messages,
            self.new_tuples * 100.0,
            self.requests,
            self.elapsed_s
        );
        out += &format!("  {:.0} requests/s, {:.0} messages/s\n", self.requests_per_s, self.messages_per_s);
        out += &format!(
            "  answer latency: p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, max {} us\n",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
        );
        out += &format!("  recipients let through {}, refused {}, errors {}\n", self.passed, self.refused, self.errors);
        if let Some(e) = &self.first_error {
            out += &format!("  first error: {e}\n");
        }
        out
    }
}

/// Runs the load and gathers the report.
pub async fn run(target: Target, connections: usize, plan: PolicyPlan, label: String) -> PolicyReport {
    let (messages, new_tuples) = (plan.messages, plan.new_tuples);
    let plan = Arc::new(plan);
    let start = Instant::now();
    let handles: Vec<_> = (0..connections).map(|id| tokio::spawn(worker(target.clone(), plan.clone(), id))).collect();
    let mut total = PolicyTally::new();
    for h in handles {
        match h.await {
            Ok(t) => total.merge(t),
            Err(e) => total.error(format!("worker failed: {e}")),
        }
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    let q = |p: f64| if total.requests > 0 { total.lat.value_at_quantile(p) } else { 0 };
    PolicyReport {
        label,
        connections,
        messages,
        new_tuples,
        elapsed_s: elapsed,
        requests: total.requests,
        requests_per_s: (total.requests as f64 / elapsed * 10.0).round() / 10.0,
        messages_per_s: (total.messages as f64 / elapsed * 10.0).round() / 10.0,
        passed: total.passed,
        refused: total.refused,
        errors: total.errors,
        first_error: total.first_error,
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: if total.requests > 0 { total.lat.max() } else { 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_that_let_a_recipient_through() {
        for a in ["DUNNO", "PREPEND X-Grey-Report: age=1", "OK", "dunno"] {
            assert!(lets_through(a), "{a}");
        }
        for a in ["451 4.7.0 try again later #552 x", "550 5.7.1 no", "DEFER_IF_PERMIT Greylisted", "REJECT", "defer x"] {
            assert!(!lets_through(a), "{a}");
        }
    }

    #[test]
    fn requests_read_back_as_the_daemon_reads_them() {
        let client =
            ClientId { host: "mail.example.org".into(), helo: "mail.example.org".into(), ip: "192.0.2.1".into(), port: 4 };
        let text = rcpt_request(&client, "a@example.org", "b@example.net", "i1");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let req = rt.block_on(async { read_request(&mut text.as_bytes()).await }).unwrap();
        assert_eq!(req.get("client_address"), Some("192.0.2.1"));
        assert_eq!(req.get("recipient"), Some("b@example.net"));
        assert_eq!(req.get("instance"), Some("i1"));
        assert_eq!(req.get("protocol_state"), Some("RCPT"));
    }
}

//! One milter connection = one SMTP session: the state machine from CONNECT to close.
//!
//! The session turns milter commands into SMTP stages, keeps what smtpf keeps about a client and a
//! transaction, asks the checks for a verdict at each stage, and writes smtpf's summary lines
//! (#637 start, #717 sender, #718 recipient, #719 data, #720 message, #721 end). It distrusts its
//! peer: commands out of order are protocol errors that end this connection only, ABORT is legal in
//! any state (Postfix sends it after every transaction and before a repeated HELO), and nothing a
//! peer sends can grow memory without bound.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::address::{bare_address, parse_client_address};
use crate::checks::access::{Hit, Tag};
use crate::checks::digest::BodyDigest;
use crate::checks::greycontent::content_hash;
use crate::checks::greykey::{Deferred, GreyPass};
use crate::checks::ptrshape::ip_in_name;
use crate::checks::spf::{check_helo, check_mail, SpfResult};
use crate::config::Config;
use crate::flags::{self, client_words, ClientFlags, MailFlags, MessageFlags, RcptFlags};
use crate::ids::{random_message_start, LocalTime, SessionId};
use crate::log::catalog;
use crate::log::Msg;
use crate::milter::codec::{Command, Family, Response};
use crate::milter::negotiate::{negotiate, Negotiated};
use crate::policy::Policy;
use crate::reply::{HeaderChange, Reply, Verdict};
use crate::shared::Shared;
use crate::text::bounded;

/// What the connection loop must do after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these responses (in order).
    Respond(Vec<Response>),
    /// Send nothing (macro, abort, or a step we promised not to answer).
    Silent,
    /// Close the connection (QUIT).
    Close,
}

/// The SMTP client as the MTA describes it.
#[derive(Clone, Debug, Default)]
pub struct Client {
    /// Verified host name, if the MTA has one (not `[ip]` / `unknown`).
    pub name: Option<String>,
    /// The PTR name even when not forward-confirmed (Postfix `{client_ptr}`), for `p=`.
    pub ptr: Option<String>,
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub family: Option<Family>,
}

impl Client {
    /// `name [ip]:port`, or `[ip]:port` without a verified name, as smtpf's CLIENT_FORMAT.
    pub fn describe(&self) -> String {
        let ip = self.ip.map(|i| i.to_string()).unwrap_or_default();
        match &self.name {
            Some(n) => format!("{n} [{ip}]:{}", self.port),
            None => format!("[{ip}]:{}", self.port),
        }
    }
}

/// Whether the MTA's host name means "no verified PTR".
fn is_unverified_name(name: &str) -> bool {
    let n = name.trim();
    n.is_empty() || n.starts_with('[') || n.eq_ignore_ascii_case("unknown")
}

/// Macros the MTA sent, by stage; a new `D` for a stage replaces that stage's values (libmilter's
/// rule), which also bounds memory.
#[derive(Default, Debug)]
pub struct Macros {
    by_stage: Vec<(u8, Vec<(String, String)>)>,
}

/// Command letters a `D` command may name (CONNECT, HELO, MAIL, RCPT, DATA, header, EOH, body,
/// end of message, unknown command).
const KNOWN_STAGES: &[u8] = b"CHMRTLNBEU";

/// Stages whose macros belong to a transaction and are dropped at ABORT / new MAIL.
const TRANSACTION_STAGES: &[u8] = b"MRTLNBE";

/// Most macros kept per stage: the MTA sends the dozen we ask for (Sendmail perhaps a few more).
const MAX_MACROS_PER_STAGE: usize = 64;

/// Most bytes of macro names and values kept per stage; the rest of a `D` command is ignored. A
/// frame may carry 64 KiB of pairs: kept whole for every stage, a flood of them would cost
/// megabytes per connection.
const MAX_MACRO_BYTES_PER_STAGE: usize = 8 * 1024;

/// `{client_ptr}` → `client_ptr`, in place (no allocation per macro).
fn unbraced(mut name: String) -> String {
    while name.ends_with('}') {
        name.pop();
    }
    let lead = name.len() - name.trim_start_matches('{').len();
    name.drain(..lead);
    name
}

impl Macros {
    /// Stores the macros of one `D` command. Only stages named by a command letter are kept, so
    /// a peer cannot pile up 256 stages of 64 KiB each.
    pub fn set(&mut self, stage: u8, pairs: Vec<(String, String)>) {
        if !KNOWN_STAGES.contains(&stage) {
            return;
        }
        let mut budget = MAX_MACRO_BYTES_PER_STAGE;
        let mut pairs: Vec<(String, String)> = pairs
            .into_iter()
            .take(MAX_MACROS_PER_STAGE)
            .map_while(|(n, v)| {
                budget = budget.checked_sub(n.len() + v.len())?;
                Some((unbraced(n), v))
            })
            .collect();
        // `collect` reuses the decoded vector in place (no allocation for the usual dozen
        // pairs), which would keep room for every pair a flooding frame had: 1.5 MiB for 64 KiB
        // of empty pairs. Give that room back.
        if pairs.capacity() > MAX_MACROS_PER_STAGE {
            pairs.shrink_to_fit();
        }
        match self.by_stage.iter_mut().find(|(s, _)| *s == stage) {
            Some(slot) => slot.1 = pairs,
            None => self.by_stage.push((stage, pairs)),
        }
    }

    /// A macro's value (name with or without braces), latest stage first.
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = name.trim_start_matches('{').trim_end_matches('}');
        self.by_stage.iter().rev().flat_map(|(_, p)| p.iter()).find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Forgets transaction macros.
    pub fn reset_transaction(&mut self) {
        self.by_stage.retain(|(s, _)| !TRANSACTION_STAGES.contains(s));
    }
}

/// Recipients kept per transaction; more are counted, not stored (Postfix's default limit is 1000).
const MAX_KEPT_RECIPIENTS: usize = 10_000;

/// One MAIL transaction.
#[derive(Debug, Default)]
pub struct Transaction {
    pub tid: String,
    /// The sender as the MTA wrote it (`<a@b>` or `<>`).
    pub sender: String,
    pub mail_flags: MailFlags,
    pub rcpt_flags: RcptFlags,
    pub msg_flags: MessageFlags,
    pub recipients: Vec<String>,
    pub rcpt_accepted: u32,
    pub rcpt_rejected: u32,
    pub message_id: Option<String>,
    /// Header and body bytes, as they would be on the wire.
    pub bytes: u64,
    pub queue_id: Option<String>,
    /// Headers and body kept for content checks (URI lists), up to [`CONTENT_LIMIT`]; None when
    /// no content check needs them.
    pub content: Option<Vec<u8>>,
    /// Running digest of the body for duplicate detection (None when dupmsg is off).
    pub body_digest: Option<BodyDigest>,
    /// How many headers named like our greylisting report header the message already has.
    pub report_headers_seen: u32,
}

/// Most message bytes kept for content checks; URIs beyond this are not looked at.
pub const CONTENT_LIMIT: usize = 1024 * 1024;

/// A milter session.
pub struct Session {
    shared: Arc<Shared>,
    policy: Arc<Policy>,
    /// The store in force when the session started, like the policy: taken once per connection,
    /// so checks do not take the shared lock at every call (a reopened file serves new sessions).
    store: Option<crate::store::Store>,
    pub sid: SessionId,
    negotiated: Option<Negotiated>,
    pub client: Option<Client>,
    pub client_flags: ClientFlags,
    pub helo: String,
    pub macros: Macros,
    pub tx: Option<Transaction>,
    /// A refusal held until RCPT (`smtp-delay-checks`), and whether it lasts the whole session.
    pub delayed: Option<(Reply, bool)>,
    /// SPF results for the MAIL FROM and HELO identities of the current transaction.
    pub spf_mail: Option<SpfResult>,
    pub spf_helo: Option<SpfResult>,
    /// The HELO name's SPF result, kept for the connection: the client and its HELO name do not
    /// change between its messages, so the evaluation is not repeated at every MAIL.
    helo_spf: Option<(String, SpfResult)>,
    /// Set when greylisting let this message pass for the first time (report header at EOM).
    pub grey_pass: Option<GreyPass>,
    /// grey-content: the key whose decision waits for the end of the message.
    pub grey_deferred: Option<Deferred>,
    msg_counter: u16,
    mails: u32,
    passed: u32,
    rejects: u32,
    bytes: u64,
    last_refusal: String,
    started: Instant,
    ended: bool,
    trace: bool,
    /// Whether the client's PTR names were looked up for `ptr_multidomain` (once per session).
    pub(crate) ptr_checked: bool,
    /// Recipient domains whose MX hosts were already compared with the client (`2nd_mx`), so
    /// that the next messages of the connection do not ask again.
    pub(crate) mx_domains_checked: Vec<String>,
    /// Which front door the MTA came through.
    pub door: Door,
}

/// The two ways an MTA reaches the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// A milter connection: every SMTP step and the message itself; greylisting at DATA.
    Milter,
    /// Postfix's policy delegation: the envelope only, so no content checks, and greylisting
    /// per recipient at RCPT, where Postfix asks.
    Policy,
}

/// What one command came to: a verdict to answer, or a step that is no check's business
/// (negotiation, macros, abort, quit).
enum Outcome {
    Answer(Verdict),
    Done(Step),
}

/// Whether a refusal may be held until RCPT under `smtp-delay-checks` (smtpf's DELAY flag), and
/// for how long it stays held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delay {
    /// Always answered at once.
    Never,
    /// Held for the whole session (client and HELO verdicts).
    Session,
    /// Held for this transaction only (sender verdicts).
    Transaction,
}

/// A store call's result as a debug line shows it.
pub(crate) struct Shown<'a, T, E>(pub &'a Result<T, E>);

impl<T: std::fmt::Debug, E: std::fmt::Display> std::fmt::Display for Shown<'_, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Ok(v) => write!(f, "{v:?}"),
            Err(e) => write!(f, "error: {e}"),
        }
    }
}

/// Why a command was refused as a protocol error.
pub type ProtocolError = String;

impl Session {
    /// A new session on a fresh milter connection.
    pub fn new(shared: Arc<Shared>) -> Session {
        let policy = shared.policy();
        let store = shared.store();
        let sid = SessionId::next(&LocalTime::now());
        let trace = shared.log.verbose().has("milter");
        shared.metrics.connection_opened();
        Session {
            shared,
            policy,
            store,
            msg_counter: random_message_start(crate::ids::unix_now() as u64 ^ sid_hash(&sid)),
            sid,
            negotiated: None,
            client: None,
            client_flags: ClientFlags::default(),
            helo: String::new(),
            macros: Macros::default(),
            tx: None,
            delayed: None,
            spf_mail: None,
            spf_helo: None,
            helo_spf: None,
            grey_pass: None,
            grey_deferred: None,
            mails: 0,
            passed: 0,
            rejects: 0,
            bytes: 0,
            last_refusal: String::new(),
            started: Instant::now(),
            ended: false,
            trace,
            ptr_checked: false,
            mx_domains_checked: Vec::new(),
            door: Door::Milter,
        }
    }

    /// A session driven by the policy door: no option negotiation (every step may be answered,
    /// through [`Session::decide`]) and no message, hence no content checks.
    pub fn for_policy_door(shared: Arc<Shared>) -> Session {
        let mut session = Session::new(shared);
        session.negotiated = Some(Negotiated {
            version: crate::milter::negotiate::VERSION,
            actions: 0,
            protocol: 0,
            mta_version: 0,
            mta_actions: 0,
            mta_protocol: 0,
        });
        session.door = Door::Policy;
        session
    }

    /// The config this session runs under.
    pub fn config(&self) -> &Config {
        &self.policy.config
    }

    /// The policy this session runs under.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The state store (greylist and dupmsg records), when open.
    pub fn store(&self) -> Option<&crate::store::Store> {
        self.store.as_ref()
    }

    /// The daemon's counters.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.shared.metrics
    }

    /// The current time in Unix seconds (the daemon's clock, which tests can move).
    pub fn now(&self) -> i64 {
        self.shared.now()
    }

    /// Writes a numbered line of this session.
    pub fn emit(&self, msg: &Msg, args: &[&dyn std::fmt::Display]) {
        self.shared.log.emit(msg, Some(&self.sid), args);
    }

    /// Whether a debug line would be written, so that its arguments are only built when wanted.
    pub fn debugging(&self, msg: &Msg) -> bool {
        self.shared.log.enabled(msg)
    }

    /// With the verbose word `access`: one access-map lookup and what it found (#2054).
    pub(crate) fn debug_access(&self, tag: Tag, subject: &str, hit: Option<&Hit>) {
        if !self.debugging(&catalog::DEBUG_ACCESS) {
            return;
        }
        let found = match hit {
            Some(h) => format!("found {} {:?}", h.key, h.action),
            None => "no entry".to_string(),
        };
        self.emit(&catalog::DEBUG_ACCESS, &[&tag.label(), &subject, &found]);
    }

    /// With the verbose word `cache`: one store call and its result (#2063).
    pub(crate) fn debug_cache(&self, op: &str, key: &str, result: &dyn std::fmt::Display) {
        if self.debugging(&catalog::DEBUG_CACHE) {
            self.emit(&catalog::DEBUG_CACHE, &[&op, &key, result]);
        }
    }

    /// Logs a failed store call (#542/#544/#546) with the error as its last field, unless it
    /// repeats an outage already logged: a shared store that is down costs one line per outage,
    /// not one per message.
    /// Other errors are rate-limited too: at most one line a second, and the next line logged
    /// is preceded by the count of those that were not (#2043), so an overloaded store under a
    /// spam run costs a few lines, not thousands.
    pub fn store_error(&self, msg: &Msg, args: &[&dyn std::fmt::Display], e: &crate::store::StoreError) {
        if e.already_logged() {
            return;
        }
        let Some(suppressed) = self.shared.store_error_gate() else { return };
        if let Some((count, seconds)) = suppressed {
            self.emit(&catalog::STORE_ERRORS_SUPPRESSED, &[&count, &seconds]);
        }
        let mut all = args.to_vec();
        all.push(e);
        self.emit(msg, &all);
    }

    /// Refuses now, or holds the refusal until RCPT when `smtp-delay-checks` is on and smtpf
    /// allows it for this kind of verdict (only the first held refusal is kept, as in smtpf).
    pub fn refuse(&mut self, reply: Reply, delay: Delay) -> Verdict {
        if delay == Delay::Never || !self.policy.config.smtp_delay_checks {
            return Verdict::Reply(reply);
        }
        if self.delayed.is_none() {
            self.emit(&catalog::DELAYED, &[&reply.line(&self.sid)]);
            self.delayed = Some((reply, delay == Delay::Session));
        }
        Verdict::Continue
    }

    /// Handles one command.
    pub async fn handle(&mut self, cmd: Command) -> Result<Step, ProtocolError> {
        if self.trace {
            self.shared.log.emit(&catalog::EVENT_TRACE, Some(&self.sid), &[&"<", &format!("{cmd:?}")]);
        }
        let silent = self.negotiated.is_some_and(|n| n.no_reply(&cmd));
        let step = match self.timed_dispatch(cmd).await? {
            Outcome::Answer(verdict) => self.answer(verdict, silent),
            Outcome::Done(step) => step,
        };
        if self.trace {
            if let Step::Respond(r) = &step {
                self.shared.log.emit(&catalog::EVENT_TRACE, Some(&self.sid), &[&">", &format!("{r:?}")]);
            }
        }
        Ok(step)
    }

    /// The policy door's way in: one SMTP step, and the verdict for it (refusals counted for
    /// #721 as the milter door counts them). Steps that are no check's business answer Continue.
    pub async fn decide(&mut self, cmd: Command) -> Result<Verdict, ProtocolError> {
        match self.timed_dispatch(cmd).await? {
            Outcome::Answer(verdict) => {
                self.count_refusal(&verdict);
                Ok(verdict)
            }
            Outcome::Done(_) => Ok(Verdict::Continue),
        }
    }

    /// [`Session::dispatch`], its time counted under the command's stage in /metrics (both
    /// doors).
    async fn timed_dispatch(&mut self, cmd: Command) -> Result<Outcome, ProtocolError> {
        let stage = stage_of(&cmd);
        let started = stage.map(|_| Instant::now());
        let outcome = self.dispatch(cmd).await?;
        if let (Some(i), Some(t)) = (stage, started) {
            self.shared.metrics.observe_stage(i, t.elapsed().as_secs_f64());
        }
        Ok(outcome)
    }

    async fn dispatch(&mut self, cmd: Command) -> Result<Outcome, ProtocolError> {
        let Some(neg) = self.negotiated else {
            return match cmd {
                Command::OptNeg { version, actions, protocol } => self.optneg(version, actions, protocol).map(Outcome::Done),
                Command::Macro { .. } | Command::Abort => Ok(Outcome::Done(Step::Silent)),
                Command::Quit => Ok(Outcome::Done(Step::Close)),
                other => Err(format!("command '{}' before option negotiation", other.code() as char)),
            };
        };
        let verdict = match cmd {
            Command::OptNeg { .. } => return Err("option negotiation repeated".into()),
            Command::Macro { stage, pairs } => {
                self.macros.set(stage, pairs);
                return Ok(Outcome::Done(Step::Silent));
            }
            Command::Connect { hostname, family, port, address } => {
                if self.client.is_some() {
                    return Err("second CONNECT in one session".into());
                }
                self.connect(hostname, family, port, address);
                self.listing_connect().await
            }
            Command::Helo { name } => {
                self.need_client("HELO")?;
                self.helo(name);
                self.listing_helo()
            }
            Command::Mail { sender, params } => {
                self.need_client("MAIL")?;
                self.mail(sender, params).await
            }
            Command::Rcpt { recipient, .. } => {
                self.need_tx("RCPT")?;
                self.rcpt(recipient).await
            }
            Command::Data => {
                self.need_tx("DATA")?;
                self.note_queue_id();
                let verdict = self.greylist_data().await;
                if let (Verdict::Reply(_), Some(tx)) = (&verdict, &self.tx) {
                    let x = self.x_text(&verdict);
                    self.emit(&catalog::DATA_REFUSED, &[&tx.tid, &tx.msg_flags.words(), &x]);
                }
                verdict
            }
            Command::Header { name, value } => {
                self.need_tx("HEADER")?;
                self.header(&name, &value);
                Verdict::Continue
            }
            Command::EndOfHeaders => {
                self.need_tx("end of headers")?;
                self.note_queue_id();
                if let Some(tx) = &mut self.tx {
                    tx.bytes += 2;
                    if let Some(content) = tx.content.as_mut() {
                        content.extend_from_slice(b"\r\n");
                    }
                }
                // MTAs speaking protocol 2 or 3 send no DATA event: greylist at end of headers.
                if neg.version < 4 {
                    self.greylist_data().await
                } else {
                    Verdict::Continue
                }
            }
            Command::Body(chunk) => {
                self.need_tx("BODY")?;
                if let Some(tx) = &mut self.tx {
                    tx.bytes += chunk.len() as u64;
                    if let Some(d) = tx.body_digest.as_mut() {
                        d.update(&chunk);
                    }
                    if let Some(content) = tx.content.as_mut() {
                        let room = CONTENT_LIMIT.saturating_sub(content.len());
                        content.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                }
                Verdict::Continue
            }
            Command::EndOfMessage(chunk) => {
                self.need_tx("end of message")?;
                self.end_of_message(chunk).await
            }
            Command::Abort => {
                self.abort();
                return Ok(Outcome::Done(Step::Silent));
            }
            Command::Quit => {
                self.client_flags.set(flags::client::QUIT);
                return Ok(Outcome::Done(Step::Close));
            }
            Command::QuitNewConnection => {
                // The MTA keeps the connection for a new SMTP session: end this one, start afresh.
                self.client_flags.set(flags::client::QUIT);
                self.end();
                let fresh = Session::new(self.shared.clone());
                *self = fresh;
                return Ok(Outcome::Done(Step::Silent));
            }
            Command::Unknown(_) => Verdict::Continue,
        };
        Ok(Outcome::Answer(verdict))
    }

    fn optneg(&mut self, version: u32, actions: u32, protocol: u32) -> Result<Step, ProtocolError> {
        match negotiate(version, actions, protocol, self.policy.milter_needs()) {
            Ok((resp, n)) => {
                self.shared.log.emit(
                    &catalog::NEGOTIATED,
                    Some(&self.sid),
                    &[
                        &n.version,
                        &format_args!("{:x}", n.actions),
                        &format_args!("{:x}", n.protocol),
                        &version,
                        &format_args!("{actions:x}"),
                        &format_args!("{protocol:x}"),
                    ],
                );
                self.negotiated = Some(n);
                Ok(Step::Respond(vec![resp]))
            }
            Err(_) => {
                self.shared.log.emit(&catalog::VERSION_UNSUPPORTED, Some(&self.sid), &[&version]);
                Ok(Step::Close)
            }
        }
    }

    fn need_client(&self, what: &str) -> Result<(), ProtocolError> {
        // NOCONNECT is never negotiated, so every session starts with CONNECT.
        if self.client.is_none() {
            return Err(format!("{what} before CONNECT"));
        }
        Ok(())
    }

    fn need_tx(&self, what: &str) -> Result<(), ProtocolError> {
        if self.tx.is_none() {
            return Err(format!("{what} outside a MAIL transaction"));
        }
        Ok(())
    }

    /// Turns a verdict into responses, counting refusals. Header changes go before the final
    /// answer, as the milter protocol wants them.
    fn answer(&mut self, verdict: Verdict, silent: bool) -> Step {
        if silent {
            if verdict != Verdict::Continue {
                self.emit(&catalog::INTERNAL_ERROR, &[&"a check answered at a step negotiated as no-reply; answer dropped"]);
            }
            return Step::Silent;
        }
        self.count_refusal(&verdict);
        let responses = match &verdict {
            Verdict::Continue => vec![Response::Continue],
            Verdict::Discard => vec![Response::Discard],
            Verdict::Edit(changes) => changes.iter().map(HeaderChange::response).chain([Response::Continue]).collect(),
            Verdict::Reply(r) => vec![r.response(&self.sid)],
        };
        Step::Respond(responses)
    }

    /// Counts a refusal for /metrics and #721 (`R=`, `l=`).
    fn count_refusal(&mut self, verdict: &Verdict) {
        if let Verdict::Reply(r) = verdict {
            self.shared.metrics.reply(r.num, r.code);
            self.rejects += 1;
            self.last_refusal = r.line(&self.sid);
        }
    }

    /// The SPF evaluations for this MAIL, as a future that does not borrow the session (so it
    /// can run beside the MX check). None for clients SPF says nothing about (local, unknown IP).
    fn spf_lookups(&self) -> impl std::future::Future<Output = Option<(SpfResult, SpfResult)>> {
        let ip = self.client.as_ref().and_then(|c| c.ip).filter(|_| !self.client_flags.has(flags::client::LOCALHOST));
        let dns = self.policy.dns.clone();
        let helo = self.helo.clone();
        let sender = self.tx.as_ref().map(|t| bare_address(&t.sender).to_string()).unwrap_or_default();
        let known_helo = self.helo_spf.as_ref().filter(|(name, _)| *name == helo).map(|(_, result)| *result);
        async move {
            let ip = ip?;
            match known_helo {
                Some(helo_result) => Some((check_mail(&dns, ip, &helo, &sender).await, helo_result)),
                None => Some(tokio::join!(check_mail(&dns, ip, &helo, &sender), check_helo(&dns, ip, &helo))),
            }
        }
    }

    /// End of message, in smtpf's order: access-map discards, duplicate detection (also for
    /// white-listed mail), URI lists; then, for a message let through, the greylisting report
    /// header and the duplicate record. Header changes come back in [`Verdict::Edit`].
    async fn content_verdict(&mut self, last_chunk: &[u8]) -> Verdict {
        if let Some(tx) = self.tx.as_mut() {
            if let Some(content) = tx.content.as_mut() {
                content.extend_from_slice(&last_chunk[..last_chunk.len().min(CONTENT_LIMIT.saturating_sub(content.len()))]);
            }
            if let Some(d) = tx.body_digest.as_mut() {
                d.update(last_chunk);
            }
        }
        let discard = self.client_flags.has(flags::client::DISCARD)
            || self.tx.as_ref().is_some_and(|t| t.msg_flags.has(flags::message::DISCARD));
        if discard {
            return Verdict::Discard;
        }
        let dup_key = self.dupmsg_key();
        let mut changes = Vec::new();
        if let Some(key) = &dup_key {
            match self.dupmsg_check(key).await {
                Verdict::Continue => {}
                Verdict::Edit(tag) => changes.extend(tag),
                refusal => return refusal,
            }
        }
        // The content hash is taken before the URI check consumes the kept content.
        let grey_hash = match (&self.grey_deferred, self.tx.as_ref().and_then(|t| t.content.clone())) {
            (Some(_), Some(content)) => {
                Some(tokio::task::spawn_blocking(move || content_hash(&content)).await.unwrap_or_default())
            }
            _ => None,
        };
        let verdict = self.uribl_eom().await;
        if verdict != Verdict::Continue {
            return verdict;
        }
        if let Some(hash) = grey_hash {
            let verdict = self.grey_content_eom(&hash).await;
            if verdict != Verdict::Continue {
                return verdict;
            }
        }
        changes.extend(self.grey_report_header());
        if let Some(key) = &dup_key {
            self.dupmsg_record(key).await;
        }
        if changes.is_empty() {
            Verdict::Continue
        } else {
            Verdict::Edit(changes)
        }
    }

    /// The reply text for `x=` fields: empty when we let the MTA answer.
    fn x_text(&self, verdict: &Verdict) -> String {
        match verdict {
            Verdict::Continue | Verdict::Edit(_) => String::new(),
            Verdict::Discard => "discard".into(),
            Verdict::Reply(r) => r.line(&self.sid),
        }
    }

    fn connect(&mut self, hostname: String, family: Family, port: u16, address: String) {
        let ip = match family {
            Family::Inet | Family::Inet6 => parse_client_address(&address),
            _ => None,
        };
        let resolve = self.macros.get("client_resolve").map(str::to_ascii_uppercase);
        let name = if is_unverified_name(&hostname) || matches!(resolve.as_deref(), Some("FAIL" | "FORGED" | "TEMP")) {
            None
        } else {
            Some(hostname.trim().to_string())
        };
        // The PTR name, confirmed or not: Postfix and Sendmail send it as `{client_ptr}`; Sendmail
        // also passes an unconfirmed name as the host name with `{client_resolve}` FORGED.
        let ptr = name
            .clone()
            .or_else(|| self.macros.get("client_ptr").filter(|p| !is_unverified_name(p)).map(str::to_string))
            .or_else(|| Some(hostname.trim().to_string()).filter(|h| !is_unverified_name(h)));
        let localhost = family == Family::Unix || ip.is_some_and(|i| i.is_loopback());
        if localhost {
            self.client_flags.set(flags::client::LOCALHOST);
        } else {
            if name.is_none() {
                self.client_flags.set(flags::client::FORGED);
            }
            match resolve.as_deref() {
                Some("TEMP") => self.client_flags.set(flags::client::NO_PTR_ERROR),
                _ if ptr.is_none() => self.client_flags.set(flags::client::NO_PTR),
                _ => {}
            }
            // A name built from the address is a dynamic pool's: greylisting keys such a client
            // by its IP, not by the pool's domain (smtpf checks IPv4 addresses only).
            if let (Some(IpAddr::V4(v4)), Some(p)) = (ip.map(|i| i.to_canonical()), ptr.as_deref()) {
                if ip_in_name(p, v4) {
                    self.client_flags.set(flags::client::IP_IN_PTR);
                }
            }
        }
        let client = Client { name, ptr, ip, port, family: Some(family) };
        let cn = self.shared.active.load(std::sync::atomic::Ordering::Relaxed);
        let cs = self.shared.count_connection();
        self.shared.log.emit(
            &catalog::SESSION_START,
            Some(&self.sid),
            &[&client.describe(), &self.client_words_for(&client), &self.shared.workers, &cn, &cs],
        );
        self.client = Some(client);
    }

    fn client_words_for(&self, client: &Client) -> String {
        client_words(self.client_flags, matches!(client.ip, Some(IpAddr::V6(_))))
    }

    fn helo(&mut self, name: String) {
        // Bound what a peer can make us keep; real HELO names are short.
        let name: String = name.trim().chars().take(255).collect();
        if name.starts_with('[') || name.parse::<IpAddr>().is_ok() {
            self.client_flags.set(flags::client::HELO_IP);
        } else {
            self.client_flags.clear(flags::client::HELO_IP);
        }
        self.helo = name;
    }

    async fn mail(&mut self, sender: String, params: Vec<String>) -> Verdict {
        if self.tx.is_some() {
            // A new MAIL without ABORT (or after a refused one) starts over.
            self.abort();
        }
        self.mails += 1;
        if self.macros.get("auth_authen").is_some_and(|a| !a.is_empty()) {
            self.client_flags.set(flags::client::AUTH);
        }
        self.msg_counter = self.msg_counter.wrapping_add(1) % (62 * 62);
        if self.msg_counter == 0 {
            self.msg_counter = 1;
        }
        let mut tx = Transaction { tid: self.sid.transaction(&LocalTime::now(), self.msg_counter), ..Transaction::default() };
        for p in &params {
            let up = p.to_ascii_uppercase();
            if up == "BODY=8BITMIME" {
                tx.mail_flags.set(flags::mail::EIGHTBITMIME);
            } else if up == "BODY=BINARYMIME" {
                tx.mail_flags.set(flags::mail::BINARYMIME);
            }
        }
        tx.sender = bounded(sender, 512);
        if self.door == Door::Milter && (self.policy.scans_uris() || self.policy.config.grey_content) {
            tx.content = Some(Vec::new());
        }
        if self.door == Door::Milter && self.policy.config.dupmsg_ttl > 0 {
            tx.body_digest = Some(BodyDigest::default());
        }
        self.spf_mail = None;
        self.spf_helo = None;
        self.grey_pass = None;
        self.grey_deferred = None;
        let _ = self.set_tx(Some(tx));
        self.note_queue_id();
        let mut verdict = self.listing_mail();
        if verdict == Verdict::Continue {
            // SPF of both identities runs alongside the MX check: one DNS round of latency.
            let spf = self.spf_lookups();
            let (results, mx) = tokio::join!(spf, self.mx_mail());
            if let Some((mail, helo)) = results {
                self.spf_mail = Some(mail);
                self.spf_helo = Some(helo);
                self.helo_spf = Some((self.helo.clone(), helo));
                if self.debugging(&catalog::DEBUG_SPF) {
                    let sender = self.tx.as_ref().map(|t| bare_address(&t.sender).to_string()).unwrap_or_default();
                    self.emit(&catalog::DEBUG_SPF, &[&"mail", &sender, &mail]);
                    self.emit(&catalog::DEBUG_SPF, &[&"helo", &self.helo, &helo]);
                }
            }
            verdict = mx;
        }
        let x = self.x_text(&verdict);
        if let Some(tx) = &self.tx {
            self.shared.log.emit(
                &catalog::SENDER,
                Some(&self.sid),
                &[&tx.sender, &tx.tid, &tx.mail_flags.words(), &spf_word(self.spf_mail), &spf_word(self.spf_helo), &x],
            );
        }
        verdict
    }

    async fn rcpt(&mut self, recipient: String) -> Verdict {
        self.note_queue_id();
        let recipient = bounded(recipient, 512);
        let mut verdict = self.listing_rcpt(&recipient);
        if !matches!(verdict, Verdict::Reply(_)) {
            self.mx_rcpt(&recipient).await;
        }
        if self.door == Door::Policy && verdict == Verdict::Continue {
            verdict = self.greylist_rcpt(&recipient).await;
        }
        let x = self.x_text(&verdict);
        if let Some(tx) = &mut self.tx {
            if matches!(verdict, Verdict::Reply(_)) {
                tx.rcpt_rejected += 1;
            } else {
                tx.rcpt_accepted += 1;
                if tx.recipients.len() < MAX_KEPT_RECIPIENTS {
                    tx.recipients.push(recipient.clone());
                }
            }
        }
        if let Some(tx) = &self.tx {
            self.shared.log.emit(&catalog::RECIPIENT, Some(&self.sid), &[&recipient, &tx.tid, &tx.rcpt_flags.words(), &x]);
        }
        verdict
    }

    fn header(&mut self, name: &str, value: &str) {
        if let Some(tx) = &mut self.tx {
            // name ": " value CRLF, as on the wire (the MTA strips one leading space).
            tx.bytes += (name.len() + value.len() + 4) as u64;
            if let Some(content) = tx.content.as_mut() {
                if content.len() < CONTENT_LIMIT {
                    content.extend_from_slice(name.as_bytes());
                    content.extend_from_slice(b": ");
                    content.extend_from_slice(value.as_bytes());
                    content.extend_from_slice(b"\r\n");
                }
            }
            if name.eq_ignore_ascii_case(&self.policy.config.grey_report_header) {
                tx.report_headers_seen += 1;
            }
            if tx.message_id.is_none() && name.eq_ignore_ascii_case("Message-ID") {
                let v = value.trim();
                tx.message_id = Some(bounded(v.to_string(), 255));
            }
        }
    }

    async fn end_of_message(&mut self, chunk: Vec<u8>) -> Verdict {
        self.note_queue_id();
        let verdict = self.content_verdict(&chunk).await;
        let x = self.x_text(&verdict);
        if let Some(mut tx) = self.set_tx(None) {
            // The last chunk, if any, is part of the body (already digested above).
            tx.bytes += chunk.len() as u64;
            self.bytes += tx.bytes;
            if verdict.lets_through() {
                self.passed += 1;
            }
            let m = tx.message_id.clone().unwrap_or_else(|| "<>".into());
            self.shared.log.emit(
                &catalog::MESSAGE,
                Some(&self.sid),
                &[&tx.tid, &tx.msg_flags.words(), &tx.bytes, &tx.rcpt_accepted, &tx.rcpt_rejected, &m, &self.rejects, &x],
            );
        }
        self.macros.reset_transaction();
        verdict
    }

    /// Replaces the transaction (returning the one it ends), keeping the open-transactions gauge
    /// true.
    fn set_tx(&mut self, tx: Option<Transaction>) -> Option<Transaction> {
        match (self.tx.is_some(), tx.is_some()) {
            (false, true) => self.shared.metrics.transaction_opened(),
            (true, false) => self.shared.metrics.transaction_closed(),
            _ => {}
        }
        std::mem::replace(&mut self.tx, tx)
    }

    /// Ends the transaction without a message (ABORT, RSET, new MAIL).
    fn abort(&mut self) {
        let _ = self.set_tx(None);
        if matches!(self.delayed, Some((_, false))) {
            self.delayed = None;
        }
        self.macros.reset_transaction();
    }

    /// Logs the MTA queue id once per transaction, as soon as the MTA tells it.
    fn note_queue_id(&mut self) {
        let Some(tx) = &mut self.tx else { return };
        let Some(qid) = self.macros.get("i") else { return };
        let qid = qid.trim();
        if qid.is_empty() || tx.queue_id.as_deref() == Some(qid) {
            return;
        }
        tx.queue_id = Some(bounded(qid.to_string(), 64));
        self.shared.log.emit(&catalog::QUEUE_ID, Some(&self.sid), &[&qid, &tx.tid]);
    }

    /// Marks a read/write failure with the MTA (the `io_error` flag of #721).
    pub fn io_error(&mut self) {
        self.client_flags.set(flags::client::IO_ERROR);
    }

    /// Writes #721 (once). Sessions that never saw CONNECT log only a debug line.
    pub fn end(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.shared.metrics.connection_closed();
        let _ = self.set_tx(None);
        let Some(client) = &self.client else {
            self.shared.log.emit(&catalog::NO_CONNECT, Some(&self.sid), &[]);
            return;
        };
        let ip = client.ip.map(|i| i.to_string()).unwrap_or_default();
        let ptr = client.ptr.clone().unwrap_or_default();
        let f = self.client_words_for(client);
        self.shared.log.emit(
            &catalog::SESSION_END,
            Some(&self.sid),
            &[
                &ip,
                &ptr,
                &f,
                &self.helo,
                &self.passed,
                &self.mails,
                &self.bytes,
                &self.rejects,
                &self.started.elapsed().as_secs(),
                &self.last_refusal,
            ],
        );
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.end();
    }
}

/// The stage a command's answer time is counted under in /metrics.
fn stage_of(cmd: &Command) -> Option<usize> {
    match cmd {
        Command::Connect { .. } => Some(0),
        Command::Helo { .. } => Some(1),
        Command::Mail { .. } => Some(2),
        Command::Rcpt { .. } => Some(3),
        Command::Data => Some(4),
        Command::Header { .. } => Some(5),
        Command::EndOfHeaders => Some(6),
        Command::EndOfMessage(_) => Some(7),
        _ => None,
    }
}

/// The word #717 shows for an SPF result; `None` when it was not evaluated.
fn spf_word(r: Option<SpfResult>) -> String {
    r.map(|r| r.to_string()).unwrap_or_else(|| "None".into())
}

fn sid_hash(sid: &SessionId) -> u64 {
    sid.as_str().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unverified_names() {
        assert!(is_unverified_name("[192.0.2.1]"));
        assert!(is_unverified_name("unknown"));
        assert!(is_unverified_name(""));
        assert!(!is_unverified_name("mail.example.com"));
    }

    #[test]
    fn macros_replace_per_stage_and_reset() {
        let mut m = Macros::default();
        m.set(b'C', vec![("j".into(), "mx".into()), ("{client_ptr}".into(), "ptr.example".into())]);
        m.set(b'M', vec![("i".into(), "Q1".into())]);
        assert_eq!(m.get("{client_ptr}"), Some("ptr.example"));
        assert_eq!(m.get("i"), Some("Q1"));
        m.set(b'M', vec![("i".into(), "Q2".into())]);
        assert_eq!(m.get("i"), Some("Q2"));
        m.reset_transaction();
        assert_eq!(m.get("i"), None);
        assert_eq!(m.get("j"), Some("mx"));
        m.set(b'Z', vec![("z".into(), "kept?".into())]);
        assert_eq!(m.get("z"), None, "unknown stages are not stored");
        for stage in 0..=255u8 {
            m.set(stage, vec![("x".into(), "y".repeat(100))]);
        }
        assert!(m.by_stage.len() <= KNOWN_STAGES.len());
    }

    #[test]
    fn macros_are_bounded_by_count_and_bytes() {
        let mut m = Macros::default();
        // 30,000 empty pairs (a 64 KiB frame's worth) keep 64 entries at most.
        m.set(b'C', vec![(String::new(), String::new()); 30_000]);
        assert!(m.by_stage[0].1.len() <= MAX_MACROS_PER_STAGE);
        assert!(m.by_stage[0].1.capacity() <= MAX_MACROS_PER_STAGE, "the decoded buffer is not kept");
        // Large values stop at the byte budget; what fits is kept in order.
        m.set(b'H', (0..20).map(|i| (format!("m{i}"), "v".repeat(1000))).collect());
        let kept = &m.by_stage.iter().find(|(s, _)| *s == b'H').unwrap().1;
        assert_eq!(kept.len(), 8, "8 pairs of ~1 KiB fit in 8 KiB");
        assert_eq!(m.get("m7").map(str::len), Some(1000));
        assert_eq!(m.get("m8"), None);
        let bytes: usize = m.by_stage.iter().flat_map(|(_, p)| p.iter()).map(|(n, v)| n.len() + v.len()).sum();
        assert!(bytes <= KNOWN_STAGES.len() * MAX_MACRO_BYTES_PER_STAGE);
    }
}

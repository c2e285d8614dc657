//! The policy-service front door (`policy-socket`): Postfix's `check_policy_service` asks here,
//! and the same session, checks, records and numbered lines as the milter door answer.
//!
//! Postfix keeps one policy connection per smtpd process and sends one request per SMTP step it
//! is configured to ask about, each carrying the whole envelope so far. This module replays
//! those requests as the SMTP steps a milter would have seen (CONNECT, HELO, MAIL, RCPT, end of
//! message) on one [`Session`] per SMTP session, so a client's DNS lists are asked once, a
//! transaction (Postfix's `instance`) is one `tid`, and greylisting keys the tuple exactly as the
//! milter door does: the same tuple is the same record whichever door it came through.
//!
//! What differs is where things are decided: Postfix asks per recipient, so greylisting decides
//! at RCPT for that recipient (no message is sent for a greylisted tuple), and the report header
//! comes back as `PREPEND`. The message itself never passes here, so content checks (dupmsg,
//! uri-bl, grey-content) cannot run. A request names its SMTP session only by the client's
//! address and port: a request naming another client ends the session (#721), as does the
//! connection's end.
//!
//! Input is distrusted: the wire format is bounded in `postfix_policy`; a request that cannot be
//! read closes the connection (#2070), one that can be read but not decided is answered `DUNNO`
//! (#2070), so Postfix goes on with its own restrictions and mail is never refused for our
//! fault. A bug reached by a request ends that connection with #2041, never the daemon.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::address::parse_client_address;
use crate::log::catalog;
use crate::milter::codec::{Command, Family};
use crate::milter::listen::Connection;
use crate::postfix_policy::{answer, read_request, ReadError, Request};
use crate::reply::{HeaderChange, Verdict};
use crate::server::{panic_text, Kill};
use crate::session::Session;
use crate::shared::Shared;

/// The policy socket's [`crate::server::Serve`].
pub fn serve_policy(
    conn: Connection,
    shared: Arc<Shared>,
    kill: Kill,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        match conn {
            Connection::Unix(s) => serve_connection(s, shared, kill).await,
            Connection::Tcp(s) => serve_connection(s, shared, kill).await,
        }
    })
}

/// Runs one policy connection to its end: requests in, one answer each, until Postfix closes
/// it, stays silent for `milter-timeout`, sends what cannot be read, or the daemon stops.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, shared: Arc<Shared>, mut kill: Kill) {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::with_capacity(4096, r);
    let timeout = shared.policy().config.milter_timeout;
    let mut conversation = Conversation::new(shared.clone());
    loop {
        if kill.is_set() {
            break;
        }
        let read = tokio::select! {
            _ = kill.thrown() => break,
            read = tokio::time::timeout(timeout, read_request(&mut r)) => read,
        };
        let request = match read {
            // Postfix closes idle policy connections itself (smtpd_policy_service_max_idle), so
            // one silent this long is gone: close it without a word.
            Err(_) | Ok(Err(ReadError::Closed)) => break,
            Ok(Err(e)) => {
                shared.log.emit(&catalog::POLICY_REQUEST_ERROR, None, &[&e, &"connection closed"]);
                break;
            }
            Ok(Ok(request)) => request,
        };
        let action = match AssertUnwindSafe(conversation.answer(&request)).catch_unwind().await {
            Ok(action) => action,
            Err(panic) => {
                shared.log.emit(&catalog::SESSION_PANIC, conversation.sid(), &[&panic_text(panic.as_ref())]);
                break;
            }
        };
        let out = answer(&action);
        match tokio::time::timeout(timeout, w.write_all(out.as_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                conversation.io_error();
                shared.log.emit(&catalog::IO_ERROR, conversation.sid(), &[&e]);
                break;
            }
            Err(_) => {
                conversation.io_error();
                shared.log.emit(&catalog::WRITE_TIMEOUT, conversation.sid(), &[&timeout.as_secs()]);
                break;
            }
        }
    }
    let _ = tokio::time::timeout(timeout, w.shutdown()).await;
    // Dropping the session writes its #721.
    drop(conversation);
}

/// The SMTP steps of one policy connection: the session in progress and what it decided.
struct Conversation {
    shared: Arc<Shared>,
    session: Option<Session>,
    /// `client_address` and `client_port` of the session in progress: Postfix's smtpd serves one
    /// SMTP session at a time, so another pair means the previous session is over.
    client: (String, String),
    /// The HELO name last given to the session.
    helo: Option<String>,
    /// A refusal of the whole session (CONNECT, HELO), answered to every later request.
    session_refusal: Option<Verdict>,
    /// Postfix's `instance` of the transaction in progress.
    instance: Option<String>,
    /// The sender of the transaction in progress: with it, a Postfix that sends no `instance`
    /// still starts a new transaction for each message.
    sender: String,
    /// The transaction's refusal at MAIL, answered to each of its recipients.
    mail_refusal: Option<Verdict>,
    /// Recipients of the transaction asked about through us (a later DATA request is then
    /// decided already).
    recipients: u32,
    /// Whether END-OF-MESSAGE was asked (the transaction is over).
    ended: bool,
}

/// SMTP states a request can name, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    EndOfMessage,
}

impl State {
    /// Postfix's `protocol_state` word; None for the states no check is about (VRFY, ETRN).
    fn parse(word: &str) -> Option<Option<State>> {
        Some(Some(match word.to_ascii_uppercase().as_str() {
            "CONNECT" => State::Connect,
            "HELO" | "EHLO" => State::Helo,
            "MAIL" => State::Mail,
            "RCPT" => State::Rcpt,
            "DATA" | "BDAT" => State::Data,
            "END-OF-MESSAGE" => State::EndOfMessage,
            "VRFY" | "ETRN" => return Some(None),
            _ => return None,
        }))
    }
}

/// `<address>` as a milter MTA writes an envelope address; `<>` for the null sender.
fn bracketed(address: &str) -> String {
    format!("<{}>", address.trim().trim_start_matches('<').trim_end_matches('>'))
}

impl Conversation {
    fn new(shared: Arc<Shared>) -> Conversation {
        Conversation {
            shared,
            session: None,
            client: (String::new(), String::new()),
            helo: None,
            session_refusal: None,
            instance: None,
            sender: String::new(),
            mail_refusal: None,
            recipients: 0,
            ended: false,
        }
    }

    /// The session id of the session in progress, for the connection's own lines.
    fn sid(&self) -> Option<&crate::ids::SessionId> {
        self.session.as_ref().map(|s| &s.sid)
    }

    fn io_error(&mut self) {
        if let Some(s) = self.session.as_mut() {
            s.io_error();
        }
    }

    /// Says why a request cannot be decided and lets Postfix go on.
    fn undecided(&self, why: &str) -> String {
        self.shared.log.emit(&catalog::POLICY_REQUEST_ERROR, None, &[&why, &"answered DUNNO"]);
        "DUNNO".to_string()
    }

    /// The action for one request.
    async fn answer(&mut self, request: &Request) -> String {
        match request.get("request") {
            Some("smtpd_access_policy") => {}
            Some(other) => return self.undecided(&format!("request={:.80} is not smtpd_access_policy", other)),
            None => return self.undecided("no request attribute"),
        }
        let state = match request.get("protocol_state").map(State::parse) {
            Some(Some(Some(state))) => state,
            Some(Some(None)) => return "DUNNO".to_string(),
            Some(None) => {
                let word = request.get("protocol_state").unwrap_or_default();
                return self.undecided(&format!("protocol_state={word:.80} is not an SMTP state"));
            }
            None => return self.undecided("no protocol_state attribute"),
        };
        let Some(address) = request.get("client_address").filter(|a| parse_client_address(a).is_some()) else {
            let shown = request.get("client_address").unwrap_or("(none)");
            return self.undecided(&format!("client_address={shown:.80} is not an IP address"));
        };
        let port = request.get("client_port").unwrap_or_default();
        let same_client = self.session.is_some() && self.client.0 == address && self.client.1 == port;
        if !same_client || state == State::Connect {
            self.start_session(request, address, port).await;
        }
        if let Some(refusal) = &self.session_refusal {
            return action(refusal, self.session.as_ref());
        }
        let helo = request.get("helo_name").unwrap_or_default().trim();
        if !helo.is_empty() && self.helo.as_deref() != Some(helo) {
            self.helo = Some(helo.to_string());
            let verdict = self.step(Command::Helo { name: helo.to_string() }).await;
            if refuses(&verdict) {
                self.session_refusal = Some(verdict.clone());
                return action(&verdict, self.session.as_ref());
            }
        }
        if state <= State::Helo {
            return "DUNNO".to_string();
        }
        let instance = request.get("instance").unwrap_or_default();
        let sender = request.get("sender").unwrap_or_default();
        if self.instance.as_deref() != Some(instance) || self.sender != sender {
            self.start_transaction(request, instance).await;
        } else if self.ended {
            // Postfix asks nothing after END-OF-MESSAGE for one instance; if it does, the
            // decisions were made.
            return "DUNNO".to_string();
        }
        if let Some(refusal) = &self.mail_refusal {
            return action(refusal, self.session.as_ref());
        }
        match state {
            State::Connect | State::Helo | State::Mail => "DUNNO".to_string(),
            State::Rcpt => match request.get("recipient").filter(|r| !r.is_empty()) {
                Some(recipient) => self.rcpt(request, recipient).await,
                None => self.undecided("RCPT request without a recipient"),
            },
            // Asked only at DATA (smtpd_data_restrictions): Postfix names the recipient when
            // there is one, and that one is decided as at RCPT.
            State::Data => match request.get("recipient").filter(|r| !r.is_empty() && self.recipients == 0) {
                Some(recipient) => self.rcpt(request, recipient).await,
                None => "DUNNO".to_string(),
            },
            State::EndOfMessage => self.end_of_message(request).await,
        }
    }

    /// Ends the session in progress (its #721) and opens one for this client.
    async fn start_session(&mut self, request: &Request, address: &str, port: &str) {
        self.session = None;
        self.client = (address.to_string(), port.to_string());
        self.helo = None;
        self.session_refusal = None;
        self.instance = None;
        self.mail_refusal = None;
        let mut session = Session::for_policy_door(self.shared.clone());
        let family = match parse_client_address(address) {
            Some(std::net::IpAddr::V6(_)) => Family::Inet6,
            _ => Family::Inet,
        };
        let name = request.get("client_name").filter(|n| !n.is_empty()).unwrap_or("unknown");
        let ptr = request.get("reverse_client_name").filter(|n| !n.is_empty()).unwrap_or("unknown");
        let _ = session.decide(Command::Macro { stage: b'C', pairs: vec![("client_ptr".into(), ptr.to_string())] }).await;
        self.session = Some(session);
        let verdict = self
            .step(Command::Connect {
                hostname: name.to_string(),
                family,
                port: port.parse().unwrap_or(0),
                address: address.to_string(),
            })
            .await;
        if refuses(&verdict) {
            self.session_refusal = Some(verdict);
        }
    }

    /// Starts the transaction of a new `instance` (MAIL), ending the previous one.
    async fn start_transaction(&mut self, request: &Request, instance: &str) {
        self.instance = Some(instance.to_string());
        self.sender = request.get("sender").unwrap_or_default().to_string();
        self.mail_refusal = None;
        self.recipients = 0;
        self.ended = false;
        let _ = self.step(Command::Abort).await;
        let mut pairs = vec![("auth_authen".to_string(), request.get("sasl_username").unwrap_or_default().to_string())];
        if let Some(qid) = request.get("queue_id").filter(|q| !q.is_empty()) {
            pairs.push(("i".into(), qid.to_string()));
        }
        let _ = self.step(Command::Macro { stage: b'M', pairs }).await;
        // No ESMTP parameters: Postfix does not pass them on, and no check reads SIZE.
        let sender = bracketed(request.get("sender").unwrap_or_default());
        let verdict = self.step(Command::Mail { sender, params: Vec::new() }).await;
        if let Some(session) = &self.session {
            if let Some(tx) = &session.tx {
                self.shared.log.emit(
                    &catalog::POLICY_INSTANCE,
                    Some(&session.sid),
                    &[&crate::text::bounded(instance.to_string(), 64), &tx.tid],
                );
            }
        }
        if refuses(&verdict) {
            self.mail_refusal = Some(verdict);
        }
    }

    /// RCPT: listing, backup-MX and greylisting of this recipient; the report header goes out
    /// with the first recipient that lets a greylisted tuple pass.
    async fn rcpt(&mut self, request: &Request, recipient: &str) -> String {
        if let Some(qid) = request.get("queue_id").filter(|q| !q.is_empty()) {
            let _ = self.step(Command::Macro { stage: b'R', pairs: vec![("i".into(), qid.to_string())] }).await;
        }
        let verdict = self.step(Command::Rcpt { recipient: bracketed(recipient), params: Vec::new() }).await;
        self.recipients += 1;
        if verdict != Verdict::Continue {
            return action(&verdict, self.session.as_ref());
        }
        let header = self.session.as_mut().map(|s| s.grey_report_header()).unwrap_or_default();
        prepend(&header).unwrap_or_else(|| "DUNNO".to_string())
    }

    /// END-OF-MESSAGE: the transaction's #720 (with Postfix's size), and what can be decided
    /// without the message: an access-map DISCARD, the report header not yet prepended.
    async fn end_of_message(&mut self, request: &Request) -> String {
        self.ended = true;
        if let Some(tx) = self.session.as_mut().and_then(|s| s.tx.as_mut()) {
            tx.bytes = request.get("size").and_then(|s| s.parse().ok()).unwrap_or(0);
        }
        let verdict = self.step(Command::EndOfMessage(Vec::new())).await;
        match &verdict {
            Verdict::Edit(changes) => prepend(changes).unwrap_or_else(|| "DUNNO".to_string()),
            other => action(other, self.session.as_ref()),
        }
    }

    /// One SMTP step on the session in progress.
    async fn step(&mut self, cmd: Command) -> Verdict {
        let Some(session) = self.session.as_mut() else { return Verdict::Continue };
        match session.decide(cmd).await {
            Ok(verdict) => verdict,
            // Steps are replayed in order, so this would be our bug: say so, let Postfix go on.
            Err(why) => {
                session.emit(&catalog::INTERNAL_ERROR, &[&format!("policy door: {why}")]);
                Verdict::Continue
            }
        }
    }
}

/// Whether a verdict stops the session or transaction it was given for.
fn refuses(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Reply(_) | Verdict::Discard)
}

/// A verdict as a policy action: our reply as Postfix will send it, DISCARD, or DUNNO.
fn action(verdict: &Verdict, session: Option<&Session>) -> String {
    match (verdict, session) {
        (Verdict::Reply(reply), Some(s)) => reply.line(&s.sid),
        (Verdict::Discard, _) => "DISCARD".to_string(),
        _ => "DUNNO".to_string(),
    }
}

/// `PREPEND name: value` for the first header a check adds (Postfix takes one action per
/// answer); None when there is none.
fn prepend(changes: &[HeaderChange]) -> Option<String> {
    changes.iter().find_map(|c| match c {
        HeaderChange::Add { name, value } => Some(format!("PREPEND {name}: {value}")),
        HeaderChange::Remove { .. } => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_as_postfix_writes_them() {
        assert_eq!(State::parse("RCPT"), Some(Some(State::Rcpt)));
        assert_eq!(State::parse("ehlo"), Some(Some(State::Helo)));
        assert_eq!(State::parse("END-OF-MESSAGE"), Some(Some(State::EndOfMessage)));
        assert_eq!(State::parse("VRFY"), Some(None));
        assert_eq!(State::parse("QUIT-ISH"), None);
        assert!(State::Helo < State::Mail && State::Rcpt < State::Data);
    }

    #[test]
    fn envelope_addresses_get_brackets_once() {
        assert_eq!(bracketed(""), "<>");
        assert_eq!(bracketed("a@b.example"), "<a@b.example>");
        assert_eq!(bracketed("<a@b.example>"), "<a@b.example>");
    }

    #[test]
    fn first_added_header_is_prepended() {
        let changes = vec![
            HeaderChange::Remove { index: 1, name: "X-Grey-Report".into() },
            HeaderChange::Add { name: "X-Grey-Report".into(), value: "passed".into() },
        ];
        assert_eq!(prepend(&changes).as_deref(), Some("PREPEND X-Grey-Report: passed"));
        assert_eq!(prepend(&[]), None);
    }
}

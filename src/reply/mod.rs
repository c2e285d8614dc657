//! SMTP replies our checks send, and the verdict a check returns.
//!
//! Every reply ends with ` #<n> <session-id>` as smtpf's do, so a sender quoting our bounce gives
//! the admin the message number and the session to grep for. The numbers, codes and texts live in
//! [`catalog`]; a check builds its reply from an entry with [`Reply::of`].

pub mod catalog;

use std::fmt::Display;

use crate::ids::SessionId;
use crate::log::render;
use crate::milter::codec::Response;
use catalog::ReplyMsg;

/// A reply code, enhanced status, text and smtpf message number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub ecode: String,
    pub text: String,
    pub num: u16,
}

/// smtpf/libmilter limit for one reply line.
const MAX_REPLY: usize = 980;

impl Reply {
    /// Builds a reply from its catalog entry, filling the entry's `%s` with `args`.
    pub fn of(msg: &ReplyMsg, args: &[&dyn Display]) -> Reply {
        Reply { code: msg.code, ecode: msg.ecode.to_string(), text: render(msg.format, args), num: msg.num }
    }

    /// The same reply with another code of its class (greylisting's 421 instead of 451 makes
    /// the MTA close the session).
    pub fn with_code(mut self, code: u16) -> Reply {
        self.code = code;
        self
    }

    /// The reply as the SMTP client will see it.
    pub fn line(&self, sid: &SessionId) -> String {
        self.render(sid, false)
    }

    /// The milter response carrying it. Sendmail reads the text as a format string, so `%` is
    /// doubled (Postfix undoes the doubling).
    pub fn response(&self, sid: &SessionId) -> Response {
        Response::ReplyCode(self.render(sid, true))
    }

    /// `code ecode text #num sid` within [`MAX_REPLY`] bytes: the text is what gets cut (at a
    /// character boundary), so the number and session id a sender quotes always survive, and
    /// the bound holds after `%` doubling too.
    fn render(&self, sid: &SessionId, double_percent: bool) -> String {
        let head = format!("{} {} ", self.code, self.ecode);
        let tail = format!(" #{} {}", self.num, sid);
        let mut room = MAX_REPLY.saturating_sub(head.len() + tail.len());
        let mut out = head;
        for c in self.text.chars().filter(|c| *c != '\r' && *c != '\n') {
            let doubled = double_percent && c == '%';
            let width = if doubled { 2 } else { c.len_utf8() };
            if width > room {
                break;
            }
            room -= width;
            out.push(c);
            if doubled {
                out.push('%');
            }
        }
        out.push_str(&tail);
        out
    }
}

/// What a check decided for one SMTP step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let the MTA answer as it would (white listing also answers this: milter `accept` would
    /// stop filtering the whole message).
    Continue,
    /// Answer with this reply (4xx/5xx; a 421 makes the MTA close the session, our form of
    /// smtpf's DROP).
    Reply(Reply),
    /// Accept the message and throw it away.
    Discard,
    /// Let the message through with these header changes (end of message only: the milter
    /// protocol allows header changes nowhere else).
    Edit(Vec<HeaderChange>),
}

impl Verdict {
    /// Whether the message goes on (with or without header changes).
    pub fn lets_through(&self) -> bool {
        matches!(self, Verdict::Continue | Verdict::Edit(_))
    }
}

/// A header change a check asks for; the session turns it into the milter's add/change
/// responses, so checks never build protocol messages themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderChange {
    /// Append a header.
    Add { name: String, value: String },
    /// Remove the `index`-th (1-based) header of that name the message carries.
    Remove { index: u32, name: String },
}

impl HeaderChange {
    /// The milter response carrying it. A value may hold text from outside (a HELO name, an
    /// address in the greylisting key), so CR, LF, NUL and other control characters are replaced
    /// by a space here: no header we add can carry a second header or end the header block.
    pub fn response(&self) -> Response {
        match self {
            HeaderChange::Add { name, value } => Response::AddHeader { name: name.clone(), value: header_safe(value) },
            HeaderChange::Remove { index, name } => {
                Response::ChangeHeader { index: *index, name: name.clone(), value: String::new() }
            }
        }
    }
}

/// `value` with every control character but TAB replaced by a space.
fn header_safe(value: &str) -> String {
    if !value.chars().any(|c| c.is_control() && c != '\t') {
        return value.to_string();
    }
    value.chars().map(|c| if c.is_control() && c != '\t' { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::LocalTime;

    #[test]
    fn line_ends_with_number_and_session() {
        let sid = SessionId::new(&LocalTime::from_unix(0), 1, 1);
        let r = Reply::of(&catalog::GREY_TEMPFAIL, &[]);
        assert_eq!(r.line(&sid), format!("451 4.7.0 try again later #552 {sid}"));
        let r = Reply::of(&catalog::MX_NONE, &[&"a@b.example", &"b.example"]).with_code(550);
        assert_eq!(r.line(&sid), format!("550 5.1.8 sender <a@b.example> from b.example has no MX record #434 {sid}"));
    }

    #[test]
    fn percent_is_doubled_and_lines_are_bounded() {
        let sid = SessionId::new(&LocalTime::from_unix(0), 1, 1);
        // Built by hand: the catalog's rendering already escapes control characters.
        let r = Reply { code: 550, ecode: "5.7.1".into(), text: "100% spam\r\nInjected: x".into(), num: 895 };
        match r.response(&sid) {
            Response::ReplyCode(s) => {
                assert!(s.contains("100%% spamInjected"));
                assert!(!s.contains('\n'));
            }
            other => panic!("{other:?}"),
        }
        let long = Reply::of(&catalog::URI_BL, &[&"é".repeat(2000)]);
        assert!(long.line(&sid).len() <= 980);
        // The number and session id survive the cut, and the bound holds after doubling.
        assert!(long.line(&sid).ends_with(&format!(" #895 {sid}")), "{}", long.line(&sid));
        let percent = Reply::of(&catalog::URI_BL, &[&"%".repeat(2000)]);
        match percent.response(&sid) {
            Response::ReplyCode(s) => assert!(s.len() <= 980 && s.ends_with(&format!(" #895 {sid}")), "{}", s.len()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn added_header_values_cannot_carry_line_breaks() {
        let add = HeaderChange::Add { name: "X-Grey-Report".into(), value: "key=a\r\nInjected: yes\0\tend".into() };
        assert_eq!(
            add.response(),
            Response::AddHeader { name: "X-Grey-Report".into(), value: "key=a  Injected: yes \tend".into() }
        );
        let plain = HeaderChange::Add { name: "X".into(), value: "a\r\nb".into() };
        assert_eq!(plain.response(), Response::AddHeader { name: "X".into(), value: "a  b".into() }, "without a TAB too");
        let clean = HeaderChange::Add { name: "X".into(), value: "a\tb".into() };
        assert_eq!(clean.response(), Response::AddHeader { name: "X".into(), value: "a\tb".into() }, "TAB is kept");
    }
}

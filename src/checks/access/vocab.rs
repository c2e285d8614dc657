//! The access-map's shared vocabulary: which kind of key ([`Tag`]), what an entry decides
//! ([`Action`]) and what a lookup found ([`Hit`]). The parser produces these, the index answers
//! with them, and the checks turn them into replies, so they sit apart from both.

use std::fmt;

/// The access-map tags this milter understands; a lookup only ever sees keys of its own tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tag {
    /// `Connect:` - the client, by IP address, CIDR network or verified PTR name (connect stage).
    Connect,
    /// `Helo:` - the HELO/EHLO argument, by name or address literal.
    Helo,
    /// `From:` - the envelope sender (MAIL FROM).
    From,
    /// `To:` - an envelope recipient (RCPT TO).
    To,
    /// `Connect:From:` - a client and sender pair (MAIL FROM).
    ConnectFrom,
    /// `Connect:To:` - a client and recipient pair (RCPT TO).
    ConnectTo,
    /// `From:To:` - a sender and recipient pair (RCPT TO).
    FromTo,
    /// `Grey-Connect:` - greylisting period in seconds for a client.
    GreyConnect,
    /// `Grey-To:` - greylisting period in seconds for a recipient.
    GreyTo,
}

impl Tag {
    /// Every tag, for callers that report per-tag counts.
    pub const ALL: [Tag; 9] = [
        Tag::Connect,
        Tag::Helo,
        Tag::From,
        Tag::To,
        Tag::ConnectFrom,
        Tag::ConnectTo,
        Tag::FromTo,
        Tag::GreyConnect,
        Tag::GreyTo,
    ];

    /// The tag as written in access.cf (`Connect:From:`), for log lines and messages.
    pub fn label(self) -> &'static str {
        match self {
            Tag::Connect => "Connect:",
            Tag::Helo => "Helo:",
            Tag::From => "From:",
            Tag::To => "To:",
            Tag::ConnectFrom => "Connect:From:",
            Tag::ConnectTo => "Connect:To:",
            Tag::FromTo => "From:To:",
            Tag::GreyConnect => "Grey-Connect:",
            Tag::GreyTo => "Grey-To:",
        }
    }

    /// The lower-case prefix every stored key of this tag starts with.
    pub(super) fn prefix(self) -> &'static str {
        match self {
            Tag::Connect | Tag::ConnectFrom | Tag::ConnectTo => "connect:",
            Tag::Helo => "helo:",
            Tag::From | Tag::FromTo => "from:",
            Tag::To => "to:",
            Tag::GreyConnect => "grey-connect:",
            Tag::GreyTo => "grey-to:",
        }
    }

    /// What joins the two halves of a combo key.
    pub(super) fn infix(self) -> &'static str {
        match self {
            Tag::ConnectFrom => ":from:",
            Tag::ConnectTo | Tag::FromTo => ":to:",
            _ => "",
        }
    }

    /// Whether the right-hand sides are periods in seconds rather than action words.
    pub(super) fn is_grey(self) -> bool {
        matches!(self, Tag::GreyConnect | Tag::GreyTo)
    }

    /// The tag's slot in per-tag tables such as the index's entry counts.
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What an access-map entry decides; the calling check maps it onto the stage's reply (see
/// docs/access-map.md for the per-stage effects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `OK`: white list.
    Ok,
    /// `REJECT`: black list (550, delayable as in smtpf).
    Reject,
    /// `IREJECT`: immediate reject, never delayed.
    IReject,
    /// `TEMPFAIL`: 450.
    TempFail,
    /// `DISCARD`: accept and throw the message away.
    Discard,
    /// `CONTINUE`, `DUNNO`, `SKIP` or `NEXT`: the key was found but decides nothing; the caller
    /// carries on with its other checks. Also the result of a pattern list that has no default
    /// action and no matching pattern. (For `Grey-*` tags: keep the configured period.)
    Continue,
    /// `CONTENT`: treat the client as grey (skip greylisting, keep content checks).
    Content,
    /// `Grey-Connect:` / `Grey-To:` value: greylisting period in seconds (`SKIP` is 0).
    Seconds(u32),
}

impl Action {
    /// Whether the entry refuses or drops mail (REJECT, IREJECT, TEMPFAIL, DISCARD) rather than
    /// granting something. A refusing `Connect:` name entry may match a PTR name that is not
    /// forward-confirmed (a forged name only gets its forger refused); a granting one may not.
    pub fn refuses(self) -> bool {
        matches!(self, Action::Reject | Action::IReject | Action::TempFail | Action::Discard)
    }

    /// smtpf's reply text when the entry carries no message of its own.
    pub fn default_text(self) -> &'static str {
        match self {
            Action::Ok => "white listed",
            Action::Reject | Action::IReject => "black listed",
            Action::TempFail => "temporary failure",
            Action::Discard => "discard",
            Action::Continue | Action::Content | Action::Seconds(_) => "",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Ok => f.write_str("OK"),
            Action::Reject => f.write_str("REJECT"),
            Action::IReject => f.write_str("IREJECT"),
            Action::TempFail => f.write_str("TEMPFAIL"),
            Action::Discard => f.write_str("DISCARD"),
            Action::Continue => f.write_str("CONTINUE"),
            Action::Content => f.write_str("CONTENT"),
            Action::Seconds(n) => write!(f, "{n}"),
        }
    }
}

/// The outcome of a lookup that found a key: what to do, and what to log (smtpf logs the key found,
/// e.g. `(connect:192.0.2)`). Borrows from the map, so a lookup allocates no result strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit<'a> {
    /// The key found, lower case, as stored: `connect:192.0.2`, `from:user@`, `to:`.
    pub key: &'a str,
    /// The decision: the single action, or that of the first matching pattern, or the pattern
    /// list's default, or [`Action::Continue`] when none applies.
    pub action: Action,
    /// The reply text given after the action (`REJECT:"go away"`), quotes removed.
    pub message: Option<&'a str>,
    /// The right-hand side as written in the file.
    pub value: &'a str,
    /// Line of the file the entry came from.
    pub line: usize,
}

impl<'a> Hit<'a> {
    /// The text for the reply or log line: the entry's message, else smtpf's default for the action.
    pub fn text(&self) -> &'a str {
        self.message.unwrap_or(self.action.default_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::access::Warning;

    #[test]
    fn display_forms() {
        assert_eq!(Tag::ConnectFrom.to_string(), "Connect:From:");
        assert_eq!(Tag::GreyTo.label(), "Grey-To:");
        assert_eq!(Action::IReject.to_string(), "IREJECT");
        let w = Warning { file: "a.cf".into(), line: 3, message: "x".into() };
        assert_eq!(w.to_string(), "a.cf:3: x");
    }
}

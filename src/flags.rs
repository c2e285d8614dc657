//! smtpf's flag words for clients, MAIL, RCPT and messages, as printed in `f="..."` fields.
//!
//! Flags print as comma-separated words in bit order, the way smtpf's `getFlagString` does, so the
//! `f=` fields of #637/#717/#718/#719/#720/#721 read the same as smtpf's.

/// A set of flags printed with a fixed word table.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct FlagSet<const K: u8>(pub u32);

impl<const K: u8> FlagSet<K> {
    /// Sets a flag bit.
    pub fn set(&mut self, bit: u32) {
        self.0 |= 1 << bit;
    }

    /// Clears a flag bit.
    pub fn clear(&mut self, bit: u32) {
        self.0 &= !(1 << bit);
    }

    /// Whether a flag bit is set.
    pub fn has(&self, bit: u32) -> bool {
        self.0 & (1 << bit) != 0
    }

    /// Adds all flags of another set.
    pub fn merge(&mut self, other: FlagSet<K>) {
        self.0 |= other.0;
    }

    fn table() -> &'static [&'static str] {
        match K {
            CLIENT => CLIENT_WORDS,
            MAIL => MAIL_WORDS,
            RCPT => RCPT_WORDS,
            _ => MESSAGE_WORDS,
        }
    }

    /// The comma-separated words.
    pub fn words(&self) -> String {
        let mut out = String::new();
        for (bit, word) in Self::table().iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(word);
            }
        }
        out
    }
}

const CLIENT: u8 = 0;
const MAIL: u8 = 1;
const RCPT: u8 = 2;
const MESSAGE: u8 = 3;

/// Client (session) flags, #637 and #721.
pub type ClientFlags = FlagSet<CLIENT>;
/// MAIL flags, #717.
pub type MailFlags = FlagSet<MAIL>;
/// RCPT flags, #718 (cumulative over a transaction).
pub type RcptFlags = FlagSet<RCPT>;
/// Message flags, #719 and #720.
pub type MessageFlags = FlagSet<MESSAGE>;

const CLIENT_WORDS: &[&str] = &[
    "mx",
    "lan",
    "relay",
    "2nd_mx",
    "forged",
    "localhost",
    "black",
    "grey",
    "save",
    "tag",
    "white",
    "discard",
    "ip_in_ptr",
    "helo_ip",
    "helo_host",
    "ptr_multidomain",
    "no_ptr",
    "no_ptr_error",
    "ehlo_no_helo",
    "schizo",
    "exempt_grey_list",
    "passed_grey_list",
    "pipelining",
    "smtp_lower_case",
    "io_error",
    "rate_limit",
    "concurrency_limit",
    "local_black",
    "trap",
    "tempfail",
    "auth",
    "quit",
];

/// Client flag bits (smtpf's `client_flags[]` order).
pub mod client {
    pub const MX: u32 = 0;
    pub const RELAY: u32 = 2;
    pub const SECOND_MX: u32 = 3;
    pub const FORGED: u32 = 4;
    pub const LOCALHOST: u32 = 5;
    pub const BLACK: u32 = 6;
    pub const GREY: u32 = 7;
    pub const WHITE: u32 = 10;
    pub const DISCARD: u32 = 11;
    pub const IP_IN_PTR: u32 = 12;
    pub const HELO_IP: u32 = 13;
    pub const PTR_MULTIDOMAIN: u32 = 15;
    pub const NO_PTR: u32 = 16;
    pub const NO_PTR_ERROR: u32 = 17;
    pub const SCHIZO: u32 = 19;
    pub const PASSED_GREY_LIST: u32 = 21;
    pub const IO_ERROR: u32 = 24;
    pub const LOCAL_BLACK: u32 = 27;
    pub const TEMPFAIL: u32 = 29;
    pub const AUTH: u32 = 30;
    /// The MTA ended the milter session in order (milter QUIT); smtpf sets it when the SMTP
    /// client sends QUIT, which a milter never sees.
    pub const QUIT: u32 = 31;
}

const MAIL_WORDS: &[&str] = &["black", "white", "tempfail", "extra_spaces", "local_black", "8bitmime", "binarymime"];

/// MAIL flag bits.
pub mod mail {
    pub const BLACK: u32 = 0;
    pub const WHITE: u32 = 1;
    pub const TEMPFAIL: u32 = 2;
    pub const LOCAL_BLACK: u32 = 4;
    pub const EIGHTBITMIME: u32 = 5;
    pub const BINARYMIME: u32 = 6;
}

const RCPT_WORDS: &[&str] = &["black", "white", "tempfail", "extra_spaces", "local_black", "failed"];

/// RCPT flag bits.
pub mod rcpt {
    pub const BLACK: u32 = 0;
    pub const WHITE: u32 = 1;
    pub const TEMPFAIL: u32 = 2;
    pub const LOCAL_BLACK: u32 = 4;
    pub const FAILED: u32 = 5;
}

const MESSAGE_WORDS: &[&str] = &[
    "grey_content",
    "grey_hash_mismatch",
    "uri_dns_bl",
    "uri_bl",
    "uri_implicit",
    "emew_pass",
    "discard",
    "policy",
    "tag",
    "tagged",
    "queued",
    "save",
    "trap",
    "infected",
    "ok_av",
    "ok",
];

/// Message flag bits.
pub mod message {
    pub const GREY_CONTENT: u32 = 0;
    pub const GREY_HASH_MISMATCH: u32 = 1;
    pub const URI_BL: u32 = 3;
    pub const URI_IMPLICIT: u32 = 4;
    pub const DISCARD: u32 = 6;
    pub const POLICY: u32 = 7;
    pub const TAG: u32 = 8;
}

/// Client flags as smtpf prints them: the words, then `,ipv6` for IPv6 clients (even when no other
/// flag is set, which gives a leading comma, as in smtpf).
pub fn client_words(flags: ClientFlags, ipv6: bool) -> String {
    let mut s = flags.words();
    if ipv6 {
        s.push_str(",ipv6");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_in_bit_order() {
        let mut f = ClientFlags::default();
        f.set(client::QUIT);
        f.set(client::FORGED);
        f.set(client::NO_PTR);
        assert_eq!(f.words(), "forged,no_ptr,quit");
        assert_eq!(client_words(f, true), "forged,no_ptr,quit,ipv6");
        assert_eq!(client_words(ClientFlags::default(), true), ",ipv6");
        let mut m = MessageFlags::default();
        m.set(message::DISCARD);
        m.set(message::GREY_CONTENT);
        assert_eq!(m.words(), "grey_content,discard");
        let mut r = RcptFlags::default();
        r.set(rcpt::FAILED);
        assert_eq!(r.words(), "failed");
        let mut mf = MailFlags::default();
        mf.set(mail::EIGHTBITMIME);
        assert_eq!(mf.words(), "8bitmime");
        assert_eq!(CLIENT_WORDS.len(), 32);
    }
}

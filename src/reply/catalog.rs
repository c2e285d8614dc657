//! The catalog of SMTP replies: every reply smtpf-milter can send, by number.
//!
//! smtpf ends each reply with ` #<n> <session-id>`, so a sender quoting a bounce hands the admin
//! the number to look up and the session to grep for. This is the one place that knows each
//! number's code, enhanced status code, text and meaning; checks name an entry
//! ([`super::Reply::of`]) instead of spelling literals, and `smtpf-milter explain N` prints the
//! entry. Numbers share smtpf's space with the log catalog ([`crate::log::catalog`]): a number is
//! either a log line or a reply, never both. Texts use the log catalog's printf-style `%s`.

/// One reply: what the SMTP client sees and what it means.
#[derive(Debug)]
pub struct ReplyMsg {
    /// The entry's name in this catalog (for tests that find every use of it).
    pub name: &'static str,
    /// smtpf's message number, shown as `#n` at the end of the reply.
    pub num: u16,
    /// The SMTP code usually sent (a check may send a variant: 421 instead of 451 to close).
    pub code: u16,
    /// The enhanced status code (RFC 3463).
    pub ecode: &'static str,
    /// The text, with `%s` where the check fills in details.
    pub format: &'static str,
    /// What made us send it and what the sender or admin can do.
    pub meaning: &'static str,
}

macro_rules! replies {
    ($( $name:ident = $num:literal $code:literal $ecode:literal, $fmt:literal, $meaning:literal; )*) => {
        $(
            #[doc = $meaning]
            pub const $name: ReplyMsg = ReplyMsg { name: stringify!($name), num: $num, code: $code, ecode: $ecode, format: $fmt, meaning: $meaning };
        )*
        /// Every reply, in number order (checked by a test).
        pub const ALL: &[&ReplyMsg] = &[ $( &$name, )* ];
    };
}

replies! {
    CONNECT_REJECT = 120 550 "5.7.1", "host %s %s",
        "access-map `Connect:` REJECT: the client's IP or host name is black listed locally. Refused at once, or at each RCPT with smtp-delay-checks (so white-listed recipients still get mail).";
    CONNECT_FROM_REJECT = 125 550 "5.7.1", "host %s sender <%s> %s",
        "access-map `Connect:From:` REJECT: this sender from this client is black listed locally (at MAIL, or at RCPT with smtp-delay-checks).";
    FROM_REJECT = 127 550 "5.7.1", "sender <%s> %s",
        "access-map `From:` REJECT: the sender address, domain or user is black listed locally (at MAIL, or at RCPT with smtp-delay-checks).";
    CONNECT_TO_REJECT = 135 550 "5.7.1", "host %s recipient <%s> %s",
        "access-map `Connect:To:` REJECT (or IREJECT): this recipient refuses mail from this client. Only that recipient is refused.";
    FROM_TO_REJECT = 137 550 "5.7.1", "sender <%s> recipient <%s> %s",
        "access-map `From:To:` REJECT (or IREJECT): this recipient refuses mail from this sender. Only that recipient is refused.";
    TO_REJECT = 139 550 "5.7.1", "recipient <%s> %s",
        "access-map `To:` REJECT (or IREJECT): the recipient is black listed locally. Only that recipient is refused.";
    DUPLICATE_REJECT = 340 550 "5.3.4", "duplicate message rejected",
        "dupmsg-policy = \"reject\": the same message (body, Message-ID, first recipient) was accepted within dupmsg-ttl; the log's #337 line names the first session.";
    MX_NONE = 434 553 "5.1.8", "sender <%s> from %s has no MX record",
        "mail-require-mx: the sender's domain does not exist (NXDOMAIN), so no reply to it could be delivered. The #435 line has the DNS result.";
    MX_LOOKUP_ERROR = 436 451 "4.4.3", "sender <%s> from %s MX lookup error",
        "mail-require-mx: looking up the sender domain's MX failed (SERVFAIL, timeout). Temporary: the sender retries, and a working DNS lets the retry through.";
    MX_INVALID = 439 553 "5.1.8", "sender <%s> from %s MX invalid",
        "mail-require-mx: the sender's domain has no usable MX: a null MX (RFC 7505), or MX hosts that resolve only to private, loopback or reserved addresses.";
    DNS_BL = 525 550 "5.7.0", "%s black listed by %s",
        "dns-bl: the client's IP is listed by the named DNS block list (dns-bl-threshold reached). Refused at connect, or at each RCPT with smtp-delay-checks. The #523 line has the list's answer.";
    GREY_TEMPFAIL = 552 451 "4.7.0", "try again later",
        "Greylisting: the (client, sender, recipient) tuple is new or its grey-temp-fail-period has not passed. A real MTA retries and passes; the #387 (or #394) line has the key and the seconds left. 421 instead of 451 when grey-drop is on and the key names the host, so the MTA closes the session.";
    GREY_CONTENT_MISMATCH = 553 450 "4.4.5", "try again later",
        "grey-content: the retry's content differs from the message first seen for this tuple (rotating spam, or an MTA that rebuilt the MIME structure); #393 logged. The newest content is remembered, so a proper retry of it passes.";
    CONNECT_FROM_TEMPFAIL = 814 450 "4.7.1", "host %s sender <%s> %s",
        "access-map `Connect:From:` TEMPFAIL: this sender from this client is told to retry later.";
    FROM_TEMPFAIL = 815 450 "4.7.1", "sender <%s> %s",
        "access-map `From:` TEMPFAIL: the sender is told to retry later.";
    CONNECT_TO_TEMPFAIL = 816 450 "4.7.1", "host %s recipient <%s> %s",
        "access-map `Connect:To:` TEMPFAIL: this recipient is told to retry later for this client.";
    FROM_TO_TEMPFAIL = 817 450 "4.7.1", "sender <%s> recipient <%s> %s",
        "access-map `From:To:` TEMPFAIL: this recipient is told to retry later for this sender.";
    TO_TEMPFAIL = 818 450 "4.7.1", "recipient <%s> %s",
        "access-map `To:` TEMPFAIL: the recipient is told to retry later.";
    CONNECT_TEMPFAIL = 853 450 "4.7.1", "host %s %s",
        "access-map `Connect:` TEMPFAIL: the client is told to retry later (at once, or at each RCPT with smtp-delay-checks).";
    CONNECT_IREJECT = 854 550 "5.7.1", "host %s %s",
        "access-map `Connect:` IREJECT: the client is black listed locally and refused at once, whatever smtp-delay-checks says.";
    CONNECT_FROM_IREJECT = 855 550 "5.7.1", "host %s sender <%s> %s",
        "access-map `Connect:From:` IREJECT: this sender from this client is refused at MAIL, whatever smtp-delay-checks says.";
    FROM_IREJECT = 856 550 "5.7.1", "sender <%s> %s",
        "access-map `From:` IREJECT: the sender is refused at MAIL, whatever smtp-delay-checks says.";
    URI_BL = 895 550 "5.7.1", "rejected content, %s",
        "uri-bl / uri-dns-bl with uri-bl-policy = \"reject\": a host named in the message body is listed; the text names the host and the list, as smtpf writes it: `rejected content, black listed HOST by LIST. #762 #895 <session-id>` (#762 is smtpf's number for that reason; #523 is logged).";
    MX_ERROR = 907 451 "4.1.8", "sender <%s> from %s MX lookup error",
        "mail-require-mx: the sender domain's MX hosts could not be resolved to addresses (lookup failures, no answer). Temporary: the sender retries.";
    HELO_REJECT = 924 550 "5.7.1", "helo %s %s",
        "access-map `Helo:` REJECT: the HELO/EHLO name is black listed locally (at once, or at each RCPT with smtp-delay-checks).";
    HELO_TEMPFAIL = 925 450 "4.7.1", "helo %s %s",
        "access-map `Helo:` TEMPFAIL: a client using this HELO/EHLO name is told to retry later.";
    HELO_IREJECT = 926 550 "5.7.1", "helo %s %s",
        "access-map `Helo:` IREJECT: the HELO/EHLO name is black listed locally and refused at once, whatever smtp-delay-checks says.";
}

/// The reply with this number, if we send one.
pub fn find(num: u16) -> Option<&'static ReplyMsg> {
    ALL.iter().copied().find(|m| m.num == num)
}

/// The catalog as a Markdown table (the README's reply list is this text, checked by a test).
pub fn markdown_table() -> String {
    let mut s = String::from("| # | reply | meaning |\n|---|---|---|\n");
    for m in ALL {
        s.push_str(&format!("| {} | `{} {} {}` | {} |\n", m.num, m.code, m.ecode, m.format, m.meaning.replace('|', "\\|")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_ascend_and_codes_match_their_class() {
        for w in ALL.windows(2) {
            assert!(w[0].num < w[1].num, "#{} then #{}", w[0].num, w[1].num);
        }
        for m in ALL {
            let class = m.ecode.chars().next().unwrap();
            assert_eq!(char::from(b'0' + (m.code / 100) as u8), class, "#{}: {} with {}", m.num, m.code, m.ecode);
        }
    }

    #[test]
    fn no_number_is_both_a_reply_and_a_log_line() {
        for m in ALL {
            assert!(crate::log::catalog::find(m.num).is_none(), "#{} is in both catalogs", m.num);
        }
    }

    #[test]
    fn find_known_and_unknown() {
        assert_eq!(find(552).unwrap().format, "try again later");
        assert!(find(637).is_none());
    }
}

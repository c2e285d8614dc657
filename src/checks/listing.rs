//! White, grey and black listing: the access-map and the DNS lists (dns-wl, dns-gl, dns-bl), stage
//! by stage, with smtpf's precedence.
//!
//! At connect the access-map's `Connect:` entry decides first; without a decision the three DNS
//! lists are queried together (one round trip of latency, not three) and applied in smtpf's order:
//! white, then grey, then black. HELO, MAIL and RCPT consult their access-map tags. White listing
//! never answers milter `accept` (that would end filtering for the whole message): it sets the
//! `white` flags, which make the later checks skip. Refusals decided before RCPT can be held until
//! RCPT with `smtp-delay-checks`, so that white-listed recipients such as postmaster still get mail.

use std::net::IpAddr;

use crate::address::bare_address;
use crate::checks::access::{Action, Hit, Tag};
use crate::checks::dnslist::{query_ip, ListResult, Zone};
use crate::flags::{client, mail, message, rcpt};
use crate::log::catalog;
use crate::reply::catalog::{self as replies, ReplyMsg};
use crate::reply::{Reply, Verdict};
use crate::session::{Client, Delay, Session};

impl Session {
    /// Connect stage: `Connect:`, then dns-wl / dns-gl / dns-bl.
    pub(crate) async fn listing_connect(&mut self) -> Verdict {
        let policy = self.policy().clone();
        let Some(client_info) = self.client.clone() else { return Verdict::Continue };
        let Some(ip) = client_info.ip else { return Verdict::Continue };
        let who = client_info.describe();
        if let Some(map) = &policy.access {
            let hit = client_hit(&client_info, |name| map.lookup_client(Tag::Connect, ip, name));
            self.debug_access(Tag::Connect, &who, hit.as_ref());
            if let Some(hit) = hit {
                match hit.action {
                    Action::Ok => {
                        self.client_flags.set(client::WHITE);
                        self.emit(&catalog::ACCESS_CONNECT_OK, &[&who, &hit.text(), &hit.key]);
                        return Verdict::Continue;
                    }
                    Action::Reject => {
                        self.client_flags.set(client::BLACK);
                        self.client_flags.set(client::LOCAL_BLACK);
                        return self.refuse(Reply::of(&replies::CONNECT_REJECT, &[&who, &hit.text()]), Delay::Session);
                    }
                    Action::IReject => {
                        self.client_flags.set(client::BLACK);
                        self.client_flags.set(client::LOCAL_BLACK);
                        return self.refuse(Reply::of(&replies::CONNECT_IREJECT, &[&who, &hit.text()]), Delay::Never);
                    }
                    Action::TempFail => {
                        self.client_flags.set(client::TEMPFAIL);
                        return self.refuse(Reply::of(&replies::CONNECT_TEMPFAIL, &[&who, &hit.text()]), Delay::Session);
                    }
                    Action::Discard => {
                        self.client_flags.set(client::DISCARD);
                        self.emit(&catalog::ACCESS_CONNECT_DISCARD, &[&who, &hit.text()]);
                        return Verdict::Continue;
                    }
                    Action::Content => {
                        self.client_flags.set(client::GREY);
                        return Verdict::Continue;
                    }
                    Action::Continue | Action::Seconds(_) => {}
                }
            }
        }
        if self.client_flags.has(client::LOCALHOST) {
            return Verdict::Continue;
        }
        let dns = &policy.dns;
        let (wl, gl, bl) = tokio::join!(
            lookup(dns, &policy.config.dns_wl, ip),
            lookup(dns, &policy.config.dns_gl, ip),
            lookup(dns, &policy.config.dns_bl, ip)
        );
        for (option, result) in [("dns-wl", &wl), ("dns-gl", &gl), ("dns-bl", &bl)] {
            self.log_failures(option, result, &ip.to_string());
        }
        if let Some(list) = wl.as_ref().filter(|r| r.listed(1)).and_then(|r| r.first_hit()) {
            self.client_flags.set(client::WHITE);
            self.emit(&catalog::LIST_FOUND, &[&"dns-wl", &ip, &list]);
            return Verdict::Continue;
        }
        if let Some(list) = gl.as_ref().filter(|r| r.listed(1)).and_then(|r| r.first_hit()) {
            self.client_flags.set(client::GREY);
            self.emit(&catalog::LIST_FOUND, &[&"dns-gl", &ip, &list]);
            return Verdict::Continue;
        }
        if let Some(list) = bl.as_ref().filter(|r| r.listed(policy.config.dns_bl_threshold)).and_then(|r| r.first_hit()) {
            self.client_flags.set(client::BLACK);
            self.emit(&catalog::LIST_FOUND, &[&"dns-bl", &ip, &list]);
            return self.refuse(Reply::of(&replies::DNS_BL, &[&who, &list]), Delay::Session);
        }
        Verdict::Continue
    }

    /// HELO stage: `Helo:` (not for white or grey clients).
    pub(crate) fn listing_helo(&mut self) -> Verdict {
        if self.client_flags.has(client::WHITE) || self.client_flags.has(client::GREY) {
            return Verdict::Continue;
        }
        let policy = self.policy().clone();
        let Some(map) = &policy.access else { return Verdict::Continue };
        let helo = self.helo.clone();
        let hit = map.lookup_helo(&helo);
        self.debug_access(Tag::Helo, &helo, hit.as_ref());
        let Some(hit) = hit else { return Verdict::Continue };
        match hit.action {
            Action::Ok => {
                self.client_flags.set(client::WHITE);
                self.emit(&catalog::ACCESS_HELO_OK, &[&helo, &hit.text(), &hit.key]);
                Verdict::Continue
            }
            Action::Reject => {
                self.client_flags.set(client::BLACK);
                self.client_flags.set(client::LOCAL_BLACK);
                self.refuse(Reply::of(&replies::HELO_REJECT, &[&helo, &hit.text()]), Delay::Session)
            }
            Action::IReject => {
                self.client_flags.set(client::BLACK);
                self.client_flags.set(client::LOCAL_BLACK);
                self.refuse(Reply::of(&replies::HELO_IREJECT, &[&helo, &hit.text()]), Delay::Never)
            }
            Action::TempFail => {
                self.client_flags.set(client::TEMPFAIL);
                self.refuse(Reply::of(&replies::HELO_TEMPFAIL, &[&helo, &hit.text()]), Delay::Session)
            }
            Action::Discard => {
                self.client_flags.set(client::DISCARD);
                self.emit(&catalog::ACCESS_HELO_DISCARD, &[&helo, &hit.text()]);
                Verdict::Continue
            }
            Action::Content => {
                self.client_flags.set(client::GREY);
                Verdict::Continue
            }
            Action::Continue | Action::Seconds(_) => Verdict::Continue,
        }
    }

    /// MAIL stage: `Connect:From:`, else `From:`. Run for every client, white-listed or not, as in
    /// smtpf: a local black-list entry for a sender takes precedence over a white-listed client.
    pub(crate) fn listing_mail(&mut self) -> Verdict {
        let policy = self.policy().clone();
        let Some(map) = &policy.access else { return Verdict::Continue };
        let (Some(client_info), Some(tx)) = (self.client.clone(), self.tx.as_ref()) else { return Verdict::Continue };
        let sender = bare_address(&tx.sender).to_string();
        let who = client_info.describe();
        let combo = client_info
            .ip
            .and_then(|ip| client_hit(&client_info, |name| map.lookup_client_mail(Tag::ConnectFrom, ip, name, &sender)));
        let (hit, combo): (Hit, bool) = match combo {
            Some(h) => (h, true),
            None => match map.lookup_mail(Tag::From, &sender) {
                Some(h) => (h, false),
                None => {
                    self.debug_access(Tag::From, &sender, None);
                    return Verdict::Continue;
                }
            },
        };
        self.debug_access(if combo { Tag::ConnectFrom } else { Tag::From }, &sender, Some(&hit));
        // The combo entry's reply names the host as well.
        let reply = |combo_msg: &ReplyMsg, plain_msg: &ReplyMsg| {
            if combo {
                Reply::of(combo_msg, &[&who, &sender, &hit.text()])
            } else {
                Reply::of(plain_msg, &[&sender, &hit.text()])
            }
        };
        let set = |s: &mut Session, bit| {
            if let Some(tx) = s.tx.as_mut() {
                tx.mail_flags.set(bit);
            }
        };
        match hit.action {
            Action::Ok => {
                set(self, mail::WHITE);
                if combo {
                    self.emit(&catalog::ACCESS_CONNECT_FROM_OK, &[&who, &sender, &hit.text(), &hit.key]);
                } else {
                    self.emit(&catalog::ACCESS_FROM_OK, &[&sender, &hit.text(), &hit.key]);
                }
                Verdict::Continue
            }
            Action::Reject => {
                set(self, mail::BLACK);
                set(self, mail::LOCAL_BLACK);
                self.refuse(reply(&replies::CONNECT_FROM_REJECT, &replies::FROM_REJECT), Delay::Transaction)
            }
            Action::IReject => {
                set(self, mail::BLACK);
                set(self, mail::LOCAL_BLACK);
                self.refuse(reply(&replies::CONNECT_FROM_IREJECT, &replies::FROM_IREJECT), Delay::Never)
            }
            Action::TempFail => {
                set(self, mail::TEMPFAIL);
                self.refuse(reply(&replies::CONNECT_FROM_TEMPFAIL, &replies::FROM_TEMPFAIL), Delay::Transaction)
            }
            Action::Discard => {
                self.discard_message(&hit);
                Verdict::Continue
            }
            Action::Content | Action::Continue | Action::Seconds(_) => Verdict::Continue,
        }
    }

    /// RCPT stage: `Connect:To:`, `From:To:`, `To:`; then a held (delayed) refusal, unless the
    /// recipient is white listed. Run for every client, as in smtpf (a recipient's black-list
    /// entry holds for white-listed clients too).
    pub(crate) fn listing_rcpt(&mut self, recipient: &str) -> Verdict {
        let policy = self.policy().clone();
        let rcpt_addr = bare_address(recipient).to_string();
        if let (Some(map), Some(client_info), Some(tx)) = (&policy.access, self.client.clone(), self.tx.as_ref()) {
            let sender = bare_address(&tx.sender).to_string();
            let who = client_info.describe();
            let found = client_info
                .ip
                .and_then(|ip| client_hit(&client_info, |name| map.lookup_client_mail(Tag::ConnectTo, ip, name, &rcpt_addr)))
                .map(|h| (h, 0))
                .or_else(|| map.lookup_from_to(&sender, &rcpt_addr).map(|h| (h, 1)))
                .or_else(|| map.lookup_mail(Tag::To, &rcpt_addr).map(|h| (h, 2)));
            let tag = match found.as_ref().map(|(_, which)| *which) {
                Some(0) => Tag::ConnectTo,
                Some(1) => Tag::FromTo,
                _ => Tag::To,
            };
            self.debug_access(tag, &rcpt_addr, found.as_ref().map(|(h, _)| h));
            if let Some((hit, which)) = found {
                // Which entry matched decides what the reply names besides the recipient.
                let reply = |msgs: [&ReplyMsg; 3]| match which {
                    0 => Reply::of(msgs[0], &[&who, &rcpt_addr, &hit.text()]),
                    1 => Reply::of(msgs[1], &[&sender, &rcpt_addr, &hit.text()]),
                    _ => Reply::of(msgs[2], &[&rcpt_addr, &hit.text()]),
                };
                let set = |s: &mut Session, bit| {
                    if let Some(tx) = s.tx.as_mut() {
                        tx.rcpt_flags.set(bit);
                    }
                };
                match hit.action {
                    Action::Ok => {
                        set(self, rcpt::WHITE);
                        match which {
                            0 => self.emit(&catalog::ACCESS_CONNECT_TO_OK, &[&who, &rcpt_addr, &hit.text(), &hit.key]),
                            1 => self.emit(&catalog::ACCESS_FROM_TO_OK, &[&sender, &rcpt_addr, &hit.text(), &hit.key]),
                            _ => self.emit(&catalog::ACCESS_TO_OK, &[&rcpt_addr, &hit.text(), &hit.key]),
                        }
                        // A white-listed recipient is accepted despite a held refusal.
                        return Verdict::Continue;
                    }
                    Action::Reject | Action::IReject => {
                        set(self, rcpt::BLACK);
                        set(self, rcpt::LOCAL_BLACK);
                        return Verdict::Reply(reply([
                            &replies::CONNECT_TO_REJECT,
                            &replies::FROM_TO_REJECT,
                            &replies::TO_REJECT,
                        ]));
                    }
                    Action::TempFail => {
                        set(self, rcpt::TEMPFAIL);
                        return Verdict::Reply(reply([
                            &replies::CONNECT_TO_TEMPFAIL,
                            &replies::FROM_TO_TEMPFAIL,
                            &replies::TO_TEMPFAIL,
                        ]));
                    }
                    Action::Discard => self.discard_message(&hit),
                    Action::Content | Action::Continue | Action::Seconds(_) => {}
                }
            }
        }
        match self.delayed.clone() {
            Some((reply, _)) => Verdict::Reply(reply),
            None => Verdict::Continue,
        }
    }

    fn discard_message(&mut self, hit: &Hit) {
        let tid = self.tx.as_ref().map(|t| t.tid.clone()).unwrap_or_default();
        if let Some(tx) = self.tx.as_mut() {
            tx.msg_flags.set(message::DISCARD);
        }
        self.emit(&catalog::ACCESS_MESSAGE_DISCARD, &[&format_args!("{tid} {} ({})", hit.text(), hit.key)]);
    }

    /// Logs list lookups that timed out or failed (they count as "not listed"), and with the
    /// verbose word `rbl` every list's answer.
    pub(crate) fn log_failures(&self, option: &str, result: &Option<ListResult>, name: &str) {
        let Some(r) = result else { return };
        for c in self.policy().list_queries(self.metrics(), option) {
            c.inc();
        }
        for hit in &r.hits {
            self.metrics().list(option, &hit.zone, "listed");
        }
        for (zone, why) in r.failures() {
            self.metrics().list(
                option,
                zone,
                if why.contains("timeout") || why.contains("timed out") { "timeout" } else { "error" },
            );
        }
        for (zone, why) in r.failures() {
            self.emit(&catalog::DNS_LIST_FAILED, &[&option, &zone, &name, &why]);
        }
        if self.debugging(&catalog::DEBUG_RBL) {
            for hit in &r.hits {
                self.emit(
                    &catalog::DEBUG_RBL,
                    &[&option, &name, &hit.zone, &format_args!("listed {} (weight {})", hit.answer, hit.weight)],
                );
            }
            for (zone, why) in r.failures() {
                self.emit(&catalog::DEBUG_RBL, &[&option, &name, &zone, &format_args!("failed: {why}")]);
            }
            if r.hits.is_empty() && r.failed.is_empty() {
                self.emit(&catalog::DEBUG_RBL, &[&option, &name, &"(every list)", &"not listed"]);
            }
        }
    }
}

/// A `Connect:`-keyed lookup for the client. smtpf matches name keys against the PTR name whether
/// or not it is forward-confirmed; we do so for entries that refuse (so `Connect:bad.example
/// REJECT` also catches a client whose PTR claims that name without its A record agreeing), but
/// an entry that grants (OK, CONTENT) needs a confirmed name: anyone who controls a reverse zone
/// can make a PTR say `mail.bigbank.example`.
fn client_hit<'m>(client: &Client, lookup: impl Fn(Option<&str>) -> Option<Hit<'m>>) -> Option<Hit<'m>> {
    if client.name.is_none() {
        if let Some(ptr) = client.ptr.as_deref() {
            if let Some(hit) = lookup(Some(ptr)).filter(|h| h.action.refuses()) {
                return Some(hit);
            }
        }
    }
    lookup(client.name.as_deref())
}

/// Queries one list when configured.
async fn lookup(dns: &crate::dns::Dns, zones: &[Zone], ip: IpAddr) -> Option<ListResult> {
    if zones.is_empty() {
        return None;
    }
    Some(query_ip(dns, zones, ip).await)
}

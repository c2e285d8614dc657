//! Sender-domain MX verification at MAIL (smtpf's `mail-require-mx`).
//!
//! A sender domain that cannot receive mail cannot receive bounces either, so smtpf refuses it:
//! NXDOMAIN gets a 553, an MX list whose hosts all point at loopback, private or reserved
//! addresses (or nowhere) gets a 553, and a lookup that fails gets a 451 so that the sender
//! retries once DNS works again — refusing for good on a transient DNS fault would lose mail. A
//! domain without MX records is its own implicit MX (RFC 5321 §5.1); an RFC 7505 null MX
//! (`MX 0 .`) says the domain takes no mail, and never falls back to its A record. On the way the
//! check notices when the client itself is an MX of the sender's domain (flag `mx`, #437). At RCPT
//! the same lookup of the recipient's domain tells whether the client is one of *our* backup MX
//! hosts (flag `2nd_mx`), which greylisting exempts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::address::bare_address;
use crate::dns::{is_null_mx, Dns, Lookup};
use crate::flags::{client, mail};
use crate::log::catalog;
use crate::reply::catalog as replies;
use crate::reply::{Reply, Verdict};
use crate::session::{Delay, Session};

/// Most recipient domains a connection remembers as checked for `2nd_mx`.
const MAX_DOMAINS_CHECKED: usize = 16;

/// Most MX hosts whose addresses are looked up (real domains have a handful).
const MAX_MX_HOSTS: usize = 10;

/// Whether an address can never be a public mail exchanger: loopback, private, link-local,
/// shared, documentation, benchmarking, multicast and other RFC 6890 special-purpose ranges.
pub fn is_restricted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => restricted_v4(v4),
            None => restricted_v6(v6),
        },
    }
}

fn restricted_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 shared address space
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24 IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
        || o[0] >= 240 // 240/4 reserved
}

fn restricted_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // 2001:db8::/32 documentation
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // 100::/64 discard
        || (s[0] == 0x2001 && s[1] < 0x0200) // 2001::/23 IETF protocol assignments
}

/// Whether `domain` is one of ours (or below one of ours): split DNS, never verified.
fn is_local(domain: &str, locals: &[String]) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    locals.iter().any(|l| d == *l || d.strip_suffix(l.as_str()).is_some_and(|rest| rest.ends_with('.')))
}

/// What a domain's MX lookup found: the answer kinds the checks treat differently.
#[derive(Debug)]
enum MxAnswer {
    /// RFC 7505 null MX: the domain takes no mail.
    NullMx,
    NxDomain,
    /// The MX query itself failed (reason word).
    Failed(String),
    /// The hosts' addresses (all of them, special-purpose ranges included), and whether some
    /// host's address lookup failed.
    Hosts {
        addresses: Vec<IpAddr>,
        failed: bool,
    },
}

/// Looks up a domain's mail exchangers and their addresses (a domain without MX records is its
/// own implicit MX). Answers come from the resolver's cache when fresh, so asking again for the
/// same domain costs no query.
async fn mx_answer(dns: &Dns, domain: &str) -> MxAnswer {
    let hosts: Vec<String> = match dns.mx(domain).await {
        Lookup::Found(list) if is_null_mx(&list) => return MxAnswer::NullMx,
        Lookup::Found(list) => list.into_iter().filter(|m| !m.is_null()).take(MAX_MX_HOSTS).map(|m| m.exchange).collect(),
        Lookup::NoRecords => vec![domain.to_string()],
        Lookup::NxDomain => return MxAnswer::NxDomain,
        Lookup::Failed(why) => return MxAnswer::Failed(why),
    };
    let answers = futures_util::future::join_all(hosts.iter().map(|h| dns.ip_addrs(h))).await;
    let mut addresses: Vec<IpAddr> = Vec::new();
    let mut failed = false;
    for answer in answers {
        match answer {
            Lookup::Found(ips) => addresses.extend(ips),
            Lookup::Failed(_) => failed = true,
            Lookup::NoRecords | Lookup::NxDomain => {}
        }
    }
    MxAnswer::Hosts { addresses, failed }
}

/// The domain of an address (`<a@Example.COM.>` → `example.com`), if it has one.
fn address_domain(address: &str) -> Option<String> {
    match bare_address(address).rsplit_once('@') {
        Some((_, d)) if !d.trim_end_matches('.').is_empty() => Some(d.trim_end_matches('.').to_ascii_lowercase()),
        _ => None,
    }
}

impl Session {
    /// MAIL stage: verify the sender domain's MX. The lookup is always made (as smtpf does,
    /// whatever `mail-require-mx` says), so `#435` and the `mx` flag tell the same story with the
    /// refusal switched off; `mail-require-mx` only decides whether a domain that cannot take
    /// mail is refused.
    pub(crate) async fn mx_mail(&mut self) -> Verdict {
        // The flag is about this sender's domain: a new MAIL starts without it (smtpf clears it
        // at every MAIL too).
        self.client_flags.clear(client::MX);
        let policy = self.policy().clone();
        let cfg = &policy.config;
        let trusted = [client::LOCALHOST, client::RELAY, client::AUTH, client::WHITE, client::GREY];
        if trusted.iter().any(|f| self.client_flags.has(*f)) {
            return Verdict::Continue;
        }
        let Some(tx) = self.tx.as_ref() else { return Verdict::Continue };
        if tx.mail_flags.has(mail::WHITE) {
            return Verdict::Continue;
        }
        let null_sender = bare_address(&tx.sender).is_empty();
        let sender = bare_address(&tx.sender).to_string();
        let domain = if null_sender {
            // The null sender (a bounce): the HELO name, unless it is an address literal.
            if self.helo.is_empty() || self.helo.starts_with('[') || self.helo.parse::<IpAddr>().is_ok() {
                return Verdict::Continue;
            }
            self.helo.trim_end_matches('.').to_ascii_lowercase()
        } else {
            match address_domain(&sender) {
                Some(d) => d,
                None => return Verdict::Continue,
            }
        };
        if is_local(&domain, &cfg.local_domains) {
            return Verdict::Continue;
        }
        // Refusals need the option and a real sender; otherwise the check only informs.
        let enforce = cfg.mail_require_mx && !null_sender;
        let answer = mx_answer(&policy.dns, &domain).await;
        if self.debugging(&catalog::DEBUG_MX) {
            self.emit(&catalog::DEBUG_MX, &[&domain, &format_args!("{answer:?}")]);
        }
        let (addresses, failed) = match answer {
            MxAnswer::NullMx => {
                self.metrics().verdict("mx", "null_mx");
                if !enforce {
                    return Verdict::Continue;
                }
                self.emit(&catalog::MX_EMPTY, &[]);
                return self.refuse(Reply::of(&replies::MX_INVALID, &[&sender, &domain]), Delay::Transaction);
            }
            MxAnswer::NxDomain => {
                self.metrics().verdict("mx", "nxdomain");
                // smtpf answers NXDOMAIN with #434 alone; #435 only when it does not refuse.
                if !enforce {
                    self.emit(&catalog::MX_ERROR, &[&domain, &"NXDOMAIN"]);
                    return Verdict::Continue;
                }
                return self.refuse(Reply::of(&replies::MX_NONE, &[&sender, &domain]), Delay::Transaction);
            }
            MxAnswer::Failed(why) => {
                self.metrics().verdict("mx", "lookup_failed");
                self.emit(&catalog::MX_ERROR, &[&domain, &why]);
                if !enforce || why == "NOTIMP" {
                    return Verdict::Continue;
                }
                return Verdict::Reply(Reply::of(&replies::MX_LOOKUP_ERROR, &[&sender, &domain]));
            }
            MxAnswer::Hosts { addresses, failed } => (addresses, failed),
        };
        let usable: Vec<IpAddr> = addresses.into_iter().filter(|ip| !is_restricted(*ip)).collect();
        let outcome = match (usable.is_empty(), failed) {
            (false, _) => "ok",
            (true, true) => "incomplete",
            (true, false) => "no_usable_mx",
        };
        self.metrics().verdict("mx", outcome);
        if let Some(c) = self.client.as_ref() {
            if c.ip.is_some_and(|ip| usable.contains(&ip)) {
                let who = c.describe();
                self.client_flags.set(client::MX);
                self.emit(&catalog::CLIENT_IS_MX, &[&who, &domain]);
            }
        }
        if !enforce || !usable.is_empty() {
            return Verdict::Continue;
        }
        if failed {
            self.emit(&catalog::MX_INCOMPLETE, &[]);
            return self.refuse(Reply::of(&replies::MX_ERROR, &[&sender, &domain]), Delay::Transaction);
        }
        self.emit(&catalog::MX_EMPTY, &[]);
        self.refuse(Reply::of(&replies::MX_INVALID, &[&sender, &domain]), Delay::Transaction)
    }

    /// RCPT stage: notes when the client is a mail exchanger of the recipient's domain (flag
    /// `2nd_mx`, #2050): a backup MX relaying mail it queued for us, which greylisting must not
    /// delay (the sender was greylisted, or not, at the backup already). Looked up once per
    /// session until found, only when greylisting could apply, and from the resolver's cache for
    /// every recipient of a domain already seen. Private addresses count here: a backup MX on the
    /// LAN is still a backup MX.
    pub(crate) async fn mx_rcpt(&mut self, recipient: &str) {
        let cfg = &self.policy().config;
        if cfg.grey_key.is_empty() || cfg.grey_temp_fail_period == 0 {
            return;
        }
        let skip = [client::SECOND_MX, client::LOCALHOST, client::RELAY, client::AUTH, client::WHITE, client::GREY];
        if skip.iter().any(|f| self.client_flags.has(*f)) {
            return;
        }
        let (Some(ip), Some(domain)) = (self.client.as_ref().and_then(|c| c.ip), address_domain(recipient)) else { return };
        if self.mx_domains_checked.contains(&domain) {
            return;
        }
        let dns = self.policy().dns.clone();
        let answer = mx_answer(&dns, &domain).await;
        if self.debugging(&catalog::DEBUG_MX) {
            self.emit(&catalog::DEBUG_MX, &[&domain, &format_args!("{answer:?} (recipient domain)")]);
        }
        if let MxAnswer::Hosts { failed: false, .. } = &answer {
            // A definite answer is kept for the connection (a few domains at most are remembered).
            if self.mx_domains_checked.len() < MAX_DOMAINS_CHECKED {
                self.mx_domains_checked.push(domain.clone());
            }
        }
        if let MxAnswer::Hosts { addresses, .. } = answer {
            if addresses.contains(&ip) {
                self.client_flags.set(client::SECOND_MX);
                let who = self.client.as_ref().map(|c| c.describe()).unwrap_or_default();
                self.emit(&catalog::CLIENT_IS_SECOND_MX, &[&who, &domain]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_ranges() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.1.2.3",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "fc00::1",
            "fe80::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_restricted(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["64.0.2.25", "8.8.8.8", "2a00:1450:4001::1a", "100.128.0.1"] {
            assert!(!is_restricted(ip.parse().unwrap()), "{ip}");
        }
    }

    /// Each special-use range is held at both ends, and the public addresses on either side of it
    /// stay usable: a range drawn one bit too wide would refuse a legitimate sender's domain for
    /// good (553 #439), one drawn too narrow would accept an MX that can never answer.
    #[test]
    fn special_use_ranges_end_where_they_end() {
        let inside = [
            "192.0.0.0",
            "192.0.0.8",
            "192.0.0.255",
            "198.18.0.0",
            "198.19.255.255",
            "100.64.0.0",
            "100.127.255.255",
            "255.255.255.255",
            "0.0.0.0",
            "100::",
            "100::ffff:ffff:ffff:ffff",
            "2001::",
            "2001::1",
            "2001:1ff:ffff:ffff::1",
            "2001:db8:ffff::1",
            "fdff::1",
            "febf::1",
            "ff02::1",
            "::",
            "::ffff:192.0.0.8",
            "::ffff:198.18.0.1",
        ];
        for ip in inside {
            assert!(is_restricted(ip.parse().unwrap()), "{ip} is special-use");
        }
        let public = [
            // around 192.0.0.0/24 (192.0.2.0/24 is documentation, tested above)
            "192.0.1.1",
            "192.1.0.1",
            "191.255.255.1",
            "193.0.0.1",
            "8.0.0.1",
            // around 198.18.0.0/15
            "198.17.255.255",
            "198.20.0.1",
            "199.18.0.1",
            "17.18.0.1",
            // around 100.64.0.0/10
            "100.63.255.255",
            "99.64.0.1",
            // below 224.0.0.0/4 and 240.0.0.0/4, above 0.0.0.0/8
            "223.255.255.254",
            "1.0.0.1",
            // around 2001::/23 and 2001:db8::/32
            "2001:200::1",
            "2001:4860:4860::8888",
            "2001:db7::1",
            "2001:db9::1",
            // public addresses sharing 100::/64's zero segments, or fc00::/7's and fe80::/10's
            // leading bits in other positions
            "2a00::1",
            "2a00:1450::1",
            "2a0c:fe80::1",
            "::ffff:192.0.1.1",
        ];
        for ip in public {
            assert!(!is_restricted(ip.parse().unwrap()), "{ip} is a public address");
        }
    }

    #[test]
    fn local_domains_match_by_label() {
        let locals = vec!["example.net".to_string()];
        assert!(is_local("example.net", &locals));
        assert!(is_local("Mail.Example.NET.", &locals));
        assert!(!is_local("badexample.net", &locals));
    }
}

//! Sender-domain MX verification at MAIL (smtpf's `mail-require-mx`).
//!
//! A sender domain that cannot receive mail cannot receive bounces either, so smtpf refuses it:
//! NXDOMAIN gets a 553, an MX list whose hosts all point at loopback, private or reserved
//! addresses (or nowhere) gets a 553, and a lookup that fails gets a 451 so that the sender
//! retries once DNS works again — refusing for good on a transient DNS fault would lose mail. A
//! domain without MX records is its own implicit MX (RFC 5321 §5.1); an RFC 7505 null MX
//! (`MX 0 .`) says the domain takes no mail, and never falls back to its A record. On the way the
//! check notices when the client itself is an MX of the sender's domain (flag `mx`, #437).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::address::bare_address;
use crate::dns::{is_null_mx, Lookup};
use crate::flags::{client, mail};
use crate::log::catalog;
use crate::reply::catalog as replies;
use crate::reply::{Reply, Verdict};
use crate::session::{Delay, Session};

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

impl Session {
    /// MAIL stage: verify the sender domain's MX.
    pub(crate) async fn mx_mail(&mut self) -> Verdict {
        let policy = self.policy().clone();
        let cfg = &policy.config;
        // Switched off: no lookups at all (the `mx` flag has no other use here), so MAIL costs
        // nothing.
        if !cfg.mail_require_mx {
            return Verdict::Continue;
        }
        let trusted = [client::LOCALHOST, client::RELAY, client::AUTH, client::WHITE, client::GREY];
        if trusted.iter().any(|f| self.client_flags.has(*f)) {
            return Verdict::Continue;
        }
        let Some(tx) = self.tx.as_ref() else { return Verdict::Continue };
        if tx.mail_flags.has(mail::WHITE) {
            return Verdict::Continue;
        }
        let sender = bare_address(&tx.sender).to_string();
        let null_sender = sender.is_empty();
        let domain = if null_sender {
            // The null sender (a bounce): the HELO name, unless it is an address literal.
            if self.helo.is_empty() || self.helo.starts_with('[') || self.helo.parse::<IpAddr>().is_ok() {
                return Verdict::Continue;
            }
            self.helo.clone()
        } else {
            match sender.rsplit_once('@') {
                Some((_, d)) if !d.is_empty() => d.trim_end_matches('.').to_ascii_lowercase(),
                _ => return Verdict::Continue,
            }
        };
        if is_local(&domain, &cfg.local_domains) {
            return Verdict::Continue;
        }
        // Rejections need a real sender; for <> the check only notes the `mx` flag.
        let enforce = !null_sender;
        let dns = &policy.dns;
        let hosts: Vec<String> = match dns.mx(&domain).await {
            Lookup::Found(list) if is_null_mx(&list) => {
                if !enforce {
                    return Verdict::Continue;
                }
                self.emit(&catalog::MX_EMPTY, &[]);
                let r = Reply::of(&replies::MX_INVALID, &[&sender, &domain]);
                return self.refuse(r, Delay::Transaction);
            }
            Lookup::Found(list) => list.into_iter().filter(|m| !m.is_null()).take(MAX_MX_HOSTS).map(|m| m.exchange).collect(),
            Lookup::NoRecords => vec![domain.clone()],
            Lookup::NxDomain => {
                self.emit(&catalog::MX_ERROR, &[&domain, &"NXDOMAIN"]);
                if !enforce {
                    return Verdict::Continue;
                }
                let r = Reply::of(&replies::MX_NONE, &[&sender, &domain]);
                return self.refuse(r, Delay::Transaction);
            }
            Lookup::Failed(why) => {
                self.emit(&catalog::MX_ERROR, &[&domain, &why]);
                if !enforce || why == "NOTIMP" {
                    return Verdict::Continue;
                }
                return Verdict::Reply(Reply::of(&replies::MX_LOOKUP_ERROR, &[&sender, &domain]));
            }
        };
        let answers = futures_util::future::join_all(hosts.iter().map(|h| dns.ip_addrs(h))).await;
        let mut usable: Vec<IpAddr> = Vec::new();
        let mut failed = false;
        for answer in answers {
            match answer {
                Lookup::Found(ips) => usable.extend(ips.into_iter().filter(|ip| !is_restricted(*ip))),
                Lookup::Failed(_) => failed = true,
                Lookup::NoRecords | Lookup::NxDomain => {}
            }
        }
        if let (Some(ip), Some(c)) = (self.client.as_ref().and_then(|c| c.ip), self.client.as_ref()) {
            if usable.contains(&ip) {
                self.client_flags.set(client::MX);
                let who = c.describe();
                self.emit(&catalog::CLIENT_IS_MX, &[&who, &domain]);
            }
        }
        if !enforce || !usable.is_empty() {
            return Verdict::Continue;
        }
        if failed {
            self.emit(&catalog::MX_INCOMPLETE, &[]);
            let r = Reply::of(&replies::MX_ERROR, &[&sender, &domain]);
            return self.refuse(r, Delay::Transaction);
        }
        self.emit(&catalog::MX_EMPTY, &[]);
        let r = Reply::of(&replies::MX_INVALID, &[&sender, &domain]);
        self.refuse(r, Delay::Transaction)
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

    #[test]
    fn local_domains_match_by_label() {
        let locals = vec!["example.net".to_string()];
        assert!(is_local("example.net", &locals));
        assert!(is_local("Mail.Example.NET.", &locals));
        assert!(!is_local("badexample.net", &locals));
    }
}

//! URI lists at end of message: uri-bl (domain lists) and uri-dns-bl (IP lists for URI hosts).
//!
//! The hosts of URIs in the decoded text parts of the body are looked up, each distinct host once
//! and at most `uri-max-test` of them, all concurrently. A domain is queried by its registered
//! domain (public suffix list), an IP-literal host by its address; with uri-dns-bl the addresses of
//! each domain host are also tested. A hit rejects the message (`uri-bl-policy`), never a failure:
//! a list that times out counts as "not listed". White-listed clients, senders and recipients skip
//! this check, as in smtpf.

use std::net::IpAddr;

use crate::checks::dnslist::{query_domain, query_ip, ListResult};
use crate::checks::uri::{extract_hosts, UriHost};
use crate::config::UriPolicy;
use crate::flags::{client, mail, message, rcpt};
use crate::log::catalog;
use crate::reply::catalog as replies;
use crate::reply::{Reply, Verdict};
use crate::session::{Session, CONTENT_LIMIT};

/// Most addresses of one URI host tested against uri-dns-bl.
const MAX_ADDRS_PER_HOST: usize = 4;

/// The first finding: looked-up name, list, whether the URI had no scheme.
struct Found {
    name: String,
    list: String,
    implicit: bool,
}

impl Session {
    /// End of message: test the message's URI hosts against the URI lists.
    pub(crate) async fn uribl_eom(&mut self) -> Verdict {
        let policy = self.policy().clone();
        let white = self.client_flags.has(client::WHITE)
            || self.tx.as_ref().is_some_and(|t| t.mail_flags.has(mail::WHITE) || t.rcpt_flags.has(rcpt::WHITE));
        let Some(content) = self.tx.as_mut().and_then(|t| t.content.take()) else { return Verdict::Continue };
        if white || !policy.scans_uris() {
            return Verdict::Continue;
        }
        let max = policy.config.uri_max_test;
        // Decoding MIME is CPU work; keep it off the async workers for large messages.
        let hosts = if content.len() > 64 * 1024 {
            tokio::task::spawn_blocking(move || extract_hosts(&content, CONTENT_LIMIT, max)).await.unwrap_or_default()
        } else {
            extract_hosts(&content, CONTENT_LIMIT, max)
        };
        if self.debugging(&catalog::DEBUG_URI) {
            for (n, host) in hosts.iter().take(max).enumerate() {
                let shown = match host {
                    UriHost::Ip(ip) => ip.to_string(),
                    UriHost::Domain { host, .. } => host.clone(),
                };
                self.emit(&catalog::DEBUG_URI, &[&shown, &(n + 1), &max]);
            }
        }
        let p: &crate::policy::Policy = &policy;
        let dns = &p.dns;
        let checks = hosts.into_iter().take(max).map(|host| async move {
            let policy = p;
            match host {
                UriHost::Ip(ip) => {
                    let (bl, dbl) =
                        tokio::join!(maybe_ip(dns, &policy.config.uri_bl, ip), maybe_ip(dns, &policy.config.uri_dns_bl, ip));
                    (ip.to_string(), false, vec![("uri-bl", bl), ("uri-dns-bl", dbl)])
                }
                UriHost::Domain { host, registered, implicit } => {
                    let name = registered.clone().unwrap_or_else(|| host.clone());
                    let bl = async {
                        if policy.config.uri_bl.is_empty() {
                            None
                        } else {
                            Some(query_domain(dns, &policy.config.uri_bl, &name).await)
                        }
                    };
                    let dbl = async {
                        if policy.config.uri_dns_bl.is_empty() {
                            return None;
                        }
                        let addrs = dns.ip_addrs(&host).await;
                        let addrs: Vec<IpAddr> =
                            addrs.found().map(|a| a.iter().copied().take(MAX_ADDRS_PER_HOST).collect()).unwrap_or_default();
                        let mut hit: Option<ListResult> = None;
                        for a in addrs {
                            let r = query_ip(dns, &policy.config.uri_dns_bl, a).await;
                            if r.listed(1) {
                                return Some(r);
                            }
                            hit.get_or_insert(r);
                        }
                        hit
                    };
                    let (bl, dbl) = tokio::join!(bl, dbl);
                    (name, implicit, vec![("uri-bl", bl), ("uri-dns-bl", dbl)])
                }
            }
        });
        let results = futures_util::future::join_all(checks).await;
        let mut found: Option<Found> = None;
        for (name, implicit, lists) in results {
            for (option, result) in lists {
                self.log_failures(option, &result, &name);
                if let Some(list) = result.as_ref().filter(|r| r.listed(1)).and_then(|r| r.first_hit()) {
                    self.emit(&catalog::LIST_FOUND, &[&option, &name, &list]);
                    if found.is_none() {
                        found = Some(Found { name: name.clone(), list: list.to_string(), implicit });
                    }
                }
            }
        }
        let Some(f) = found else { return Verdict::Continue };
        if let Some(tx) = self.tx.as_mut() {
            tx.msg_flags.set(message::URI_BL);
            if f.implicit {
                tx.msg_flags.set(message::URI_IMPLICIT);
            }
            tx.msg_flags.set(message::POLICY);
        }
        // smtpf's text carries the number of the line that explains it (#762).
        let text = format!("black listed {} by {} #762", f.name, f.list);
        match policy.config.uri_bl_policy {
            UriPolicy::Reject => Verdict::Reply(Reply::of(&replies::URI_BL, &[&text])),
            UriPolicy::Discard => {
                self.emit(&catalog::URI_DISCARDED, &[&text]);
                Verdict::Discard
            }
            UriPolicy::None => Verdict::Continue,
        }
    }
}

async fn maybe_ip(dns: &crate::dns::Dns, zones: &[crate::checks::dnslist::Zone], ip: IpAddr) -> Option<ListResult> {
    if zones.is_empty() {
        return None;
    }
    Some(query_ip(dns, zones, ip).await)
}

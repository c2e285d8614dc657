//! Greylisting at DATA, smtpf's way (smtpf-behaviour §1).
//!
//! A message from an unknown (client, sender, recipient) tuple is temp-failed at DATA; a proper MTA
//! retries, and once `grey-temp-fail-period` has passed the tuple passes. After a first pass smtpf
//! records the *host* part of the key (the client's PTR suffix or IP), so everything else from that
//! host passes at once for `cache-accept-ttl`, refreshed on every use. One passing recipient lets
//! the whole message through (the decision is per message, at DATA). Records live in the store
//! under `grey:` keys; a store error never refuses mail (#542/#544, the check lets the message pass).

use crate::address::bare_address;
use crate::checks::access::{Action, Tag};
use crate::checks::digest::message_id_token;
use crate::checks::greykey::{domain_suffix, ip_element, key_address, ptr_n, report_value, Deferred, GreyPass, KeyWord};
use crate::checks::ptrshape::multi_domain;
use crate::checks::spf::SpfResult;
use crate::dns::Lookup;
use crate::flags::{client, mail, message, rcpt};
use crate::log::catalog;
use crate::metrics::GreyOutcome;
use crate::reply::catalog as replies;
use crate::reply::{HeaderChange, Reply, Verdict};
use crate::session::{Session, Shown, Transaction};
use crate::store::{Record, Store, StoreError};

/// Outcome of one key.
enum KeyOutcome {
    /// Passed; `first` carries (age, created) when it left the temp-fail state just now.
    Pass { first: Option<(i64, i64)> },
    /// Still blocked for this many seconds; `first` when the tuple was seen for the first time.
    Wait { seconds: i64, first: bool },
    /// The store failed: let through (mail is never refused because we cannot read or write).
    FailOpen,
    /// Content greylisting: let DATA through and decide at end of message.
    Defer,
}

/// The recipients greylisting decides on: the policy door's one (`only`), else the transaction's.
fn decided<'a>(only: &'a [String], tx: &'a Transaction) -> &'a [String] {
    if only.is_empty() {
        &tx.recipients
    } else {
        only
    }
}

/// How stale a passed record may get before a use refreshes it (seconds).
pub const REFRESH_EVERY: i64 = 3600;

impl Session {
    /// DATA stage: greylist the message (one passing recipient lets it through).
    pub(crate) async fn greylist_data(&mut self) -> Verdict {
        self.greylist(None).await
    }

    /// The policy door's RCPT stage: greylist this recipient alone, as Postfix asks for each
    /// recipient separately. The tuple and its record are those the milter door uses at DATA.
    pub(crate) async fn greylist_rcpt(&mut self, recipient: &str) -> Verdict {
        self.greylist(Some(recipient)).await
    }

    /// Greylists the transaction's recipients, or `only` that one.
    async fn greylist(&mut self, only: Option<&str>) -> Verdict {
        // Empty (no allocation) on the milter door's DATA path.
        let only: Vec<String> = only.map(|r| vec![r.to_string()]).unwrap_or_default();
        let policy = self.policy().clone();
        let cfg = &policy.config;
        let Some(store) = self.store().cloned() else { return Verdict::Continue };
        if cfg.grey_key.is_empty() || cfg.grey_temp_fail_period == 0 {
            return Verdict::Continue;
        }
        let exempt = [client::LOCALHOST, client::RELAY, client::WHITE, client::AUTH, client::SECOND_MX, client::GREY];
        if exempt.iter().any(|f| self.client_flags.has(*f)) {
            self.metrics().grey(GreyOutcome::ExemptClient);
            return Verdict::Continue;
        }
        let (Some(client_info), Some(tx)) = (self.client.clone(), self.tx.as_ref()) else { return Verdict::Continue };
        if tx.mail_flags.has(mail::WHITE) || tx.rcpt_flags.has(rcpt::WHITE) || tx.msg_flags.has(message::DISCARD) {
            self.metrics().grey(GreyOutcome::ExemptClient);
            return Verdict::Continue;
        }
        let Some(ip) = client_info.ip else { return Verdict::Continue };
        let recipients = decided(&only, tx);
        // postgrey's whitelists: the client, or any recipient (one exempt recipient passes the
        // message, as one passing recipient does).
        if let Some(list) = &policy.grey_whitelist {
            let who = client_info.describe();
            let exempt = list.client(client_info.name.as_deref(), ip).map(|o| (who, o.clone())).or_else(|| {
                recipients.iter().find_map(|r| {
                    list.recipient(bare_address(r)).map(|o| (format!("recipient <{}>", bare_address(r)), o.clone()))
                })
            });
            if let Some((what, origin)) = exempt {
                self.emit(&catalog::GREY_WHITELISTED, &[&what, &origin]);
                self.metrics().grey(GreyOutcome::ExemptWhitelist);
                return Verdict::Continue;
            }
        }

        // Effective period: Grey-Connect: replaces, Grey-To: lowers.
        let mut period = cfg.grey_temp_fail_period as i64;
        if let Some(map) = &policy.access {
            if let Some(hit) = map.lookup_client(Tag::GreyConnect, ip, client_info.name.as_deref()) {
                if let Action::Seconds(n) = hit.action {
                    period = n as i64;
                }
            }
            for r in recipients {
                if let Some(hit) = map.lookup_mail(Tag::GreyTo, bare_address(r)) {
                    if let Action::Seconds(n) = hit.action {
                        period = period.min(n as i64);
                    }
                }
            }
        }
        if period <= 0 {
            self.metrics().grey(GreyOutcome::ExemptAccessMap);
            return Verdict::Continue;
        }

        // Key elements shared by every recipient.
        // The PTR name stands for the host only when it is forward-confirmed, SPF did not fail for
        // the sender, and it is not a dynamic pool's name or one of several unrelated names;
        // otherwise the `ptr`/`ptrn` elements are the IP (smtpf's rule).
        let spf_failed = matches!(self.spf_mail, Some(SpfResult::Fail | SpfResult::SoftFail));
        // SPF identity: the sender's domain vouches for this address, so it stands for the client
        // (once, whichever host words the key has), and any address it authorises matches.
        let spf_domain = match (&self.tx, cfg.grey_spf_identity && self.spf_mail == Some(SpfResult::Pass)) {
            (Some(tx), true) => bare_address(&tx.sender)
                .rsplit_once('@')
                .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
                .filter(|d| !d.is_empty()),
            _ => None,
        };
        let not_the_host = [client::FORGED, client::IP_IN_PTR, client::PTR_MULTIDOMAIN];
        let mut verified_ptr =
            client_info.name.clone().filter(|_| !spf_failed && !not_the_host.iter().any(|f| self.client_flags.has(*f)));
        if let Some(name) = verified_ptr.clone().filter(|_| spf_domain.is_none()) {
            if cfg.grey_key.iter().any(|w| matches!(w, KeyWord::Ptr | KeyWord::Ptrn)) && self.ptr_multi_domain(ip, &name).await {
                verified_ptr = None;
            }
        }
        let Some(tx) = self.tx.as_ref() else { return Verdict::Continue };
        let ip_text = ip_element(ip, cfg.grey_ipv4_prefix, cfg.grey_ipv6_prefix);
        let mut head: Vec<String> = Vec::new();
        let mut host_done = false;
        for w in &cfg.grey_key {
            if let (Some(domain), true) = (&spf_domain, w.is_host()) {
                if !host_done {
                    head.push(format!("spf:{domain}"));
                    host_done = true;
                }
                continue;
            }
            match w {
                KeyWord::Ip => head.push(ip_text.clone()),
                // A dotless name has no suffix to drop: its `ptrn` form stands in (smtpf).
                KeyWord::Ptr => match verified_ptr.as_deref() {
                    Some(n) => head.push(domain_suffix(n).unwrap_or_else(|| ptr_n(n))),
                    None => head.push(ip_text.clone()),
                },
                KeyWord::Ptrn => match verified_ptr.as_deref() {
                    Some(n) => head.push(ptr_n(n)),
                    None => head.push(ip_text.clone()),
                },
                KeyWord::Helo => head.push(self.helo.to_ascii_lowercase()),
                KeyWord::Helos => head.push(domain_suffix(&self.helo).unwrap_or_else(|| self.helo.to_ascii_lowercase())),
                KeyWord::Mail => head.push(key_address(&tx.sender)),
                KeyWord::Rcpt => {}
            }
        }
        let has_host = cfg.grey_key.iter().any(|w| w.is_host());
        let host_elements = if cfg.grey_key.contains(&KeyWord::Helos) { 2 } else { 1 };
        let host_key = format!("grey:{}", head.iter().take(host_elements).cloned().collect::<Vec<_>>().join(","));
        let per_rcpt = cfg.grey_key.contains(&KeyWord::Rcpt);
        let keys: Vec<String> = if per_rcpt {
            decided(&only, tx).iter().map(|r| format!("grey:{},{}", head.join(","), key_address(r)).replace(":,", ":")).collect()
        } else {
            vec![format!("grey:{}", head.join(","))]
        };

        if keys.is_empty() {
            // No recipient accepted by us: the MTA will not send the message anyway.
            return Verdict::Continue;
        }
        let now = self.now();
        // postgrey's auto-whitelist, for keys without a host element (with one, the host record
        // already whitelists a client after its first pass).
        let awl_key = (!has_host && cfg.grey_auto_whitelist_clients > 0).then(|| format!("grey:awl:{ip_text}"));
        let mut awl_count = 0u32;
        if let Some(awl) = &awl_key {
            match store.get(awl, now).await {
                Ok(Some(r)) if r.value.starts_with('0') => {
                    self.emit(&catalog::GREY_AUTO_WHITELISTED, &[&ip_text, &awl]);
                    self.grey_refresh(&store, awl, &r, now, cfg.cache_accept_ttl as i64).await;
                    self.metrics().grey(GreyOutcome::Known);
                    return Verdict::Continue;
                }
                Ok(Some(r)) => awl_count = r.value.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0),
                Ok(None) => {}
                Err(e) => self.store_error(&catalog::CACHE_GET_ERROR, &[awl], &e),
            }
        }
        let mut last_key = String::new();
        let mut wait = period;
        let mut first_sight = false;
        // Content greylisting needs the message, which only the milter door sees.
        let content = cfg.grey_content && self.door == crate::session::Door::Milter;
        for key in keys {
            last_key = key.clone();
            match self.grey_key_state(&store, &key, has_host.then_some(host_key.as_str()), period, now, content).await {
                KeyOutcome::Pass { first } => {
                    if let Some((age, created)) = first {
                        self.emit(&catalog::GREY_PASSED, &[&key, &age]);
                        self.grey_pass = Some(GreyPass { key: key.clone(), age, created });
                        self.metrics().grey(GreyOutcome::Pass);
                        self.metrics().grey_passed_after(age);
                    } else {
                        self.metrics().grey(GreyOutcome::Known);
                    }
                    if let Some(awl) = &awl_key {
                        self.grey_awl_count(&store, awl, awl_count + 1, now);
                    }
                    return Verdict::Continue;
                }
                KeyOutcome::Defer => {
                    self.grey_deferred = Some(Deferred { key, host_key: has_host.then(|| host_key.clone()), period });
                    self.metrics().grey(GreyOutcome::Deferred);
                    return Verdict::Continue;
                }
                KeyOutcome::FailOpen => {
                    self.metrics().grey(GreyOutcome::StoreError);
                    return Verdict::Continue;
                }
                KeyOutcome::Wait { seconds, first } => {
                    wait = seconds;
                    first_sight |= first;
                }
            }
        }
        let key_text = last_key.clone();
        self.metrics().grey(if first_sight { GreyOutcome::FirstSight } else { GreyOutcome::RetryTooSoon });
        self.emit(&catalog::GREY_LISTED, &[&key_text, &wait]);
        if cfg.grey_dry_run {
            self.emit(&catalog::GREY_DRY_RUN, &[&key_text]);
            return Verdict::Continue;
        }
        // The policy door never drops: Postfix asks per recipient, and a 421 at the first one
        // would leave the others unrecorded, so each would cost the sender another period.
        let drop = cfg.grey_drop && has_host && self.door == crate::session::Door::Milter;
        let code = if drop { 421 } else { 451 };
        Verdict::Reply(Reply::of(&replies::GREY_TEMPFAIL, &[]).with_code(code))
    }

    /// Whether the client's PTR names span unrelated domains (flag `ptr_multidomain`): then its
    /// PTR suffix names no one host farm, and greylisting keys it by IP. One PTR lookup per
    /// session, answered from the resolver's cache (the MTA has just asked the same); a failed
    /// lookup keeps the name, as the MTA confirmed it.
    async fn ptr_multi_domain(&mut self, ip: std::net::IpAddr, name: &str) -> bool {
        if self.ptr_checked {
            return self.client_flags.has(client::PTR_MULTIDOMAIN);
        }
        self.ptr_checked = true;
        let dns = self.policy().dns.clone();
        if let Lookup::Found(names) = dns.ptr(ip).await {
            if multi_domain(name, &names) {
                self.client_flags.set(client::PTR_MULTIDOMAIN);
                return true;
            }
        }
        false
    }

    /// One key through smtpf's state machine (§1.5).
    async fn grey_key_state(
        &mut self,
        store: &Store,
        key: &str,
        host_key: Option<&str>,
        period: i64,
        now: i64,
        content: bool,
    ) -> KeyOutcome {
        let cfg_accept = self.policy().config.cache_accept_ttl as i64;
        let cfg_tempfail = self.policy().config.grey_temp_fail_ttl as i64;
        // A host that passed before passes at once, and its record slides forward.
        if let Some(hk) = host_key {
            let found = store.get(hk, now).await;
            self.debug_cache("get", hk, &Shown(&found));
            match found {
                Ok(Some(r)) if r.value.starts_with('0') => {
                    self.grey_refresh(store, hk, &r, now, cfg_accept).await;
                    return KeyOutcome::Pass { first: None };
                }
                Ok(_) => {}
                Err(e) => {
                    self.store_error(&catalog::CACHE_GET_ERROR, &[&hk], &e);
                    return KeyOutcome::FailOpen;
                }
            }
        }
        let found = store.get(key, now).await;
        self.debug_cache("get", key, &Shown(&found));
        let found = match found {
            Ok(r) => r,
            Err(e) => {
                self.store_error(&catalog::CACHE_GET_ERROR, &[&key], &e);
                return KeyOutcome::FailOpen;
            }
        };
        let record = match found {
            Some(r) => r,
            None => {
                let new = Record { value: "4".into(), created: now, expires: now + cfg_tempfail };
                let claimed = store.claim(key, new, now).await;
                self.debug_cache("claim", key, &Shown(&claimed));
                match claimed {
                    // Another session (or MX host) created it a moment ago: use theirs.
                    Ok(Some(existing)) => existing,
                    // grey-content: DATA is let through so that the body can be hashed.
                    Ok(None) if content => return KeyOutcome::Defer,
                    Ok(None) => return KeyOutcome::Wait { seconds: period, first: true },
                    // Overload (the write queue is full) is exactly when a spam run is on: a tuple
                    // never seen is temp-failed all the same, and its retry finds the queue drained.
                    Err(e @ StoreError::Busy) => {
                        self.store_error(&catalog::CACHE_PUT_ERROR, &[&key, &"4"], &e);
                        return if content { KeyOutcome::Defer } else { KeyOutcome::Wait { seconds: period, first: true } };
                    }
                    // A broken store fails open: mail is never refused because we cannot write.
                    Err(e) => {
                        self.store_error(&catalog::CACHE_PUT_ERROR, &[&key, &"4"], &e);
                        return KeyOutcome::FailOpen;
                    }
                }
            }
        };
        if record.value.starts_with('4') {
            if content && record.created + period <= now {
                // Past the period: the content decides, at end of message.
                return KeyOutcome::Defer;
            }
            if record.created + period <= now {
                let age = now - record.created;
                self.emit(&catalog::GREY_PASS, &[&key, &age]);
                // Retries never extend the temp-fail record; passing writes the host record
                // (keeping the first-seen time), or upgrades the key itself when it has no host part.
                let (target, created) = match host_key {
                    Some(hk) => (hk, record.created),
                    None => (key, record.created),
                };
                let passed = Record { value: "0".into(), created, expires: now + cfg_accept };
                let put = store.put(target, passed).await;
                self.debug_cache("put", target, &Shown(&put.as_ref().map(|_| "0")));
                if let Err(e) = put {
                    self.store_error(&catalog::CACHE_PUT_ERROR, &[&target, &"0"], &e);
                }
                return KeyOutcome::Pass { first: Some((age, record.created)) };
            }
            return KeyOutcome::Wait { seconds: record.created + period - now, first: false };
        }
        if record.value.starts_with('0') {
            self.grey_refresh(store, key, &record, now, cfg_accept).await;
            return KeyOutcome::Pass { first: None };
        }
        self.emit(&catalog::GREY_UNEXPECTED, &[&key, &record.value]);
        KeyOutcome::Pass { first: None }
    }

    /// Counts one more message of an auto-whitelist candidate; at `grey-auto-whitelist-clients`
    /// the record becomes a passed one (`0`). Detached: the message does not wait for it.
    fn grey_awl_count(&mut self, store: &Store, key: &str, count: u32, now: i64) {
        let cfg = &self.policy().config;
        let accept = cfg.cache_accept_ttl as i64;
        let value = if count >= cfg.grey_auto_whitelist_clients { "0".to_string() } else { format!("4 {count}") };
        if let Err(e) = store.put_detached(key, Record::new(value.clone(), now, now + accept)) {
            self.store_error(&catalog::CACHE_PUT_ERROR, &[&key, &value], &e);
        }
    }

    /// Slides a passed record forward, as smtpf does on every use — but at most once per
    /// [`REFRESH_EVERY`] seconds, so a busy sender's every message does not cost a store write
    /// (the record still never expires while the host keeps sending).
    async fn grey_refresh(&mut self, store: &Store, key: &str, record: &Record, now: i64, accept_ttl: i64) {
        if record.expires - now > accept_ttl - REFRESH_EVERY {
            return;
        }
        let fresh = Record { value: "0".into(), created: now, expires: now + accept_ttl };
        // Detached: nothing in this message depends on the refresh being stored.
        let queued = store.put_detached(key, fresh);
        self.debug_cache("put-detached", key, &Shown(&queued.as_ref().map(|_| "0 (refresh)")));
        if let Err(e) = queued {
            self.store_error(&catalog::CACHE_PUT_ERROR, &[&key, &"0"], &e);
        }
    }

    /// End of message with grey-content: compare the message's content hash with the ones seen
    /// for the tuple (smtpf-behaviour §1.8).
    pub(crate) async fn grey_content_eom(&mut self, hash: &str) -> Verdict {
        let Some(def) = self.grey_deferred.take() else { return Verdict::Continue };
        let Some(store) = self.store().cloned() else { return Verdict::Continue };
        let cfg = self.policy().config.clone();
        let now = self.now();
        let key = def.key.as_str();
        let shown = key.to_string();
        let tempfail_ttl = cfg.grey_temp_fail_ttl as i64;
        let message_id = self.tx.as_ref().and_then(|t| t.message_id.clone()).map(|m| message_id_token(&m)).unwrap_or_default();
        let record = match store.get(key, now).await {
            Ok(r) => r,
            Err(e) => {
                self.store_error(&catalog::CACHE_GET_ERROR, &[&key], &e);
                return Verdict::Continue;
            }
        };
        let refuse_in_period = |s: &mut Session, wait: i64| {
            if let Some(tx) = s.tx.as_mut() {
                tx.msg_flags.set(message::GREY_CONTENT);
            }
            s.emit(&catalog::GREY_CONTENT_LISTED, &[&shown, &wait]);
            if cfg.grey_dry_run {
                s.emit(&catalog::GREY_DRY_RUN, &[&shown]);
                return Verdict::Continue;
            }
            let code = if cfg.grey_drop && def.host_key.is_some() { 421 } else { 451 };
            Verdict::Reply(Reply::of(&replies::GREY_TEMPFAIL, &[]).with_code(code))
        };
        let fields: Vec<String> =
            record.as_ref().map(|r| r.value.split_whitespace().map(str::to_string).collect()).unwrap_or_default();
        let record = match (record, fields.len()) {
            // After the Message-ID workaround the record holds one hash: the retry passes.
            (Some(r), 2) => return self.grey_content_pass(&store, &def, now, Some(r.created)).await,
            (Some(r), n) if n >= 3 => r,
            // First complete message (or a record without a hash): remember the hash; the
            // period starts now, at the end of the message.
            _ => {
                let value = format!("4 {hash} {hash}");
                if let Err(e) = store.put(key, Record::new(value.clone(), now, now + tempfail_ttl)).await {
                    self.store_error(&catalog::CACHE_PUT_ERROR, &[&key, &value], &e);
                    return Verdict::Continue;
                }
                if !message_id.is_empty() {
                    let mid_key = format!("grey-msgid:{message_id}");
                    let _ = store.put(&mid_key, Record::new("4", now, now + 7200)).await;
                }
                return refuse_in_period(self, def.period);
            }
        };
        if record.created + def.period > now {
            return refuse_in_period(self, record.created + def.period - now);
        }
        let (h1, h2) = (fields[1].as_str(), fields[2].as_str());
        if hash == h1 || hash == h2 {
            return self.grey_content_pass(&store, &def, now, Some(record.created)).await;
        }
        // The retry is not the message first seen: spamware rotating content, or an MTA that
        // rebuilt the MIME structure. smtpf answers 450 (Exchange gives up on old queued mail
        // after repeated 451s) and remembers the newest hash.
        if let Some(tx) = self.tx.as_mut() {
            tx.msg_flags.set(message::GREY_HASH_MISMATCH);
        }
        self.emit(&catalog::GREY_CONTENT_MISMATCH, &[]);
        let mid_key = format!("grey-msgid:{message_id}");
        let workaround = !message_id.is_empty() && matches!(store.get(&mid_key, now).await, Ok(Some(_)));
        let value = if workaround {
            let _ = store.delete(&mid_key).await;
            self.emit(&catalog::GREY_CONTENT_REPLACED, &[&message_id, &shown, &hash]);
            format!("4 {hash}")
        } else {
            format!("4 {h1} {hash}")
        };
        if let Err(e) = store.put(key, Record::new(value.clone(), record.created, record.expires)).await {
            self.store_error(&catalog::CACHE_PUT_ERROR, &[&key, &value], &e);
        }
        if cfg.grey_dry_run {
            self.emit(&catalog::GREY_DRY_RUN, &[&shown]);
            return Verdict::Continue;
        }
        Verdict::Reply(Reply::of(&replies::GREY_CONTENT_MISMATCH, &[]))
    }

    async fn grey_content_pass(&mut self, store: &Store, def: &Deferred, now: i64, created: Option<i64>) -> Verdict {
        let accept = self.policy().config.cache_accept_ttl as i64;
        let created = created.unwrap_or(now);
        let age = now - created;
        let key = def.key.as_str();
        self.emit(&catalog::GREY_PASS, &[&key, &age]);
        let target = def.host_key.as_deref().unwrap_or(key);
        if let Err(e) = store.put(target, Record::new("0", created, now + accept)).await {
            self.store_error(&catalog::CACHE_PUT_ERROR, &[&target, &"0"], &e);
        }
        self.emit(&catalog::GREY_PASSED, &[&key, &age]);
        self.metrics().grey(GreyOutcome::Pass);
        self.metrics().grey_passed_after(age);
        self.grey_pass = Some(GreyPass { key: def.key.clone(), age, created });
        Verdict::Continue
    }

    /// End of message: the report header for a tuple that passed just now, replacing any the
    /// message already carried (#851).
    pub(crate) fn grey_report_header(&mut self) -> Vec<HeaderChange> {
        let Some(pass) = self.grey_pass.take() else { return Vec::new() };
        let name = self.policy().config.grey_report_header.clone();
        if name.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let existing = self.tx.as_ref().map(|t| t.report_headers_seen).unwrap_or(0);
        for index in (1..=existing).rev() {
            out.push(HeaderChange::Remove { index, name: name.clone() });
        }
        if existing > 0 {
            self.emit(&catalog::HEADER_REMOVED, &[&name]);
        }
        out.push(HeaderChange::Add { name, value: report_value(&pass) });
        out
    }
}

//! Duplicate-message detection at end of message (smtpf's dupmsg, smtpf-behaviour §2).
//!
//! A sending MTA that loses the connection after its final dot but before reading our 250 sends
//! the whole message again; several MX hosts, or a broken client, can do the same. The digest of
//! the raw body bytes plus the Message-ID, with the first recipient, names a message; a second
//! message with the same name within `dupmsg-ttl` is a duplicate. smtpf discards such retries; a
//! milter cannot see whether the MTA finally queued the first copy (a later milter or a full disk
//! may tempfail it after our answer), so discarding could lose the only copy. The default policy
//! therefore only tags the duplicate with a header; `discard` and `reject` are there for sites that
//! run smtpf-milter last in the milter chain and accept that trade.

use crate::checks::digest::{message_id_token, DupPolicy, DUPLICATE_HEADER};
use crate::flags::{client, message};
use crate::log::catalog;
use crate::reply::catalog as replies;
use crate::reply::{HeaderChange, Reply, Verdict};
use crate::session::{Session, Shown};
use crate::store::Record;

impl Session {
    /// End of message: the dupmsg key of this message, when the check is on.
    pub(crate) fn dupmsg_key(&mut self) -> Option<String> {
        if self.policy().config.dupmsg_ttl == 0 {
            return None;
        }
        let tx = self.tx.as_mut()?;
        let digest = tx.body_digest.take()?;
        let first = tx.recipients.first()?.clone();
        let mid = tx.message_id.as_deref().map(message_id_token).unwrap_or_default();
        Some(format!("dupmsg:{},{}", digest.finish(&mid), first))
    }

    /// Looks the message up; a duplicate gets the configured policy.
    pub(crate) async fn dupmsg_check(&mut self, key: &str) -> Verdict {
        let Some(store) = self.store().cloned() else { return Verdict::Continue };
        let now = self.now();
        let found = store.get(key, now).await;
        self.debug_cache("get", key, &Shown(&found));
        let found = match found {
            Ok(f) => f,
            Err(e) => {
                self.store_error(&catalog::CACHE_GET_ERROR, &[&key], &e);
                return Verdict::Continue;
            }
        };
        let Some(previous) = found else {
            self.emit(&catalog::DEBUG_DUPMSG, &[&key, &"not seen before"]);
            return Verdict::Continue;
        };
        self.emit(&catalog::DEBUG_DUPMSG, &[&key, &format_args!("seen before: {}", previous.value)]);
        let policy = self.policy().config.dupmsg_policy;
        let previous_sid = previous.value.split_whitespace().nth(1).unwrap_or("").to_string();
        let shown = key;
        self.emit(&catalog::DUPLICATE, &[&policy.word(), &shown, &previous_sid]);
        self.metrics().verdict("dupmsg", policy.word());
        match policy {
            DupPolicy::Tag => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.msg_flags.set(message::TAG);
                }
                Verdict::Edit(vec![HeaderChange::Add { name: DUPLICATE_HEADER.into(), value: previous_sid }])
            }
            DupPolicy::Discard => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.msg_flags.set(message::DISCARD);
                }
                Verdict::Discard
            }
            DupPolicy::Reject => Verdict::Reply(Reply::of(&replies::DUPLICATE_REJECT, &[])),
        }
    }

    /// Remembers a message we let through, so that a copy sent again is recognised. Detached:
    /// the MTA's answer does not wait for the write.
    ///
    /// smtpf records a message after the client lost our 250 (it will send it again), and with
    /// `dupmsg-track-all` every accepted message, but never one from localhost, a relay or a
    /// white-listed client: their resends are the site's own business. A milter does not see
    /// the client's I/O (the MTA writes the 250), so the end of a message we let through is the
    /// closest point; the client exemptions are smtpf's, authenticated clients counting as
    /// relays.
    pub(crate) async fn dupmsg_record(&mut self, key: &str) {
        let exempt = [client::LOCALHOST, client::RELAY, client::AUTH, client::WHITE];
        if exempt.iter().any(|f| self.client_flags.has(*f)) {
            self.emit(&catalog::DEBUG_DUPMSG, &[&key, &"not recorded: localhost, authenticated or white-listed client"]);
            return;
        }
        let Some(store) = self.store().cloned() else { return };
        let now = self.now();
        let cfg = &self.policy().config;
        let value = format!("{} {}", cfg.dupmsg_policy.code(), self.sid);
        let record = Record::new(value.clone(), now, now + cfg.dupmsg_ttl as i64);
        let queued = store.put_detached(key, record);
        self.debug_cache("put-detached", key, &Shown(&queued.as_ref().map(|_| &value)));
        self.emit(&catalog::DEBUG_DUPMSG, &[&key, &format_args!("recorded ({value})")]);
        if let Err(e) = queued {
            self.store_error(&catalog::CACHE_PUT_ERROR, &[&key, &value], &e);
        }
    }
}

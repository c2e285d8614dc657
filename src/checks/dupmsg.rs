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

use sha2::{Digest, Sha256};

use crate::log::catalog;
use crate::milter::codec::Response;
use crate::reply::{Reply, Verdict};
use crate::session::Session;
use crate::store::Record;

/// What a duplicate gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DupPolicy {
    /// Add `X-Smtpf-Duplicate: <previous session>` and let it through.
    Tag,
    /// Accept and throw away (milter discard).
    Discard,
    /// 550 5.3.4 duplicate message rejected #340.
    Reject,
}

impl DupPolicy {
    /// The word used in #337 and in the config.
    pub fn word(self) -> &'static str {
        match self {
            DupPolicy::Tag => "TAG",
            DupPolicy::Discard => "DISCARD",
            DupPolicy::Reject => "REJECT",
        }
    }

    /// smtpf's stored code for the policy (TAG 1, REJECT 5, DISCARD 6).
    fn code(self) -> u8 {
        match self {
            DupPolicy::Tag => 1,
            DupPolicy::Reject => 5,
            DupPolicy::Discard => 6,
        }
    }
}

/// The header that marks a duplicate under the `tag` policy.
pub const DUPLICATE_HEADER: &str = "X-Smtpf-Duplicate";

/// A running digest of one message's body.
#[derive(Clone, Default)]
pub struct BodyDigest(Sha256);

impl std::fmt::Debug for BodyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyDigest")
    }
}

impl BodyDigest {
    /// Adds body bytes as received.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The hex digest of body + Message-ID.
    pub fn finish(mut self, message_id: &str) -> String {
        self.0.update(message_id.as_bytes());
        self.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The Message-ID as smtpf keeps it: from the first `<` up to the first white space.
pub fn message_id_token(value: &str) -> String {
    let v = value.trim();
    let start = v.find('<').unwrap_or(0);
    v[start..].split_whitespace().next().unwrap_or("").to_string()
}

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
    pub(crate) async fn dupmsg_check(&mut self, key: &str) -> (Verdict, Vec<Response>) {
        let Some(store) = self.store().cloned() else { return (Verdict::Continue, Vec::new()) };
        let now = self.now();
        let found = match store.get(key, now).await {
            Ok(f) => f,
            Err(e) => {
                self.store_error(&catalog::CACHE_GET_ERROR, &[&key], &e);
                return (Verdict::Continue, Vec::new());
            }
        };
        let Some(previous) = found else { return (Verdict::Continue, Vec::new()) };
        let policy = self.policy().config.dupmsg_policy;
        let previous_sid = previous.value.split_whitespace().nth(1).unwrap_or("").to_string();
        let shown = key.strip_prefix("dupmsg:").unwrap_or(key);
        self.emit(&catalog::DUPLICATE, &[&policy.word(), &shown, &previous_sid]);
        match policy {
            DupPolicy::Tag => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.msg_flags.set(crate::flags::message::TAG);
                }
                (Verdict::Continue, vec![Response::AddHeader { name: DUPLICATE_HEADER.into(), value: previous_sid }])
            }
            DupPolicy::Discard => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.msg_flags.set(crate::flags::message::DISCARD);
                }
                (Verdict::Discard, Vec::new())
            }
            DupPolicy::Reject => (Verdict::Reply(Reply::new(550, "5.3.4", "duplicate message rejected", 340)), Vec::new()),
        }
    }

    /// Remembers a message we let through, so that a copy sent again is recognised. Detached:
    /// the MTA's answer does not wait for the write.
    pub(crate) async fn dupmsg_record(&mut self, key: &str) {
        let Some(store) = self.store().cloned() else { return };
        let now = self.now();
        let cfg = &self.policy().config;
        let value = format!("{} {}", cfg.dupmsg_policy.code(), self.sid);
        let record = Record::new(value.clone(), now, now + cfg.dupmsg_ttl as i64);
        if let Err(e) = store.put_detached(key, record) {
            self.store_error(&catalog::CACHE_PUT_ERROR, &[&key, &value], &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_tokens() {
        assert_eq!(message_id_token(" <a@b> (comment)"), "<a@b>");
        assert_eq!(message_id_token("junk <x@y>"), "<x@y>");
        assert_eq!(message_id_token(""), "");
    }

    #[test]
    fn digest_depends_on_body_and_message_id() {
        let mut a = BodyDigest::default();
        a.update(b"hello\r\n");
        let b = a.clone();
        let mut c = BodyDigest::default();
        c.update(b"hello!\r\n");
        let da = a.finish("<1@x>");
        assert_eq!(da.len(), 64);
        assert_ne!(da, b.clone().finish("<2@x>"));
        assert_eq!(da, b.finish("<1@x>"));
        assert_ne!(da, c.finish("<1@x>"));
    }
}

//! The words of duplicate detection: `dupmsg-policy`, the running body digest and the
//! Message-ID token that together name a message.
//!
//! The config file speaks [`DupPolicy`], the session feeds [`BodyDigest`] as body chunks arrive, and
//! greylisting's content workaround reads [`message_id_token`]; none of them needs the check's
//! stage steps ([`super::dupmsg`]), so they live here, below the session.

use sha2::{Digest, Sha256};

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
    pub fn code(self) -> u8 {
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

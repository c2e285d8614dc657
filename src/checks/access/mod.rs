//! The access-map: the postmaster's own black, white and grey list, in smtpf's `access.cf` syntax.
//!
//! smtpf sites keep their local policy in an access-map: one `key value` line per client address,
//! network, host name, HELO name, sender or recipient, saying OK (white list), REJECT, TEMPFAIL,
//! DISCARD and so on, plus per-client and per-recipient greylisting periods. This module reads such
//! a text file once (at start-up and again at SIGHUP) into an in-memory index, so that the checks
//! at each SMTP stage can ask "what does the map say about this client / HELO / address?" without
//! any file I/O. Lookups try keys from most to least specific in smtpf's order and stop at the first
//! key found; the right-hand side is either one action or a pattern list (`!glob!`, `[net/cidr]`,
//! `/regex/`, each followed by an action) that is matched against the client, HELO or address.
//! Syntax errors are returned with the file name, line and smtpf's log message number; nothing is
//! left to be discovered while mail is flowing. Turning a [`Hit`] into an SMTP reply is the job of
//! the calling check, which knows the stage.
//!
//! The module is cut in three, and the rest of the milter sees only what is re-exported here:
//!
//! - `vocab`: the words both halves and the callers share: [`Tag`] (which kind of key),
//!   [`Action`] (what an entry decides) and [`Hit`] (what a lookup found).
//! - `syntax`: the file format: lines, keys and their normal forms, right-hand sides, patterns
//!   and action words, and the errors ([`AccessError`]) and [`Warning`]s with smtpf's wording and
//!   message numbers. [`AccessMap::parse`] and [`AccessMap::load`] live there.
//! - `index`: what a parsed file becomes and how it is asked: [`AccessMap`]'s key index and
//!   per-tag CIDR index, smtpf's lookup order for each stage, and the matching of pattern lists
//!   against the client, HELO or address. It knows nothing of the file's text; `syntax` fills it.

mod index;
mod syntax;
mod vocab;

pub use index::AccessMap;
pub use syntax::{AccessError, Warning};
pub use vocab::{Action, Hit, Tag};

/// Helpers the unit tests of `syntax` and `index` share: parse a map or expect an error, and
/// shorthands for the lookups most tests make.
#[cfg(test)]
mod test_support {
    use std::net::IpAddr;

    use super::{AccessError, AccessMap, Hit, Tag, Warning};

    pub(super) fn map(text: &str) -> AccessMap {
        match AccessMap::parse(text, "access.cf") {
            Ok((m, _)) => m,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    pub(super) fn err(text: &str) -> AccessError {
        match AccessMap::parse(text, "access.cf") {
            Ok(_) => panic!("expected an error for {text:?}"),
            Err(e) => e,
        }
    }

    pub(super) fn warnings(text: &str) -> Vec<Warning> {
        AccessMap::parse(text, "access.cf").map(|(_, w)| w).unwrap_or_else(|e| panic!("unexpected error: {e}"))
    }

    pub(super) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(super) fn client<'a>(m: &'a AccessMap, addr: &str, ptr: Option<&str>) -> Option<Hit<'a>> {
        m.lookup_client(Tag::Connect, ip(addr), ptr)
    }

    pub(super) fn key_of(hit: Option<Hit<'_>>) -> Option<&str> {
        hit.map(|h| h.key)
    }
}

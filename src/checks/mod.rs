//! The checks, one module per concept, in two kinds.
//!
//! **Engines and vocabulary** import nothing of the session: they are plain functions and types
//! that the config, the session and the stage steps all use.
//! - [`access`]: the access-map file → index → lookups.
//! - [`dnslist`]: DNS list syntax (`dns-bl` entries) and queries.
//! - [`uri`]: URI hosts of a message; [`greycontent`]: the content hash of grey-content.
//! - [`spf`]: SPF (RFC 7208) of MAIL FROM and HELO.
//! - [`greykey`]: greylisting's words (`grey-key` elements, key spelling, deferred/passed state,
//!   the report header's value); [`digest`]: duplicate detection's words (`dupmsg-policy`, the
//!   body digest, the Message-ID token).
//! - [`greywhitelist`]: postgrey's whitelist files (clients, recipients) as greylisting exemptions.
//! - [`ptrshape`]: what a PTR name says (the address built into a dynamic pool's name, PTR names
//!   spanning unrelated domains), for greylisting's `ptr` element.
//!
//! **Stage steps** are `impl Session` blocks: methods the session calls at each SMTP stage, in
//! smtpf's order. They import the session; the session never imports them (it only calls their
//! methods), so data flows one way. Each returns a [`crate::reply::Verdict`].
//! - [`listing`]: `listing_connect`, `listing_helo`, `listing_mail`, `listing_rcpt` (white/grey/
//!   black listing from the access-map and the DNS lists).
//! - [`mx`]: `mx_mail` (sender-domain MX verification at MAIL), `mx_rcpt` (is the client our backup MX).
//! - [`greylist`]: `greylist_data` (DATA), `grey_content_eom` and `grey_report_header` (end of
//!   message).
//! - [`dupmsg`]: `dupmsg_key`, `dupmsg_check`, `dupmsg_record` (end of message).
//! - [`uribl`]: `uribl_eom` (URI lists at end of message).

pub mod access;
pub mod digest;
pub mod dnslist;
pub mod dupmsg;
pub mod greycontent;
pub mod greykey;
pub mod greylist;
pub mod greywhitelist;
pub mod listing;
pub mod mx;
pub mod ptrshape;
pub mod spf;
pub mod uri;
pub mod uribl;

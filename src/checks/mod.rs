//! The checks, one module per concept. Each adds its stage steps to the session; the session
//! calls them in smtpf's order.
//!
//! - [`access`]: the access-map file → index → lookups.
//! - [`dnslist`]: DNS list syntax and queries (dns-bl/-wl/-gl, uri lists).
//! - [`listing`]: white/grey/black listing at connect, HELO, MAIL, RCPT.
//! - [`mx`]: sender-domain MX verification at MAIL; [`spf`]: SPF of MAIL FROM and HELO.
//! - [`greylist`]: greylisting at DATA ([`greycontent`]: the content hash); [`dupmsg`]: duplicate
//!   messages at end of message.
//! - [`uri`]: URI hosts of a message; [`uribl`]: the URI lists at end of message.

pub mod access;
pub mod dnslist;
pub mod dupmsg;
pub mod greycontent;
pub mod greylist;
pub mod listing;
pub mod mx;
pub mod spf;
pub mod uri;
pub mod uribl;

//! smtpf-milter: smtpf's SMTP checks as a milter for Postfix and Sendmail.
//!
//! Data flows one way: protocol ([`milter`]) → [`session`] → checks → verdict ([`reply`]) →
//! protocol + numbered log lines ([`log`]). [`daemon`] ties the pieces into a running service.

pub mod address;
pub mod admin;
pub mod checks;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod dns_raw;
pub mod flags;
pub mod ids;
pub mod log;
pub mod manpages;
pub mod metrics;
pub mod metrics_http;
pub mod milter;
pub mod policy;
pub mod policy_door;
pub mod postfix_policy;
pub mod reply;
pub mod report;
pub mod server;
pub mod session;
pub mod shared;
pub mod store;
pub mod sync;
pub mod systemd;
pub mod text;

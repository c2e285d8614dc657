//! The milter protocol, both sides: frames and commands ([`codec`]), option negotiation
//! ([`negotiate`]), listening sockets ([`listen`]) and the MTA side ([`client`]) used by the tests
//! and the benchmark. Nothing here knows about policy.

pub mod client;
pub mod codec;
pub mod listen;
pub mod negotiate;

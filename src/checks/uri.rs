//! URI hosts of a message (being written).
use std::net::IpAddr;
/// A URI host.
pub enum UriHost {
    Domain { host: String, registered: Option<String>, implicit: bool },
    Ip(IpAddr),
}
/// The distinct URI hosts of a message.
pub fn extract_hosts(_message: &[u8], _max_bytes: usize, _max_hosts: usize) -> Vec<UriHost> {
    Vec::new()
}

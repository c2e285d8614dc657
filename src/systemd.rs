//! systemd integration: `sd_notify` status messages for `Type=notify` units.
//!
//! Without `NOTIFY_SOCKET` (not under systemd) every call is a no-op, so the daemon runs the same
//! in a terminal, in tests and under a service manager.

use std::os::unix::net::UnixDatagram;

/// Sends one notification (e.g. `READY=1`); errors are ignored, as sd_notify(3) advises.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(sock) = UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = sock.send_to_addr(state.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(state.as_bytes(), &path);
    }
}

/// `MONOTONIC_USEC=` value systemd wants with `RELOADING=1`.
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0)
}

//! Listening sockets: unix and TCP, bound from `milter-socket` or inherited from systemd.
//!
//! A unix socket path gets its parent directory created, a stale socket file (nobody answering)
//! removed, and a live one refused, so two daemons never steal each other's socket. Permissions and
//! ownership are set before the MTA can connect.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::log::os_error;

/// Where the daemon listens for its MTA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketSpec {
    /// A unix-domain socket (`unix:PATH` or `local:PATH`).
    Unix(PathBuf),
    /// A TCP socket: host text (IP literal or name) and port.
    Inet { host: String, port: u16, v6: bool },
}

impl SocketSpec {
    /// Parses libmilter (`inet:PORT@HOST`, `local:PATH`) and Postfix (`inet:HOST:PORT`, `unix:PATH`)
    /// forms, so admins can paste either.
    pub fn parse(text: &str) -> Result<SocketSpec, String> {
        let text = text.trim();
        let (scheme, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("\"{text}\" has no scheme; use unix:PATH, inet:PORT@HOST or inet:HOST:PORT"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "unix" | "local" => {
                if rest.is_empty() {
                    return Err(format!("\"{text}\" has an empty path"));
                }
                if rest.len() > 100 {
                    return Err(format!("\"{text}\": unix socket paths are limited to 100 bytes"));
                }
                Ok(SocketSpec::Unix(PathBuf::from(rest)))
            }
            "inet" | "inet6" => {
                let v6 = scheme.eq_ignore_ascii_case("inet6");
                let (port, host) = if let Some((port, host)) = rest.split_once('@') {
                    // inet6:8894@[::1] means inet6:8894@::1; the brackets are not part of the name.
                    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
                    (port, host.to_string())
                } else if let Some(stripped) = rest.strip_prefix('[') {
                    // inet:[::1]:8894
                    let (host, port) = stripped.split_once("]:").ok_or_else(|| format!("\"{text}\": expected [ADDRESS]:PORT"))?;
                    (port, host.to_string())
                } else if let Some((host, port)) = rest.rsplit_once(':').filter(|_| !v6) {
                    (port, host.to_string())
                } else {
                    (rest, String::new())
                };
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("\"{text}\": port \"{port}\" is not a number from 1 to 65535"))?;
                let host = if host.is_empty() {
                    if v6 {
                        "::".to_string()
                    } else {
                        "0.0.0.0".to_string()
                    }
                } else {
                    host
                };
                if v6 && host.parse::<std::net::Ipv6Addr>().is_err() && host.parse::<IpAddr>().is_ok() {
                    return Err(format!("\"{text}\": inet6 needs an IPv6 address"));
                }
                Ok(SocketSpec::Inet { host, port, v6 })
            }
            other => Err(format!("\"{text}\": unknown socket type \"{other}\"; use unix:, local:, inet: or inet6:")),
        }
    }
}

/// Parses a unix socket's permissions written as octal text ("0660"), as `milter-socket-mode`
/// takes them, so every tool that creates a milter socket accepts the same spelling.
pub fn parse_octal_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text.trim(), 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        Ok(_) => Err("mode must be at most \"0777\"".into()),
        Err(_) => Err(format!("\"{text}\" is not an octal mode like \"0660\"")),
    }
}

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketSpec::Unix(p) => write!(f, "unix:{}", p.display()),
            SocketSpec::Inet { host, port, v6 } => write!(f, "{}:{port}@{host}", if *v6 { "inet6" } else { "inet" }),
        }
    }
}

/// A listening socket.
pub enum Listener {
    Unix { listener: UnixListener, path: PathBuf, remove_on_close: bool },
    Tcp(TcpListener),
}

/// An accepted MTA connection, whichever kind of socket it came in on.
pub enum Connection {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// Why the milter socket could not be set up. Ownership and mode failures are told apart because
/// smtpf logs them with their own numbers (#729, #730); OS errors end with their number.
#[derive(Debug, PartialEq, Eq)]
pub enum ListenError {
    /// Giving the socket or its new directory to run-user/run-group failed.
    Chown { path: PathBuf, uid: u32, gid: u32, error: String },
    /// Setting milter-socket-mode failed.
    Chmod { path: PathBuf, mode: u32, error: String },
    /// Anything else: the path or address, and what went wrong.
    Other(String),
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::Chown { path, uid, gid, error } => write!(f, "chown {} to {uid}:{gid}: {error}", path.display()),
            ListenError::Chmod { path, mode, error } => write!(f, "chmod {} {mode:o}: {error}", path.display()),
            ListenError::Other(text) => f.write_str(text),
        }
    }
}

impl From<String> for ListenError {
    fn from(text: String) -> ListenError {
        ListenError::Other(text)
    }
}

/// A failed chown as a [`ListenError`].
fn chown_error(path: &Path, uid: nix::unistd::Uid, gid: nix::unistd::Gid, e: nix::errno::Errno) -> ListenError {
    ListenError::Chown { path: path.to_path_buf(), uid: uid.as_raw(), gid: gid.as_raw(), error: errno_text(e) }
}

/// An errno as smtpf writes it: text, then the number in parentheses.
fn errno_text(e: nix::errno::Errno) -> String {
    format!("{} ({})", e.desc(), e as i32)
}

/// What happened to an existing socket file before binding.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepared {
    Fresh,
    RemovedStale,
}

impl Listener {
    /// Binds `spec`. For unix sockets also applies `mode` and, when given, ownership.
    pub async fn bind(
        spec: &SocketSpec,
        mode: u32,
        owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    ) -> Result<(Listener, Prepared), ListenError> {
        match spec {
            SocketSpec::Unix(path) => {
                let prepared = prepare_unix_path(path, owner)?;
                let listener = UnixListener::bind(path).map_err(|e| format!("bind: {}", os_error(&e)))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| ListenError::Chmod {
                    path: path.clone(),
                    mode,
                    error: os_error(&e),
                })?;
                if let Some((uid, gid)) = owner {
                    nix::unistd::chown(path, Some(uid), Some(gid)).map_err(|e| chown_error(path, uid, gid, e))?;
                }
                Ok((Listener::Unix { listener, path: path.clone(), remove_on_close: true }, prepared))
            }
            SocketSpec::Inet { host, port, .. } => {
                let l = TcpListener::bind((host.as_str(), *port))
                    .await
                    .map_err(|e| format!("bind {host}:{port}: {}", os_error(&e)))?;
                Ok((Listener::Tcp(l), Prepared::Fresh))
            }
        }
    }

    /// Waits for the next connection. TCP connections get `TCP_NODELAY`: every milter reply is
    /// a small frame the MTA waits for, which Nagle's algorithm would hold back.
    pub async fn accept(&self) -> io::Result<Connection> {
        match self {
            Listener::Unix { listener, .. } => listener.accept().await.map(|(s, _)| Connection::Unix(s)),
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Connection::Tcp(s))
            }
        }
    }

    /// The first socket passed by systemd socket activation, if any (and only for this process).
    pub fn from_systemd() -> Option<Result<Listener, String>> {
        let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
        let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
        if pid != std::process::id() || fds == 0 {
            return None;
        }
        // Children must not believe the sockets are theirs.
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
        Some(listener_from_fd(3))
    }

    /// Human-readable address for logs.
    pub fn describe(&self) -> String {
        match self {
            Listener::Unix { path, .. } => format!("unix:{}", path.display()),
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) if a.is_ipv6() => format!("inet6:{}@{}", a.port(), a.ip()),
                Ok(a) => format!("inet:{}@{}", a.port(), a.ip()),
                Err(_) => "inet:?".into(),
            },
        }
    }

    /// Removes the socket file of a unix listener we created.
    pub fn cleanup(&self) -> Result<(), (PathBuf, io::Error)> {
        if let Listener::Unix { path, remove_on_close: true, .. } = self {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err((path.clone(), e)),
            }
        }
        Ok(())
    }
}

fn listener_from_fd(fd: RawFd) -> Result<Listener, String> {
    use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
    let addr: SockaddrStorage = getsockname(fd).map_err(|e| format!("inherited fd {fd}: {e}"))?;
    match addr.family() {
        Some(AddressFamily::Unix) => {
            // SAFETY: systemd hands us this listening socket; we take sole ownership of fd 3.
            let std_l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
            std_l.set_nonblocking(true).map_err(|e| e.to_string())?;
            let path = std_l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("(systemd)"));
            let listener = UnixListener::from_std(std_l).map_err(|e| e.to_string())?;
            Ok(Listener::Unix { listener, path, remove_on_close: false })
        }
        Some(AddressFamily::Inet) | Some(AddressFamily::Inet6) => {
            // SAFETY: as above, for a TCP listening socket.
            let std_l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            std_l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(Listener::Tcp(TcpListener::from_std(std_l).map_err(|e| e.to_string())?))
        }
        other => Err(format!("inherited fd {fd} has unsupported family {other:?}")),
    }
}

/// Makes a unix socket path bindable: creates the parent directory, removes a stale socket,
/// refuses a live one or a file that is not a socket.
/// A directory it creates is 0750 and, with `owner`, belongs to the run user and group, so adding
/// the MTA's user to that group (`usermod -aG smtpf-milter postfix`) lets it reach the socket.
pub fn prepare_unix_path(path: &Path, owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>) -> Result<Prepared, ListenError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|e| format!("cannot create directory {}: {}", dir.display(), os_error(&e)))?;
            if let Some((uid, gid)) = owner {
                nix::unistd::chown(dir, Some(uid), Some(gid)).map_err(|e| chown_error(dir, uid, gid, e))?;
            }
        }
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Prepared::Fresh),
        Err(e) => return Err(format!("cannot inspect {}: {}", path.display(), os_error(&e)).into()),
    };
    if !meta.file_type().is_socket() {
        return Err(format!("{} exists and is not a socket; not touching it", path.display()).into());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(format!("{} is in use by a live process (is another smtpf-milter running?)", path.display()).into()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(|e| format!("cannot remove stale socket {}: {}", path.display(), os_error(&e)))?;
            Ok(Prepared::RemovedStale)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Prepared::Fresh),
        Err(e) => Err(format!("cannot probe {}: {}", path.display(), os_error(&e)).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_modes_as_milter_socket_mode_takes_them() {
        assert_eq!(parse_octal_mode("0660"), Ok(0o660));
        assert_eq!(parse_octal_mode(" 666 "), Ok(0o666));
        assert!(parse_octal_mode("0999").unwrap_err().contains("not an octal mode"));
        assert!(parse_octal_mode("1777").unwrap_err().contains("at most"));
    }

    #[test]
    fn socket_forms() {
        let inet = |host: &str, port, v6| SocketSpec::Inet { host: host.into(), port, v6 };
        assert_eq!(SocketSpec::parse("inet:8894@127.0.0.1").unwrap(), inet("127.0.0.1", 8894, false));
        assert_eq!(SocketSpec::parse("inet:127.0.0.1:8894").unwrap(), inet("127.0.0.1", 8894, false));
        assert_eq!(SocketSpec::parse("inet:8894").unwrap(), inet("0.0.0.0", 8894, false));
        assert_eq!(SocketSpec::parse("inet6:8894@::1").unwrap(), inet("::1", 8894, true));
        assert_eq!(SocketSpec::parse("inet:[::1]:8894").unwrap(), inet("::1", 8894, false));
        assert_eq!(SocketSpec::parse("inet6:8894@[::1]").unwrap(), inet("::1", 8894, true));
        assert_eq!(SocketSpec::parse("unix:/run/m.sock").unwrap(), SocketSpec::Unix("/run/m.sock".into()));
        assert_eq!(SocketSpec::parse("local:/run/m.sock").unwrap(), SocketSpec::Unix("/run/m.sock".into()));
        assert!(SocketSpec::parse("inet:99999@127.0.0.1").unwrap_err().contains("port"));
        assert!(SocketSpec::parse("tcp:1@x").unwrap_err().contains("unknown socket type"));
        assert!(SocketSpec::parse("/run/x").unwrap_err().contains("no scheme"));
        assert!(SocketSpec::parse("inet6:1@127.0.0.1").is_err());
        assert_eq!(SocketSpec::parse("inet:8894@127.0.0.1").unwrap().to_string(), "inet:8894@127.0.0.1");
    }

    #[tokio::test]
    async fn stale_socket_is_removed_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/m.sock");
        let spec = SocketSpec::Unix(path.clone());
        let (live, prepared) = Listener::bind(&spec, 0o660, None).await.unwrap();
        assert_eq!(prepared, Prepared::Fresh, "parent directory created");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let err = Listener::bind(&spec, 0o660, None).await.err().unwrap();
        assert!(err.to_string().contains("in use by a live process"), "{err}");
        // Leave the file behind without a listener: a stale socket.
        drop(live);
        let (again, prepared) = Listener::bind(&spec, 0o600, None).await.unwrap();
        assert_eq!(prepared, Prepared::RemovedStale);
        again.cleanup().unwrap();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn regular_file_is_not_touched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-socket");
        std::fs::write(&path, "data").unwrap();
        let err = Listener::bind(&SocketSpec::Unix(path.clone()), 0o660, None).await.err().unwrap();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }

    #[tokio::test]
    async fn a_socket_directory_it_creates_belongs_to_the_run_group() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/milter.sock");
        let uid = nix::unistd::getuid();
        // As root any group can be given (1: "daemon" on Debian); otherwise our own.
        let gid = if uid.is_root() { nix::unistd::Gid::from_raw(1) } else { nix::unistd::getgid() };
        let (listener, _) = Listener::bind(&SocketSpec::Unix(path.clone()), 0o660, Some((uid, gid))).await.unwrap();
        let meta = std::fs::metadata(dir.path().join("run")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o750);
        assert_eq!(meta.gid(), gid.as_raw(), "the MTA's user joins this group to reach the socket");
        assert_eq!(std::fs::metadata(&path).unwrap().gid(), gid.as_raw());
        drop(listener);
    }
}

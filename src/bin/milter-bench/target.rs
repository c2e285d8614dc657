//! Where the bench connects: the `--socket` it was given, parsed as the daemon parses
//! `milter-socket`, and the connection (unix or TCP) every worker, warm-up and idle connection
//! opens the same way.

use std::path::PathBuf;
use std::sync::OnceLock;

use smtpf_milter::milter::client::MtaClient;
use smtpf_milter::milter::listen::SocketSpec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// Where to connect.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Unix(PathBuf),
    Tcp(String),
}

/// The `--socket` to bench: the forms `milter-socket` takes, or a bare path.
pub fn parse_target(spec: &str) -> Result<Target, String> {
    // A bare path is a unix socket; everything else is spelled as `milter-socket` is.
    if spec.starts_with('/') {
        return Ok(Target::Unix(PathBuf::from(spec)));
    }
    match SocketSpec::parse(spec)? {
        SocketSpec::Unix(path) => Ok(Target::Unix(path)),
        SocketSpec::Inet { host, port, v6 } if v6 || host.contains(':') => Ok(Target::Tcp(format!("[{host}]:{port}"))),
        SocketSpec::Inet { host, port, .. } => Ok(Target::Tcp(format!("{host}:{port}"))),
    }
}

/// Any connected stream, so unix and TCP connections share one client type.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
/// The MTA side of one milter connection, whatever the socket.
pub type Client = MtaClient<Box<dyn Stream>>;

/// Connects a milter client; the first unix connection also learns the milter's pid
/// (SO_PEERCRED).
pub async fn open(target: &Target, pid: &OnceLock<i32>) -> Result<Client, String> {
    Ok(MtaClient::new(connect(target, pid).await?))
}

/// Connects to the target (unix or TCP, no Nagle delay), for any protocol; the first unix
/// connection learns the server's pid into `pid`.
pub async fn connect(target: &Target, pid: &OnceLock<i32>) -> Result<Box<dyn Stream>, String> {
    match target {
        Target::Unix(p) => {
            let s = UnixStream::connect(p).await.map_err(|e| format!("connect {}: {e}", p.display()))?;
            if pid.get().is_none() {
                if let Some(id) = s.peer_cred().ok().and_then(|c| c.pid()) {
                    let _ = pid.set(id);
                }
            }
            Ok(Box::new(s))
        }
        Target::Tcp(a) => {
            let s = TcpStream::connect(a).await.map_err(|e| format!("connect {a}: {e}"))?;
            let _ = s.set_nodelay(true);
            Ok(Box::new(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target("unix:/run/m.sock"), Ok(Target::Unix("/run/m.sock".into())));
        assert_eq!(parse_target("local:/run/m.sock"), Ok(Target::Unix("/run/m.sock".into())));
        assert_eq!(parse_target("/run/m.sock"), Ok(Target::Unix("/run/m.sock".into())));
        assert_eq!(parse_target("inet:8894@127.0.0.1"), Ok(Target::Tcp("127.0.0.1:8894".into())));
        assert_eq!(parse_target("inet:127.0.0.1:8894"), Ok(Target::Tcp("127.0.0.1:8894".into())));
        assert_eq!(parse_target("inet6:8894@::1"), Ok(Target::Tcp("[::1]:8894".into())));
        assert_eq!(parse_target("inet:[::1]:8894"), Ok(Target::Tcp("[::1]:8894".into())));
        assert_eq!(parse_target("inet6:8894@[::1]"), Ok(Target::Tcp("[::1]:8894".into())));
        assert!(parse_target("inet:0@127.0.0.1").is_err(), "port 0 is refused as in milter-socket");
        assert!(parse_target("inet:nowhere").is_err());
        assert!(parse_target("tcp:1@x").is_err());
    }
}

//! The MTA side of the protocol: drives a milter the way Postfix or Sendmail would.
//!
//! Tests use it to run whole SMTP sessions against the in-process server, and the benchmark uses
//! it to load any milter socket. It honours what was negotiated: it waits for a reply only where
//! the milter did not promise silence.

use std::path::Path;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

use super::codec::{decode_response, encode_command, read_frame, Command, FrameError, Response, MAX_PAYLOAD};

/// What Postfix 3.x offers in its option negotiation.
pub const POSTFIX_ACTIONS: u32 = 0x1ff;
/// Postfix's protocol offer (every step and no-reply flag).
pub const POSTFIX_PROTOCOL: u32 = 0x1fffff;

/// A client error: the milter broke the protocol or the connection.
#[derive(Debug)]
pub enum ClientError {
    Frame(FrameError),
    Io(std::io::Error),
    /// The milter closed the connection where a reply was due.
    Closed,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Frame(e) => write!(f, "{e}"),
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Closed => write!(f, "milter closed the connection"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Frame(e)
    }
}

/// An MTA-side milter connection.
pub struct MtaClient<S> {
    stream: BufReader<S>,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// Protocol flags the milter asked for (no-reply promises and skipped steps).
    pub protocol: u32,
}

impl MtaClient<UnixStream> {
    /// Connects to a unix socket.
    pub async fn connect_unix(path: &Path) -> std::io::Result<Self> {
        Ok(MtaClient::new(UnixStream::connect(path).await?))
    }
}

impl MtaClient<TcpStream> {
    /// Connects to a TCP socket.
    pub async fn connect_tcp(addr: &str) -> std::io::Result<Self> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(MtaClient::new(s))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> MtaClient<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        MtaClient { stream: BufReader::new(stream), buf: Vec::new(), out: Vec::new(), protocol: 0 }
    }

    /// Sends raw bytes (malformed-input tests).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.get_mut().write_all(bytes).await
    }

    /// Sends one command without waiting.
    pub async fn send(&mut self, cmd: &Command) -> std::io::Result<()> {
        self.out.clear();
        encode_command(cmd, &mut self.out);
        self.stream.get_mut().write_all(&self.out).await
    }

    /// Reads one response; `None` when the milter closed the connection.
    pub async fn recv(&mut self) -> Result<Option<Response>, ClientError> {
        match read_frame(&mut self.stream, 4 * MAX_PAYLOAD, &mut self.buf).await? {
            None => Ok(None),
            Some(code) => Ok(Some(decode_response(code, &self.buf)?)),
        }
    }

    /// Negotiates; remembers the protocol flags the milter chose.
    pub async fn negotiate(&mut self, version: u32, actions: u32, protocol: u32) -> Result<Response, ClientError> {
        self.send(&Command::OptNeg { version, actions, protocol }).await?;
        let r = self.recv().await?.ok_or(ClientError::Closed)?;
        if let Response::OptNeg { protocol, .. } = &r {
            self.protocol = *protocol;
        }
        Ok(r)
    }

    /// Whether the milter promised not to answer this command.
    pub fn expects_reply(&self, cmd: &Command) -> bool {
        match cmd {
            Command::Macro { .. } | Command::Abort | Command::Quit | Command::QuitNewConnection => false,
            other => other.no_reply_flag().is_none_or(|flag| self.protocol & flag == 0),
        }
    }

    /// Whether the milter asked not to be sent this step at all.
    pub fn skipped(&self, cmd: &Command) -> bool {
        cmd.skip_flag().is_some_and(|flag| self.protocol & flag != 0)
    }

    /// Sends a command as an MTA would: not at all if the milter skipped that step, and reads the
    /// responses up to the verdict if one is due. Returns the responses (empty when none is due).
    pub async fn command(&mut self, cmd: &Command) -> Result<Vec<Response>, ClientError> {
        if self.skipped(cmd) {
            return Ok(Vec::new());
        }
        self.send(cmd).await?;
        if !self.expects_reply(cmd) {
            return Ok(Vec::new());
        }
        let mut got = Vec::new();
        loop {
            let r = self.recv().await?.ok_or(ClientError::Closed)?;
            let done = r.is_final();
            if r != Response::Progress {
                got.push(r);
            }
            if done {
                return Ok(got);
            }
        }
    }

    /// Sends macros for a stage (never answered).
    pub async fn macros(&mut self, stage: u8, pairs: &[(&str, &str)]) -> std::io::Result<()> {
        self.send(&Command::Macro { stage, pairs: pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect() }).await
    }
}

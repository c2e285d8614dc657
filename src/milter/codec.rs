//! Milter protocol frames ⇄ [`Command`] / [`Response`], both directions.
//!
//! A frame is a 4-byte big-endian length, a command byte and `length - 1` bytes of payload. The
//! decoder distrusts its input: lengths are checked against the negotiated limit before anything is
//! allocated, every string must be NUL-terminated, and trailing garbage is an error. The encoder is
//! symmetric so that the MTA-side client (tests, benchmark) shares the same code.

use std::fmt;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest payload libmilter and Postfix send by default (`MILTER_MAX_DATA_SIZE`).
pub const MAX_PAYLOAD: usize = 65_535;

/// Action flags (SMFIF_*) a milter may request.
pub mod action {
    pub const ADDHDRS: u32 = 0x01;
    pub const CHGBODY: u32 = 0x02;
    pub const ADDRCPT: u32 = 0x04;
    pub const DELRCPT: u32 = 0x08;
    pub const CHGHDRS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHGFROM: u32 = 0x40;
    pub const ADDRCPT_PAR: u32 = 0x80;
    pub const SETSYMLIST: u32 = 0x100;
}

/// Protocol flags (SMFIP_*): steps not to send, no-reply promises, capabilities.
pub mod proto {
    pub const NOCONNECT: u32 = 0x1;
    pub const NOHELO: u32 = 0x2;
    pub const NOMAIL: u32 = 0x4;
    pub const NORCPT: u32 = 0x8;
    pub const NOBODY: u32 = 0x10;
    pub const NOHDRS: u32 = 0x20;
    pub const NOEOH: u32 = 0x40;
    pub const NR_HDR: u32 = 0x80;
    pub const NOUNKNOWN: u32 = 0x100;
    pub const NODATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJ: u32 = 0x800;
    pub const NR_CONN: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_UNKN: u32 = 0x20000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    pub const HDR_LEADSPC: u32 = 0x100000;
    pub const MDS_256K: u32 = 0x1000_0000;
    pub const MDS_1M: u32 = 0x2000_0000;
}

/// Macro stages for SETSYMLIST (SMFIM_*).
pub mod stage {
    pub const CONNECT: u32 = 0;
    pub const HELO: u32 = 1;
    pub const ENVFROM: u32 = 2;
    pub const ENVRCPT: u32 = 3;
    pub const DATA: u32 = 4;
    pub const EOM: u32 = 5;
    pub const EOH: u32 = 6;
}

/// Address family of the SMTP client in a CONNECT command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Unknown,
    Unix,
    Inet,
    Inet6,
}

impl Family {
    fn byte(self) -> u8 {
        match self {
            Family::Unknown => b'U',
            Family::Unix => b'L',
            Family::Inet => b'4',
            Family::Inet6 => b'6',
        }
    }
}

/// A command from the MTA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `O`: the MTA's version, offered actions and protocol flags.
    OptNeg { version: u32, actions: u32, protocol: u32 },
    /// `D`: macros for the command whose code is `stage`.
    Macro { stage: u8, pairs: Vec<(String, String)> },
    /// `C`: the SMTP client.
    Connect { hostname: String, family: Family, port: u16, address: String },
    /// `H`: HELO/EHLO argument.
    Helo { name: String },
    /// `M`: sender (as written, usually `<addr>`) and ESMTP parameters.
    Mail { sender: String, params: Vec<String> },
    /// `R`: recipient and ESMTP parameters.
    Rcpt { recipient: String, params: Vec<String> },
    /// `T`: the DATA command (protocol 4 and later).
    Data,
    /// `L`: one header.
    Header { name: String, value: String },
    /// `N`: end of headers.
    EndOfHeaders,
    /// `B`: a body chunk.
    Body(Vec<u8>),
    /// `E`: end of message, possibly carrying a last body chunk.
    EndOfMessage(Vec<u8>),
    /// `A`: abort the current message.
    Abort,
    /// `Q`: close the milter connection.
    Quit,
    /// `K`: close the session but keep the connection for a new one.
    QuitNewConnection,
    /// `U`: an SMTP command the MTA did not recognise.
    Unknown(String),
}

impl Command {
    /// The protocol flags of this SMTP step: (`SMFIP_NO*`, the milter asks not to be sent it;
    /// `SMFIP_NR_*`, the milter promises not to answer it). None for commands that are always
    /// sent and always or never answered. Both sides of the protocol read them from here.
    fn step_flags(&self) -> Option<(u32, u32)> {
        Some(match self {
            Command::Connect { .. } => (proto::NOCONNECT, proto::NR_CONN),
            Command::Helo { .. } => (proto::NOHELO, proto::NR_HELO),
            Command::Mail { .. } => (proto::NOMAIL, proto::NR_MAIL),
            Command::Rcpt { .. } => (proto::NORCPT, proto::NR_RCPT),
            Command::Data => (proto::NODATA, proto::NR_DATA),
            Command::Header { .. } => (proto::NOHDRS, proto::NR_HDR),
            Command::EndOfHeaders => (proto::NOEOH, proto::NR_EOH),
            Command::Body(_) => (proto::NOBODY, proto::NR_BODY),
            Command::Unknown(_) => (proto::NOUNKNOWN, proto::NR_UNKN),
            _ => return None,
        })
    }

    /// The flag by which a milter promises not to answer this step (`SMFIP_NR_*`).
    pub fn no_reply_flag(&self) -> Option<u32> {
        self.step_flags().map(|(_, no_reply)| no_reply)
    }

    /// The flag by which a milter asks not to be sent this step at all (`SMFIP_NO*`).
    pub fn skip_flag(&self) -> Option<u32> {
        self.step_flags().map(|(skip, _)| skip)
    }

    /// The command byte on the wire.
    pub fn code(&self) -> u8 {
        match self {
            Command::OptNeg { .. } => b'O',
            Command::Macro { .. } => b'D',
            Command::Connect { .. } => b'C',
            Command::Helo { .. } => b'H',
            Command::Mail { .. } => b'M',
            Command::Rcpt { .. } => b'R',
            Command::Data => b'T',
            Command::Header { .. } => b'L',
            Command::EndOfHeaders => b'N',
            Command::Body(_) => b'B',
            Command::EndOfMessage(_) => b'E',
            Command::Abort => b'A',
            Command::Quit => b'Q',
            Command::QuitNewConnection => b'K',
            Command::Unknown(_) => b'U',
        }
    }
}

/// A response from the milter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// `O`: our version, requested actions and protocol flags, and macro lists per stage.
    OptNeg {
        version: u32,
        actions: u32,
        protocol: u32,
        macros: Vec<(u32, String)>,
    },
    Continue,
    Accept,
    Reject,
    TempFail,
    Discard,
    /// `s`: stop sending body chunks.
    Skip,
    /// `y`: an SMTP reply, `"550 5.7.1 text"`.
    ReplyCode(String),
    /// `4`: 421 and close (the MTA's shutdown).
    Shutdown,
    /// `f`: connection failure.
    ConnFail,
    /// `p`: still working, resets the MTA's timeout.
    Progress,
    AddHeader {
        name: String,
        value: String,
    },
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// `m`: change the `index`-th (1-based) header of that name; an empty value deletes it.
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    AddRcpt(String),
    AddRcptPar {
        rcpt: String,
        args: Option<String>,
    },
    DelRcpt(String),
    ChangeFrom {
        sender: String,
        args: Option<String>,
    },
    ReplaceBody(Vec<u8>),
    Quarantine(String),
    /// `l`: a macro list for one stage.
    SetSymList {
        stage: u32,
        macros: String,
    },
}

/// Why a frame or payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The peer closed the connection in the middle of a frame.
    Truncated { wanted: usize, got: usize },
    /// The length field is 0 (no command byte).
    ZeroLength,
    /// The length field is larger than the limit (or "negative", i.e. has the top bit set).
    TooLong { length: u32, limit: usize },
    /// A command or response byte we do not know.
    UnknownCode(u8),
    /// The payload does not have the shape the command requires.
    Malformed { code: u8, reason: &'static str },
    /// Reading failed.
    Io(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated { wanted, got } => write!(f, "connection closed inside a frame ({got} of {wanted} bytes)"),
            FrameError::ZeroLength => write!(f, "frame length 0"),
            FrameError::TooLong { length, limit } => {
                if *length > i32::MAX as u32 {
                    write!(f, "negative frame length {}", *length as i32)
                } else {
                    write!(f, "frame length {length} exceeds the limit of {limit} bytes")
                }
            }
            FrameError::UnknownCode(c) => write!(f, "unknown command {}", show_code(*c)),
            FrameError::Malformed { code, reason } => write!(f, "malformed {} payload: {reason}", show_code(*code)),
            FrameError::Io(e) => write!(f, "read error: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

fn show_code(c: u8) -> String {
    if c.is_ascii_graphic() {
        format!("'{}' (0x{c:02x})", c as char)
    } else {
        format!("0x{c:02x}")
    }
}

/// Reads one frame: `Ok(None)` on a clean close before the first byte. `limit` is the largest
/// payload accepted; nothing larger is ever allocated.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, limit: usize, buf: &mut Vec<u8>) -> Result<Option<u8>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]).await {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated { wanted: 4, got }),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FrameError::Io(e.to_string())),
        }
    }
    let length = u32::from_be_bytes(len);
    if length == 0 {
        return Err(FrameError::ZeroLength);
    }
    if length as usize - 1 > limit {
        return Err(FrameError::TooLong { length, limit });
    }
    let mut code = [0u8; 1];
    read_all(r, &mut code, length as usize).await?;
    buf.clear();
    buf.resize(length as usize - 1, 0);
    read_all(r, buf, length as usize).await?;
    Ok(Some(code[0]))
}

/// Takes one whole frame out of bytes already received (`buffered`, e.g. a `BufReader`'s
/// buffer) without waiting: `Some((code, consumed))` with the payload in `buf`, or `None` when
/// the frame is not complete yet or its length is invalid (the caller then uses [`read_frame`],
/// which waits for the rest or reports the error). MTAs write the macros and the command of a
/// step back to back, so most frames are found here, sparing a timer and a wake-up each.
pub fn take_buffered_frame(buffered: &[u8], limit: usize, buf: &mut Vec<u8>) -> Option<(u8, usize)> {
    let len: [u8; 4] = buffered.get(..4)?.try_into().ok()?;
    let length = u32::from_be_bytes(len) as usize;
    if length == 0 || length - 1 > limit {
        return None;
    }
    let frame = buffered.get(4..4 + length)?;
    buf.clear();
    buf.extend_from_slice(&frame[1..]);
    Some((frame[0], 4 + length))
}

async fn read_all<R: AsyncRead + Unpin>(r: &mut R, dst: &mut [u8], wanted: usize) -> Result<(), FrameError> {
    let mut got = 0;
    while got < dst.len() {
        match r.read(&mut dst[got..]).await {
            Ok(0) => return Err(FrameError::Truncated { wanted, got }),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FrameError::Io(e.to_string())),
        }
    }
    Ok(())
}

/// Splits NUL-terminated strings; the payload must end with a NUL.
fn cstrings(code: u8, payload: &[u8]) -> Result<Vec<String>, FrameError> {
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    if payload.last() != Some(&0) {
        return Err(FrameError::Malformed { code, reason: "string not NUL-terminated" });
    }
    Ok(payload[..payload.len() - 1].split(|b| *b == 0).map(lossy).collect())
}

/// Mail headers and envelopes carry 8-bit junk in real traffic; it must not end a session.
fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn u32_at(code: u8, p: &[u8], at: usize) -> Result<u32, FrameError> {
    p.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(FrameError::Malformed { code, reason: "payload too short for a 32-bit field" })
}

fn exactly_empty(code: u8, p: &[u8]) -> Result<(), FrameError> {
    if p.is_empty() {
        Ok(())
    } else {
        Err(FrameError::Malformed { code, reason: "unexpected payload" })
    }
}

/// Decodes a command frame.
pub fn decode_command(code: u8, p: &[u8]) -> Result<Command, FrameError> {
    Ok(match code {
        b'O' => {
            if p.len() < 12 {
                return Err(FrameError::Malformed { code, reason: "option negotiation needs 12 bytes" });
            }
            Command::OptNeg { version: u32_at(code, p, 0)?, actions: u32_at(code, p, 4)?, protocol: u32_at(code, p, 8)? }
        }
        b'D' => {
            let (&stage, rest) = p.split_first().ok_or(FrameError::Malformed { code, reason: "macro without stage" })?;
            let strings = cstrings(code, rest)?;
            if strings.len() % 2 != 0 {
                return Err(FrameError::Malformed { code, reason: "macro name without value" });
            }
            let mut pairs = Vec::with_capacity(strings.len() / 2);
            let mut it = strings.into_iter();
            while let (Some(n), Some(v)) = (it.next(), it.next()) {
                pairs.push((n, v));
            }
            Command::Macro { stage, pairs }
        }
        b'C' => {
            let nul =
                p.iter().position(|b| *b == 0).ok_or(FrameError::Malformed { code, reason: "hostname not NUL-terminated" })?;
            let hostname = lossy(&p[..nul]);
            let rest = &p[nul + 1..];
            let (&fam, rest) = rest.split_first().ok_or(FrameError::Malformed { code, reason: "missing address family" })?;
            let family = match fam {
                b'U' => Family::Unknown,
                b'L' => Family::Unix,
                b'4' => Family::Inet,
                b'6' => Family::Inet6,
                _ => return Err(FrameError::Malformed { code, reason: "unknown address family" }),
            };
            if family == Family::Unknown {
                // Port and address are omitted; tolerate them if present.
                return Ok(Command::Connect { hostname, family, port: 0, address: String::new() });
            }
            if rest.len() < 3 {
                return Err(FrameError::Malformed { code, reason: "missing port or address" });
            }
            let port = u16::from_be_bytes([rest[0], rest[1]]);
            let addr = cstrings(code, &rest[2..])?;
            if addr.len() != 1 {
                return Err(FrameError::Malformed { code, reason: "expected exactly one address" });
            }
            Command::Connect { hostname, family, port, address: addr.into_iter().next().unwrap_or_default() }
        }
        b'H' => {
            let mut s = cstrings(code, p)?;
            if s.len() != 1 {
                return Err(FrameError::Malformed { code, reason: "expected one HELO string" });
            }
            Command::Helo { name: s.remove(0) }
        }
        b'M' | b'R' => {
            let mut s = cstrings(code, p)?;
            if s.is_empty() {
                return Err(FrameError::Malformed { code, reason: "missing address" });
            }
            let first = s.remove(0);
            if code == b'M' {
                Command::Mail { sender: first, params: s }
            } else {
                Command::Rcpt { recipient: first, params: s }
            }
        }
        b'T' => {
            exactly_empty(code, p)?;
            Command::Data
        }
        b'L' => {
            let s = cstrings(code, p)?;
            if s.len() != 2 {
                return Err(FrameError::Malformed { code, reason: "expected header name and value" });
            }
            let mut it = s.into_iter();
            Command::Header { name: it.next().unwrap_or_default(), value: it.next().unwrap_or_default() }
        }
        b'N' => {
            exactly_empty(code, p)?;
            Command::EndOfHeaders
        }
        b'B' => Command::Body(p.to_vec()),
        b'E' => Command::EndOfMessage(p.to_vec()),
        b'A' => Command::Abort,
        b'Q' => Command::Quit,
        b'K' => Command::QuitNewConnection,
        b'U' => {
            // Some MTAs omit the terminating NUL here; accept both.
            let body = p.strip_suffix(&[0]).unwrap_or(p);
            Command::Unknown(lossy(body))
        }
        other => return Err(FrameError::UnknownCode(other)),
    })
}

fn put_frame(out: &mut Vec<u8>, code: u8, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, code]);
    payload(out);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(out: &mut Vec<u8>, s: &str) {
    // NULs inside a string would split it on the wire; drop them.
    out.extend(s.bytes().filter(|b| *b != 0));
    out.push(0);
}

/// Appends the frame of a command to `out`.
pub fn encode_command(cmd: &Command, out: &mut Vec<u8>) {
    let code = cmd.code();
    put_frame(out, code, |o| match cmd {
        Command::OptNeg { version, actions, protocol } => {
            o.extend_from_slice(&version.to_be_bytes());
            o.extend_from_slice(&actions.to_be_bytes());
            o.extend_from_slice(&protocol.to_be_bytes());
        }
        Command::Macro { stage, pairs } => {
            o.push(*stage);
            for (n, v) in pairs {
                put_cstr(o, n);
                put_cstr(o, v);
            }
        }
        Command::Connect { hostname, family, port, address } => {
            put_cstr(o, hostname);
            o.push(family.byte());
            if *family != Family::Unknown {
                o.extend_from_slice(&port.to_be_bytes());
                put_cstr(o, address);
            }
        }
        Command::Helo { name } => put_cstr(o, name),
        Command::Mail { sender: first, params } | Command::Rcpt { recipient: first, params } => {
            put_cstr(o, first);
            for a in params {
                put_cstr(o, a);
            }
        }
        Command::Header { name, value } => {
            put_cstr(o, name);
            put_cstr(o, value);
        }
        Command::Body(b) | Command::EndOfMessage(b) => o.extend_from_slice(b),
        Command::Unknown(s) => put_cstr(o, s),
        Command::Data | Command::EndOfHeaders | Command::Abort | Command::Quit | Command::QuitNewConnection => {}
    });
}

impl Response {
    /// The response byte on the wire.
    pub fn code(&self) -> u8 {
        match self {
            Response::OptNeg { .. } => b'O',
            Response::Continue => b'c',
            Response::Accept => b'a',
            Response::Reject => b'r',
            Response::TempFail => b't',
            Response::Discard => b'd',
            Response::Skip => b's',
            Response::ReplyCode(_) => b'y',
            Response::Shutdown => b'4',
            Response::ConnFail => b'f',
            Response::Progress => b'p',
            Response::AddHeader { .. } => b'h',
            Response::InsertHeader { .. } => b'i',
            Response::ChangeHeader { .. } => b'm',
            Response::AddRcpt(_) => b'+',
            Response::AddRcptPar { .. } => b'2',
            Response::DelRcpt(_) => b'-',
            Response::ChangeFrom { .. } => b'e',
            Response::ReplaceBody(_) => b'b',
            Response::Quarantine(_) => b'q',
            Response::SetSymList { .. } => b'l',
        }
    }

    /// Whether this response ends the MTA's wait for the current command (a verdict), as opposed
    /// to a modification or progress note sent before the verdict.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Response::OptNeg { .. }
                | Response::Continue
                | Response::Accept
                | Response::Reject
                | Response::TempFail
                | Response::Discard
                | Response::Skip
                | Response::ReplyCode(_)
                | Response::Shutdown
                | Response::ConnFail
        )
    }
}

/// Appends the frame of a response to `out`.
pub fn encode_response(resp: &Response, out: &mut Vec<u8>) {
    put_frame(out, resp.code(), |o| match resp {
        Response::OptNeg { version, actions, protocol, macros } => {
            o.extend_from_slice(&version.to_be_bytes());
            o.extend_from_slice(&actions.to_be_bytes());
            o.extend_from_slice(&protocol.to_be_bytes());
            for (stage, list) in macros {
                o.extend_from_slice(&stage.to_be_bytes());
                put_cstr(o, list);
            }
        }
        Response::ReplyCode(s) | Response::AddRcpt(s) | Response::DelRcpt(s) | Response::Quarantine(s) => put_cstr(o, s),
        Response::AddHeader { name, value } => {
            put_cstr(o, name);
            put_cstr(o, value);
        }
        Response::InsertHeader { index, name, value } | Response::ChangeHeader { index, name, value } => {
            o.extend_from_slice(&index.to_be_bytes());
            put_cstr(o, name);
            put_cstr(o, value);
        }
        Response::AddRcptPar { rcpt: a, args } | Response::ChangeFrom { sender: a, args } => {
            put_cstr(o, a);
            if let Some(args) = args {
                put_cstr(o, args);
            }
        }
        Response::ReplaceBody(b) => o.extend_from_slice(b),
        Response::SetSymList { stage, macros } => {
            o.extend_from_slice(&stage.to_be_bytes());
            put_cstr(o, macros);
        }
        Response::Continue
        | Response::Accept
        | Response::Reject
        | Response::TempFail
        | Response::Discard
        | Response::Skip
        | Response::Shutdown
        | Response::ConnFail
        | Response::Progress => {}
    });
}

/// Decodes a response frame (the MTA side: tests and the benchmark).
pub fn decode_response(code: u8, p: &[u8]) -> Result<Response, FrameError> {
    let two = |p: &[u8]| -> Result<(String, String), FrameError> {
        let s = cstrings(code, p)?;
        match <[String; 2]>::try_from(s) {
            Ok([a, b]) => Ok((a, b)),
            Err(_) => Err(FrameError::Malformed { code, reason: "expected two strings" }),
        }
    };
    let one = |p: &[u8]| -> Result<String, FrameError> {
        let mut s = cstrings(code, p)?;
        if s.len() != 1 {
            return Err(FrameError::Malformed { code, reason: "expected one string" });
        }
        Ok(s.remove(0))
    };
    let one_opt = |p: &[u8]| -> Result<(String, Option<String>), FrameError> {
        let mut s = cstrings(code, p)?;
        match s.len() {
            1 => Ok((s.remove(0), None)),
            2 => {
                let b = s.pop();
                Ok((s.remove(0), b))
            }
            _ => Err(FrameError::Malformed { code, reason: "expected one or two strings" }),
        }
    };
    let empty = |r: Response| -> Result<Response, FrameError> {
        exactly_empty(code, p)?;
        Ok(r)
    };
    match code {
        b'O' => {
            if p.len() < 12 {
                return Err(FrameError::Malformed { code, reason: "option negotiation needs 12 bytes" });
            }
            let mut macros = Vec::new();
            let mut rest = &p[12..];
            while !rest.is_empty() {
                let stage = u32_at(code, rest, 0)?;
                let nul = rest[4..]
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or(FrameError::Malformed { code, reason: "macro list not NUL-terminated" })?;
                macros.push((stage, lossy(&rest[4..4 + nul])));
                rest = &rest[4 + nul + 1..];
            }
            Ok(Response::OptNeg {
                version: u32_at(code, p, 0)?,
                actions: u32_at(code, p, 4)?,
                protocol: u32_at(code, p, 8)?,
                macros,
            })
        }
        b'c' => empty(Response::Continue),
        b'a' => empty(Response::Accept),
        b'r' => empty(Response::Reject),
        b't' => empty(Response::TempFail),
        b'd' => empty(Response::Discard),
        b's' => empty(Response::Skip),
        b'4' => empty(Response::Shutdown),
        b'f' => empty(Response::ConnFail),
        b'p' => empty(Response::Progress),
        b'y' => Ok(Response::ReplyCode(one(p)?)),
        b'+' => Ok(Response::AddRcpt(one(p)?)),
        b'-' => Ok(Response::DelRcpt(one(p)?)),
        b'q' => Ok(Response::Quarantine(one(p)?)),
        b'h' => {
            let (name, value) = two(p)?;
            Ok(Response::AddHeader { name, value })
        }
        b'i' | b'm' => {
            let index = u32_at(code, p, 0)?;
            let (name, value) = two(&p[4..])?;
            Ok(if code == b'i' {
                Response::InsertHeader { index, name, value }
            } else {
                Response::ChangeHeader { index, name, value }
            })
        }
        b'2' => {
            let (rcpt, args) = one_opt(p)?;
            Ok(Response::AddRcptPar { rcpt, args })
        }
        b'e' => {
            let (sender, args) = one_opt(p)?;
            Ok(Response::ChangeFrom { sender, args })
        }
        b'b' => Ok(Response::ReplaceBody(p.to_vec())),
        b'l' => {
            let stage = u32_at(code, p, 0)?;
            let macros = one(&p[4..])?;
            Ok(Response::SetSymList { stage, macros })
        }
        other => Err(FrameError::UnknownCode(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_names_its_skip_and_no_reply_flags() {
        let helo = Command::Helo { name: "h".into() };
        assert_eq!((helo.skip_flag(), helo.no_reply_flag()), (Some(proto::NOHELO), Some(proto::NR_HELO)));
        assert_eq!((Command::Data.skip_flag(), Command::Data.no_reply_flag()), (Some(proto::NODATA), Some(proto::NR_DATA)));
        let eom = Command::EndOfMessage(Vec::new());
        assert_eq!((eom.skip_flag(), eom.no_reply_flag()), (None, None), "end of message is always sent and answered");
    }

    fn all_commands() -> Vec<Command> {
        vec![
            Command::OptNeg { version: 6, actions: 0x1ff, protocol: 0x1fffff },
            Command::Macro {
                stage: b'C',
                pairs: vec![("j".into(), "mx.example.org".into()), ("{daemon_name}".into(), "smtpd".into())],
            },
            Command::Macro { stage: b'E', pairs: vec![] },
            Command::Connect {
                hostname: "mail.example.com".into(),
                family: Family::Inet,
                port: 4711,
                address: "192.0.2.1".into(),
            },
            Command::Connect {
                hostname: "[2001:db8::1]".into(),
                family: Family::Inet6,
                port: 25,
                address: "IPv6:2001:db8::1".into(),
            },
            Command::Connect { hostname: "localhost".into(), family: Family::Unix, port: 0, address: "/run/x".into() },
            Command::Connect { hostname: "unknown".into(), family: Family::Unknown, port: 0, address: String::new() },
            Command::Helo { name: "client.example.com".into() },
            Command::Mail { sender: "<a@b.example>".into(), params: vec!["SIZE=100".into(), "BODY=8BITMIME".into()] },
            Command::Mail { sender: "<>".into(), params: vec![] },
            Command::Rcpt { recipient: "<c@d.example>".into(), params: vec!["NOTIFY=NEVER".into()] },
            Command::Data,
            Command::Header { name: "Subject".into(), value: "hello".into() },
            Command::Header { name: "X-Empty".into(), value: String::new() },
            Command::EndOfHeaders,
            Command::Body(b"line\r\n.\r\n\0binary".to_vec()),
            Command::EndOfMessage(Vec::new()),
            Command::EndOfMessage(b"tail".to_vec()),
            Command::Abort,
            Command::Quit,
            Command::QuitNewConnection,
            Command::Unknown("XFOO bar".into()),
        ]
    }

    fn all_responses() -> Vec<Response> {
        vec![
            Response::OptNeg {
                version: 6,
                actions: 0x11,
                protocol: 0x1ad100,
                macros: vec![(0, "j _".into()), (2, "i {auth_authen}".into())],
            },
            Response::OptNeg { version: 2, actions: 0, protocol: 0, macros: vec![] },
            Response::Continue,
            Response::Accept,
            Response::Reject,
            Response::TempFail,
            Response::Discard,
            Response::Skip,
            Response::ReplyCode("451 4.7.0 try again later #552 x".into()),
            Response::Shutdown,
            Response::ConnFail,
            Response::Progress,
            Response::AddHeader { name: "X-Grey-Report".into(), value: "age=1".into() },
            Response::InsertHeader { index: 0, name: "X-A".into(), value: "b".into() },
            Response::ChangeHeader { index: 1, name: "X-A".into(), value: String::new() },
            Response::AddRcpt("<a@b>".into()),
            Response::AddRcptPar { rcpt: "<a@b>".into(), args: Some("NOTIFY=NEVER".into()) },
            Response::AddRcptPar { rcpt: "<a@b>".into(), args: None },
            Response::DelRcpt("<a@b>".into()),
            Response::ChangeFrom { sender: "<a@b>".into(), args: None },
            Response::ReplaceBody(b"new body".to_vec()),
            Response::Quarantine("held".into()),
            Response::SetSymList { stage: 3, macros: "{rcpt_addr}".into() },
        ]
    }

    async fn read_back(bytes: &[u8]) -> (u8, Vec<u8>) {
        let mut r = bytes;
        let mut buf = Vec::new();
        let code = read_frame(&mut r, MAX_PAYLOAD, &mut buf).await.unwrap().unwrap();
        assert!(r.is_empty(), "one frame, nothing left");
        (code, buf)
    }

    #[tokio::test]
    async fn every_command_round_trips() {
        for cmd in all_commands() {
            let mut out = Vec::new();
            encode_command(&cmd, &mut out);
            let (code, payload) = read_back(&out).await;
            assert_eq!(decode_command(code, &payload).unwrap(), cmd);
        }
    }

    #[tokio::test]
    async fn every_response_round_trips() {
        for resp in all_responses() {
            let mut out = Vec::new();
            encode_response(&resp, &mut out);
            let (code, payload) = read_back(&out).await;
            assert_eq!(decode_response(code, &payload).unwrap(), resp);
        }
    }

    #[test]
    fn wire_layout_matches_the_protocol() {
        let mut out = Vec::new();
        encode_command(&Command::Helo { name: "ab".into() }, &mut out);
        assert_eq!(out, [0, 0, 0, 4, b'H', b'a', b'b', 0]);
        out.clear();
        encode_response(&Response::Continue, &mut out);
        assert_eq!(out, [0, 0, 0, 1, b'c']);
        out.clear();
        encode_command(
            &Command::Connect { hostname: "h".into(), family: Family::Inet, port: 25, address: "1.2.3.4".into() },
            &mut out,
        );
        assert_eq!(&out[4..], b"Ch\x004\x00\x191.2.3.4\x00");
    }

    #[tokio::test]
    async fn limits_are_enforced_before_allocating() {
        let mut buf = Vec::new();
        let mut huge: &[u8] = &[0x7f, 0xff, 0xff, 0xff, b'B'];
        assert!(matches!(read_frame(&mut huge, MAX_PAYLOAD, &mut buf).await, Err(FrameError::TooLong { .. })));
        assert!(buf.capacity() < 1024);
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xfe, b'B'];
        let e = read_frame(&mut negative, MAX_PAYLOAD, &mut buf).await.unwrap_err();
        assert!(e.to_string().contains("negative"), "{e}");
        let mut just_over: &[u8] = &[0x00, 0x01, 0x00, 0x01, b'B'];
        assert!(matches!(read_frame(&mut just_over, MAX_PAYLOAD, &mut buf).await, Err(FrameError::TooLong { .. })));
        let mut zero: &[u8] = &[0, 0, 0, 0];
        assert_eq!(read_frame(&mut zero, MAX_PAYLOAD, &mut buf).await, Err(FrameError::ZeroLength));
    }

    #[tokio::test]
    async fn largest_allowed_payload_is_read() {
        let mut out = Vec::new();
        encode_command(&Command::Body(vec![b'x'; MAX_PAYLOAD]), &mut out);
        let (code, payload) = read_back(&out).await;
        assert_eq!(code, b'B');
        assert_eq!(payload.len(), MAX_PAYLOAD);
    }

    #[tokio::test]
    async fn truncation_and_clean_close() {
        let mut buf = Vec::new();
        let mut empty: &[u8] = &[];
        assert_eq!(read_frame(&mut empty, MAX_PAYLOAD, &mut buf).await, Ok(None));
        let mut half_len: &[u8] = &[0, 0];
        assert!(matches!(read_frame(&mut half_len, MAX_PAYLOAD, &mut buf).await, Err(FrameError::Truncated { .. })));
        let mut half_payload: &[u8] = &[0, 0, 0, 10, b'H', b'a'];
        assert!(matches!(read_frame(&mut half_payload, MAX_PAYLOAD, &mut buf).await, Err(FrameError::Truncated { .. })));
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let bad: &[(u8, &[u8])] = &[
            (b'O', b"\0\0\0\x06"),
            (b'D', b""),
            (b'D', b"Cj\0"),
            (b'D', b"Cj\0v"),
            (b'C', b"host"),
            (b'C', b"host\0"),
            (b'C', b"host\0X\0\x19a\0"),
            (b'C', b"host\x004\0"),
            (b'C', b"host\x004\0\x19a\0b\0"),
            (b'H', b"a\0b\0"),
            (b'H', b"abc"),
            (b'M', b""),
            (b'R', b"<a>"),
            (b'L', b"Subject\0"),
            (b'T', b"x"),
            (b'N', b"x"),
            (b'Z', b""),
            (0, b""),
        ];
        for (code, payload) in bad {
            assert!(decode_command(*code, payload).is_err(), "{} {:?} should be refused", *code as char, payload);
        }
    }

    #[test]
    fn non_utf8_is_kept_lossily() {
        let cmd = decode_command(b'L', b"Subject\0caf\xe9\0").unwrap();
        assert_eq!(cmd, Command::Header { name: "Subject".into(), value: "caf\u{fffd}".into() });
    }

    #[test]
    fn unknown_without_nul_is_accepted() {
        assert_eq!(decode_command(b'U', b"XYZZY").unwrap(), Command::Unknown("XYZZY".into()));
    }

    #[test]
    fn buffered_frames_are_taken_only_when_whole_and_valid() {
        let mut buf = vec![9u8; 3];
        let frame = [0, 0, 0, 3, b'D', b'x', 0, 0, 0, 0];
        assert_eq!(take_buffered_frame(&frame, MAX_PAYLOAD, &mut buf), Some((b'D', 7)));
        assert_eq!(buf, b"x\0");
        for partial in [&frame[..0], &frame[..3], &frame[..6]] {
            assert_eq!(take_buffered_frame(partial, MAX_PAYLOAD, &mut buf), None);
        }
        // Invalid lengths are left to read_frame, which reports them.
        assert_eq!(take_buffered_frame(&[0, 0, 0, 0, b'D'], MAX_PAYLOAD, &mut buf), None);
        assert_eq!(take_buffered_frame(&[0, 0, 0, 9, b'D', 1, 2, 3, 4, 5, 6, 7, 8], 4, &mut buf), None);
        assert_eq!(take_buffered_frame(&[0xff, 0xff, 0xff, 0xff, b'D'], MAX_PAYLOAD, &mut buf), None);
    }
}

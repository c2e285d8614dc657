//! Postfix's policy delegation protocol (SMTPD_POLICY_README), the wire format of the coming
//! policy-service front door: a request is `name=value` lines ending with an empty line, the
//! answer is `action=...` and an empty line, and one connection carries many requests.
//!
//! This module only reads and writes that format, distrusting its input as Postfix's own parts
//! do: a line, the number of attributes and a whole request are bounded, a line without `=` or
//! with a NUL is an error naming it, and the text of an answer can never carry a line break (it
//! would end the answer early and desynchronise the connection). Nothing here decides anything.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest attribute line accepted (Postfix's own limit for a policy attribute is far lower in
/// practice; certificate fields are the longest).
pub const MAX_LINE: usize = 4096;
/// Most attributes in one request (Postfix 3.x sends about 30).
pub const MAX_ATTRIBUTES: usize = 128;

/// One request: its attributes in the order Postfix sent them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
    pub attributes: Vec<(String, String)>,
}

impl Request {
    /// The value of attribute `name` (the last one, if repeated); None when absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed the connection between requests: the normal end.
    Closed,
    /// The peer closed the connection in the middle of a request.
    Truncated,
    /// A line longer than [`MAX_LINE`].
    LineTooLong,
    /// More than [`MAX_ATTRIBUTES`] attributes.
    TooManyAttributes,
    /// A line that is not `name=value` (shown, cut to 80 characters).
    Malformed(String),
    /// The connection failed.
    Io(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => f.write_str("connection closed"),
            ReadError::Truncated => f.write_str("connection closed in the middle of a request"),
            ReadError::LineTooLong => write!(f, "attribute line longer than {MAX_LINE} bytes"),
            ReadError::TooManyAttributes => write!(f, "more than {MAX_ATTRIBUTES} attributes in one request"),
            ReadError::Malformed(line) => write!(f, "not a name=value line: {line:?}"),
            ReadError::Io(e) => f.write_str(e),
        }
    }
}

/// Reads one request; [`ReadError::Closed`] when the connection ended cleanly before it.
pub async fn read_request<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Request, ReadError> {
    let mut request = Request::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        // Read at most one byte past the limit, so an endless line costs bounded memory.
        let mut limited = tokio::io::AsyncReadExt::take(&mut *reader, MAX_LINE as u64 + 1);
        let n = limited.read_until(b'\n', &mut line).await.map_err(|e| ReadError::Io(e.to_string()))?;
        if n == 0 {
            return Err(if request.attributes.is_empty() { ReadError::Closed } else { ReadError::Truncated });
        }
        if !line.ends_with(b"\n") {
            return Err(if line.len() > MAX_LINE { ReadError::LineTooLong } else { ReadError::Truncated });
        }
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
        if line.is_empty() {
            return Ok(request);
        }
        let text = String::from_utf8_lossy(&line);
        let Some((name, value)) = text.split_once('=').filter(|(n, _)| !n.is_empty() && !n.contains('\0')) else {
            return Err(ReadError::Malformed(text.chars().take(80).collect()));
        };
        if value.contains('\0') {
            return Err(ReadError::Malformed(text.chars().take(80).collect()));
        }
        if request.attributes.len() == MAX_ATTRIBUTES {
            return Err(ReadError::TooManyAttributes);
        }
        request.attributes.push((name.to_string(), value.to_string()));
    }
}

/// An answer's `action=` text with every line break and control character made a space.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The answer Postfix reads: `action=TEXT`, then the empty line that ends it.
pub fn answer(action: &str) -> String {
    format!("action={}\n\n", one_line(action))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8]) -> Vec<Result<Request, ReadError>> {
        let mut reader = tokio::io::BufReader::new(input);
        let mut out = Vec::new();
        loop {
            let r = read_request(&mut reader).await;
            let done = r.is_err();
            out.push(r);
            if done {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn requests_follow_each_other_on_one_connection() {
        let input = b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.7\nrecipient=bob@example.net\n\nrequest=smtpd_access_policy\r\nsender=\r\nrecipient=a=b@example.net\r\n\r\n";
        let got = read_all(input).await;
        assert_eq!(got.len(), 3);
        let first = got[0].as_ref().unwrap();
        assert_eq!(first.get("client_address"), Some("192.0.2.7"));
        assert_eq!(first.get("protocol_state"), Some("RCPT"));
        let second = got[1].as_ref().unwrap();
        assert_eq!(second.get("sender"), Some(""), "an empty value is a value");
        assert_eq!(second.get("recipient"), Some("a=b@example.net"), "only the first '=' separates");
        assert_eq!(second.get("helo_name"), None);
        assert_eq!(got[2], Err(ReadError::Closed));
    }

    #[tokio::test]
    async fn hostile_input_is_a_clear_error() {
        assert_eq!(read_all(b"request=x\nclient_address=1").await[0], Err(ReadError::Truncated));
        assert_eq!(read_all(b"request=x\n").await[0], Err(ReadError::Truncated));
        assert_eq!(read_all(b"no equals sign\n\n").await[0], Err(ReadError::Malformed("no equals sign".into())));
        assert_eq!(read_all(b"=value\n\n").await[0], Err(ReadError::Malformed("=value".into())));
        assert_eq!(read_all(b"a=b\0c\n\n").await[0], Err(ReadError::Malformed("a=b\0c".into())));
        let long = format!("sender={}\n\n", "x".repeat(MAX_LINE));
        assert_eq!(read_all(long.as_bytes()).await[0], Err(ReadError::LineTooLong));
        let many: String = (0..=MAX_ATTRIBUTES).map(|i| format!("a{i}=v\n")).collect::<String>() + "\n";
        assert_eq!(read_all(many.as_bytes()).await[0], Err(ReadError::TooManyAttributes));
        let just = format!("sender={}\n\n", "x".repeat(MAX_LINE - "sender=".len()));
        assert!(read_all(just.as_bytes()).await[0].is_ok(), "a line of exactly MAX_LINE bytes is read");
        // The same line cut off by the peer before its newline: truncated, not too long.
        let cut = format!("sender={}", "x".repeat(MAX_LINE - "sender=".len()));
        assert_eq!(read_all(cut.as_bytes()).await[0], Err(ReadError::Truncated));
        assert_eq!(read_all(b"").await[0], Err(ReadError::Closed));
    }

    #[test]
    fn an_answer_is_one_line_and_its_terminator() {
        assert_eq!(answer("DUNNO"), "action=DUNNO\n\n");
        assert_eq!(
            answer("451 4.7.0 try again later #552 2B40\r\naction=OK"),
            "action=451 4.7.0 try again later #552 2B40  action=OK\n\n",
            "a line break in the text cannot start a second answer"
        );
    }
}

//! The content hash behind smtpf's content greylisting (smtpf-behaviour §1.8).
//!
//! With grey-content on, the first attempt of a message is temp-failed and its
//! hash stored; a retry after the greylist period passes only when it hashes the
//! same. Honest MTAs do not resend the bytes they sent first: a retry may carry
//! new MIME boundaries, another transfer encoding, other line folding or white
//! space, and Exchange regenerates its TNEF blob. Spamware rotating its text
//! produces a different message each time. So the hash covers what a reader
//! would see and nothing else: the body of every MIME part with its transfer
//! encoding (base64, quoted-printable) undone, without any header (top-level or
//! part), without the multipart preamble and epilogue, without
//! `application/ms-tnef` parts, without any white-space byte, and for
//! `text/html` parts without `<!...>` constructs (comments, doctype). The input
//! is hostile by assumption: the bytes examined and hashed and the nesting of
//! attached messages are capped, and malformed MIME still yields a hash, the
//! same one every time, never a panic.

use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};

use mail_parser::{MessageParser, MessagePart, MimeHeaders, PartType};
use sha2::{Digest, Sha256};

/// How much of the message (headers included) is handed to the MIME parser:
/// parsing cost grows with it, and a retry is told apart well before this.
const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// How many content bytes (decoded, white space dropped) are hashed. Lower
/// than what [`MAX_MESSAGE_BYTES`] of raw text decodes to under any transfer
/// encoding, so a large message hashes the same whichever encoding carried it.
const MAX_HASHED_BYTES: usize = 1 << 20;

/// Returns the content-greylisting hash of a message, as lower-case hex, so
/// that a retry can be matched against the first attempt.
///
/// `message`: the whole message as a milter sees it: "Name: value\r\n" header
/// lines, a blank line, the raw body. A single-part message hashes its decoded
/// body; a multipart one the decoded bodies of its parts in order, as one
/// stream. Attached messages (`message/rfc822`) are hashed as they are
/// attached, their own headers included, without opening them further.
///
/// smtpf used MD5; SHA-256 serves equally, as the hash is only ever compared
/// for equality with hashes this module computed.
pub fn content_hash(message: &[u8]) -> String {
    let examined = &message[..message.len().min(MAX_MESSAGE_BYTES)];
    let mut feed = Feed::new();
    // Nested messages are hashed as raw parts, never opened (no unbounded recursion).
    let defused = crate::checks::uri::defuse_nesting(examined);
    let parser = MessageParser::new().with_mime_headers();
    // The MIME parser is the widest attack surface: should it fail, the raw
    // body is hashed instead, which is still the same for the same bytes.
    let walked = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut feed = Feed::new();
        let parsed = parser.parse(defused.as_ref())?;
        for part in &parsed.parts {
            if feed.is_full() {
                break;
            }
            hash_part(&mut feed, part);
        }
        Some(feed)
    }));
    match walked {
        Ok(Some(walked)) => feed = walked,
        Ok(None) | Err(_) => feed.bytes(raw_body(examined)),
    }
    feed.finish()
}

/// The running hash with its byte budget.
struct Feed {
    digest: Sha256,
    hashed: usize,
}

impl Feed {
    fn new() -> Self {
        Feed { digest: Sha256::new(), hashed: 0 }
    }

    fn is_full(&self) -> bool {
        self.hashed >= MAX_HASHED_BYTES
    }

    /// Hashes `content` minus its white-space bytes, within the budget.
    fn bytes(&mut self, content: &[u8]) {
        let mut kept = Vec::with_capacity(content.len().min(MAX_HASHED_BYTES.saturating_sub(self.hashed)));
        for &byte in content {
            if self.hashed + kept.len() >= MAX_HASHED_BYTES {
                break;
            }
            if !is_space(byte) {
                kept.push(byte);
            }
        }
        self.hashed += kept.len();
        self.digest.update(&kept);
    }

    /// Hashes an HTML part: as [`Feed::bytes`], with `<!...>` constructs left
    /// out. A comment (`<!--`) ends at `-->`, so one holding a `>` goes whole;
    /// any other `<!` ends at the next `>`; an unterminated one runs to the end
    /// of the part.
    fn html(&mut self, content: &[u8]) {
        let mut kept = Vec::new();
        let mut at = 0;
        while at < content.len() {
            let rest = &content[at..];
            if rest.starts_with(b"<!--") {
                at += find(&rest[4..], b"-->").map_or(rest.len(), |end| 4 + end + 3);
            } else if rest.starts_with(b"<!") {
                at += find(&rest[2..], b">").map_or(rest.len(), |end| 2 + end + 1);
            } else {
                let next = find(&rest[1..], b"<!").map_or(rest.len(), |end| 1 + end);
                kept.extend_from_slice(&rest[..next]);
                at += next;
            }
        }
        self.bytes(&kept);
    }

    fn finish(self) -> String {
        let mut hex = String::with_capacity(64);
        for byte in self.digest.finalize() {
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    }
}

/// Feeds the decoded body of one part; containers give nothing of their own,
/// their children come as parts of their own.
fn hash_part(feed: &mut Feed, part: &MessagePart<'_>) {
    if is_tnef(part) {
        return;
    }
    match &part.body {
        PartType::Html(text) => feed.html(text.as_bytes()),
        PartType::Text(_) | PartType::Binary(_) | PartType::InlineBinary(_) | PartType::Message(_) => feed.bytes(part.contents()),
        PartType::Multipart(_) => {}
    }
}

/// Exchange's TNEF blob (`winmail.dat`) is rebuilt on every retry. smtpf skips
/// `application/ms-tnef`; the registered `application/vnd.ms-tnef` is the same
/// thing and is skipped too.
fn is_tnef(part: &MessagePart<'_>) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("application")
            && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("ms-tnef") || s.eq_ignore_ascii_case("vnd.ms-tnef"))
    })
}

/// The white-space bytes C's `isspace` knows, all dropped from the hash.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The raw body when the message cannot be parsed: what follows the first
/// blank line; nothing when there is none (the whole input is header).
fn raw_body(message: &[u8]) -> &[u8] {
    let crlf = find(message, b"\r\n\r\n").map(|at| at + 4);
    let lf = find(message, b"\n\n").map(|at| at + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => &message[a.min(b)..],
        (Some(at), None) | (None, Some(at)) => &message[at..],
        (None, None) => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "Hello Bob,\r\nthe meeting moves to Thursday at ten.\r\nRegards, Alice\r\n";

    fn headers() -> String {
        "From: alice@example.com\r\nTo: bob@example.net\r\nSubject: meeting\r\nMessage-ID: <1@example.com>\r\nMIME-Version: 1.0\r\n"
            .to_string()
    }

    fn single(encoding: &str, body: &str) -> Vec<u8> {
        format!("{}Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n{body}", headers())
            .into_bytes()
    }

    fn base64(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for (n, chunk) in data.chunks(3).enumerate() {
            if n > 0 && n % 19 == 0 {
                out.push_str("\r\n");
            }
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(v >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out.push_str("\r\n");
        out
    }

    /// Encodes every byte of each line (`=XX`), with soft breaks, as a
    /// deliberately different quoted-printable spelling.
    fn quoted_printable(text: &str) -> String {
        let mut out = String::new();
        for line in text.split_inclusive("\r\n") {
            let content = line.strip_suffix("\r\n").unwrap_or(line);
            for (n, byte) in content.bytes().enumerate() {
                if n > 0 && n % 20 == 0 {
                    out.push_str("=\r\n");
                }
                out.push_str(&format!("={byte:02X}"));
            }
            if line.ends_with("\r\n") {
                out.push_str("\r\n");
            }
        }
        out
    }

    /// A multipart/mixed message with a text part and one more part.
    fn multipart(boundary: &str, preamble: &str, text: &str, extra: &str, epilogue: &str) -> Vec<u8> {
        format!(
            "{}Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n{preamble}--{boundary}\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{text}--{boundary}\r\n{extra}--{boundary}--\r\n{epilogue}",
            headers()
        )
        .into_bytes()
    }

    fn attachment(ctype: &str, data: &[u8]) -> String {
        format!(
            "Content-Type: {ctype}\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}",
            base64(data)
        )
    }

    #[test]
    fn identical_messages_hash_the_same() {
        let m = single("8bit", TEXT);
        assert_eq!(content_hash(&m), content_hash(&m.clone()));
        let h = content_hash(&m);
        assert_eq!(h.len(), 64);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn headers_are_not_hashed() {
        let a = single("8bit", TEXT);
        let b = format!("Received: from x by y\r\nX-Retry: 2\r\n{}", String::from_utf8(a.clone()).unwrap());
        assert_eq!(content_hash(&a), content_hash(b.as_bytes()));
    }

    #[test]
    fn mime_boundaries_preamble_and_epilogue_do_not_matter() {
        let extra = attachment("application/pdf", b"%PDF-1.4 fake");
        let a = multipart("=_first_boundary_1", "", TEXT, &extra, "");
        let b = multipart(
            "----=_NextPart_000_0042_01D9",
            "This is a multi-part message in MIME format.\r\n",
            TEXT,
            &extra,
            "trailer\r\n",
        );
        assert_eq!(content_hash(&a), content_hash(&b));
    }

    #[test]
    fn transfer_encodings_do_not_matter() {
        let plain = content_hash(&single("8bit", TEXT));
        assert_eq!(plain, content_hash(&single("base64", &base64(TEXT.as_bytes()))));
        assert_eq!(plain, content_hash(&single("quoted-printable", &quoted_printable(TEXT))));
        assert_eq!(plain, content_hash(&single("7bit", TEXT)));
        let changed = TEXT.replace("ten", "two");
        assert_ne!(plain, content_hash(&single("base64", &base64(changed.as_bytes()))));
        assert_ne!(plain, content_hash(&single("quoted-printable", &quoted_printable(&changed))));
    }

    #[test]
    fn white_space_and_rewrapping_do_not_matter() {
        let rewrapped = "Hello   Bob,\r\n\r\n\tthe meeting moves\r\nto Thursday   at ten.   \r\nRegards,\r\nAlice\r\n\r\n\r\n";
        assert_eq!(content_hash(&single("8bit", TEXT)), content_hash(&single("8bit", rewrapped)));
        let lf_only = TEXT.replace("\r\n", "\n");
        assert_eq!(content_hash(&single("8bit", TEXT)), content_hash(&single("8bit", &lf_only)));
    }

    #[test]
    fn a_changed_word_changes_the_hash() {
        let changed = TEXT.replace("Thursday", "Friday");
        assert_ne!(content_hash(&single("8bit", TEXT)), content_hash(&single("8bit", &changed)));
        let extra = attachment("application/pdf", b"%PDF-1.4 fake");
        assert_ne!(
            content_hash(&multipart("b1", "", TEXT, &extra, "")),
            content_hash(&multipart("b1", "", &changed, &extra, ""))
        );
    }

    #[test]
    fn html_comments_and_doctype_do_not_matter_but_tags_do() {
        let html = |body: &str| {
            let extra = format!("Content-Type: text/html; charset=utf-8\r\n\r\n{body}\r\n");
            multipart("alt", "", TEXT, &extra, "")
        };
        let bare = content_hash(&html("<html><body><p>Hi <b>Bob</b></p></body></html>"));
        assert_eq!(
            bare,
            content_hash(&html(
                "<!DOCTYPE html><html><!-- generated 12:01 > -->\r\n<body><p>Hi <!--x--><b>Bob</b></p></body></html>"
            ))
        );
        assert_ne!(bare, content_hash(&html("<html><body><p>Hi <i>Bob</i></p></body></html>")));
        // Outside text/html a comment is content.
        assert_ne!(content_hash(&single("8bit", TEXT)), content_hash(&single("8bit", &format!("{TEXT}<!-- x -->"))));
        // An unterminated construct hides the rest of the part only.
        assert_eq!(content_hash(&html("<p>Hi</p><!-- open")), content_hash(&html("<p>Hi</p><!-- different")));
    }

    #[test]
    fn tnef_attachments_are_skipped() {
        let a = multipart("b", "", TEXT, &attachment("application/ms-tnef; name=\"winmail.dat\"", b"\x78\x9f\x3e\x22 one"), "");
        let b = multipart("b", "", TEXT, &attachment("application/ms-tnef; name=\"winmail.dat\"", b"\x78\x9f\x3e\x22 two"), "");
        let c = multipart("b", "", TEXT, &attachment("application/vnd.ms-tnef", b"three"), "");
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_eq!(content_hash(&a), content_hash(&c));
    }

    #[test]
    fn other_attachments_count() {
        let a = multipart("b", "", TEXT, &attachment("application/octet-stream", b"payload one"), "");
        let b = multipart("b", "", TEXT, &attachment("application/octet-stream", b"payload two"), "");
        assert_ne!(content_hash(&a), content_hash(&b));
    }

    #[test]
    fn attached_messages_are_hashed_whole_without_recursion() {
        let inner = |word: &str| {
            format!("Content-Type: message/rfc822\r\n\r\nFrom: x@example.org\r\nSubject: fwd\r\n\r\nforwarded {word}\r\n")
        };
        assert_ne!(
            content_hash(&multipart("b", "", TEXT, &inner("one"), "")),
            content_hash(&multipart("b", "", TEXT, &inner("two"), ""))
        );
        // Thousands of nested messages: no stack overflow.
        let mut deep = String::from("deep\r\n");
        for _ in 0..5000 {
            deep = format!("Content-Type: message/rfc822\r\n\r\n{deep}");
        }
        let deep = format!("{}{deep}", headers());
        assert_eq!(content_hash(deep.as_bytes()), content_hash(deep.as_bytes()));
    }

    #[test]
    fn deep_multipart_nesting_is_survived() {
        let mut body = String::from("Content-Type: text/plain\r\n\r\nleaf\r\n");
        for level in 0..3000 {
            body = format!("Content-Type: multipart/mixed; boundary=\"b{level}\"\r\n\r\n--b{level}\r\n{body}--b{level}--\r\n");
        }
        let m = format!("{}{body}", headers());
        assert_eq!(content_hash(m.as_bytes()), content_hash(m.as_bytes()));
    }

    #[test]
    fn garbage_and_empty_input_hash_deterministically() {
        let inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"\r\n".to_vec(),
            b"\r\n\r\n".to_vec(),
            b"Subject: x\r\n\r\n".to_vec(),
            b"no headers at all".to_vec(),
            b"\xff\xfe\x00\x01:\r\n\r\n\x80\x81".to_vec(),
            format!("{}Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--\r\n", headers()).into_bytes(),
            format!("{}Content-Type: multipart/mixed\r\n\r\nno boundary\r\n", headers()).into_bytes(),
            format!("{}Content-Transfer-Encoding: base64\r\n\r\n!!!not*base64===\r\n", headers()).into_bytes(),
            format!("{}Content-Transfer-Encoding: quoted-printable\r\n\r\n=Z=\r\n=", headers()).into_bytes(),
            format!("{}Content-Type: text/html\r\n\r\n<!<!<!--<!", headers()).into_bytes(),
        ];
        for input in &inputs {
            assert_eq!(content_hash(input), content_hash(input));
        }
        // Empty bodies agree whatever the headers.
        assert_eq!(content_hash(b"Subject: x\r\n\r\n"), content_hash(b"Subject: y\r\n\r\n \r\n"));
    }

    #[test]
    fn oversized_messages_are_capped() {
        let big = "word ".repeat(MAX_MESSAGE_BYTES / 4);
        let a = single("8bit", &big);
        let b = single("base64", &base64(big.as_bytes()));
        assert_eq!(content_hash(&a), content_hash(&b));
    }
}

//! Structure-aware fuzzing on stable Rust, inside `cargo test`: random but well-framed milter
//! conversations (and raw mutated frames) against the codec and the in-process daemon. No input
//! may panic a session, hang it, or leak a connection count or a file descriptor.
//!
//! A short, fixed budget runs with every `cargo test`. Longer runs:
//!
//! ```sh
//! SMTPF_FUZZ_ITERATIONS=200000 SMTPF_FUZZ_SEED=7 cargo test --release --test fuzz -- --nocapture
//! ```
//!
//! A failure prints the seed and iteration, so it can be replayed with the same variables.

mod common;

use std::time::Duration;

use common::TestDaemon;
use smtpf_milter::milter::codec::{decode_command, encode_command, Command, Family};

/// A small deterministic generator (xorshift64*): the same seed gives the same inputs.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    /// Text a hostile peer might send: ASCII, CR/LF, quotes, NUL-free control bytes, multi-byte
    /// UTF-8, invalid UTF-8 and long runs.
    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a",
            "example.org",
            "<",
            ">",
            "@",
            "\"",
            "\\",
            "\r\n",
            "\n",
            "\t",
            "\u{1b}",
            "é",
            "ü",
            "\u{2028}",
            "%s",
            "%n",
            "#721 end ",
            " ",
            "IPv6:",
            "[",
            "]",
            "::ffff:",
            "192.0.2.",
            "255",
            "{",
            "}",
            "\u{7f}",
            "\u{fffd}",
        ];
        let mut s = String::new();
        let n = if self.chance(50) { 2000 } else { self.below(12) };
        for _ in 0..n {
            s.push_str(PIECES[self.below(PIECES.len() as u64) as usize]);
        }
        s
    }
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn iterations(default: u64) -> u64 {
    std::env::var("SMTPF_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("SMTPF_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_f00d)
}

/// One command, shaped like the protocol's, with hostile contents.
fn command(r: &mut Rng) -> Command {
    match r.below(16) {
        0 => Command::Macro {
            stage: b"CHMRTLNBEUZ"[r.below(11) as usize],
            pairs: {
                let n = if r.chance(20) { 3000 } else { r.below(6) };
                (0..n).map(|_| (r.text(), r.text())).collect()
            },
        },
        1 => Command::Connect {
            hostname: r.text(),
            family: [Family::Inet, Family::Inet6, Family::Unix, Family::Unknown][r.below(4) as usize],
            port: r.next() as u16,
            address: if r.chance(2) { format!("192.0.2.{}", r.below(256)) } else { r.text() },
        },
        2 => Command::Helo { name: r.text() },
        3 => Command::Mail { sender: format!("<{}>", r.text()), params: (0..r.below(3)).map(|_| r.text()).collect() },
        4 => Command::Rcpt { recipient: format!("<{}>", r.text()), params: (0..r.below(3)).map(|_| r.text()).collect() },
        5 => Command::Data,
        6 => Command::Header { name: if r.chance(3) { "Message-ID".into() } else { r.text() }, value: r.text() },
        7 => Command::EndOfHeaders,
        8 => {
            let max = if r.chance(10) { 60_000 } else { 300 };
            Command::Body(r.bytes(max))
        }
        9 => Command::EndOfMessage(r.bytes(100)),
        10 => Command::Abort,
        11 => Command::Unknown(r.text()),
        12 => Command::QuitNewConnection,
        13 => Command::OptNeg { version: r.below(8) as u32, actions: r.next() as u32, protocol: r.next() as u32 },
        _ => Command::Helo { name: "mail.example.org".into() },
    }
}

/// Encodes `cmd`, sometimes damaged: a flipped byte, a cut payload, a lying length.
fn frame(r: &mut Rng, cmd: &Command) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command(cmd, &mut out);
    match r.below(12) {
        0 if out.len() > 5 => {
            let i = 4 + r.below(out.len() as u64 - 4) as usize;
            out[i] = r.next() as u8;
        }
        1 if out.len() > 6 => {
            // Cut the payload but keep the length honest about the cut.
            let keep = 5 + r.below(out.len() as u64 - 5) as usize;
            out.truncate(keep);
            let len = (keep - 4) as u32;
            out[..4].copy_from_slice(&len.to_be_bytes());
        }
        2 => out[..4].copy_from_slice(&(r.next() as u32).to_be_bytes()),
        _ => {}
    }
    out
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

#[test]
fn the_codec_never_panics_on_any_payload() {
    let mut r = Rng(seed());
    for i in 0..iterations(20_000) {
        let code = if r.chance(4) { r.next() as u8 } else { b"ODCHMRTLNBEAQKU"[r.below(15) as usize] };
        let payload = if r.chance(2) {
            r.bytes(200)
        } else {
            let cmd = command(&mut r);
            let f = frame(&mut r, &cmd);
            f.get(5..).unwrap_or_default().to_vec()
        };
        // Must return, never panic; the seed and iteration replay it.
        let result = std::panic::catch_unwind(|| decode_command(code, &payload));
        assert!(result.is_ok(), "decode panicked: seed {} iteration {i} code {code} payload {payload:?}", seed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_conversations_never_panic_hang_or_leak() {
    let d = TestDaemon::start("grey-key = \"ptr,mail,rcpt\"\ndupmsg-ttl = 3600\nmilter-timeout = 5\n").await;
    let fds_before = open_fds();
    let mut r = Rng(seed() ^ 0xc0ffee);
    let conversations = iterations(20_000) / 100;
    for n in 0..conversations {
        let mut c = d.client().await;
        // Mostly a proper start, so the checks behind the protocol are reached too.
        if !r.chance(5) {
            let _ = c.negotiate(6, 0x1ff, if r.chance(2) { 0x1fffff } else { 0 }).await;
        }
        let steps = 1 + r.below(30);
        let mut bytes = Vec::new();
        // Mostly a CONNECT first, as an MTA sends it, so what follows reaches the checks.
        if !r.chance(4) {
            let connect = loop {
                if let cmd @ Command::Connect { .. } = command(&mut r) {
                    break cmd;
                }
            };
            bytes.extend(frame(&mut r, &connect));
        }
        for _ in 0..steps {
            let cmd = command(&mut r);
            bytes.extend(frame(&mut r, &cmd));
        }
        // Written in one go, answers unread: the daemon must cope either way.
        let sent = tokio::time::timeout(Duration::from_secs(10), c.send_raw(&bytes)).await;
        assert!(sent.is_ok(), "conversation {n} (seed {}): the milter stopped reading", seed());
        drop(c);
    }
    // Every connection ends: the open count returns to zero and no descriptor stays behind.
    for _ in 0..500 {
        if d.running().active() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(d.running().active(), 0, "connections still counted open");
    let panics = d.grep("#2041");
    assert!(panics.is_empty(), "a session panicked (seed {}): {panics:?}", seed());
    let fds_after = open_fds();
    assert!(fds_after <= fds_before + 2, "descriptors leaked: {fds_before} before, {fds_after} after");
    // And the daemon still serves a normal session.
    let mut c = d.client().await;
    common::open_session(&mut c, "mail.example.org", "192.0.2.90", "mail.example.org").await;
    c.command(&Command::Quit).await.unwrap();
}

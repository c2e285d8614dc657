//! Session and transaction identifiers in smtpf's layout.
//!
//! smtpf users grep their logs by these ids, and the ids end every reply text we send, so a sender's
//! bounce leads straight to the log lines. A session id is 6 time62 characters of the session start,
//! the process id (`%05u`), a per-process session counter (`%05u`, wraps, 0 skipped) and `00`. A
//! transaction id has the same layout with the time of the MAIL command and, in the last two places,
//! a per-session message counter in base62.

use std::fmt;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The base62 digits of time62, as libsnert 1.76 (which smtpf 2.6 requires) writes them. Older
/// libsnert releases had `Y`/`y` in place of `T`/`t`, so that one character stood for two values
/// and an id could not be read back.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Local broken-down time, because smtpf stamps ids with local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 0-11
    pub month: u32,
    /// 1-31
    pub mday: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    /// Offset east of UTC in seconds, for RFC 2822 dates.
    pub utc_offset: i64,
}

impl LocalTime {
    /// Converts a Unix time to local time with the C library (honours TZ).
    pub fn from_unix(secs: i64) -> LocalTime {
        let t: libc::time_t = secs as libc::time_t;
        // SAFETY: localtime_r writes into the zeroed struct we own; both pointers are valid.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
        if !ok {
            return LocalTime { year: 1970, month: 0, mday: 1, hour: 0, min: 0, sec: 0, utc_offset: 0 };
        }
        LocalTime {
            year: tm.tm_year + 1900,
            month: tm.tm_mon as u32,
            mday: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            min: tm.tm_min as u32,
            sec: tm.tm_sec as u32,
            utc_offset: tm.tm_gmtoff,
        }
    }

    /// The current local time.
    pub fn now() -> LocalTime {
        LocalTime::from_unix(unix_now())
    }
}

/// Seconds since the epoch (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The 6-character time62 stamp: years since 1900 modulo 62 (C's `tm_year % 62`, as libsnert
/// writes it), month, day-1, hour, minute, second.
pub fn time62(t: &LocalTime) -> [u8; 6] {
    let pick = |v: i64| BASE62[v.rem_euclid(62) as usize];
    [
        pick(t.year as i64 - 1900),
        pick(t.month as i64),
        pick(t.mday as i64 - 1),
        pick(t.hour as i64),
        pick(t.min as i64),
        pick(t.sec as i64),
    ]
}

/// A session id (one per milter connection, i.e. one per SMTP session).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId {
    text: String,
    pid: u32,
    counter: u16,
}

static SESSION_COUNTER: AtomicU16 = AtomicU16::new(0);

impl SessionId {
    /// Makes the next session id from the process-wide counter.
    pub fn next(now: &LocalTime) -> SessionId {
        let counter = loop {
            let n = SESSION_COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if n != 0 {
                break n;
            }
        };
        SessionId::new(now, std::process::id(), counter)
    }

    /// Builds an id from its parts (tests and tools).
    pub fn new(now: &LocalTime, pid: u32, counter: u16) -> SessionId {
        let t = time62(now);
        let text = format!("{}{:05}{:05}00", std::str::from_utf8(&t).unwrap_or("000000"), pid, counter);
        SessionId { text, pid, counter }
    }

    /// The id as logged.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Makes a transaction id for message number `msg` of this session, stamped `now`.
    pub fn transaction(&self, now: &LocalTime, msg: u16) -> String {
        let t = time62(now);
        let m = msg as usize % (62 * 62);
        format!(
            "{}{:05}{:05}{}{}",
            std::str::from_utf8(&t).unwrap_or("000000"),
            self.pid,
            self.counter,
            BASE62[m / 62] as char,
            BASE62[m % 62] as char
        )
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A small per-session pseudo-random start for the message counter, as smtpf does (0..3843).
pub fn random_message_start(seed: u64) -> u16 {
    // SplitMix64 step: enough spread for a counter start; not security relevant.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % (62 * 62)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(year: i32, month: u32, mday: u32, hour: u32, min: u32, sec: u32) -> LocalTime {
        LocalTime { year, month, mday, hour, min, sec, utc_offset: 0 }
    }

    #[test]
    fn time62_uses_libsnert_alphabet() {
        // (2026 - 1900) % 62 = 2 -> '2'; month 10 (November) -> 'A'; day 22 -> index 21 'L';
        // minute 29 -> 'T' and second 55 -> 't' (libsnert before 1.76 wrote 'Y' and 'y').
        let s = time62(&t(2026, 10, 22, 3, 29, 55));
        assert_eq!(&s, b"2AL3Tt");
        assert_eq!(time62(&t(1962, 0, 1, 0, 0, 0))[0], b'0', "the year wraps every 62 years");
        assert_eq!(time62(&t(2023, 0, 1, 0, 0, 0))[0], b'z');
    }

    /// Every value has its own digit, so an id reads back to the time it was made.
    #[test]
    fn time62_reads_back() {
        let read = |c: u8| BASE62.iter().position(|d| *d == c).unwrap() as u32;
        for (i, d) in BASE62.iter().enumerate() {
            assert_eq!(read(*d) as usize, i, "digit {} is used twice", *d as char);
        }
        for sec in 0..60 {
            let s = time62(&t(2026, 11, 31, 23, 59 - sec, sec));
            assert_eq!([read(s[1]), read(s[2]) + 1, read(s[3]), read(s[4]), read(s[5])], [11, 31, 23, 59 - sec, sec]);
        }
    }

    #[test]
    fn session_id_layout() {
        let id = SessionId::new(&t(2026, 10, 22, 3, 29, 55), 4321, 7);
        assert_eq!(id.as_str(), "2AL3Tt043210000700");
        assert_eq!(id.as_str().len(), 18);
        assert_eq!(id.transaction(&t(2026, 10, 22, 3, 30, 0), 63), "2AL3U0043210000711");
    }

    #[test]
    fn counter_skips_zero() {
        let a = SessionId::next(&LocalTime::now());
        let b = SessionId::next(&LocalTime::now());
        assert_ne!(a.counter, 0);
        assert_ne!(a, b);
    }

    #[test]
    fn random_start_in_range() {
        for seed in 0..1000 {
            assert!(random_message_start(seed) < 3844);
        }
    }
}

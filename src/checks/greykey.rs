//! The words of greylisting: `grey-key` elements, how each element is spelled in a record's key,
//! and what a session remembers between DATA and end of message.
//!
//! The config file speaks these words (`grey-key = "ptr,mail,rcpt"`), the session keeps the
//! deferred and passed states in its transaction, and the greylisting stage steps
//! ([`super::greylist`]) build keys with them. Keeping them here, free of the session and the
//! store, lets the config and the session use them without importing the check itself.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::address::bare_address;
use crate::checks::uri::registered_domain;
use crate::ids::LocalTime;

/// The key elements of `grey-key`, in smtpf's fixed order (bit order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyWord {
    Ip,
    Ptr,
    Ptrn,
    Helo,
    Helos,
    Mail,
    Rcpt,
}

impl KeyWord {
    /// Parses one word of `grey-key`.
    pub fn parse(word: &str) -> Option<KeyWord> {
        Some(match word.trim().to_ascii_lowercase().as_str() {
            "ip" => KeyWord::Ip,
            "ptr" => KeyWord::Ptr,
            "ptrn" => KeyWord::Ptrn,
            "helo" => KeyWord::Helo,
            "helos" => KeyWord::Helos,
            "mail" => KeyWord::Mail,
            "rcpt" => KeyWord::Rcpt,
            _ => return None,
        })
    }

    /// Whether the word names the client host (ip, ptr, ptrn), which passes as a whole after a
    /// first pass and makes grey-drop answer 421.
    pub fn is_host(self) -> bool {
        matches!(self, KeyWord::Ip | KeyWord::Ptr | KeyWord::Ptrn)
    }
}

/// Parses `grey-key` into sorted, de-duplicated words (empty: greylisting off).
pub fn parse_key(words: &[&str]) -> Result<Vec<KeyWord>, String> {
    let mut out = Vec::new();
    for w in words.iter().filter(|w| !w.trim().is_empty()) {
        let k = KeyWord::parse(w)
            .ok_or_else(|| format!("unknown grey-key word \"{w}\" (use ip, ptr, ptrn, helo, helos, mail, rcpt)"))?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out.sort();
    Ok(out)
}

/// `mail.pool1.example.com` → `pool1.example.com`; the whole name when only a public suffix would
/// be left (`example.com`, `example.co.uk`), nothing for a dotless name.
pub fn domain_suffix(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let (_, rest) = name.split_once('.')?;
    if registered_domain(rest).is_none() {
        return Some(name);
    }
    Some(rest.to_string())
}

/// The PTR name with every run of digits left of the registered domain replaced by `#`:
/// `host-12-34.dyn.example.com` → `host-#-#.dyn.example.com`.
pub fn ptr_n(name: &str) -> String {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    // The registered domain comes back in ASCII (punycode) form: it is kept as it is only where
    // the name really ends with it, never by a length that could fall inside a character.
    let keep = registered_domain(&name).filter(|r| name.ends_with(r.as_str())).map(|r| r.len()).unwrap_or(0);
    let (head, tail) = name.split_at(name.len() - keep);
    let mut out = String::with_capacity(name.len());
    let mut in_digits = false;
    for c in head.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out.push_str(tail);
    out
}

/// `Local+detail@Domain` → `local@domain`; the null sender is `@`.
pub fn key_address(addr: &str) -> String {
    let a = bare_address(addr).to_ascii_lowercase();
    match a.rsplit_once('@') {
        Some((local, domain)) => {
            let local = local.split_once('+').map(|(l, _)| l).unwrap_or(local);
            format!("{local}@{domain}")
        }
        None if a.is_empty() => "@".to_string(),
        None => a,
    }
}

/// The client IP as a key element, aggregated to the configured prefix (`192.0.2.0/24`).
pub fn ip_element(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> String {
    let (prefix, full) = match ip {
        IpAddr::V4(_) => (v4_prefix, 32),
        IpAddr::V6(_) => (v6_prefix, 128),
    };
    if prefix >= full {
        return ip.to_string();
    }
    match IpNet::new(ip, prefix) {
        Ok(net) => net.trunc().to_string(),
        Err(_) => ip.to_string(),
    }
}

/// A key whose decision waits for the message content (grey-content).
#[derive(Clone, Debug)]
pub struct Deferred {
    pub key: String,
    pub host_key: Option<String>,
    pub period: i64,
}

/// What greylisting decided for a message, kept for the report header at end of message.
#[derive(Clone, Debug)]
pub struct GreyPass {
    pub key: String,
    pub age: i64,
    pub created: i64,
}

/// `Sun, 22 Nov 2026 04:12:08 +0000`, local time, as smtpf's report header.
pub fn rfc2822(unix: i64) -> String {
    rfc2822_in(unix, &LocalTime::from_unix(unix))
}

/// [`rfc2822`] for a given broken-down local time of `unix` (its fields and UTC offset).
fn rfc2822_in(unix: i64, t: &LocalTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let local_days = (unix + t.utc_offset).div_euclid(86_400);
    let off = t.utc_offset / 60;
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} {}{:02}{:02}",
        DAYS[local_days.rem_euclid(7) as usize],
        t.mday,
        MONTHS[t.month as usize % 12],
        t.year,
        t.hour,
        t.min,
        t.sec,
        if off < 0 { '-' } else { '+' },
        off.abs() / 60,
        off.abs() % 60
    )
}

/// The value of the report header for a tuple that passed: its age, key and first sight.
pub fn report_value(pass: &GreyPass) -> String {
    let age = pass.age.max(0);
    let at = rfc2822(pass.created);
    // The key as stored, `grey:` prefix included, as smtpf writes it.
    format!("age={age} ({:02}:{:02}:{:02}) key={} at=\"{at}\"", age / 3600, age / 60 % 60, age % 60, pass.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_words_parse_in_fixed_order() {
        assert_eq!(parse_key(&["rcpt", "mail", "ptr"]).unwrap(), vec![KeyWord::Ptr, KeyWord::Mail, KeyWord::Rcpt]);
        assert!(parse_key(&[]).unwrap().is_empty());
        assert!(parse_key(&["p0f"]).unwrap_err().contains("p0f"));
    }

    #[test]
    fn suffixes() {
        assert_eq!(domain_suffix("mail.pool1.example.com").as_deref(), Some("pool1.example.com"));
        assert_eq!(domain_suffix("mail.example.com").as_deref(), Some("example.com"));
        assert_eq!(domain_suffix("example.com").as_deref(), Some("example.com"));
        assert_eq!(domain_suffix("pcspecialist.co.uk").as_deref(), Some("pcspecialist.co.uk"));
        assert_eq!(domain_suffix("localhost"), None);
        assert_eq!(ptr_n("host-12-34.dyn.example.com"), "host-#-#.dyn.example.com");
        assert_eq!(ptr_n("1.2.3.4.in.isp99.co.uk"), "#.#.#.#.in.isp99.co.uk");
        // A name that is not ASCII (a raw IDN PTR): no panic, digits still collapse.
        assert_eq!(ptr_n("ééééééé.bücher.de"), "ééééééé.bücher.de");
        assert_eq!(ptr_n("dsl-12.bücher.de"), "dsl-#.bücher.de");
    }

    #[test]
    fn addresses() {
        assert_eq!(key_address("<Fred+Lists@Example.COM>"), "fred@example.com");
        assert_eq!(key_address("<>"), "@");
    }

    #[test]
    fn ip_aggregation() {
        let v4: IpAddr = "192.0.2.77".parse().unwrap();
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(ip_element(v4, 32, 128), "192.0.2.77");
        assert_eq!(ip_element(v4, 24, 64), "192.0.2.0/24");
        assert_eq!(ip_element(v6, 24, 64), "2001:db8:1:2::/64");
    }

    #[test]
    fn rfc2822_dates() {
        // 2026-11-22 04:12:08 UTC was a Sunday; the day and offset follow the local time given.
        let unix = 1_795_320_728;
        let at = |mday, hour, utc_offset| LocalTime { year: 2026, month: 10, mday, hour, min: 12, sec: 8, utc_offset };
        assert_eq!(rfc2822_in(unix, &at(22, 4, 0)), "Sun, 22 Nov 2026 04:12:08 +0000");
        assert_eq!(rfc2822_in(unix, &at(22, 5, 3600)), "Sun, 22 Nov 2026 05:12:08 +0100");
        assert_eq!(rfc2822_in(unix, &at(21, 23, -5 * 3600)), "Sat, 21 Nov 2026 23:12:08 -0500");
    }

    #[test]
    fn report_values() {
        let pass = GreyPass { key: "grey:example.com,a@b,c@d".into(), age: 3725, created: 1_795_320_728 };
        let v = report_value(&pass);
        assert!(v.starts_with("age=3725 (01:02:05) key=grey:example.com,a@b,c@d at=\""), "{v}");
        assert!(v.ends_with(&format!("{}\"", rfc2822(1_795_320_728))), "{v}");
    }
}

//! `smtpf-milter grey ...`: inspect and release greylist records from the command line.
//!
//! Admins need to answer "why is this sender delayed" and to let a stuck one through (a common
//! request to every greylister; rspamd's hashed keys make it impossible there). These commands
//! read and write the same store the daemon uses: SQLite's WAL mode makes that safe while the
//! daemon runs, and with Redis they list keys with `SCAN` (never `KEYS`), so a busy server is
//! not stalled.

use crate::store::{Record, Store, StoreError};

/// Which records `grey list` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFilter {
    All,
    Pending,
    Passed,
}

fn state_word(value: &str) -> &'static str {
    match value.chars().next() {
        Some('4') => "pending",
        Some('0') => "passed",
        _ => "other",
    }
}

fn full_key(key: &str) -> String {
    if key.starts_with("grey:") {
        key.to_string()
    } else {
        format!("grey:{key}")
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `grey list`: records whose key contains `filter`, as a table or JSON lines.
pub async fn list(
    store: &Store,
    now: i64,
    state: StateFilter,
    filter: Option<&str>,
    json: bool,
    limit: usize,
) -> Result<String, StoreError> {
    let rows = store.scan("grey:", now, limit).await?;
    let mut out = String::new();
    if !json {
        out.push_str(&format!("{:<8} {:>8} {:>9}  {}\n", "STATE", "AGE", "EXPIRES", "KEY"));
    }
    for (key, r) in rows {
        let word = state_word(&r.value);
        let wanted = match state {
            StateFilter::All => true,
            StateFilter::Pending => word == "pending",
            StateFilter::Passed => word == "passed",
        };
        let shown = key.strip_prefix("grey:").unwrap_or(&key);
        if !wanted || filter.is_some_and(|f| !shown.contains(&f.to_ascii_lowercase())) {
            continue;
        }
        let age = now - r.created;
        let ttl = r.ttl(now);
        if json {
            out.push_str(&format!(
                "{{\"key\":{},\"state\":\"{word}\",\"age\":{age},\"expires_in\":{ttl},\"created\":{},\"expires\":{}}}\n",
                json_string(shown),
                r.created,
                r.expires
            ));
        } else {
            out.push_str(&format!("{word:<8} {:>8} {:>9}  {shown}\n", human(age), human(ttl)));
        }
    }
    Ok(out)
}

/// Seconds as `1d02h`, `3h05m`, `4m10s`, `12s`.
pub fn human(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

/// `grey allow KEY`: mark a tuple (or a host part) passed, for `accept_ttl` seconds.
pub async fn allow(store: &Store, now: i64, key: &str, accept_ttl: i64) -> Result<String, StoreError> {
    let key = full_key(key);
    let created = store.get(&key, now).await?.map(|r| r.created).unwrap_or(now);
    store.put(&key, Record::new("0", created, now + accept_ttl)).await?;
    Ok(format!("{} passed for {}\n", key.strip_prefix("grey:").unwrap_or(&key), human(accept_ttl)))
}

/// `grey delete KEY`.
pub async fn delete(store: &Store, key: &str) -> Result<String, StoreError> {
    let key = full_key(key);
    let shown = key.strip_prefix("grey:").unwrap_or(&key).to_string();
    Ok(if store.delete(&key).await? { format!("{shown} deleted\n") } else { format!("{shown} not found\n") })
}

/// `grey stats`: counts by state.
pub async fn stats(store: &Store, now: i64) -> Result<String, StoreError> {
    let s = store.stats("grey:", now).await?;
    let get = |c: &str| s.live_by_code.get(c).copied().unwrap_or(0);
    let pending = get("4");
    let passed = get("0");
    let other = s.live.saturating_sub(pending + passed);
    let d = store.stats("dupmsg:", now).await?;
    Ok(format!(
        "grey pending {pending}\ngrey passed {passed}\ngrey other {other}\ngrey expired-not-collected {}\ndupmsg {}\n",
        s.expired, d.live
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(5), "5s");
        assert_eq!(human(250), "4m10s");
        assert_eq!(human(3 * 3600 + 300), "3h05m");
        assert_eq!(human(90_000), "1d01h");
        assert_eq!(human(-3), "0s");
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}

//! `smtpf-milter import-smtpf`: smtpf's `smtpf.cf` read the way smtpf reads it, written out as
//! smtpf-milter TOML, with a report line for every option.
//!
//! A postmaster moving from smtpf should not have to translate a file of a hundred options by
//! hand, nor find out at the first spam run which of them the milter quietly did not take over.
//! The file is read with smtpf's own rules (libsnert's option parser: whitespace-separated
//! `name=value`, `name+=value`, `+name`, `-name` tokens, `'`/`"` quotes and backslash escapes,
//! `#` comment lines, the first token that is no option ends its line, the last setting wins),
//! and each value is converted as smtpf understood it (C `strtol` numbers, so `10m` is ten
//! seconds; first letters for policy words). What comes out is only the options smtpf-milter
//! reads; every line of the report says what became of one option, and why, using the table in
//! [`super::smtpf`]. The TOML is checked with the config parser before it is handed out, so it
//! always loads.

use std::collections::BTreeMap;

use super::smtpf::{self, Conv, Fate, SmtpfOption};
use super::Config;

/// The longest line smtpf reads at once (`fgets` into a `BUFSIZ` buffer, less the NUL).
const SMTPF_LINE_MAX: usize = 8191;

/// What `import` produced: the TOML text and the report, one line per option or problem.
#[derive(Debug)]
pub struct Imported {
    /// smtpf-milter TOML; loads with `check-config`.
    pub toml: String,
    /// One line per option set in the file, and per malformed line, in line order.
    pub report: Vec<String>,
    /// The closing count of the report.
    pub summary: String,
}

/// One `name=value` (or `+name`, `-name`, `name+=value`) as smtpf read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Setting {
    line: usize,
    /// The name as written.
    name: String,
    value: String,
    /// `name+=value`: appended to the current value as a list item.
    append: bool,
}

/// The file as smtpf reads it: its settings in order, and what it could not read.
#[derive(Debug, Default)]
struct CfFile {
    settings: Vec<Setting>,
    /// (line, message) for text smtpf skips or reads oddly.
    problems: Vec<(usize, String)>,
}

/// C's `strtol(text, &end, 0)`: leading white space, a sign, then hex (`0x`), octal (leading
/// `0`) or decimal digits, as far as they go. Returns the value (clamped like C's) and how many
/// bytes were read; nothing read is (0, 0).
fn strtol(text: &str) -> (i64, usize) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let negative = b.get(i) == Some(&b'-');
    if matches!(b.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    let (radix, mut j) = if b.get(i) == Some(&b'0')
        && matches!(b.get(i + 1), Some(b'x' | b'X'))
        && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        (16, i + 2)
    } else if b.get(i) == Some(&b'0') {
        (8, i)
    } else {
        (10, i)
    };
    let start = j;
    let mut value: i128 = 0;
    while let Some(d) = b.get(j).and_then(|&c| (c as char).to_digit(radix)) {
        value = (value * i128::from(radix) + i128::from(d)).min(i128::from(i64::MAX) + 1);
        j += 1;
    }
    if j == start {
        return (0, 0);
    }
    let value = if negative { (-value).max(i128::from(i64::MIN)) } else { value.min(i128::from(i64::MAX)) };
    (value as i64, j)
}

/// Splits one line into tokens the way libsnert's `TokenSplitA` does: white space separates,
/// `'` and `"` quote (the other quote character is literal inside), a backslash takes the next
/// character literally (`\t`, `\n`, `\s` and the other C letters become their control
/// characters). Returns the tokens and whether a quote was left open.
fn split_tokens(line: &str) -> (Vec<String>, bool) {
    let mut tokens = Vec::new();
    let mut current: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(next) = chars.next() else { break };
                let lit = match next {
                    'a' => '\x07',
                    'b' => '\x08',
                    'e' => '\x1b',
                    'f' => '\x0c',
                    'n' => '\n',
                    'r' => '\r',
                    's' => ' ',
                    't' => '\t',
                    'v' => '\x0b',
                    other => other,
                };
                current.get_or_insert_with(String::new).push(lit);
            }
            '"' | '\'' => match quote {
                None => {
                    quote = Some(c);
                    current.get_or_insert_with(String::new);
                }
                Some(q) if q == c => quote = None,
                Some(_) => current.get_or_insert_with(String::new).push(c),
            },
            ' ' | '\t' | '\r' | '\n' if quote.is_none() => {
                if let Some(t) = current.take() {
                    tokens.push(t);
                }
            }
            _ => current.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(t) = current.take() {
        tokens.push(t);
    }
    (tokens, quote.is_some())
}

/// Text from the file as the report shows it: control characters escaped, so that one report
/// line stays one line; an empty token as `''`.
fn visible(text: &str) -> String {
    if text.is_empty() {
        return "''".to_string();
    }
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Whether libsnert accepts this as the first character of an option name.
fn name_start(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
}

/// Reads smtpf.cf text with smtpf's rules.
fn read_cf(text: &str) -> CfFile {
    let mut cf = CfFile::default();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        // Only a '#' in the first column makes a comment line.
        if raw.starts_with('#') {
            continue;
        }
        if raw.len() > SMTPF_LINE_MAX {
            cf.problems
                .push((line, format!("longer than the {SMTPF_LINE_MAX} bytes smtpf reads at once: smtpf read it in pieces")));
        }
        let (tokens, open_quote) = split_tokens(raw);
        if open_quote {
            cf.problems.push((line, "a quote is not closed: smtpf keeps the end of the line in the value".to_string()));
        }
        for (n, token) in tokens.iter().enumerate() {
            let rest = || visible(&tokens[n..].join(" "));
            let shown = visible(token);
            let mut chars = token.chars();
            let first = chars.next();
            let setting = match first {
                Some(sign @ ('+' | '-')) if name_start(chars.clone().next()) => {
                    let name: String = chars.collect();
                    if name.contains('=') {
                        cf.problems.push((
                            line,
                            format!(
                                "`{shown}`: a switch takes no value; smtpf looks for an option named \"{}\" and finds none",
                                visible(&name)
                            ),
                        ));
                        continue;
                    }
                    Setting { line, name, value: sign.to_string(), append: false }
                }
                _ if token == "--" => {
                    if n + 1 < tokens.len() {
                        cf.problems.push((
                            line,
                            format!("`--` ends the options of the line: smtpf ignores `{}`", visible(&tokens[n + 1..].join(" "))),
                        ));
                    }
                    break;
                }
                _ if token.starts_with('#') => break,
                c if name_start(c) && token.contains('=') => {
                    let (name, value) = token.split_once('=').unwrap_or((token, ""));
                    match name.strip_suffix('+') {
                        Some(name) => Setting { line, name: name.to_string(), value: value.to_string(), append: true },
                        None => Setting { line, name: name.to_string(), value: value.to_string(), append: false },
                    }
                }
                _ => {
                    let why =
                        if name_start(first) { "is not an option (no `=`, `+` or `-`)" } else { "does not start with a letter" };
                    cf.problems
                        .push((line, format!("`{shown}` {why}: smtpf stops reading the line there and ignores `{}`", rest())));
                    break;
                }
            };
            cf.settings.push(setting);
        }
    }
    cf
}

/// smtpf's checks that refuse mail by default: when the file does not turn them off, smtpf had
/// them on, and the report says smtpf-milter does not have them.
const DEFAULT_CHECKS: [&str; 9] = [
    "helo-claims-us",
    "one-rcpt-per-null",
    "reject-percent-relay",
    "reject-quoted-at-sign",
    "reject-unknown-tld",
    "reject-uucp-route",
    "rfc2606-special-domains",
    "rfc2821-strict-helo",
    "spf-mail-policy",
];

/// What became of one option.
enum Outcome {
    /// `key = value`, with remarks on how smtpf read the value.
    Write {
        key: &'static str,
        value: toml::Value,
        notes: Vec<String>,
    },
    /// Converted, and smtpf-milter's default already means the same.
    Nothing(String),
    /// The value cannot be converted; a TOML line to suggest (commented out) if there is one.
    Refused {
        why: String,
        suggest: Option<String>,
    },
    NoMeaning(&'static str),
    NotYet {
        what: &'static str,
        off: bool,
    },
}

/// How smtpf reads a switch: `+` is on, anything else is a C number (words read as 0).
fn switch(value: &str) -> (bool, Option<String>) {
    if value == "+" {
        return (true, None);
    }
    let (n, used) = strtol(value);
    let note = (value != "-" && used != value.len())
        .then(|| format!("smtpf reads \"{value}\" as {n}, so {}", if n != 0 { "on" } else { "off" }));
    (n != 0, note)
}

/// Whether a value turns a feature off in smtpf's reading (empty, `-`, `none`, 0).
fn is_off(option: &SmtpfOption, value: &str) -> bool {
    let (n, used) = strtol(value);
    value.is_empty()
        || value == "-"
        || value.eq_ignore_ascii_case("none")
        || (used == value.len() && n == 0)
        || (option.is_switch() && value != "+" && n == 0)
}

/// smtpf's list delimiters (`OPTION_LIST_DELIMS`).
fn list_items(value: &str, delims: &[char]) -> Vec<String> {
    value.split(delims).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// One DNS list entry in smtpf's syntax (`zone`, `zone/mask`, `zone:code`) in ours.
fn zone_entry(entry: &str, notes: &mut Vec<String>) -> String {
    match entry.find(['/', ':']) {
        Some(at) if entry[at..].starts_with('/') => {
            let (zone, mask) = (&entry[..at], &entry[at + 1..]);
            let (n, used) = strtol(mask);
            let m = (n as u64) & 0xffff_ffff;
            let hex = mask.starts_with("0x") || mask.starts_with("0X");
            let text = if hex { format!("{zone}/0x{m:X}") } else { format!("{zone}/{m}") };
            if used != mask.len() || (mask.len() > 1 && mask.starts_with('0') && !hex) {
                notes.push(format!("smtpf reads the mask of {entry} as {m}"));
            }
            text
        }
        Some(at) => format!("{}={}", &entry[..at], &entry[at + 1..]),
        None => entry.to_string(),
    }
}

/// smtpf's verbose words that name lines smtpf-milter writes too.
const SHARED_VERBOSE: &[&str] = &["info", "debug", "access", "dns", "rbl", "uri", "spf", "grey", "dupmsg", "cache"];

/// smtpf's verbose words (each `word`, `+word`, `-word` or `word=N`, info on unless turned
/// off) as our list.
fn verbose(value: &str, notes: &mut Vec<String>) -> String {
    let mut info = true;
    let mut on: Vec<String> = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    for item in list_items(value, &[';', ',', ' ']) {
        let (word, set) = match item.chars().next() {
            Some('+') => (item[1..].to_string(), true),
            Some('-') => (item[1..].to_string(), false),
            _ => match item.split_once('=') {
                Some((w, v)) => (w.to_string(), switch(v).0),
                None => (item.clone(), true),
            },
        };
        let word = word.to_ascii_lowercase();
        if !name_start(word.chars().next()) {
            continue;
        }
        if word == "info" {
            info = set;
        } else if SHARED_VERBOSE.contains(&word.as_str()) {
            on.retain(|w| *w != word);
            if set {
                on.push(word);
            }
        } else if !dropped.contains(&item) {
            dropped.push(item);
        }
    }
    if !dropped.is_empty() {
        notes.push(format!("left out {}: smtpf-milter has no such lines", dropped.join(", ")));
    }
    let mut words = Vec::new();
    if info {
        words.push("info".to_string());
    }
    words.extend(on);
    if words.is_empty() {
        "-info".to_string()
    } else {
        words.join(",")
    }
}

/// `grey-key`'s words in smtpf's order, with its bit values.
const GREY_WORDS: [(&str, i64); 8] =
    [("ip", 1), ("ptr", 2), ("ptrn", 4), ("helo", 8), ("helos", 16), ("p0f", 32), ("mail", 64), ("rcpt", 128)];

/// smtpf's `grey-key` (a bit mask, or words with `+`, `-`, `!` prefixes; unknown words ignored)
/// as our word list.
fn grey_key(value: &str, notes: &mut Vec<String>) -> String {
    let (n, used) = strtol(value);
    let mut bits = 0i64;
    if used == value.len() {
        bits = n;
        if !value.is_empty() {
            notes.push(format!("smtpf reads the number {value} as a bit mask"));
        }
    } else {
        for item in list_items(value, &[';', ',', ' ']) {
            let (set, word) = match item.strip_prefix(['+', '-', '!']) {
                Some(w) => (item.starts_with('+'), w),
                None => (true, item.as_str()),
            };
            match GREY_WORDS.iter().find(|(w, _)| w.eq_ignore_ascii_case(word)) {
                Some((_, bit)) if set => bits |= bit,
                Some((_, bit)) => bits &= !bit,
                None => notes.push(format!("smtpf ignores the unknown word \"{word}\"")),
            }
        }
    }
    if bits & 32 != 0 {
        notes.push("left out p0f: smtpf-milter has no p0f".to_string());
    }
    let words: Vec<&str> = GREY_WORDS.iter().filter(|(w, bit)| bits & bit != 0 && *w != "p0f").map(|(w, _)| *w).collect();
    if words.is_empty() {
        notes.push("an empty key turns greylisting off".to_string());
    }
    words.join(",")
}

/// smtpf's kvm map types other than a text file.
const MAP_TYPES: [&str; 6] = ["db", "sql", "hash", "socketmap", "multicast", "/"];

/// `access-map`: a text file converts; the compiled forms name what smtpf-milter needs instead.
fn access_map(value: &str) -> Outcome {
    if value.is_empty() {
        return Outcome::Write {
            key: "access-map",
            value: toml::Value::String(String::new()),
            notes: vec!["no access-map, as smtpf (#115)".into()],
        };
    }
    let lower = value.to_ascii_lowercase();
    for (prefix, note) in [
        ("text!", Some("smtpf 2.6 refused its text! method (#116) and did not start; smtpf-milter reads the text file")),
        ("file!", None),
    ] {
        if lower.starts_with(prefix) {
            let notes = note.map(str::to_string).into_iter().collect();
            return Outcome::Write { key: "access-map", value: toml::Value::String(value[prefix.len()..].to_string()), notes };
        }
    }
    let typed = MAP_TYPES.iter().any(|t| {
        lower.starts_with(t) && (t.ends_with('/') || !lower[t.len()..].starts_with(|c: char| c.is_ascii_alphanumeric()))
    });
    // The file the map was compiled from, as smtpf's examples name it: access.sq3 <- access.cf.
    let path = value.rsplit('!').next().unwrap_or(value);
    let suggest = path
        .strip_suffix(".sq3")
        .or_else(|| path.strip_suffix(".db"))
        .map(|stem| format!("access-map = {}", toml::Value::String(format!("{stem}.cf"))));
    let why = if typed {
        "smtpf reads a map compiled from text (its examples concatenate access-defaults.cf, access/* and access.cf); smtpf-milter reads the text itself: point access-map at one file holding those lines (docs/access-map.md)"
    } else {
        "not a map smtpf could open (#117): name the text file in access-map (docs/access-map.md)"
    };
    Outcome::Refused { why: why.to_string(), suggest }
}

/// What becomes of `option`, whose value smtpf ended with is `value`.
fn convert(option: &SmtpfOption, value: &str) -> Outcome {
    let (key, conv) = match option.fate {
        Fate::NoMeaning(why) => return Outcome::NoMeaning(why),
        Fate::NotYet(what) => return Outcome::NotYet { what, off: is_off(option, value) },
        Fate::Always(how) => {
            return match switch(value).0 == switch(option.default).0 {
                true => Outcome::Nothing(how.to_string()),
                false => Outcome::NotYet { what: how, off: false },
            }
        }
        Fate::Converted { key, conv } => (key, conv),
    };
    let mut notes = Vec::new();
    let value = match conv {
        Conv::Boolean => {
            let (on, note) = switch(value);
            notes.extend(note);
            toml::Value::Boolean(on)
        }
        Conv::Seconds { zero_is_off } => {
            let (mut n, used) = strtol(value);
            if used != value.len() {
                notes.push(format!("smtpf reads \"{value}\" as {n} seconds, it takes no units"));
            }
            if n < 0 && zero_is_off {
                notes.push("smtpf treats a negative value as 0, off".to_string());
                n = 0;
            }
            toml::Value::Integer(n)
        }
        Conv::UriMaxTest => {
            let (n, used) = strtol(value);
            if used != value.len() {
                notes.push(format!("smtpf reads \"{value}\" as {n}"));
            }
            let most = 1000;
            if n <= 0 {
                notes.push(format!(
                    "smtpf's {n} means no limit; smtpf-milter looks up at most {most} hosts, and its 0 means none"
                ));
            } else if n > most {
                notes.push(format!("smtpf-milter looks up at most {most} hosts"));
            }
            toml::Value::Integer(if n <= 0 { most } else { n.min(most) })
        }
        Conv::Zones => {
            // smtpf splits at ';' and ',' only, so "a; b" gives it a list named " b" that never
            // answers; the admin meant b.
            let mut entries = Vec::new();
            for item in list_items(value, &[';', ',']) {
                let entry = item.trim();
                if entry.len() != item.len() {
                    notes.push(format!("smtpf kept the spaces around \"{entry}\", which made that list ask for a name that does not exist; converted without them"));
                }
                if !entry.is_empty() {
                    entries.push(toml::Value::String(zone_entry(entry, &mut notes)));
                }
            }
            toml::Value::Array(entries)
        }
        Conv::Verbose => toml::Value::String(verbose(value, &mut notes)),
        Conv::GreyKey => toml::Value::String(grey_key(value, &mut notes)),
        Conv::UriPolicy => {
            let word = match value.chars().next() {
                Some('n') => "none",
                Some('d') => "discard",
                _ => "reject",
            };
            if value.is_empty() {
                notes.push("smtpf reads an empty policy as reject".to_string());
            } else if value != word {
                notes.push(format!("smtpf reads only the first letter of \"{value}\""));
            }
            toml::Value::String(word.to_string())
        }
        Conv::Text => toml::Value::String(value.to_string()),
        Conv::AccessMap => return access_map(value),
        Conv::DupmsgTrackAll => {
            let (on, note) = switch(value);
            notes.extend(note);
            if !on {
                return Outcome::Nothing(
                    "smtpf recorded a message only when the client lost the 250 reply, which a milter cannot see; dupmsg-policy's default, \"tag\", marks copies instead"
                        .to_string(),
                );
            }
            notes.push("smtpf refused copies of accepted messages with 550 5.3.4 #340".to_string());
            toml::Value::String("reject".to_string())
        }
    };
    // The config parser has the last word: what it refuses is not written.
    match Config::from_toml(&format!("{key} = {value}\n"), None) {
        Ok(_) => Outcome::Write { key, value, notes },
        Err(e) => Outcome::Refused { why: format!("{key} = {value}: {}", e.message), suggest: None },
    }
}

/// All settings of one option name, in file order.
struct Group<'a> {
    option: Option<&'static SmtpfOption>,
    settings: Vec<&'a Setting>,
}

/// Converts smtpf.cf `text`; `file` names it in comments and the report. Fails only if the
/// TOML it built does not load, which would be a bug.
pub fn import(text: &str, file: &str) -> Result<Imported, String> {
    let file = &visible(file);
    let cf = read_cf(text);
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for s in &cf.settings {
        let name = s.name.to_ascii_lowercase();
        groups.entry(name).or_insert_with_key(|n| Group { option: smtpf::find(n), settings: Vec::new() }).settings.push(s);
    }
    // (line, report line, TOML lines) per option, then sorted by the line that counts.
    let mut entries: Vec<(usize, String, String)> = Vec::new();
    let mut counts = BTreeMap::<&str, usize>::new();
    let mut access_map_set = false;
    for (name, group) in &groups {
        let last = group.settings[group.settings.len() - 1];
        let option = group.option;
        // smtpf's value after every setting: `+=` appends a list item to what is there.
        let mut value = option.map(|o| o.default.to_string()).unwrap_or_default();
        for s in &group.settings {
            if s.append {
                if !value.is_empty() {
                    value.push(';');
                }
                value.push_str(&s.value);
            } else {
                value = s.value.clone();
            }
        }
        let secret = option.is_some_and(SmtpfOption::is_secret);
        let shown = match last.value.as_str() {
            "+" | "-" if !last.append => format!("{}{}", last.value, visible(&last.name)),
            v => format!(
                "{}{}={}",
                visible(&last.name),
                if last.append { "+" } else { "" },
                if secret { "(hidden)".into() } else { visible(v) }
            ),
        };
        let also = match group.settings.len() {
            1 => String::new(),
            _ => {
                let lines: Vec<String> = group.settings[..group.settings.len() - 1].iter().map(|s| s.line.to_string()).collect();
                let how = if last.append { "the value is what they add up to" } else { "the last one counts" };
                format!(" (also line{} {}; {how})", if lines.len() > 1 { "s" } else { "" }, lines.join(", "))
            }
        };
        let head = format!("{file}:{}: {shown}{also}", last.line);
        let Some(option) = option else {
            let near = smtpf::OPTIONS
                .iter()
                .map(|o| (o.name, strsim::damerau_levenshtein(name, o.name)))
                .filter(|(_, d)| *d <= 2)
                .min_by_key(|(_, d)| *d)
                .map(|(n, _)| format!(" (did you mean {n}?)"))
                .unwrap_or_default();
            *counts.entry("unknown").or_default() += 1;
            entries.push((
                last.line,
                format!("{head}: unknown: not an smtpf 2.6 option, smtpf ignored it too{near}"),
                String::new(),
            ));
            continue;
        };
        access_map_set |= option.name == "access-map";
        let (what, report, toml) = match convert(option, &value) {
            Outcome::Write { key, value, notes } => {
                let notes: String = notes.iter().map(|n| format!("; {n}")).collect();
                ("converted", format!("converted: {key} = {value}{notes}"), format!("# {head}\n{key} = {value}\n"))
            }
            Outcome::Nothing(why) => ("converted", format!("converted, nothing to write: {why}"), String::new()),
            Outcome::Refused { why, suggest } => {
                let toml = suggest.map(|s| format!("# {head}: not converted, see the report\n# {s}\n")).unwrap_or_default();
                ("not converted", format!("not converted: {why}"), toml)
            }
            Outcome::NoMeaning(why) => ("no meaning in a milter", format!("no meaning in a milter: {why}"), String::new()),
            Outcome::NotYet { what, off: true } => {
                ("not supported yet", format!("not supported yet (off here, as in smtpf-milter): {what}"), String::new())
            }
            Outcome::NotYet { what, off: false } => ("not supported yet", format!("not supported yet: {what}"), String::new()),
        };
        *counts.entry(what).or_default() += 1;
        entries.push((last.line, format!("{head}: {report}"), toml));
    }
    // Checks smtpf applies unless told otherwise: a file that does not mention them had them on.
    for name in DEFAULT_CHECKS.iter().filter(|n| !groups.contains_key(**n)) {
        if let Some(SmtpfOption { default, fate: Fate::NotYet(what), .. }) = smtpf::find(name) {
            let shown = if *default == "+" { format!("+{name}") } else { format!("{name}={default}") };
            entries.push((
                0,
                format!("{file}: {name} not set, so smtpf applied its default {shown}: not supported yet: {what}"),
                String::new(),
            ));
        }
    }
    if !access_map_set {
        let default = smtpf::find("access-map").map(|o| o.default).unwrap_or_default();
        entries.push((
            0,
            format!("{file}: access-map not set: smtpf used its default {default}; if that map exists, point access-map at the text it was built from (docs/access-map.md)"),
            String::new(),
        ));
    }
    for (line, problem) in &cf.problems {
        entries.push((*line, format!("{file}:{line}: malformed: {problem}"), String::new()));
    }
    entries.sort_by_key(|(line, _, _)| *line);

    let mut toml = format!(
        "# smtpf-milter configuration converted from {file} by `smtpf-milter import-smtpf`.\n\
         # It holds the options of that file that smtpf-milter reads; every other key keeps its\n\
         # default, which is smtpf's unless `smtpf-milter keys` says otherwise. The report of the\n\
         # conversion lists each option of the file and what became of it.\n"
    );
    for (_, _, t) in entries.iter().filter(|(_, _, t)| !t.is_empty()) {
        toml.push('\n');
        toml.push_str(t);
    }
    Config::from_toml(&toml, None).map_err(|e| format!("the converted configuration does not load: {e}"))?;

    let mut parts: Vec<String> = ["converted", "no meaning in a milter", "not supported yet", "not converted", "unknown"]
        .iter()
        .filter_map(|w| counts.get(w).map(|n| format!("{n} {w}")))
        .collect();
    if !cf.problems.is_empty() {
        parts.push(format!("{} malformed", cf.problems.len()));
    }
    let summary =
        format!("{file}: {} options: {}", groups.len(), if parts.is_empty() { "none".to_string() } else { parts.join(", ") });
    Ok(Imported { toml, report: entries.into_iter().map(|(_, r, _)| r).collect(), summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtol_reads_like_c() {
        assert_eq!(strtol("600"), (600, 3));
        assert_eq!(strtol("10m"), (10, 2));
        assert_eq!(strtol("0x258"), (600, 5));
        assert_eq!(strtol("010"), (8, 3));
        assert_eq!(strtol("0"), (0, 1));
        assert_eq!(strtol("-5"), (-5, 2));
        assert_eq!(strtol("+"), (0, 0));
        assert_eq!(strtol("yes"), (0, 0));
        assert_eq!(strtol("0x"), (0, 1));
        assert_eq!(strtol("99999999999999999999999"), (i64::MAX, 23));
        assert_eq!(strtol(""), (0, 0));
    }

    #[test]
    fn tokens_follow_libsnert() {
        assert_eq!(split_tokens("a=1  +b\t-c\n"), (vec!["a=1".into(), "+b".into(), "-c".into()], false));
        assert_eq!(split_tokens("x=\"a b\" y='c\"d'"), (vec!["x=a b".into(), "y=c\"d".into()], false));
        assert_eq!(split_tokens("x=a\\ b\\tc"), (vec!["x=a b\tc".into()], false));
        assert_eq!(split_tokens("x='open"), (vec!["x=open".into()], true));
        assert_eq!(split_tokens("x=''"), (vec!["x=".into()], false));
        assert_eq!(split_tokens("   "), (vec![], false));
    }

    #[test]
    fn lines_read_like_smtpf() {
        let cf = read_cf("# comment\n+a -b c=1 d+=2\n  # indented comment\ne=1 # trailing\nf=1 stray g=2\n+h=1\n-- i=1\n");
        let got: Vec<(usize, &str, &str, bool)> =
            cf.settings.iter().map(|s| (s.line, s.name.as_str(), s.value.as_str(), s.append)).collect();
        assert_eq!(
            got,
            [
                (2, "a", "+", false),
                (2, "b", "-", false),
                (2, "c", "1", false),
                (2, "d", "2", true),
                (4, "e", "1", false),
                (5, "f", "1", false)
            ]
        );
        let lines: Vec<usize> = cf.problems.iter().map(|p| p.0).collect();
        assert_eq!(lines, [5, 6, 7], "{:?}", cf.problems);
        assert!(cf.problems[0].1.contains("`stray` is not an option") && cf.problems[0].1.contains("ignores `stray g=2`"));
    }

    fn one(name: &str, value: &str) -> Outcome {
        convert(smtpf::find(name).unwrap(), value)
    }

    fn written(name: &str, value: &str) -> (String, Vec<String>) {
        match one(name, value) {
            Outcome::Write { key, value, notes } => (format!("{key} = {value}"), notes),
            _ => panic!("{name}={value} not written"),
        }
    }

    #[test]
    fn values_mean_what_smtpf_read() {
        assert_eq!(written("grey-temp-fail-period", "0x384").0, "grey-temp-fail-period = 900");
        let (line, notes) = written("grey-temp-fail-period", "10m");
        assert_eq!(line, "grey-temp-fail-period = 10");
        assert!(notes[0].contains("no units"));
        assert_eq!(written("dupmsg-ttl", "-1").0, "dupmsg-ttl = 0");
        assert_eq!(written("mail-require-mx", "-").0, "mail-require-mx = false");
        assert_eq!(written("mail-require-mx", "yes").0, "mail-require-mx = false");
        assert_eq!(written("smtp-delay-checks", "1").0, "smtp-delay-checks = true");
        assert_eq!(written("uri-max-test", "0").0, "uri-max-test = 1000");
        assert_eq!(written("uri-bl-policy", "Discard").0, "uri-bl-policy = \"reject\"");
        assert_eq!(written("uri-bl-policy", "discard").0, "uri-bl-policy = \"discard\"");
        assert_eq!(written("grey-key", "ip,+mail,helo,-helo,P0F").0, "grey-key = \"ip,mail\"");
        assert_eq!(written("grey-key", "194").0, "grey-key = \"ptr,mail,rcpt\"");
        assert_eq!(written("verbose", "grey;smtp=2,-dupmsg,tls").0, "verbose = \"info,grey\"");
        assert_eq!(written("verbose", "-info").0, "verbose = \"-info\"");
        assert_eq!(
            written("dns-bl", "zen.spamhaus.org;bl.example/010,list.example:127.0.0.2").0,
            "dns-bl = [\"zen.spamhaus.org\", \"bl.example/8\", \"list.example=127.0.0.2\"]"
        );
        assert_eq!(written("dupmsg-track-all", "+").0, "dupmsg-policy = \"reject\"");
        assert!(matches!(one("dupmsg-track-all", "-"), Outcome::Nothing(_)));
        assert_eq!(written("access-map", "text!/etc/smtpf/access.cf").0, "access-map = \"/etc/smtpf/access.cf\"");
        match one("access-map", "sql!/etc/smtpf/access.sq3") {
            Outcome::Refused { suggest, .. } => assert_eq!(suggest.as_deref(), Some("access-map = \"/etc/smtpf/access.cf\"")),
            _ => panic!("sql map converted"),
        }
        assert!(matches!(one("cache-accept-ttl", "0"), Outcome::Refused { .. }));
        assert!(matches!(one("spamd-socket", ""), Outcome::NotYet { off: true, .. }));
        assert!(matches!(one("call-back", "+"), Outcome::NotYet { off: false, .. }));
        assert!(matches!(one("uri-cite-list", "+"), Outcome::Nothing(_)));
        assert!(matches!(one("uri-cite-list", "-"), Outcome::NotYet { off: false, .. }));
        assert!(matches!(one("interfaces", "[::0]:25"), Outcome::NoMeaning(_)));
    }

    #[test]
    fn smtpf_defaults_convert_to_our_defaults() {
        // An option left at smtpf's default needs no line: ours means the same (or the option
        // is about the deployment, where ours are deliberately different).
        let deployment = ["access-map", "cache-path", "run-user", "run-group", "dupmsg-track-all"];
        for o in smtpf::OPTIONS.iter().filter(|o| o.applied() && !deployment.contains(&o.name)) {
            match convert(o, o.default) {
                Outcome::Write { key, value, .. } => {
                    let c = Config::from_toml(&format!("{key} = {value}\n"), None).unwrap();
                    assert_eq!(c, Config::default(), "{}", o.name);
                }
                _ => panic!("{}'s default does not convert", o.name),
            }
        }
    }

    #[test]
    fn every_option_at_smtpf_default_as_smtpf_help_writes_them() {
        let text: String = smtpf::OPTIONS
            .iter()
            .map(|o| match o.default {
                "+" | "-" => format!("{}{}\n", o.default, o.name),
                d => format!("{}=\"{d}\"\n", o.name),
            })
            .collect();
        let out = import(&text, "smtpf.cf").unwrap();
        assert_eq!(out.report.len(), smtpf::OPTIONS.len(), "{:#?}", out.report);
        // Only the compiled access map does not convert; what is written is our defaults.
        let refused: Vec<&String> = out.report.iter().filter(|r| r.contains(": not converted: ")).collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].contains("access-map=sql!/etc/smtpf/access.sq3"));
        let c = Config::from_toml(&out.toml, None).unwrap();
        let ours = Config { cache_path: None, run_user: None, run_group: None, ..c };
        assert_eq!(ours, Config::default(), "{}", out.toml);
    }

    #[test]
    fn default_checks_are_checks_smtpf_has_on() {
        for name in DEFAULT_CHECKS {
            let o = smtpf::find(name).unwrap();
            assert!(matches!(o.fate, Fate::NotYet(_)) && !is_off(o, o.default), "{name}");
        }
        let out = import("-helo-claims-us\n", "smtpf.cf").unwrap();
        assert!(!out.report.iter().any(|r| r.contains("helo-claims-us not set")));
        assert!(out.report.iter().any(|r| r == "smtpf.cf: spf-mail-policy not set, so smtpf applied its default spf-mail-policy=fail-reject: not supported yet: acting on SPF results: smtpf-milter evaluates SPF at MAIL and logs the result (#717) but refuses nothing on it yet"), "{:#?}", out.report);
    }

    #[test]
    fn a_whole_file() {
        let text = "# smtpf.cf\n+smtp-delay-checks\ngrey-temp-fail-period=900 cache-secret=s3cret\n\
                    dns-bl=zen.example\ndns-bl+=bl.example\nfrobnicate=1\nspamd-socket=127.0.0.1:783\n\
                    interfaces=[::0]:25\nbroken line\n";
        let out = import(text, "smtpf.cf").unwrap();
        let c = Config::from_toml(&out.toml, None).unwrap();
        assert!(c.smtp_delay_checks);
        assert_eq!(c.grey_temp_fail_period, 900);
        assert_eq!(c.dns_bl.iter().map(|z| z.name.as_str()).collect::<Vec<_>>(), ["zen.example.", "bl.example."]);
        let report = out.report.join("\n");
        assert!(report.contains("smtpf.cf:5: dns-bl+=bl.example (also line 4; the value is what they add up to): converted: dns-bl = [\"zen.example\", \"bl.example\"]"), "{report}");
        assert!(report.contains("smtpf.cf:3: cache-secret=(hidden): no meaning in a milter"), "{report}");
        assert!(!report.contains("s3cret") && !out.toml.contains("s3cret"));
        assert!(report.contains("smtpf.cf:6: frobnicate=1: unknown"), "{report}");
        assert!(report.contains("smtpf.cf:7: spamd-socket=127.0.0.1:783: not supported yet: SpamAssassin"), "{report}");
        assert!(report.contains("smtpf.cf:9: malformed: `broken` is not an option"), "{report}");
        assert!(report.contains("\nsmtpf.cf: access-map not set"), "{report}");
        assert!(
            report.starts_with(
                "smtpf.cf: helo-claims-us not set, so smtpf applied its default +helo-claims-us: not supported yet: "
            ),
            "{report}"
        );
        assert_eq!(
            out.summary,
            "smtpf.cf: 7 options: 3 converted, 2 no meaning in a milter, 1 not supported yet, 1 unknown, 1 malformed"
        );
    }
}

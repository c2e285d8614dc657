//! Library events (hickory's `tracing` events) written as numbered lines.
//!
//! The libraries the milter uses report through `tracing`, which has one process-wide
//! subscriber. This module installs a small one, once per process, the first time a daemon
//! starts ([`attach`]); it hands each event to the [`Logger`] of every daemon running in the
//! process at that moment, as `#2026` (errors), `#2027` (warnings) or `#2028` (info and debug,
//! only for loggers whose `verbose` has `library` or `debug`). Trace events and spans are never
//! recorded. A production process runs one daemon, so its events go to its log; a test process
//! running several daemons at once sees library events in each of their logs, since nothing
//! says which daemon's lookup an event belongs to.
//!
//! Cost: the subscriber reports a maximum level of "off" while no daemon is attached, "warn"
//! while none wants library debug lines, and "debug" only while one does. `tracing`'s macros
//! compare an event's level with that maximum (one relaxed atomic load) before anything else,
//! so hickory's per-query debug events cost that comparison and nothing more by default. The
//! maximum and each call site's cached interest are recomputed when a daemon starts, stops or
//! reloads, never per event.
//!
//! Text from a library is untrusted: line breaks and other control characters are escaped and
//! the text is cut at [`MAX_TEXT`] bytes, so one event is exactly one line of bounded length.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Once, RwLock};

use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::subscriber::{Interest, Subscriber};
use tracing_core::{Event, Level, LevelFilter, Metadata};

use super::{catalog, Logger, Msg};

/// The verbose word that turns library info and debug lines on.
pub const WORD: &str = "library";

/// Most bytes of one event's text (message and fields) written; the rest is replaced by `...`.
pub const MAX_TEXT: usize = 2048;

/// What the subscriber records: nothing (no daemon attached), warnings and errors, or debug too.
const OFF: u8 = 0;
const WARN: u8 = 1;
const DEBUG: u8 = 2;

static WANTED: AtomicU8 = AtomicU8::new(OFF);

/// The loggers of the daemons running in this process, by attachment number.
static LOGGERS: RwLock<Vec<(u64, Logger)>> = RwLock::new(Vec::new());

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

static INSTALL: Once = Once::new();

/// Keeps a daemon's logger receiving library events; dropping it detaches the logger.
#[must_use = "library events reach the logger only while this is kept"]
pub struct Attached {
    id: u64,
}

impl Drop for Attached {
    fn drop(&mut self) {
        crate::sync::write(&LOGGERS).retain(|(id, _)| *id != self.id);
        refresh();
    }
}

/// Sends library events to `log` until the returned guard is dropped. Installs the process's
/// subscriber the first time; when something else already installed one (a program embedding
/// the milter), library events stay with it and nothing is written here.
pub fn attach(log: &Logger) -> Attached {
    INSTALL.call_once(|| {
        let _ = tracing_core::dispatcher::set_global_default(tracing_core::Dispatch::new(LibrarySubscriber));
    });
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    crate::sync::write(&LOGGERS).push((id, log.clone()));
    refresh();
    Attached { id }
}

/// Recomputes what is recorded from the attached loggers' verbose words (after start, stop and
/// reload). Only a change rebuilds `tracing`'s per-call-site cache.
pub fn refresh() {
    let wanted = {
        let loggers = crate::sync::read(&LOGGERS);
        if loggers.is_empty() {
            OFF
        } else if loggers.iter().any(|(_, log)| log.verbose().has(WORD)) {
            DEBUG
        } else {
            WARN
        }
    };
    if WANTED.swap(wanted, Ordering::SeqCst) != wanted {
        tracing_core::callsite::rebuild_interest_cache();
    }
}

/// The catalog entry for an event of `level`, if such events are recorded at all.
fn entry(level: &Level) -> Option<&'static Msg> {
    match *level {
        Level::ERROR => Some(&catalog::LIBRARY_ERROR),
        Level::WARN => Some(&catalog::LIBRARY_WARNING),
        Level::INFO | Level::DEBUG => Some(&catalog::LIBRARY_DEBUG),
        _ => None,
    }
}

/// Whether events of `level` are recorded now.
fn wanted(level: &Level) -> bool {
    match WANTED.load(Ordering::Relaxed) {
        OFF => false,
        WARN => *level <= Level::WARN,
        _ => *level <= Level::DEBUG,
    }
}

struct LibrarySubscriber;

impl Subscriber for LibrarySubscriber {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_event() && wanted(meta.level()) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(match WANTED.load(Ordering::Relaxed) {
            OFF => LevelFilter::OFF,
            WARN => LevelFilter::WARN,
            _ => LevelFilter::DEBUG,
        })
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.is_event() && wanted(meta.level())
    }

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let Some(msg) = entry(meta.level()) else { return };
        if !wanted(meta.level()) {
            return;
        }
        let loggers = crate::sync::read(&LOGGERS);
        if !loggers.iter().any(|(_, log)| log.enabled(msg)) {
            return;
        }
        let target = clean(meta.target(), 256);
        let text = event_text(event);
        for (_, log) in loggers.iter() {
            log.emit(msg, None, &[&target, &text]);
        }
    }

    // Spans are never enabled (register_callsite and enabled say so); these only satisfy the
    // trait.
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// An event's message followed by its other fields as ` name=value`, cleaned and bounded.
pub fn event_text(event: &Event<'_>) -> String {
    let mut visitor = TextVisitor { message: Clean::new(MAX_TEXT), fields: Clean::new(MAX_TEXT) };
    event.record(&mut visitor);
    let TextVisitor { mut message, fields } = visitor;
    message.budget = MAX_TEXT.saturating_sub(message.out.len());
    let _ = message.write_str(&fields.out);
    if fields.cut {
        message.cut = true;
    }
    message.finish()
}

struct TextVisitor {
    message: Clean,
    fields: Clean,
}

impl Visit for TextVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = self.message.write_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

/// `text` with control characters escaped, at most `max` bytes (then ending in `...`).
pub fn clean(text: &str, max: usize) -> String {
    let mut c = Clean::new(max);
    let _ = c.write_str(text);
    c.finish()
}

/// A `fmt::Write` that escapes line breaks and control characters as it goes and stops taking
/// text past its budget, so formatting a huge value never builds a huge string.
struct Clean {
    out: String,
    budget: usize,
    cut: bool,
}

impl Clean {
    fn new(budget: usize) -> Clean {
        Clean { out: String::new(), budget, cut: false }
    }

    fn finish(mut self) -> String {
        if self.cut {
            self.out.push_str("...");
        }
        self.out
    }
}

impl fmt::Write for Clean {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let before = self.out.len();
            match c {
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                // Controls (C0, DEL, C1 including NEL) and the Unicode line and paragraph
                // separators, which some viewers also break lines at.
                c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                    let _ = write!(self.out, "\\u{{{:x}}}", c as u32);
                }
                c => self.out.push(c),
            }
            let used = self.out.len() - before;
            if used > self.budget {
                self.out.truncate(before);
                self.budget = 0;
                self.cut = true;
                // Tell the formatter to stop: the rest would be thrown away anyway.
                return Err(fmt::Error);
            }
            self.budget -= used;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_escapes_line_breaks_and_controls() {
        assert_eq!(clean("a\r\n#721 forged", 100), "a\\r\\n#721 forged");
        assert_eq!(clean("tab\there \u{1b}[31m \u{85} \u{2028} ünï", 100), "tab\\there \\u{1b}[31m \\u{85} \\u{2028} ünï");
    }

    #[test]
    fn clean_bounds_the_text() {
        assert_eq!(clean("abcdef", 4), "abcd...");
        assert_eq!(clean("ab\ncd", 3), "ab...");
        assert_eq!(clean("éé", 3), "é...");
        assert_eq!(clean("abcd", 4), "abcd");
    }
}

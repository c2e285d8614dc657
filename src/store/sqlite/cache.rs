//! The hot cache: recently read and written records kept in memory, so the common lookups of a
//! busy MX (the same senders, hosts and tuples again and again) are answered without a trip to a
//! reader thread.
//!
//! Every write made through this process updates the cache when it is queued (write-through), so
//! a read issued after `put` returns sees the new record even before the writer commits it. Reads
//! that miss go to SQLite and their answer (a record or "absent") is remembered too.
//!
//! The cache must never answer with something the file contradicts:
//! - A slot written here carries the write's sequence number and is "pending" until the writer
//!   has committed that sequence; pending slots are never evicted, so a read cannot fall through
//!   to a file that does not have the write yet.
//! - A read's answer is stored only if no slot appeared for its key meanwhile (a write queued
//!   during the read is newer) and the cache was not cleared since the read began (the
//!   generation check), so a stale answer cannot overwrite a newer one.
//! - Another process (`smtpf-milter grey allow`, an operator's `sqlite3`) changes the file behind
//!   our back: the writer notices through SQLite's `data_version` and clears every committed slot.
//! - A failed commit clears the whole cache, pending slots included, since the file then lacks
//!   writes the cache has.
//!
//! Memory is bounded by `capacity` slots, in two generations of at most half each: new slots go
//! into the current one; when it is full it becomes the previous one (whose slots still answer)
//! and the old previous one is dropped, off the lock. So a full cache costs one pointer swap,
//! not a scan, and never goes cold all at once: the tail latency of a busy MX does not jump when
//! it fills. Dropping is correct since the file has every committed slot; a slot still pending
//! is carried over (rare: writes commit within milliseconds).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::store::Record;
use crate::sync::lock;

/// One remembered key: its record (None: known absent or deleted) and the sequence number of the
/// write that set it (0 for a slot filled from a read).
struct Slot {
    record: Option<Record>,
    seq: u64,
}

/// The two generations of slots; a key is in at most one of them.
#[derive(Default)]
struct Slots {
    current: HashMap<String, Slot>,
    previous: HashMap<String, Slot>,
    /// The highest write sequence in `current` and in `previous`: a generation whose highest is
    /// committed holds no pending slot, so it can be dropped without looking inside.
    current_max_seq: u64,
    previous_max_seq: u64,
}

impl Slots {
    fn get(&self, key: &str) -> Option<&Slot> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    fn contains_key(&self, key: &str) -> bool {
        self.current.contains_key(key) || self.previous.contains_key(key)
    }

    fn insert(&mut self, key: String, slot: Slot) {
        self.current_max_seq = self.current_max_seq.max(slot.seq);
        self.previous.remove(&key);
        self.current.insert(key, slot);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }

    fn retain(&mut self, mut keep: impl FnMut(&Slot) -> bool) {
        self.current.retain(|_, s| keep(s));
        self.previous.retain(|_, s| keep(s));
    }
}

/// Shared by the store handle (reads, writes) and the writer thread (commits, clears).
pub(super) struct HotCache {
    slots: Mutex<Slots>,
    /// Bumped by every clear; a read that began in an older generation is not stored.
    generation: AtomicU64,
    /// The last write sequence handed out.
    next_seq: AtomicU64,
    /// The highest write sequence the writer has committed (writes commit in sequence order).
    committed: AtomicU64,
    capacity: usize,
}

/// A reserved write: its sequence number and the cache generation when it was queued.
#[derive(Clone, Copy)]
pub(super) struct Ticket {
    seq: u64,
    generation: u64,
}

/// What the cache knows about a key.
pub(super) enum Lookup {
    /// The answer, without touching the file.
    Known(Option<Record>),
    /// Ask the file; pass the generation to [`HotCache::fill`] with the answer.
    Unknown(u64),
}

impl HotCache {
    /// A cache of at most `capacity` slots; 0 turns it off (every read goes to the file).
    pub(super) fn new(capacity: usize) -> HotCache {
        HotCache {
            slots: Mutex::new(Slots::default()),
            generation: AtomicU64::new(0),
            next_seq: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            capacity,
        }
    }

    /// The live record under `key` at `now` if the cache knows it; an expired record reads as
    /// absent, as it does in the file.
    pub(super) fn lookup(&self, key: &str, now: i64) -> Lookup {
        let generation = self.generation.load(Ordering::Acquire);
        if self.capacity == 0 {
            return Lookup::Unknown(generation);
        }
        match lock(&self.slots).get(key) {
            Some(slot) => Lookup::Known(slot.record.as_ref().filter(|r| r.is_live(now)).cloned()),
            None => Lookup::Unknown(generation),
        }
    }

    /// Remembers what the file answered for `key`, unless the cache moved on since the read
    /// began (a clear, or a write to the same key).
    pub(super) fn fill(&self, key: &str, record: Option<Record>, generation: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut slots = lock(&self.slots);
        if self.generation.load(Ordering::Acquire) != generation || slots.contains_key(key) {
            return;
        }
        self.make_room(&mut slots);
        slots.insert(key.to_owned(), Slot { record, seq: 0 });
    }

    /// Queues a write with `send` (given the write's sequence number) and, if that worked,
    /// records it (None: a delete). Both happen under the cache's lock, so sequence numbers
    /// reach the writer in order and "committed up to N" means every write up to N.
    pub(super) fn write<E>(&self, key: &str, record: Option<Record>, send: impl FnOnce(u64) -> Result<(), E>) -> Result<(), E> {
        let mut slots = lock(&self.slots);
        let seq = self.next_seq.load(Ordering::Acquire) + 1;
        send(seq)?;
        self.next_seq.store(seq, Ordering::Release);
        if self.capacity > 0 {
            self.make_room(&mut slots);
            slots.insert(key.to_owned(), Slot { record, seq });
        }
        Ok(())
    }

    /// `put_if_absent` against what the cache knows: a live record under `key` at `now` is
    /// returned and nothing is written; otherwise `send` queues the write and `record` is shown
    /// as pending, so a claim racing in this process sees it. With the cache off nothing is
    /// known and the write is always queued.
    pub(super) fn claim<E>(
        &self,
        key: &str,
        record: Record,
        now: i64,
        send: impl FnOnce(u64) -> Result<(), E>,
    ) -> Result<Option<Record>, E> {
        let mut slots = lock(&self.slots);
        if let Some(live) = slots.get(key).and_then(|s| s.record.as_ref()).filter(|r| r.is_live(now)) {
            return Ok(Some(live.clone()));
        }
        let seq = self.next_seq.load(Ordering::Acquire) + 1;
        send(seq)?;
        self.next_seq.store(seq, Ordering::Release);
        if self.capacity > 0 {
            self.make_room(&mut slots);
            slots.insert(key.to_owned(), Slot { record: Some(record), seq });
        }
        Ok(None)
    }

    /// Queues a write whose outcome is only known after commit (`put_if_absent`) and returns
    /// the ticket to hand to [`HotCache::settle`] with that outcome.
    pub(super) fn reserve<E>(&self, send: impl FnOnce(u64) -> Result<(), E>) -> Result<Ticket, E> {
        let _slots = lock(&self.slots);
        let seq = self.next_seq.load(Ordering::Acquire) + 1;
        send(seq)?;
        self.next_seq.store(seq, Ordering::Release);
        Ok(Ticket { seq, generation: self.generation.load(Ordering::Acquire) })
    }

    /// Stores the committed outcome of a reserved write for `key`, unless the cache moved on
    /// since it was queued (a clear, or a later write to the key): the file is then the
    /// authority and the key is simply left out.
    pub(super) fn settle(&self, key: &str, record: Option<Record>, ticket: Ticket) {
        if self.capacity == 0 {
            return;
        }
        let mut slots = lock(&self.slots);
        if self.generation.load(Ordering::Acquire) != ticket.generation || slots.get(key).is_some_and(|s| s.seq > ticket.seq) {
            return;
        }
        self.make_room(&mut slots);
        // Committed already, so the slot is clean (evictable) from the start.
        slots.insert(key.to_owned(), Slot { record, seq: 0 });
    }

    /// The last sequence number handed out, read under the lock so every write that took its
    /// number earlier also finished whatever it did inside the lock (the key filter insert).
    pub(super) fn queued_seq(&self) -> u64 {
        let _slots = lock(&self.slots);
        self.next_seq.load(Ordering::Acquire)
    }

    /// The highest sequence number committed so far.
    pub(super) fn committed_seq(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The writer committed every write up to `seq`.
    pub(super) fn committed_up_to(&self, seq: u64) {
        self.committed.fetch_max(seq, Ordering::AcqRel);
    }

    /// Forgets what the file may contradict: committed slots after an outside change, or
    /// everything (`pending` true) after a failed commit.
    pub(super) fn clear(&self, pending: bool) {
        let mut slots = lock(&self.slots);
        self.generation.fetch_add(1, Ordering::AcqRel);
        if pending {
            slots.clear();
        } else {
            let committed = self.committed.load(Ordering::Acquire);
            slots.retain(|s| s.seq > committed);
        }
    }

    /// Slots held now, for tests.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.slots).len()
    }

    /// Keeps the slots under the capacity: when the current generation holds half of it, it
    /// becomes the previous one and the old previous one is dropped (its pending slots, if it
    /// may have any, are carried over). Freeing tens of thousands of records takes
    /// milliseconds, so it happens on a thread of its own, not under the lock every session's
    /// lookups need.
    fn make_room(&self, slots: &mut Slots) {
        if slots.current.len() < (self.capacity / 2).max(1) {
            return;
        }
        // Keys of the dropped generation are forgotten: a read that began before must not
        // store its (possibly older) answer for one of them.
        self.generation.fetch_add(1, Ordering::AcqRel);
        let committed = self.committed.load(Ordering::Acquire);
        let mut dropped = std::mem::replace(&mut slots.previous, std::mem::take(&mut slots.current));
        let dropped_max_seq = std::mem::replace(&mut slots.previous_max_seq, slots.current_max_seq);
        slots.current_max_seq = 0;
        if dropped_max_seq > committed {
            for (key, slot) in dropped.extract_if(|_, s| s.seq > committed) {
                slots.insert(key, slot);
            }
        }
        // Without a thread the memory is freed right here instead (a failed spawn drops it).
        let _ = std::thread::Builder::new().name("store-cache-free".into()).spawn(move || {
            super::background_priority();
            drop(dropped)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: &str, expires: i64) -> Record {
        Record::new(v, 100, expires)
    }

    /// A write whose queueing succeeds; returns its sequence number.
    fn w(c: &HotCache, key: &str, record: Option<Record>) -> u64 {
        let mut seq = 0;
        c.write(key, record, |s| {
            seq = s;
            Ok::<(), ()>(())
        })
        .unwrap();
        seq
    }

    fn known(c: &HotCache, key: &str, now: i64) -> Option<Option<Record>> {
        match c.lookup(key, now) {
            Lookup::Known(r) => Some(r),
            Lookup::Unknown(_) => None,
        }
    }

    #[test]
    fn writes_are_visible_at_once_and_expire_by_the_callers_clock() {
        let c = HotCache::new(10);
        assert!(known(&c, "k", 0).is_none());
        w(&c, "k", Some(rec("0", 200)));
        assert_eq!(known(&c, "k", 150), Some(Some(rec("0", 200))));
        assert_eq!(known(&c, "k", 200), Some(None), "expired reads as absent");
        w(&c, "k", None);
        assert_eq!(known(&c, "k", 150), Some(None), "a delete is remembered");
    }

    #[test]
    fn a_read_answer_never_overwrites_a_newer_write_or_survives_a_clear() {
        let c = HotCache::new(10);
        let Lookup::Unknown(g) = c.lookup("k", 0) else { panic!("empty cache knows nothing") };
        w(&c, "k", Some(rec("new", 500)));
        c.fill("k", None, g);
        assert_eq!(known(&c, "k", 0), Some(Some(rec("new", 500))));

        let Lookup::Unknown(g) = c.lookup("j", 0) else { panic!() };
        c.clear(false);
        c.fill("j", Some(rec("stale", 500)), g);
        assert!(known(&c, "j", 0).is_none(), "a read from before a clear is dropped");
    }

    #[test]
    fn pending_writes_survive_eviction_and_outside_changes_but_not_failed_commits() {
        let c = HotCache::new(2);
        let s1 = w(&c, "a", Some(rec("1", 500)));
        w(&c, "b", Some(rec("2", 500)));
        c.committed_up_to(s1);
        // Full: the committed slot "a" goes, the pending "b" stays.
        w(&c, "c", Some(rec("3", 500)));
        assert!(known(&c, "a", 0).is_none());
        assert!(known(&c, "b", 0).is_some());
        c.clear(false);
        assert!(known(&c, "b", 0).is_some(), "still pending");
        c.clear(true);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn settle_defers_to_later_writes() {
        let c = HotCache::new(10);
        let g = c.reserve(|_| Ok::<(), ()>(())).unwrap();
        w(&c, "k", Some(rec("later", 500)));
        c.settle("k", Some(rec("earlier", 500)), g);
        assert_eq!(known(&c, "k", 0), Some(Some(rec("later", 500))));
        let g = c.reserve(|_| Ok::<(), ()>(())).unwrap();
        c.settle("m", Some(rec("won", 500)), g);
        assert_eq!(known(&c, "m", 0), Some(Some(rec("won", 500))));
        // An older slot (from a read, or an earlier write) is replaced.
        w(&c, "o", Some(rec("old", 500)));
        let g = c.reserve(|_| Ok::<(), ()>(())).unwrap();
        c.settle("o", Some(rec("new", 900)), g);
        assert_eq!(known(&c, "o", 0), Some(Some(rec("new", 900))));
        let g = c.reserve(|_| Ok::<(), ()>(())).unwrap();
        c.clear(false);
        c.settle("n", Some(rec("stale", 500)), g);
        assert!(known(&c, "n", 0).is_none(), "settling after a clear is dropped");
    }

    #[test]
    fn capacity_zero_turns_it_off() {
        let c = HotCache::new(0);
        w(&c, "k", Some(rec("0", 500)));
        assert!(known(&c, "k", 0).is_none());
    }

    #[test]
    fn a_refused_send_records_nothing() {
        let c = HotCache::new(10);
        assert!(c.write("k", Some(rec("0", 500)), |_| Err(())).is_err());
        assert!(known(&c, "k", 0).is_none());
        assert_eq!(w(&c, "j", None), 1, "the refused write used no sequence number");
    }

    #[test]
    fn a_full_cache_keeps_its_newer_half_and_stays_bounded() {
        let c = HotCache::new(100);
        for i in 0..1000 {
            let seq = w(&c, &format!("k{i}"), Some(rec("0", 500)));
            c.committed_up_to(seq);
            assert!(c.len() <= 100, "{} slots after {i} writes", c.len());
        }
        // The newest keys are still answered, the previous generation's too; the oldest are gone.
        assert!(known(&c, "k999", 0).is_some());
        assert!(known(&c, "k960", 0).is_some(), "the previous generation still answers");
        assert!(known(&c, "k0", 0).is_none());
        // A slot never committed is never dropped, however many generations pass.
        let c = HotCache::new(4);
        w(&c, "pending", Some(rec("p", 500)));
        for i in 0..10 {
            w(&c, &format!("x{i}"), Some(rec("0", 500)));
        }
        assert!(known(&c, "pending", 0).is_some(), "never committed, never dropped");
    }
}

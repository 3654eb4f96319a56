//! Segment reclamation: what keeps the SSD tier within its byte budget, done incrementally so
//! that no lock is held for long.
//!
//! Once the tier is full, the next rotation will drain the oldest sealed segment X. The
//! reclaimer thread (`ssd-reclaim`, [`Tier::reclaimer`]) prepares that ahead of time: it scans
//! X's record headers into a [`Plan`] (no lock held), then moves X's hot records (hit since
//! written) into the active segment in bounded steps of at most [`MOVE_BATCH`] records and
//! [`MOVE_STEP_BYTES`] bytes, releasing every lock between steps. X's other records stay indexed
//! and readable meanwhile.
//!
//! When the active segment is full the appender *rotates* ([`Tier::rotate`]): it seals it and,
//! while the sealed segments and a new one would exceed the budget, drains X: X stops counting
//! against the budget and its file is unlinked (readers in flight keep their handle), the new
//! segment is created, the hot records the reclaimer has not moved (it lagged, or they were hit
//! since) are moved into it inline, within what is left of half a segment, and X is dropped from
//! the segment map; its other entries leave the index a batch per index-lock hold.
//!
//! X's records are found by reading the record headers of X's file ([`scan_records`]), never by
//! scanning the whole index. A move is a compare-and-swap: under the writer lock the record must
//! still be the indexed one at X (not purged, replaced or expired meanwhile); it gets a new
//! sequence, so recovery keeps the copy over the original while both exist, and a later
//! tombstone still beats the copy.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::format::{encode_purge, SEGMENT_HEADER_LEN};
use super::format::{set_sequence, verify_record, RecordHeader, RecordKind, RECORD_HEADER_LEN};
use super::index::IndexEntry;
use super::segment::{read_at, Segment};
use super::{add, bump, lock, Active, Tier, Tombstone, Writer, COMPACT_MIN_OBSOLETE};

/// Index entries removed per index-lock hold when a drained segment's records are swept.
const SWEEP_BATCH: usize = 4096;
/// Records looked at per index-lock hold when choosing what to move, and so at most moved by
/// one reclaimer step.
const MOVE_BATCH: usize = 64;
/// Bytes of survivors one reclaimer step reads and moves at most (one larger record may go
/// alone).
const MOVE_STEP_BYTES: u64 = 4 << 20;
/// Bytes read per block when scanning a segment's record headers.
const SCAN_BLOCK: usize = 256 << 10;

/// The reclamation under way (guarded by the tier's reclaim lock).
#[derive(Default)]
pub(super) struct Reclaim {
    /// The segment the next rotation drains, scanned ahead of time.
    plan: Option<Plan>,
}

/// What wakes the reclaimer (a leaf lock: nothing else is taken while it is held).
#[derive(Debug, Default)]
pub(super) struct Wake {
    /// Something changed (a rotation, the open): look for work. Coalesced.
    pending: bool,
    /// The store is being dropped.
    shutdown: bool,
    /// The reclaimer is working (tests wait for it to go idle).
    busy: bool,
}

/// One segment to drain: its records as scanned from its file.
pub(super) struct Plan {
    segment: u32,
    file: Arc<File>,
    path: PathBuf,
    /// `(key hash, offset)` of every object record (committed or reserved by a streamed fill)
    /// in file order; each is checked against the index when used.
    records: Vec<(u64, u32)>,
    /// Whether the scan reached the end of the file (else a damaged record hid the rest, and
    /// the index has to be searched for X's entries when X is dropped).
    complete: bool,
    /// Bytes of survivors moved out of X so far.
    moved: u64,
    /// Next record the reclaimer looks at.
    cursor: usize,
    /// The reclaimer is done with this plan (every record looked at, the survivor budget used
    /// up, or the active segment out of room); the rotation does the rest.
    done: bool,
}

/// Reads the record headers of a segment file of `len` bytes: `(key hash, offset)` of every
/// object record (reservations of streamed fills included), and whether the end was reached
/// (a header that does not parse or a record cut short ends the scan). Bodies are skipped, so
/// large records cost one small read each.
pub(super) fn scan_records(file: &File, len: u64) -> io::Result<(Vec<(u64, u32)>, bool)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; SCAN_BLOCK];
    let (mut buf_start, mut buf_len) = (0u64, 0usize);
    let mut offset = SEGMENT_HEADER_LEN as u64;
    while offset < len {
        if len - offset < RECORD_HEADER_LEN as u64 {
            return Ok((out, false));
        }
        let end = offset + RECORD_HEADER_LEN as u64;
        if offset < buf_start || end > buf_start + buf_len as u64 {
            let want = (SCAN_BLOCK as u64).min(len - offset) as usize;
            buf_len = read_up_to(file, &mut buf[..want], offset)?;
            buf_start = offset;
            if buf_len < RECORD_HEADER_LEN {
                return Ok((out, false));
            }
        }
        let at = (offset - buf_start) as usize;
        let Ok(header) = RecordHeader::parse(&buf[at..at + RECORD_HEADER_LEN]) else {
            return Ok((out, false));
        };
        let total = u64::from(header.total_len);
        if total == 0 || offset + total > len {
            return Ok((out, false));
        }
        if header.kind == RecordKind::Object {
            if let Ok(o) = u32::try_from(offset) {
                out.push((header.key_hash, o));
            }
        }
        offset += total;
    }
    Ok((out, true))
}

/// Reads into `buf` at `offset` until it is full or the file ends; returns the bytes read (a
/// reservation whose body is not written yet ends before the segment's length).
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A hot record read and verified, on its way out of a drained segment.
struct Survivor {
    hash: u64,
    from: IndexEntry,
    bytes: Vec<u8>,
    tags: Vec<String>,
}

impl Tier {
    /// Scans segment `id` (file, length) into a plan. A file that cannot be read gives an
    /// empty, incomplete plan (its entries are then found in the index when it is dropped).
    fn scan_plan(&self, id: u32, file: Arc<File>, path: PathBuf, len: u64) -> Plan {
        let (records, complete) = match scan_records(&file, len) {
            Ok(found) => found,
            Err(e) => {
                self.note_io("scan a segment in", &path, &e);
                (Vec::new(), false)
            }
        };
        Plan {
            segment: id,
            file,
            path,
            records,
            complete,
            moved: 0,
            cursor: 0,
            done: false,
        }
    }

    /// Asks the reclaimer to look for work (coalesced; cheap).
    pub(super) fn wake_reclaimer(&self) {
        lock(&self.wake).pending = true;
        self.wake_cv.notify_one();
    }

    /// Tells the reclaimer thread to end (the store is dropped).
    pub(super) fn stop_reclaimer(&self) {
        lock(&self.wake).shutdown = true;
        self.wake_cv.notify_all();
    }

    /// The reclaimer thread: waits to be woken, then works (a scan or one bounded step at a
    /// time, every lock released in between) until there is nothing to prepare.
    pub(super) fn reclaimer(self: Arc<Self>) {
        loop {
            {
                let mut st = lock(&self.wake);
                st.busy = false;
                while !st.pending && !st.shutdown {
                    st = self
                        .wake_cv
                        .wait(st)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                if st.shutdown {
                    return;
                }
                st.pending = false;
                st.busy = true;
            }
            while !lock(&self.wake).shutdown && self.reclaim_once() {}
        }
    }

    /// One unit of the reclaimer's work: scanning the segment the next rotation drains, or one
    /// move step of its plan. Returns whether there may be more to do.
    fn reclaim_once(&self) -> bool {
        let target = {
            let ix = self.index();
            if !ix.full() {
                return false;
            }
            ix.segments
                .values()
                .find(|s| !s.unlinked && Some(s.id) != ix.active)
                .map(|s| (s.id, s.file.clone(), s.path.clone(), s.len))
        };
        let Some((id, file, path, len)) = target else {
            return false;
        };
        let planned = self
            .reclaim_lock()
            .plan
            .as_ref()
            .map(|p| (p.segment == id, p.done));
        match planned {
            Some((true, true)) => return false,
            Some((true, false)) => {
                let more = self.move_step();
                self.hook("between_steps");
                return more;
            }
            _ => {}
        }
        // The scan reads the file with no lock held; the plan is installed only if the segment
        // is still the one to drain.
        let plan = self.scan_plan(id, file, path, len);
        {
            let mut r = self.reclaim_lock();
            let mut ix = self.index();
            let oldest = ix
                .segments
                .values()
                .find(|s| !s.unlinked && Some(s.id) != ix.active)
                .map(|s| s.id);
            if oldest != Some(id) {
                return true;
            }
            // The admission test meets the same records; spare it a scan of its own.
            let known = ix
                .victims_segment
                .and_then(|v| ix.segments.get(&v))
                .is_some_and(|s| !s.unlinked);
            if !known {
                ix.victims_segment = Some(id);
                ix.victims = plan.records.iter().copied().collect();
            }
            drop(ix);
            r.plan = Some(plan);
            self.reclaiming.store(true, Ordering::Relaxed);
        }
        self.hook("after_scan");
        true
    }

    /// One bounded step of the plan: picks the next hot records still at X (at most
    /// [`MOVE_BATCH`] looked at, [`MOVE_STEP_BYTES`] read), reads them holding only the reclaim
    /// lock, then moves them in one writer-lock hold. Returns whether there is more to do.
    fn move_step(&self) -> bool {
        let mut r = self.reclaim_lock();
        let Some(plan) = r.plan.as_mut() else {
            return true;
        };
        let live = self
            .index()
            .segments
            .get(&plan.segment)
            .is_some_and(|s| !s.unlinked);
        if !live {
            // Retired (or drained by a rotation) meanwhile.
            r.plan = None;
            self.reclaiming.store(false, Ordering::Relaxed);
            return true;
        }
        let mut budget = (self.segment_bytes / 2).saturating_sub(plan.moved);
        if plan.cursor >= plan.records.len() || budget == 0 {
            plan.done = true;
            self.reclaiming.store(false, Ordering::Relaxed);
            return false;
        }
        let (candidates, next) = self.pick(plan, plan.cursor, budget, MOVE_STEP_BYTES);
        let survivors = self.read_survivors(plan, &candidates);
        let mut w = self.writer();
        let stalled = self.write_survivors(&mut w, plan, survivors, &mut budget, true);
        drop(w);
        bump(&self.c.reclaim_steps);
        plan.cursor = next;
        if stalled {
            // The active segment is out of room: the rotation that follows finishes the plan.
            plan.done = true;
            self.reclaiming.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The hot records still indexed at the plan's segment among the [`MOVE_BATCH`] from
    /// `from` that fit `budget` (what is left of the survivor budget), together at most `cap`
    /// bytes (one record larger than that goes alone), and where the next look starts.
    fn pick(
        &self,
        plan: &Plan,
        from: usize,
        budget: u64,
        cap: u64,
    ) -> (Vec<(u64, IndexEntry)>, usize) {
        let end = (from + MOVE_BATCH).min(plan.records.len());
        let ix = self.index();
        let mut want = 0u64;
        let mut out = Vec::new();
        for (i, &(hash, offset)) in plan.records[from..end].iter().enumerate() {
            let Some(e) = ix.index.entries.get(&hash) else {
                continue;
            };
            if e.segment != plan.segment || e.offset != offset || !e.is_hot() {
                continue;
            }
            let len = u64::from(e.len);
            if want + len > budget {
                // Never fits what is left: dropped with the segment.
                continue;
            }
            if want + len > cap && !out.is_empty() {
                return (out, from + i);
            }
            want += len;
            out.push((hash, *e));
        }
        (out, end)
    }

    /// Seals the active segment, drains the oldest segments until a new one fits the budget,
    /// opens the new active segment and moves the drained segments' hot records into it,
    /// leaving room for `need` bytes (the append that asked for the rotation). Called with the
    /// reclaim and writer locks held; the index lock is taken only in short holds.
    pub(super) fn rotate(&self, r: &mut Reclaim, w: &mut Writer, need: u64) -> io::Result<()> {
        w.active = None;
        self.index().active = None;
        let mut drained = Vec::new();
        loop {
            let victim = {
                let mut ix = self.index();
                if ix.sealed_bytes() + self.segment_bytes <= self.disk_bytes {
                    break;
                }
                let Some(seg) = ix.segments.values_mut().find(|s| !s.unlinked) else {
                    break;
                };
                // From here on X no longer counts against the budget; its entries stay
                // readable until it is dropped.
                seg.unlinked = true;
                (seg.id, seg.file.clone(), seg.path.clone(), seg.len)
            };
            let (id, file, path, len) = victim;
            let plan = match r.plan.take() {
                Some(plan) if plan.segment == id => plan,
                _ => self.scan_plan(id, file, path, len),
            };
            if let Err(e) = std::fs::remove_file(&plan.path) {
                self.note_io("delete a reclaimed segment in", &plan.path, &e);
            }
            drained.push(plan);
        }
        let id = w.next_segment;
        w.next_segment = w.next_segment.wrapping_add(1).max(1);
        match Segment::create(&self.dir, id, w.next_seq) {
            Ok(seg) => {
                w.active = Some(Active {
                    id,
                    file: seg.file.clone(),
                    len: seg.len,
                });
                let mut ix = self.index();
                ix.segments.insert(id, seg);
                ix.active = Some(id);
            }
            Err(e) => {
                for plan in drained {
                    self.drop_segment(plan);
                }
                self.reclaiming.store(false, Ordering::Relaxed);
                return Err(e);
            }
        }
        if !drained.is_empty() {
            self.hook("after_unlink");
        }
        // Survivors take at most half a segment (counting those the reclaimer moved ahead),
        // and leave room for the append that waits.
        let room = self
            .segment_bytes
            .saturating_sub(SEGMENT_HEADER_LEN as u64 + need);
        let moved: u64 = drained.iter().map(|p| p.moved).sum();
        let mut budget = (self.segment_bytes / 2).saturating_sub(moved).min(room);
        for mut plan in drained {
            self.move_hot(w, &mut plan, &mut budget);
            self.drop_segment(plan);
        }
        self.maybe_compact_purges(w);
        self.reclaiming.store(false, Ordering::Relaxed);
        // The next segment to drain can be prepared now.
        self.wake_reclaimer();
        Ok(())
    }

    /// Moves the records of `plan` that are still indexed at its segment and hot into the
    /// active segment, within `budget` bytes (and the active segment's room). Called with the
    /// writer lock held; reads happen outside the index lock, a batch at a time.
    fn move_hot(&self, w: &mut Writer, plan: &mut Plan, budget: &mut u64) {
        let mut cursor = 0;
        while cursor < plan.records.len() && *budget > 0 {
            let (candidates, next) = self.pick(plan, cursor, *budget, *budget);
            cursor = next;
            let survivors = self.read_survivors(plan, &candidates);
            self.write_survivors(w, plan, survivors, budget, false);
        }
    }

    /// Reads and verifies `candidates` from the drained segment's file (no lock needed: the
    /// file handle is shared and records never change in place).
    fn read_survivors(&self, plan: &Plan, candidates: &[(u64, IndexEntry)]) -> Vec<Survivor> {
        let mut out = Vec::with_capacity(candidates.len());
        for &(hash, entry) in candidates {
            let read = read_at(&plan.file, u64::from(entry.offset), entry.len as usize)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    verify_record(&bytes)
                        .map(|tags| (bytes, tags))
                        .map_err(|e| e.to_string())
                });
            match read {
                Ok((bytes, tags)) => out.push(Survivor {
                    hash,
                    from: entry,
                    bytes,
                    tags,
                }),
                Err(e) => {
                    bump(&self.c.checksum_failures);
                    tracing::warn!(
                        target: "outpost_store::disk",
                        path = %plan.path.display(),
                        error = %e,
                        "SSD tier: survivor failed verification during reclamation; dropped"
                    );
                }
            }
        }
        out
    }

    /// Appends each survivor still indexed where it was read (checked under the writer lock
    /// held by the caller, so no purge or replacement can interleave) with a new sequence, and
    /// points its entry at the copy. Returns whether the active segment ran out of room.
    /// `early`: a reclaimer step (not a rotation).
    fn write_survivors(
        &self,
        w: &mut Writer,
        plan: &mut Plan,
        survivors: Vec<Survivor>,
        budget: &mut u64,
        early: bool,
    ) -> bool {
        let mut first = true;
        for mut s in survivors {
            let len = s.bytes.len() as u64;
            let still = self
                .index()
                .index
                .entries
                .get(&s.hash)
                .is_some_and(|e| e.location() == s.from.location());
            if !still || len > *budget {
                continue;
            }
            let room = w
                .active
                .as_ref()
                .is_some_and(|a| a.len + len <= self.segment_bytes);
            if !room {
                return true;
            }
            let seq = w.next_seq;
            let appended = set_sequence(&mut s.bytes, seq)
                .map_err(io::Error::other)
                .and_then(|()| Tier::append(w, &s.bytes));
            let (id, offset) = match appended {
                Ok(at) => at,
                Err(e) => {
                    self.note_io("re-append a survivor in", &self.dir, &e);
                    continue;
                }
            };
            w.next_seq += 1;
            *budget -= len;
            plan.moved += len;
            if early && first {
                self.hook("inside_move_holding_writer");
            }
            first = false;
            let end = offset + len;
            let mut ix = self.index();
            ix.set_len(id, end);
            let Ok(offset) = u32::try_from(offset) else {
                continue;
            };
            let entry = IndexEntry {
                segment: id,
                offset,
                len: s.from.len,
                expires: s.from.expires,
                flags: 0,
            };
            if ix.index.relocate_if(
                s.hash,
                s.from.location(),
                entry,
                s.tags.iter().map(String::as_str),
            ) {
                bump(&self.c.reappended);
            }
        }
        false
    }

    /// Drops a drained segment: it leaves the segment map (a lookup of one of its entries not
    /// swept yet drops it as a miss) and its remaining entries leave the index, a batch per
    /// index-lock hold, each counted as an eviction.
    fn drop_segment(&self, plan: Plan) {
        let id = plan.segment;
        {
            let mut ix = self.index();
            ix.segments.remove(&id);
            if ix.victims_segment == Some(id) {
                ix.victims.clear();
            }
        }
        let mut evicted = 0u64;
        for batch in plan.records.chunks(SWEEP_BATCH) {
            let mut ix = self.index();
            for &(hash, offset) in batch {
                if ix.index.remove_if_at(hash, id, offset) {
                    evicted += 1;
                }
            }
        }
        if !plan.complete {
            // The scan stopped early: find the rest in the index (rare, a damaged file).
            let mut ix = self.index();
            for (hash, _) in ix.index.entries_in(id) {
                ix.index.remove(hash);
                evicted += 1;
            }
        }
        add(&self.c.evictions, evicted);
        bump(&self.c.reclaimed_segments);
    }

    /// Drops tombstones older than every record still on disk once enough are obsolete
    /// (they can no longer match anything), rewriting the purge log. The writer lock is held.
    pub(super) fn maybe_compact_purges(&self, w: &mut Writer) {
        let min_base = self
            .index()
            .segments
            .values()
            .map(|s| s.base_seq)
            .min()
            .unwrap_or(w.next_seq);
        let obsolete = w.tombstones.iter().filter(|t| t.seq < min_base).count();
        if obsolete < COMPACT_MIN_OBSOLETE || obsolete * 2 < w.tombstones.len() {
            return;
        }
        let kept: Vec<Tombstone> = w
            .tombstones
            .iter()
            .filter(|t| t.seq >= min_base)
            .cloned()
            .collect();
        let encoded: Vec<Vec<u8>> = kept
            .iter()
            .filter_map(|t| encode_purge(t.kind, t.seq, &t.text).ok())
            .collect();
        let Some(purge) = w.purge.as_mut() else {
            return;
        };
        match purge.rewrite(&self.dir, encoded.iter().map(Vec::as_slice)) {
            Ok(()) => {
                self.c
                    .tombstones
                    .store(kept.len() as u64, std::sync::atomic::Ordering::Relaxed);
                w.tombstones = kept;
            }
            Err(e) => self.note_io("compact the purge log in", &self.dir, &e),
        }
    }
}

#[cfg(any(test, feature = "testing"))]
impl Wake {
    pub(super) fn pending(&self) -> bool {
        self.pending
    }

    pub(super) fn busy(&self) -> bool {
        self.busy
    }
}

/// Points where a test parks the reclamation (`after_scan`, `between_steps` on the reclaimer;
/// `inside_move_holding_writer` on the reclaimer holding the reclaim and writer locks;
/// `after_unlink` on the appender that rotates, holding them too).
#[cfg(any(test, feature = "testing"))]
pub(super) mod hooks {
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    use super::lock;

    #[derive(Default)]
    struct State {
        park_at: Option<&'static str>,
        parked: Option<&'static str>,
        off: bool,
    }

    /// Parking points for tests.
    #[derive(Default)]
    pub struct Hooks {
        state: Mutex<State>,
        cv: Condvar,
    }

    impl Hooks {
        /// Parks the calling thread if a test asked for `point` (once), until released.
        pub fn hit(&self, point: &'static str) {
            let mut st = lock(&self.state);
            if st.off || st.park_at != Some(point) {
                return;
            }
            st.park_at = None;
            st.parked = Some(point);
            self.cv.notify_all();
            while st.parked == Some(point) && !st.off {
                st = self
                    .cv
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }

        /// The next thread to reach `point` parks there.
        pub fn park_at(&self, point: &'static str) {
            lock(&self.state).park_at = Some(point);
        }

        /// Waits until a thread is parked at `point` (false after 10 s).
        pub fn wait_parked(&self, point: &'static str) -> bool {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut st = lock(&self.state);
            while st.parked != Some(point) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                st = self
                    .cv
                    .wait_timeout(st, left)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
            true
        }

        /// Lets the parked thread go on.
        pub fn release(&self) {
            lock(&self.state).parked = None;
            self.cv.notify_all();
        }

        /// Releases everything and parks nothing more (the store is dropped).
        pub fn off(&self) {
            let mut st = lock(&self.state);
            st.off = true;
            st.parked = None;
            st.park_at = None;
            self.cv.notify_all();
        }
    }
}

//! Segment reclamation: what keeps the SSD tier within its byte budget.
//!
//! When the active segment is full the appender *rotates* ([`Tier::rotate`]): it seals it and,
//! while the sealed segments and a new one would exceed the budget, drains the oldest sealed
//! segment X: X stops counting against the budget and its file is unlinked (readers in flight
//! keep their handle), the new segment is created, X's hot records (hit since written) are moved
//! into it up to half a segment, and X is dropped from the segment map; its other entries leave
//! the index.
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
use std::sync::Arc;

use super::format::{encode_purge, SEGMENT_HEADER_LEN};
use super::format::{set_sequence, verify_record, RecordHeader, RecordKind, RECORD_HEADER_LEN};
use super::index::IndexEntry;
use super::segment::{read_at, Segment};
use super::{add, bump, Active, Tier, Tombstone, Writer, COMPACT_MIN_OBSOLETE};

/// Index entries removed per index-lock hold when a drained segment's records are swept.
const SWEEP_BATCH: usize = 4096;
/// Records looked at per index-lock hold when choosing what to move.
const MOVE_BATCH: usize = 64;
/// Bytes read per block when scanning a segment's record headers.
const SCAN_BLOCK: usize = 256 << 10;

/// The reclamation under way (guarded by the tier's reclaim lock).
#[derive(Default)]
pub(super) struct Reclaim {
    /// The segment the next rotation drains, scanned ahead of time.
    plan: Option<Plan>,
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
        }
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
                return Err(e);
            }
        }
        // Survivors take at most half a segment, and leave room for the append that waits.
        let room = self
            .segment_bytes
            .saturating_sub(SEGMENT_HEADER_LEN as u64 + need);
        let mut budget = (self.segment_bytes / 2).min(room);
        for mut plan in drained {
            self.move_hot(w, &mut plan, &mut budget);
            self.drop_segment(plan);
        }
        self.maybe_compact_purges(w);
        Ok(())
    }

    /// Moves the records of `plan` that are still indexed at its segment and hot into the
    /// active segment, within `budget` bytes (and the active segment's room). Called with the
    /// writer lock held; reads happen outside the index lock, a batch at a time.
    fn move_hot(&self, w: &mut Writer, plan: &mut Plan, budget: &mut u64) {
        let mut cursor = 0;
        while cursor < plan.records.len() && *budget > 0 {
            let end = (cursor + MOVE_BATCH).min(plan.records.len());
            let mut want = 0u64;
            let candidates: Vec<(u64, IndexEntry)> = {
                let ix = self.index();
                plan.records[cursor..end]
                    .iter()
                    .filter_map(|&(hash, offset)| {
                        let e = ix.index.entries.get(&hash)?;
                        (e.segment == plan.segment && e.offset == offset && e.is_hot())
                            .then_some((hash, *e))
                    })
                    .filter(|(_, e)| {
                        let fits = want + u64::from(e.len) <= *budget;
                        if fits {
                            want += u64::from(e.len);
                        }
                        fits
                    })
                    .collect()
            };
            cursor = end;
            let survivors = self.read_survivors(plan, &candidates);
            self.write_survivors(w, plan, survivors, budget);
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
    /// points its entry at the copy.
    fn write_survivors(
        &self,
        w: &mut Writer,
        plan: &mut Plan,
        survivors: Vec<Survivor>,
        budget: &mut u64,
    ) {
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
                continue;
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

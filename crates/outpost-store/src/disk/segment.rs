//! Segment files: naming, creation with a header, positional appends and reads (`pwrite` /
//! `pread` through `FileExt`, so readers never share a file cursor and need no lock), and the
//! purge log that holds tombstones.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{SegmentHeader, SEGMENT_HEADER_LEN};

/// File name of the purge (tombstone) log.
pub const PURGE_LOG: &str = "purges.log";
/// Temporary name used while the purge log is compacted.
pub const PURGE_LOG_TMP: &str = "purges.log.tmp";

/// Path of segment `id` in `dir`.
pub fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("seg-{id:010}.dat"))
}

/// The id of a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".dat")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One segment: its file (shared with readers), written length and base sequence.
#[derive(Debug)]
pub struct Segment {
    /// Segment id (the file name's number; increases with age order).
    pub id: u32,
    /// The file, shared with readers in flight (they keep it alive if it is deleted).
    pub file: Arc<File>,
    /// Bytes in the file (for the active segment: where the next record goes).
    pub len: u64,
    /// Every record in the segment has a sequence at least this.
    pub base_seq: u64,
    /// Path, for deletion and logs.
    pub path: PathBuf,
    /// Being drained by reclamation: no longer counted against the budget, its file already
    /// unlinked, its entries still readable until it leaves the segment map.
    pub unlinked: bool,
}

impl Segment {
    /// Creates a new segment file with its header.
    pub fn create(dir: &Path, id: u32, base_seq: u64) -> io::Result<Self> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.write_all_at(&SegmentHeader::encode(id, base_seq), 0)?;
        Ok(Self {
            id,
            file: Arc::new(file),
            len: SEGMENT_HEADER_LEN as u64,
            base_seq,
            path,
            unlinked: false,
        })
    }
}

/// Records at least this long are read by [`read_large`].
pub const LARGE_READ: usize = 64 * 1024;

/// Reads `len` bytes at `offset` of the file at `path` through a handle of its own, into a buffer
/// that is not zeroed first (`read_to_end` fills spare capacity): for large records, where zeroing
/// the buffer costs about as much as the read itself. On any error (the segment was reclaimed
/// meanwhile, no descriptor left) the caller falls back to its shared handle.
pub fn read_large(path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "record cut short",
        ));
    }
    Ok(buf)
}

/// Reads `len` bytes at `offset`.
pub fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// The append-only purge log file.
#[derive(Debug)]
pub struct PurgeFile {
    /// The open file (shared so that `flush` syncs it outside the writer lock).
    pub file: Arc<File>,
    /// Bytes written.
    pub len: u64,
    /// Path.
    pub path: PathBuf,
}

impl PurgeFile {
    /// Opens the log for appending at `len` (the end of its last valid record), creating it
    /// with a header when it does not exist.
    pub fn open(dir: &Path, valid_len: Option<u64>) -> io::Result<Self> {
        let path = dir.join(PURGE_LOG);
        match valid_len {
            Some(len) if len >= SEGMENT_HEADER_LEN as u64 => {
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
                // Cut a torn tail so new tombstones follow the last valid one.
                if file.metadata()?.len() != len {
                    file.set_len(len)?;
                }
                Ok(Self {
                    file: Arc::new(file),
                    len,
                    path,
                })
            }
            _ => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)?;
                file.write_all_at(&SegmentHeader::encode(0, 0), 0)?;
                Ok(Self {
                    file: Arc::new(file),
                    len: SEGMENT_HEADER_LEN as u64,
                    path,
                })
            }
        }
    }

    /// Appends one tombstone record.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.len)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Rewrites the log with only `records` (each an encoded tombstone): written to a temporary
    /// file, then renamed over the log, so a crash leaves either the old or the new log.
    pub fn rewrite<'a>(
        &mut self,
        dir: &Path,
        records: impl Iterator<Item = &'a [u8]>,
    ) -> io::Result<()> {
        let tmp = dir.join(PURGE_LOG_TMP);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut len = 0u64;
        file.write_all_at(&SegmentHeader::encode(0, 0), 0)?;
        len += SEGMENT_HEADER_LEN as u64;
        for record in records {
            file.write_all_at(record, len)?;
            len += record.len() as u64;
        }
        std::fs::rename(&tmp, &self.path)?;
        self.file = Arc::new(file);
        self.len = len;
        Ok(())
    }
}

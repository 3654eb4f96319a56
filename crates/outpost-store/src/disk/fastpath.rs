//! The fast path of SSD reads for async callers: before a read is handed to an `ssd-read-N`
//! thread (two cross-thread wakeups and usually two context switches), it is tried on the
//! caller's thread with `preadv2(..., RWF_NOWAIT)` (Linux >= 4.14). The kernel then copies what
//! the page cache holds and returns `EAGAIN` instead of waiting for the device, so the caller
//! (a tokio worker) never blocks on the disk: a hot record costs one syscall on the caller's
//! thread, a cold one falls back to the read threads as before.
//!
//! Any outcome but a whole read (`EAGAIN`, a short read because part of the range is not
//! cached, an I/O error) falls back: the read thread reads again and handles real errors as the
//! blocking path always did, so nothing here counts an error or retires a segment. A file
//! system that does not support `RWF_NOWAIT` (`EOPNOTSUPP`; `ENOSYS` or `EINVAL` on kernels
//! without `preadv2` or the flag) turns the fast path off for the store, so later reads go
//! straight to the threads without a wasted syscall.

use std::fs::File;
use std::io::IoSliceMut;
#[cfg(any(test, feature = "testing"))]
use std::sync::atomic::AtomicI32;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::counter::{Count, Sharded};

use rustix::io::{Errno, ReadWriteFlags};

/// A flag alone on its cache line.
#[repr(align(128))]
#[derive(Debug)]
struct Padded(AtomicBool);

/// Whether the fast path is on, and what it did.
#[derive(Debug)]
pub(super) struct FastPath {
    /// Cleared by the configuration, or the first time the file system refuses `RWF_NOWAIT`
    /// (read on every SSD read: kept off the counters' cache lines).
    enabled: Padded,
    /// Reads for async callers served on the caller's thread.
    pub fast: Sharded,
    /// Reads for async callers handed to the read threads.
    pub queued: Sharded,
    /// Tests: when not 0, every try fails with this errno instead of reading (`EAGAIN`: as if
    /// nothing were cached; `EOPNOTSUPP`: as a file system without `RWF_NOWAIT`).
    #[cfg(any(test, feature = "testing"))]
    forced: AtomicI32,
}

impl FastPath {
    pub(super) fn new(enabled: bool) -> Self {
        Self {
            enabled: Padded(AtomicBool::new(enabled)),
            fast: Sharded::default(),
            queued: Sharded::default(),
            #[cfg(any(test, feature = "testing"))]
            forced: AtomicI32::new(0),
        }
    }

    /// Whether reads are tried on the caller's thread at all.
    pub(super) fn enabled(&self) -> bool {
        self.enabled.0.load(Ordering::Relaxed)
    }

    /// Counts a read served on the caller's thread.
    pub(super) fn served(&self) {
        self.fast.add(1);
    }

    /// Counts a read handed to the read threads.
    pub(super) fn queued(&self) {
        self.queued.add(1);
    }

    /// Tests: make every try fail with `errno` (or, with `None`, read again).
    #[cfg(any(test, feature = "testing"))]
    pub(super) fn force_errno(&self, errno: Option<Errno>) {
        self.forced
            .store(errno.map_or(0, Errno::raw_os_error), Ordering::Relaxed);
    }

    /// `len` bytes at `offset` of `file` if the page cache holds all of them; `None` when the
    /// read would wait for the device, came back short, failed, or the fast path is off (the
    /// caller then queues the read). Never blocks on the device.
    pub(super) fn try_read(&self, file: &File, offset: u64, len: usize) -> Option<Vec<u8>> {
        if !self.enabled() {
            return None;
        }
        let mut buf = vec![0u8; len];
        match self.preadv2(file, &mut buf, offset) {
            Ok(n) if n == len => Some(buf),
            // Part of the range is not cached (or the file ends early: the thread's read says so).
            Ok(_) => None,
            Err(e @ (Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL)) => {
                if self.enabled.0.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        target: "outpost_store::disk",
                        error = %e,
                        "SSD tier: the file system does not support RWF_NOWAIT reads; every \
                         SSD read goes to the read threads"
                    );
                }
                None
            }
            // EAGAIN (not cached), EINTR, or an I/O error the read thread will meet and report.
            Err(_) => None,
        }
    }

    fn preadv2(&self, file: &File, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        #[cfg(any(test, feature = "testing"))]
        match self.forced.load(Ordering::Relaxed) {
            0 => {}
            raw => return Err(Errno::from_raw_os_error(raw)),
        }
        rustix::io::preadv2(
            file,
            &mut [IoSliceMut::new(buf)],
            offset,
            ReadWriteFlags::NOWAIT,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::os::unix::fs::FileExt;

    fn temp_file(bytes: &[u8]) -> (std::path::PathBuf, File) {
        let path = std::env::temp_dir().join(format!(
            "outpost-fastpath-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all_at(bytes, 0).unwrap();
        (path, file)
    }

    #[test]
    fn a_cached_range_is_read_whole_and_a_forced_eagain_or_a_short_read_falls_back() {
        let bytes: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let (path, file) = temp_file(&bytes);
        let fast = FastPath::new(true);
        // Just written: in the page cache (a file system without RWF_NOWAIT turns it off).
        match fast.try_read(&file, 100, 10_000) {
            Some(read) => assert_eq!(read, bytes[100..10_100]),
            None => assert!(!fast.enabled(), "a cached range is read unless unsupported"),
        }
        if fast.enabled() {
            // Past the end: short, so it falls back (the thread's read reports the EOF).
            assert!(fast.try_read(&file, 19_000, 2_000).is_none());
            fast.force_errno(Some(Errno::AGAIN));
            assert!(fast.try_read(&file, 0, 100).is_none());
            assert!(fast.enabled(), "EAGAIN does not turn the fast path off");
            fast.force_errno(None);
            assert_eq!(fast.try_read(&file, 0, 100).unwrap(), bytes[..100]);
            // A file system without RWF_NOWAIT turns it off for good.
            fast.force_errno(Some(Errno::OPNOTSUPP));
            assert!(fast.try_read(&file, 0, 100).is_none());
            fast.force_errno(None);
            assert!(!fast.enabled(), "remembered");
            assert!(fast.try_read(&file, 0, 100).is_none());
        }
        let off = FastPath::new(false);
        assert!(off.try_read(&file, 0, 100).is_none());
        drop(file);
        let _ = std::fs::remove_file(path);
    }
}

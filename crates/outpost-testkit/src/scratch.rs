//! [`ScratchDir`]: a test's own directory under the system temp dir, emptied when created and
//! removed when dropped, so test runs leave nothing behind in /tmp.

use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A fresh directory `$TMPDIR/<name>`; removed with everything in it on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `$TMPDIR/<name>` empty (a leftover from a killed run is cleared first). Put the
    /// process id, and the thread's if tests share a process, in `name`.
    pub fn new(name: &str) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// [`ScratchDir::new`] named `<prefix>-<process id>-<thread id>`: one per test thread, for
    /// unit tests that share a process.
    pub fn for_thread(prefix: &str) -> std::io::Result<Self> {
        Self::new(&format!(
            "{prefix}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ))
    }
}

impl Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    #[test]
    fn scratch_dir_is_fresh_and_removed_on_drop() {
        let name = format!("outpost-testkit-scratch-{}", std::process::id());
        let path = {
            let dir = ScratchDir::new(&name).expect("create");
            std::fs::write(dir.join("f"), b"x").expect("write");
            let again = ScratchDir::new(&name).expect("recreate");
            assert!(!again.join("f").exists(), "a new one starts empty");
            again.to_path_buf()
        };
        assert!(!path.exists(), "removed on drop");
    }
}

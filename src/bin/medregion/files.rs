//! Output files of the CLI: written under a temporary name next to the target and renamed, so a
//! failed or interrupted run never leaves a partial file.

use std::path::{Path, PathBuf};

use medregion::{Error, Result};

/// Writes `bytes` to `path` atomically (`path.partial`, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(tmp.display().to_string(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path.display().to_string(), e)
    })
}

/// A temporary file (the demo's or a benchmark's synthetic package), removed when dropped.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

//! The writer's temporary files (`.gguf-partial-XXXXXX` next to the target) and the removal of
//! those whose writer died.
//!
//! A writer holds an exclusive advisory lock (`flock`) on its temporary file from creation until
//! the rename. The kernel drops the lock when the process ends however it ends, SIGKILL
//! included, so a partial file that can be locked has no live writer: nothing will ever finish
//! or remove it. A partial file that cannot be locked belongs to a running conversion and is
//! left alone, and so is one we cannot open (another user's: they are created 0600).

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::{Error, Result};

/// Name prefix of the writer's temporary files.
pub const PARTIAL_PREFIX: &str = ".gguf-partial-";

/// A temporary file removed by [`remove_stale_partials`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalePartial {
    pub path: PathBuf,
    pub bytes: u64,
}

/// Creates a locked temporary file in `dir`.
pub(crate) fn create(dir: &Path) -> Result<NamedTempFile> {
    // A sweep in another process may take the lock between creation and our lock, find the
    // file unlocked and remove it; then the name no longer leads to our file, and we start
    // again. Once we hold the lock no sweep can take it, so this ends at once in practice.
    loop {
        let tmp = tempfile::Builder::new()
            .prefix(PARTIAL_PREFIX)
            .tempfile_in(dir)
            .map_err(|e| Error::io("creating a temporary file in", dir, e))?;
        tmp.as_file()
            .lock()
            .map_err(|e| Error::io("locking", tmp.path(), e))?;
        if names_file(tmp.path(), tmp.as_file()) {
            return Ok(tmp);
        }
    }
}

/// Removes the temporary files in `dir` left by writers that no longer run (killed, crashed,
/// or power lost), and returns them. Best effort: a file that cannot be checked or removed is
/// left as it is, and an unreadable folder has nothing to remove.
pub fn remove_stale_partials(dir: &Path) -> Vec<StalePartial> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed: Vec<StalePartial> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX))
        .filter_map(|e| remove_if_stale(&e.path()))
        .collect();
    removed.sort_by(|a, b| a.path.cmp(&b.path));
    removed
}

fn remove_if_stale(path: &Path) -> Option<StalePartial> {
    let file = File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) | Err(TryLockError::Error(_)) => return None,
    }
    // Another sweep may have removed it, and a new writer taken the name, since we opened it.
    if !names_file(path, &file) {
        return None;
    }
    let bytes = file.metadata().ok()?.len();
    std::fs::remove_file(path).ok()?;
    Some(StalePartial {
        path: path.to_path_buf(),
        bytes,
    })
}

/// Whether `path` still leads to the open `file`.
#[cfg(unix)]
fn names_file(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Elsewhere an open file cannot be removed, so the name cannot change under us.
#[cfg(not(unix))]
fn names_file(path: &Path, _file: &File) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_unlocked_partials() {
        let dir = tempfile::tempdir().unwrap();
        let live = create(dir.path()).unwrap();
        // What a killed writer leaves: a partial file nobody holds.
        let dead = dir.path().join(format!("{PARTIAL_PREFIX}dead01"));
        std::fs::write(&dead, [7u8; 1000]).unwrap();
        let other = dir.path().join("gguf-partial-not-ours");
        std::fs::write(&other, b"x").unwrap();

        let removed = remove_stale_partials(dir.path());
        assert_eq!(
            removed,
            vec![StalePartial {
                path: dead.clone(),
                bytes: 1000
            }]
        );
        assert!(!dead.exists());
        assert!(live.path().exists(), "a live writer's file was removed");
        assert!(other.exists());

        // Once its writer is gone, the same file is stale.
        let (file, path) = live.keep().unwrap();
        drop(file);
        assert_eq!(remove_stale_partials(dir.path()).len(), 1);
        assert!(!path.exists());
    }

    #[test]
    fn missing_folder_has_nothing_to_remove() {
        let dir = tempfile::tempdir().unwrap();
        assert!(remove_stale_partials(&dir.path().join("absent")).is_empty());
    }
}

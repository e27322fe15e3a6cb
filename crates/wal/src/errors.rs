//! Why a WAL could not be opened or used.

use std::io;
use std::path::PathBuf;

use raftwerk_raft::StorageError;

/// Errors opening or inspecting a WAL. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("data directory {dir} is in use by another process (lock held on its LOCK file)")]
    Locked { dir: PathBuf },
    #[error("corrupt WAL record in {file} at offset {offset}: {reason}; refusing to start (restore the node from a peer or a backup)")]
    Corrupt { file: PathBuf, offset: u64, reason: String },
    #[error("snapshot file {file} is missing or damaged: {reason}")]
    SnapshotDamaged { file: PathBuf, reason: String },
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> WalError {
        let path = path.into();
        move |source| WalError::Io { path, source }
    }
}

impl From<WalError> for StorageError {
    fn from(error: WalError) -> Self {
        StorageError::Io(error.to_string())
    }
}

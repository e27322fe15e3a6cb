//! A simulated node's durable storage: the in-memory store, or the real
//! WAL (`raftwerk-wal`) over a simulated disk (`SimFs`). With the WAL, a
//! crash drops the process's open files, the disk loses everything not
//! synced, and the restart runs the WAL's recovery.

use std::path::Path;

use raftwerk_raft::{
    Entry, HardState, Index, LogStore, MemStorage, SnapshotChunk, SnapshotMeta, Storage, StorageError, Term,
};
use raftwerk_wal::{SimFs, Wal, WalOptions};

/// Where a simulated node keeps its data directory on its `SimFs`.
const DATA_DIR: &str = "/node";

/// Small segments and cache, so that segment rotation, deletion and reads
/// from disk all happen within a short run.
pub const SIM_WAL_OPTIONS: WalOptions = WalOptions {
    segment_bytes: 16 << 10,
    cache_bytes_max: 4 << 10,
};

/// One node's storage.
pub enum NodeStorage {
    Mem(Box<MemStorage>),
    Wal(Box<Wal<SimFs>>),
}

/// A node's disk while it is down.
pub enum Disk {
    Mem(Box<MemStorage>),
    Wal(SimFs),
}

impl NodeStorage {
    /// Fresh storage of the given kind.
    ///
    /// # Panics
    /// If the WAL cannot be created on an empty simulated disk.
    pub fn new(wal: bool) -> (NodeStorage, Option<SimFs>) {
        if wal {
            let fs = SimFs::new();
            let storage = Wal::open(fs.clone(), Path::new(DATA_DIR), SIM_WAL_OPTIONS).expect("WAL on an empty disk");
            (NodeStorage::Wal(Box::new(storage)), Some(fs))
        } else {
            (NodeStorage::Mem(Box::default()), None)
        }
    }

    /// The node crashes: what survives on its disk. `fs` is the node's
    /// simulated disk when it runs on the WAL.
    pub fn crash(self, fs: Option<&SimFs>) -> Disk {
        match (self, fs) {
            (NodeStorage::Mem(storage), _) => Disk::Mem(storage),
            (NodeStorage::Wal(wal), Some(fs)) => {
                drop(wal);
                fs.crash(None);
                Disk::Wal(fs.clone())
            }
            (NodeStorage::Wal(_), None) => panic!("a WAL node has a disk"),
        }
    }

    /// The whole data of the stored snapshot at `index`.
    ///
    /// # Errors
    /// When storage cannot read it.
    pub fn snapshot_data(&self, index: Index) -> Result<Vec<u8>, StorageError> {
        raftwerk_raft::storage::read_snapshot(self, index)
    }
}

impl Disk {
    /// The restarted node's storage, recovered from the disk.
    ///
    /// # Errors
    /// What the WAL's recovery reports.
    pub fn recover(self) -> Result<NodeStorage, String> {
        match self {
            Disk::Mem(storage) => Ok(NodeStorage::Mem(storage)),
            Disk::Wal(fs) => Wal::open(fs, Path::new(DATA_DIR), SIM_WAL_OPTIONS)
                .map(|wal| NodeStorage::Wal(Box::new(wal)))
                .map_err(|error| format!("WAL recovery failed: {error}")),
        }
    }
}

macro_rules! each {
    ($self:expr, $storage:ident => $body:expr) => {
        match $self {
            NodeStorage::Mem($storage) => $body,
            NodeStorage::Wal($storage) => $body,
        }
    };
}

impl Storage for NodeStorage {
    fn hard_state(&self) -> HardState {
        each!(self, storage => storage.hard_state())
    }

    fn first_index(&self) -> Index {
        each!(self, storage => storage.first_index())
    }

    fn last_index(&self) -> Index {
        each!(self, storage => storage.last_index())
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        each!(self, storage => storage.term(index))
    }

    fn entries(&self, low: Index, high: Index, bytes_max: u64) -> Result<Vec<Entry>, StorageError> {
        each!(self, storage => storage.entries(low, high, bytes_max))
    }

    fn snapshot(&self) -> Option<SnapshotMeta> {
        each!(self, storage => storage.snapshot())
    }

    fn snapshot_chunk(&self, index: Index, offset: u64, bytes_max: u64) -> Result<SnapshotChunk, StorageError> {
        each!(self, storage => storage.snapshot_chunk(index, offset, bytes_max))
    }
}

impl LogStore for NodeStorage {
    fn append_entries(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        each!(self, storage => storage.append_entries(entries))
    }

    fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        each!(self, storage => storage.save_hard_state(hard_state))
    }

    fn compact_to(&mut self, index: Index) -> Result<(), StorageError> {
        each!(self, storage => storage.compact_to(index))
    }

    fn write_snapshot_chunk(&mut self, index: Index, term: Term, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        each!(self, storage => storage.write_snapshot_chunk(index, term, offset, data))
    }

    fn save_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        each!(self, storage => storage.save_snapshot(meta))
    }

    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        each!(self, storage => storage.install_snapshot(meta))
    }

    fn retain_snapshots(&mut self, in_use: &[Index]) -> Result<(), StorageError> {
        each!(self, storage => storage.retain_snapshots(in_use))
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        each!(self, storage => storage.sync())
    }
}

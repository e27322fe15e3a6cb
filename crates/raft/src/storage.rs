//! The log-storage contract between the core and durable storage, and an
//! in-memory implementation used by tests, the simulator and benchmarks.
//!
//! The core only reads storage. The application writes to it: it appends the
//! entries and hard state of each `Ready`, makes them durable, and only then
//! calls `Raft::on_persisted`. Everything a store returns must therefore be
//! durable; entries not yet persisted live in the core's unstable log.

use bytes::Bytes;

use crate::snapshot::{SnapshotChunk, SnapshotMeta};
use crate::types::{Entry, HardState, Index, Term};

/// Why a storage read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The index is below the first index kept (compacted into a snapshot).
    #[error("log index {index} is compacted (first index kept is {first_index})")]
    Compacted { index: Index, first_index: Index },
    /// The index is beyond the last durable entry.
    #[error("log index {index} is beyond the last stored index {last_index}")]
    Unavailable { index: Index, last_index: Index },
    /// The snapshot asked for is not (or no longer) the stored one.
    #[error("snapshot at index {index} is not stored")]
    SnapshotUnavailable { index: Index },
    /// A compaction past the stored snapshot would lose entries nothing
    /// else holds.
    #[error("cannot compact to {index}: the stored snapshot only covers up to {snapshot_index}")]
    BeyondSnapshot { index: Index, snapshot_index: Index },
    /// A snapshot to save or install is not newer than the stored one.
    #[error("snapshot at index {index} is not newer than the stored snapshot at {stored_index}")]
    SnapshotNotNewer { index: Index, stored_index: Index },
    /// An entry too large for the store to record (and read back).
    #[error("entry {index} of {bytes} bytes exceeds the storage limit of {limit} bytes")]
    EntryTooLarge { index: Index, bytes: u64, limit: u64 },
    /// Snapshot metadata the store refuses to record.
    #[error("invalid snapshot metadata: {0}")]
    InvalidSnapshot(&'static str),
    /// A snapshot chunk does not continue the pending snapshot.
    #[error("snapshot chunk at offset {offset} does not continue the pending snapshot ({pending} bytes)")]
    ChunkOutOfOrder { offset: u64, pending: u64 },
    /// The backing store failed; the node must stop.
    #[error("log storage failed: {0}")]
    Io(String),
}

/// Read access to durable log state.
///
/// Invariants a store guarantees: `first_index() >= 1`,
/// `last_index() + 1 >= first_index()`, `term(first_index() - 1)` is
/// answerable (the term of the last compacted entry, or `0` for a log that
/// starts at 1), and a compacted log has a snapshot at or above
/// `first_index() - 1`.
pub trait Storage {
    /// The hard state persisted last (zeroed for a new node).
    fn hard_state(&self) -> HardState;
    /// The first index still stored as an entry.
    fn first_index(&self) -> Index;
    /// The last stored index (`first_index() - 1` when empty).
    fn last_index(&self) -> Index;
    /// The term of the entry at `index`, for `first_index()-1 ..= last_index()`.
    ///
    /// # Errors
    /// `Compacted` or `Unavailable` outside that range; `Io` on failure.
    fn term(&self, index: Index) -> Result<Term, StorageError>;
    /// Entries in `[low, high)`, stopping once `bytes_max` is reached but
    /// always returning at least one entry when the range is non-empty.
    ///
    /// # Errors
    /// As `term`, for any index outside the stored range.
    fn entries(&self, low: Index, high: Index, bytes_max: u64) -> Result<Vec<Entry>, StorageError>;

    /// The metadata of the stored snapshot, if any. It stands in for the
    /// compacted log: the core starts from its configuration, and a leader
    /// sends it to followers that need compacted entries.
    fn snapshot(&self) -> Option<SnapshotMeta> {
        None
    }

    /// Up to `bytes_max` bytes (at least one, unless the snapshot is empty)
    /// of the data of the snapshot at `index` from `offset`: the stored
    /// snapshot, or an older one still retained for a transfer in progress
    /// (`LogStore::retain_snapshots`).
    ///
    /// # Errors
    /// `SnapshotUnavailable` when no snapshot at `index` is kept; `Io`.
    fn snapshot_chunk(&self, index: Index, offset: u64, bytes_max: u64) -> Result<SnapshotChunk, StorageError> {
        let _ = (offset, bytes_max);
        Err(StorageError::SnapshotUnavailable { index })
    }
}

/// Write access to durable log storage: what the application uses to
/// persist each `Ready` before calling `Raft::on_persisted`. The WAL and
/// `MemStorage` implement it; `storage_conformance` checks the contract.
pub trait LogStore: Storage {
    /// Appends `entries`, first dropping any stored suffix from
    /// `entries[0].index` (a follower's overwrite). Durable after `sync`.
    ///
    /// # Errors
    /// `Io` when the store fails; the node must stop.
    ///
    /// # Panics
    /// If the entries are not contiguous or leave a gap (a caller bug).
    fn append_entries(&mut self, entries: &[Entry]) -> Result<(), StorageError>;

    /// Replaces the hard state. Durable after `sync`; a crash leaves the old
    /// or the new one, never a mix.
    ///
    /// # Errors
    /// `Io` when the store fails.
    fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError>;

    /// Drops entries up to and including `index`, keeping its term. The
    /// stored snapshot must cover `index` (see `Raft::compact_index`).
    ///
    /// # Errors
    /// `Compacted` or `Unavailable` for an index outside the log,
    /// `BeyondSnapshot` past the snapshot; `Io`.
    fn compact_to(&mut self, index: Index) -> Result<(), StorageError>;

    /// Writes snapshot data at `offset` of the pending snapshot `(index,
    /// term)`. Offset 0 starts (or restarts) that pending snapshot; pending
    /// snapshots of other indexes are kept (the application's own snapshot
    /// and one received from the leader may be written at the same time).
    /// A store keeps a few at once (`PENDING_SNAPSHOTS_MAX`); starting one
    /// more drops the one with the lowest index, which by then can only be
    /// a superseded transfer. A chunk of a snapshot no newer than the stored
    /// one, whose pending data is gone, is ignored: the node no longer needs
    /// that transfer (its own snapshot caught up while chunks were on their
    /// way to storage). Durable after `sync`.
    ///
    /// # Errors
    /// `ChunkOutOfOrder` unless the chunk continues the pending snapshot
    /// exactly at its end; `Io`.
    fn write_snapshot_chunk(&mut self, index: Index, term: Term, offset: u64, data: &[u8]) -> Result<(), StorageError>;

    /// Makes the pending snapshot `(meta.index, meta.term)` the stored one;
    /// the snapshot it replaces is kept until `retain_snapshots` releases
    /// it. The log is untouched. This is how the application records a
    /// snapshot of its own state machine.
    ///
    /// # Errors
    /// `SnapshotUnavailable` when no such snapshot is pending,
    /// `SnapshotNotNewer` unless it is newer than the stored one; `Io`.
    fn save_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError>;

    /// Removes every snapshot except the stored (newest) one and those at
    /// the indexes in `in_use` (transfers in progress,
    /// `Raft::snapshots_in_use`). Replacing a snapshot never removes the old
    /// one by itself: a follower receiving it would have to start over, and
    /// with snapshots taken faster than one transfers, never finish.
    ///
    /// # Errors
    /// `Io`.
    fn retain_snapshots(&mut self, in_use: &[Index]) -> Result<(), StorageError>;

    /// As `save_snapshot`, then replaces the whole log by the snapshot: no
    /// entries are left, and the log continues at `meta.index + 1` (a
    /// follower installing a snapshot from its leader).
    ///
    /// # Errors
    /// As `save_snapshot`.
    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError>;

    /// Makes everything written so far durable.
    ///
    /// # Errors
    /// `Io` when the store fails; the node must stop (no retry can prove
    /// durability after a failed sync).
    fn sync(&mut self) -> Result<(), StorageError>;
}

/// The whole data of the stored snapshot at `index`, read chunk by chunk
/// (restoring a state machine from it).
///
/// # Errors
/// What `Storage::snapshot_chunk` reports.
pub fn read_snapshot<S: Storage + ?Sized>(storage: &S, index: Index) -> Result<Vec<u8>, StorageError> {
    const CHUNK_BYTES: u64 = 4 << 20;
    let mut data = Vec::new();
    loop {
        let chunk = storage.snapshot_chunk(index, data.len() as u64, CHUNK_BYTES)?;
        data.extend_from_slice(&chunk.data);
        if chunk.last {
            return Ok(data);
        }
        if chunk.data.is_empty() {
            return Err(StorageError::Io(format!(
                "snapshot {index} ended early at {} bytes",
                data.len()
            )));
        }
    }
}

/// What every store checks before making a snapshot the stored one: its
/// metadata is valid and it is newer than `stored_index`.
///
/// # Errors
/// `InvalidSnapshot` or `SnapshotNotNewer`.
pub fn check_snapshot_to_store(meta: &SnapshotMeta, stored_index: Index) -> Result<(), StorageError> {
    meta.configuration.validate().map_err(StorageError::InvalidSnapshot)?;
    if meta.index <= stored_index {
        return Err(StorageError::SnapshotNotNewer {
            index: meta.index,
            stored_index,
        });
    }
    Ok(())
}

/// Pending snapshots a store keeps at once (see `write_snapshot_chunk`).
pub const PENDING_SNAPSHOTS_MAX: usize = 4;

/// A durable-by-definition store in memory. Tests treat its contents as what
/// survives a crash.
#[derive(Clone, Debug)]
pub struct MemStorage {
    hard_state: HardState,
    /// Entries starting at `offset`.
    entries: Vec<Entry>,
    /// Index of `entries[0]` (1 while nothing is compacted).
    offset: Index,
    /// Term of the entry at `offset - 1` (0 while nothing is compacted).
    compacted_term: Term,
    /// The stored snapshot and its data.
    snapshot: Option<(SnapshotMeta, Bytes)>,
    /// Older snapshots not yet released (`retain_snapshots`).
    older: Vec<(SnapshotMeta, Bytes)>,
    /// Snapshots being written: `(index, term, data so far)`.
    pending: Vec<(Index, Term, Vec<u8>)>,
}

impl Default for MemStorage {
    /// An empty log that starts at index 1.
    fn default() -> Self {
        MemStorage {
            hard_state: HardState::default(),
            entries: Vec::new(),
            offset: 1,
            compacted_term: 0,
            snapshot: None,
            older: Vec::new(),
            pending: Vec::new(),
        }
    }
}

impl MemStorage {
    pub fn new() -> Self {
        MemStorage::default()
    }

    /// Stores a snapshot of the application's state in one step (the
    /// in-memory equivalent of `write_snapshot_chunk` + `save_snapshot`).
    ///
    /// # Errors
    /// `SnapshotUnavailable` unless `meta` is newer than the stored snapshot.
    pub fn create_snapshot(&mut self, meta: SnapshotMeta, data: Bytes) -> Result<(), StorageError> {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|(stored, _)| stored.index >= meta.index)
        {
            return Err(StorageError::SnapshotUnavailable { index: meta.index });
        }
        self.replace_snapshot(meta, data);
        Ok(())
    }

    fn replace_snapshot(&mut self, meta: SnapshotMeta, data: Bytes) {
        if let Some(previous) = self.snapshot.replace((meta, data)) {
            self.older.push(previous);
        }
    }

    /// Number of snapshots kept, the stored one included (tests).
    pub fn snapshots_kept(&self) -> usize {
        usize::from(self.snapshot.is_some()) + self.older.len()
    }

    /// The stored snapshot's data (tests, the simulator's restore).
    pub fn snapshot_data(&self) -> Option<&Bytes> {
        self.snapshot.as_ref().map(|(_, data)| data)
    }

    /// Drops the entries up to and including `index`, remembering its term
    /// so the consistency check at the new first index still works. The
    /// stored snapshot must cover `index`.
    ///
    /// # Errors
    /// `Compacted` if `index` is already gone, `Unavailable` beyond the log,
    /// `BeyondSnapshot` past the stored snapshot.
    pub fn compact(&mut self, index: Index) -> Result<(), StorageError> {
        if index < self.offset {
            return Err(StorageError::Compacted {
                index,
                first_index: self.offset,
            });
        }
        let term = self.term(index)?;
        let snapshot_index = self.snapshot.as_ref().map_or(0, |(meta, _)| meta.index);
        if index > snapshot_index {
            return Err(StorageError::BeyondSnapshot { index, snapshot_index });
        }
        let count = (index + 1 - self.offset) as usize;
        self.entries.drain(..count);
        self.offset = index + 1;
        self.compacted_term = term;
        Ok(())
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        assert!(
            hard_state.term >= self.hard_state.term,
            "hard state term went backwards: {} -> {}",
            self.hard_state.term,
            hard_state.term
        );
        self.hard_state = hard_state;
    }

    /// Appends `entries`, first dropping any stored suffix that starts at
    /// `entries[0].index` (the overwrite a follower does on conflict).
    ///
    /// # Panics
    /// If the entries are not contiguous or would leave a gap.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        assert!(first.index >= self.offset, "append below the first stored index");
        assert!(
            first.index <= self.last_index() + 1,
            "append at {} leaves a gap after {}",
            first.index,
            self.last_index()
        );
        for pair in entries.windows(2) {
            assert_eq!(pair[0].index + 1, pair[1].index, "entries not contiguous");
        }
        let keep = (first.index - self.offset) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// Writes everything a ready asks to persist, in the order `Ready`
    /// documents (memory is durable by definition here).
    ///
    /// # Panics
    /// If the ready breaks the snapshot chunk order (a core bug).
    pub fn persist(&mut self, ready: &crate::types::Ready) {
        for chunk in &ready.snapshot_chunks {
            self.write_snapshot_chunk(chunk.index, chunk.term, chunk.offset, &chunk.data)
                .expect("chunks arrive in order");
        }
        if let Some(meta) = &ready.snapshot {
            self.install_snapshot(meta).expect("the installed snapshot was written");
        }
        self.append(&ready.entries);
        if let Some(hard_state) = ready.hard_state {
            self.set_hard_state(hard_state);
        }
    }

    /// Number of entries held (for tests and benchmarks).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn promote_pending(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        check_snapshot_to_store(meta, self.snapshot.as_ref().map_or(0, |(stored, _)| stored.index))?;
        let Some(at) = self
            .pending
            .iter()
            .position(|(index, term, _)| *index == meta.index && *term == meta.term)
        else {
            return Err(StorageError::SnapshotUnavailable { index: meta.index });
        };
        // Other pending snapshots stay: writes the core already handed out
        // may still reach them (they are dropped when new ones start).
        let (_, _, data) = self.pending.swap_remove(at);
        self.replace_snapshot(meta.clone(), Bytes::from(data));
        Ok(())
    }
}

impl Storage for MemStorage {
    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn first_index(&self) -> Index {
        self.offset
    }

    fn last_index(&self) -> Index {
        self.offset + self.entries.len() as Index - 1
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index.checked_add(1) == Some(self.offset) {
            return Ok(self.compacted_term);
        }
        if index < self.offset {
            return Err(StorageError::Compacted {
                index,
                first_index: self.offset,
            });
        }
        match self.entries.get((index - self.offset) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(StorageError::Unavailable {
                index,
                last_index: self.last_index(),
            }),
        }
    }

    fn entries(&self, low: Index, high: Index, bytes_max: u64) -> Result<Vec<Entry>, StorageError> {
        if low < self.offset {
            return Err(StorageError::Compacted {
                index: low,
                first_index: self.offset,
            });
        }
        if high > self.last_index() + 1 {
            return Err(StorageError::Unavailable {
                index: high - 1,
                last_index: self.last_index(),
            });
        }
        let start = (low - self.offset) as usize;
        let end = (high - self.offset) as usize;
        Ok(take_within_bytes(&self.entries[start..end], bytes_max))
    }

    fn snapshot(&self) -> Option<SnapshotMeta> {
        self.snapshot.as_ref().map(|(meta, _)| meta.clone())
    }

    fn snapshot_chunk(&self, index: Index, offset: u64, bytes_max: u64) -> Result<SnapshotChunk, StorageError> {
        let Some((_, data)) = self
            .snapshot
            .iter()
            .chain(&self.older)
            .find(|(meta, _)| meta.index == index)
        else {
            return Err(StorageError::SnapshotUnavailable { index });
        };
        let len = data.len() as u64;
        let start = offset.min(len);
        let end = start.saturating_add(bytes_max.max(1)).min(len);
        Ok(SnapshotChunk {
            data: data.slice(start as usize..end as usize),
            last: end == len,
        })
    }
}

impl LogStore for MemStorage {
    fn append_entries(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.append(entries);
        Ok(())
    }

    fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.set_hard_state(hard_state);
        Ok(())
    }

    fn compact_to(&mut self, index: Index) -> Result<(), StorageError> {
        self.compact(index)
    }

    fn write_snapshot_chunk(&mut self, index: Index, term: Term, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let slot = self
            .pending
            .iter()
            .position(|(pending_index, pending_term, _)| *pending_index == index && *pending_term == term);
        match (slot, offset) {
            (Some(at), 0) => self.pending[at].2 = data.to_vec(),
            (None, 0) => {
                if self.pending.len() >= PENDING_SNAPSHOTS_MAX {
                    let oldest = (0..self.pending.len())
                        .min_by_key(|&at| self.pending[at].0)
                        .expect("at the bound, so not empty");
                    self.pending.swap_remove(oldest);
                }
                self.pending.push((index, term, data.to_vec()));
            }
            (Some(at), _) if self.pending[at].2.len() as u64 == offset => self.pending[at].2.extend_from_slice(data),
            (None, _) if self.snapshot.as_ref().is_some_and(|(stored, _)| stored.index >= index) => {}
            (slot, _) => {
                return Err(StorageError::ChunkOutOfOrder {
                    offset,
                    pending: slot.map_or(0, |at| self.pending[at].2.len() as u64),
                })
            }
        }
        Ok(())
    }

    fn save_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        self.promote_pending(meta)
    }

    fn retain_snapshots(&mut self, in_use: &[Index]) -> Result<(), StorageError> {
        self.older.retain(|(meta, _)| in_use.contains(&meta.index));
        Ok(())
    }

    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        self.promote_pending(meta)?;
        self.entries.clear();
        self.offset = meta.index + 1;
        self.compacted_term = meta.term;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Clones a prefix of `entries` whose total size stays within `bytes_max`,
/// but never fewer than one entry.
pub(crate) fn take_within_bytes(entries: &[Entry], bytes_max: u64) -> Vec<Entry> {
    let mut taken = Vec::with_capacity(entries.len().min(1024));
    let mut bytes = 0u64;
    for entry in entries {
        bytes += entry.size_bytes();
        if !taken.is_empty() && bytes > bytes_max {
            break;
        }
        taken.push(entry.clone());
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::Configuration;
    use crate::types::EntryKind;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn append_overwrites_conflicting_suffix() {
        let mut storage = MemStorage::new();
        storage.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        storage.append(&[entry(2, 2)]);
        assert_eq!(storage.last_index(), 2);
        assert_eq!(storage.term(2), Ok(2));
        assert_eq!(storage.term(0), Ok(0));
    }

    #[test]
    fn entries_respect_byte_cap_but_return_one() {
        let mut storage = MemStorage::new();
        storage.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        assert_eq!(storage.entries(1, 4, 0).unwrap().len(), 1);
        assert_eq!(storage.entries(1, 4, u64::MAX).unwrap().len(), 3);
        assert!(storage.entries(1, 5, u64::MAX).is_err());
    }

    #[test]
    fn compaction_keeps_the_term_of_the_last_dropped_entry() {
        let mut storage = MemStorage::new();
        storage.append(&[entry(1, 1), entry(2, 2), entry(3, 2)]);
        assert!(matches!(storage.compact(2), Err(StorageError::BeyondSnapshot { .. })));
        let configuration = Configuration::new(vec![1], Vec::new());
        let meta = SnapshotMeta {
            index: 2,
            term: 2,
            configuration: configuration.clone(),
        };
        storage
            .create_snapshot(meta.clone(), Bytes::from_static(b"state"))
            .unwrap();
        storage.compact(2).unwrap();
        assert_eq!(storage.first_index(), 3);
        assert_eq!(storage.term(2), Ok(2));
        assert!(matches!(storage.term(1), Err(StorageError::Compacted { .. })));
        assert!(matches!(storage.compact(1), Err(StorageError::Compacted { .. })));
        assert!(matches!(storage.compact(9), Err(StorageError::Unavailable { .. })));
        assert_eq!(storage.snapshot(), Some(meta));
        assert_eq!(storage.entries(3, 4, u64::MAX).unwrap().len(), 1);
    }

    #[test]
    #[should_panic(expected = "leaves a gap")]
    fn append_with_gap_panics() {
        let mut storage = MemStorage::new();
        storage.append(&[entry(2, 1)]);
    }
}

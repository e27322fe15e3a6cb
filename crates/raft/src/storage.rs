//! The log-storage contract between the core and durable storage, and an
//! in-memory implementation used by tests, the simulator and benchmarks.
//!
//! The core only reads storage. The application writes to it: it appends the
//! entries and hard state of each `Ready`, makes them durable, and only then
//! calls `Raft::on_persisted`. Everything a store returns must therefore be
//! durable; entries not yet persisted live in the core's unstable log.

use crate::configuration::Configuration;
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
    /// The backing store failed; the node must stop.
    #[error("log storage failed: {0}")]
    Io(String),
}

/// Read access to durable log state.
///
/// Invariants a store guarantees: `first_index() >= 1`,
/// `last_index() + 1 >= first_index()`, and `term(first_index() - 1)` is
/// answerable (it is the term of the snapshot or `0` for an empty log).
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

    /// The configuration in force at `first_index() - 1`, when entries were
    /// compacted away (`None` for a log that starts at index 1). Without it
    /// the core cannot know the membership of a compacted log and refuses
    /// to start.
    fn compacted_configuration(&self) -> Option<Configuration> {
        None
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

    /// Drops entries up to and including `index`, keeping its term and the
    /// `configuration` in force there.
    ///
    /// # Errors
    /// `Compacted` or `Unavailable` for an index outside the log; `Io`.
    fn compact_to(&mut self, index: Index, configuration: Configuration) -> Result<(), StorageError>;

    /// Makes everything written so far durable.
    ///
    /// # Errors
    /// `Io` when the store fails; the node must stop (no retry can prove
    /// durability after a failed sync).
    fn sync(&mut self) -> Result<(), StorageError>;
}

/// A durable-by-definition store in memory. Tests treat its contents as what
/// survives a crash.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    /// Entries starting at `offset`.
    entries: Vec<Entry>,
    /// Index of `entries[0]` (1 while nothing is compacted).
    offset: Index,
    /// Term of the entry at `offset - 1` (0 while nothing is compacted).
    compacted_term: Term,
    /// Configuration in force at `offset - 1`, once something is compacted.
    compacted_configuration: Option<Configuration>,
}

impl MemStorage {
    pub fn new() -> Self {
        MemStorage {
            hard_state: HardState::default(),
            entries: Vec::new(),
            offset: 1,
            compacted_term: 0,
            compacted_configuration: None,
        }
    }

    /// Drops the entries up to and including `index`, remembering its term
    /// (so the consistency check at the new first index still works) and
    /// the `configuration` in force at `index` (`Raft::configuration_at`).
    /// The caller guarantees the state machine holds everything dropped.
    ///
    /// # Errors
    /// `Compacted` if `index` is already gone, `Unavailable` beyond the log.
    pub fn compact(&mut self, index: Index, configuration: Configuration) -> Result<(), StorageError> {
        if index < self.offset {
            return Err(StorageError::Compacted {
                index,
                first_index: self.offset,
            });
        }
        let term = self.term(index)?;
        let count = (index + 1 - self.offset) as usize;
        self.entries.drain(..count);
        self.offset = index + 1;
        self.compacted_term = term;
        self.compacted_configuration = Some(configuration);
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

    /// Writes a ready's hard state and entries (what an application does
    /// before `Raft::on_persisted`; memory is durable by definition here).
    pub fn persist(&mut self, ready: &crate::types::Ready) {
        if let Some(hard_state) = ready.hard_state {
            self.set_hard_state(hard_state);
        }
        self.append(&ready.entries);
    }

    /// Number of entries held (for tests and benchmarks).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        if index + 1 == self.offset {
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

    fn compacted_configuration(&self) -> Option<Configuration> {
        self.compacted_configuration.clone()
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

    fn compact_to(&mut self, index: Index, configuration: Configuration) -> Result<(), StorageError> {
        self.compact(index, configuration)
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
    use crate::types::EntryKind;
    use bytes::Bytes;

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
        storage.compact(2, Configuration::new(vec![1], Vec::new())).unwrap();
        assert_eq!(storage.first_index(), 3);
        assert_eq!(storage.term(2), Ok(2));
        assert!(matches!(storage.term(1), Err(StorageError::Compacted { .. })));
        let configuration = Configuration::new(vec![1], Vec::new());
        assert!(matches!(
            storage.compact(1, configuration.clone()),
            Err(StorageError::Compacted { .. })
        ));
        assert!(matches!(
            storage.compact(9, configuration.clone()),
            Err(StorageError::Unavailable { .. })
        ));
        assert_eq!(storage.compacted_configuration(), Some(configuration));
        assert_eq!(storage.entries(3, 4, u64::MAX).unwrap().len(), 1);
    }

    #[test]
    #[should_panic(expected = "leaves a gap")]
    fn append_with_gap_panics() {
        let mut storage = MemStorage::new();
        storage.append(&[entry(2, 1)]);
    }
}

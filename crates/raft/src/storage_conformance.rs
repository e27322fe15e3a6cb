//! The contract every `LogStore` must keep, as a reusable check: the
//! in-memory store runs it in its tests, and the WAL will run it too, so
//! the core can rely on the same behaviour from both.
//!
//! Each check builds a fresh store with the caller's factory and panics
//! with a message naming the broken rule.

use bytes::Bytes;

use crate::configuration::Configuration;
use crate::snapshot::SnapshotMeta;
use crate::storage::{LogStore, StorageError};
use crate::types::{Entry, EntryKind, HardState, Index, Term};

fn entry(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(format!("entry {index} of term {term}")),
    }
}

fn entries(first: Index, terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(offset, &term)| entry(first + offset as Index, term))
        .collect()
}

fn configuration() -> Configuration {
    Configuration::new(vec![1, 2, 3], vec![4])
}

fn meta(index: Index, term: Term) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        configuration: configuration(),
    }
}

/// Writes `data` as the pending snapshot `(index, term)` in chunks of 3.
fn write_snapshot<S: LogStore>(store: &mut S, index: Index, term: Term, data: &[u8]) {
    for (at, chunk) in data.chunks(3).enumerate() {
        store
            .write_snapshot_chunk(index, term, (at * 3) as u64, chunk)
            .expect("write snapshot chunk");
    }
}

/// Reads the stored snapshot at `index` back in chunks of `bytes_max`.
fn read_snapshot<S: LogStore>(store: &S, index: Index, bytes_max: u64) -> Vec<u8> {
    let mut data = Vec::new();
    loop {
        let chunk = store
            .snapshot_chunk(index, data.len() as u64, bytes_max)
            .expect("read snapshot chunk");
        data.extend_from_slice(&chunk.data);
        if chunk.last {
            return data;
        }
        assert!(!chunk.data.is_empty(), "a chunk before the end carries data");
    }
}

/// Runs every check against stores made by `make`.
///
/// # Panics
/// On the first broken rule.
pub fn check_log_store<S: LogStore>(mut make: impl FnMut() -> S) {
    empty_store_starts_at_index_one(&mut make());
    appended_entries_read_back_with_their_bytes(&mut make());
    append_overwrites_the_suffix_from_its_first_index(&mut make());
    entries_respect_the_byte_cap_but_return_at_least_one(&mut make());
    reads_outside_the_log_are_errors(&mut make());
    hard_state_reads_back_as_saved(&mut make());
    compaction_needs_a_snapshot_and_keeps_the_term_of_its_index(&mut make());
    saved_snapshot_reads_back_and_keeps_the_log(&mut make());
    installed_snapshot_replaces_the_log(&mut make());
    out_of_order_snapshot_chunks_are_refused(&mut make());
    snapshots_in_use_are_retained_until_released(&mut make());
}

fn empty_store_starts_at_index_one<S: LogStore>(store: &mut S) {
    assert_eq!(store.first_index(), 1, "an empty store's first index is 1");
    assert_eq!(store.last_index(), 0, "an empty store's last index is 0");
    assert_eq!(store.term(0), Ok(0), "the empty prefix has term 0");
    assert_eq!(
        store.hard_state(),
        HardState::default(),
        "a new store has a zero hard state"
    );
    assert_eq!(store.snapshot(), None, "a new store has no snapshot");
}

fn appended_entries_read_back_with_their_bytes<S: LogStore>(store: &mut S) {
    let written = entries(1, &[1, 1, 2, 3]);
    store.append_entries(&written).expect("append");
    store.sync().expect("sync");
    assert_eq!(store.last_index(), 4);
    assert_eq!(
        store.entries(1, 5, u64::MAX).expect("read"),
        written,
        "entries read back unchanged"
    );
    assert_eq!(store.term(3), Ok(2));
}

fn append_overwrites_the_suffix_from_its_first_index<S: LogStore>(store: &mut S) {
    store.append_entries(&entries(1, &[1, 1, 1, 1, 1])).expect("append");
    let overwrite = entries(3, &[2]);
    store.append_entries(&overwrite).expect("overwrite");
    assert_eq!(store.last_index(), 3, "everything after the overwrite is gone");
    assert_eq!(store.term(3), Ok(2));
    assert_eq!(store.term(2), Ok(1), "entries before the overwrite are kept");
    assert!(store.term(4).is_err(), "a truncated entry must not come back");
}

fn entries_respect_the_byte_cap_but_return_at_least_one<S: LogStore>(store: &mut S) {
    store.append_entries(&entries(1, &[1, 1, 1, 1])).expect("append");
    assert_eq!(store.entries(1, 5, 0).expect("read").len(), 1, "at least one entry");
    let one = store.entries(1, 2, u64::MAX).expect("read")[0].size_bytes();
    assert_eq!(
        store.entries(1, 5, 2 * one).expect("read").len(),
        2,
        "stops at the byte cap"
    );
}

fn reads_outside_the_log_are_errors<S: LogStore>(store: &mut S) {
    store.append_entries(&entries(1, &[1, 1])).expect("append");
    assert!(
        matches!(store.term(3), Err(StorageError::Unavailable { .. })),
        "term beyond the log"
    );
    assert!(
        matches!(store.entries(1, 4, u64::MAX), Err(StorageError::Unavailable { .. })),
        "entries beyond the log"
    );
}

fn hard_state_reads_back_as_saved<S: LogStore>(store: &mut S) {
    let hard_state = HardState {
        term: 7,
        vote: 3,
        commit: 0,
    };
    store.save_hard_state(hard_state).expect("save");
    store.sync().expect("sync");
    assert_eq!(store.hard_state(), hard_state);
}

fn compaction_needs_a_snapshot_and_keeps_the_term_of_its_index<S: LogStore>(store: &mut S) {
    store.append_entries(&entries(1, &[1, 2, 2, 3])).expect("append");
    assert!(
        matches!(store.compact_to(2), Err(StorageError::BeyondSnapshot { .. })),
        "compaction without a snapshot covering it would lose entries"
    );
    write_snapshot(store, 2, 2, b"state at 2");
    store.save_snapshot(&meta(2, 2)).expect("save snapshot");
    store.compact_to(2).expect("compact");
    assert_eq!(store.first_index(), 3);
    assert_eq!(store.term(2), Ok(2), "the compaction index keeps its term");
    assert!(
        matches!(store.term(1), Err(StorageError::Compacted { .. })),
        "below the compaction index is compacted"
    );
    assert!(
        matches!(store.entries(2, 4, u64::MAX), Err(StorageError::Compacted { .. })),
        "reading compacted entries fails"
    );
    assert_eq!(
        store.snapshot(),
        Some(meta(2, 2)),
        "the snapshot stands for the compacted prefix"
    );
    assert_eq!(
        store.entries(3, 5, u64::MAX).expect("read").len(),
        2,
        "later entries stay"
    );
}

fn saved_snapshot_reads_back_and_keeps_the_log<S: LogStore>(store: &mut S) {
    store.append_entries(&entries(1, &[1, 1, 2])).expect("append");
    let data = b"the state machine after index 3, in eleven chunks or so";
    write_snapshot(store, 3, 2, data);
    store.save_snapshot(&meta(3, 2)).expect("save snapshot");
    store.sync().expect("sync");
    assert_eq!(store.snapshot(), Some(meta(3, 2)));
    assert_eq!(read_snapshot(store, 3, 7), data.to_vec(), "snapshot data reads back");
    assert_eq!(read_snapshot(store, 3, u64::MAX), data.to_vec());
    assert_eq!(store.last_index(), 3, "saving a snapshot keeps the log");
    assert_eq!(store.first_index(), 1);
    assert!(
        matches!(
            store.snapshot_chunk(2, 0, 10),
            Err(StorageError::SnapshotUnavailable { .. })
        ),
        "only the stored snapshot can be read"
    );
    assert!(
        matches!(
            store.save_snapshot(&meta(5, 2)),
            Err(StorageError::SnapshotUnavailable { .. })
        ),
        "a snapshot that was never written cannot be saved"
    );
}

fn installed_snapshot_replaces_the_log<S: LogStore>(store: &mut S) {
    store.append_entries(&entries(1, &[1, 1, 2, 2])).expect("append");
    write_snapshot(store, 9, 4, b"leader state");
    store.install_snapshot(&meta(9, 4)).expect("install");
    store.sync().expect("sync");
    assert_eq!(store.first_index(), 10, "the log continues after the snapshot");
    assert_eq!(store.last_index(), 9, "no entries are left");
    assert_eq!(store.term(9), Ok(4), "the snapshot index answers with its term");
    assert!(store.term(4).is_err(), "replaced entries are gone");
    assert_eq!(read_snapshot(store, 9, 5), b"leader state".to_vec());
    store
        .append_entries(&entries(10, &[4, 5]))
        .expect("append after the snapshot");
    assert_eq!(store.last_index(), 11);
}

fn out_of_order_snapshot_chunks_are_refused<S: LogStore>(store: &mut S) {
    store.write_snapshot_chunk(5, 1, 0, b"abc").expect("first chunk");
    assert!(
        matches!(
            store.write_snapshot_chunk(5, 1, 9, b"x"),
            Err(StorageError::ChunkOutOfOrder { .. })
        ),
        "a gap is refused"
    );
    assert!(
        matches!(
            store.write_snapshot_chunk(6, 1, 3, b"x"),
            Err(StorageError::ChunkOutOfOrder { .. })
        ),
        "a chunk of another snapshot is refused"
    );
    store.write_snapshot_chunk(5, 1, 3, b"def").expect("next chunk");
    store
        .write_snapshot_chunk(7, 2, 0, b"new")
        .expect("another snapshot is written beside it");
    store
        .write_snapshot_chunk(5, 1, 6, b"ghi")
        .expect("the first one continues");
    store
        .write_snapshot_chunk(7, 2, 0, b"again")
        .expect("offset 0 restarts that snapshot only");
    store.save_snapshot(&meta(5, 1)).expect("save");
    assert_eq!(read_snapshot(store, 5, 2), b"abcdefghi".to_vec());
    store.save_snapshot(&meta(7, 2)).expect("save the newer one");
    assert_eq!(read_snapshot(store, 7, 2), b"again".to_vec());
    store
        .write_snapshot_chunk(5, 1, 9, b"late")
        .expect("a late chunk of a snapshot the stored one supersedes is ignored");
    write_snapshot(store, 6, 2, b"older");
    assert!(
        matches!(
            store.save_snapshot(&meta(6, 2)),
            Err(StorageError::SnapshotNotNewer { .. })
        ),
        "the stored snapshot never goes back"
    );
}

fn snapshots_in_use_are_retained_until_released<S: LogStore>(store: &mut S) {
    store.append_entries(&entries(1, &[1, 1, 1, 1])).expect("append");
    for index in 2..=4 {
        write_snapshot(store, index, 1, format!("state at {index}").as_bytes());
        store.save_snapshot(&meta(index, 1)).expect("save");
    }
    assert_eq!(store.snapshot(), Some(meta(4, 1)), "the newest is the stored one");
    assert_eq!(
        read_snapshot(store, 2, 4),
        b"state at 2".to_vec(),
        "a replaced snapshot stays readable until released"
    );
    store.retain_snapshots(&[3]).expect("retain");
    assert_eq!(read_snapshot(store, 3, 4), b"state at 3".to_vec(), "in use: kept");
    assert!(
        matches!(
            store.snapshot_chunk(2, 0, 4),
            Err(StorageError::SnapshotUnavailable { .. })
        ),
        "released"
    );
    store.retain_snapshots(&[]).expect("retain");
    assert_eq!(
        read_snapshot(store, 4, 4),
        b"state at 4".to_vec(),
        "the newest is always kept"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemStorage, Storage};

    #[test]
    fn mem_storage_keeps_the_log_store_contract() {
        check_log_store(MemStorage::new);
    }

    /// A store that forgets to drop the suffix on overwrite: the suite must
    /// catch it, or it proves nothing.
    struct KeepsStaleSuffix(MemStorage);

    impl Storage for KeepsStaleSuffix {
        fn hard_state(&self) -> HardState {
            self.0.hard_state()
        }
        fn first_index(&self) -> Index {
            self.0.first_index()
        }
        fn last_index(&self) -> Index {
            self.0.last_index()
        }
        fn term(&self, index: Index) -> Result<Term, StorageError> {
            self.0.term(index)
        }
        fn entries(&self, low: Index, high: Index, bytes_max: u64) -> Result<Vec<Entry>, StorageError> {
            self.0.entries(low, high, bytes_max)
        }
    }

    impl LogStore for KeepsStaleSuffix {
        fn append_entries(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
            let last = self.0.last_index();
            let fresh: Vec<Entry> = entries.iter().filter(|entry| entry.index > last).cloned().collect();
            self.0.append_entries(&fresh)
        }
        fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
            self.0.save_hard_state(hard_state)
        }
        fn compact_to(&mut self, index: Index) -> Result<(), StorageError> {
            self.0.compact_to(index)
        }
        fn write_snapshot_chunk(
            &mut self,
            index: Index,
            term: Term,
            offset: u64,
            data: &[u8],
        ) -> Result<(), StorageError> {
            self.0.write_snapshot_chunk(index, term, offset, data)
        }
        fn save_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
            self.0.save_snapshot(meta)
        }
        fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
            self.0.install_snapshot(meta)
        }
        fn retain_snapshots(&mut self, in_use: &[Index]) -> Result<(), StorageError> {
            self.0.retain_snapshots(in_use)
        }
        fn sync(&mut self) -> Result<(), StorageError> {
            Ok(())
        }
    }

    #[test]
    #[should_panic(expected = "everything after the overwrite is gone")]
    fn suite_catches_a_store_that_keeps_a_stale_suffix() {
        check_log_store(|| KeepsStaleSuffix(MemStorage::new()));
    }
}

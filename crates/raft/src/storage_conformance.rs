//! The contract every `LogStore` must keep, as a reusable check: the
//! in-memory store runs it in its tests, and the WAL will run it too, so
//! the core can rely on the same behaviour from both.
//!
//! Each check builds a fresh store with the caller's factory and panics
//! with a message naming the broken rule.

use bytes::Bytes;

use crate::configuration::Configuration;
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
    compaction_keeps_term_and_configuration_of_its_index(&mut make());
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
    assert_eq!(
        store.compacted_configuration(),
        None,
        "nothing compacted, no configuration"
    );
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

fn compaction_keeps_term_and_configuration_of_its_index<S: LogStore>(store: &mut S) {
    store.append_entries(&entries(1, &[1, 2, 2, 3])).expect("append");
    store.compact_to(2, configuration()).expect("compact");
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
    assert_eq!(store.compacted_configuration(), Some(configuration()));
    assert_eq!(
        store.entries(3, 5, u64::MAX).expect("read").len(),
        2,
        "later entries stay"
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
        fn compact_to(&mut self, index: Index, configuration: Configuration) -> Result<(), StorageError> {
            self.0.compact_to(index, configuration)
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

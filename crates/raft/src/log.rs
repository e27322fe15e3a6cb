//! The replicated log as the core sees it: durable entries in `Storage`
//! followed by an in-memory unstable tail not yet acknowledged as persisted,
//! plus the commit and applied indexes (§5.3, Figure 2).
//!
//! Invariants (checked by `check_invariants`):
//! `applied <= commit <= last_index()`, `applied <= persisted_index()`,
//! `emitted <= last_index()`, and `unstable` is contiguous from `offset`.
//! Entries are handed to the application for persistence exactly once per
//! write (`emitted` tracks how far), and committed entries are handed out
//! only once they are locally durable.

use crate::snapshot::SnapshotMeta;
use crate::storage::{take_within_bytes, Storage, StorageError};
use crate::types::{Entry, Index, Term};

/// Storage plus the unstable tail and the commit/applied cursors.
pub struct RaftLog<S> {
    storage: S,
    /// Entries not yet acknowledged as persisted, starting at `offset`.
    unstable: Vec<Entry>,
    /// Index of `unstable[0]`; everything below it is durable in storage.
    offset: Index,
    /// Last index already handed out in a `Ready` for persistence.
    emitted: Index,
    /// Highest index known to be committed.
    pub(crate) commit: Index,
    /// Highest index handed to the application for applying.
    pub(crate) applied: Index,
    /// A snapshot received from the leader that replaces the whole log but
    /// is not yet durable: it answers for `index` and everything below,
    /// hiding the stale stored log until the application installs it.
    snapshot: Option<SnapshotMeta>,
    /// `snapshot` has been handed out in a `Ready` for installing.
    snapshot_emitted: bool,
}

impl<S: Storage> RaftLog<S> {
    /// Opens the log over `storage`; `applied` is what the state machine
    /// already holds (0 for a fresh one). Applied entries were committed and
    /// locally durable when handed out, so the commit index starts at least
    /// there even if the stored hard state lags (it may be written after the
    /// entries were applied).
    ///
    /// # Errors
    /// `applied` beyond the stored log: the state machine holds entries this
    /// log does not, so the two belong to different histories.
    pub fn new(storage: S, applied: Index) -> Result<Self, StorageError> {
        let last = storage.last_index();
        let first = storage.first_index();
        if applied > last {
            return Err(StorageError::Unavailable {
                index: applied,
                last_index: last,
            });
        }
        let applied = applied.max(first - 1);
        let commit = storage.hard_state().commit.min(last).max(applied);
        Ok(RaftLog {
            storage,
            unstable: Vec::new(),
            offset: last + 1,
            emitted: last,
            commit,
            applied,
            snapshot: None,
            snapshot_emitted: false,
        })
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    pub fn into_storage(self) -> S {
        self.storage
    }

    pub fn first_index(&self) -> Index {
        match &self.snapshot {
            Some(snapshot) => snapshot.index + 1,
            None => self.storage.first_index(),
        }
    }

    pub fn last_index(&self) -> Index {
        self.offset + self.unstable.len() as Index - 1
    }

    /// Highest index known durable in this log (entries above it are unstable).
    pub fn persisted_index(&self) -> Index {
        self.offset - 1
    }

    pub fn last_term(&self) -> Term {
        self.term(self.last_index()).unwrap_or(0)
    }

    /// The term at `index`, or `None` when it is outside the log.
    pub fn term(&self, index: Index) -> Option<Term> {
        self.term_checked(index).ok()
    }

    /// The term at `index` with the reason when it is not available.
    pub fn term_checked(&self, index: Index) -> Result<Term, StorageError> {
        if index >= self.offset {
            return match self.unstable.get((index - self.offset) as usize) {
                Some(entry) => Ok(entry.term),
                None => Err(StorageError::Unavailable {
                    index,
                    last_index: self.last_index(),
                }),
            };
        }
        if let Some(snapshot) = &self.snapshot {
            // Everything below `offset` is the snapshot's.
            if index == snapshot.index {
                return Ok(snapshot.term);
            }
            return Err(StorageError::Compacted {
                index,
                first_index: snapshot.index + 1,
            });
        }
        self.storage.term(index)
    }

    pub fn matches_term(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// §5.4.1: a candidate's log is at least as up to date as ours if its
    /// last term is higher, or equal with an index at least as large.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        let our_term = self.last_term();
        last_term > our_term || (last_term == our_term && last_index >= self.last_index())
    }

    /// Entries in `[low, high)` with at most `bytes_max` (at least one entry).
    pub fn entries(&self, low: Index, high: Index, bytes_max: u64) -> Result<Vec<Entry>, StorageError> {
        if low >= high {
            return Ok(Vec::new());
        }
        let high = high.min(self.last_index() + 1);
        if low < self.offset && self.snapshot.is_some() {
            return Err(StorageError::Compacted {
                index: low,
                first_index: self.offset,
            });
        }
        let mut out = if low < self.offset {
            self.storage.entries(low, high.min(self.offset), bytes_max)?
        } else {
            Vec::new()
        };
        if high <= self.offset {
            return Ok(out);
        }
        if !out.is_empty() && out.last().map(|e| e.index + 1) != Some(self.offset) {
            // The storage read stopped at the byte cap.
            return Ok(out);
        }
        let used: u64 = out.iter().map(Entry::size_bytes).sum();
        let start = (low.max(self.offset) - self.offset) as usize;
        let end = (high - self.offset) as usize;
        if out.is_empty() {
            return Ok(take_within_bytes(&self.unstable[start..end], bytes_max));
        }
        let mut bytes = used;
        for entry in &self.unstable[start..end] {
            bytes += entry.size_bytes();
            if bytes > bytes_max {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    /// Leader path: appends entries built for the next indexes.
    pub fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for entry in entries {
            debug_assert_eq!(entry.index, self.last_index() + 1, "leader append not contiguous");
            debug_assert!(entry.term >= self.last_term(), "leader append term went back");
            self.unstable.push(entry);
        }
    }

    /// Follower path (§5.3, receiver steps 2–4): if our entry at
    /// `prev_index` has `prev_term`, append the new entries, truncating the
    /// first conflicting suffix, and return the index of the last entry the
    /// leader sent (our new match index). Entries already present are kept,
    /// so a stale or duplicated message never truncates committed entries.
    pub fn try_append(&mut self, prev_index: Index, prev_term: Term, entries: Vec<Entry>) -> Option<Index> {
        self.try_append_from(prev_index, prev_term, entries)
            .map(|(last_new, _)| last_new)
    }

    /// As `try_append`, also returning the first index actually written
    /// (`None` when every entry was already present).
    pub fn try_append_from(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
    ) -> Option<(Index, Option<Index>)> {
        if !self.matches_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as Index;
        let conflict = entries
            .iter()
            .position(|entry| !self.matches_term(entry.index, entry.term));
        if let Some(position) = conflict {
            let conflict_index = entries[position].index;
            // Invariant: committed entries never conflict with a current
            // leader's log (Leader Completeness); a conflict there means the
            // message is forged or our log is corrupt.
            assert!(
                conflict_index > self.commit,
                "entry {conflict_index} conflicts with committed log (commit {})",
                self.commit
            );
            self.truncate_and_append(entries.into_iter().skip(position));
            return Some((last_new, Some(conflict_index)));
        }
        Some((last_new, None))
    }

    /// Replaces everything from the first given entry's index on.
    fn truncate_and_append(&mut self, entries: impl Iterator<Item = Entry>) {
        let mut entries = entries.peekable();
        let Some(first) = entries.peek() else {
            return;
        };
        let first_index = first.index;
        debug_assert!(first_index <= self.last_index() + 1);
        if first_index >= self.offset {
            self.unstable.truncate((first_index - self.offset) as usize);
        } else {
            // The overwrite reaches into durable entries: the unstable tail
            // now starts there and hides the stale stored suffix until the
            // application overwrites it.
            self.unstable.clear();
            self.offset = first_index;
        }
        self.emitted = self.emitted.min(first_index - 1);
        self.unstable.extend(entries);
    }

    /// §5.3 fast back-off: the largest index `<= index` whose term is
    /// `<= term`. The leader calls it with a follower's hint; the follower
    /// calls it to build the hint.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index) {
                Some(our_term) if our_term > term => {
                    if index == 0 {
                        return (0, 0);
                    }
                    index -= 1;
                }
                Some(our_term) => return (index, our_term),
                // Compacted: the best we know is the first available index.
                None => return (index, 0),
            }
        }
    }

    /// Unstable entries not yet handed out for persistence; marks them handed out.
    pub fn take_unemitted(&mut self) -> Vec<Entry> {
        if self.emitted >= self.last_index() {
            return Vec::new();
        }
        let start = (self.emitted + 1 - self.offset) as usize;
        let out = self.unstable[start..].to_vec();
        self.emitted = self.last_index();
        out
    }

    pub fn has_unemitted(&self) -> bool {
        self.emitted < self.last_index() || (self.snapshot.is_some() && !self.snapshot_emitted)
    }

    /// Replaces the whole log by a snapshot from the leader (§7): the log
    /// now continues after `meta.index`, which is committed and, once the
    /// application restores the snapshot, applied.
    pub fn restore(&mut self, meta: SnapshotMeta) {
        debug_assert!(meta.index > self.commit, "restoring a snapshot the log already covers");
        self.unstable.clear();
        self.offset = meta
            .index
            .checked_add(1)
            .expect("snapshot index validated below the maximum");
        self.emitted = meta.index;
        self.commit = meta.index;
        self.applied = meta.index;
        self.snapshot = Some(meta);
        self.snapshot_emitted = false;
    }

    /// A snapshot from the leader replaced the log and is not durable yet.
    pub fn has_restored_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }

    /// A restored snapshot waits to be handed out for installing.
    pub fn has_unemitted_snapshot(&self) -> bool {
        self.snapshot.is_some() && !self.snapshot_emitted
    }

    /// The restored snapshot not yet handed out for installing; marks it
    /// handed out.
    pub fn take_unemitted_snapshot(&mut self) -> Option<SnapshotMeta> {
        if self.snapshot_emitted {
            return None;
        }
        self.snapshot_emitted = true;
        self.snapshot.clone()
    }

    /// The application made the restored snapshot at `index` durable: the
    /// stored log now answers for it.
    pub fn snapshot_persisted(&mut self, index: Index) {
        if self.snapshot.as_ref().is_some_and(|snapshot| snapshot.index == index) {
            self.snapshot = None;
        }
    }

    /// The last index handed out for persistence and its term.
    pub fn emitted(&self) -> (Index, Term) {
        (self.emitted, self.term(self.emitted).unwrap_or(0))
    }

    /// Marks entries up to `index` durable, if the log still holds `term`
    /// there (a later overwrite makes an old acknowledgement meaningless).
    pub fn persisted_to(&mut self, index: Index, term: Term) {
        if index < self.offset || !self.matches_term(index, term) {
            return;
        }
        let count = (index + 1 - self.offset) as usize;
        self.unstable.drain(..count);
        self.offset = index + 1;
    }

    pub fn commit_to(&mut self, index: Index) {
        debug_assert!(index <= self.last_index(), "commit beyond last index");
        if index > self.commit {
            self.commit = index;
        }
    }

    pub fn has_next_committed(&self) -> bool {
        self.applied < self.commit.min(self.persisted_index())
    }

    /// Committed, locally durable entries after `applied`, within `bytes_max`
    /// (at least one); advances `applied` past them.
    pub fn take_committed(&mut self, bytes_max: u64) -> Result<Vec<Entry>, StorageError> {
        let high = self.commit.min(self.persisted_index());
        if self.applied >= high {
            return Ok(Vec::new());
        }
        let entries = self.entries(self.applied + 1, high + 1, bytes_max)?;
        if let Some(last) = entries.last() {
            self.applied = last.index;
        }
        Ok(entries)
    }

    pub fn check_invariants(&self) {
        assert!(
            self.applied <= self.commit,
            "applied {} > commit {}",
            self.applied,
            self.commit
        );
        assert!(
            self.commit <= self.last_index(),
            "commit {} > last {}",
            self.commit,
            self.last_index()
        );
        assert!(self.applied <= self.persisted_index().max(self.first_index() - 1));
        assert!(self.emitted <= self.last_index());
        assert!(self.offset >= 1);
        if let Some(snapshot) = &self.snapshot {
            assert!(
                self.offset > snapshot.index,
                "unstable entries below a restored snapshot"
            );
            assert!(self.commit >= snapshot.index, "a restored snapshot is committed");
        }
        if let (Some(first), Some(last)) = (self.unstable.first(), self.unstable.last()) {
            assert_eq!(first.index, self.offset);
            assert_eq!(last.index, self.last_index());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use crate::types::EntryKind;
    use bytes::Bytes;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    fn log_with_terms(terms: &[Term]) -> RaftLog<MemStorage> {
        let mut storage = MemStorage::new();
        let entries: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, t)| entry(i as Index + 1, *t))
            .collect();
        storage.append(&entries);
        RaftLog::new(storage, 0).unwrap()
    }

    #[test]
    fn append_consistency_check_rejects_mismatched_prev() {
        let mut log = log_with_terms(&[1, 1, 2]);
        assert_eq!(log.try_append(3, 1, vec![entry(4, 2)]), None);
        assert_eq!(log.try_append(4, 2, vec![entry(5, 2)]), None);
        assert_eq!(log.last_index(), 3);
    }

    #[test]
    fn append_truncates_only_the_conflicting_suffix() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        assert_eq!(log.try_append(1, 1, vec![entry(2, 1), entry(3, 2)]), Some(3));
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.persisted_index(), 2);
    }

    #[test]
    fn stale_append_does_not_truncate_matching_entries() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        assert_eq!(log.try_append(0, 0, vec![entry(1, 1), entry(2, 1)]), Some(2));
        assert_eq!(log.last_index(), 4);
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4, 4]);
        assert_eq!(log.find_conflict_by_term(7, 3), (5, 2));
        assert_eq!(log.find_conflict_by_term(7, 4), (7, 4));
        assert_eq!(log.find_conflict_by_term(5, 1), (2, 1));
        assert_eq!(log.find_conflict_by_term(7, 0), (0, 0));
    }

    #[test]
    fn up_to_date_compares_last_term_then_index() {
        let log = log_with_terms(&[1, 2, 2]);
        assert!(log.is_up_to_date(1, 3));
        assert!(log.is_up_to_date(3, 2));
        assert!(!log.is_up_to_date(2, 2));
        assert!(!log.is_up_to_date(9, 1));
    }

    #[test]
    fn committed_entries_wait_for_local_durability() {
        let mut log = log_with_terms(&[1]);
        log.append([entry(2, 1)]);
        log.commit_to(2);
        let taken = log.take_committed(u64::MAX).unwrap();
        assert_eq!(taken.len(), 1, "only the durable entry is handed out");
        let unemitted = log.take_unemitted();
        log.storage_mut().append(&unemitted);
        log.persisted_to(2, 1);
        assert_eq!(log.take_committed(u64::MAX).unwrap()[0].index, 2);
    }

    #[test]
    fn persisted_ack_for_overwritten_entries_is_ignored() {
        let mut log = log_with_terms(&[]);
        log.append([entry(1, 1), entry(2, 1)]);
        assert_eq!(log.take_unemitted().len(), 2);
        assert_eq!(log.try_append(1, 1, vec![entry(2, 2)]), Some(2));
        log.persisted_to(2, 1);
        assert_eq!(log.persisted_index(), 0);
        assert_eq!(log.take_unemitted().len(), 1);
        log.persisted_to(2, 2);
        assert_eq!(log.persisted_index(), 2);
    }
}

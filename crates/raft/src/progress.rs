//! The leader's view of each follower's log: match and next index, the
//! replication state (probe or replicate) and the bounded window of append
//! messages in flight (§5.3, dissertation §10.2.1 pipelining).
//!
//! Invariants: `match_index < next_index`; in `Probe` at most one append is
//! outstanding; in `Replicate` at most `inflight_messages_max` appends and
//! `inflight_bytes_max` bytes are outstanding.

use std::collections::VecDeque;

use crate::snapshot::{Outgoing, SnapshotMeta};
use crate::types::{Index, NodeId};

/// How the leader currently sends to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The match index is unknown: send one append, wait for the answer.
    Probe,
    /// The follower is known to match: stream appends optimistically.
    Replicate,
    /// The follower needs compacted entries: a snapshot is streaming to it
    /// (`Progress::snapshot`), and appends wait until it is installed.
    Snapshot,
}

/// The appends sent to one follower and not yet acknowledged.
#[derive(Clone, Debug)]
pub struct Inflights {
    /// `(last index in the message, bytes in the message)`, oldest first.
    window: VecDeque<(Index, u64)>,
    bytes: u64,
    messages_max: usize,
    bytes_max: u64,
}

impl Inflights {
    pub fn new(messages_max: usize, bytes_max: u64) -> Self {
        Inflights {
            window: VecDeque::with_capacity(messages_max.min(1024)),
            bytes: 0,
            messages_max,
            bytes_max,
        }
    }

    pub fn is_full(&self) -> bool {
        self.window.len() >= self.messages_max || self.bytes >= self.bytes_max
    }

    pub fn add(&mut self, last_index: Index, bytes: u64) {
        debug_assert!(self.window.back().is_none_or(|(last, _)| *last < last_index));
        self.window.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose last index is `<= index` (acknowledged).
    pub fn free_to(&mut self, index: Index) {
        while let Some(&(last, bytes)) = self.window.front() {
            if last > index {
                break;
            }
            self.window.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees the oldest message, presumed lost, so one more can be sent.
    pub fn free_first(&mut self) {
        if let Some((_, bytes)) = self.window.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub fn reset(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }

    pub fn count(&self) -> usize {
        self.window.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Replication progress of one member, kept by the leader.
#[derive(Clone, Debug)]
pub struct Progress {
    pub id: NodeId,
    pub match_index: Index,
    pub next_index: Index,
    pub state: ProgressState,
    /// In `Probe`: an append is outstanding, wait before sending another.
    pub probe_sent: bool,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Highest `read_seq` this member echoed in a heartbeat response.
    pub read_seq_acked: u64,
    /// Match index when the previous heartbeat answer arrived; no change
    /// since then while behind means appends in flight were lost.
    pub match_at_heartbeat: Index,
    /// Highest commit index sent to this member in an append.
    pub commit_sent: Index,
    pub inflights: Inflights,
    /// The snapshot transfer, in `Snapshot` state.
    pub snapshot: Option<Outgoing>,
}

impl Progress {
    pub fn new(id: NodeId, next_index: Index, messages_max: usize, bytes_max: u64) -> Self {
        Progress {
            id,
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            recent_active: false,
            read_seq_acked: 0,
            match_at_heartbeat: 0,
            commit_sent: 0,
            inflights: Inflights::new(messages_max, bytes_max),
            snapshot: None,
        }
    }

    /// Whether the leader must hold back further appends for now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot => true,
        }
    }

    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.next_index = self.match_index + 1;
        self.inflights.reset();
        self.snapshot = None;
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.probe_sent = false;
        self.next_index = self.match_index + 1;
        self.inflights.reset();
        self.snapshot = None;
    }

    /// Starts streaming the snapshot `meta`; replication resumes after its
    /// index once the follower installed it.
    pub fn become_snapshot(&mut self, meta: SnapshotMeta) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.next_index = self.next_index.max(meta.index + 1);
        self.inflights.reset();
        self.snapshot = Some(Outgoing::new(meta));
    }

    /// Records that an append ending at `last_index` with `bytes` was sent.
    pub fn on_append_sent(&mut self, last_index: Option<Index>, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if let Some(last) = last_index {
                    self.next_index = last + 1;
                    self.inflights.add(last, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }

    /// An accepted append up to `index`; returns whether match advanced.
    pub fn on_append_accepted(&mut self, index: Index) -> bool {
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
            self.probe_sent = false;
        }
        if self.next_index < index + 1 {
            self.next_index = index + 1;
        }
        self.inflights.free_to(index);
        advanced
    }

    /// A rejected append at `rejected_index`; `next` is where to retry.
    /// Returns false when the rejection is stale and was ignored.
    pub fn on_append_rejected(&mut self, rejected_index: Index, next: Index) -> bool {
        match self.state {
            ProgressState::Replicate => {
                // Only the rejection of something above what is known to
                // match is news; older ones are duplicates or reordered.
                if rejected_index <= self.match_index {
                    return false;
                }
                self.become_probe();
                self.next_index = next.max(self.match_index + 1);
                true
            }
            ProgressState::Probe => {
                // In probe state only the answer to the latest probe counts.
                if self.next_index == 0 || rejected_index != self.next_index - 1 {
                    return false;
                }
                self.next_index = next.clamp(self.match_index + 1, self.next_index.max(1));
                self.probe_sent = false;
                true
            }
            // Rejections of appends sent before the transfer started.
            ProgressState::Snapshot => false,
        }
    }

    pub fn check_invariants(&self) {
        assert!(
            self.match_index < self.next_index,
            "progress {}: match {} >= next {}",
            self.id,
            self.match_index,
            self.next_index
        );
        assert_eq!(
            self.state == ProgressState::Snapshot,
            self.snapshot.is_some(),
            "progress {}: snapshot state and transfer disagree",
            self.id
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_window_is_bounded_by_count_and_bytes() {
        let mut inflights = Inflights::new(2, 100);
        inflights.add(1, 10);
        assert!(!inflights.is_full());
        inflights.add(2, 10);
        assert!(inflights.is_full(), "count bound");
        inflights.free_to(1);
        assert!(!inflights.is_full());
        inflights.add(3, 95);
        assert!(inflights.is_full(), "byte bound");
        inflights.free_to(3);
        assert_eq!(inflights.count(), 0);
        assert_eq!(inflights.bytes(), 0);
    }

    #[test]
    fn probe_sends_one_message_at_a_time() {
        let mut progress = Progress::new(2, 5, 8, 1 << 20);
        assert!(!progress.is_paused());
        progress.on_append_sent(Some(6), 10);
        assert!(progress.is_paused());
        assert!(progress.on_append_rejected(4, 3));
        assert!(!progress.is_paused());
        assert_eq!(progress.next_index, 3);
    }

    #[test]
    fn stale_rejection_in_replicate_is_ignored() {
        let mut progress = Progress::new(2, 1, 8, 1 << 20);
        progress.on_append_accepted(5);
        progress.become_replicate();
        progress.on_append_sent(Some(9), 10);
        assert!(!progress.on_append_rejected(4, 1));
        assert_eq!(progress.state, ProgressState::Replicate);
        assert!(progress.on_append_rejected(7, 6));
        assert_eq!(progress.state, ProgressState::Probe);
        assert_eq!(progress.next_index, 6);
    }
}

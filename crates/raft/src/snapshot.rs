//! Snapshots as the core sees them: the metadata that replaces a compacted
//! log prefix (index, term, configuration; §7), the chunks a follower
//! receives and hands to the application, the leader's per-follower
//! transfer state, and the receiver's state of a transfer in progress.
//!
//! The core never holds snapshot data as a whole: the leader reads one chunk
//! at a time from `Storage::snapshot_chunk`, and the follower hands each
//! chunk to the application in a `Ready` to be written at its offset. Chunks
//! carry offsets, the total size is learnt only with the last chunk, and the
//! follower acknowledges the bytes it holds durably, so a lost chunk or a
//! reconnect resumes from the last acknowledged offset.

use bytes::Bytes;

use crate::configuration::Configuration;
use crate::storage::StorageError;
use crate::types::{Index, NodeId, Term};

/// Hard cap on one chunk's data accepted from a peer, whatever the local
/// `Config::snapshot_chunk_bytes` (nodes may be configured differently).
pub const SNAPSHOT_CHUNK_BYTES_LIMIT: u64 = 64 << 20;

/// Retries without any acknowledgement after which a leader gives up a
/// transfer (the follower is gone); it starts over, from the newest
/// snapshot, once the follower answers again. Until then the transfer
/// pins its snapshot and the log after it (`Raft::compact_index`).
pub const SNAPSHOT_RETRIES_MAX: u32 = 3;

/// What a leader tick means for a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferTick {
    Wait,
    /// Nothing was acknowledged for the retry timeout: resend from the
    /// acknowledged offset.
    Resend,
    /// Retried `SNAPSHOT_RETRIES_MAX` times in vain: abandon it.
    GiveUp,
}

/// What a snapshot stands for: the state after applying every entry up to
/// `index`, whose term was `term`, with `configuration` in force there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub configuration: Configuration,
}

/// One piece of a stored snapshot's data, as `Storage::snapshot_chunk`
/// returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub data: Bytes,
    /// This chunk ends the snapshot.
    pub last: bool,
}

/// A chunk of an incoming snapshot the application must write, in a
/// `Ready`, before acknowledging it with `on_persisted`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingChunk {
    /// Identity of the snapshot the chunk belongs to.
    pub index: Index,
    pub term: Term,
    /// Where `data` goes. Offset 0 starts (or restarts) the pending
    /// snapshot with this index and term; other offsets always continue it
    /// exactly at its end (`LogStore::write_snapshot_chunk`).
    pub offset: u64,
    pub data: Bytes,
}

/// Why the application cannot take a snapshot at an index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("index {index} is not applied yet (applied index {applied})")]
    NotApplied { index: Index, applied: Index },
    #[error("index {index} is not newer than the stored snapshot at {snapshot_index}")]
    NotNewer { index: Index, snapshot_index: Index },
    #[error("the configuration at index {index} is no longer known; snapshot at the applied index")]
    ConfigurationUnknown { index: Index },
    #[error("log storage failed: {0}")]
    Storage(#[from] StorageError),
}

/// A leader's view of one snapshot transfer, for observers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotProgress {
    pub follower: NodeId,
    /// Index of the snapshot being sent.
    pub index: Index,
    /// Bytes sent so far (after a loss, sending resumes below this).
    pub bytes_sent: u64,
    /// Bytes the follower acknowledged as durable.
    pub bytes_acked: u64,
    /// The snapshot's size, once the leader has read its last chunk.
    pub bytes_total: Option<u64>,
}

/// The leader's state of a snapshot transfer to one follower (the
/// follower's progress is in `ProgressState::Snapshot` meanwhile).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub meta: SnapshotMeta,
    /// Offset of the next chunk to send.
    pub sent: u64,
    /// Bytes the follower holds durably.
    pub acked: u64,
    /// Size of the snapshot, known once its last chunk was read.
    pub total: Option<u64>,
    /// Leader ticks since `acked` last advanced: past the retry timeout
    /// with bytes in flight, they are presumed lost and sending resumes
    /// from `acked`.
    pub idle_ticks: u64,
    /// The offset sending last went back to after a gap reply: further gap
    /// replies for it (one per chunk in flight) are not news.
    pub rewound_to: Option<u64>,
    /// Retry timeouts in a row without an acknowledgement.
    pub retries: u32,
}

impl Outgoing {
    pub fn new(meta: SnapshotMeta) -> Self {
        Outgoing {
            meta,
            sent: 0,
            acked: 0,
            total: None,
            idle_ticks: 0,
            rewound_to: None,
            retries: 0,
        }
    }

    /// Bytes sent and not acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.acked)
    }

    /// Every byte has been sent.
    pub fn all_sent(&self) -> bool {
        self.total.is_some_and(|total| self.sent >= total)
    }

    /// The follower reports holding `offset` bytes. Returns whether sending
    /// should resume (more may be sent now).
    pub fn on_ack(&mut self, offset: u64) -> bool {
        if offset > self.acked {
            self.acked = offset;
            self.sent = self.sent.max(offset);
            self.rewound_to = None;
            self.idle_ticks = 0;
            self.retries = 0;
            return true;
        }
        if offset < self.sent && self.rewound_to != Some(offset) {
            // The follower is missing bytes we sent: a chunk was lost, or it
            // restarted and lost its partial copy (offset below `acked`).
            self.acked = offset;
            self.sent = offset;
            self.rewound_to = Some(offset);
            return true;
        }
        false
    }

    /// One leader tick. After `retry_ticks` without an acknowledgement
    /// while bytes are in flight or the install is awaited (a lost last
    /// chunk, a lost install acknowledgement or a whole lost window send
    /// no gap reply), sending resumes from `acked`; after
    /// `SNAPSHOT_RETRIES_MAX` such retries the transfer is given up.
    pub fn on_tick(&mut self, retry_ticks: u64) -> TransferTick {
        self.idle_ticks += 1;
        let waiting = self.in_flight() > 0 || self.all_sent();
        if !waiting || self.idle_ticks < retry_ticks {
            return TransferTick::Wait;
        }
        self.idle_ticks = 0;
        self.retries += 1;
        if self.retries > SNAPSHOT_RETRIES_MAX {
            return TransferTick::GiveUp;
        }
        self.sent = self.acked;
        self.rewound_to = None;
        TransferTick::Resend
    }
}

/// A follower's snapshot transfer in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The leader sending it: offsets only continue with the same sender,
    /// whose bytes are the same (another node's copy may be encoded
    /// differently).
    pub from: NodeId,
    pub meta: SnapshotMeta,
    /// Bytes handed to the application for writing so far.
    pub received: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_chunk_rewinds_once_per_gap() {
        let mut outgoing = Outgoing::new(SnapshotMeta::default());
        outgoing.sent = 40;
        assert!(outgoing.on_ack(10), "progress");
        assert!(outgoing.on_ack(10), "gap: rewind to 10");
        assert_eq!(outgoing.sent, 10);
        outgoing.sent = 30;
        assert!(!outgoing.on_ack(10), "the other chunks in flight report the same gap");
        assert!(outgoing.on_ack(30));
        assert_eq!(outgoing.acked, 30);
    }

    #[test]
    fn restarted_follower_rewinds_to_zero() {
        let mut outgoing = Outgoing::new(SnapshotMeta::default());
        outgoing.sent = 40;
        outgoing.on_ack(30);
        assert!(outgoing.on_ack(0));
        assert_eq!((outgoing.sent, outgoing.acked), (0, 0));
    }

    #[test]
    fn silence_for_the_retry_timeout_resends_from_acked() {
        let mut outgoing = Outgoing::new(SnapshotMeta::default());
        outgoing.sent = 40;
        outgoing.on_tick(3);
        outgoing.on_ack(20);
        assert_eq!(outgoing.on_tick(3), TransferTick::Wait, "progress resets the timer");
        assert_eq!(outgoing.on_tick(3), TransferTick::Wait);
        assert_eq!(outgoing.on_tick(3), TransferTick::Resend, "three silent ticks");
        assert_eq!(outgoing.sent, 20);
        assert_eq!(
            outgoing.on_tick(1),
            TransferTick::Wait,
            "nothing in flight after the rewind"
        );
    }

    #[test]
    fn an_awaited_install_is_retried_and_a_silent_follower_given_up() {
        let mut outgoing = Outgoing::new(SnapshotMeta::default());
        outgoing.total = Some(0);
        for _ in 0..SNAPSHOT_RETRIES_MAX {
            assert_eq!(
                outgoing.on_tick(1),
                TransferTick::Resend,
                "an empty snapshot awaits its install"
            );
        }
        assert_eq!(outgoing.on_tick(1), TransferTick::GiveUp);
    }
}

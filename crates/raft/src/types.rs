//! The values that cross the core's boundary: log entries, hard state,
//! messages between nodes and the read states handed to the application.
//!
//! Messages are plain Rust values; encoding them on a wire is the server's
//! business. Every field a peer controls is validated on receipt
//! (`Raft::step`), never trusted.

use bytes::Bytes;

use crate::snapshot::{IncomingChunk, SnapshotMeta};

/// Identity of a node. `0` is reserved for "no node" (see [`NO_NODE`]).
pub type NodeId = u64;
/// A Raft term (§5.1). Terms only ever increase on a node.
pub type Term = u64;
/// A position in the replicated log; the first entry has index 1.
pub type Index = u64;

/// The reserved id meaning "nobody" (no vote cast, no leader known).
pub const NO_NODE: NodeId = 0;

/// Bytes charged for an entry's fixed fields when sizing messages and
/// in-flight windows, so that empty entries are never free.
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An application command; `data` is opaque to the core.
    Normal,
    /// The empty entry a new leader appends so that it can commit an entry
    /// of its own term (§5.4.2, dissertation §6.4).
    Empty,
    /// A membership change; `data` is an encoded `ConfChange`. The core
    /// applies it when the entry is handed out as committed.
    ConfChange,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    /// Size used for message caps and in-flight accounting.
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// The state that must be durable before messages depending on it leave:
/// the current term, the vote cast in it, and the commit index (persisted
/// only as an optimisation for restart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    pub term: Term,
    pub vote: NodeId,
    pub commit: Index,
}

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    /// Probing with pre-votes before disturbing the cluster (dissertation §9.6).
    PreCandidate,
    Candidate,
    Leader,
}

/// Volatile facts the application may want to observe (role and leader).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SoftState {
    pub role: Role,
    pub leader: NodeId,
    pub term: Term,
}

/// A message between two nodes. `term` is the sender's current term, except
/// for pre-vote requests and granted pre-vote responses, which carry the term
/// the pre-candidate would campaign in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

/// The payload of a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// AppendEntries (§5.3). An empty `entries` probes or carries the commit index.
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// Reply to `Append`. On success `index` is the follower's new match
    /// index; on rejection it is the `prev_index` that failed and
    /// `hint_index`/`hint_term` name the last entry of the follower's log
    /// that could still match, so the leader skips a whole term per round.
    AppendResponse {
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    },
    /// Leader liveness and ReadIndex confirmation. `commit` is capped at the
    /// follower's known match index; `read_seq` is echoed back.
    Heartbeat {
        commit: Index,
        read_seq: u64,
    },
    HeartbeatResponse {
        read_seq: u64,
    },
    /// RequestVote (§5.2). `transfer` marks a campaign started by leadership
    /// transfer, which voters accept even inside a leader lease.
    Vote {
        last_log_index: Index,
        last_log_term: Term,
        transfer: bool,
    },
    VoteResponse {
        granted: bool,
    },
    PreVote {
        last_log_index: Index,
        last_log_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    /// Leadership transfer: start an election now (dissertation §3.10).
    TimeoutNow,
    /// A follower forwarding a client's linearizable read to the leader.
    ReadIndex {
        request_id: u64,
    },
    /// The leader's answer: the read may be served once `index` is applied.
    ReadIndexResponse {
        request_id: u64,
        index: Index,
    },
    /// One chunk of the snapshot `meta` for a follower that needs entries
    /// the leader compacted (§7): `data` goes at `offset`, and `last` marks
    /// the end (the total size is never needed up front).
    InstallSnapshot {
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        last: bool,
    },
    /// The follower holds the first `offset` bytes of snapshot `index`
    /// durably; the next chunk it wants starts there. Installing the whole
    /// snapshot is acknowledged by an `AppendResponse` at its index.
    SnapshotResponse {
        index: Index,
        offset: u64,
    },
}

impl MessageBody {
    /// A short name for logs and rejection counters.
    pub fn kind_name(&self) -> &'static str {
        match self {
            MessageBody::Append { .. } => "append",
            MessageBody::AppendResponse { .. } => "append_response",
            MessageBody::Heartbeat { .. } => "heartbeat",
            MessageBody::HeartbeatResponse { .. } => "heartbeat_response",
            MessageBody::Vote { .. } => "vote",
            MessageBody::VoteResponse { .. } => "vote_response",
            MessageBody::PreVote { .. } => "pre_vote",
            MessageBody::PreVoteResponse { .. } => "pre_vote_response",
            MessageBody::TimeoutNow => "timeout_now",
            MessageBody::ReadIndex { .. } => "read_index",
            MessageBody::ReadIndexResponse { .. } => "read_index_response",
            MessageBody::InstallSnapshot { .. } => "install_snapshot",
            MessageBody::SnapshotResponse { .. } => "snapshot_response",
        }
    }
}

/// A confirmed linearizable read: once the application has applied
/// `index`, it may answer the read identified by `request_id` from its
/// state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub request_id: u64,
    pub index: Index,
}

/// One batch of work for the application, produced by `Raft::ready`.
///
/// The application must, in this order of guarantees:
/// 1. persist, in this order, `snapshot_chunks` (each at its offset),
///    `snapshot` (the pending snapshot becomes the node's snapshot and
///    replaces the whole log: `LogStore::install_snapshot`), `entries`
///    (they overwrite any stored suffix starting at `entries[0].index`) and
///    `hard_state`; then call `Raft::on_persisted(seq)` — readies are
///    persisted in `seq` order. Once an installed snapshot is durable,
///    restore the state machine from it: after applying every committed
///    entry handed out in earlier readies (they precede the snapshot), and
///    before applying any handed out later;
/// 2. send `messages` at any time (they never depend on unpersisted state:
///    messages that do are held by the core until `on_persisted`);
/// 3. apply `committed_entries` in order (they are always locally durable,
///    so they may be applied before this ready's hard state is written; a
///    restart with `Config::applied` above the stored commit is fine);
/// 4. answer `read_states` once their index is applied.
#[derive(Debug, Default)]
pub struct Ready {
    /// Sequence number to acknowledge with `on_persisted` when
    /// `must_persist()` is true.
    pub seq: u64,
    /// Set when role, leader or term changed since the previous ready.
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    /// Chunks of an incoming snapshot to write.
    pub snapshot_chunks: Vec<IncomingChunk>,
    /// A received snapshot to install (its data was written by chunks of
    /// this or earlier readies).
    pub snapshot: Option<SnapshotMeta>,
}

impl Ready {
    /// True when this ready carries state that must be made durable and
    /// acknowledged with `on_persisted(self.seq)`.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some()
            || !self.entries.is_empty()
            || !self.snapshot_chunks.is_empty()
            || self.snapshot.is_some()
    }
}

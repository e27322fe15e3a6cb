//! The consensus state machine of one node: roles and elections (§5.2,
//! pre-vote §9.6, check-quorum §6.2), replication and commitment (§5.3,
//! §5.4), ReadIndex and lease reads (§6.4), leadership transfer (§3.10),
//! and the Ready/`on_persisted` contract that keeps persistence ordering in
//! the types (§10.2.1: the leader replicates while its own write is in
//! flight and counts itself only once durable).
//!
//! Invariants (asserted in `check_invariants`, after every public mutating
//! call in debug builds): the vote changes only with the term or from
//! `NO_NODE`; a leader and a candidate voted for themselves; the last log
//! term never exceeds the current term; held messages wait for a ready that
//! has not been acknowledged yet.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::Bytes;

use crate::config::{Config, ConfigError, ReadMode};
use crate::configuration::{ConfChange, ConfChangeError, ConfChangeOp, Configuration, VoteResult};
use crate::errors::{ProposeError, ReadError, RejectReason, TransferError};
use crate::log::RaftLog;
use crate::progress::{Progress, ProgressState};
use crate::rng::SeededRng;
use crate::snapshot::{
    Incoming, IncomingChunk, SnapshotError, SnapshotMeta, SnapshotProgress, TransferTick, SNAPSHOT_CHUNK_BYTES_LIMIT,
};
use crate::storage::{Storage, StorageError};
use crate::types::{
    Entry, EntryKind, HardState, Index, Message, MessageBody, NodeId, ReadState, Ready, Role, SoftState, Term, NO_NODE,
};

/// Bytes read per chunk when replaying configuration changes on start.
const CONF_REPLAY_CHUNK_BYTES: u64 = 4 << 20;

/// Heartbeat rounds remembered for lease reads; older rounds simply stop
/// extending the lease.
const HEARTBEAT_ROUNDS_MAX: usize = 64;

/// When `send_append` sends a message without entries (a probe in probe
/// state is always sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppendMode {
    /// Only with entries.
    Entries,
    /// With entries, or empty when the follower lacks the commit index.
    EntriesOrCommit,
    /// Always: an empty append at `next` detects lost appends (the follower
    /// rejects it if it lacks entries below).
    Always,
}

/// What a campaign starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Campaign {
    /// A pre-vote round that changes no term (§9.6).
    PreVote,
    /// A real election in the next term.
    Election,
    /// An election ordered by leadership transfer: voters ignore their lease.
    Transfer,
}

/// A linearizable read waiting for its heartbeat round to be acknowledged.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    /// The heartbeat round whose quorum acknowledgement confirms the read.
    round: u64,
    /// The commit index when the read arrived: the read index.
    index: Index,
    request_id: u64,
    /// Who asked: this node, or a follower that forwarded the read.
    from: NodeId,
}

/// Counters of inputs the core refused or corrected; the server exports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub messages_rejected: u64,
    /// A leader told us of a commit index beyond our log (clamped).
    pub commit_beyond_log: u64,
    /// Forwarded reads dropped because too many were pending.
    pub reads_dropped: u64,
    /// A follower needed compacted entries but no stored snapshot covered
    /// them (the follower is held until one does).
    pub snapshot_needed: u64,
    /// Snapshot transfers started by this node as leader.
    pub snapshots_sent: u64,
    pub snapshot_chunks_sent: u64,
    /// Snapshots this node installed from a leader.
    pub snapshots_installed: u64,
    /// Transfers given up because the follower stopped answering.
    pub snapshots_abandoned: u64,
    /// Committed configuration changes that did not fit the configuration
    /// they were applied to (left without effect on every node alike).
    pub conf_changes_ignored: u64,
}

/// A snapshot of a node's state for observers and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub term: Term,
    pub vote: NodeId,
    pub role: Role,
    pub leader: NodeId,
    pub commit: Index,
    pub applied: Index,
    pub last_index: Index,
    pub persisted_index: Index,
    /// `(follower, match index, next index)` on a leader.
    pub progress: Vec<(NodeId, Index, Index)>,
}

/// What one ready asked to persist, for `on_persisted`.
#[derive(Clone, Copy, Debug)]
struct PersistRecord {
    seq: u64,
    /// Index and term of the last entry it carried.
    last: Option<(Index, Term)>,
    /// Index of the snapshot it installed.
    snapshot: Option<Index>,
}

/// One node's consensus core over a log store `S`.
pub struct Raft<S: Storage> {
    id: NodeId,
    config: Config,
    /// The membership in force: the latest configuration in this node's
    /// log, committed or not (dissertation §4.1; RELIABILITY #3).
    configuration: Configuration,
    /// Every configuration with the index of the entry that brought it in
    /// (0 for the bootstrap one), oldest first; the last is in force. A
    /// truncated log reverts to the configuration before the cut. Entries
    /// superseded by a committed configuration are pruned.
    conf_history: Vec<(Index, Configuration)>,
    /// Leader: index of the last configuration change appended; another is
    /// refused until it is committed (one change at a time; a new leader
    /// sets it to its first entry, the 2015 fix).
    pending_conf_index: Index,
    term: Term,
    vote: NodeId,
    role: Role,
    leader: NodeId,
    log: RaftLog<S>,
    /// Leader only: one entry per other voter, sorted by id.
    progress: Vec<Progress>,
    /// Votes (or pre-votes) received in the current campaign.
    votes: Vec<(NodeId, bool)>,
    election_elapsed: u64,
    heartbeat_elapsed: u64,
    /// The current randomized election timeout, in `[T, 2T)`.
    election_timeout: u64,
    /// Ticks since start; the clock for lease reads.
    ticks: u64,
    rng: SeededRng,
    transfer_target: NodeId,
    /// Leader ticks since the current transfer started.
    transfer_elapsed: u64,
    /// TimeoutNow was sent this term: lease reads are off until the term ends.
    transfer_started_in_term: bool,
    /// Leader: bytes proposed and not yet handed out as committed.
    uncommitted_bytes: u64,
    /// Leader: commit index last sent to followers.
    commit_broadcast: Index,
    /// Leader: new entries await replication.
    needs_broadcast: bool,
    // ReadIndex state (leader).
    heartbeat_round: u64,
    read_round_wanted: bool,
    pending_reads: VecDeque<PendingRead>,
    /// Reads that arrived before the leader committed an entry of its term.
    reads_before_commit: Vec<(NodeId, u64)>,
    /// `(round, tick sent)` for lease extension.
    heartbeat_rounds: VecDeque<(u64, u64)>,
    lease_expires_tick: u64,
    // Output and persistence bookkeeping.
    messages: Vec<Message>,
    /// Messages that may leave only once ready `seq` is persisted.
    held: VecDeque<(u64, Message)>,
    read_states: Vec<ReadState>,
    ready_seq: u64,
    persisted_seq: u64,
    last_persist_seq: u64,
    /// The last ready that carried a new term or vote.
    last_term_persist_seq: u64,
    /// Ticks since this node last accepted an append or heartbeat from a
    /// leader (or was leader). Unlike `election_elapsed` it survives term
    /// changes: it is the promise behind check-quorum leases.
    leader_heard_elapsed: u64,
    persist_records: VecDeque<PersistRecord>,
    /// Follower: the snapshot being received.
    incoming: Option<Incoming>,
    /// Follower: received chunks for the next ready.
    chunks_out: Vec<IncomingChunk>,
    emitted_hard_state: HardState,
    emitted_soft_state: SoftState,
    stats: Stats,
}

impl<S: Storage> Raft<S> {
    /// Builds a node from its configuration and durable storage (a restart
    /// resumes from the stored hard state and log).
    ///
    /// # Errors
    /// When the configuration is invalid.
    pub fn new(config: Config, storage: S) -> Result<Self, ConfigError> {
        config.validate()?;
        let hard_state = storage.hard_state();
        let last_index = storage.last_index();
        let log = RaftLog::new(storage, config.applied).map_err(|_| ConfigError::AppliedBeyondLog {
            applied: config.applied,
            last_index,
        })?;
        let restarted_with_term = hard_state.term > 0;
        let lease_mode = matches!(config.read_mode, ReadMode::Lease { .. });
        // The configuration to start from: the snapshot's, or the bootstrap
        // one for a log that was never compacted.
        let snapshot = log.storage().snapshot();
        if snapshot
            .as_ref()
            .map_or(log.first_index() > 1, |snapshot| snapshot.index + 1 < log.first_index())
        {
            return Err(ConfigError::CompactedWithoutSnapshot {
                first_index: log.first_index(),
            });
        }
        if let Some(snapshot) = &snapshot {
            let covered = snapshot.index + 1 >= log.first_index() && snapshot.index <= log.last_index();
            if covered && log.term(snapshot.index) != Some(snapshot.term) {
                return Err(ConfigError::SnapshotDisagreesWithLog {
                    index: snapshot.index,
                    snapshot_term: snapshot.term,
                    log_term: log.term(snapshot.index).unwrap_or(0),
                });
            }
        }
        let (base_index, base) = match snapshot {
            Some(snapshot) => {
                if config.applied < snapshot.index {
                    return Err(ConfigError::AppliedBelowSnapshot {
                        applied: config.applied,
                        snapshot_index: snapshot.index,
                    });
                }
                (snapshot.index, snapshot.configuration)
            }
            None => (0, Configuration::new(config.voters.clone(), config.learners.clone())),
        };
        // The configuration in force is the latest one in the log: replay
        // every configuration change after the base, in bounded chunks.
        let mut conf_history = vec![(base_index, base)];
        let mut conf_changes_ignored = 0;
        let mut next_index = base_index + 1;
        while next_index <= log.last_index() {
            let chunk = log
                .entries(next_index, log.last_index() + 1, CONF_REPLAY_CHUNK_BYTES)
                .map_err(|error| ConfigError::LogUnreadable(error.to_string()))?;
            let Some(last) = chunk.last() else {
                break;
            };
            next_index = last.index + 1;
            for entry in chunk.iter().filter(|entry| entry.kind == EntryKind::ConfChange) {
                let current = &conf_history.last().expect("bootstrap configuration").1;
                match ConfChange::decode(&entry.data).map(|change| current.apply(&change)) {
                    Ok(Ok(next)) => conf_history.push((entry.index, next)),
                    _ => conf_changes_ignored += 1,
                }
            }
        }
        let configuration = conf_history.last().expect("bootstrap configuration").1.clone();
        let mut raft = Raft {
            id: config.id,
            configuration,
            conf_history,
            pending_conf_index: 0,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: NO_NODE,
            log,
            progress: Vec::new(),
            votes: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            election_timeout: config.election_ticks,
            ticks: 0,
            rng: SeededRng::new(config.seed),
            transfer_target: NO_NODE,
            transfer_elapsed: 0,
            transfer_started_in_term: false,
            uncommitted_bytes: 0,
            commit_broadcast: 0,
            needs_broadcast: false,
            heartbeat_round: 0,
            read_round_wanted: false,
            pending_reads: VecDeque::new(),
            reads_before_commit: Vec::new(),
            heartbeat_rounds: VecDeque::new(),
            lease_expires_tick: 0,
            messages: Vec::new(),
            held: VecDeque::new(),
            read_states: Vec::new(),
            ready_seq: 0,
            persisted_seq: 0,
            last_persist_seq: 0,
            last_term_persist_seq: 0,
            // With lease reads, a restarted node cannot know whether it
            // heard from a leader within the last election timeout before it
            // stopped, so it starts as if it just had: a leader's lease then
            // holds across follower restarts. (A node that never persisted a
            // term never acknowledged a heartbeat: those replies wait for it.)
            leader_heard_elapsed: if lease_mode && restarted_with_term {
                0
            } else {
                config.election_ticks
            },
            persist_records: VecDeque::new(),
            incoming: None,
            chunks_out: Vec::new(),
            emitted_hard_state: hard_state,
            emitted_soft_state: SoftState {
                role: Role::Follower,
                leader: NO_NODE,
                term: hard_state.term,
            },
            stats: Stats {
                conf_changes_ignored,
                ..Stats::default()
            },
            config,
        };
        raft.emitted_hard_state = raft.hard_state();
        raft.reset_election_timeout();
        raft.check_invariants();
        Ok(raft)
    }

    // ----- Accessors -------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn leader(&self) -> NodeId {
        self.leader
    }

    /// The membership in force.
    pub fn configuration(&self) -> &Configuration {
        &self.configuration
    }

    /// The configuration in force at `index`, if this node still knows it:
    /// indexes from the latest applied configuration change on.
    pub fn configuration_at(&self, index: Index) -> Option<Configuration> {
        if index < self.conf_history.first()?.0 {
            return None;
        }
        self.conf_history
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map(|(_, configuration)| configuration.clone())
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn commit_index(&self) -> Index {
        self.log.commit
    }

    pub fn applied_index(&self) -> Index {
        self.log.applied
    }

    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    /// The term of the entry at `index` as this node's log holds it now
    /// (including entries not yet persisted).
    pub fn log_term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    /// Entries `[low, high)` of this node's current log (tests, inspection).
    ///
    /// # Errors
    /// When the range is compacted or storage fails.
    pub fn log_entries(&self, low: Index, high: Index) -> Result<Vec<Entry>, StorageError> {
        self.log.entries(low, high, u64::MAX)
    }

    pub fn storage(&self) -> &S {
        self.log.storage()
    }

    /// The application writes persisted entries and hard state through this.
    pub fn storage_mut(&mut self) -> &mut S {
        self.log.storage_mut()
    }

    /// Gives the storage back (the node stops).
    pub fn into_storage(self) -> S {
        self.log.into_storage()
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        }
    }

    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
            term: self.term,
        }
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            term: self.term,
            vote: self.vote,
            role: self.role,
            leader: self.leader,
            commit: self.log.commit,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            persisted_index: self.log.persisted_index(),
            progress: self
                .progress
                .iter()
                .map(|pr| (pr.id, pr.match_index, pr.next_index))
                .collect(),
        }
    }

    // ----- Snapshots and compaction -----------------------------------------

    /// The metadata for a snapshot of the state machine at `index` (the
    /// applied index, normally): its term and the configuration in force
    /// there. The application stores the snapshot with it
    /// (`LogStore::save_snapshot`), then compacts up to `compact_index()`.
    ///
    /// # Errors
    /// `index` not applied yet or not newer than the stored snapshot, or
    /// its configuration no longer known (only for indexes below the
    /// latest applied configuration change).
    pub fn snapshot_meta(&self, index: Index) -> Result<SnapshotMeta, SnapshotError> {
        if index > self.log.applied {
            return Err(SnapshotError::NotApplied {
                index,
                applied: self.log.applied,
            });
        }
        let snapshot_index = self.snapshot_index();
        if index <= snapshot_index {
            return Err(SnapshotError::NotNewer { index, snapshot_index });
        }
        let term = self.log.term_checked(index)?;
        let configuration = self
            .configuration_at(index)
            .ok_or(SnapshotError::ConfigurationUnknown { index })?;
        Ok(SnapshotMeta {
            index,
            term,
            configuration,
        })
    }

    /// Index of the newest snapshot this node holds (stored, or received
    /// and being installed); 0 without one.
    pub fn snapshot_index(&self) -> Index {
        let stored = self.log.storage().snapshot().map_or(0, |snapshot| snapshot.index);
        stored.max(self.log.first_index() - 1)
    }

    /// How far the application may compact the log now: the stored
    /// snapshot's index less `Config::compaction_tail_entries`, and never
    /// past the snapshot being sent to any follower (it needs the entries
    /// after it to catch up, however long the transfer takes). Returns
    /// `first_index - 1` when nothing more may go.
    pub fn compact_index(&self) -> Index {
        let compacted = self.log.storage().first_index() - 1;
        if self.log.has_restored_snapshot() {
            // An install is on its way to storage: nothing to compact now.
            return compacted;
        }
        let Some(snapshot) = self.log.storage().snapshot() else {
            return compacted;
        };
        let mut index = snapshot.index.saturating_sub(self.config.compaction_tail_entries);
        for pr in &self.progress {
            if let Some(outgoing) = &pr.snapshot {
                index = index.min(outgoing.meta.index);
            }
        }
        index.min(self.log.applied).max(compacted)
    }

    /// Snapshot transfers in progress from this leader.
    pub fn snapshot_transfers(&self) -> Vec<SnapshotProgress> {
        self.progress
            .iter()
            .filter_map(|pr| {
                pr.snapshot.as_ref().map(|outgoing| SnapshotProgress {
                    follower: pr.id,
                    index: outgoing.meta.index,
                    bytes_sent: outgoing.sent,
                    bytes_acked: outgoing.acked,
                    bytes_total: outgoing.total,
                })
            })
            .collect()
    }

    /// Indexes of the snapshots being sent to followers: storage must keep
    /// them (`LogStore::retain_snapshots`) until the transfers end.
    pub fn snapshots_in_use(&self) -> Vec<Index> {
        let mut indexes: Vec<Index> = self
            .progress
            .iter()
            .filter_map(|pr| pr.snapshot.as_ref().map(|outgoing| outgoing.meta.index))
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        indexes
    }

    /// The snapshot this follower is receiving: `(leader, index, bytes
    /// received)`.
    pub fn incoming_snapshot(&self) -> Option<(NodeId, Index, u64)> {
        self.incoming
            .as_ref()
            .map(|incoming| (incoming.from, incoming.meta.index, incoming.received))
    }

    /// Whether this node may campaign: it votes in its latest configuration,
    /// or in the latest one it knows committed. A node removed by a change
    /// not yet known committed still campaigns (dissertation §4.2.2): it may
    /// hold the longest log, and voters that lack the change need it.
    fn is_voter(&self) -> bool {
        self.configuration.is_voter(self.id) || self.committed_configuration().is_voter(self.id)
    }

    /// The latest configuration brought in at or below the commit index.
    fn committed_configuration(&self) -> &Configuration {
        let commit = self.log.commit;
        &self
            .conf_history
            .iter()
            .rev()
            .find(|(at, _)| *at <= commit)
            .expect("the bootstrap configuration is at index 0")
            .1
    }

    /// This node is the only voter: it decides alone.
    fn is_single_voter(&self) -> bool {
        !self.configuration.is_joint() && self.configuration.voters == [self.id]
    }

    /// Match index of a member as the leader sees it; its own log counts
    /// only once durable.
    fn match_of(&self, id: NodeId) -> Index {
        if id == self.id {
            return self.log.persisted_index();
        }
        match self.progress.binary_search_by_key(&id, |pr| pr.id) {
            Ok(at) => self.progress[at].match_index,
            Err(_) => 0,
        }
    }

    fn progress_mut(&mut self, id: NodeId) -> Option<&mut Progress> {
        self.progress
            .binary_search_by_key(&id, |pr| pr.id)
            .ok()
            .map(|at| &mut self.progress[at])
    }

    // ----- Inputs ----------------------------------------------------------

    /// Advances logical time by one tick: election timeouts for followers
    /// and candidates, heartbeats and check-quorum for the leader.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.leader_heard_elapsed = self.leader_heard_elapsed.saturating_add(1);
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
        self.debug_check();
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.is_voter() && self.election_elapsed >= self.election_timeout {
            self.election_elapsed = 0;
            let kind = if self.config.pre_vote {
                Campaign::PreVote
            } else {
                Campaign::Election
            };
            self.campaign(kind);
        }
    }

    fn tick_leader(&mut self) {
        self.leader_heard_elapsed = 0;
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.transfer_target != NO_NODE {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_ticks {
                // A transfer that has not finished within an election
                // timeout is abandoned so proposals are accepted again.
                self.transfer_target = NO_NODE;
            }
        }
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                let progress = &self.progress;
                let id = self.id;
                let active = self.configuration.has_quorum(|member| {
                    member == id
                        || progress
                            .binary_search_by_key(&member, |pr| pr.id)
                            .is_ok_and(|at| progress[at].recent_active)
                });
                if !active {
                    // Check-quorum (§6.2): a leader cut off from a majority
                    // steps down instead of serving stale reads.
                    self.become_follower(self.term, NO_NODE);
                    return;
                }
                for pr in &mut self.progress {
                    pr.recent_active = false;
                }
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        // Snapshot chunks unacknowledged for half an election timeout were
        // lost: resend from the last acknowledged offset.
        // A follower silent through several retries is gone: the transfer
        // is given up so it stops pinning its snapshot and the log.
        let retry_ticks = (self.config.election_ticks / 2).max(1);
        for at in 0..self.progress.len() {
            let tick = self.progress[at]
                .snapshot
                .as_mut()
                .map_or(TransferTick::Wait, |outgoing| outgoing.on_tick(retry_ticks));
            match tick {
                TransferTick::Wait => {}
                TransferTick::Resend => {
                    let to = self.progress[at].id;
                    self.send_snapshot_chunks(to);
                }
                TransferTick::GiveUp => {
                    self.progress[at].become_probe();
                    self.stats.snapshots_abandoned += 1;
                }
            }
        }
    }

    /// Proposes one command. Returns the index it was appended at; it is
    /// committed once it appears in `committed_entries`.
    ///
    /// # Errors
    /// See [`ProposeError`]; nothing is appended on error.
    pub fn propose(&mut self, data: Bytes) -> Result<Index, ProposeError> {
        self.propose_batch(vec![data]).map(|range| range.end - 1)
    }

    /// Proposes many commands at once; they are appended contiguously and
    /// replicated together. Returns the index range they were given.
    ///
    /// # Errors
    /// See [`ProposeError`]; nothing is appended on error.
    pub fn propose_batch(&mut self, batch: Vec<Bytes>) -> Result<Range<Index>, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer_target != NO_NODE {
            return Err(ProposeError::TransferInProgress {
                target: self.transfer_target,
            });
        }
        if !self.configuration.voters.contains(&self.id) {
            // The configuration in force (or the one a joint configuration
            // leads to) excludes this leader: it only finishes the change.
            return Err(ProposeError::LeaderLeaving);
        }
        let mut bytes = 0u64;
        for data in &batch {
            let size = data.len() as u64;
            if size > self.config.entry_bytes_max {
                return Err(ProposeError::EntryTooLarge {
                    bytes: size,
                    limit: self.config.entry_bytes_max,
                });
            }
            bytes += size + crate::types::ENTRY_OVERHEAD_BYTES;
        }
        if self.uncommitted_bytes > 0 && self.uncommitted_bytes + bytes > self.config.uncommitted_bytes_max {
            return Err(ProposeError::Backpressure {
                bytes: self.uncommitted_bytes,
                limit: self.config.uncommitted_bytes_max,
            });
        }
        self.uncommitted_bytes += bytes;
        let first = self.log.last_index() + 1;
        let term = self.term;
        self.log
            .append(batch.into_iter().enumerate().map(|(offset, data)| Entry {
                term,
                index: first + offset as Index,
                kind: EntryKind::Normal,
                data,
            }));
        let end = self.log.last_index() + 1;
        self.needs_broadcast = true;
        if self.is_single_voter() {
            // A single voter commits on its own durability alone.
            self.maybe_commit();
        }
        self.debug_check();
        Ok(first..end)
    }

    /// Proposes a membership change (leader only). It takes effect when
    /// appended. One change at a time: a second is refused until the first
    /// is committed, and a new leader accepts none until its first entry is
    /// committed. A change of more than one voter goes through the joint
    /// configuration, which the leader leaves by itself once the joint entry
    /// is committed. A node becomes a voter only once its match index
    /// reached the commit index: add it as a learner, then promote it.
    ///
    /// # Errors
    /// See [`ConfChangeError`]; nothing is proposed on error.
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<Index, ConfChangeError> {
        if self.role != Role::Leader {
            return Err(ConfChangeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer_target != NO_NODE {
            return Err(ConfChangeError::TransferInProgress {
                target: self.transfer_target,
            });
        }
        if self.pending_conf_index > self.log.commit {
            return Err(ConfChangeError::InProgress {
                pending_index: self.pending_conf_index,
            });
        }
        // Validate against the configuration the entry will be applied to:
        // with no change pending, that is the one in force.
        self.configuration.apply(&change)?;
        for op in &change.ops {
            if let ConfChangeOp::AddVoter(id) = *op {
                // The change is in force once appended: a voter that cannot
                // keep up (or does not exist) would stall every commit.
                let match_index = self.match_of(id);
                if id != self.id && match_index < self.log.commit {
                    return Err(ConfChangeError::LearnerNotCaughtUp {
                        id,
                        match_index,
                        commit: self.log.commit,
                    });
                }
            }
        }
        let index = self.append_conf_change(&change);
        self.debug_check();
        Ok(index)
    }

    fn append_conf_change(&mut self, change: &ConfChange) -> Index {
        let index = self.log.last_index() + 1;
        let data = Bytes::from(change.encode());
        self.log.append([Entry {
            term: self.term,
            index,
            kind: EntryKind::ConfChange,
            data: data.clone(),
        }]);
        self.pending_conf_index = index;
        self.needs_broadcast = true;
        // The new configuration is in force from this moment.
        self.on_conf_entries_appended(&[(index, data)]);
        if self.is_single_voter() {
            self.maybe_commit();
        }
        index
    }

    /// Configuration change entries were appended to the log at these
    /// indexes: each takes effect at once.
    fn on_conf_entries_appended(&mut self, entries: &[(Index, Bytes)]) {
        if entries.is_empty() {
            return;
        }
        for (index, data) in entries {
            let current = &self.conf_history.last().expect("a configuration is always in force").1;
            match ConfChange::decode(data).map(|change| current.apply(&change)) {
                Ok(Ok(next)) => self.conf_history.push((*index, next)),
                _ => self.stats.conf_changes_ignored += 1,
            }
        }
        self.on_configuration_changed();
    }

    /// The log was cut from `index` on: configurations brought in by the
    /// removed entries are gone with them.
    fn truncate_conf_history(&mut self, index: Index) {
        let before = self.conf_history.len();
        self.conf_history.retain(|(at, _)| *at < index);
        assert!(
            !self.conf_history.is_empty(),
            "the committed configuration was truncated"
        );
        if self.conf_history.len() != before {
            self.on_configuration_changed();
        }
    }

    /// Forgets configurations superseded by one that is applied: they can
    /// never come back, and no snapshot at or above `applied` needs them.
    fn prune_conf_history(&mut self) {
        let applied = self.log.applied;
        let superseded = self
            .conf_history
            .iter()
            .rposition(|(at, _)| *at <= applied)
            .unwrap_or(0);
        if superseded > 0 {
            self.conf_history.drain(..superseded);
        }
    }

    fn on_configuration_changed(&mut self) {
        self.configuration = self
            .conf_history
            .last()
            .expect("a configuration is always in force")
            .1
            .clone();
        if self.role != Role::Leader {
            return;
        }
        let members = self.configuration.members();
        let next_index = self.log.last_index() + 1;
        let (messages_max, bytes_max) = (self.config.inflight_messages_max, self.config.inflight_bytes_max);
        self.progress.retain(|pr| members.binary_search(&pr.id).is_ok());
        for member in members {
            if member != self.id && self.progress.binary_search_by_key(&member, |pr| pr.id).is_err() {
                let mut pr = Progress::new(member, next_index, messages_max, bytes_max);
                pr.recent_active = true;
                let at = self.progress.partition_point(|other| other.id < member);
                self.progress.insert(at, pr);
            }
        }
        if self.transfer_target != NO_NODE && !self.configuration.is_voter(self.transfer_target) {
            self.transfer_target = NO_NODE;
        }
        self.needs_broadcast = true;
    }

    /// Leader duties once the latest configuration change is committed:
    /// leave a joint configuration (etcd's automatic leave), or, if this
    /// node is no longer a voter, hand over and step down (§4.2.2).
    fn leader_conf_duties_due(&self) -> bool {
        self.role == Role::Leader
            && self.pending_conf_index <= self.log.commit
            && (self.configuration.is_joint() || !self.configuration.is_voter(self.id))
    }

    fn do_leader_conf_duties(&mut self) {
        if !self.leader_conf_duties_due() {
            return;
        }
        if self.configuration.is_joint() {
            self.append_conf_change(&ConfChange::default());
            return;
        }
        // Removed (or demoted) and the change is committed. Tell everyone
        // the commit index, hand over to a voter that holds the whole log
        // (it campaigns at once), then step down and fall silent.
        self.broadcast_append();
        self.commit_broadcast = self.log.commit;
        let last = self.log.last_index();
        let successor = self
            .progress
            .iter()
            .filter(|pr| self.configuration.is_voter(pr.id) && pr.match_index == last)
            .map(|pr| pr.id)
            .next();
        if let Some(successor) = successor {
            self.send_timeout_now(successor);
        }
        self.become_follower(self.term, NO_NODE);
    }

    /// Starts a linearizable read. A `ReadState` with `request_id` appears in
    /// a later `Ready` once the read index is confirmed; reads lost to a
    /// leader change never appear, so callers need a timeout.
    ///
    /// # Errors
    /// `NoLeader` when no leader is known; `TooManyPending` at the bound.
    pub fn read_index(&mut self, request_id: u64) -> Result<(), ReadError> {
        let result = match self.role {
            Role::Leader => self.leader_read(self.id, request_id),
            _ if self.leader == NO_NODE => Err(ReadError::NoLeader),
            _ => {
                let message = self.message(self.leader, MessageBody::ReadIndex { request_id });
                self.send(message);
                Ok(())
            }
        };
        self.debug_check();
        result
    }

    /// Asks the leader to hand leadership to `target` (dissertation §3.10):
    /// the target is caught up, then told to time out now. Proposals are
    /// refused until the transfer ends or an election timeout passes.
    ///
    /// # Errors
    /// See [`TransferError`].
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if target == self.id {
            return Err(TransferError::AlreadyLeader(target));
        }
        if !self.configuration.is_voter(target) {
            return Err(TransferError::NotAVoter(target));
        }
        if self.transfer_target != NO_NODE {
            return Err(TransferError::InProgress {
                target: self.transfer_target,
            });
        }
        self.transfer_target = target;
        // The transfer has its own timeout, so that it never postpones the
        // check-quorum step-down of a leader that lost its majority.
        self.transfer_elapsed = 0;
        let last = self.log.last_index();
        let caught_up = self.progress_mut(target).is_some_and(|pr| pr.match_index == last);
        if caught_up {
            self.send_timeout_now(target);
        } else {
            self.send_append(target, AppendMode::Always);
        }
        self.debug_check();
        Ok(())
    }

    /// Acknowledges that every ready up to `seq` is durable: releases the
    /// messages that waited for it and lets the leader count its own log.
    ///
    /// # Panics
    /// If `seq` was never handed out.
    pub fn on_persisted(&mut self, seq: u64) {
        assert!(seq <= self.ready_seq, "persisted ready {seq} was never produced");
        if seq <= self.persisted_seq {
            return;
        }
        while let Some(&record) = self.persist_records.front() {
            if record.seq > seq {
                break;
            }
            self.persist_records.pop_front();
            if let Some(index) = record.snapshot {
                self.log.snapshot_persisted(index);
            }
            if let Some((index, term)) = record.last {
                self.log.persisted_to(index, term);
            }
        }
        self.persisted_seq = seq;
        while let Some((barrier, _)) = self.held.front() {
            if *barrier > self.persisted_seq {
                break;
            }
            let (_, message) = self.held.pop_front().expect("front was just seen");
            self.messages.push(message);
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
        self.debug_check();
    }

    /// Handles a message from a peer.
    ///
    /// # Errors
    /// The reason the message was dropped; callers count it. A dropped
    /// message changes nothing except as `RejectReason` documents (a stale
    /// leader is answered with our term so it steps down).
    pub fn step(&mut self, message: Message) -> Result<(), RejectReason> {
        let result = self.step_checked(message);
        if result.is_err() {
            self.stats.messages_rejected += 1;
        }
        self.debug_check();
        result
    }

    fn step_checked(&mut self, m: Message) -> Result<(), RejectReason> {
        if m.to != self.id {
            return Err(RejectReason::WrongRecipient);
        }
        if m.from == self.id || m.from == NO_NODE {
            return Err(RejectReason::UnknownSender);
        }
        // Requests from nodes outside our latest configuration are processed
        // like any other (dissertation §4.1): a node whose configuration lags
        // must still hear a new leader and vote for a legitimate candidate.
        // Removed nodes cannot disrupt: pre-vote and the check-quorum lease
        // make members ignore them while a leader is alive.
        self.validate_shape(&m)?;

        let transfer = matches!(m.body, MessageBody::Vote { transfer: true, .. });
        let is_vote = matches!(m.body, MessageBody::Vote { .. } | MessageBody::PreVote { .. });
        if m.term >= self.term && is_vote && !transfer && self.in_lease() {
            // Check-quorum lease: we heard from a live leader within an
            // election timeout, so this candidate is disruptive. The check
            // holds whatever term we learnt since (a reply can raise our
            // term without a leader), or leases would break.
            return Err(RejectReason::InsideLease);
        }
        // Figure 2: only a leader's message or a granted vote resets the
        // election timer. A follower that merely learns a higher term from a
        // candidate it refuses keeps counting, so hopeless candidates (with
        // shorter logs) cannot hold back one that could win.
        let mut elapsed_before_vote = None;
        if m.term > self.term {
            if self.role == Role::Follower && matches!(m.body, MessageBody::Vote { .. }) {
                elapsed_before_vote = Some(self.election_elapsed);
            }
            match m.body {
                MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow => self.become_follower(m.term, m.from),
                _ => self.become_follower(m.term, NO_NODE),
            }
        } else if m.term < self.term {
            match m.body {
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                    // Figure 2: answer a stale leader with our term so it
                    // steps down. Without it a stale leader never learns
                    // that we moved on (with pre-vote it cannot win an
                    // election any more), and we never catch up.
                    let reply = self.message(
                        m.from,
                        MessageBody::AppendResponse {
                            reject: true,
                            index: 0,
                            hint_index: 0,
                            hint_term: 0,
                        },
                    );
                    self.send(reply);
                }
                MessageBody::PreVote { .. } => {
                    let reply = self.message(m.from, MessageBody::PreVoteResponse { granted: false });
                    self.send(reply);
                }
                MessageBody::Vote { .. } => {
                    // Figure 2: the reply carries our term, so a candidate
                    // that fell behind catches up at once instead of one
                    // term per election timeout.
                    let reply = self.message(m.from, MessageBody::VoteResponse { granted: false });
                    self.send(reply);
                }
                _ => {}
            }
            return Err(RejectReason::StaleTerm);
        }

        match m.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => {
                let can_vote =
                    self.vote == m.from || (self.vote == NO_NODE && self.leader == NO_NODE) || m.term > self.term;
                let granted = can_vote && self.log.is_up_to_date(last_log_index, last_log_term);
                let term = if granted { m.term } else { self.term };
                self.send(Message {
                    from: self.id,
                    to: m.from,
                    term,
                    body: MessageBody::PreVoteResponse { granted },
                });
                Ok(())
            }
            MessageBody::Vote {
                last_log_index,
                last_log_term,
                ..
            } => {
                let can_vote = self.vote == m.from || (self.vote == NO_NODE && self.leader == NO_NODE);
                let granted = can_vote && self.log.is_up_to_date(last_log_index, last_log_term);
                if granted {
                    // Invariant: one vote per term; it becomes durable with
                    // the next ready, before this reply may leave.
                    debug_assert!(self.vote == NO_NODE || self.vote == m.from);
                    self.vote = m.from;
                    self.election_elapsed = 0;
                } else if let Some(elapsed) = elapsed_before_vote {
                    self.election_elapsed = elapsed;
                }
                let reply = self.message(m.from, MessageBody::VoteResponse { granted });
                self.send(reply);
                Ok(())
            }
            body => match self.role {
                Role::Leader => self.step_leader(m.from, body),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m.from, m.term, body),
                Role::Follower => self.step_follower(m.from, body),
            },
        }
    }

    /// Rejects messages whose fields cannot be right whatever our state.
    fn validate_shape(&self, m: &Message) -> Result<(), RejectReason> {
        if m.term == Term::MAX {
            // No real cluster gets there; adopting it would leave no next
            // term to campaign in.
            return Err(RejectReason::Malformed("term at its maximum"));
        }
        match &m.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                ..
            } => {
                if entries.len() > self.config.append_entries_max {
                    return Err(RejectReason::Malformed("too many entries in append"));
                }
                if (*prev_index == 0) != (*prev_term == 0) {
                    return Err(RejectReason::Malformed("previous index and term disagree"));
                }
                if *prev_term > m.term {
                    return Err(RejectReason::Malformed("previous term above message term"));
                }
                let mut expected_index = *prev_index;
                let mut last_term = *prev_term;
                for entry in entries {
                    expected_index = expected_index
                        .checked_add(1)
                        .ok_or(RejectReason::Malformed("entry index overflows"))?;
                    if entry.index != expected_index {
                        return Err(RejectReason::Malformed("entries not contiguous"));
                    }
                    if entry.term == 0 || entry.term < last_term || entry.term > m.term {
                        return Err(RejectReason::Malformed("entry term out of order"));
                    }
                    if entry.data.len() as u64 > self.config.entry_bytes_max {
                        return Err(RejectReason::Malformed("entry larger than entry_bytes_max"));
                    }
                    if entry.kind == EntryKind::Empty && !entry.data.is_empty() {
                        return Err(RejectReason::Malformed("empty entry with data"));
                    }
                    if entry.kind == EntryKind::ConfChange && ConfChange::decode(&entry.data).is_err() {
                        return Err(RejectReason::Malformed("undecodable configuration change"));
                    }
                    last_term = entry.term;
                }
                Ok(())
            }
            MessageBody::Vote { last_log_term, .. } | MessageBody::PreVote { last_log_term, .. } => {
                if *last_log_term > m.term {
                    return Err(RejectReason::Malformed("candidate log term above its term"));
                }
                Ok(())
            }
            MessageBody::InstallSnapshot { meta, offset, data, .. } => {
                if meta.index == 0 || meta.term == 0 {
                    return Err(RejectReason::Malformed("snapshot at index or term 0"));
                }
                if meta.index == Index::MAX {
                    return Err(RejectReason::Malformed("snapshot index leaves no room for a log"));
                }
                if meta.term > m.term {
                    return Err(RejectReason::Malformed("snapshot term above message term"));
                }
                if data.len() as u64 > SNAPSHOT_CHUNK_BYTES_LIMIT {
                    return Err(RejectReason::Malformed("snapshot chunk above the size limit"));
                }
                if offset.checked_add(data.len() as u64).is_none() {
                    return Err(RejectReason::Malformed("snapshot offset overflows"));
                }
                meta.configuration.validate().map_err(RejectReason::Malformed)
            }
            _ => Ok(()),
        }
    }

    /// Check-quorum lease: this node heard from a live leader (or led)
    /// within an election timeout, so it promises not to help elect another.
    fn in_lease(&self) -> bool {
        self.config.check_quorum
            && (self.role == Role::Leader || self.leader_heard_elapsed < self.config.election_ticks)
    }

    /// A message from the leader of our term: it is alive (election timer
    /// and lease promise restart) and known.
    fn heard_from_leader(&mut self, from: NodeId) {
        self.election_elapsed = 0;
        self.leader_heard_elapsed = 0;
        self.leader = from;
    }

    fn step_follower(&mut self, from: NodeId, body: MessageBody) -> Result<(), RejectReason> {
        match body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.heard_from_leader(from);
                self.handle_append(from, prev_index, prev_term, entries, commit)
            }
            MessageBody::Heartbeat { commit, read_seq } => {
                self.heard_from_leader(from);
                self.handle_heartbeat(from, commit, read_seq);
                Ok(())
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                last,
            } => {
                self.heard_from_leader(from);
                self.handle_snapshot_chunk(from, meta, offset, data, last);
                Ok(())
            }
            MessageBody::TimeoutNow => {
                if !self.is_voter() || from != self.leader {
                    return Err(RejectReason::UnexpectedInRole);
                }
                self.campaign(Campaign::Transfer);
                Ok(())
            }
            MessageBody::ReadIndexResponse { request_id, index } => {
                // The index may be beyond our log; the application waits
                // until it is applied, which happens once we catch up.
                self.read_states.push(ReadState { request_id, index });
                Ok(())
            }
            other => Self::unexpected_in_role(&other),
        }
    }

    /// Answers to requests of a role this node has left (a late vote, an
    /// append reply after stepping down) are normal and dropped quietly;
    /// anything else is counted as unexpected.
    fn unexpected_in_role(body: &MessageBody) -> Result<(), RejectReason> {
        match body {
            MessageBody::VoteResponse { .. }
            | MessageBody::PreVoteResponse { .. }
            | MessageBody::AppendResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::SnapshotResponse { .. }
            | MessageBody::ReadIndexResponse { .. } => Ok(()),
            _ => Err(RejectReason::UnexpectedInRole),
        }
    }

    fn step_candidate(&mut self, from: NodeId, term: Term, body: MessageBody) -> Result<(), RejectReason> {
        match body {
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                // A leader exists in our term (or, for a pre-candidate, in
                // the term we are still in): follow it.
                self.become_follower(term, from);
                self.step_follower(from, body)
            }
            MessageBody::PreVoteResponse { granted } if self.role == Role::PreCandidate => {
                if granted && term != self.term + 1 {
                    return Err(RejectReason::StaleTerm);
                }
                self.record_vote(from, granted);
                Ok(())
            }
            MessageBody::VoteResponse { granted } if self.role == Role::Candidate => {
                self.record_vote(from, granted);
                Ok(())
            }
            other => Self::unexpected_in_role(&other),
        }
    }

    fn step_leader(&mut self, from: NodeId, body: MessageBody) -> Result<(), RejectReason> {
        match body {
            MessageBody::AppendResponse {
                reject,
                index,
                hint_index,
                hint_term,
            } => self.handle_append_response(from, reject, index, hint_index, hint_term),
            MessageBody::HeartbeatResponse { read_seq } => {
                if read_seq > self.heartbeat_round {
                    return Err(RejectReason::Malformed("heartbeat round never sent"));
                }
                let last = self.log.last_index();
                let Some(pr) = self.progress_mut(from) else {
                    return Err(RejectReason::UnknownSender);
                };
                pr.recent_active = true;
                if read_seq > pr.read_seq_acked {
                    pr.read_seq_acked = read_seq;
                }
                if pr.snapshot.is_some() {
                    // The transfer has its own retry timer (`tick_leader`).
                    self.confirm_reads();
                    return Ok(());
                }
                // A heartbeat answer shows the follower is reachable: let a
                // paused probe try again.
                pr.probe_sent = false;
                // No progress since the previous answer while behind: the
                // appends in flight were probably lost.
                let stalled = pr.match_index == pr.match_at_heartbeat;
                pr.match_at_heartbeat = pr.match_index;
                let behind = pr.match_index < last;
                if behind && stalled {
                    if pr.state == ProgressState::Replicate && pr.inflights.is_full() {
                        pr.inflights.free_first();
                    }
                    // An empty append at `next` makes a follower that lost
                    // appends reject it, which restarts probing from its log.
                    self.send_append(from, AppendMode::Always);
                } else if behind {
                    self.send_append(from, AppendMode::Entries);
                }
                self.confirm_reads();
                Ok(())
            }
            MessageBody::ReadIndex { request_id } => match self.leader_read(from, request_id) {
                Ok(()) => Ok(()),
                Err(_) => {
                    self.stats.reads_dropped += 1;
                    Ok(())
                }
            },
            // Append or heartbeat from another leader of our term would break
            // Election Safety: it can only be forged or corrupt.
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                Err(RejectReason::Malformed("second leader in one term"))
            }
            MessageBody::SnapshotResponse { index, offset } => self.handle_snapshot_response(from, index, offset),
            other => Self::unexpected_in_role(&other),
        }
    }

    // ----- Follower handlers ------------------------------------------------

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    ) -> Result<(), RejectReason> {
        if prev_index < self.log.commit {
            // Everything up to our commit index matches any current leader:
            // tell it so instead of re-checking entries we already hold.
            let reply = self.message(
                from,
                MessageBody::AppendResponse {
                    reject: false,
                    index: self.log.commit,
                    hint_index: 0,
                    hint_term: 0,
                },
            );
            self.send(reply);
            return Ok(());
        }
        // Configuration changes take effect when appended: note them before
        // the entries move into the log.
        let conf_entries: Vec<(Index, Bytes)> = entries
            .iter()
            .filter(|entry| entry.kind == EntryKind::ConfChange)
            .map(|entry| (entry.index, entry.data.clone()))
            .collect();
        match self.log.try_append_from(prev_index, prev_term, entries) {
            Some((last_new, written_from)) => {
                if let Some(first) = written_from {
                    self.truncate_conf_history(first);
                    let written: Vec<(Index, Bytes)> =
                        conf_entries.into_iter().filter(|(index, _)| *index >= first).collect();
                    self.on_conf_entries_appended(&written);
                }
                self.log.commit_to(commit.min(last_new));
                let reply = self.message(
                    from,
                    MessageBody::AppendResponse {
                        reject: false,
                        index: last_new,
                        hint_index: 0,
                        hint_term: 0,
                    },
                );
                self.send(reply);
            }
            None => {
                let probe = prev_index.min(self.log.last_index());
                let (hint_index, hint_term) = self.log.find_conflict_by_term(probe, prev_term);
                let reply = self.message(
                    from,
                    MessageBody::AppendResponse {
                        reject: true,
                        index: prev_index,
                        hint_index,
                        hint_term,
                    },
                );
                self.send(reply);
            }
        }
        Ok(())
    }

    fn handle_heartbeat(&mut self, from: NodeId, commit: Index, read_seq: u64) {
        let last = self.log.last_index();
        if commit > last {
            // The leader caps the commit index at our match index, so this
            // means our log lost entries we acknowledged (RELIABILITY #6).
            self.stats.commit_beyond_log += 1;
        }
        self.log.commit_to(commit.min(last));
        let reply = self.message(from, MessageBody::HeartbeatResponse { read_seq });
        self.send(reply);
    }

    /// A chunk of a snapshot from the leader (§7). Chunks are accepted only
    /// in order from the same leader; anything else is answered with the
    /// offset this node holds, so the leader resumes from there. A snapshot
    /// this node's log already covers is acknowledged without writing it.
    fn handle_snapshot_chunk(&mut self, from: NodeId, meta: SnapshotMeta, offset: u64, data: Bytes, last: bool) {
        let index = meta.index;
        if index <= self.log.commit {
            // Stale or duplicate: everything it holds is committed here.
            if self
                .incoming
                .as_ref()
                .is_some_and(|incoming| incoming.meta.index <= self.log.commit)
            {
                self.incoming = None;
            }
            self.reply_append_accepted(from, self.log.commit);
            return;
        }
        if self.log.has_unemitted_snapshot() {
            // A snapshot was just installed and this ready has not taken it
            // yet: a chunk of another one written before that install would
            // break the write order. The leader resends it.
            return;
        }
        if offset == 0 && self.log.matches_term(index, meta.term) {
            // Our log holds the snapshot's last entry, so it matches the
            // leader's up to there: no need for the data.
            self.log.commit_to(index);
            self.reply_append_accepted(from, index);
            return;
        }
        let continues = self
            .incoming
            .as_ref()
            .is_some_and(|incoming| incoming.from == from && incoming.meta == meta);
        if offset == 0 && !continues {
            self.incoming = Some(Incoming {
                from,
                meta: meta.clone(),
                received: 0,
            });
        }
        let received = match self.incoming.as_mut() {
            Some(incoming) if incoming.from == from && incoming.meta == meta => {
                if offset == incoming.received {
                    incoming.received += data.len() as u64;
                    self.chunks_out.push(IncomingChunk {
                        index,
                        term: meta.term,
                        offset,
                        data,
                    });
                    if last {
                        self.incoming = None;
                        self.install_snapshot(from, meta);
                        return;
                    }
                }
                incoming.received
            }
            // A transfer we know nothing of (we restarted, or it comes from
            // another leader): it must start over.
            _ => 0,
        };
        let reply = self.message(
            from,
            MessageBody::SnapshotResponse {
                index,
                offset: received,
            },
        );
        self.send(reply);
    }

    /// The last chunk of `meta` arrived: replace the log by the snapshot,
    /// unless the log caught up with it meanwhile.
    fn install_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        if self.log.matches_term(meta.index, meta.term) {
            self.log.commit_to(meta.index);
            self.reply_append_accepted(from, meta.index);
            return;
        }
        let index = meta.index;
        self.conf_history = vec![(index, meta.configuration.clone())];
        self.log.restore(meta);
        // Acknowledgements of earlier writes can no longer prove anything
        // about the log: it was replaced.
        for record in &mut self.persist_records {
            record.last = None;
        }
        self.on_configuration_changed();
        self.stats.snapshots_installed += 1;
        // Sent once the install is durable (the snapshot counts as unemitted).
        self.reply_append_accepted(from, index);
    }

    fn reply_append_accepted(&mut self, to: NodeId, index: Index) {
        let reply = self.message(
            to,
            MessageBody::AppendResponse {
                reject: false,
                index,
                hint_index: 0,
                hint_term: 0,
            },
        );
        self.send(reply);
    }

    // ----- Leader handlers --------------------------------------------------

    fn handle_snapshot_response(&mut self, from: NodeId, index: Index, offset: u64) -> Result<(), RejectReason> {
        let Some(pr) = self.progress_mut(from) else {
            return Err(RejectReason::UnknownSender);
        };
        pr.recent_active = true;
        let Some(outgoing) = pr.snapshot.as_mut().filter(|outgoing| outgoing.meta.index == index) else {
            // About a transfer that ended or was replaced.
            return Ok(());
        };
        if outgoing.total.is_some_and(|total| offset > total) {
            return Err(RejectReason::Malformed("snapshot offset beyond its size"));
        }
        if outgoing.on_ack(offset) {
            self.send_snapshot_chunks(from);
        }
        Ok(())
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) -> Result<(), RejectReason> {
        let last = self.log.last_index();
        if index > last {
            return Err(RejectReason::IndexOutOfRange {
                index,
                last_index: last,
            });
        }
        if reject {
            // Skip the follower's whole conflicting term in one step.
            let next = if hint_term > 0 {
                self.log.find_conflict_by_term(hint_index.min(last), hint_term).0 + 1
            } else {
                hint_index.min(last) + 1
            };
            let next = next.min(index.max(1));
            let Some(pr) = self.progress_mut(from) else {
                return Err(RejectReason::UnknownSender);
            };
            pr.recent_active = true;
            if pr.on_append_rejected(index, next) {
                self.send_append(from, AppendMode::Always);
            }
            return Ok(());
        }
        let Some(pr) = self.progress_mut(from) else {
            return Err(RejectReason::UnknownSender);
        };
        pr.recent_active = true;
        let advanced = pr.on_append_accepted(index);
        // An installed snapshot is acknowledged at its index (or above, if
        // the follower's log already held it).
        let installed = pr
            .snapshot
            .as_ref()
            .is_some_and(|outgoing| pr.match_index >= outgoing.meta.index);
        let was_probe = pr.state == ProgressState::Probe || installed;
        // A probe answered at the index we already knew still confirms the
        // follower matches, so it moves to replicate.
        let confirmed_probe = pr.state == ProgressState::Probe && pr.match_index == index;
        if !(advanced || confirmed_probe || installed) {
            return Ok(());
        }
        if was_probe {
            pr.become_replicate();
        }
        let match_index = pr.match_index;
        if self.maybe_commit() {
            self.needs_broadcast = true;
        }
        if self.role != Role::Leader {
            return Ok(());
        }
        // Keep the pipeline full for this follower.
        while self.send_append(from, AppendMode::Entries) {}
        if from == self.transfer_target && match_index == self.log.last_index() {
            self.send_timeout_now(from);
        }
        Ok(())
    }

    /// Advances the commit index to the highest index a quorum holds durably,
    /// if that entry is from the current term (§5.4.2, Figure 8).
    fn maybe_commit(&mut self) -> bool {
        // The leader counts its own log only once it is durable; while joint
        // both halves need a majority.
        let quorum_index = self.configuration.committed_index(|id| self.match_of(id));
        if quorum_index <= self.log.commit {
            return false;
        }
        // Invariant: only entries of the current term are committed by
        // counting replicas; earlier ones commit indirectly.
        if self.log.term(quorum_index) != Some(self.term) {
            return false;
        }
        let first_in_term = self.log.term(self.log.commit) != Some(self.term);
        self.log.commit_to(quorum_index);
        if first_in_term {
            let waiting = std::mem::take(&mut self.reads_before_commit);
            for (from, request_id) in waiting {
                if self.leader_read(from, request_id).is_err() {
                    self.stats.reads_dropped += 1;
                }
            }
        }
        true
    }

    fn committed_in_term(&self) -> bool {
        self.log.term(self.log.commit) == Some(self.term)
    }

    fn leader_read(&mut self, from: NodeId, request_id: u64) -> Result<(), ReadError> {
        if self.pending_reads.len() + self.reads_before_commit.len() >= self.config.pending_reads_max {
            return Err(ReadError::TooManyPending {
                limit: self.config.pending_reads_max,
            });
        }
        if !self.committed_in_term() {
            // §6.4 step 1: until an entry of this term commits, the leader
            // does not know the latest commit index.
            self.reads_before_commit.push((from, request_id));
            return Ok(());
        }
        let index = self.log.commit;
        if self.is_single_voter() {
            self.answer_read(from, request_id, index);
            return Ok(());
        }
        if let ReadMode::Lease { .. } = self.config.read_mode {
            if !self.transfer_started_in_term && self.ticks < self.lease_expires_tick {
                self.answer_read(from, request_id, index);
                return Ok(());
            }
        }
        self.pending_reads.push_back(PendingRead {
            round: self.heartbeat_round + 1,
            index,
            request_id,
            from,
        });
        self.read_round_wanted = true;
        Ok(())
    }

    fn answer_read(&mut self, from: NodeId, request_id: u64, index: Index) {
        if from == self.id {
            self.read_states.push(ReadState { request_id, index });
        } else {
            let reply = self.message(from, MessageBody::ReadIndexResponse { request_id, index });
            self.send(reply);
        }
    }

    /// Releases reads whose heartbeat round a quorum acknowledged, and
    /// extends the lease from the newest such round.
    fn confirm_reads(&mut self) {
        let round = self.configuration.committed_index(|id| {
            if id == self.id {
                return self.heartbeat_round;
            }
            match self.progress.binary_search_by_key(&id, |pr| pr.id) {
                Ok(at) => self.progress[at].read_seq_acked,
                Err(_) => 0,
            }
        });
        if let ReadMode::Lease { drift_margin_ticks } = self.config.read_mode {
            while let Some(&(sent_round, sent_tick)) = self.heartbeat_rounds.front() {
                if sent_round > round {
                    break;
                }
                self.heartbeat_rounds.pop_front();
                if sent_round == round {
                    let expires = sent_tick + self.config.election_ticks - drift_margin_ticks;
                    self.lease_expires_tick = self.lease_expires_tick.max(expires);
                }
            }
        }
        while let Some(read) = self.pending_reads.front() {
            if read.round > round {
                break;
            }
            let read = self.pending_reads.pop_front().expect("front was just seen");
            self.answer_read(read.from, read.request_id, read.index);
        }
    }

    // ----- Sending ----------------------------------------------------------

    fn message(&self, to: NodeId, body: MessageBody) -> Message {
        Message {
            from: self.id,
            to,
            term: self.term,
            body,
        }
    }

    /// Queues a message, holding it back when it depends on state that is
    /// not yet durable: vote requests and replies depend on term and vote,
    /// append replies on the entries they acknowledge.
    fn send(&mut self, message: Message) {
        let term_or_vote_dirty = self.term != self.emitted_hard_state.term || self.vote != self.emitted_hard_state.vote;
        let barrier = match message.body {
            MessageBody::Vote { .. }
            | MessageBody::VoteResponse { .. }
            | MessageBody::AppendResponse { .. }
            | MessageBody::SnapshotResponse { .. } => {
                if term_or_vote_dirty || self.log.has_unemitted() || !self.chunks_out.is_empty() {
                    self.ready_seq + 1
                } else {
                    self.last_persist_seq
                }
            }
            // Every other message carries our term: it waits only for that
            // term (and vote) to be durable. In steady state they are, and
            // the message leaves at once; a leader that won alone (a single
            // voter) must not reach learners with a term it could forget.
            _ => {
                if term_or_vote_dirty {
                    self.ready_seq + 1
                } else {
                    self.last_term_persist_seq
                }
            }
        };
        if barrier <= self.persisted_seq {
            self.messages.push(message);
        } else {
            self.held.push_back((barrier, message));
        }
    }

    /// Sends the next append to `to` if its progress allows. Returns whether
    /// a message carrying entries was sent.
    fn send_append(&mut self, to: NodeId, mode: AppendMode) -> bool {
        let last = self.log.last_index();
        let commit = self.log.commit;
        let bytes_max = self.config.message_bytes_max;
        let Ok(at) = self.progress.binary_search_by_key(&to, |pr| pr.id) else {
            return false;
        };
        let pr = &self.progress[at];
        if pr.is_paused() {
            return false;
        }
        let next = pr.next_index;
        let prev_index = next - 1;
        let read = self.log.term_checked(prev_index).and_then(|prev_term| {
            if next > last {
                Ok((prev_term, Vec::new()))
            } else {
                self.log
                    .entries(next, last + 1, bytes_max)
                    .map(|entries| (prev_term, entries))
            }
        });
        let (prev_term, entries) = match read {
            Ok(read) => read,
            Err(StorageError::Compacted { .. }) => {
                // The follower needs entries compacted into a snapshot.
                if self.start_snapshot(at) {
                    self.send_snapshot_chunks(to);
                }
                return false;
            }
            Err(error) => panic!("node {}: log storage failed for follower {to}: {error}", self.id),
        };
        let is_probe = self.progress[at].state == ProgressState::Probe;
        // An empty append in replicate state only carries the commit index:
        // skip it when the follower already has that.
        let commit_known = self.progress[at].commit_sent >= commit;
        let send_empty = match mode {
            AppendMode::Entries => false,
            AppendMode::EntriesOrCommit => !commit_known,
            AppendMode::Always => true,
        };
        if entries.is_empty() && !is_probe && !send_empty {
            return false;
        }
        self.progress[at].commit_sent = self.progress[at].commit_sent.max(commit);
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let last_sent = entries.last().map(|entry| entry.index);
        self.progress[at].on_append_sent(last_sent, bytes);
        self.send(Message {
            from: self.id,
            to,
            term: self.term,
            body: MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        });
        last_sent.is_some() && !is_probe
    }

    /// Starts sending the stored snapshot to the follower at `at`. Without
    /// a snapshot covering the compacted entries (a storage bug, or one
    /// being installed here) the follower is held, and a heartbeat answer
    /// retries.
    fn start_snapshot(&mut self, at: usize) -> bool {
        let first_index = self.log.first_index();
        let snapshot = self
            .log
            .storage()
            .snapshot()
            .filter(|snapshot| snapshot.index + 1 >= first_index);
        let pr = &mut self.progress[at];
        match snapshot {
            Some(meta) => {
                pr.become_snapshot(meta);
                self.stats.snapshots_sent += 1;
                true
            }
            None => {
                pr.become_probe();
                pr.probe_sent = true;
                self.stats.snapshot_needed += 1;
                false
            }
        }
    }

    /// Sends snapshot chunks to `to` while its window of unacknowledged
    /// bytes has room.
    fn send_snapshot_chunks(&mut self, to: NodeId) {
        let Ok(at) = self.progress.binary_search_by_key(&to, |pr| pr.id) else {
            return;
        };
        // Bounded: a window's worth of chunks, plus one restart when the
        // stored snapshot was replaced by a newer one.
        let mut restarts = 0;
        loop {
            let Some(outgoing) = self.progress[at].snapshot.as_ref() else {
                return;
            };
            if outgoing.all_sent() || outgoing.in_flight() >= self.config.snapshot_inflight_bytes_max {
                return;
            }
            let (index, offset) = (outgoing.meta.index, outgoing.sent);
            match self
                .log
                .storage()
                .snapshot_chunk(index, offset, self.config.snapshot_chunk_bytes)
            {
                Ok(chunk) => {
                    let length = chunk.data.len() as u64;
                    let outgoing = self.progress[at].snapshot.as_mut().expect("seen above");
                    outgoing.sent = offset + length;
                    if chunk.last {
                        outgoing.total = Some(offset + length);
                    }
                    let meta = outgoing.meta.clone();
                    self.stats.snapshot_chunks_sent += 1;
                    let message = self.message(
                        to,
                        MessageBody::InstallSnapshot {
                            meta,
                            offset,
                            data: chunk.data,
                            last: chunk.last,
                        },
                    );
                    self.send(message);
                    if length == 0 && !chunk.last {
                        panic!(
                            "node {}: storage returned an empty snapshot chunk before the end",
                            self.id
                        );
                    }
                }
                Err(StorageError::SnapshotUnavailable { .. }) if restarts == 0 => {
                    // A newer snapshot replaced it: send that one instead.
                    restarts += 1;
                    if !self.start_snapshot(at) {
                        return;
                    }
                }
                Err(StorageError::SnapshotUnavailable { .. }) => {
                    self.progress[at].become_probe();
                    return;
                }
                Err(error) => panic!("node {}: reading the snapshot for {to} failed: {error}", self.id),
            }
        }
    }

    fn broadcast_append(&mut self) {
        let mode = if self.log.commit > self.commit_broadcast {
            AppendMode::EntriesOrCommit
        } else {
            AppendMode::Entries
        };
        for at in 0..self.progress.len() {
            let to = self.progress[at].id;
            while self.send_append(to, mode) {
                if self.progress[at].next_index > self.log.last_index() {
                    break;
                }
            }
        }
    }

    fn broadcast_heartbeat(&mut self) {
        self.heartbeat_round += 1;
        self.read_round_wanted = false;
        if matches!(self.config.read_mode, ReadMode::Lease { .. }) {
            if self.heartbeat_rounds.len() >= HEARTBEAT_ROUNDS_MAX {
                self.heartbeat_rounds.pop_front();
            }
            self.heartbeat_rounds.push_back((self.heartbeat_round, self.ticks));
        }
        for at in 0..self.progress.len() {
            let pr = &self.progress[at];
            let message = Message {
                from: self.id,
                to: pr.id,
                term: self.term,
                body: MessageBody::Heartbeat {
                    commit: pr.match_index.min(self.log.commit),
                    read_seq: self.heartbeat_round,
                },
            };
            self.send(message);
        }
        if self.progress.is_empty() {
            self.confirm_reads();
        }
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        self.transfer_started_in_term = true;
        let message = self.message(to, MessageBody::TimeoutNow);
        self.send(message);
    }

    // ----- Role transitions -------------------------------------------------

    fn reset_election_timeout(&mut self) {
        let base = self.config.election_ticks;
        self.election_timeout = self.rng.range(base, 2 * base);
    }

    fn reset(&mut self, term: Term) {
        if self.term != term {
            assert!(term > self.term, "term went backwards: {} -> {term}", self.term);
            self.term = term;
            // Invariant (RELIABILITY #4): the vote is cleared only here,
            // together with a term change.
            self.vote = NO_NODE;
            self.transfer_started_in_term = false;
        }
        self.leader = NO_NODE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_election_timeout();
        self.transfer_target = NO_NODE;
        self.votes.clear();
        self.progress.clear();
        self.pending_reads.clear();
        self.reads_before_commit.clear();
        self.heartbeat_rounds.clear();
        self.lease_expires_tick = 0;
        self.uncommitted_bytes = 0;
        self.needs_broadcast = false;
        self.read_round_wanted = false;
    }

    fn become_follower(&mut self, term: Term, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn become_pre_candidate(&mut self) {
        // A pre-candidate keeps its term and vote: pre-votes change nothing.
        self.role = Role::PreCandidate;
        self.leader = NO_NODE;
        self.votes.clear();
        self.progress.clear();
        self.election_elapsed = 0;
        self.reset_election_timeout();
    }

    fn become_candidate(&mut self) {
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        assert!(self.role == Role::Candidate, "only a candidate becomes leader");
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = self.id;
        let next = self.log.last_index() + 1;
        let (messages_max, bytes_max) = (self.config.inflight_messages_max, self.config.inflight_bytes_max);
        self.progress = self
            .configuration
            .members()
            .into_iter()
            .filter(|&member| member != self.id)
            .map(|member| {
                let mut pr = Progress::new(member, next, messages_max, bytes_max);
                // A fresh leader treats everyone as active for one round.
                pr.recent_active = true;
                pr
            })
            .collect();
        // A configuration change waits until everything before this term's
        // first entry is committed (Ongaro, raft-dev, July 2015).
        self.pending_conf_index = next;
        self.commit_broadcast = self.log.commit;
        // §5.4.2 / §6.4: an entry of the new term lets the leader commit
        // (and learn the commit index for reads).
        let index = self.log.last_index() + 1;
        self.log.append([Entry {
            term: self.term,
            index,
            kind: EntryKind::Empty,
            data: Bytes::new(),
        }]);
        self.needs_broadcast = true;
    }

    /// Starts a pre-vote round or an election.
    fn campaign(&mut self, kind: Campaign) {
        if kind == Campaign::PreVote {
            self.become_pre_candidate();
        } else {
            self.become_candidate();
        }
        let transfer = kind == Campaign::Transfer;
        self.record_vote(self.id, true);
        if !matches!(self.role, Role::PreCandidate | Role::Candidate) {
            return; // Won alone (single voter).
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let pre_vote = self.role == Role::PreCandidate;
        let term = self.term + u64::from(pre_vote);
        let peers: Vec<NodeId> = self
            .configuration
            .members()
            .into_iter()
            .filter(|&member| member != self.id && self.configuration.is_voter(member))
            .collect();
        for to in peers {
            let body = if pre_vote {
                MessageBody::PreVote {
                    last_log_index,
                    last_log_term,
                }
            } else {
                MessageBody::Vote {
                    last_log_index,
                    last_log_term,
                    transfer,
                }
            };
            self.send(Message {
                from: self.id,
                to,
                term,
                body,
            });
        }
    }

    /// Records a (pre-)vote and acts on a decided election.
    fn record_vote(&mut self, from: NodeId, granted: bool) {
        if !self.votes.iter().any(|(voter, _)| *voter == from) {
            self.votes.push((from, granted));
        }
        let votes = &self.votes;
        let result = self.configuration.vote_result(|id| {
            votes
                .iter()
                .find(|(voter, _)| *voter == id)
                .map(|(_, granted)| *granted)
        });
        match result {
            VoteResult::Won if self.role == Role::PreCandidate => self.campaign(Campaign::Election),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, NO_NODE),
            VoteResult::Pending => {}
        }
    }

    // ----- Output -----------------------------------------------------------

    /// Whether `ready` would return any work.
    pub fn has_ready(&self) -> bool {
        self.leader_conf_duties_due()
            || (self.role == Role::Leader
                && (self.needs_broadcast || self.read_round_wanted || self.log.commit > self.commit_broadcast))
            || !self.messages.is_empty()
            || !self.chunks_out.is_empty()
            || self.log.has_unemitted()
            || self.hard_state() != self.emitted_hard_state
            || self.log.has_next_committed()
            || !self.read_states.is_empty()
            || self.soft_state() != self.emitted_soft_state
    }

    /// Collects the work accumulated since the last call. See [`Ready`] for
    /// what the application must do with it.
    ///
    /// # Panics
    /// If log storage fails while reading committed entries (the node must
    /// stop rather than guess).
    pub fn ready(&mut self) -> Ready {
        self.do_leader_conf_duties();
        self.prune_conf_history();
        if self.role == Role::Leader {
            if self.needs_broadcast || self.log.commit > self.commit_broadcast {
                self.needs_broadcast = false;
                self.broadcast_append();
                // Paused followers learn the commit index from heartbeats.
                self.commit_broadcast = self.log.commit;
            }
            if self.read_round_wanted {
                self.broadcast_heartbeat();
            }
        }
        let snapshot = self.log.take_unemitted_snapshot();
        let snapshot_chunks = std::mem::take(&mut self.chunks_out);
        let entries = self.log.take_unemitted();
        let hard_state = self.hard_state();
        let hard_state = (hard_state != self.emitted_hard_state).then_some(hard_state);
        if !entries.is_empty() || hard_state.is_some() || snapshot.is_some() || !snapshot_chunks.is_empty() {
            let term_or_vote_changed = hard_state.is_some_and(|hard_state| {
                (hard_state.term, hard_state.vote) != (self.emitted_hard_state.term, self.emitted_hard_state.vote)
            });
            if let Some(hard_state) = hard_state {
                // Pair with the storage's check: a hard state never goes back.
                assert!(hard_state.term >= self.emitted_hard_state.term);
                self.emitted_hard_state = hard_state;
            }
            if let Some(first) = entries.first() {
                self.clamp_overwritten_persist_records(first.index);
            }
            self.ready_seq += 1;
            self.last_persist_seq = self.ready_seq;
            if term_or_vote_changed {
                self.last_term_persist_seq = self.ready_seq;
            }
            self.persist_records.push_back(PersistRecord {
                seq: self.ready_seq,
                last: entries.last().map(|entry| (entry.index, entry.term)),
                snapshot: snapshot.as_ref().map(|snapshot| snapshot.index),
            });
        }
        let committed_entries = self
            .log
            .take_committed(self.config.committed_bytes_per_ready_max)
            .unwrap_or_else(|error| panic!("node {}: reading committed entries failed: {error}", self.id));
        if self.role == Role::Leader {
            let bytes: u64 = committed_entries.iter().map(Entry::size_bytes).sum();
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(bytes);
        }
        let soft_state = self.soft_state();
        let soft_state = (soft_state != self.emitted_soft_state).then(|| {
            self.emitted_soft_state = soft_state;
            soft_state
        });
        let ready = Ready {
            seq: self.ready_seq,
            soft_state,
            hard_state,
            entries,
            messages: std::mem::take(&mut self.messages),
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
            snapshot_chunks,
            snapshot,
        };
        self.debug_check();
        ready
    }

    /// This ready overwrites the log from `first`. Earlier readies not yet
    /// acknowledged may carry entries at or above `first` that this one
    /// replaces on disk; their acknowledgement can only prove the prefix
    /// below `first` durable, even if the log by then holds entries with the
    /// same index and term again.
    fn clamp_overwritten_persist_records(&mut self, first: Index) {
        let below = first - 1;
        let kept = if below == 0 {
            None
        } else {
            self.log.term(below).map(|term| (below, term))
        };
        for record in &mut self.persist_records {
            if record.last.is_some_and(|(index, _)| index >= first) {
                record.last = kept;
            }
        }
    }

    // ----- Invariants -------------------------------------------------------

    fn debug_check(&self) {
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// Asserts the node's invariants; cheap (no log scan).
    pub fn check_invariants(&self) {
        self.log.check_invariants();
        self.configuration.check_invariants();
        assert!(
            self.log.last_term() <= self.term,
            "node {}: last log term {} above current term {}",
            self.id,
            self.log.last_term(),
            self.term
        );
        match self.role {
            Role::Leader => {
                assert_eq!(self.leader, self.id, "a leader names itself");
                assert_eq!(self.vote, self.id, "a leader voted for itself");
                for pr in &self.progress {
                    pr.check_invariants();
                    assert!(pr.match_index <= self.log.last_index());
                }
            }
            Role::Candidate => {
                assert_eq!(self.vote, self.id, "a candidate voted for itself");
                assert_eq!(self.leader, NO_NODE);
            }
            Role::PreCandidate => assert_eq!(self.leader, NO_NODE),
            Role::Follower => assert!(self.progress.is_empty()),
        }
        assert!(self.emitted_hard_state.term <= self.term);
        if let Some((barrier, _)) = self.held.front() {
            assert!(*barrier > self.persisted_seq, "held message already releasable");
        }
        assert!(self.persisted_seq <= self.ready_seq);
    }
}

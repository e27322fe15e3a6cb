//! Validated settings of one node's core. Every bound the core enforces is
//! a named field here, checked by `Config::validate` before use.

use crate::types::{Index, NodeId, Term, NO_NODE};

/// How the leader confirms linearizable reads (dissertation §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex: each batch of reads is confirmed by one heartbeat round
    /// acknowledged by a quorum. Safe without any clock assumption.
    Safe,
    /// Lease: the leader answers from its commit index without a round trip
    /// while a quorum acknowledged a heartbeat sent less than
    /// `election_ticks - drift_margin_ticks` ticks ago. Correct only if no
    /// node's tick runs faster than the leader's by more than the margin over
    /// one election timeout (clock drift bounded), and requires check-quorum.
    Lease { drift_margin_ticks: u64 },
}

/// Configuration of one node's consensus core.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; never [`NO_NODE`].
    pub id: NodeId,
    /// The bootstrap voters: the cluster's initial members. Every node of a
    /// cluster, including one that joins later, is given the same bootstrap
    /// configuration; changes since come from the log.
    pub voters: Vec<NodeId>,
    /// The bootstrap learners (non-voting members).
    pub learners: Vec<NodeId>,
    /// Minimum election timeout T in ticks; the actual timeout is drawn
    /// uniformly from `[T, 2T)` at every reset (§5.2).
    pub election_ticks: u64,
    /// Heartbeat interval H in ticks; must be below `election_ticks`.
    pub heartbeat_ticks: u64,
    /// A leader that has not heard from a quorum for an election timeout
    /// steps down; followers ignore votes while they hear from a leader.
    pub check_quorum: bool,
    /// Run a pre-vote round before starting an election (§9.6).
    pub pre_vote: bool,
    pub read_mode: ReadMode,
    /// Cap on the entry bytes of one append message (at least one entry is
    /// always sent).
    pub message_bytes_max: u64,
    /// Appends in flight per follower in replicate state.
    pub inflight_messages_max: usize,
    /// Bytes in flight per follower in replicate state.
    pub inflight_bytes_max: u64,
    /// Largest payload accepted for one entry, from clients or peers.
    pub entry_bytes_max: u64,
    /// Entries accepted in one append message from a peer.
    pub append_entries_max: usize,
    /// Proposals are refused while this many bytes are uncommitted.
    pub uncommitted_bytes_max: u64,
    /// Cap on the committed entry bytes handed out in one `Ready`.
    pub committed_bytes_per_ready_max: u64,
    /// Reads waiting for confirmation at the leader.
    pub pending_reads_max: usize,
    /// Bytes of snapshot data per `InstallSnapshot` chunk.
    pub snapshot_chunk_bytes: u64,
    /// Snapshot bytes sent and not acknowledged, per follower
    /// (back-pressure on snapshot transfer).
    pub snapshot_inflight_bytes_max: u64,
    /// Entries kept below the latest snapshot when compacting, so a
    /// follower slightly behind catches up from the log instead of needing
    /// a whole snapshot (etcd's snapshot catch-up entries).
    pub compaction_tail_entries: u64,
    /// Index the state machine has already applied (restart resumes after
    /// it). With a stored snapshot it is at least the snapshot's index: the
    /// application restores its state from the snapshot first.
    pub applied: Index,
    /// Seed of the node's random generator (election timeouts).
    pub seed: u64,
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("node id must not be 0")]
    ZeroId,
    #[error("member id must not be 0")]
    ZeroVoter,
    #[error("member {0} is listed twice")]
    DuplicateVoter(NodeId),
    #[error("the voter list is empty")]
    NoVoters,
    #[error("heartbeat_ticks must be at least 1")]
    ZeroHeartbeat,
    #[error("election_ticks ({election}) must be greater than heartbeat_ticks ({heartbeat})")]
    ElectionNotAboveHeartbeat { election: u64, heartbeat: u64 },
    #[error("{0} must be at least 1")]
    ZeroBound(&'static str),
    #[error("snapshot_chunk_bytes ({bytes}) is above the {limit}-byte limit peers accept")]
    ChunkAboveLimit { bytes: u64, limit: u64 },
    #[error("lease reads require check_quorum")]
    LeaseWithoutCheckQuorum,
    #[error("lease drift margin ({margin}) must be below election_ticks ({election})")]
    LeaseMarginTooLarge { margin: u64, election: u64 },
    #[error(
        "applied index {applied} is beyond the stored log (last index {last_index}): state machine and log disagree"
    )]
    AppliedBeyondLog { applied: Index, last_index: Index },
    #[error("the stored log cannot be read: {0}")]
    LogUnreadable(String),
    #[error("the stored snapshot at {index} has term {snapshot_term} but the stored log has term {log_term} there: storage is inconsistent")]
    SnapshotDisagreesWithLog {
        index: Index,
        snapshot_term: Term,
        log_term: Term,
    },
    #[error("the log is compacted below index {first_index} and storage holds no snapshot covering it")]
    CompactedWithoutSnapshot { first_index: Index },
    #[error(
        "applied index {applied} is below the stored snapshot at {snapshot_index}: restore the state machine from the snapshot first"
    )]
    AppliedBelowSnapshot { applied: Index, snapshot_index: Index },
}

impl Config {
    /// Defaults that suit a LAN cluster ticking every 100 ms, as etcd's.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Config {
            id,
            voters,
            learners: Vec::new(),
            election_ticks: 10,
            heartbeat_ticks: 1,
            check_quorum: true,
            pre_vote: true,
            read_mode: ReadMode::Safe,
            message_bytes_max: 1 << 20,
            inflight_messages_max: 256,
            inflight_bytes_max: 32 << 20,
            entry_bytes_max: 8 << 20,
            append_entries_max: 1 << 16,
            uncommitted_bytes_max: 1 << 30,
            committed_bytes_per_ready_max: 64 << 20,
            pending_reads_max: 1 << 16,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_inflight_bytes_max: 8 << 20,
            compaction_tail_entries: 5_000,
            applied: 0,
            seed: id,
        }
    }

    /// # Errors
    /// The first rule the configuration breaks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == NO_NODE {
            return Err(ConfigError::ZeroId);
        }
        if self.voters.is_empty() {
            return Err(ConfigError::NoVoters);
        }
        let mut seen = std::collections::BTreeSet::new();
        for &voter in &self.voters {
            if voter == NO_NODE {
                return Err(ConfigError::ZeroVoter);
            }
            if !seen.insert(voter) {
                return Err(ConfigError::DuplicateVoter(voter));
            }
        }
        for &learner in &self.learners {
            if learner == NO_NODE {
                return Err(ConfigError::ZeroVoter);
            }
            if !seen.insert(learner) {
                return Err(ConfigError::DuplicateVoter(learner));
            }
        }
        if self.heartbeat_ticks == 0 {
            return Err(ConfigError::ZeroHeartbeat);
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return Err(ConfigError::ElectionNotAboveHeartbeat {
                election: self.election_ticks,
                heartbeat: self.heartbeat_ticks,
            });
        }
        let bounds: [(&'static str, u64); 9] = [
            ("message_bytes_max", self.message_bytes_max),
            ("inflight_messages_max", self.inflight_messages_max as u64),
            ("inflight_bytes_max", self.inflight_bytes_max),
            ("append_entries_max", self.append_entries_max as u64),
            ("uncommitted_bytes_max", self.uncommitted_bytes_max),
            ("committed_bytes_per_ready_max", self.committed_bytes_per_ready_max),
            ("pending_reads_max", self.pending_reads_max as u64),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
            ("snapshot_inflight_bytes_max", self.snapshot_inflight_bytes_max),
        ];
        for (name, value) in bounds {
            if value == 0 {
                return Err(ConfigError::ZeroBound(name));
            }
        }
        if self.snapshot_chunk_bytes > crate::snapshot::SNAPSHOT_CHUNK_BYTES_LIMIT {
            return Err(ConfigError::ChunkAboveLimit {
                bytes: self.snapshot_chunk_bytes,
                limit: crate::snapshot::SNAPSHOT_CHUNK_BYTES_LIMIT,
            });
        }
        if let ReadMode::Lease { drift_margin_ticks } = self.read_mode {
            if !self.check_quorum {
                return Err(ConfigError::LeaseWithoutCheckQuorum);
            }
            if drift_margin_ticks >= self.election_ticks {
                return Err(ConfigError::LeaseMarginTooLarge {
                    margin: drift_margin_ticks,
                    election: self.election_ticks,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(Config::new(1, vec![1, 2, 3]).validate(), Ok(()));
    }

    #[test]
    fn invalid_configs_are_refused_with_the_rule_broken() {
        assert_eq!(Config::new(0, vec![1]).validate(), Err(ConfigError::ZeroId));
        assert_eq!(Config::new(1, vec![]).validate(), Err(ConfigError::NoVoters));
        assert_eq!(
            Config::new(1, vec![1, 1]).validate(),
            Err(ConfigError::DuplicateVoter(1))
        );
        let mut config = Config::new(1, vec![1]);
        config.election_ticks = 1;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::ElectionNotAboveHeartbeat { .. })
        ));
        let mut config = Config::new(1, vec![1]);
        config.check_quorum = false;
        config.read_mode = ReadMode::Lease { drift_margin_ticks: 1 };
        assert_eq!(config.validate(), Err(ConfigError::LeaseWithoutCheckQuorum));
    }
}

//! Errors at the core's API boundaries, one enum per operation, each variant
//! carrying what the caller needs to act (for example the leader to retry at).

use crate::types::{Index, NodeId, NO_NODE};

pub(crate) fn not_leader_text(leader_hint: NodeId) -> String {
    if leader_hint == NO_NODE {
        "not the leader, and no leader is known".to_string()
    } else {
        format!("not the leader; node {leader_hint} leads")
    }
}

/// Why a proposal was refused. Nothing was appended when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("{}", not_leader_text(*leader_hint))]
    NotLeader { leader_hint: NodeId },
    #[error("leadership transfer to {target} in progress")]
    TransferInProgress { target: NodeId },
    #[error("the leader is leaving the cluster (a change removing it is in progress)")]
    LeaderLeaving,
    #[error("entry of {bytes} bytes exceeds the {limit}-byte limit")]
    EntryTooLarge { bytes: u64, limit: u64 },
    #[error("too much uncommitted data ({bytes} bytes, limit {limit}); retry later")]
    Backpressure { bytes: u64, limit: u64 },
}

/// Why a linearizable read could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no leader is known")]
    NoLeader,
    #[error("too many reads pending ({limit})")]
    TooManyPending { limit: usize },
}

/// Why a leadership transfer could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("{}", not_leader_text(*leader_hint))]
    NotLeader { leader_hint: NodeId },
    #[error("node {0} is already the leader")]
    AlreadyLeader(NodeId),
    #[error("node {0} is not a voter of this cluster")]
    NotAVoter(NodeId),
    #[error("leadership transfer to {target} already in progress")]
    InProgress { target: NodeId },
}

/// Why an incoming message was dropped. The node's state is unchanged
/// except where the reason says otherwise; the caller only counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("message addressed to another node")]
    WrongRecipient,
    #[error("message from an unknown node")]
    UnknownSender,
    #[error("message from a stale term")]
    StaleTerm,
    #[error("vote request ignored inside the leader lease")]
    InsideLease,
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("message not expected in the current role")]
    UnexpectedInRole,
    #[error("index {index} out of range (last index {last_index})")]
    IndexOutOfRange { index: Index, last_index: Index },
    #[error("log storage failed")]
    Storage,
}

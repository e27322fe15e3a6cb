//! Errors the server returns to clients, with etcd's gRPC codes and
//! messages (one place for the mapping, as STYLE asks).

use raftwerk_kv::KvError;
use raftwerk_raft::NodeId;
use tonic::{Code, Status};

/// Why a client request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Kv(KvError),
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: no leader")]
    NoLeader,
    /// This node does not lead; `leader` does.
    #[error("etcdserver: not leader")]
    NotLeader { leader: NodeId },
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlsExist,
    /// etcd's message; the detail goes to the log.
    #[error("etcdserver: given member URLs are invalid")]
    BadPeerUrls(String),
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: too many operations in txn request")]
    TooManyTxnOps,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// The consensus core refused a membership change (one at a time, no
    /// change that leaves no voter, ...).
    #[error("etcdserver: {0}")]
    MembershipRefused(String),
    #[error("{0}")]
    Internal(String),
}

impl From<KvError> for ServerError {
    fn from(error: KvError) -> Self {
        ServerError::Kv(error)
    }
}

impl From<ServerError> for Status {
    fn from(error: ServerError) -> Self {
        let code = match &error {
            ServerError::Kv(KvError::Compacted { .. } | KvError::FutureRevision { .. }) => Code::OutOfRange,
            ServerError::Kv(
                KvError::KeyNotFound
                | KvError::DuplicateKey
                | KvError::EmptyKey
                | KvError::ValueProvided
                | KvError::LeaseProvided,
            ) => Code::InvalidArgument,
            ServerError::Kv(KvError::LeaseNotFound | KvError::MemberNotFound) => Code::NotFound,
            ServerError::Kv(KvError::InvalidMember(_)) => Code::InvalidArgument,
            ServerError::Kv(KvError::ReadsInProgress) => Code::Unavailable,
            ServerError::BadPeerUrls(_) => Code::InvalidArgument,
            ServerError::TooManyTxnOps => Code::InvalidArgument,
            ServerError::PeerUrlsExist
            | ServerError::BadLeaderTransferee
            | ServerError::TooManyLearners
            | ServerError::NotLearner
            | ServerError::LearnerNotReady
            | ServerError::MembershipRefused(_) => Code::FailedPrecondition,
            ServerError::Kv(_) | ServerError::Internal(_) => Code::Internal,
            ServerError::RequestTooLarge => Code::InvalidArgument,
            ServerError::TooManyRequests => Code::ResourceExhausted,
            ServerError::NoLeader
            | ServerError::NotLeader { .. }
            | ServerError::LeaderChanged
            | ServerError::Timeout
            | ServerError::Stopped => Code::Unavailable,
        };
        Status::new(code, error.to_string())
    }
}

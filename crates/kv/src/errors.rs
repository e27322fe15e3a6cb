//! Errors of the key space, with etcd's messages (the server maps them to
//! etcd's gRPC codes).

/// Why a request could not be served. Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted { revision: i64, compact_revision: i64 },
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision { revision: i64, current: i64 },
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// raftwerk grants no leases yet, so every lease id is unknown.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: invalid member: {0}")]
    InvalidMember(&'static str),
    /// Defragment needs the key space to itself.
    #[error("etcdserver: defragment: reads in progress (a backup or a long range); retry")]
    ReadsInProgress,
    #[error("undecodable command: {0}")]
    BadCommand(&'static str),
    #[error("state machine storage failed: {0}")]
    Storage(String),
}

macro_rules! storage_error {
    ($($error:ty),*) => {$(
        impl From<$error> for KvError {
            fn from(error: $error) -> Self {
                KvError::Storage(error.to_string())
            }
        }
    )*};
}

storage_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    std::io::Error
);

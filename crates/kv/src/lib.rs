//! raftwerk's state machine: an MVCC key space with etcd's semantics — a
//! global revision that increases once per write transaction, per-key
//! create and mod revisions and version, deletes as tombstones, reads at a
//! past revision, compaction of history — stored in redb with the applied
//! log index in the same transaction as the data.
//!
//! Deterministic: applying the same commands in the same order gives the
//! same state and responses on every node.
#![forbid(unsafe_code)]

pub mod codec;
pub mod errors;
pub mod keys;
pub mod members;
pub mod store;
pub mod types;

pub use codec::{decode_command, encode_command};
pub use errors::KvError;
pub use members::{Member, MemberChange};
pub use store::{KvReader, KvStore, SnapshotSource};
pub use types::*;

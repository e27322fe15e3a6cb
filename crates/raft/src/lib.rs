//! raftwerk's consensus core: a deterministic, sans-IO implementation of
//! Raft (Ongaro & Ousterhout; Ongaro's dissertation).
//!
//! The core owns no threads, sockets, files or clocks. Inputs are ticks
//! ([`Raft::tick`]), peer messages ([`Raft::step`]), proposals
//! ([`Raft::propose`]), reads ([`Raft::read_index`]) and persistence
//! acknowledgements ([`Raft::on_persisted`]); outputs come in batches
//! ([`Raft::ready`] → [`Ready`]). Randomness comes from a seed in
//! [`Config`], so the same inputs always give the same outputs.
#![forbid(unsafe_code)]

pub mod config;
pub mod configuration;
pub mod errors;
pub mod log;
pub mod progress;
pub mod raft;
pub mod rng;
pub mod snapshot;
pub mod storage;
pub mod storage_conformance;
pub mod types;

pub use config::{Config, ConfigError, ReadMode};
pub use configuration::{ConfChange, ConfChangeError, ConfChangeOp, Configuration};
pub use errors::{ProposeError, ReadError, RejectReason, TransferError};
pub use raft::{Raft, Stats, Status};
pub use rng::SeededRng;
pub use snapshot::{IncomingChunk, SnapshotChunk, SnapshotError, SnapshotMeta, SnapshotProgress};
pub use storage::{LogStore, MemStorage, Storage, StorageError};
pub use types::{
    Entry, EntryKind, HardState, Index, Message, MessageBody, NodeId, ReadState, Ready, Role, SoftState, Term,
    ENTRY_OVERHEAD_BYTES, NO_NODE,
};

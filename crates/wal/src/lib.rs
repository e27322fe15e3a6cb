//! raftwerk's durable log storage: a segmented write-ahead log of framed,
//! CRC-32C-checked records holding the Raft log and hard state, plus
//! snapshot files, behind the core's `Storage` / `LogStore` traits.
//!
//! - Nothing acknowledged is lost: `sync` makes every record written so far
//!   durable with one `fdatasync` per file touched (group commit), and a
//!   failed sync poisons the WAL (no retry can prove durability).
//! - Nothing truncated comes back: truncation and compaction are records;
//!   only whole segments are ever deleted, after the record that makes them
//!   obsolete is durable. Live data is never rewritten.
//! - Recovery truncates a torn tail (the last segment's incomplete last
//!   write) and refuses to start, naming file and offset, when a damaged
//!   record is followed by intact ones.
//!
//! All file access goes through `fs::FileSystem`, so the same code runs on
//! the real disk and on `sim_fs::SimFs`, which crashes, tears writes and
//! fails syncs on demand.
#![forbid(unsafe_code)]

pub mod bench;
pub mod dump;
pub mod errors;
pub mod fs;
pub mod record;
pub mod sim_fs;
pub mod snapshot_files;
pub mod wal;

pub use errors::WalError;
pub use fs::{FileSystem, RealFs, WalFile};
pub use sim_fs::SimFs;
pub use wal::{Wal, WalOptions};

//! Snapshots of the key space taken in steps between the node's other
//! work, and keeping the key space durable without holding the node up.

use std::time::Duration;

use raftwerk_raft::{LogStore, Storage};

use super::Node;
use crate::snapshot_io::SnapshotWriter;

/// Snapshot bytes written per step: the node ticks, answers peers and
/// serves clients between steps, so a large key space never holds up
/// heartbeats.
const SNAPSHOT_STEP_BYTES: u64 = 1 << 20;

/// A snapshot of the key space being written into the WAL in steps.
pub(super) struct SnapshotInProgress {
    meta: raftwerk_raft::SnapshotMeta,
    source: raftwerk_kv::SnapshotSource,
    offset: u64,
    /// How long making the key space durable took, and the longest step
    /// (reported when the snapshot is taken: both hold up the node).
    persist_time: Duration,
    longest_step: Duration,
}

impl Node {
    /// Starts a snapshot of the key space as applied through `applied`.
    pub(super) fn start_snapshot(&mut self, applied: u64) -> Result<(), String> {
        let meta = self.raft.snapshot_meta(applied).map_err(|error| error.to_string())?;
        let mut kv = self.kv.write().expect("key space lock poisoned");
        // Bound what a restart must replay: the key space is made durable
        // as often as snapshots are taken.
        let started = std::time::Instant::now();
        kv.persist().map_err(|error| error.to_string())?;
        let persist_time = started.elapsed();
        let source = kv.snapshot_source().map_err(|error| error.to_string())?;
        drop(kv);
        self.snapshotting = Some(SnapshotInProgress {
            meta,
            source,
            offset: 0,
            persist_time,
            longest_step: Duration::ZERO,
        });
        Ok(())
    }

    /// Writes the next part of the snapshot in progress; once all of it is
    /// written, records it and compacts the log.
    pub(super) fn step_snapshot(&mut self) {
        let Some(mut progress) = self.snapshotting.take() else {
            return;
        };
        match self.write_snapshot_step(&mut progress) {
            Ok(false) => self.snapshotting = Some(progress),
            Ok(true) => {}
            Err(error) => {
                tracing::warn!(name = %self.membership.name, %error, "snapshot failed; will retry");
            }
        }
    }

    /// Returns whether the snapshot is complete.
    pub(super) fn write_snapshot_step(&mut self, progress: &mut SnapshotInProgress) -> Result<bool, String> {
        let (index, term) = (progress.meta.index, progress.meta.term);
        let started = std::time::Instant::now();
        let mut writer = SnapshotWriter::new(self.raft.storage_mut(), index, term, progress.offset);
        let done = progress
            .source
            .write_some(&mut writer, SNAPSHOT_STEP_BYTES)
            .map_err(|error| error.to_string())?;
        progress.offset = writer.finish().map_err(|error| error.to_string())?;
        progress.longest_step = progress.longest_step.max(started.elapsed());
        if !done {
            return Ok(false);
        }
        let in_use = self.raft.snapshots_in_use();
        let wal = self.raft.storage_mut();
        wal.save_snapshot(&progress.meta)
            .and_then(|()| wal.retain_snapshots(&in_use))
            .map_err(|error| error.to_string())?;
        let compact_index = self.raft.compact_index();
        if compact_index >= self.raft.storage().first_index() {
            self.raft
                .storage_mut()
                .compact_to(compact_index)
                .map_err(|error| error.to_string())?;
        }
        self.last_snapshot_index = index;
        tracing::info!(
            name = %self.membership.name,
            index,
            bytes = progress.offset,
            compacted = compact_index,
            persist_ms = progress.persist_time.as_millis() as u64,
            longest_step_ms = progress.longest_step.as_millis() as u64,
            "snapshot taken"
        );
        Ok(true)
    }
}

/// How often the key space is made durable, at most: each time is quick,
/// as little has piled up since the last (etcd commits its backend every
/// 100 ms for the same reason).
pub(super) const KV_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// How often the key space's file is flushed in the background.
const KV_FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// The key space commits without syncing (the WAL replays what a crash
/// loses), so its dirty pages pile up in the page cache — gigabytes on a
/// large machine — and the sync that makes it durable at each snapshot
/// would write them all while the node waits (an election, measured).
/// A background thread syncs the file on its own descriptor every
/// `KV_FLUSH_INTERVAL`, so that sync finds little left to write. Syncing
/// more than redb asks is always safe: its crash safety never depends on
/// written pages staying unwritten.
pub(super) fn start_kv_flusher(path: &std::path::Path, alive: std::sync::Weak<()>) {
    let Ok(file) = std::fs::File::open(path) else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("kv-flusher".to_string())
        .spawn(move || {
            while alive.upgrade().is_some() {
                std::thread::sleep(KV_FLUSH_INTERVAL);
                if let Err(error) = file.sync_data() {
                    tracing::warn!(%error, "background flush of the key space failed");
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "the key-space flusher did not start");
    }
}

//! Benchmark: bring a new learner from empty to caught up on a 3-node
//! in-process cluster whose state is a large snapshot plus a log tail. The
//! learner receives the snapshot in chunks (default chunk size and window),
//! installs it, then replicates the tail. Storage is `MemStorage`: the
//! figure is the core's transfer path (chunking, acknowledgement, window,
//! install) plus memory copies, without disk or network.

// Wall-clock time is what a benchmark measures; the simulator never reads it.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use raftwerk_raft::{ConfChange, ConfChangeOp, Config, MemStorage, Message, NodeId, Raft, Role};

const VOTERS: [NodeId; 3] = [1, 2, 3];
const LEARNER: NodeId = 4;
/// Entries proposed per batch while building the log tail.
const BATCH: usize = 1024;

/// What the catch-up took.
pub struct CatchUpResult {
    pub snapshot_bytes: u64,
    pub tail_entries: u64,
    pub entry_bytes: usize,
    /// From proposing the learner until it installed the snapshot.
    pub snapshot_elapsed: Duration,
    /// From proposing the learner until it applied everything committed.
    pub total_elapsed: Duration,
    pub chunks: u64,
}

impl CatchUpResult {
    pub fn snapshot_mib_per_second(&self) -> f64 {
        self.snapshot_bytes as f64 / (1 << 20) as f64 / self.snapshot_elapsed.as_secs_f64()
    }

    /// Tail entries replicated per second after the install.
    pub fn tail_entries_per_second(&self) -> f64 {
        let tail = self.total_elapsed.saturating_sub(self.snapshot_elapsed);
        self.tail_entries as f64 / tail.as_secs_f64().max(1e-9)
    }
}

struct Cluster {
    nodes: Vec<Raft<MemStorage>>,
    in_transit: Vec<Message>,
    /// When the learner's snapshot install was persisted.
    learner_installed_at: Option<Instant>,
}

impl Cluster {
    fn node(&mut self, id: NodeId) -> &mut Raft<MemStorage> {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Processes readies and delivers messages until nothing moves;
    /// returns whether anything happened.
    fn drive(&mut self) -> bool {
        let mut moved = false;
        loop {
            let mut any = false;
            for position in 0..self.nodes.len() {
                let node = &mut self.nodes[position];
                if !node.has_ready() {
                    continue;
                }
                any = true;
                let ready = node.ready();
                node.storage_mut().persist(&ready);
                if ready.must_persist() {
                    node.on_persisted(ready.seq);
                }
                if ready.snapshot.is_some() && node.id() == LEARNER {
                    self.learner_installed_at.get_or_insert_with(Instant::now);
                }
                self.in_transit.extend(ready.messages);
            }
            if self.in_transit.is_empty() && !any {
                return moved;
            }
            moved = true;
            for message in std::mem::take(&mut self.in_transit) {
                let to = message.to;
                let _ = self.node(to).step(message);
            }
        }
    }

    /// Drives, ticking the leader whenever nothing moves (heartbeats let a
    /// paused follower be probed again), until `done` holds.
    fn drive_until(&mut self, mut done: impl FnMut(&mut Cluster) -> bool) {
        for _ in 0..1_000_000 {
            if done(self) {
                return;
            }
            if !self.drive() {
                self.node(1).tick();
            }
        }
        panic!("the cluster made no progress");
    }
}

/// Builds the cluster (a snapshot of `snapshot_bytes` at every voter, then
/// `tail_entries` entries of `entry_bytes` after it), adds a learner and
/// measures how long it takes to catch up.
///
/// # Panics
/// If the cluster fails to elect a leader or to catch the learner up.
pub fn learner_catch_up(snapshot_bytes: usize, tail_entries: u64, entry_bytes: usize) -> CatchUpResult {
    let nodes = (1..=LEARNER)
        .map(|id| {
            let mut config = Config::new(id, VOTERS.to_vec());
            config.seed = id;
            // Compact everything the snapshot covers: the learner must take
            // the snapshot path.
            config.compaction_tail_entries = 0;
            Raft::new(config, MemStorage::new()).expect("valid config")
        })
        .collect();
    let mut cluster = Cluster {
        nodes,
        in_transit: Vec::new(),
        learner_installed_at: None,
    };
    cluster.drive_until(|cluster| cluster.node(1).role() == Role::Leader);
    // Some history, then the snapshot: one shared buffer stands for every
    // voter's copy of the state (no need for 3 GiB of identical bytes).
    propose_entries(&mut cluster, 1000, entry_bytes);
    let data = Bytes::from(vec![0x5a; snapshot_bytes]);
    for id in VOTERS {
        let node = cluster.node(id);
        let meta = node.snapshot_meta(node.applied_index()).expect("applied index");
        node.storage_mut()
            .create_snapshot(meta, data.clone())
            .expect("first snapshot");
        let compact_index = node.compact_index();
        node.storage_mut()
            .compact(compact_index)
            .expect("covered by the snapshot");
    }
    propose_entries(&mut cluster, tail_entries, entry_bytes);
    let target = cluster.node(1).commit_index();
    let chunks_before = cluster.node(1).stats().snapshot_chunks_sent;

    let started = Instant::now();
    cluster
        .node(1)
        .propose_conf_change(ConfChange::new(vec![ConfChangeOp::AddLearner(LEARNER)]))
        .expect("leader accepts the learner");
    cluster.drive_until(|cluster| cluster.node(LEARNER).applied_index() > target);
    let total_elapsed = started.elapsed();
    let snapshot_elapsed = cluster
        .learner_installed_at
        .expect("the learner installed a snapshot")
        .duration_since(started);
    CatchUpResult {
        snapshot_bytes: snapshot_bytes as u64,
        tail_entries,
        entry_bytes,
        snapshot_elapsed,
        total_elapsed,
        chunks: cluster.node(1).stats().snapshot_chunks_sent - chunks_before,
    }
}

fn propose_entries(cluster: &mut Cluster, count: u64, entry_bytes: usize) {
    let payload = Bytes::from(vec![7u8; entry_bytes]);
    let mut left = count;
    while left > 0 {
        let batch = left.min(BATCH as u64);
        let proposals = (0..batch).map(|_| payload.clone()).collect();
        let range = cluster.node(1).propose_batch(proposals).expect("leader accepts");
        cluster.drive_until(|cluster| {
            VOTERS
                .iter()
                .all(|&id| cluster.node(id).applied_index() >= range.end - 1)
        });
        left -= batch;
    }
}

/// Runs the catch-up benchmark and prints a Markdown table.
pub fn run(snapshot_mib: usize, tail_entries: u64, entry_bytes: usize) {
    println!("## Learner catch-up (3 voters + 1 new learner in process, default chunk size and window)\n");
    println!(
        "| snapshot MiB | tail entries | entry B | chunks | snapshot s | snapshot MiB/s | total s | tail entries/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let result = learner_catch_up(snapshot_mib << 20, tail_entries, entry_bytes);
    println!(
        "| {} | {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.0} |",
        result.snapshot_bytes >> 20,
        result.tail_entries,
        result.entry_bytes,
        result.chunks,
        result.snapshot_elapsed.as_secs_f64(),
        result.snapshot_mib_per_second(),
        result.total_elapsed.as_secs_f64(),
        result.tail_entries_per_second()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learner_catches_up_through_a_multi_chunk_snapshot() {
        let result = learner_catch_up(5 << 20, 2000, 64);
        assert!(result.chunks >= 5, "a 5 MiB snapshot takes at least 5 chunks of 1 MiB");
        assert!(result.total_elapsed >= result.snapshot_elapsed);
    }
}

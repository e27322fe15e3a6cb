//! In-process benchmarks of the consensus core: a 3-node cluster whose
//! messages are passed in memory (no serialization), whose persistence is
//! acknowledged at once (in-memory storage), driven on one thread.
//!
//! - Throughput: the leader proposes batches of 1, 64 or 1,024 entries per
//!   step; committed entries per second and wall time per entry.
//! - Closed loop: C clients each propose one entry and wait until the leader
//!   has committed and applied it before proposing the next (the shape of
//!   openraft's published in-process benchmark); ops per second and mean /
//!   p99 latency per op.
//!
//! This is a bench binary rather than criterion: the measured loop runs for
//! a fixed number of entries and prints one line per shape.

// Wall-clock time is what a benchmark measures; the simulator never reads it.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use raftwerk_raft::{Config, Index, MemStorage, Message, Raft, Role};

/// A 3-node cluster stepped by hand.
pub struct BenchCluster {
    nodes: Vec<Raft<MemStorage>>,
    in_transit: Vec<Message>,
    leader: usize,
    /// Entries the leader has applied (its state machine).
    pub leader_applied: Index,
    compacted: Index,
}

/// Storage is compacted every this many applied entries...
const COMPACT_EVERY_ENTRIES: u64 = 1 << 16;
/// ...keeping this many entries below the applied index.
const COMPACT_TAIL_ENTRIES: u64 = 1 << 14;

impl BenchCluster {
    /// Builds the cluster and elects node 1.
    ///
    /// # Panics
    /// If no leader emerges within a bounded number of ticks.
    pub fn new(nodes: usize) -> Self {
        let voters: Vec<u64> = (1..=nodes as u64).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let mut config = Config::new(id, voters.clone());
                config.seed = id;
                // Large enough windows that the benchmark measures the core,
                // not flow control.
                config.inflight_messages_max = 1024;
                config.inflight_bytes_max = 256 << 20;
                config.message_bytes_max = 4 << 20;
                config.compaction_tail_entries = COMPACT_TAIL_ENTRIES;
                Raft::new(config, MemStorage::new()).expect("valid bench config")
            })
            .collect();
        let mut cluster = BenchCluster {
            nodes,
            in_transit: Vec::with_capacity(64),
            leader: 0,
            leader_applied: 0,
            compacted: 0,
        };
        for _ in 0..1000 {
            cluster.nodes[0].tick();
            let _ = cluster.drive();
            if cluster.nodes[0].role() == Role::Leader {
                break;
            }
        }
        assert_eq!(cluster.nodes[0].role(), Role::Leader, "node 1 did not win the election");
        // Let the leader commit its first entry before measuring.
        let _ = cluster.drive();
        cluster
    }

    /// Processes readies and delivers messages until nothing moves.
    /// Returns the leader's newly applied entries' last index, if any.
    pub fn drive(&mut self) -> usize {
        self.compact_if_due();
        let mut applied_now = 0;
        loop {
            let mut any = false;
            for position in 0..self.nodes.len() {
                applied_now += self.handle_ready(position, &mut any);
            }
            if self.in_transit.is_empty() && !any {
                return applied_now;
            }
            for message in self.in_transit.drain(..) {
                let to = (message.to - 1) as usize;
                let _ = self.nodes[to].step(message);
            }
        }
    }

    /// One ready of one node: persist at once, send, apply. Returns the
    /// number of entries the leader applied.
    fn handle_ready(&mut self, position: usize, any: &mut bool) -> usize {
        let node = &mut self.nodes[position];
        if !node.has_ready() {
            return 0;
        }
        *any = true;
        let ready = node.ready();
        if ready.must_persist() {
            node.storage_mut().persist(&ready);
            node.on_persisted(ready.seq);
        }
        self.in_transit.extend(ready.messages);
        if position == self.leader {
            if let Some(last) = ready.committed_entries.last() {
                self.leader_applied = last.index;
            }
            ready.committed_entries.len()
        } else {
            0
        }
    }

    pub fn leader(&mut self) -> &mut Raft<MemStorage> {
        &mut self.nodes[self.leader]
    }

    /// Snapshots every node (with empty state: the benchmark's state
    /// machine holds nothing) and compacts its log below what all nodes
    /// applied, keeping a tail, as a real deployment would; otherwise the
    /// benchmark would measure the growth of one huge vector.
    fn compact_if_due(&mut self) {
        if self.leader_applied < self.compacted + COMPACT_EVERY_ENTRIES + COMPACT_TAIL_ENTRIES {
            return;
        }
        let applied_everywhere = self.nodes.iter().map(|node| node.applied_index()).min().unwrap_or(0);
        if applied_everywhere <= self.compacted + COMPACT_TAIL_ENTRIES {
            return;
        }
        for node in &mut self.nodes {
            let meta = node
                .snapshot_meta(applied_everywhere)
                .expect("snapshot at an applied index");
            node.storage_mut()
                .create_snapshot(meta, Bytes::new())
                .expect("newer snapshot");
            let upto = node.compact_index();
            node.storage_mut().compact(upto).expect("compaction below the snapshot");
        }
        self.compacted = applied_everywhere - COMPACT_TAIL_ENTRIES;
    }
}

/// CPU time this thread has used, from Linux's `/proc/thread-self/schedstat`
/// (first field, nanoseconds on CPU); `None` elsewhere.
fn thread_cpu_nanos() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Result of one throughput shape.
pub struct ThroughputResult {
    pub batch: usize,
    pub payload_bytes: usize,
    pub entries: u64,
    pub elapsed: Duration,
    /// CPU time of the benchmark thread, when the platform reports it.
    pub cpu_nanos: Option<u64>,
}

impl ThroughputResult {
    pub fn entries_per_second(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64()
    }

    pub fn nanos_per_entry(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.entries as f64
    }

    /// CPU nanoseconds per committed entry, for all three nodes together.
    pub fn cpu_nanos_per_entry(&self) -> Option<f64> {
        self.cpu_nanos.map(|cpu| cpu as f64 / self.entries as f64)
    }
}

/// Proposes `batch` entries per step until `entries_total` are applied.
pub fn throughput(batch: usize, payload_bytes: usize, entries_total: u64) -> ThroughputResult {
    let mut cluster = BenchCluster::new(3);
    let payload = vec![7u8; payload_bytes];
    let start_index = cluster.leader_applied;
    let cpu_started = thread_cpu_nanos();
    let started = Instant::now();
    let mut proposals = Vec::with_capacity(batch);
    while cluster.leader_applied - start_index < entries_total {
        proposals.clear();
        for _ in 0..batch {
            proposals.push(if payload_bytes == 0 {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(&payload)
            });
        }
        cluster
            .leader()
            .propose_batch(std::mem::take(&mut proposals))
            .expect("leader accepts proposals");
        cluster.drive();
    }
    let elapsed = started.elapsed();
    let cpu_nanos = thread_cpu_nanos().zip(cpu_started).map(|(end, start)| end - start);
    ThroughputResult {
        batch,
        payload_bytes,
        entries: cluster.leader_applied - start_index,
        elapsed,
        cpu_nanos,
    }
}

/// Result of one closed-loop shape.
pub struct ClosedLoopResult {
    pub clients: usize,
    pub ops: u64,
    pub elapsed: Duration,
    pub latency_us_mean: f64,
    pub latency_us_p99: f64,
}

/// `clients` clients, each with one proposal outstanding, until `ops_total`
/// operations completed. An operation completes when the leader applies it.
pub fn closed_loop(clients: usize, payload_bytes: usize, ops_total: u64) -> ClosedLoopResult {
    let mut cluster = BenchCluster::new(3);
    let payload = vec![7u8; payload_bytes];
    let make = |payload: &[u8]| {
        if payload.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(payload)
        }
    };
    // Proposal times by index, oldest first.
    let mut outstanding: std::collections::VecDeque<(Index, Instant)> =
        std::collections::VecDeque::with_capacity(clients);
    let mut latencies_ns: Vec<u64> = Vec::with_capacity(ops_total as usize + clients);
    let started = Instant::now();
    for _ in 0..clients {
        let index = cluster.leader().propose(make(&payload)).expect("leader accepts");
        outstanding.push_back((index, Instant::now()));
    }
    let mut ops = 0u64;
    while ops < ops_total {
        let completed = cluster.drive();
        if completed == 0 {
            continue;
        }
        let applied = cluster.leader_applied;
        let now = Instant::now();
        let mut finished = 0;
        while let Some(&(index, proposed_at)) = outstanding.front() {
            if index > applied {
                break;
            }
            outstanding.pop_front();
            latencies_ns.push(now.duration_since(proposed_at).as_nanos() as u64);
            finished += 1;
        }
        ops += finished;
        // Each finished client proposes its next operation at once.
        for _ in 0..finished {
            let index = cluster.leader().propose(make(&payload)).expect("leader accepts");
            outstanding.push_back((index, Instant::now()));
        }
    }
    let elapsed = started.elapsed();
    latencies_ns.sort_unstable();
    let mean = latencies_ns.iter().sum::<u64>() as f64 / latencies_ns.len() as f64;
    let p99 = latencies_ns[(latencies_ns.len() * 99 / 100).min(latencies_ns.len() - 1)];
    ClosedLoopResult {
        clients,
        ops,
        elapsed,
        latency_us_mean: mean / 1000.0,
        latency_us_p99: p99 as f64 / 1000.0,
    }
}

/// Runs every shape and prints a Markdown table.
pub fn run_all(quick: bool) {
    let scale = if quick { 10 } else { 1 };
    println!("## Throughput (3 nodes in process, persistence acknowledged at once)\n");
    println!("| batch | payload B | entries | entries/s | wall ns/entry | CPU ns/entry (3 nodes) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for payload in [0usize, 64] {
        for (batch, total) in [(1usize, 300_000u64), (64, 2_000_000), (1024, 4_000_000)] {
            let result = throughput(batch, payload, total / scale);
            let cpu = result
                .cpu_nanos_per_entry()
                .map_or_else(|| "n/a".to_string(), |cpu| format!("{cpu:.0}"));
            println!(
                "| {} | {} | {} | {:.0} | {:.0} | {cpu} |",
                result.batch,
                result.payload_bytes,
                result.entries,
                result.entries_per_second(),
                result.nanos_per_entry()
            );
        }
    }
    println!("\n## Closed loop (C clients, one outstanding proposal each, done when the leader applied it)\n");
    println!("| clients | payload B | ops | ops/s | mean µs/op | p99 µs/op |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for payload in [0usize, 64] {
        for (clients, total) in [
            (1usize, 300_000u64),
            (64, 2_000_000),
            (256, 3_000_000),
            (1024, 4_000_000),
        ] {
            let result = closed_loop(clients, payload, total / scale);
            println!(
                "| {} | {} | {} | {:.0} | {:.2} | {:.2} |",
                result.clients,
                payload,
                result.ops,
                result.ops as f64 / result.elapsed.as_secs_f64(),
                result.latency_us_mean,
                result.latency_us_p99
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_shape_commits_what_it_proposes() {
        let result = throughput(64, 64, 6400);
        assert!(result.entries >= 6400);
    }

    #[test]
    fn closed_loop_completes_every_operation() {
        let result = closed_loop(8, 0, 800);
        assert!(result.ops >= 800);
        assert!(result.latency_us_p99 >= result.latency_us_mean.min(result.latency_us_p99));
    }
}

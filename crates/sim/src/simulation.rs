//! One seeded run of a simulated cluster: nodes with in-memory storage and
//! a simulated disk whose writes complete after a delay (a crash loses every
//! write not yet complete), the simulated network, a fault schedule
//! (partitions of several shapes, crashes and restarts), a random client
//! workload of writes and linearizable reads, and the checker after every
//! step. Nodes snapshot their state machine and compact their logs on a
//! per-seed schedule, so lagging and new nodes catch up by snapshot
//! transfer under the same faults. After the faulty phase all faults heal
//! and liveness is checked.
//!
//! A run is a pure function of its `SimConfig`: one seed, one run.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use raftwerk_raft::{
    ConfChange, ConfChangeOp, Config, Entry, EntryKind, HardState, IncomingChunk, Index, LogStore, Message, NodeId,
    ProposeError, Raft, ReadMode, ReadState, Role, SeededRng, SnapshotMeta, Storage,
};

use crate::checker::{mix, state_digest, Checker};
use crate::network::{Network, NetworkFaults};
use crate::node_storage::{Disk, NodeStorage};

/// Election timeout in ticks used by simulated nodes.
pub const ELECTION_TICKS: u64 = 10;
/// Heartbeat interval in ticks used by simulated nodes.
pub const HEARTBEAT_TICKS: u64 = 2;
/// After faults heal, a leader must exist within this many ticks.
pub const LEADER_AFTER_HEAL_TICKS_MAX: u64 = 30 * ELECTION_TICKS;
/// After faults heal, every node must apply the final write within this many ticks.
pub const CONVERGE_AFTER_HEAL_TICKS_MAX: u64 = 100 * ELECTION_TICKS;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub steps: u64,
    /// Inject network, disk and crash faults (off: a calm cluster).
    pub faults: bool,
    pub read_mode: ReadMode,
    /// Print every event to stderr.
    pub trace: bool,
    /// Each node's clock runs at a rate drawn from `1000 ± clock_drift_per_mille`
    /// ticks per 1000 steps (fixed per node and seed).
    pub clock_drift_per_mille: u64,
    /// Random membership changes: the cluster bootstraps with `nodes`
    /// voters and `MEMBERSHIP_SLOTS` node slots exist to add, promote,
    /// demote, remove and replace.
    pub membership: bool,
    /// Nodes store their log in the WAL over a simulated disk (recovery
    /// runs at every restart) instead of the in-memory store.
    pub wal: bool,
    /// Nodes snapshot and compact on a per-seed schedule (off: logs grow
    /// forever, as runs did before snapshots existed).
    pub snapshots: bool,
}

/// Node slots of a membership run: clusters grow up to 5 nodes.
pub const MEMBERSHIP_SLOTS: usize = 5;

impl SimConfig {
    pub fn new(seed: u64, nodes: usize, steps: u64) -> Self {
        SimConfig {
            seed,
            nodes,
            steps,
            faults: true,
            read_mode: ReadMode::Safe,
            trace: false,
            clock_drift_per_mille: 100,
            membership: false,
            wal: false,
            snapshots: true,
        }
    }

    /// The command that replays this run exactly.
    pub fn replay_command(&self) -> String {
        let lease = match self.read_mode {
            ReadMode::Safe => String::new(),
            ReadMode::Lease { drift_margin_ticks } => format!(" --lease {drift_margin_ticks}"),
        };
        let calm = if self.faults { "" } else { " --no-faults" };
        let membership = if self.membership { " --membership" } else { "" };
        let snapshots = if self.snapshots { "" } else { " --no-snapshots" };
        let wal = if self.wal { " --wal" } else { "" };
        format!(
            "cargo run -p raftwerk-sim --release -- run --seed {} --nodes {} --steps {}{lease}{calm}{membership}{snapshots}{wal} --drift {} --trace",
            self.seed, self.nodes, self.steps, self.clock_drift_per_mille
        )
    }

    /// Node slots simulated: the bootstrap voters, plus spares to add when
    /// membership changes are on.
    pub fn slots(&self) -> usize {
        if self.membership {
            self.nodes.max(MEMBERSHIP_SLOTS)
        } else {
            self.nodes
        }
    }
}

/// What a finished run reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimReport {
    /// Hash of every observable event; equal for equal configs.
    pub trace_hash: u64,
    pub writes_acked: u64,
    pub reads_served: u64,
    pub committed: Index,
    pub leaders_elected: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub pauses: u64,
    pub transfers: u64,
    pub membership_changes: u64,
    /// Snapshots nodes took of their own state, and installed from leaders.
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    /// Ticks from healing until a leader existed.
    pub ticks_to_leader_after_heal: u64,
}

/// A failed run: the violated invariant and how to replay it.
#[derive(Clone, Debug)]
pub struct SimFailure {
    pub config: SimConfig,
    pub time: u64,
    pub message: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} ({} nodes) failed at tick {}: {}\nreplay: {}",
            self.config.seed,
            self.config.nodes,
            self.time,
            self.message,
            self.config.replay_command()
        )
    }
}

/// Disk behaviour of one run.
#[derive(Clone, Copy, Debug)]
struct DiskFaults {
    /// Writes complete after `[0, write_ticks_max]` ticks.
    write_ticks_max: u64,
}

/// A write handed to the simulated disk, not yet durable.
struct PendingWrite {
    seq: u64,
    snapshot_chunks: Vec<IncomingChunk>,
    snapshot: Option<SnapshotMeta>,
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
    complete_at: u64,
}

/// When nodes snapshot and how big their snapshots are.
#[derive(Clone, Copy, Debug)]
struct SnapshotPolicy {
    /// A node snapshots once it applied this many entries past its last
    /// snapshot (0: never).
    every_entries: u64,
    /// Filler bytes after the 16-byte header, so transfers take many chunks.
    filler_bytes: usize,
}

/// Snapshot data of the simulated state machine: its applied index and
/// digest, then filler derived from both.
fn encode_snapshot(index: Index, digest: u64, filler_bytes: usize) -> Bytes {
    let mut data = Vec::with_capacity(16 + filler_bytes);
    data.extend_from_slice(&index.to_le_bytes());
    data.extend_from_slice(&digest.to_le_bytes());
    data.extend((0..filler_bytes).map(|at| (mix(digest ^ at as u64) & 0xff) as u8));
    data.into()
}

/// The state in snapshot data, if it is well formed (the filler is checked
/// too: a transfer that mixed up chunks is caught here).
fn decode_snapshot(data: &[u8]) -> Result<(Index, u64), String> {
    if data.len() < 16 {
        return Err(format!("snapshot of {} bytes lacks its header", data.len()));
    }
    let index = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let digest = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    if encode_snapshot(index, digest, data.len() - 16) != data {
        return Err(format!("snapshot at {index} is corrupt (chunks mixed up)"));
    }
    Ok((index, digest))
}

struct SimNode {
    id: NodeId,
    raft: Option<Raft<NodeStorage>>,
    /// Durable storage while the node is down.
    storage_while_down: Option<Disk>,
    /// The node's simulated disk when it runs on the WAL.
    fs: Option<raftwerk_wal::SimFs>,
    disk: VecDeque<PendingWrite>,
    restart_at: u64,
    /// State machine: the applied index (the state is the applied prefix)
    /// and the digest of the applied entries.
    applied: Index,
    digest: u64,
    /// Read states waiting until their index is applied.
    reads_waiting: Vec<ReadState>,
    restarts: u64,
    /// A paused (frozen) node neither ticks nor receives until this tick.
    paused_until: u64,
    ticks_missed: u64,
    /// Messages that arrived while paused.
    inbox: Vec<Message>,
    /// Clock speed: ticks per 1000 steps of simulated time.
    clock_rate_per_mille: u64,
    clock_accumulator: u64,
}

impl SimNode {
    /// The core if the node is up and not paused.
    fn active(&mut self, now: u64) -> Option<&mut Raft<NodeStorage>> {
        if self.paused_until > now {
            return None;
        }
        self.raft.as_mut()
    }
}

/// A client write that has not been acknowledged.
struct WriteOp {
    node: NodeId,
    index: Index,
    floor: Index,
}

/// A client read that has not been served.
struct ReadOp {
    node: NodeId,
    floor: Index,
}

/// Active partition and when it heals.
struct Partition {
    heal_at: u64,
}

/// One simulated cluster run.
pub struct Simulation {
    config: SimConfig,
    rng: SeededRng,
    time: u64,
    nodes: Vec<SimNode>,
    network: Network,
    disk: DiskFaults,
    checker: Checker,
    next_request_id: u64,
    writes: BTreeMap<u64, WriteOp>,
    /// Acknowledged writes: `(write id, index, data hash)`.
    acked: Vec<(u64, Index, u64)>,
    reads: BTreeMap<u64, ReadOp>,
    partition: Option<Partition>,
    crash_per_mille: u64,
    partition_per_mille: u64,
    pause_per_mille: u64,
    pauses: u64,
    transfer_per_mille: u64,
    transfers: u64,
    membership_per_mille: u64,
    membership_changes: u64,
    /// The state machine survives crashes (restart with `Config::applied`).
    durable_state_machine: bool,
    snapshot_policy: SnapshotPolicy,
    snapshots_taken: u64,
    snapshots_installed: u64,
    trace_hash: u64,
    leaders_elected: u64,
    crashes: u64,
    partitions: u64,
}

impl Simulation {
    pub fn new(config: SimConfig) -> Self {
        assert!(config.nodes >= 1 && config.nodes <= 9, "1..=9 nodes");
        let mut rng = SeededRng::new(config.seed);
        // Leadership transfers are operator actions, part of the workload.
        let transfer_per_mille = if config.faults { rng.range(0, 10) } else { 0 };
        let durable_state_machine = rng.chance(1, 2);
        let membership_per_mille = if config.membership { rng.range(5, 40) } else { 0 };
        let (faults, disk, crash_per_mille, partition_per_mille, pause_per_mille) = if config.faults {
            (
                NetworkFaults {
                    drop_per_mille: rng.range(0, 101),
                    duplicate_per_mille: rng.range(0, 51),
                    delay_ticks_max: rng.range(1, 4),
                },
                DiskFaults {
                    write_ticks_max: rng.range(0, 7),
                },
                rng.range(1, 30),
                rng.range(2, 15),
                rng.range(0, 15),
            )
        } else {
            (NetworkFaults::none(), DiskFaults { write_ticks_max: 0 }, 0, 0, 0)
        };
        // Drawn from their own generator so the rest of a seed's schedule
        // is what it was before snapshots existed.
        let mut snapshot_rng = SeededRng::new(mix(config.seed ^ 0x5A_95_07));
        let snapshot_policy = SnapshotPolicy {
            every_entries: if config.snapshots && snapshot_rng.chance(2, 3) {
                snapshot_rng.range(4, 80)
            } else {
                0
            },
            filler_bytes: snapshot_rng.range(0, 2000) as usize,
        };
        let voters: Vec<NodeId> = (1..=config.nodes as NodeId).collect();
        let slots: Vec<NodeId> = (1..=config.slots() as NodeId).collect();
        let nodes = slots
            .iter()
            .map(|&id| {
                let (storage, fs) = NodeStorage::new(config.wal);
                let raft =
                    Raft::new(node_config(&config, id, &voters, 0), storage).expect("simulated node config is valid");
                SimNode {
                    id,
                    raft: Some(raft),
                    storage_while_down: None,
                    fs,
                    disk: VecDeque::new(),
                    restart_at: 0,
                    applied: 0,
                    digest: 0,
                    reads_waiting: Vec::new(),
                    restarts: 0,
                    paused_until: 0,
                    ticks_missed: 0,
                    inbox: Vec::new(),
                    clock_rate_per_mille: if config.faults {
                        let drift = config.clock_drift_per_mille;
                        1000 - drift.min(999) + rng.range(0, 2 * drift.min(999) + 1)
                    } else {
                        1000
                    },
                    clock_accumulator: 0,
                }
            })
            .collect();
        Simulation {
            checker: Checker::new(config.slots()),
            config,
            rng,
            time: 0,
            nodes,
            network: Network::new(faults),
            disk,
            next_request_id: 1,
            writes: BTreeMap::new(),
            acked: Vec::new(),
            reads: BTreeMap::new(),
            partition: None,
            crash_per_mille,
            partition_per_mille,
            pause_per_mille,
            pauses: 0,
            transfer_per_mille,
            transfers: 0,
            membership_per_mille,
            membership_changes: 0,
            durable_state_machine,
            snapshot_policy,
            snapshots_taken: 0,
            snapshots_installed: 0,
            trace_hash: 0,
            leaders_elected: 0,
            crashes: 0,
            partitions: 0,
        }
    }

    /// Runs the faulty phase, heals, and checks liveness.
    ///
    /// # Errors
    /// The first invariant violation, with the command to replay it.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        for _ in 0..self.config.steps {
            self.step(true).map_err(|message| self.failure(message))?;
        }
        self.heal_all();
        let healed_at = self.time;
        let ticks_to_leader = self.await_leader(healed_at).map_err(|message| self.failure(message))?;
        self.await_convergence().map_err(|message| self.failure(message))?;
        Ok(SimReport {
            trace_hash: self.trace_hash,
            writes_acked: self.checker.writes_acked,
            reads_served: self.checker.reads_served,
            committed: self.checker.committed_len(),
            leaders_elected: self.leaders_elected,
            crashes: self.crashes,
            partitions: self.partitions,
            pauses: self.pauses,
            transfers: self.transfers,
            membership_changes: self.membership_changes,
            snapshots_taken: self.snapshots_taken,
            snapshots_installed: self.snapshots_installed,
            messages_sent: self.network.sent,
            messages_dropped: self.network.dropped,
            ticks_to_leader_after_heal: ticks_to_leader,
        })
    }

    fn failure(&self, message: String) -> SimFailure {
        SimFailure {
            config: self.config.clone(),
            time: self.time,
            message,
        }
    }

    fn trace(&self, event: impl FnOnce() -> String) {
        if self.config.trace {
            eprintln!("[seed {} tick {}] {}", self.config.seed, self.time, event());
        }
    }

    fn record(&mut self, value: u64) {
        self.trace_hash = mix(self.trace_hash ^ value);
    }

    /// One tick of simulated time.
    fn step(&mut self, faults: bool) -> Result<(), String> {
        self.time += 1;
        if faults && self.config.faults {
            self.inject_faults();
        }
        self.restart_due();
        self.resume_due();
        self.client_workload();
        let time = self.time;
        for node in &mut self.nodes {
            // A drifting clock ticks a little faster or slower than simulated
            // time: it accumulates its rate and ticks per whole 1000.
            node.clock_accumulator += node.clock_rate_per_mille;
            let ticks = node.clock_accumulator / 1000;
            node.clock_accumulator %= 1000;
            if let Some(raft) = node.active(time) {
                for _ in 0..ticks {
                    raft.tick();
                }
            } else if node.paused_until > time {
                node.ticks_missed += ticks;
            }
        }
        // Messages held for nodes that were paused arrive after the client
        // requests that reached them on waking.
        for position in 0..self.nodes.len() {
            if self.nodes[position].paused_until <= time {
                let inbox = std::mem::take(&mut self.nodes[position].inbox);
                for message in inbox {
                    self.deliver(message);
                }
            }
        }
        while let Some(message) = self.network.next_due(self.time) {
            self.deliver(message);
        }
        self.complete_disk_writes()?;
        self.process_readies()?;
        self.take_snapshots()?;
        self.check_step()
    }

    /// Nodes whose state machine moved far enough past their last snapshot
    /// take a new one and compact their logs as far as the core allows.
    fn take_snapshots(&mut self) -> Result<(), String> {
        let every = self.snapshot_policy.every_entries;
        if every == 0 {
            return Ok(());
        }
        let time = self.time;
        for position in 0..self.nodes.len() {
            let node = &mut self.nodes[position];
            let (applied, digest, id) = (node.applied, node.digest, node.id);
            let Some(raft) = node.active(time) else {
                continue;
            };
            if applied < raft.snapshot_index() + every || raft.applied_index() != applied {
                continue;
            }
            let meta = raft
                .snapshot_meta(applied)
                .map_err(|error| format!("node {id}: snapshot at applied index {applied}: {error}"))?;
            let data = encode_snapshot(applied, digest, self.snapshot_policy.filler_bytes);
            let storage = raft.storage_mut();
            storage
                .write_snapshot_chunk(meta.index, meta.term, 0, &data)
                .and_then(|()| storage.save_snapshot(&meta))
                .map_err(|error| format!("node {id}: storing snapshot: {error}"))?;
            let in_use = raft.snapshots_in_use();
            raft.storage_mut()
                .retain_snapshots(&in_use)
                .map_err(|error| format!("node {id}: releasing snapshots: {error}"))?;
            let compact_index = raft.compact_index();
            if compact_index >= raft.storage().first_index() {
                raft.storage_mut()
                    .compact_to(compact_index)
                    .map_err(|error| format!("node {id}: compacting to {compact_index}: {error}"))?;
            }
            self.checker.check_snapshot(id, meta.index, meta.term, digest)?;
            self.snapshots_taken += 1;
            self.record(mix(0x5A ^ id) ^ applied);
            self.trace(|| format!("node {id} snapshots at {applied} and compacts to {compact_index}"));
        }
        Ok(())
    }

    fn deliver(&mut self, message: Message) {
        let to = message.to;
        self.record(mix(message.from) ^ mix(to << 8) ^ message.term);
        let time = self.time;
        let node = &mut self.nodes[(to - 1) as usize];
        if node.raft.is_some() && node.paused_until > time {
            node.inbox.push(message);
        } else if let Some(raft) = node.raft.as_mut() {
            // Rejections are normal under faults (stale terms, leases).
            let _ = raft.step(message);
        }
    }

    /// Wakes paused nodes whose pause is over. A real node's clock is
    /// monotonic wall time, so it sees every tick it missed at once.
    fn resume_due(&mut self) {
        let time = self.time;
        for node in &mut self.nodes {
            if node.paused_until != 0 && node.paused_until <= time {
                node.paused_until = 0;
                let missed = std::mem::take(&mut node.ticks_missed);
                if let Some(raft) = node.raft.as_mut() {
                    for _ in 0..missed {
                        raft.tick();
                    }
                }
                if self.config.trace {
                    eprintln!(
                        "[seed {} tick {time}] node {} resumes after {missed} ticks",
                        self.config.seed, node.id
                    );
                }
            }
        }
    }

    fn check_step(&mut self) -> Result<(), String> {
        for position in 0..self.nodes.len() {
            let Some(raft) = self.nodes[position].raft.as_ref() else {
                continue;
            };
            raft.check_invariants();
            if is_durable_leader(raft) {
                let (id, term) = (raft.id(), raft.term());
                self.checker.on_leader(id, term)?;
            }
        }
        Ok(())
    }

    // ----- Faults -----------------------------------------------------------

    fn inject_faults(&mut self) {
        if let Some(partition) = &self.partition {
            if self.time >= partition.heal_at {
                self.network.heal();
                self.partition = None;
                self.trace(|| "partition healed".to_string());
            }
        } else if self.rng.chance(self.partition_per_mille, 1000) {
            self.start_partition();
        }
        if self.rng.chance(self.crash_per_mille, 1000) {
            // Half the crashes hit the leader: that is where lost unsynced
            // writes and overwritten entries matter most.
            let leader = self.current_leader().filter(|_| self.rng.chance(1, 2));
            let position = leader.unwrap_or_else(|| self.rng.range(0, self.nodes.len() as u64) as usize);
            if self.nodes[position].raft.is_some() {
                let down_ticks = if self.rng.chance(1, 2) {
                    self.rng.range(1, 10)
                } else {
                    self.rng.range(10, 200)
                };
                self.crash(position, self.time + down_ticks);
            }
        }
        if self.rng.chance(self.pause_per_mille, 1000) {
            let leader = self.current_leader().filter(|_| self.rng.chance(1, 2));
            let position = leader.unwrap_or_else(|| self.rng.range(0, self.nodes.len() as u64) as usize);
            let node = &mut self.nodes[position];
            if node.raft.is_some() && node.paused_until == 0 {
                node.paused_until = self.time + self.rng.range(5, 60);
                self.pauses += 1;
                let (id, until) = (node.id, node.paused_until);
                self.trace(|| format!("pause node {id} until {until}"));
            }
        }
    }

    fn start_partition(&mut self) {
        let n = self.nodes.len() as NodeId;
        if n < 2 {
            return;
        }
        let shape = self.rng.range(0, 5);
        let a = self.rng.range(1, n + 1);
        let mut b = self.rng.range(1, n + 1);
        if b == a {
            b = a % n + 1;
        }
        let description = match shape {
            0 => {
                // Isolate one node both ways.
                for other in 1..=n {
                    if other != a {
                        self.network.block(a, other);
                        self.network.block(other, a);
                    }
                }
                format!("isolate {a}")
            }
            1 => {
                // Split into two random groups.
                let mut group = Vec::new();
                for node in 1..=n {
                    if self.rng.chance(1, 2) {
                        group.push(node);
                    }
                }
                for &inside in &group {
                    for outside in (1..=n).filter(|node| !group.contains(node)) {
                        self.network.block(inside, outside);
                        self.network.block(outside, inside);
                    }
                }
                format!("split {group:?}")
            }
            2 => {
                // One-way: a can send to everyone but hears nothing.
                for other in 1..=n {
                    if other != a {
                        self.network.block(other, a);
                    }
                }
                format!("{a} deaf")
            }
            3 => {
                // One-way: a hears everyone but nobody hears a.
                for other in 1..=n {
                    if other != a {
                        self.network.block(a, other);
                    }
                }
                format!("{a} mute")
            }
            _ => {
                // Partial: only the link a<->b is cut; both reach the rest.
                self.network.block(a, b);
                self.network.block(b, a);
                format!("cut {a}<->{b}")
            }
        };
        let heal_at = self.time + self.rng.range(10, 300);
        self.partition = Some(Partition { heal_at });
        self.partitions += 1;
        self.trace(|| format!("partition {description} until {heal_at}"));
    }

    /// Crashes a node: its unfinished disk writes, messages it would have
    /// sent and reads it was serving are lost; durable storage survives.
    fn crash(&mut self, position: usize, restart_at: u64) {
        let node = &mut self.nodes[position];
        let raft = node.raft.take().expect("crashing a live node");
        node.storage_while_down = Some(raft.into_storage().crash(node.fs.as_ref()));
        node.disk.clear();
        node.paused_until = 0;
        node.ticks_missed = 0;
        node.inbox.clear();
        node.restart_at = restart_at;
        if !self.durable_state_machine {
            // A volatile state machine is rebuilt on restart from the stored
            // snapshot and the log.
            node.applied = 0;
            node.digest = 0;
        }
        let id = node.id;
        node.reads_waiting.clear();
        // Clients connected to the crashed node lose their answers: their
        // reads time out and their writes become "maybe applied".
        self.reads.retain(|_, read| read.node != id);
        self.writes.retain(|_, write| write.node != id);
        self.crashes += 1;
        self.record(mix(0xC0DE ^ id));
        self.trace(|| format!("crash node {id} until {restart_at}"));
    }

    fn restart_due(&mut self) {
        for position in 0..self.nodes.len() {
            let due = self.nodes[position].raft.is_none() && self.nodes[position].restart_at <= self.time;
            if due {
                self.restart(position).expect("restart from durable storage");
            }
        }
    }

    fn restart(&mut self, position: usize) -> Result<(), String> {
        let voters: Vec<NodeId> = (1..=self.config.nodes as NodeId).collect();
        let node = &mut self.nodes[position];
        let storage = node
            .storage_while_down
            .take()
            .expect("a down node keeps its storage")
            .recover()?;
        node.restarts += 1;
        let seed = self.config.seed ^ mix(node.id) ^ node.restarts;
        // A durable state machine (as the server's redb one) restarts where
        // it stopped, possibly above the stored commit index.
        if let Some(meta) = storage.snapshot() {
            if node.applied < meta.index {
                // Restore the state machine from the stored snapshot.
                let data = storage
                    .snapshot_data(meta.index)
                    .map_err(|error| format!("node {}: reading the stored snapshot: {error}", node.id))?;
                let (index, digest) = decode_snapshot(&data)?;
                if index != meta.index {
                    return Err(format!(
                        "node {}: snapshot data at {index} stored as {}",
                        node.id, meta.index
                    ));
                }
                node.applied = index;
                node.digest = digest;
            }
        }
        let mut config = node_config(&self.config, node.id, &voters, node.applied);
        config.seed = seed;
        let first_index = storage.first_index();
        let stored = storage
            .entries(first_index, storage.last_index() + 1, u64::MAX)
            .map_err(|error| format!("reading durable log of node {}: {error}", node.id))?;
        node.raft = Some(Raft::new(config, storage).map_err(|error| error.to_string())?);
        let id = node.id;
        self.checker.reset_log(id, first_index, &stored)?;
        self.trace(|| format!("restart node {id} with {} durable entries", stored.len()));
        Ok(())
    }

    fn heal_all(&mut self) {
        self.network.heal();
        self.network.faults = NetworkFaults::none();
        self.partition = None;
        self.disk.write_ticks_max = 0;
        for position in 0..self.nodes.len() {
            if self.nodes[position].raft.is_none() {
                self.nodes[position].restart_at = self.time;
            }
            if self.nodes[position].paused_until > self.time {
                self.nodes[position].paused_until = self.time;
            }
        }
        self.trace(|| "all faults healed".to_string());
    }

    // ----- Client workload --------------------------------------------------

    fn client_workload(&mut self) {
        if self.rng.chance(3, 10) {
            let position = self.rng.range(0, self.nodes.len() as u64) as usize;
            let count = self.rng.range(1, 4);
            for _ in 0..count {
                self.client_write(position);
            }
        }
        if self.rng.chance(3, 10) {
            // Half the reads go to a node that believes it leads: when an
            // old leader has not learnt of a new one yet, that is where a
            // stale read would come from.
            let leaders: Vec<usize> = (0..self.nodes.len())
                .filter(|&position| {
                    self.nodes[position]
                        .raft
                        .as_ref()
                        .is_some_and(|raft| raft.role() == Role::Leader)
                })
                .collect();
            let position = if !leaders.is_empty() && self.rng.chance(1, 2) {
                leaders[self.rng.range(0, leaders.len() as u64) as usize]
            } else {
                self.rng.range(0, self.nodes.len() as u64) as usize
            };
            self.client_read(position);
        }
        if self.rng.chance(self.transfer_per_mille, 1000) {
            self.transfer_leadership();
        }
        if self.rng.chance(self.membership_per_mille, 1000) {
            self.change_membership();
        }
    }

    /// An operator changes the membership at the leader: add a learner,
    /// promote one, demote or remove a member (possibly the leader), or
    /// replace a voter by a learner in one joint change.
    fn change_membership(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let time = self.time;
        let slots = self.nodes.len() as NodeId;
        let Some(raft) = self.nodes[leader].raft.as_ref() else {
            return;
        };
        let configuration = raft.configuration().clone();
        let outsiders: Vec<NodeId> = (1..=slots).filter(|id| !configuration.is_member(*id)).collect();
        let learners = configuration.learners.clone();
        let voters = configuration.voters.clone();
        let members = configuration.members();
        let pick = |rng: &mut SeededRng, ids: &[NodeId]| -> Option<NodeId> {
            (!ids.is_empty()).then(|| ids[rng.range(0, ids.len() as u64) as usize])
        };
        let ops = match self.rng.range(0, 5) {
            0 => pick(&mut self.rng, &outsiders).map(|id| vec![ConfChangeOp::AddLearner(id)]),
            1 => pick(&mut self.rng, &learners).map(|id| vec![ConfChangeOp::AddVoter(id)]),
            2 => pick(&mut self.rng, &members)
                .filter(|id| !(voters.len() == 1 && voters.contains(id)))
                .map(|id| vec![ConfChangeOp::Remove(id)]),
            3 => pick(&mut self.rng, &learners)
                .zip(pick(&mut self.rng, &voters))
                .map(|(learner, voter)| vec![ConfChangeOp::AddVoter(learner), ConfChangeOp::Remove(voter)]),
            _ => pick(&mut self.rng, &voters)
                .filter(|_| voters.len() > 1)
                .map(|id| vec![ConfChangeOp::AddLearner(id)]),
        };
        let Some(ops) = ops else {
            return;
        };
        let Some(raft) = self.nodes[leader].active(time) else {
            return;
        };
        let from = raft.id();
        let result = raft.propose_conf_change(ConfChange::new(ops.clone()));
        self.membership_changes += u64::from(result.is_ok());
        self.record(mix(0xC0F ^ u64::from(result.is_ok())));
        self.trace(|| format!("membership change at {from}: {ops:?} -> {result:?}"));
    }

    /// An operator moves leadership to a random other node.
    fn transfer_leadership(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let target = self.rng.range(1, self.nodes.len() as u64 + 1);
        let time = self.time;
        if let Some(raft) = self.nodes[leader].active(time) {
            let from = raft.id();
            let result = raft.transfer_leadership(target);
            self.transfers += u64::from(result.is_ok());
            self.trace(|| format!("transfer leadership {from} -> {target}: {result:?}"));
        }
    }

    /// Proposes a unique write at a node; a client that is told who leads
    /// retries there once.
    fn client_write(&mut self, position: usize) -> Option<u64> {
        let id = self.next_request_id;
        self.next_request_id += 1;
        let mut data = Vec::with_capacity(16);
        data.extend_from_slice(&id.to_le_bytes());
        data.extend_from_slice(&self.rng.next_u64().to_le_bytes());
        let data = Bytes::from(data);
        let floor = self.checker.invocation_floor();
        let mut target = position;
        for _ in 0..2 {
            let raft = self.nodes[target].active(self.time)?;
            match raft.propose(data.clone()) {
                Ok(index) => {
                    let node = raft.id();
                    self.writes.insert(id, WriteOp { node, index, floor });
                    self.record(mix(id) ^ index);
                    return Some(id);
                }
                Err(ProposeError::NotLeader { leader_hint }) if leader_hint != 0 => {
                    target = (leader_hint - 1) as usize;
                }
                Err(_) => return None,
            }
        }
        None
    }

    fn client_read(&mut self, position: usize) {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let floor = self.checker.invocation_floor();
        let id = self.nodes[position].id;
        let Some(raft) = self.nodes[position].active(self.time) else {
            return;
        };
        if raft.read_index(request_id).is_ok() {
            self.reads.insert(request_id, ReadOp { node: id, floor });
        }
    }

    // ----- Node driving -----------------------------------------------------

    fn complete_disk_writes(&mut self) -> Result<(), String> {
        for position in 0..self.nodes.len() {
            let time = self.time;
            let node = &mut self.nodes[position];
            if node.paused_until > time {
                continue;
            }
            let Some(raft) = node.raft.as_mut() else {
                continue;
            };
            let mut last_seq = None;
            while let Some(write) = node.disk.front() {
                if write.complete_at > self.time {
                    break;
                }
                let write = node.disk.pop_front().expect("front was just seen");
                let storage = raft.storage_mut();
                for chunk in &write.snapshot_chunks {
                    storage
                        .write_snapshot_chunk(chunk.index, chunk.term, chunk.offset, &chunk.data)
                        .map_err(|error| format!("node {}: snapshot chunk refused: {error}", node.id))?;
                }
                if let Some(meta) = &write.snapshot {
                    storage
                        .install_snapshot(meta)
                        .map_err(|error| format!("node {}: snapshot install refused: {error}", node.id))?;
                    let data = storage
                        .snapshot_data(meta.index)
                        .map_err(|error| format!("node {}: reading the installed snapshot: {error}", node.id))?;
                    let (index, digest) = decode_snapshot(&data)?;
                    if index != meta.index {
                        return Err(format!(
                            "node {}: snapshot data at {index} installed as {}",
                            node.id, meta.index
                        ));
                    }
                    self.checker.check_snapshot(node.id, meta.index, meta.term, digest)?;
                    self.checker
                        .on_snapshot_installed(node.id, meta.index, meta.term, true)?;
                    // The install is durable: restore the state machine.
                    node.applied = index;
                    node.digest = digest;
                    self.snapshots_installed += 1;
                }
                let storage = raft.storage_mut();
                let written = storage
                    .append_entries(&write.entries)
                    .and_then(|()| match write.hard_state {
                        Some(hard_state) => storage.save_hard_state(hard_state),
                        None => Ok(()),
                    });
                written
                    .and_then(|()| storage.sync())
                    .map_err(|error| format!("node {}: storage write failed: {error}", node.id))?;
                self.checker.on_durable(node.id, &write.entries)?;
                last_seq = Some(write.seq);
            }
            if let Some(seq) = last_seq {
                raft.on_persisted(seq);
            }
        }
        Ok(())
    }

    fn process_readies(&mut self) -> Result<(), String> {
        // Bounded: each pass either finds no work or makes progress; the
        // bound only guards against a livelock bug in the core.
        for _ in 0..64 {
            let mut any = false;
            for position in 0..self.nodes.len() {
                let time = self.time;
                let has_ready = self.nodes[position].active(time).is_some_and(|raft| raft.has_ready());
                if has_ready {
                    any = true;
                    self.handle_ready(position)?;
                }
            }
            // Writes with zero latency complete in the same tick.
            self.complete_disk_writes()?;
            if !any {
                return Ok(());
            }
        }
        Err("nodes kept producing work for 64 rounds in one tick".to_string())
    }

    fn handle_ready(&mut self, position: usize) -> Result<(), String> {
        let time = self.time;
        let write_delay = if self.disk.write_ticks_max == 0 {
            0
        } else {
            self.rng.range(0, self.disk.write_ticks_max + 1)
        };
        let node = &mut self.nodes[position];
        let raft = node.raft.as_mut().expect("ready on a live node");
        let ready = raft.ready();
        let (id, term) = (raft.id(), raft.term());
        if let Some(soft) = ready.soft_state {
            self.trace_hash = mix(self.trace_hash ^ mix(id) ^ soft.term ^ (soft.role as u64) << 60);
            if soft.role == Role::Leader {
                self.leaders_elected += 1;
            }
            if self.config.trace {
                eprintln!(
                    "[seed {} tick {}] node {id} is {:?} in term {} (leader {})",
                    self.config.seed, time, soft.role, soft.term, soft.leader
                );
            }
        }
        if let Some(meta) = &ready.snapshot {
            self.checker.on_snapshot_installed(id, meta.index, meta.term, false)?;
            self.trace(|| format!("node {id} installs snapshot at {} (term {})", meta.index, meta.term));
        }
        self.checker.on_entries(id, &ready.entries)?;
        let durable_leader = self.nodes[position].raft.as_ref().is_some_and(is_durable_leader);
        if durable_leader {
            self.checker.on_leader(id, term)?;
        }
        if ready.must_persist() {
            let node = &mut self.nodes[position];
            // Writes complete in order: never before the previous one.
            let complete_at = node
                .disk
                .back()
                .map_or(time, |last| last.complete_at)
                .max(time + write_delay);
            node.disk.push_back(PendingWrite {
                seq: ready.seq,
                snapshot_chunks: ready.snapshot_chunks,
                snapshot: ready.snapshot,
                hard_state: ready.hard_state,
                entries: ready.entries,
                complete_at,
            });
        }
        for message in ready.messages {
            self.network.send(time, message, &mut self.rng);
        }
        for entry in &ready.committed_entries {
            self.apply(position, term, entry)?;
        }
        self.record(mix(id) ^ mix(self.nodes[position].applied) ^ term);
        let node = &mut self.nodes[position];
        node.reads_waiting.extend(ready.read_states);
        self.serve_reads(position)
    }

    fn apply(&mut self, position: usize, term: u64, entry: &Entry) -> Result<(), String> {
        let id = self.nodes[position].id;
        self.checker.on_apply(id, term, entry)?;
        let node = &mut self.nodes[position];
        if entry.index != node.applied + 1 {
            return Err(format!(
                "node {id} applied index {} after {}",
                entry.index, node.applied
            ));
        }
        node.applied = entry.index;
        node.digest = state_digest(node.digest, entry);
        if entry.kind != EntryKind::Normal || entry.data.len() != 16 {
            return Ok(());
        }
        let write_id = u64::from_le_bytes(entry.data[..8].try_into().expect("16-byte entry"));
        let acked = self
            .writes
            .get(&write_id)
            .is_some_and(|write| write.node == id && write.index == entry.index);
        if acked {
            let write = self.writes.remove(&write_id).expect("just seen");
            self.checker.on_write_acked(entry.index, write.floor)?;
            self.acked
                .push((write_id, entry.index, Checker::entry_data_hash(entry)));
        }
        Ok(())
    }

    fn serve_reads(&mut self, position: usize) -> Result<(), String> {
        let node = &mut self.nodes[position];
        let applied = node.applied;
        let mut index = 0;
        while index < node.reads_waiting.len() {
            let read_state = node.reads_waiting[index];
            if read_state.index > applied {
                index += 1;
                continue;
            }
            node.reads_waiting.swap_remove(index);
            if let Some(read) = self.reads.remove(&read_state.request_id) {
                if read.node != node.id {
                    return Err(format!("read {} answered at the wrong node", read_state.request_id));
                }
                self.checker.on_read_served(applied, read.floor)?;
            }
        }
        Ok(())
    }

    // ----- Liveness ---------------------------------------------------------

    fn current_leader(&self) -> Option<usize> {
        self.nodes.iter().position(|node| {
            node.raft
                .as_ref()
                .is_some_and(|raft| raft.role() == Role::Leader && raft.leader() == raft.id())
        })
    }

    fn await_leader(&mut self, healed_at: u64) -> Result<u64, String> {
        while self.time - healed_at < LEADER_AFTER_HEAL_TICKS_MAX {
            self.step(false)?;
            if self.current_leader().is_some() {
                return Ok(self.time - healed_at);
            }
        }
        Err(format!(
            "liveness: no leader within {LEADER_AFTER_HEAL_TICKS_MAX} ticks after faults healed; {}",
            self.statuses()
        ))
    }

    /// Proposes a final write at the leader and waits until every node has
    /// applied it; then checks no acknowledged write was lost.
    fn await_convergence(&mut self) -> Result<(), String> {
        let start = self.time;
        let mut marker: Option<(usize, u64)> = None;
        while self.time - start < CONVERGE_AFTER_HEAL_TICKS_MAX {
            if let Some(leader) = self.current_leader() {
                let stale = marker.is_none_or(|(at, id)| at != leader || !self.writes.contains_key(&id));
                if stale {
                    let acked_marker = marker.is_some_and(|(_, id)| self.acked.iter().any(|(w, _, _)| *w == id));
                    if !acked_marker {
                        marker = self.client_write(leader).map(|id| (leader, id));
                    }
                }
            }
            self.step(false)?;
            let Some((_, id)) = marker else {
                continue;
            };
            let Some(&(_, index, _)) = self.acked.iter().find(|(w, _, _)| *w == id) else {
                continue;
            };
            // Every member of the configuration in force converges; nodes
            // outside it (spares, removed nodes) need not.
            let Some(leader) = self.current_leader() else {
                continue;
            };
            let configuration = self.nodes[leader]
                .raft
                .as_ref()
                .map(|raft| raft.configuration().clone())
                .unwrap_or_default();
            let converged = self
                .nodes
                .iter()
                .filter(|node| configuration.is_member(node.id))
                .all(|node| node.applied >= index);
            if converged {
                return self.check_acked_writes_survived();
            }
        }
        let applied: Vec<Index> = self.nodes.iter().map(|node| node.applied).collect();
        Err(format!(
            "liveness: nodes did not converge within {CONVERGE_AFTER_HEAL_TICKS_MAX} ticks after healing (applied {applied:?}); {}",
            self.statuses()
        ))
    }

    /// Every live node's status and configuration, for failure reports.
    fn statuses(&self) -> String {
        let statuses: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|node| {
                node.raft.as_ref().map(|raft| {
                    format!(
                        "{:?} {:?} sending {:?} receiving {:?} {:?}",
                        raft.status(),
                        raft.configuration(),
                        raft.snapshot_transfers(),
                        raft.incoming_snapshot(),
                        raft.stats()
                    )
                })
            })
            .collect();
        statuses.join("; ")
    }

    fn check_acked_writes_survived(&self) -> Result<(), String> {
        for &(write_id, index, data_hash) in &self.acked {
            if self.checker.committed_data(index) != Some(data_hash) {
                return Err(format!("acknowledged write {write_id} at index {index} was lost"));
            }
        }
        Ok(())
    }
}

/// A leader whose winning vote is durable. A single voter becomes leader
/// the moment it votes for itself, before that vote is written; if it
/// crashes first, that leadership never happened for anyone else (no
/// message left it) and the term may be won again.
fn is_durable_leader(raft: &Raft<NodeStorage>) -> bool {
    let durable = raft.storage().hard_state();
    raft.role() == Role::Leader && durable.term == raft.term() && durable.vote == raft.id()
}

fn node_config(sim: &SimConfig, id: NodeId, voters: &[NodeId], applied: Index) -> Config {
    let mut config = Config::new(id, voters.to_vec());
    // Pre-vote and check-quorum vary per seed so both paths of each are
    // exercised; lease reads require check-quorum.
    let mut rng = SeededRng::new(mix(sim.seed ^ 0x5EED));
    config.pre_vote = rng.chance(3, 4);
    config.check_quorum = rng.chance(3, 4) || matches!(sim.read_mode, ReadMode::Lease { .. });
    if sim.membership && !config.pre_vote && !config.check_quorum {
        // Outside the supported envelope: with neither, a removed member
        // that never learns of its removal deposes every new leader (seed
        // 502660 with 5 nodes). Membership changes need one of the two (both
        // are on by default); the server also stops removed members.
        config.pre_vote = true;
    }
    config.election_ticks = ELECTION_TICKS;
    config.heartbeat_ticks = HEARTBEAT_TICKS;
    config.read_mode = sim.read_mode;
    config.applied = applied;
    config.seed = sim.seed ^ mix(id);
    // Small caps so that batching, windows and message caps are exercised.
    config.message_bytes_max = 256;
    config.inflight_messages_max = 4;
    config.inflight_bytes_max = 4096;
    config.snapshot_chunk_bytes = rng.range(32, 512);
    config.snapshot_inflight_bytes_max = config.snapshot_chunk_bytes * rng.range(1, 5);
    config.compaction_tail_entries = rng.range(0, 20);
    config
}

/// Runs one seed, turning a panic inside the core into a failure that
/// carries the replay command.
///
/// # Errors
/// The invariant violation or panic message.
pub fn run_seed(config: SimConfig) -> Result<SimReport, SimFailure> {
    let for_failure = config.clone();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Simulation::new(config).run())) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Err(SimFailure {
                config: for_failure,
                time: 0,
                message: format!("panic: {message}"),
            })
        }
    }
}

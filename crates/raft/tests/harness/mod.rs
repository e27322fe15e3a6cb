//! A small deterministic in-memory network for the core's rule tests.
//!
//! Nothing moves unless a test says so: messages wait in one FIFO queue
//! until a test delivers them (all, or those a predicate picks), ticks
//! happen only when a test ticks a node, and `MemStorage` stands for the
//! disk. `process` drives one node's Ready loop the way an application must
//! (persist hard state and entries, then `on_persisted`), collecting its
//! messages, committed entries and read states. Every loop is bounded.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raftwerk_raft::{
    Config, Entry, EntryKind, HardState, Index, MemStorage, Message, MessageBody, NodeId, Raft, ReadState,
    RejectReason, Role, SnapshotMeta, Term,
};

/// Upper bound on messages delivered by one `deliver_*` call.
pub const DELIVERIES_MAX: usize = 100_000;
/// Upper bound on Ready rounds in one `process` call.
pub const READY_ROUNDS_MAX: usize = 64;

/// Election timeout T used by the tests unless they say otherwise.
pub const ELECTION_TICKS: u64 = 10;
/// Heartbeat interval H used by the tests unless they say otherwise.
pub const HEARTBEAT_TICKS: u64 = 1;

/// A test configuration: fixed seed, small timeouts, defaults otherwise.
pub fn config(id: NodeId, voters: &[NodeId]) -> Config {
    let mut config = Config::new(id, voters.to_vec());
    config.election_ticks = ELECTION_TICKS;
    config.heartbeat_ticks = HEARTBEAT_TICKS;
    config.seed = 0x5eed_0000 + id;
    config.compaction_tail_entries = COMPACTION_TAIL_ENTRIES;
    config
}

/// Entries kept below a snapshot when tests compact.
pub const COMPACTION_TAIL_ENTRIES: u64 = 2;

pub fn entry(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(format!("{index}@{term}")),
    }
}

/// Entries `1..=terms.len()` with the given terms.
pub fn entries_with_terms(terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(offset, &term)| entry(offset as Index + 1, term))
        .collect()
}

/// A storage that already holds `terms` as its log and `hard_state`.
pub fn storage_with(terms: &[Term], hard_state: HardState) -> MemStorage {
    let mut storage = MemStorage::new();
    storage.append(&entries_with_terms(terms));
    storage.set_hard_state(hard_state);
    storage
}

pub fn data(size: usize) -> Bytes {
    Bytes::from(vec![b'x'; size])
}

/// The cluster: nodes, the queue of messages in flight, and what each node
/// has handed to its application.
pub struct Network {
    pub nodes: BTreeMap<NodeId, Raft<MemStorage>>,
    /// Messages sent and not yet delivered, oldest first.
    pub queue: Vec<Message>,
    /// Directed links that drop every message: `(from, to)`.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub committed: BTreeMap<NodeId, Vec<Entry>>,
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    /// Snapshots each node installed from a leader, with their data.
    pub installed: BTreeMap<NodeId, Vec<(SnapshotMeta, Bytes)>>,
    /// Every message a node refused, with the reason.
    pub rejections: Vec<(Message, RejectReason)>,
    /// Messages delivered so far (to count round trips).
    pub delivered: Vec<Message>,
}

impl Network {
    /// A fresh cluster of `ids`, all voters, with `adjust` applied to each
    /// node's configuration.
    pub fn new(ids: &[NodeId], adjust: impl Fn(&mut Config)) -> Self {
        let storages = ids.iter().map(|&id| (id, MemStorage::new())).collect();
        Self::with_storages(ids, storages, adjust)
    }

    /// A cluster whose nodes restart from the given storages.
    pub fn with_storages(
        ids: &[NodeId],
        mut storages: BTreeMap<NodeId, MemStorage>,
        adjust: impl Fn(&mut Config),
    ) -> Self {
        let mut nodes = BTreeMap::new();
        for &id in ids {
            let mut config = config(id, ids);
            adjust(&mut config);
            let storage = storages.remove(&id).unwrap_or_default();
            nodes.insert(id, Raft::new(config, storage).expect("valid test config"));
        }
        Network {
            nodes,
            queue: Vec::new(),
            cut: BTreeSet::new(),
            committed: ids.iter().map(|&id| (id, Vec::new())).collect(),
            read_states: ids.iter().map(|&id| (id, Vec::new())).collect(),
            installed: ids.iter().map(|&id| (id, Vec::new())).collect(),
            rejections: Vec::new(),
            delivered: Vec::new(),
        }
    }

    pub fn node(&self, id: NodeId) -> &Raft<MemStorage> {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Raft<MemStorage> {
        self.nodes.get_mut(&id).expect("known node")
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Drops every message to and from `id` from now on.
    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Runs `id`'s Ready loop as a well-behaved application with a synchronous
    /// disk: persist, acknowledge, queue messages, record committed entries
    /// and read states, until the node has nothing more.
    pub fn process(&mut self, id: NodeId) {
        for _ in 0..READY_ROUNDS_MAX {
            let node = self.nodes.get_mut(&id).expect("known node");
            if !node.has_ready() {
                return;
            }
            let ready = node.ready();
            let was_empty = !ready.must_persist()
                && ready.messages.is_empty()
                && ready.committed_entries.is_empty()
                && ready.read_states.is_empty()
                && ready.soft_state.is_none();
            node.storage_mut().persist(&ready);
            if ready.must_persist() {
                node.on_persisted(ready.seq);
            }
            if let Some(meta) = &ready.snapshot {
                let data = node.storage().snapshot_data().cloned().unwrap_or_default();
                self.installed
                    .get_mut(&id)
                    .expect("known node")
                    .push((meta.clone(), data));
            }
            self.queue.extend(ready.messages);
            self.committed
                .get_mut(&id)
                .expect("known node")
                .extend(ready.committed_entries);
            self.read_states
                .get_mut(&id)
                .expect("known node")
                .extend(ready.read_states);
            if was_empty {
                // has_ready() promised work that ready() did not produce;
                // stop rather than spin (see the has_ready test).
                return;
            }
        }
        panic!("node {id}: Ready loop did not settle in {READY_ROUNDS_MAX} rounds");
    }

    pub fn process_all(&mut self) {
        for id in self.ids() {
            self.process(id);
        }
    }

    pub fn tick(&mut self, id: NodeId) {
        self.node_mut(id).tick();
        self.process(id);
    }

    pub fn tick_all(&mut self) {
        for id in self.ids() {
            self.tick(id);
        }
    }

    /// Steps one message into its recipient (unless its link is cut) and
    /// runs the recipient's Ready loop.
    pub fn deliver(&mut self, message: Message) {
        if self.cut.contains(&(message.from, message.to)) || !self.nodes.contains_key(&message.to) {
            return;
        }
        let to = message.to;
        self.delivered.push(message.clone());
        if let Err(reason) = self.node_mut(to).step(message.clone()) {
            self.rejections.push((message, reason));
        }
        self.process(to);
    }

    /// Delivers queued messages (and the messages they cause) until the
    /// queue is empty.
    pub fn deliver_all(&mut self) {
        self.deliver_where(|_| true);
    }

    /// Delivers, oldest first, every queued message `pick` accepts (and
    /// those of the messages they cause that `pick` accepts); the others stay
    /// queued in order.
    pub fn deliver_where(&mut self, pick: impl Fn(&Message) -> bool) {
        for _ in 0..DELIVERIES_MAX {
            let Some(at) = self.queue.iter().position(&pick) else {
                return;
            };
            let message = self.queue.remove(at);
            self.deliver(message);
        }
        panic!("network did not settle in {DELIVERIES_MAX} deliveries");
    }

    /// Removes and returns the queued messages `pick` accepts.
    pub fn take_where(&mut self, pick: impl Fn(&Message) -> bool) -> Vec<Message> {
        let (taken, kept) = std::mem::take(&mut self.queue).into_iter().partition(|m| pick(m));
        self.queue = kept;
        taken
    }

    /// Drops every queued message.
    pub fn drop_queue(&mut self) {
        self.queue.clear();
    }

    /// Ticks `id` alone until it leaves the follower role (at most 2T + 1
    /// ticks), then delivers everything until the cluster settles. Panics
    /// unless `id` is leader afterwards.
    pub fn elect(&mut self, id: NodeId) {
        self.campaign(id);
        self.deliver_all();
        assert_eq!(self.node(id).role(), Role::Leader, "node {id} was not elected");
    }

    /// Ticks `id` alone until it starts a (pre-)campaign; nothing is delivered.
    pub fn campaign(&mut self, id: NodeId) {
        let ticks_max = 2 * self.node(id).config().election_ticks + 1;
        for _ in 0..ticks_max {
            if self.node(id).role() != Role::Follower {
                return;
            }
            self.tick(id);
        }
        assert_ne!(self.node(id).role(), Role::Follower, "node {id} never campaigned");
    }

    /// Ticks every node `ticks` times, delivering all messages after each tick.
    pub fn run_ticks(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.tick_all();
            self.deliver_all();
        }
    }

    /// The leaders the nodes themselves claim to be, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, Term)> {
        self.nodes
            .values()
            .filter(|node| node.role() == Role::Leader)
            .map(|node| (node.id(), node.term()))
            .collect()
    }
}

pub fn is_append(message: &Message) -> bool {
    matches!(message.body, MessageBody::Append { .. })
}

pub fn is_heartbeat(message: &Message) -> bool {
    matches!(message.body, MessageBody::Heartbeat { .. })
}

pub fn is_election(message: &Message) -> bool {
    matches!(
        message.body,
        MessageBody::PreVote { .. }
            | MessageBody::PreVoteResponse { .. }
            | MessageBody::Vote { .. }
            | MessageBody::VoteResponse { .. }
    )
}

pub fn append_entries(message: &Message) -> &[Entry] {
    match &message.body {
        MessageBody::Append { entries, .. } => entries,
        other => panic!("not an append: {other:?}"),
    }
}

/// Whether the (single) response to `to`'s vote request was a grant.
pub fn vote_granted(messages: &[Message], to: NodeId) -> Option<bool> {
    messages.iter().find_map(|m| match m.body {
        MessageBody::VoteResponse { granted } if m.to == to => Some(granted),
        _ => None,
    })
}

/// Persists `ready`'s state into the node's storage and acknowledges it.
pub fn persist(node: &mut Raft<MemStorage>, ready: &raftwerk_raft::Ready) {
    node.storage_mut().persist(ready);
    if ready.must_persist() {
        node.on_persisted(ready.seq);
    }
}

/// A configuration change of `ops`.
pub fn change(ops: &[raftwerk_raft::ConfChangeOp]) -> raftwerk_raft::ConfChange {
    raftwerk_raft::ConfChange::new(ops.to_vec())
}

/// Nodes 1–5 exist; the cluster bootstraps with voters 1, 2, 3 and elects
/// node 1, so 4 and 5 are spare nodes that join through changes.
pub fn cluster_with_spares() -> Network {
    let mut net = Network::new(&[1, 2, 3, 4, 5], |config| config.voters = vec![1, 2, 3]);
    net.elect(1);
    net.run_ticks(1);
    net
}

/// Proposes the change of `ops` at `leader` and lets it commit.
pub fn commit_change(net: &mut Network, leader: NodeId, ops: &[raftwerk_raft::ConfChangeOp]) {
    net.node_mut(leader)
        .propose_conf_change(change(ops))
        .expect("change accepted");
    settle(net);
}

/// Adds `ids` as learners one change at a time through `leader`, letting
/// each change commit before the next.
pub fn add_learners(net: &mut Network, leader: NodeId, ids: &[NodeId]) {
    for &id in ids {
        commit_change(net, leader, &[raftwerk_raft::ConfChangeOp::AddLearner(id)]);
    }
}

/// Runs ticks until every node applied everything the leader committed
/// (bounded).
pub fn settle(net: &mut Network) {
    for _ in 0..50 {
        net.run_ticks(1);
    }
}

/// Snapshot data standing for a node's state at `index`: `size` bytes that
/// differ per index, so a transfer that mixes up offsets is caught.
pub fn snapshot_data(index: Index, size: usize) -> Bytes {
    Bytes::from((0..size).map(|at| (at as u64 * 31 + index) as u8).collect::<Vec<u8>>())
}

/// The application of node `id` snapshots its state at the applied index
/// (`size` bytes of data) and compacts the log as far as the core allows.
/// Returns the snapshot's metadata.
pub fn snapshot_and_compact(net: &mut Network, id: NodeId, size: usize) -> SnapshotMeta {
    let node = net.node_mut(id);
    let meta = node
        .snapshot_meta(node.applied_index())
        .expect("snapshot at the applied index");
    node.storage_mut()
        .create_snapshot(meta.clone(), snapshot_data(meta.index, size))
        .expect("newer snapshot");
    let in_use = node.snapshots_in_use();
    raftwerk_raft::LogStore::retain_snapshots(node.storage_mut(), &in_use).expect("release snapshots");
    let compact_index = node.compact_index();
    if compact_index >= raftwerk_raft::Storage::first_index(node.storage()) {
        node.storage_mut()
            .compact(compact_index)
            .expect("compaction covered by the snapshot");
    }
    meta
}

//! The node runtime: one task owns the consensus core, the WAL and the key
//! space, and drives them — ticks from a monotonic interval (missed ticks
//! are delivered at once, as lease reads need), peer messages, client
//! proposals and reads, and the Ready loop: persist (one `fdatasync` per
//! ready: group commit), send, apply committed entries in one redb
//! transaction per ready, answer waiting clients, snapshot and compact.
//!
//! Clients talk to the task through `NodeHandle`; every request carries a
//! one-shot reply channel, and every wait on one is bounded by a timeout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use raftwerk_kv::{decode_command, encode_command, Command, CommandResponse, KvStore, RangeRequest, RangeResponse};
use raftwerk_raft::{
    Config, EntryKind, LogStore, Message, NodeId, ProposeError, Raft, ReadError, Ready, Role, Storage,
};
use raftwerk_wal::{RealFs, Wal, WalOptions};
use tokio::sync::{mpsc, oneshot};

use crate::errors::ServerError;
use crate::snapshot_io::{SnapshotReader, SnapshotWriter};
use crate::transport::Transport;

/// Inputs queued for the node task; beyond this, clients get
/// "too many requests" and peer messages are dropped (the core retries).
const INPUT_QUEUE_MAX: usize = 4096;
/// Inputs handled per wake-up before the Ready loop runs (batching).
const INPUTS_PER_ROUND_MAX: usize = 1024;

/// Static facts about this node and its cluster.
#[derive(Clone, Debug)]
pub struct Membership {
    pub cluster_id: u64,
    pub member_id: NodeId,
    pub name: String,
    /// Every member: id, name, peer URLs; sorted by id.
    pub members: Vec<(NodeId, String, Vec<String>)>,
    pub client_urls: Vec<String>,
}

/// Settings of the node runtime.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub data_dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub election_ticks: u64,
    pub snapshot_count: u64,
    pub snapshot_catchup_entries: u64,
    pub request_timeout: Duration,
}

/// What Status reports.
#[derive(Clone, Debug, Default)]
pub struct NodeStatus {
    pub leader: NodeId,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub revision: i64,
    pub db_size: i64,
    pub is_learner: bool,
}

/// Where a proposal's outcome goes: its response and the term it applied in.
type ProposalReply = oneshot::Sender<Result<(CommandResponse, u64), ServerError>>;

enum Input {
    Propose {
        command: Command,
        reply: ProposalReply,
    },
    Read {
        reply: oneshot::Sender<Result<(), ServerError>>,
    },
    Peer(Message),
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    MoveLeader {
        target: NodeId,
        reply: oneshot::Sender<Result<(), ServerError>>,
    },
}

/// The client side of the node task.
#[derive(Clone)]
pub struct NodeHandle {
    inputs: mpsc::Sender<Input>,
    kv: Arc<RwLock<KvStore>>,
    pub membership: Arc<Membership>,
    request_timeout: Duration,
    /// The node's current term (for response headers).
    term: Arc<AtomicU64>,
}

impl NodeHandle {
    /// How long a client request may wait.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The term this node is in.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Input) -> Result<T, ServerError> {
        let (reply, answer) = oneshot::channel();
        self.inputs.try_send(make(reply)).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ServerError::TooManyRequests,
            mpsc::error::TrySendError::Closed(_) => ServerError::Stopped,
        })?;
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(ServerError::LeaderChanged),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Proposes a write here (this node must lead); returns its response
    /// and the term it was applied in.
    ///
    /// # Errors
    /// `NotLeader`, `NoLeader`, a key-space error, or a timeout.
    pub async fn propose(&self, command: Command) -> Result<(CommandResponse, u64), ServerError> {
        self.ask(|reply| Input::Propose { command, reply }).await?
    }

    /// Serves a read: linearizable ones first confirm leadership (ReadIndex)
    /// and wait until this node has applied up to the read index.
    ///
    /// # Errors
    /// `NoLeader`, a key-space error, or a timeout.
    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, ServerError> {
        if !request.serializable {
            self.ask(|reply| Input::Read { reply }).await??;
        }
        let kv = self.kv.read().expect("key space lock poisoned");
        Ok(kv.range(&request)?)
    }

    pub async fn status(&self) -> Result<NodeStatus, ServerError> {
        self.ask(|reply| Input::Status { reply }).await
    }

    /// # Errors
    /// When this node does not lead or the target is not a voter.
    pub async fn move_leader(&self, target: NodeId) -> Result<(), ServerError> {
        self.ask(|reply| Input::MoveLeader { target, reply }).await?
    }

    /// Hands a peer's message to the node; dropped when the queue is full.
    pub fn deliver(&self, message: Message) {
        let _ = self.inputs.try_send(Input::Peer(message));
    }
}

/// The node task's state.
pub struct Node {
    raft: Raft<Wal<RealFs>>,
    kv: Arc<RwLock<KvStore>>,
    transport: Transport,
    membership: Arc<Membership>,
    options: NodeOptions,
    next_request_id: u64,
    /// Proposals of this node waiting for their entry to apply, by the
    /// index and term the core gave the entry: only that exact entry
    /// answers them (request ids alone would be reused after a restart).
    proposals: BTreeMap<u64, (u64, ProposalReply)>,
    /// Reads waiting for their ReadIndex confirmation.
    reads_pending: BTreeMap<u64, oneshot::Sender<Result<(), ServerError>>>,
    /// Confirmed reads waiting until this index is applied.
    reads_confirmed: Vec<(u64, oneshot::Sender<Result<(), ServerError>>)>,
    last_snapshot_index: u64,
    last_leader: NodeId,
    /// The leader the pending reads were asked of.
    last_confirmed_leader: NodeId,
    term: Arc<AtomicU64>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Wal(#[from] raftwerk_wal::WalError),
    #[error("state machine: {0}")]
    Kv(#[from] raftwerk_kv::KvError),
    #[error("consensus core: {0}")]
    Core(#[from] raftwerk_raft::ConfigError),
    #[error("log storage: {0}")]
    Storage(#[from] raftwerk_raft::StorageError),
    #[error("{0}")]
    DataDir(String),
}

impl Node {
    /// Opens the node's data (WAL, key space) and starts its task.
    ///
    /// # Errors
    /// What prevents the node from starting: a locked or damaged data
    /// directory, a data directory of another cluster, inconsistent state.
    pub fn start(
        membership: Membership,
        options: NodeOptions,
        transport_for: impl FnOnce(NodeHandle) -> Transport,
    ) -> Result<NodeHandle, StartError> {
        std::fs::create_dir_all(&options.data_dir)
            .map_err(|error| StartError::DataDir(format!("cannot create {}: {error}", options.data_dir.display())))?;
        check_cluster_file(&options.data_dir, &membership)?;
        let wal = Wal::open(RealFs, &options.data_dir, WalOptions::default())?;
        let mut kv = KvStore::open(&options.data_dir.join("kv.redb"))?;
        if let Some(meta) = wal.snapshot() {
            if kv.applied_index() < meta.index {
                // The key space is behind the stored snapshot (it was
                // installed, then the node stopped): restore it first.
                kv.restore_snapshot(&mut SnapshotReader::new(&wal, meta.index))?;
            }
        }
        // The WAL holds every entry the key space applies, so its batches
        // need not be synced one by one: a crash replays them.
        kv.set_durable_commits(false);
        let voters: Vec<NodeId> = membership.members.iter().map(|(id, _, _)| *id).collect();
        let mut config = Config::new(membership.member_id, voters);
        config.election_ticks = options.election_ticks;
        config.heartbeat_ticks = 1;
        config.applied = kv.applied_index();
        config.compaction_tail_entries = options.snapshot_catchup_entries;
        config.seed = membership.member_id ^ kv.applied_index();
        let raft = Raft::new(config, wal)?;
        let last_snapshot_index = raft.snapshot_index();
        let kv = Arc::new(RwLock::new(kv));
        let membership = Arc::new(membership);
        let (inputs, receiver) = mpsc::channel(INPUT_QUEUE_MAX);
        let term = Arc::new(AtomicU64::new(raft.term()));
        let handle = NodeHandle {
            inputs,
            kv: kv.clone(),
            membership: membership.clone(),
            request_timeout: options.request_timeout,
            term: term.clone(),
        };
        let transport = transport_for(handle.clone());
        let node = Node {
            raft,
            kv,
            transport,
            membership,
            options,
            next_request_id: request_id_base(),
            proposals: BTreeMap::new(),
            reads_pending: BTreeMap::new(),
            reads_confirmed: Vec::new(),
            last_snapshot_index,
            last_leader: 0,
            last_confirmed_leader: 0,
            term,
        };
        tokio::spawn(node.run(receiver));
        Ok(handle)
    }

    async fn run(mut self, mut receiver: mpsc::Receiver<Input>) {
        let mut ticker = tokio::time::interval(self.options.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        tracing::info!(
            name = %self.membership.name,
            member = format_args!("{:x}", self.membership.member_id),
            "node started"
        );
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.raft.tick();
                    // Clients that gave up (timed out) leave nothing behind.
                    self.proposals.retain(|_, (_, reply)| !reply.is_closed());
                    self.reads_pending.retain(|_, reply| !reply.is_closed());
                    self.reads_confirmed.retain(|(_, reply)| !reply.is_closed());
                }
                input = receiver.recv() => {
                    let Some(input) = input else { return };
                    self.handle(input);
                    for _ in 0..INPUTS_PER_ROUND_MAX {
                        match receiver.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                }
            }
            let mut rounds = 0;
            while self.raft.has_ready() && rounds < 64 {
                rounds += 1;
                let ready = self.raft.ready();
                tokio::task::block_in_place(|| self.process(ready));
            }
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Peer(message) => {
                let _ = self.raft.step(message);
            }
            Input::Propose { command, reply } => {
                let request_id = self.next_request_id;
                self.next_request_id += 1;
                let mut data = Vec::with_capacity(64);
                data.extend_from_slice(&self.membership.member_id.to_le_bytes());
                data.extend_from_slice(&request_id.to_le_bytes());
                data.extend_from_slice(&encode_command(&command));
                match self.raft.propose(Bytes::from(data)) {
                    Ok(index) => {
                        self.proposals.insert(index, (self.raft.term(), reply));
                    }
                    Err(ProposeError::NotLeader { leader_hint }) => {
                        let error = if leader_hint == 0 {
                            ServerError::NoLeader
                        } else {
                            ServerError::NotLeader { leader: leader_hint }
                        };
                        let _ = reply.send(Err(error));
                    }
                    Err(ProposeError::EntryTooLarge { .. }) => {
                        let _ = reply.send(Err(ServerError::RequestTooLarge));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(ServerError::Internal(error.to_string())));
                    }
                }
            }
            Input::Read { reply } => {
                let request_id = self.next_request_id;
                self.next_request_id += 1;
                match self.raft.read_index(request_id) {
                    Ok(()) => {
                        self.reads_pending.insert(request_id, reply);
                    }
                    Err(ReadError::NoLeader) => {
                        let _ = reply.send(Err(ServerError::NoLeader));
                    }
                    Err(ReadError::TooManyPending { .. }) => {
                        let _ = reply.send(Err(ServerError::TooManyRequests));
                    }
                }
            }
            Input::Status { reply } => {
                let status = self.raft.status();
                let kv = self.kv.read().expect("key space lock poisoned");
                let db_size = std::fs::metadata(self.options.data_dir.join("kv.redb")).map_or(0, |meta| meta.len());
                let _ = reply.send(NodeStatus {
                    leader: status.leader,
                    term: status.term,
                    commit_index: status.commit,
                    applied_index: status.applied,
                    revision: kv.revision(),
                    db_size: db_size as i64,
                    is_learner: self.raft.configuration().is_learner(self.membership.member_id),
                });
            }
            Input::MoveLeader { target, reply } => {
                let result = self.raft.transfer_leadership(target).map_err(|error| match error {
                    raftwerk_raft::TransferError::NotLeader { leader_hint } => {
                        ServerError::NotLeader { leader: leader_hint }
                    }
                    other => ServerError::Internal(format!("etcdserver: {other}")),
                });
                let _ = reply.send(result);
            }
        }
    }

    /// One ready: persist, send, apply, answer.
    fn process(&mut self, mut ready: Ready) {
        if let Some(soft) = ready.soft_state {
            self.term.store(soft.term, Ordering::Relaxed);
            if soft.leader != self.last_leader {
                tracing::info!(
                    name = %self.membership.name,
                    term = soft.term,
                    leader = format_args!("{:x}", soft.leader),
                    role = ?soft.role,
                    "leader changed"
                );
                self.last_leader = soft.leader;
            }
            if soft.role != Role::Leader {
                // Proposals made as leader may still commit, or never: etcd
                // answers "leader changed" and so do we.
                for (_, (_, reply)) in std::mem::take(&mut self.proposals) {
                    let _ = reply.send(Err(ServerError::LeaderChanged));
                }
            }
            // Reads waiting for a confirmation the core drops on a leader
            // change would otherwise wait for ever.
            if soft.leader != self.last_confirmed_leader {
                for (_, reply) in std::mem::take(&mut self.reads_pending) {
                    let _ = reply.send(Err(ServerError::LeaderChanged));
                }
                self.last_confirmed_leader = soft.leader;
            }
        }
        // Messages never depend on unpersisted state (the core holds back
        // those that do), so they leave first: the leader's appends reach
        // followers while its own write is in flight (§10.2.1).
        for message in std::mem::take(&mut ready.messages) {
            self.transport.send(message);
        }
        if ready.must_persist() {
            if let Err(error) = self.persist(&ready) {
                tracing::error!(name = %self.membership.name, %error, "writing the WAL failed; stopping");
                std::process::exit(1);
            }
            self.raft.on_persisted(ready.seq);
            if let Some(meta) = &ready.snapshot {
                if let Err(error) = self.restore_key_space(meta.index) {
                    tracing::error!(name = %self.membership.name, %error, "installing a snapshot failed; stopping");
                    std::process::exit(1);
                }
            }
        }
        if !ready.committed_entries.is_empty() {
            self.apply(&ready.committed_entries);
        }
        for read in ready.read_states {
            if let Some(reply) = self.reads_pending.remove(&read.request_id) {
                self.reads_confirmed.push((read.index, reply));
            }
        }
        let applied = self.raft.applied_index();
        let mut waiting = Vec::new();
        for (index, reply) in std::mem::take(&mut self.reads_confirmed) {
            if index <= applied {
                let _ = reply.send(Ok(()));
            } else {
                waiting.push((index, reply));
            }
        }
        self.reads_confirmed = waiting;
        if applied >= self.last_snapshot_index + self.options.snapshot_count {
            if let Err(error) = self.snapshot(applied) {
                tracing::warn!(name = %self.membership.name, %error, "snapshot failed; will retry");
            }
        }
    }

    fn persist(&mut self, ready: &Ready) -> Result<(), raftwerk_raft::StorageError> {
        let wal = self.raft.storage_mut();
        for chunk in &ready.snapshot_chunks {
            wal.write_snapshot_chunk(chunk.index, chunk.term, chunk.offset, &chunk.data)?;
        }
        if let Some(meta) = &ready.snapshot {
            wal.install_snapshot(meta)?;
        }
        wal.append_entries(&ready.entries)?;
        if let Some(hard_state) = ready.hard_state {
            wal.save_hard_state(hard_state)?;
        }
        wal.sync()
    }

    fn restore_key_space(&mut self, index: u64) -> Result<(), String> {
        let mut reader = SnapshotReader::new(self.raft.storage(), index);
        let mut kv = self.kv.write().expect("key space lock poisoned");
        kv.restore_snapshot(&mut reader).map_err(|error| error.to_string())?;
        self.last_snapshot_index = index;
        Ok(())
    }

    fn apply(&mut self, entries: &[raftwerk_raft::Entry]) {
        let mut commands = Vec::with_capacity(entries.len());
        let mut positions = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.kind != EntryKind::Normal || entry.data.len() < 16 {
                continue;
            }
            match decode_command(&entry.data[16..]) {
                Ok(command) => {
                    commands.push((entry.index, command));
                    positions.push((entry.index, entry.term));
                }
                Err(error) => {
                    tracing::warn!(index = entry.index, %error, "skipping an undecodable entry");
                }
            }
        }
        let through = entries.last().map_or(0, |entry| entry.index);
        let mut kv = self.kv.write().expect("key space lock poisoned");
        let responses = match kv.apply_through(&commands, through) {
            Ok(responses) => responses,
            Err(error) => {
                tracing::error!(name = %self.membership.name, %error, "applying to the key space failed; stopping");
                std::process::exit(1);
            }
        };
        drop(kv);
        // Entries at or below the key space's applied index (a replay)
        // have no response: they were answered before the restart.
        let skipped = positions.len() - responses.len();
        let mut answered = BTreeMap::new();
        for ((index, term), response) in positions.into_iter().skip(skipped).zip(responses) {
            answered.insert(index, (term, response));
        }
        // Every proposal at an applied index is settled: by its own entry,
        // or, if another entry took that index, as "leader changed".
        for entry in entries {
            let Some((term, reply)) = self.proposals.remove(&entry.index) else {
                continue;
            };
            let result = match answered.remove(&entry.index) {
                Some((entry_term, response)) if entry_term == term => {
                    response.map(|response| (response, term)).map_err(ServerError::from)
                }
                _ => Err(ServerError::LeaderChanged),
            };
            let _ = reply.send(result);
        }
    }

    fn snapshot(&mut self, applied: u64) -> Result<(), String> {
        let meta = self.raft.snapshot_meta(applied).map_err(|error| error.to_string())?;
        // Bound what a restart must replay: the key space is made durable
        // as often as snapshots are taken.
        self.kv
            .write()
            .expect("key space lock poisoned")
            .persist()
            .map_err(|error| error.to_string())?;
        let in_use = self.raft.snapshots_in_use();
        let kv = self.kv.read().expect("key space lock poisoned");
        let wal = self.raft.storage_mut();
        let mut writer = SnapshotWriter::new(wal, meta.index, meta.term);
        kv.write_snapshot(&mut writer).map_err(|error| error.to_string())?;
        drop(kv);
        writer.finish().map_err(|error| error.to_string())?;
        let wal = self.raft.storage_mut();
        wal.save_snapshot(&meta)
            .and_then(|()| wal.retain_snapshots(&in_use))
            .map_err(|error| error.to_string())?;
        let compact_index = self.raft.compact_index();
        if compact_index >= self.raft.storage().first_index() {
            self.raft
                .storage_mut()
                .compact_to(compact_index)
                .map_err(|error| error.to_string())?;
        }
        self.last_snapshot_index = applied;
        tracing::info!(name = %self.membership.name, index = applied, compacted = compact_index, "snapshot taken");
        Ok(())
    }
}

/// A data directory belongs to one cluster and one member: the first start
/// records them, later starts must match (a node given another cluster's
/// data directory refuses to start).
fn check_cluster_file(dir: &std::path::Path, membership: &Membership) -> Result<(), StartError> {
    let path = dir.join("member");
    let expected = format!(
        "cluster_id={:016x}\nmember_id={:016x}\nname={}\n",
        membership.cluster_id, membership.member_id, membership.name
    );
    match std::fs::read_to_string(&path) {
        Ok(found) if found == expected => Ok(()),
        Ok(found) => Err(StartError::DataDir(format!(
            "data directory {} belongs to another cluster or member:\n{found}this node is:\n{expected}",
            dir.display()
        ))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let temporary = dir.join("member.tmp");
            std::fs::write(&temporary, &expected)
                .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
                .and_then(|()| std::fs::rename(&temporary, &path))
                .and_then(|()| std::fs::File::open(dir)?.sync_all())
                .map_err(|error| StartError::DataDir(format!("cannot write {}: {error}", path.display())))
        }
        Err(error) => Err(StartError::DataDir(format!("cannot read {}: {error}", path.display()))),
    }
}

/// The first request id of this run: ids of reads forwarded to the leader
/// must not repeat those of an earlier run, whose answers may still arrive.
/// Nanoseconds since the epoch grow faster than any run issues requests.
#[allow(clippy::disallowed_methods)]
fn request_id_base() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_nanos() as u64)
}

//! The node runtime: one task owns the consensus core, the WAL and the key
//! space, and drives them — ticks from a monotonic interval (missed ticks
//! are delivered at once, as lease reads need), peer messages, client
//! proposals and reads, and the Ready loop: persist (one `fdatasync` per
//! ready: group commit), send, apply committed entries in one redb
//! transaction per ready, answer waiting clients, snapshot and compact.
//!
//! Clients talk to the task through `NodeHandle`; every request carries a
//! one-shot reply channel, and every wait on one is bounded by a timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use raftwerk_kv::{
    decode_command, encode_command, Command, CommandResponse, KvError, KvStore, Member, MemberChange, RangeRequest,
    RangeResponse,
};
use raftwerk_raft::{
    Config, EntryKind, LogStore, Message, NodeId, ProposeError, Raft, ReadError, Ready, Role, Storage,
};
use raftwerk_wal::{RealFs, Wal, WalOptions};
use tokio::sync::{mpsc, oneshot};

use crate::errors::ServerError;
use crate::snapshot_io::SnapshotReader;
use crate::transport::{PeerDirectory, Transport};

mod membership;
mod snapshots;

pub use membership::leave_cluster;
use membership::{added_member, member_commands};
use snapshots::{start_kv_flusher, SnapshotInProgress, KV_PERSIST_INTERVAL};

/// Inputs queued for the node task; beyond this, clients get
/// "too many requests" and peer messages are dropped (the core retries).
const INPUT_QUEUE_MAX: usize = 4096;
/// Inputs handled per wake-up before the Ready loop runs (batching).
const INPUTS_PER_ROUND_MAX: usize = 1024;
/// Static facts about this node and its cluster (the member list itself
/// changes, and lives in the key space).
#[derive(Clone, Debug)]
pub struct Membership {
    pub cluster_id: u64,
    pub member_id: NodeId,
    pub name: String,
    pub client_urls: Vec<String>,
    /// The cluster's first members, from whose configuration every log
    /// starts (a joining node is given them).
    pub bootstrap: Vec<Member>,
    /// For a joined node: the members when it joined, reachable at these
    /// URLs until its applied index passes `seed_index`.
    pub seed: Vec<Member>,
    pub seed_index: u64,
}

/// A change of the member list asked for by a client.
#[derive(Clone, Debug)]
pub enum MembershipRequest {
    /// A learner, or a voter: it joins as a learner and is promoted once
    /// it has caught up.
    Add {
        peer_urls: Vec<String>,
        learner: bool,
    },
    Remove {
        id: NodeId,
    },
    Promote {
        id: NodeId,
    },
    Update {
        id: NodeId,
        peer_urls: Vec<String>,
    },
    /// A started member's name and client URLs.
    Publish {
        id: NodeId,
        name: String,
        client_urls: Vec<String>,
    },
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
    Membership {
        request: MembershipRequest,
        reply: ProposalReply,
    },
    Defragment {
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
    directory: PeerDirectory,
    /// Members removed from the cluster (their messages are refused).
    removed: Arc<RwLock<BTreeSet<NodeId>>>,
}

impl NodeHandle {
    /// How long a client request may wait.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The key space's current revision.
    pub fn revision(&self) -> i64 {
        self.kv.read().expect("key space lock poisoned").revision()
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
            self.read_barrier().await?;
        }
        // The lock only pins a consistent view; the scan runs without it,
        // so a large range never holds up the node's applies.
        let reader = self.kv.read().expect("key space lock poisoned").reader()?;
        Ok(reader.range(&request)?)
    }

    /// Waits until this node has applied everything committed when it was
    /// called, as the leader confirms it (ReadIndex): what is read after
    /// is linearizable.
    ///
    /// # Errors
    /// `NoLeader`, or a timeout.
    pub async fn read_barrier(&self) -> Result<(), ServerError> {
        self.ask(|reply| Input::Read { reply }).await?
    }

    pub async fn status(&self) -> Result<NodeStatus, ServerError> {
        self.ask(|reply| Input::Status { reply }).await
    }

    /// Compacts this member's key-space file (not replicated: each member
    /// is defragmented on its own, as with etcd). The node does nothing
    /// else meanwhile.
    ///
    /// # Errors
    /// A storage failure, or a timeout.
    pub async fn defragment(&self) -> Result<(), ServerError> {
        // redb compacts only with no read in progress: wait (bounded) for
        // backups and long ranges to end, trying again now and then.
        let started = tokio::time::Instant::now();
        loop {
            match self.ask(|reply| Input::Defragment { reply }).await? {
                Err(ServerError::Kv(KvError::ReadsInProgress)) if started.elapsed() < DEFRAGMENT_WAIT_MAX => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                result => return result,
            }
        }
    }

    /// The checksum of this member's whole key space (`KvStore::hash_all`)
    /// and the revision it covers.
    ///
    /// # Errors
    /// A storage failure.
    pub fn hash_all(&self) -> Result<(u32, i64), ServerError> {
        let (reader, revision) = {
            let kv = self.kv.read().expect("key space lock poisoned");
            (kv.reader()?, kv.revision())
        };
        Ok((reader.hash_all()?, revision))
    }

    /// # Errors
    /// When this node does not lead or the target is not a voter.
    pub async fn move_leader(&self, target: NodeId) -> Result<(), ServerError> {
        self.ask(|reply| Input::MoveLeader { target, reply }).await?
    }

    /// Changes the member list (this node must lead); answers with the
    /// list once the change is applied here.
    ///
    /// # Errors
    /// `NotLeader`, `NoLeader`, a refused change, or a timeout.
    pub async fn change_membership(&self, request: MembershipRequest) -> Result<Vec<Member>, ServerError> {
        match self.ask(|reply| Input::Membership { request, reply }).await?? {
            (CommandResponse::Members(members), _) => Ok(members),
            (other, _) => Err(ServerError::Internal(format!("unexpected response {other:?}"))),
        }
    }

    /// The member list as this node has applied it.
    ///
    /// # Errors
    /// A storage failure.
    pub fn members(&self) -> Result<Vec<Member>, ServerError> {
        Ok(self.kv.read().expect("key space lock poisoned").members()?)
    }

    /// The key space's history checksum at `revision` (see
    /// `KvStore::hash_kv`).
    ///
    /// # Errors
    /// A revision outside the history, or a storage failure.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), ServerError> {
        let reader = self.kv.read().expect("key space lock poisoned").reader()?;
        Ok(reader.hash_kv(revision)?)
    }

    /// A consistent view of the whole key space to stream as a backup.
    ///
    /// # Errors
    /// A storage failure.
    pub fn snapshot_source(&self) -> Result<raftwerk_kv::SnapshotSource, ServerError> {
        Ok(self.kv.read().expect("key space lock poisoned").snapshot_source()?)
    }

    /// Whether `id` was removed from the cluster.
    pub fn is_removed(&self, id: NodeId) -> bool {
        self.removed.read().expect("removed set lock poisoned").contains(&id)
    }

    /// The member list and the log index it is applied through.
    ///
    /// # Errors
    /// A storage failure.
    pub fn members_with_index(&self) -> Result<(Vec<Member>, u64), ServerError> {
        let kv = self.kv.read().expect("key space lock poisoned");
        Ok((kv.members()?, kv.applied_index()))
    }

    /// Every other member's first peer URL.
    pub fn peer_urls(&self) -> Vec<(NodeId, String)> {
        self.directory
            .read()
            .expect("peer directory lock poisoned")
            .iter()
            .filter(|(id, _)| **id != self.membership.member_id)
            .filter_map(|(id, urls)| urls.first().map(|url| (*id, url.clone())))
            .collect()
    }

    /// A member's first peer URL.
    pub fn peer_url(&self, id: NodeId) -> Option<String> {
        self.directory
            .read()
            .expect("peer directory lock poisoned")
            .get(&id)
            .and_then(|urls| urls.first().cloned())
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
    /// When the key space was last made durable.
    last_persist: std::time::Instant,
    snapshotting: Option<SnapshotInProgress>,
    /// The key-space flusher runs while this lives.
    _flusher_alive: Arc<()>,
    /// Members added by changes in the log not yet applied, by the index
    /// of their entry: reachable before the change commits.
    pending_members: BTreeMap<u64, Member>,
    directory: PeerDirectory,
    removed: Arc<RwLock<BTreeSet<NodeId>>>,
    /// Ticks since the leader last tried to promote caught-up learners.
    promote_elapsed: u64,
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
    pub fn start(membership: Membership, options: NodeOptions) -> Result<NodeHandle, StartError> {
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
        let flusher_alive = Arc::new(());
        start_kv_flusher(&options.data_dir.join("kv.redb"), Arc::downgrade(&flusher_alive));
        // Every node's log starts from the first members' configuration,
        // and its member list from theirs.
        kv.bootstrap_members(&membership.bootstrap)?;
        let voters: Vec<NodeId> = membership.bootstrap.iter().map(|member| member.id).collect();
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
        let directory: PeerDirectory = Arc::new(RwLock::new(BTreeMap::new()));
        let removed = Arc::new(RwLock::new(BTreeSet::new()));
        let handle = NodeHandle {
            inputs,
            kv: kv.clone(),
            membership: membership.clone(),
            request_timeout: options.request_timeout,
            term: term.clone(),
            directory: directory.clone(),
            removed: removed.clone(),
        };
        let (data_dir, name) = (options.data_dir.clone(), membership.name.clone());
        let transport = Transport::new(
            membership.cluster_id,
            membership.member_id,
            directory.clone(),
            Arc::new(move || leave_cluster(&data_dir, &name)),
        );
        // Members added by changes still in the log's unapplied tail.
        let mut pending_members = BTreeMap::new();
        let applied = raft.applied_index();
        if raft.last_index() > applied {
            for entry in raft.log_entries(applied + 1, raft.last_index() + 1)? {
                if let Some(member) = added_member(&entry) {
                    pending_members.insert(entry.index, member);
                }
            }
        }
        let mut node = Node {
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
            snapshotting: None,
            last_persist: std::time::Instant::now(),
            _flusher_alive: flusher_alive,
            pending_members,
            directory,
            removed,
            promote_elapsed: 0,
            last_leader: 0,
            last_confirmed_leader: 0,
            term,
        };
        node.sync_peers()
            .map_err(|error| StartError::DataDir(error.to_string()))?;
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
                biased;
                _ = ticker.tick() => {
                    self.raft.tick();
                    self.promote_caught_up_learners();
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
                () = std::future::ready(()), if self.snapshotting.is_some() => {
                    tokio::task::block_in_place(|| self.step_snapshot());
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
            Input::Propose { command, reply } => match self.propose(&command) {
                Ok(index) => {
                    self.proposals.insert(index, (self.raft.term(), reply));
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            },
            Input::Membership { request, reply } => match self.propose_membership(request) {
                Ok(index) => {
                    self.proposals.insert(index, (self.raft.term(), reply));
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            },
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
                let result = match self.raft.transfer_leadership(target) {
                    Ok(()) => Ok(()),
                    // As etcd: moving the leadership to the leader is done.
                    Err(raftwerk_raft::TransferError::AlreadyLeader(_)) => Ok(()),
                    Err(raftwerk_raft::TransferError::NotLeader { leader_hint }) => {
                        Err(ServerError::NotLeader { leader: leader_hint })
                    }
                    Err(raftwerk_raft::TransferError::NotAVoter(_)) => Err(ServerError::BadLeaderTransferee),
                    Err(other) => Err(ServerError::Internal(format!("etcdserver: {other}"))),
                };
                let _ = reply.send(result);
            }
            Input::Defragment { reply } => {
                // The snapshot being written holds a read of the key space;
                // it starts again after.
                self.snapshotting = None;
                let started = std::time::Instant::now();
                let result =
                    tokio::task::block_in_place(|| self.kv.write().expect("key space lock poisoned").defragment());
                self.last_persist = std::time::Instant::now();
                tracing::info!(name = %self.membership.name, elapsed_ms = started.elapsed().as_millis() as u64, ok = result.is_ok(), "defragmented the key space");
                let _ = reply.send(result.map_err(ServerError::from));
            }
        }
    }

    fn propose(&mut self, command: &Command) -> Result<u64, ServerError> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&self.membership.member_id.to_le_bytes());
        data.extend_from_slice(&request_id.to_le_bytes());
        data.extend_from_slice(&encode_command(command));
        self.raft.propose(Bytes::from(data)).map_err(|error| match error {
            ProposeError::NotLeader { leader_hint } => not_leader(leader_hint),
            ProposeError::EntryTooLarge { .. } => ServerError::RequestTooLarge,
            error => ServerError::Internal(error.to_string()),
        })
    }

    /// One ready: persist, send, apply, answer.
    fn process(&mut self, mut ready: Ready) {
        let stepped_down = ready.soft_state.is_some_and(|soft| soft.role != Role::Leader);
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
            // Reads waiting for a confirmation the core drops on a leader
            // change would otherwise wait for ever.
            if soft.leader != self.last_confirmed_leader {
                for (_, reply) in std::mem::take(&mut self.reads_pending) {
                    let _ = reply.send(Err(ServerError::LeaderChanged));
                }
                self.last_confirmed_leader = soft.leader;
            }
        }
        // A member added by a change just appended must be reachable
        // before the messages that replicate to it leave.
        // Entries from this index on replace the log's: members added by
        // the entries they replace were never added.
        let mut added = ready
            .entries
            .first()
            .is_some_and(|first| !self.pending_members.split_off(&first.index).is_empty());
        for entry in &ready.entries {
            if let Some(member) = added_member(entry) {
                self.pending_members.insert(entry.index, member);
                added = true;
            }
        }
        if added {
            if let Err(error) = self.sync_peers() {
                tracing::warn!(name = %self.membership.name, %error, "reading the member list failed");
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
                if let Err(error) = self.sync_peers() {
                    tracing::warn!(name = %self.membership.name, %error, "reading the member list failed");
                }
            }
        }
        if !ready.committed_entries.is_empty() {
            self.apply(&ready.committed_entries);
        }
        if stepped_down {
            // Proposals made as leader and not applied by now may still
            // commit, or never: etcd answers "leader changed" and so do we.
            // (Those this ready applied, such as the leader's own removal
            // that made it step down, were answered above.)
            for (_, (_, reply)) in std::mem::take(&mut self.proposals) {
                let _ = reply.send(Err(ServerError::LeaderChanged));
            }
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
        if applied >= self.last_snapshot_index + self.options.snapshot_count && self.snapshotting.is_none() {
            if let Err(error) = self.start_snapshot(applied) {
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
        // A snapshot of our own in progress is older: abandon it; the part
        // of the log it replaces adds no members (entries after it, of the
        // same ready, may).
        self.snapshotting = None;
        self.pending_members = self.pending_members.split_off(&(index + 1));
        let mut reader = SnapshotReader::new(self.raft.storage(), index);
        let mut kv = self.kv.write().expect("key space lock poisoned");
        kv.restore_snapshot(&mut reader).map_err(|error| error.to_string())?;
        self.last_snapshot_index = index;
        tracing::info!(name = %self.membership.name, index, revision = kv.revision(), "snapshot installed");
        Ok(())
    }

    fn apply(&mut self, entries: &[raftwerk_raft::Entry]) {
        let mut commands = Vec::with_capacity(entries.len());
        let mut positions = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.kind == EntryKind::ConfChange {
                for command in member_commands(entry) {
                    commands.push((entry.index, command));
                    positions.push((entry.index, entry.term));
                }
                continue;
            }
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
        if self.last_persist.elapsed() >= KV_PERSIST_INTERVAL {
            if let Err(error) = kv.persist() {
                tracing::error!(name = %self.membership.name, %error, "making the key space durable failed; stopping");
                std::process::exit(1);
            }
            self.last_persist = std::time::Instant::now();
        }
        drop(kv);
        // Entries at or below the key space's applied index (a replay)
        // have no response: they were answered before the restart.
        let skipped = positions.len() - responses.len();
        let applied_members: Vec<&Command> = commands
            .iter()
            .skip(skipped)
            .zip(&responses)
            .filter(|(_, response)| response.is_ok())
            .map(|((_, command), _)| command)
            .filter(|command| matches!(command, Command::Members(_)))
            .collect();
        if !applied_members.is_empty() {
            let removed_self = applied_members.iter().any(|command| {
                matches!(command, Command::Members(MemberChange::Remove { id }) if *id == self.membership.member_id)
            });
            if let Err(error) = self.sync_peers() {
                tracing::warn!(name = %self.membership.name, %error, "reading the member list failed");
            }
            if removed_self {
                leave_cluster(&self.options.data_dir, &self.membership.name);
            }
        }
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
}

/// How long Defragment waits for reads in progress (a backup being
/// streamed) to end.
const DEFRAGMENT_WAIT_MAX: Duration = Duration::from_secs(30);

fn not_leader(leader: NodeId) -> ServerError {
    if leader == 0 {
        ServerError::NoLeader
    } else {
        ServerError::NotLeader { leader }
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

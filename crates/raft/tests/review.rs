//! Findings of an independent review of the core: each test states a rule
//! the core keeps, and each failed before the fix that made it pass (stale
//! lease after a higher-term reply, re-delivery of applied entries after a
//! restart, panics on compacted logs, unsent heartbeat rounds).

mod harness;

use harness::*;
use raftwerk_raft::{HardState, Message, MessageBody, Raft, Role};

fn heartbeat(from: u64, to: u64, term: u64, commit: u64) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::Heartbeat { commit, read_seq: 0 },
    }
}

/// Drains one ready as a synchronous application would; returns it.
fn drain(node: &mut Raft<raftwerk_raft::MemStorage>) -> raftwerk_raft::Ready {
    let ready = node.ready();
    persist(node, &ready);
    ready
}

// ----- Restart with an applied index above the durable commit index ----------

/// The Ready contract lets the application apply `committed_entries` while
/// the same ready's hard state (carrying the commit index) is still being
/// written; a state machine that stores its applied index transactionally
/// (DESIGN: kv on redb) can therefore restart with `applied` above the
/// durable `HardState::commit`. `Config::applied` promises that a restart
/// resumes after it, but `RaftLog::new` clamps `applied` down to the stored
/// commit and hands the already-applied entries out again.
#[test]
fn restart_never_redelivers_entries_the_state_machine_applied() {
    let storage = storage_with(
        &[1, 1, 1, 1, 1],
        HardState {
            term: 1,
            vote: 1,
            commit: 2,
        },
    );
    let mut config = config(2, &[1, 2, 3]);
    config.applied = 4;
    let mut node = Raft::new(config, storage).expect("valid config");
    assert_eq!(node.applied_index(), 4, "restart resumes after Config::applied");
    node.step(heartbeat(1, 2, 1, 5)).expect("heartbeat from the leader");
    let ready = drain(&mut node);
    let applied: Vec<u64> = ready.committed_entries.iter().map(|entry| entry.index).collect();
    assert_eq!(
        applied,
        vec![5],
        "entries 3 and 4 were already applied before the restart"
    );
}

/// Same root cause, worse outcome: once the application compacted its
/// storage up to what it applied (allowed: `MemStorage::compact` only asks
/// that the state machine holds what is dropped), the lowered `applied`
/// points into the compacted range and the first commit advance panics in
/// `ready()` ("reading committed entries failed").
#[test]
fn restart_after_compaction_up_to_applied_does_not_panic() {
    let mut storage = storage_with(
        &[1; 10],
        HardState {
            term: 1,
            vote: 1,
            commit: 4,
        },
    );
    store_snapshot(&mut storage, 8);
    storage.compact(8).expect("compact below applied");
    let mut config = config(2, &[1, 2, 3]);
    config.applied = 8;
    let mut node = Raft::new(config, storage).expect("valid config");
    node.step(heartbeat(1, 2, 1, 10)).expect("heartbeat from the leader");
    let ready = drain(&mut node);
    let applied: Vec<u64> = ready.committed_entries.iter().map(|entry| entry.index).collect();
    assert_eq!(applied, vec![9, 10]);
}

// ----- Peer input that panics a leader whose log is compacted ----------------

/// Ten committed entries of term 1, compacted up to index 5.
fn compacted_storage() -> raftwerk_raft::MemStorage {
    let mut storage = storage_with(
        &[1; 10],
        HardState {
            term: 1,
            vote: 0,
            commit: 10,
        },
    );
    store_snapshot(&mut storage, 5);
    storage.compact(5).expect("compact committed prefix");
    storage
}

/// Stores a snapshot at `index` of a term-1 log of voters 1, 2, 3.
fn store_snapshot(storage: &mut raftwerk_raft::MemStorage, index: u64) {
    let meta = raftwerk_raft::SnapshotMeta {
        index,
        term: 1,
        configuration: raftwerk_raft::Configuration::new(vec![1, 2, 3], Vec::new()),
    };
    storage
        .create_snapshot(meta, snapshot_data(index, 64))
        .expect("first snapshot");
}

fn compacted_cluster() -> Network {
    let ids = [1, 2, 3];
    let storages = ids.iter().map(|&id| (id, compacted_storage())).collect();
    let mut net = Network::with_storages(&ids, storages, |config| config.applied = 10);
    net.campaign(1);
    net.deliver_where(is_election);
    assert_eq!(net.node(1).role(), Role::Leader);
    net
}

/// DESIGN: "Bad input gets a clear error and changes nothing". A rejection
/// whose hint points below the leader's first stored index (a forged or
/// corrupt message, or a peer that lost its disk and rejoined under its old
/// id, RELIABILITY #6) moves the follower's `next_index` into the compacted
/// range, and `send_append` then panics ("log entry 0 unavailable").
#[test]
fn rejection_hint_below_compacted_log_does_not_panic_the_leader() {
    let mut net = compacted_cluster();
    // The leader probes each follower at its last index before the empty
    // entry of its term; the answer to that probe is a rejection of it.
    let probed = net.node(1).last_index() - 1;
    let term = net.node(1).term();
    let forged = Message {
        from: 2,
        to: 1,
        term,
        body: MessageBody::AppendResponse {
            reject: true,
            index: probed,
            hint_index: 0,
            hint_term: 0,
        },
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = net.node_mut(1).step(forged);
        net.process(1);
    }));
    assert!(result.is_ok(), "a peer's message must never panic the leader");
}

/// The same panic from an honest peer: a follower whose log is behind the
/// leader's first stored index (here: one that lost its disk) answers the
/// probe with a hint of 0. Until snapshots exist the leader should stop
/// replicating to it (and count it), not crash.
#[test]
fn follower_behind_compacted_log_does_not_panic_the_leader() {
    let ids = [1, 2, 3];
    let mut storages: std::collections::BTreeMap<_, _> = [1, 2].iter().map(|&id| (id, compacted_storage())).collect();
    storages.insert(3, raftwerk_raft::MemStorage::new());
    let mut net = Network::with_storages(&ids, storages, |config| {
        if config.id != 3 {
            config.applied = 10;
        }
    });
    net.campaign(1);
    net.deliver_where(|m| is_election(m) && m.to != 3 && m.from != 3);
    assert_eq!(net.node(1).role(), Role::Leader);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| net.deliver_all()));
    assert!(result.is_ok(), "a lagging follower must never panic the leader");
}

// ----- Lease reads: a voter's lease promise is dropped by a term change -------

/// Lease reads rely on every voter that acknowledged the leader's heartbeat
/// refusing votes for an election timeout (`in_lease`). But `in_lease` is
/// `leader != NO_NODE && election_elapsed < election_ticks`, and any
/// higher-term *non-vote* message (here: a stale-term AppendResponse that a
/// partitioned candidate sends in reply to an old heartbeat) makes the voter
/// `become_follower(term, NO_NODE)`, which clears `leader` and
/// `election_elapsed`: the promise is forgotten. The voter then grants a vote
/// in that same term without any lease check (the check only runs for
/// `m.term > self.term`), a new leader commits a write, and the old leader,
/// whose lease the voter confirmed a moment ago, serves a read that misses it.
///
/// Cluster {1, 2, 3}, lease reads, check-quorum on, pre-vote off (a
/// configuration `Config::validate` accepts). The stale message only needs
/// to be delayed; Raft's safety must not depend on message delays.
#[test]
fn lease_read_is_not_stale_when_a_voter_learns_a_higher_term_from_a_response() {
    let mut net = Network::new(&[1, 2, 3], |config| {
        config.pre_vote = false;
        config.check_quorum = true;
        config.read_mode = raftwerk_raft::ReadMode::Lease { drift_margin_ticks: 2 };
    });
    // Node 2 leads term 1; one of its heartbeats to node 3 is delayed.
    net.elect(2);
    net.tick(2);
    let delayed = net.take_where(|m| m.from == 2 && m.to == 3 && is_heartbeat(m));
    assert_eq!(delayed.len(), 1);
    net.deliver_all();
    // Leadership moves to node 1 (term 2); everyone catches up.
    net.node_mut(2).transfer_leadership(1).expect("transfer");
    net.process(2);
    net.deliver_all();
    assert_eq!(net.node(1).role(), Role::Leader);
    net.run_ticks(1);
    // Node 3 is cut off from node 1 only; node 1 holds a lease through node 2.
    net.cut.insert((1, 3));
    net.cut.insert((3, 1));
    net.tick(1);
    net.deliver_all();
    net.node_mut(1).read_index(1).expect("read");
    net.process(1);
    assert!(
        net.read_states[&1].iter().any(|read| read.request_id == 1),
        "sanity: node 1 serves lease reads without a round trip"
    );
    // Node 3 times out and campaigns in term 3; its vote request to node 2
    // is in flight.
    net.campaign(3);
    let vote = net.take_where(|m| m.from == 3 && m.to == 2);
    assert_eq!(vote.len(), 1);
    // The delayed term-1 heartbeat reaches node 3, whose stale-term reply
    // tells node 2 about term 3: node 2 forgets it is inside node 1's lease.
    for message in delayed {
        net.deliver(message);
    }
    net.deliver_all();
    assert_eq!(net.node(2).term(), 3);
    // Now the vote request arrives. Node 2 heard from leader 1 within an
    // election timeout, so it refuses whatever term it has learnt since:
    // node 3 cannot lead while node 1's lease may still hold.
    net.queue.extend(vote);
    net.deliver_all();
    assert_ne!(net.node(3).role(), Role::Leader, "node 2 broke its lease promise");
    assert!(
        net.rejections
            .iter()
            .any(|(message, reason)| message.from == 3 && *reason == raftwerk_raft::RejectReason::InsideLease),
        "the vote request was refused inside the lease"
    );
    // Node 1 still leads and its lease reads see every committed write.
    assert_eq!(net.node(1).role(), Role::Leader);
    net.node_mut(1).read_index(2).expect("read");
    net.process(1);
    let commit = net.node(1).commit_index();
    assert!(net.read_states[&1]
        .iter()
        .any(|read| read.request_id == 2 && read.index == commit));
}

// ----- Heartbeat responses echoing a round that was never sent --------------

/// DESIGN: "Bad input gets a clear error and changes nothing". A
/// HeartbeatResponse whose `read_seq` is above every round this leader has
/// sent cannot come from a correct peer (rounds are per leader and term),
/// yet it is stored in `read_seq_acked` and then counts as that peer's
/// acknowledgement of every later round: here it confirms a read whose
/// heartbeat round no follower ever received (in lease mode it would also
/// extend the lease).
#[test]
fn heartbeat_response_for_an_unsent_round_is_rejected() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    net.run_ticks(1);
    // An old heartbeat answer from node 3, still in flight.
    net.tick(1);
    net.deliver_where(|m| m.to == 3);
    let old_answer = net.take_where(|m| m.from == 3 && m.to == 1);
    assert_eq!(old_answer.len(), 1);
    net.drop_queue();
    let term = net.node(1).term();
    let forged = Message {
        from: 2,
        to: 1,
        term,
        body: MessageBody::HeartbeatResponse { read_seq: u64::MAX },
    };
    let result = net.node_mut(1).step(forged);
    net.process(1);
    // A read arrives; its heartbeat round is broadcast and entirely lost.
    net.node_mut(1).read_index(42).expect("read");
    net.process(1);
    net.drop_queue();
    // Node 3's answer to the earlier round arrives late.
    for message in old_answer {
        net.deliver(message);
    }
    assert!(
        !net.read_states[&1].iter().any(|read| read.request_id == 42),
        "a read was confirmed although no follower received its heartbeat round"
    );
    assert!(result.is_err(), "a response to a round never sent is malformed");
}

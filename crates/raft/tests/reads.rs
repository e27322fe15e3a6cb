//! Linearizable reads (dissertation §6.4): ReadIndex confirmed by a
//! heartbeat round, batched, forwarded by followers; lease reads (§6.4.1),
//! off by default.

mod harness;

use harness::{is_heartbeat, storage_with, Network, ELECTION_TICKS};
use raftwerk_raft::{Config, HardState, MemStorage, MessageBody, Raft, ReadError, ReadMode, ReadState, Role};

fn settled(adjust: impl Fn(&mut Config)) -> Network {
    let mut net = Network::new(&[1, 2, 3], adjust);
    net.elect(1);
    net.deliver_all();
    net
}

#[test]
fn new_leader_answers_read_index_only_after_committing_an_entry_of_its_term() {
    let hard_state = HardState {
        term: 1,
        vote: 0,
        commit: 2,
    };
    let storages = (1..=3).map(|id| (id, storage_with(&[1, 1], hard_state))).collect();
    let mut net = Network::with_storages(&[1, 2, 3], storages, |_| {});
    net.campaign(1);
    net.deliver_where(harness::is_election);
    assert_eq!(net.node(1).role(), Role::Leader);
    let term = net.node(1).term();
    assert_eq!(net.node(1).log_term(3), Some(term), "the new leader's empty entry");

    net.node_mut(1).read_index(7).unwrap();
    net.process(1);
    // Heartbeat rounds alone cannot confirm it: the leader does not yet
    // know the commit index of its term.
    for _ in 0..3 {
        net.tick(1);
        net.deliver_where(|m| is_heartbeat(m) || matches!(m.body, MessageBody::HeartbeatResponse { .. }));
    }
    assert_eq!(net.node(1).commit_index(), 2);
    assert!(
        net.read_states[&1].is_empty(),
        "read answered before the term's first commit"
    );

    net.deliver_all();
    assert_eq!(net.node(1).commit_index(), 3);
    assert_eq!(
        net.read_states[&1],
        vec![ReadState {
            request_id: 7,
            index: 3
        }]
    );
}

#[test]
fn read_index_batches_many_reads_into_one_heartbeat_round() {
    let mut net = settled(|_| {});
    let commit = net.node(1).commit_index();
    net.delivered.clear();
    for request_id in 1..=50 {
        net.node_mut(1).read_index(request_id).unwrap();
    }
    net.process(1);
    let heartbeats = net.queue.iter().filter(|m| is_heartbeat(m)).count();
    assert_eq!(heartbeats, 2, "one heartbeat per follower for all 50 reads");
    assert!(net.read_states[&1].is_empty(), "not confirmed before the round");
    net.deliver_all();
    assert_eq!(net.delivered.iter().filter(|m| is_heartbeat(m)).count(), 2);
    let expected: Vec<ReadState> = (1..=50)
        .map(|request_id| ReadState {
            request_id,
            index: commit,
        })
        .collect();
    assert_eq!(net.read_states[&1], expected);
}

#[test]
fn follower_forwards_read_to_leader_and_receives_read_state() {
    let mut net = settled(|_| {});
    let commit = net.node(1).commit_index();
    net.node_mut(2).read_index(9).unwrap();
    net.process(2);
    assert!(net
        .queue
        .iter()
        .any(|m| m.from == 2 && m.to == 1 && matches!(m.body, MessageBody::ReadIndex { request_id: 9 })));
    net.deliver_all();
    assert_eq!(
        net.read_states[&2],
        vec![ReadState {
            request_id: 9,
            index: commit
        }]
    );
    assert!(
        net.read_states[&1].is_empty(),
        "the leader answers the follower, not itself"
    );
}

#[test]
fn read_is_refused_when_no_leader_is_known() {
    let mut node = Raft::new(harness::config(1, &[1, 2, 3]), MemStorage::new()).unwrap();
    assert_eq!(node.read_index(1), Err(ReadError::NoLeader));
    for _ in 0..2 * ELECTION_TICKS {
        node.tick();
    }
    assert_eq!(node.role(), Role::PreCandidate);
    assert_eq!(node.read_index(2), Err(ReadError::NoLeader));
    assert!(!node
        .ready()
        .messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::ReadIndex { .. })));
}

#[test]
fn read_mode_is_safe_by_default_and_needs_a_round_trip() {
    assert_eq!(Config::new(1, vec![1, 2, 3]).read_mode, ReadMode::Safe);
    let mut net = settled(|_| {});
    net.run_ticks(2);
    net.node_mut(1).read_index(1).unwrap();
    net.process(1);
    assert!(net.read_states[&1].is_empty());
    assert_eq!(net.queue.iter().filter(|m| is_heartbeat(m)).count(), 2);
}

#[test]
fn lease_read_is_answered_without_round_trip_while_lease_holds() {
    let mut net = settled(|c| c.read_mode = ReadMode::Lease { drift_margin_ticks: 2 });
    // One acknowledged heartbeat round establishes the lease.
    net.run_ticks(1);
    let commit = net.node(1).commit_index();
    net.node_mut(1).read_index(5).unwrap();
    net.process(1);
    assert_eq!(
        net.read_states[&1],
        vec![ReadState {
            request_id: 5,
            index: commit
        }]
    );
    assert!(
        net.queue.is_empty(),
        "no heartbeat round for a lease read: {:?}",
        net.queue
    );

    // Without acknowledgements the lease runs out and reads need a round again.
    net.isolate(1);
    for _ in 0..ELECTION_TICKS {
        net.tick(1);
    }
    net.drop_queue();
    let result = net.node_mut(1).read_index(6);
    net.process(1);
    assert_eq!(net.read_states[&1].len(), 1, "read 6 answered on an expired lease");
    if net.node(1).role() == Role::Leader {
        assert_eq!(result, Ok(()));
        assert!(
            net.queue.iter().any(is_heartbeat),
            "the read waits for a heartbeat round"
        );
    }
}

//! Leadership transfer (dissertation §3.10): the leader catches the target
//! up, then sends TimeoutNow; it refuses proposals meanwhile and gives up
//! after an election timeout.

mod harness;

use harness::{data, Network, ELECTION_TICKS};
use raftwerk_raft::{MessageBody, ProposeError, Role, TransferError};

/// A settled three-node cluster led by node 1 in which node 3 missed the
/// last five entries, and is reachable again.
fn cluster_with_lagging_target() -> Network {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    net.deliver_all();
    net.isolate(3);
    for n in 0..5 {
        net.node_mut(1).propose(data(n + 1)).unwrap();
    }
    net.process(1);
    net.deliver_all();
    assert_eq!(net.node(1).commit_index(), net.node(1).last_index());
    assert!(net.node(3).last_index() < net.node(1).last_index());
    net.heal();
    net
}

fn is_timeout_now(message: &raftwerk_raft::Message) -> bool {
    matches!(message.body, MessageBody::TimeoutNow)
}

#[test]
fn transfer_sends_timeout_now_only_once_target_caught_up() {
    let mut net = cluster_with_lagging_target();
    net.node_mut(1).transfer_leadership(3).unwrap();
    net.process(1);
    assert!(
        !net.queue.iter().any(is_timeout_now),
        "target is behind: no TimeoutNow yet"
    );
    assert!(net.queue.iter().any(|m| m.to == 3 && harness::is_append(m)));

    let mut timeout_now_sent = 0;
    for _ in 0..harness::DELIVERIES_MAX {
        if net.queue.is_empty() {
            break;
        }
        let message = net.queue.remove(0);
        if is_timeout_now(&message) {
            timeout_now_sent += 1;
            assert_eq!(message.to, 3);
            assert_eq!(
                net.node(3).last_index(),
                net.node(1).last_index(),
                "TimeoutNow sent before the target caught up"
            );
            assert_eq!(net.node(1).status().progress[1].1, net.node(1).last_index());
        }
        net.deliver(message);
    }
    assert_eq!(timeout_now_sent, 1);
}

#[test]
fn transfer_target_is_elected() {
    let mut net = cluster_with_lagging_target();
    let term = net.node(1).term();
    net.node_mut(1).transfer_leadership(3).unwrap();
    net.process(1);
    net.deliver_all();
    assert_eq!(net.leaders(), vec![(3, term + 1)]);
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!(net.node(1).leader(), 3);
    assert_eq!(net.node(2).leader(), 3);
}

#[test]
fn proposals_are_refused_during_transfer() {
    let mut net = cluster_with_lagging_target();
    net.isolate(3);
    net.node_mut(1).transfer_leadership(3).unwrap();
    let last = net.node(1).last_index();
    assert_eq!(
        net.node_mut(1).propose(data(1)),
        Err(ProposeError::TransferInProgress { target: 3 })
    );
    assert_eq!(
        net.node_mut(1).transfer_leadership(2),
        Err(TransferError::InProgress { target: 3 })
    );
    assert_eq!(net.node(1).last_index(), last, "nothing appended");
}

#[test]
fn transfer_is_abandoned_after_an_election_timeout() {
    let mut net = cluster_with_lagging_target();
    net.isolate(3);
    net.node_mut(1).transfer_leadership(3).unwrap();
    net.process(1);
    for tick in 1..=ELECTION_TICKS {
        net.tick(1);
        net.tick(2);
        net.deliver_all();
        let result = net.node_mut(1).propose(data(2));
        if tick < ELECTION_TICKS {
            assert_eq!(
                result,
                Err(ProposeError::TransferInProgress { target: 3 }),
                "tick {tick}"
            );
        } else {
            assert!(
                result.is_ok(),
                "transfer still blocks proposals after {tick} ticks: {result:?}"
            );
        }
    }
    assert_eq!(net.node(1).role(), Role::Leader);
    assert!(!net.queue.iter().any(is_timeout_now));
}

//! Commitment (§5.3, §5.4.2 and Figure 8 of the Raft paper) and the
//! persistence rules around it (dissertation §10.2.1; etcd #14370).

mod harness;

use harness::{append_entries, data, is_append, persist, storage_with, Network};
use raftwerk_raft::{Config, EntryKind, HardState, MemStorage, Raft, Role};

#[test]
fn leader_commits_only_current_term_entries() {
    // Figure 8 (c): node 1 holds entry 2 from term 2, the others only
    // entry 1. Node 1 wins term 4 and replicates entry 2 to everyone.
    let hard_state = HardState {
        term: 3,
        vote: 0,
        commit: 1,
    };
    let storages = [
        (1, storage_with(&[1, 2], hard_state)),
        (2, storage_with(&[1], hard_state)),
        (3, storage_with(&[1], hard_state)),
    ]
    .into_iter()
    .collect();
    // One entry per append, so entry 2 and the term-4 entry travel apart.
    let mut net = Network::with_storages(&[1, 2, 3], storages, |c| c.message_bytes_max = 1);
    net.campaign(1);
    net.deliver_where(harness::is_election);
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(net.node(1).term(), 4);
    let carries_term_4 = |m: &raftwerk_raft::Message| is_append(m) && append_entries(m).iter().any(|e| e.term == 4);
    // Hold back every append carrying the term-4 entry, except probes the
    // follower must reject anyway (its log does not reach their prev_index).
    for _ in 0..10 {
        net.deliver_where(|m| !carries_term_4(m));
        let last_indexes: Vec<(u64, u64)> = [2, 3].iter().map(|&id| (id, net.node(id).last_index())).collect();
        let doomed = net.take_where(|m| match &m.body {
            raftwerk_raft::MessageBody::Append { prev_index, .. } => {
                last_indexes.iter().any(|&(id, last)| id == m.to && *prev_index > last)
            }
            _ => false,
        });
        if doomed.is_empty() {
            break;
        }
        for message in doomed {
            net.deliver(message);
        }
    }

    // Entry 2 (term 2) is now on all three nodes, but counting replicas
    // must not commit an entry of an earlier term.
    for id in [1, 2, 3] {
        assert_eq!(net.node(id).log_term(2), Some(2), "node {id} holds entry 2");
    }
    let matches: Vec<(u64, u64)> = net.node(1).status().progress.iter().map(|p| (p.0, p.1)).collect();
    assert_eq!(
        matches,
        vec![(2, 2), (3, 2)],
        "the leader knows entry 2 is on a majority"
    );
    assert_eq!(net.node(1).commit_index(), 1, "entry of term 2 committed by counting");
    assert!(net.committed[&1].iter().all(|e| e.index < 2));

    // Once the leader's own entry 3 (term 4) reaches a majority, both commit.
    net.deliver_all();
    assert_eq!(net.node(1).commit_index(), 3);
    let indexes: Vec<u64> = net.committed[&1].iter().map(|e| e.index).collect();
    assert_eq!(indexes, vec![1, 2, 3]);
}

#[test]
fn leader_counts_its_own_log_only_after_persisting() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    net.deliver_all();
    let committed_before = net.node(1).commit_index();
    let index = net.node_mut(1).propose(data(3)).unwrap();
    let ready = net.node_mut(1).ready();
    assert_eq!(ready.entries.len(), 1);
    net.queue.extend(ready.messages.iter().cloned());
    // Only follower 2 acknowledges; node 3 hears nothing.
    net.deliver_where(|m| m.to == 2 || m.from == 2);
    assert_eq!(net.node(1).status().progress[0], (2, index, index + 1));
    assert_eq!(
        net.node(1).commit_index(),
        committed_before,
        "one follower plus an unpersisted leader is not a majority"
    );
    persist(net.node_mut(1), &ready);
    assert_eq!(
        net.node(1).commit_index(),
        index,
        "the leader's durable copy completes the quorum"
    );
}

#[test]
fn leader_sends_appends_before_its_own_write_is_durable() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    net.deliver_all();
    let index = net.node_mut(1).propose(data(3)).unwrap();
    let ready = net.node_mut(1).ready();
    assert!(ready.must_persist());
    assert_eq!(ready.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![index]);
    for to in [2, 3] {
        let append = ready
            .messages
            .iter()
            .find(|m| m.to == to && is_append(m))
            .expect("append in the same ready as the leader's own write");
        assert_eq!(append_entries(append), ready.entries.as_slice());
    }
    assert_eq!(net.node(1).status().persisted_index, index - 1);
}

#[test]
fn single_voter_does_not_commit_before_its_own_persistence() {
    // etcd #14370: a one-node cluster acknowledged writes before fsync.
    let mut node = Raft::new(harness::config(1, &[1]), MemStorage::new()).unwrap();
    for _ in 0..3 * harness::ELECTION_TICKS {
        node.tick();
        if node.role() == Role::Leader {
            break;
        }
    }
    assert_eq!(node.role(), Role::Leader);
    let ready = node.ready();
    assert_eq!(ready.entries.len(), 1);
    assert_eq!(ready.entries[0].kind, EntryKind::Empty);
    assert!(ready.committed_entries.is_empty());
    assert_eq!(node.commit_index(), 0, "nothing durable, nothing committed");
    persist(&mut node, &ready);
    assert_eq!(node.commit_index(), 1);
    let ready = node.ready();
    assert_eq!(ready.committed_entries.len(), 1);

    let index = node.propose(data(5)).unwrap();
    assert_eq!(node.commit_index(), 1, "a proposal alone commits nothing");
    let ready = node.ready();
    assert_eq!(ready.entries.len(), 1);
    assert!(ready.committed_entries.is_empty(), "handed out before it was durable");
    assert_eq!(node.commit_index(), 1);
    persist(&mut node, &ready);
    assert_eq!(node.commit_index(), index);
    let ready = node.ready();
    assert_eq!(
        ready.committed_entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![index]
    );
}

/// Regression: at commit 38b8766 a leader whose followers were all paused
/// (always, for a single voter) never caught `commit_broadcast` up with its
/// commit index, so `has_ready()` stayed true after every `ready()` and an
/// application loop `while has_ready() { ready() }` spun forever.
#[test]
fn has_ready_is_false_once_single_voter_leader_is_drained() {
    let mut node = Raft::new(harness::config(1, &[1]), MemStorage::new()).unwrap();
    for _ in 0..3 * harness::ELECTION_TICKS {
        node.tick();
    }
    assert_eq!(node.role(), Role::Leader);
    for _ in 0..8 {
        if !node.has_ready() {
            break;
        }
        let ready = node.ready();
        persist(&mut node, &ready);
    }
    assert_eq!(node.commit_index(), 1);
    assert!(!node.has_ready(), "has_ready() still true with nothing to do");
}

#[test]
fn committed_entries_are_applied_in_order_on_every_node() {
    let mut net = Network::new(&[1, 2, 3], |c: &mut Config| c.message_bytes_max = 64);
    net.elect(1);
    for n in 0..20 {
        net.node_mut(1).propose(data(n)).unwrap();
        if n % 3 == 0 {
            net.process(1);
            net.deliver_all();
        }
    }
    net.process(1);
    net.deliver_all();
    net.run_ticks(2);
    for id in [1, 2, 3] {
        let indexes: Vec<u64> = net.committed[&id].iter().map(|e| e.index).collect();
        assert_eq!(indexes, (1..=21).collect::<Vec<_>>(), "node {id}");
    }
}

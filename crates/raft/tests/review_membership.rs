//! Findings of an independent review of the membership code: scenarios
//! that probe joint consensus and leader removal across failures, and the
//! three defects found (each test failed before its fix): adding a voter
//! that is not caught up, a leader accepting proposals while its latest
//! configuration excludes it, and the configuration lost on restart from a
//! compacted log.

mod harness;

use std::collections::BTreeMap;

use harness::*;
use raftwerk_raft::{ConfChangeError, ConfChangeOp, EntryKind, MemStorage, ProposeError, Raft, Role};

fn leader_among(net: &Network, ids: &[u64]) -> Option<u64> {
    ids.iter().copied().find(|id| net.node(*id).role() == Role::Leader)
}

/// Probe: J committed, leader cut off before the leave reaches anyone; a
/// new leader must leave the joint configuration by itself.
#[test]
fn probe_new_leader_leaves_joint_after_old_leader_lost() {
    let mut net = cluster_with_spares();
    add_learners(&mut net, 1, &[4, 5]);
    net.node_mut(1)
        .propose_conf_change(change(&[
            ConfChangeOp::AddVoter(4),
            ConfChangeOp::AddVoter(5),
            ConfChangeOp::Remove(2),
            ConfChangeOp::Remove(3),
        ]))
        .unwrap();
    net.process(1);
    // Deliver until J is committed at the leader, then cut the leader off.
    for _ in 0..10 {
        net.deliver_all();
    }
    net.isolate(1);
    settle(&mut net);
    for _ in 0..200 {
        net.run_ticks(1);
        if leader_among(&net, &[2, 3, 4, 5]).is_some() {
            break;
        }
    }
    settle(&mut net);
    let leader = leader_among(&net, &[2, 3, 4, 5]);
    assert!(leader.is_some(), "no leader among the remaining nodes");
    for id in [2, 3, 4, 5] {
        eprintln!(
            "node {id}: {:?} {:?}",
            net.node(id).status(),
            net.node(id).configuration()
        );
    }
}

/// Probe: the leader is removed by a joint change (it is only in the
/// outgoing half); it leaves joint, steps down, hands over.
#[test]
fn probe_leader_removed_through_joint_hands_over() {
    let mut net = cluster_with_spares();
    commit_change(&mut net, 1, &[ConfChangeOp::AddLearner(4)]);
    commit_change(&mut net, 1, &[ConfChangeOp::AddVoter(4), ConfChangeOp::Remove(1)]);
    assert_ne!(net.node(1).role(), Role::Leader);
    for _ in 0..100 {
        net.run_ticks(1);
    }
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    assert!([2, 3, 4].contains(&leaders[0].0));
    let leader = leaders[0].0;
    let write = net.node_mut(leader).propose(data(3)).unwrap();
    settle(&mut net);
    assert!(net.node(leader).commit_index() >= write);
}

/// Restarting every node in the middle of the joint configuration: the
/// configuration comes back from the log and the new leader leaves joint.
#[test]
fn probe_whole_cluster_restart_mid_joint() {
    let mut net = cluster_with_spares();
    commit_change(&mut net, 1, &[ConfChangeOp::AddLearner(4)]);
    net.node_mut(1)
        .propose_conf_change(change(&[ConfChangeOp::AddVoter(4), ConfChangeOp::Remove(3)]))
        .unwrap();
    net.process(1);
    // Only the joint entry travels; the leave never leaves node 1.
    net.deliver_where(|m| {
        !(m.from == 1
            && is_append(m)
            && append_entries(m)
                .iter()
                .any(|e| e.kind == EntryKind::ConfChange && e.data.len() == 2))
    });
    let storages: BTreeMap<u64, MemStorage> = [1, 2, 3, 4, 5]
        .into_iter()
        .map(|id| (id, net.node(id).storage().clone()))
        .collect();
    let mut net = Network::with_storages(&[1, 2, 3, 4, 5], storages, |config| config.voters = vec![1, 2, 3]);
    for id in [1, 2, 3, 4] {
        eprintln!("restarted {id}: {:?}", net.node(id).configuration());
    }
    for _ in 0..200 {
        net.run_ticks(1);
    }
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    let leader = leaders[0].0;
    assert!(!net.node(leader).configuration().is_joint());
    assert_eq!(net.node(leader).configuration().voters, vec![1, 2, 4]);
}

/// Liveness (fixed): `propose_conf_change` checked catch-up only for a node that
/// is already a learner; `AddVoter` of a node that is not a member at all
/// is accepted at once. The configuration is in force on append, so a
/// one-voter cluster that adds a node which is not running (or a typo'd
/// id) can neither commit the change nor anything else, nor withdraw it
/// (`InProgress`, then `NotLeader`): the cluster is stuck until that node
/// exists. In a 3-voter cluster the same change silently removes all
/// fault tolerance until the new node has caught up.
#[test]
fn add_voter_of_non_member_is_refused_until_it_caught_up_as_learner() {
    let mut net = Network::new(&[1, 2], |config| config.voters = vec![1]);
    for _ in 0..30 {
        net.tick(1);
    }
    assert_eq!(net.node(1).role(), Role::Leader);
    settle(&mut net);
    net.isolate(2); // node 2 was never started
    let result = net
        .node_mut(1)
        .propose_conf_change(change(&[ConfChangeOp::AddVoter(2)]));
    // Expected: refused like a lagging learner (or required to be a learner first).
    let refused = matches!(result, Err(ConfChangeError::LearnerNotCaughtUp { id: 2, .. }))
        || matches!(result, Err(ConfChangeError::UnknownNode(2)));
    if !refused {
        // Show the consequence: the single node can never commit again.
        settle(&mut net);
        let write = net.node_mut(1).propose(data(3));
        settle(&mut net);
        panic!(
            "AddVoter(2) accepted ({result:?}); afterwards write {write:?}, role {:?}, commit {}",
            net.node(1).role(),
            net.node(1).commit_index()
        );
    }
}

/// A node elected leader while its latest (uncommitted) configuration
/// excludes it does not set `leaving`, so it accepts proposals that the same
/// node refuses with `LeaderLeaving` when it proposed its own removal (the
/// documented invariant: "its log must not grow past that change"). The
/// same hole exists for a leader in the outgoing half only that appends the
/// automatic leave itself.
#[test]
fn leader_elected_while_excluded_refuses_proposals() {
    let mut net = Network::new(&[1, 2, 3], |config| {
        config.pre_vote = false;
        config.check_quorum = false;
    });
    net.elect(1);
    net.run_ticks(1);
    net.node_mut(1)
        .propose_conf_change(change(&[ConfChangeOp::Remove(1)]))
        .unwrap();
    net.process(1);
    // The removal reaches node 2 only; nothing commits.
    net.deliver_where(|m| m.from == 1 && m.to == 2 && is_append(m));
    net.drop_queue();
    assert!(!net.node(1).configuration().is_voter(1));
    assert!(net.node(2).configuration().voters == vec![2, 3]);
    // Node 3 (without the change) campaigns and loses, deposing node 1.
    net.campaign(3);
    net.deliver_all();
    assert_ne!(net.node(1).role(), Role::Leader);
    // Node 1 still campaigns (voter in its committed configuration) and wins
    // with the votes of 2 and 3, its latest configuration excluding itself.
    net.campaign(1);
    net.deliver_where(is_election);
    assert_eq!(net.node(1).role(), Role::Leader);
    assert!(!net.node(1).configuration().is_voter(1));
    let result = net.node_mut(1).propose(data(5));
    assert_eq!(result, Err(ProposeError::LeaderLeaving));
}

/// `Raft::new` replays configuration changes after the snapshot only, so
/// the snapshot records the configuration in force at its index and a
/// restart starts from it, not from the bootstrap configuration.
#[test]
fn restart_after_compaction_keeps_the_configuration() {
    let mut net = cluster_with_spares();
    commit_change(&mut net, 1, &[ConfChangeOp::AddLearner(4)]);
    net.node_mut(1).propose(data(1)).unwrap();
    settle(&mut net);
    let applied = net.node(2).applied_index();
    snapshot_and_compact(&mut net, 2, 16);
    let storage = net.node(2).storage().clone();
    assert!(
        raftwerk_raft::Storage::first_index(&storage) > 1,
        "the log was compacted"
    );
    let mut config = config(2, &[1, 2, 3]);
    config.applied = applied;
    let restarted = Raft::<MemStorage>::new(config, storage).expect("the compacted storage holds its configuration");
    assert!(
        restarted.configuration().is_learner(4),
        "restarted with {:?}",
        restarted.configuration()
    );
}

/// A compacted log whose storage holds no snapshot cannot be started: the
/// membership before the first entry is unknown.
#[test]
fn compacted_log_without_snapshot_refuses_to_start() {
    struct Forgetful(MemStorage);
    impl raftwerk_raft::Storage for Forgetful {
        fn hard_state(&self) -> raftwerk_raft::HardState {
            self.0.hard_state()
        }
        fn first_index(&self) -> u64 {
            self.0.first_index()
        }
        fn last_index(&self) -> u64 {
            self.0.last_index()
        }
        fn term(&self, index: u64) -> Result<u64, raftwerk_raft::StorageError> {
            self.0.term(index)
        }
        fn entries(
            &self,
            low: u64,
            high: u64,
            bytes_max: u64,
        ) -> Result<Vec<raftwerk_raft::Entry>, raftwerk_raft::StorageError> {
            self.0.entries(low, high, bytes_max)
        }
    }
    let mut storage = MemStorage::new();
    storage.append(&entries_with_terms(&[1, 1, 1]));
    let meta = raftwerk_raft::SnapshotMeta {
        index: 2,
        term: 1,
        configuration: raftwerk_raft::Configuration::new(vec![1, 2, 3], Vec::new()),
    };
    storage.create_snapshot(meta, snapshot_data(2, 8)).unwrap();
    storage.compact(2).unwrap();
    let mut config = config(2, &[1, 2, 3]);
    config.applied = 2;
    let result = Raft::new(config, Forgetful(storage));
    assert!(matches!(
        result.err(),
        Some(raftwerk_raft::ConfigError::CompactedWithoutSnapshot { first_index: 3 })
    ));
}

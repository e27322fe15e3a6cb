//! Membership changes (dissertation ch. 4): joint consensus with automatic
//! leave, one change at a time, the 2015 rule for new leaders, learners,
//! removal of the leader, removed nodes that come back, and the
//! configuration rebuilt from the log on restart.

mod harness;

use harness::*;
use raftwerk_raft::{ConfChange, ConfChangeError, ConfChangeOp, EntryKind, MemStorage, Raft, RejectReason, Role};

#[test]
fn learner_receives_the_log_but_never_votes_nor_counts() {
    let mut net = cluster_with_spares();
    commit_change(&mut net, 1, &[ConfChangeOp::AddLearner(4)]);
    assert!(net.node(1).configuration().is_learner(4));
    assert!(
        net.node(4).configuration().is_learner(4),
        "the learner applied its own addition"
    );
    let index = net.node_mut(1).propose(data(3)).unwrap();
    settle(&mut net);
    assert!(
        net.committed[&4].iter().any(|entry| entry.index == index),
        "learner got the log"
    );
    // A learner never starts an election, however long it waits.
    net.isolate(4);
    for _ in 0..100 {
        net.tick(4);
    }
    assert_eq!(net.node(4).role(), Role::Follower);
    // Nor does it count in a quorum: with 2 and 3 cut off, nothing commits.
    net.heal();
    net.isolate(2);
    net.isolate(3);
    let index = net.node_mut(1).propose(data(4)).unwrap();
    net.process(1);
    net.deliver_all();
    net.process(1);
    assert!(
        net.node(1).commit_index() < index,
        "a learner's copy committed an entry"
    );
}

#[test]
fn lagging_learner_promotion_is_refused() {
    let mut net = cluster_with_spares();
    net.node_mut(1)
        .propose_conf_change(change(&[ConfChangeOp::AddLearner(4)]))
        .unwrap();
    // Apply the change on the leader without letting node 4 catch up.
    net.isolate(4);
    settle(&mut net);
    assert!(net.node(1).configuration().is_learner(4));
    let result = net
        .node_mut(1)
        .propose_conf_change(change(&[ConfChangeOp::AddVoter(4)]));
    assert!(
        matches!(result, Err(ConfChangeError::LearnerNotCaughtUp { id: 4, .. })),
        "{result:?}"
    );
    // Once caught up, the promotion is accepted.
    net.heal();
    settle(&mut net);
    commit_change(&mut net, 1, &[ConfChangeOp::AddVoter(4)]);
    assert!(net.node(1).configuration().is_voter(4));
}

#[test]
fn joint_change_enters_joint_and_leaves_it_automatically() {
    let mut net = cluster_with_spares();
    add_learners(&mut net, 1, &[4, 5]);
    // Replace 2 and 3 by 4 and 5 in one change: C_old,new first.
    let index = net
        .node_mut(1)
        .propose_conf_change(change(&[
            ConfChangeOp::AddVoter(4),
            ConfChangeOp::AddVoter(5),
            ConfChangeOp::Remove(2),
            ConfChangeOp::Remove(3),
        ]))
        .unwrap();
    settle(&mut net);
    let leader_log = net.node(1).log_entries(index, net.node(1).last_index() + 1).unwrap();
    let leave = leader_log
        .iter()
        .find(|entry| entry.index > index && entry.kind == EntryKind::ConfChange)
        .expect("the leader proposed leaving the joint configuration");
    assert_eq!(ConfChange::decode(&leave.data).unwrap(), ConfChange::default());
    for id in [1, 4, 5] {
        let configuration = net.node(id).configuration();
        assert!(!configuration.is_joint(), "node {id} still joint");
        assert_eq!(configuration.voters, vec![1, 4, 5], "node {id}");
    }
    // The new configuration commits without the removed nodes.
    net.isolate(2);
    net.isolate(3);
    let write = net.node_mut(1).propose(data(5)).unwrap();
    settle(&mut net);
    assert!(net.node(1).commit_index() >= write);
}

#[test]
fn second_conf_change_is_refused_while_one_is_in_flight() {
    let mut net = cluster_with_spares();
    let first = net
        .node_mut(1)
        .propose_conf_change(change(&[ConfChangeOp::AddLearner(4)]))
        .unwrap();
    let second = net
        .node_mut(1)
        .propose_conf_change(change(&[ConfChangeOp::AddLearner(5)]));
    assert_eq!(second, Err(ConfChangeError::InProgress { pending_index: first }));
    settle(&mut net);
    net.node_mut(1)
        .propose_conf_change(change(&[ConfChangeOp::AddLearner(5)]))
        .unwrap();
}

#[test]
fn new_leader_refuses_conf_change_until_its_first_entry_is_applied() {
    let mut net = cluster_with_spares();
    net.node_mut(1).transfer_leadership(2).unwrap();
    net.process(1);
    // Deliver only until node 2 wins, not the commit of its first entry.
    net.deliver_where(|message| !is_append(message) || message.from != 2);
    assert_eq!(net.node(2).role(), Role::Leader);
    let result = net
        .node_mut(2)
        .propose_conf_change(change(&[ConfChangeOp::AddLearner(4)]));
    assert!(matches!(result, Err(ConfChangeError::InProgress { .. })), "{result:?}");
    settle(&mut net);
    net.node_mut(2)
        .propose_conf_change(change(&[ConfChangeOp::AddLearner(4)]))
        .unwrap();
}

#[test]
fn removed_leader_steps_down_after_the_change_commits_and_falls_silent() {
    let mut net = cluster_with_spares();
    commit_change(&mut net, 1, &[ConfChangeOp::Remove(1)]);
    assert_ne!(net.node(1).role(), Role::Leader);
    assert!(!net.node(1).configuration().is_member(1));
    // The remaining voters elect a leader among themselves.
    for _ in 0..100 {
        net.run_ticks(1);
        if net.leaders().iter().any(|(id, _)| *id == 2 || *id == 3) {
            break;
        }
    }
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    assert!(leaders[0].0 == 2 || leaders[0].0 == 3);
    // Node 1 never campaigns again.
    let term = net.node(1).term();
    for _ in 0..100 {
        net.tick(1);
    }
    assert_eq!(net.node(1).role(), Role::Follower);
    assert!(net.node(1).term() <= term + 1);
}

#[test]
fn removed_node_that_comes_back_cannot_disrupt_the_cluster() {
    let mut net = cluster_with_spares();
    net.node_mut(1)
        .propose_conf_change(change(&[ConfChangeOp::Remove(3)]))
        .unwrap();
    // Node 3 is cut off before it learns of its removal.
    net.isolate(3);
    settle(&mut net);
    assert!(!net.node(1).configuration().is_member(3));
    // Cut off, node 3 still believes it votes and campaigns.
    for _ in 0..60 {
        net.tick(3);
    }
    assert!(net.node(3).configuration().is_voter(3));
    let term = net.node(1).term();
    net.heal();
    net.rejections.clear();
    net.node_mut(3).tick();
    for _ in 0..60 {
        net.tick(3);
        net.deliver_all();
    }
    assert_eq!(net.node(1).role(), Role::Leader, "the leader was disturbed");
    assert_eq!(net.node(1).term(), term, "the cluster's term moved");
    assert!(
        net.rejections
            .iter()
            .any(|(message, reason)| message.from == 3 && *reason == RejectReason::InsideLease),
        "members ignored the removed node inside the leader's lease"
    );
}

#[test]
fn configuration_is_rebuilt_from_the_log_on_restart() {
    let mut net = cluster_with_spares();
    commit_change(&mut net, 1, &[ConfChangeOp::AddLearner(4)]);
    commit_change(&mut net, 1, &[ConfChangeOp::AddVoter(4)]);
    // The configuration in force is the latest one in the log, whatever
    // the state machine applied.
    for applied in [net.node(2).applied_index(), 0] {
        let storage = net.node(2).storage().clone();
        let mut config = config(2, &[1, 2, 3]);
        config.applied = applied;
        let restarted = Raft::<MemStorage>::new(config, storage).unwrap();
        assert_eq!(restarted.configuration().voters, vec![1, 2, 3, 4], "applied {applied}");
    }
}

/// A configuration takes effect when appended, so an uncommitted one that
/// a new leader overwrites is undone with the entry that brought it.
#[test]
fn uncommitted_configuration_is_reverted_when_the_log_is_truncated() {
    let mut net = cluster_with_spares();
    net.isolate(1);
    net.node_mut(1)
        .propose_conf_change(change(&[ConfChangeOp::AddLearner(4)]))
        .unwrap();
    net.process(1);
    assert!(net.node(1).configuration().is_learner(4), "in force once appended");
    // Nodes 2 and 3 elect a leader that never saw the change.
    for _ in 0..100 {
        net.tick(2);
        net.tick(3);
        net.deliver_all();
        if net.node(2).role() == Role::Leader || net.node(3).role() == Role::Leader {
            break;
        }
    }
    let leader = if net.node(2).role() == Role::Leader { 2 } else { 3 };
    assert_eq!(net.node(leader).role(), Role::Leader);
    net.node_mut(leader).propose(data(7)).unwrap();
    net.heal();
    settle(&mut net);
    assert!(
        !net.node(1).configuration().is_member(4),
        "the overwritten change is undone"
    );
    assert_eq!(net.node(1).configuration().voters, vec![1, 2, 3]);
}

#[test]
fn cluster_grows_from_one_voter_and_shrinks_back() {
    let mut net = Network::new(&[1, 2, 3], |config| config.voters = vec![1]);
    for _ in 0..30 {
        net.tick(1);
    }
    assert_eq!(net.node(1).role(), Role::Leader);
    settle(&mut net);
    for id in [2, 3] {
        commit_change(&mut net, 1, &[ConfChangeOp::AddLearner(id)]);
        commit_change(&mut net, 1, &[ConfChangeOp::AddVoter(id)]);
    }
    assert_eq!(net.node(3).configuration().voters, vec![1, 2, 3]);
    for id in [3, 2] {
        commit_change(&mut net, 1, &[ConfChangeOp::Remove(id)]);
    }
    assert_eq!(net.node(1).configuration().voters, vec![1]);
    let write = net.node_mut(1).propose(data(1)).unwrap();
    settle(&mut net);
    assert!(
        net.node(1).commit_index() >= write,
        "a single voter commits alone again"
    );
}

//! Check-quorum and the leader lease (dissertation §6.2 and §9.6): a leader
//! cut off from a majority steps down, followers that hear from a live
//! leader ignore disruptive candidates, and stale leaders learn the newer
//! term (§5.1: "if a server receives a request with a stale term number, it
//! rejects the request").

mod harness;

use harness::{persist, storage_with, Network, ELECTION_TICKS};
use raftwerk_raft::{config::Config, HardState, Message, MessageBody, Raft, RejectReason, Role};

#[test]
fn leader_without_quorum_contact_steps_down_after_election_timeout() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    let term = net.node(1).term();
    // With a live quorum the leader stays.
    net.run_ticks(5 * ELECTION_TICKS);
    assert_eq!(net.node(1).role(), Role::Leader);

    net.isolate(1);
    let mut stepped_down_at = None;
    for tick in 1..=2 * ELECTION_TICKS {
        net.tick(1);
        net.deliver_all();
        if net.node(1).role() != Role::Leader {
            stepped_down_at = Some(tick);
            break;
        }
    }
    let tick = stepped_down_at.expect("isolated leader stepped down within two election timeouts");
    assert!(
        tick >= ELECTION_TICKS,
        "stepped down after {tick} ticks, before a full election timeout without contact"
    );
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!(net.node(1).leader(), 0);
    assert_eq!(net.node(1).term(), term, "stepping down does not change the term");
}

#[test]
fn follower_inside_lease_ignores_vote_and_pre_vote_requests() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    let term = net.node(1).term();
    let (last_log_index, last_log_term) = (net.node(3).last_index(), term);
    let before = net.node(2).status();
    let requests = [
        MessageBody::Vote {
            last_log_index,
            last_log_term,
            transfer: false,
        },
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        },
    ];
    for body in requests.clone() {
        let request = Message {
            from: 3,
            to: 2,
            term: term + 1,
            body,
        };
        assert_eq!(net.node_mut(2).step(request), Err(RejectReason::InsideLease));
        assert!(!net.node(2).has_ready(), "nothing is answered inside the lease");
    }
    assert_eq!(net.node(2).status(), before, "lease rejection changes nothing");

    // Once an election timeout passes without the leader, the lease is over.
    for _ in 0..ELECTION_TICKS {
        net.tick(2);
    }
    let request = Message {
        from: 3,
        to: 2,
        term: term + 1,
        body: requests[1].clone(),
    };
    assert_eq!(net.node_mut(2).step(request), Ok(()));
}

#[test]
fn stale_leader_steps_down_on_higher_term() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    let old_term = net.node(1).term();
    // The leader pauses (no ticks, no messages) while the others elect anew.
    net.isolate(1);
    let mut new_leader = None;
    for _ in 0..10 * ELECTION_TICKS {
        for id in [2, 3] {
            net.tick(id);
        }
        net.deliver_all();
        if let Some(&(id, _)) = net.leaders().iter().find(|(id, _)| *id != 1) {
            new_leader = Some(id);
            break;
        }
    }
    let new_leader = new_leader.expect("the majority elected a new leader");
    let new_term = net.node(new_leader).term();
    assert!(new_term > old_term);
    assert_eq!(net.node(1).role(), Role::Leader, "the paused leader does not know yet");

    net.heal();
    net.drop_queue();
    // The stale leader's next heartbeat is answered with the newer term.
    for _ in 0..harness::HEARTBEAT_TICKS {
        net.tick(1);
    }
    net.deliver_all();
    assert!(net
        .rejections
        .iter()
        .any(|(m, reason)| m.from == 1 && *reason == RejectReason::StaleTerm));
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!(net.node(1).term(), new_term);
}

#[test]
fn follower_answers_stale_term_append_with_its_term() {
    let storage = storage_with(
        &[1, 2],
        HardState {
            term: 5,
            vote: 0,
            commit: 1,
        },
    );
    let mut follower = Raft::new(harness::config(2, &[1, 2, 3]), storage).unwrap();
    // The restart hands out the committed entry first.
    let ready = follower.ready();
    persist(&mut follower, &ready);
    let before = follower.status();
    let stale = [
        MessageBody::Append {
            prev_index: 2,
            prev_term: 2,
            entries: vec![harness::entry(3, 3)],
            commit: 3,
        },
        MessageBody::Heartbeat { commit: 2, read_seq: 7 },
    ];
    for body in stale {
        let message = Message {
            from: 1,
            to: 2,
            term: 3,
            body,
        };
        assert_eq!(follower.step(message), Err(RejectReason::StaleTerm));
        let ready = follower.ready();
        persist(&mut follower, &ready);
        let replies: Vec<_> = ready.messages.iter().filter(|m| m.to == 1).collect();
        assert_eq!(replies.len(), 1, "the stale leader is answered");
        assert_eq!(replies[0].term, 5, "with the follower's term");
        assert!(matches!(
            replies[0].body,
            MessageBody::AppendResponse { reject: true, .. }
        ));
        assert_eq!(follower.status(), before, "the stale message changed nothing");
    }
    assert_eq!(follower.stats().messages_rejected, 2);
}

#[test]
fn check_quorum_and_pre_vote_are_on_by_default() {
    let config = Config::new(1, vec![1, 2, 3]);
    assert!(config.check_quorum);
    assert!(config.pre_vote);
}

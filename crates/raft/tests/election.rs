//! Leader election (§5.2, Figure 2 "RequestVote RPC" and "Rules for
//! Servers"), up-to-date check (§5.4.1), durability of term and vote before
//! dependent messages, and pre-vote (dissertation §9.6).

mod harness;

use std::collections::BTreeSet;

use harness::{config, is_heartbeat, persist, storage_with, vote_granted, Network, ELECTION_TICKS};
use raftwerk_raft::{HardState, MemStorage, Message, MessageBody, Raft, Role, Storage};

fn vote_request(from: u64, to: u64, term: u64, last_log_index: u64, last_log_term: u64) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::Vote {
            last_log_index,
            last_log_term,
            transfer: false,
        },
    }
}

/// Steps `message` into `node` and runs its Ready loop with a synchronous
/// disk, returning every message that left.
fn step_and_drain(node: &mut Raft<MemStorage>, message: Message) -> Vec<Message> {
    node.step(message).expect("message accepted");
    let mut out = Vec::new();
    for _ in 0..8 {
        if !node.has_ready() {
            break;
        }
        let ready = node.ready();
        persist(node, &ready);
        out.extend(ready.messages);
    }
    out
}

/// Ticks until `node` leaves the follower role; returns the tick count.
fn ticks_until_campaign(node: &mut Raft<MemStorage>) -> u64 {
    for tick in 1..=4 * ELECTION_TICKS {
        node.tick();
        if node.role() != Role::Follower {
            return tick;
        }
    }
    panic!("node never campaigned");
}

#[test]
fn election_timeout_is_randomized_in_t_to_2t() {
    let mut first_timeouts = BTreeSet::new();
    let mut repeat_timeouts = BTreeSet::new();
    for seed in 0..64 {
        let mut config = config(1, &[1, 2, 3]);
        config.seed = seed;
        let mut node = Raft::new(config, MemStorage::new()).unwrap();
        let ticks = ticks_until_campaign(&mut node);
        assert!(
            (ELECTION_TICKS..2 * ELECTION_TICKS).contains(&ticks),
            "seed {seed}: first timeout after {ticks} ticks"
        );
        first_timeouts.insert(ticks);
        // The unanswered pre-candidate times out again after a freshly drawn timeout.
        let _ = node.ready();
        let mut repeat = None;
        for tick in 1..=4 * ELECTION_TICKS {
            node.tick();
            let ready = node.ready();
            if ready
                .messages
                .iter()
                .any(|m| matches!(m.body, MessageBody::PreVote { .. }))
            {
                repeat = Some(tick);
                break;
            }
        }
        let repeat = repeat.expect("pre-candidate campaigned again");
        assert!(
            (ELECTION_TICKS..2 * ELECTION_TICKS).contains(&repeat),
            "seed {seed}: second timeout after {repeat} ticks"
        );
        repeat_timeouts.insert(repeat);
    }
    assert!(first_timeouts.len() >= 5, "timeouts are not spread: {first_timeouts:?}");
    assert!(
        repeat_timeouts.len() >= 5,
        "timeouts are not spread: {repeat_timeouts:?}"
    );
}

#[test]
fn leader_sends_heartbeats_every_heartbeat_interval() {
    let heartbeat_ticks = 3;
    let mut net = Network::new(&[1, 2, 3], |c| c.heartbeat_ticks = heartbeat_ticks);
    net.elect(1);
    let mut heartbeat_ticks_seen = Vec::new();
    for tick in 1..=30 {
        net.tick(1);
        let heartbeats = net.queue.iter().filter(|m| is_heartbeat(m) && m.from == 1).count();
        if heartbeats > 0 {
            assert_eq!(heartbeats, 2, "one heartbeat per follower");
            heartbeat_ticks_seen.push(tick);
        }
        net.deliver_all();
    }
    let expected: Vec<u64> = (1..=10).map(|round| round * heartbeat_ticks).collect();
    assert_eq!(heartbeat_ticks_seen, expected);
    assert_eq!(net.node(1).role(), Role::Leader);
}

#[test]
fn split_vote_is_resolved_by_rerandomized_timeouts() {
    for seed_base in 0..8u64 {
        let mut net = Network::new(&[1, 2, 3, 4], |c| {
            c.pre_vote = false;
            c.seed = seed_base * 100 + c.id;
        });
        // Nodes 1 and 2 stand in term 1 at once; node 3 only hears node 1
        // and node 4 only hears node 2: two votes each, quorum three.
        for (a, b) in [(1, 4), (2, 3)] {
            net.cut.insert((a, b));
            net.cut.insert((b, a));
        }
        net.campaign(1);
        net.campaign(2);
        net.deliver_all();
        assert_eq!(net.node(1).role(), Role::Candidate, "seed base {seed_base}");
        assert_eq!(net.node(2).role(), Role::Candidate, "seed base {seed_base}");
        assert_eq!(net.node(1).term(), 1);
        assert_eq!(net.node(2).term(), 1);
        assert!(net.leaders().is_empty(), "split vote elects nobody");

        // Keep the adversarial links: only differing timeouts can break the tie.
        let mut elected = false;
        for _ in 0..20 * ELECTION_TICKS {
            net.tick_all();
            net.deliver_all();
            if !net.leaders().is_empty() {
                elected = true;
                break;
            }
        }
        assert!(elected, "seed base {seed_base}: split vote never resolved");
        let leaders = net.leaders();
        assert_eq!(leaders.len(), 1, "seed base {seed_base}: {leaders:?}");
    }
}

#[test]
fn vote_is_granted_only_to_up_to_date_logs() {
    // The voter's log ends at index 3, term 2.
    let cases = [
        // (candidate last index, last term, granted)
        (5, 1, false), // longer log, older last term
        (2, 2, false), // same last term, shorter
        (3, 2, true),  // identical
        (4, 2, true),  // same last term, longer
        (1, 3, true),  // newer last term, shorter
    ];
    for (last_index, last_term, expected) in cases {
        let storage = storage_with(
            &[1, 2, 2],
            HardState {
                term: 2,
                vote: 0,
                commit: 1,
            },
        );
        let mut voter = Raft::new(config(2, &[1, 2, 3]), storage).unwrap();
        let out = step_and_drain(&mut voter, vote_request(1, 2, 3, last_index, last_term));
        assert_eq!(
            vote_granted(&out, 1),
            Some(expected),
            "candidate log ({last_index}, {last_term})"
        );
        let expected_vote = if expected { 1 } else { 0 };
        assert_eq!(voter.hard_state().vote, expected_vote);
        assert_eq!(voter.term(), 3, "the higher term is adopted either way");
    }
}

#[test]
fn vote_is_granted_to_at_most_one_candidate_per_term() {
    let mut voter = Raft::new(config(3, &[1, 2, 3]), MemStorage::new()).unwrap();
    let out = step_and_drain(&mut voter, vote_request(1, 3, 1, 0, 0));
    assert_eq!(vote_granted(&out, 1), Some(true));
    let out = step_and_drain(&mut voter, vote_request(2, 3, 1, 0, 0));
    assert_eq!(vote_granted(&out, 2), Some(false), "second candidate of term 1 refused");
    let out = step_and_drain(&mut voter, vote_request(1, 3, 1, 0, 0));
    assert_eq!(
        vote_granted(&out, 1),
        Some(true),
        "a retransmitted request is granted again"
    );
    assert_eq!(
        voter.hard_state(),
        HardState {
            term: 1,
            vote: 1,
            commit: 0
        }
    );
    assert_eq!(voter.storage().hard_state().vote, 1);
}

#[test]
fn vote_is_durable_before_reply() {
    let mut voter = Raft::new(config(2, &[1, 2, 3]), MemStorage::new()).unwrap();
    voter.step(vote_request(1, 2, 1, 0, 0)).unwrap();
    let ready = voter.ready();
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: 1,
            vote: 1,
            commit: 0
        })
    );
    assert!(ready.must_persist());
    assert_eq!(
        vote_granted(&ready.messages, 1),
        None,
        "reply held until the vote is durable"
    );
    // More input before persistence does not release it either.
    voter.tick();
    let early = voter.ready();
    assert_eq!(vote_granted(&early.messages, 1), None);
    assert_eq!(voter.storage().hard_state().vote, 0);

    persist(&mut voter, &ready);
    assert_eq!(voter.storage().hard_state().vote, 1);
    let after = voter.ready();
    assert_eq!(vote_granted(&after.messages, 1), Some(true), "released once durable");
}

#[test]
fn candidate_vote_requests_wait_for_durable_term_and_vote() {
    for pre_vote in [false, true] {
        let mut net = Network::new(&[1, 2, 3], |c| c.pre_vote = pre_vote);
        let node = net.node_mut(1);
        for _ in 0..2 * ELECTION_TICKS {
            node.tick();
            if node.role() != Role::Follower {
                break;
            }
        }
        if pre_vote {
            assert_eq!(node.role(), Role::PreCandidate);
            let ready = node.ready();
            assert!(!ready.must_persist(), "a pre-vote round persists nothing");
            let pre_votes = ready
                .messages
                .iter()
                .filter(|m| matches!(m.body, MessageBody::PreVote { .. }));
            assert_eq!(pre_votes.count(), 2);
            // Grant pre-votes (as the peers would, with term 1).
            for from in [2, 3] {
                let _ = node.step(Message {
                    from,
                    to: 1,
                    term: 1,
                    body: MessageBody::PreVoteResponse { granted: true },
                });
            }
        }
        assert_eq!(node.role(), Role::Candidate, "pre_vote={pre_vote}");
        let ready = node.ready();
        assert_eq!(
            ready.hard_state,
            Some(HardState {
                term: 1,
                vote: 1,
                commit: 0
            })
        );
        assert!(
            !ready
                .messages
                .iter()
                .any(|m| matches!(m.body, MessageBody::Vote { .. })),
            "pre_vote={pre_vote}: vote requests left before term and vote were durable"
        );
        persist(node, &ready);
        let released = node.ready();
        let votes: Vec<_> = released
            .messages
            .iter()
            .filter(|m| matches!(m.body, MessageBody::Vote { .. }))
            .collect();
        assert_eq!(votes.len(), 2, "pre_vote={pre_vote}: requests released once durable");
        assert!(votes.iter().all(|m| m.term == 1));
    }
}

#[test]
fn pre_vote_changes_neither_term_nor_vote() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    let before: Vec<_> = net.ids().iter().map(|&id| net.node(id).hard_state()).collect();
    net.campaign(1);
    assert_eq!(net.node(1).role(), Role::PreCandidate);
    assert_eq!(net.node(1).hard_state(), before[0], "pre-candidate keeps term and vote");
    // Deliver the pre-votes only; keep the granted answers from node 1.
    net.deliver_where(|m| matches!(m.body, MessageBody::PreVote { .. }));
    for (at, id) in [2, 3].into_iter().enumerate() {
        assert_eq!(
            net.node(id).hard_state(),
            before[at + 1],
            "granting a pre-vote changes no term or vote"
        );
        assert_eq!(net.node(id).role(), Role::Follower);
    }
    let responses: Vec<_> = net
        .queue
        .iter()
        .filter(|m| matches!(m.body, MessageBody::PreVoteResponse { granted: true }))
        .collect();
    assert_eq!(responses.len(), 2, "both peers grant the pre-vote");
    assert!(
        responses.iter().all(|m| m.term == 1),
        "granted with the prospective term"
    );
    assert_eq!(net.node(2).storage().hard_state().vote, 0);
}

#[test]
fn pre_vote_keeps_rejoining_partitioned_node_from_disturbing_leader() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    let term = net.node(1).term();
    net.isolate(3);
    net.run_ticks(10 * ELECTION_TICKS);
    assert_eq!(net.node(3).term(), term, "isolated node campaigns with pre-votes only");
    assert_ne!(net.node(3).role(), Role::Leader);
    net.heal();
    net.run_ticks(5 * ELECTION_TICKS);
    for id in [1, 2, 3] {
        assert_eq!(net.node(id).term(), term, "node {id} term");
        assert_eq!(net.node(id).leader(), 1, "node {id} leader");
    }
    assert_eq!(net.leaders(), vec![(1, term)]);
}

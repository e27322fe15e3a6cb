//! Log replication (§5.3, Figure 2 "AppendEntries RPC"): the consistency
//! check, fast conflict back-off, probe and replicate states, and the bounds
//! on pipelining and batching (dissertation §10.2.1).

mod harness;

use harness::{append_entries, data, entries_with_terms, entry, is_append, persist, storage_with, Network};
use raftwerk_raft::{Entry, HardState, Message, MessageBody, Raft, Storage, Term};

fn append(term: Term, prev_index: u64, prev_term: Term, entries: Vec<Entry>, commit: u64) -> Message {
    Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        },
    }
}

/// `(reject, index)` of the append response `node` sends for `message`.
fn append_reply(node: &mut Raft<raftwerk_raft::MemStorage>, message: Message) -> (bool, u64) {
    node.step(message).expect("append accepted for processing");
    let mut replies = Vec::new();
    for _ in 0..4 {
        let ready = node.ready();
        persist(node, &ready);
        replies.extend(ready.messages);
        if !node.has_ready() {
            break;
        }
    }
    match replies.as_slice() {
        [Message {
            body: MessageBody::AppendResponse { reject, index, .. },
            ..
        }] => (*reject, *index),
        other => panic!("expected one append response, got {other:?}"),
    }
}

/// Appends to `to` that are queued, in order.
fn queued_appends_to(net: &Network, to: u64) -> Vec<Message> {
    net.queue
        .iter()
        .filter(|m| m.to == to && is_append(m))
        .cloned()
        .collect()
}

/// Elects node 1 of three and lets replication settle, so both followers
/// are in replicate state.
fn settled_cluster(adjust: impl Fn(&mut raftwerk_raft::Config)) -> Network {
    let mut net = Network::new(&[1, 2, 3], adjust);
    net.elect(1);
    net.deliver_all();
    net
}

#[test]
fn append_consistency_check_rejects_mismatched_prev() {
    let storage = storage_with(
        &[1, 1, 2],
        HardState {
            term: 2,
            vote: 0,
            commit: 0,
        },
    );
    let mut follower = Raft::new(harness::config(2, &[1, 2, 3]), storage).unwrap();

    // Entry 3 has term 2 here, not 1.
    assert_eq!(
        append_reply(&mut follower, append(3, 3, 1, vec![entry(4, 3)], 0)),
        (true, 3)
    );
    assert_eq!(follower.last_index(), 3, "a failed check appends nothing");
    assert_eq!(follower.log_term(3), Some(2), "and truncates nothing");
    // The previous entry is beyond the log.
    assert_eq!(
        append_reply(&mut follower, append(3, 5, 3, vec![entry(6, 3)], 0)),
        (true, 5)
    );
    assert_eq!(follower.last_index(), 3);
    // A matching previous entry: appended.
    assert_eq!(
        append_reply(&mut follower, append(3, 3, 2, vec![entry(4, 3)], 0)),
        (false, 4)
    );
    assert_eq!(follower.last_index(), 4);
    // A conflicting suffix after a matching entry is replaced.
    assert_eq!(
        append_reply(&mut follower, append(4, 2, 1, vec![entry(3, 4)], 0)),
        (false, 3)
    );
    assert_eq!(follower.last_index(), 3);
    assert_eq!(follower.log_term(3), Some(4));
}

/// Elects node 1 (log `leader`) with node 3's vote (same log), lets it
/// repair node 2 (log `follower`) and returns how many appends node 2
/// rejected on the way.
fn rejections_to_repair(leader: &[Term], follower: &[Term]) -> usize {
    let term = 7;
    let storages = [(1, leader), (2, follower), (3, leader)]
        .into_iter()
        .map(|(id, terms)| {
            (
                id,
                storage_with(
                    terms,
                    HardState {
                        term,
                        vote: 0,
                        commit: 1,
                    },
                ),
            )
        })
        .collect();
    let mut net = Network::with_storages(&[1, 2, 3], storages, |_| {});
    net.elect(1);
    net.deliver_all();
    let leader_log = net.node(1).log_entries(1, net.node(1).last_index() + 1).unwrap();
    let follower_log = net.node(2).log_entries(1, net.node(2).last_index() + 1).unwrap();
    assert_eq!(follower_log, leader_log, "follower repaired");
    net.delivered
        .iter()
        .filter(|m| m.from == 2 && matches!(m.body, MessageBody::AppendResponse { reject: true, .. }))
        .count()
}

#[test]
fn conflict_hint_backs_off_one_round_per_conflicting_term() {
    // Figure 7 of the Raft paper: the leader's log, and followers (a)–(f).
    let leader = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [(&str, &[Term]); 6] = [
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        ("b", &[1, 1, 1, 4]),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        ("e", &[1, 1, 1, 4, 4, 4, 4]),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    for (name, follower) in followers {
        let divergent_terms: std::collections::BTreeSet<Term> = follower
            .iter()
            .enumerate()
            .filter(|(at, term)| leader.get(*at) != Some(term))
            .map(|(_, term)| *term)
            .collect();
        let missing_tail = usize::from(follower.len() < leader.len());
        let bound = divergent_terms.len().max(missing_tail);
        let rounds = rejections_to_repair(&leader, follower);
        assert!(
            rounds <= bound,
            "follower ({name}): {rounds} rejected rounds, bound {bound}"
        );
    }
    // Many conflicting entries in few terms: rounds follow terms, not entries.
    let mut follower = vec![1];
    follower.extend([2; 30]);
    follower.extend([3; 30]);
    let mut leader = vec![1];
    leader.extend([4; 5]);
    let rounds = rejections_to_repair(&leader, &follower);
    assert!(rounds >= 1, "the follower's log did conflict");
    assert!(
        rounds <= 2,
        "{rounds} rejected rounds for 60 conflicting entries in 2 terms"
    );
}

#[test]
fn progress_moves_from_probe_to_replicate() {
    let mut net = Network::new(&[1, 2, 3], |c| c.message_bytes_max = 1);
    net.campaign(1);
    net.deliver_where(harness::is_election);
    assert_eq!(net.node(1).role(), raftwerk_raft::Role::Leader);
    assert_eq!(queued_appends_to(&net, 2).len(), 1, "one probe");

    // Probe state: one append outstanding, whatever is proposed meanwhile.
    for n in 0..3 {
        net.node_mut(1).propose(data(n + 1)).unwrap();
    }
    net.process(1);
    assert_eq!(
        queued_appends_to(&net, 2).len(),
        1,
        "probe state sends one append at a time"
    );

    // The probe succeeds: the follower switches to replicate and the leader
    // streams the rest without waiting, one entry per message here.
    let probe = net.take_where(|m| m.to == 2 && is_append(m));
    net.deliver(probe.into_iter().next().unwrap());
    let responses = net.take_where(|m| m.from == 2);
    assert_eq!(responses.len(), 1);
    net.deliver(responses.into_iter().next().unwrap());
    let stream = queued_appends_to(&net, 2);
    assert_eq!(stream.len(), 3, "replicate state pipelines: {stream:?}");
    let indexes: Vec<u64> = stream.iter().map(|m| append_entries(m)[0].index).collect();
    assert_eq!(indexes, vec![2, 3, 4]);
}

#[test]
fn pipelining_is_bounded_by_inflight_messages_max() {
    let mut net = settled_cluster(|c| {
        c.message_bytes_max = 1;
        c.inflight_messages_max = 2;
    });
    for n in 0..5 {
        net.node_mut(1).propose(data(n + 1)).unwrap();
    }
    net.process(1);
    assert_eq!(queued_appends_to(&net, 2).len(), 2, "window of two messages");
    assert_eq!(queued_appends_to(&net, 3).len(), 2);

    // Each acknowledgement opens the window by one message.
    let mut to_2 = net.take_where(|m| m.to == 2 && is_append(m));
    let first = to_2.remove(0);
    net.queue.extend(to_2);
    net.deliver(first);
    net.deliver_where(|m| m.from == 2);
    assert_eq!(queued_appends_to(&net, 2).len(), 2, "one freed, one more sent");
    net.deliver_all();
    assert_eq!(net.node(2).last_index(), net.node(1).last_index());
}

#[test]
fn pipelining_is_bounded_by_inflight_bytes_max() {
    let entry_size = 100 + raftwerk_raft::ENTRY_OVERHEAD_BYTES;
    let bytes_max = 300;
    let mut net = settled_cluster(|c| {
        c.message_bytes_max = 1;
        c.inflight_bytes_max = bytes_max;
    });
    for _ in 0..6 {
        net.node_mut(1).propose(data(100)).unwrap();
    }
    net.process(1);
    let sent = queued_appends_to(&net, 2);
    let sizes: Vec<u64> = sent
        .iter()
        .map(|m| append_entries(m).iter().map(Entry::size_bytes).sum())
        .collect();
    assert!(sizes.iter().all(|&size| size == entry_size));
    let before_last: u64 = sizes[..sizes.len() - 1].iter().sum();
    assert!(
        before_last < bytes_max,
        "a message is sent only while the window has room"
    );
    assert!(sizes.iter().sum::<u64>() >= bytes_max, "the window is used up");
    assert_eq!(sent.len(), 3);
    net.deliver_all();
    assert_eq!(net.node(2).last_index(), net.node(1).last_index());
}

#[test]
fn many_proposals_are_batched_into_one_append() {
    let mut net = settled_cluster(|_| {});
    let first = net.node(1).last_index() + 1;
    for n in 0..100 {
        net.node_mut(1).propose(data(n % 7)).unwrap();
    }
    net.process(1);
    for to in [2, 3] {
        let appends = queued_appends_to(&net, to);
        assert_eq!(appends.len(), 1, "one append to node {to}");
        let entries = append_entries(&appends[0]);
        assert_eq!(entries.len(), 100);
        assert_eq!(entries[0].index, first);
    }
}

#[test]
fn append_respects_message_bytes_max() {
    let bytes_max = 1000;
    let mut net = settled_cluster(|c| c.message_bytes_max = bytes_max);
    let first = net.node(1).last_index() + 1;
    for _ in 0..30 {
        net.node_mut(1).propose(data(100)).unwrap();
    }
    // One entry above the cap still travels, alone.
    net.node_mut(1).propose(data(1500)).unwrap();
    net.process(1);
    let appends = queued_appends_to(&net, 2);
    let mut next = first;
    for message in &appends {
        let entries = append_entries(message);
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        assert!(
            bytes <= bytes_max || entries.len() == 1,
            "append of {} entries, {bytes} bytes",
            entries.len()
        );
        for entry in entries {
            assert_eq!(entry.index, next, "appends are contiguous");
            next += 1;
        }
    }
    assert_eq!(next, net.node(1).last_index() + 1, "every entry sent");
    assert!(appends.len() >= 5);
}

/// Regression: at commit 38b8766 a heartbeat response from a lagging follower
/// in replicate state sent nothing (`send_append(from, false)` with nothing
/// new to send), so entries whose appends were lost never reached it.
#[test]
fn leader_resends_lost_appends_after_heartbeat_response() {
    let mut net = settled_cluster(|_| {});
    let index = net.node_mut(1).propose(data(8)).unwrap();
    net.process(1);
    // The network loses every append carrying the new entry.
    let lost = net.take_where(is_append);
    assert_eq!(lost.len(), 2);
    // Heartbeats still get through: the leader learns both followers lag.
    net.run_ticks(3 * harness::ELECTION_TICKS);
    assert_eq!(
        net.node(2).last_index(),
        index,
        "follower 2 never received entry {index}"
    );
    assert_eq!(net.node(1).commit_index(), index, "entry {index} never committed");
}

/// Regression: at commit 38b8766 a full window of lost appends paused the
/// follower's progress forever (nothing ever freed the window).
#[test]
fn leader_recovers_when_full_inflight_window_is_lost() {
    let mut net = settled_cluster(|c| {
        c.inflight_messages_max = 2;
        c.message_bytes_max = 1;
    });
    for n in 0..4 {
        net.node_mut(1).propose(data(n + 1)).unwrap();
    }
    net.process(1);
    let lost = net.take_where(is_append);
    assert_eq!(lost.len(), 4, "two appends in flight to each follower");
    net.run_ticks(3 * harness::ELECTION_TICKS);
    let last = net.node(1).last_index();
    assert_eq!(net.node(2).last_index(), last);
    assert_eq!(net.node(1).commit_index(), last);
}

#[test]
fn follower_log_matches_leader_after_replication() {
    let storages = [
        (
            1,
            storage_with(
                &[1, 1, 2],
                HardState {
                    term: 2,
                    vote: 0,
                    commit: 2,
                },
            ),
        ),
        (
            2,
            storage_with(
                &[1, 1],
                HardState {
                    term: 2,
                    vote: 0,
                    commit: 2,
                },
            ),
        ),
        (
            3,
            storage_with(
                &[1, 1, 2],
                HardState {
                    term: 2,
                    vote: 0,
                    commit: 2,
                },
            ),
        ),
    ]
    .into_iter()
    .collect();
    let mut net = Network::with_storages(&[1, 2, 3], storages, |_| {});
    net.elect(1);
    net.deliver_all();
    let expected = entries_with_terms(&[1, 1, 2]);
    let stored = net.node(2).storage().entries(1, 4, u64::MAX).unwrap();
    assert_eq!(stored, expected, "follower holds the leader's entries durably");
}

/// Appends `entries` after `(prev_index, prev_term)` from `from` in `term`
/// with leader commit `commit`, and returns the Ready it causes, unpersisted.
fn step_append_unpersisted(
    node: &mut Raft<raftwerk_raft::MemStorage>,
    from: u64,
    term: Term,
    prev: (u64, Term),
    entries: Vec<Entry>,
    commit: u64,
) -> raftwerk_raft::Ready {
    let message = Message {
        from,
        to: node.id(),
        term,
        body: MessageBody::Append {
            prev_index: prev.0,
            prev_term: prev.1,
            entries,
            commit,
        },
    };
    node.step(message).expect("append accepted");
    node.ready()
}

/// An asynchronous disk writes readies in order and acknowledges each one
/// (the `Ready` contract allows acknowledging late). A follower of five
/// receives 2:2 3:2 from leader 1 (term 2), then 2:3 3:3 from leader 3
/// (term 3), then 2:2 3:2 4:4 again from leader 1 (term 4). When the disk
/// acknowledges the first ready, the core checks only that index 3 still has
/// term 2 in its log — true again after the third overwrite — and marks
/// 1..=3 durable, although the second ready (2:3 3:3) will be written over
/// them next. Once it is, the core reads 2:3 3:3 from storage as its own log
/// and hands them out as committed: uncommitted entries of a deposed leader
/// are applied (State Machine Safety).
#[test]
fn persisted_ack_covers_only_entries_not_overwritten_since() {
    let voters = [1, 2, 3, 4, 5];
    let storage = storage_with(
        &[1],
        HardState {
            term: 1,
            vote: 0,
            commit: 1,
        },
    );
    let mut follower = Raft::new(harness::config(2, &voters), storage).unwrap();
    let first = follower.ready();
    persist(&mut follower, &first);
    let r1 = step_append_unpersisted(&mut follower, 1, 2, (1, 1), vec![entry(2, 2), entry(3, 2)], 1);
    let r2 = step_append_unpersisted(&mut follower, 3, 3, (1, 1), vec![entry(2, 3), entry(3, 3)], 1);
    let r3 = step_append_unpersisted(
        &mut follower,
        1,
        4,
        (1, 1),
        vec![entry(2, 2), entry(3, 2), entry(4, 4)],
        1,
    );
    assert_eq!((r1.entries.len(), r2.entries.len(), r3.entries.len()), (2, 2, 3));
    let newest_log = [(1, 1), (2, 2), (3, 2), (4, 4)];

    persist(&mut follower, &r1);
    persist(&mut follower, &r2);
    // Leader 1 committed 4:4 with nodes 4 and 5 and pipelines its commit index.
    let ready = step_append_unpersisted(&mut follower, 1, 4, (4, 4), vec![], 4);
    for entry in &ready.committed_entries {
        assert_eq!(
            Some(entry.term),
            newest_log
                .iter()
                .find(|(index, _)| *index == entry.index)
                .map(|(_, term)| *term),
            "applied an entry the leader never committed: {entry:?}"
        );
    }
    for (index, term) in newest_log {
        assert_eq!(
            follower.log_term(index),
            Some(term),
            "entry {index}: the core's log must stay the newest one while ready {} is unwritten",
            r3.seq
        );
    }
    persist(&mut follower, &ready);
    persist(&mut follower, &r3);
    for (index, term) in newest_log {
        assert_eq!(follower.log_term(index), Some(term));
    }
}

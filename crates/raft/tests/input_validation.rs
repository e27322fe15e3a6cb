//! Bad input gets a clear error and changes nothing (DESIGN "Design rules
//! that matter for safety"; §5.1 stale terms; RELIABILITY #6 commit beyond
//! the log).

mod harness;

use bytes::Bytes;
use harness::{data, entry, persist, storage_with, Network};
use raftwerk_raft::{
    Entry, EntryKind, HardState, MemStorage, Message, MessageBody, ProposeError, Raft, RejectReason, Role,
};

const TERM: u64 = 2;

/// Node 2 of {1, 2, 3}: log terms [1, 1, 2], term 2, commit 2, leader 1
/// known, everything handed out.
fn follower() -> Raft<MemStorage> {
    let storage = storage_with(
        &[1, 1, 2],
        HardState {
            term: TERM,
            vote: 0,
            commit: 2,
        },
    );
    let mut node = Raft::new(harness::config(2, &[1, 2, 3]), storage).unwrap();
    node.step(Message {
        from: 1,
        to: 2,
        term: TERM,
        body: MessageBody::Heartbeat { commit: 2, read_seq: 1 },
    })
    .unwrap();
    for _ in 0..4 {
        let ready = node.ready();
        persist(&mut node, &ready);
        if !node.has_ready() {
            break;
        }
    }
    assert_eq!(node.leader(), 1);
    node
}

fn append_body(prev_index: u64, prev_term: u64, entries: Vec<Entry>) -> MessageBody {
    MessageBody::Append {
        prev_index,
        prev_term,
        entries,
        commit: 2,
    }
}

/// Steps `message` into `node`, expects `reason`, and checks that nothing
/// changed and nothing is sent.
fn assert_rejected_unchanged(node: &mut Raft<MemStorage>, message: Message, reason: RejectReason) {
    let before = node.status();
    let hard_state = node.hard_state();
    let rejected = node.stats().messages_rejected;
    assert_eq!(node.step(message.clone()), Err(reason), "{message:?}");
    assert_eq!(node.status(), before, "state changed by {message:?}");
    assert_eq!(node.hard_state(), hard_state);
    assert_eq!(node.stats().messages_rejected, rejected + 1, "rejection counted");
    assert!(!node.has_ready(), "rejected {message:?} produced work");
}

#[test]
fn message_from_stale_term_is_rejected_without_state_change() {
    let mut node = follower();
    for body in [
        MessageBody::VoteResponse { granted: true },
        MessageBody::TimeoutNow,
        MessageBody::ReadIndexResponse {
            request_id: 1,
            index: 3,
        },
    ] {
        let message = Message {
            from: 3,
            to: 2,
            term: TERM - 1,
            body,
        };
        assert_rejected_unchanged(&mut node, message, RejectReason::StaleTerm);
    }
}

/// Figure 2: a stale vote request is refused and answered with our term,
/// so the candidate catches up; nothing else changes.
#[test]
fn stale_vote_request_is_refused_with_our_term() {
    let mut node = follower();
    let before = node.status();
    let message = Message {
        from: 3,
        to: 2,
        term: TERM - 1,
        body: MessageBody::Vote {
            last_log_index: 9,
            last_log_term: 1,
            transfer: false,
        },
    };
    assert_eq!(node.step(message), Err(RejectReason::StaleTerm));
    assert_eq!(node.status(), before);
    let ready = node.ready();
    assert_eq!(ready.messages.len(), 1);
    assert_eq!(ready.messages[0].term, TERM);
    assert_eq!(ready.messages[0].body, MessageBody::VoteResponse { granted: false });
}

#[test]
fn message_from_unknown_node_is_rejected_without_state_change() {
    let mut node = follower();
    // Self and the reserved id 0 never send anything.
    for from in [2, 0] {
        let message = Message {
            from,
            to: 2,
            term: TERM + 5,
            body: append_body(3, 2, vec![entry(4, TERM + 5)]),
        };
        assert_rejected_unchanged(&mut node, message, RejectReason::UnknownSender);
    }
    // Responses from a non-member match no request of ours.
    let message = Message {
        from: 9,
        to: 2,
        term: TERM,
        body: MessageBody::TimeoutNow,
    };
    assert_rejected_unchanged(&mut node, message, RejectReason::UnexpectedInRole);
}

/// A leader this node does not know yet (added by a configuration change
/// it has not applied) must still be heard, or a node that joins with the
/// bootstrap configuration could never catch up.
#[test]
fn append_from_a_leader_not_yet_known_as_member_is_accepted() {
    let mut node = follower();
    let message = Message {
        from: 9,
        to: 2,
        term: TERM + 5,
        body: append_body(3, 2, vec![entry(4, TERM + 5)]),
    };
    assert_eq!(node.step(message), Ok(()));
    assert_eq!(node.leader(), 9);
    assert_eq!(node.term(), TERM + 5);
    assert_eq!(node.last_index(), 4);
}

#[test]
fn message_to_another_node_is_rejected_without_state_change() {
    let mut node = follower();
    let message = Message {
        from: 1,
        to: 3,
        term: TERM + 1,
        body: MessageBody::Heartbeat { commit: 3, read_seq: 9 },
    };
    assert_rejected_unchanged(&mut node, message, RejectReason::WrongRecipient);
}

#[test]
fn append_with_non_contiguous_entries_is_rejected_without_state_change() {
    let mut node = follower();
    let cases = [
        vec![entry(4, TERM), entry(6, TERM)], // gap
        vec![entry(5, TERM)],                 // does not follow prev_index
        vec![entry(4, TERM), entry(4, TERM)], // repeated index
    ];
    for entries in cases {
        // A higher term must not be adopted from a malformed message either.
        let message = Message {
            from: 1,
            to: 2,
            term: TERM + 1,
            body: append_body(3, 2, entries),
        };
        assert_rejected_unchanged(&mut node, message, RejectReason::Malformed("entries not contiguous"));
    }
}

#[test]
fn append_with_entry_term_above_message_term_is_rejected_without_state_change() {
    let mut node = follower();
    let message = Message {
        from: 1,
        to: 2,
        term: TERM,
        body: append_body(3, 2, vec![entry(4, TERM + 1)]),
    };
    assert_rejected_unchanged(&mut node, message, RejectReason::Malformed("entry term out of order"));
    let message = Message {
        from: 1,
        to: 2,
        term: TERM,
        body: append_body(3, TERM + 1, vec![]),
    };
    assert_rejected_unchanged(
        &mut node,
        message,
        RejectReason::Malformed("previous term above message term"),
    );
    // Terms going backwards inside one message are as malformed.
    let message = Message {
        from: 1,
        to: 2,
        term: TERM + 1,
        body: append_body(3, 2, vec![entry(4, TERM + 1), entry(5, TERM)]),
    };
    assert_rejected_unchanged(&mut node, message, RejectReason::Malformed("entry term out of order"));
}

#[test]
fn append_with_oversized_entry_is_rejected_without_state_change() {
    let mut node = follower();
    let limit = node.config().entry_bytes_max as usize;
    let oversized = Entry {
        term: TERM,
        index: 4,
        kind: EntryKind::Normal,
        data: Bytes::from(vec![0u8; limit + 1]),
    };
    let message = Message {
        from: 1,
        to: 2,
        term: TERM,
        body: append_body(3, 2, vec![oversized]),
    };
    assert_rejected_unchanged(
        &mut node,
        message,
        RejectReason::Malformed("entry larger than entry_bytes_max"),
    );
    let too_many = (4..4 + node.config().append_entries_max as u64 + 1)
        .map(|index| Entry {
            term: TERM,
            index,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        })
        .collect();
    let message = Message {
        from: 1,
        to: 2,
        term: TERM,
        body: append_body(3, 2, too_many),
    };
    assert_rejected_unchanged(
        &mut node,
        message,
        RejectReason::Malformed("too many entries in append"),
    );
}

#[test]
fn append_response_beyond_leader_log_is_rejected_without_state_change() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    net.deliver_all();
    let last = net.node(1).last_index();
    let term = net.node(1).term();
    for reject in [false, true] {
        let message = Message {
            from: 2,
            to: 1,
            term,
            body: MessageBody::AppendResponse {
                reject,
                index: last + 10,
                hint_index: last + 10,
                hint_term: term,
            },
        };
        let leader = net.node_mut(1);
        assert_rejected_unchanged(
            leader,
            message,
            RejectReason::IndexOutOfRange {
                index: last + 10,
                last_index: last,
            },
        );
        assert_eq!(leader.commit_index(), last);
    }
}

#[test]
fn heartbeat_commit_beyond_log_is_clamped_and_counted() {
    let mut node = follower();
    assert_eq!(node.stats().commit_beyond_log, 0);
    let message = Message {
        from: 1,
        to: 2,
        term: TERM,
        body: MessageBody::Heartbeat {
            commit: 50,
            read_seq: 2,
        },
    };
    assert_eq!(node.step(message), Ok(()));
    assert_eq!(node.commit_index(), 3, "clamped to the last index");
    assert_eq!(node.stats().commit_beyond_log, 1);
    assert_eq!(node.role(), Role::Follower);
    let ready = node.ready();
    assert!(ready
        .messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::HeartbeatResponse { read_seq: 2 })));
    assert_eq!(
        ready.committed_entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![3]
    );
}

#[test]
fn proposal_over_entry_bytes_max_is_refused() {
    let mut net = Network::new(&[1, 2, 3], |c| c.entry_bytes_max = 1000);
    net.elect(1);
    net.deliver_all();
    let last = net.node(1).last_index();
    assert_eq!(
        net.node_mut(1).propose(data(1001)),
        Err(ProposeError::EntryTooLarge {
            bytes: 1001,
            limit: 1000
        })
    );
    // A batch with one oversized entry is refused whole.
    assert_eq!(
        net.node_mut(1).propose_batch(vec![data(10), data(2000), data(10)]),
        Err(ProposeError::EntryTooLarge {
            bytes: 2000,
            limit: 1000
        })
    );
    assert_eq!(net.node(1).last_index(), last, "nothing appended");
    assert!(!net.node(1).has_ready());
    assert_eq!(
        net.node_mut(1).propose(data(1000)),
        Ok(last + 1),
        "the limit itself is allowed"
    );
}

#[test]
fn message_with_maximum_term_is_rejected_without_state_change() {
    let mut node = follower();
    let message = Message {
        from: 1,
        to: 2,
        term: u64::MAX,
        body: MessageBody::Heartbeat { commit: 2, read_seq: 9 },
    };
    assert_rejected_unchanged(&mut node, message, RejectReason::Malformed("term at its maximum"));
}

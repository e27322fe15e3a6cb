//! Snapshots and log compaction (§7): the application snapshots at its
//! applied index and compacts as far as the core allows (keeping a tail and
//! every entry a transfer in progress needs); a follower that needs
//! compacted entries is sent the snapshot in chunks with offsets, under a
//! window of unacknowledged bytes, resuming from the last acknowledged
//! offset after a loss or a reconnect; stale and duplicate chunks change
//! nothing; an install leaves log, commit, applied and configuration
//! consistent, and replication continues after it.

mod harness;

use bytes::Bytes;
use harness::*;
use raftwerk_raft::{
    ConfChangeOp, Config, ConfigError, Configuration, LogStore, MemStorage, Message, MessageBody, NodeId, Raft,
    RejectReason, SnapshotError, SnapshotMeta, Storage,
};

/// Chunk size and window used by the transfer tests.
const CHUNK_BYTES: u64 = 100;
const WINDOW_BYTES: u64 = 300;
/// Snapshot data size: ten chunks.
const SNAPSHOT_BYTES: usize = 1000;

fn small_chunks(config: &mut Config) {
    config.snapshot_chunk_bytes = CHUNK_BYTES;
    config.snapshot_inflight_bytes_max = WINDOW_BYTES;
}

/// Nodes 1–3 with small snapshot chunks; node 1 leads.
fn cluster() -> Network {
    let mut net = Network::new(&[1, 2, 3], small_chunks);
    net.elect(1);
    net.run_ticks(1);
    net
}

/// Proposes `count` entries at `leader` and delivers until they commit.
fn write(net: &mut Network, leader: NodeId, count: usize) {
    for _ in 0..count {
        net.node_mut(leader).propose(data(8)).expect("leader accepts");
    }
    net.process(leader);
    net.deliver_all();
}

/// Node 3 misses `count` writes, then node 1 snapshots and compacts past
/// what node 3 holds. Returns the snapshot's metadata.
fn leave_node_3_behind_a_snapshot(net: &mut Network, count: usize) -> SnapshotMeta {
    leave_node_3_behind_with(net, count, SNAPSHOT_BYTES)
}

/// As `leave_node_3_behind_a_snapshot`, with `size` bytes of snapshot data.
fn leave_node_3_behind_with(net: &mut Network, count: usize, size: usize) -> SnapshotMeta {
    net.isolate(3);
    write(net, 1, count);
    let meta = snapshot_and_compact(net, 1, size);
    assert!(
        net.node(1).storage().first_index() > net.node(3).last_index() + 1,
        "node 3 now needs compacted entries"
    );
    meta
}

fn is_chunk(message: &Message) -> bool {
    matches!(message.body, MessageBody::InstallSnapshot { .. })
}

fn is_snapshot_response(message: &Message) -> bool {
    matches!(message.body, MessageBody::SnapshotResponse { .. })
}

fn chunk_offset(message: &Message) -> u64 {
    match &message.body {
        MessageBody::InstallSnapshot { offset, .. } => *offset,
        other => panic!("not a snapshot chunk: {other:?}"),
    }
}

/// One round: every node ticks once, then the messages queued so far are
/// delivered (their answers wait for the next round), so a transfer takes
/// many rounds and tests can watch it.
fn round(net: &mut Network) {
    net.tick_all();
    for message in std::mem::take(&mut net.queue) {
        net.deliver(message);
    }
}

/// Runs rounds until node 3 installed a snapshot, calling `observe` with
/// the queue before each delivery. Panics after `ROUNDS_MAX`.
fn until_installed(net: &mut Network, mut observe: impl FnMut(&mut Network)) {
    for _ in 0..ROUNDS_MAX {
        net.tick_all();
        observe(net);
        for message in std::mem::take(&mut net.queue) {
            net.deliver(message);
        }
        if !net.installed[&3].is_empty() {
            return;
        }
    }
    panic!("node 3 installed no snapshot in {ROUNDS_MAX} rounds");
}

const ROUNDS_MAX: usize = 500;

/// Rounds until the leader's first chunk to node 3 is queued; returns it.
fn first_chunk_to_3(net: &mut Network) -> Message {
    for _ in 0..ROUNDS_MAX {
        if let Some(chunk) = net.queue.iter().find(|m| is_chunk(m) && m.to == 3) {
            return chunk.clone();
        }
        round(net);
    }
    panic!("the leader never started a transfer");
}

/// The data node `id` installed last.
fn installed_data(net: &Network, id: NodeId) -> (SnapshotMeta, Bytes) {
    net.installed[&id].last().cloned().expect("node installed a snapshot")
}

#[test]
fn snapshot_meta_records_index_term_and_configuration() {
    let mut net = cluster_with_spares();
    add_learners(&mut net, 1, &[4]);
    let applied = net.node(1).applied_index();
    let meta = net.node(1).snapshot_meta(applied).expect("applied index");
    assert_eq!(meta.index, applied);
    assert_eq!(Some(meta.term), net.node(1).log_term(applied));
    assert_eq!(&meta.configuration, net.node(1).configuration(), "the learner is in it");
    assert!(matches!(
        net.node(1).snapshot_meta(applied + 1),
        Err(SnapshotError::NotApplied { .. })
    ));
    snapshot_and_compact(&mut net, 1, 16);
    assert!(matches!(
        net.node(1).snapshot_meta(applied),
        Err(SnapshotError::NotNewer { .. })
    ));
    assert_eq!(net.node(1).storage().snapshot(), Some(meta), "storage remembers it");
}

#[test]
fn compaction_keeps_the_configured_tail() {
    let mut net = cluster();
    write(&mut net, 1, 20);
    let meta = snapshot_and_compact(&mut net, 1, 16);
    assert_eq!(
        net.node(1).storage().first_index(),
        meta.index - COMPACTION_TAIL_ENTRIES + 1,
        "entries just below the snapshot stay for slightly slow followers"
    );
    // A follower within the tail catches up from the log, no snapshot.
    net.isolate(3);
    write(&mut net, 1, 1);
    net.heal();
    settle(&mut net);
    assert!(net.installed[&3].is_empty());
    assert_eq!(net.node(3).commit_index(), net.node(1).commit_index());
}

#[test]
fn follower_behind_compacted_log_is_sent_the_snapshot_and_catches_up() {
    let mut net = cluster();
    let meta = leave_node_3_behind_a_snapshot(&mut net, 30);
    net.heal();
    settle(&mut net);
    let (installed, data) = installed_data(&net, 3);
    assert_eq!(installed, meta);
    assert_eq!(
        data,
        snapshot_data(meta.index, SNAPSHOT_BYTES),
        "every byte arrived in place"
    );
    // Replication continues from the snapshot index.
    let index = net.node_mut(1).propose(data_of(b"after")).unwrap();
    settle(&mut net);
    let applied: Vec<_> = net.committed[&3].iter().map(|entry| entry.index).collect();
    assert!(applied.contains(&index));
    assert!(
        applied.iter().all(|&at| at <= 4 || at > meta.index),
        "nothing the snapshot covers is applied again: {applied:?}"
    );
    assert_eq!(net.node(3).stats().snapshots_installed, 1);
}

fn data_of(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

#[test]
fn installed_snapshot_resets_log_commit_applied_and_configuration() {
    let mut net = cluster_with_spares();
    net.isolate(3);
    add_learners(&mut net, 1, &[4]);
    write(&mut net, 1, 10);
    let meta = snapshot_and_compact(&mut net, 1, SNAPSHOT_BYTES);
    assert!(!net.node(3).configuration().is_learner(4), "node 3 missed the change");
    net.heal();
    settle(&mut net);
    let node = net.node(3);
    assert_eq!(installed_data(&net, 3).0, meta);
    assert!(
        node.configuration().is_learner(4),
        "the snapshot's configuration is in force"
    );
    assert!(node.commit_index() >= meta.index);
    assert!(node.applied_index() >= meta.index);
    assert_eq!(node.storage().first_index(), meta.index + 1, "the old log is gone");
    assert_eq!(node.storage().term(meta.index), Ok(meta.term));
    assert_eq!(node.last_index(), net.node(1).last_index());
}

#[test]
fn snapshot_is_streamed_in_chunks_with_offsets_and_a_last_flag() {
    let mut net = cluster();
    leave_node_3_behind_a_snapshot(&mut net, 30);
    net.heal();
    let mut chunks = Vec::new();
    until_installed(&mut net, |net| {
        for message in net.queue.iter().filter(|m| is_chunk(m)) {
            if let MessageBody::InstallSnapshot { offset, data, last, .. } = &message.body {
                chunks.push((*offset, data.len() as u64, *last));
            }
        }
    });
    assert_eq!(chunks.len(), SNAPSHOT_BYTES / CHUNK_BYTES as usize, "{chunks:?}");
    for (at, (offset, length, last)) in chunks.iter().enumerate() {
        assert_eq!(*offset, at as u64 * CHUNK_BYTES);
        assert!(*length <= CHUNK_BYTES);
        assert_eq!(*last, at + 1 == chunks.len(), "only the final chunk is marked last");
    }
}

#[test]
fn unacknowledged_snapshot_bytes_stay_within_the_window() {
    let mut net = cluster();
    leave_node_3_behind_a_snapshot(&mut net, 30);
    net.heal();
    first_chunk_to_3(&mut net);
    // Node 3's acknowledgements never arrive: the leader may resend what
    // it presumes lost, but never has more than the window outstanding.
    let mut offsets = std::collections::BTreeSet::new();
    for _ in 0..20 {
        offsets.extend(net.queue.iter().filter(|m| is_chunk(m)).map(chunk_offset));
        let progress = net.node(1).snapshot_transfers()[0];
        assert_eq!(progress.follower, 3);
        assert_eq!(progress.bytes_acked, 0);
        assert!(
            progress.bytes_sent <= WINDOW_BYTES,
            "{} bytes outstanding (window {WINDOW_BYTES})",
            progress.bytes_sent
        );
        net.take_where(is_snapshot_response);
        round(&mut net);
    }
    assert_eq!(
        offsets.into_iter().collect::<Vec<_>>(),
        vec![0, CHUNK_BYTES, 2 * CHUNK_BYTES],
        "only the first window was ever sent"
    );
    // Acknowledgements open the window again.
    until_installed(&mut net, |_| {});
}

#[test]
fn transfer_progress_is_visible_with_the_size_known_at_the_end() {
    let mut net = cluster();
    leave_node_3_behind_a_snapshot(&mut net, 30);
    net.heal();
    let mut seen = Vec::new();
    until_installed(&mut net, |net| {
        if let Some(progress) = net.node(1).snapshot_transfers().first().copied() {
            seen.push(progress);
        }
    });
    // The install acknowledgement ends the transfer.
    round(&mut net);
    assert!(seen.len() >= 2, "progress observed while sending: {seen:?}");
    assert!(seen.windows(2).all(|pair| pair[0].bytes_acked <= pair[1].bytes_acked));
    assert!(seen.iter().all(|progress| progress.bytes_acked <= progress.bytes_sent));
    assert_eq!(seen[0].bytes_total, None, "the size is not needed up front");
    assert!(
        seen.iter()
            .any(|progress| progress.bytes_total == Some(SNAPSHOT_BYTES as u64)),
        "known once the last chunk was read: {seen:?}"
    );
    assert!(
        net.node(1).snapshot_transfers().is_empty(),
        "transfer over once installed"
    );
}

#[test]
fn lost_chunk_is_resent_from_the_last_acknowledged_offset() {
    let mut net = cluster();
    let meta = leave_node_3_behind_a_snapshot(&mut net, 30);
    net.heal();
    // Drop the third chunk once.
    let mut dropped = None;
    let mut offsets_after_loss = Vec::new();
    until_installed(&mut net, |net| {
        if dropped.is_none() {
            let lost = net.take_where(|m| is_chunk(m) && chunk_offset(m) == 2 * CHUNK_BYTES);
            if !lost.is_empty() {
                dropped = Some(lost.len());
            }
        } else {
            offsets_after_loss.extend(net.queue.iter().filter(|m| is_chunk(m)).map(chunk_offset));
        }
    });
    assert_eq!(dropped, Some(1));
    assert!(
        offsets_after_loss.contains(&(2 * CHUNK_BYTES)),
        "the lost chunk was resent: {offsets_after_loss:?}"
    );
    assert!(
        !offsets_after_loss.contains(&0),
        "resent from the acknowledged offset, not from the start"
    );
    assert_eq!(installed_data(&net, 3).1, snapshot_data(meta.index, SNAPSHOT_BYTES));
}

#[test]
fn transfer_resumes_after_a_reconnect_from_the_acknowledged_offset() {
    let mut net = cluster();
    let meta = leave_node_3_behind_a_snapshot(&mut net, 30);
    net.heal();
    // Let a few chunks through, then cut the link for a while.
    first_chunk_to_3(&mut net);
    for _ in 0..ROUNDS_MAX {
        if net.node(1).snapshot_transfers()[0].bytes_acked >= 3 * CHUNK_BYTES {
            break;
        }
        round(&mut net);
    }
    let acked = net.node(1).snapshot_transfers()[0].bytes_acked;
    assert!(acked > 0 && acked < SNAPSHOT_BYTES as u64);
    net.isolate(3);
    for _ in 0..3 {
        round(&mut net);
    }
    net.heal();
    let acked = net.node(1).snapshot_transfers()[0].bytes_acked;
    let mut first_after = None;
    until_installed(&mut net, |net| {
        if first_after.is_none() {
            first_after = net.queue.iter().find(|m| is_chunk(m)).map(chunk_offset);
        }
    });
    assert!(
        first_after.is_some_and(|offset| offset >= acked),
        "resumed at {first_after:?}, acknowledged {acked}"
    );
    assert_eq!(installed_data(&net, 3).1, snapshot_data(meta.index, SNAPSHOT_BYTES));
}

#[test]
fn stale_snapshot_is_ignored_and_acknowledged_at_the_commit_index() {
    let mut net = cluster();
    write(&mut net, 1, 10);
    settle(&mut net);
    let commit = net.node(2).commit_index();
    let last = net.node(2).last_index();
    let stale = Message {
        from: 1,
        to: 2,
        term: net.node(1).term(),
        body: MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index: commit - 3,
                term: net.node(2).log_term(commit - 3).unwrap(),
                configuration: Configuration::new(vec![1, 2, 3], Vec::new()),
            },
            offset: 0,
            data: Bytes::from_static(b"old state"),
            last: true,
        },
    };
    net.node_mut(2)
        .step(stale)
        .expect("stale snapshots are answered, not refused");
    let ready = net.node_mut(2).ready();
    assert!(
        ready.snapshot.is_none() && ready.snapshot_chunks.is_empty(),
        "nothing written"
    );
    assert_eq!(net.node(2).last_index(), last);
    assert_eq!(net.node(2).commit_index(), commit);
    assert!(ready.messages.iter().any(|m| matches!(
        m.body,
        MessageBody::AppendResponse { reject: false, index, .. } if index == commit
    )));
    assert!(net.installed[&2].is_empty());
}

#[test]
fn duplicate_chunk_is_acknowledged_without_being_written_again() {
    let mut net = cluster();
    leave_node_3_behind_a_snapshot(&mut net, 30);
    net.heal();
    let first_chunk = first_chunk_to_3(&mut net);
    net.drop_queue();
    for _ in 0..2 {
        net.node_mut(3).step(first_chunk.clone()).expect("chunk accepted");
    }
    let ready = net.node_mut(3).ready();
    assert_eq!(ready.snapshot_chunks.len(), 1, "the duplicate is not written twice");
    persist(net.node_mut(3), &ready);
    let mut replies: Vec<u64> = ready
        .messages
        .iter()
        .chain(net.node_mut(3).ready().messages.iter())
        .filter_map(|m| match m.body {
            MessageBody::SnapshotResponse { offset, .. } => Some(offset),
            _ => None,
        })
        .collect();
    replies.sort_unstable();
    assert_eq!(
        replies,
        vec![CHUNK_BYTES, CHUNK_BYTES],
        "both answered with the bytes held"
    );
}

#[test]
fn chunk_acknowledgement_waits_until_the_chunk_is_durable() {
    let mut net = cluster();
    leave_node_3_behind_a_snapshot(&mut net, 30);
    net.heal();
    let chunk = first_chunk_to_3(&mut net);
    net.drop_queue();
    net.node_mut(3).step(chunk).unwrap();
    let ready = net.node_mut(3).ready();
    assert!(ready.must_persist());
    assert!(
        !ready.messages.iter().any(is_snapshot_response),
        "acknowledged before being written"
    );
    persist(net.node_mut(3), &ready);
    let ready = net.node_mut(3).ready();
    assert!(ready.messages.iter().any(is_snapshot_response));
}

#[test]
fn follower_whose_log_holds_the_snapshot_entry_fast_forwards_instead() {
    let mut net = cluster();
    // Node 2 appends an entry but does not learn it is committed.
    net.node_mut(1).propose(data(8)).unwrap();
    net.process(1);
    net.deliver_where(|m| m.to == 2 && is_append(m));
    net.drop_queue();
    let commit_before = net.node(2).commit_index();
    let last = net.node(2).last_index();
    assert!(last > commit_before);
    let meta = SnapshotMeta {
        index: last,
        term: net.node(2).log_term(last).unwrap(),
        configuration: Configuration::new(vec![1, 2, 3], Vec::new()),
    };
    let message = Message {
        from: 1,
        to: 2,
        term: net.node(1).term(),
        body: MessageBody::InstallSnapshot {
            meta,
            offset: 0,
            data: Bytes::from_static(b"not needed"),
            last: false,
        },
    };
    net.node_mut(2).step(message).unwrap();
    assert_eq!(net.node(2).commit_index(), last, "committed from its own log");
    assert_eq!(net.node(2).last_index(), last, "log kept");
    let ready = net.node_mut(2).ready();
    assert!(ready.snapshot_chunks.is_empty() && ready.snapshot.is_none());
    assert!(net.node(2).incoming_snapshot().is_none());
}

#[test]
fn chunks_from_another_sender_do_not_continue_a_transfer() {
    let mut net = cluster();
    leave_node_3_behind_a_snapshot(&mut net, 30);
    net.heal();
    let first = first_chunk_to_3(&mut net);
    net.drop_queue();
    net.node_mut(3).step(first.clone()).unwrap();
    // The same offset sequence from another node (say, a later leader of
    // the same term number cannot exist, so use a later term).
    let mut second = first.clone();
    second.from = 2;
    second.term += 1;
    if let MessageBody::InstallSnapshot { offset, .. } = &mut second.body {
        *offset = CHUNK_BYTES;
    }
    net.node_mut(3).step(second).unwrap();
    let ready = net.node_mut(3).ready();
    persist(net.node_mut(3), &ready);
    let replies: Vec<_> = ready
        .messages
        .iter()
        .chain(net.node_mut(3).ready().messages.iter())
        .filter(|m| m.to == 2)
        .map(|m| m.body.clone())
        .collect();
    assert!(
        replies
            .iter()
            .any(|body| matches!(body, MessageBody::SnapshotResponse { offset: 0, .. })),
        "another sender starts over: {replies:?}"
    );
}

/// The livelock RELIABILITY warns of: a transfer slower than the rate at
/// which the leader snapshots must still finish. The leader writes and
/// snapshots every round while the chunks trickle through one at a time.
#[test]
fn follower_falling_behind_during_a_transfer_still_converges() {
    let mut net = Network::new(&[1, 2, 3], |config| {
        config.snapshot_chunk_bytes = 16;
        config.snapshot_inflight_bytes_max = 16;
    });
    net.elect(1);
    net.run_ticks(1);
    leave_node_3_behind_a_snapshot(&mut net, 30);
    net.heal();
    let mut snapshots = 0;
    let mut caught_up = false;
    for _ in 0..4 * ROUNDS_MAX {
        for _ in 0..3 {
            net.node_mut(1).propose(data(8)).unwrap();
        }
        round(&mut net);
        if net.node(1).applied_index() > net.node(1).snapshot_index() {
            snapshot_and_compact(&mut net, 1, SNAPSHOT_BYTES);
            snapshots += 1;
        }
        if !net.installed[&3].is_empty() && net.node(3).applied_index() + 10 >= net.node(1).applied_index() {
            caught_up = true;
            break;
        }
    }
    assert!(
        caught_up,
        "node 3 never caught up while the leader kept snapshotting ({} installs)",
        net.installed[&3].len()
    );
    assert!(
        snapshots > 20,
        "the leader snapshotted during the transfer ({snapshots})"
    );
    assert_eq!(net.installed[&3].len(), 1, "caught up from the log after one install");
}

#[test]
fn restart_after_install_starts_from_the_snapshot() {
    let mut net = cluster();
    let meta = leave_node_3_behind_a_snapshot(&mut net, 30);
    net.heal();
    settle(&mut net);
    let storage = net.node(3).storage().clone();
    let mut config = config(3, &[1, 2, 3]);
    config.applied = meta.index;
    let restarted = Raft::<MemStorage>::new(config, storage.clone()).expect("restart from the snapshot");
    assert_eq!(restarted.configuration(), &meta.configuration);
    assert!(restarted.commit_index() >= meta.index);
    // A state machine that lost its state must restore the snapshot first.
    let mut config = self::config(3, &[1, 2, 3]);
    config.applied = 0;
    assert!(matches!(
        Raft::<MemStorage>::new(config, storage).err(),
        Some(ConfigError::AppliedBelowSnapshot { applied: 0, .. })
    ));
}

#[test]
fn new_learner_catches_up_by_snapshot_and_is_promoted() {
    let mut net = cluster_with_spares();
    write(&mut net, 1, 20);
    settle(&mut net);
    let meta = snapshot_and_compact(&mut net, 1, 256);
    commit_change(&mut net, 1, &[ConfChangeOp::AddLearner(4)]);
    settle(&mut net);
    assert!(
        installed_data(&net, 4).0.index >= meta.index,
        "the learner started from a snapshot"
    );
    assert_eq!(net.node(4).commit_index(), net.node(1).commit_index());
    commit_change(&mut net, 1, &[ConfChangeOp::AddVoter(4)]);
    assert!(net.node(1).configuration().is_voter(4));
}

#[test]
fn malformed_snapshot_chunks_are_refused() {
    let mut net = cluster();
    let term = net.node(1).term();
    let good = SnapshotMeta {
        index: 50,
        term,
        configuration: Configuration::new(vec![1, 2, 3], Vec::new()),
    };
    let chunk = |meta: SnapshotMeta, offset: u64| Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::InstallSnapshot {
            meta,
            offset,
            data: Bytes::from_static(b"x"),
            last: false,
        },
    };
    let cases = [
        (
            SnapshotMeta {
                index: 0,
                ..good.clone()
            },
            0,
            "index 0",
        ),
        (
            SnapshotMeta {
                term: 0,
                ..good.clone()
            },
            0,
            "term 0",
        ),
        (
            SnapshotMeta {
                term: term + 1,
                ..good.clone()
            },
            0,
            "term above the message",
        ),
        (
            SnapshotMeta {
                configuration: Configuration::new(Vec::new(), Vec::new()),
                ..good.clone()
            },
            0,
            "no voters",
        ),
        (good.clone(), u64::MAX, "offset overflow"),
    ];
    for (meta, offset, what) in cases {
        let before = net.node(2).status();
        let result = net.node_mut(2).step(chunk(meta, offset));
        assert!(matches!(result, Err(RejectReason::Malformed(_))), "{what}: {result:?}");
        assert_eq!(net.node(2).status(), before, "{what} changed state");
        assert!(net.node(2).incoming_snapshot().is_none());
    }
}

/// Found while building the simulator's snapshot schedule: a chunk of the
/// next snapshot arriving after the last chunk of one, before the install
/// was handed out, was written (in the ready's order) before the install
/// and replaced the data the install needed. It is dropped now; the
/// leader resends it.
#[test]
fn a_chunk_arriving_before_a_pending_install_is_handed_out_is_dropped() {
    let mut net = cluster();
    let term = net.node(1).term();
    let configuration = Configuration::new(vec![1, 2, 3], Vec::new());
    let chunk = |index, last| Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index,
                term,
                configuration: configuration.clone(),
            },
            offset: 0,
            data: snapshot_data(index, 10),
            last,
        },
    };
    net.node_mut(2).step(chunk(40, true)).unwrap();
    net.node_mut(2).step(chunk(50, false)).unwrap();
    let ready = net.node_mut(2).ready();
    assert_eq!(ready.snapshot.as_ref().map(|meta| meta.index), Some(40));
    assert!(
        ready.snapshot_chunks.iter().all(|chunk| chunk.index == 40),
        "a chunk of snapshot 50 would be written before the install of 40"
    );
    persist(net.node_mut(2), &ready);
    assert_eq!(net.node(2).storage().snapshot().map(|meta| meta.index), Some(40));
    assert_eq!(net.node(2).storage().snapshot_data(), Some(&snapshot_data(40, 10)));
}

// ----- Findings of the review of snapshots and compaction ------------------
//
// Each failed before its fix: an empty snapshot's transfer stalled, an index
// overflow panicked, the node's own snapshot destroyed an incoming one, a
// lost follower pinned the log forever, `compact_index` named an index
// storage refused during an install, inconsistent storage was accepted.

/// Liveness: a lost chunk is resent after the retry timeout.
///
/// Scenario: the state machine's snapshot is empty (0 bytes, which the
/// `Storage::snapshot_chunk` contract explicitly allows). The leader sends
/// one chunk `{offset 0, data [], last}` and the network loses it. The
/// retry timer (`Outgoing::on_tick`, snapshot.rs:151) only fires while
/// `in_flight() > 0`, and in-flight is counted in bytes: `sent - acked` =
/// 0 - 0. The heartbeat answer is ignored for a follower in snapshot state
/// (raft.rs:1318) and `is_paused()` is always true there (progress.rs:133),
/// so nothing is ever sent to node 3 again while node 1 leads. The same
/// stall follows a lost install acknowledgement (`AppendResponse`) of an
/// empty snapshot, and any zero-length final chunk a storage may return.
#[test]
fn lost_chunk_of_an_empty_snapshot_is_resent_after_the_retry_timeout() {
    let mut net = cluster();
    let meta = leave_node_3_behind_with(&mut net, 30, 0);
    net.heal();
    let lost = first_chunk_to_3(&mut net);
    net.take_where(|m| is_chunk(m) && m.to == 3);
    assert!(matches!(&lost.body, MessageBody::InstallSnapshot { data, last: true, .. } if data.is_empty()));
    for _ in 0..ROUNDS_MAX {
        round(&mut net);
        if !net.installed[&3].is_empty() {
            break;
        }
    }
    assert_eq!(
        net.node(1).role(),
        raftwerk_raft::Role::Leader,
        "same leader throughout"
    );
    assert!(
        net.installed[&3]
            .iter()
            .any(|(installed, _)| installed.index >= meta.index),
        "node 3 never installed the snapshot: transfer stalled at {:?}",
        net.node(1).snapshot_transfers()
    );
}

/// Robustness: every peer input yields a `RejectReason` or is handled,
/// never a panic.
///
/// Scenario: a (forged or corrupt) `InstallSnapshot` for `meta.index ==
/// u64::MAX` from the current leader. `validate_shape` (raft.rs:1185)
/// checks index/term 0, the chunk size and `offset + len` overflow, but not
/// the index: the chunk is accepted, `last` triggers `install_snapshot`,
/// and `RaftLog::restore` computes `meta.index + 1` (log.rs:291 `self.offset =
/// meta.index + 1`), which overflows. `Append` already refuses "entry
/// index overflows"; a snapshot index needs the same guard.
#[test]
fn install_snapshot_at_the_maximum_index_is_refused_not_a_panic() {
    let mut net = cluster();
    let term = net.node(1).term();
    let forged = Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index: u64::MAX,
                term,
                configuration: Configuration::new(vec![1, 2, 3], Vec::new()),
            },
            offset: 0,
            data: Bytes::from_static(b"x"),
            last: true,
        },
    };
    let before = net.node(2).status();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| net.node_mut(2).step(forged)));
    let result = result.expect("stepping a peer message must not panic");
    assert!(
        matches!(result, Err(RejectReason::Malformed(_))),
        "a snapshot at u64::MAX is malformed: {result:?}"
    );
    assert_eq!(net.node(2).status(), before);
}

/// Contract (Ready / LogStore): "Other offsets always continue the pending
/// snapshot with the same index and term exactly at its end"
/// (`IncomingChunk`, snapshot.rs:48).
///
/// Scenario: node 3 is receiving a snapshot from the leader; it has
/// persisted and acknowledged the first chunk. Meanwhile its application
/// takes a snapshot of its own state the way `LogStore` documents it
/// ("`save_snapshot` ... is how the application records a snapshot of its
/// own state machine": `write_snapshot_chunk` at offset 0, then
/// `save_snapshot`). The store has a single pending slot
/// (storage.rs `MemStorage::pending`, `write_snapshot_chunk` offset 0
/// "discarding any other"), so the incoming transfer's durable bytes are
/// gone while the core (`Incoming::received`) still counts them, and the
/// next chunk the core hands out, at offset 100, is refused with
/// `ChunkOutOfOrder` (MemStorage::persist panics "chunks arrive in order";
/// a WAL would stop the node). Nothing in the core stops `snapshot_meta`
/// while a transfer is incoming.
#[test]
fn own_snapshot_during_an_incoming_transfer_does_not_break_it() {
    let mut net = cluster();
    let meta = leave_node_3_behind_with(&mut net, 30, SNAPSHOT_BYTES);
    net.heal();
    first_chunk_to_3(&mut net);
    let mut chunks = net.take_where(|m| is_chunk(m) && m.to == 3);
    assert!(chunks.len() >= 2, "a window of chunks was sent");
    let later = chunks.split_off(1);
    // The first chunk arrives and is made durable.
    net.deliver(chunks.remove(0));
    assert_eq!(
        net.node(3).incoming_snapshot().map(|(_, _, received)| received),
        Some(CHUNK_BYTES)
    );
    // Node 3's application snapshots its own applied state, through LogStore.
    let node = net.node_mut(3);
    let own = node
        .snapshot_meta(node.applied_index())
        .expect("node 3 may snapshot its applied state");
    LogStore::write_snapshot_chunk(node.storage_mut(), own.index, own.term, 0, b"node 3 state").unwrap();
    LogStore::save_snapshot(node.storage_mut(), &own).expect("own snapshot saved");
    // The rest of the transfer arrives.
    let node = net.node_mut(3);
    for chunk in later {
        let _ = node.step(chunk);
    }
    let ready = node.ready();
    for chunk in &ready.snapshot_chunks {
        let written =
            LogStore::write_snapshot_chunk(node.storage_mut(), chunk.index, chunk.term, chunk.offset, &chunk.data);
        assert!(
            written.is_ok(),
            "chunk at offset {} of snapshot {} handed out by the core cannot be written: {written:?}",
            chunk.offset,
            meta.index
        );
    }
}

/// Liveness / bounded resources ("Everything is bounded", DESIGN.md;
/// RELIABILITY #11).
///
/// Scenario: the leader starts a snapshot transfer to node 3, then node 3
/// becomes unreachable for good (crashed disk, decommissioned host). The
/// transfer never ends: `Outgoing` has no give-up, the retry timer
/// (raft.rs `tick_leader`) resends a window every half election timeout
/// forever, and `compact_index` (raft.rs:486-497, the cap at :494) is capped at the transfer's
/// snapshot index for as long as it lasts ("however long the transfer
/// takes"). The remaining majority keeps writing and snapshotting, yet the
/// leader may never compact past the dead follower's snapshot again: its
/// log grows without bound until the leader changes. Check-quorum already
/// knows node 3 is inactive (`recent_active`); a transfer to a follower
/// silent for an election timeout should be abandoned (back to probe), so
/// it restarts from the newest snapshot when the follower returns.
#[test]
fn follower_lost_mid_transfer_does_not_pin_the_leaders_log_forever() {
    let mut net = cluster();
    let meta = leave_node_3_behind_with(&mut net, 30, SNAPSHOT_BYTES);
    net.heal();
    first_chunk_to_3(&mut net);
    assert_eq!(net.node(1).snapshot_transfers().len(), 1, "transfer to node 3 started");
    net.isolate(3);
    // Twenty election timeouts of writes and snapshots without node 3.
    for _ in 0..20 * ELECTION_TICKS {
        for _ in 0..5 {
            net.node_mut(1).propose(data(8)).expect("1 and 2 are a majority");
        }
        round(&mut net);
        if net.node(1).applied_index() > net.node(1).snapshot_index() {
            snapshot_and_compact(&mut net, 1, SNAPSHOT_BYTES);
        }
    }
    assert_eq!(net.node(1).role(), raftwerk_raft::Role::Leader);
    let leader = net.node(1);
    assert!(
        leader.snapshot_index() > meta.index + 500,
        "the leader kept snapshotting"
    );
    assert!(
        leader.storage().first_index() > meta.index + 1,
        "log still pinned at the dead follower's snapshot {}: {} entries kept (snapshot at {}), transfers {:?}",
        meta.index,
        leader.storage().len(),
        leader.snapshot_index(),
        leader.snapshot_transfers()
    );
}

/// API: `compact_index` "returns `first_index - 1` when nothing more may
/// go", and the application compacts its store up to it.
///
/// Scenario: a follower has received the last chunk of a snapshot at 40;
/// the install is in the core (`RaftLog::restore`) but not yet persisted
/// (the application's disk write is in flight). `compact_index`
/// (raft.rs:486) starts from `self.log.first_index() - 1`, which during
/// the pending install is the *pending* snapshot's index (log.rs
/// `first_index` answers from `snapshot`), and returns it when storage
/// holds no snapshot yet. Compared with the store's own `first_index` (1)
/// it looks like work to do, but the store cannot compact to 40: it holds
/// neither the entries nor a snapshot there (`Unavailable` /
/// `BeyondSnapshot`). The harness helper and the simulator both compact
/// with `expect`/`?` on exactly this comparison.
#[test]
fn compact_index_during_a_pending_install_is_one_storage_accepts() {
    let mut net = cluster();
    let term = net.node(1).term();
    let install = Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index: 40,
                term,
                configuration: Configuration::new(vec![1, 2, 3], Vec::new()),
            },
            offset: 0,
            data: snapshot_data(40, 10),
            last: true,
        },
    };
    net.node_mut(2).step(install).expect("chunk accepted");
    let node = net.node_mut(2);
    let index = node.compact_index();
    let first = node.storage().first_index();
    if index >= first {
        let compacted = LogStore::compact_to(node.storage_mut(), index);
        assert!(
            compacted.is_ok(),
            "compact_index() = {index} (store first index {first}) but the store refuses it: {compacted:?}"
        );
    }
}

/// API misuse gets a clear error: `Raft::new` on inconsistent storage.
///
/// Scenario: the store holds entries 1..=4 with terms [1, 1, 2, 2] and a
/// stored snapshot claiming index 3 has term 1 (written by hand, or a
/// store that mixed up two snapshots). `Raft::new` (raft.rs:217) checks
/// only that the snapshot covers the compacted prefix and that `applied`
/// is not below it; it never compares `snapshot.term` with the log's term
/// at `snapshot.index`. The node starts, and as leader would send
/// followers a snapshot `(3, 1)` whose install contradicts its own log at
/// 3, breaking Log Matching between them (the follower then rejects every
/// append at `prev (3, 2)` while answering probes below its commit as
/// accepted: a replication livelock).
#[test]
fn new_refuses_a_snapshot_that_disagrees_with_the_stored_log() {
    let mut storage = storage_with(
        &[1, 1, 2, 2],
        raftwerk_raft::HardState {
            term: 2,
            vote: 1,
            commit: 4,
        },
    );
    storage
        .create_snapshot(
            SnapshotMeta {
                index: 3,
                term: 1,
                configuration: Configuration::new(vec![1, 2, 3], Vec::new()),
            },
            Bytes::from_static(b"state"),
        )
        .unwrap();
    assert_eq!(storage.term(3), Ok(2), "the log says term 2 at index 3");
    let mut config = config(1, &[1, 2, 3]);
    config.applied = 3;
    let started = raftwerk_raft::Raft::new(config, storage);
    assert!(
        started.is_err(),
        "a stored snapshot (3, term 1) contradicting the log's (3, term 2) was accepted"
    );
}

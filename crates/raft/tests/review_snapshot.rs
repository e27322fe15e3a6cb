//! Findings of the review of snapshots and log compaction (§7): each test
//! failed before its fix (an empty snapshot's transfer stalled, an index
//! overflow panicked, the node's own snapshot destroyed an incoming one, a
//! lost follower pinned the log forever, `compact_index` named an index
//! storage refused during an install, inconsistent storage was accepted)
//! and guards it now.

mod harness;

use bytes::Bytes;
use harness::*;
use raftwerk_raft::{
    Config, Configuration, LogStore, Message, MessageBody, NodeId, RejectReason, SnapshotMeta, Storage,
};

const CHUNK_BYTES: u64 = 100;
const WINDOW_BYTES: u64 = 300;
const SNAPSHOT_BYTES: usize = 1000;
const ROUNDS_MAX: usize = 500;

fn small_chunks(config: &mut Config) {
    config.snapshot_chunk_bytes = CHUNK_BYTES;
    config.snapshot_inflight_bytes_max = WINDOW_BYTES;
}

fn cluster() -> Network {
    let mut net = Network::new(&[1, 2, 3], small_chunks);
    net.elect(1);
    net.run_ticks(1);
    net
}

fn write(net: &mut Network, leader: NodeId, count: usize) {
    for _ in 0..count {
        net.node_mut(leader).propose(data(8)).expect("leader accepts");
    }
    net.process(leader);
    net.deliver_all();
}

/// Node 3 misses `count` writes, then node 1 snapshots (`size` bytes of
/// data) and compacts past what node 3 holds.
fn leave_node_3_behind(net: &mut Network, count: usize, size: usize) -> SnapshotMeta {
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

/// Every node ticks once, then the messages queued so far are delivered.
fn round(net: &mut Network) {
    net.tick_all();
    for message in std::mem::take(&mut net.queue) {
        net.deliver(message);
    }
}

fn first_chunk_to_3(net: &mut Network) -> Message {
    for _ in 0..ROUNDS_MAX {
        if let Some(chunk) = net.queue.iter().find(|m| is_chunk(m) && m.to == 3) {
            return chunk.clone();
        }
        round(net);
    }
    panic!("the leader never started a transfer");
}

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
    let meta = leave_node_3_behind(&mut net, 30, 0);
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
    let meta = leave_node_3_behind(&mut net, 30, SNAPSHOT_BYTES);
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
    let meta = leave_node_3_behind(&mut net, 30, SNAPSHOT_BYTES);
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

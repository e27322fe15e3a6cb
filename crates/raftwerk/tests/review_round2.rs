//! Review round 2 of the server (stepped snapshots, key-space durability,
//! membership, HashKV), against real `raftwerk` processes. Each test is a
//! finding that failed before its fix; its doc comment says what went
//! wrong. Every wait is bounded; every process is killed when its test
//! ends.

mod common;

use std::time::Duration;

use common::*;

/// BUG (membership, etcd semantics): a removed *learner* never learns that
/// it was removed and keeps running. The leader's configuration drops the
/// learner the moment the removal is appended, so the removal entry is
/// never replicated to it; a learner never campaigns, so it sends nothing,
/// and the receiver-side refusal (`Peer::send` answering MEMBER_REMOVED,
/// checked per received batch) is never triggered. etcd's removed members
/// find out from their peers' stream handlers (HTTP 410) and stop. The
/// zombie keeps serving stale serializable reads and answering `Join` from
/// a stale member list.
///
/// Observed: n2 still runs 15 s after `member remove`. Expected: it stops
/// (exit 0) within a few seconds, as a removed voter does.
#[test]
fn a_removed_learner_stops() {
    let mut cluster = Cluster::start(1, "r2-rm-learner", &[]);
    let endpoint = cluster.endpoints();
    ok(&endpoint, &["put", "a", "1"]);
    let new = cluster.add_node("n2");
    let peer_url = cluster.peer_url(new);
    let (id, initial_cluster) = member_add(&endpoint, "n2", &peer_url, true);
    cluster.nodes[new].joins_with = Some(initial_cluster);
    cluster.launch(new);
    assert!(sees(&mut cluster, new, "a", "1", WAIT_MAX), "the learner caught up");
    let removed = etcdctl(&endpoint, &["member", "remove", &id]);
    assert!(removed.ok, "member remove: {}", removed.stderr);
    let exited = exit_within(&mut cluster, new, Duration::from_secs(15));
    assert_eq!(exited, Some(Some(0)), "the removed learner is still running");
}

//! Findings of the review of runtime membership changes, against real
//! `raftwerk` processes; each test failed before its fix, and its doc
//! comment says what went wrong ("BUG", "Observed") and what is expected
//! now. Every wait is bounded.

mod common;

use std::time::{Duration, Instant};

use common::*;

const FLAGS: &[&str] = &["--snapshot-count", "40", "--experimental-snapshot-catchup-entries", "5"];

/// BUG: a joining node only knows the cluster's *first* members.
///
/// `Join` answers with the answering node's `membership.bootstrap` (the
/// members of the very first `--initial-cluster`), and the joiner seeds its
/// member list and peer directory with exactly those (`bootstrap_members`,
/// `sync_peers`). It does not learn the current members until it has
/// applied entries, but it cannot apply anything before it can answer the
/// leader: `Transport::send` silently drops messages to a peer that is not
/// in the directory. So once the leader is a member that was added at run
/// time (here: every original member was replaced, the usual rolling
/// replacement), no new member can ever catch up. etcd gives a joiner the
/// *current* member list (GetClusterFromRemotePeers).
///
/// Observed: n3 never sees the key (its replies to the leader n2 are
/// dropped). Expected: n3 catches up within seconds.
#[test]
fn a_member_joins_after_every_original_member_was_replaced() {
    let mut cluster = Cluster::start(1, "rv-replaced", FLAGS);
    ok(&cluster.endpoints(), &["put", "before", "1"]);
    // Add n2 as a voter, start it, wait until it is promoted.
    let n2 = cluster.add_node("n2");
    let n2_url = cluster.peer_url(n2);
    let (_, initial) = member_add(&cluster.endpoints(), "n2", &n2_url, false);
    cluster.nodes[n2].joins_with = Some(initial);
    cluster.launch(n2);
    wait_for_members(&cluster.endpoints(), "n2 promoted", |lines| {
        line_of(lines, &n2_url).is_some_and(|line| line[1] == "started" && line[5] == "false")
    });
    // Remove the original member n1 (the leader): n2 is now the only one.
    let n1_id = member_id_of(&cluster.endpoint(n2), "n1");
    ok(&cluster.endpoint(n2), &["member", "remove", &n1_id]);
    assert!(exit_within(&mut cluster, 0, WAIT_MAX).is_some(), "n1 did not stop");
    ok(&cluster.endpoint(n2), &["put", "after", "2"]);

    // Add n3 through n2 and start it as `member add` says.
    let n3 = cluster.add_node("n3");
    let n3_url = cluster.peer_url(n3);
    let (_, initial) = member_add(&cluster.endpoint(n2), "n3", &n3_url, true);
    cluster.nodes[n3].joins_with = Some(initial);
    cluster.launch(n3);
    assert!(
        sees(&mut cluster, n3, "after", "2", Duration::from_secs(20)),
        "n3 never caught up with leader n2 (a member added at run time): n3's log:\n{}",
        std::fs::read_to_string(&cluster.nodes[n3].log).unwrap_or_default()
    );
}

/// BUG (same root cause as above, second trigger): `Join` hands the joiner
/// the first members' *original* peer URLs. After `member update` moved
/// the leader to a new peer URL (and it was restarted there, as etcd
/// requires), a new member sends its replies to the old URL and never
/// catches up.
///
/// Observed: n2 never sees the key. Expected: it catches up.
#[test]
fn a_member_joins_after_the_leader_moved_its_peer_url() {
    let mut cluster = Cluster::start(1, "rv-moved", FLAGS);
    let n1_id = member_id_of(&cluster.endpoints(), "n1");
    // Move n1 to a new peer port and restart it listening there.
    let new_port = common::free_port();
    let new_url = format!("http://127.0.0.1:{new_port}");
    ok(
        &cluster.endpoints(),
        &["member", "update", &n1_id, "--peer-urls", &new_url],
    );
    cluster.kill(0);
    cluster.nodes[0].peer_port = new_port;
    // Restarting with the original --initial-cluster would be refused
    // (see `initial_cluster_flags_are_ignored_on_restart`); `existing`
    // skips that check, and etcd ignores these flags on restart anyway.
    cluster.nodes[0].joins_with = Some(format!("n1={new_url}"));
    cluster.launch(0);
    cluster.wait_for_leader();
    ok(&cluster.endpoints(), &["put", "k", "v"]);

    let n2 = cluster.add_node("n2");
    let n2_url = cluster.peer_url(n2);
    let (_, initial) = member_add(&cluster.endpoints(), "n2", &n2_url, true);
    assert!(initial.contains(&new_url), "{initial}");
    cluster.nodes[n2].joins_with = Some(initial);
    cluster.launch(n2);
    assert!(
        sees(&mut cluster, n2, "k", "v", Duration::from_secs(20)),
        "n2 never caught up with n1 at its updated peer URL; n2's log:\n{}",
        std::fs::read_to_string(&cluster.nodes[n2].log).unwrap_or_default()
    );
}

/// BUG (RELIABILITY #6, safety): a member whose disk lost its state
/// rejoins under its old identity. `Join` looks the asker up by peer URL
/// among *all* current members, including bootstrap voters that have run
/// for a long time, and hands out their id; the node then starts as that
/// voter with an empty log, term 0 and no vote. A voter that forgot what it
/// acknowledged and voted for breaks Raft's safety (see the data-loss test
/// below). Only a member that was added and has never started should be
/// able to join.
///
/// Observed: the wiped n3 starts and serves as member n3. Expected: it is
/// refused and exits non-zero.
#[test]
fn a_wiped_voter_cannot_rejoin_under_its_old_identity() {
    let mut cluster = Cluster::start(3, "rv-wiped", FLAGS);
    ok(&cluster.endpoints(), &["put", "a", "1"]);
    let n3_id = member_id_of(&cluster.endpoints(), "n3");
    // n3 has started: it published its client URLs.
    let n3_client = format!("http://{}", cluster.endpoint(2));
    let started = Instant::now();
    while !ok(&cluster.endpoints(), &["member", "list"]).contains(&n3_client) {
        assert!(started.elapsed() < WAIT_MAX, "n3 never published");
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.kill(2);
    std::fs::remove_dir_all(&cluster.nodes[2].data_dir).expect("wipe n3");
    let initial = cluster.initial_cluster.clone();
    cluster.nodes[2].joins_with = Some(initial);
    cluster.launch(2);
    let exit = exit_within(&mut cluster, 2, Duration::from_secs(20));
    if exit.is_none() {
        let status = etcdctl(&cluster.endpoint(2), &["endpoint", "status", "-w", "json"]);
        panic!(
            "the wiped n3 was accepted back as member {n3_id} with an empty log; endpoint status: {}",
            status.stdout
        );
    }
    assert_ne!(exit, Some(Some(0)), "refused, not a clean exit");
}

/// BUG (data loss, follows from the one above): two voters of a 3-node
/// cluster lose their disks and are restarted with
/// `--initial-cluster-state existing`; `Join` (answered by the surviving
/// n1) gives them back their identities. With n1 paused (a GC pause, a
/// slow disk), the two empty voters are a majority: they elect a leader
/// among themselves and serve an empty key space. An acknowledged write is
/// gone.
///
/// Observed: a linearizable `get a` on the new leader returns nothing.
/// Expected: the wiped nodes are refused (they never become voters), so
/// the cluster has no majority and no leader until n1 resumes.
#[test]
fn two_wiped_voters_rejoin_and_lose_acknowledged_writes() {
    let mut cluster = Cluster::start(3, "rv-wiped-loss", FLAGS);
    ok(&cluster.endpoints(), &["put", "a", "1"]);
    // All three have started: they published their client URLs.
    let started = Instant::now();
    while ok(&cluster.endpoints(), &["member", "list"])
        .matches("http://127.0.0.1")
        .count()
        < 6
    {
        assert!(started.elapsed() < WAIT_MAX, "members never published");
        std::thread::sleep(Duration::from_millis(100));
    }
    for at in [1, 2] {
        cluster.kill(at);
        std::fs::remove_dir_all(&cluster.nodes[at].data_dir).expect("wipe");
        cluster.nodes[at].joins_with = Some(cluster.initial_cluster.clone());
    }
    cluster.launch(1);
    cluster.launch(2);
    // Once both have taken an identity (their `member` file exists), pause
    // n1 before it talks to them.
    let started = Instant::now();
    loop {
        let joined = [1, 2]
            .iter()
            .all(|at| cluster.nodes[*at].data_dir.join("member").exists());
        if joined {
            break;
        }
        for at in [1, 2] {
            if let Some(Some(code)) = exit_within(&mut cluster, at, Duration::ZERO) {
                // Refused: the behaviour this test expects; nothing can be lost.
                assert_ne!(code, 0);
                return;
            }
        }
        assert!(
            started.elapsed() < WAIT_MAX,
            "the wiped nodes neither joined nor exited"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.signal(0, "-STOP");
    // Give them time to elect a leader among themselves, then read.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        for at in [1, 2] {
            let out = etcdctl(&cluster.endpoint(at), &["get", "a", "--print-value-only"]);
            if out.ok {
                let _ = std::process::Command::new("kill")
                    .args(["-CONT", &cluster.nodes[0].child.as_ref().expect("n1").id().to_string()])
                    .status();
                assert_eq!(
                    out.stdout.trim(),
                    "1",
                    "the two wiped voters formed a majority and lost the acknowledged write a=1"
                );
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // No leader without n1: what a refusal gives.
}

/// BUG (etcd semantics of MemberList): the name (and client URLs) of a
/// member added at run time is never stored in the member list; it is
/// only remembered in memory from the peer's `Identify` answer
/// (`PeerReports`). After the answering node restarts while that member is
/// down, `member list` shows it as `unstarted` with no name, although it
/// has started and is part of the cluster. etcd publishes the name through
/// Raft (it is persisted), so a started member never goes back to
/// "unstarted", and every member answers the same.
///
/// Observed: `<id>, unstarted, , <url>, , true`. Expected: `started, n2`.
#[test]
fn a_started_member_stays_started_in_member_list_after_a_restart() {
    let mut cluster = Cluster::start(1, "rv-unstarted", FLAGS);
    let n2 = cluster.add_node("n2");
    let n2_url = cluster.peer_url(n2);
    let (_, initial) = member_add(&cluster.endpoints(), "n2", &n2_url, true);
    cluster.nodes[n2].joins_with = Some(initial);
    cluster.launch(n2);
    wait_for_members(&cluster.endpoint(0), "n2 started", |lines| {
        line_of(lines, &n2_url).is_some_and(|line| line[1] == "started" && line[2] == "n2")
    });
    cluster.kill(n2);
    cluster.kill(0);
    cluster.launch(0);
    cluster.wait_for_leader();
    let line = line_of(&member_lines(&cluster.endpoint(0)), &n2_url).expect("n2 listed");
    assert_eq!(
        (line[1].as_str(), line[2].as_str()),
        ("started", "n2"),
        "member list after n1 restarted: {line:?}"
    );
}

/// BUG (etcd compatibility of MemberAdd/MemberUpdate): peer URLs are
/// checked by *resolving* the host (`config::socket_addr` ->
/// `to_socket_addrs`), so a DNS name that does not resolve yet is refused
/// as "given member URLs are invalid". etcd only parses the URL (scheme,
/// host:port, no path); adding a member by a DNS name before it exists is
/// the normal flow on Kubernetes (a StatefulSet pod's name resolves only
/// once the pod runs). The lookup also runs synchronously on the node task
/// (`propose_membership` is called from `Node::handle`, outside
/// `block_in_place`), so a slow resolver stalls ticks and heartbeats.
///
/// Observed: `member add` fails with InvalidArgument. Expected: it is added.
#[test]
fn a_member_can_be_added_by_a_dns_name_that_does_not_resolve_yet() {
    let cluster = Cluster::start(1, "rv-dns", FLAGS);
    let url = "http://n2.raftwerk-review.invalid:2380";
    let out = etcdctl(
        &cluster.endpoints(),
        &["member", "add", "n2", "--peer-urls", url, "--learner"],
    );
    assert!(out.ok, "member add by DNS name refused: {}", out.stderr);
    assert!(line_of(&member_lines(&cluster.endpoints()), url).is_some());
}

/// BUG (etcd compatibility, restarts): the `--initial-cluster*` flags are
/// only for bootstrapping; etcd ignores them when the data directory
/// already holds a member. Here a restart with
/// `--initial-cluster-state new` recomputes the cluster id from the
/// *current* `--initial-cluster` and refuses to start when it differs from
/// the stored one. An operator who, following etcd's runtime
/// reconfiguration guide, updates every member's `--initial-cluster` after
/// adding a member can no longer restart the original members.
///
/// Observed: n1 exits 1 ("belongs to another cluster or member").
/// Expected: n1 restarts with its stored identity and serves.
#[test]
fn initial_cluster_flags_are_ignored_on_restart() {
    let mut cluster = Cluster::start(1, "rv-flags", FLAGS);
    ok(&cluster.endpoints(), &["put", "k", "v"]);
    let n2 = cluster.add_node("n2");
    let n2_url = cluster.peer_url(n2);
    member_add(&cluster.endpoints(), "n2", &n2_url, true);
    cluster.kill(0);
    // The configuration now describes both members, as after `member add`.
    cluster.initial_cluster = format!("{},n2={n2_url}", cluster.initial_cluster);
    cluster.launch(0);
    if let Some(code) = exit_within(&mut cluster, 0, Duration::from_secs(5)) {
        let log = std::fs::read_to_string(&cluster.nodes[0].log).unwrap_or_default();
        panic!("n1 refused to restart ({code:?}) after its --initial-cluster was updated:\n{log}");
    }
    assert_eq!(
        ok(&cluster.endpoint(0), &["get", "k", "--print-value-only"]).trim(),
        "v"
    );
}

/// BUG (stale `pending_members`): a member added by a change that was
/// appended but never committed (its leader lost its quorum, the entry was
/// later overwritten by the next leader's entries) stays in
/// `Node::pending_members` for ever: that map is only pruned in
/// `sync_peers`, which runs only when a member change is appended or
/// applied or a snapshot installed, not when the log is truncated. On
/// that node the phantom member stays in the peer directory (the
/// transport keeps dialling it) and, once the node leads,
/// `propose_membership`'s `used_elsewhere` refuses to add a member at
/// those peer URLs ("Peer URLs already exists") although no member has
/// them: `member list` does not show one.
///
/// Observed: `member add` at n1 fails with "Peer URLs already exists".
/// Expected: it succeeds.
#[test]
fn an_uncommitted_member_add_that_was_overwritten_does_not_block_its_urls() {
    let mut cluster = Cluster::start(3, "rv-phantom", FLAGS);
    let leader = cluster.wait_for_leader();
    let others: Vec<usize> = (0..3).filter(|at| *at != leader).collect();
    for at in &others {
        cluster.kill(*at);
    }
    // The leader appends the change but cannot commit it.
    let url = format!("http://127.0.0.1:{}", common::free_port());
    let lost = etcdctl(
        &cluster.endpoint(leader),
        &["member", "add", "ghost", "--peer-urls", &url],
    );
    assert!(!lost.ok, "committed without a quorum?");
    assert!(
        !lost.stderr.contains("not leader") && !lost.stderr.contains("no leader"),
        "the leader had already stepped down, nothing was appended; rerun: {}",
        lost.stderr
    );
    // The others elect a leader and write over that index; the old leader
    // comes back as a follower and its entry is overwritten.
    cluster.kill(leader);
    for at in &others {
        cluster.launch(*at);
    }
    cluster.wait_for_leader();
    for at in 0..5 {
        ok(&cluster.endpoints(), &["put", &format!("k{at}"), "v"]);
    }
    cluster.launch(leader);
    assert!(
        sees(&mut cluster, leader, "k4", "v", WAIT_MAX),
        "old leader never caught up"
    );
    assert!(
        line_of(&member_lines(&cluster.endpoints()), &url).is_none(),
        "the add was committed after all"
    );
    // Make the old leader lead again, and add a member at those URLs there.
    let id = member_id_of(&cluster.endpoints(), &cluster.nodes[leader].name.clone());
    let started = Instant::now();
    while cluster.wait_for_leader() != leader {
        let _ = etcdctl(&cluster.endpoints(), &["move-leader", &id]);
        assert!(started.elapsed() < WAIT_MAX, "could not move the leadership back");
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = etcdctl(
        &cluster.endpoint(leader),
        &["member", "add", "n9", "--peer-urls", &url, "--learner"],
    );
    assert!(
        out.ok,
        "member add of URLs no member has was refused: {}\nmember list: {:?}",
        out.stderr,
        member_lines(&cluster.endpoints())
    );
}

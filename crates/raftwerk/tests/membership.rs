//! Membership changes on real processes with `etcdctl`, as an operator
//! does them: `member add`, start the new node with what `member add`
//! printed, watch it catch up (by snapshot) and become a voter; learners
//! and `member promote`; `member update`; `member remove` stops the
//! removed node, whose data directory then cannot rejoin; and the refusals
//! etcd gives for bad requests.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Small snapshots so a new member is caught up by one.
const FLAGS: &[&str] = &["--snapshot-count", "40", "--experimental-snapshot-catchup-entries", "5"];

#[test]
fn an_added_member_joins_catches_up_becomes_a_voter_and_a_removed_one_stops() {
    let mut cluster = Cluster::start(3, "member-add", FLAGS);
    let endpoints = cluster.endpoints();
    for at in 0..120 {
        ok(&endpoints, &["put", &format!("key{at:03}"), &format!("value{at}")]);
    }
    let new = cluster.add_node("n4");
    let peer_url = cluster.peer_url(new);
    let (id, initial_cluster) = member_add(&endpoints, "n4", &peer_url, false);
    assert!(initial_cluster.contains(&format!("n4={peer_url}")), "{initial_cluster}");
    assert!(initial_cluster.contains("n1=http://127.0.0.1:"), "{initial_cluster}");
    // Until it starts, etcd lists it as unstarted and without a name.
    let lines = member_lines(&endpoints);
    let line = line_of(&lines, &peer_url).expect("added member listed");
    assert_eq!(
        (line[0].as_str(), line[1].as_str(), line[2].as_str()),
        (id.as_str(), "unstarted", "")
    );

    // The same URL cannot be added twice.
    let again = etcdctl(&endpoints, &["member", "add", "n5", "--peer-urls", &peer_url]);
    assert!(
        !again.ok && again.stderr.contains("Peer URLs already exists"),
        "{}",
        again.stderr
    );

    cluster.nodes[new].joins_with = Some(initial_cluster);
    cluster.launch(new);
    // It catches up (its serializable reads see every key) and the leader
    // promotes it to voter.
    let own = cluster.endpoint(new);
    let started = Instant::now();
    loop {
        cluster.check_alive(new);
        let out = etcdctl(&own, &["get", "key119", "--consistency=s", "--print-value-only"]);
        if out.ok && out.stdout.trim() == "value119" {
            break;
        }
        assert!(started.elapsed() < WAIT_MAX, "n4 never caught up: {}", out.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for_members(&endpoints, "n4 started and promoted", |lines| {
        line_of(lines, &peer_url).is_some_and(|line| line[1] == "started" && line[2] == "n4" && line[5] == "false")
    });
    let log = std::fs::read_to_string(&cluster.nodes[new].log).unwrap_or_default();
    let installed = etcdctl(&own, &["get", "key000", "--consistency=s", "--print-value-only"]);
    assert_eq!(installed.stdout.trim(), "value0", "{log}");

    // Four voters now: writes through the new member reach everyone.
    ok(&own, &["put", "through-n4", "yes"]);
    assert_eq!(
        ok(&cluster.endpoint(0), &["get", "through-n4", "--print-value-only"]).trim(),
        "yes"
    );
    // The member installed by snapshot holds the same history: every
    // member's history hash at the current revision agrees.
    let revision = ok(&cluster.endpoint(0), &["get", "through-n4", "-w", "fields"])
        .lines()
        .find_map(|line| {
            line.strip_prefix("\"Revision\" : ")
                .map(|value| value.trim().to_string())
        })
        .expect("revision");
    let hashes = ok(&cluster.endpoints(), &["endpoint", "hashkv", "--rev", &revision]);
    let distinct: std::collections::BTreeSet<&str> =
        hashes.lines().filter_map(|line| line.split(", ").nth(1)).collect();
    assert_eq!((hashes.lines().count(), distinct.len()), (4, 1), "{hashes}");

    // Removing a member stops it, and its data directory cannot rejoin.
    // The leader itself is removed, asked through another member: it
    // answers, steps down and stops, and the others elect a new leader.
    let leader = cluster.wait_for_leader();
    let leader_name = cluster.nodes[leader].name.clone();
    let leader_id = member_lines(&endpoints)
        .into_iter()
        .find(|line| line[2] == leader_name)
        .expect("leader listed")[0]
        .clone();
    let asked = (leader + 1) % cluster.nodes.len();
    let removed = etcdctl(&cluster.endpoint(asked), &["member", "remove", &leader_id]);
    assert!(removed.ok, "removing the leader: {}", removed.stderr);
    assert_eq!(
        wait_exit(&mut cluster, leader),
        Some(0),
        "a removed member stops cleanly"
    );
    let endpoints = cluster.endpoints();
    wait_for_members(&endpoints, "the old leader gone", |lines| {
        lines.len() == 3 && lines.iter().all(|line| line[2] != leader_name)
    });
    ok(&endpoints, &["put", "after-remove", "1"]);
    cluster.launch(leader);
    assert_eq!(wait_exit(&mut cluster, leader), Some(1));
    let log = std::fs::read_to_string(&cluster.nodes[leader].log).unwrap_or_default();
    assert!(log.contains("was removed from cluster"), "{log}");

    // etcd's refusals, which change nothing.
    let unknown = etcdctl(&endpoints, &["member", "remove", "abcdef"]);
    assert!(
        !unknown.ok && unknown.stderr.contains("member not found"),
        "{}",
        unknown.stderr
    );
    let voter = etcdctl(&endpoints, &["member", "promote", &id]);
    assert!(
        !voter.ok && voter.stderr.contains("can only promote a learner member"),
        "{}",
        voter.stderr
    );
    let bad_url = etcdctl(&endpoints, &["member", "add", "n6", "--peer-urls", "ftp://x"]);
    assert!(!bad_url.ok, "{}", bad_url.stdout);
    assert_eq!(member_lines(&endpoints).len(), 3);
}

#[test]
fn a_learner_is_promoted_on_request_and_member_urls_can_be_updated() {
    let mut cluster = Cluster::start(1, "member-learner", FLAGS);
    let endpoints = cluster.endpoints();
    ok(&endpoints, &["put", "a", "1"]);
    let new = cluster.add_node("n2");
    let peer_url = cluster.peer_url(new);
    let (id, initial_cluster) = member_add(&endpoints, "n2", &peer_url, true);
    cluster.nodes[new].joins_with = Some(initial_cluster);
    cluster.launch(new);
    wait_for_members(&endpoints, "learner started", |lines| {
        line_of(lines, &peer_url).is_some_and(|line| line[1] == "started" && line[5] == "true")
    });
    // A learner stays a learner until asked; a learner's vote does not
    // count, so the single voter still commits alone.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        line_of(&member_lines(&endpoints), &peer_url).expect("listed")[5],
        "true"
    );
    ok(&endpoints, &["put", "b", "2"]);
    // Promotion succeeds once it has caught up (retried until then).
    ok(&endpoints, &["member", "promote", &id]);
    assert_eq!(
        line_of(&member_lines(&endpoints), &peer_url).expect("listed")[5],
        "false"
    );
    // Two voters now: both must be up to commit.
    ok(&cluster.endpoints(), &["put", "c", "3"]);
    assert_eq!(
        ok(
            &cluster.endpoint(new),
            &["get", "c", "--consistency=s", "--print-value-only"]
        )
        .trim(),
        "3"
    );

    // Updating the peer URLs is recorded (the node must then be restarted
    // listening there, as with etcd).
    let moved = format!("http://127.0.0.1:{}", common::free_port());
    ok(&endpoints, &["member", "update", &id, "--peer-urls", &moved]);
    assert!(line_of(&member_lines(&endpoints), &moved).is_some());
    let clash = etcdctl(
        &endpoints,
        &["member", "update", &id, "--peer-urls", &cluster.peer_url(0)],
    );
    assert!(
        !clash.ok && clash.stderr.contains("Peer URLs already exists"),
        "{}",
        clash.stderr
    );
}

#[test]
fn a_node_that_was_not_added_cannot_join() {
    let mut cluster = Cluster::start(1, "member-not-added", FLAGS);
    let new = cluster.add_node("n2");
    let initial_cluster = format!("{},n2={}", cluster.initial_cluster, cluster.peer_url(new));
    cluster.nodes[new].joins_with = Some(initial_cluster);
    cluster.launch(new);
    assert_eq!(wait_exit(&mut cluster, new), Some(1));
    let log = std::fs::read_to_string(&cluster.nodes[new].log).unwrap_or_default();
    assert!(log.contains("etcdctl member add"), "{log}");
    assert_eq!(member_lines(&cluster.endpoints()).len(), 1);
}

#[test]
fn a_started_member_whose_data_was_lost_is_refused_at_its_next_first_start() {
    let mut cluster = Cluster::start(3, "member-wiped", FLAGS);
    let endpoints = cluster.endpoints();
    ok(&endpoints, &["put", "a", "1"]);
    // All three have started: each published its client URL.
    wait_for_members(&endpoints, "all published", |lines| {
        lines.len() == 3 && lines.iter().all(|line| line[4].starts_with("http://"))
    });
    cluster.kill(2);
    std::fs::remove_dir_all(&cluster.nodes[2].data_dir).expect("wipe n3");
    // Started again as a member of a new cluster, with an empty data
    // directory: its peers know it started, so it refuses.
    cluster.launch(2);
    assert_eq!(wait_exit(&mut cluster, 2), Some(1));
    let log = std::fs::read_to_string(&cluster.nodes[2].log).unwrap_or_default();
    assert!(log.contains("has already been bootstrapped"), "{log}");
    assert_eq!(
        ok(&cluster.endpoints(), &["get", "a", "--print-value-only"]).trim(),
        "1"
    );
}

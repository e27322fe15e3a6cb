//! Linearizability of the server under faults, black box: clients put and
//! get (linearizable) a few keys through every member while members are
//! killed (-9) and restarted and paused (SIGSTOP) on a seeded schedule; the
//! history is checked with etcd's revisions (`common::history`). The
//! checker itself is first shown to catch what it must.

mod common;

use std::time::{Duration, Instant};

use common::history::{check, got, op, put, Kind, Op, Outcome};
use common::{Cluster, WAIT_MAX};

const FLAGS: &[&str] = &[
    "--snapshot-count",
    "500",
    "--experimental-snapshot-catchup-entries",
    "50",
];
const KEYS: usize = 3;
const CLIENTS: usize = 6;
const RUN: Duration = Duration::from_secs(12);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn the_checker_finds_stale_reads_lost_writes_phantoms_and_time_travel() {
    let base = Instant::now();
    let good = vec![
        op("k", put("a"), 0, 10, Outcome::Put { revision: 2 }, base),
        op("k", put("b"), 5, 30, Outcome::Unknown, base),
        op("k", Kind::Get, 20, 25, got(3, Some(("b", 3))), base),
        op("k", Kind::Get, 40, 50, got(3, Some(("b", 3))), base),
    ];
    assert_eq!(check(&good), Vec::<String>::new(), "a valid history");
    let cases: Vec<(&str, Vec<Op>)> = vec![
        (
            "stale read after a completed put",
            vec![
                op("k", put("a"), 0, 10, Outcome::Put { revision: 2 }, base),
                op("k", put("b"), 20, 30, Outcome::Put { revision: 3 }, base),
                op("k", Kind::Get, 40, 50, got(3, Some(("a", 2))), base),
            ],
        ),
        (
            "lost write: a later read misses it",
            vec![
                op("k", put("a"), 0, 10, Outcome::Put { revision: 2 }, base),
                op("k", Kind::Get, 40, 50, got(5, None), base),
            ],
        ),
        (
            "phantom value",
            vec![op("k", Kind::Get, 0, 10, got(2, Some(("zzz", 2))), base)],
        ),
        (
            "revision going back in real time",
            vec![
                op("k", put("a"), 0, 10, Outcome::Put { revision: 7 }, base),
                op("j", Kind::Get, 20, 30, got(6, None), base),
            ],
        ),
        (
            "value at the wrong revision",
            vec![
                op("k", put("a"), 0, 10, Outcome::Put { revision: 2 }, base),
                op("k", Kind::Get, 20, 30, got(4, Some(("a", 3))), base),
            ],
        ),
    ];
    for (what, history) in cases {
        assert!(!check(&history).is_empty(), "the checker missed: {what}");
    }
}

/// A well-mixed, non-zero xorshift state from any seed (splitmix64).
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

/// One client bound to one member, until `deadline`.
async fn client_loop(id: usize, endpoint: String, deadline: Instant, seed: u64) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut rng = mix(seed);
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(REQUEST_TIMEOUT);
    let mut client = None;
    let mut sequence = 0;
    while Instant::now() < deadline {
        if client.is_none() {
            match etcd_client::Client::connect([endpoint.as_str()], Some(options.clone())).await {
                Ok(connected) => client = Some(connected),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let client = client.as_mut().expect("connected");
        let key = format!("key{}", next() % KEYS as u64);
        let invoked = Instant::now();
        let (kind, outcome) = if next() % 2 == 0 {
            sequence += 1;
            let value = format!("c{id}-{sequence}");
            let result = tokio::time::timeout(REQUEST_TIMEOUT, client.put(key.as_str(), value.as_str(), None)).await;
            let outcome = match result {
                Ok(Ok(response)) => Outcome::Put {
                    revision: response.header().expect("header").revision(),
                },
                _ => Outcome::Unknown,
            };
            (Kind::Put { value }, outcome)
        } else {
            let result = tokio::time::timeout(REQUEST_TIMEOUT, client.get(key.as_str(), None)).await;
            let outcome = match result {
                Ok(Ok(response)) => Outcome::Get {
                    revision: response.header().expect("header").revision(),
                    found: response
                        .kvs()
                        .first()
                        .map(|kv| (kv.value_str().expect("utf-8 value").to_string(), kv.mod_revision())),
                },
                _ => Outcome::Unknown,
            };
            (Kind::Get, outcome)
        };
        let failed = matches!(outcome, Outcome::Unknown);
        ops.push(Op {
            client: id,
            key,
            kind,
            invoked,
            completed: Instant::now(),
            outcome,
        });
        if failed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    ops
}

/// Runs `CLIENTS` clients until `deadline` on their own runtime thread,
/// client `i` bound to `endpoints[i % len]`; returns the history.
fn run_clients(endpoints: Vec<String>, deadline: Instant, seed: u64) -> std::thread::JoinHandle<Vec<Op>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|id| {
                    tokio::spawn(client_loop(
                        id,
                        endpoints[id % endpoints.len()].clone(),
                        deadline,
                        seed.wrapping_mul(31).wrapping_add(id as u64),
                    ))
                })
                .collect();
            let mut ops = Vec::new();
            for task in tasks {
                ops.extend(task.await.expect("client task"));
            }
            ops
        })
    })
}

/// Checks the history, after enough operations succeeded to mean much.
fn check_history(ops: &[Op], what: &str) {
    let succeeded = |put: bool| {
        ops.iter()
            .filter(|op| match (&op.kind, &op.outcome) {
                (Kind::Put { .. }, Outcome::Put { .. }) => put,
                (Kind::Get, Outcome::Get { .. }) => !put,
                _ => false,
            })
            .count()
    };
    let (puts, gets) = (succeeded(true), succeeded(false));
    eprintln!(
        "{what}: {} operations ({puts} puts and {gets} gets acknowledged)",
        ops.len()
    );
    assert!(
        puts > 50 && gets > 50,
        "too few operations succeeded to check much: {puts} puts, {gets} gets"
    );
    let violations = check(ops);
    assert!(
        violations.is_empty(),
        "{what}: {} violations, first: {:#?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
}

#[test]
fn puts_and_gets_stay_linearizable_while_members_crash_restart_and_pause() {
    let seed: u64 = std::env::var("RAFTWERK_FAULT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(2026);
    let mut cluster = Cluster::start(3, "linearizable", FLAGS);
    let endpoints: Vec<String> = (0..3).map(|at| cluster.endpoint(at)).collect();
    let deadline = Instant::now() + RUN;
    let clients = run_clients(endpoints, deadline, seed);
    // The fault schedule: every 0.6–1.4 s, heal the last fault, then kill
    // or pause a member (or do nothing).
    let mut rng = mix(seed);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut killed, mut paused): (Option<usize>, Option<usize>) = (None, None);
    let mut faults = Vec::new();
    while Instant::now() + Duration::from_millis(1500) < deadline {
        std::thread::sleep(Duration::from_millis(600 + next() % 800));
        if let Some(at) = paused.take() {
            cluster.signal(at, "-CONT");
        }
        if let Some(at) = killed.take() {
            cluster.launch(at);
        }
        let at = (next() % 3) as usize;
        match next() % 3 {
            0 => {
                cluster.kill(at);
                killed = Some(at);
                faults.push(format!("kill n{}", at + 1));
            }
            1 => {
                cluster.signal(at, "-STOP");
                paused = Some(at);
                faults.push(format!("pause n{}", at + 1));
            }
            _ => faults.push("none".to_string()),
        }
    }
    if let Some(at) = paused.take() {
        cluster.signal(at, "-CONT");
    }
    if let Some(at) = killed.take() {
        cluster.launch(at);
    }
    let ops = clients.join().expect("clients");
    check_history(&ops, &format!("seed {seed}, faults {faults:?}"));
    // After the faults the cluster serves again.
    let started = Instant::now();
    loop {
        cluster.check_alive(0);
        if common::etcdctl(&cluster.endpoints(), &["put", "after", "faults"]).ok {
            break;
        }
        assert!(started.elapsed() < WAIT_MAX, "the cluster did not recover");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn puts_and_gets_stay_linearizable_while_members_are_added_promoted_and_removed() {
    let mut cluster = Cluster::start(3, "linearizable-members", FLAGS);
    let n4 = cluster.add_node("n4");
    let n5 = cluster.add_node("n5");
    let endpoints: Vec<String> = (0..5).map(|at| cluster.endpoint(at)).collect();
    let deadline = Instant::now() + RUN;
    let clients = run_clients(endpoints, deadline, 7);
    let mut steps = Vec::new();
    let all = |cluster: &Cluster| cluster.endpoints();
    std::thread::sleep(Duration::from_millis(800));
    // A voter joins (as a learner, promoted once caught up).
    let (_, initial) = common::member_add(&all(&cluster), "n4", &cluster.peer_url(n4), false);
    cluster.nodes[n4].joins_with = Some(initial);
    cluster.launch(n4);
    steps.push("add n4");
    std::thread::sleep(Duration::from_millis(2500));
    // A bootstrap member leaves (it may be the leader).
    let n1 = common::member_id_of(&all(&cluster), "n1");
    common::ok(&cluster.endpoint(1), &["member", "remove", &n1]);
    steps.push("remove n1");
    std::thread::sleep(Duration::from_millis(1500));
    // A learner joins and is promoted by request.
    let (n5_id, initial) = common::member_add(&cluster.endpoint(1), "n5", &cluster.peer_url(n5), true);
    cluster.nodes[n5].joins_with = Some(initial);
    cluster.launch(n5);
    steps.push("add learner n5");
    common::ok(&cluster.endpoint(1), &["member", "promote", &n5_id]);
    steps.push("promote n5");
    std::thread::sleep(Duration::from_millis(1000));
    // A crash and restart among the new set.
    cluster.kill(2);
    steps.push("kill n3");
    std::thread::sleep(Duration::from_millis(1500));
    cluster.launch(2);
    steps.push("restart n3");
    let ops = clients.join().expect("clients");
    check_history(&ops, &format!("membership steps {steps:?}"));
    let members = common::ok(&cluster.endpoint(1), &["member", "list"]);
    assert_eq!(members.lines().count(), 4, "{members}");
    assert!(!members.contains(", n1, "), "{members}");
}

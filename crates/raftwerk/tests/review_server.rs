//! Findings of the review of the server, against real `raftwerk`
//! processes; each failed before its fix: a client answered with another
//! request's result after a restart, a snapshot at an empty entry that
//! left the node unable to start, a forwarded write hanging on a paused
//! leader, an empty-key delete wiping everything, absurd timer flags
//! panicking. The cluster helper takes per-test flags and keeps a log file
//! per node. Every wait is bounded; every process is killed when its test
//! ends.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

use etcd_client::{Client, DeleteOptions, GetOptions};

/// A get retried while the cluster settles (bounded).
async fn get_retrying(client: &mut Client, key: &str, options: Option<GetOptions>) -> etcd_client::GetResponse {
    let started = Instant::now();
    loop {
        match client.get(key, options.clone()).await {
            Ok(response) => return response,
            Err(error) => assert!(started.elapsed() < WAIT_MAX, "get {key}: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Finding: a snapshot taken when the last applied entry is a leader's
/// empty entry records the key space's applied index (the last *command*),
/// which is below the snapshot's index; on the next start the node
/// restores that snapshot, still has applied < snapshot index, and the core
/// refuses to start (`AppliedBelowSnapshot`). Here: a single node with
/// --snapshot-count=5, three puts, then restarts without writes (each start
/// appends an empty entry; one lands on the snapshot boundary).
#[test]
fn a_node_restarts_after_a_snapshot_taken_at_a_leaders_empty_entry() {
    let mut cluster = Cluster::start(1, "noop-snapshot", &["--snapshot-count", "5"]);
    let endpoint = cluster.endpoint(0);
    for at in 0..3 {
        ok(&endpoint, &["put", &format!("key{at}"), "v"]);
    }
    // Restarts without writes: each start appends (only) an empty entry;
    // one of them reaches the snapshot threshold.
    for _ in 0..6 {
        // Let this start's empty entry be applied (and snapshotted).
        std::thread::sleep(Duration::from_millis(300));
        cluster.kill(0);
        cluster.launch(0);
        // Give a failing start the time to fail, then require a leader.
        std::thread::sleep(Duration::from_millis(1500));
        cluster.check_alive(0);
        cluster.wait_for_leader();
    }
    let keys = ok(&endpoint, &["get", "key", "--prefix", "--keys-only"]);
    assert_eq!(keys.lines().filter(|line| !line.is_empty()).count(), 3, "{keys}");
}

/// Finding: a follower forwards writes to the leader's Peer service with no
/// deadline (services.rs `write_rpc!`, `client.$forward($request)`), and
/// the peer channel has no request timeout or keep-alive. When the leader
/// stops answering (a paused process, a black-holed network) the forwarded
/// call, and the client's request with it, hangs forever instead of failing
/// with "request timed out" after --election-timeout x 5 (5 s here).
#[test]
fn a_write_forwarded_to_an_unresponsive_leader_times_out() {
    let mut cluster = Cluster::start(3, "forward-timeout", &[]);
    let leader = cluster.wait_for_leader();
    let follower = (leader + 1) % 3;
    let endpoint = cluster.endpoint(follower);
    let rt = runtime();
    rt.block_on(async {
        let mut client = Client::connect([endpoint.as_str()], None).await.expect("connect");
        // Warm the follower's cached channel to the leader.
        client.put("warm", "1", None).await.expect("forwarded put");
        cluster.signal(leader, "-STOP");
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(25), client.put("during", "1", None)).await;
        cluster.signal(leader, "-CONT");
        match outcome {
            Ok(result) => {
                // Any answer (an error such as "request timed out", or
                // success through a new leader) is fine: the wait ended.
                eprintln!("answered after {:?}: {:?}", started.elapsed(), result.map(|_| ()));
            }
            Err(_) => panic!(
                "a write sent to a follower while the leader was paused got no answer in 25 s \
                 (the server's own request timeout is 5 s)"
            ),
        }
    });
}

/// Finding: etcd refuses Range and DeleteRange with an empty key
/// ("etcdserver: key is not provided", InvalidArgument). raftwerk accepts
/// them; with range_end "\0" the empty key means "from the very first key",
/// so one malformed delete wipes the whole key space.
#[test]
fn a_delete_with_an_empty_key_is_refused_and_deletes_nothing() {
    let cluster = Cluster::start(1, "empty-key", &[]);
    let endpoint = cluster.endpoint(0);
    let rt = runtime();
    rt.block_on(async {
        let mut client = Client::connect([endpoint.as_str()], None).await.expect("connect");
        client.put("a", "1", None).await.expect("put");
        client.put("b", "2", None).await.expect("put");
        let result = client
            .delete("", Some(DeleteOptions::new().with_range(vec![0u8])))
            .await;
        let remaining = client
            .get("", Some(GetOptions::new().with_all_keys()))
            .await
            .expect("get")
            .count();
        assert_eq!(remaining, 2, "the keys survive a malformed delete (got {result:?})");
        let error = result.expect_err("etcd refuses an empty key");
        assert!(error.to_string().contains("key is not provided"), "{error}");
    });
}

/// Finding (safety): a proposal is matched to its applied entry by
/// (member id, request id), and `next_request_id` restarts at 1 when the
/// process restarts (node.rs `next_request_id: 1`). Entries proposed before
/// a crash that are still in the log commit after the node is re-elected;
/// if new proposals with the same ids are waiting then, each new client is
/// answered with an OLD entry's response (here: the revision of another
/// key's put), and its own result is silently dropped.
///
/// Setup: the leader, cut off from its followers, appends 40 puts of 1 MB
/// that never commit; it is killed and restarted with one follower. Only
/// it can win (its log is longer), and its first empty entry commits only
/// after the 40 MB reached the follower; puts made meanwhile get request
/// ids 1.. again.
#[test]
fn proposals_after_a_restart_are_not_answered_with_old_entries_results() {
    const OLD: usize = 40;
    const NEW: usize = 20;
    let mut cluster = Cluster::start(3, "request-ids", &["--snapshot-count", "100000"]);
    let leader = cluster.wait_for_leader();
    let followers: Vec<usize> = (0..3).filter(|at| *at != leader).collect();
    let leader_endpoint = cluster.endpoint(leader);
    let rt = runtime();
    let value = vec![b'x'; 1 << 20];
    rt.block_on(async {
        let client = Client::connect([leader_endpoint.as_str()], None)
            .await
            .expect("connect");
        for &at in &followers {
            cluster.signal(at, "-STOP");
        }
        let mut puts = Vec::new();
        for at in 0..OLD {
            let mut client = client.clone();
            let value = value.clone();
            puts.push(tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(8), client.put(format!("old{at:02}"), value, None)).await;
            }));
        }
        for put in puts {
            let _ = put.await;
        }
    });
    // Give the WAL time to hold every appended entry, then crash.
    std::thread::sleep(Duration::from_millis(500));
    cluster.kill(leader);
    for &at in &followers {
        cluster.kill(at); // SIGKILL ends a stopped process too
    }
    cluster.launch(followers[0]);
    cluster.launch(leader);
    rt.block_on(async {
        let started = Instant::now();
        let mut client = loop {
            if let Ok(client) = Client::connect([leader_endpoint.as_str()], None).await {
                break client;
            }
            assert!(started.elapsed() < WAIT_MAX, "restarted leader unreachable");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Wait until the restarted node leads again (Status takes no
        // request id), then propose at once.
        loop {
            if let Ok(status) = client.status().await {
                let me = status.header().map_or(0, |header| header.member_id());
                if me != 0 && status.leader() == me {
                    break;
                }
            }
            assert!(started.elapsed() < WAIT_MAX, "the restarted node never led");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut puts = Vec::new();
        for at in 0..NEW {
            let mut client = client.clone();
            puts.push(tokio::spawn(async move {
                let key = format!("new{at:02}");
                let result = tokio::time::timeout(WAIT_MAX, client.put(key.clone(), "mine", None)).await;
                (key, result)
            }));
        }
        let mut answered = Vec::new();
        for put in puts {
            let (key, result) = put.await.expect("task");
            if let Ok(Ok(response)) = result {
                answered.push((key, response.header().expect("header").revision()));
            }
        }
        // Sanity: the old entries were in the log and committed after the restart.
        let old = get_retrying(
            &mut client,
            "old",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .count();
        assert!(old > 0, "setup: the old proposals never reached the leader's log");
        let mut wrong = Vec::new();
        for (key, revision) in &answered {
            let got = get_retrying(&mut client, key, None).await;
            let actual = got.kvs().first().map_or(0, |kv| kv.mod_revision());
            if actual != *revision {
                wrong.push(format!("{key}: answered revision {revision}, written at {actual}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {} acknowledged puts were answered with another entry's result ({old} old entries committed):\n{}",
            wrong.len(),
            answered.len(),
            wrong.join("\n")
        );
        assert!(!answered.is_empty(), "no new put was acknowledged");
    });
}

/// Finding (robustness): timer flags are multiplied without overflow
/// checks (config.rs `5 * self.heartbeat_interval_ms` in `validate`, lib.rs
/// `config.election_timeout_ms * 5` for the request timeout). A debug
/// build panics (exit 101); a release build wraps silently (a huge
/// --election-timeout then gives a tiny request timeout). Flags that
/// cannot work must get a clear message and exit code 2.
#[test]
fn absurd_timer_flags_get_a_usage_error_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("raftwerk-review-flags-{}", std::process::id()));
    let _dir = TempDir(dir.clone());
    let run = |args: &[&str]| {
        Command::new("timeout")
            .arg("10")
            .arg(env!("CARGO_BIN_EXE_raftwerk"))
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", free_port()),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", free_port()),
            ])
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run raftwerk")
    };
    for args in [
        ["--heartbeat-interval", "4000000000000000000", "--election-timeout", "5"],
        [
            "--heartbeat-interval",
            "1",
            "--election-timeout",
            "18446744073709551615",
        ],
    ] {
        let output = run(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

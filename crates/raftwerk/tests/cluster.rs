//! Real `raftwerk` processes on free loopback ports, driven by `etcdctl`
//! (Debian package `etcd-client`, installed by `.ci/run`): the outputs etcd
//! would give, leader failure without losing acknowledged writes, restarts,
//! and etcd's errors for bad input. Every wait is bounded; every process is
//! killed when its test ends.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Flags of every node here: snapshots every 50 entries keeping 10, so a
/// node that misses a few dozen writes catches up by snapshot.
const FLAGS: &[&str] = &[
    "--snapshot-count",
    "50",
    "--experimental-snapshot-catchup-entries",
    "10",
];

#[test]
fn etcdctl_sees_etcd_semantics_on_a_three_node_cluster() {
    let cluster = Cluster::start(3, "semantics", FLAGS);
    let all = cluster.endpoints();
    assert_eq!(ok(&all, &["put", "foo", "bar"]).trim(), "OK");
    for at in 0..3 {
        // Any member serves reads and forwards writes.
        assert_eq!(ok(&cluster.endpoint(at), &["get", "foo"]), "foo\nbar\n");
        ok(
            &cluster.endpoint(at),
            &["put", &format!("dir/k{at}"), &format!("v{at}")],
        );
    }
    assert_eq!(
        ok(&all, &["get", "dir/", "--prefix", "--keys-only"]),
        "dir/k0\n\ndir/k1\n\ndir/k2\n\n"
    );
    let counted = ok(&all, &["get", "dir/", "--prefix", "--limit=1", "-w", "fields"]);
    assert!(
        counted.contains("\"Count\" : 3") && counted.contains("\"More\" : true"),
        "{counted}"
    );
    assert_eq!(ok(&all, &["get", "missing"]), "", "a missing key is an empty answer");
    assert_eq!(ok(&all, &["del", "dir/k1"]).trim(), "1");
    assert_eq!(
        ok(&all, &["get", "dir/", "--prefix", "--keys-only"]),
        "dir/k0\n\ndir/k2\n\n"
    );

    // Transactions: the compare picks the branch.
    let txn = |input: &str| {
        let mut child = Command::new("timeout")
            .args(["10", "etcdctl", &format!("--endpoints={all}"), "txn"])
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("etcdctl txn");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let success = txn("value(\"foo\") = \"bar\"\n\nput foo baz\n\nput other x\n\n");
    assert!(success.starts_with("SUCCESS"), "{success}");
    let failure = txn("value(\"foo\") = \"bar\"\n\nput foo never\n\nput fallback yes\n\n");
    assert!(failure.starts_with("FAILURE"), "{failure}");
    assert_eq!(ok(&all, &["get", "foo", "--print-value-only"]), "baz\n");
    assert_eq!(ok(&all, &["get", "fallback", "--print-value-only"]), "yes\n");

    // Revisions, history and compaction.
    let revision_of = |key: &str| -> i64 {
        let fields = ok(&all, &["get", key, "-w", "fields"]);
        let line = fields
            .lines()
            .find(|line| line.starts_with("\"ModRevision\""))
            .expect("mod revision");
        line.rsplit(':').next().unwrap().trim().parse().unwrap()
    };
    let old = revision_of("foo");
    ok(&all, &["put", "foo", "newer"]);
    assert_eq!(
        ok(&all, &["get", "foo", "--print-value-only", &format!("--rev={old}")]),
        "baz\n"
    );
    let compacted = ok(&all, &["compact", &(old + 1).to_string()]);
    assert!(
        compacted.contains(&format!("compacted revision {}", old + 1)),
        "{compacted}"
    );
    let too_old = etcdctl(&all, &["get", "foo", &format!("--rev={old}")]);
    assert!(!too_old.ok);
    assert!(
        too_old.stderr.contains("required revision has been compacted"),
        "{}",
        too_old.stderr
    );
    let future = etcdctl(&all, &["get", "foo", "--rev=100000"]);
    assert!(
        future.stderr.contains("required revision is a future revision"),
        "{}",
        future.stderr
    );

    // Status and membership as etcd reports them.
    let status = ok(&all, &["endpoint", "status", "-w", "table"]);
    assert_eq!(
        status.lines().filter(|line| line.contains(" true ")).count(),
        1,
        "exactly one endpoint is leader: {status}"
    );
    let members = ok(&all, &["member", "list"]);
    for node in &cluster.nodes {
        assert!(members.contains(&node.name), "{members}");
    }
}

#[test]
fn bad_requests_get_etcds_errors_and_change_nothing() {
    let cluster = Cluster::start(1, "errors", FLAGS);
    let endpoint = cluster.endpoint(0);
    ok(&endpoint, &["put", "k", "v"]);
    // A 1.7 MB value (over the default 1.5 MiB --max-request-bytes, under
    // etcdctl's own 2 MiB send limit), read
    // from standard input as etcdctl allows.
    let too_large = etcdctl_with_input(&endpoint, &["put", "big"], &"x".repeat(1_700_000));
    assert!(!too_large.ok);
    assert!(
        too_large.stderr.contains("request is too large"),
        "{}",
        too_large.stderr
    );
    let mut child = Command::new("timeout")
        .args(["10", "etcdctl", &format!("--endpoints={endpoint}"), "txn"])
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl txn");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\nput dup 1\nput dup 2\n\n\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("duplicate key given in txn request"), "{stderr}");
    assert_eq!(ok(&endpoint, &["get", "dup"]), "", "nothing was written");
    assert_eq!(ok(&endpoint, &["get", "big"]), "");
    assert_eq!(ok(&endpoint, &["get", "k", "--print-value-only"]), "v\n");
}

#[test]
fn killing_the_leader_loses_no_acknowledged_write_and_restarts_catch_up() {
    let mut cluster = Cluster::start(3, "failover", FLAGS);
    for at in 0..20 {
        ok(
            &cluster.endpoints(),
            &["put", &format!("key{at:02}"), &format!("value{at}")],
        );
    }
    let leader = cluster.wait_for_leader();
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader();
    assert_ne!(new_leader, leader, "a new leader was elected");
    // Every acknowledged write is there, and the cluster takes new ones.
    let survivors = cluster.endpoints();
    let keys = ok(&survivors, &["get", "key", "--prefix", "--keys-only"]);
    assert_eq!(keys.lines().filter(|line| !line.is_empty()).count(), 20, "{keys}");
    for at in 20..120 {
        ok(&survivors, &["put", &format!("key{at:03}"), "after"]);
    }
    // The killed node restarts with its data dir and catches up by
    // snapshot: the others snapshot every 50 entries and keep only 10
    // below, so its entries are gone from their logs.
    cluster.launch(leader);
    let started = Instant::now();
    loop {
        let out = etcdctl(
            &cluster.endpoint(leader),
            &["get", "key", "--prefix", "--keys-only", "--consistency=s"],
        );
        let count = out.stdout.lines().filter(|line| !line.is_empty()).count();
        if out.ok && count == 120 {
            break;
        }
        assert!(
            started.elapsed() < WAIT_MAX,
            "the restarted node did not catch up ({count} keys)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_whole_cluster_restart_keeps_every_key() {
    let mut cluster = Cluster::start(3, "restart", FLAGS);
    for at in 0..30 {
        ok(&cluster.endpoints(), &["put", &format!("persist{at:02}"), "v"]);
    }
    for at in 0..3 {
        cluster.kill(at);
    }
    for at in 0..3 {
        cluster.launch(at);
    }
    cluster.wait_for_leader();
    let keys = ok(&cluster.endpoints(), &["get", "persist", "--prefix", "--keys-only"]);
    assert_eq!(keys.lines().filter(|line| !line.is_empty()).count(), 30, "{keys}");
}

#[test]
fn wrong_flags_exit_with_code_2_and_a_clear_message() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_raftwerk"))
            .args(args)
            .output()
            .expect("run raftwerk")
    };
    let unknown = run(&["--no-such-flag"]);
    assert_eq!(unknown.status.code(), Some(2));
    let conflicting = run(&["--name", "a", "--initial-cluster", "b=http://127.0.0.1:1"]);
    assert_eq!(conflicting.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&conflicting.stderr).contains("no entry for this member"));
    let bad_timeout = run(&["--heartbeat-interval", "100", "--election-timeout", "200"]);
    assert_eq!(bad_timeout.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_timeout.stderr).contains("--election-timeout"));
    // A member's flags given to a tool are refused, not ignored.
    let misplaced = run(&["playground", "--name", "x"]);
    assert_eq!(misplaced.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&misplaced.stderr).contains("does not apply"));
    // A restore with flags that conflict is a usage error too.
    let restore = run(&[
        "snapshot",
        "restore",
        "backup.db",
        "--name",
        "a",
        "--initial-cluster",
        "b=http://127.0.0.1:1",
    ]);
    assert_eq!(restore.status.code(), Some(2));
}

#[test]
fn a_data_dir_of_another_cluster_is_refused() {
    let cluster = Cluster::start(1, "foreign", FLAGS);
    let data_dir: &Path = &cluster.nodes[0].data_dir;
    let port = free_port();
    let peer = free_port();
    let output = Command::new("timeout")
        .arg("20")
        .arg(env!("CARGO_BIN_EXE_raftwerk"))
        .args(["--name", "other"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{port}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .output()
        .expect("run raftwerk");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("belongs to another cluster") || stderr.contains("in use by another process"),
        "{stderr}"
    );
}

/// The same API through the Rust `etcd-client` crate: what application
/// developers use.
#[test]
fn the_rust_etcd_client_works_unchanged() {
    use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
    let cluster = Cluster::start(3, "rust-client", FLAGS);
    let endpoints: Vec<String> = (0..3).map(|at| cluster.endpoint(at)).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let run = async {
            let mut client = Client::connect(&endpoints, None).await.expect("connect");
            let put = client.put("app/a", "1", None).await.expect("put");
            assert!(put.header().expect("header").revision() > 0);
            client.put("app/b", "2", None).await.expect("put");
            let got = client
                .get("app/", Some(GetOptions::new().with_prefix()))
                .await
                .expect("get");
            let pairs: Vec<(String, String)> = got
                .kvs()
                .iter()
                .map(|kv| (kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string()))
                .collect();
            assert_eq!(pairs, vec![("app/a".into(), "1".into()), ("app/b".into(), "2".into())]);
            assert_eq!(got.count(), 2);
            let txn = Txn::new()
                .when(vec![Compare::value("app/a", CompareOp::Equal, "1")])
                .and_then(vec![TxnOp::put("app/c", "3", None)])
                .or_else(vec![TxnOp::put("app/never", "x", None)]);
            assert!(client.txn(txn).await.expect("txn").succeeded());
            let deleted = client.delete("app/b", None).await.expect("delete");
            assert_eq!(deleted.deleted(), 1);
            let revision = client.get("app/c", None).await.expect("get").kvs()[0].mod_revision();
            client.put("app/c", "4", None).await.expect("put");
            client.compact(revision + 1, None).await.expect("compact");
            let error = client
                .get("app/c", Some(GetOptions::new().with_revision(revision)))
                .await
                .expect_err("compacted");
            assert!(
                error.to_string().contains("required revision has been compacted"),
                "{error}"
            );
            let status = client.status().await.expect("status");
            assert!(status.leader() != 0);
            let members = client.member_list().await.expect("member list");
            assert_eq!(members.members().len(), 3);
            // etcd 3.5's linearizable member list (not exposed by this
            // client crate): through the generated client.
            let mut cluster_client = raftwerk_proto::etcdserverpb::cluster_client::ClusterClient::connect(format!(
                "http://{}",
                endpoints[1]
            ))
            .await
            .expect("connect");
            let linearizable = cluster_client
                .member_list(raftwerk_proto::etcdserverpb::MemberListRequest { linearizable: true })
                .await
                .expect("linearizable member list");
            assert_eq!(linearizable.into_inner().members.len(), 3);
            // As etcd: headers of responses about no one revision carry
            // the current one.
            assert_eq!(
                members.header().expect("header").revision(),
                client
                    .get("app/c", None)
                    .await
                    .expect("get")
                    .header()
                    .expect("header")
                    .revision()
            );
            // Maintenance.Hash: every member's whole key space hashes the
            // same once all have applied the same log.
            let mut hashes = std::collections::BTreeSet::new();
            loop {
                hashes.clear();
                for endpoint in &endpoints {
                    let mut one = Client::connect([endpoint], None).await.expect("connect");
                    hashes.insert(one.hash().await.expect("hash").hash());
                }
                if hashes.len() == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(WAIT_MAX, run)
            .await
            .expect("the client finished in time");
    });
}

/// The `dbSize` a member reports in `endpoint status`.
fn db_size(endpoint: &str) -> u64 {
    let out = ok(endpoint, &["endpoint", "status", "-w", "fields"]);
    out.lines()
        .find_map(|line| line.strip_prefix("\"DBSize\" : "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no DBSize in {out}"))
}

#[test]
fn defragment_gives_freed_space_back_and_keeps_the_data() {
    let cluster = Cluster::start(1, "defrag", FLAGS);
    let endpoint = cluster.endpoints();
    let big = "x".repeat(60_000);
    for at in 0..150 {
        ok(&endpoint, &["put", &format!("big{at:03}"), &big]);
    }
    ok(&endpoint, &["put", "keep", "1"]);
    ok(&endpoint, &["del", "big", "--prefix"]);
    let revision = ok(&endpoint, &["get", "keep", "-w", "fields"])
        .lines()
        .find_map(|line| {
            line.strip_prefix("\"Revision\" : ")
                .map(|value| value.trim().to_string())
        })
        .expect("revision");
    ok(&endpoint, &["compaction", &revision]);
    let before = db_size(&endpoint);
    assert!(before > 5_000_000, "the values took space: {before}");
    let out = ok(&endpoint, &["defrag"]);
    assert!(out.contains("Finished defragmenting"), "{out}");
    let after = db_size(&endpoint);
    assert!(after < before / 2, "defragment shrank {before} to only {after}");
    assert_eq!(ok(&endpoint, &["get", "keep", "--print-value-only"]).trim(), "1");
    assert_eq!(ok(&endpoint, &["get", "big", "--prefix", "--keys-only"]).trim(), "");
}

#[test]
fn a_backup_saved_with_etcdctl_restores_a_new_cluster_with_its_history() {
    let mut target = Cluster::prepare(3, "backup-target", FLAGS);
    let source = Cluster::start(3, "backup-source", FLAGS);
    let endpoints = source.endpoints();
    ok(&endpoints, &["put", "a", "1"]);
    let first = ok(&endpoints, &["get", "a", "-w", "fields"])
        .lines()
        .find_map(|line| {
            line.strip_prefix("\"ModRevision\" : ")
                .map(|value| value.trim().to_string())
        })
        .expect("mod revision");
    ok(&endpoints, &["put", "a", "3"]);
    ok(&endpoints, &["put", "b", "2"]);
    let file = target.dir.0.join("backup.db");
    let saved = ok(
        &source.endpoint(0),
        &["snapshot", "save", file.to_str().expect("UTF-8 path")],
    );
    assert!(saved.contains("Snapshot saved at"), "{saved}");
    drop(source);

    // A damaged backup is refused and leaves nothing behind.
    let mut bytes = std::fs::read(&file).expect("backup file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let damaged = target.dir.0.join("damaged.db");
    std::fs::write(&damaged, &bytes).expect("write damaged copy");
    let refused = restore(&target, 0, &damaged);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is damaged"),
        "{refused:?}"
    );
    assert!(
        !target.nodes[0].data_dir.exists(),
        "nothing is left of a refused restore"
    );
    // Every member of the new cluster from the same file.
    for at in 0..3 {
        let restored = restore(&target, at, &file);
        assert!(restored.status.success(), "{restored:?}");
    }
    let again = restore(&target, 0, &file);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{again:?}"
    );
    for at in 0..3 {
        target.launch(at);
    }
    target.wait_for_leader();
    let endpoints = target.endpoints();
    assert_eq!(ok(&endpoints, &["get", "a", "--print-value-only"]).trim(), "3");
    assert_eq!(ok(&endpoints, &["get", "b", "--print-value-only"]).trim(), "2");
    assert_eq!(
        ok(&endpoints, &["get", "a", "--rev", &first, "--print-value-only"]).trim(),
        "1",
        "history is kept"
    );
    let members = ok(&endpoints, &["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    assert!(
        members.contains(&target.peer_url(2)),
        "the new cluster's members: {members}"
    );
    ok(&endpoints, &["put", "c", "4"]);
}

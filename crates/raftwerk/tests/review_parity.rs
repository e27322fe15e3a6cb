//! Parity review against etcd 3.4.23: the same `etcdctl` (3.4) commands were
//! run on a single-node etcd and a single-node raftwerk side by side. Each
//! test is a difference an etcd user would hit; it hard-codes what etcd
//! printed (and its exit code) and failed on raftwerk before its fix. The
//! differences kept are listed in docs/ARCHITECTURE.md. Every wait is
//! bounded; every process is killed when its test ends.

mod common;

use common::*;

/// `etcdctl` with `input` on standard input, succeeding or not.
fn txn(endpoint: &str, input: &str, extra: &[&str]) -> Output {
    let mut args = vec!["--command-timeout=5s", "--dial-timeout=2s", "txn"];
    args.extend_from_slice(extra);
    etcdctl_with_input(endpoint, &args, input)
}

/// The last line of stderr (etcdctl's `Error: ...`), without the client's
/// retry log lines.
fn error_line(out: &Output) -> String {
    out.stderr
        .lines()
        .rfind(|line| !line.contains("retry_interceptor"))
        .unwrap_or("")
        .to_string()
}

/// `compaction 0` before any compaction: etcd accepts it (`compacted
/// revision 0`, exit 0), raftwerk says the revision has been compacted.
#[test]
fn compaction_zero_before_any_compaction_succeeds() {
    let cluster = Cluster::start(1, "parity-compact-zero", &[]);
    let endpoint = cluster.endpoint(0);
    ok(&endpoint, &["put", "k", "v"]);
    let out = etcdctl(&endpoint, &["compaction", "0"]);
    assert!(
        out.ok && out.stdout.trim() == "compacted revision 0",
        "etcd: 'compacted revision 0' exit 0; raftwerk: {}",
        error_line(&out)
    );
}

/// etcd keeps at most one learner (3.4: fixed; 3.5: `--experimental-max-learners`
/// defaults to 1): a second `member add --learner` is refused with "too many
/// learner members in cluster". raftwerk adds any number of learners.
#[test]
fn second_learner_is_refused() {
    let cluster = Cluster::start(1, "parity-max-learners", &[]);
    let endpoint = cluster.endpoint(0);
    let first = format!("http://127.0.0.1:{}", free_port());
    let second = format!("http://127.0.0.1:{}", free_port());
    ok(&endpoint, &["member", "add", "l1", "--peer-urls", &first, "--learner"]);
    let out = etcdctl(&endpoint, &["member", "add", "l2", "--peer-urls", &second, "--learner"]);
    assert!(
        !out.ok && error_line(&out) == "Error: etcdserver: too many learner members in cluster",
        "etcd: 'Error: etcdserver: too many learner members in cluster' exit 1; raftwerk: exit ok={} {}{}",
        out.ok,
        out.stdout,
        out.stderr
    );
}

/// etcd's `--max-txn-ops` defaults to 128: a txn with 129 operations is
/// refused ("too many operations in txn request", exit 1). raftwerk applies it.
#[test]
fn txn_with_more_than_128_ops_is_refused() {
    let cluster = Cluster::start(1, "parity-max-txn-ops", &[]);
    let endpoint = cluster.endpoint(0);
    let ops: String = (1..=129).map(|at| format!("put t{at} x\n")).collect();
    let out = txn(&endpoint, &format!("\n{ops}\n\n"), &[]);
    assert!(
        !out.ok && error_line(&out) == "Error: etcdserver: too many operations in txn request",
        "etcd: 'Error: etcdserver: too many operations in txn request' exit 1; raftwerk: {}{}",
        out.stdout,
        out.stderr
    );
    // 128 is still fine in etcd.
    let ops: String = (1..=128).map(|at| format!("put u{at} x\n")).collect();
    let out = txn(&endpoint, &format!("\n{ops}\n\n"), &[]);
    assert!(out.ok && out.stdout.starts_with("SUCCESS"), "{}", out.stderr);
}

/// `move-leader` to the member that already leads: etcd answers
/// `Leadership transferred from X to X` (exit 0); raftwerk fails with
/// `rpc error: code = Internal desc = etcdserver: node N is already the leader`.
#[test]
fn move_leader_to_current_leader_succeeds() {
    let cluster = Cluster::start(1, "parity-move-self", &[]);
    let endpoint = cluster.endpoint(0);
    let id = member_id_of(&endpoint, "n1");
    let out = etcdctl(&endpoint, &["move-leader", &id]);
    assert!(
        out.ok && out.stdout.trim() == format!("Leadership transferred from {id} to {id}"),
        "etcd: 'Leadership transferred from {id} to {id}' exit 0; raftwerk: {}",
        error_line(&out)
    );
}

/// `move-leader` to an id that is no member: etcd answers
/// `Error: etcdserver: bad leader transferee` (gRPC FailedPrecondition);
/// raftwerk `Error: rpc error: code = Internal desc = etcdserver: node 4660
/// is not a voter of this cluster` (an Internal error etcdctl cannot map).
#[test]
fn move_leader_to_unknown_member_is_bad_leader_transferee() {
    let cluster = Cluster::start(1, "parity-move-unknown", &[]);
    let endpoint = cluster.endpoint(0);
    let out = etcdctl(&endpoint, &["move-leader", "1234"]);
    assert!(!out.ok);
    assert_eq!(error_line(&out), "Error: etcdserver: bad leader transferee");
}

/// A txn deleting `--from-key` (or `--prefix ""`) and putting a key: etcd
/// 3.4 accepts it (its duplicate check treats the range end "\0" as an empty
/// interval) and prints SUCCESS; raftwerk refuses with "duplicate key given
/// in txn request". Scripts that clear a key space and seed it in one txn
/// break.
#[test]
fn txn_delete_from_key_then_put_is_accepted() {
    let cluster = Cluster::start(1, "parity-txn-from-key", &[]);
    let endpoint = cluster.endpoint(0);
    ok(&endpoint, &["put", "old", "1"]);
    let out = txn(&endpoint, "\ndel \"\" --prefix\nput d1 x\n\n\n", &[]);
    assert!(
        out.ok && out.stdout.starts_with("SUCCESS"),
        "etcd: SUCCESS exit 0; raftwerk: {}",
        error_line(&out)
    );
    let out = txn(&endpoint, "\ndel a --from-key\nput b x\n\n\n", &[]);
    assert!(
        out.ok && out.stdout.starts_with("SUCCESS"),
        "etcd: SUCCESS exit 0; raftwerk: {}",
        error_line(&out)
    );
}

/// In `txn -w json`, the responses inside a txn carry only a revision in
/// their headers in etcd (`{"ResponsePut":{"header":{"revision":34}}}`);
/// raftwerk repeats cluster_id, member_id and raft_term there.
#[test]
fn txn_inner_response_headers_carry_only_the_revision() {
    let cluster = Cluster::start(1, "parity-txn-headers", &[]);
    let endpoint = cluster.endpoint(0);
    ok(&endpoint, &["put", "k1", "v1"]);
    let out = txn(&endpoint, "\nput k3 v3\nget k1\n\n\n", &["-w", "json"]);
    assert!(out.ok, "{}", out.stderr);
    let responses = out.stdout.split("\"responses\"").nth(1).expect("responses");
    assert!(
        !responses.contains("cluster_id") && !responses.contains("raft_term"),
        "etcd: inner headers hold only the revision; raftwerk: {}",
        out.stdout
    );
}

/// `endpoint hashkv -w json` on a key space never compacted: etcd prints
/// `"compact_revision":-1`; raftwerk leaves the field out (0).
#[test]
fn hashkv_reports_minus_one_before_any_compaction() {
    let cluster = Cluster::start(1, "parity-hashkv-compact", &[]);
    let endpoint = cluster.endpoint(0);
    ok(&endpoint, &["put", "k", "v"]);
    let out = ok(&endpoint, &["endpoint", "hashkv", "-w", "json"]);
    assert!(
        out.contains("\"compact_revision\":-1"),
        "etcd: compact_revision -1; raftwerk: {out}"
    );
}

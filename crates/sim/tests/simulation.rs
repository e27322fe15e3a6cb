//! Seeded whole-cluster simulations: safety after every step, linearizable
//! reads, liveness after faults heal. A failure prints the command that
//! replays the seed.

use raftwerk_raft::ReadMode;
use raftwerk_sim::{run_seed, SimConfig, SimReport};

const STEPS: u64 = 2000;

fn run_or_panic(config: SimConfig) -> SimReport {
    match run_seed(config) {
        Ok(report) => report,
        Err(failure) => panic!("{failure}"),
    }
}

fn run_seeds(nodes: usize, seeds: std::ops::Range<u64>, read_mode: ReadMode) {
    run_seeds_with(nodes, seeds, read_mode, false)
}

/// Runs every seed; panics on the first failure, and unless the runs
/// exercised writes, reads, snapshots and snapshot installs (runs that do
/// none of it would check none of it).
fn run_seeds_with(nodes: usize, seeds: std::ops::Range<u64>, read_mode: ReadMode, membership: bool) {
    let mut totals = [0u64; 4];
    for seed in seeds {
        let mut config = SimConfig::new(seed, nodes, STEPS);
        config.read_mode = read_mode;
        config.membership = membership;
        let report = run_or_panic(config);
        totals[0] += report.writes_acked;
        totals[1] += report.reads_served;
        totals[2] += report.snapshots_taken;
        totals[3] += report.snapshots_installed;
    }
    let [writes, reads, taken, installed] = totals;
    assert!(writes > 0, "no write was acknowledged");
    assert!(reads > 0, "no read was served");
    assert!(taken > 0, "no snapshot was taken");
    if nodes > 1 || membership {
        assert!(installed > 0, "no snapshot was installed");
    }
}

#[test]
fn three_nodes_stay_safe_and_live_under_faults() {
    run_seeds(3, 0..500, ReadMode::Safe);
}

#[test]
fn five_nodes_stay_safe_and_live_under_faults() {
    run_seeds(5, 0..500, ReadMode::Safe);
}

#[test]
fn three_nodes_with_lease_reads_stay_linearizable() {
    run_seeds(3, 1000..1200, ReadMode::Lease { drift_margin_ticks: 2 });
}

#[test]
fn single_node_survives_crashes() {
    run_seeds(1, 0..100, ReadMode::Safe);
}

/// Random membership changes (add learner, promote, demote, remove, replace
/// through joint consensus, leader removal) under the same faults; clusters
/// grow from 1 to 5 voters and shrink back.
#[test]
fn membership_changes_from_one_node_stay_safe_and_live() {
    run_seeds_with(1, 0..300, ReadMode::Safe, true);
}

#[test]
fn membership_changes_from_three_nodes_stay_safe_and_live() {
    run_seeds_with(3, 0..300, ReadMode::Safe, true);
}

#[test]
fn membership_changes_from_five_nodes_stay_safe_and_live() {
    run_seeds_with(5, 0..300, ReadMode::Safe, true);
}

#[test]
fn membership_changes_with_lease_reads_stay_linearizable() {
    run_seeds_with(3, 2000..2200, ReadMode::Lease { drift_margin_ticks: 2 }, true);
}

/// Nodes on the real WAL over a simulated disk: every restart runs its
/// recovery, and snapshots, compaction and installs go through its files.
#[test]
fn nodes_on_the_wal_stay_safe_and_live_under_crashes() {
    for seed in 0..150 {
        let mut config = SimConfig::new(seed, 3, STEPS);
        config.wal = true;
        run_or_panic(config);
    }
    for seed in 0..100 {
        let mut config = SimConfig::new(seed, 3, STEPS);
        config.wal = true;
        config.membership = true;
        run_or_panic(config);
    }
}

#[test]
fn same_seed_replays_the_same_run() {
    let first = run_or_panic(SimConfig::new(42, 5, STEPS));
    let second = run_or_panic(SimConfig::new(42, 5, STEPS));
    assert_eq!(first, second);
    let other = run_or_panic(SimConfig::new(43, 5, STEPS));
    assert_ne!(first.trace_hash, other.trace_hash);
}

#[test]
fn calm_cluster_elects_one_leader_and_acknowledges_writes() {
    let mut config = SimConfig::new(7, 3, STEPS);
    config.faults = false;
    let report = run_or_panic(config);
    assert_eq!(report.leaders_elected, 1);
    assert_eq!(report.messages_dropped, 0);
    assert!(report.writes_acked > 300, "{report:?}");
}

// Regression seeds. Each one failed before the fix named in the test (the
// seeds were re-checked against the simulator as it is now: reverting the
// fix makes them fail again). Seeds found before snapshots existed run
// without them, so they still replay the run that failed.

fn seed(seed: u64, nodes: usize) -> SimConfig {
    let mut config = SimConfig::new(seed, nodes, STEPS);
    config.snapshots = false;
    config
}

/// A follower in replicate state whose appends were all lost kept a full
/// in-flight window forever: heartbeat responses now free one slot and send
/// an empty append that makes the follower reject and restart probing.
#[test]
fn regression_lost_appends_do_not_stall_a_follower() {
    run_or_panic(seed(30, 3));
    run_or_panic(seed(31, 5));
}

/// A leader whose followers were all paused never marked the new commit
/// index as broadcast, so `has_ready` stayed true with nothing to do.
#[test]
fn regression_commit_broadcast_with_paused_followers_does_not_livelock() {
    run_or_panic(seed(4, 3));
    run_or_panic(seed(6, 5));
}

/// Simulator bug: the checker recorded entries of a single node that became
/// leader in a term whose vote was never made durable; after a crash the
/// node legitimately reused the term, and the checker reported a false Log
/// Matching violation. Only durable entries are recorded now. (Seed 20
/// reproduced it with the simulator of commit 4ed5e22; the seed is kept as
/// a single-node crash run.)
#[test]
fn regression_single_node_may_reuse_a_term_lost_before_durable() {
    run_or_panic(seed(20, 1));
}

fn membership_seed(seed: u64, nodes: usize) -> SimConfig {
    let mut config = self::seed(seed, nodes);
    config.membership = true;
    config
}

/// A leader that won alone (the single voter of its configuration) sent
/// appends to learners before its term was durable; it crashed, forgot the
/// term, won it again with a different log, and two logs held the same
/// index and term with different prefixes. Every message now waits for the
/// term it carries to be durable.
#[test]
fn regression_single_voter_leader_sends_nothing_before_its_term_is_durable() {
    run_or_panic(membership_seed(1355, 1));
    run_or_panic(membership_seed(527, 3));
}

/// A follower that refused a higher-term candidate reset its election
/// timer, so candidates with shorter logs kept one that could win from
/// ever timing out. Only a leader's message or a granted vote resets it
/// now (Figure 2).
#[test]
fn regression_refused_candidates_do_not_reset_the_election_timer() {
    run_or_panic(membership_seed(82, 5));
}

/// Stale appends were answered with our term only when pre-vote or
/// check-quorum was on; without both, a stale leader never learnt the term
/// and a follower that moved on never caught up.
#[test]
fn regression_stale_leaders_always_learn_the_newer_term() {
    run_or_panic(membership_seed(388, 3));
    run_or_panic(membership_seed(1275, 5));
}

/// Vote requests from nodes outside the receiver's latest configuration
/// were refused; a node whose configuration lagged then refused the only
/// candidate that could win (dissertation §4.1: requests are processed
/// whatever the configuration).
#[test]
fn regression_nodes_with_a_lagging_configuration_still_vote() {
    run_or_panic(membership_seed(1199, 5));
}

/// The leader snapshotted faster than a slow transfer progressed, and each
/// new snapshot replaced the one being sent: the transfer restarted from
/// offset 0 forever. Snapshots in transfer are retained now
/// (`Raft::snapshots_in_use`), and the log after them is not compacted.
#[test]
fn regression_a_transfer_outlives_newer_snapshots() {
    run_or_panic(SimConfig::new(197, 3, STEPS));
}

/// On the WAL: a snapshot file was released before the record of the
/// snapshot replacing it was durable, and a crash left a recorded snapshot
/// without its file (recovery refused to start).
#[test]
fn regression_wal_keeps_a_recorded_snapshot_file_across_crashes() {
    let mut config = SimConfig::new(67, 3, STEPS);
    config.wal = true;
    run_or_panic(config);
}

/// A follower caught up while chunks of a snapshot transfer were still on
/// their way to storage, then took its own snapshot at the same index and
/// term: the late chunks found their pending data gone and storage refused
/// them. Chunks of a snapshot the stored one supersedes are ignored now.
#[test]
fn regression_late_chunks_of_a_superseded_transfer_are_ignored() {
    let mut config = SimConfig::new(306177, 3, STEPS);
    config.membership = true;
    run_or_panic(config);
}

/// With pre-vote and check-quorum both off, a removed member that never
/// learnt of its removal deposed every new leader and the cluster never
/// converged. Membership changes need one of the two (the defaults have
/// both); the simulator keeps one on in membership runs.
#[test]
fn regression_removed_members_cannot_depose_leaders_with_pre_vote_or_check_quorum() {
    let mut config = SimConfig::new(502660, 5, STEPS);
    config.membership = true;
    run_or_panic(config);
}

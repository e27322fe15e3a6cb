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

fn run_seeds(nodes: usize, seeds: std::ops::Range<u64>, read_mode: ReadMode) -> (u64, u64) {
    let mut writes = 0;
    let mut reads = 0;
    for seed in seeds {
        let mut config = SimConfig::new(seed, nodes, STEPS);
        config.read_mode = read_mode;
        let report = run_or_panic(config);
        writes += report.writes_acked;
        reads += report.reads_served;
    }
    // A run that acknowledges nothing would check nothing.
    assert!(writes > 0, "no write was acknowledged");
    assert!(reads > 0, "no read was served");
    (writes, reads)
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
// fix makes them fail again).

/// A follower in replicate state whose appends were all lost kept a full
/// in-flight window forever: heartbeat responses now free one slot and send
/// an empty append that makes the follower reject and restart probing.
#[test]
fn regression_lost_appends_do_not_stall_a_follower() {
    run_or_panic(SimConfig::new(30, 3, STEPS));
    run_or_panic(SimConfig::new(31, 5, STEPS));
}

/// A leader whose followers were all paused never marked the new commit
/// index as broadcast, so `has_ready` stayed true with nothing to do.
#[test]
fn regression_commit_broadcast_with_paused_followers_does_not_livelock() {
    run_or_panic(SimConfig::new(4, 3, STEPS));
    run_or_panic(SimConfig::new(6, 5, STEPS));
}

/// Simulator bug: the checker recorded entries of a single node that became
/// leader in a term whose vote was never made durable; after a crash the
/// node legitimately reused the term, and the checker reported a false Log
/// Matching violation. Only durable entries are recorded now. (Seed 20
/// reproduced it with the simulator of commit 4ed5e22; the seed is kept as
/// a single-node crash run.)
#[test]
fn regression_single_node_may_reuse_a_term_lost_before_durable() {
    run_or_panic(SimConfig::new(20, 1, STEPS));
}

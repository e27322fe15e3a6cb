//! `raftwerk-sim`: replay one seed, soak many, or benchmark the core.

use std::process::ExitCode;

use raftwerk_raft::ReadMode;
use raftwerk_sim::{bench, catch_up, run_seed, SimConfig};

const USAGE: &str = "\
usage:
  raftwerk-sim run   --seed S [--nodes N] [--steps K] [--lease MARGIN] [--drift PER_MILLE] [--membership] [--no-faults] [--no-snapshots] [--wal] [--trace]
  raftwerk-sim soak  [--nodes N] [--seeds FIRST..END] [--steps K] [--lease MARGIN] [--drift PER_MILLE] [--membership] [--no-snapshots] [--wal]
  raftwerk-sim bench [--quick]
  raftwerk-sim catch-up [--snapshot-mib M] [--entries N]

  run    replays one seeded simulation and prints its report (a failure
         prints the violated invariant and exits 1)
  soak   runs every seed in FIRST..END (default 0..1000) and stops at the
         first failure
  --lease MARGIN      lease reads with a drift margin of MARGIN ticks
  --drift PER_MILLE   each node's clock runs at 1000 +/- PER_MILLE ticks per
                      1000 steps (default 100)
  --membership        random membership changes over 5 node slots (the
                      cluster bootstraps with --nodes voters)
  --no-snapshots      nodes never snapshot nor compact (by default they do
                      on a per-seed schedule)
  --wal               nodes keep their log in the WAL on a simulated disk
                      (recovery runs at every restart)
  bench  measures the core in process: throughput by batch size and the
         closed-loop client benchmark
  catch-up  time for a new learner to catch up from a snapshot of M MiB
         (default 1024) plus N log entries of 64 bytes (default 100000)";

struct Options {
    seed: u64,
    nodes: usize,
    steps: u64,
    seeds: std::ops::Range<u64>,
    read_mode: ReadMode,
    faults: bool,
    trace: bool,
    quick: bool,
    drift: u64,
    membership: bool,
    snapshot_mib: u64,
    entries: u64,
    snapshots: bool,
    wal: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        seed: 0,
        nodes: 3,
        steps: 2000,
        seeds: 0..1000,
        read_mode: ReadMode::Safe,
        faults: true,
        trace: false,
        quick: false,
        drift: 100,
        membership: false,
        snapshot_mib: 1024,
        entries: 100_000,
        snapshots: true,
        wal: false,
    };
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let mut value = |name: &str| iter.next().cloned().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--seed" => options.seed = number(&value("--seed")?, "--seed")?,
            "--nodes" => {
                options.nodes = number(&value("--nodes")?, "--nodes")? as usize;
                if !(1..=9).contains(&options.nodes) {
                    return Err("--nodes must be between 1 and 9".to_string());
                }
            }
            "--steps" => options.steps = number(&value("--steps")?, "--steps")?,
            "--seeds" => {
                let text = value("--seeds")?;
                let (first, end) = text
                    .split_once("..")
                    .ok_or(format!("--seeds takes FIRST..END, got {text:?}"))?;
                options.seeds = number(first, "--seeds")?..number(end, "--seeds")?;
            }
            "--lease" => {
                options.read_mode = ReadMode::Lease {
                    drift_margin_ticks: number(&value("--lease")?, "--lease")?,
                }
            }
            "--drift" => {
                options.drift = number(&value("--drift")?, "--drift")?;
                if options.drift >= 1000 {
                    return Err("--drift must be below 1000".to_string());
                }
            }
            "--snapshot-mib" => options.snapshot_mib = number(&value("--snapshot-mib")?, "--snapshot-mib")?,
            "--entries" => options.entries = number(&value("--entries")?, "--entries")?,
            "--no-faults" => options.faults = false,
            "--no-snapshots" => options.snapshots = false,
            "--wal" => options.wal = true,
            "--membership" => options.membership = true,
            "--trace" => options.trace = true,
            "--quick" => options.quick = true,
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok(options)
}

fn number(text: &str, flag: &str) -> Result<u64, String> {
    text.parse().map_err(|_| format!("{flag} takes a number, got {text:?}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let options = match parse(&args[1..]) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("error: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = |seed| {
        let mut config = SimConfig::new(seed, options.nodes, options.steps);
        config.read_mode = options.read_mode;
        config.faults = options.faults;
        config.trace = options.trace;
        config.clock_drift_per_mille = options.drift;
        config.membership = options.membership;
        config.snapshots = options.snapshots;
        config.wal = options.wal;
        config
    };
    match command.as_str() {
        "run" => match run_seed(config(options.seed)) {
            Ok(report) => {
                println!("{report:#?}");
                ExitCode::SUCCESS
            }
            Err(failure) => {
                eprintln!("{failure}");
                ExitCode::from(1)
            }
        },
        "soak" => {
            // The soak reports its own duration; simulated runs never read the clock.
            #[allow(clippy::disallowed_methods)]
            let started = std::time::Instant::now();
            let mut acked = 0;
            let mut reads = 0;
            for seed in options.seeds.clone() {
                match run_seed(config(seed)) {
                    Ok(report) => {
                        acked += report.writes_acked;
                        reads += report.reads_served;
                    }
                    Err(failure) => {
                        eprintln!("{failure}");
                        return ExitCode::from(1);
                    }
                }
            }
            println!(
                "soak passed: {} seeds x {} steps, {} nodes, {acked} writes acknowledged, {reads} reads served, {:.1}s",
                options.seeds.end - options.seeds.start,
                options.steps,
                options.nodes,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        "bench" => {
            bench::run_all(options.quick);
            ExitCode::SUCCESS
        }
        "catch-up" => {
            catch_up::run(options.snapshot_mib as usize, options.entries, 64);
            ExitCode::SUCCESS
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("error: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

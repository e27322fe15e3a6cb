//! Deterministic simulation of raftwerk clusters, and in-process benchmarks
//! of the consensus core.
//!
//! The simulator drives real `raftwerk_raft::Raft` cores over a simulated
//! network and disk with injected faults, and checks Raft's safety
//! properties and linearizability after every step (see `checker`). One
//! seed reproduces one run exactly.
#![forbid(unsafe_code)]

pub mod bench;
pub mod catch_up;
pub mod checker;
pub mod network;
pub mod node_storage;
pub mod simulation;

pub use simulation::{run_seed, SimConfig, SimFailure, SimReport, Simulation};

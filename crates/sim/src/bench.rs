//! In-process benchmarks of the consensus core (filled in below).

/// Runs every benchmark and prints a table.
pub fn run_all(_quick: bool) {}

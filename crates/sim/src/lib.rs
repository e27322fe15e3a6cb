//! Deterministic cluster simulator for the raftwerk consensus core.

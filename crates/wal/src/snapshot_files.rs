//! Names of snapshot files in the data directory's `snap/` folder. A
//! snapshot being written is `<index>-<term>.partial`; once complete and
//! synced it is renamed to `<index>-<term>.snap` and the folder is synced,
//! so a crash leaves either no snapshot or the whole file. Which snapshot
//! is the node's is recorded in the WAL (`Record::Snapshot`), not inferred
//! from the folder.

use raftwerk_raft::{Index, Term};

pub const SNAPSHOT_SUFFIX: &str = ".snap";
pub const PARTIAL_SUFFIX: &str = ".partial";

pub fn snapshot_name(index: Index, term: Term) -> String {
    format!("{index:020}-{term:020}{SNAPSHOT_SUFFIX}")
}

pub fn partial_name(index: Index, term: Term) -> String {
    format!("{index:020}-{term:020}{PARTIAL_SUFFIX}")
}

/// `(index, term)` of a complete snapshot file's name.
pub fn parse_snapshot_name(name: &str) -> Option<(Index, Term)> {
    let stem = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    let (index, term) = stem.split_once('-')?;
    Some((index.parse().ok()?, term.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_index() {
        assert_eq!(parse_snapshot_name(&snapshot_name(42, 7)), Some((42, 7)));
        assert_eq!(parse_snapshot_name(&partial_name(42, 7)), None);
        assert!(snapshot_name(9, 1) < snapshot_name(10, 1));
    }
}

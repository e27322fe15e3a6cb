//! Rule-named tests of the WAL over the simulated file system (and one on
//! the real one): the storage contract, recovery, torn tails, corruption,
//! locking, failed syncs, compaction and snapshot files.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use raftwerk_raft::storage_conformance::check_log_store;
use raftwerk_raft::{Configuration, Entry, EntryKind, HardState, LogStore, SnapshotMeta, Storage, StorageError};
use raftwerk_wal::{RealFs, SimFs, Wal, WalError, WalOptions};

const DIR: &str = "/data";

fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        cache_bytes_max: 512,
    }
}

fn open(fs: &SimFs) -> Wal<SimFs> {
    Wal::open(fs.clone(), Path::new(DIR), small()).expect("open")
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(format!("entry {index} of term {term} ").repeat(3)),
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|index| entry(index, term)).collect()
}

fn segment_paths(fs: &SimFs) -> Vec<PathBuf> {
    use raftwerk_wal::FileSystem;
    let dir = Path::new(DIR).join("wal");
    fs.list_dir(&dir)
        .unwrap()
        .into_iter()
        .map(|name| dir.join(name))
        .collect()
}

#[test]
fn wal_keeps_the_log_store_contract() {
    check_log_store(|| open(&SimFs::new()));
}

#[test]
fn synced_entries_and_hard_state_survive_a_crash_and_unsynced_ones_do_not() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=50, 1)).unwrap();
    let hard_state = HardState {
        term: 1,
        vote: 2,
        commit: 40,
    };
    wal.save_hard_state(hard_state).unwrap();
    wal.sync().unwrap();
    wal.append_entries(&entries(51..=60, 1)).unwrap();
    drop(wal);
    fs.crash(None);
    let wal = open(&fs);
    assert_eq!(wal.last_index(), 50);
    assert_eq!(wal.hard_state(), hard_state);
    assert_eq!(
        wal.entries(1, 51, u64::MAX).unwrap(),
        entries(1..=50, 1),
        "bytes read back from disk"
    );
    assert!(wal.segment_count() > 1, "the test spans several segments");
}

#[test]
fn torn_tail_is_truncated_and_appends_continue_after_it() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=5, 1)).unwrap();
    wal.sync().unwrap();
    wal.append_entries(&entries(6..=8, 1)).unwrap();
    fs.fail_next_sync();
    assert!(wal.sync().is_err(), "the sync fails");
    drop(wal);
    fs.crash(Some(600));
    let mut wal = open(&fs);
    let last = wal.last_index();
    assert!(
        (5..8).contains(&last),
        "a prefix of the torn batch may survive, not all: {last}"
    );
    wal.append_entries(&entries(last + 1..=last + 3, 2)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    fs.crash(None);
    let wal = open(&fs);
    assert_eq!(wal.last_index(), last + 3);
    assert_eq!(wal.term(last + 1), Ok(2));
}

#[test]
fn flipped_bit_in_the_middle_is_corruption_naming_file_and_offset() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=10, 1)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let segment = segment_paths(&fs)[0].clone();
    fs.flip_bit(&segment, 200, 3);
    match Wal::open(fs.clone(), Path::new(DIR), small()) {
        Err(WalError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, segment);
            assert!(offset <= 200, "reported at the damaged record ({offset})");
        }
        other => panic!("expected corruption, got {:?}", other.err()),
    }
}

#[test]
fn flipped_bit_in_the_last_record_is_a_torn_tail() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=3, 1)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let segment = segment_paths(&fs)[0].clone();
    let end = {
        let wal = open(&fs);
        let _ = wal.last_index();
        drop(wal);
        // The last record ends where the data ends: find it from the length
        // of the record encoding of entry 3.
        let mut buf = Vec::new();
        raftwerk_wal::record::encode(&raftwerk_wal::record::Record::Entry(entry(3, 1)), &mut buf);
        buf.len()
    };
    let data_end = {
        let wal_dump = {
            let mut out = Vec::new();
            raftwerk_wal::dump::dump(&fs, Path::new(DIR), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let line = wal_dump
            .lines()
            .find(|line| line.contains("end of data"))
            .unwrap()
            .to_string();
        line.trim()
            .trim_start_matches('@')
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    fs.flip_bit(&segment, data_end - end as u64 / 2, 1);
    let wal = open(&fs);
    assert_eq!(wal.last_index(), 2, "the damaged last record is dropped as torn");
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let fs = SimFs::new();
    let wal = open(&fs);
    match Wal::open(fs.clone(), Path::new(DIR), small()) {
        Err(WalError::Locked { dir }) => assert_eq!(dir, Path::new(DIR)),
        other => panic!("expected the lock error, got {:?}", other.err()),
    }
    drop(wal);
    open(&fs);
}

#[test]
fn failed_sync_is_fatal_and_every_later_write_is_refused() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=3, 1)).unwrap();
    fs.fail_next_sync();
    assert!(matches!(wal.sync(), Err(StorageError::Io(_))));
    assert!(wal.failure().is_some());
    assert!(
        wal.append_entries(&entries(4..=4, 1)).is_err(),
        "no retry that could lie"
    );
    assert!(
        wal.sync().is_err(),
        "a later sync cannot prove the earlier writes durable"
    );
}

#[test]
fn truncated_entries_never_come_back() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=10, 1)).unwrap();
    wal.sync().unwrap();
    wal.append_entries(&entries(6..=7, 2)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    fs.crash(Some(1000));
    let wal = open(&fs);
    assert_eq!(wal.last_index(), 7);
    assert_eq!(wal.term(6), Ok(2));
    assert!(wal.term(8).is_err());
}

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        configuration: Configuration::new(vec![1, 2, 3], Vec::new()),
    }
}

fn store_snapshot(wal: &mut Wal<SimFs>, index: u64, term: u64, data: &[u8]) {
    for (at, chunk) in data.chunks(100).enumerate() {
        wal.write_snapshot_chunk(index, term, at as u64 * 100, chunk).unwrap();
    }
    wal.save_snapshot(&meta(index, term)).unwrap();
}

#[test]
fn compaction_deletes_whole_segments_and_survives_restart() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=200, 1)).unwrap();
    wal.sync().unwrap();
    let before = wal.segment_count();
    store_snapshot(&mut wal, 150, 1, &[7; 1000]);
    wal.compact_to(150).unwrap();
    assert!(
        wal.segment_count() < before,
        "segments holding only entries up to 150 are deleted"
    );
    wal.append_entries(&entries(201..=300, 1)).unwrap();
    wal.sync().unwrap();
    assert!(
        matches!(wal.compact_to(151), Err(StorageError::BeyondSnapshot { .. })),
        "never past the snapshot"
    );
    let grown = wal.segment_count();
    store_snapshot(&mut wal, 250, 1, &[8; 1000]);
    wal.compact_to(250).unwrap();
    assert!(
        wal.segment_count() < grown,
        "{} segments left of {grown}",
        wal.segment_count()
    );
    assert!(
        !segment_paths(&fs)
            .iter()
            .any(|path| path.ends_with("0000000000000001.seg")),
        "the first segment is gone"
    );
    drop(wal);
    fs.crash(None);
    let wal = open(&fs);
    assert_eq!(wal.first_index(), 251);
    assert_eq!(wal.term(250), Ok(1));
    assert_eq!(wal.last_index(), 300);
    assert_eq!(wal.entries(251, 301, u64::MAX).unwrap(), entries(251..=300, 1));
    assert_eq!(wal.snapshot(), Some(meta(250, 1)));
    assert!(matches!(
        wal.entries(200, 201, u64::MAX),
        Err(StorageError::Compacted { .. })
    ));
}

#[test]
fn snapshot_file_survives_restart_and_reads_back_in_chunks() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=20, 3)).unwrap();
    let data: Vec<u8> = (0..1000u32).map(|at| (at % 251) as u8).collect();
    store_snapshot(&mut wal, 20, 3, &data);
    wal.sync().unwrap();
    drop(wal);
    fs.crash(None);
    let wal = open(&fs);
    assert_eq!(wal.snapshot(), Some(meta(20, 3)));
    let mut read = Vec::new();
    loop {
        let chunk = wal.snapshot_chunk(20, read.len() as u64, 300).unwrap();
        read.extend_from_slice(&chunk.data);
        if chunk.last {
            break;
        }
    }
    assert_eq!(read, data);
}

#[test]
fn unsynced_snapshot_record_leaves_no_snapshot_after_a_crash() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=20, 3)).unwrap();
    wal.sync().unwrap();
    store_snapshot(&mut wal, 20, 3, &[1; 500]);
    drop(wal);
    fs.crash(None);
    let wal = open(&fs);
    assert_eq!(wal.snapshot(), None, "the record was never synced");
    use raftwerk_wal::FileSystem;
    assert!(
        fs.list_dir(&Path::new(DIR).join("snap")).unwrap().is_empty(),
        "the orphan file was removed"
    );
}

#[test]
fn installed_snapshot_replaces_the_log_across_restarts() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=30, 1)).unwrap();
    wal.sync().unwrap();
    for (at, chunk) in [0u8; 700].chunks(64).enumerate() {
        wal.write_snapshot_chunk(90, 4, at as u64 * 64, chunk).unwrap();
    }
    wal.install_snapshot(&meta(90, 4)).unwrap();
    wal.append_entries(&entries(91..=95, 4)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    fs.crash(Some(500));
    let wal = open(&fs);
    assert_eq!(wal.first_index(), 91);
    assert_eq!(wal.term(90), Ok(4));
    assert_eq!(wal.last_index(), 95);
    assert!(wal.term(30).is_err(), "the replaced log is gone");
}

#[test]
fn missing_snapshot_file_is_reported_by_name() {
    use raftwerk_wal::FileSystem;
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=5, 1)).unwrap();
    store_snapshot(&mut wal, 5, 1, &[3; 10]);
    wal.sync().unwrap();
    drop(wal);
    let snap = Path::new(DIR).join("snap");
    let name = fs.list_dir(&snap).unwrap()[0].clone();
    fs.remove_file(&snap.join(&name)).unwrap();
    match Wal::open(fs.clone(), Path::new(DIR), small()) {
        Err(WalError::SnapshotDamaged { file, .. }) => assert_eq!(file, snap.join(name)),
        other => panic!("expected a damaged snapshot, got {:?}", other.err()),
    }
}

#[test]
fn reads_below_the_cache_come_from_disk() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=100, 1)).unwrap();
    wal.sync().unwrap();
    assert!(wal.cache_bytes() <= small().cache_bytes_max, "the cache is bounded");
    assert_eq!(wal.entries(1, 101, u64::MAX).unwrap(), entries(1..=100, 1));
}

#[test]
fn dump_lists_segments_records_and_snapshots() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=3, 1)).unwrap();
    wal.save_hard_state(HardState {
        term: 1,
        vote: 1,
        commit: 3,
    })
    .unwrap();
    store_snapshot(&mut wal, 3, 1, &[1; 10]);
    wal.sync().unwrap();
    let mut out = Vec::new();
    raftwerk_wal::dump::dump(&fs, Path::new(DIR), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("entry index=3 term=1"), "{text}");
    assert!(text.contains("hard-state term=1 vote=1 commit=3"), "{text}");
    assert!(
        text.contains("snapshot file 00000000000000000003-00000000000000000001.snap (10 bytes)"),
        "{text}"
    );
}

#[test]
fn real_file_system_round_trip() {
    let dir = std::env::temp_dir().join(format!("raftwerk-wal-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let mut wal = Wal::open(RealFs, &dir, small()).expect("open on disk");
        wal.append_entries(&entries(1..=100, 1)).unwrap();
        wal.save_hard_state(HardState {
            term: 1,
            vote: 1,
            commit: 100,
        })
        .unwrap();
        wal.sync().unwrap();
        assert!(matches!(Wal::open(RealFs, &dir, small()), Err(WalError::Locked { .. })));
    }
    let wal = Wal::open(RealFs, &dir, small()).expect("reopen on disk");
    assert_eq!(wal.entries(1, 101, u64::MAX).unwrap(), entries(1..=100, 1));
    assert_eq!(wal.hard_state().commit, 100);
    drop(wal);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Found by the simulator on the WAL (seed 67): releasing the previous
/// snapshot's file before the record of its replacement was durable left,
/// after a crash, a recorded snapshot without its file.
#[test]
fn released_snapshot_files_go_only_after_their_replacement_is_durable() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=20, 1)).unwrap();
    store_snapshot(&mut wal, 10, 1, &[1; 300]);
    wal.sync().unwrap();
    store_snapshot(&mut wal, 20, 1, &[2; 300]);
    wal.retain_snapshots(&[]).unwrap();
    drop(wal);
    fs.crash(None);
    let wal = open(&fs);
    let meta = wal.snapshot().expect("a snapshot is recorded");
    assert_eq!(meta.index, 20, "releasing made the replacement durable first");
    assert!(wal.snapshot_chunk(20, 0, 1000).is_ok(), "its file is there");
}

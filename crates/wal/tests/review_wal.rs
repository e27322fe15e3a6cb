//! Findings of the review of `raftwerk-wal`: each test names the rule it
//! showed broken (synced data overwritten after an empty last segment was
//! removed, torn tails taken for corruption, a damaged snapshot served, an
//! oversized entry acknowledged then lost, accepted snapshot metadata
//! refused at restart) and guards its fix.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use raftwerk_raft::{Configuration, Entry, EntryKind, LogStore, SnapshotMeta, Storage};
use raftwerk_wal::record::{self, Record};
use raftwerk_wal::{FileSystem, SimFs, Wal, WalError, WalFile, WalOptions};

const DIR: &str = "/data";

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        cache_bytes_max: 512,
    }
}

fn open(fs: &SimFs) -> Wal<SimFs> {
    Wal::open(fs.clone(), Path::new(DIR), options()).expect("open")
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

fn wal_dir() -> PathBuf {
    Path::new(DIR).join("wal")
}

fn segment_paths(fs: &SimFs) -> Vec<PathBuf> {
    let dir = wal_dir();
    let mut names = fs.list_dir(&dir).unwrap();
    names.sort();
    names.into_iter().map(|name| dir.join(name)).collect()
}

/// Rule: nothing synced is ever lost; recovery appends after the last
/// kept segment's data.
///
/// Scenario: segment 1 holds synced entries 1..=5. Segment 2 was being
/// started when the power failed: its name and size reached the disk but
/// not its header (on ext4 any fsync or the 5 s journal commit persists a
/// create + `set_len` before the WAL's own `sync` writes the header; the
/// disk state is built here by hand because `SimFs` only persists names at
/// `sync_dir`). Recovery removes the empty segment 2 as "torn while being
/// started" — but `write_pos` is only set for the last *listed* segment
/// (`wal.rs:195-196`), so it stays 0 and the next `sync` writes the new
/// records at offset 0 of segment 1, over its header and synced entries.
#[test]
fn nothing_synced_is_lost_after_recovery_removes_an_empty_last_segment() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=5, 1)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    fs.crash(None);
    assert_eq!(segment_paths(&fs).len(), 1);
    // Segment 2 as the crash left it: named, sized, all zeros.
    let torn = wal_dir().join(format!("{:016x}.seg", 2));
    let file = fs.open(&torn, true).unwrap();
    file.set_len(options().segment_bytes).unwrap();
    file.sync_data().unwrap();
    fs.sync_dir(&wal_dir()).unwrap();
    drop(file);

    let mut wal = open(&fs);
    assert_eq!(wal.last_index(), 5, "the synced entries are recovered");
    wal.append_entries(&entries(6..=8, 1)).unwrap();
    wal.sync().unwrap();
    let read_now = wal.entries(1, 9, u64::MAX);
    drop(wal);
    fs.crash(None);
    let reopened = Wal::open(fs.clone(), Path::new(DIR), options());
    let wal = reopened.unwrap_or_else(|error| panic!("reopen after appending: {error}"));
    assert_eq!(read_now, Ok(entries(1..=8, 1)), "entries read back before the crash");
    assert_eq!(wal.entries(1, 9, u64::MAX), Ok(entries(1..=8, 1)));
}

/// Rule: a torn tail is truncated; only a damaged record followed by
/// intact *records* is corruption.
///
/// Scenario: entries 1..=3 are synced. Entry 4 carries, inside its
/// payload, bytes that happen to be a valid WAL frame (any client value
/// may: the frame format is public and the CRC is unkeyed). Its write is
/// torn (`SimFs`'s own prefix tear) after that embedded frame but before
/// the record's end. `intact_record_after` (`wal.rs:611-615`) scans every
/// byte offset after the damaged record's start, including the torn
/// record's own payload, finds the embedded frame "intact" and refuses to
/// start with `Corrupt`, though nothing synced was touched.
#[test]
fn a_torn_tail_is_truncated_even_when_its_payload_contains_a_valid_frame() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=3, 1)).unwrap();
    wal.sync().unwrap();
    let mut embedded = Vec::new();
    record::encode(&Record::Truncate { from: 1 }, &mut embedded);
    let mut data = vec![b'x'; 8];
    data.extend_from_slice(&embedded);
    data.extend_from_slice(&[b'y'; 1000]);
    wal.append_entries(&[Entry {
        term: 1,
        index: 4,
        kind: EntryKind::Normal,
        data: Bytes::from(data),
    }])
    .unwrap();
    fs.fail_next_sync();
    assert!(wal.sync().is_err(), "the write happens, its fdatasync fails");
    drop(wal);
    // About half of the record reaches the disk: the embedded frame does.
    fs.crash(Some(500));
    let wal = Wal::open(fs.clone(), Path::new(DIR), options())
        .unwrap_or_else(|error| panic!("a torn tail must not stop the node: {error}"));
    assert_eq!(wal.last_index(), 3, "the torn entry 4 is dropped, 1..=3 kept");
}

/// Rule: a torn tail is truncated; it is not reported as corruption.
///
/// Scenario: entries 1..=3 are synced; entries 4..=40 go out in one
/// `write` whose `fdatasync` never completes (power loss). A real disk
/// does not tear a multi-sector write as a prefix: page-cache writeback
/// and the device persist sectors in any order, so a sector in the
/// middle of the batch may be missing (still the zeros the segment was
/// pre-sized with) while later sectors made it. `SimFs` only tears
/// prefixes, so the missing sector is zeroed here by hand. Nothing
/// synced is damaged, yet the intact (never acknowledged) records after
/// the hole make recovery report `Corrupt` and refuse to start
/// (`wal.rs:575-580`, `intact_record_after`).
#[test]
fn a_torn_tail_with_a_missing_middle_sector_is_truncated_not_corrupt() {
    let fs = SimFs::new();
    let big = WalOptions {
        segment_bytes: 1 << 20,
        cache_bytes_max: 512,
    };
    let mut wal = Wal::open(fs.clone(), Path::new(DIR), big).unwrap();
    wal.append_entries(&entries(1..=3, 1)).unwrap();
    wal.sync().unwrap();
    wal.append_entries(&entries(4..=40, 1)).unwrap();
    fs.fail_next_sync();
    assert!(wal.sync().is_err(), "the batch is written, its fdatasync fails");
    drop(wal);
    fs.crash(Some(1000));
    // The second 512-byte sector of the file, inside the unsynced batch
    // (entry 3 ends before it), never reached the media.
    let segment = segment_paths(&fs)[0].clone();
    let file = fs.open(&segment, false).unwrap();
    file.write_at(&[0; 512], 512).unwrap();
    file.sync_data().unwrap();
    drop(file);
    let wal = Wal::open(fs.clone(), Path::new(DIR), big)
        .unwrap_or_else(|error| panic!("a torn unsynced batch must not stop the node: {error}"));
    assert!(
        (3..40).contains(&wal.last_index()),
        "the synced entries and a prefix of the torn batch: {}",
        wal.last_index()
    );
    assert_eq!(wal.entries(1, 4, u64::MAX), Ok(entries(1..=3, 1)));
}

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        configuration: Configuration::new(vec![1, 2, 3], Vec::new()),
    }
}

/// Rule: corruption is detected, never served silently (RELIABILITY 9;
/// the WAL records each snapshot file's CRC-32C for this).
///
/// Scenario: a 1000-byte snapshot is saved and synced; one bit of its file
/// flips on the media. `open_snapshot_files` (`wal.rs:281-297`) checks
/// only the file's length and `snapshot_chunk` (`wal.rs:756-776`) reads
/// the bytes without checking `data_crc`, so the damaged snapshot is
/// opened and streamed to followers as if intact (and a follower would
/// restore its state machine from it).
#[test]
fn a_damaged_snapshot_file_is_detected_not_served() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=10, 1)).unwrap();
    let data: Vec<u8> = (0..1000u32).map(|at| (at % 251) as u8).collect();
    for (at, chunk) in data.chunks(100).enumerate() {
        wal.write_snapshot_chunk(10, 1, at as u64 * 100, chunk).unwrap();
    }
    wal.save_snapshot(&meta(10, 1)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let snap = Path::new(DIR).join("snap");
    let name = fs.list_dir(&snap).unwrap()[0].clone();
    fs.flip_bit(&snap.join(&name), 400, 2);

    let wal = match Wal::open(fs.clone(), Path::new(DIR), options()) {
        Err(WalError::SnapshotDamaged { .. }) => return,
        Err(other) => panic!("unexpected error {other}"),
        Ok(wal) => wal,
    };
    let mut read = Vec::new();
    loop {
        match wal.snapshot_chunk(10, read.len() as u64, 300) {
            Ok(chunk) => {
                read.extend_from_slice(&chunk.data);
                if chunk.last {
                    break;
                }
            }
            Err(_) => return,
        }
    }
    let differing = read.iter().zip(&data).filter(|(a, b)| a != b).count();
    panic!("the damaged snapshot was opened and served without an error ({differing} bytes differ)");
}

/// Rule: nothing acknowledged is lost; the WAL never writes a record it
/// will not read back.
///
/// Scenario: an entry whose payload is larger than `RECORD_BYTES_MAX`
/// (128 MiB; the core's `entry_bytes_max` is a plain config field with no
/// link to it) is appended and synced: both succeed. Recovery's
/// `check_frame` rejects the frame as `BadLength` (`record.rs:206-208`);
/// being the last record it is taken for a torn tail and the
/// acknowledged entry is silently dropped (followed by any other record,
/// the node would instead refuse to start). `encode_entry`/`seal`
/// (`record.rs:97-127`) never check the limit, and above 4 GiB the `as u32`
/// length would wrap.
#[test]
fn an_acknowledged_entry_too_large_to_recover_is_refused_at_write_time() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    let huge = Entry {
        term: 1,
        index: 1,
        kind: EntryKind::Normal,
        data: Bytes::from(vec![7u8; record::RECORD_BYTES_MAX + 1]),
    };
    if wal.append_entries(std::slice::from_ref(&huge)).is_err() {
        return; // refused: nothing was acknowledged
    }
    if wal.sync().is_err() {
        return;
    }
    drop(wal);
    fs.crash(None);
    let wal = Wal::open(fs.clone(), Path::new(DIR), options())
        .unwrap_or_else(|error| panic!("the acknowledged entry made the WAL unopenable: {error}"));
    assert_eq!(
        wal.last_index(),
        1,
        "the synced entry 1 was silently dropped as a torn tail"
    );
}

/// Rule: recovery refuses only real damage; a store never accepts what it
/// cannot read back.
///
/// Scenario: `save_snapshot` is given metadata whose configuration has no
/// voters (`Configuration::new(vec![], vec![])`; `MemStorage` and
/// `check_log_store` accept any metadata). The WAL writes and syncs the
/// `Snapshot` record without a check, but decoding it runs
/// `Configuration::validate` (`record.rs:375`), so every later open fails
/// with `Corrupt` on a record whose CRC is intact: a permanent refusal to
/// start that no corruption caused.
#[test]
fn a_snapshot_the_wal_accepted_never_reads_back_as_corruption() {
    let fs = SimFs::new();
    let mut wal = open(&fs);
    wal.append_entries(&entries(1..=5, 1)).unwrap();
    wal.write_snapshot_chunk(5, 1, 0, b"state").unwrap();
    let odd = SnapshotMeta {
        index: 5,
        term: 1,
        configuration: Configuration::new(Vec::new(), Vec::new()),
    };
    if wal.save_snapshot(&odd).is_err() {
        return; // refused at write time
    }
    wal.sync().unwrap();
    drop(wal);
    fs.crash(None);
    match Wal::open(fs.clone(), Path::new(DIR), options()) {
        Ok(wal) => assert_eq!(wal.snapshot(), Some(odd)),
        Err(error) => panic!("a synced, intact record is reported as damage: {error}"),
    }
}

//! Measures the WAL's CPU cost per appended entry apart from the disk:
//! the time inside `append_entries` over many batches, each synced.
#![allow(clippy::disallowed_methods)]
use bytes::Bytes;
use raftwerk_raft::{Entry, EntryKind, LogStore};
use raftwerk_wal::{RealFs, Wal, WalOptions};

fn main() {
    let dir = std::env::temp_dir().join("raftwerk-cpu-probe");
    let _ = std::fs::remove_dir_all(&dir);
    let mut wal = Wal::open(RealFs, &dir, WalOptions::default()).expect("open");
    let payload = Bytes::from(vec![1u8; 128]);
    let mut appending = std::time::Duration::ZERO;
    let mut next = 1;
    for _ in 0..400 {
        let entries: Vec<Entry> = (0..1024)
            .map(|offset| Entry {
                term: 1,
                index: next + offset,
                kind: EntryKind::Normal,
                data: payload.clone(),
            })
            .collect();
        next += 1024;
        let started = std::time::Instant::now();
        wal.append_entries(&entries).expect("append");
        appending += started.elapsed();
        wal.sync().expect("sync");
    }
    println!("append_entries: {:?} per entry", appending / (400 * 1024));
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
}

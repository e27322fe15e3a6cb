//! `raftwerk-wal bench`: append throughput of the WAL on the real disk
//! with one `fdatasync` per batch, beside the same machine's raw
//! sequential write + `fdatasync` of the same bytes, and recovery time of a
//! large log. Prints Markdown tables for `docs/BENCHMARKS.md`.

// Wall-clock time is what a benchmark measures.
#![allow(clippy::disallowed_methods)]

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftwerk_raft::{Entry, EntryKind, LogStore, Storage};

use crate::fs::{FileSystem, RealFs, WalFile};
use crate::record::{self, Record};
use crate::wal::{Wal, WalOptions};

/// A file system that counts syncs, to show how many a batch costs.
#[derive(Clone, Default)]
pub struct CountingFs {
    syncs: Arc<AtomicU64>,
}

pub struct CountingFile {
    file: std::fs::File,
    syncs: Arc<AtomicU64>,
}

impl WalFile for CountingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        WalFile::read_at(&self.file, buf, offset)
    }
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        WalFile::write_at(&self.file, data, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        WalFile::sync_data(&self.file)
    }
    fn len(&self) -> io::Result<u64> {
        WalFile::len(&self.file)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        WalFile::set_len(&self.file, len)
    }
    fn try_lock(&self) -> io::Result<bool> {
        WalFile::try_lock(&self.file)
    }
}

impl FileSystem for CountingFs {
    type File = CountingFile;
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        RealFs.create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<CountingFile> {
        Ok(CountingFile {
            file: RealFs.open(path, create)?,
            syncs: self.syncs.clone(),
        })
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        RealFs.list_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        RealFs.sync_dir(path)
    }
}

/// One measured shape.
pub struct AppendResult {
    pub entry_bytes: usize,
    pub batch: usize,
    pub batches: u64,
    pub wal: Duration,
    pub raw: Duration,
    /// Bytes the WAL wrote per batch (records with framing).
    pub batch_bytes: u64,
    pub syncs_per_batch: f64,
}

impl AppendResult {
    fn appends_per_second(&self, elapsed: Duration) -> f64 {
        (self.batches * self.batch as u64) as f64 / elapsed.as_secs_f64()
    }

    fn mib_per_second(&self, elapsed: Duration) -> f64 {
        (self.batches * self.batch_bytes) as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
    }
}

fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Appends `batches` batches of `batch` entries of `entry_bytes`, one sync
/// each, and writes the same bytes raw with one `fdatasync` per batch;
/// each twice, alternating, keeping the faster run of each (the disk's
/// state after the previous run, e.g. freeing deleted files, otherwise
/// favours whichever runs second).
///
/// # Panics
/// On any I/O error (a benchmark has nothing to recover).
pub fn append_shape(base: &Path, entry_bytes: usize, batch: usize, batches: u64) -> AppendResult {
    let payload = Bytes::from(vec![0xa5; entry_bytes]);
    let make_batch = |first: u64| -> Vec<Entry> {
        (0..batch as u64)
            .map(|offset| Entry {
                term: 1,
                index: first + offset,
                kind: EntryKind::Normal,
                data: payload.clone(),
            })
            .collect()
    };
    let mut buf = Vec::new();
    for entry in make_batch(1) {
        record::encode(&Record::Entry(entry), &mut buf);
    }
    let batch_bytes = buf.len() as u64;
    let mut wal_best = Duration::MAX;
    let mut raw_best = Duration::MAX;
    let mut syncs_per_batch = 0.0;
    for _ in 0..2 {
        let (elapsed, syncs) = wal_round(base, batches, batch, &make_batch);
        wal_best = wal_best.min(elapsed);
        syncs_per_batch = syncs as f64 / batches as f64;
        raw_best = raw_best.min(raw_round(base, batches, &buf));
    }
    AppendResult {
        entry_bytes,
        batch,
        batches,
        wal: wal_best,
        raw: raw_best,
        batch_bytes,
        syncs_per_batch,
    }
}

fn wal_round(base: &Path, batches: u64, batch: usize, make_batch: &dyn Fn(u64) -> Vec<Entry>) -> (Duration, u64) {
    let dir = fresh_dir(base, "wal-bench");
    let fs = CountingFs::default();
    let mut wal = Wal::open(fs.clone(), &dir, WalOptions::default()).expect("open the WAL");
    let syncs_before = fs.syncs.load(Ordering::Relaxed);
    let started = Instant::now();
    for round in 0..batches {
        let entries = make_batch(1 + round * batch as u64);
        wal.append_entries(&entries).expect("append");
        wal.sync().expect("sync");
    }
    let elapsed = started.elapsed();
    let syncs = fs.syncs.load(Ordering::Relaxed) - syncs_before;
    assert_eq!(wal.last_index(), batches * batch as u64);
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
    (elapsed, syncs)
}

/// The raw figure: the same bytes written sequentially into fresh space (a
/// file pre-sized with zeros, as WAL segments are; never rewriting a
/// block), one fdatasync per batch.
fn raw_round(base: &Path, batches: u64, buf: &[u8]) -> Duration {
    std::fs::create_dir_all(base).expect("bench directory");
    let path = base.join("raw-bench");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("raw file");
    file.set_len(batches * buf.len() as u64).expect("pre-size");
    let started = Instant::now();
    let mut offset = 0u64;
    for _ in 0..batches {
        file.write_all_at(buf, offset).expect("raw write");
        file.sync_data().expect("raw fdatasync");
        offset += buf.len() as u64;
    }
    let elapsed = started.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    elapsed
}

/// Writes `log_bytes` of 1 KiB entries, then measures how long opening
/// (recovering) the WAL takes.
///
/// # Panics
/// On any I/O error.
pub fn recovery(base: &Path, log_bytes: u64) -> (u64, Duration) {
    let dir = fresh_dir(base, "wal-recovery");
    let mut wal = Wal::open(RealFs, &dir, WalOptions::default()).expect("open");
    let payload = Bytes::from(vec![0x3c; 1024]);
    let entries_total = log_bytes / 1024;
    let mut index = 1;
    while index <= entries_total {
        let entries: Vec<Entry> = (index..(index + 1024).min(entries_total + 1))
            .map(|at| Entry {
                term: 1,
                index: at,
                kind: EntryKind::Normal,
                data: payload.clone(),
            })
            .collect();
        index += entries.len() as u64;
        wal.append_entries(&entries).expect("append");
        wal.sync().expect("sync");
    }
    drop(wal);
    let started = Instant::now();
    let wal = Wal::open(RealFs, &dir, WalOptions::default()).expect("recover");
    let elapsed = started.elapsed();
    assert_eq!(wal.last_index(), entries_total);
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
    (entries_total, elapsed)
}

/// Runs every shape and prints Markdown tables.
pub fn run(base: &Path, quick: bool) {
    println!("## WAL appends with one fdatasync per batch, beside raw write + fdatasync of the same bytes\n");
    println!("directory: {}\n", base.display());
    println!("| entry B | batch | batches | WAL appends/s | WAL MiB/s | raw MiB/s | WAL / raw | fsyncs per batch |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for entry_bytes in [128usize, 1024, 64 << 10] {
        for batch in [1usize, 64, 1024] {
            let batch_bytes = (entry_bytes + 29) * batch;
            let budget: u64 = if quick { 16 << 20 } else { 256 << 20 };
            let batches = (budget / batch_bytes as u64).clamp(8, if quick { 200 } else { 2000 });
            let result = append_shape(base, entry_bytes, batch, batches);
            println!(
                "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.0} % | {:.2} |",
                result.entry_bytes,
                result.batch,
                result.batches,
                result.appends_per_second(result.wal),
                result.mib_per_second(result.wal),
                result.mib_per_second(result.raw),
                100.0 * result.raw.as_secs_f64() / result.wal.as_secs_f64(),
                result.syncs_per_batch
            );
        }
    }
    let log_bytes = if quick { 128 << 20 } else { 1 << 30 };
    let (entries, elapsed) = recovery(base, log_bytes);
    println!(
        "\n## Recovery\n\n{} MiB of log ({entries} entries of 1 KiB) recovered (opened) in {:.2} s\n",
        log_bytes >> 20,
        elapsed.as_secs_f64()
    );
}

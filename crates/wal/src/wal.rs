//! The WAL: segment files under `<dir>/wal/`, snapshot files under
//! `<dir>/snap/`, a `LOCK` file held while open.
//!
//! Segments are named by a sequence number, pre-sized with zeros to
//! `WalOptions::segment_bytes`, and start with a header record carrying the
//! hard state, compaction point and stored snapshot at the time the segment
//! was started, so every older segment can be deleted whole once compacted.
//! Records are buffered and written at `sync`, which then calls
//! `fdatasync` on every file touched since the previous sync.
//!
//! In memory: one 32-byte location per log entry (segment, offset, term)
//! and a cache of the most recent entries bounded by
//! `WalOptions::cache_bytes_max`; older entries are read from disk.
//!
//! Invariants: `locations` covers `compacted_index + 1 ..= last_index()`
//! contiguously; `cache` holds the last `cache.len()` of those entries;
//! every segment but the last is fully written.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raftwerk_raft::storage::{check_snapshot_to_store, PENDING_SNAPSHOTS_MAX};
use raftwerk_raft::{Entry, HardState, Index, LogStore, SnapshotChunk, SnapshotMeta, Storage, StorageError, Term};

use crate::errors::WalError;
use crate::fs::{FileSystem, WalFile};
use crate::record::{self, FrameError, Record, SnapshotRecord, HEADER_BYTES};
use crate::snapshot_files::{parse_snapshot_name, partial_name, snapshot_name, PARTIAL_SUFFIX};

const SEGMENT_SUFFIX: &str = ".seg";
/// Bytes read at a time when checking a snapshot file's CRC at open.
const SNAPSHOT_CHECK_CHUNK_BYTES: usize = 1 << 20;
/// Bytes allowed beyond `RECORD_BYTES_MAX` (or the segment size) when
/// judging whether a segment file is plausibly one the WAL wrote.
const SEGMENT_SLACK_BYTES: u64 = 1 << 20;

/// Largest entry the WAL records: larger ones could not be read back
/// (`Config::entry_bytes_max` must stay below it).
pub const ENTRY_BYTES_MAX: u64 = (record::RECORD_BYTES_MAX - 64) as u64;
const LOCK_FILE: &str = "LOCK";

/// Sizes the WAL works with.
#[derive(Clone, Copy, Debug)]
pub struct WalOptions {
    /// A segment is started once the current one would exceed this size
    /// (a single larger record gets a segment of its own).
    pub segment_bytes: u64,
    /// Bytes of recent entries kept in memory; reads below go to disk.
    pub cache_bytes_max: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            cache_bytes_max: 64 << 20,
        }
    }
}

/// Where an entry's record is.
#[derive(Clone, Copy, Debug)]
struct Location {
    seq: u64,
    offset: u64,
    len: u32,
    term: Term,
}

struct Segment<F> {
    seq: u64,
    path: PathBuf,
    file: F,
    /// Highest entry index ever written to it (0: none).
    max_index: Index,
    /// Written since the last sync.
    dirty: bool,
}

/// A snapshot being written chunk by chunk.
struct PendingSnapshot<F> {
    index: Index,
    term: Term,
    path: PathBuf,
    file: F,
    len: u64,
    crc: u32,
    dirty: bool,
}

/// The write-ahead log of one node over file system `FS`.
pub struct Wal<FS: FileSystem> {
    fs: FS,
    wal_dir: PathBuf,
    snap_dir: PathBuf,
    options: WalOptions,
    /// Held for the WAL's lifetime: a second process cannot open the directory.
    _lock: FS::File,
    /// Oldest first; the last one is written to.
    segments: Vec<Segment<FS::File>>,
    /// Bytes of the last segment already written to its file.
    write_pos: u64,
    /// The last segment holds nothing but its header.
    active_empty: bool,
    /// Records for the last segment, from `write_pos` on, not written yet.
    buffer: Vec<u8>,
    /// A segment file was created or removed since the last directory sync.
    wal_dir_dirty: bool,
    hard_state: HardState,
    compacted_index: Index,
    compacted_term: Term,
    locations: VecDeque<Location>,
    cache: VecDeque<Entry>,
    cache_bytes: u64,
    snapshot: Option<SnapshotRecord>,
    /// Replaced snapshots still kept for transfers (`retain_snapshots`).
    older_snapshots: Vec<SnapshotRecord>,
    /// Snapshots being written (the node's own and one from a leader may
    /// be written at the same time).
    pending: Vec<PendingSnapshot<FS::File>>,
    /// Set by the first I/O error: the WAL refuses all further writes.
    failed: Option<String>,
}

/// Recovery state built while scanning segments.
#[derive(Default)]
struct Recovered {
    hard_state: HardState,
    compacted_index: Index,
    compacted_term: Term,
    locations: VecDeque<Location>,
    snapshot: Option<SnapshotRecord>,
    /// The oldest remaining segment's entries start after a gap (its
    /// predecessors were deleted by a compaction): entries up to this index
    /// are missing until a later `Compact` or `Reset` record accounts for
    /// them; if none does, the log is damaged.
    gap: Option<Index>,
    /// The compaction point recorded by a header, `Compact` or `Reset`
    /// record (while `gap` is set, `compacted_index` is only inferred).
    known_compacted: Index,
}

impl Recovered {
    fn last_index(&self) -> Index {
        self.compacted_index + self.locations.len() as Index
    }
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    u64::from_str_radix(name.strip_suffix(SEGMENT_SUFFIX)?, 16).ok()
}

fn storage_io(error: impl std::fmt::Display) -> StorageError {
    StorageError::Io(error.to_string())
}

impl<FS: FileSystem> Wal<FS> {
    /// Opens (creating if needed) the WAL in `dir` and recovers its state.
    ///
    /// # Errors
    /// `Locked` when another process holds the directory, `Corrupt` for a
    /// damaged record followed by intact ones (or any damage outside the
    /// last segment), `SnapshotDamaged` for a recorded snapshot whose file
    /// is missing or of the wrong size, `Io` otherwise.
    pub fn open(fs: FS, dir: &Path, options: WalOptions) -> Result<Self, WalError> {
        let wal_dir = dir.join("wal");
        let snap_dir = dir.join("snap");
        fs.create_dir_all(&wal_dir).map_err(WalError::io(&wal_dir))?;
        fs.create_dir_all(&snap_dir).map_err(WalError::io(&snap_dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs.open(&lock_path, true).map_err(WalError::io(&lock_path))?;
        if !lock.try_lock().map_err(WalError::io(&lock_path))? {
            return Err(WalError::Locked { dir: dir.to_path_buf() });
        }
        fs.sync_dir(dir).map_err(WalError::io(dir))?;
        if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            // The data directory's own name must survive a crash too.
            fs.sync_dir(parent).map_err(WalError::io(parent))?;
        }

        let mut seqs: Vec<u64> = fs
            .list_dir(&wal_dir)
            .map_err(WalError::io(&wal_dir))?
            .iter()
            .filter_map(|name| parse_segment_name(name))
            .collect();
        seqs.sort_unstable();
        let mut recovered = Recovered::default();
        let mut scanned = Vec::with_capacity(seqs.len());
        for (position, &seq) in seqs.iter().enumerate() {
            let path = wal_dir.join(segment_name(seq));
            let file = fs.open(&path, false).map_err(WalError::io(&path))?;
            let is_last = position + 1 == seqs.len();
            let (end, max_index) = scan_segment(
                &file,
                &path,
                seq,
                position == 0,
                is_last,
                options.segment_bytes,
                &mut recovered,
            )?;
            scanned.push((
                Segment {
                    seq,
                    path,
                    file,
                    max_index,
                    dirty: false,
                },
                end,
            ));
        }
        if let Some(gap) = recovered.gap {
            return Err(WalError::Corrupt {
                file: wal_dir.clone(),
                offset: 0,
                reason: format!("entries up to {gap} are missing and no compaction record accounts for them"),
            });
        }
        // The verdict is in: now repair. A last segment torn while being
        // started holds nothing and goes; the data of the (new) last
        // segment ends where its scan ended, and whatever a torn write left
        // after that is cleared, so later appends are never followed by
        // stale bytes.
        let mut wal_dir_dirty = false;
        if scanned.last().is_some_and(|(_, end)| *end == 0) {
            let (segment, _) = scanned.pop().expect("just seen");
            drop(segment.file);
            fs.remove_file(&segment.path).map_err(WalError::io(&segment.path))?;
            wal_dir_dirty = true;
        }
        let mut write_pos = 0;
        if let Some((segment, end)) = scanned.last() {
            write_pos = *end;
            let len = segment.file.len().map_err(WalError::io(&segment.path))?;
            if len > *end {
                segment.file.set_len(*end).map_err(WalError::io(&segment.path))?;
                segment.file.set_len(len).map_err(WalError::io(&segment.path))?;
                segment.file.sync_data().map_err(WalError::io(&segment.path))?;
            }
        }
        let segments: Vec<Segment<FS::File>> = scanned.into_iter().map(|(segment, _)| segment).collect();
        let mut wal = Wal {
            fs,
            wal_dir,
            snap_dir,
            options,
            _lock: lock,
            segments,
            write_pos,
            active_empty: false,
            buffer: Vec::new(),
            wal_dir_dirty,
            hard_state: recovered.hard_state,
            compacted_index: recovered.compacted_index,
            compacted_term: recovered.compacted_term,
            locations: recovered.locations,
            cache: VecDeque::new(),
            cache_bytes: 0,
            snapshot: recovered.snapshot,
            older_snapshots: Vec::new(),
            pending: Vec::new(),
            failed: None,
        };
        wal.open_snapshot_files()?;
        if wal.segments.is_empty() {
            wal.start_segment(1).map_err(|error| WalError::Io {
                path: wal.wal_dir.clone(),
                source: std::io::Error::other(error.to_string()),
            })?;
            wal.sync().map_err(|error| WalError::Io {
                path: wal.wal_dir.clone(),
                source: std::io::Error::other(error.to_string()),
            })?;
        } else if wal.wal_dir_dirty {
            wal.fs.sync_dir(&wal.wal_dir).map_err(WalError::io(&wal.wal_dir))?;
            wal.wal_dir_dirty = false;
        }
        Ok(wal)
    }

    /// Checks the recorded snapshot's file and removes every other file in
    /// `snap/` (partial writes, snapshots no longer recorded).
    fn open_snapshot_files(&mut self) -> Result<(), WalError> {
        let names = self.fs.list_dir(&self.snap_dir).map_err(WalError::io(&self.snap_dir))?;
        let keep = self
            .snapshot
            .as_ref()
            .map(|snapshot| snapshot_name(snapshot.meta.index, snapshot.meta.term));
        let mut removed = false;
        for name in &names {
            let recorded = keep.as_deref() == Some(name.as_str());
            if !recorded && (name.ends_with(PARTIAL_SUFFIX) || parse_snapshot_name(name).is_some()) {
                let path = self.snap_dir.join(name);
                self.fs.remove_file(&path).map_err(WalError::io(&path))?;
                removed = true;
            }
        }
        if removed {
            self.fs.sync_dir(&self.snap_dir).map_err(WalError::io(&self.snap_dir))?;
        }
        if let Some(snapshot) = &self.snapshot {
            let path = self
                .snap_dir
                .join(snapshot_name(snapshot.meta.index, snapshot.meta.term));
            let damaged = |reason: String| WalError::SnapshotDamaged {
                file: path.clone(),
                reason,
            };
            let file = self.fs.open(&path, false).map_err(|error| damaged(error.to_string()))?;
            let len = file.len().map_err(|error| damaged(error.to_string()))?;
            if len != snapshot.data_bytes {
                return Err(damaged(format!(
                    "{len} bytes, the WAL recorded {}",
                    snapshot.data_bytes
                )));
            }
            // The data is checked once per start, in bounded reads, so a
            // damaged snapshot is never sent to a follower.
            let mut crc = 0u32;
            let mut buf = vec![0; SNAPSHOT_CHECK_CHUNK_BYTES.min(len as usize)];
            let mut offset = 0u64;
            while offset < len {
                let count = ((len - offset) as usize).min(buf.len());
                file.read_exact_at(&mut buf[..count], offset)
                    .map_err(|error| damaged(error.to_string()))?;
                crc = crc32c::crc32c_append(crc, &buf[..count]);
                offset += count as u64;
            }
            if crc != snapshot.data_crc {
                return Err(damaged(format!(
                    "CRC-32C {crc:08x}, the WAL recorded {:08x}",
                    snapshot.data_crc
                )));
            }
        }
        Ok(())
    }

    // ----- Accessors ---------------------------------------------------------

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes of entries held in the in-memory cache.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }

    /// The first I/O error, after which every write is refused.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn last_index_inner(&self) -> Index {
        self.compacted_index + self.locations.len() as Index
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(failure) => Err(StorageError::Io(format!(
                "the WAL failed earlier and refuses writes: {failure}"
            ))),
            None => Ok(()),
        }
    }

    /// Records the first I/O error; the node must stop.
    fn fail(&mut self, what: &str, error: impl std::fmt::Display) -> StorageError {
        let message = format!("{what}: {error}");
        tracing::error!(wal = %self.wal_dir.display(), error = %message, "WAL I/O failed; the node must stop");
        self.failed.get_or_insert(message.clone());
        StorageError::Io(message)
    }

    // ----- Writing records ---------------------------------------------------

    fn active(&self) -> &Segment<FS::File> {
        self.segments.last().expect("a WAL always has a segment")
    }

    /// Buffers `record` for the active segment, starting a new segment
    /// first when it would not fit. Returns where it will be.
    fn append_record(&mut self, record: &Record) -> Result<(u64, u64, u32), StorageError> {
        match record {
            Record::Entry(entry) => self.append_encoded(|buf| record::encode_entry(entry, buf)),
            other => self.append_encoded(|buf| record::encode(other, buf)),
        }
    }

    fn append_encoded(&mut self, encode: impl FnOnce(&mut Vec<u8>) -> usize) -> Result<(u64, u64, u32), StorageError> {
        let start = self.buffer.len();
        let len = encode(&mut self.buffer) as u64;
        let offset = self.write_pos + start as u64;
        if offset + len > self.options.segment_bytes && !self.active_empty {
            let bytes = self.buffer.split_off(start);
            let next_seq = self.active().seq + 1;
            self.start_segment(next_seq)?;
            let offset = self.write_pos + self.buffer.len() as u64;
            self.buffer.extend_from_slice(&bytes);
            self.active_empty = false;
            return Ok((self.active().seq, offset, len as u32));
        }
        self.active_empty = false;
        Ok((self.active().seq, offset, len as u32))
    }

    fn header_record(&self, seq: u64) -> Record {
        Record::SegmentHeader {
            seq,
            hard_state: self.hard_state,
            compacted_index: self.compacted_index,
            compacted_term: self.compacted_term,
            snapshot: self.snapshot.clone(),
        }
    }

    /// Writes out the active segment's buffer and starts segment `seq`.
    fn start_segment(&mut self, seq: u64) -> Result<(), StorageError> {
        self.check_usable()?;
        if let Some(active) = self.segments.last_mut() {
            if !self.buffer.is_empty() {
                if let Err(error) = active.file.write_at(&self.buffer, self.write_pos) {
                    let what = format!("writing {}", active.path.display());
                    return Err(self.fail(&what, error));
                }
                self.buffer.clear();
            }
            // The finished segment is durable before anything reaches the
            // next one, so a crash can only ever lose a suffix of the log.
            if let Err(error) = active.file.sync_data() {
                let what = format!("fdatasync of {}", active.path.display());
                return Err(self.fail(&what, error));
            }
            active.dirty = false;
        }
        let path = self.wal_dir.join(segment_name(seq));
        let file = match self.fs.open(&path, true) {
            Ok(file) => file,
            Err(error) => return Err(self.fail(&format!("creating {}", path.display()), error)),
        };
        // Pre-size with zeros: the data's end is the first zero header, and
        // syncs need not update the file size.
        if let Err(error) = file.set_len(self.options.segment_bytes) {
            return Err(self.fail(&format!("sizing {}", path.display()), error));
        }
        self.segments.push(Segment {
            seq,
            path,
            file,
            max_index: 0,
            dirty: true,
        });
        self.wal_dir_dirty = true;
        self.write_pos = 0;
        self.active_empty = true;
        let header = self.header_record(seq);
        record::encode(&header, &mut self.buffer);
        Ok(())
    }

    fn cache_push(&mut self, entry: Entry) {
        self.cache_bytes += entry.size_bytes();
        self.cache.push_back(entry);
        while self.cache_bytes > self.options.cache_bytes_max {
            let Some(old) = self.cache.pop_front() else {
                break;
            };
            self.cache_bytes -= old.size_bytes();
        }
    }

    fn cache_truncate_from(&mut self, index: Index) {
        while self.cache.back().is_some_and(|entry| entry.index >= index) {
            let entry = self.cache.pop_back().expect("just seen");
            self.cache_bytes -= entry.size_bytes();
        }
    }

    fn cache_compact_to(&mut self, index: Index) {
        while self.cache.front().is_some_and(|entry| entry.index <= index) {
            let entry = self.cache.pop_front().expect("just seen");
            self.cache_bytes -= entry.size_bytes();
        }
    }

    /// Reads the entry at `index` (within the log) from cache, buffer or disk.
    fn read_entry(&self, index: Index) -> Result<Entry, StorageError> {
        if let Some(first) = self.cache.front() {
            if index >= first.index {
                return Ok(self.cache[(index - first.index) as usize].clone());
            }
        }
        let location = self.locations[(index - self.compacted_index - 1) as usize];
        let mut bytes = vec![0; location.len as usize];
        let active_seq = self.active().seq;
        if location.seq == active_seq && location.offset >= self.write_pos {
            let start = (location.offset - self.write_pos) as usize;
            bytes.copy_from_slice(&self.buffer[start..start + location.len as usize]);
        } else {
            let segment = self
                .segments
                .iter()
                .find(|segment| segment.seq == location.seq)
                .ok_or_else(|| StorageError::Io(format!("segment {} of entry {index} is gone", location.seq)))?;
            segment
                .file
                .read_exact_at(&mut bytes, location.offset)
                .map_err(|error| {
                    storage_io(format!(
                        "reading entry {index} from {}: {error}",
                        segment.path.display()
                    ))
                })?;
        }
        let (kind, payload) = record::check_frame(&bytes)
            .map_err(|error| storage_io(format!("entry {index} on disk is damaged: {error:?}")))?;
        match record::decode(kind, payload) {
            Ok(Record::Entry(entry)) if entry.index == index => Ok(entry),
            other => Err(storage_io(format!("record at entry {index}'s location is {other:?}"))),
        }
    }

    fn snapshot_record(&self, index: Index) -> Option<&SnapshotRecord> {
        self.snapshot
            .iter()
            .chain(&self.older_snapshots)
            .find(|snapshot| snapshot.meta.index == index)
    }

    /// Makes the pending snapshot `(meta.index, meta.term)` complete and
    /// durable under its final name, and records it.
    fn promote_pending(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        self.check_usable()?;
        check_snapshot_to_store(meta, self.snapshot.as_ref().map_or(0, |snapshot| snapshot.meta.index))?;
        let Some(at) = self
            .pending
            .iter()
            .position(|pending| pending.index == meta.index && pending.term == meta.term)
        else {
            return Err(StorageError::SnapshotUnavailable { index: meta.index });
        };
        let pending = self.pending.swap_remove(at);
        let final_path = self.snap_dir.join(snapshot_name(meta.index, meta.term));
        if let Err(error) = pending.file.sync_data() {
            return Err(self.fail(&format!("syncing {}", pending.path.display()), error));
        }
        drop(pending.file);
        if let Err(error) = self.fs.rename(&pending.path, &final_path) {
            return Err(self.fail(&format!("renaming {}", pending.path.display()), error));
        }
        // Other pending snapshots stay: writes the core already handed out
        // may still reach them (they are dropped when new ones start).
        if let Err(error) = self.fs.sync_dir(&self.snap_dir) {
            return Err(self.fail(&format!("syncing {}", self.snap_dir.display()), error));
        }
        let record = SnapshotRecord {
            meta: meta.clone(),
            data_bytes: pending.len,
            data_crc: pending.crc,
        };
        self.append_record(&Record::Snapshot(record.clone()))?;
        if let Some(previous) = self.snapshot.replace(record) {
            self.older_snapshots.push(previous);
        }
        Ok(())
    }
}

/// Scans one segment, applying its records to `recovered`. Returns the end
/// of its valid data and the highest entry index in it.
fn scan_segment<F: WalFile>(
    file: &F,
    path: &Path,
    seq: u64,
    first: bool,
    is_last: bool,
    segment_bytes: u64,
    recovered: &mut Recovered,
) -> Result<(u64, Index), WalError> {
    let len = file.len().map_err(WalError::io(path))?;
    let plausible = segment_bytes.max(record::RECORD_BYTES_MAX as u64) + SEGMENT_SLACK_BYTES;
    if len > plausible {
        return Err(WalError::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            reason: format!("{len} bytes, more than any segment this WAL writes ({plausible})"),
        });
    }
    let mut data = vec![0; len as usize];
    file.read_exact_at(&mut data, 0).map_err(WalError::io(path))?;
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut pos = 0usize;
    let mut max_index = 0;
    loop {
        let (kind, payload) = match record::check_frame(&data[pos..]) {
            Ok(frame) => frame,
            Err(FrameError::End) if pos > 0 => break,
            Err(error) => {
                if is_last && is_torn(&data, pos) {
                    // A torn tail: the last write never completed.
                    tracing::warn!(file = %path.display(), offset = pos, "truncating a torn WAL tail");
                    return Ok((pos as u64, max_index));
                }
                return Err(corrupt(pos, format!("{error:?}")));
            }
        };
        let frame_len = HEADER_BYTES + payload.len();
        if pos == 0 && !record::is_segment_header(kind) {
            return Err(corrupt(pos, "segment does not start with its header".to_string()));
        }
        if record::is_entry(kind) {
            let (term, index) = record::entry_position(payload).map_err(|error| corrupt(pos, format!("{error:?}")))?;
            if index > recovered.compacted_index {
                let last = recovered.last_index();
                if index > last + 1 && recovered.locations.is_empty() && recovered.gap.is_none() {
                    recovered.gap = Some(index - 1);
                    recovered.compacted_index = index - 1;
                    recovered.compacted_term = 0;
                } else if index != last + 1 {
                    return Err(corrupt(pos, format!("entry {index} does not follow entry {last}")));
                }
                recovered.locations.push_back(Location {
                    seq,
                    offset: pos as u64,
                    len: frame_len as u32,
                    term,
                });
            }
            max_index = max_index.max(index);
        } else {
            let record = record::decode(kind, payload).map_err(|error| corrupt(pos, format!("{error:?}")))?;
            apply_record(record, pos, seq, first, recovered).map_err(|reason| corrupt(pos, reason))?;
        }
        pos += frame_len;
    }
    Ok((pos as u64, max_index))
}

/// Bytes of a disk sector: a write that never fully reached the disk
/// leaves whole sectors of the pre-zeroed segment behind.
const SECTOR_BYTES: usize = 512;

/// Whether the damaged record at `pos` of the last segment is a torn write
/// rather than corruption: a record whose header is plausible but which
/// overlaps an all-zero sector was cut short (sectors may reach the disk
/// out of order); otherwise it is torn unless an intact record starts
/// after the extent it claims (a valid frame inside its own payload proves
/// nothing). A flipped bit in a record next to a sector of zero data is
/// taken for a torn write too: the price of accepting out-of-order sectors.
fn is_torn(data: &[u8], pos: usize) -> bool {
    let header = &data[pos..data.len().min(pos + HEADER_BYTES)];
    let claimed_len = (header.len() == HEADER_BYTES && header[0..2] == *b"RW")
        .then(|| u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize)
        .filter(|len| *len <= record::RECORD_BYTES_MAX);
    let Some(claimed_len) = claimed_len else {
        return !intact_record_after(data, pos + 1);
    };
    let extent_end = (pos + HEADER_BYTES + claimed_len).min(data.len());
    // Any sector the record overlaps that is entirely zero.
    let first_sector = pos / SECTOR_BYTES * SECTOR_BYTES;
    let zero_sector = (first_sector..extent_end)
        .step_by(SECTOR_BYTES)
        .filter(|start| start + SECTOR_BYTES <= data.len())
        .any(|start| data[start..start + SECTOR_BYTES].iter().all(|byte| *byte == 0));
    zero_sector || !intact_record_after(data, extent_end.max(pos + 1))
}

/// Whether any intact record starts at or after `from`: a damaged record
/// with intact ones after it is corruption, not a torn tail.
fn intact_record_after(data: &[u8], from: usize) -> bool {
    (from..data.len().saturating_sub(HEADER_BYTES - 1))
        .filter(|&at| data[at] == b'R' && data[at + 1] == b'W')
        .any(|at| record::check_frame(&data[at..]).is_ok())
}

fn apply_record(record: Record, pos: usize, seq: u64, first: bool, recovered: &mut Recovered) -> Result<(), String> {
    match record {
        Record::SegmentHeader {
            seq: header_seq,
            hard_state,
            compacted_index,
            compacted_term,
            snapshot,
        } => {
            if pos != 0 || header_seq != seq {
                return Err(format!(
                    "segment header for segment {header_seq} in segment {seq} at {pos}"
                ));
            }
            // The oldest segment's header is where the state starts; later
            // headers repeat what the records before them said.
            if first {
                recovered.hard_state = hard_state;
                recovered.compacted_index = compacted_index;
                recovered.known_compacted = compacted_index;
                recovered.compacted_term = compacted_term;
                recovered.snapshot = snapshot;
            }
        }
        Record::Entry(_) => unreachable!("entries are handled by position"),
        Record::HardState(hard_state) => recovered.hard_state = hard_state,
        Record::Truncate { from } => {
            if from <= recovered.known_compacted {
                return Err(format!("truncation from {from} reaches compacted entries"));
            }
            if from <= recovered.compacted_index {
                // Into the gap left by deleted segments: the entries it
                // drops were there; a later compaction accounts for them.
                recovered.locations.clear();
                recovered.compacted_index = from - 1;
                recovered.gap = Some(from - 1);
            } else {
                let keep = (from - recovered.compacted_index - 1) as usize;
                recovered.locations.truncate(keep);
            }
        }
        Record::Compact { index, term } => {
            let drop = index.saturating_sub(recovered.compacted_index) as usize;
            // With no entry seen yet, the compacted entries were all in
            // segments deleted after this record became durable.
            let drop = if recovered.locations.is_empty() { 0 } else { drop };
            if drop > recovered.locations.len() {
                return Err(format!(
                    "compaction to {index} beyond the log ({})",
                    recovered.last_index()
                ));
            }
            recovered.locations.drain(..drop);
            recovered.compacted_index = recovered.compacted_index.max(index);
            recovered.known_compacted = index;
            recovered.compacted_term = term;
            if recovered.gap.is_some_and(|gap| index >= gap) {
                recovered.gap = None;
            }
        }
        Record::Snapshot(snapshot) => recovered.snapshot = Some(snapshot),
        Record::Reset { index, term } => {
            recovered.gap = None;
            recovered.known_compacted = index;
            recovered.locations.clear();
            recovered.compacted_index = index;
            recovered.compacted_term = term;
        }
    }
    Ok(())
}

impl<FS: FileSystem> Storage for Wal<FS> {
    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn first_index(&self) -> Index {
        self.compacted_index + 1
    }

    fn last_index(&self) -> Index {
        self.last_index_inner()
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index == self.compacted_index {
            return Ok(self.compacted_term);
        }
        if index < self.compacted_index {
            return Err(StorageError::Compacted {
                index,
                first_index: self.compacted_index + 1,
            });
        }
        match self.locations.get((index - self.compacted_index - 1) as usize) {
            Some(location) => Ok(location.term),
            None => Err(StorageError::Unavailable {
                index,
                last_index: self.last_index_inner(),
            }),
        }
    }

    fn entries(&self, low: Index, high: Index, bytes_max: u64) -> Result<Vec<Entry>, StorageError> {
        if low <= self.compacted_index {
            return Err(StorageError::Compacted {
                index: low,
                first_index: self.compacted_index + 1,
            });
        }
        let last = self.last_index_inner();
        if high > last + 1 {
            return Err(StorageError::Unavailable {
                index: high - 1,
                last_index: last,
            });
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for index in low..high {
            let entry = self.read_entry(index)?;
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    fn snapshot(&self) -> Option<SnapshotMeta> {
        self.snapshot.as_ref().map(|snapshot| snapshot.meta.clone())
    }

    fn snapshot_chunk(&self, index: Index, offset: u64, bytes_max: u64) -> Result<SnapshotChunk, StorageError> {
        let Some(snapshot) = self.snapshot_record(index) else {
            return Err(StorageError::SnapshotUnavailable { index });
        };
        let path = self
            .snap_dir
            .join(snapshot_name(snapshot.meta.index, snapshot.meta.term));
        let file = self
            .fs
            .open(&path, false)
            .map_err(|error| storage_io(format!("opening {}: {error}", path.display())))?;
        let start = offset.min(snapshot.data_bytes);
        let end = start.saturating_add(bytes_max.max(1)).min(snapshot.data_bytes);
        let mut data = vec![0; (end - start) as usize];
        file.read_exact_at(&mut data, start)
            .map_err(|error| storage_io(format!("reading {}: {error}", path.display())))?;
        Ok(SnapshotChunk {
            data: Bytes::from(data),
            last: end == snapshot.data_bytes,
        })
    }
}

impl<FS: FileSystem> LogStore for Wal<FS> {
    fn append_entries(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        self.check_usable()?;
        let last = self.last_index_inner();
        assert!(
            first.index > self.compacted_index,
            "append at {} below the first stored index {}",
            first.index,
            self.compacted_index + 1
        );
        assert!(
            first.index <= last + 1,
            "append at {} leaves a gap after {last}",
            first.index
        );
        for pair in entries.windows(2) {
            assert_eq!(pair[0].index + 1, pair[1].index, "entries not contiguous");
        }
        if let Some(large) = entries.iter().find(|entry| entry.data.len() as u64 > ENTRY_BYTES_MAX) {
            return Err(StorageError::EntryTooLarge {
                index: large.index,
                bytes: large.data.len() as u64,
                limit: ENTRY_BYTES_MAX,
            });
        }
        if first.index <= last {
            self.append_record(&Record::Truncate { from: first.index })?;
            self.locations
                .truncate((first.index - self.compacted_index - 1) as usize);
            self.cache_truncate_from(first.index);
        }
        for entry in entries {
            let (seq, offset, len) = self.append_encoded(|buf| record::encode_entry(entry, buf))?;
            self.locations.push_back(Location {
                seq,
                offset,
                len,
                term: entry.term,
            });
            let active = self.segments.last_mut().expect("a WAL always has a segment");
            active.max_index = active.max_index.max(entry.index);
            self.cache_push(entry.clone());
        }
        Ok(())
    }

    fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.check_usable()?;
        assert!(
            hard_state.term >= self.hard_state.term,
            "hard state term went backwards: {} -> {}",
            self.hard_state.term,
            hard_state.term
        );
        self.append_record(&Record::HardState(hard_state))?;
        self.hard_state = hard_state;
        Ok(())
    }

    fn compact_to(&mut self, index: Index) -> Result<(), StorageError> {
        self.check_usable()?;
        if index <= self.compacted_index {
            return Err(StorageError::Compacted {
                index,
                first_index: self.compacted_index + 1,
            });
        }
        let term = self.term(index)?;
        let snapshot_index = self.snapshot.as_ref().map_or(0, |snapshot| snapshot.meta.index);
        if index > snapshot_index {
            return Err(StorageError::BeyondSnapshot { index, snapshot_index });
        }
        self.append_record(&Record::Compact { index, term })?;
        self.locations.drain(..(index - self.compacted_index) as usize);
        self.compacted_index = index;
        self.compacted_term = term;
        self.cache_compact_to(index);
        // Whole segments go only once the record making them obsolete is
        // durable; a crash in between leaves them, harmlessly.
        self.sync()?;
        // Whole segments whose entries are all compacted go, oldest first.
        // The durable `Compact` record after them accounts for the entries
        // recovery will find missing (see `Recovered::gap`).
        let delete = self
            .segments
            .iter()
            .take(self.segments.len() - 1)
            .take_while(|segment| segment.max_index <= index)
            .count();
        for segment in self.segments.drain(..delete).collect::<Vec<_>>() {
            drop(segment.file);
            if let Err(error) = self.fs.remove_file(&segment.path) {
                return Err(self.fail(&format!("removing {}", segment.path.display()), error));
            }
        }
        if delete > 0 {
            if let Err(error) = self.fs.sync_dir(&self.wal_dir) {
                return Err(self.fail(&format!("syncing {}", self.wal_dir.display()), error));
            }
        }
        Ok(())
    }

    fn write_snapshot_chunk(&mut self, index: Index, term: Term, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        self.check_usable()?;
        let slot = self
            .pending
            .iter()
            .position(|pending| pending.index == index && pending.term == term);
        let at = match (slot, offset) {
            (Some(at), 0) => {
                let pending = &mut self.pending[at];
                if let Err(error) = pending.file.set_len(0) {
                    let what = format!("truncating {}", pending.path.display());
                    return Err(self.fail(&what, error));
                }
                pending.len = 0;
                pending.crc = 0;
                at
            }
            (None, 0) => {
                if self.pending.len() >= PENDING_SNAPSHOTS_MAX {
                    let oldest = (0..self.pending.len())
                        .min_by_key(|&at| self.pending[at].index)
                        .expect("at the bound, so not empty");
                    let dropped = self.pending.swap_remove(oldest);
                    drop(dropped.file);
                    if let Err(error) = self.fs.remove_file(&dropped.path) {
                        return Err(self.fail(&format!("removing {}", dropped.path.display()), error));
                    }
                }
                let path = self.snap_dir.join(partial_name(index, term));
                let file = match self
                    .fs
                    .open(&path, true)
                    .and_then(|file| file.set_len(0).map(|()| file))
                {
                    Ok(file) => file,
                    Err(error) => return Err(self.fail(&format!("creating {}", path.display()), error)),
                };
                self.pending.push(PendingSnapshot {
                    index,
                    term,
                    path,
                    file,
                    len: 0,
                    crc: 0,
                    dirty: false,
                });
                self.pending.len() - 1
            }
            (Some(at), _) if self.pending[at].len == offset => at,
            // A superseded transfer: the node's own snapshot covers it.
            (None, _) if self.snapshot.as_ref().is_some_and(|stored| stored.meta.index >= index) => return Ok(()),
            (slot, _) => {
                return Err(StorageError::ChunkOutOfOrder {
                    offset,
                    pending: slot.map_or(0, |at| self.pending[at].len),
                })
            }
        };
        let pending = &mut self.pending[at];
        if let Err(error) = pending.file.write_at(data, pending.len) {
            let what = format!("writing {}", pending.path.display());
            return Err(self.fail(&what, error));
        }
        pending.len += data.len() as u64;
        pending.crc = crc32c::crc32c_append(pending.crc, data);
        pending.dirty = true;
        Ok(())
    }

    fn save_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        self.promote_pending(meta)
    }

    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        self.promote_pending(meta)?;
        self.append_record(&Record::Reset {
            index: meta.index,
            term: meta.term,
        })?;
        self.locations.clear();
        self.cache.clear();
        self.cache_bytes = 0;
        self.compacted_index = meta.index;
        self.compacted_term = meta.term;
        Ok(())
    }

    fn retain_snapshots(&mut self, in_use: &[Index]) -> Result<(), StorageError> {
        self.check_usable()?;
        let (kept, released): (Vec<_>, Vec<_>) = std::mem::take(&mut self.older_snapshots)
            .into_iter()
            .partition(|snapshot| in_use.contains(&snapshot.meta.index));
        self.older_snapshots = kept;
        if released.is_empty() {
            return Ok(());
        }
        // The record of the snapshot that replaced them must be durable
        // before their files go, or a crash would leave a recorded
        // snapshot without its file.
        self.sync()?;
        for snapshot in released {
            let path = self
                .snap_dir
                .join(snapshot_name(snapshot.meta.index, snapshot.meta.term));
            if let Err(error) = self.fs.remove_file(&path) {
                return Err(self.fail(&format!("removing {}", path.display()), error));
            }
        }
        if let Err(error) = self.fs.sync_dir(&self.snap_dir) {
            return Err(self.fail(&format!("syncing {}", self.snap_dir.display()), error));
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        if !self.buffer.is_empty() {
            let active = self.segments.last_mut().expect("a WAL always has a segment");
            if let Err(error) = active.file.write_at(&self.buffer, self.write_pos) {
                let what = format!("writing {}", active.path.display());
                return Err(self.fail(&what, error));
            }
            active.dirty = true;
            self.write_pos += self.buffer.len() as u64;
            self.buffer.clear();
        }
        for at in 0..self.segments.len() {
            if !self.segments[at].dirty {
                continue;
            }
            if let Err(error) = self.segments[at].file.sync_data() {
                let what = format!("fdatasync of {}", self.segments[at].path.display());
                return Err(self.fail(&what, error));
            }
            self.segments[at].dirty = false;
        }
        for at in 0..self.pending.len() {
            if !self.pending[at].dirty {
                continue;
            }
            if let Err(error) = self.pending[at].file.sync_data() {
                let what = format!("fdatasync of {}", self.pending[at].path.display());
                return Err(self.fail(&what, error));
            }
            self.pending[at].dirty = false;
        }
        if self.wal_dir_dirty {
            if let Err(error) = self.fs.sync_dir(&self.wal_dir) {
                let what = format!("syncing {}", self.wal_dir.display());
                return Err(self.fail(&what, error));
            }
            self.wal_dir_dirty = false;
        }
        Ok(())
    }
}

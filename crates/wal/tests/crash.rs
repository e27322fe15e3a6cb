//! Property test: thousands of seeded random operation sequences on the
//! WAL over `SimFs`, with crashes at random points — after unsynced
//! writes, inside a failing sync with the last write torn at a random byte
//! — and recovery checked against a model after every crash:
//!
//! - everything synced is recovered, with the right bytes;
//! - what is recovered beyond that is a prefix of the records written
//!   since (never a truncated or compacted entry coming back, never a
//!   mix of two hard states);
//! - a failed sync poisons the WAL.

use std::path::Path;

use bytes::Bytes;
use raftwerk_raft::{
    Configuration, Entry, EntryKind, HardState, Index, LogStore, SeededRng, SnapshotMeta, Storage, Term,
};
use raftwerk_wal::{SimFs, Wal, WalOptions};

const SEEDS: u64 = 5000;
const OPS_PER_SEED: usize = 80;
const DIR: &str = "/node";

/// What the WAL should hold.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    hard_state: HardState,
    compacted: (Index, Term),
    entries: Vec<Entry>,
    snapshot: Option<SnapshotMeta>,
}

/// One record's effect, in the order records are written.
#[derive(Clone, Debug)]
enum Op {
    Truncate(Index),
    Entry(Entry),
    HardState(HardState),
    Snapshot(SnapshotMeta),
    Compact(Index, Term),
    Reset(Index, Term),
}

impl Model {
    fn last_index(&self) -> Index {
        self.compacted.0 + self.entries.len() as Index
    }

    fn term(&self, index: Index) -> Term {
        if index == self.compacted.0 {
            self.compacted.1
        } else {
            self.entries[(index - self.compacted.0 - 1) as usize].term
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Truncate(from) => self.entries.truncate((from - self.compacted.0 - 1) as usize),
            Op::Entry(entry) => self.entries.push(entry.clone()),
            Op::HardState(hard_state) => self.hard_state = *hard_state,
            Op::Snapshot(meta) => self.snapshot = Some(meta.clone()),
            Op::Compact(index, term) => {
                self.entries.drain(..(index - self.compacted.0) as usize);
                self.compacted = (*index, *term);
            }
            Op::Reset(index, term) => {
                self.entries.clear();
                self.compacted = (*index, *term);
            }
        }
    }

    /// The model of what `wal` holds.
    fn read(wal: &Wal<SimFs>) -> Model {
        let first = wal.first_index();
        Model {
            hard_state: wal.hard_state(),
            compacted: (first - 1, wal.term(first - 1).expect("term at the compaction point")),
            entries: wal
                .entries(first, wal.last_index() + 1, u64::MAX)
                .expect("recovered entries read back"),
            snapshot: wal.snapshot(),
        }
    }
}

fn options(rng: &mut SeededRng) -> WalOptions {
    WalOptions {
        segment_bytes: rng.range(512, 4096),
        cache_bytes_max: rng.range(0, 2048),
    }
}

fn entry(index: Index, term: Term, rng: &mut SeededRng) -> Entry {
    let size = rng.range(0, 120) as usize;
    let fill = rng.next_u64() as u8;
    Entry {
        term,
        index,
        kind: if rng.chance(1, 10) {
            EntryKind::ConfChange
        } else {
            EntryKind::Normal
        },
        data: Bytes::from(vec![fill; size]),
    }
}

fn write_snapshot(wal: &mut Wal<SimFs>, index: Index, term: Term, rng: &mut SeededRng) -> bool {
    let size = rng.range(0, 600) as usize;
    let data: Vec<u8> = (0..size).map(|at| (at as u64 ^ index) as u8).collect();
    let chunk = rng.range(1, 200) as usize;
    let mut offset = 0;
    if data.is_empty() {
        return wal.write_snapshot_chunk(index, term, 0, &[]).is_ok();
    }
    for piece in data.chunks(chunk) {
        if wal.write_snapshot_chunk(index, term, offset, piece).is_err() {
            return false;
        }
        offset += piece.len() as u64;
    }
    true
}

/// Runs one seed; panics with the seed on the first violation.
fn run(seed: u64) {
    let mut rng = SeededRng::new(seed);
    let fs = SimFs::new();
    let options = options(&mut rng);
    let open = |fs: &SimFs| {
        Wal::open(fs.clone(), Path::new(DIR), options).unwrap_or_else(|error| panic!("seed {seed}: open: {error}"))
    };
    let mut wal = open(&fs);
    let mut durable = Model::default();
    let mut current = Model::default();
    let mut pending: Vec<Op> = Vec::new();
    let mut poisoned = false;
    let mut term = 1;
    for step in 0..OPS_PER_SEED {
        let roll = rng.range(0, 100);
        let crash_now = roll >= 92 || poisoned;
        if !crash_now {
            match roll {
                0..=39 => {
                    let last = current.last_index();
                    let first_new = if rng.chance(7, 10) || last == current.compacted.0 {
                        last + 1
                    } else {
                        rng.range(current.compacted.0 + 1, last + 2)
                    };
                    if rng.chance(1, 5) {
                        term += 1;
                    }
                    let count = rng.range(1, 6);
                    let batch: Vec<Entry> = (0..count).map(|at| entry(first_new + at, term, &mut rng)).collect();
                    // Starting a segment syncs the finished one, so an append
                    // can meet an injected sync failure too.
                    let result = wal.append_entries(&batch);
                    let mut ops = Vec::new();
                    if first_new <= last {
                        ops.push(Op::Truncate(first_new));
                    }
                    ops.extend(batch.into_iter().map(Op::Entry));
                    for op in ops {
                        current.apply(&op);
                        pending.push(op);
                    }
                    poisoned = result.is_err();
                }
                40..=54 => {
                    let hard_state = HardState {
                        term: current.hard_state.term.max(term) + rng.range(0, 2),
                        vote: rng.range(0, 4),
                        commit: rng.range(0, current.last_index() + 1),
                    };
                    let result = wal.save_hard_state(hard_state);
                    let op = Op::HardState(hard_state);
                    current.apply(&op);
                    pending.push(op);
                    poisoned = result.is_err();
                }
                55..=79 => {
                    if rng.chance(1, 8) {
                        fs.fail_next_sync();
                    }
                    match wal.sync() {
                        Ok(()) => {
                            durable = current.clone();
                            pending.clear();
                        }
                        Err(_) => {
                            poisoned = true;
                            assert!(
                                wal.append_entries(&[entry(current.last_index() + 1, term, &mut rng)])
                                    .is_err(),
                                "seed {seed}: a failed sync must poison the WAL"
                            );
                        }
                    }
                }
                80..=87 => {
                    // Snapshot at a random index, then maybe compact.
                    let (first, last) = (current.compacted.0, current.last_index());
                    if last == first {
                        continue;
                    }
                    let index = rng.range(first + 1, last + 1);
                    let meta = SnapshotMeta {
                        index,
                        term: current.term(index),
                        configuration: Configuration::new(vec![1, 2, 3], Vec::new()),
                    };
                    if current.snapshot.as_ref().is_some_and(|stored| stored.index >= index) {
                        continue;
                    }
                    if !write_snapshot(&mut wal, index, meta.term, &mut rng) {
                        poisoned = true;
                        continue;
                    }
                    if wal.save_snapshot(&meta).is_err() {
                        // Only an injected sync failure gets here.
                        poisoned = true;
                        continue;
                    }
                    let op = Op::Snapshot(meta);
                    current.apply(&op);
                    pending.push(op);
                    if rng.chance(2, 3) {
                        let upto = rng.range(first + 1, index + 1);
                        let op = Op::Compact(upto, current.term(upto));
                        if rng.chance(1, 10) {
                            fs.fail_next_sync();
                        }
                        match wal.compact_to(upto) {
                            Ok(()) => {
                                current.apply(&op);
                                // `compact_to` syncs: everything so far is durable.
                                durable = current.clone();
                                pending.clear();
                            }
                            Err(_) => {
                                // The record was buffered before the failed sync.
                                current.apply(&op);
                                pending.push(op);
                                poisoned = true;
                            }
                        }
                    }
                }
                _ => {
                    // Install a snapshot from a "leader" beyond our log.
                    term += 1;
                    let index = current.last_index() + rng.range(1, 10);
                    let meta = SnapshotMeta {
                        index,
                        term,
                        configuration: Configuration::new(vec![1, 2, 3], vec![4]),
                    };
                    if !write_snapshot(&mut wal, index, term, &mut rng) {
                        poisoned = true;
                        continue;
                    }
                    if wal.install_snapshot(&meta).is_err() {
                        poisoned = true;
                        continue;
                    }
                    for op in [Op::Snapshot(meta), Op::Reset(index, term)] {
                        current.apply(&op);
                        pending.push(op);
                    }
                }
            }
            continue;
        }
        // Crash, maybe tearing the last write, and recover.
        let tear = if rng.chance(1, 2) {
            Some(rng.range(0, 1001))
        } else {
            None
        };
        drop(wal);
        fs.crash(tear);
        wal = open(&fs);
        let recovered = Model::read(&wal);
        let mut candidate = durable.clone();
        let mut matched = candidate == recovered;
        for op in &pending {
            if matched {
                break;
            }
            candidate.apply(op);
            matched = candidate == recovered;
        }
        assert!(
            matched,
            "seed {seed} step {step}: recovered state is not the durable state plus a prefix of later records\n\
             durable: {durable:?}\nrecovered: {recovered:?}\npending: {pending:?}"
        );
        durable = recovered.clone();
        current = recovered;
        pending.clear();
        poisoned = false;
        term = term.max(current.hard_state.term).max(current.compacted.1);
        if let Some(last) = current.entries.last() {
            term = term.max(last.term);
        }
    }
}

#[test]
fn recovery_keeps_everything_synced_and_only_a_prefix_of_the_rest() {
    for seed in 0..SEEDS {
        run(seed);
    }
}

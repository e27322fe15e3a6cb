//! `raftwerk-wal dump DIR`: a human-readable listing of a data directory's
//! segments, records, hard state and snapshot files, for operators
//! debugging a node. Reads only; takes no lock.

use std::io::Write;
use std::path::Path;

use crate::errors::WalError;
use crate::fs::{FileSystem, WalFile};
use crate::record::{self, FrameError, Record, HEADER_BYTES};

/// Writes the listing of the data directory `dir` to `out`. Damaged
/// records are reported where they are; the listing of that segment stops.
///
/// # Errors
/// When a directory or file cannot be read, or `out` fails.
pub fn dump<FS: FileSystem>(fs: &FS, dir: &Path, out: &mut impl Write) -> Result<(), WalError> {
    let wal_dir = dir.join("wal");
    let snap_dir = dir.join("snap");
    let write_error = |error: std::io::Error| WalError::Io {
        path: dir.to_path_buf(),
        source: error,
    };
    let names = fs.list_dir(&wal_dir).map_err(WalError::io(&wal_dir))?;
    let mut hard_state = None;
    for name in names.iter().filter(|name| name.ends_with(".seg")) {
        let path = wal_dir.join(name);
        let file = fs.open(&path, false).map_err(WalError::io(&path))?;
        let len = file.len().map_err(WalError::io(&path))?;
        let mut data = vec![0; len as usize];
        file.read_exact_at(&mut data, 0).map_err(WalError::io(&path))?;
        writeln!(out, "segment {name} ({len} bytes on disk)").map_err(write_error)?;
        let mut pos = 0usize;
        let mut counts = [0u64; 8];
        loop {
            match record::check_frame(&data[pos..]) {
                Ok((kind, payload)) => {
                    counts[kind as usize % 8] += 1;
                    let line = match record::decode(kind, payload) {
                        Ok(Record::Entry(entry)) => format!(
                            "entry index={} term={} kind={:?} bytes={}",
                            entry.index,
                            entry.term,
                            entry.kind,
                            entry.data.len()
                        ),
                        Ok(Record::HardState(state)) => {
                            hard_state = Some(state);
                            format!(
                                "hard-state term={} vote={} commit={}",
                                state.term, state.vote, state.commit
                            )
                        }
                        Ok(record @ Record::SegmentHeader { .. }) => format!("{record:?}"),
                        Ok(record) => format!("{} {record:?}", record.kind_name()),
                        Err(error) => format!("undecodable payload of type {kind}: {error:?}"),
                    };
                    writeln!(out, "  @{pos:>10} {line}").map_err(write_error)?;
                    pos += HEADER_BYTES + payload.len();
                }
                Err(FrameError::End) => {
                    writeln!(out, "  @{pos:>10} end of data").map_err(write_error)?;
                    break;
                }
                Err(error) => {
                    writeln!(out, "  @{pos:>10} DAMAGED RECORD: {error:?}").map_err(write_error)?;
                    break;
                }
            }
        }
        writeln!(out, "  {} entries", counts[2]).map_err(write_error)?;
    }
    match hard_state {
        Some(state) => writeln!(
            out,
            "last hard state: term={} vote={} commit={}",
            state.term, state.vote, state.commit
        ),
        None => writeln!(out, "last hard state: none recorded after the segment headers"),
    }
    .map_err(write_error)?;
    for name in fs.list_dir(&snap_dir).map_err(WalError::io(&snap_dir))? {
        let path = snap_dir.join(&name);
        let file = fs.open(&path, false).map_err(WalError::io(&path))?;
        let len = file.len().map_err(WalError::io(&path))?;
        writeln!(out, "snapshot file {name} ({len} bytes)").map_err(write_error)?;
    }
    Ok(())
}

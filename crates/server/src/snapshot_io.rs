//! Streaming the key space into and out of the WAL's snapshot files in
//! bounded chunks, so a snapshot larger than memory never has to fit in it.

use std::io::{Read, Write};

use bytes::Bytes;
use raftwerk_raft::{Index, LogStore, Storage, StorageError, Term};

/// Bytes buffered before a chunk is written.
const CHUNK_BYTES: usize = 1 << 20;

/// Writes a snapshot's data into the pending snapshot `(index, term)`,
/// from `offset` on (a snapshot may be written in several steps).
pub struct SnapshotWriter<'a, S: LogStore> {
    store: &'a mut S,
    index: Index,
    term: Term,
    offset: u64,
    buffer: Vec<u8>,
}

impl<'a, S: LogStore> SnapshotWriter<'a, S> {
    pub fn new(store: &'a mut S, index: Index, term: Term, offset: u64) -> Self {
        SnapshotWriter {
            store,
            index,
            term,
            offset,
            buffer: Vec::with_capacity(CHUNK_BYTES),
        }
    }

    fn write_chunk(&mut self) -> Result<(), StorageError> {
        self.store
            .write_snapshot_chunk(self.index, self.term, self.offset, &self.buffer)?;
        self.offset += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Writes what is buffered (an empty snapshot still gets its file);
    /// returns the offset the next step starts at.
    ///
    /// # Errors
    /// What the store reports.
    pub fn finish(mut self) -> Result<u64, StorageError> {
        if !self.buffer.is_empty() || self.offset == 0 {
            self.write_chunk()?;
        }
        Ok(self.offset)
    }
}

impl<S: LogStore> Write for SnapshotWriter<'_, S> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK_BYTES - self.buffer.len();
        let taken = data.len().min(room);
        self.buffer.extend_from_slice(&data[..taken]);
        if self.buffer.len() == CHUNK_BYTES {
            self.write_chunk().map_err(std::io::Error::other)?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads the stored snapshot at `index` chunk by chunk.
pub struct SnapshotReader<'a, S: Storage> {
    store: &'a S,
    index: Index,
    offset: u64,
    current: Bytes,
    done: bool,
}

impl<'a, S: Storage> SnapshotReader<'a, S> {
    pub fn new(store: &'a S, index: Index) -> Self {
        SnapshotReader {
            store,
            index,
            offset: 0,
            current: Bytes::new(),
            done: false,
        }
    }
}

impl<S: Storage> Read for SnapshotReader<'_, S> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            let chunk = self
                .store
                .snapshot_chunk(self.index, self.offset, CHUNK_BYTES as u64)
                .map_err(std::io::Error::other)?;
            self.offset += chunk.data.len() as u64;
            self.done = chunk.last;
            if chunk.data.is_empty() && !chunk.last {
                return Err(std::io::Error::other("snapshot ended early"));
            }
            self.current = chunk.data;
        }
        let count = out.len().min(self.current.len());
        out[..count].copy_from_slice(&self.current[..count]);
        self.current = self.current.slice(count..);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftwerk_raft::{Configuration, MemStorage, SnapshotMeta};

    #[test]
    fn a_snapshot_streams_through_in_chunks() {
        let mut store = MemStorage::new();
        let data: Vec<u8> = (0..(3 * CHUNK_BYTES + 17)).map(|at| (at % 251) as u8).collect();
        // In two steps, the second resuming where the first ended.
        let (first, second) = data.split_at(CHUNK_BYTES + 5);
        let mut writer = SnapshotWriter::new(&mut store, 5, 2, 0);
        writer.write_all(first).unwrap();
        let offset = writer.finish().unwrap();
        assert_eq!(offset, first.len() as u64);
        let mut writer = SnapshotWriter::new(&mut store, 5, 2, offset);
        writer.write_all(second).unwrap();
        writer.finish().unwrap();
        let meta = SnapshotMeta {
            index: 5,
            term: 2,
            configuration: Configuration::new(vec![1], Vec::new()),
        };
        store.save_snapshot(&meta).unwrap();
        let mut read = Vec::new();
        SnapshotReader::new(&store, 5).read_to_end(&mut read).unwrap();
        assert_eq!(read, data);
    }
}

//! Framing and encoding of WAL records.
//!
//! A record is a 12-byte header — magic `RW` (2 bytes), type (1), reserved
//! zero (1), payload length (4, little endian), CRC-32C (4) of the type,
//! reserved and length bytes and the payload — followed by the payload. An
//! all-zero header marks the end of a segment's data (segments are
//! pre-sized with zeros). Integers are little endian.

use bytes::Bytes;
use raftwerk_raft::{Configuration, Entry, EntryKind, HardState, Index, SnapshotMeta, Term};

pub const HEADER_BYTES: usize = 12;
const MAGIC: [u8; 2] = *b"RW";
/// Largest payload a record may claim; anything above is corruption.
pub const RECORD_BYTES_MAX: usize = 128 << 20;
/// Largest configuration list accepted when decoding.
const CONFIGURATION_IDS_MAX: u32 = 1 << 16;

const TYPE_SEGMENT_HEADER: u8 = 1;
const TYPE_ENTRY: u8 = 2;
const TYPE_HARD_STATE: u8 = 3;
const TYPE_TRUNCATE: u8 = 4;
const TYPE_COMPACT: u8 = 5;
const TYPE_SNAPSHOT: u8 = 6;
const TYPE_RESET: u8 = 7;

/// A stored snapshot as the WAL records it: its metadata and the size and
/// CRC-32C of its data file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub meta: SnapshotMeta,
    pub data_bytes: u64,
    pub data_crc: u32,
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// First record of every segment: the state needed to recover from this
    /// segment on, so older segments can be deleted whole.
    SegmentHeader {
        seq: u64,
        hard_state: HardState,
        compacted_index: Index,
        compacted_term: Term,
        snapshot: Option<SnapshotRecord>,
    },
    Entry(Entry),
    HardState(HardState),
    /// Entries from `from` on are gone (a follower's overwrite follows).
    Truncate {
        from: Index,
    },
    /// Entries up to `index` are gone; `term` is the term at `index`.
    Compact {
        index: Index,
        term: Term,
    },
    /// A snapshot file became the stored snapshot.
    Snapshot(SnapshotRecord),
    /// The whole log was replaced by a snapshot at `index` of `term`.
    Reset {
        index: Index,
        term: Term,
    },
}

/// Why bytes do not decode to a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header or the claimed payload.
    Short,
    /// The header is all zeros: the end of the data.
    End,
    BadMagic,
    BadLength(u32),
    BadCrc,
    BadPayload(&'static str),
}

impl Record {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Record::SegmentHeader { .. } => "segment-header",
            Record::Entry(_) => "entry",
            Record::HardState(_) => "hard-state",
            Record::Truncate { .. } => "truncate",
            Record::Compact { .. } => "compact",
            Record::Snapshot(_) => "snapshot",
            Record::Reset { .. } => "reset",
        }
    }
}

/// Appends the framed encoding of an entry record to `buf` without
/// building a `Record` (the hot path); returns its length.
pub fn encode_entry(entry: &Entry, buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.reserve(HEADER_BYTES + 17 + entry.data.len());
    buf.extend_from_slice(&[0; HEADER_BYTES]);
    put_u64(buf, entry.term);
    put_u64(buf, entry.index);
    buf.push(entry_kind_byte(entry.kind));
    buf.extend_from_slice(&entry.data);
    seal(buf, start, TYPE_ENTRY)
}

fn entry_kind_byte(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Normal => 0,
        EntryKind::Empty => 1,
        EntryKind::ConfChange => 2,
    }
}

/// Fills in the header of the record that starts at `start`.
fn seal(buf: &mut [u8], start: usize, kind: u8) -> usize {
    let payload_len = (buf.len() - start - HEADER_BYTES) as u32;
    let header = &mut buf[start..start + HEADER_BYTES];
    header[0..2].copy_from_slice(&MAGIC);
    header[2] = kind;
    header[3] = 0;
    header[4..8].copy_from_slice(&payload_len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[start + 2..start + 8]), &buf[start + HEADER_BYTES..]);
    buf[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    buf.len() - start
}

/// Appends the framed encoding of `record` to `buf`; returns its length.
pub fn encode(record: &Record, buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_BYTES]);
    let kind = match record {
        Record::SegmentHeader {
            seq,
            hard_state,
            compacted_index,
            compacted_term,
            snapshot,
        } => {
            put_u64(buf, *seq);
            put_hard_state(buf, hard_state);
            put_u64(buf, *compacted_index);
            put_u64(buf, *compacted_term);
            match snapshot {
                Some(snapshot) => {
                    buf.push(1);
                    put_snapshot(buf, snapshot);
                }
                None => buf.push(0),
            }
            TYPE_SEGMENT_HEADER
        }
        Record::Entry(entry) => {
            put_u64(buf, entry.term);
            put_u64(buf, entry.index);
            buf.push(entry_kind_byte(entry.kind));
            buf.extend_from_slice(&entry.data);
            TYPE_ENTRY
        }
        Record::HardState(hard_state) => {
            put_hard_state(buf, hard_state);
            TYPE_HARD_STATE
        }
        Record::Truncate { from } => {
            put_u64(buf, *from);
            TYPE_TRUNCATE
        }
        Record::Compact { index, term } => {
            put_u64(buf, *index);
            put_u64(buf, *term);
            TYPE_COMPACT
        }
        Record::Snapshot(snapshot) => {
            put_snapshot(buf, snapshot);
            TYPE_SNAPSHOT
        }
        Record::Reset { index, term } => {
            put_u64(buf, *index);
            put_u64(buf, *term);
            TYPE_RESET
        }
    };
    seal(buf, start, kind)
}

/// Checks the frame at the start of `bytes` and returns `(type, payload)`.
///
/// # Errors
/// Why the bytes are not a whole, intact record.
pub fn check_frame(bytes: &[u8]) -> Result<(u8, &[u8]), FrameError> {
    if bytes.len() < HEADER_BYTES {
        if bytes.iter().all(|byte| *byte == 0) {
            return Err(FrameError::End);
        }
        return Err(FrameError::Short);
    }
    let header = &bytes[..HEADER_BYTES];
    if header.iter().all(|byte| *byte == 0) {
        return Err(FrameError::End);
    }
    if header[0..2] != MAGIC || header[3] != 0 {
        return Err(FrameError::BadMagic);
    }
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if len as usize > RECORD_BYTES_MAX {
        return Err(FrameError::BadLength(len));
    }
    let Some(payload) = bytes.get(HEADER_BYTES..HEADER_BYTES + len as usize) else {
        return Err(FrameError::Short);
    };
    let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if crc32c::crc32c_append(crc32c::crc32c(&header[2..8]), payload) != crc {
        return Err(FrameError::BadCrc);
    }
    Ok((header[2], payload))
}

/// Decodes a checked payload of record type `kind`.
///
/// # Errors
/// `BadPayload` when the payload does not fit the type.
pub fn decode(kind: u8, payload: &[u8]) -> Result<Record, FrameError> {
    let mut reader = Reader { bytes: payload };
    let record = match kind {
        TYPE_SEGMENT_HEADER => {
            let seq = reader.u64()?;
            let hard_state = reader.hard_state()?;
            let compacted_index = reader.u64()?;
            let compacted_term = reader.u64()?;
            let snapshot = match reader.u8()? {
                0 => None,
                1 => Some(reader.snapshot()?),
                _ => return Err(FrameError::BadPayload("snapshot flag")),
            };
            Record::SegmentHeader {
                seq,
                hard_state,
                compacted_index,
                compacted_term,
                snapshot,
            }
        }
        TYPE_ENTRY => {
            let term = reader.u64()?;
            let index = reader.u64()?;
            let kind = match reader.u8()? {
                0 => EntryKind::Normal,
                1 => EntryKind::Empty,
                2 => EntryKind::ConfChange,
                _ => return Err(FrameError::BadPayload("entry kind")),
            };
            let data = Bytes::copy_from_slice(reader.bytes);
            reader.bytes = &[];
            Record::Entry(Entry {
                term,
                index,
                kind,
                data,
            })
        }
        TYPE_HARD_STATE => Record::HardState(reader.hard_state()?),
        TYPE_TRUNCATE => Record::Truncate { from: reader.u64()? },
        TYPE_COMPACT => Record::Compact {
            index: reader.u64()?,
            term: reader.u64()?,
        },
        TYPE_SNAPSHOT => Record::Snapshot(reader.snapshot()?),
        TYPE_RESET => Record::Reset {
            index: reader.u64()?,
            term: reader.u64()?,
        },
        _ => return Err(FrameError::BadPayload("unknown record type")),
    };
    if !reader.bytes.is_empty() {
        return Err(FrameError::BadPayload("trailing bytes"));
    }
    Ok(record)
}

/// The `(term, index)` of an entry record without copying its data.
///
/// # Errors
/// When the payload is too short.
pub fn entry_position(payload: &[u8]) -> Result<(Term, Index), FrameError> {
    let mut reader = Reader { bytes: payload };
    Ok((reader.u64()?, reader.u64()?))
}

pub fn is_entry(kind: u8) -> bool {
    kind == TYPE_ENTRY
}

pub fn is_segment_header(kind: u8) -> bool {
    kind == TYPE_SEGMENT_HEADER
}

fn put_u64(buf: &mut Vec<u8>, value: u64) {
    buf.extend_from_slice(&value.to_le_bytes());
}

fn put_hard_state(buf: &mut Vec<u8>, hard_state: &HardState) {
    put_u64(buf, hard_state.term);
    put_u64(buf, hard_state.vote);
    put_u64(buf, hard_state.commit);
}

fn put_ids(buf: &mut Vec<u8>, ids: &[u64]) {
    buf.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        put_u64(buf, *id);
    }
}

fn put_snapshot(buf: &mut Vec<u8>, snapshot: &SnapshotRecord) {
    put_u64(buf, snapshot.meta.index);
    put_u64(buf, snapshot.meta.term);
    put_ids(buf, &snapshot.meta.configuration.voters);
    put_ids(buf, &snapshot.meta.configuration.outgoing);
    put_ids(buf, &snapshot.meta.configuration.learners);
    put_u64(buf, snapshot.data_bytes);
    buf.extend_from_slice(&snapshot.data_crc.to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], FrameError> {
        if self.bytes.len() < count {
            return Err(FrameError::BadPayload("payload too short"));
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn hard_state(&mut self) -> Result<HardState, FrameError> {
        Ok(HardState {
            term: self.u64()?,
            vote: self.u64()?,
            commit: self.u64()?,
        })
    }

    fn ids(&mut self) -> Result<Vec<u64>, FrameError> {
        let count = self.u32()?;
        if count > CONFIGURATION_IDS_MAX {
            return Err(FrameError::BadPayload("configuration too large"));
        }
        (0..count).map(|_| self.u64()).collect()
    }

    fn snapshot(&mut self) -> Result<SnapshotRecord, FrameError> {
        let index = self.u64()?;
        let term = self.u64()?;
        let configuration = Configuration {
            voters: self.ids()?,
            outgoing: self.ids()?,
            learners: self.ids()?,
        };
        configuration.validate().map_err(FrameError::BadPayload)?;
        Ok(SnapshotRecord {
            meta: SnapshotMeta {
                index,
                term,
                configuration,
            },
            data_bytes: self.u64()?,
            data_crc: self.u32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(record: Record) {
        let mut buf = Vec::new();
        let len = encode(&record, &mut buf);
        assert_eq!(len, buf.len());
        let (kind, payload) = check_frame(&buf).expect("intact frame");
        assert_eq!(decode(kind, payload).expect("decodes"), record);
    }

    #[test]
    fn every_record_type_round_trips() {
        let snapshot = SnapshotRecord {
            meta: SnapshotMeta {
                index: 9,
                term: 3,
                configuration: Configuration {
                    voters: vec![1, 2],
                    outgoing: vec![1, 2, 3],
                    learners: vec![4],
                },
            },
            data_bytes: 1234,
            data_crc: 0xdead_beef,
        };
        let hard_state = HardState {
            term: 4,
            vote: 2,
            commit: 8,
        };
        round_trip(Record::SegmentHeader {
            seq: 7,
            hard_state,
            compacted_index: 5,
            compacted_term: 2,
            snapshot: Some(snapshot.clone()),
        });
        round_trip(Record::Entry(Entry {
            term: 3,
            index: 10,
            kind: EntryKind::ConfChange,
            data: Bytes::from_static(b"change"),
        }));
        round_trip(Record::HardState(hard_state));
        round_trip(Record::Truncate { from: 4 });
        round_trip(Record::Compact { index: 4, term: 1 });
        round_trip(Record::Snapshot(snapshot));
        round_trip(Record::Reset { index: 9, term: 3 });
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode(
            &Record::Entry(Entry {
                term: 1,
                index: 1,
                kind: EntryKind::Normal,
                data: Bytes::from_static(b"payload bytes"),
            }),
            &mut buf,
        );
        for bit in 0..buf.len() * 8 {
            let mut copy = buf.clone();
            copy[bit / 8] ^= 1 << (bit % 8);
            assert!(check_frame(&copy).is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn zero_header_is_the_end_and_a_partial_frame_is_short() {
        assert_eq!(check_frame(&[0; 40]), Err(FrameError::End));
        let mut buf = Vec::new();
        encode(&Record::Truncate { from: 4 }, &mut buf);
        assert_eq!(check_frame(&buf[..buf.len() - 1]), Err(FrameError::Short));
    }
}

//! Binary encoding of the core's `Message`s for the peer stream: one tag
//! byte per body, little-endian integers, length-prefixed bytes. Decoding
//! checks every length against what is left, so a damaged or hostile
//! message is an error, never a panic or a huge allocation; the core then
//! validates what the fields mean.

use bytes::Bytes;
use raftwerk_raft::{Configuration, Entry, EntryKind, Message, MessageBody, SnapshotMeta};

/// Appends the encoding of `message` to `out`.
pub fn encode(message: &Message, out: &mut Vec<u8>) {
    put(out, message.from);
    put(out, message.to);
    put(out, message.term);
    match &message.body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            out.push(1);
            put(out, *prev_index);
            put(out, *prev_term);
            put(out, *commit);
            put(out, entries.len() as u64);
            for entry in entries {
                put(out, entry.term);
                put(out, entry.index);
                out.push(match entry.kind {
                    EntryKind::Normal => 0,
                    EntryKind::Empty => 1,
                    EntryKind::ConfChange => 2,
                });
                put_bytes(out, &entry.data);
            }
        }
        MessageBody::AppendResponse {
            reject,
            index,
            hint_index,
            hint_term,
        } => {
            out.push(2);
            out.push(u8::from(*reject));
            put(out, *index);
            put(out, *hint_index);
            put(out, *hint_term);
        }
        MessageBody::Heartbeat { commit, read_seq } => {
            out.push(3);
            put(out, *commit);
            put(out, *read_seq);
        }
        MessageBody::HeartbeatResponse { read_seq } => {
            out.push(4);
            put(out, *read_seq);
        }
        MessageBody::Vote {
            last_log_index,
            last_log_term,
            transfer,
        } => {
            out.push(5);
            put(out, *last_log_index);
            put(out, *last_log_term);
            out.push(u8::from(*transfer));
        }
        MessageBody::VoteResponse { granted } => {
            out.push(6);
            out.push(u8::from(*granted));
        }
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => {
            out.push(7);
            put(out, *last_log_index);
            put(out, *last_log_term);
        }
        MessageBody::PreVoteResponse { granted } => {
            out.push(8);
            out.push(u8::from(*granted));
        }
        MessageBody::TimeoutNow => out.push(9),
        MessageBody::ReadIndex { request_id } => {
            out.push(10);
            put(out, *request_id);
        }
        MessageBody::ReadIndexResponse { request_id, index } => {
            out.push(11);
            put(out, *request_id);
            put(out, *index);
        }
        MessageBody::InstallSnapshot {
            meta,
            offset,
            data,
            last,
        } => {
            out.push(12);
            put(out, meta.index);
            put(out, meta.term);
            for ids in [
                &meta.configuration.voters,
                &meta.configuration.outgoing,
                &meta.configuration.learners,
            ] {
                put(out, ids.len() as u64);
                for id in ids {
                    put(out, *id);
                }
            }
            put(out, *offset);
            out.push(u8::from(*last));
            put_bytes(out, data);
        }
        MessageBody::SnapshotResponse { index, offset } => {
            out.push(13);
            put(out, *index);
            put(out, *offset);
        }
    }
}

/// Decodes one message.
///
/// # Errors
/// A description of what is wrong with the bytes.
pub fn decode(bytes: &[u8]) -> Result<Message, &'static str> {
    let mut reader = Reader { bytes };
    let (from, to, term) = (reader.u64()?, reader.u64()?, reader.u64()?);
    let body = match reader.u8()? {
        1 => {
            let (prev_index, prev_term, commit) = (reader.u64()?, reader.u64()?, reader.u64()?);
            let count = reader.count(25)?;
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let (term, index) = (reader.u64()?, reader.u64()?);
                let kind = match reader.u8()? {
                    0 => EntryKind::Normal,
                    1 => EntryKind::Empty,
                    2 => EntryKind::ConfChange,
                    _ => return Err("unknown entry kind"),
                };
                entries.push(Entry {
                    term,
                    index,
                    kind,
                    data: reader.bytes()?,
                });
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            }
        }
        2 => MessageBody::AppendResponse {
            reject: reader.bool()?,
            index: reader.u64()?,
            hint_index: reader.u64()?,
            hint_term: reader.u64()?,
        },
        3 => MessageBody::Heartbeat {
            commit: reader.u64()?,
            read_seq: reader.u64()?,
        },
        4 => MessageBody::HeartbeatResponse {
            read_seq: reader.u64()?,
        },
        5 => MessageBody::Vote {
            last_log_index: reader.u64()?,
            last_log_term: reader.u64()?,
            transfer: reader.bool()?,
        },
        6 => MessageBody::VoteResponse {
            granted: reader.bool()?,
        },
        7 => MessageBody::PreVote {
            last_log_index: reader.u64()?,
            last_log_term: reader.u64()?,
        },
        8 => MessageBody::PreVoteResponse {
            granted: reader.bool()?,
        },
        9 => MessageBody::TimeoutNow,
        10 => MessageBody::ReadIndex {
            request_id: reader.u64()?,
        },
        11 => MessageBody::ReadIndexResponse {
            request_id: reader.u64()?,
            index: reader.u64()?,
        },
        12 => {
            let (index, term) = (reader.u64()?, reader.u64()?);
            let mut lists = [Vec::new(), Vec::new(), Vec::new()];
            for list in &mut lists {
                let count = reader.count(8)?;
                for _ in 0..count {
                    list.push(reader.u64()?);
                }
            }
            let [voters, outgoing, learners] = lists;
            MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index,
                    term,
                    configuration: Configuration {
                        voters,
                        outgoing,
                        learners,
                    },
                },
                offset: reader.u64()?,
                last: reader.bool()?,
                data: reader.bytes()?,
            }
        }
        13 => MessageBody::SnapshotResponse {
            index: reader.u64()?,
            offset: reader.u64()?,
        },
        _ => return Err("unknown message type"),
    };
    if !reader.bytes.is_empty() {
        return Err("trailing bytes after a message");
    }
    Ok(Message { from, to, term, body })
}

fn put(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], &'static str> {
        if self.bytes.len() < count {
            return Err("message too short");
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn bool(&mut self) -> Result<bool, &'static str> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("bad boolean"),
        }
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn count(&mut self, min_bytes: u64) -> Result<usize, &'static str> {
        let count = self.u64()?;
        if count.saturating_mul(min_bytes) > self.bytes.len() as u64 {
            return Err("count beyond the message");
        }
        Ok(count as usize)
    }

    fn bytes(&mut self) -> Result<Bytes, &'static str> {
        let len = self.u64()?;
        if len > self.bytes.len() as u64 {
            return Err("length beyond the message");
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips_and_truncations_are_errors() {
        let bodies = vec![
            MessageBody::Append {
                prev_index: 4,
                prev_term: 2,
                entries: vec![Entry {
                    term: 3,
                    index: 5,
                    kind: EntryKind::ConfChange,
                    data: Bytes::from_static(b"change"),
                }],
                commit: 4,
            },
            MessageBody::AppendResponse {
                reject: true,
                index: 9,
                hint_index: 7,
                hint_term: 2,
            },
            MessageBody::Heartbeat { commit: 3, read_seq: 8 },
            MessageBody::HeartbeatResponse { read_seq: 8 },
            MessageBody::Vote {
                last_log_index: 1,
                last_log_term: 1,
                transfer: true,
            },
            MessageBody::VoteResponse { granted: true },
            MessageBody::PreVote {
                last_log_index: 1,
                last_log_term: 1,
            },
            MessageBody::PreVoteResponse { granted: false },
            MessageBody::TimeoutNow,
            MessageBody::ReadIndex { request_id: 77 },
            MessageBody::ReadIndexResponse {
                request_id: 77,
                index: 12,
            },
            MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index: 50,
                    term: 4,
                    configuration: Configuration::new(vec![1, 2, 3], vec![4]),
                },
                offset: 1024,
                data: Bytes::from_static(b"chunk"),
                last: true,
            },
            MessageBody::SnapshotResponse {
                index: 50,
                offset: 1029,
            },
        ];
        for body in bodies {
            let message = Message {
                from: 1,
                to: 2,
                term: 3,
                body,
            };
            let mut bytes = Vec::new();
            encode(&message, &mut bytes);
            assert_eq!(decode(&bytes), Ok(message));
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }
}

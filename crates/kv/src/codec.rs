//! Binary encoding of commands as log entries. Little-endian integers,
//! byte strings prefixed with a `u32` length, one tag byte per variant.
//! Decoding checks every length against what is left and bounds nesting,
//! so a damaged entry is an error, never a panic or a huge allocation.

use crate::errors::KvError;
use crate::members::{Member, MemberChange, NAME_BYTES_MAX, PEER_URLS_MAX, URL_BYTES_MAX};
use crate::types::{
    Command, Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, SortOrder,
    SortTarget, TxnRequest,
};

/// Deepest nesting of transactions accepted.
pub const TXN_DEPTH_MAX: usize = 8;

pub fn encode_command(command: &Command) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match command {
        Command::Put(put) => {
            out.push(1);
            put_put(&mut out, put);
        }
        Command::DeleteRange(delete) => {
            out.push(2);
            put_delete(&mut out, delete);
        }
        Command::Txn(txn) => {
            out.push(3);
            put_txn(&mut out, txn);
        }
        Command::Compact { revision } => {
            out.push(4);
            put_i64(&mut out, *revision);
        }
        Command::Members(change) => {
            out.push(5);
            put_member_change(&mut out, change);
        }
    }
    out
}

fn put_member_change(out: &mut Vec<u8>, change: &MemberChange) {
    match change {
        MemberChange::Add(member) => {
            out.push(1);
            put_bytes(out, &member.encode());
        }
        MemberChange::Remove { id } => {
            out.push(2);
            out.extend_from_slice(&id.to_le_bytes());
        }
        MemberChange::Promote { id } => {
            out.push(3);
            out.extend_from_slice(&id.to_le_bytes());
        }
        MemberChange::UpdatePeerUrls { id, peer_urls } => {
            out.push(4);
            out.extend_from_slice(&id.to_le_bytes());
            put_strings(out, peer_urls);
        }
        MemberChange::Publish { id, name, client_urls } => {
            out.push(5);
            out.extend_from_slice(&id.to_le_bytes());
            put_bytes(out, name.as_bytes());
            put_strings(out, client_urls);
        }
    }
}

fn put_strings(out: &mut Vec<u8>, strings: &[String]) {
    out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    for string in strings {
        put_bytes(out, string.as_bytes());
    }
}

/// # Errors
/// `BadCommand` when the bytes are not an encoded command.
pub fn decode_command(bytes: &[u8]) -> Result<Command, KvError> {
    let mut reader = Reader { bytes };
    let command = match reader.u8()? {
        1 => Command::Put(reader.put()?),
        2 => Command::DeleteRange(reader.delete()?),
        3 => Command::Txn(reader.txn(0)?),
        4 => Command::Compact {
            revision: reader.i64()?,
        },
        5 => Command::Members(reader.member_change()?),
        _ => return Err(KvError::BadCommand("unknown command tag")),
    };
    if !reader.bytes.is_empty() {
        return Err(KvError::BadCommand("trailing bytes"));
    }
    Ok(command)
}

fn put_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_put(out: &mut Vec<u8>, put: &PutRequest) {
    put_bytes(out, &put.key);
    put_bytes(out, &put.value);
    put_i64(out, put.lease);
    out.push(u8::from(put.prev_kv) | u8::from(put.ignore_value) << 1 | u8::from(put.ignore_lease) << 2);
}

fn put_delete(out: &mut Vec<u8>, delete: &DeleteRangeRequest) {
    put_bytes(out, &delete.key);
    put_bytes(out, &delete.range_end);
    out.push(u8::from(delete.prev_kv));
}

fn put_range(out: &mut Vec<u8>, range: &RangeRequest) {
    put_bytes(out, &range.key);
    put_bytes(out, &range.range_end);
    for value in [
        range.limit,
        range.revision,
        range.min_mod_revision,
        range.max_mod_revision,
        range.min_create_revision,
        range.max_create_revision,
    ] {
        put_i64(out, value);
    }
    out.push(range.sort_order as u8);
    out.push(range.sort_target as u8);
    out.push(u8::from(range.serializable) | u8::from(range.keys_only) << 1 | u8::from(range.count_only) << 2);
}

fn put_txn(out: &mut Vec<u8>, txn: &TxnRequest) {
    out.extend_from_slice(&(txn.compare.len() as u32).to_le_bytes());
    for compare in &txn.compare {
        out.push(compare.result as u8);
        match &compare.target {
            CompareTarget::Version(value) => {
                out.push(0);
                put_i64(out, *value);
            }
            CompareTarget::Create(value) => {
                out.push(1);
                put_i64(out, *value);
            }
            CompareTarget::Mod(value) => {
                out.push(2);
                put_i64(out, *value);
            }
            CompareTarget::Value(value) => {
                out.push(3);
                put_bytes(out, value);
            }
            CompareTarget::Lease(value) => {
                out.push(4);
                put_i64(out, *value);
            }
        }
        put_bytes(out, &compare.key);
        put_bytes(out, &compare.range_end);
    }
    for ops in [&txn.success, &txn.failure] {
        out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
        for op in ops {
            match op {
                RequestOp::Range(range) => {
                    out.push(0);
                    put_range(out, range);
                }
                RequestOp::Put(put) => {
                    out.push(1);
                    put_put(out, put);
                }
                RequestOp::DeleteRange(delete) => {
                    out.push(2);
                    put_delete(out, delete);
                }
                RequestOp::Txn(inner) => {
                    out.push(3);
                    put_txn(out, inner);
                }
            }
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], KvError> {
        if self.bytes.len() < count {
            return Err(KvError::BadCommand("command too short"));
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, KvError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, KvError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn i64(&mut self) -> Result<i64, KvError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, KvError> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }

    /// A count of items, each at least `min_bytes` long (bounds allocation).
    fn count(&mut self, min_bytes: usize) -> Result<usize, KvError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(min_bytes) > self.bytes.len() {
            return Err(KvError::BadCommand("count beyond the command"));
        }
        Ok(count)
    }

    fn member_change(&mut self) -> Result<MemberChange, KvError> {
        Ok(match self.u8()? {
            1 => MemberChange::Add(Member::decode(&self.bytes()?)?),
            2 => MemberChange::Remove { id: self.i64()? as u64 },
            3 => MemberChange::Promote { id: self.i64()? as u64 },
            4 => MemberChange::UpdatePeerUrls {
                id: self.i64()? as u64,
                peer_urls: self.urls()?,
            },
            5 => MemberChange::Publish {
                id: self.i64()? as u64,
                name: self.string(NAME_BYTES_MAX)?,
                client_urls: self.urls()?,
            },
            _ => return Err(KvError::BadCommand("unknown member change")),
        })
    }

    fn string(&mut self, max: usize) -> Result<String, KvError> {
        let bytes = self.bytes()?;
        if bytes.len() > max {
            return Err(KvError::BadCommand("member string too long"));
        }
        String::from_utf8(bytes).map_err(|_| KvError::BadCommand("member string is not UTF-8"))
    }

    fn urls(&mut self) -> Result<Vec<String>, KvError> {
        let count = self.count(4)?;
        if count > PEER_URLS_MAX {
            return Err(KvError::BadCommand("too many URLs"));
        }
        (0..count).map(|_| self.string(URL_BYTES_MAX)).collect()
    }

    fn put(&mut self) -> Result<PutRequest, KvError> {
        let key = self.bytes()?;
        let value = self.bytes()?;
        let lease = self.i64()?;
        let flags = self.u8()?;
        Ok(PutRequest {
            key,
            value,
            lease,
            prev_kv: flags & 1 != 0,
            ignore_value: flags & 2 != 0,
            ignore_lease: flags & 4 != 0,
        })
    }

    fn delete(&mut self) -> Result<DeleteRangeRequest, KvError> {
        Ok(DeleteRangeRequest {
            key: self.bytes()?,
            range_end: self.bytes()?,
            prev_kv: self.u8()? != 0,
        })
    }

    fn range(&mut self) -> Result<RangeRequest, KvError> {
        let key = self.bytes()?;
        let range_end = self.bytes()?;
        let mut values = [0i64; 6];
        for value in &mut values {
            *value = self.i64()?;
        }
        let sort_order = match self.u8()? {
            0 => SortOrder::None,
            1 => SortOrder::Ascend,
            2 => SortOrder::Descend,
            _ => return Err(KvError::BadCommand("sort order")),
        };
        let sort_target = match self.u8()? {
            0 => SortTarget::Key,
            1 => SortTarget::Version,
            2 => SortTarget::Create,
            3 => SortTarget::Mod,
            4 => SortTarget::Value,
            _ => return Err(KvError::BadCommand("sort target")),
        };
        let flags = self.u8()?;
        Ok(RangeRequest {
            key,
            range_end,
            limit: values[0],
            revision: values[1],
            min_mod_revision: values[2],
            max_mod_revision: values[3],
            min_create_revision: values[4],
            max_create_revision: values[5],
            sort_order,
            sort_target,
            serializable: flags & 1 != 0,
            keys_only: flags & 2 != 0,
            count_only: flags & 4 != 0,
        })
    }

    fn txn(&mut self, depth: usize) -> Result<TxnRequest, KvError> {
        if depth >= TXN_DEPTH_MAX {
            return Err(KvError::BadCommand("transactions nested too deep"));
        }
        let compares = self.count(18)?;
        let mut compare = Vec::with_capacity(compares);
        for _ in 0..compares {
            let result = match self.u8()? {
                0 => CompareResult::Equal,
                1 => CompareResult::Greater,
                2 => CompareResult::Less,
                3 => CompareResult::NotEqual,
                _ => return Err(KvError::BadCommand("compare result")),
            };
            let target = match self.u8()? {
                0 => CompareTarget::Version(self.i64()?),
                1 => CompareTarget::Create(self.i64()?),
                2 => CompareTarget::Mod(self.i64()?),
                3 => CompareTarget::Value(self.bytes()?),
                4 => CompareTarget::Lease(self.i64()?),
                _ => return Err(KvError::BadCommand("compare target")),
            };
            compare.push(Compare {
                result,
                target,
                key: self.bytes()?,
                range_end: self.bytes()?,
            });
        }
        let mut branches = [Vec::new(), Vec::new()];
        for branch in &mut branches {
            let ops = self.count(1)?;
            for _ in 0..ops {
                branch.push(match self.u8()? {
                    0 => RequestOp::Range(self.range()?),
                    1 => RequestOp::Put(self.put()?),
                    2 => RequestOp::DeleteRange(self.delete()?),
                    3 => RequestOp::Txn(self.txn(depth + 1)?),
                    _ => return Err(KvError::BadCommand("request op")),
                });
            }
        }
        let [success, failure] = branches;
        Ok(TxnRequest {
            compare,
            success,
            failure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_truncations_are_errors() {
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Greater,
                target: CompareTarget::Value(b"v".to_vec()),
                key: b"k".to_vec(),
                range_end: Vec::new(),
            }],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: b"a".to_vec(),
                    value: b"1".to_vec(),
                    lease: 7,
                    prev_kv: true,
                    ignore_value: false,
                    ignore_lease: true,
                }),
                RequestOp::Range(RangeRequest {
                    key: b"a".to_vec(),
                    range_end: b"b".to_vec(),
                    limit: 3,
                    sort_order: SortOrder::Descend,
                    sort_target: SortTarget::Mod,
                    keys_only: true,
                    ..RangeRequest::default()
                }),
            ],
            failure: vec![RequestOp::Txn(TxnRequest::default())],
        };
        for command in [
            Command::Txn(txn),
            Command::Compact { revision: 9 },
            Command::DeleteRange(DeleteRangeRequest {
                key: b"x".to_vec(),
                range_end: vec![0],
                prev_kv: true,
            }),
            Command::Members(MemberChange::Add(Member {
                id: 4,
                name: String::new(),
                peer_urls: vec!["http://127.0.0.1:2380".into()],
                client_urls: Vec::new(),
                is_learner: true,
                promote_when_caught_up: true,
                removed: false,
            })),
            Command::Members(MemberChange::Publish {
                id: 4,
                name: "n4".into(),
                client_urls: vec!["http://127.0.0.1:2379".into()],
            }),
            Command::Members(MemberChange::Remove { id: 4 }),
            Command::Members(MemberChange::Promote { id: 5 }),
            Command::Members(MemberChange::UpdatePeerUrls {
                id: 6,
                peer_urls: vec!["http://a:1".into(), "http://b:2".into()],
            }),
        ] {
            let bytes = encode_command(&command);
            assert_eq!(decode_command(&bytes), Ok(command));
            for cut in 0..bytes.len() {
                assert!(decode_command(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }
}

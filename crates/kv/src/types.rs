//! Requests and responses of the key space, shaped like etcd's v3 API
//! (same fields and meanings), independent of any wire format: the server
//! maps protobuf messages onto them.

use crate::members::{Member, MemberChange};

/// One version of a key, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// Revision of the write that created the key (since its last delete).
    pub create_revision: i64,
    /// Revision of the write that produced this version.
    pub mod_revision: i64,
    /// Writes to the key since it was created (1 for a new key).
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// etcd's `RangeRequest`. An empty `range_end` reads `key` alone;
/// `range_end == [0]` reads every key from `key` on; otherwise the range is
/// `[key, range_end)` (a prefix `p` is `[p, p with its last byte + 1)`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// At most this many keys (0: no limit).
    pub limit: i64,
    /// Read at this revision (0 or less: the current one).
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The store's revision when the read was served.
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` returned.
    pub more: bool,
    /// Keys that matched, whatever the limit.
    pub count: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    pub revision: i64,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    pub revision: i64,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What a compare looks at, with the operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
}

/// etcd's `Compare`: holds when every key in the range satisfies it (a
/// missing key has version, create and mod revision 0 and no value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    pub revision: i64,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

/// A write that goes through the log; applied in log order on every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    /// Removes history below `revision`.
    Compact {
        revision: i64,
    },
    /// Changes the member list (takes no revision).
    Members(MemberChange),
}

/// The result of applying a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact {
        revision: i64,
    },
    /// The member list after the change.
    Members(Vec<Member>),
}

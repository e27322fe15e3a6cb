//! Mapping between etcd's wire messages (`raftwerk-proto`) and the key
//! space's own types (`raftwerk-kv`).

use raftwerk_kv as kv;
use raftwerk_proto::etcdserverpb as pb;
use raftwerk_proto::mvccpb;

pub fn key_value(kv: kv::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn range_request(request: pb::RangeRequest) -> kv::RangeRequest {
    kv::RangeRequest {
        sort_order: match request.sort_order() {
            pb::range_request::SortOrder::None => kv::SortOrder::None,
            pb::range_request::SortOrder::Ascend => kv::SortOrder::Ascend,
            pb::range_request::SortOrder::Descend => kv::SortOrder::Descend,
        },
        sort_target: match request.sort_target() {
            pb::range_request::SortTarget::Key => kv::SortTarget::Key,
            pb::range_request::SortTarget::Version => kv::SortTarget::Version,
            pb::range_request::SortTarget::Create => kv::SortTarget::Create,
            pb::range_request::SortTarget::Mod => kv::SortTarget::Mod,
            pb::range_request::SortTarget::Value => kv::SortTarget::Value,
        },
        key: request.key,
        range_end: request.range_end,
        limit: request.limit,
        revision: request.revision,
        serializable: request.serializable,
        keys_only: request.keys_only,
        count_only: request.count_only,
        min_mod_revision: request.min_mod_revision,
        max_mod_revision: request.max_mod_revision,
        min_create_revision: request.min_create_revision,
        max_create_revision: request.max_create_revision,
    }
}

pub fn range_response(response: kv::RangeResponse, header: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(pb::ResponseHeader {
            revision: response.revision,
            ..header
        }),
        kvs: response.kvs.into_iter().map(key_value).collect(),
        more: response.more,
        count: response.count,
    }
}

pub fn put_request(request: pb::PutRequest) -> kv::PutRequest {
    kv::PutRequest {
        key: request.key,
        value: request.value,
        lease: request.lease,
        prev_kv: request.prev_kv,
        ignore_value: request.ignore_value,
        ignore_lease: request.ignore_lease,
    }
}

pub fn put_response(response: kv::PutResponse, header: pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(pb::ResponseHeader {
            revision: response.revision,
            ..header
        }),
        prev_kv: response.prev_kv.map(key_value),
    }
}

pub fn delete_request(request: pb::DeleteRangeRequest) -> kv::DeleteRangeRequest {
    kv::DeleteRangeRequest {
        key: request.key,
        range_end: request.range_end,
        prev_kv: request.prev_kv,
    }
}

pub fn delete_response(response: kv::DeleteRangeResponse, header: pb::ResponseHeader) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(pb::ResponseHeader {
            revision: response.revision,
            ..header
        }),
        deleted: response.deleted,
        prev_kvs: response.prev_kvs.into_iter().map(key_value).collect(),
    }
}

pub fn txn_request(request: pb::TxnRequest) -> kv::TxnRequest {
    let ops = |ops: Vec<pb::RequestOp>| -> Vec<kv::RequestOp> {
        ops.into_iter()
            .filter_map(|op| {
                Some(match op.request? {
                    pb::request_op::Request::RequestRange(range) => kv::RequestOp::Range(range_request(range)),
                    pb::request_op::Request::RequestPut(put) => kv::RequestOp::Put(put_request(put)),
                    pb::request_op::Request::RequestDeleteRange(delete) => {
                        kv::RequestOp::DeleteRange(delete_request(delete))
                    }
                    pb::request_op::Request::RequestTxn(txn) => kv::RequestOp::Txn(txn_request(txn)),
                })
            })
            .collect()
    };
    kv::TxnRequest {
        compare: request.compare.into_iter().map(compare).collect(),
        success: ops(request.success),
        failure: ops(request.failure),
    }
}

fn compare(compare: pb::Compare) -> kv::Compare {
    use pb::compare::TargetUnion;
    let result = match compare.result() {
        pb::compare::CompareResult::Equal => kv::CompareResult::Equal,
        pb::compare::CompareResult::Greater => kv::CompareResult::Greater,
        pb::compare::CompareResult::Less => kv::CompareResult::Less,
        pb::compare::CompareResult::NotEqual => kv::CompareResult::NotEqual,
    };
    let target = match (compare.target(), compare.target_union) {
        (pb::compare::CompareTarget::Version, Some(TargetUnion::Version(value))) => kv::CompareTarget::Version(value),
        (pb::compare::CompareTarget::Version, _) => kv::CompareTarget::Version(0),
        (pb::compare::CompareTarget::Create, Some(TargetUnion::CreateRevision(value))) => {
            kv::CompareTarget::Create(value)
        }
        (pb::compare::CompareTarget::Create, _) => kv::CompareTarget::Create(0),
        (pb::compare::CompareTarget::Mod, Some(TargetUnion::ModRevision(value))) => kv::CompareTarget::Mod(value),
        (pb::compare::CompareTarget::Mod, _) => kv::CompareTarget::Mod(0),
        (pb::compare::CompareTarget::Value, Some(TargetUnion::Value(value))) => kv::CompareTarget::Value(value),
        (pb::compare::CompareTarget::Value, _) => kv::CompareTarget::Value(Vec::new()),
        (pb::compare::CompareTarget::Lease, Some(TargetUnion::Lease(value))) => kv::CompareTarget::Lease(value),
        (pb::compare::CompareTarget::Lease, _) => kv::CompareTarget::Lease(0),
    };
    kv::Compare {
        result,
        target,
        key: compare.key,
        range_end: compare.range_end,
    }
}

pub fn txn_response(response: kv::TxnResponse, header: pb::ResponseHeader) -> pb::TxnResponse {
    let outer = pb::ResponseHeader {
        revision: response.revision,
        ..header
    };
    // As etcd: the responses inside a transaction carry only the revision.
    let inner = pb::ResponseHeader {
        revision: response.revision,
        ..pb::ResponseHeader::default()
    };
    pb::TxnResponse {
        header: Some(outer),
        succeeded: response.succeeded,
        responses: response
            .responses
            .into_iter()
            .map(|op| pb::ResponseOp {
                response: Some(match op {
                    kv::ResponseOp::Range(range) => {
                        pb::response_op::Response::ResponseRange(range_response(range, inner))
                    }
                    kv::ResponseOp::Put(put) => pb::response_op::Response::ResponsePut(put_response(put, inner)),
                    kv::ResponseOp::DeleteRange(delete) => {
                        pb::response_op::Response::ResponseDeleteRange(delete_response(delete, inner))
                    }
                    kv::ResponseOp::Txn(txn) => pb::response_op::Response::ResponseTxn(txn_response(txn, inner)),
                }),
            })
            .collect(),
    }
}

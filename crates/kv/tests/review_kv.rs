//! Findings of the review of the key space: places where it answered
//! differently from etcd (a compare over an empty range, `keys_only` with
//! a sort by value, `count` with revision filters). Each failed before its
//! fix.

use raftwerk_kv::*;

struct Node {
    store: KvStore,
    index: u64,
}

impl Node {
    fn new() -> Self {
        Node {
            store: KvStore::in_memory().expect("store"),
            index: 0,
        }
    }

    fn apply(&mut self, command: Command) -> Result<CommandResponse, KvError> {
        self.index += 1;
        let mut responses = self.store.apply(&[(self.index, command)]).expect("storage");
        responses.pop().expect("one response")
    }

    fn put(&mut self, key: &str, value: &str) {
        match self.apply(Command::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        })) {
            Ok(CommandResponse::Put(_)) => {}
            other => panic!("put: {other:?}"),
        }
    }

    fn txn(&mut self, txn: TxnRequest) -> TxnResponse {
        match self.apply(Command::Txn(txn)) {
            Ok(CommandResponse::Txn(response)) => response,
            other => panic!("txn: {other:?}"),
        }
    }
}

fn range(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        ..RangeRequest::default()
    }
}

fn keys(response: &RangeResponse) -> Vec<String> {
    response
        .kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

/// etcd's `applyCompare`: when the compared range holds no key, a VALUE
/// compare fails and any other target is compared against an empty
/// KeyValue (revisions and version 0). raftwerk's `compare_holds` treats an
/// empty range as "all of zero keys match": always true.
#[test]
fn a_compare_over_an_empty_range_is_not_vacuously_true() {
    let mut node = Node::new();
    node.put("other", "x");
    let guarded = |target: CompareTarget, result: CompareResult| TxnRequest {
        compare: vec![Compare {
            result,
            target,
            key: b"locks/".to_vec(),
            range_end: b"locks0".to_vec(), // the prefix locks/, which is empty
        }],
        success: vec![RequestOp::Put(PutRequest {
            key: b"taken".to_vec(),
            value: b"yes".to_vec(),
            ..PutRequest::default()
        })],
        failure: Vec::new(),
    };
    // value(locks/*) = "mine": etcd always fails a value compare on no keys.
    let response = node.txn(guarded(CompareTarget::Value(b"mine".to_vec()), CompareResult::Equal));
    assert!(
        !response.succeeded,
        "etcd: a VALUE compare over an empty range fails; raftwerk took the success branch"
    );
    // version(locks/*) > 0: etcd compares the empty KeyValue, 0 > 0 is false.
    let response = node.txn(guarded(CompareTarget::Version(0), CompareResult::Greater));
    assert!(
        !response.succeeded,
        "etcd: version > 0 over an empty range is false; raftwerk took the success branch"
    );
}

/// etcd sorts (and applies the limit) before it drops values for
/// `keys_only`; raftwerk clears the values while scanning, so a sort by
/// value sees only empty values and returns key order.
#[test]
fn keys_only_still_sorts_by_value() {
    let mut node = Node::new();
    node.put("a", "3");
    node.put("b", "1");
    node.put("c", "2");
    let request = RangeRequest {
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Value,
        keys_only: true,
        limit: 2,
        ..range("a", "\0")
    };
    let response = node.store.range(&request).unwrap();
    assert_eq!(
        keys(&response),
        vec!["b", "c"],
        "sorted by value (1, 2), then limited, then values dropped"
    );
}

/// etcd's `count` is the number of keys in the range at the revision
/// (`rr.Count` from mvcc), whatever the min/max mod/create revision
/// filters prune from `kvs`; raftwerk counts only the filtered keys.
#[test]
fn count_is_the_range_size_not_the_filtered_size() {
    let mut node = Node::new();
    node.put("a", "1"); // rev 1
    node.put("b", "1"); // rev 2
    node.put("c", "1"); // rev 3
    let response = node
        .store
        .range(&RangeRequest {
            min_mod_revision: 3,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&response), vec!["c"]);
    assert_eq!(response.count, 3, "etcd reports the 3 keys of the range");
}

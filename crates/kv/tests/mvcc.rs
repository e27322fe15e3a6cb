//! etcd's key-space semantics, rule by rule, on an in-memory store (and the
//! durable one for restart): revisions, versions, tombstones, historic
//! reads, compaction, range options, transactions, snapshots.

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

    fn put(&mut self, key: &str, value: &str) -> PutResponse {
        match self.apply(Command::Put(put(key, value))) {
            Ok(CommandResponse::Put(response)) => response,
            other => panic!("put: {other:?}"),
        }
    }

    fn delete(&mut self, key: &str, range_end: &str) -> DeleteRangeResponse {
        match self.apply(Command::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: true,
        })) {
            Ok(CommandResponse::DeleteRange(response)) => response,
            other => panic!("delete: {other:?}"),
        }
    }

    fn txn(&mut self, txn: TxnRequest) -> TxnResponse {
        match self.apply(Command::Txn(txn)) {
            Ok(CommandResponse::Txn(response)) => response,
            other => panic!("txn: {other:?}"),
        }
    }

    fn get(&self, key: &str) -> Option<KeyValue> {
        self.store.range(&range(key, "")).expect("range").kvs.pop()
    }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
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

#[test]
fn each_write_increases_the_revision_once_and_versions_count_writes() {
    let mut node = Node::new();
    assert_eq!(node.put("a", "1").revision, 1);
    assert_eq!(node.put("a", "2").revision, 2);
    assert_eq!(node.put("b", "1").revision, 3);
    let a = node.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 2, 2));
    assert_eq!(node.store.revision(), 3);
}

#[test]
fn missing_key_is_an_empty_range_not_an_error() {
    let node = Node::new();
    let response = node.store.range(&range("nothing", "")).unwrap();
    assert!(response.kvs.is_empty());
    assert_eq!(response.count, 0);
}

#[test]
fn delete_writes_a_tombstone_and_a_recreated_key_starts_over() {
    let mut node = Node::new();
    node.put("a", "1");
    node.put("a", "2");
    let deleted = node.delete("a", "");
    assert_eq!((deleted.deleted, deleted.revision), (1, 3));
    assert_eq!(deleted.prev_kvs[0].value, b"2");
    assert!(node.get("a").is_none());
    node.put("a", "3");
    let a = node.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (4, 4, 1));
    // A delete that deletes nothing does not take a revision.
    let nothing = node.delete("zzz", "");
    assert_eq!((nothing.deleted, nothing.revision), (0, 4));
    assert_eq!(node.store.revision(), 4);
}

#[test]
fn reads_at_a_past_revision_see_the_state_then() {
    let mut node = Node::new();
    node.put("a", "1");
    node.put("a", "2");
    node.delete("a", "");
    let at = |revision| {
        node.store
            .range(&RangeRequest {
                revision,
                ..range("a", "")
            })
            .unwrap()
    };
    assert_eq!(at(1).kvs[0].value, b"1");
    assert_eq!(at(2).kvs[0].value, b"2");
    assert!(at(3).kvs.is_empty());
    assert_eq!(at(1).revision, 3, "the header carries the current revision");
    assert!(matches!(
        node.store.range(&RangeRequest {
            revision: 9,
            ..range("a", "")
        }),
        Err(KvError::FutureRevision { .. })
    ));
}

#[test]
fn compaction_removes_history_below_and_refuses_reads_there() {
    let mut node = Node::new();
    node.put("a", "1"); // 1
    node.put("a", "2"); // 2
    node.put("b", "1"); // 3
    node.delete("b", ""); // 4
    node.put("c", "1"); // 5
    assert_eq!(
        node.apply(Command::Compact { revision: 4 }),
        Ok(CommandResponse::Compact { revision: 5 })
    );
    let error = node
        .store
        .range(&RangeRequest {
            revision: 3,
            ..range("a", "")
        })
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let at4 = node
        .store
        .range(&RangeRequest {
            revision: 4,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&at4), vec!["a"], "b was deleted at 4, c came later");
    assert_eq!(at4.kvs[0].value, b"2");
    assert_eq!(node.get("c").unwrap().value, b"1");
    assert!(matches!(
        node.apply(Command::Compact { revision: 4 }),
        Err(KvError::Compacted { .. })
    ));
    assert!(matches!(
        node.apply(Command::Compact { revision: 99 }),
        Err(KvError::FutureRevision { .. })
    ));
    assert_eq!(node.store.compact_revision(), 4);
}

#[test]
fn range_forms_prefix_from_key_limit_count_and_more() {
    let mut node = Node::new();
    for key in ["a", "ab", "abc", "b", "c"] {
        node.put(key, key);
    }
    assert_eq!(
        keys(&node.store.range(&range("a", "b")).unwrap()),
        vec!["a", "ab", "abc"],
        "prefix a"
    );
    assert_eq!(
        keys(&node.store.range(&range("ab", "\0")).unwrap()),
        vec!["ab", "abc", "b", "c"],
        "from key"
    );
    assert!(
        node.store.range(&range("c", "a")).unwrap().kvs.is_empty(),
        "end before start"
    );
    let limited = node
        .store
        .range(&RangeRequest {
            limit: 2,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&limited), vec!["a", "ab"]);
    assert!(limited.more);
    assert_eq!(limited.count, 5, "count ignores the limit");
    let counted = node
        .store
        .range(&RangeRequest {
            count_only: true,
            ..range("a", "\0")
        })
        .unwrap();
    assert!(counted.kvs.is_empty() && counted.count == 5 && !counted.more);
    let keys_only = node
        .store
        .range(&RangeRequest {
            keys_only: true,
            ..range("a", "")
        })
        .unwrap();
    assert!(keys_only.kvs[0].value.is_empty());
}

#[test]
fn range_sorts_by_any_target_and_filters_by_revisions() {
    let mut node = Node::new();
    node.put("b", "2"); // 1
    node.put("a", "3"); // 2
    node.put("c", "1"); // 3
    node.put("b", "2"); // 4
    let sorted = |order, target| {
        keys(
            &node
                .store
                .range(&RangeRequest {
                    sort_order: order,
                    sort_target: target,
                    ..range("a", "\0")
                })
                .unwrap(),
        )
    };
    assert_eq!(sorted(SortOrder::Descend, SortTarget::Key), vec!["c", "b", "a"]);
    assert_eq!(sorted(SortOrder::Ascend, SortTarget::Value), vec!["c", "b", "a"]);
    assert_eq!(
        sorted(SortOrder::None, SortTarget::Mod),
        vec!["a", "c", "b"],
        "a target alone sorts ascending"
    );
    assert_eq!(sorted(SortOrder::Descend, SortTarget::Version)[0], "b");
    let filtered = node
        .store
        .range(&RangeRequest {
            min_mod_revision: 3,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&filtered), vec!["b", "c"]);
    let created = node
        .store
        .range(&RangeRequest {
            max_create_revision: 1,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&created), vec!["b"]);
}

#[test]
fn put_with_prev_kv_ignore_value_and_ignore_lease() {
    let mut node = Node::new();
    node.put("a", "1");
    let response = node
        .apply(Command::Put(PutRequest {
            prev_kv: true,
            ignore_value: true,
            ignore_lease: true,
            ..put("a", "")
        }))
        .unwrap();
    let CommandResponse::Put(response) = response else {
        panic!()
    };
    assert_eq!(response.prev_kv.unwrap().value, b"1");
    let a = node.get("a").unwrap();
    assert_eq!((a.value.as_slice(), a.lease, a.version), (&b"1"[..], 0, 2));
    let missing = node.apply(Command::Put(PutRequest {
        ignore_value: true,
        ..put("nope", "")
    }));
    assert_eq!(missing.unwrap_err().to_string(), "etcdserver: key not found");
    // etcd's refusals of contradictory or unknown leases and values.
    let refusals = [
        (
            PutRequest {
                ignore_value: true,
                ..put("a", "given")
            },
            "etcdserver: value is provided",
        ),
        (
            PutRequest {
                ignore_lease: true,
                lease: 7,
                ..put("a", "x")
            },
            "etcdserver: lease is provided",
        ),
        (
            PutRequest {
                lease: 7,
                ..put("a", "x")
            },
            "etcdserver: requested lease not found",
        ),
    ];
    for (request, message) in refusals {
        assert_eq!(node.apply(Command::Put(request)).unwrap_err().to_string(), message);
    }
    assert_eq!(node.store.revision(), 2, "the refused puts took no revision");
    assert_eq!(node.get("a").unwrap().value, b"1");
}

#[test]
fn a_read_only_txn_cannot_read_the_next_revision_but_a_writing_one_can() {
    let mut node = Node::new();
    node.put("a", "1");
    let read_next = |key: &str| {
        RequestOp::Range(RangeRequest {
            revision: 2,
            ..range(key, "")
        })
    };
    let read_only = node.apply(Command::Txn(TxnRequest {
        success: vec![read_next("a")],
        ..TxnRequest::default()
    }));
    assert_eq!(
        read_only.unwrap_err().to_string(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    let response = node.txn(TxnRequest {
        success: vec![RequestOp::Put(put("b", "2")), read_next("b")],
        ..TxnRequest::default()
    });
    let ResponseOp::Range(read) = &response.responses[1] else {
        panic!("{response:?}")
    };
    assert_eq!(
        read.kvs[0].value, b"2",
        "the txn's own write is visible at its revision"
    );
}

fn compare(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        result,
        target,
        key: key.into(),
        range_end: Vec::new(),
    }
}

#[test]
fn txn_runs_the_branch_its_compares_choose_in_one_revision() {
    let mut node = Node::new();
    node.put("a", "1");
    let txn = TxnRequest {
        compare: vec![
            compare("a", CompareResult::Equal, CompareTarget::Value(b"1".to_vec())),
            compare("a", CompareResult::Equal, CompareTarget::Version(1)),
            compare("missing", CompareResult::Equal, CompareTarget::Create(0)),
        ],
        success: vec![
            RequestOp::Put(put("a", "2")),
            RequestOp::Put(put("b", "2")),
            RequestOp::Range(range("a", "")),
        ],
        failure: vec![RequestOp::Put(put("failed", "1"))],
    };
    let CommandResponse::Txn(response) = node.apply(Command::Txn(txn.clone())).unwrap() else {
        panic!()
    };
    assert!(response.succeeded);
    assert_eq!(response.revision, 2, "one revision for the whole transaction");
    let ResponseOp::Range(read) = &response.responses[2] else {
        panic!()
    };
    assert_eq!(
        read.kvs[0].value, b"2",
        "a read in a transaction sees its earlier writes"
    );
    assert_eq!(node.get("b").unwrap().mod_revision, 2);
    let CommandResponse::Txn(again) = node.apply(Command::Txn(txn)).unwrap() else {
        panic!()
    };
    assert!(!again.succeeded, "a's value is 2 now");
    assert!(node.get("failed").is_some());
    let value_of_missing = TxnRequest {
        compare: vec![compare(
            "missing",
            CompareResult::NotEqual,
            CompareTarget::Value(b"x".to_vec()),
        )],
        ..TxnRequest::default()
    };
    let CommandResponse::Txn(missing) = node.apply(Command::Txn(value_of_missing)).unwrap() else {
        panic!()
    };
    assert!(!missing.succeeded, "a value compare on a missing key fails");
    assert_eq!(missing.revision, 3, "a transaction without writes takes no revision");
}

#[test]
fn txn_with_duplicate_keys_is_refused_and_changes_nothing() {
    let mut node = Node::new();
    node.put("a", "1");
    let duplicate = TxnRequest {
        success: vec![RequestOp::Put(put("k", "1")), RequestOp::Put(put("k", "2"))],
        ..TxnRequest::default()
    };
    let error = node.apply(Command::Txn(duplicate)).unwrap_err();
    assert_eq!(error.to_string(), "etcdserver: duplicate key given in txn request");
    let overlapping = TxnRequest {
        success: vec![
            RequestOp::Put(put("k", "1")),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: "a".into(),
                range_end: "z".into(),
                prev_kv: false,
            }),
        ],
        ..TxnRequest::default()
    };
    assert_eq!(node.apply(Command::Txn(overlapping)), Err(KvError::DuplicateKey));
    assert!(node.get("k").is_none());
    assert_eq!(node.store.revision(), 1);
}

#[test]
fn a_failing_op_rolls_back_the_whole_transaction() {
    let mut node = Node::new();
    let txn = TxnRequest {
        success: vec![
            RequestOp::Put(put("written", "1")),
            RequestOp::Put(PutRequest {
                ignore_value: true,
                ..put("missing", "")
            }),
        ],
        ..TxnRequest::default()
    };
    assert_eq!(node.apply(Command::Txn(txn)), Err(KvError::KeyNotFound));
    assert!(node.get("written").is_none(), "the first put was rolled back");
    assert_eq!(node.store.revision(), 0);
    assert_eq!(
        node.store.applied_index(),
        1,
        "the command was still applied (as a failure)"
    );
}

#[test]
fn batches_are_atomic_with_the_applied_index_and_replays_are_skipped() {
    let dir = std::env::temp_dir().join(format!("raftwerk-kv-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.redb");
    {
        let mut store = KvStore::open(&path).unwrap();
        let batch: Vec<(u64, Command)> = (1..=3)
            .map(|index| (index, Command::Put(put(&format!("k{index}"), "v"))))
            .collect();
        store.apply(&batch).unwrap();
    }
    let mut store = KvStore::open(&path).unwrap();
    assert_eq!(store.applied_index(), 3);
    assert_eq!(store.revision(), 3);
    let replay: Vec<(u64, Command)> = (2..=4)
        .map(|index| (index, Command::Put(put("k", &index.to_string()))))
        .collect();
    let responses = store.apply(&replay).unwrap();
    assert_eq!(responses.len(), 1, "entries 2 and 3 were already applied");
    assert_eq!(store.revision(), 4);
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn snapshot_restores_the_same_state_and_history() {
    let mut node = Node::new();
    node.put("a", "1");
    node.put("a", "2");
    node.delete("a", "");
    node.put("b", "1");
    let mut data = Vec::new();
    let written = node.store.write_snapshot(&mut data).unwrap();
    assert_eq!(written, data.len() as u64);
    let mut other = Node::new();
    other.put("junk", "x");
    other
        .store
        .bootstrap_members(&[Member {
            id: 9,
            ..Member::default()
        }])
        .unwrap();
    other.store.restore_snapshot(&mut data.as_slice()).unwrap();
    assert_eq!(other.store.members().unwrap(), node.store.members().unwrap());
    assert_eq!(other.store.applied_index(), node.store.applied_index());
    assert_eq!(other.store.revision(), 4);
    assert!(other.get("junk").is_none(), "the old state is gone");
    for revision in 1..=4 {
        let request = RangeRequest {
            revision,
            ..range("a", "\0")
        };
        assert_eq!(
            other.store.range(&request),
            node.store.range(&request),
            "at revision {revision}"
        );
    }
    let mut damaged = data.clone();
    damaged.truncate(data.len() - 3);
    let before = other.store.range(&range("a", "\0")).unwrap();
    assert!(other.store.restore_snapshot(&mut damaged.as_slice()).is_err());
    assert_eq!(
        other.store.range(&range("a", "\0")).unwrap(),
        before,
        "a damaged snapshot changes nothing"
    );
}

#[test]
fn keys_with_zero_bytes_and_prefixes_stay_apart() {
    let mut node = Node::new();
    node.put("a", "1");
    node.put("a\0", "2");
    node.put("a\0b", "3");
    assert_eq!(node.get("a").unwrap().value, b"1");
    assert_eq!(node.get("a\0").unwrap().value, b"2");
    assert_eq!(
        keys(&node.store.range(&range("a\0", "a\u{1}")).unwrap()),
        vec!["a\0", "a\0b"]
    );
}

#[test]
fn a_failed_command_inside_a_batch_leaves_nothing_and_the_rest_applies() {
    let mut store = KvStore::in_memory().unwrap();
    let failing = TxnRequest {
        success: vec![
            RequestOp::Put(put("half", "1")),
            RequestOp::Put(PutRequest {
                ignore_lease: true,
                ..put("missing", "")
            }),
        ],
        ..TxnRequest::default()
    };
    let batch = vec![
        (1, Command::Put(put("before", "1"))),
        (2, Command::Txn(failing)),
        (3, Command::Put(put("after", "1"))),
    ];
    let responses = store.apply(&batch).unwrap();
    assert!(responses[0].is_ok() && responses[2].is_ok());
    assert_eq!(responses[1], Err(KvError::KeyNotFound));
    let all = store.range(&range("a", "\0")).unwrap();
    assert_eq!(keys(&all), vec!["after", "before"], "nothing of the failed transaction");
    assert_eq!(store.revision(), 2);
    assert_eq!(store.applied_index(), 3);
}

// ----- Findings of the review of the key space --------------------------------
//
// Places where it answered differently from etcd; each failed before its fix.

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

#[test]
fn member_changes_apply_with_the_index_take_no_revision_and_travel_in_snapshots() {
    let mut node = Node::new();
    let member = |id: u64, name: &str| Member {
        id,
        name: name.into(),
        peer_urls: vec![format!("http://127.0.0.1:{id}")],
        ..Member::default()
    };
    node.store.bootstrap_members(&[member(1, "a"), member(2, "b")]).unwrap();
    node.put("k", "v");
    let added = node
        .apply(Command::Members(MemberChange::Add(Member {
            is_learner: true,
            promote_when_caught_up: true,
            ..member(3, "")
        })))
        .unwrap();
    let CommandResponse::Members(list) = added else {
        panic!("{added:?}")
    };
    assert_eq!(list.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(node.store.revision(), 1, "member changes take no revision");
    assert_eq!(node.store.applied_index(), 2);
    node.apply(Command::Members(MemberChange::Promote { id: 3 })).unwrap();
    node.apply(Command::Members(MemberChange::UpdatePeerUrls {
        id: 2,
        peer_urls: vec!["http://10.0.0.2:2380".into()],
    }))
    .unwrap();
    node.apply(Command::Members(MemberChange::Remove { id: 1 })).unwrap();
    let members = node.store.members().unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].peer_urls, vec!["http://10.0.0.2:2380".to_string()]);
    assert!(!members[1].is_learner && !members[1].promote_when_caught_up);
    assert_eq!(
        node.apply(Command::Members(MemberChange::Remove { id: 1 }))
            .unwrap_err()
            .to_string(),
        "etcdserver: member not found"
    );
    assert_eq!(
        node.store.removed_members().unwrap(),
        vec![1],
        "a removed member is remembered"
    );
    assert_eq!(
        node.apply(Command::Members(MemberChange::Promote { id: 1 }))
            .unwrap_err()
            .to_string(),
        "etcdserver: member not found"
    );
    // Bootstrapping again changes nothing once the store has a history.
    node.store.bootstrap_members(&[member(7, "x")]).unwrap();
    assert_eq!(node.store.members().unwrap(), members);
    let mut data = Vec::new();
    node.store.write_snapshot(&mut data).unwrap();
    let mut other = Node::new();
    other.store.restore_snapshot(&mut data.as_slice()).unwrap();
    assert_eq!(other.store.members().unwrap(), members);
    assert_eq!(other.store.removed_members().unwrap(), vec![1]);
}

#[test]
fn a_snapshot_written_in_steps_is_the_state_when_it_started() {
    let mut node = Node::new();
    for at in 0..50 {
        node.put(&format!("k{at:02}"), "value");
    }
    let mut whole = Vec::new();
    node.store.write_snapshot(&mut whole).unwrap();
    let mut source = node.store.snapshot_source().unwrap();
    let mut stepped = Vec::new();
    let mut steps = 0;
    while !source.write_some(&mut stepped, 64).unwrap() {
        steps += 1;
        // Writes between the steps are not in it.
        node.put(&format!("later{steps}"), "x");
    }
    assert!(steps > 5, "written in {steps} steps");
    assert_eq!(stepped, whole);
    assert_eq!(source.written(), whole.len() as u64);
}

#[test]
fn hash_kv_covers_history_and_agrees_across_stores_at_each_revision() {
    let mut a = Node::new();
    let mut b = Node::new();
    let mut hashes = Vec::new();
    for (key, value) in [("x", "1"), ("y", "2"), ("x", "3")] {
        a.put(key, value);
        b.put(key, value);
        hashes.push(a.store.hash_kv(0).unwrap());
        assert_eq!(b.store.hash_kv(0).unwrap(), *hashes.last().unwrap());
    }
    // A past revision hashes as the store did then.
    assert_eq!(a.store.hash_kv(2).unwrap(), hashes[1]);
    assert_eq!(hashes[2].2, 3, "the revision hashed");
    // The same final state reached by another history hashes differently.
    let mut c = Node::new();
    c.put("y", "2");
    c.put("x", "0");
    c.put("x", "3");
    assert_eq!(c.get("x").unwrap().value, a.get("x").unwrap().value);
    assert_ne!(c.store.hash_kv(0).unwrap().0, hashes[2].0);
    a.apply(Command::Compact { revision: 2 }).unwrap();
    assert_eq!(a.store.hash_kv(0).unwrap().1, 2, "the compaction revision");
    assert!(matches!(a.store.hash_kv(1), Err(KvError::Compacted { .. })));
    assert!(
        matches!(a.store.hash_kv(2), Err(KvError::Compacted { .. })),
        "as etcd 3.4/3.5, the compaction revision itself is compacted"
    );
    assert!(matches!(a.store.hash_kv(9), Err(KvError::FutureRevision { .. })));
}

//! Review round 3: key-space findings, each a test that fails today (see
//! each test's doc comment).

use raftwerk_kv::*;

fn put(key: &str, value: &str) -> Command {
    Command::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..PutRequest::default()
    })
}

/// BUG (`KvStore::restore_snapshot`: "BadCommand for a damaged snapshot
/// (the store is unchanged)"): the snapshot format has no row count and no
/// end marker, and the row loop treats `UnexpectedEof` while reading a
/// row's 4-byte length prefix as the clean end of the snapshot. A snapshot
/// cut 1 to 3 bytes into a row's length (or exactly between two rows) is
/// accepted: the store is replaced by a key space missing every later row,
/// with the header's revision, so the lost keys are silently gone at a
/// revision that claims them. Today every caller hands it an exact length
/// (the WAL's chunks, a backup checked by its trailer), so this is latent;
/// but the store's own check promises more than it does.
///
/// Observed: restoring the cut snapshot succeeds and `k2` is missing.
/// Expected: `BadCommand`, and the store unchanged.
#[test]
fn a_snapshot_cut_inside_a_row_length_is_refused() {
    let mut source = KvStore::in_memory().unwrap();
    source.apply(&[(1, put("k1", "one")), (2, put("k2", "two"))]).unwrap();
    let mut bytes = Vec::new();
    source.write_snapshot(&mut bytes).unwrap();
    // The last row is k2's: its key is the row key of ("k2", revision 2).
    let last_row_bytes = {
        let mut only_k1 = KvStore::in_memory().unwrap();
        only_k1.apply(&[(1, put("k1", "one"))]).unwrap();
        let mut shorter = Vec::new();
        only_k1.write_snapshot(&mut shorter).unwrap();
        shorter.len()
    };
    assert!(last_row_bytes < bytes.len());
    // Cut two bytes into the length prefix of k2's row.
    let cut = &bytes[..last_row_bytes + 2];
    let mut target = KvStore::in_memory().unwrap();
    target.apply(&[(7, put("mine", "kept"))]).unwrap();
    let result = target.restore_snapshot(&mut &cut[..]);
    assert!(
        matches!(result, Err(KvError::BadCommand(_))),
        "a cut snapshot was accepted: {result:?}; k2 now reads {:?}",
        target
            .range(&RangeRequest {
                key: b"k2".to_vec(),
                ..RangeRequest::default()
            })
            .map(|response| response.kvs.len())
    );
}

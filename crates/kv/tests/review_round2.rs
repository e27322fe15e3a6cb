//! Review round 2: key-space findings, each a test that failed before its
//! fix (see each test's doc comment).

use raftwerk_kv::*;

fn member(id: u64, name: &str) -> Member {
    Member {
        id,
        name: name.into(),
        peer_urls: vec![format!("http://127.0.0.1:{id}")],
        ..Member::default()
    }
}

/// BUG (kv contract: "a command that fails changes nothing"):
/// `Member::encode` writes strings up to 65,535 bytes, but `Member::decode`
/// refuses names and URLs longer than `NAME_BYTES_MAX` / `URL_BYTES_MAX`
/// (1,024). `KvStore::apply` of a `MemberChange::Publish` with a 2,000-byte
/// name inserts the record, then fails reading the table back: the
/// response is an error, but the batch is committed with the record in
/// it. From then on every read of the member table fails: `members()`
/// (member list, Join, `sync_peers`, which `Node::start` calls) and
/// `snapshot_source()` (no snapshot, no compaction). In the server today
/// the command codec refuses such a command at decode (the entry is
/// skipped at apply and the proposer is told "leader changed"), and the
/// Peer service's `MemberPublish`, which checks neither the name nor the
/// client URLs, is the only way in; so this is latent, but one change to
/// the codec's limits away from bricking a cluster at its next restart.
///
/// Observed: the publish is applied, then `members()` and
/// `snapshot_source()` fail with "member string too long". Expected: the
/// change is refused and changes nothing.
#[test]
fn a_published_name_longer_than_the_decoder_accepts_breaks_the_member_table() {
    let mut store = KvStore::in_memory().unwrap();
    store.bootstrap_members(&[member(1, "a"), member(2, "b")]).unwrap();
    let publish = Command::Members(MemberChange::Publish {
        id: 2,
        name: "x".repeat(2000),
        client_urls: vec!["http://127.0.0.1:2379".into()],
    });
    let responses = store.apply(&[(1, publish)]).expect("no storage failure");
    eprintln!("publish answered {:?}", responses[0].as_ref().map(|_| ()));
    assert!(
        store.members().is_ok(),
        "member list unreadable after a publish: {:?}",
        store.members().err()
    );
    assert!(
        store.snapshot_source().is_ok(),
        "no snapshot can be taken: {:?}",
        store.snapshot_source().err()
    );
}

/// BUG (same root cause, client URLs): a published client URL longer than
/// `URL_BYTES_MAX` is stored and can never be read back.
///
/// Observed: `members()` fails after the publish. Expected: refused, or
/// readable.
#[test]
fn a_published_client_url_longer_than_the_decoder_accepts_breaks_the_member_table() {
    let mut store = KvStore::in_memory().unwrap();
    store.bootstrap_members(&[member(1, "a")]).unwrap();
    let long_url = format!("http://{}:2379", "h".repeat(1100));
    let publish = Command::Members(MemberChange::Publish {
        id: 1,
        name: "a".into(),
        client_urls: vec![long_url],
    });
    store.apply(&[(1, publish)]).expect("no storage failure");
    assert!(
        store.members().is_ok(),
        "member list unreadable after a publish: {:?}",
        store.members().err()
    );
}

//! Safety checks run after every simulated step (Raft paper Figure 3) and
//! the linearizability check of client operations.
//!
//! - Election Safety: at most one leader per term.
//! - Log Matching: every node's log is summarised as a chain of prefix
//!   hashes; two entries with the same index and term must carry the same
//!   prefix hash, i.e. identical logs up to there. Durable entries are
//!   recorded; in-memory entries are compared with the record. (A single
//!   node may legitimately reuse a term whose vote never became durable:
//!   entries lost in a crash were never part of any surviving log.)
//! - State Machine Safety: all nodes apply the same entry at each index
//!   (the committed ledger is keyed by index and compared on every apply).
//! - Leader Completeness: a new leader of term T holds every entry known to
//!   be committed in a term below T.
//! - Snapshots: a node that installs a snapshot at index i must receive
//!   exactly the committed state at i (the digest of the applied prefix) and
//!   the committed term there; its log then starts from the committed
//!   prefix, and Log Matching continues from it.
//! - Linearizability: writes are ordered by log index and reads observe a
//!   whole applied prefix; an operation invoked after another completed
//!   must be ordered after it. Failed or timed-out writes impose nothing
//!   (they may or may not have been applied).

use std::collections::BTreeMap;

use raftwerk_raft::{Entry, Index, NodeId, Term};

/// One position of a node's log as the checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ChainLink {
    term: Term,
    /// Hash of every entry up to and including this one.
    prefix: u64,
    data: u64,
}

/// An entry some node applied: the first node to apply an index fixes it.
#[derive(Clone, Copy, Debug)]
struct CommittedLink {
    /// An upper bound on the term in which the entry was committed: the
    /// applying node's term, never below the bound for the previous index.
    committed_by_term: Term,
    term: Term,
    prefix: u64,
    data: u64,
    /// State-machine digest after applying every entry up to this one.
    digest: u64,
}

/// 64-bit FNV-1a followed by a finaliser; good enough to tell entries apart.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(hash)
}

pub fn mix(mut value: u64) -> u64 {
    value ^= value >> 33;
    value = value.wrapping_mul(0xff51_afd7_ed55_8ccd);
    value ^= value >> 33;
    value = value.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    value ^ (value >> 33)
}

/// The state-machine digest after applying `entry` onto `previous`: what a
/// simulated state machine holds and what its snapshots carry.
pub fn state_digest(previous: u64, entry: &Entry) -> u64 {
    mix(previous ^ link_for(0, entry).data ^ mix(entry.index))
}

fn link_for(previous: u64, entry: &Entry) -> ChainLink {
    let data = hash_bytes(&entry.data) ^ mix(entry.kind as u64 + 1);
    ChainLink {
        term: entry.term,
        prefix: mix(previous ^ mix(entry.term) ^ mix(entry.index.rotate_left(17)) ^ data),
        data,
    }
}

/// The invariant state of one simulated run.
pub struct Checker {
    leaders_by_term: BTreeMap<Term, NodeId>,
    prefixes: BTreeMap<(Index, Term), u64>,
    /// Per node (index `id - 1`), entry `i` describes log index `i`;
    /// entry 0 is the empty prefix. The in-memory log.
    chains: Vec<Vec<ChainLink>>,
    /// The same for each node's durable log.
    durable_chains: Vec<Vec<ChainLink>>,
    /// Entry `i` describes committed index `i + 1`.
    committed: Vec<CommittedLink>,
    /// Highest log index any completed operation is ordered after.
    completed_max: Index,
    pub writes_acked: u64,
    pub reads_served: u64,
}

const EMPTY_LINK: ChainLink = ChainLink {
    term: 0,
    prefix: 0,
    data: 0,
};

impl Checker {
    pub fn new(nodes: usize) -> Self {
        Checker {
            leaders_by_term: BTreeMap::new(),
            prefixes: BTreeMap::new(),
            chains: vec![vec![EMPTY_LINK]; nodes],
            durable_chains: vec![vec![EMPTY_LINK]; nodes],
            committed: Vec::new(),
            completed_max: 0,
            writes_acked: 0,
            reads_served: 0,
        }
    }

    fn chain(&mut self, node: NodeId) -> &mut Vec<ChainLink> {
        &mut self.chains[(node - 1) as usize]
    }

    /// Overwrites `chain` from `entries[0].index` on; returns the new links.
    fn extend_chain(node: NodeId, chain: &mut Vec<ChainLink>, entries: &[Entry]) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index as usize > chain.len() {
            return Err(format!(
                "node {node} appended index {} leaving a gap after {}",
                first.index,
                chain.len() - 1
            ));
        }
        chain.truncate(first.index as usize);
        let mut previous = chain.last().expect("sentinel").prefix;
        for entry in entries {
            let link = link_for(previous, entry);
            previous = link.prefix;
            chain.push(link);
        }
        Ok(())
    }

    fn check_matching(&mut self, node: NodeId, entries: &[Entry], durable: bool) -> Result<(), String> {
        let position = (node - 1) as usize;
        for entry in entries {
            let chain = if durable {
                &self.durable_chains[position]
            } else {
                &self.chains[position]
            };
            let link = chain[entry.index as usize];
            let known = if durable {
                Some(*self.prefixes.entry((entry.index, link.term)).or_insert(link.prefix))
            } else {
                self.prefixes.get(&(entry.index, link.term)).copied()
            };
            if known.is_some_and(|known| known != link.prefix) {
                return Err(format!(
                    "Log Matching violated: node {node} holds index {} term {} with a different prefix",
                    entry.index, link.term
                ));
            }
        }
        Ok(())
    }

    /// A node appended `entries` to its in-memory log (possibly overwriting
    /// a suffix).
    ///
    /// # Errors
    /// A description of the violated invariant.
    pub fn on_entries(&mut self, node: NodeId, entries: &[Entry]) -> Result<(), String> {
        Self::extend_chain(node, &mut self.chains[(node - 1) as usize], entries)?;
        self.check_matching(node, entries, false)
    }

    /// A node's disk made `entries` durable.
    ///
    /// # Errors
    /// A description of the violated invariant.
    pub fn on_durable(&mut self, node: NodeId, entries: &[Entry]) -> Result<(), String> {
        Self::extend_chain(node, &mut self.durable_chains[(node - 1) as usize], entries)?;
        self.check_matching(node, entries, true)
    }

    /// A node restarted from durable storage holding `entries` from
    /// `first_index` on, which must be exactly what its disk made durable.
    ///
    /// # Errors
    /// When storage and the durable record disagree.
    pub fn reset_log(&mut self, node: NodeId, first_index: Index, entries: &[Entry]) -> Result<(), String> {
        let position = (node - 1) as usize;
        // The compacted prefix is vouched for by the snapshot checks.
        let durable = &self.durable_chains[position];
        if durable.len() < first_index as usize {
            return Err(format!(
                "node {node} restarted with a log starting at {first_index}, beyond what was made durable"
            ));
        }
        let mut restored = durable[..first_index as usize].to_vec();
        Self::extend_chain(node, &mut restored, entries)?;
        if restored != self.durable_chains[position] {
            return Err(format!(
                "node {node} restarted with a log that differs from what was made durable"
            ));
        }
        self.chains[position] = restored;
        Ok(())
    }

    /// A node applied `entry` while in term `term`.
    ///
    /// # Errors
    /// When State Machine Safety is violated.
    pub fn on_apply(&mut self, node: NodeId, term: Term, entry: &Entry) -> Result<(), String> {
        let index = entry.index;
        let link = match self.chain(node).get(index as usize) {
            Some(link) => *link,
            None => return Err(format!("node {node} applied index {index} that is not in its log")),
        };
        if link.term != entry.term || link.data != link_for(0, entry).data {
            return Err(format!("node {node} applied index {index} that differs from its log"));
        }
        let position = (index - 1) as usize;
        if let Some(committed) = self.committed.get(position) {
            if committed.prefix != link.prefix || committed.data != link.data {
                return Err(format!(
                    "State Machine Safety violated: node {node} applied a different entry at index {index}"
                ));
            }
            return Ok(());
        }
        if position != self.committed.len() {
            return Err(format!(
                "node {node} applied index {index} before index {}",
                self.committed.len() + 1
            ));
        }
        let floor = self.committed.last().map_or(0, |last| last.committed_by_term);
        let digest = state_digest(self.committed.last().map_or(0, |last| last.digest), entry);
        self.committed.push(CommittedLink {
            committed_by_term: term.max(floor),
            term: entry.term,
            prefix: link.prefix,
            data: link.data,
            digest,
        });
        Ok(())
    }

    /// The committed state digest at `index` (0 for the empty state).
    pub fn committed_digest(&self, index: Index) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        self.committed.get((index - 1) as usize).map(|link| link.digest)
    }

    /// A node took or received a snapshot at `index` of `term` holding the
    /// state `digest`: it must be the committed state there.
    ///
    /// # Errors
    /// When the snapshot is not the committed state.
    pub fn check_snapshot(&self, node: NodeId, index: Index, term: Term, digest: u64) -> Result<(), String> {
        let Some(link) = self.committed.get((index.max(1) - 1) as usize) else {
            return Err(format!(
                "node {node} holds a snapshot at {index}, beyond anything applied ({})",
                self.committed.len()
            ));
        };
        if link.term != term || link.digest != digest {
            return Err(format!(
                "State Machine Safety violated: node {node} holds a snapshot at {index} (term {term}) that is not the committed state"
            ));
        }
        Ok(())
    }

    /// A node replaced its log by a snapshot at `index` of `term`, in memory
    /// or (`durable`) on disk: its log is now the committed prefix up to
    /// `index`.
    ///
    /// # Errors
    /// When the snapshot does not match the committed log.
    pub fn on_snapshot_installed(
        &mut self,
        node: NodeId,
        index: Index,
        term: Term,
        durable: bool,
    ) -> Result<(), String> {
        match self.committed.get((index.max(1) - 1) as usize) {
            Some(link) if link.term == term => {}
            _ => {
                return Err(format!(
                    "node {node} installed a snapshot at {index} (term {term}) that was never committed"
                ))
            }
        }
        let mut chain = Vec::with_capacity(index as usize + 1);
        chain.push(EMPTY_LINK);
        chain.extend(self.committed[..index as usize].iter().map(|link| ChainLink {
            term: link.term,
            prefix: link.prefix,
            data: link.data,
        }));
        let position = (node - 1) as usize;
        if durable {
            self.durable_chains[position] = chain;
        } else {
            self.chains[position] = chain;
        }
        Ok(())
    }

    /// A node is leader of `term`: checks Election Safety and Leader
    /// Completeness.
    ///
    /// # Errors
    /// A description of the violated invariant.
    pub fn on_leader(&mut self, node: NodeId, term: Term) -> Result<(), String> {
        let known = *self.leaders_by_term.entry(term).or_insert(node);
        if known != node {
            return Err(format!(
                "Election Safety violated: nodes {known} and {node} both leaders in term {term}"
            ));
        }
        let must_hold = self.committed.partition_point(|link| link.committed_by_term < term);
        if must_hold == 0 {
            return Ok(());
        }
        let expected = self.committed[must_hold - 1].prefix;
        let chain = &self.chains[(node - 1) as usize];
        match chain.get(must_hold) {
            Some(link) if link.prefix == expected => Ok(()),
            _ => Err(format!(
                "Leader Completeness violated: leader {node} of term {term} lacks committed index {must_hold}"
            )),
        }
    }

    /// The data hash of the committed entry at `index`, if any node applied it.
    pub fn committed_data(&self, index: Index) -> Option<u64> {
        self.committed
            .get((index.checked_sub(1)?) as usize)
            .map(|link| link.data)
    }

    pub fn committed_len(&self) -> Index {
        self.committed.len() as Index
    }

    /// The floor an operation invoked now must respect.
    pub fn invocation_floor(&self) -> Index {
        self.completed_max
    }

    /// A write invoked with `floor` was acknowledged at `index`.
    ///
    /// # Errors
    /// When the write is ordered before an operation that completed before
    /// it was invoked.
    pub fn on_write_acked(&mut self, index: Index, floor: Index) -> Result<(), String> {
        if index <= floor {
            return Err(format!(
                "linearizability violated: write acknowledged at index {index} but invoked after an operation ordered at {floor}"
            ));
        }
        self.completed_max = self.completed_max.max(index);
        self.writes_acked += 1;
        Ok(())
    }

    /// A read invoked with `floor` observed the state applied up to `observed`.
    ///
    /// # Errors
    /// When the read missed an operation that completed before it began.
    pub fn on_read_served(&mut self, observed: Index, floor: Index) -> Result<(), String> {
        if observed < floor {
            return Err(format!(
                "linearizability violated: read observed index {observed} but an operation completed at {floor} before it began"
            ));
        }
        self.completed_max = self.completed_max.max(observed);
        self.reads_served += 1;
        Ok(())
    }

    /// Data hash of an entry as the checker computes it.
    pub fn entry_data_hash(entry: &Entry) -> u64 {
        link_for(0, entry).data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raftwerk_raft::EntryKind;

    fn entry(index: Index, term: Term, data: &'static [u8]) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn detects_two_leaders_in_one_term() {
        let mut checker = Checker::new(3);
        checker.on_leader(1, 2).unwrap();
        assert!(checker.on_leader(2, 2).is_err());
    }

    #[test]
    fn detects_log_matching_violation() {
        let mut checker = Checker::new(2);
        checker.on_entries(1, &[entry(1, 1, b"a"), entry(2, 1, b"b")]).unwrap();
        checker.on_durable(1, &[entry(1, 1, b"a"), entry(2, 1, b"b")]).unwrap();
        assert!(checker.on_entries(2, &[entry(1, 1, b"x"), entry(2, 1, b"b")]).is_err());
        assert!(checker.on_durable(2, &[entry(1, 1, b"x"), entry(2, 1, b"b")]).is_err());
    }

    #[test]
    fn detects_state_machine_safety_violation() {
        let mut checker = Checker::new(2);
        checker.on_entries(1, &[entry(1, 1, b"a")]).unwrap();
        checker.on_entries(2, &[entry(1, 2, b"b")]).unwrap();
        checker.on_apply(1, 1, &entry(1, 1, b"a")).unwrap();
        assert!(checker.on_apply(2, 2, &entry(1, 2, b"b")).is_err());
    }

    #[test]
    fn detects_leader_missing_committed_entry() {
        let mut checker = Checker::new(2);
        checker.on_entries(1, &[entry(1, 1, b"a")]).unwrap();
        checker.on_apply(1, 1, &entry(1, 1, b"a")).unwrap();
        assert!(checker.on_leader(2, 2).is_err());
    }

    #[test]
    fn detects_stale_read() {
        let mut checker = Checker::new(1);
        checker.on_write_acked(5, 0).unwrap();
        let floor = checker.invocation_floor();
        assert!(checker.on_read_served(4, floor).is_err());
        assert!(checker.on_write_acked(3, floor).is_err());
    }
}

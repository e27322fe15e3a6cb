//! Cluster membership: who votes, who only learns, and the joint
//! configuration used while changing voters (dissertation ch. 4, joint
//! consensus §4.3; etcd's ConfChangeV2 with automatic leave).
//!
//! A configuration change is a log entry (`EntryKind::ConfChange`) whose
//! data is an encoded [`ConfChange`]. Every node uses the latest
//! configuration in its log, committed or not (§4.1), and undoes it if the
//! entry is truncated. A change of more than one voter enters the joint
//! configuration `C_old,new`, where elections and commitment need a
//! majority of both; the leader leaves it automatically once the joint
//! entry is committed.
//!
//! Invariants: voters, outgoing voters and learners are sorted and free of
//! duplicates; a learner is never a voter of the incoming configuration;
//! `outgoing` is non-empty exactly while joint.

use crate::types::{Index, NodeId, NO_NODE};

/// One membership operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeOp {
    /// Make the node a voter (a learner is promoted).
    AddVoter(NodeId),
    /// Make the node a learner (a voter is demoted).
    AddLearner(NodeId),
    /// Remove the node from the cluster.
    Remove(NodeId),
}

impl ConfChangeOp {
    pub fn node(self) -> NodeId {
        match self {
            ConfChangeOp::AddVoter(id) | ConfChangeOp::AddLearner(id) | ConfChangeOp::Remove(id) => id,
        }
    }
}

/// A set of operations applied atomically. An empty change leaves the
/// joint configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfChange {
    pub ops: Vec<ConfChangeOp>,
    /// Opaque application data replicated with the change (a server keeps
    /// a new member's address here, so every node that sees the change
    /// can reach it). The core never reads it.
    pub context: Vec<u8>,
}

/// Operations in one change, bounded so decoding a peer's entry is cheap.
pub const CONF_CHANGE_OPS_MAX: usize = 64;
/// Encoding without a context (every change the core makes itself).
const ENCODING_VERSION: u8 = 1;
/// Encoding with a context after the operations.
const ENCODING_VERSION_CONTEXT: u8 = 2;

/// Why an encoded change could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeDecodeError {
    #[error("configuration change encoding is empty")]
    Empty,
    #[error("unknown configuration change encoding version {0}")]
    Version(u8),
    #[error("configuration change has {0} operations (at most {CONF_CHANGE_OPS_MAX})")]
    TooManyOps(usize),
    #[error("configuration change encoding has the wrong length")]
    Length,
    #[error("unknown configuration change operation {0}")]
    Op(u8),
    #[error("configuration change names node 0")]
    ZeroNode,
}

impl ConfChange {
    /// A change without a context.
    pub fn new(ops: Vec<ConfChangeOp>) -> Self {
        ConfChange {
            ops,
            context: Vec::new(),
        }
    }

    /// Layout: version (1 byte), count (1 byte), then per operation a kind
    /// byte (1 voter, 2 learner, 3 remove) and the node id (8 bytes, LE);
    /// in version 2 the rest is the context.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.ops.len() <= CONF_CHANGE_OPS_MAX, "too many operations");
        let mut out = Vec::with_capacity(2 + 9 * self.ops.len() + self.context.len());
        out.push(if self.context.is_empty() {
            ENCODING_VERSION
        } else {
            ENCODING_VERSION_CONTEXT
        });
        out.push(self.ops.len() as u8);
        for op in &self.ops {
            let kind = match op {
                ConfChangeOp::AddVoter(_) => 1u8,
                ConfChangeOp::AddLearner(_) => 2,
                ConfChangeOp::Remove(_) => 3,
            };
            out.push(kind);
            out.extend_from_slice(&op.node().to_le_bytes());
        }
        out.extend_from_slice(&self.context);
        out
    }

    /// # Errors
    /// When the bytes are not a valid encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, ConfChangeDecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(ConfChangeDecodeError::Empty)?;
        if version != ENCODING_VERSION && version != ENCODING_VERSION_CONTEXT {
            return Err(ConfChangeDecodeError::Version(version));
        }
        let (&count, rest) = rest.split_first().ok_or(ConfChangeDecodeError::Length)?;
        let count = count as usize;
        if count > CONF_CHANGE_OPS_MAX {
            return Err(ConfChangeDecodeError::TooManyOps(count));
        }
        let ops_len = count * 9;
        let exact = version == ENCODING_VERSION && rest.len() == ops_len;
        let with_context = version == ENCODING_VERSION_CONTEXT && rest.len() > ops_len;
        if !exact && !with_context {
            return Err(ConfChangeDecodeError::Length);
        }
        let (encoded_ops, context) = rest.split_at(ops_len);
        let mut ops = Vec::with_capacity(count);
        for chunk in encoded_ops.chunks_exact(9) {
            let id = u64::from_le_bytes(chunk[1..9].try_into().expect("chunk of 9 bytes"));
            if id == NO_NODE {
                return Err(ConfChangeDecodeError::ZeroNode);
            }
            ops.push(match chunk[0] {
                1 => ConfChangeOp::AddVoter(id),
                2 => ConfChangeOp::AddLearner(id),
                3 => ConfChangeOp::Remove(id),
                other => return Err(ConfChangeDecodeError::Op(other)),
            });
        }
        Ok(ConfChange {
            ops,
            context: context.to_vec(),
        })
    }
}

/// Why a configuration change is refused. Nothing is proposed on error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    #[error("{}", crate::errors::not_leader_text(*leader_hint))]
    NotLeader { leader_hint: NodeId },
    #[error("a configuration change is already in progress (index {pending_index} not yet committed)")]
    InProgress { pending_index: Index },
    #[error("the cluster is in a joint configuration; only leaving it is allowed")]
    InJoint,
    #[error("the cluster is not in a joint configuration; there is nothing to leave")]
    NotJoint,
    #[error("node {0} is named twice in one change")]
    DuplicateNode(NodeId),
    #[error("node {0} is not a member")]
    UnknownNode(NodeId),
    #[error("node {0} is already a voter")]
    AlreadyVoter(NodeId),
    #[error("node {0} is already a learner")]
    AlreadyLearner(NodeId),
    #[error("node {id} is not caught up (match index {match_index}, leader commit {commit}); add it as a learner and promote it once caught up")]
    LearnerNotCaughtUp {
        id: NodeId,
        match_index: Index,
        commit: Index,
    },
    #[error("the change would leave no voter")]
    NoVoters,
    #[error("node id 0 is reserved")]
    ZeroNode,
    #[error("too many operations in one change ({0})")]
    TooManyOps(usize),
    #[error("leadership transfer to {target} in progress")]
    TransferInProgress { target: NodeId },
}

/// Whether a quorum decided a vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// The membership in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Configuration {
    /// Voters of the incoming (or only) configuration, sorted.
    pub voters: Vec<NodeId>,
    /// Voters of the outgoing configuration while joint, sorted; empty otherwise.
    pub outgoing: Vec<NodeId>,
    /// Non-voting members, sorted.
    pub learners: Vec<NodeId>,
}

fn majority_index(ids: &[NodeId], match_of: &impl Fn(NodeId) -> Index) -> Index {
    if ids.is_empty() {
        // An empty half of a joint configuration constrains nothing.
        return Index::MAX;
    }
    // Called on every append reply: sort on the stack for usual cluster
    // sizes, on the heap only for unusually large ones.
    const ON_STACK_MAX: usize = 16;
    if ids.len() <= ON_STACK_MAX {
        let mut matches = [0 as Index; ON_STACK_MAX];
        for (slot, &id) in matches.iter_mut().zip(ids) {
            *slot = match_of(id);
        }
        let matches = &mut matches[..ids.len()];
        matches.sort_unstable_by(|a, b| b.cmp(a));
        return matches[ids.len() / 2];
    }
    let mut matches: Vec<Index> = ids.iter().map(|&id| match_of(id)).collect();
    matches.sort_unstable_by(|a, b| b.cmp(a));
    matches[ids.len() / 2]
}

fn majority_vote(ids: &[NodeId], vote_of: &impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    if ids.is_empty() {
        return VoteResult::Won;
    }
    let quorum = ids.len() / 2 + 1;
    let granted = ids.iter().filter(|&&id| vote_of(id) == Some(true)).count();
    let rejected = ids.iter().filter(|&&id| vote_of(id) == Some(false)).count();
    if granted >= quorum {
        VoteResult::Won
    } else if rejected > ids.len() - quorum {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

impl Configuration {
    /// A plain configuration of `voters` and `learners`.
    pub fn new(mut voters: Vec<NodeId>, mut learners: Vec<NodeId>) -> Self {
        voters.sort_unstable();
        voters.dedup();
        learners.sort_unstable();
        learners.dedup();
        learners.retain(|id| voters.binary_search(id).is_err());
        Configuration {
            voters,
            outgoing: Vec::new(),
            learners,
        }
    }

    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Votes in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok() || self.outgoing.binary_search(&id).is_ok()
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok() && !self.is_voter(id)
    }

    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.binary_search(&id).is_ok()
    }

    /// Every member, sorted, without duplicates.
    pub fn members(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self
            .voters
            .iter()
            .chain(&self.outgoing)
            .chain(&self.learners)
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The highest index a quorum holds: the smaller of both majorities
    /// while joint.
    pub fn committed_index(&self, match_of: impl Fn(NodeId) -> Index) -> Index {
        majority_index(&self.voters, &match_of).min(majority_index(&self.outgoing, &match_of))
    }

    /// The election result: won only with a majority of both halves.
    pub fn vote_result(&self, vote_of: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let incoming = majority_vote(&self.voters, &vote_of);
        let outgoing = majority_vote(&self.outgoing, &vote_of);
        match (incoming, outgoing) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// Whether `active` members form a quorum (check-quorum).
    pub fn has_quorum(&self, active: impl Fn(NodeId) -> bool) -> bool {
        self.vote_result(|id| Some(active(id))) == VoteResult::Won
    }

    /// The configuration after `change`. A change of at most one voter is
    /// applied directly; anything else enters the joint configuration; an
    /// empty change leaves it.
    ///
    /// # Errors
    /// When the change does not fit this configuration.
    pub fn apply(&self, change: &ConfChange) -> Result<Configuration, ConfChangeError> {
        if change.ops.is_empty() {
            if !self.is_joint() {
                return Err(ConfChangeError::NotJoint);
            }
            let mut next = self.clone();
            next.outgoing.clear();
            // Voters removed by the change (only in the outgoing half) are gone now.
            return Ok(next);
        }
        if self.is_joint() {
            return Err(ConfChangeError::InJoint);
        }
        if change.ops.len() > CONF_CHANGE_OPS_MAX {
            return Err(ConfChangeError::TooManyOps(change.ops.len()));
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut voters = self.voters.clone();
        let mut learners = self.learners.clone();
        for op in &change.ops {
            let id = op.node();
            if id == NO_NODE {
                return Err(ConfChangeError::ZeroNode);
            }
            if !seen.insert(id) {
                return Err(ConfChangeError::DuplicateNode(id));
            }
            let is_voter = voters.contains(&id);
            let is_learner = learners.contains(&id);
            match op {
                ConfChangeOp::AddVoter(_) => {
                    if is_voter {
                        return Err(ConfChangeError::AlreadyVoter(id));
                    }
                    learners.retain(|&learner| learner != id);
                    voters.push(id);
                }
                ConfChangeOp::AddLearner(_) => {
                    if is_learner {
                        return Err(ConfChangeError::AlreadyLearner(id));
                    }
                    voters.retain(|&voter| voter != id);
                    learners.push(id);
                }
                ConfChangeOp::Remove(_) => {
                    if !is_voter && !is_learner {
                        return Err(ConfChangeError::UnknownNode(id));
                    }
                    voters.retain(|&voter| voter != id);
                    learners.retain(|&learner| learner != id);
                }
            }
        }
        voters.sort_unstable();
        learners.sort_unstable();
        if voters.is_empty() {
            return Err(ConfChangeError::NoVoters);
        }
        let changed_voters = symmetric_difference(&self.voters, &voters);
        let mut next = Configuration {
            voters,
            outgoing: Vec::new(),
            learners,
        };
        if changed_voters > 1 {
            // Joint consensus: both the old and the new voters must agree
            // until the cluster leaves the joint configuration.
            next.outgoing = self.voters.clone();
        }
        Ok(next)
    }

    /// Checks the shape of a configuration received from a peer.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), &'static str> {
        let sorted = |ids: &[NodeId]| ids.windows(2).all(|pair| pair[0] < pair[1]);
        if !sorted(&self.voters) || !sorted(&self.outgoing) || !sorted(&self.learners) {
            return Err("configuration lists not sorted");
        }
        if self.voters.is_empty() {
            return Err("configuration without voters");
        }
        let members = self.voters.iter().chain(&self.outgoing).chain(&self.learners);
        if members.clone().any(|id| *id == NO_NODE) {
            return Err("configuration names node 0");
        }
        if self
            .learners
            .iter()
            .any(|learner| self.voters.binary_search(learner).is_ok())
        {
            return Err("configuration learner also votes");
        }
        Ok(())
    }

    pub fn check_invariants(&self) {
        if let Err(rule) = self.validate() {
            panic!("{rule}: {self:?}");
        }
    }
}

fn symmetric_difference(before: &[NodeId], after: &[NodeId]) -> usize {
    let removed = before.iter().filter(|id| !after.contains(id)).count();
    let added = after.iter().filter(|id| !before.contains(id)).count();
    removed + added
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(voters: &[NodeId]) -> Configuration {
        Configuration::new(voters.to_vec(), Vec::new())
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let mut change = ConfChange::new(vec![
            ConfChangeOp::AddVoter(4),
            ConfChangeOp::AddLearner(5),
            ConfChangeOp::Remove(1),
        ]);
        assert_eq!(ConfChange::decode(&change.encode()), Ok(change.clone()));
        change.context = b"http://127.0.0.1:2380".to_vec();
        let encoded = change.encode();
        assert_eq!(encoded[0], ENCODING_VERSION_CONTEXT);
        assert_eq!(ConfChange::decode(&encoded), Ok(change));
        // A context-carrying version with no context, and a plain version
        // with trailing bytes, are both damaged.
        assert_eq!(ConfChange::decode(&[2, 0]), Err(ConfChangeDecodeError::Length));
        assert_eq!(ConfChange::decode(&[1, 0, 7]), Err(ConfChangeDecodeError::Length));
        assert_eq!(ConfChange::decode(&[]), Err(ConfChangeDecodeError::Empty));
        assert_eq!(ConfChange::decode(&[9, 0]), Err(ConfChangeDecodeError::Version(9)));
        assert_eq!(ConfChange::decode(&[1, 1, 1]), Err(ConfChangeDecodeError::Length));
        let mut zero = ConfChange::new(vec![ConfChangeOp::AddVoter(7)]).encode();
        zero[3..11].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(ConfChange::decode(&zero), Err(ConfChangeDecodeError::ZeroNode));
    }

    #[test]
    fn joint_commit_needs_a_majority_of_both_halves() {
        let joint = config(&[1, 2, 3])
            .apply(&ConfChange::new(vec![
                ConfChangeOp::AddVoter(4),
                ConfChangeOp::AddVoter(5),
                ConfChangeOp::Remove(2),
                ConfChangeOp::Remove(3),
            ]))
            .unwrap();
        assert!(joint.is_joint());
        assert_eq!(joint.voters, vec![1, 4, 5]);
        assert_eq!(joint.outgoing, vec![1, 2, 3]);
        // Old majority {1,2} at 10, new majority {1,4} at 10: committed 10.
        let matches = |id: NodeId| match id {
            1 | 2 | 4 => 10,
            _ => 0,
        };
        assert_eq!(joint.committed_index(matches), 10);
        // Only the new voters hold 10: not committed in the old half.
        assert_eq!(
            joint.committed_index(|id| if [1, 4, 5].contains(&id) { 10 } else { 0 }),
            0
        );
    }

    #[test]
    fn joint_election_needs_a_majority_of_both_halves() {
        let joint = config(&[1, 2, 3])
            .apply(&ConfChange::new(vec![
                ConfChangeOp::AddVoter(4),
                ConfChangeOp::Remove(3),
            ]))
            .unwrap();
        // Granted by 1 and 4, nobody else answered yet: the new half is won,
        // the old half is not decided.
        assert_eq!(
            joint.vote_result(|id| [1, 4].contains(&id).then_some(true)),
            VoteResult::Pending
        );
        // Rejected by 2 and 3: the old half is lost, so the election is.
        assert_eq!(joint.vote_result(|id| Some([1, 4].contains(&id))), VoteResult::Lost);
        assert_eq!(joint.vote_result(|id| Some([1, 2, 4].contains(&id))), VoteResult::Won);
        assert_eq!(joint.vote_result(|id| Some(id == 1)), VoteResult::Lost);
    }

    #[test]
    fn single_voter_change_is_applied_without_joint() {
        let next = config(&[1, 2, 3])
            .apply(&ConfChange::new(vec![ConfChangeOp::AddVoter(4)]))
            .unwrap();
        assert!(!next.is_joint());
        assert_eq!(next.voters, vec![1, 2, 3, 4]);
    }

    #[test]
    fn leaving_joint_drops_the_outgoing_voters() {
        let joint = config(&[1, 2, 3])
            .apply(&ConfChange::new(vec![
                ConfChangeOp::AddVoter(4),
                ConfChangeOp::Remove(1),
            ]))
            .unwrap();
        let left = joint.apply(&ConfChange::default()).unwrap();
        assert_eq!(left, config(&[2, 3, 4]));
        assert_eq!(left.apply(&ConfChange::default()), Err(ConfChangeError::NotJoint));
    }

    #[test]
    fn second_change_is_refused_while_joint() {
        let joint = config(&[1, 2, 3])
            .apply(&ConfChange::new(vec![
                ConfChangeOp::AddVoter(4),
                ConfChangeOp::Remove(1),
            ]))
            .unwrap();
        let result = joint.apply(&ConfChange::new(vec![ConfChangeOp::AddLearner(9)]));
        assert_eq!(result, Err(ConfChangeError::InJoint));
    }

    #[test]
    fn learners_never_count_in_a_quorum() {
        let with_learner = config(&[1])
            .apply(&ConfChange::new(vec![ConfChangeOp::AddLearner(2)]))
            .unwrap();
        assert!(with_learner.is_learner(2));
        assert!(!with_learner.is_voter(2));
        assert_eq!(with_learner.committed_index(|id| if id == 2 { 10 } else { 3 }), 3);
        assert_eq!(with_learner.vote_result(|id| Some(id == 2)), VoteResult::Lost);
    }

    #[test]
    fn invalid_changes_are_refused_with_the_reason() {
        let base = config(&[1, 2, 3]);
        let change = |ops: Vec<ConfChangeOp>| base.apply(&ConfChange::new(ops));
        assert_eq!(
            change(vec![ConfChangeOp::AddVoter(2)]),
            Err(ConfChangeError::AlreadyVoter(2))
        );
        assert_eq!(
            change(vec![ConfChangeOp::Remove(9)]),
            Err(ConfChangeError::UnknownNode(9))
        );
        assert_eq!(
            change(vec![ConfChangeOp::AddVoter(4), ConfChangeOp::Remove(4)]),
            Err(ConfChangeError::DuplicateNode(4))
        );
        assert_eq!(
            change(vec![
                ConfChangeOp::Remove(1),
                ConfChangeOp::Remove(2),
                ConfChangeOp::Remove(3)
            ]),
            Err(ConfChangeError::NoVoters)
        );
        assert_eq!(change(vec![ConfChangeOp::AddVoter(0)]), Err(ConfChangeError::ZeroNode));
    }
}

//! The node's side of membership changes: checking and proposing them,
//! keeping the peer directory in step with the member list and the log,
//! promoting caught-up learners, and leaving the cluster once removed.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use raftwerk_kv::{Command, KvError, Member, MemberChange};
use raftwerk_raft::{ConfChange, ConfChangeError, ConfChangeOp, Entry, EntryKind, NodeId, Role};

use super::{not_leader, MembershipRequest, Node};
use crate::errors::ServerError;
use crate::identity::Identity;

/// Learners that may be asked for at once (etcd's default).
const LEARNERS_MAX: usize = 1;

impl Node {
    /// Checks a membership request against the applied member list and
    /// proposes it: additions, removals and promotions as configuration
    /// changes of the core (a new member's record rides in the change's
    /// context), URL updates as commands.
    pub(super) fn propose_membership(&mut self, request: MembershipRequest) -> Result<u64, ServerError> {
        if self.raft.role() != Role::Leader {
            return Err(not_leader(self.raft.leader()));
        }
        let members = self.kv.read().expect("key space lock poisoned").members()?;
        let member = |id: NodeId| {
            members
                .iter()
                .find(|member| member.id == id)
                .ok_or(ServerError::Kv(KvError::MemberNotFound))
        };
        let used_elsewhere = |id: NodeId, peer_urls: &[String]| {
            members
                .iter()
                .chain(self.pending_members.values())
                .any(|member| member.id != id && member.peer_urls.iter().any(|url| peer_urls.contains(url)))
        };
        let change = match request {
            MembershipRequest::Add { peer_urls, learner } => {
                check_peer_urls(&peer_urls)?;
                // As etcd (its default --experimental-max-learners is 1):
                // one learner asked for at a time. Members added as voters
                // and still catching up do not count.
                let learners = members
                    .iter()
                    .chain(self.pending_members.values())
                    .filter(|member| member.is_learner && !member.promote_when_caught_up)
                    .count();
                if learner && learners >= LEARNERS_MAX {
                    return Err(ServerError::TooManyLearners);
                }
                if used_elsewhere(0, &peer_urls) {
                    return Err(ServerError::PeerUrlsExist);
                }
                let removed = self.kv.read().expect("key space lock poisoned").removed_members()?;
                let id = new_member_id(self.membership.cluster_id, &peer_urls, &members, &removed);
                let record = Member {
                    id,
                    peer_urls,
                    is_learner: true,
                    promote_when_caught_up: !learner,
                    ..Member::default()
                };
                ConfChange {
                    ops: vec![ConfChangeOp::AddLearner(id)],
                    context: record.encode(),
                }
            }
            MembershipRequest::Remove { id } => {
                member(id)?;
                ConfChange::new(vec![ConfChangeOp::Remove(id)])
            }
            MembershipRequest::Promote { id } => {
                if !member(id)?.is_learner {
                    return Err(ServerError::NotLearner);
                }
                ConfChange::new(vec![ConfChangeOp::AddVoter(id)])
            }
            MembershipRequest::Update { id, peer_urls } => {
                check_peer_urls(&peer_urls)?;
                member(id)?;
                if used_elsewhere(id, &peer_urls) {
                    return Err(ServerError::PeerUrlsExist);
                }
                return self.propose(&Command::Members(MemberChange::UpdatePeerUrls { id, peer_urls }));
            }
            MembershipRequest::Publish { id, name, client_urls } => {
                Member {
                    name: name.clone(),
                    client_urls: client_urls.clone(),
                    ..member(id)?.clone()
                }
                .validate()?;
                return self.propose(&Command::Members(MemberChange::Publish { id, name, client_urls }));
            }
        };
        self.raft.propose_conf_change(change).map_err(|error| match error {
            ConfChangeError::NotLeader { leader_hint } => not_leader(leader_hint),
            ConfChangeError::LearnerNotCaughtUp { .. } => ServerError::LearnerNotReady,
            ConfChangeError::AlreadyVoter(_) => ServerError::NotLearner,
            ConfChangeError::UnknownNode(_) => ServerError::Kv(KvError::MemberNotFound),
            other => ServerError::MembershipRefused(other.to_string()),
        })
    }

    /// The leader promotes learners that were added as voters once their
    /// log has caught up (the core refuses them before), checking about
    /// once per election timeout.
    pub(super) fn promote_caught_up_learners(&mut self) {
        self.promote_elapsed += 1;
        if self.promote_elapsed < self.options.election_ticks || self.raft.role() != Role::Leader {
            return;
        }
        self.promote_elapsed = 0;
        let Ok(members) = self.kv.read().expect("key space lock poisoned").members() else {
            return;
        };
        for member in members
            .iter()
            .filter(|member| member.is_learner && member.promote_when_caught_up)
        {
            if !self.raft.configuration().is_learner(member.id) {
                continue;
            }
            match self
                .raft
                .propose_conf_change(ConfChange::new(vec![ConfChangeOp::AddVoter(member.id)]))
            {
                Ok(index) => {
                    tracing::info!(name = %self.membership.name, member = format_args!("{:x}", member.id), index, "promoting a caught-up learner to voter");
                    return;
                }
                Err(error) => {
                    tracing::debug!(member = format_args!("{:x}", member.id), %error, "learner not promoted yet");
                }
            }
        }
    }

    /// Points the transport at every member: the applied list plus members
    /// added by changes still in the log; forgets removed ones.
    pub(super) fn sync_peers(&mut self) -> Result<(), KvError> {
        let applied = self.raft.applied_index();
        self.pending_members = self.pending_members.split_off(&(applied + 1));
        let kv = self.kv.read().expect("key space lock poisoned");
        let (members, removed) = (kv.members()?, kv.removed_members()?);
        drop(kv);
        *self.removed.write().expect("removed set lock poisoned") = removed.iter().copied().collect();
        let mut wanted: BTreeMap<NodeId, Vec<String>> = members
            .into_iter()
            .map(|member| (member.id, member.peer_urls))
            .collect();
        for member in self.pending_members.values() {
            wanted.insert(member.id, member.peer_urls.clone());
        }
        // A joined node that has not caught up reaches the members it was
        // told of (its own list still describes an older cluster).
        if applied < self.membership.seed_index {
            for member in &self.membership.seed {
                if !removed.contains(&member.id) {
                    wanted.insert(member.id, member.peer_urls.clone());
                }
            }
        }
        let gone: Vec<NodeId> = {
            let mut directory = self.directory.write().expect("peer directory lock poisoned");
            let gone = directory
                .keys()
                .filter(|id| !wanted.contains_key(id))
                .copied()
                .collect();
            *directory = wanted;
            gone
        };
        for id in gone {
            self.transport.disconnect(id);
        }
        self.transport.connect_all();
        Ok(())
    }
}

/// This member was removed from the cluster (it applied its removal, or a
/// member told it): it records that in its identity, so its data directory
/// cannot rejoin, and stops after a moment for a client that asked for the
/// removal to get its answer.
pub fn leave_cluster(data_dir: &std::path::Path, name: &str) {
    static LEAVING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if LEAVING.swap(true, Ordering::SeqCst) {
        return;
    }
    tracing::warn!(name, "this member was removed from the cluster; stopping");
    match Identity::load(data_dir) {
        Ok(Some(mut identity)) => {
            identity.removed = true;
            if let Err(error) = identity.store(data_dir) {
                tracing::error!(%error, "recording the removal failed");
            }
        }
        Ok(None) => {}
        Err(error) => tracing::error!(%error, "recording the removal failed"),
    }
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::process::exit(0);
    });
}

/// The member a configuration-change entry adds, from its context.
pub(super) fn added_member(entry: &Entry) -> Option<Member> {
    if entry.kind != EntryKind::ConfChange {
        return None;
    }
    let change = ConfChange::decode(&entry.data).ok()?;
    let member = Member::decode(&change.context).ok()?;
    change
        .ops
        .iter()
        .any(|op| matches!(op, ConfChangeOp::AddLearner(id) | ConfChangeOp::AddVoter(id) if *id == member.id))
        .then_some(member)
}

/// What a configuration-change entry does to the member list.
pub(super) fn member_commands(entry: &Entry) -> Vec<Command> {
    let Ok(change) = ConfChange::decode(&entry.data) else {
        tracing::warn!(index = entry.index, "skipping an undecodable configuration change");
        return Vec::new();
    };
    let record = Member::decode(&change.context).ok();
    change
        .ops
        .iter()
        .filter_map(|op| match *op {
            ConfChangeOp::AddLearner(id) | ConfChangeOp::AddVoter(id) => match &record {
                Some(member) if member.id == id => Some(MemberChange::Add(Member {
                    is_learner: matches!(op, ConfChangeOp::AddLearner(_)),
                    ..member.clone()
                })),
                _ if matches!(op, ConfChangeOp::AddVoter(_)) => Some(MemberChange::Promote { id }),
                _ => None,
            },
            ConfChangeOp::Remove(id) => Some(MemberChange::Remove { id }),
        })
        .map(Command::Members)
        .collect()
}

/// Peer URLs must be http URLs with a host and port (TLS is not supported
/// yet), and few and short enough to store.
fn check_peer_urls(peer_urls: &[String]) -> Result<(), ServerError> {
    if peer_urls.is_empty() || peer_urls.len() > raftwerk_kv::members::PEER_URLS_MAX {
        return Err(ServerError::BadPeerUrls(format!(
            "between 1 and {} peer URLs are needed",
            raftwerk_kv::members::PEER_URLS_MAX
        )));
    }
    for url in peer_urls {
        if url.len() > raftwerk_kv::members::URL_BYTES_MAX {
            return Err(ServerError::BadPeerUrls(format!("{url:?} is too long")));
        }
        // Parsed, not resolved: a member may be added by a name that
        // resolves only once it runs (as etcd allows).
        crate::config::check_url(url).map_err(ServerError::BadPeerUrls)?;
    }
    Ok(())
}

/// A fresh member id: derived from the cluster, the URLs and the time (as
/// etcd's), never 0 nor one in use.
#[allow(clippy::disallowed_methods)]
fn new_member_id(cluster_id: u64, peer_urls: &[String], members: &[Member], removed: &[NodeId]) -> NodeId {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let mut id = crate::config::fnv(&[&format!("{cluster_id:x}"), &peer_urls.join(","), &now.to_string()]);
    while id == 0 || members.iter().any(|member| member.id == id) || removed.contains(&id) {
        id = id.wrapping_add(1);
    }
    id
}

//! The gRPC services: etcd's KV, Maintenance and Cluster for clients, and
//! raftwerk's Peer service for the other nodes. Writes are proposed here
//! when this node leads and forwarded to the leader otherwise;
//! linearizable reads are confirmed through ReadIndex and served from this
//! node's key space; serializable reads are served locally at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use raftwerk_kv::{Command, CommandResponse, RangeRequest};
use raftwerk_proto::etcdserverpb as pb;
use raftwerk_proto::etcdserverpb::{cluster_server, kv_server, maintenance_server};
use raftwerk_proto::raftwerkpb::{self, peer_server};
use raftwerk_raft::NodeId;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::errors::ServerError;
use crate::message_codec;
use crate::node::{MembershipRequest, NodeHandle};
use crate::transport;

/// The etcd API version raftwerk speaks (what Status reports).
pub const ETCD_API_VERSION: &str = "3.5.0";

/// State shared by the services of one node.
#[derive(Clone)]
pub struct Services {
    pub node: NodeHandle,
    pub max_request_bytes: usize,
    leader_clients: Arc<Mutex<BTreeMap<NodeId, raftwerkpb::peer_client::PeerClient<Channel>>>>,
}

impl Services {
    pub fn new(node: NodeHandle, max_request_bytes: usize) -> Self {
        Services {
            node,
            max_request_bytes,
            leader_clients: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.node.membership.cluster_id,
            member_id: self.node.membership.member_id,
            revision,
            raft_term: self.node.term(),
        }
    }

    /// A header carrying the key space's current revision, as etcd fills
    /// the headers of responses that are not about one revision.
    fn current_header(&self) -> pb::ResponseHeader {
        self.header(self.node.revision())
    }

    fn check_size(&self, message: &impl prost::Message) -> Result<(), Status> {
        if message.encoded_len() > self.max_request_bytes {
            return Err(ServerError::RequestTooLarge.into());
        }
        Ok(())
    }

    /// Proposes at this node.
    async fn propose_here(&self, command: Command) -> Result<CommandResponse, ServerError> {
        let (response, _term) = self.node.propose(command).await?;
        Ok(response)
    }

    fn forget_leader_client(&self, leader: NodeId) {
        self.leader_clients
            .lock()
            .expect("client cache lock poisoned")
            .remove(&leader);
    }

    async fn leader_client(&self, leader: NodeId) -> Result<raftwerkpb::peer_client::PeerClient<Channel>, Status> {
        if let Some(client) = self
            .leader_clients
            .lock()
            .expect("client cache lock poisoned")
            .get(&leader)
        {
            return Ok(client.clone());
        }
        let url = self
            .node
            .peer_url(leader)
            .ok_or_else(|| Status::from(ServerError::NoLeader))?;
        let client = transport::connect(&url)
            .await
            .map_err(|_| Status::from(ServerError::NoLeader))?;
        self.leader_clients
            .lock()
            .expect("client cache lock poisoned")
            .insert(leader, client.clone());
        Ok(client)
    }
}

impl Services {
    /// Runs a membership change here if this node leads, at the leader
    /// otherwise (through `forward`); `respond` builds the reply from the
    /// member list after the change.
    async fn membership_rpc<Resp, Fut>(
        &self,
        request: MembershipRequest,
        route: Route,
        respond: impl FnOnce(Vec<raftwerk_kv::Member>, pb::ResponseHeader) -> Resp,
        forward: impl FnOnce(raftwerkpb::peer_client::PeerClient<Channel>) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
        Resp: HasHeader,
    {
        match self.node.change_membership(request).await {
            Ok(members) => Ok(Response::new(respond(members, self.current_header()))),
            Err(ServerError::NotLeader { leader }) if route == Route::MayForward => {
                let client = self.leader_client(leader).await?;
                let result = tokio::time::timeout(self.node.request_timeout(), forward(client))
                    .await
                    .unwrap_or_else(|_| Err(ServerError::Timeout.into()));
                if result.is_err() {
                    self.forget_leader_client(leader);
                }
                result.map(|mut response| {
                    response.get_mut().set_member_id(self.node.membership.member_id);
                    response
                })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// A member as etcd's API shows it: names and client URLs are those the
    /// members published once started (a member added but not started has
    /// none).
    fn member_pb(&self, member: &raftwerk_kv::Member) -> pb::Member {
        pb::Member {
            id: member.id,
            name: member.name.clone(),
            peer_ur_ls: member.peer_urls.clone(),
            client_ur_ls: member.client_urls.clone(),
            is_learner: member.is_learner,
        }
    }

    /// Records this member's name and client URLs in the member list (as
    /// etcd's members publish theirs once started), here or at the leader.
    ///
    /// # Errors
    /// No leader, or the member list cannot be changed yet.
    pub async fn publish(&self) -> Result<(), Status> {
        let own = &self.node.membership;
        let request = raftwerkpb::PublishRequest {
            member_id: own.member_id,
            name: own.name.clone(),
            client_urls: own.client_urls.clone(),
        };
        match self
            .node
            .change_membership(MembershipRequest::Publish {
                id: own.member_id,
                name: own.name.clone(),
                client_urls: own.client_urls.clone(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(ServerError::NotLeader { leader }) => {
                let mut client = self.leader_client(leader).await?;
                let result = tokio::time::timeout(self.node.request_timeout(), client.member_publish(request))
                    .await
                    .unwrap_or_else(|_| Err(ServerError::Timeout.into()));
                if result.is_err() {
                    self.forget_leader_client(leader);
                }
                result.map(|_| ())
            }
            Err(error) => Err(error.into()),
        }
    }

    fn members_pb(&self, members: &[raftwerk_kv::Member]) -> Vec<pb::Member> {
        members.iter().map(|member| self.member_pb(member)).collect()
    }
}

/// Responses whose header names the member that answered.
trait HasHeader {
    fn set_member_id(&mut self, member_id: u64);
}

macro_rules! has_header {
    ($($response:ty),*) => {$(
        impl HasHeader for $response {
            fn set_member_id(&mut self, member_id: u64) {
                if let Some(header) = self.header.as_mut() {
                    header.member_id = member_id;
                }
            }
        }
    )*};
}

has_header!(
    pb::MemberAddResponse,
    pb::MemberRemoveResponse,
    pb::MemberUpdateResponse,
    pb::MemberPromoteResponse
);

/// etcd refuses a range, delete or compare without a key.
fn require_key(key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(ServerError::Kv(raftwerk_kv::KvError::EmptyKey).into());
    }
    Ok(())
}

/// Operations a transaction (and each nested one) may have per list
/// (etcd's default --max-txn-ops).
const TXN_OPS_MAX: usize = 128;

fn check_txn_ops(txn: &raftwerk_kv::TxnRequest) -> Result<(), Status> {
    if [txn.compare.len(), txn.success.len(), txn.failure.len()]
        .iter()
        .any(|count| *count > TXN_OPS_MAX)
    {
        return Err(ServerError::TooManyTxnOps.into());
    }
    for compare in &txn.compare {
        require_key(&compare.key)?;
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            raftwerk_kv::RequestOp::Range(range) => require_key(&range.key)?,
            raftwerk_kv::RequestOp::Put(put) => require_key(&put.key)?,
            raftwerk_kv::RequestOp::DeleteRange(delete) => require_key(&delete.key)?,
            raftwerk_kv::RequestOp::Txn(inner) => check_txn_ops(inner)?,
        }
    }
    Ok(())
}

fn unexpected(response: CommandResponse) -> Status {
    Status::internal(format!("unexpected response {response:?}"))
}

/// Runs a write: here if this node leads, at the leader otherwise.
macro_rules! write_rpc {
    ($self:ident, $request:ident, $command:expr, $variant:ident, $convert:path, $forward:ident) => {{
        $self.check_size(&$request)?;
        match $self.propose_here($command).await {
            Ok(CommandResponse::$variant(response)) => Ok(Response::new($convert(response, $self.header(0)))),
            Ok(other) => Err(unexpected(other)),
            Err(ServerError::NotLeader { leader }) => {
                let mut client = $self.leader_client(leader).await?;
                let result = tokio::time::timeout($self.node.request_timeout(), client.$forward($request))
                    .await
                    .unwrap_or_else(|_| Err(ServerError::Timeout.into()));
                if result.is_err() {
                    $self.forget_leader_client(leader);
                }
                // As etcd: the header names the member the client asked.
                result.map(|mut response| {
                    if let Some(header) = response.get_mut().header.as_mut() {
                        header.member_id = $self.node.membership.member_id;
                    }
                    response
                })
            }
            Err(error) => Err(error.into()),
        }
    }};
}

#[tonic::async_trait]
impl kv_server::Kv for Services {
    async fn range(&self, request: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let request = request.into_inner();
        self.check_size(&request)?;
        require_key(&request.key)?;
        let range: RangeRequest = convert::range_request(request);
        let response = self.node.range(range).await?;
        Ok(Response::new(convert::range_response(response, self.header(0))))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        write_rpc!(
            self,
            request,
            Command::Put(convert::put_request(request.clone())),
            Put,
            convert::put_response,
            put
        )
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let request = request.into_inner();
        require_key(&request.key)?;
        write_rpc!(
            self,
            request,
            Command::DeleteRange(convert::delete_request(request.clone())),
            DeleteRange,
            convert::delete_response,
            delete_range
        )
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let request = request.into_inner();
        let txn = convert::txn_request(request.clone());
        check_txn_ops(&txn)?;
        raftwerk_kv::store::check_txn_keys(&txn).map_err(ServerError::from)?;
        write_rpc!(self, request, Command::Txn(txn), Txn, convert::txn_response, txn)
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let request = request.into_inner();
        self.check_size(&request)?;
        match self
            .propose_here(Command::Compact {
                revision: request.revision,
            })
            .await
        {
            Ok(CommandResponse::Compact { revision }) => Ok(Response::new(pb::CompactionResponse {
                header: Some(self.header(revision)),
            })),
            Ok(other) => Err(unexpected(other)),
            Err(ServerError::NotLeader { leader }) => {
                let mut client = self.leader_client(leader).await?;
                let result = tokio::time::timeout(self.node.request_timeout(), client.compact(request))
                    .await
                    .unwrap_or_else(|_| Err(ServerError::Timeout.into()));
                if result.is_err() {
                    self.forget_leader_client(leader);
                }
                result
            }
            Err(error) => Err(error.into()),
        }
    }
}

#[tonic::async_trait]
impl peer_server::Peer for Services {
    async fn send(
        &self,
        request: Request<tonic::Streaming<raftwerkpb::MessageBatch>>,
    ) -> Result<Response<raftwerkpb::SendSummary>, Status> {
        let mut stream = request.into_inner();
        let mut received = 0u64;
        while let Some(batch) = stream.message().await? {
            if batch.cluster_id != self.node.membership.cluster_id {
                return Err(Status::permission_denied("raftwerk: peer belongs to another cluster"));
            }
            if self.node.is_removed(batch.from) {
                return Err(Status::permission_denied(transport::MEMBER_REMOVED));
            }
            for bytes in batch.messages {
                match message_codec::decode(&bytes) {
                    Ok(message) => {
                        if message.from != batch.from {
                            continue;
                        }
                        received += 1;
                        self.node.deliver(message);
                    }
                    Err(error) => tracing::warn!(from = batch.from, %error, "dropping an undecodable peer message"),
                }
            }
        }
        Ok(Response::new(raftwerkpb::SendSummary { received }))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        match self.propose_here(Command::Put(convert::put_request(request))).await? {
            CommandResponse::Put(response) => Ok(Response::new(convert::put_response(response, self.header(0)))),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let request = request.into_inner();
        match self
            .propose_here(Command::DeleteRange(convert::delete_request(request)))
            .await?
        {
            CommandResponse::DeleteRange(response) => {
                Ok(Response::new(convert::delete_response(response, self.header(0))))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let request = request.into_inner();
        match self.propose_here(Command::Txn(convert::txn_request(request))).await? {
            CommandResponse::Txn(response) => Ok(Response::new(convert::txn_response(response, self.header(0)))),
            other => Err(unexpected(other)),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let revision = request.into_inner().revision;
        match self.propose_here(Command::Compact { revision }).await? {
            CommandResponse::Compact { revision } => Ok(Response::new(pb::CompactionResponse {
                header: Some(self.header(revision)),
            })),
            other => Err(unexpected(other)),
        }
    }

    // Membership requests forwarded by a follower: served here or
    // refused, never forwarded again.
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.member_add_at(request.into_inner(), Route::HereOnly).await
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.member_remove_at(request.into_inner(), Route::HereOnly).await
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.member_update_at(request.into_inner(), Route::HereOnly).await
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.member_promote_at(request.into_inner(), Route::HereOnly).await
    }

    async fn join(
        &self,
        request: Request<raftwerkpb::JoinRequest>,
    ) -> Result<Response<raftwerkpb::JoinResponse>, Status> {
        let peer_urls = request.into_inner().peer_urls;
        let (members, members_index) = self.node.members_with_index()?;
        let Some(member) = members
            .iter()
            .find(|member| member.peer_urls.iter().any(|url| peer_urls.contains(url)))
        else {
            return Err(Status::not_found(format!(
                "etcdserver: member not found: no member has peer URLs {peer_urls:?}"
            )));
        };
        // A member that has started holds (or held) a log and a vote: with
        // its data lost it must not come back under its identity
        // (RELIABILITY #6), or acknowledged writes could be lost.
        if !member.client_urls.is_empty() {
            return Err(Status::failed_precondition(format!(
                "etcdserver: member {:x} has already been bootstrapped; a member whose data was lost must be removed and added again",
                member.id
            )));
        }
        let membership = &self.node.membership;
        Ok(Response::new(raftwerkpb::JoinResponse {
            cluster_id: membership.cluster_id,
            member_id: member.id,
            bootstrap: membership
                .bootstrap
                .iter()
                .map(|member| pb::Member {
                    id: member.id,
                    name: member.name.clone(),
                    peer_ur_ls: member.peer_urls.clone(),
                    ..pb::Member::default()
                })
                .collect(),
            members: members
                .iter()
                .map(|member| pb::Member {
                    id: member.id,
                    peer_ur_ls: member.peer_urls.clone(),
                    ..pb::Member::default()
                })
                .collect(),
            members_index,
        }))
    }

    async fn member_publish(
        &self,
        request: Request<raftwerkpb::PublishRequest>,
    ) -> Result<Response<raftwerkpb::PublishResponse>, Status> {
        let request = request.into_inner();
        self.node
            .change_membership(MembershipRequest::Publish {
                id: request.member_id,
                name: request.name,
                client_urls: request.client_urls,
            })
            .await?;
        Ok(Response::new(raftwerkpb::PublishResponse {}))
    }

    async fn identify(
        &self,
        request: Request<raftwerkpb::IdentifyRequest>,
    ) -> Result<Response<raftwerkpb::IdentifyResponse>, Status> {
        let asker = request.into_inner().member_id;
        let membership = &self.node.membership;
        Ok(Response::new(raftwerkpb::IdentifyResponse {
            cluster_id: membership.cluster_id,
            member_id: membership.member_id,
            name: membership.name.clone(),
            client_urls: membership.client_urls.clone(),
            asker_removed: asker != 0 && self.node.is_removed(asker),
        }))
    }
}

#[tonic::async_trait]
impl maintenance_server::Maintenance for Services {
    async fn alarm(&self, _request: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        let status = self.node.status().await?;
        // raftwerk raises no alarms: the list is always empty.
        Ok(Response::new(pb::AlarmResponse {
            header: Some(self.header(status.revision)),
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let status = self.node.status().await?;
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.header(status.revision)),
            version: ETCD_API_VERSION.to_string(),
            db_size: status.db_size,
            leader: status.leader,
            raft_index: status.commit_index,
            raft_term: status.term,
            raft_applied_index: status.applied_index,
            errors: Vec::new(),
            db_size_in_use: status.db_size,
            is_learner: status.is_learner,
        }))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.node.defragment().await?;
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(self.current_header()),
        }))
    }

    async fn hash(&self, _request: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        let (hash, revision) = self.node.hash_all()?;
        Ok(Response::new(pb::HashResponse {
            header: Some(self.header(revision)),
            hash,
        }))
    }

    async fn hash_kv(&self, request: Request<pb::HashKvRequest>) -> Result<Response<pb::HashKvResponse>, Status> {
        let revision = request.into_inner().revision;
        let (hash, compact_revision, _) = self.node.hash_kv(revision)?;
        let status = self.node.status().await?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.header(status.revision)),
            hash,
            compact_revision,
        }))
    }

    type SnapshotStream = ChunkStream;

    async fn snapshot(&self, _request: Request<pb::SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        let mut writer = crate::backup::BackupWriter::new(self.node.snapshot_source()?);
        let header = self.header(self.node.status().await?.revision);
        let (chunks, receiver) = tokio::sync::mpsc::channel(2);
        let runtime = tokio::runtime::Handle::current();
        // Reading the key space blocks: off the async workers. The stream
        // ends early if the client goes away, or stops reading for
        // `BACKUP_STALL_MAX` (the backup's read holds up Defragment).
        tokio::task::spawn_blocking(move || loop {
            let message = match writer.next_chunk() {
                Ok(Some(blob)) => Ok(pb::SnapshotResponse {
                    header: Some(header),
                    remaining_bytes: 0,
                    blob,
                }),
                Ok(None) => return,
                Err(error) => Err(Status::from(ServerError::from(error))),
            };
            let failed = message.is_err();
            let sent = runtime.block_on(tokio::time::timeout(BACKUP_STALL_MAX, chunks.send(message)));
            if !matches!(sent, Ok(Ok(()))) || failed {
                if sent.is_err() {
                    tracing::warn!("a backup client stopped reading; ending its stream");
                }
                return;
            }
        });
        Ok(Response::new(ChunkStream(receiver)))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.node.move_leader(request.into_inner().target_id).await?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: Some(self.current_header()),
        }))
    }
}

/// Where a membership request may run: a client's is forwarded to the
/// leader when this node does not lead; a forwarded one never again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    MayForward,
    HereOnly,
}

impl Services {
    async fn member_add_at(
        &self,
        request: pb::MemberAddRequest,
        route: Route,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let peer_urls = request.peer_ur_ls.clone();
        let learner = request.is_learner;
        self.membership_rpc(
            MembershipRequest::Add {
                peer_urls: request.peer_ur_ls.clone(),
                learner,
            },
            route,
            |members, header| pb::MemberAddResponse {
                header: Some(header),
                member: members
                    .iter()
                    .find(|member| member.peer_urls == peer_urls)
                    .map(|member| pb::Member {
                        // As etcd answers: what was asked for.
                        is_learner: learner,
                        ..self.member_pb(member)
                    }),
                members: self.members_pb(&members),
            },
            |mut client| async move { client.member_add(request).await },
        )
        .await
    }

    async fn member_remove_at(
        &self,
        request: pb::MemberRemoveRequest,
        route: Route,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.membership_rpc(
            MembershipRequest::Remove { id: request.id },
            route,
            |members, header| pb::MemberRemoveResponse {
                header: Some(header),
                members: self.members_pb(&members),
            },
            |mut client| async move { client.member_remove(request).await },
        )
        .await
    }

    async fn member_update_at(
        &self,
        request: pb::MemberUpdateRequest,
        route: Route,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.membership_rpc(
            MembershipRequest::Update {
                id: request.id,
                peer_urls: request.peer_ur_ls.clone(),
            },
            route,
            |members, header| pb::MemberUpdateResponse {
                header: Some(header),
                members: self.members_pb(&members),
            },
            |mut client| async move { client.member_update(request).await },
        )
        .await
    }

    async fn member_promote_at(
        &self,
        request: pb::MemberPromoteRequest,
        route: Route,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.membership_rpc(
            MembershipRequest::Promote { id: request.id },
            route,
            |members, header| pb::MemberPromoteResponse {
                header: Some(header),
                members: self.members_pb(&members),
            },
            |mut client| async move { client.member_promote(request).await },
        )
        .await
    }
}

#[tonic::async_trait]
impl cluster_server::Cluster for Services {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let request = request.into_inner();
        self.check_size(&request)?;
        self.member_add_at(request, Route::MayForward).await
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.member_remove_at(request.into_inner(), Route::MayForward).await
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        self.check_size(&request)?;
        self.member_update_at(request, Route::MayForward).await
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        // etcd 3.5's clients may ask for a list no older than the request.
        if request.into_inner().linearizable {
            self.node.read_barrier().await?;
        }
        let members = self.node.members()?;
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.current_header()),
            members: self.members_pb(&members),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.member_promote_at(request.into_inner(), Route::MayForward).await
    }
}

/// How long a backup waits for its client to take the next chunk.
const BACKUP_STALL_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// The chunks of a backup as a gRPC response stream.
pub struct ChunkStream(tokio::sync::mpsc::Receiver<Result<pb::SnapshotResponse, Status>>);

impl tonic::codegen::tokio_stream::Stream for ChunkStream {
    type Item = Result<pb::SnapshotResponse, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(context)
    }
}

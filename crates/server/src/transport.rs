//! Peer transport: one long-lived gRPC stream per peer carrying batches of
//! encoded messages, and a second one (on its own connection) for snapshot
//! chunks, so a large transfer never queues ahead of heartbeats and
//! appends; each reconnects with backoff. Each has a bounded queue: a slow
//! or unreachable peer never blocks the others nor grows memory; its
//! messages are dropped and the core retries (RELIABILITY: bound
//! everything).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use raftwerk_proto::raftwerkpb::peer_client::PeerClient;
use raftwerk_proto::raftwerkpb::{IdentifyRequest, MessageBatch};
use raftwerk_raft::{Message, MessageBody, NodeId};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::message_codec;

/// Messages queued per peer; beyond, new ones are dropped.
const PEER_QUEUE_MAX: usize = 4096;
/// Snapshot chunks (up to 1 MiB each) queued per peer.
const SNAPSHOT_QUEUE_MAX: usize = 16;
/// Messages per batch on the stream.
const BATCH_MESSAGES_MAX: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Every member's peer URLs, kept by the node task from the member list
/// and from membership changes as they enter the log (a new member must be
/// reachable from the moment the change is appended).
pub type PeerDirectory = Arc<RwLock<BTreeMap<NodeId, Vec<String>>>>;

/// How a member refuses messages from one removed from the cluster; the
/// removed member stops when it hears it.
pub const MEMBER_REMOVED: &str = "raftwerk: the member has been permanently removed from the cluster";

/// Called when a peer says this member was removed.
pub type OnRemoved = Arc<dyn Fn() + Send + Sync>;

/// The sending side, owned by the node task.
pub struct Transport {
    cluster_id: u64,
    member_id: NodeId,
    directory: PeerDirectory,
    on_removed: OnRemoved,
    /// Per peer: the message lane and the snapshot lane.
    queues: BTreeMap<NodeId, (mpsc::Sender<Message>, mpsc::Sender<Message>)>,
}

impl Transport {
    pub fn new(cluster_id: u64, member_id: NodeId, directory: PeerDirectory, on_removed: OnRemoved) -> Transport {
        Transport {
            cluster_id,
            member_id,
            directory,
            on_removed,
            queues: BTreeMap::new(),
        }
    }

    /// Starts a sender task for every peer in the directory that has none.
    pub fn connect_all(&mut self) {
        let peers: Vec<NodeId> = self
            .directory
            .read()
            .expect("peer directory lock poisoned")
            .keys()
            .copied()
            .collect();
        for peer in peers {
            if peer == self.member_id || self.queues.contains_key(&peer) {
                continue;
            }
            let (messages, message_lane) = mpsc::channel(PEER_QUEUE_MAX);
            let (snapshots, snapshot_lane) = mpsc::channel(SNAPSHOT_QUEUE_MAX);
            self.queues.insert(peer, (messages, snapshots));
            for lane in [message_lane, snapshot_lane] {
                tokio::spawn(peer_loop(
                    peer,
                    self.directory.clone(),
                    lane,
                    self.cluster_id,
                    self.member_id,
                    self.on_removed.clone(),
                ));
            }
        }
    }

    /// Stops sending to a removed member (its task ends with its queue).
    pub fn disconnect(&mut self, peer: NodeId) {
        self.queues.remove(&peer);
    }

    /// Queues a message for its peer (snapshot chunks on their own lane);
    /// dropped if the queue is full.
    pub fn send(&self, message: Message) {
        if let Some((messages, snapshots)) = self.queues.get(&message.to) {
            let lane = if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
                snapshots
            } else {
                messages
            };
            let _ = lane.try_send(message);
        }
    }
}

/// Connects to `url` (within a timeout).
///
/// # Errors
/// When the peer cannot be reached.
pub async fn connect(url: &str) -> Result<PeerClient<Channel>, String> {
    let endpoint = Channel::from_shared(url.to_string())
        .map_err(|error| error.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|error| error.to_string())?;
    Ok(PeerClient::new(channel).max_decoding_message_size(64 << 20))
}

struct BatchStream(mpsc::Receiver<MessageBatch>);

impl tonic::codegen::tokio_stream::Stream for BatchStream {
    type Item = MessageBatch;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<MessageBatch>> {
        self.0.poll_recv(context)
    }
}

async fn peer_loop(
    peer: NodeId,
    directory: PeerDirectory,
    mut queue: mpsc::Receiver<Message>,
    cluster_id: u64,
    from: NodeId,
    on_removed: OnRemoved,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if queue.is_closed() {
            return;
        }
        // Read at every connection: a member's URLs may have been updated.
        let url = directory
            .read()
            .expect("peer directory lock poisoned")
            .get(&peer)
            .and_then(|urls| urls.first().cloned());
        let Some(url) = url else { return };
        let mut client = match connect(&url).await {
            Ok(client) => client,
            Err(error) => {
                tracing::debug!(peer = format_args!("{peer:x}"), %url, %error, "peer unreachable");
                // Messages for an unreachable peer are dropped: the core
                // retries what matters.
                while queue.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        if let Ok(identity) = client.identify(IdentifyRequest { member_id: from }).await {
            let identity = identity.into_inner();
            if identity.asker_removed && identity.cluster_id == cluster_id {
                on_removed();
                return;
            }
            if identity.cluster_id != cluster_id {
                tracing::error!(peer = %url, "peer belongs to another cluster; not sending to it");
                tokio::time::sleep(BACKOFF_MAX).await;
                continue;
            }
            if identity.member_id != peer {
                // Another member (or a removed one) answers at this URL:
                // messages for this member must not reach it.
                tracing::warn!(peer = format_args!("{peer:x}"), %url, found = format_args!("{:x}", identity.member_id), "another member answers at this peer's URL; not sending to it");
                tokio::time::sleep(BACKOFF_MAX).await;
                continue;
            }
        }
        let (batches, stream) = mpsc::channel::<MessageBatch>(64);
        let mut call = tokio::spawn(async move { client.send(BatchStream(stream)).await });
        loop {
            tokio::select! {
                message = queue.recv() => {
                    let Some(message) = message else { return };
                    let mut encoded = Vec::with_capacity(BATCH_MESSAGES_MAX.min(16));
                    let mut bytes = Vec::new();
                    message_codec::encode(&message, &mut bytes);
                    encoded.push(bytes);
                    while encoded.len() < BATCH_MESSAGES_MAX {
                        let Ok(message) = queue.try_recv() else { break };
                        let mut bytes = Vec::new();
                        message_codec::encode(&message, &mut bytes);
                        encoded.push(bytes);
                    }
                    let batch = MessageBatch { cluster_id, from, messages: encoded };
                    if batches.send(batch).await.is_err() {
                        break;
                    }
                }
                ended = &mut call => {
                    if let Ok(Err(status)) = ended {
                        if status.message() == MEMBER_REMOVED {
                            on_removed();
                            return;
                        }
                    }
                    break;
                }
            }
        }
        tracing::debug!(peer = format_args!("{peer:x}"), "peer stream ended; reconnecting");
        call.abort();
    }
}

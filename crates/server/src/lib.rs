//! raftwerk's node: the runtime that drives the consensus core
//! (`raftwerk-raft`), the WAL (`raftwerk-wal`) and the key space
//! (`raftwerk-kv`), the peer transport, and etcd's v3 gRPC API.
#![forbid(unsafe_code)]

pub mod backup;
pub mod config;
pub mod convert;
pub mod errors;
pub mod identity;
pub mod join;
pub mod message_codec;
pub mod node;
pub mod services;
pub mod snapshot_io;
pub mod transport;

use raftwerk_proto::etcdserverpb::cluster_server::ClusterServer;
use raftwerk_proto::etcdserverpb::kv_server::KvServer;
use raftwerk_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use raftwerk_proto::raftwerkpb::peer_server::PeerServer;

pub use config::{ConfigError, ServerConfig};
use identity::Identity;
use node::{Node, NodeOptions};
use services::Services;

/// Bytes gRPC may receive beyond `--max-request-bytes`, so that an
/// oversized request reaches the server and gets etcd's own error.
const GRPC_OVERHEAD_BYTES: usize = 512 << 10;

/// Starts the node and serves clients and peers until a listener fails.
///
/// # Errors
/// What prevents the node from starting or serving.
pub async fn serve(config: ServerConfig) -> Result<(), String> {
    config.validate().map_err(|error| error.to_string())?;
    let client_addrs = config.client_listen_addrs()?;
    let peer_addrs = config.peer_listen_addrs()?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|error| format!("cannot create {}: {error}", config.data_dir.display()))?;
    let identity = resolve_identity(&config).await?;
    let membership = config.membership(&identity);
    let options = NodeOptions {
        data_dir: config.data_dir.clone(),
        heartbeat_interval: std::time::Duration::from_millis(config.heartbeat_interval_ms),
        election_ticks: (config.election_timeout_ms / config.heartbeat_interval_ms).max(2),
        snapshot_count: config.snapshot_count,
        snapshot_catchup_entries: config.snapshot_catchup_entries,
        request_timeout: std::time::Duration::from_millis((config.election_timeout_ms * 5).max(5000)),
    };
    let handle = Node::start(membership, options).map_err(|error| error.to_string())?;
    let services = Services::new(handle, config.max_request_bytes);
    tokio::spawn(publish_when_needed(services.clone()));
    tokio::spawn(watch_for_removal(services.clone(), config.data_dir.clone()));
    let limit = config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let mut tasks = tokio::task::JoinSet::new();
    for addr in peer_addrs {
        let peer = PeerServer::new(services.clone()).max_decoding_message_size(64 << 20);
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(peer)
                .serve(addr)
                .await
                .map_err(|error| format!("peer listener {addr}: {error}"))
        });
    }
    for addr in client_addrs {
        let kv = KvServer::new(services.clone()).max_decoding_message_size(limit);
        let maintenance = MaintenanceServer::new(services.clone()).max_decoding_message_size(limit);
        let cluster = ClusterServer::new(services.clone()).max_decoding_message_size(limit);
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(kv)
                .add_service(maintenance)
                .add_service(cluster)
                .serve(addr)
                .await
                .map_err(|error| format!("client listener {addr}: {error}"))
        });
    }
    tracing::info!(name = %config.name, "serving clients on {:?}", config.listen_client_urls);
    match tasks.join_next().await {
        Some(Ok(Err(error))) => Err(error),
        Some(Err(error)) => Err(error.to_string()),
        _ => Ok(()),
    }
}

/// Publishes this member's name and client URLs once its own record is in
/// its member list and differs (after its first start, after a join, after
/// its client URLs changed), retrying until that is done.
async fn publish_when_needed(services: Services) {
    let own = services.node.membership.clone();
    let mut pause = tokio::time::interval(std::time::Duration::from_millis(300));
    loop {
        pause.tick().await;
        let Ok(members) = services.node.members() else {
            continue;
        };
        let Some(record) = members.iter().find(|member| member.id == own.member_id) else {
            continue;
        };
        if record.name == own.name && record.client_urls == own.client_urls {
            return;
        }
        match services.publish().await {
            Ok(()) => {
                tracing::info!(name = %own.name, "published this member's name and client URLs");
                // Applied here once this member has caught up; until then
                // ask again only now and then.
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            }
            Err(status) => tracing::debug!(error = %status.message(), "publishing this member failed; will retry"),
        }
    }
}

/// How often a member asks one of its peers whether it was removed.
const REMOVAL_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// A member that was removed while it could not hear it (a learner, which
/// never sends; a member that was down) learns it from its peers: every
/// `REMOVAL_CHECK_INTERVAL` it asks the next one, and stops if told so.
async fn watch_for_removal(services: Services, data_dir: std::path::PathBuf) {
    let own = services.node.membership.clone();
    let mut clients = std::collections::BTreeMap::new();
    let mut turn = 0usize;
    let mut pause = tokio::time::interval(REMOVAL_CHECK_INTERVAL);
    loop {
        pause.tick().await;
        let peers = services.node.peer_urls();
        if peers.is_empty() {
            continue;
        }
        turn = turn.wrapping_add(1);
        let (_, url) = &peers[turn % peers.len()];
        let asked = async {
            if !clients.contains_key(url) {
                clients.insert(url.clone(), transport::connect(url).await.ok()?);
            }
            let client = clients.get_mut(url)?;
            let request = raftwerk_proto::raftwerkpb::IdentifyRequest {
                member_id: own.member_id,
            };
            client.identify(request).await.ok().map(tonic::Response::into_inner)
        };
        match tokio::time::timeout(REMOVAL_CHECK_INTERVAL, asked).await {
            Ok(Some(answer)) if answer.cluster_id == own.cluster_id && answer.asker_removed => {
                node::leave_cluster(&data_dir, &own.name);
                return;
            }
            Ok(Some(_)) => {}
            _ => {
                clients.remove(url);
            }
        }
    }
}

/// The node's identity: the one stored in its data directory (checked
/// against `--name`), or, at the first start, the one the flags give a new
/// cluster's member, or the one the running cluster gives a joining member.
async fn resolve_identity(config: &ServerConfig) -> Result<Identity, String> {
    if let Some(stored) = Identity::load(&config.data_dir)? {
        stored.check(&config.data_dir, &config.name)?;
        return Ok(stored);
    }
    let identity = if config.initial_cluster_state_new {
        join::check_not_bootstrapped(config).await?;
        config.identity_from_flags()?
    } else {
        join::join(config).await?
    };
    identity.store(&config.data_dir)?;
    Ok(identity)
}

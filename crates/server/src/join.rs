//! Starting a member of a running cluster (`--initial-cluster-state
//! existing` with an empty data directory): after `etcdctl member add`, the
//! new node asks the members named in `--initial-cluster` which member its
//! peer URLs belong to, and takes that identity. The leader then replicates
//! to it (by snapshot if its log was compacted).

use std::time::Duration;

use raftwerk_kv::Member;
use raftwerk_proto::raftwerkpb::JoinRequest;

use crate::config::ServerConfig;
use crate::identity::Identity;
use crate::transport;

/// How long a joining node keeps asking before it gives up: members may be
/// starting too.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long it keeps asking once members answer that they do not know it
/// (a member applies an addition shortly after the leader answered).
const UNKNOWN_PATIENCE: Duration = Duration::from_secs(3);
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_PAUSE: Duration = Duration::from_millis(300);

/// How long a new member's first start asks each peer whether it started
/// before.
const BOOTSTRAPPED_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// At the first start of a member of a new cluster (an empty data
/// directory): if the peers that can be reached know this member as
/// started, its data was lost, and coming back with an empty log under its
/// identity could lose acknowledged writes (RELIABILITY #6); it refuses, as
/// etcd does. Peers that cannot be reached (a cluster starting) say
/// nothing.
///
/// # Errors
/// A peer knows this member as started.
pub async fn check_not_bootstrapped(config: &ServerConfig) -> Result<(), String> {
    let own = &config.initial_advertise_peer_urls;
    for (_, url) in config
        .initial_cluster
        .iter()
        .filter(|(name, url)| *name != config.name && !own.contains(url))
    {
        let asked = async {
            let mut client = transport::connect(url).await.ok()?;
            client.join(JoinRequest { peer_urls: own.clone() }).await.err()
        };
        if let Ok(Some(status)) = tokio::time::timeout(BOOTSTRAPPED_CHECK_TIMEOUT, asked).await {
            if status.code() == tonic::Code::FailedPrecondition {
                return Err(format!(
                    "{url}: {} (this node's data directory is empty)",
                    status.message()
                ));
            }
        }
    }
    Ok(())
}

/// Asks the running members who this node is.
///
/// # Errors
/// No member answered, or none knows these peer URLs (the member was not
/// added), within `JOIN_TIMEOUT`.
pub async fn join(config: &ServerConfig) -> Result<Identity, String> {
    let own = &config.initial_advertise_peer_urls;
    let peers: Vec<&String> = config
        .initial_cluster
        .iter()
        .filter(|(name, url)| *name != config.name && !own.contains(url))
        .map(|(_, url)| url)
        .collect();
    if peers.is_empty() {
        return Err(
            "--initial-cluster-state=existing needs the running members in --initial-cluster (as `etcdctl member add` prints them)"
                .to_string(),
        );
    }
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    let mut last_error = String::new();
    let mut unknown_since = None;
    loop {
        for url in &peers {
            let asked = async {
                let mut client = transport::connect(url)
                    .await
                    .map_err(|error| (tonic::Code::Unavailable, error))?;
                client
                    .join(JoinRequest { peer_urls: own.clone() })
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| {
                        if status.code() == tonic::Code::NotFound {
                            unknown_since.get_or_insert_with(tokio::time::Instant::now);
                        }
                        (status.code(), status.message().to_string())
                    })
            };
            match tokio::time::timeout(ASK_TIMEOUT, asked).await {
                Ok(Ok(answer)) => {
                    let mut bootstrap: Vec<Member> = answer
                        .bootstrap
                        .into_iter()
                        .map(|member| Member {
                            id: member.id,
                            name: member.name,
                            peer_urls: member.peer_ur_ls,
                            ..Member::default()
                        })
                        .collect();
                    bootstrap.sort_by_key(|member| member.id);
                    let seed = answer
                        .members
                        .into_iter()
                        .map(|member| Member {
                            id: member.id,
                            peer_urls: member.peer_ur_ls,
                            ..Member::default()
                        })
                        .collect();
                    if answer.cluster_id == 0 || answer.member_id == 0 || bootstrap.is_empty() {
                        last_error = format!("{url} gave an incomplete answer");
                        continue;
                    }
                    tracing::info!(
                        name = %config.name,
                        member = format_args!("{:x}", answer.member_id),
                        cluster = format_args!("{:x}", answer.cluster_id),
                        "joining a running cluster"
                    );
                    return Ok(Identity {
                        cluster_id: answer.cluster_id,
                        member_id: answer.member_id,
                        name: config.name.clone(),
                        bootstrap,
                        seed,
                        seed_index: answer.members_index,
                        removed: false,
                    });
                }
                // A member that started before cannot join again: final.
                Ok(Err((tonic::Code::FailedPrecondition, error))) => return Err(format!("{url}: {error}")),
                Ok(Err((_, error))) => last_error = format!("{url}: {error}"),
                Err(_) => last_error = format!("{url}: no answer within {ASK_TIMEOUT:?}"),
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline || unknown_since.is_some_and(|since| now - since >= UNKNOWN_PATIENCE) {
            return Err(format!(
                "cannot join the cluster with peer URLs {own:?} (add this member first with `etcdctl member add`): {last_error}"
            ));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

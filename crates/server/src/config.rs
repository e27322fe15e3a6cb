//! The server's settings, named and defaulted as etcd's flags, and the
//! identities derived from them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use raftwerk_kv::Member;

use crate::identity::Identity;
use crate::node::Membership;

/// A node's configuration (see the `raftwerk` binary for the flags).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name=peer-url` pairs.
    pub initial_cluster: Vec<(String, String)>,
    pub initial_cluster_state_new: bool,
    pub initial_cluster_token: String,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_count: u64,
    /// Entries kept below a snapshot when compacting, for followers that
    /// are slightly behind (etcd's snapshot catch-up entries).
    pub snapshot_catchup_entries: u64,
    pub max_request_bytes: usize,
}

/// Longest heartbeat interval or election timeout accepted (etcd allows up
/// to 50 s for the election timeout).
pub const TIMER_MS_MAX: u64 = 50_000;

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

/// 64-bit FNV-1a: stable identities from names.
pub(crate) fn fnv(parts: &[&str]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for byte in part.bytes().chain([0u8]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash.max(1)
}

/// Parses `a=url1,b=url2`.
///
/// # Errors
/// A pair without `=`, or a name given twice.
pub fn parse_initial_cluster(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in text.split(',').filter(|pair| !pair.is_empty()) {
        let Some((name, url)) = pair.split_once('=') else {
            return Err(ConfigError::Invalid(format!(
                "--initial-cluster entry {pair:?} is not name=url"
            )));
        };
        out.push((name.to_string(), url.to_string()));
    }
    Ok(out)
}

/// Checks that `url` is `http://host:port` (without resolving the host).
///
/// # Errors
/// Another scheme, no host, or no valid port.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!("{url:?} must be an http:// URL (TLS is not supported yet)"));
    };
    let host_port = rest.trim_end_matches('/');
    let Some((host, port)) = host_port.rsplit_once(':') else {
        return Err(format!("{url:?} has no port"));
    };
    if host.is_empty() || host.contains('/') || port.parse::<u16>().is_err() {
        return Err(format!("{url:?} is not http://host:port"));
    }
    Ok(())
}

/// The address an `http://host:port` URL names.
///
/// # Errors
/// Another scheme, no port, or a host that does not resolve.
pub(crate) fn socket_addr(url: &str) -> Result<SocketAddr, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!("{url:?} must be an http:// URL (TLS is not supported yet)"));
    };
    let host_port = rest.trim_end_matches('/');
    host_port
        .to_socket_addrs()
        .map_err(|error| format!("{url:?}: {error}"))?
        .next()
        .ok_or_else(|| format!("{url:?} resolves to no address"))
}

fn socket_addrs(urls: &[String], flag: &str) -> Result<Vec<SocketAddr>, String> {
    urls.iter()
        .map(|url| socket_addr(url).map_err(|error| format!("{flag}: {error}")))
        .collect()
}

impl ServerConfig {
    /// Checks the settings against each other.
    ///
    /// # Errors
    /// The first conflict, worded for the operator.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |text: String| Err(ConfigError::Invalid(text));
        if self.name.is_empty() {
            return invalid("--name must not be empty".to_string());
        }
        // A member publishes its client URLs when it starts: that is how
        // the cluster knows it started (and refuses it back with lost data).
        if self.advertise_client_urls.is_empty() {
            return invalid("--advertise-client-urls must name at least one URL".to_string());
        }
        use raftwerk_kv::members::{NAME_BYTES_MAX, PEER_URLS_MAX, URL_BYTES_MAX};
        let names = std::iter::once(&self.name).chain(self.initial_cluster.iter().map(|(name, _)| name));
        if let Some(name) = names.clone().find(|name| name.len() > NAME_BYTES_MAX) {
            return invalid(format!(
                "member name {:?}... is longer than {NAME_BYTES_MAX} bytes",
                name.chars().take(16).collect::<String>()
            ));
        }
        if let Some(name) = names.clone().find(|name| name.contains(['=', ',', '\n'])) {
            return invalid(format!(
                "member name {name:?} must not contain '=', ',' or a line break"
            ));
        }
        let urls = [&self.advertise_client_urls, &self.initial_advertise_peer_urls];
        if urls.iter().any(|urls| urls.len() > PEER_URLS_MAX) {
            return invalid(format!(
                "at most {PEER_URLS_MAX} advertised URLs of each kind are supported"
            ));
        }
        let all_urls = urls
            .into_iter()
            .flatten()
            .chain(self.initial_cluster.iter().map(|(_, url)| url));
        if let Some(url) = all_urls.clone().find(|url| url.len() > URL_BYTES_MAX) {
            return invalid(format!(
                "URL {:?}... is longer than {URL_BYTES_MAX} bytes",
                url.chars().take(16).collect::<String>()
            ));
        }
        if let Some(url) = all_urls.clone().find(|url| url.contains([',', ' ', '\n'])) {
            return invalid(format!("URL {url:?} must not contain ',', spaces or line breaks"));
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms > TIMER_MS_MAX {
            return invalid(format!("--heartbeat-interval must be between 1 and {TIMER_MS_MAX} ms"));
        }
        if self.election_timeout_ms > TIMER_MS_MAX {
            return invalid(format!("--election-timeout must be at most {TIMER_MS_MAX} ms"));
        }
        if self.election_timeout_ms < 5 * self.heartbeat_interval_ms {
            return invalid(format!(
                "--election-timeout ({} ms) must be at least 5 times --heartbeat-interval ({} ms)",
                self.election_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        if self.snapshot_count == 0 {
            return invalid("--snapshot-count must be at least 1".to_string());
        }
        if self.max_request_bytes == 0 || self.max_request_bytes as u64 > raftwerk_wal::wal::ENTRY_BYTES_MAX / 2 {
            return invalid(format!(
                "--max-request-bytes must be between 1 and {}",
                raftwerk_wal::wal::ENTRY_BYTES_MAX / 2
            ));
        }
        let Some((_, url)) = self.initial_cluster.iter().find(|(name, _)| *name == self.name) else {
            return invalid(format!(
                "--initial-cluster has no entry for this member's --name {:?}",
                self.name
            ));
        };
        if !self.initial_advertise_peer_urls.contains(url) {
            return invalid(format!(
                "--initial-cluster gives {url} for {:?} but --initial-advertise-peer-urls is {:?}",
                self.name, self.initial_advertise_peer_urls
            ));
        }
        // `etcdctl member add` prints members that have not started yet
        // without a name: a joining node may be given several.
        let unnamed = self.initial_cluster.iter().any(|(name, _)| name.is_empty());
        if unnamed && self.initial_cluster_state_new {
            return invalid("--initial-cluster of a new cluster must name every member".to_string());
        }
        let mut names: Vec<&str> = self
            .initial_cluster
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| !name.is_empty())
            .collect();
        names.sort_unstable();
        if names.windows(2).any(|pair| pair[0] == pair[1]) {
            return invalid("--initial-cluster names a member twice".to_string());
        }
        socket_addrs(&self.listen_client_urls, "--listen-client-urls").map_err(ConfigError::Invalid)?;
        socket_addrs(&self.listen_peer_urls, "--listen-peer-urls").map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The identity the flags give a member of a new cluster: ids derived
    /// from the cluster token and `--initial-cluster` (equal on every
    /// member), the first members from `--initial-cluster`.
    ///
    /// # Errors
    /// When the configuration is invalid.
    pub fn identity_from_flags(&self) -> Result<Identity, String> {
        self.validate().map_err(|error| error.to_string())?;
        let mut described: Vec<String> = self
            .initial_cluster
            .iter()
            .map(|(name, url)| format!("{name}={url}"))
            .collect();
        described.sort();
        let mut parts: Vec<&str> = vec![self.initial_cluster_token.as_str()];
        parts.extend(described.iter().map(String::as_str));
        let mut bootstrap: Vec<Member> = self
            .initial_cluster
            .iter()
            .map(|(name, url)| Member {
                id: fnv(&[&self.initial_cluster_token, name]),
                name: name.clone(),
                peer_urls: vec![url.clone()],
                ..Member::default()
            })
            .collect();
        bootstrap.sort_by_key(|member| member.id);
        Ok(Identity {
            cluster_id: fnv(&parts),
            member_id: fnv(&[&self.initial_cluster_token, &self.name]),
            name: self.name.clone(),
            bootstrap,
            seed: Vec::new(),
            seed_index: 0,
            removed: false,
        })
    }

    /// The node's static facts, from its identity and flags.
    pub fn membership(&self, identity: &Identity) -> Membership {
        Membership {
            cluster_id: identity.cluster_id,
            member_id: identity.member_id,
            name: identity.name.clone(),
            client_urls: self.advertise_client_urls.clone(),
            bootstrap: identity.bootstrap.clone(),
            seed: identity.seed.clone(),
            seed_index: identity.seed_index,
        }
    }

    pub fn client_listen_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        socket_addrs(&self.listen_client_urls, "--listen-client-urls")
    }

    pub fn peer_listen_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        socket_addrs(&self.listen_peer_urls, "--listen-peer-urls")
    }
}

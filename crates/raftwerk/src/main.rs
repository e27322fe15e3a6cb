//! `raftwerk`: serve one node with etcd's flags, or `raftwerk playground`
//! to run a local cluster of node processes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use raftwerk_server::config::parse_initial_cluster;
use raftwerk_server::ServerConfig;

mod bench;
mod playground;

/// etcd-compatible flags; each also reads a `RAFTWERK_*` environment
/// variable (etcd's `ETCD_*` names with raftwerk's prefix).
#[derive(Parser, Debug)]
#[command(
    name = "raftwerk",
    version,
    about = "An etcd-compatible key-value server on a Raft engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Commands>,
    /// Human-readable name for this member.
    #[arg(long, env = "RAFTWERK_NAME", default_value = "default", global = true)]
    name: String,
    /// Path to the data directory (default: <name>.raftwerk).
    #[arg(long, env = "RAFTWERK_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic (comma-separated).
    #[arg(long, env = "RAFTWERK_LISTEN_CLIENT_URLS", default_value = "http://127.0.0.1:2379")]
    listen_client_urls: String,
    /// Client URLs this member advertises to the cluster.
    #[arg(
        long,
        env = "RAFTWERK_ADVERTISE_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    advertise_client_urls: String,
    /// URLs to listen on for peer traffic.
    #[arg(long, env = "RAFTWERK_LISTEN_PEER_URLS", default_value = "http://127.0.0.1:2380")]
    listen_peer_urls: String,
    /// Peer URLs this member advertises to the cluster.
    #[arg(
        long,
        env = "RAFTWERK_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://127.0.0.1:2380",
        global = true
    )]
    initial_advertise_peer_urls: String,
    /// Initial cluster configuration: name=peer-url,... (default: this
    /// member alone).
    #[arg(long, env = "RAFTWERK_INITIAL_CLUSTER", global = true)]
    initial_cluster: Option<String>,
    /// `new` to bootstrap a cluster; `existing` to join one.
    #[arg(long, env = "RAFTWERK_INITIAL_CLUSTER_STATE", value_enum, default_value_t = ClusterState::New)]
    initial_cluster_state: ClusterState,
    /// Token that makes the cluster's identity unique.
    #[arg(
        long,
        env = "RAFTWERK_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster",
        global = true
    )]
    initial_cluster_token: String,
    /// Time between heartbeats, in milliseconds.
    #[arg(long, env = "RAFTWERK_HEARTBEAT_INTERVAL", default_value_t = 100)]
    heartbeat_interval: u64,
    /// Election timeout, in milliseconds.
    #[arg(long, env = "RAFTWERK_ELECTION_TIMEOUT", default_value_t = 1000)]
    election_timeout: u64,
    /// Applied entries between snapshots (after which the log is compacted).
    #[arg(long, env = "RAFTWERK_SNAPSHOT_COUNT", default_value_t = 100_000)]
    snapshot_count: u64,
    /// Entries kept below a snapshot for slow followers when the log is
    /// compacted.
    #[arg(long, env = "RAFTWERK_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES", default_value_t = 5000)]
    experimental_snapshot_catchup_entries: u64,
    /// Largest client request accepted, in bytes.
    #[arg(long, env = "RAFTWERK_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    max_request_bytes: usize,
    /// Log level: debug, info, warn or error.
    #[arg(long, env = "RAFTWERK_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Run a local cluster of node processes on free loopback ports.
    Playground {
        /// Number of nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
        nodes: u16,
        /// Folder for the nodes' data directories.
        #[arg(long, default_value = "raftwerk-playground")]
        dir: PathBuf,
    },
    /// Load a cluster (raftwerk or etcd) through etcd's v3 API.
    Bench {
        /// Client endpoints, comma-separated.
        #[arg(long, default_value = "127.0.0.1:2379")]
        endpoints: String,
        /// Concurrent clients, each with one request outstanding.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Requests in all.
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        #[arg(long, value_enum, default_value_t = bench::Kind::Put)]
        kind: bench::Kind,
        /// Value size of puts (and of the key ranges read).
        #[arg(long, default_value_t = 64)]
        value_bytes: usize,
        /// Serializable ranges (served locally) instead of linearizable.
        #[arg(long)]
        serializable: bool,
    },
    /// Backups made with `etcdctl snapshot save`.
    Snapshot {
        #[command(subcommand)]
        action: SnapshotAction,
    },
}

#[derive(Subcommand, Debug)]
enum SnapshotAction {
    /// Restore a backup into a new data directory, as a member of the new
    /// cluster that --name, --data-dir, --initial-cluster,
    /// --initial-cluster-token and --initial-advertise-peer-urls describe
    /// (restore every member of the new cluster from the same file).
    Restore {
        /// The file `etcdctl snapshot save` wrote.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ClusterState {
    New,
    Existing,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

fn split(list: &str) -> Vec<String> {
    list.split(',')
        .filter(|url| !url.is_empty())
        .map(str::to_string)
        .collect()
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    // A member's flags (shared with `snapshot restore`) mean nothing to the
    // tools: refuse them rather than ignore them.
    if let Some(tool @ ("playground" | "bench")) = matches.subcommand_name() {
        let member_flags = [
            "name",
            "data_dir",
            "initial_cluster",
            "initial_cluster_token",
            "initial_advertise_peer_urls",
        ];
        if let Some(flag) = member_flags
            .iter()
            .find(|flag| matches.value_source(flag) == Some(ValueSource::CommandLine))
        {
            return usage_error(&format!(
                "--{} does not apply to `raftwerk {tool}`",
                flag.replace('_', "-")
            ));
        }
    }
    let level = match cli.log_level {
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Error => tracing::Level::ERROR,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match &cli.command {
        Some(Commands::Playground { nodes, dir }) => return runtime.block_on(playground::run(*nodes, dir.clone())),
        Some(Commands::Bench {
            endpoints,
            clients,
            requests,
            kind,
            value_bytes,
            serializable,
        }) => {
            let endpoints = split(endpoints);
            return match runtime.block_on(bench::run(
                &endpoints,
                *clients,
                *requests,
                *kind,
                *value_bytes,
                *serializable,
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("raftwerk bench: {error}");
                    ExitCode::from(1)
                }
            };
        }
        Some(Commands::Snapshot {
            action: SnapshotAction::Restore { file },
        }) => {
            let config = match server_config(&cli) {
                Ok(config) => config,
                Err(code) => return code,
            };
            if let Err(error) = config.validate() {
                return usage_error(&error.to_string());
            }
            // A member its reachable peers know as started is not restored
            // into their cluster (it would come back with an empty log).
            let checked = runtime.block_on(raftwerk_server::join::check_not_bootstrapped(&config));
            return match checked.and_then(|()| raftwerk_server::backup::restore(&config, file)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("raftwerk snapshot restore: {error}");
                    ExitCode::from(1)
                }
            };
        }
        None => {}
    }
    let config = match server_config(&cli) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(error) = config.validate() {
        return usage_error(&error.to_string());
    }
    match runtime.block_on(raftwerk_server::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("raftwerk: {error}");
            ExitCode::from(1)
        }
    }
}

/// The server's settings from the flags; a usage error if they do not
/// parse.
fn server_config(cli: &Cli) -> Result<ServerConfig, ExitCode> {
    let advertise_peer = split(&cli.initial_advertise_peer_urls);
    let initial_cluster = match &cli.initial_cluster {
        Some(text) => match parse_initial_cluster(text) {
            Ok(pairs) => pairs,
            Err(error) => return Err(usage_error(&error.to_string())),
        },
        None => advertise_peer
            .iter()
            .map(|url| (cli.name.clone(), url.clone()))
            .collect(),
    };
    let config = ServerConfig {
        data_dir: cli
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.raftwerk", cli.name))),
        name: cli.name.clone(),
        listen_client_urls: split(&cli.listen_client_urls),
        advertise_client_urls: split(&cli.advertise_client_urls),
        listen_peer_urls: split(&cli.listen_peer_urls),
        initial_advertise_peer_urls: advertise_peer,
        initial_cluster,
        initial_cluster_state_new: matches!(cli.initial_cluster_state, ClusterState::New),
        initial_cluster_token: cli.initial_cluster_token.clone(),
        heartbeat_interval_ms: cli.heartbeat_interval,
        election_timeout_ms: cli.election_timeout,
        snapshot_count: cli.snapshot_count,
        snapshot_catchup_entries: cli.experimental_snapshot_catchup_entries,
        max_request_bytes: cli.max_request_bytes,
    };
    Ok(config)
}

/// Wrong or conflicting flags: a clear message and exit code 2, as for
/// flags clap itself refuses.
fn usage_error(message: &str) -> ExitCode {
    eprintln!("raftwerk: {message}");
    ExitCode::from(2)
}

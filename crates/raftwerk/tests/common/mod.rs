//! Real `raftwerk` processes for the integration tests: a cluster on free
//! loopback ports with per-test flags and a log file per node, and
//! `etcdctl` helpers. Every wait is bounded; every process is killed when
//! its cluster is dropped.
#![allow(dead_code)]

pub mod history;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const WAIT_MAX: Duration = Duration::from_secs(30);

/// Ports the tests give servers: below Linux's ephemeral range
/// (32768–60999), so the outgoing connections of clients and nodes never
/// take a port between the moment it is picked and the moment a node binds
/// it; each test process walks its own stretch of the range, and never hands
/// out a port twice (a killed node's port is not given to another).
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port that is free now, picked at run time.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORTS.end - PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = PORTS.start + (NEXT.fetch_add(1, Ordering::SeqCst) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?}");
}

pub struct Node {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// For a member added at run time: the `--initial-cluster` that
    /// `etcdctl member add` printed; it starts with
    /// `--initial-cluster-state existing`.
    pub joins_with: Option<String>,
}

pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A cluster of node processes; killed on drop.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub initial_cluster: String,
    pub token: String,
    pub flags: Vec<String>,
    pub dir: TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Cluster {
    pub fn start(size: usize, test: &str, flags: &[&str]) -> Cluster {
        let mut cluster = Cluster::prepare(size, test, flags);
        for at in 0..size {
            cluster.launch(at);
        }
        cluster.wait_for_leader();
        cluster
    }

    /// A cluster's ports, folders and flags, with no process started.
    pub fn prepare(size: usize, test: &str, flags: &[&str]) -> Cluster {
        let dir = std::env::temp_dir().join(format!("raftwerk-it-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test directory");
        let nodes: Vec<Node> = (1..=size)
            .map(|at| Node {
                name: format!("n{at}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.join(format!("n{at}")),
                log: dir.join(format!("n{at}.log")),
                child: None,
                joins_with: None,
            })
            .collect();
        let initial_cluster = nodes
            .iter()
            .map(|node| format!("{}=http://127.0.0.1:{}", node.name, node.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            nodes,
            initial_cluster,
            token: format!("it-{test}"),
            flags: flags.iter().map(|flag| flag.to_string()).collect(),
            dir: TempDir(dir),
        }
    }

    /// A new node's slot (not started): free ports, its own folder.
    pub fn add_node(&mut self, name: &str) -> usize {
        let dir = self.dir.0.clone();
        self.nodes.push(Node {
            name: name.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: dir.join(name),
            log: dir.join(format!("{name}.log")),
            child: None,
            joins_with: None,
        });
        self.nodes.len() - 1
    }

    pub fn peer_url(&self, at: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[at].peer_port)
    }

    pub fn launch(&mut self, at: usize) {
        let node = &self.nodes[at];
        let client = format!("http://127.0.0.1:{}", node.client_port);
        let peer = format!("http://127.0.0.1:{}", node.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_raftwerk"))
            .args(["--name", &node.name])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args([
                "--initial-cluster",
                node.joins_with.as_ref().unwrap_or(&self.initial_cluster),
                "--initial-cluster-token",
                &self.token,
                "--initial-cluster-state",
                if node.joins_with.is_some() { "existing" } else { "new" },
            ])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(&self.flags)
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start raftwerk");
        self.nodes[at].child = Some(child);
    }

    pub fn kill(&mut self, at: usize) {
        if let Some(mut child) = self.nodes[at].child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    pub fn signal(&self, at: usize, signal: &str) {
        let pid = self.nodes[at].child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn endpoint(&self, at: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[at].client_port)
    }

    /// The client endpoints of the running nodes.
    pub fn endpoints(&self) -> String {
        (0..self.nodes.len())
            .filter(|at| self.nodes[*at].child.is_some())
            .map(|at| self.endpoint(at))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Fails with the node's log if its process has exited.
    pub fn check_alive(&mut self, at: usize) {
        let node = &mut self.nodes[at];
        if let Some(child) = node.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                panic!("{} exited ({status}); its log:\n{log}", node.name);
            }
        }
    }

    /// The position of the node that reports itself leader, waiting for one.
    pub fn wait_for_leader(&mut self) -> usize {
        let started = Instant::now();
        while started.elapsed() < WAIT_MAX {
            for at in 0..self.nodes.len() {
                if self.nodes[at].child.is_none() {
                    continue;
                }
                self.check_alive(at);
                let out = etcdctl(&self.endpoint(at), &["endpoint", "status", "-w", "fields"]);
                let field = |name: &str| {
                    out.stdout
                        .lines()
                        .find(|line| line.starts_with(&format!("\"{name}\" :")))
                        .map(|line| line.rsplit(':').next().unwrap_or("").trim().to_string())
                };
                if out.ok && field("MemberID").is_some() && field("MemberID") == field("Leader") {
                    return at;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no leader within {WAIT_MAX:?}");
    }
}

pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `etcdctl` against `endpoints` (bounded by a 10 s timeout).
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    let output = Command::new("timeout")
        .arg("10")
        .arg("etcdctl")
        .arg(format!("--endpoints={endpoints}"))
        .args(["--command-timeout=5s", "--dial-timeout=2s"])
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl is installed (Debian package etcd-client; .ci/run installs it)");
    Output {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `etcdctl` that must succeed, retried while the cluster settles.
pub fn ok(endpoints: &str, args: &[&str]) -> String {
    let started = Instant::now();
    loop {
        let out = etcdctl(endpoints, args);
        if out.ok {
            return out.stdout;
        }
        assert!(
            started.elapsed() < WAIT_MAX,
            "etcdctl {args:?} kept failing: {}",
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `etcdctl` with `input` on its standard input.
pub fn etcdctl_with_input(endpoints: &str, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .arg("10")
        .arg("etcdctl")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl is installed (Debian package etcd-client; .ci/run installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("etcdctl output");
    Output {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// One member's line of `etcdctl member list`: id, status, name, peer
/// URLs, client URLs, is-learner.
pub fn member_lines(endpoints: &str) -> Vec<Vec<String>> {
    ok(endpoints, &["member", "list"])
        .lines()
        .map(|line| line.split(", ").map(str::to_string).collect())
        .collect()
}

/// The member-list line of the member with `peer_url`.
pub fn line_of(lines: &[Vec<String>], peer_url: &str) -> Option<Vec<String>> {
    lines.iter().find(|line| line[3] == peer_url).cloned()
}

/// The id of the member called `name`.
pub fn member_id_of(endpoints: &str, name: &str) -> String {
    member_lines(endpoints)
        .into_iter()
        .find(|line| line[2] == name)
        .unwrap_or_else(|| panic!("{name} not listed"))[0]
        .clone()
}

/// Waits until `check` holds for the member list, failing with the last
/// list seen.
pub fn wait_for_members(endpoints: &str, what: &str, check: impl Fn(&[Vec<String>]) -> bool) {
    let started = Instant::now();
    loop {
        let lines = member_lines(endpoints);
        if check(&lines) {
            return;
        }
        assert!(started.elapsed() < WAIT_MAX, "{what}: member list stayed {lines:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `etcdctl member add` (retried while the cluster settles); returns the
/// new member's id and the `ETCD_INITIAL_CLUSTER` it printed, after
/// checking the other lines etcd prints.
pub fn member_add(endpoints: &str, name: &str, peer_url: &str, learner: bool) -> (String, String) {
    let mut args = vec!["member", "add", name, "--peer-urls", peer_url];
    if learner {
        args.push("--learner");
    }
    let out = ok(endpoints, &args);
    let id = out.split_whitespace().nth(1).expect("'Member <id> added'").to_string();
    let printed = |field: &str| {
        out.lines()
            .find_map(|line| line.strip_prefix(&format!("{field}=\"")))
            .map(|value| value.trim_end_matches('"').to_string())
            .unwrap_or_else(|| panic!("{field} missing from {out}"))
    };
    assert_eq!(printed("ETCD_INITIAL_CLUSTER_STATE"), "existing");
    assert_eq!(printed("ETCD_NAME"), name);
    (id, printed("ETCD_INITIAL_CLUSTER"))
}

/// Waits (bounded by `within`) for node `at` to exit; `None` if it still
/// runs then.
pub fn exit_within(cluster: &mut Cluster, at: usize, within: Duration) -> Option<Option<i32>> {
    let started = Instant::now();
    loop {
        let child = cluster.nodes[at].child.as_mut().expect("running");
        if let Some(status) = child.try_wait().expect("try_wait") {
            cluster.nodes[at].child = None;
            return Some(status.code());
        }
        if started.elapsed() >= within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for node `at` to exit; its exit code.
pub fn wait_exit(cluster: &mut Cluster, at: usize) -> Option<i32> {
    exit_within(cluster, at, WAIT_MAX).unwrap_or_else(|| panic!("node {at} did not stop"))
}

/// Whether `get key` served locally (serializable) at node `at` returns
/// `value` within `within`.
pub fn sees(cluster: &mut Cluster, at: usize, key: &str, value: &str, within: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        cluster.check_alive(at);
        let out = etcdctl(
            &cluster.endpoint(at),
            &["get", key, "--consistency=s", "--print-value-only"],
        );
        if out.ok && out.stdout.trim() == value {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// `raftwerk snapshot restore FILE` as member `at` of `cluster` (its name,
/// data directory, peer URL, and the cluster's `--initial-cluster` and
/// token).
pub fn restore(cluster: &Cluster, at: usize, file: &std::path::Path) -> std::process::Output {
    let node = &cluster.nodes[at];
    Command::new("timeout")
        .arg("20")
        .arg(env!("CARGO_BIN_EXE_raftwerk"))
        .args(["snapshot", "restore"])
        .arg(file)
        .args(["--name", &node.name])
        .arg("--data-dir")
        .arg(&node.data_dir)
        .args(["--initial-cluster", &cluster.initial_cluster])
        .args(["--initial-cluster-token", &cluster.token])
        .args(["--initial-advertise-peer-urls", &cluster.peer_url(at)])
        .output()
        .expect("run raftwerk snapshot restore")
}

//! `raftwerk playground --nodes N`: separate node processes on free
//! loopback ports, data under one folder (emptied at each start: the ports,
//! and so the cluster, are new every run), stopped together on Ctrl-C or
//! SIGTERM (or when one of them exits).

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::process::{Child, Command};

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub async fn run(nodes: u16, dir: PathBuf) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            eprintln!("raftwerk playground: cannot find its own binary: {error}");
            return ExitCode::from(1);
        }
    };
    // Ports change on every run, and with them the cluster's identity: a
    // new run starts from empty data. Only a folder a playground made is
    // wiped; anything else is refused.
    let marker = dir.join(".raftwerk-playground");
    if dir.exists() {
        if !marker.exists() {
            eprintln!(
                "raftwerk playground: {} exists and is not a playground folder; choose another with --dir",
                dir.display()
            );
            return ExitCode::from(2);
        }
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            eprintln!("raftwerk playground: cannot clear {}: {error}", dir.display());
            return ExitCode::from(1);
        }
    }
    if let Err(error) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&marker, b"")) {
        eprintln!("raftwerk playground: cannot create {}: {error}", dir.display());
        return ExitCode::from(1);
    }
    let mut ports = Vec::new();
    for _ in 0..nodes {
        match (free_port(), free_port()) {
            (Ok(client), Ok(peer)) => ports.push((client, peer)),
            (Err(error), _) | (_, Err(error)) => {
                eprintln!("raftwerk playground: no free port: {error}");
                return ExitCode::from(1);
            }
        }
    }
    let initial_cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(at, (_, peer))| format!("node{}=http://127.0.0.1:{peer}", at + 1))
        .collect();
    let initial_cluster = initial_cluster.join(",");
    let token = format!("playground-{}", std::process::id());
    let mut children: Vec<Child> = Vec::new();
    for (at, (client, peer)) in ports.iter().enumerate() {
        let name = format!("node{}", at + 1);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let spawned = Command::new(&exe)
            .arg("--name")
            .arg(&name)
            .arg("--data-dir")
            .arg(dir.join(&name))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(&initial_cluster)
            .arg("--initial-cluster-token")
            .arg(&token)
            .arg("--log-level")
            .arg("warn")
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(child) => children.push(child),
            Err(error) => {
                eprintln!("raftwerk playground: starting {name}: {error}");
                return ExitCode::from(1);
            }
        }
    }
    let endpoints: Vec<String> = ports.iter().map(|(client, _)| format!("127.0.0.1:{client}")).collect();
    println!("raftwerk playground: {nodes} nodes, data in {}", dir.display());
    for (at, endpoint) in endpoints.iter().enumerate() {
        println!("  node{}: client http://{endpoint}", at + 1);
    }
    println!("try:");
    println!("  etcdctl --endpoints={} put hello world", endpoints.join(","));
    println!("  etcdctl --endpoints={} get hello", endpoints.join(","));
    println!("  etcdctl --endpoints={} endpoint status -w table", endpoints.join(","));
    println!("Ctrl-C stops every node.");
    let mut exited = None;
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            eprintln!("raftwerk playground: cannot watch SIGTERM: {error}");
            return ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        status = async {
            loop {
                for (at, child) in children.iter_mut().enumerate() {
                    if let Ok(Some(status)) = child.try_wait() {
                        return (at, status);
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        } => exited = Some(status),
    }
    for child in &mut children {
        let _ = child.kill().await;
    }
    match exited {
        Some((at, status)) => {
            eprintln!(
                "raftwerk playground: node{} exited ({status}); stopped the others",
                at + 1
            );
            ExitCode::from(1)
        }
        None => {
            println!("raftwerk playground: stopped");
            ExitCode::SUCCESS
        }
    }
}

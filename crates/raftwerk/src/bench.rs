//! `raftwerk bench`: a small load generator speaking etcd's v3 API (so it
//! measures raftwerk and etcd alike): C clients, each with one request
//! outstanding, spread over the endpoints; puts or ranges of one key;
//! throughput and latency percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftwerk_proto::etcdserverpb::kv_client::KvClient;
use raftwerk_proto::etcdserverpb::{PutRequest, RangeRequest};
use tonic::transport::Channel;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Kind {
    Put,
    Range,
}

pub async fn run(
    endpoints: &[String],
    clients: usize,
    requests: u64,
    kind: Kind,
    value_bytes: usize,
    serializable: bool,
) -> Result<(), String> {
    let mut channels = Vec::new();
    for endpoint in endpoints {
        let url = if endpoint.starts_with("http") {
            endpoint.clone()
        } else {
            format!("http://{endpoint}")
        };
        let channel = Channel::from_shared(url.clone())
            .map_err(|error| error.to_string())?
            .connect()
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        channels.push(channel);
    }
    if channels.is_empty() {
        return Err("no endpoint".to_string());
    }
    let issued = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let value = vec![b'v'; value_bytes];
    if let Kind::Range = kind {
        let mut client = KvClient::new(channels[0].clone());
        client
            .put(PutRequest {
                key: b"bench-key".to_vec(),
                value: value.clone(),
                ..PutRequest::default()
            })
            .await
            .map_err(|error| error.to_string())?;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client_index in 0..clients {
        let mut client = KvClient::new(channels[client_index % channels.len()].clone());
        let (issued, failures, value) = (issued.clone(), failures.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    return latencies;
                }
                let sent = Instant::now();
                let result = match kind {
                    Kind::Put => client
                        .put(PutRequest {
                            key: format!("bench{:06}", n % 100_000).into_bytes(),
                            value: value.clone(),
                            ..PutRequest::default()
                        })
                        .await
                        .map(|_| ()),
                    Kind::Range => client
                        .range(RangeRequest {
                            key: b"bench-key".to_vec(),
                            serializable,
                            ..RangeRequest::default()
                        })
                        .await
                        .map(|_| ()),
                };
                match result {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(|error| error.to_string())?);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let percentile = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let mean = latencies.iter().sum::<Duration>() / latencies.len().max(1) as u32;
    println!(
        "{kind:?}{}: {} requests, {} clients, {} B values: {:.0} requests/s, mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms, {} failed",
        if serializable { " (serializable)" } else { "" },
        latencies.len(),
        clients,
        value_bytes,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        mean.as_secs_f64() * 1e3,
        percentile(50).as_secs_f64() * 1e3,
        percentile(99).as_secs_f64() * 1e3,
        failures.load(Ordering::Relaxed)
    );
    Ok(())
}

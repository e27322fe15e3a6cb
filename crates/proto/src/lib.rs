//! The wire formats: etcd's v3 client API (`etcdserverpb`, `mvccpb`) with
//! etcd's names and field numbers, so `etcdctl` and etcd's client
//! libraries talk to raftwerk unchanged, and raftwerk's peer API
//! (`raftwerkpb`). Generated at build time from `proto/`.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod raftwerkpb {
    tonic::include_proto!("raftwerkpb");
}

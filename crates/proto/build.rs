//! Generates the gRPC code from the .proto files with the vendored protoc,
//! so a fresh machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/mvccpb/kv.proto",
            "proto/etcdserverpb/rpc.proto",
            "proto/raftwerkpb/peer.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}

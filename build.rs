//! Compiles `proto/allot/v1/*.proto` with protox (no system `protoc`) and generates the tonic
//! clients and servers. The encoded descriptor set is kept for server reflection and for the
//! CLI, which prints messages from their descriptors.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos: Vec<PathBuf> = {
        let mut files: Vec<PathBuf> = fs::read_dir("proto/allot/v1")?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
            .collect();
        files.sort();
        files
    };
    // tonic-prost-build 0.14 no longer emits these for us.
    println!("cargo:rerun-if-changed=proto");
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let fds = protox::compile(&protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("allot_descriptor.bin"), fds.encode_to_vec())?;

    // `prost::Name` on every message: the CLI finds a message's descriptor by its full name.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Deterministic encoding of maps: request fingerprints for idempotency hash the bytes.
        .btree_map(".")
        // A request that does not decode is INVALID_ARGUMENT, not INTERNAL (`api::codec`).
        .codec_path("crate::api::codec::Codec")
        .compile_fds_with_config(fds, config)?;
    Ok(())
}

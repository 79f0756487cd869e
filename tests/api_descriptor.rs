//! The published descriptor set, `proto/allot.binpb`, for clients in other languages
//! (`grpcurl -protoset`, code generators; see proto/README.md), must be exactly the one this
//! build compiled: build.rs compiles `proto/allot/v1/*.proto` with protox (imports and source
//! info included) into `allot::proto::FILE_DESCRIPTOR_SET`, which server reflection serves too.
//!
//! After a change to the protos, regenerate the file with
//! `ALLOT_BLESS=1 cargo test --test api_descriptor` and commit it.

use std::{collections::BTreeSet, fs, path::PathBuf};

use prost::Message;
use prost_types::FileDescriptorSet;

const REGENERATE: &str = "ALLOT_BLESS=1 cargo test --test api_descriptor";

fn published_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto/allot.binpb")
}

#[test]
fn published_descriptor_set_is_current() {
    let built = allot::proto::FILE_DESCRIPTOR_SET;
    let path = published_path();
    let published = fs::read(&path).ok();

    if std::env::var_os("ALLOT_BLESS").is_some() {
        // Rewritten only when it differs: build.rs watches proto/, and a needless write would
        // rebuild the crate.
        if published.as_deref() != Some(built) {
            fs::write(&path, built).unwrap();
            eprintln!("wrote {} ({} bytes)", path.display(), built.len());
        }
        return;
    }

    match published {
        None => panic!(
            "{} is missing: generate it with `{REGENERATE}` and commit it",
            path.display()
        ),
        Some(published) => assert!(
            published == built,
            "{} ({} bytes) is not the descriptor set this build compiled from proto/ ({} bytes): \
             regenerate it with `{REGENERATE}` and commit it",
            path.display(),
            published.len(),
            built.len()
        ),
    }
}

/// What clients rely on in the set, whichever way it was produced: every file of the API, the
/// well-known types they import (a self-contained set), and the comments (source info).
#[test]
fn descriptor_set_is_self_contained_with_comments() {
    let set = FileDescriptorSet::decode(allot::proto::FILE_DESCRIPTOR_SET).unwrap();
    let names: BTreeSet<&str> = set.file.iter().map(|f| f.name()).collect();

    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto/allot/v1");
    for entry in fs::read_dir(&proto_dir).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if file.ends_with(".proto") {
            let name = format!("allot/v1/{file}");
            assert!(names.contains(name.as_str()), "{name} missing from the set");
        }
    }
    // Every import resolves inside the set, and precedes its importer (protoc's order, which
    // tools reading a protoset expect).
    let mut seen = BTreeSet::new();
    for file in &set.file {
        for dependency in &file.dependency {
            assert!(
                seen.contains(dependency.as_str()),
                "{} imports {dependency}, absent from the set before it",
                file.name()
            );
        }
        seen.insert(file.name());
    }
    assert!(names.contains("google/protobuf/timestamp.proto"));

    let ledger = set
        .file
        .iter()
        .find(|f| f.name() == "allot/v1/ledger.proto")
        .unwrap();
    let comments = ledger
        .source_code_info
        .as_ref()
        .expect("source info")
        .location
        .iter()
        .filter_map(|l| l.leading_comments.as_deref())
        .collect::<Vec<_>>();
    assert!(
        comments
            .iter()
            .any(|c| c.contains("The request path: debit wallets")),
        "the service comments are in the set"
    );
}

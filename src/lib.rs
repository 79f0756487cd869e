pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("allot.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("allot_descriptor");
}

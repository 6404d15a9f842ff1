//! Compiles `proto/ppo/v1/ppo.proto` with tonic/prost, using the vendored `protoc` unless `PROTOC` is set.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .bytes(".ppo.v1")
        .codec_path("crate::grpc_codec::ProtoCodec")
        .file_descriptor_set_path(out.join("ppo_v1_descriptor.bin"))
        .compile_protos(&["../proto/ppo/v1/ppo.proto"], &["../proto"])?;
    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}

//! Compiles the protocol definitions in `proto/` with `protox` (a pure-Rust protobuf compiler: no
//! system `protoc`) and `tonic-prost-build`: the go-plugin and OpenBao KMS plugin protocols into
//! `OUT_DIR`, the secrets-engine (backend) protocol into `OUT_DIR/backend` (its package `pb` is
//! also the KMS wrapper's, so each set gets its own directory).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/go_plugin.proto",
        "proto/wrapping_types.proto",
        "proto/kms_wrapper.proto",
        "proto/kms_metadata.proto",
    ];
    let backend_files = ["proto/backend.proto", "proto/plugin_version.proto"];
    for f in files.iter().chain(&backend_files) {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;

    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("backend");
    std::fs::create_dir_all(&out)?;
    let fds = protox::compile(backend_files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .emit_rerun_if_changed(false)
        .out_dir(out)
        .compile_fds(fds)?;
    Ok(())
}

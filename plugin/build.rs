//! Compiles the go-plugin and OpenBao KMS plugin protocol definitions in `proto/` with `protox`
//! (a pure-Rust protobuf compiler: no system `protoc`) and `tonic-prost-build`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/go_plugin.proto",
        "proto/wrapping_types.proto",
        "proto/kms_wrapper.proto",
        "proto/kms_metadata.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}

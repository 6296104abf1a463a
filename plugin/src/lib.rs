//! rootseal: a hardware-rooted key hierarchy for HashiCorp Vault and OpenBao.
//!
//! This crate is the `rootseal` binary's library: the HTTP face that speaks Vault's transit API
//! and the bulk-seal endpoints of [`rootseal_bulk`] (`routes/`), the OpenBao KMS plugin face
//! (`goplugin/`, `kms/`), the secrets-engine plugin face (`backend/`) and the CLI (`cli/`). All of them call [`rootseal_hsm::Keyring`].
//!
//! Modules are private; this list is the crate's public interface (what the binary, the
//! integration tests and the benchmarks use).
#![forbid(unsafe_code)]

mod audit;
mod backend;
mod cli;
mod goplugin;
mod kms;
mod routes;
mod scheduler;
mod server;
mod telemetry;

pub use cli::main;
pub use routes::{app, bulk_routes, try_app, ApiConfig, ApiConfigError, ApiError, AppState};
pub use scheduler::lifecycle_pass;
pub use server::{
    serve, serve_listener, serve_listener_with, tls_config, ConnLimits, ListenerConfig, TlsFiles,
    DEFAULT_HTTP2_MAX_STREAMS, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, HEADER_READ_TIMEOUT,
    UNREAD_BODY_LIMIT,
};

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
mod ratelimit;
mod routes;
mod scheduler;
mod server;
mod telemetry;

pub use cli::main;
pub use ratelimit::RateLimit;
pub use routes::{app, bulk_routes, try_app, ApiConfig, ApiConfigError, ApiError, AppState};
pub use scheduler::lifecycle_pass;
pub use server::{
    serve, serve_listener, serve_listener_with, tls_config, ConnLimits, ListenerConfig, TlsFiles,
    DEFAULT_HTTP2_MAX_STREAMS, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, HEADER_READ_TIMEOUT,
    UNREAD_BODY_LIMIT,
};

/// Entry points of `fuzz/` (cargo-fuzz): the parsers of untrusted bytes in this crate, the
/// transit ciphertext string and the transit JSON bodies as each route decodes them before any
/// HSM work. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::routes::{ciphertext, transit};

    /// Parses a `vault:v<N>:<base64>` string; what parses must format and parse back the same.
    pub fn ciphertext(raw: &[u8]) {
        let Ok(s) = std::str::from_utf8(raw) else {
            return;
        };
        if let Ok(sealed) = ciphertext::parse(s) {
            let again = ciphertext::parse(&ciphertext::format(&sealed));
            assert!(
                again.as_ref().is_ok_and(|a| a == &sealed),
                "a parsed ciphertext did not round-trip"
            );
        }
    }

    /// The transit routes whose bodies [`transit_body`] decodes, in its `route` order.
    pub const TRANSIT_ROUTES: usize = 14;

    /// Decodes `raw` as the body of transit route `route % TRANSIT_ROUTES`.
    pub fn transit_body(route: u8, raw: &[u8]) {
        match usize::from(route) % TRANSIT_ROUTES {
            0 => transit::encrypt::fuzz_body(raw),
            1 => transit::decrypt::fuzz_body(raw),
            2 => transit::verify::fuzz_body(raw),
            3 => transit::sign::fuzz_body(raw),
            4 => transit::hmac::fuzz_body(raw),
            5 => transit::datakey::fuzz_body(raw),
            6 => transit::keys::fuzz_body(raw),
            7 => transit::config::fuzz_body(raw),
            8 => transit::config_keys::fuzz_body(raw),
            9 => transit::cache_config::fuzz_body(raw),
            10 => transit::trim::fuzz_body(raw),
            11 => transit::import::fuzz_body(raw),
            12 => transit::random::fuzz_body(raw),
            _ => transit::hash::fuzz_body(raw),
        }
    }
}

//! Logging setup for the binary. Libraries only emit; this installs the subscriber.

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber writing to stderr. `ROOTSEAL_LOG` (or `RUST_LOG`) sets the
/// filter; the default is `info`.
pub fn init() {
    let filter = std::env::var("ROOTSEAL_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

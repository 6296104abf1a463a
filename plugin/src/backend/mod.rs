//! rootseal as a native OpenBao/Vault secrets-engine plugin (`bao secrets enable rootseal`).
//!
//! OpenBao starts the `rootseal` binary with the backend handshake (cookie
//! `VAULT_BACKEND_PLUGIN`, protocol version 5, AutoMTLS) and talks `pb.Backend` to it over
//! go-plugin ([`crate::goplugin`]). Each mount gets its own plugin process; its sealed KEK
//! records live in the mount's storage, which OpenBao's barrier encrypts and its storage
//! (raft) replicates. OpenBao authenticates every request, applies its ACL policies and writes
//! its audit devices before a request reaches the plugin.
//!
//! * [`service`]: the `Backend` service (Setup, HandleRequest, existence checks, …);
//! * [`paths`]: logical requests into the HTTP face's transit router and back (one
//!   implementation of the transit API for both faces);
//! * [`storage`]: the host's `Storage` service through the broker, and the [`storage::PluginKekStore`];
//! * [`hsm_config`]: the `config/hsm` path;
//! * [`deploy`]: `rootseal openbao secrets-config`.

pub mod deploy;
pub mod hsm_config;
pub mod paths;
pub mod service;
pub mod storage;

use std::process::ExitCode;
use std::sync::Arc;

pub use deploy::secrets_config_command;

/// Generated code for the secrets-engine protocol (`proto/backend.proto`,
/// `proto/plugin_version.proto`).
#[allow(missing_docs, dead_code, clippy::all, clippy::pedantic)]
pub mod proto {
    /// The `Backend` and `Storage` services (package `pb`).
    pub mod pb {
        include!(concat!(env!("OUT_DIR"), "/backend/pb.rs"));
    }
    /// The `PluginVersion` service (package `logical`).
    pub mod logical {
        include!(concat!(env!("OUT_DIR"), "/backend/logical.rs"));
    }
}

/// The go-plugin handshake of OpenBao/Vault backend plugins (openbao `sdk/plugin/serve.go`:
/// `HandshakeConfig`; OpenBao 2.7.2 offers protocol version 5, with AutoMTLS, to a plugin it
/// mounts).
pub const HANDSHAKE: crate::goplugin::HandshakeConfig = crate::goplugin::HandshakeConfig {
    cookie_key: "VAULT_BACKEND_PLUGIN",
    cookie_value: "6669da05-b1c8-4f49-97d9-c8e5bed98e20",
    app_protocol_version: 5,
    human_hint: "OpenBao starts it as a secrets-engine plugin. To deploy it, run\n  \
                 rootseal openbao secrets-config --plugin-dir DIR\n\
                 and run the printed bao plugin register and bao secrets enable commands.",
};

/// Whether the process was started with the backend handshake (OpenBao executes the plugin
/// binary without arguments; the cookie in the environment says what it is).
pub fn started_as_backend_plugin() -> bool {
    std::env::var_os(HANDSHAKE.cookie_key).is_some()
}

/// Run the secrets-engine plugin: what OpenBao executes. Logs go to stderr (OpenBao captures
/// them); stdout carries only the handshake line. Returns 1, after a message for a human, when
/// not started by OpenBao.
pub fn secrets_plugin_main() -> ExitCode {
    crate::goplugin::lifetime::plugin_main(
        "secrets-plugin",
        &HANDSHAKE,
        |env, lifetime| async move { run_secrets_plugin(env, &lifetime).await == ExitCode::SUCCESS },
    )
}

/// Serves the secrets plugin until `lifetime` says stop.
async fn run_secrets_plugin(
    env: crate::goplugin::PluginEnv,
    lifetime: &crate::goplugin::Lifetime,
) -> ExitCode {
    let identity = match crate::goplugin::tls::PluginIdentity::generate() {
        Ok(i) => Arc::new(i),
        Err(e) => {
            tracing::error!(error = %e, "secrets plugin: cannot make the AutoMTLS certificate");
            return ExitCode::from(1);
        }
    };
    let conns = crate::goplugin::broker::BrokerConns::new();
    let dialer = match crate::goplugin::broker::BrokerDialer::new(
        conns.clone(),
        &identity,
        env.host_cert.clone(),
    ) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "secrets plugin: TLS setup failed");
            return ExitCode::from(1);
        }
    };
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(
            proto::pb::backend_server::BackendServer::new(service::BackendService::new(dialer))
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .add_service(
            proto::logical::plugin_version_server::PluginVersionServer::new(
                service::VersionService,
            ),
        );
    let routes = routes.routes();
    match crate::goplugin::serve_with(env, identity, conns, routes, std::io::stdout(), lifetime)
        .await
    {
        Ok(reason) => {
            tracing::debug!(?reason, "secrets plugin stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "secrets plugin failed");
            ExitCode::from(1)
        }
    }
}

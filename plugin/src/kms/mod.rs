//! rootseal as a native OpenBao KMS (auto-unseal) plugin.
//!
//! OpenBao 2.6+ loads auto-unseal backends as external plugins over HashiCorp go-plugin
//! ([`crate::goplugin`]): cookie `OPENBAO_KMS_PLUGIN`, protocol version 1, services `pb.Wrapper`
//! and `metadata.Metadata`. This module provides those services on rootseal's hierarchy:
//! `Encrypt`/`Decrypt` use a dedicated L1 unseal KEK (default name `openbao-unseal`) with
//! AES-256-GCM inside the HSM; the KEK's sealed record lives in a local file store, because it
//! cannot live in the Vault it unseals.
//!
//! Entry points for the CLI: [`kms_plugin_main`] (what OpenBao executes:
//! `rootseal openbao kms-plugin`) and [`kms_config_command`] (`rootseal openbao kms-config`).

pub mod backend;
pub mod config;
pub mod deploy;
pub mod service;

use std::process::ExitCode;
use std::sync::Arc;

use crate::goplugin::Lifetime;

pub use deploy::kms_config_command;

/// Generated code for the OpenBao KMS plugin protocol (`proto/wrapping_types.proto`,
/// `proto/kms_wrapper.proto`, `proto/kms_metadata.proto`).
#[allow(missing_docs, dead_code, clippy::all, clippy::pedantic)]
pub mod proto {
    /// go-kms-wrapping shared types (package `wrapping`).
    pub mod wrapping {
        tonic::include_proto!("wrapping");
    }
    /// The `Wrapper` service (package `pb`).
    pub mod pb {
        tonic::include_proto!("pb");
    }
    /// The `Metadata` service (package `metadata`).
    pub mod metadata {
        tonic::include_proto!("metadata");
    }
}

/// The go-plugin handshake of OpenBao KMS plugins (`openbao/go-kms-wrapping/plugin/v2`).
pub const HANDSHAKE: crate::goplugin::HandshakeConfig = crate::goplugin::HandshakeConfig {
    cookie_key: "OPENBAO_KMS_PLUGIN",
    cookie_value: "39704a18-7da7-4bda-9a2d-f7c488d70328",
    app_protocol_version: 1,
    human_hint: "OpenBao starts it when its server config declares it. To deploy it, run\n  \
                 rootseal openbao kms-config --config rootseal.toml --plugin-dir DIR\n\
                 and append the printed stanzas to the OpenBao server config.",
};

/// The KMS plugin process: what OpenBao executes (`rootseal openbao kms-plugin`), from start to
/// exit. Call it from `main` before anything else starts a thread (the async runtime included):
/// it starts the process's [`Lifetime`] watcher first, so the plugin never outlives OpenBao
/// (`docs/kms-plugin.md`, "Process lifetime"). Logs go to stderr (OpenBao captures them); stdout
/// carries only the handshake line. Returns 1, after a message for a human, when not started by
/// OpenBao; once it has served, it ends the process itself (0 after a clean stop, 1 after a
/// failure or a forced exit) and does not return.
pub fn kms_plugin_main() -> ExitCode {
    kms_plugin_main_with(Arc::new(backend::KeyringOpener))
}

/// [`kms_plugin_main`] with another [`backend::Opener`].
pub fn kms_plugin_main_with(opener: Arc<dyn backend::Opener>) -> ExitCode {
    crate::goplugin::lifetime::plugin_main("kms-plugin", &HANDSHAKE, |env, lifetime| async move {
        serve_kms(env, opener, &lifetime).await
    })
}

/// Serves the `Wrapper` and `Metadata` services until `lifetime` says stop. Whether it ended
/// without an error.
pub async fn serve_kms(
    env: crate::goplugin::PluginEnv,
    opener: Arc<dyn backend::Opener>,
    lifetime: &Lifetime,
) -> bool {
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(proto::pb::wrapper_server::WrapperServer::new(
            service::WrapperService::new(opener),
        ))
        .add_service(proto::metadata::metadata_server::MetadataServer::new(
            service::MetadataService,
        ));
    let routes = routes.routes();
    match crate::goplugin::serve(env, routes, std::io::stdout(), lifetime).await {
        Ok(reason) => {
            tracing::debug!(?reason, "KMS plugin stopped");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "KMS plugin failed");
            false
        }
    }
}

#[cfg(test)]
mod tests;

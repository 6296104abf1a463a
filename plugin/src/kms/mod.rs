//! rootseal as a native OpenBao KMS (auto-unseal) plugin.
//!
//! OpenBao 2.6+ loads auto-unseal backends as external plugins over HashiCorp go-plugin
//! ([`crate::goplugin`]): cookie `OPENBAO_KMS_PLUGIN`, protocol version 1, services `pb.Wrapper`
//! and `metadata.Metadata`. This module provides those services on rootseal's hierarchy:
//! `Encrypt`/`Decrypt` use a dedicated L1 unseal KEK (default name `openbao-unseal`) with
//! AES-256-GCM inside the HSM; the KEK's sealed record lives in a local file store, because it
//! cannot live in the Vault it unseals.
//!
//! Entry points for the CLI: [`run_kms_plugin`] (what OpenBao executes:
//! `rootseal openbao kms-plugin`) and [`kms_config_command`] (`rootseal openbao kms-config`).

pub mod backend;
pub mod config;
pub mod deploy;
pub mod service;

use std::process::ExitCode;
use std::sync::Arc;

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

/// Run the KMS plugin: what OpenBao executes (`rootseal openbao kms-plugin`). Logs go to stderr
/// (OpenBao captures them); stdout carries only the handshake line. Returns 1, after a message for
/// a human, when not started by OpenBao.
pub async fn run_kms_plugin() -> ExitCode {
    run_kms_plugin_with(Arc::new(backend::KeyringOpener)).await
}

/// [`run_kms_plugin`] with another [`backend::Opener`] (tests).
pub async fn run_kms_plugin_with(opener: Arc<dyn backend::Opener>) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROOTSEAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let env = match crate::goplugin::PluginEnv::from_env(&HANDSHAKE, |k| std::env::var(k).ok()) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("rootseal openbao kms-plugin: {e}");
            return ExitCode::from(1);
        }
    };
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(proto::pb::wrapper_server::WrapperServer::new(
            service::WrapperService::new(opener),
        ))
        .add_service(proto::metadata::metadata_server::MetadataServer::new(
            service::MetadataService,
        ));
    let routes = routes.routes();
    match crate::goplugin::serve(env, routes, std::io::stdout()).await {
        Ok(reason) => {
            tracing::debug!(?reason, "KMS plugin stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "KMS plugin failed");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests;

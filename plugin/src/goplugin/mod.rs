//! A HashiCorp go-plugin server (gRPC flavour) for the `rootseal` binary.
//!
//! go-plugin is the protocol OpenBao uses to run external plugins: the host executes the plugin
//! binary with a few environment variables, reads one *handshake line* from its stdout, and then
//! talks gRPC to it over a unix socket with mutual TLS ("AutoMTLS"). This module implements the
//! plugin side of that protocol, independently of what the plugin does:
//!
//! * [`PluginEnv::from_env`] checks the magic cookie and the offered protocol versions, and reads
//!   the host's certificate (`PLUGIN_CLIENT_CERT`);
//! * [`serve`] generates the plugin's certificate, listens on a unix socket in a private temporary
//!   directory, prints the handshake line, and serves the caller's gRPC services plus the ones
//!   go-plugin requires: `grpc.health.v1.Health` (service `plugin` SERVING),
//!   `plugin.GRPCController/Shutdown`, `plugin.GRPCStdio/StreamStdio` and
//!   `plugin.GRPCBroker/StartStream`;
//! * the server stops on `Shutdown`, on SIGTERM, or as soon as the host goes away: a plugin never
//!   outlives its host ([`lifetime`]: parent-death signal, the host's pipe, a watcher thread and
//!   a hard deadline). SIGINT is ignored, as go-plugin plugins do: a Ctrl-C in the host's
//!   terminal reaches the whole process group, and the host decides when we stop.

pub mod broker;
pub mod lifetime;
pub mod tls;

use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt as _;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

pub use lifetime::Lifetime;

/// Generated code for go-plugin's internal services (`proto/go_plugin.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("plugin");
}

/// go-plugin's core protocol version (the first handshake field). Always 1.
pub const CORE_PROTOCOL_VERSION: u32 = 1;

/// What identifies one kind of plugin to its host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// Name of the magic cookie environment variable.
    pub cookie_key: &'static str,
    /// Its expected value.
    pub cookie_value: &'static str,
    /// The application protocol version this plugin speaks.
    pub app_protocol_version: u32,
    /// How a human should use this binary instead (printed when the cookie is missing).
    pub human_hint: &'static str,
}

/// Why the process cannot act as a plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The magic cookie is absent or wrong: a human ran us, or the wrong host did.
    #[error(
        "this command is a plugin that its host starts by itself; it cannot be run directly \
         (the environment variable {key} is missing or has the wrong value).\n{hint}"
    )]
    NotStartedByHost {
        /// The cookie variable.
        key: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// The host offers no protocol version we speak.
    #[error("the plugin host offers protocol versions {offered:?}, this plugin speaks only version {ours}")]
    NoCommonVersion {
        /// `PLUGIN_PROTOCOL_VERSIONS` as given.
        offered: String,
        /// Ours.
        ours: u32,
    },
    /// AutoMTLS is off (`PLUGIN_CLIENT_CERT` unset). rootseal refuses plaintext gRPC.
    #[error("the plugin host did not enable AutoMTLS (PLUGIN_CLIENT_CERT is not set); refusing to serve without TLS")]
    NoAutoMtls,
    /// `PLUGIN_CLIENT_CERT` is not a PEM certificate.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// What the host told us through the environment.
#[derive(Clone, Debug)]
pub struct PluginEnv {
    /// The host's certificate (AutoMTLS): the only client certificate accepted.
    pub host_cert: CertificateDer<'static>,
    /// The app protocol version negotiated.
    pub app_protocol_version: u32,
    /// Whether `PLUGIN_MULTIPLEX_GRPC` was set (then a 7th handshake field is required).
    pub multiplex_requested: bool,
    /// Where to create the socket's directory (`PLUGIN_UNIX_SOCKET_DIR`, else the temp dir).
    pub socket_dir: Option<PathBuf>,
}

impl PluginEnv {
    /// Validate the environment the host set. `lookup` is `std::env::var` in production.
    pub fn from_env(
        cfg: &HandshakeConfig,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, HandshakeError> {
        let cookie_ok = lookup(cfg.cookie_key).is_some_and(|v| {
            subtle::ConstantTimeEq::ct_eq(v.as_bytes(), cfg.cookie_value.as_bytes()).into()
        });
        if !cookie_ok {
            return Err(HandshakeError::NotStartedByHost {
                key: cfg.cookie_key,
                hint: cfg.human_hint,
            });
        }
        // go-plugin: PLUGIN_PROTOCOL_VERSIONS is a comma-separated list; when absent the host is
        // old and expects the plugin's default version.
        if let Some(offered) = lookup("PLUGIN_PROTOCOL_VERSIONS") {
            let ours = cfg.app_protocol_version;
            let ok = offered
                .split(',')
                .any(|v| v.trim().parse::<u32>().ok() == Some(ours));
            if !ok {
                return Err(HandshakeError::NoCommonVersion { offered, ours });
            }
        }
        let pem = lookup("PLUGIN_CLIENT_CERT")
            .filter(|s| !s.trim().is_empty())
            .ok_or(HandshakeError::NoAutoMtls)?;
        let host_cert = tls::parse_host_cert(&pem)?;
        Ok(Self {
            host_cert,
            app_protocol_version: cfg.app_protocol_version,
            multiplex_requested: lookup("PLUGIN_MULTIPLEX_GRPC").is_some_and(|v| !v.is_empty()),
            socket_dir: lookup("PLUGIN_UNIX_SOCKET_DIR")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        })
    }
}

/// Errors while serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Socket or stdout I/O failed.
    #[error("plugin I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server error: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Why the server stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The host called `GRPCController/Shutdown`.
    Shutdown,
    /// The parent process went away (we were re-parented).
    ParentGone,
    /// The host closed its end of our stdout: it is gone, whoever our parent is now.
    HostHungUp,
    /// SIGTERM.
    Terminated,
    /// Serving failed by itself (the handshake line could not be written, the server broke).
    Failed,
}

/// The handshake line go-plugin's host parses:
/// `CORE|APP|unix|ADDR|grpc|CERT[|MULTIPLEX]`, CERT being base64 (standard alphabet, no padding)
/// of the DER certificate.
pub fn handshake_line(env: &PluginEnv, socket: &std::path::Path, cert: &[u8]) -> String {
    let cert = base64::engine::general_purpose::STANDARD_NO_PAD.encode(cert);
    let mut line = format!(
        "{CORE_PROTOCOL_VERSION}|{}|unix|{}|grpc|{cert}",
        env.app_protocol_version,
        socket.display()
    );
    if env.multiplex_requested {
        // We do not multiplex: one process per plugin client.
        line.push_str("|false");
    }
    line.push('\n');
    line
}

/// Serve `routes` (the plugin's own gRPC services) as a go-plugin plugin until `lifetime` says
/// stop (the host's `Shutdown`, which this server turns into [`Lifetime::stop`], SIGTERM, the
/// host gone). The handshake line is written to `handshake_out` (stdout in production) once the
/// socket listens. After the stop, in-flight calls get [`lifetime::GRACE`] to finish.
pub async fn serve(
    env: PluginEnv,
    routes: tonic::service::Routes,
    handshake_out: impl Write + Send,
    lifetime: &Lifetime,
) -> Result<StopReason, ServeError> {
    let identity = Arc::new(tls::PluginIdentity::generate()?);
    serve_with(
        env,
        identity,
        broker::BrokerConns::new(),
        routes,
        handshake_out,
        lifetime,
    )
    .await
}

/// [`serve`] as `identity` (the AutoMTLS certificate announced in the handshake line), recording
/// the host's broker announcements in `conns`: for a plugin that dials back to services the host
/// serves through the broker ([`broker::BrokerDialer`], the secrets-engine plugin's storage).
pub async fn serve_with(
    env: PluginEnv,
    identity: Arc<tls::PluginIdentity>,
    conns: broker::BrokerConns,
    routes: tonic::service::Routes,
    mut handshake_out: impl Write + Send,
    lifetime: &Lifetime,
) -> Result<StopReason, ServeError> {
    let tls_cfg = Arc::new(tls::server_config(&identity, env.host_cert.clone())?);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_cfg);

    // A private directory (0700) for the socket; removed when `dir` drops.
    let mut builder = tempfile::Builder::new();
    builder.prefix("rootseal-plugin-");
    let dir = match &env.socket_dir {
        Some(base) => builder.tempdir_in(base)?,
        None => builder.tempdir()?,
    };
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    }
    let socket = dir.path().join("plugin.sock");
    let listener = UnixListener::bind(&socket)?;

    let stop_rx = lifetime.subscribe();

    // Connections: accept, TLS-handshake (bounded in time), hand to tonic.
    let (conn_tx, conn_rx) = tokio::sync::mpsc::channel::<Result<TlsConn, std::io::Error>>(16);
    let accept_task = tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "plugin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let conn_tx = conn_tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = conn_tx.send(Ok(TlsConn(Box::new(tls)))).await;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "plugin TLS handshake failed"),
                    Err(_) => tracing::warn!("plugin TLS handshake timed out"),
                }
            });
        }
    });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("plugin", tonic_health::ServingStatus::Serving)
        .await;

    let controller = proto::grpc_controller_server::GrpcControllerServer::new(Controller {
        lifetime: lifetime.clone(),
    });
    let stdio = proto::grpc_stdio_server::GrpcStdioServer::new(Stdio {
        stop: stop_rx.clone(),
    });
    let broker = proto::grpc_broker_server::GrpcBrokerServer::new(Broker {
        stop: stop_rx.clone(),
        conns,
    });

    // Tell the host where we are only once everything is ready.
    let line = handshake_line(&env, &socket, identity.cert.as_ref());
    handshake_out.write_all(line.as_bytes())?;
    handshake_out.flush()?;
    tracing::debug!(socket = %socket.display(), "plugin serving");

    let shutdown_lt = lifetime.clone();
    let incoming = tokio_stream::wrappers::ReceiverStream::new(conn_rx);
    let server = tonic::transport::Server::builder()
        .add_routes(routes)
        .add_service(health_service)
        .add_service(controller)
        .add_service(stdio)
        .add_service(broker)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown_lt.stopped().await;
        });
    tokio::pin!(server);

    let result = tokio::select! {
        r = &mut server => r.map_err(ServeError::from),
        _ = lifetime.stopped() => {
            // Give in-flight calls (the Shutdown reply itself) a moment, then go.
            match tokio::time::timeout(lifetime::GRACE, &mut server).await {
                Ok(r) => r.map_err(ServeError::from),
                Err(_) => Ok(()),
            }
        }
    };
    accept_task.abort();
    drop(dir);
    let reason = lifetime.reason().unwrap_or(StopReason::Shutdown);
    result.map(|()| reason)
}

/// A TLS connection over the unix socket, as tonic wants it.
struct TlsConn(Box<tokio_rustls::server::TlsStream<UnixStream>>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

type BoxStream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, tonic::Status>> + Send>>;

/// A stream that stays open (yields nothing) until the server stops.
fn open_until_stop<T: Send + 'static>(
    mut stop: watch::Receiver<Option<StopReason>>,
) -> BoxStream<T> {
    Box::pin(
        futures_util::stream::once(async move {
            let _ = stop.wait_for(|r| r.is_some()).await;
        })
        .filter_map(|()| async { None }),
    )
}

struct Controller {
    lifetime: Lifetime,
}

#[tonic::async_trait]
impl proto::grpc_controller_server::GrpcController for Controller {
    async fn shutdown(
        &self,
        _req: tonic::Request<proto::Empty>,
    ) -> Result<tonic::Response<proto::Empty>, tonic::Status> {
        self.lifetime.stop(StopReason::Shutdown);
        Ok(tonic::Response::new(proto::Empty {}))
    }
}

struct Stdio {
    stop: watch::Receiver<Option<StopReason>>,
}

#[tonic::async_trait]
impl proto::grpc_stdio_server::GrpcStdio for Stdio {
    type StreamStdioStream = BoxStream<proto::StdioData>;

    async fn stream_stdio(
        &self,
        _req: tonic::Request<()>,
    ) -> Result<tonic::Response<Self::StreamStdioStream>, tonic::Status> {
        // Our logs go to stderr, which the host reads directly; nothing is mirrored here.
        Ok(tonic::Response::new(open_until_stop(self.stop.clone())))
    }
}

struct Broker {
    stop: watch::Receiver<Option<StopReason>>,
    conns: broker::BrokerConns,
}

#[tonic::async_trait]
impl proto::grpc_broker_server::GrpcBroker for Broker {
    type StartStreamStream = BoxStream<proto::ConnInfo>;

    async fn start_stream(
        &self,
        req: tonic::Request<tonic::Streaming<proto::ConnInfo>>,
    ) -> Result<tonic::Response<Self::StartStreamStream>, tonic::Status> {
        let mut inbound = req.into_inner();
        let conns = self.conns.clone();
        tokio::spawn(async move {
            // Announcements of host-side services, kept for a plugin that dials them (the KMS
            // protocol uses none).
            while let Some(msg) = inbound.next().await {
                match msg {
                    Ok(info) => {
                        tracing::debug!(service_id = info.service_id, "broker announcement");
                        conns.record(info);
                    }
                    Err(_) => break,
                }
            }
        });
        Ok(tonic::Response::new(open_until_stop(self.stop.clone())))
    }
}

#[cfg(test)]
mod tests;

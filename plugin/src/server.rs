//! The HTTP listener: plain TCP, or TLS (optionally mTLS) through tokio-rustls with the aws-lc-rs
//! provider; HTTP/1.1 with keep-alive and HTTP/2 (ALPN over TLS); graceful shutdown.
//!
//! ```ignore
//! let router = rootseal::routes::app(keyring, token, ApiConfig::default());
//! let cfg = ListenerConfig { addr: "127.0.0.1:8200".parse()?, tls: None };
//! rootseal::server::serve(cfg, router, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP/1 client must send a request's whole header within this time, or the connection is
/// closed (a slow client cannot hold connections open; Vault's `http_read_header_timeout`
/// default is the same 10 s).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// A request body the handler left unread is read and discarded up to this many bytes ...
pub const UNREAD_BODY_LIMIT: usize = 64 << 20;
/// ... or for this long, whichever comes first.
const UNREAD_BODY_TIME: Duration = Duration::from_secs(10);

/// TLS files (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate issued by one of these CAs (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Where and how to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The address to bind.
    pub addr: SocketAddr,
    /// TLS; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// Wraps each request body in [`UnreadBody`].
async fn read_unread_bodies(req: axum::extract::Request) -> axum::extract::Request {
    req.map(|b| axum::body::Body::new(UnreadBody { inner: Some(b) }))
}

/// A request body that, when dropped before its end, is read to its end and discarded on a task
/// of its own (up to [`UNREAD_BODY_LIMIT`] bytes or 10 s).
///
/// Why: a handler may answer before it read the whole body (a refused token, a bad stream
/// header, a bulk unseal whose batch key does not open). Closing the connection then would
/// reset it under a client still sending, and that client would see "broken pipe" instead of
/// the answer. Reading the rest lets it finish sending and read the answer. Go's `net/http`
/// does the same, with a smaller limit (256 KiB).
struct UnreadBody {
    inner: Option<axum::body::Body>,
}

impl hyper::body::Body for UnreadBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.inner.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner
            .as_ref()
            .map(hyper::body::Body::size_hint)
            .unwrap_or_default()
    }
}

impl Drop for UnreadBody {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else {
            return;
        };
        if hyper::body::Body::is_end_stream(&body) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            use http_body_util::BodyExt as _;
            let deadline = tokio::time::Instant::now() + UNREAD_BODY_TIME;
            let mut read = 0usize;
            while read <= UNREAD_BODY_LIMIT {
                match tokio::time::timeout_at(deadline, body.frame()).await {
                    Ok(Some(Ok(f))) => read += f.data_ref().map_or(0, bytes::Bytes::len),
                    _ => break,
                }
            }
        });
    }
}

fn io_err(context: String, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{context}: {e}"))
}

fn read_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            io_err(
                format!("cannot read certificates from {}", path.display()),
                e,
            )
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io_err(format!("invalid PEM in {}", path.display()), e))?;
    if certs.is_empty() {
        return Err(io_err(
            format!("no certificate in {}", path.display()),
            "expected at least one CERTIFICATE block",
        ));
    }
    Ok(certs)
}

/// Builds the rustls server configuration (aws-lc-rs provider, TLS 1.2 and 1.3, ALPN `h2` and
/// `http/1.1`, client certificates required when `client_ca` is set).
///
/// # Errors
/// Unreadable or invalid files, a key that does not match the certificate.
pub fn tls_config(files: &TlsFiles) -> io::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = read_certs(&files.cert)?;
    // The key file's path is named in errors; its content never is.
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        io_err(
            format!("cannot read a private key from {}", files.key.display()),
            e,
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| io_err("TLS configuration".into(), e))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| {
                    io_err(format!("invalid CA certificate in {}", ca.display()), e)
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| io_err("client certificate verifier".into(), e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| io_err(format!("certificate {} and key", files.cert.display()), e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Binds `cfg.addr` and serves `router` until `shutdown` completes, then stops accepting, lets
/// open requests finish (up to 30 s) and returns.
///
/// # Errors
/// Binding fails (the message names the address), or the TLS files are unusable.
pub async fn serve(
    cfg: ListenerConfig,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let tls = cfg.tls.as_ref().map(tls_config).transpose()?;
    let listener = TcpListener::bind(cfg.addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", cfg.addr)))?;
    serve_listener(listener, tls, router, shutdown).await
}

/// Serves `router` on an already bound listener (tests bind port 0), with TLS when `tls` is set.
/// Returns after `shutdown` completes and open connections drained.
///
/// # Errors
/// None today (accept errors are logged and retried); the `Result` leaves room for them.
pub async fn serve_listener(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let router = router.layer(axum::middleware::map_request(read_unread_bodies));
    tracing::info!(addr = %local, tls = tls.is_some(), "listening");
    let acceptor = tls.map(TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        // The client's address, for the audit log (`ConnectInfo`, as axum's own serve does).
        let svc = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        ));
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            match acceptor {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    drive(conn, &mut stop, peer).await;
                }
                Some(acc) => {
                    let tls =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acc.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                    drive(conn, &mut stop, peer).await;
                }
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining connections");
    let _ = stop_tx.send(true);
    drop(stop_rx);
    if tokio::time::timeout(DRAIN_TIMEOUT, stop_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing");
    }
    Ok(())
}

/// Runs one connection; on shutdown, finishes the request in flight and closes.
async fn drive<C>(conn: C, stop: &mut watch::Receiver<bool>, peer: SocketAddr)
where
    C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + GracefulConn,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
    }
}

/// A connection that can be asked to finish gracefully.
trait GracefulConn {
    fn graceful(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E> GracefulConn for auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: hyper::body::Body + Send + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

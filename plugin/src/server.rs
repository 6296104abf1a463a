//! The HTTP listener: plain TCP, or TLS (optionally mTLS) through tokio-rustls with the aws-lc-rs
//! provider; HTTP/1.1 with keep-alive and HTTP/2 (ALPN over TLS); graceful shutdown.
//!
//! Every connection is bounded ([`ConnLimits`]): at most `max_connections` at once (beyond it a
//! new connection is closed at once, never queued); a connection that has not sent a request
//! within the header-read timeout (nothing at all, half a header, only the HTTP/2 preface) is
//! closed; one with no request in flight for the idle timeout is closed (HTTP/2: GOAWAY first);
//! HTTP/2 connections have a stream limit and keep-alive pings that close dead peers. Requests
//! without a token are held to a per-client rate ([`crate::ratelimit`]) before they reach the
//! router.
//!
//! ```ignore
//! let router = rootseal::app(keyring, token, ApiConfig::default());
//! let cfg = ListenerConfig { addr: "127.0.0.1:8200".parse()?, tls: None, limits: ConnLimits::default() };
//! rootseal::serve(cfg, router, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::ratelimit::{self, Limiter, RateLimit};

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
    /// The bounds of every connection.
    pub limits: ConnLimits,
}

/// Default for [`ConnLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default for [`ConnLimits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`ConnLimits::http2_max_concurrent_streams`] (Go's `net/http` default, which
/// Vault's listener uses).
pub const DEFAULT_HTTP2_MAX_STREAMS: u32 = 250;
/// How often an HTTP/2 connection is pinged, and how long a ping may go unanswered.
const HTTP2_PING: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(10));
/// How long a connection asked to close (idle, shutdown) may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The bounds of every connection (`[listener]` in rootseal.toml; docs/config-reference.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections served at once (`max_connections`); one more is closed at once.
    pub max_connections: usize,
    /// A connection must send a whole request header within this time of opening, and an
    /// HTTP/1 request header must arrive within it (`http_read_header_timeout`, Vault's name).
    pub read_header_timeout: Duration,
    /// A connection with no request in flight for this long is closed (`http_idle_timeout`).
    pub idle_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection (`http2_max_concurrent_streams`).
    pub http2_max_concurrent_streams: u32,
    /// The per-client rate of requests without a token (`unauthenticated_rate`,
    /// `unauthenticated_burst`; [`crate::ratelimit`]).
    pub unauthenticated: RateLimit,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            read_header_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_STREAMS,
            unauthenticated: RateLimit::default(),
        }
    }
}

/// What a connection is doing, for its idle watchdog: requests in flight (until their response
/// body is done) and when the last one ended.
struct Activity {
    opened: Instant,
    inflight: AtomicUsize,
    /// Milliseconds after `opened` when the last request ended; `u64::MAX` before the first.
    last_end_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            inflight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(u64::MAX),
        })
    }

    /// Whether the connection has been without a request for longer than its limit.
    fn expired(&self, limits: &ConnLimits) -> bool {
        if self.inflight.load(Ordering::Acquire) > 0 {
            return false;
        }
        let now = self.opened.elapsed();
        match self.last_end_ms.load(Ordering::Acquire) {
            u64::MAX => now > limits.read_header_timeout,
            ms => now.saturating_sub(Duration::from_millis(ms)) > limits.idle_timeout,
        }
    }
}

/// Counts a request in flight until its response body is dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> Self {
        a.inflight.fetch_add(1, Ordering::AcqRel);
        Self(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.0.last_end_ms.store(ms, Ordering::Release);
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted in flight until it is sent.
struct CountedBody {
    inner: axum::body::Body,
    _inflight: InFlight,
}

impl hyper::body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
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
    serve_listener_with(listener, tls, cfg.limits, router, shutdown).await
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
    serve_listener_with(listener, tls, ConnLimits::default(), router, shutdown).await
}

/// [`serve_listener`] with explicit connection bounds.
///
/// # Errors
/// None today (accept errors are logged and retried); the `Result` leaves room for them.
pub async fn serve_listener_with(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    limits: ConnLimits,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let limiter = Limiter::new(limits.unauthenticated).map(Arc::new);
    let router = router.layer(axum::middleware::map_request(read_unread_bodies));
    tracing::info!(addr = %local, tls = tls.is_some(), "listening");
    let acceptor = tls.map(TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .keep_alive_interval(HTTP2_PING.0)
        .keep_alive_timeout(HTTP2_PING.1);
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
        // Beyond the cap, close at once: a queued connection would hold a descriptor anyway.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max = limits.max_connections, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let activity = Activity::new();
        // The client's address travels with each request (`ConnectInfo`, as axum's own serve
        // does), for the audit log.
        let svc = Counted {
            router: router.clone(),
            activity: activity.clone(),
            peer,
            limiter: limiter.clone(),
        };
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    drive(conn, &mut stop, peer, &activity, &limits).await;
                }
                Some(acc) => {
                    let handshake = HANDSHAKE_TIMEOUT.min(limits.read_header_timeout);
                    let tls = match tokio::time::timeout(handshake, acc.accept(stream)).await {
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
                    drive(conn, &mut stop, peer, &activity, &limits).await;
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

/// The router as a hyper service whose requests count in `activity` until their response body
/// is sent.
#[derive(Clone)]
struct Counted {
    router: Router,
    activity: Arc<Activity>,
    peer: SocketAddr,
    /// The rate limit of requests without a token; `None` when it is off.
    limiter: Option<Arc<Limiter>>,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Counted {
    type Response = http::Response<CountedBody>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let guard = InFlight::new(&self.activity);
        let tokenless = !ratelimit::has_token(req.headers());
        let limiter = self.limiter.clone();
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let router = self.router.clone();
        let peer = self.peer;
        Box::pin(async move {
            // Requests without a token wait for their turn before they are served; a request
            // whose token is refused (403) takes its turn after the fact, so adding any
            // `X-Vault-Token` does not lift the limit.
            let mut resp = match &limiter {
                Some(l) if tokenless => match l.wait_turn(peer.ip()).await {
                    Ok(()) => router.oneshot(req).await?,
                    Err(retry) => ratelimit::refusal(retry, peer),
                },
                _ => router.oneshot(req).await?,
            };
            if let Some(l) =
                limiter.filter(|_| !tokenless && resp.status() == http::StatusCode::FORBIDDEN)
            {
                if let Err(retry) = l.wait_turn(peer.ip()).await {
                    resp = ratelimit::refusal(retry, peer);
                }
            }
            Ok(resp.map(|inner| CountedBody {
                inner,
                _inflight: guard,
            }))
        })
    }
}

/// Runs one connection. It is asked to close (HTTP/2: GOAWAY; HTTP/1: after the request in
/// flight) on shutdown or when it has been without a request for its limit, and dropped if it
/// has not closed [`CLOSE_GRACE`] later (idle) or at the drain timeout (shutdown).
async fn drive<C>(
    conn: C,
    stop: &mut watch::Receiver<bool>,
    peer: SocketAddr,
    activity: &Activity,
    limits: &ConnLimits,
) where
    C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + GracefulConn,
{
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle = loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed() => break false,
            _ = tick.tick() => {
                if activity.expired(limits) {
                    break true;
                }
            }
        }
    };
    conn.as_mut().graceful();
    if idle {
        tracing::debug!(%peer, "closing an idle connection");
        match tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await {
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
            Ok(Ok(())) => {}
            Err(_) => tracing::debug!(%peer, "idle connection dropped"),
        }
    } else if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
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

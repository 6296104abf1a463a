//! The plugin side of go-plugin's gRPC broker: the connection details the host sends on the
//! `GRPCBroker/StartStream` stream ([`BrokerConns`]), and dialing one of them with AutoMTLS
//! ([`BrokerDialer`]), the way a Go plugin's `GRPCBroker.Dial(id)` does.
//!
//! A secrets-engine host (OpenBao) serves `Storage` and `SystemView` for a backend on a broker
//! connection whose id it passes in `Backend/Setup`: it opens a listener, announces
//! `ConnInfo{service_id, network, address}` on the stream, then calls `Setup`. The plugin waits
//! for the announcement (go-plugin allows 5 s), dials the address presenting its own AutoMTLS
//! certificate, and accepts only the host's certificate as the server's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::sync::Notify;

use super::proto::ConnInfo;
use super::tls::{self, PluginIdentity};

/// How many announcements are kept (the host sends one per backend `Setup`); older ones are
/// dropped first.
const KEPT: usize = 64;

/// How long go-plugin waits for a broker announcement.
pub const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection details the host announced on the broker stream, by service id. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct BrokerConns {
    inner: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    seen: Mutex<VecDeque<ConnInfo>>,
    changed: Notify,
}

impl BrokerConns {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an announcement (the broker service calls this for each `ConnInfo` it receives).
    pub fn record(&self, info: ConnInfo) {
        {
            let mut seen = self.inner.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.retain(|c| c.service_id != info.service_id);
            if seen.len() >= KEPT {
                seen.pop_front();
            }
            seen.push_back(info);
        }
        self.inner.changed.notify_waiters();
    }

    fn find(&self, id: u32) -> Option<ConnInfo> {
        self.inner
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|c| c.service_id == id)
            .cloned()
    }

    /// The announcement for `id`, waiting up to `timeout` for it to arrive.
    pub async fn wait(&self, id: u32, timeout: Duration) -> Option<ConnInfo> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(c) = self.find(id) {
                return Some(c);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.find(id);
            }
        }
    }
}

/// Why a broker connection could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The host never announced the service id.
    #[error("the plugin host did not announce broker connection {0} within 5 s")]
    NotAnnounced(u32),
    /// The announcement names a network we do not dial.
    #[error("broker connection {id}: unsupported network {network:?}")]
    Network {
        /// The service id.
        id: u32,
        /// The network announced.
        network: String,
    },
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The connection failed.
    #[error("broker connection {id}: {source}")]
    Connect {
        /// The service id.
        id: u32,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Dials broker connections: presents the plugin's AutoMTLS certificate and pins the host's.
#[derive(Clone)]
pub struct BrokerDialer {
    conns: BrokerConns,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for BrokerDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerDialer").finish_non_exhaustive()
    }
}

impl BrokerDialer {
    /// A dialer over the announcements in `conns`, as `identity` (the certificate the handshake
    /// line announced), trusting only `host_cert`.
    ///
    /// # Errors
    /// [`BrokerError::Tls`] when rustls refuses the configuration.
    pub fn new(
        conns: BrokerConns,
        identity: &PluginIdentity,
        host_cert: CertificateDer<'static>,
    ) -> Result<Self, BrokerError> {
        let cfg = tls::client_config(identity, host_cert)?;
        Ok(Self {
            conns,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
        })
    }

    /// A gRPC channel to broker connection `id` (waits for its announcement; reconnects on use
    /// after a failure).
    ///
    /// # Errors
    /// [`BrokerError`].
    pub async fn dial(&self, id: u32) -> Result<tonic::transport::Channel, BrokerError> {
        let info = self
            .conns
            .wait(id, ANNOUNCE_TIMEOUT)
            .await
            .ok_or(BrokerError::NotAnnounced(id))?;
        let network = info.network.clone();
        if network != "unix" && network != "tcp" {
            return Err(BrokerError::Network { id, network });
        }
        let address = info.address.clone();
        let tls = self.tls.clone();
        let connector = tower::service_fn(move |_: http::Uri| {
            let (network, address, tls) = (network.clone(), address.clone(), tls.clone());
            async move {
                let name = ServerName::try_from("localhost")
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let io: Box<dyn Io> = if network == "unix" {
                    let s = tokio::net::UnixStream::connect(&address).await?;
                    Box::new(tls.connect(name, s).await?)
                } else {
                    let s = tokio::net::TcpStream::connect(&address).await?;
                    s.set_nodelay(true)?;
                    Box::new(tls.connect(name, s).await?)
                };
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(io))
            }
        });
        tonic::transport::Endpoint::from_static("http://localhost")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(connector)
            .await
            .map_err(|source| BrokerError::Connect { id, source })
    }
}

/// A connected TLS stream (over unix or TCP).
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u32) -> ConnInfo {
        ConnInfo {
            service_id: id,
            network: "unix".into(),
            address: format!("/tmp/{id}"),
            knock: None,
        }
    }

    #[tokio::test]
    async fn waits_for_an_announcement() {
        let conns = BrokerConns::new();
        assert!(conns.wait(1, Duration::from_millis(20)).await.is_none());
        let c2 = conns.clone();
        let t = tokio::spawn(async move { c2.wait(2, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        conns.record(info(1));
        conns.record(info(2));
        let got = t.await.unwrap_or_default();
        assert_eq!(got.map(|c| c.address), Some("/tmp/2".to_owned()));
    }

    #[test]
    fn keeps_a_bounded_number() {
        let conns = BrokerConns::new();
        for i in 0..(KEPT as u32 + 10) {
            conns.record(info(i));
        }
        assert!(conns.find(0).is_none());
        assert!(conns.find(KEPT as u32 + 9).is_some());
    }
}

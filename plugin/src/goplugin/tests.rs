//! Tests of the go-plugin core: environment checks, and a full handshake with AutoMTLS over the
//! unix socket, the way OpenBao's go-plugin client does it.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, ServerName};

use super::*;

const CFG: HandshakeConfig = HandshakeConfig {
    cookie_key: "TEST_PLUGIN_COOKIE",
    cookie_value: "39704a18-test",
    app_protocol_version: 1,
    human_hint: "run the host instead",
};

fn pem(cert: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn env_of(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    move |k| m.get(k).cloned()
}

#[test]
fn missing_or_wrong_cookie_is_a_clear_human_error() {
    let err = PluginEnv::from_env(&CFG, env_of(&[])).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, HandshakeError::NotStartedByHost { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("TEST_PLUGIN_COOKIE") && msg.contains("run the host instead"),
        "{msg}"
    );
    let err =
        PluginEnv::from_env(&CFG, env_of(&[("TEST_PLUGIN_COOKIE", "nope".into())])).unwrap_err();
    assert!(matches!(err, HandshakeError::NotStartedByHost { .. }));
}

#[test]
fn version_and_automtls_are_checked() {
    let host = tls::PluginIdentity::generate().unwrap();
    let cookie = ("TEST_PLUGIN_COOKIE", CFG.cookie_value.to_owned());
    let err = PluginEnv::from_env(
        &CFG,
        env_of(&[cookie.clone(), ("PLUGIN_PROTOCOL_VERSIONS", "3,4".into())]),
    )
    .unwrap_err();
    assert!(
        matches!(err, HandshakeError::NoCommonVersion { .. }),
        "{err}"
    );
    let err = PluginEnv::from_env(
        &CFG,
        env_of(&[cookie.clone(), ("PLUGIN_PROTOCOL_VERSIONS", "1".into())]),
    )
    .unwrap_err();
    assert!(matches!(err, HandshakeError::NoAutoMtls), "{err}");
    let err = PluginEnv::from_env(
        &CFG,
        env_of(&[cookie.clone(), ("PLUGIN_CLIENT_CERT", "garbage".into())]),
    )
    .unwrap_err();
    assert!(matches!(err, HandshakeError::Tls(_)), "{err}");
    let env = PluginEnv::from_env(
        &CFG,
        env_of(&[
            cookie,
            ("PLUGIN_PROTOCOL_VERSIONS", "2, 1".into()),
            ("PLUGIN_CLIENT_CERT", pem(&host.cert)),
        ]),
    )
    .unwrap();
    assert_eq!(env.host_cert, host.cert);
    assert!(!env.multiplex_requested);
}

/// Captures the handshake line.
struct LineSink(Option<tokio::sync::oneshot::Sender<String>>, Vec<u8>);

impl Write for LineSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(String::from_utf8_lossy(&self.1).into_owned());
        }
        Ok(())
    }
}

async fn dial(
    socket: PathBuf,
    client: &tls::PluginIdentity,
    server_cert: CertificateDer<'static>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let cfg = Arc::new(tls::client_config(client, server_cert).unwrap());
    let connector = tokio_rustls::TlsConnector::from(cfg);
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            let socket = socket.clone();
            async move {
                let s = UnixStream::connect(socket).await?;
                let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, s).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
}

#[tokio::test]
async fn handshake_automtls_health_and_shutdown() {
    let host = tls::PluginIdentity::generate().unwrap();
    let env = PluginEnv::from_env(
        &CFG,
        env_of(&[
            ("TEST_PLUGIN_COOKIE", CFG.cookie_value.to_owned()),
            ("PLUGIN_PROTOCOL_VERSIONS", "1".into()),
            ("PLUGIN_CLIENT_CERT", pem(&host.cert)),
            ("PLUGIN_MULTIPLEX_GRPC", "true".into()),
        ]),
    )
    .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let lifetime = Lifetime::detached();
    let server = tokio::spawn({
        let lifetime = lifetime.clone();
        async move {
            serve(
                env,
                tonic::service::Routes::builder().routes(),
                LineSink(Some(tx), Vec::new()),
                &lifetime,
            )
            .await
        }
    });
    let line = rx.await.unwrap();
    assert!(line.ends_with('\n'), "{line:?}");
    let fields: Vec<&str> = line.trim_end().split('|').collect();
    assert_eq!(fields.len(), 7, "{line}");
    assert_eq!(&fields[..3], &["1", "1", "unix"]);
    assert_eq!(fields[4], "grpc");
    assert_eq!(fields[6], "false");
    assert!(
        !fields[5].contains('='),
        "certificate must be unpadded base64"
    );
    let socket = PathBuf::from(fields[3]);
    let server_cert = CertificateDer::from(
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(fields[5])
            .unwrap(),
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(socket.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "socket directory must be private");
    }

    // A stranger's certificate is refused.
    let stranger = tls::PluginIdentity::generate().unwrap();
    let bad = match dial(socket.clone(), &stranger, server_cert.clone()).await {
        Err(_) => true,
        Ok(ch) => tonic_health::pb::health_client::HealthClient::new(ch)
            .check(tonic_health::pb::HealthCheckRequest {
                service: "plugin".into(),
            })
            .await
            .is_err(),
    };
    assert!(
        bad,
        "a client with another certificate must not get through"
    );

    // The host gets through, sees `plugin` SERVING, and shuts us down.
    let ch = dial(socket.clone(), &host, server_cert).await.unwrap();
    let status = tonic_health::pb::health_client::HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "plugin".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    proto::grpc_controller_client::GrpcControllerClient::new(ch)
        .shutdown(proto::Empty {})
        .await
        .unwrap();
    let reason = tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("server stops after Shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(reason, StopReason::Shutdown);
    assert!(!socket.exists(), "socket directory is removed on exit");
}

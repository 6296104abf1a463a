//! Test support for rootseal, kept out of every shipped crate (a dev-dependency only, as
//! rustls keeps `rustls-test` and rust-cryptoki keeps `tests/common`):
//!
//! * [`TestToken`]: a fresh SoftHSM2 token with its own label and PINs, in a token directory of
//!   the test's own process;
//! * [`Fixture`]: that token opened, its root created, and a keyring over a file store in a
//!   temporary directory: what every SoftHSM2 test starts from.
//!
//! SoftHSM2 reads its token directory once per process, at `C_Initialize`, so create every token
//! a test needs before the first [`rootseal_hsm::Hsm::open`] in that process; `cargo nextest`
//! runs each test in its own process.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use rootseal_hsm::{
    default_softhsm_module, init_root, FileStore, Hsm, HsmConfig, InitOutcome, Keyring, SoftHsmDir,
    TokenSelector,
};
use secrecy::SecretString;

/// A fresh SoftHSM2 token for a test: its own label and PINs, in the process's test directory.
#[derive(Debug)]
pub struct TestToken {
    /// The process's SoftHSM2 directory (`SOFTHSM2_CONF` points at its `softhsm2.conf`).
    pub dir: SoftHsmDir,
    /// The token label.
    pub label: String,
    /// The User PIN.
    pub pin: String,
    /// The Security Officer PIN.
    pub so_pin: String,
    /// The module path.
    pub module: PathBuf,
}

/// The process's SoftHSM2 directory, created (and made `SOFTHSM2_CONF`) on first use and removed
/// when the process exits normally.
fn process_dir() -> &'static SoftHsmDir {
    static DIR: OnceLock<(tempfile::TempDir, SoftHsmDir)> = OnceLock::new();
    let (_, dir) = DIR.get_or_init(|| {
        let td = tempfile::Builder::new()
            .prefix("rootseal-softhsm-")
            .tempdir()
            .expect("create a temporary SoftHSM2 directory");
        let d = SoftHsmDir::create(td.path()).expect("create SoftHSM2 dir");
        d.activate();
        (td, d)
    });
    dir
}

impl TestToken {
    /// Creates a new token in the process's test directory.
    ///
    /// # Panics
    /// When SoftHSM2 is not installed: the tests need it (CI installs it).
    pub fn new() -> TestToken {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = process_dir();
        let module =
            default_softhsm_module().expect("libsofthsm2.so not found: apt-get install softhsm2");
        let n = N.fetch_add(1, Ordering::SeqCst);
        let label = format!("t{}-{n}", std::process::id());
        let pin = format!("pin-{n}-{}", std::process::id());
        let so_pin = format!("so-{pin}");
        dir.init_token(
            &label,
            &SecretString::from(pin.clone()),
            &SecretString::from(so_pin.clone()),
        )
        .expect("softhsm2-util --init-token");
        TestToken {
            dir: dir.clone(),
            label,
            pin,
            so_pin,
            module,
        }
    }

    /// The Security Officer PIN as a secret.
    pub fn so_pin(&self) -> SecretString {
        SecretString::from(self.so_pin.clone())
    }

    /// Creates this token's root as `rootseal init` does (Security Officer L0, User MAC key).
    /// Call it while no [`Hsm`] of this token is open in the process.
    ///
    /// # Panics
    /// When the root cannot be made (a test failure).
    pub async fn init_root(&self) -> InitOutcome {
        init_root(&self.config(), &self.so_pin())
            .await
            .expect("create the root")
    }

    /// An [`HsmConfig`] for this token.
    pub fn config(&self) -> HsmConfig {
        HsmConfig::new(
            self.module.clone(),
            TokenSelector::Label(self.label.clone()),
            SecretString::from(self.pin.clone()),
        )
    }

    /// Opens this token (off the async runtime).
    ///
    /// # Panics
    /// When the token cannot be opened (a test failure).
    pub async fn open(&self) -> Hsm {
        let cfg = self.config();
        tokio::task::spawn_blocking(move || Hsm::open(cfg))
            .await
            .expect("HSM open task")
            .expect("open the test token")
    }

    /// Opens this token, creates its root and returns the HSM and a keyring over a file store in
    /// `store_dir`.
    ///
    /// # Panics
    /// When the token cannot be opened or initialised (a test failure).
    pub async fn keyring(&self, store_dir: &Path) -> (Hsm, Keyring) {
        self.init_root().await;
        let hsm = self.open().await;
        let store = FileStore::open(store_dir).expect("file store");
        let keyring = Keyring::open(hsm.clone(), Arc::new(store))
            .await
            .expect("open the keyring");
        (hsm, keyring)
    }
}

impl Default for TestToken {
    fn default() -> Self {
        Self::new()
    }
}

/// A token, opened, with a new root and a keyring over a file store in a temporary directory.
#[derive(Debug)]
pub struct Fixture {
    /// The token.
    pub token: TestToken,
    /// The opened HSM.
    pub hsm: Hsm,
    /// The keyring.
    pub keyring: Keyring,
    /// The keyring's store.
    pub store: Arc<FileStore>,
    /// The temporary directory holding the store (`keys/`); removed on drop.
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// A fixture on a new token.
    ///
    /// # Panics
    /// On any failure (a test failure).
    pub async fn new() -> Fixture {
        Self::with_token(TestToken::new()).await
    }

    /// A fixture on `token`, which must have no root yet.
    ///
    /// # Panics
    /// On any failure, or when the token already had a root.
    pub async fn with_token(token: TestToken) -> Fixture {
        let out = token.init_root().await;
        assert!(matches!(out, InitOutcome::Created(_)), "{out:?}");
        let hsm = token.open().await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Arc::new(FileStore::open(dir.path().join("keys")).expect("file store"));
        let keyring = Keyring::open(hsm.clone(), store.clone())
            .await
            .expect("open the keyring");
        Fixture {
            token,
            hsm,
            keyring,
            store,
            dir,
        }
    }
}

/// Debian's p11-kit client module. Its RPC (p11-kit 0.24, and every release up to 0.26) does not
/// carry `CKM_AES_KEY_WRAP_PAD` (and 0.24 not `CKM_AES_GCM`), which rootseal's root and keys
/// use: [`P11KitServer`] uses the build of `scripts/build-p11kit` instead ([`p11_kit_prefix`]).
pub const P11_KIT_CLIENT: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";

/// Where `scripts/build-p11kit` installs p11-kit 0.25 with `CKM_AES_KEY_WRAP(_PAD)` and `CKM_EDDSA`
/// added to the RPC's parameterless mechanisms (the only change): `ROOTSEAL_P11KIT` when set, else
/// `/opt/rootseal-p11kit`.
pub fn p11_kit_prefix() -> PathBuf {
    std::env::var_os("ROOTSEAL_P11KIT")
        .map_or_else(|| PathBuf::from("/opt/rootseal-p11kit"), PathBuf::from)
}

/// A real `p11-kit server` exporting one SoftHSM2 token over a unix socket, so a test can hang
/// (SIGSTOP), resume (SIGCONT), kill and restart the HSM side while rootseal uses it through the
/// p11-kit client module. The server forks a `p11-kit-remote` per client connection, which does
/// the PKCS#11 work: every signal goes to the server's whole process group (its own, so the
/// test's process is never signalled), remotes included. Killed on drop.
#[derive(Debug)]
pub struct P11KitServer {
    /// The socket the server listens on.
    pub socket: PathBuf,
    token: String,
    provider: PathBuf,
    prefix: PathBuf,
    child: Option<std::process::Child>,
    _dir: Arc<tempfile::TempDir>,
}

impl P11KitServer {
    /// Starts a server for `token` and points this process's p11-kit client at it
    /// (`P11_KIT_SERVER_ADDRESS`). Call it before the client module is loaded.
    ///
    /// # Panics
    /// When the p11-kit build is missing (`scripts/build-p11kit`) or the server does not start.
    pub fn start(token: &TestToken) -> P11KitServer {
        let prefix = p11_kit_prefix();
        assert!(
            prefix.join("bin/p11-kit").exists() && client_module(&prefix).exists(),
            "no p11-kit with AES key wrap over RPC under {}: run scripts/build-p11kit",
            prefix.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("rootseal-p11kit-")
            .tempdir()
            .expect("temporary directory");
        let socket = dir.path().join("sock");
        std::env::set_var(
            "P11_KIT_SERVER_ADDRESS",
            format!("unix:path={}", socket.display()),
        );
        let mut s = P11KitServer {
            socket,
            token: token.label.clone(),
            provider: token.module.clone(),
            prefix,
            child: None,
            _dir: Arc::new(dir),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        use std::os::unix::process::CommandExt;
        let _ = std::fs::remove_file(&self.socket);
        let child = std::process::Command::new(self.prefix.join("bin/p11-kit"))
            .arg("server")
            .arg("-f")
            .arg("-n")
            .arg(&self.socket)
            .arg("--provider")
            .arg(&self.provider)
            .arg(format!("pkcs11:token={}", self.token))
            .stdout(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("p11-kit server (scripts/build-p11kit)");
        self.child = Some(child);
        let t0 = std::time::Instant::now();
        while !self.socket.exists() {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "p11-kit server did not open its socket"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The server's process id (also its process group's).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid();
        assert!(pid > 1, "no p11-kit server running");
        // `kill -SIG -- -PGID`: the server and every p11-kit-remote it forked.
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg("--")
            .arg(format!("-{pid}"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} -- -{pid}");
    }

    /// Hangs the HSM side (SIGSTOP of the server and its remotes): calls in flight and new ones
    /// get no answer.
    pub fn hang(&self) {
        self.signal("STOP");
    }

    /// Resumes a hung server (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Kills the server and its remotes (SIGKILL of the process group) and waits for the server.
    pub fn kill(&mut self) {
        if self.child.is_some() {
            // A stopped process dies of SIGKILL, but continue the group first so that no remote
            // is left stopped with the client's socket open.
            let _ = std::process::Command::new("kill")
                .arg("-CONT")
                .arg("--")
                .arg(format!("-{}", self.pid()))
                .status();
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg("--")
                .arg(format!("-{}", self.pid()))
                .status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same socket (after [`P11KitServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// An [`HsmConfig`] for `token` reached through this server.
    pub fn config(&self, token: &TestToken) -> HsmConfig {
        let mut c = token.config();
        c.module = client_module(&self.prefix);
        c
    }

    /// The client module of this server's p11-kit build.
    pub fn client_module(&self) -> PathBuf {
        client_module(&self.prefix)
    }
}

fn client_module(prefix: &Path) -> PathBuf {
    prefix.join("lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so")
}

impl Drop for P11KitServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a [`FaultProxy`] does with the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards it to the upstream server and its answer back.
    Forward,
    /// Answers it itself with this HTTP status and a Vault error envelope
    /// (`{"errors":["injected by the test proxy"]}`).
    Status(u16),
    /// Waits this long, then forwards it (a slow server).
    Delay(std::time::Duration),
}

/// A small real TCP proxy in front of an HTTP/1.1 server (OpenBao), switchable to answer 500 or
/// 503 or to be slow, so a test can fault the Vault KV store under a real rootseal. It reads each
/// request (head and `Content-Length` body), applies the mode, and forwards with
/// `Connection: close`, so every request is a connection of its own and a mode change applies
/// to the next request at once. Runs on its own thread and runtime; stopped on drop.
#[derive(Debug)]
pub struct FaultProxy {
    /// The address to point the client at (`http://<addr>`).
    pub addr: std::net::SocketAddr,
    mode: Arc<std::sync::Mutex<ProxyMode>>,
    requests: Arc<AtomicU32>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 (a free port) forwarding to `upstream` (`host:port`).
    ///
    /// # Panics
    /// When it cannot listen.
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy listen");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy addr");
        let mode = Arc::new(std::sync::Mutex::new(ProxyMode::Forward));
        let requests = Arc::new(AtomicU32::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (m, n) = (mode.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("proxy listener");
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        a = listener.accept() => {
                            let Ok((conn, _)) = a else { continue };
                            let (m, n, up) = (m.clone(), n.clone(), upstream.clone());
                            tokio::spawn(async move {
                                let _ = proxy_one(conn, &up, &m, &n).await;
                            });
                        }
                    }
                }
            });
        });
        FaultProxy {
            addr,
            mode,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets what the proxy does with the next requests.
    pub fn set(&self, mode: ProxyMode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    /// How many requests the proxy has read so far.
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn proxy_one(
    mut conn: tokio::net::TcpStream,
    upstream: &str,
    mode: &std::sync::Mutex<ProxyMode>,
    requests: &AtomicU32,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The request head, then its body by Content-Length (the KV client sends no chunked body).
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let m = *mode.lock().unwrap_or_else(|e| e.into_inner());
    match m {
        ProxyMode::Status(code) => {
            let body = br#"{"errors":["injected by the test proxy"]}"#;
            let resp = format!(
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(resp.as_bytes()).await?;
            conn.write_all(body).await?;
            return conn.shutdown().await;
        }
        ProxyMode::Delay(d) => tokio::time::sleep(d).await,
        ProxyMode::Forward => {}
    }
    // Forward with `Connection: close` (any Connection header of the client's replaced).
    let mut out = String::new();
    for (i, line) in head[..head_end - 4].split("\r\n").enumerate() {
        if i > 0
            && line
                .split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut up = tokio::net::TcpStream::connect(upstream).await?;
    up.write_all(out.as_bytes()).await?;
    up.write_all(&buf[head_end..]).await?;
    tokio::io::copy(&mut up, &mut conn).await?;
    conn.shutdown().await
}

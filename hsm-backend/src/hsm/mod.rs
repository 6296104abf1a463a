//! The HSM handle: one PKCS#11 module, one token, one User login, and a pool of worker threads
//! that each own one session.
//!
//! Sessions are never shared: each worker thread opens its own and runs the jobs it takes from a
//! queue. Async callers submit closures with [`Hsm::run`] and await the answer, so no PKCS#11
//! call ever runs on the async runtime.
//!
//! * [`module`]: the per-process module registry, finding the token, its identity.
//! * [`login`]: opening a session and the User login.
//! * [`pool`]: the worker threads, their queue and recovery.
//! * [`session`]: [`SessionCtx`], the PKCS#11 operations a job may call, one file per function
//!   family (as rust-cryptoki's `session/`).
//! * [`l1_cache`]: unwrapped L1 session objects shared by the workers.
//! * [`release`]: which threads are inside which module, and letting go of the HSM on the way
//!   out ([`Hsm::shutdown`], [`Hsm::shutdown_all`]).
//!
//! Recovery (measured on SoftHSM2 2.6.1, see `docs/architecture.md`):
//! * `CKR_SESSION_HANDLE_INVALID`, `CKR_SESSION_CLOSED`, `CKR_USER_NOT_LOGGED_IN`, a stale object
//!   handle: drop the session and its cache, open a new one, log in again, retry once.
//! * `CKR_DEVICE_REMOVED`, `CKR_TOKEN_NOT_PRESENT`, `CKR_CRYPTOKI_NOT_INITIALIZED`, …:
//!   finalize and re-initialise the module, find the token again by label or serial, log in,
//!   retry with backoff.
//! * `CKR_GENERAL_ERROR` from a decrypt or unwrap is an integrity failure (SoftHSM2 returns it for a
//!   bad GCM tag or a tampered wrapped key), never a reason to reconnect.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::config::HsmConfig;
use crate::error::{Error, Recovery, Result};
use crate::metrics::HsmMetrics;
use crate::types::TokenIdentity;

mod l1_cache;
mod login;
mod module;
mod pool;
mod raw;
mod release;
pub(crate) mod session;
mod so;

use l1_cache::L1Cache;
use module::{Device, Module};
use pool::Job;
pub(crate) use raw::AllowedMechanisms;
pub use release::HsmRelease;
pub(crate) use session::SessionCtx;
pub(crate) use so::with_so_session;

/// Locks `m`, carrying on after a poisoned lock: that only means another thread panicked while
/// holding it, and the data (handles, queues) stays consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What every worker of one [`Hsm`] shares.
struct Shared {
    cfg: HsmConfig,
    metrics: Arc<HsmMetrics>,
    module: Arc<Module>,
    device: Mutex<Option<Device>>,
    identity: TokenIdentity,
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    /// Woken (with the queue's mutex) when the pool closes: cuts a worker's recovery backoff.
    closing: Condvar,
    closed: AtomicBool,
    /// Workers of this pool still running (changed under the release state's lock).
    alive: AtomicUsize,
    /// Unwrapped L1 session objects, usable from every session of this process.
    l1: L1Cache,
    /// The session opened (and logged in) by `open`, handed to worker 0.
    initial: Mutex<Option<(cryptoki::session::Session, u64)>>,
}

/// A handle on one token of one PKCS#11 module. Cheap to clone; the workers stop when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Hsm {
    shared: Arc<Shared>,
    _workers: Arc<WorkerGuard>,
}

struct WorkerGuard {
    shared: Arc<Shared>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Drop for WorkerGuard {
    /// Stops the workers and waits for them: each finishes the queued jobs and closes its
    /// session. Waiting matters: a worker still in `C_CloseSession` while the process exits races
    /// the module's exit-time destructors (seen as a SIGSEGV in libsofthsm2).
    /// After [`Hsm::shutdown`] a worker still inside a call that never returned is left alone
    /// (joining it would hang forever); the others have closed their sessions already.
    fn drop(&mut self) {
        let shut_down = self.shared.closed.swap(true, Ordering::SeqCst);
        // Taking the queue lock once after the store orders it with every worker's check: a worker
        // that read `closed == false` under the lock is already waiting when we notify (without
        // this, a notify between its check and its wait was lost and `join` below hung forever).
        drop(lock(&self.shared.queue));
        self.shared.ready.notify_all();
        let me = std::thread::current().id();
        for t in std::mem::take(&mut *lock(&self.threads)) {
            if t.thread().id() == me || (shut_down && !t.is_finished()) {
                continue;
            }
            if t.join().is_err() {
                tracing::warn!("an HSM worker thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("module", &self.shared.cfg.module)
            .field("token", &self.shared.identity)
            .finish_non_exhaustive()
    }
}

impl Hsm {
    /// Loads the module (once per process), finds the token by label or serial, logs in as User
    /// and starts `cfg.pool_size` workers. Blocking: call it from `spawn_blocking` or before the
    /// runtime starts.
    ///
    /// # Errors
    /// [`Error::Module`], [`Error::TokenNotFound`], [`Error::PinIncorrect`] (never retried),
    /// [`Error::PinLocked`], or a PKCS#11 error.
    pub fn open(cfg: HsmConfig) -> Result<Hsm> {
        // Inside the module for the whole call (C_Initialize, C_Login); refused once the process
        // releases its HSMs.
        let _inside = release::enter(&cfg.module, None)?;
        let module = module::registered(&cfg.module);
        let metrics = Arc::new(HsmMetrics::default());
        let loaded = module::loaded_generation(&module);
        let device = match module::connect(&cfg, &module, None) {
            // A module initialised earlier in this process lists the tokens it saw then
            // (SoftHSM2 reads its token directory only in C_Initialize): a token that appeared
            // since, or came back, needs one re-initialisation to be seen. Other users of the
            // module recover from that like from any lost device.
            Err(Error::TokenNotFound(_)) if loaded.is_some() => {
                module::connect(&cfg, &module, loaded)?
            }
            r => r?,
        };
        // Log in now, so that a wrong PIN fails here, once, instead of in every worker.
        let (session, identity) = {
            let _call = module.enter();
            let session = login::open_session(&cfg, &device, &metrics)?;
            (session, module::token_identity(&device)?)
        };
        // Worker 0 keeps this session, so the process stays logged in (closing the last session
        // logs the application out, and every worker would log in again).
        let initial = Mutex::new(Some((session, device.module_generation)));
        let shared = Arc::new(Shared {
            cfg,
            metrics,
            module,
            device: Mutex::new(Some(device)),
            identity,
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            closing: Condvar::new(),
            closed: AtomicBool::new(false),
            alive: AtomicUsize::new(0),
            l1: L1Cache::default(),
            initial,
        });
        let guard = WorkerGuard {
            shared: shared.clone(),
            threads: Mutex::new(Vec::new()),
        };
        release::register(&shared);
        for i in 0..shared.cfg.pool_size.max(1) {
            let s = shared.clone();
            let inside = release::enter(&shared.cfg.module, Some(shared.clone()))?;
            let t = std::thread::Builder::new()
                .name(format!("rootseal-hsm-{i}"))
                .spawn(move || {
                    // Out of the module once the worker has closed its session (or panicked).
                    let _inside = inside;
                    pool::worker(s, i);
                })
                .map_err(|e| Error::Unavailable(format!("cannot start HSM worker: {e}")))?;
            lock(&guard.threads).push(t);
        }
        tracing::info!(
            module = %shared.cfg.module.display(),
            token = %shared.identity,
            pool = shared.cfg.pool_size.max(1),
            "HSM ready"
        );
        Ok(Hsm {
            _workers: Arc::new(guard),
            shared,
        })
    }

    /// The token's identity (manufacturer, model, serial, label).
    pub fn identity(&self) -> &TokenIdentity {
        &self.shared.identity
    }

    /// PKCS#11 operation counters.
    pub fn metrics(&self) -> &HsmMetrics {
        &self.shared.metrics
    }

    /// Runs `f` on a worker with that worker's own session. `f` may run more than once: when it
    /// fails with a lost session or device, the worker recovers and calls it again.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut SessionCtx<'_>) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T>>();
        let mut f = f;
        let mut tx = Some(tx);
        let timeout = self.shared.cfg.job_timeout;
        let queued = std::time::Instant::now();
        let mut started = false;
        let job: Job = Box::new(move |ctx, last| {
            if !started {
                started = true;
                // A caller that has gone away (its client disconnected, or it gave up at the
                // deadline) has its job dropped before it costs the HSM anything.
                if tx
                    .as_ref()
                    .is_none_or(tokio::sync::oneshot::Sender::is_closed)
                {
                    return None;
                }
                if queued.elapsed() > timeout {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Err(Error::Deadline(timeout)));
                    }
                    return None;
                }
            }
            let r = match ctx {
                Ok(ctx) => f(ctx),
                Err(e) => Err(e),
            };
            match r {
                Err(e) if !last && e.recovery() != Recovery::None => Some(e),
                r => {
                    if let Some(tx) = tx.take() {
                        // The caller may have gone away; nobody is left to tell.
                        let _ = tx.send(r);
                    }
                    None
                }
            }
        });
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(Error::PoolClosed);
        }
        {
            let mut q = lock(&self.shared.queue);
            let limit = self.shared.cfg.queue_limit.max(1);
            if q.len() >= limit {
                drop(q);
                self.shared.metrics.job_refused();
                return Err(Error::Busy(limit));
            }
            q.push_back(job);
        }
        self.shared.ready.notify_one();
        match tokio::time::timeout(timeout, rx).await {
            Ok(r) => r.map_err(|_| Error::PoolClosed)?,
            // Dropping the receiver here tells a job still queued not to start.
            Err(_) => Err(Error::Deadline(timeout)),
        }
    }

    /// `n` bytes (at most 1024) from the token's RNG (`C_GenerateRandom`).
    ///
    /// # Errors
    /// [`crate::KeyringError::InvalidRequest`] beyond 1024; HSM errors.
    pub async fn random_bytes(
        &self,
        n: usize,
    ) -> std::result::Result<Vec<u8>, crate::KeyringError> {
        if n > 1024 {
            return Err(crate::KeyringError::InvalidRequest(
                "at most 1024 random bytes at once".into(),
            ));
        }
        Ok(self
            .run(move |ctx| {
                let mut b = vec![0u8; n];
                ctx.random(&mut b)?;
                Ok(b)
            })
            .await?)
    }

    /// Closes this pool and lets go of its sessions, waiting until `deadline`: queued calls fail
    /// at once (`PoolClosed`), each worker closes its session as soon as its current PKCS#11
    /// call returns, and the module is finalised (`C_Finalize`) when no thread of the process is
    /// inside it and no other open pool uses it. A call that has not returned by `deadline`
    /// (a hung device) is left alone: the answer is then [`HsmRelease::Stuck`], and the module
    /// stays initialised, since finalising it under a running call is undefined. Every later
    /// call on this handle fails with `PoolClosed`. Blocking, for at most until `deadline`.
    pub fn shutdown(&self, deadline: Instant) -> HsmRelease {
        release::shutdown(&self.shared, deadline)
    }

    /// What a process on its way out calls: every pool of the process closes as
    /// [`Hsm::shutdown`] does, no thread enters a module from now on ([`Hsm::open`] fails with
    /// `PoolClosed`), and each module is finalised once no thread is inside it. Waits until
    /// `deadline` at most; [`HsmRelease::Stuck`] says that some call never returned, and the
    /// caller should then end the process without running exit-time destructors (a module's
    /// destructors racing a thread still inside it crash or hang).
    pub fn shutdown_all(deadline: Instant) -> HsmRelease {
        release::shutdown_all(deadline)
    }

    /// Checks that the token answers (a cheap `C_GetSessionInfo` through a worker).
    ///
    /// # Errors
    /// [`Error::Unavailable`] or a PKCS#11 error when the token is gone.
    pub async fn health(&self) -> Result<()> {
        self.run(|ctx| ctx.session_info()).await
    }

    /// **Testing only** (cargo feature `test-hooks`, never in release builds). Occupies one worker
    /// for `d`, as a PKCS#11 call that hangs would.
    ///
    /// # Errors
    /// As [`Hsm::health`].
    #[cfg(feature = "test-hooks")]
    pub async fn testing_stall(&self, d: std::time::Duration) -> Result<()> {
        self.run(move |_| {
            std::thread::sleep(d);
            Ok(())
        })
        .await
    }

    /// **Testing only** (cargo feature `test-hooks`). Occupies one worker until `until` gets a
    /// message or hangs up: a call that does not return until the test says so.
    ///
    /// # Errors
    /// As [`Hsm::health`].
    #[cfg(feature = "test-hooks")]
    pub async fn testing_stall_until(&self, until: std::sync::mpsc::Receiver<()>) -> Result<()> {
        let until = Mutex::new(until);
        self.run(move |_ctx| {
            let _ = lock(&until).recv();
            Ok(())
        })
        .await
    }

    /// **Testing only** (cargo feature `test-hooks`). Whether this handle's module is
    /// initialised in this process (not finalised).
    #[cfg(feature = "test-hooks")]
    pub fn testing_module_loaded(&self) -> bool {
        module::loaded_generation(&self.shared.module).is_some()
    }

    /// **Testing only** (cargo feature `test-hooks`, never in release builds). Finalizes the module
    /// behind the workers' backs, as if the device went away, so that the next call must recover.
    #[cfg(feature = "test-hooks")]
    pub fn testing_finalize_module(&self) {
        module::testing_finalize(&self.shared.module);
    }

    /// **Testing only** (cargo feature `test-hooks`). Finalizes and re-initialises the module
    /// behind the workers' backs, so that every open session handle becomes invalid
    /// (`CKR_SESSION_HANDLE_INVALID`).
    #[cfg(feature = "test-hooks")]
    pub fn testing_invalidate_sessions(&self) {
        module::testing_reinitialise(&self.shared.module, &self.shared.cfg.module);
    }

    /// **Testing only** (cargo feature `test-hooks`). Re-initialises the module the way device
    /// recovery does (`C_Finalize` and `C_Initialize` once no thread of any `Hsm` is inside it,
    /// waiting at most the job timeout). Blocking.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when a call stayed inside the module past the wait.
    #[cfg(feature = "test-hooks")]
    pub fn testing_recover_module(&self) -> Result<()> {
        let seen = module::loaded_generation(&self.shared.module);
        module::connect(&self.shared.cfg, &self.shared.module, seen).map(|_| ())
    }
}

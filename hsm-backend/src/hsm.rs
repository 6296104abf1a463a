//! The HSM handle: one PKCS#11 module, one token, one User login, and a pool of worker threads
//! that each own one session.
//!
//! Sessions are never shared: each worker thread opens its own and runs the jobs it takes from a
//! queue. Async callers submit closures with [`Hsm::run`] and await the answer, so no PKCS#11
//! call ever runs on the async runtime.
//!
//! Recovery (measured on SoftHSM2 2.6.1, see `docs/architecture.md`):
//! * `CKR_SESSION_HANDLE_INVALID`, `CKR_SESSION_CLOSED`, `CKR_USER_NOT_LOGGED_IN`, a stale object
//!   handle: drop the session and its cache, open a new one, log in again, retry once.
//! * `CKR_DEVICE_REMOVED`, `CKR_TOKEN_NOT_PRESENT`, `CKR_CRYPTOKI_NOT_INITIALIZED`, …:
//!   finalize and re-initialise the module, find the token again by label or serial, log in,
//!   retry with backoff.
//! * `CKR_GENERAL_ERROR` from a decrypt or unwrap is an integrity failure (SoftHSM2 returns it for a
//!   bad GCM tag or a tampered wrapped key), never a reason to reconnect.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::config::{HsmConfig, TokenSelector};
use crate::error::{Error, Recovery, Result};
use crate::metrics::{HsmMetrics, HsmOp};
use crate::root::{RootHandles, RootId};

/// The identity of a token, bound into every sealed blob.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenIdentity {
    /// `manufacturerID`, trimmed.
    pub manufacturer: String,
    /// `model`, trimmed.
    pub model: String,
    /// `serialNumber`, trimmed.
    pub serial: String,
    /// The token label, trimmed (informational; not compared).
    #[serde(default)]
    pub label: String,
}

impl std::fmt::Display for TokenIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} serial {} (label {:?})",
            self.manufacturer, self.model, self.serial, self.label
        )
    }
}

/// One loaded module per path and process: PKCS#11 allows one `C_Initialize` per process, and the
/// module generation lets several [`Hsm`]s on the same module re-initialise it only once.
struct Module {
    ctx: Option<Pkcs11>,
    generation: u64,
}

fn modules() -> &'static Mutex<HashMap<PathBuf, Arc<Mutex<Module>>>> {
    static M: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<Module>>>>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the data (handles,
    // queues) stays consistent, so carry on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn load_module(path: &PathBuf) -> Result<Pkcs11> {
    let ctx = Pkcs11::new(path).map_err(|source| Error::Module {
        module: path.display().to_string(),
        source,
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(source) => Err(Error::Module {
            module: path.display().to_string(),
            source,
        }),
    }
}

/// The current module context and slot of one [`Hsm`].
#[derive(Clone)]
struct Device {
    ctx: Pkcs11,
    slot: Slot,
    module_generation: u64,
}

type Job = Box<dyn FnMut(Result<&mut SessionCtx<'_>>, bool) -> Option<Error> + Send>;

struct Shared {
    cfg: HsmConfig,
    metrics: Arc<HsmMetrics>,
    module: Arc<Mutex<Module>>,
    device: Mutex<Option<Device>>,
    identity: TokenIdentity,
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    closed: AtomicBool,
    /// Unwrapped L1 session objects, usable from every session of this process; each entry dies
    /// with the session (worker) that created it.
    l1: Mutex<HashMap<[u8; 32], L1Entry>>,
    /// The session opened (and logged in) by `open`, handed to worker 0.
    initial: Mutex<Option<(Session, u64)>>,
}

#[derive(Clone, Copy)]
struct L1Entry {
    handle: ObjectHandle,
    owner: usize,
    generation: u64,
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
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.ready.notify_all();
        let me = std::thread::current().id();
        for t in std::mem::take(&mut *lock(&self.threads)) {
            if t.thread().id() != me {
                let _ = t.join();
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

const MAX_ATTEMPTS: u32 = 5;

impl Hsm {
    /// Loads the module (once per process), finds the token by label or serial, logs in as User
    /// and starts `cfg.pool_size` workers. Blocking: call it from `spawn_blocking` or before the
    /// runtime starts.
    ///
    /// # Errors
    /// [`Error::Module`], [`Error::TokenNotFound`], [`Error::PinIncorrect`] (never retried),
    /// [`Error::PinLocked`], or a PKCS#11 error.
    pub fn open(cfg: HsmConfig) -> Result<Hsm> {
        let module = {
            let mut all = lock(modules());
            all.entry(cfg.module.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Module {
                        ctx: None,
                        generation: 0,
                    }))
                })
                .clone()
        };
        let metrics = Arc::new(HsmMetrics::default());
        let loaded = {
            let m = lock(&module);
            m.ctx.as_ref().map(|_| m.generation)
        };
        let device = match connect(&cfg, &module, None) {
            // A module initialised earlier in this process lists the tokens it saw then
            // (SoftHSM2 reads its token directory only in C_Initialize): a token that appeared
            // since, or came back, needs one re-initialisation to be seen. Other users of the
            // module recover from that like from any lost device.
            Err(Error::TokenNotFound(_)) if loaded.is_some() => connect(&cfg, &module, loaded)?,
            r => r?,
        };
        // Log in now, so that a wrong PIN fails here, once, instead of in every worker.
        let session = open_session(&cfg, &device, &metrics)?;
        let identity = token_identity(&device)?;
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
            closed: AtomicBool::new(false),
            l1: Mutex::new(HashMap::new()),
            initial,
        });
        let guard = WorkerGuard {
            shared: shared.clone(),
            threads: Mutex::new(Vec::new()),
        };
        for i in 0..shared.cfg.pool_size.max(1) {
            let s = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("rootseal-hsm-{i}"))
                .spawn(move || worker(s, i))
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
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut f = f;
        let mut tx = Some(tx);
        let job: Job = Box::new(move |ctx, last| {
            let r = match ctx {
                Ok(ctx) => f(ctx),
                Err(e) => Err(e),
            };
            match r {
                Err(e) if !last && e.recovery() != Recovery::None => Some(e),
                r => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(r);
                    }
                    None
                }
            }
        });
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(Error::PoolClosed);
        }
        lock(&self.shared.queue).push_back(job);
        self.shared.ready.notify_one();
        rx.await.map_err(|_| Error::PoolClosed)?
    }

    /// Checks that the token answers (a cheap `C_GetTokenInfo` through a worker).
    ///
    /// # Errors
    /// [`Error::Unavailable`] or a PKCS#11 error when the token is gone.
    pub async fn health(&self) -> Result<()> {
        self.run(|ctx| {
            ctx.session.get_session_info()?;
            Ok(())
        })
        .await
    }

    /// **Testing only.** Finalizes the module behind the workers' backs, as if the device went
    /// away, so that the next call must recover. Used by recovery tests against SoftHSM2.
    #[doc(hidden)]
    pub fn testing_finalize_module(&self) {
        let mut m = lock(&self.shared.module);
        if let Some(ctx) = m.ctx.take() {
            let _ = ctx.finalize();
        }
    }

    /// **Testing only.** Finalizes and re-initialises the module behind the workers' backs, so that
    /// every open session handle becomes invalid (`CKR_SESSION_HANDLE_INVALID`).
    #[doc(hidden)]
    pub fn testing_invalidate_sessions(&self) {
        let mut m = lock(&self.shared.module);
        if let Some(ctx) = m.ctx.take() {
            let _ = ctx.finalize();
        }
        if let Ok(ctx) = load_module(&self.shared.cfg.module) {
            m.ctx = Some(ctx);
        }
    }
}

/// Loads (or reuses) the module, finds the slot. `stale` is the module generation a caller saw
/// fail: if nobody re-initialised since, this call does.
fn connect(cfg: &HsmConfig, module: &Arc<Mutex<Module>>, stale: Option<u64>) -> Result<Device> {
    let (ctx, generation) = {
        let mut m = lock(module);
        if stale == Some(m.generation) {
            if let Some(ctx) = m.ctx.take() {
                let _ = ctx.finalize();
            }
            m.generation += 1;
        }
        let ctx = match &m.ctx {
            Some(ctx) => ctx.clone(),
            None => {
                let ctx = load_module(&cfg.module)?;
                m.ctx = Some(ctx.clone());
                ctx
            }
        };
        (ctx, m.generation)
    };
    let slot = find_slot(&ctx, &cfg.token)?;
    Ok(Device {
        ctx,
        slot,
        module_generation: generation,
    })
}

fn find_slot(ctx: &Pkcs11, sel: &TokenSelector) -> Result<Slot> {
    for slot in ctx.get_slots_with_token()? {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let hit = match sel {
            TokenSelector::Label(l) => info.label().trim_end() == l.trim_end(),
            TokenSelector::Serial(s) => info.serial_number().trim() == s.trim(),
        };
        if hit && info.token_initialized() {
            return Ok(slot);
        }
    }
    Err(Error::TokenNotFound(sel.to_string()))
}

fn token_identity(d: &Device) -> Result<TokenIdentity> {
    let info = d.ctx.get_token_info(d.slot)?;
    Ok(TokenIdentity {
        manufacturer: info.manufacturer_id().trim().to_owned(),
        model: info.model().trim().to_owned(),
        serial: info.serial_number().trim().to_owned(),
        label: info.label().trim().to_owned(),
    })
}

fn open_session(cfg: &HsmConfig, d: &Device, metrics: &HsmMetrics) -> Result<Session> {
    metrics.count(HsmOp::OpenSession);
    let session = d
        .ctx
        .open_rw_session(d.slot)
        .inspect_err(|_| metrics.error())?;
    // Login state belongs to the application, not the session: while any session of this
    // process is logged in, a new one is too. Skipping the redundant C_Login matters on SoftHSM2,
    // which rewrites its token file at every login (a process killed then can corrupt it).
    if matches!(
        session.get_session_info().map(|i| i.session_state()),
        Ok(SessionState::RwUser | SessionState::RoUser)
    ) {
        return Ok(session);
    }
    let pin: &AuthPin = &cfg.pin;
    let mut tries: u64 = 0;
    loop {
        metrics.count(HsmOp::Login);
        match session.login(UserType::User, Some(pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => return Ok(session),
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid, _)) => {
                metrics.error();
                return Err(Error::PinIncorrect(cfg.token.to_string()));
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                metrics.error();
                return Err(Error::PinLocked(cfg.token.to_string()));
            }
            // Two processes logging in to one SoftHSM2 token at once can see GENERAL_ERROR
            // (login rewrites the token file): retry a few times with backoff.
            Err(CkError::Pkcs11(RvError::GeneralError, _)) if tries < 3 => {
                metrics.error();
                tries += 1;
                std::thread::sleep(Duration::from_millis(50 * tries));
            }
            Err(e) => {
                metrics.error();
                return Err(e.into());
            }
        }
    }
}

/// A worker's session and what it caches: root handles, unwrapped L1 session objects, IVs.
pub(crate) struct SessionCtx<'a> {
    pub(crate) session: &'a Session,
    cache: &'a mut SessionCache,
    shared: &'a Shared,
    owner: usize,
    generation: u64,
    metrics: &'a HsmMetrics,
    pub(crate) identity: &'a TokenIdentity,
}

#[derive(Default)]
struct SessionCache {
    roots: HashMap<RootId, RootHandles>,
    /// Random bytes from the HSM RNG, drawn 4 KiB per `C_GenerateRandom`: IVs and small keys.
    rand: Zeroizing<Vec<u8>>,
}

/// Unwrapped L1 objects one worker keeps before it flushes its own.
const L1_CACHE_MAX: usize = 4096;
/// Bytes drawn from the HSM RNG per `C_GenerateRandom`.
const RAND_BATCH: usize = 4096;

struct WorkerState {
    idx: usize,
    session: Option<(Session, u64)>,
    cache: SessionCache,
}

fn worker(shared: Arc<Shared>, idx: usize) {
    let mut st = WorkerState {
        idx,
        session: if idx == 0 {
            lock(&shared.initial).take()
        } else {
            None
        },
        cache: SessionCache::default(),
    };
    loop {
        let job = {
            let mut q = lock(&shared.queue);
            loop {
                if let Some(job) = q.pop_front() {
                    break Some(job);
                }
                if shared.closed.load(Ordering::SeqCst) {
                    break None;
                }
                q = shared.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let Some(job) = job else {
            break;
        };
        run_job(&shared, &mut st, job);
    }
    drop_session(&shared, &mut st);
}

fn drop_session(shared: &Shared, st: &mut WorkerState) {
    st.cache = SessionCache::default();
    // Session objects die with the session that created them.
    lock(&shared.l1).retain(|_, e| e.owner != st.idx);
    if let Some((session, _)) = st.session.take() {
        // Closing a dead session fails; cryptoki logs that instead of panicking.
        drop(session);
    }
}

fn current_device(shared: &Shared) -> Result<Device> {
    let cur = lock(&shared.device).clone();
    match cur {
        Some(d) => Ok(d),
        None => {
            // While serving, a module or token that cannot be reached is an unavailable device,
            // whatever the module said: recovery keeps trying with backoff.
            let d = connect(&shared.cfg, &shared.module, None)
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            *lock(&shared.device) = Some(d.clone());
            Ok(d)
        }
    }
}

fn ensure_session<'s>(shared: &Shared, st: &'s mut WorkerState) -> Result<&'s Session> {
    let device = current_device(shared)?;
    let stale = st
        .session
        .as_ref()
        .is_some_and(|(_, g)| *g != device.module_generation);
    if stale {
        drop_session(shared, st);
    }
    if st.session.is_none() {
        let s = open_session(&shared.cfg, &device, &shared.metrics)?;
        st.session = Some((s, device.module_generation));
    }
    match &st.session {
        Some((s, _)) => Ok(s),
        None => Err(Error::PoolClosed),
    }
}

fn run_job(shared: &Shared, st: &mut WorkerState, mut job: Job) {
    let mut attempt = 0u32;
    loop {
        let last = attempt + 1 >= MAX_ATTEMPTS;
        let failed = match ensure_session(shared, st) {
            Ok(_) => {
                let Some((session, generation)) = &st.session else {
                    return;
                };
                let mut ctx = SessionCtx {
                    session,
                    cache: &mut st.cache,
                    shared,
                    owner: st.idx,
                    generation: *generation,
                    metrics: &shared.metrics,
                    identity: &shared.identity,
                };
                job(Ok(&mut ctx), last)
            }
            Err(e) if last || e.recovery() == Recovery::None => {
                let _ = job(Err(e), true);
                None
            }
            Err(e) => Some(e),
        };
        let Some(err) = failed else {
            return;
        };
        attempt += 1;
        match err.recovery() {
            Recovery::Session if attempt == 1 => {
                tracing::warn!(error = %err, "HSM session lost; opening a new session");
                shared.metrics.session_recovered();
                drop_session(shared, st);
            }
            _ => {
                tracing::warn!(error = %err, attempt, "HSM device lost; re-initialising the module");
                shared.metrics.device_recovered();
                drop_session(shared, st);
                let seen = lock(&shared.device).as_ref().map(|d| d.module_generation);
                std::thread::sleep(Duration::from_millis(100 << attempt.min(4)));
                match connect(&shared.cfg, &shared.module, seen) {
                    Ok(d) => *lock(&shared.device) = Some(d),
                    Err(e) => {
                        tracing::warn!(error = %e, "HSM re-initialisation failed");
                        *lock(&shared.device) = None;
                    }
                }
            }
        }
    }
}

fn ck<T>(metrics: &HsmMetrics, op: HsmOp, r: std::result::Result<T, CkError>) -> Result<T> {
    metrics.count(op);
    r.map_err(|e| {
        metrics.error();
        Error::from(e)
    })
}

/// Maps the errors SoftHSM2 and others return for a bad tag or a tampered wrapped key to
/// [`Error::Integrity`].
fn integrity(e: Error, what: &'static str) -> Error {
    match e.rv() {
        Some(
            RvError::GeneralError
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::SignatureInvalid
            | RvError::SignatureLenRange
            | RvError::DataLenRange
            | RvError::UnwrappingKeyHandleInvalid,
        ) => Error::Integrity(what),
        _ => e,
    }
}

/// GCM IV length.
pub(crate) const IV_LEN: usize = 12;
/// GCM tag length.
pub(crate) const TAG_LEN: usize = 16;

impl SessionCtx<'_> {
    /// Fills `buf` from the HSM RNG.
    pub(crate) fn random(&mut self, buf: &mut [u8]) -> Result<()> {
        ck(
            self.metrics,
            HsmOp::GenerateRandom,
            self.session.generate_random_slice(buf),
        )
    }

    /// Fills `out` (at most 64 bytes) from this worker's pool of HSM random bytes, refilled 4 KiB
    /// per `C_GenerateRandom`. Bytes are used once and removed from the pool.
    pub(crate) fn pooled_random(&mut self, out: &mut [u8]) -> Result<()> {
        if out.len() > 64 {
            return self.random(out);
        }
        if self.cache.rand.len() < out.len() {
            let mut buf = Zeroizing::new(vec![0u8; RAND_BATCH]);
            self.random(&mut buf)?;
            self.cache.rand = buf;
        }
        let at = self.cache.rand.len() - out.len();
        let src = self
            .cache
            .rand
            .get(at..)
            .ok_or_else(|| Error::Unavailable("random pool".into()))?;
        out.copy_from_slice(src);
        // Wipe the used bytes before shrinking the buffer.
        if let Some(used) = self.cache.rand.get_mut(at..) {
            used.fill(0);
        }
        self.cache.rand.truncate(at);
        Ok(())
    }

    /// A fresh 96-bit IV from the HSM RNG (via the pool).
    pub(crate) fn iv(&mut self) -> Result<[u8; IV_LEN]> {
        let mut iv = [0u8; IV_LEN];
        self.pooled_random(&mut iv)?;
        Ok(iv)
    }

    /// AES-256-GCM inside the HSM; returns `iv ‖ ct ‖ tag`.
    pub(crate) fn gcm_encrypt(
        &mut self,
        key: ObjectHandle,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let mut iv = self.iv()?;
        let params = GcmParams::new(&mut iv, aad, (TAG_LEN as u64 * 8).into())?;
        let ct = ck(
            self.metrics,
            HsmOp::Encrypt,
            self.session
                .encrypt(&Mechanism::AesGcm(params), key, plaintext),
        )?;
        let mut out = Vec::with_capacity(IV_LEN + ct.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens `iv ‖ ct ‖ tag` inside the HSM. A bad tag is [`Error::Integrity`].
    pub(crate) fn gcm_decrypt(
        &mut self,
        key: ObjectHandle,
        aad: &[u8],
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        if data.len() < IV_LEN + TAG_LEN {
            return Err(Error::Integrity("ciphertext too short"));
        }
        let (iv, ct) = data.split_at(IV_LEN);
        let mut iv = <[u8; IV_LEN]>::try_from(iv).map_err(|_| Error::Integrity("iv"))?;
        let params = GcmParams::new(&mut iv, aad, (TAG_LEN as u64 * 8).into())?;
        let pt = ck(
            self.metrics,
            HsmOp::Decrypt,
            self.session.decrypt(&Mechanism::AesGcm(params), key, ct),
        )
        .map_err(|e| integrity(e, "gcm tag"))?;
        Ok(Zeroizing::new(pt))
    }

    /// HMAC-SHA256 inside the HSM.
    pub(crate) fn hmac(&mut self, key: ObjectHandle, data: &[u8]) -> Result<Vec<u8>> {
        ck(
            self.metrics,
            HsmOp::Sign,
            self.session.sign(&Mechanism::Sha256Hmac, key, data),
        )
    }

    /// Verifies an HMAC-SHA256 inside the HSM (constant time there). A mismatch is
    /// [`Error::Integrity`].
    pub(crate) fn hmac_verify(&mut self, key: ObjectHandle, data: &[u8], tag: &[u8]) -> Result<()> {
        ck(
            self.metrics,
            HsmOp::Verify,
            self.session.verify(&Mechanism::Sha256Hmac, key, data, tag),
        )
        .map_err(|e| integrity(e, "blob mac"))
    }

    /// Finds token objects matching `template`.
    pub(crate) fn find(&mut self, template: &[Attribute]) -> Result<Vec<ObjectHandle>> {
        ck(
            self.metrics,
            HsmOp::FindObjects,
            self.session.find_objects(template),
        )
    }

    /// Generates a key with `mechanism` and `template`.
    pub(crate) fn generate(
        &mut self,
        mechanism: &Mechanism,
        template: &[Attribute],
    ) -> Result<ObjectHandle> {
        ck(
            self.metrics,
            HsmOp::GenerateKey,
            self.session.generate_key(mechanism, template),
        )
    }

    /// Destroys an object.
    pub(crate) fn destroy(&mut self, object: ObjectHandle) -> Result<()> {
        ck(
            self.metrics,
            HsmOp::DestroyObject,
            self.session.destroy_object(object),
        )
    }

    /// Wraps `key` under `wrapping` with CKM_AES_KEY_WRAP_PAD.
    pub(crate) fn wrap_kwp(
        &mut self,
        wrapping: ObjectHandle,
        key: ObjectHandle,
    ) -> Result<Vec<u8>> {
        ck(
            self.metrics,
            HsmOp::WrapKey,
            self.session
                .wrap_key(&Mechanism::AesKeyWrapPad, wrapping, key),
        )
    }

    /// Unwraps a KWP blob under `wrapping` into a session AES key usable only for
    /// encrypt/decrypt; non-extractable unless `extractable` (root rotation only).
    pub(crate) fn unwrap_kwp(
        &mut self,
        wrapping: ObjectHandle,
        wrapped: &[u8],
        extractable: bool,
    ) -> Result<ObjectHandle> {
        let template = l1_session_template(extractable);
        ck(
            self.metrics,
            HsmOp::UnwrapKey,
            self.session
                .unwrap_key(&Mechanism::AesKeyWrapPad, wrapping, wrapped, &template),
        )
        .map_err(|e| integrity(e, "wrapped key"))
    }

    /// Reads boolean attributes of an object (for tests and `rootseal root status`).
    pub(crate) fn bool_attributes(
        &mut self,
        object: ObjectHandle,
        types: &[AttributeType],
    ) -> Result<Vec<(AttributeType, bool)>> {
        let attrs = self.session.get_attributes(object, types)?;
        Ok(attrs
            .into_iter()
            .filter_map(|a| {
                let t = a.attribute_type();
                match a {
                    Attribute::Sensitive(b)
                    | Attribute::Extractable(b)
                    | Attribute::NeverExtractable(b)
                    | Attribute::AlwaysSensitive(b)
                    | Attribute::Local(b)
                    | Attribute::Token(b)
                    | Attribute::Private(b)
                    | Attribute::Wrap(b)
                    | Attribute::Unwrap(b)
                    | Attribute::Encrypt(b)
                    | Attribute::Decrypt(b)
                    | Attribute::Sign(b)
                    | Attribute::Verify(b)
                    | Attribute::Derive(b) => Some((t, b)),
                    _ => None,
                }
            })
            .collect())
    }

    /// Cached root handles for `id`, found by `CKA_ID` on a miss.
    pub(crate) fn root(&mut self, id: &RootId) -> Result<RootHandles> {
        if let Some(h) = self.cache.roots.get(id) {
            return Ok(*h);
        }
        let h = crate::root::find_handles(self, id)?;
        self.cache.roots.insert(*id, h);
        Ok(h)
    }

    /// Forgets cached root handles (after a root was destroyed or relabelled).
    pub(crate) fn forget_roots(&mut self) {
        self.cache.roots.clear();
    }

    /// The cached unwrapped L1 for the blob with digest `digest`, if any (from any worker of
    /// this module generation: session objects are visible to every session of the process).
    pub(crate) fn cached_l1(&self, digest: &[u8; 32]) -> Option<ObjectHandle> {
        lock(&self.shared.l1)
            .get(digest)
            .filter(|e| e.generation == self.generation)
            .map(|e| e.handle)
    }

    /// Remembers an unwrapped L1 session object; flushes this worker's entries when full.
    pub(crate) fn cache_l1(&mut self, digest: [u8; 32], handle: ObjectHandle) {
        let mine: Vec<ObjectHandle> = {
            let mut all = lock(&self.shared.l1);
            let count = all.values().filter(|e| e.owner == self.owner).count();
            if count >= L1_CACHE_MAX {
                let owner = self.owner;
                let old: Vec<ObjectHandle> = all
                    .values()
                    .filter(|e| e.owner == owner)
                    .map(|e| e.handle)
                    .collect();
                all.retain(|_, e| e.owner != owner);
                old
            } else {
                Vec::new()
            }
        };
        for h in mine {
            let _ = self.destroy(h);
        }
        let entry = L1Entry {
            handle,
            owner: self.owner,
            generation: self.generation,
        };
        if let Some(prev) = lock(&self.shared.l1).insert(digest, entry) {
            // Two unwraps of one blob raced: the newer entry wins; destroy the older object when
            // it is ours (another worker's dies with its session).
            if prev.owner == self.owner && prev.handle != handle {
                let _ = self.destroy(prev.handle);
            }
        }
    }
}

/// The template of an unwrapped L1: a session object, sensitive, usable only for AES-GCM
/// encrypt/decrypt, never wrap/unwrap/sign/derive, and non-extractable.
fn l1_session_template(extractable: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]
}

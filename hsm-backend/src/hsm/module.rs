//! Loading a PKCS#11 module (once per path and process) and finding the token on it.
//!
//! PKCS#11 allows one `C_Initialize` per process and module; the module generation lets several
//! [`super::Hsm`]s on the same module re-initialise it only once after a device loss.
//!
//! One [`Module`] owns each loaded module of the process. Every thread calls into it only while
//! holding a [`Call`] (a shared pass through its gate); `C_Finalize` and `C_Initialize` run only
//! with the gate held exclusively, which waits until no thread is inside the module (finalising
//! under a running call is undefined behaviour; SoftHSM2 frees the state the call uses). A call
//! that never returns (a hung device) keeps the module from being re-initialised, never the
//! caller from going on: the exclusive wait ends at a deadline. Every [`super::Hsm`] on the
//! module sees a re-initialisation through the generation: its workers compare their session's
//! generation with the module's before each job, forget sessions of an older one (their handles
//! died with `C_Finalize`: closing them could close another worker's new session) and open new
//! ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::slot::Slot;

use super::lock;
use crate::config::{HsmConfig, TokenSelector};
use crate::error::{Error, Result};
use crate::types::TokenIdentity;

/// The loaded module's context (none while finalized) and how often it was re-initialised.
struct Loaded {
    ctx: Option<Pkcs11>,
    generation: u64,
}

#[derive(Default)]
struct GateState {
    /// Threads inside the module (holding a [`Call`]).
    inside: usize,
    /// A thread holds, or waits for, the module exclusively: nobody new enters meanwhile.
    exclusive: bool,
}

/// One loaded module of the process: its context and the gate every call passes.
pub(super) struct Module {
    loaded: Mutex<Loaded>,
    gate: Mutex<GateState>,
    changed: Condvar,
}

/// A thread's pass inside a module: while any exists, the module is not finalised.
pub(super) struct Call<'a>(&'a Module);

impl Drop for Call<'_> {
    fn drop(&mut self) {
        lock(&self.0.gate).inside -= 1;
        self.0.changed.notify_all();
    }
}

/// The module held exclusively (nobody inside): the only state in which it is finalised or
/// initialised.
struct Exclusive<'a>(&'a Module);

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        lock(&self.0.gate).exclusive = false;
        self.0.changed.notify_all();
    }
}

impl Module {
    /// Enters the module for a call (waits while it is being re-initialised).
    pub(super) fn enter(&self) -> Call<'_> {
        let mut g = lock(&self.gate);
        while g.exclusive {
            g = self.changed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.inside += 1;
        Call(self)
    }

    /// Holds the module exclusively once no thread is inside it, or `None` at `deadline`.
    fn exclusive(&self, deadline: Instant) -> Option<Exclusive<'_>> {
        let mut g = lock(&self.gate);
        // One exclusive holder at a time; new calls wait from now on.
        while g.exclusive {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            g = self
                .changed
                .wait_timeout(g, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        g.exclusive = true;
        while g.inside > 0 {
            let now = Instant::now();
            if now >= deadline {
                g.exclusive = false;
                drop(g);
                self.changed.notify_all();
                return None;
            }
            g = self
                .changed
                .wait_timeout(g, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        Some(Exclusive(self))
    }

    /// The current generation if the module is loaded.
    pub(super) fn generation(&self) -> Option<u64> {
        let m = lock(&self.loaded);
        m.ctx.as_ref().map(|_| m.generation)
    }
}

/// One loaded module and its token slot as one [`super::Hsm`] last saw them.
#[derive(Clone)]
pub(super) struct Device {
    pub(super) ctx: Pkcs11,
    pub(super) slot: Slot,
    pub(super) module_generation: u64,
}

fn modules() -> &'static Mutex<HashMap<PathBuf, Arc<Module>>> {
    static M: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The process-wide owner of the module at `path` (not loaded yet if new).
pub(super) fn registered(path: &Path) -> Arc<Module> {
    lock(modules())
        .entry(path.to_owned())
        .or_insert_with(|| {
            Arc::new(Module {
                loaded: Mutex::new(Loaded {
                    ctx: None,
                    generation: 0,
                }),
                gate: Mutex::new(GateState::default()),
                changed: Condvar::new(),
            })
        })
        .clone()
}

/// The generation of `module` if it is loaded.
pub(super) fn loaded_generation(module: &Module) -> Option<u64> {
    module.generation()
}

fn load_module(path: &Path) -> Result<Pkcs11> {
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

fn finalize(ctx: Pkcs11) {
    if let Err(e) = ctx.finalize() {
        tracing::debug!(error = %e, "C_Finalize failed (the module was already gone)");
    }
}

/// How long a re-initialisation waits for the threads inside the module to come out.
pub(super) fn reinit_wait(cfg: &HsmConfig) -> Duration {
    cfg.job_timeout
}

/// Loads (or reuses) the module, finds the slot. `stale` is the module generation a caller saw
/// fail: if nobody re-initialised since, this call does, once no thread is inside the module
/// (waiting at most [`reinit_wait`]). The caller must not hold a [`Call`] of `module`.
///
/// # Errors
/// [`Error::Unavailable`] when a thread stayed inside the module (a hung call) past the wait;
/// module and token errors.
pub(super) fn connect(cfg: &HsmConfig, module: &Module, stale: Option<u64>) -> Result<Device> {
    let needs_init = {
        let m = lock(&module.loaded);
        m.ctx.is_none() || stale == Some(m.generation)
    };
    if needs_init {
        let _x = module
            .exclusive(Instant::now() + reinit_wait(cfg))
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "{}: a call into the module has not returned; not re-initialising it under that call",
                    cfg.module.display()
                ))
            })?;
        let mut m = lock(&module.loaded);
        if stale == Some(m.generation) {
            if let Some(ctx) = m.ctx.take() {
                finalize(ctx);
            }
            m.generation += 1;
        }
        if m.ctx.is_none() {
            m.ctx = Some(load_module(&cfg.module)?);
        }
    }
    let _call = module.enter();
    let (ctx, generation) = {
        let m = lock(&module.loaded);
        match &m.ctx {
            Some(ctx) => (ctx.clone(), m.generation),
            None => {
                return Err(Error::Unavailable(format!(
                    "{}: the module was finalised meanwhile",
                    cfg.module.display()
                )))
            }
        }
    };
    let slot = find_slot(&ctx, &cfg.token)?;
    Ok(Device {
        ctx,
        slot,
        module_generation: generation,
    })
}

/// Finalises the module at `path` if it is loaded (the process lets go of it), once no thread
/// is inside it (waiting until `deadline`). A later [`connect`] loads it again, under a new
/// generation.
pub(super) fn finalize_loaded(path: &Path, deadline: Instant) {
    let Some(module) = lock(modules()).get(path).cloned() else {
        return;
    };
    let Some(_x) = module.exclusive(deadline) else {
        tracing::warn!(module = %path.display(), "a call is still inside the module; not finalising it");
        return;
    };
    let mut m = lock(&module.loaded);
    if let Some(ctx) = m.ctx.take() {
        finalize(ctx);
        m.generation += 1;
        tracing::debug!(module = %path.display(), "PKCS#11 module finalised");
    }
}

/// The slot holding the initialised token `sel` names. Slot ids are not stable (SoftHSM2
/// renumbers them), so tokens are found by label or serial.
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

/// The identity of the token in `d`'s slot.
pub(super) fn token_identity(d: &Device) -> Result<TokenIdentity> {
    let info = d.ctx.get_token_info(d.slot)?;
    Ok(TokenIdentity {
        manufacturer: info.manufacturer_id().trim().to_owned(),
        model: info.model().trim().to_owned(),
        serial: info.serial_number().trim().to_owned(),
        label: info.label().trim().to_owned(),
    })
}

/// Finalizes `module` as if the device went away (test hook): behind the gate's back, as a
/// device that vanished would.
#[cfg(feature = "test-hooks")]
pub(super) fn testing_finalize(module: &Module) {
    let mut m = lock(&module.loaded);
    if let Some(ctx) = m.ctx.take() {
        finalize(ctx);
        m.generation += 1;
    }
}

/// Finalizes and re-initialises `module` behind the gate's back, invalidating every session
/// (test hook).
#[cfg(feature = "test-hooks")]
pub(super) fn testing_reinitialise(module: &Module, path: &Path) {
    let mut m = lock(&module.loaded);
    if let Some(ctx) = m.ctx.take() {
        finalize(ctx);
    }
    if let Ok(ctx) = load_module(path) {
        m.ctx = Some(ctx);
    }
}

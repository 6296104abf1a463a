//! Loading a PKCS#11 module (once per path and process) and finding the token on it.
//!
//! PKCS#11 allows one `C_Initialize` per process and module; the module generation lets several
//! [`super::Hsm`]s on the same module re-initialise it only once after a device loss.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::slot::Slot;

use super::lock;
use crate::config::{HsmConfig, TokenSelector};
use crate::error::{Error, Result};
use crate::types::TokenIdentity;

/// One loaded module: its context (none while finalized) and how often it was re-initialised.
pub(super) struct Module {
    ctx: Option<Pkcs11>,
    generation: u64,
}

/// The current module context and slot of one [`super::Hsm`].
#[derive(Clone)]
pub(super) struct Device {
    pub(super) ctx: Pkcs11,
    pub(super) slot: Slot,
    pub(super) module_generation: u64,
}

fn modules() -> &'static Mutex<HashMap<PathBuf, Arc<Mutex<Module>>>> {
    static M: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<Module>>>>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The process-wide entry for the module at `path` (not loaded yet if new).
pub(super) fn registered(path: &Path) -> Arc<Mutex<Module>> {
    lock(modules())
        .entry(path.to_owned())
        .or_insert_with(|| {
            Arc::new(Mutex::new(Module {
                ctx: None,
                generation: 0,
            }))
        })
        .clone()
}

/// The generation of `module` if it is loaded.
pub(super) fn loaded_generation(module: &Mutex<Module>) -> Option<u64> {
    let m = lock(module);
    m.ctx.as_ref().map(|_| m.generation)
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

/// Loads (or reuses) the module, finds the slot. `stale` is the module generation a caller saw
/// fail: if nobody re-initialised since, this call does.
pub(super) fn connect(
    cfg: &HsmConfig,
    module: &Arc<Mutex<Module>>,
    stale: Option<u64>,
) -> Result<Device> {
    let (ctx, generation) = {
        let mut m = lock(module);
        if stale == Some(m.generation) {
            if let Some(ctx) = m.ctx.take() {
                finalize(ctx);
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

/// Finalises the module at `path` if it is loaded (the process lets go of it). A later
/// [`connect`] loads it again, under a new generation.
pub(super) fn finalize_loaded(path: &Path) {
    let Some(module) = lock(modules()).get(path).cloned() else {
        return;
    };
    let mut m = lock(&module);
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

/// Finalizes `module` as if the device went away (test hook).
#[cfg(feature = "test-hooks")]
pub(super) fn testing_finalize(module: &Mutex<Module>) {
    if let Some(ctx) = lock(module).ctx.take() {
        finalize(ctx);
    }
}

/// Finalizes and re-initialises `module`, invalidating every session (test hook).
#[cfg(feature = "test-hooks")]
pub(super) fn testing_reinitialise(module: &Mutex<Module>, path: &Path) {
    let mut m = lock(module);
    if let Some(ctx) = m.ctx.take() {
        finalize(ctx);
    }
    if let Ok(ctx) = load_module(path) {
        m.ctx = Some(ctx);
    }
}

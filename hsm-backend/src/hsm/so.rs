//! A Security Officer session, for the one thing only the SO can do: make a trusted L0.
//!
//! It never runs in a serving process: `rootseal init` and `rootseal root rotate` call it, with the
//! SO PIN from `--so-pin-file` or `ROOTSEAL_HSM_SO_PIN`, before they open their User sessions (a
//! PKCS#11 application is logged in as one user at a time: SoftHSM2 answers a User login while the
//! SO is logged in, and the reverse, with `CKR_USER_ANOTHER_ALREADY_LOGGED_IN`). The session logs
//! out and closes when the job ends.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::UserType;
use secrecy::SecretString;

use super::l1_cache::L1Cache;
use super::session::{SessionCache, SessionCtx};
use super::{module, release};
use crate::config::HsmConfig;
use crate::error::{Error, Result};
use crate::metrics::{HsmMetrics, HsmOp};

/// Runs `f` in a read-write session of `cfg`'s token logged in as the Security Officer, on the
/// calling thread (blocking: call it from `spawn_blocking` or a plain thread), then logs out.
///
/// # Errors
/// [`Error::SoPinIncorrect`] (never retried), [`Error::TokenState`] when this process is logged in
/// as User, the errors of [`crate::Hsm::open`] and of `f`.
pub(crate) fn with_so_session<T>(
    cfg: &HsmConfig,
    so_pin: &SecretString,
    f: impl FnOnce(&mut SessionCtx<'_>) -> Result<T>,
) -> Result<T> {
    let _inside = release::enter(&cfg.module, None)?;
    let module_entry = module::registered(&cfg.module);
    let device = module::connect(cfg, &module_entry, None)?;
    // Inside the module for the whole Security Officer step.
    let _call = module_entry.enter();
    let identity = module::token_identity(&device)?;
    let metrics = HsmMetrics::default();
    metrics.count(HsmOp::OpenSession);
    let session = device.ctx.open_rw_session(device.slot)?;
    metrics.count(HsmOp::Login);
    match session.login(UserType::So, Some(so_pin)) {
        Ok(()) => {}
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid, _)) => {
            return Err(Error::SoPinIncorrect(cfg.token.to_string()));
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
            return Err(Error::PinLocked(cfg.token.to_string()));
        }
        Err(CkError::Pkcs11(
            RvError::UserAnotherAlreadyLoggedIn | RvError::UserAlreadyLoggedIn,
            _,
        )) => {
            return Err(Error::TokenState(
                "this process is logged in to the token as User; the Security Officer step must \
                 run before any User session is open"
                    .into(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let mut cache = SessionCache::default();
    let l1 = L1Cache::default();
    let mut ctx = SessionCtx {
        session: &session,
        cache: &mut cache,
        l1: &l1,
        owner: usize::MAX,
        generation: device.module_generation,
        metrics: &metrics,
        module: &cfg.module,
        identity: &identity,
    };
    let out = f(&mut ctx);
    if let Err(e) = session.logout() {
        tracing::warn!(error = %e, "Security Officer logout failed (the session closes anyway)");
    }
    drop(session);
    out
}

//! Releasing the HSM on the way out: which threads of the process are inside which PKCS#11
//! module, and closing pools against a deadline.
//!
//! Every thread that may call into a module holds an [`Inside`] guard for as long as it may: each
//! worker for its whole life, [`super::Hsm::open`] and the Security Officer session for their
//! call. A module is finalised (`C_Finalize`) only when no thread is inside it: finalising under a
//! running call is undefined behaviour in most modules (SoftHSM2 crashes). A call that never
//! returns (a hung device, a network HSM that stopped answering) keeps its module from being
//! finalised, never the caller from going on: every wait here ends at the caller's deadline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Instant;

use super::{lock, module, Shared};
use crate::error::{Error, Result};

/// How a release of the HSM ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HsmRelease {
    /// Every session is closed and every module finalised that no open pool still uses.
    Clean,
    /// At the deadline, `threads` threads were still inside a PKCS#11 call that had not
    /// returned. The other sessions are closed; a module with a thread inside is not finalised.
    Stuck {
        /// Threads still inside a module.
        threads: usize,
    },
}

struct State {
    /// Threads inside each module, by module path.
    inside: HashMap<PathBuf, usize>,
    /// Every pool opened in this process (dead ones pruned on the way).
    pools: Vec<Weak<Shared>>,
    /// Set by [`shutdown_all`]: from then on nobody enters a module.
    closing: bool,
}

fn state() -> &'static (Mutex<State>, Condvar) {
    static S: OnceLock<(Mutex<State>, Condvar)> = OnceLock::new();
    S.get_or_init(|| {
        (
            Mutex::new(State {
                inside: HashMap::new(),
                pools: Vec::new(),
                closing: false,
            }),
            Condvar::new(),
        )
    })
}

/// A thread's right to call into one module; dropping it says the thread is out.
pub(super) struct Inside {
    module: PathBuf,
    /// The pool whose worker this is, if it is one.
    pool: Option<Arc<Shared>>,
}

impl Drop for Inside {
    fn drop(&mut self) {
        let (m, cv) = state();
        let mut st = lock(m);
        if let Some(n) = st.inside.get_mut(&self.module) {
            *n = n.saturating_sub(1);
        }
        if let Some(p) = &self.pool {
            p.alive.fetch_sub(1, Ordering::SeqCst);
        }
        drop(st);
        cv.notify_all();
    }
}

/// Enters `module` for the calling thread (or, with `pool`, for a worker of that pool about to
/// start).
///
/// # Errors
/// [`Error::PoolClosed`] once the process is releasing the HSM.
pub(super) fn enter(module: &Path, pool: Option<Arc<Shared>>) -> Result<Inside> {
    let (m, _) = state();
    let mut st = lock(m);
    if st.closing {
        return Err(Error::PoolClosed);
    }
    *st.inside.entry(module.to_owned()).or_default() += 1;
    if let Some(p) = &pool {
        p.alive.fetch_add(1, Ordering::SeqCst);
    }
    Ok(Inside {
        module: module.to_owned(),
        pool,
    })
}

/// Records a new pool, so that [`shutdown_all`] closes it.
pub(super) fn register(pool: &Arc<Shared>) {
    let (m, _) = state();
    let mut st = lock(m);
    st.pools.retain(|w| w.strong_count() > 0);
    st.pools.push(Arc::downgrade(pool));
}

/// Closes `pool`: queued jobs fail with [`Error::PoolClosed`] (their callers hear it at once),
/// workers stop at their next step and close their sessions.
fn close(pool: &Shared) {
    pool.closed.store(true, Ordering::SeqCst);
    let queued = std::mem::take(&mut *lock(&pool.queue));
    // Dropping a job drops its answer channel: the caller gets PoolClosed.
    drop(queued);
    pool.ready.notify_all();
    pool.closing.notify_all();
}

/// Finalises `path`'s module if no thread is inside it and no open pool uses it. Called with the
/// state locked, so nobody enters meanwhile.
fn finalize_if_idle(st: &State, path: &Path, deadline: Instant) -> bool {
    if st.inside.get(path).copied().unwrap_or(0) > 0 {
        return false;
    }
    let used = st
        .pools
        .iter()
        .filter_map(Weak::upgrade)
        .any(|p| p.cfg.module == path && !p.closed.load(Ordering::SeqCst));
    if used {
        return false;
    }
    module::finalize_loaded(path, deadline);
    true
}

/// Closes one pool and waits, until `deadline`, for its workers to close their sessions; then
/// finalises its module if nobody else is inside or using it.
pub(super) fn shutdown(pool: &Arc<Shared>, deadline: Instant) -> HsmRelease {
    close(pool);
    let (m, cv) = state();
    let mut st = lock(m);
    loop {
        let alive = pool.alive.load(Ordering::SeqCst);
        if alive == 0 {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            tracing::warn!(
                threads = alive,
                "HSM workers still inside a PKCS#11 call at the deadline; not finalising the module"
            );
            return HsmRelease::Stuck { threads: alive };
        }
        st = cv
            .wait_timeout(st, deadline - now)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    finalize_if_idle(&st, &pool.cfg.module, deadline);
    HsmRelease::Clean
}

/// The whole process lets go of its HSMs: nobody enters a module from now on, every pool closes,
/// and each module is finalised once no thread is inside it, waiting until `deadline`.
pub(super) fn shutdown_all(deadline: Instant) -> HsmRelease {
    let (m, cv) = state();
    let pools: Vec<Arc<Shared>> = {
        let mut st = lock(m);
        st.closing = true;
        st.pools.iter().filter_map(Weak::upgrade).collect()
    };
    for p in &pools {
        close(p);
    }
    let mut st = lock(m);
    loop {
        let inside: usize = st.inside.values().sum();
        if inside == 0 {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            // Finalise what can be: the modules nobody is inside.
            let idle: Vec<PathBuf> = st
                .inside
                .iter()
                .filter(|(_, n)| **n == 0)
                .map(|(p, _)| p.clone())
                .collect();
            for path in idle {
                finalize_if_idle(&st, &path, deadline);
            }
            tracing::warn!(
                threads = inside,
                "threads still inside a PKCS#11 call at the deadline; their module is not finalised"
            );
            return HsmRelease::Stuck { threads: inside };
        }
        st = cv
            .wait_timeout(st, deadline - now)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    let paths: Vec<PathBuf> = st.inside.keys().cloned().collect();
    for path in paths {
        finalize_if_idle(&st, &path, deadline);
    }
    HsmRelease::Clean
}

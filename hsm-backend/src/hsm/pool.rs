//! The worker threads: each owns one session, takes jobs from the shared queue and recovers from
//! lost sessions and devices.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cryptoki::session::Session;

use super::module::{Call, Device};
use super::session::{SessionCache, SessionCtx};
use super::{lock, login, module, Shared};
use crate::error::{Error, Recovery, Result};

/// A queued unit of work. Called with the worker's session (or the error that kept it from
/// getting one) and whether this is the last attempt; returns the error to recover from, or
/// `None` when it is done (it has answered its caller).
pub(super) type Job = Box<dyn FnMut(Result<&mut SessionCtx<'_>>, bool) -> Option<Error> + Send>;

/// Attempts per job before its error stands.
const MAX_ATTEMPTS: u32 = 5;

struct WorkerState {
    idx: usize,
    session: Option<(Session, u64)>,
    cache: SessionCache,
}

/// The body of worker thread `idx`: runs jobs until the pool closes, then closes its session.
pub(super) fn worker(shared: Arc<Shared>, idx: usize) {
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
    shared.l1.drop_owner(st.idx);
    if let Some((session, generation)) = st.session.take() {
        let _call = shared.module.enter();
        if shared.module.generation() == Some(generation) {
            // Closing a dead session fails; cryptoki logs that instead of panicking.
            drop(session);
        } else {
            // The module was re-initialised since: the handle died with C_Finalize, and
            // C_CloseSession on it could close a session another worker has opened since.
            forget_session(session);
        }
    }
}

/// Lets go of a session of an earlier module generation without calling into the module.
fn forget_session(session: Session) {
    std::mem::forget(session);
}

fn current_device(shared: &Shared) -> Result<Device> {
    let cur = lock(&shared.device).clone();
    match cur {
        Some(d) => Ok(d),
        None => {
            // While serving, a module or token that cannot be reached is an unavailable device,
            // whatever the module said: recovery keeps trying with backoff. No device means the
            // last connect failed: the module as loaded may be an instance that was initialised
            // while the HSM was away (p11-kit's client then lists no slot until it is initialised
            // again), so it is re-initialised unless another thread did since.
            let seen = module::loaded_generation(&shared.module);
            let d = module::connect(&shared.cfg, &shared.module, seen)
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            *lock(&shared.device) = Some(d.clone());
            Ok(d)
        }
    }
}

/// Makes sure the worker has a session of the module's current generation and returns its
/// pass inside the module, held for the job.
fn ensure_session<'s>(shared: &'s Shared, st: &mut WorkerState) -> Result<Call<'s>> {
    let mut device = current_device(shared)?;
    let call = loop {
        let call = shared.module.enter();
        match shared.module.generation() {
            Some(g) if g == device.module_generation => break call,
            // Another Hsm on this module re-initialised it (or finalised it: the device went
            // away): take the module as it is now (loading it if needed, no new
            // re-initialisation) and re-open this worker's session on it.
            now => {
                drop(call);
                if now.is_none() {
                    tracing::warn!("HSM module finalised; initialising it again");
                    shared.metrics.device_recovered();
                } else {
                    shared.metrics.session_recovered();
                }
                *lock(&shared.device) = None;
                device = current_device(shared)?;
            }
        }
    };
    let stale = st
        .session
        .as_ref()
        .is_some_and(|(_, g)| *g != device.module_generation);
    if stale {
        st.cache = SessionCache::default();
        shared.l1.drop_owner(st.idx);
        if let Some((session, _)) = st.session.take() {
            forget_session(session);
        }
    }
    if st.session.is_none() {
        let s = login::open_session(&shared.cfg, &device, &shared.metrics)?;
        st.session = Some((s, device.module_generation));
    }
    Ok(call)
}

/// Sleeps `d`, or less if the pool closes meanwhile.
fn backoff(shared: &Shared, d: Duration) {
    let deadline = std::time::Instant::now() + d;
    let mut q = lock(&shared.queue);
    while !shared.closed.load(Ordering::SeqCst) {
        let now = std::time::Instant::now();
        if now >= deadline {
            break;
        }
        q = match shared.closing.wait_timeout(q, deadline - now) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
    }
}

fn run_job(shared: &Shared, st: &mut WorkerState, mut job: Job) {
    let mut attempt = 0u32;
    loop {
        if shared.closed.load(Ordering::SeqCst) {
            // The pool is being shut down: no retry, no recovery, the caller hears it now.
            let _ = job(Err(Error::PoolClosed), true);
            return;
        }
        let last = attempt + 1 >= MAX_ATTEMPTS;
        let failed = match ensure_session(shared, st) {
            Ok(_call) => {
                let Some((session, generation)) = &st.session else {
                    return;
                };
                let mut ctx = SessionCtx {
                    session,
                    cache: &mut st.cache,
                    l1: &shared.l1,
                    owner: st.idx,
                    generation: *generation,
                    metrics: &shared.metrics,
                    module: &shared.cfg.module,
                    identity: &shared.identity,
                };
                job(Ok(&mut ctx), last)
            }
            Err(e) if last || e.recovery() == Recovery::None => {
                // The job answers its caller with this error; there is nothing to retry.
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
                backoff(shared, Duration::from_millis(100 << attempt.min(4)));
                if shared.closed.load(Ordering::SeqCst) {
                    continue;
                }
                match module::connect(&shared.cfg, &shared.module, seen) {
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

//! The bulk sealing threads: one long-lived thread per core, shared by every request, taking
//! parts from one first-in-first-out queue.
//!
//! Why not tokio's blocking pool: it starts a new thread whenever every thread is busy, so the
//! parts of several groups in flight ran at once, time-sliced on the same cores. They then all
//! finished at about the same moment, and the reading task, which waits for the *oldest* part
//! to keep output in order, refilled the pipeline while the cores stood idle (the profile showed
//! the cores ~75% busy). Here at most one part runs per core, in submission order: the oldest
//! part finishes first, the next queued part starts on the same (already running) thread with no
//! wake-up, and the cores stay busy while the queue holds work. It also bounds the CPU that bulk
//! requests take together to the cores, whatever the number of requests.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

use tokio::sync::oneshot;

/// Sealing threads: the machine's cores. The pool starts this many, and the engine splits work
/// into this many parts.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    /// Threads that started; with none, parts run on the caller's thread.
    started: AtomicUsize,
}

static POOL: OnceLock<&'static Pool> = OnceLock::new();

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let p: &'static Pool = Box::leak(Box::new(Pool {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            started: AtomicUsize::new(0),
        }));
        for i in 0..threads() {
            let spawned = std::thread::Builder::new()
                .name(format!("rootseal-bulk-{i}"))
                .spawn(move || worker(p));
            match spawned {
                Ok(_) => {
                    p.started.fetch_add(1, Ordering::Relaxed);
                }
                // Fewer threads only slows bulk work.
                Err(e) => tracing::error!(error = %e, "cannot start a bulk sealing thread"),
            }
        }
        p
    })
}

fn worker(p: &'static Pool) {
    loop {
        let job = {
            let mut q = p.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(j) = q.pop_front() {
                    break j;
                }
                q = p.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        // A panicking part is a bug: its receiver sees the sender dropped (an internal error
        // for that request) and the thread lives on for the others.
        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("a bulk sealing part panicked");
        }
    }
}

/// Queues `f` on the sealing threads; the receiver yields its result, or an error if it
/// panicked.
pub(crate) fn run<R, F>(f: F) -> oneshot::Receiver<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let p = pool();
    if p.started.load(Ordering::Relaxed) == 0 {
        if let Ok(r) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
            let _ = tx.send(r);
        }
        return rx;
    }
    p.queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push_back(Box::new(move || {
            let _ = tx.send(f());
        }));
    p.ready.notify_one();
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_come_back_and_a_panic_is_an_error_not_a_dead_pool() {
        let rxs: Vec<_> = (0..64u64).map(|i| run(move || i * i)).collect();
        for (i, rx) in rxs.into_iter().enumerate() {
            assert_eq!(rx.await.unwrap(), (i * i) as u64);
        }
        let bad = run(|| -> u8 { panic!("boom") });
        assert!(bad.await.is_err());
        // Every thread still serves work after the panic.
        let rxs: Vec<_> = (0..4 * threads()).map(|i| run(move || i + 1)).collect();
        for (i, rx) in rxs.into_iter().enumerate() {
            assert_eq!(rx.await.unwrap(), i + 1);
        }
    }
}

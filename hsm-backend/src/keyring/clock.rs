//! The keyring's clock: every lifecycle decision (activation, protect-stop, deactivation,
//! auto-rotation) reads the time here, so tests move time forward instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in whole seconds since the Unix epoch. Cheap to clone: the system
/// clock (the default), or a manual clock that tests set and move forward.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// Seconds since the Unix epoch, now.
    pub fn now(&self) -> u64 {
        match &self.manual {
            Some(t) => t.load(Ordering::SeqCst),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    /// Whether this is the system clock.
    pub fn is_system(&self) -> bool {
        self.manual.is_none()
    }
}

#[cfg(feature = "test-hooks")]
impl Clock {
    /// A manual clock that starts at `start` (unix seconds) and moves only when a test moves it
    /// (`test-hooks` only). Its clones share the time.
    pub fn testing_manual(start: u64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicU64::new(start))),
        }
    }

    /// Moves a manual clock forward by `secs` (`test-hooks` only; the system clock ignores it).
    pub fn testing_advance(&self, secs: u64) {
        if let Some(t) = &self.manual {
            t.fetch_add(secs, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_is_the_default_and_reads_the_time() {
        let c = Clock::default();
        assert!(c.is_system());
        // 2023-11-14: any machine running this is later.
        assert!(c.now() > 1_700_000_000);
    }

    #[test]
    fn a_manual_clock_moves_only_when_moved_and_clones_share_it() {
        let c = Clock::testing_manual(1000);
        let d = c.clone();
        assert_eq!(c.now(), 1000);
        d.testing_advance(3600);
        assert_eq!(c.now(), 4600);
        assert!(!c.is_system());
    }
}

//! Opening a session and logging in as User, once per process.

use std::time::Duration;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::types::AuthPin;

use super::module::Device;
use crate::config::HsmConfig;
use crate::error::{Error, Result};
use crate::metrics::{HsmMetrics, HsmOp};

/// Attempts of a login that fails with `CKR_GENERAL_ERROR` (see below).
const GENERAL_ERROR_RETRIES: u64 = 3;

/// Opens a read-write session on `d` and makes sure the application is logged in as User.
///
/// A wrong PIN fails once and is never retried (no lockout loop).
pub(super) fn open_session(cfg: &HsmConfig, d: &Device, metrics: &HsmMetrics) -> Result<Session> {
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
            Err(CkError::Pkcs11(RvError::GeneralError, _)) if tries < GENERAL_ERROR_RETRIES => {
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

//! Root administration: creating the root, reading its state and attributes. These need the HSM
//! and no keyring (a keyring opens only over a token that already holds a root).
//!
//! Making a root takes two logins in turn, because only the Security Officer can make a trusted
//! L0 and the SO cannot make private objects: the SO makes the L0, then the User makes its MAC
//! key. A PKCS#11 application is logged in as one of them at a time, so these functions open and
//! close their own sessions: call them while no [`Hsm`] of this token is open in the process.

use secrecy::SecretString;

use crate::config::HsmConfig;
use crate::custody::{self, CustodyReport};
use crate::error::{Error, KeyringError};
use crate::hsm::{with_so_session, Hsm};
use crate::root::{self, RootAttributes, RootInfo, RootRole};
use crate::types::{RootId, TokenIdentity};

/// What `init` found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitOutcome {
    /// A new root was created.
    Created(RootId),
    /// A root already existed; nothing changed.
    Exists(RootId),
}

/// The state of the roots on the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootStatus {
    /// The token.
    pub token: TokenIdentity,
    /// Every root found, oldest first, with its role.
    pub roots: Vec<RootInfo>,
    /// The custody check of every root.
    pub custody: CustodyReport,
}

/// Opens `cfg`'s token as User, off the async runtime.
pub(crate) async fn open_user(cfg: &HsmConfig) -> Result<Hsm, KeyringError> {
    let cfg = cfg.clone();
    Ok(tokio::task::spawn_blocking(move || Hsm::open(cfg))
        .await
        .map_err(|e| KeyringError::internal(format!("HSM open task: {e}")))??)
}

/// Runs `f` in a Security Officer session of `cfg`'s token, off the async runtime.
pub(crate) async fn as_so<T, F>(
    cfg: &HsmConfig,
    so_pin: &SecretString,
    f: F,
) -> Result<T, KeyringError>
where
    T: Send + 'static,
    F: FnOnce(&mut crate::hsm::SessionCtx<'_>) -> Result<T, Error> + Send + 'static,
{
    let cfg = cfg.clone();
    let so_pin = so_pin.clone();
    Ok(
        tokio::task::spawn_blocking(move || with_so_session(&cfg, &so_pin, f))
            .await
            .map_err(|e| KeyringError::internal(format!("SO session task: {e}")))??,
    )
}

/// Makes the audit key as the Security Officer unless the token has one (`rootseal init`,
/// `root rotate`, `dev`). Returns true when it made it. Call it while no [`Hsm`] of this token is
/// open as User in the process.
///
/// # Errors
/// HSM errors; a wrong SO PIN.
pub async fn ensure_audit_key(
    cfg: &HsmConfig,
    so_pin: &SecretString,
) -> Result<bool, KeyringError> {
    let made = as_so(cfg, so_pin, crate::audit_key::ensure).await?;
    if made {
        tracing::info!("Security Officer made the audit signing key rootseal-audit");
    }
    Ok(made)
}

/// Makes a new L0 as the Security Officer, with a generation above every root the SO sees.
pub(crate) async fn new_l0(cfg: &HsmConfig, so_pin: &SecretString) -> Result<RootId, KeyringError> {
    let id = as_so(cfg, so_pin, |ctx| {
        let generation = root::next_generation(ctx)?;
        root::create_l0(ctx, generation)
    })
    .await?;
    tracing::info!(root = %id, "Security Officer made a new L0");
    Ok(id)
}

/// Makes the MAC key of root `id` as the User (unless it exists) and checks that the root works.
pub(crate) async fn complete_root(hsm: &Hsm, id: RootId) -> Result<(), KeyringError> {
    hsm.run(move |ctx| {
        if root::keys(ctx, &id)?.1.is_none() {
            root::create_mac(ctx, &id)?;
        }
        if root::self_test(ctx, &id) {
            Ok(())
        } else {
            Err(Error::TokenState(format!(
                "the new root {id} fails its self-test"
            )))
        }
    })
    .await?;
    Ok(())
}

/// Creates the root on the token unless one exists: the L0 and the audit signing key
/// (`rootseal-audit`) by the Security Officer (`so_pin`), then its MAC key by the User. A token
/// whose root predates the audit log gets its audit key. Idempotent, and a root cut short by a crash between the two
/// keys is completed.
///
/// # Errors
/// HSM errors; [`Error::SoPinIncorrect`] inside [`KeyringError::Internal`] for a wrong SO PIN.
pub async fn init_root(
    cfg: &HsmConfig,
    so_pin: &SecretString,
) -> Result<InitOutcome, KeyringError> {
    let roots = {
        let hsm = open_user(cfg).await?;
        hsm.run(root::list).await?
    };
    if let Some(r) = roots.iter().rev().find(|r| r.complete) {
        // An installation made before the audit log gets its audit key now.
        ensure_audit_key(cfg, so_pin).await?;
        return Ok(InitOutcome::Exists(r.id));
    }
    // A trusted L0 whose MAC key is missing: the SO made it, the process died before the User
    // step. An untrusted one is not ours to complete (anyone with the PIN could have made it).
    let half = roots
        .iter()
        .rev()
        .find(|r| r.trusted && !r.complete && r.role == RootRole::Next)
        .map(|r| r.id);
    let id = match half {
        Some(id) => id,
        None => new_l0(cfg, so_pin).await?,
    };
    // The audit key is made with the root, by the same Security Officer.
    ensure_audit_key(cfg, so_pin).await?;
    let hsm = open_user(cfg).await?;
    complete_root(&hsm, id).await?;
    Ok(InitOutcome::Created(id))
}

/// The roots on the token and their custody check.
///
/// # Errors
/// HSM errors.
pub async fn root_status(hsm: &Hsm) -> Result<RootStatus, KeyringError> {
    let token = hsm.identity().clone();
    let (roots, custody) = hsm
        .run(|ctx| Ok((root::list(ctx)?, custody::check(ctx)?)))
        .await?;
    Ok(RootStatus {
        token,
        roots,
        custody,
    })
}

/// Reads back the protection attributes of root `id`'s L0 key (or MAC key).
///
/// # Errors
/// HSM errors; `Integrity` when the root is missing.
pub async fn root_attributes(
    hsm: &Hsm,
    id: RootId,
    mac: bool,
) -> Result<RootAttributes, KeyringError> {
    Ok(hsm
        .run(move |ctx| root::read_attributes(ctx, &id, mac))
        .await?)
}

/// Makes a root with the templates of rootseal 0.1.0 (`test-hooks` only), as that release's
/// `rootseal init` did (`next`: as its root rotation did).
///
/// # Errors
/// HSM errors.
#[cfg(feature = "test-hooks")]
pub async fn testing_init_previous_release_root(
    hsm: &Hsm,
    next: bool,
) -> Result<RootId, KeyringError> {
    Ok(hsm
        .run(move |ctx| root::create_previous_release(ctx, next))
        .await?)
}

/// Makes only the Security Officer half of a new root (its L0, no MAC key), as a rotation killed
/// between its two steps leaves it (`test-hooks` only).
///
/// # Errors
/// HSM errors.
#[cfg(feature = "test-hooks")]
pub async fn testing_new_l0(
    cfg: &HsmConfig,
    so_pin: &SecretString,
) -> Result<RootId, KeyringError> {
    new_l0(cfg, so_pin).await
}

//! Root administration: creating the root, reading its state and attributes. These need an
//! [`Hsm`] and no keyring (a keyring opens only over a token that already holds a root).

use crate::error::KeyringError;
use crate::hsm::Hsm;
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
    /// Every root found, with its role.
    pub roots: Vec<RootInfo>,
}

/// Creates the root (L0 wrap key and MAC key) on the token unless one exists.
///
/// # Errors
/// HSM errors.
pub async fn init_root(hsm: &Hsm) -> Result<InitOutcome, KeyringError> {
    Ok(hsm
        .run(|ctx| {
            let roots = root::list(ctx)?;
            // A root whose MAC key is missing (a process killed between the two key
            // generations) never sealed anything: sealing needs the MAC key. Replace it.
            for r in roots
                .iter()
                .filter(|r| r.role == RootRole::Active && !r.complete)
            {
                tracing::warn!(root = %r.id, "removing a half-created root");
                root::destroy(ctx, &r.id)?;
            }
            if let Some(id) = root::active(ctx)? {
                return Ok(InitOutcome::Exists(id));
            }
            Ok(InitOutcome::Created(root::create(ctx, RootRole::Active)?))
        })
        .await?)
}

/// The roots on the token.
///
/// # Errors
/// HSM errors.
pub async fn root_status(hsm: &Hsm) -> Result<RootStatus, KeyringError> {
    let token = hsm.identity().clone();
    let roots = hsm.run(root::list).await?;
    Ok(RootStatus { token, roots })
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

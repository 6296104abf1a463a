//! The store registry: which stores hold records sealed under this token's roots.
//!
//! Root rotation must re-seal every record rootseal ever wrote, wherever it lives: the KV store
//! of `[storage]`, the local file store next to it, the `key_dir` of a KMS plugin configured
//! inline, another installation's store on the same token. Each [`crate::Keyring`] therefore
//! registers the stores it writes to as private data objects on the token itself
//! ([`crate::templates::store_registry_entry`]), one object per store, created once and never
//! changed (two processes registering the same store at once only make a duplicate, which reads
//! as one). Rotation reads the registry and refuses to destroy an old root while a registered
//! store could not be re-sealed.
//!
//! A store only its own writer can reach (an OpenBao plugin mount's storage) is re-sealed by that
//! writer ([`crate::Keyring::reseal_own_stores`]), which then leaves a **moved marker** on the
//! token, `<locator> <root id>` ([`mark_moved`]): rotation counts a store whose marker names the
//! rotation's target root as done, although it cannot open it.

use cryptoki::object::{Attribute, AttributeType, ObjectClass};

use crate::error::Result;
use crate::hsm::SessionCtx;
use crate::templates;
use crate::types::RootId;

/// `CKA_LABEL` of every registry entry.
const LABEL: &str = "rootseal-store";

/// `CKA_LABEL` of every moved marker.
const MOVED_LABEL: &str = "rootseal-store-moved";

/// The locators of every registered store, sorted, without duplicates.
pub(crate) fn list(ctx: &mut SessionCtx<'_>) -> Result<Vec<String>> {
    values(ctx, LABEL)
}

/// The value of every data object labelled `label`, sorted, without duplicates.
fn values(ctx: &mut SessionCtx<'_>, label: &str) -> Result<Vec<String>> {
    let handles = ctx.find(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        for a in ctx.attributes(h, &[AttributeType::Value])? {
            if let Attribute::Value(v) = a {
                if let Ok(s) = String::from_utf8(v) {
                    out.push(s);
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Registers `locators` that are not registered yet.
pub(crate) fn register(ctx: &mut SessionCtx<'_>, locators: &[String]) -> Result<()> {
    let known = list(ctx)?;
    for l in locators {
        if !known.contains(l) {
            ctx.create_object(&templates::store_registry_entry(LABEL, l))?;
            tracing::info!(store = %l, "store registered on the token for root rotation");
        }
    }
    Ok(())
}

/// The moved marker of store `locator` for root `root`.
pub(crate) fn moved_marker(locator: &str, root: &RootId) -> String {
    format!("{locator} {}", root.to_hex())
}

/// Whether store `locator` left a marker saying every record it holds is under `root`.
pub(crate) fn is_moved(ctx: &mut SessionCtx<'_>, locator: &str, root: &RootId) -> Result<bool> {
    let marker = moved_marker(locator, root);
    Ok(values(ctx, MOVED_LABEL)?.contains(&marker))
}

/// Marks `locators` as holding every record under `root` (after their writer re-sealed them).
pub(crate) fn mark_moved(
    ctx: &mut SessionCtx<'_>,
    locators: &[String],
    root: &RootId,
) -> Result<()> {
    let known = values(ctx, MOVED_LABEL)?;
    for l in locators {
        let marker = moved_marker(l, root);
        if !known.contains(&marker) {
            ctx.create_object(&templates::store_registry_entry(MOVED_LABEL, &marker))?;
            tracing::info!(store = %l, root = %root, "store marked as re-sealed under the current root");
        }
    }
    Ok(())
}

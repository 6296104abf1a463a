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

use cryptoki::object::{Attribute, AttributeType, ObjectClass};

use crate::error::Result;
use crate::hsm::SessionCtx;
use crate::templates;

/// `CKA_LABEL` of every registry entry.
const LABEL: &str = "rootseal-store";

/// The locators of every registered store, sorted, without duplicates.
pub(crate) fn list(ctx: &mut SessionCtx<'_>) -> Result<Vec<String>> {
    let handles = ctx.find(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Label(LABEL.as_bytes().to_vec()),
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

//! Work done on an HSM worker, inside one session: checking and unwrapping a blob into its L1
//! session object, making and sealing a new L1, MACing a record, choosing the root to seal under.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;

use super::record::Record;
use super::state::BlobRef;
use crate::blob::{self, BlobHeader, SealedBlob};
use crate::error::{Error, Result};
use crate::hsm::SessionCtx;
use crate::root;
use crate::templates;
use crate::types::{KeyOp, RootId};

/// Seconds since the Unix epoch.
pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Refuses a blob sealed by another token, or one that is not an L1.
pub(super) fn check_blob_identity(ctx: &SessionCtx<'_>, b: &SealedBlob) -> Result<()> {
    let h = &b.header.hsm;
    let me = ctx.identity;
    if !h.same_token(me) {
        return Err(Error::Foreign(format!(
            "key {:?} v{} was sealed by token {} {} serial {}, but this token is {}",
            b.header.key_name, b.header.key_version, h.manufacturer, h.model, h.serial, me
        )));
    }
    if b.header.level != 1 {
        return Err(Error::Foreign(format!(
            "blob level {} is not 1",
            b.header.level
        )));
    }
    Ok(())
}

/// The L1 session object for `b`: from the session cache, or verified and unwrapped under L0.
pub(super) fn l1_handle(ctx: &mut SessionCtx<'_>, b: &BlobRef) -> Result<ObjectHandle> {
    if let Some(h) = ctx.cached_l1(&b.digest) {
        return Ok(h);
    }
    check_blob_identity(ctx, &b.parsed)?;
    let root = root::handles(ctx, &b.parsed.root_id)?;
    ctx.hmac_verify(root.mac, &b.parsed.signed, &b.parsed.mac)?;
    let h = ctx.unwrap_kwp(root.wrap, &b.parsed.wrapped, &templates::l1_in_use())?;
    ctx.cache_l1(b.digest, h);
    Ok(h)
}

/// Generates a new L1 inside the HSM and seals it under `root_id`. Returns the raw blob.
pub(super) fn seal_new_l1(
    ctx: &mut SessionCtx<'_>,
    root_id: &RootId,
    name: &str,
    version: u32,
    ops: &[KeyOp],
) -> Result<Vec<u8>> {
    seal_generated_l1(ctx, root_id, name, version, ops, &templates::l1_new())
}

/// [`seal_new_l1`] with the L1 made from `template`.
pub(super) fn seal_generated_l1(
    ctx: &mut SessionCtx<'_>,
    root_id: &RootId,
    name: &str,
    version: u32,
    ops: &[KeyOp],
    template: &[cryptoki::object::Attribute],
) -> Result<Vec<u8>> {
    let root = root::handles(ctx, root_id)?;
    let k = ctx.generate(&Mechanism::AesKeyGen, template)?;
    let wrapped = ctx.wrap_kwp(root.wrap, k);
    ctx.destroy_transient(k, "new L1");
    let header = BlobHeader {
        level: 1,
        key_name: name.to_owned(),
        key_version: version,
        root_id: root_id.to_hex(),
        hsm: ctx.identity.clone(),
        created: now(),
        allowed_ops: ops.to_vec(),
        policy_digest: String::new(),
        algorithm: "aes-256-gcm".into(),
        wrap_mechanism: "CKM_AES_KEY_WRAP_PAD".into(),
    };
    seal_blob(ctx, root.mac, &header, &wrapped?)
}

/// Encodes `header` and `wrapped` as a blob and appends its MAC, computed in the HSM.
pub(super) fn seal_blob(
    ctx: &mut SessionCtx<'_>,
    mac_key: ObjectHandle,
    header: &BlobHeader,
    wrapped: &[u8],
) -> Result<Vec<u8>> {
    let unsigned = blob::encode_unsigned(header, wrapped)?;
    let mac = ctx.hmac(mac_key, &unsigned)?;
    Ok(blob::append_mac(unsigned, &mac))
}

/// MACs a record under `root_id` (sets `root_id` and `mac`).
pub(super) fn mac_record(
    ctx: &mut SessionCtx<'_>,
    record: &mut Record,
    root_id: &RootId,
) -> Result<()> {
    let root = root::handles(ctx, root_id)?;
    record.root_id = root_id.to_hex();
    record.mac = String::new();
    let bytes = serde_json::to_vec(&*record)
        .map_err(|e| Error::Internal(format!("cannot serialise record: {e}")))?;
    let mac = ctx.hmac(root.mac, &bytes)?;
    record.mac = B64.encode(mac);
    Ok(())
}

/// Checks a record's MAC (over `signed`) with the MAC key of `root_id`.
pub(super) fn verify_record_mac(
    ctx: &mut SessionCtx<'_>,
    root_id: &RootId,
    signed: &[u8],
    mac: &[u8],
) -> Result<()> {
    let root = root::handles(ctx, root_id)?;
    ctx.hmac_verify(root.mac, signed, mac)
}

/// Where new blobs go: the current root (the newest complete, hardened root that works; during a
/// rotation, the root it is moving to).
pub(super) fn required_seal_target(ctx: &mut SessionCtx<'_>) -> Result<RootId> {
    root::current(ctx)?.ok_or(Error::NoCurrentRoot)
}

//! Finding, reading, relabelling and destroying objects (`C_FindObjects`, `C_GetAttributeValue`,
//! `C_SetAttributeValue`, `C_DestroyObject`), the per-session handle cache, and the L1 cache.

use cryptoki::object::{Attribute, AttributeType, ObjectHandle};

use super::{counted, ObjectKey, SessionCtx};
use crate::error::Result;
use crate::metrics::HsmOp;

impl SessionCtx<'_> {
    /// Finds objects matching `template`.
    pub(crate) fn find(&mut self, template: &[Attribute]) -> Result<Vec<ObjectHandle>> {
        counted(
            self.metrics,
            HsmOp::FindObjects,
            self.session.find_objects(template),
        )
    }

    /// Creates an object (a data object; keys are generated, never created from values).
    pub(crate) fn create_object(&mut self, template: &[Attribute]) -> Result<ObjectHandle> {
        counted(
            self.metrics,
            HsmOp::CreateObject,
            self.session.create_object(template),
        )
    }

    /// Destroys an object.
    pub(crate) fn destroy(&mut self, object: ObjectHandle) -> Result<()> {
        counted(
            self.metrics,
            HsmOp::DestroyObject,
            self.session.destroy_object(object),
        )
    }

    /// Destroys a transient session object, logging (never failing) when that does not work: the
    /// object then lives until its session closes.
    pub(crate) fn destroy_transient(&mut self, object: ObjectHandle, what: &'static str) {
        if let Err(e) = self.destroy(object) {
            tracing::warn!(what, error = %e, "cannot destroy a transient session object; it lives until its session closes");
        }
    }

    /// Reads attributes of an object.
    pub(crate) fn attributes(
        &mut self,
        object: ObjectHandle,
        types: &[AttributeType],
    ) -> Result<Vec<Attribute>> {
        Ok(self.session.get_attributes(object, types)?)
    }

    /// Whether array attributes can be read in this session ([`crate::hsm::raw::shares_instance`]):
    /// false through p11-kit's client module, where the custody check tests enforcement instead.
    pub(crate) fn reads_array_attributes(&self) -> bool {
        crate::hsm::raw::shares_instance(self.module, self.session)
    }

    /// Reads the `CKA_UNWRAP_TEMPLATE` of an object (`None`: it has none).
    pub(crate) fn unwrap_template(
        &mut self,
        object: ObjectHandle,
    ) -> Result<Option<Vec<Attribute>>> {
        crate::hsm::raw::unwrap_template(self.module, self.session, object)
    }

    /// Reads the `CKA_ALLOWED_MECHANISMS` of an object, without the null-`pValue` length query
    /// that p11-kit's RPC cannot carry for it ([`crate::hsm::raw::allowed_mechanisms`]).
    pub(crate) fn allowed_mechanisms(
        &mut self,
        object: ObjectHandle,
    ) -> Result<crate::hsm::AllowedMechanisms> {
        crate::hsm::raw::allowed_mechanisms(self.module, self.session, object)
    }

    /// Reads boolean attributes of an object.
    pub(crate) fn bool_attributes(
        &mut self,
        object: ObjectHandle,
        types: &[AttributeType],
    ) -> Result<Vec<(AttributeType, bool)>> {
        let attrs = self.attributes(object, types)?;
        Ok(attrs
            .into_iter()
            .filter_map(|a| {
                let t = a.attribute_type();
                match a {
                    Attribute::Sensitive(b)
                    | Attribute::Extractable(b)
                    | Attribute::NeverExtractable(b)
                    | Attribute::AlwaysSensitive(b)
                    | Attribute::Local(b)
                    | Attribute::Token(b)
                    | Attribute::Private(b)
                    | Attribute::Wrap(b)
                    | Attribute::Unwrap(b)
                    | Attribute::Encrypt(b)
                    | Attribute::Decrypt(b)
                    | Attribute::Sign(b)
                    | Attribute::Verify(b)
                    | Attribute::Derive(b)
                    | Attribute::Trusted(b)
                    | Attribute::WrapWithTrusted(b)
                    | Attribute::Modifiable(b)
                    | Attribute::Copyable(b)
                    | Attribute::Destroyable(b) => Some((t, b)),
                    _ => None,
                }
            })
            .collect())
    }

    /// A cached handle of a token object, valid for this session.
    pub(crate) fn cached_object(&self, key: &ObjectKey) -> Option<ObjectHandle> {
        self.cache.objects.get(key).copied()
    }

    /// Remembers a token object's handle for this session.
    pub(crate) fn remember_object(&mut self, key: ObjectKey, handle: ObjectHandle) {
        self.cache.objects.insert(key, handle);
    }

    /// Forgets every cached token-object handle (after objects were destroyed or changed).
    pub(crate) fn forget_objects(&mut self) {
        self.cache.objects.clear();
    }

    /// The cached unwrapped L1 for the blob with digest `digest`, if any (from any worker of
    /// this module generation: session objects are visible to every session of the process).
    pub(crate) fn cached_l1(&self, digest: &[u8; 32]) -> Option<ObjectHandle> {
        self.l1.get(digest, self.owner, self.generation)
    }

    /// Remembers an unwrapped L1 session object; destroys what the cache evicts of this worker's.
    pub(crate) fn cache_l1(&mut self, digest: [u8; 32], handle: ObjectHandle) {
        for old in self.l1.insert(digest, handle, self.owner, self.generation) {
            self.destroy_transient(old, "evicted L1");
        }
    }
}

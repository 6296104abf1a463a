//! Making, wrapping and unwrapping keys (`C_GenerateKey`, `C_WrapKey`, `C_UnwrapKey`).

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};

use super::{counted, integrity, SessionCtx};
use crate::error::Result;
use crate::metrics::HsmOp;

impl SessionCtx<'_> {
    /// Generates a key with `mechanism` and `template` (one of [`crate::templates`]).
    pub(crate) fn generate(
        &mut self,
        mechanism: &Mechanism,
        template: &[Attribute],
    ) -> Result<ObjectHandle> {
        counted(
            self.metrics,
            HsmOp::GenerateKey,
            self.session.generate_key(mechanism, template),
        )
    }

    /// Generates a key pair with `mechanism` and the (public, private) templates (from
    /// [`crate::templates`]); returns (public, private).
    pub(crate) fn generate_key_pair(
        &mut self,
        mechanism: &Mechanism,
        public: &[Attribute],
        private: &[Attribute],
    ) -> Result<(ObjectHandle, ObjectHandle)> {
        counted(
            self.metrics,
            HsmOp::GenerateKey,
            self.session.generate_key_pair(mechanism, public, private),
        )
    }

    /// Generates a key with `template` and the attribute-array attribute `CKA_UNWRAP_TEMPLATE =
    /// unwrap` (through [`crate::hsm::raw`]: cryptoki does not wrap array attributes).
    pub(crate) fn generate_with_unwrap_template(
        &mut self,
        mechanism: &Mechanism,
        template: &[Attribute],
        unwrap: &[Attribute],
    ) -> Result<ObjectHandle> {
        self.metrics.count(HsmOp::GenerateKey);
        crate::hsm::raw::generate_key_with_unwrap_template(
            self.module,
            self.session,
            mechanism.mechanism_type().into(),
            template,
            unwrap,
        )
        .inspect_err(|_| self.metrics.error())
    }

    /// Wraps `key` under `wrapping` with CKM_AES_KEY_WRAP_PAD.
    pub(crate) fn wrap_kwp(
        &mut self,
        wrapping: ObjectHandle,
        key: ObjectHandle,
    ) -> Result<Vec<u8>> {
        counted(
            self.metrics,
            HsmOp::WrapKey,
            self.session
                .wrap_key(&Mechanism::AesKeyWrapPad, wrapping, key),
        )
    }

    /// Wraps `key` under `wrapping` with `mechanism` (the custody check's enforcement probes).
    pub(crate) fn wrap_with(
        &mut self,
        mechanism: &Mechanism<'_>,
        wrapping: ObjectHandle,
        key: ObjectHandle,
    ) -> Result<Vec<u8>> {
        counted(
            self.metrics,
            HsmOp::WrapKey,
            self.session.wrap_key(mechanism, wrapping, key),
        )
    }

    /// Unwraps a KWP blob under `wrapping` into a new object with `template`, the token's own
    /// error kept (the custody check's enforcement probes; [`SessionCtx::unwrap_kwp`] maps a
    /// refusal to an integrity failure).
    pub(crate) fn unwrap_kwp_raw(
        &mut self,
        wrapping: ObjectHandle,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> Result<ObjectHandle> {
        counted(
            self.metrics,
            HsmOp::UnwrapKey,
            self.session
                .unwrap_key(&Mechanism::AesKeyWrapPad, wrapping, wrapped, template),
        )
    }

    /// Unwraps a KWP blob under `wrapping` into a new object with `template` (one of
    /// [`crate::templates`]). A tampered blob is [`crate::error::Error::Integrity`].
    pub(crate) fn unwrap_kwp(
        &mut self,
        wrapping: ObjectHandle,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> Result<ObjectHandle> {
        counted(
            self.metrics,
            HsmOp::UnwrapKey,
            self.session
                .unwrap_key(&Mechanism::AesKeyWrapPad, wrapping, wrapped, template),
        )
        .map_err(|e| integrity(e, "wrapped key"))
    }

    /// Unwraps an RSA-OAEP ciphertext (`hash`, MGF1 with the same hash, no label) under the private
    /// key `wrapping` into a new object with `template`. A ciphertext that does not decrypt is
    /// [`crate::error::Error::Integrity`]; a hash the token lacks for OAEP is the token's own
    /// error (`CKR_MECHANISM_PARAM_INVALID` and kin).
    pub(crate) fn unwrap_oaep(
        &mut self,
        wrapping: ObjectHandle,
        wrapped: &[u8],
        hash: cryptoki::mechanism::MechanismType,
        mgf: cryptoki::mechanism::rsa::PkcsMgfType,
        template: &[Attribute],
    ) -> Result<ObjectHandle> {
        use cryptoki::mechanism::rsa::{PkcsOaepParams, PkcsOaepSource};
        let mech = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()));
        counted(
            self.metrics,
            HsmOp::UnwrapKey,
            self.session.unwrap_key(&mech, wrapping, wrapped, template),
        )
        .map_err(|e| match e.rv() {
            Some(
                cryptoki::error::RvError::EncryptedDataInvalid
                | cryptoki::error::RvError::EncryptedDataLenRange
                | cryptoki::error::RvError::WrappedKeyInvalid
                | cryptoki::error::RvError::WrappedKeyLenRange,
            ) => crate::error::Error::Integrity("oaep"),
            _ => e,
        })
    }
}

//! HMAC-SHA256 and Ed25519 inside the HSM (`C_Sign`, `C_Verify`).

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;

use super::{counted, integrity, SessionCtx};
use crate::error::Result;
use crate::metrics::HsmOp;

impl SessionCtx<'_> {
    /// HMAC-SHA256 inside the HSM.
    pub(crate) fn hmac(&mut self, key: ObjectHandle, data: &[u8]) -> Result<Vec<u8>> {
        counted(
            self.metrics,
            HsmOp::Sign,
            self.session.sign(&Mechanism::Sha256Hmac, key, data),
        )
    }

    /// An Ed25519 signature (`CKM_EDDSA`, pure) of `data` by the private key `key`.
    pub(crate) fn sign_eddsa(&mut self, key: ObjectHandle, data: &[u8]) -> Result<Vec<u8>> {
        use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
        counted(
            self.metrics,
            HsmOp::Sign,
            self.session.sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                key,
                data,
            ),
        )
    }

    /// Verifies an HMAC-SHA256 inside the HSM (constant time there). A mismatch is
    /// [`crate::error::Error::Integrity`].
    pub(crate) fn hmac_verify(&mut self, key: ObjectHandle, data: &[u8], tag: &[u8]) -> Result<()> {
        counted(
            self.metrics,
            HsmOp::Verify,
            self.session.verify(&Mechanism::Sha256Hmac, key, data, tag),
        )
        .map_err(|e| integrity(e, "blob mac"))
    }
}

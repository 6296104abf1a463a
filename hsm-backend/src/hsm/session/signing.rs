//! Signatures and MACs inside the HSM (`C_Sign`, `C_Verify`): HMAC-SHA256 for blobs and
//! records, Ed25519 for operator and audit keys, and any mechanism for transit `sign`, `verify`
//! and `hmac`.

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;

use cryptoki::error::RvError;

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

    /// Ed25519 signature (`CKM_EDDSA`, pure) of `data` by the private key `key`: 64 bytes.
    pub(crate) fn eddsa_sign(&mut self, key: ObjectHandle, data: &[u8]) -> Result<Vec<u8>> {
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

    /// Signs `data` with `key` and `mechanism` inside the HSM.
    pub(crate) fn sign_with(
        &mut self,
        mechanism: &Mechanism<'_>,
        key: ObjectHandle,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        counted(
            self.metrics,
            HsmOp::Sign,
            self.session.sign(mechanism, key, data),
        )
    }

    /// Verifies `signature` over `data` with `key` and `mechanism` inside the HSM: `Ok(false)`
    /// when it does not verify.
    pub(crate) fn verify_with(
        &mut self,
        mechanism: &Mechanism<'_>,
        key: ObjectHandle,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        match counted(
            self.metrics,
            HsmOp::Verify,
            self.session.verify(mechanism, key, data, signature),
        ) {
            Ok(()) => Ok(true),
            Err(e) => match e.rv() {
                Some(
                    RvError::SignatureInvalid
                    | RvError::SignatureLenRange
                    | RvError::DataLenRange
                    | RvError::DataInvalid,
                ) => Ok(false),
                _ => Err(e),
            },
        }
    }
}

//! AES-GCM and RSA-OAEP inside the HSM (`C_EncryptInit`/`C_Encrypt`, `C_DecryptInit`/`C_Decrypt`).

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use zeroize::Zeroizing;

use super::{counted, integrity, SessionCtx};
use crate::error::{Error, Result};
use crate::metrics::HsmOp;

/// GCM IV length.
const IV_LEN: usize = 12;
/// GCM tag length.
const TAG_LEN: usize = 16;

impl SessionCtx<'_> {
    /// A fresh 96-bit IV from the HSM RNG (via the pool).
    fn iv(&mut self) -> Result<[u8; IV_LEN]> {
        let mut iv = [0u8; IV_LEN];
        self.pooled_random(&mut iv)?;
        Ok(iv)
    }

    /// AES-256-GCM inside the HSM; returns `iv ‖ ct ‖ tag`.
    pub(crate) fn gcm_encrypt(
        &mut self,
        key: ObjectHandle,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let iv = self.iv()?;
        self.gcm_encrypt_with_iv(key, iv, aad, plaintext)
    }

    /// AES-GCM inside the HSM with the given IV (a convergent key's, derived inside the HSM by
    /// [`SessionCtx::aes_block`]); returns `iv ‖ ct ‖ tag`.
    pub(crate) fn gcm_encrypt_with_iv(
        &mut self,
        key: ObjectHandle,
        mut iv: [u8; IV_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let params = GcmParams::new(&mut iv, aad, (TAG_LEN as u64 * 8).into())?;
        let ct = counted(
            self.metrics,
            HsmOp::Encrypt,
            self.session
                .encrypt(&Mechanism::AesGcm(params), key, plaintext),
        )?;
        let mut out = Vec::with_capacity(IV_LEN + ct.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// One AES block under `key` (`CKM_AES_ECB`), inside the HSM: the pseudorandom function of a
    /// convergent key's nonce (its input is a SHA-256 digest, so it never meets a block GCM uses).
    pub(crate) fn aes_block(&mut self, key: ObjectHandle, block: &[u8; 16]) -> Result<[u8; 16]> {
        let out = counted(
            self.metrics,
            HsmOp::Encrypt,
            self.session.encrypt(&Mechanism::AesEcb, key, block),
        )?;
        <[u8; 16]>::try_from(out.as_slice())
            .map_err(|_| Error::Internal("AES-ECB returned another length".into()))
    }

    /// Opens `iv ‖ ct ‖ tag` inside the HSM. A bad tag is [`Error::Integrity`].
    pub(crate) fn gcm_decrypt(
        &mut self,
        key: ObjectHandle,
        aad: &[u8],
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        if data.len() < IV_LEN + TAG_LEN {
            return Err(Error::Integrity("ciphertext too short"));
        }
        let (iv, ct) = data.split_at(IV_LEN);
        let mut iv = <[u8; IV_LEN]>::try_from(iv).map_err(|_| Error::Integrity("iv"))?;
        let params = GcmParams::new(&mut iv, aad, (TAG_LEN as u64 * 8).into())?;
        let pt = counted(
            self.metrics,
            HsmOp::Decrypt,
            self.session.decrypt(&Mechanism::AesGcm(params), key, ct),
        )
        .map_err(|e| integrity(e, "gcm tag"))?;
        Ok(Zeroizing::new(pt))
    }

    /// RSA-OAEP (SHA-1, MGF1-SHA-1: the only OAEP SoftHSM2 2.6.1 has) encryption with a public
    /// key object.
    pub(crate) fn oaep_encrypt(&mut self, key: ObjectHandle, plaintext: &[u8]) -> Result<Vec<u8>> {
        counted(
            self.metrics,
            HsmOp::Encrypt,
            self.session.encrypt(&oaep(), key, plaintext),
        )
    }

    /// RSA-OAEP decryption with a private key object. A ciphertext that does not decrypt is
    /// [`Error::Integrity`].
    pub(crate) fn oaep_decrypt(
        &mut self,
        key: ObjectHandle,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let pt = counted(
            self.metrics,
            HsmOp::Decrypt,
            self.session.decrypt(&oaep(), key, ciphertext),
        )
        .map_err(|e| match e.rv() {
            Some(
                cryptoki::error::RvError::EncryptedDataInvalid
                | cryptoki::error::RvError::EncryptedDataLenRange
                | cryptoki::error::RvError::GeneralError,
            ) => Error::Integrity("oaep"),
            _ => e,
        })?;
        Ok(Zeroizing::new(pt))
    }
}

/// The OAEP mechanism rootseal uses.
fn oaep() -> Mechanism<'static> {
    use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
    use cryptoki::mechanism::MechanismType;
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    ))
}

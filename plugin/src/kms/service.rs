//! The `pb.Wrapper` and `metadata.Metadata` gRPC services OpenBao calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rootseal_hsm::KeyringError;
use rootseal_hsm::Sealed;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::backend::{Opener, PendingKeys, SealKeys};
use super::config::{SealSettings, PIN_KEYS};
use super::proto::{metadata, pb, wrapping};

/// `KeyInfo.mechanism` of rootseal ciphertexts: `CKM_AES_GCM` (AES-256-GCM inside the HSM).
pub const MECHANISM_AES_GCM: u64 = 0x1087;
/// The wrapper type reported by `Type`, also the seal stanza name.
pub const WRAPPER_TYPE: &str = "rootseal";
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
const MAX_INSTANCES: usize = 64;

/// `<key_name>/v<version>`.
pub fn key_id(name: &str, version: u32) -> String {
    format!("{name}/v{version}")
}

/// Parse a key id made by [`key_id`].
pub fn parse_key_id(id: &str) -> Option<(&str, u32)> {
    let (name, v) = id.rsplit_once("/v")?;
    let v: u32 = v.parse().ok().filter(|v| *v > 0)?;
    (!name.is_empty()).then_some((name, v))
}

/// The `Wrapper` service. Each successful `SetConfig` creates an instance (OpenBao passes its
/// `wrapper_id` back on every later call); instances with the same settings share one open
/// keyring, so the HSM is logged in to once per process.
pub struct WrapperService {
    opener: Arc<dyn Opener>,
    instances: Mutex<HashMap<String, Arc<dyn SealKeys>>>,
    opened: tokio::sync::Mutex<HashMap<SealSettings, Arc<dyn SealKeys>>>,
}

impl WrapperService {
    /// A service that opens seal instances with `opener`.
    pub fn new(opener: Arc<dyn Opener>) -> Self {
        Self {
            opener,
            instances: Mutex::new(HashMap::new()),
            opened: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    fn instance(&self, id: &str) -> Result<Arc<dyn SealKeys>, Status> {
        let map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        // NotFound is what go-kms-wrapping's client maps to ErrNoInstance.
        map.get(id)
            .cloned()
            .ok_or_else(|| Status::not_found("no such wrapper instance (call SetConfig first)"))
    }
}

/// The gRPC answer for a keyring error: the edge of the KMS face, so the one place its failures
/// are logged (with the internal cause, which the status never carries).
fn keyring_status(e: KeyringError, what: &str) -> Status {
    match e.cause() {
        Some(cause) => tracing::error!(what, error = %e, %cause, "seal call failed"),
        None => tracing::warn!(what, error = %e, "seal call refused"),
    }
    match e {
        KeyringError::InvalidCiphertext | KeyringError::Integrity(_) => {
            Status::invalid_argument(format!("{what}: ciphertext is not valid under this key"))
        }
        KeyringError::VersionTooOld | KeyringError::Lifecycle(_) => {
            Status::failed_precondition(format!("{what}: {e}"))
        }
        KeyringError::HsmUnavailable(_) | KeyringError::StoreUnavailable(_) => {
            Status::unavailable(format!("{what}: {e}"))
        }
        // Never NotFound: the Go client reads that code as "no such instance".
        KeyringError::NotFound => {
            Status::failed_precondition(format!("{what}: unseal key not found"))
        }
        other => Status::internal(format!("{what}: {other}")),
    }
}

fn random_id() -> Result<String, Status> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| Status::internal("random generator failed"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[tonic::async_trait]
impl pb::wrapper_server::Wrapper for WrapperService {
    async fn set_config(
        &self,
        req: Request<pb::SetConfigRequest>,
    ) -> Result<Response<pb::SetConfigResponse>, Status> {
        let opts = req.into_inner().options.unwrap_or_default();
        let settings = SealSettings::parse(&opts.with_config_map, opts.with_disallow_env_vars)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let keys = {
            let mut opened = self.opened.lock().await;
            match opened.get(&settings) {
                Some(k) => k.clone(),
                None => {
                    let k = match self.opener.open(settings.clone()).await {
                        Ok(k) => k,
                        // The token is not there yet (HSM starting, token directory not
                        // mounted): configure anyway and open on use, so OpenBao starts,
                        // stays sealed, and unseals once the token is back.
                        Err(e) if e.is_transient() => {
                            tracing::warn!(error = %e, "HSM token or key store not available: the seal will open it on use");
                            Arc::new(PendingKeys::new(self.opener.clone(), settings.clone()))
                                as Arc<dyn SealKeys>
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "seal configuration failed");
                            return Err(Status::failed_precondition(format!("rootseal seal: {e}")));
                        }
                    };
                    opened.insert(settings, k.clone());
                    k
                }
            }
        };
        let latest = match keys.latest_version().await {
            Ok(v) => Some(v),
            // A pending instance: no key id until the HSM answers.
            Err(KeyringError::HsmUnavailable(_)) => None,
            Err(e) => return Err(keyring_status(e, "SetConfig")),
        };
        let id = random_id()?;
        {
            let mut map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= MAX_INSTANCES {
                return Err(Status::resource_exhausted(
                    "too many wrapper instances; Finalize unused ones",
                ));
            }
            map.insert(id.clone(), keys.clone());
        }
        let mut metadata: HashMap<String, String> = keys.describe().into_iter().collect();
        metadata.insert("key_name".into(), keys.name().to_owned());
        if let Some(v) = latest {
            metadata.insert("key_id".into(), key_id(keys.name(), v));
        }
        metadata.insert("mechanism".into(), "AES-256-GCM in the HSM".into());
        tracing::info!(key = %keys.name(), version = ?latest, "seal configured");
        Ok(Response::new(pb::SetConfigResponse {
            wrapper_id: id,
            wrapper_config: Some(wrapping::WrapperConfig { metadata }),
        }))
    }

    async fn r#type(
        &self,
        req: Request<pb::TypeRequest>,
    ) -> Result<Response<pb::TypeResponse>, Status> {
        self.instance(&req.into_inner().wrapper_id)?;
        Ok(Response::new(pb::TypeResponse {
            r#type: WRAPPER_TYPE.to_owned(),
        }))
    }

    async fn key_id(
        &self,
        req: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::KeyIdResponse>, Status> {
        let keys = self.instance(&req.into_inner().wrapper_id)?;
        let v = keys
            .latest_version()
            .await
            .map_err(|e| keyring_status(e, "KeyId"))?;
        Ok(Response::new(pb::KeyIdResponse {
            key_id: key_id(keys.name(), v),
        }))
    }

    async fn encrypt(
        &self,
        req: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        let req = req.into_inner();
        let keys = self.instance(&req.wrapper_id)?;
        let out = encrypt_with(keys.as_ref(), req).await;
        let version = out
            .as_ref()
            .ok()
            .and_then(|r| r.ciphertext.as_ref()?.key_info.as_ref())
            .and_then(|k| parse_key_id(&k.key_id))
            .map(|(_, v)| v);
        audited(keys.as_ref(), "kms.encrypt", version, out)
            .await
            .map(Response::new)
    }

    async fn decrypt(
        &self,
        req: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        let req = req.into_inner();
        let keys = self.instance(&req.wrapper_id)?;
        // The version the ciphertext names (recorded whether or not it decrypts).
        let version = req
            .ciphertext
            .as_ref()
            .and_then(|b| b.key_info.as_ref())
            .and_then(|k| parse_key_id(&k.key_id))
            .map(|(_, v)| v);
        let out = decrypt_with(keys.as_ref(), req).await;
        audited(keys.as_ref(), "kms.decrypt", version, out)
            .await
            .map(Response::new)
    }

    async fn init(
        &self,
        req: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        self.instance(&req.into_inner().wrapper_id)?;
        Ok(Response::new(pb::InitResponse {}))
    }

    async fn finalize(
        &self,
        req: Request<pb::FinalizeRequest>,
    ) -> Result<Response<pb::FinalizeResponse>, Status> {
        let id = req.into_inner().wrapper_id;
        let removed = self
            .instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        match removed {
            Some(_) => Ok(Response::new(pb::FinalizeResponse {})),
            None => Err(Status::not_found("no such wrapper instance")),
        }
    }
}

/// `Encrypt` on `keys` (the instance already found).
async fn encrypt_with(
    keys: &dyn SealKeys,
    req: pb::EncryptRequest,
) -> Result<pb::EncryptResponse, Status> {
    let plaintext = Zeroizing::new(req.plaintext);
    let opts = req.options.unwrap_or_default();
    let version = if opts.with_key_id.is_empty() {
        None
    } else {
        match parse_key_id(&opts.with_key_id) {
            Some((name, v)) if name == keys.name() => Some(v),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "Encrypt: key id {:?} is not a version of {:?}",
                    opts.with_key_id,
                    keys.name()
                )))
            }
        }
    };
    let sealed = keys
        .encrypt(version, plaintext, opts.with_aad)
        .await
        .map_err(|e| keyring_status(e, "Encrypt"))?;
    if sealed.bytes.len() < IV_LEN + TAG_LEN {
        tracing::error!(
            len = sealed.bytes.len(),
            "keyring returned a short ciphertext"
        );
        return Err(Status::internal("Encrypt: internal error"));
    }
    let mut bytes = sealed.bytes;
    let ciphertext = bytes.split_off(IV_LEN);
    Ok(pb::EncryptResponse {
        ciphertext: Some(wrapping::BlobInfo {
            ciphertext,
            iv: bytes,
            key_info: Some(wrapping::KeyInfo {
                mechanism: MECHANISM_AES_GCM,
                key_id: key_id(keys.name(), sealed.version),
                wrapped_key: Vec::new(),
            }),
        }),
    })
}

/// `Decrypt` on `keys` (the instance already found).
async fn decrypt_with(
    keys: &dyn SealKeys,
    req: pb::DecryptRequest,
) -> Result<pb::DecryptResponse, Status> {
    let bad = |m: &str| Status::invalid_argument(format!("Decrypt: {m}"));
    let blob = req.ciphertext.ok_or_else(|| bad("no ciphertext"))?;
    let info = blob
        .key_info
        .ok_or_else(|| bad("ciphertext has no key info"))?;
    let (name, version) =
        parse_key_id(&info.key_id).ok_or_else(|| bad("ciphertext has no rootseal key id"))?;
    if name != keys.name() {
        return Err(bad("ciphertext was made by another key"));
    }
    if info.mechanism != MECHANISM_AES_GCM && info.mechanism != 0 {
        return Err(bad("unsupported mechanism"));
    }
    if blob.iv.len() != IV_LEN || blob.ciphertext.len() < TAG_LEN {
        return Err(bad("ciphertext is malformed"));
    }
    let mut bytes = blob.iv;
    bytes.extend_from_slice(&blob.ciphertext);
    let aad = req.options.map(|o| o.with_aad).unwrap_or_default();
    let pt = keys
        .decrypt(Sealed { version, bytes }, aad)
        .await
        .map_err(|e| keyring_status(e, "Decrypt"))?;
    Ok(pb::DecryptResponse {
        plaintext: pt.to_vec(),
    })
}

/// Records a seal call in the instance's audit log (operation, key, version, result, gRPC
/// code; never the plaintext, the ciphertext or the AAD) and answers only once the record is
/// durable: a record that cannot be written turns the answer into `UNAVAILABLE`.
async fn audited<T>(
    keys: &dyn SealKeys,
    kind: &str,
    version: Option<u32>,
    out: Result<T, Status>,
) -> Result<T, Status> {
    let code = match &out {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    let mut ev = rootseal_audit::Event::new(kind)
        .with("key", keys.name())
        .with("items", 1)
        .with("client", "openbao")
        .with("request_id", crate::routes::request_id())
        .with("grpc_code", code as i32)
        .with("result", if out.is_ok() { "ok" } else { "error" });
    if let Some(v) = version {
        ev.set("version", v);
    }
    match keys.record(ev).await {
        Ok(()) => out,
        Err(e) => {
            tracing::error!(error = %e, kind, "seal call refused: the audit log cannot be written");
            Err(Status::unavailable(format!("{kind}: {e}")))
        }
    }
}

/// The `Metadata` service: which config keys OpenBao must treat as secrets.
#[derive(Debug, Default)]
pub struct MetadataService;

#[tonic::async_trait]
impl metadata::metadata_server::Metadata for MetadataService {
    async fn get(
        &self,
        _req: Request<metadata::Empty>,
    ) -> Result<Response<metadata::MetadataResponse>, Status> {
        let mut fields: Vec<String> = PIN_KEYS.iter().map(|k| (*k).to_owned()).collect();
        fields.push("pin_file".to_owned());
        Ok(Response::new(metadata::MetadataResponse {
            sensitive_kms_fields: fields.clone(),
            sensitive_key_fields: fields,
        }))
    }
}

//! Scoped API tokens: the User and CO roles over HTTP.
//!
//! A token is shown once, when it is made (`rootseal token create`); the store keeps only its
//! SHA-256 and its grant (which keys, which operations, until when), HSM-MACed. A request's token
//! is found by comparing its SHA-256 with every stored digest in constant time (no early exit, so
//! neither the position nor the match leaks).

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::jcs::{self, hex, sha256};
use crate::role::Role;
use crate::GovError;

/// The `format` of a stored token list.
pub const TOKENS_FORMAT: &str = "rootseal-tokens";
/// The token list format version.
pub const TOKENS_VERSION: u16 = 1;
/// The prefix of every token rootseal issues (Vault's service tokens start `hvs.`).
pub const TOKEN_PREFIX: &str = "rst.";

/// An operation a token may be granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenOp {
    /// `encrypt/{key}` (User).
    Encrypt,
    /// `decrypt/{key}` (User).
    Decrypt,
    /// `rewrap/{key}` (User).
    Rewrap,
    /// `datakey/*/{key}` (User).
    Datakey,
    /// `bulk-seal/{key}`, `bulk-unseal/{key}` (User).
    Bulk,
    /// `GET keys/{key}`, `LIST keys` (CO).
    Read,
    /// `POST keys/{key}` (CO).
    Create,
    /// `keys/{key}/rotate` (CO).
    Rotate,
    /// `keys/{key}/config` (CO).
    Config,
    /// `sign/{key}` (User).
    Sign,
    /// `verify/{key}`: signatures and HMACs (User).
    Verify,
    /// `hmac/{key}` (User).
    Hmac,
}

impl TokenOp {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            TokenOp::Encrypt => "encrypt",
            TokenOp::Decrypt => "decrypt",
            TokenOp::Rewrap => "rewrap",
            TokenOp::Datakey => "datakey",
            TokenOp::Bulk => "bulk",
            TokenOp::Read => "read",
            TokenOp::Create => "create",
            TokenOp::Rotate => "rotate",
            TokenOp::Config => "config",
            TokenOp::Sign => "sign",
            TokenOp::Verify => "verify",
            TokenOp::Hmac => "hmac",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<TokenOp> {
        [
            TokenOp::Encrypt,
            TokenOp::Decrypt,
            TokenOp::Rewrap,
            TokenOp::Datakey,
            TokenOp::Bulk,
            TokenOp::Read,
            TokenOp::Create,
            TokenOp::Rotate,
            TokenOp::Config,
            TokenOp::Sign,
            TokenOp::Verify,
            TokenOp::Hmac,
        ]
        .into_iter()
        .find(|o| o.name() == s)
    }

    /// The role an operation belongs to: data-plane calls are User, key administration CO.
    pub fn role(self) -> Role {
        match self {
            TokenOp::Encrypt
            | TokenOp::Decrypt
            | TokenOp::Rewrap
            | TokenOp::Datakey
            | TokenOp::Bulk
            | TokenOp::Sign
            | TokenOp::Verify
            | TokenOp::Hmac => Role::User,
            TokenOp::Read | TokenOp::Create | TokenOp::Rotate | TokenOp::Config => Role::Co,
        }
    }
}

/// One token's grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenGrant {
    /// A public id of the token (Vault's accessor): names it in `list` and `revoke`.
    pub accessor: String,
    /// A human name.
    pub name: String,
    /// `user` or `co`.
    pub role: Role,
    /// The keys it may use.
    pub keys: Vec<String>,
    /// The operations it may do on them.
    pub ops: Vec<TokenOp>,
    /// Created (Unix seconds).
    pub created: u64,
    /// Expires (Unix seconds); `None`: never.
    pub expires: Option<u64>,
    /// Revoked tokens are refused.
    pub revoked: bool,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// The id of the `token.create` ceremony that issued it (`None`: issued with governance
    /// off, or by an older rootseal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceremony: Option<String>,
}

/// Why a grant refuses a call (for the log; the client sees a plain 403).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denial {
    /// No token matches.
    #[error("unknown token")]
    Unknown,
    /// Revoked.
    #[error("token {0} is revoked")]
    Revoked(String),
    /// Expired.
    #[error("token {0} expired")]
    Expired(String),
    /// Not granted this key.
    #[error("token {accessor} is not granted key {key:?}")]
    Key {
        /// The token.
        accessor: String,
        /// The key.
        key: String,
    },
    /// Not granted this operation.
    #[error("token {accessor} is not granted {op} on key {key:?}")]
    Op {
        /// The token.
        accessor: String,
        /// The operation.
        op: &'static str,
        /// The key.
        key: String,
    },
    /// Listing keys needs a CO token with `read`.
    #[error("token {0} may not list keys")]
    List(String),
}

impl TokenGrant {
    /// Whether the grant lets its holder do `op` on `key` at `now`.
    ///
    /// # Errors
    /// [`Denial`].
    pub fn allows(&self, key: &str, op: TokenOp, now: u64) -> Result<(), Denial> {
        self.live(now)?;
        if !self.keys.iter().any(|k| k == key) {
            return Err(Denial::Key {
                accessor: self.accessor.clone(),
                key: key.to_owned(),
            });
        }
        // Reading a key's description is allowed to any holder of an operation on it (the bulk
        // client and OpenBao's seal check the key first).
        if self.ops.contains(&op) || (op == TokenOp::Read && !self.ops.is_empty()) {
            Ok(())
        } else {
            Err(Denial::Op {
                accessor: self.accessor.clone(),
                op: op.name(),
                key: key.to_owned(),
            })
        }
    }

    /// Whether the grant may list key names (a CO token with `read`).
    ///
    /// # Errors
    /// [`Denial`].
    pub fn allows_list(&self, now: u64) -> Result<(), Denial> {
        self.live(now)?;
        if self.role == Role::Co && self.ops.contains(&TokenOp::Read) {
            Ok(())
        } else {
            Err(Denial::List(self.accessor.clone()))
        }
    }

    fn live(&self, now: u64) -> Result<(), Denial> {
        if self.revoked {
            return Err(Denial::Revoked(self.accessor.clone()));
        }
        if self.expires.is_some_and(|e| now >= e) {
            return Err(Denial::Expired(self.accessor.clone()));
        }
        Ok(())
    }
}

/// Every token's grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenStore {
    /// [`TOKENS_FORMAT`].
    pub format: String,
    /// [`TOKENS_VERSION`].
    pub format_version: u16,
    /// The grants.
    pub tokens: Vec<TokenGrant>,
}

impl Default for TokenStore {
    fn default() -> Self {
        TokenStore {
            format: TOKENS_FORMAT.into(),
            format_version: TOKENS_VERSION,
            tokens: Vec::new(),
        }
    }
}

/// What [`TokenStore::issue`] is asked for.
#[derive(Clone, Debug)]
pub struct GrantRequest {
    /// A human name.
    pub name: String,
    /// `user` or `co`.
    pub role: Role,
    /// Keys.
    pub keys: Vec<String>,
    /// Operations.
    pub ops: Vec<TokenOp>,
    /// Lifetime in seconds (`None`: no expiry).
    pub ttl_secs: Option<u64>,
    /// The `token.create` ceremony that asks for it, if any.
    pub ceremony: Option<String>,
}

impl GrantRequest {
    /// The grant a `token.create` ceremony asks for, from its parameters (`role`, `keys`,
    /// `ops`, optional `ttl_secs` and `name`), tied to the ceremony `id`.
    ///
    /// # Errors
    /// [`GovError`] for a parameter that does not parse, or a grant [`GrantRequest::check`]
    /// refuses.
    pub fn from_params(
        params: &std::collections::BTreeMap<String, String>,
        id: &str,
    ) -> Result<GrantRequest, GovError> {
        let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
        let role = match get("role") {
            "user" => Role::User,
            "co" => Role::Co,
            r => return Err(GovError::new(format!("role {r:?}: user or co"))),
        };
        let keys: Vec<String> = get("keys")
            .split(',')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        let ops = get("ops")
            .split(',')
            .filter(|o| !o.is_empty())
            .map(|o| {
                TokenOp::parse(o).ok_or_else(|| GovError::new(format!("unknown operation {o:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ttl_secs = match params.get("ttl_secs") {
            Some(t) => Some(
                t.parse::<u64>()
                    .map_err(|_| GovError::new(format!("ttl_secs {t:?} is not a number")))?,
            ),
            None => None,
        };
        let name = params
            .get("name")
            .cloned()
            .unwrap_or_else(|| format!("{}-{}", role.name(), keys.join("+")));
        let g = GrantRequest {
            name,
            role,
            keys,
            ops,
            ttl_secs,
            ceremony: Some(id.to_owned()),
        };
        g.check()?;
        Ok(g)
    }

    /// Whether the grant can be issued: role user or co, keys and ops given, valid key names,
    /// every operation of the role.
    ///
    /// # Errors
    /// [`GovError`] naming what is wrong.
    pub fn check(&self) -> Result<(), GovError> {
        if !matches!(self.role, Role::User | Role::Co) {
            return Err(GovError::new("a token's role is user or co"));
        }
        if self.keys.is_empty() || self.ops.is_empty() {
            return Err(GovError::new("a token needs keys and ops"));
        }
        for k in &self.keys {
            let ok = !k.is_empty()
                && k.len() <= 128
                && !k.starts_with('.')
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !ok {
                return Err(GovError::new(format!("invalid key name {k:?}")));
            }
        }
        if let Some(op) = self.ops.iter().find(|o| o.role() != self.role) {
            return Err(GovError::new(format!(
                "operation {} is not a {} operation (user: encrypt, decrypt, rewrap, datakey, bulk, sign, verify, hmac; co: read, create, rotate, config)",
                op.name(),
                self.role
            )));
        }
        Ok(())
    }

    /// Whether this is exactly the grant of OpenBao's `seal "transit"`: a User token for
    /// `encrypt` and `decrypt` on `key` only (Vault's transit-seal best practice).
    pub fn is_seal_grant(&self, key: &str) -> bool {
        let mut ops = self.ops.clone();
        ops.sort();
        ops.dedup();
        let mut want = vec![TokenOp::Encrypt, TokenOp::Decrypt];
        want.sort();
        self.role == Role::User && self.keys == [key] && ops == want
    }
}

impl TokenStore {
    /// Parses a stored list.
    ///
    /// # Errors
    /// [`GovError`] for another format or version.
    pub fn parse(bytes: &[u8]) -> Result<TokenStore, GovError> {
        let s: TokenStore =
            serde_json::from_slice(bytes).map_err(|e| GovError::new(format!("tokens: {e}")))?;
        if s.format != TOKENS_FORMAT || s.format_version != TOKENS_VERSION {
            return Err(GovError::new(format!(
                "tokens: format {:?} v{} is not {TOKENS_FORMAT} v{TOKENS_VERSION}",
                s.format, s.format_version
            )));
        }
        Ok(s)
    }

    /// The canonical stored form.
    ///
    /// # Errors
    /// As [`jcs::canonical`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, GovError> {
        jcs::canonical(self)
    }

    /// Adds a grant for a new token made from `secret` (32 bytes from the HSM RNG) and
    /// `accessor` (8 bytes); returns the token, to be shown once.
    ///
    /// # Errors
    /// [`GovError`] for a grant that does not fit its role (a User token with CO operations, or
    /// the reverse), no keys or ops, a bad key name.
    pub fn issue(
        &mut self,
        req: GrantRequest,
        secret: &[u8; 32],
        accessor: &[u8; 8],
        now: u64,
    ) -> Result<SecretString, GovError> {
        use base64::Engine as _;
        req.check()?;
        let token = zeroize::Zeroizing::new(format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        ));
        let mut ops = req.ops;
        ops.sort();
        ops.dedup();
        self.tokens.push(TokenGrant {
            accessor: hex(accessor),
            name: req.name,
            role: req.role,
            keys: req.keys,
            ops,
            created: now,
            expires: req.ttl_secs.map(|t| now.saturating_add(t)),
            revoked: false,
            sha256: hex(&sha256(token.as_bytes())),
            ceremony: req.ceremony,
        });
        Ok(SecretString::from(token.as_str().to_owned()))
    }

    /// The grant of the presented token, compared in constant time with every stored digest.
    pub fn lookup(&self, presented: &[u8]) -> Option<&TokenGrant> {
        let d = hex(&sha256(presented));
        let mut found = None;
        for g in &self.tokens {
            let hit: bool = g.sha256.as_bytes().ct_eq(d.as_bytes()).into();
            if hit && found.is_none() {
                found = Some(g);
            }
        }
        found
    }

    /// Revokes the token whose accessor or name is `who`; returns how many were revoked.
    pub fn revoke(&mut self, who: &str) -> usize {
        let mut n = 0;
        for g in &mut self.tokens {
            if (g.accessor == who || g.name == who) && !g.revoked {
                g.revoked = true;
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn grants() {
        let mut s = TokenStore::default();
        let t = s
            .issue(
                GrantRequest {
                    name: "app".into(),
                    role: Role::User,
                    keys: vec!["a".into(), "b".into()],
                    ops: vec![TokenOp::Encrypt],
                    ttl_secs: Some(100),
                    ceremony: None,
                },
                &[1; 32],
                &[2; 8],
                1000,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(t.expose_secret().starts_with(TOKEN_PREFIX));
        let back =
            TokenStore::parse(&s.to_bytes().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !String::from_utf8_lossy(&s.to_bytes().unwrap_or_default()).contains(t.expose_secret())
        );
        let g = back
            .lookup(t.expose_secret().as_bytes())
            .unwrap_or_else(|| panic!("lookup"));
        assert_eq!(g.allows("a", TokenOp::Encrypt, 1001), Ok(()));
        assert_eq!(g.allows("a", TokenOp::Read, 1001), Ok(()));
        assert!(matches!(
            g.allows("a", TokenOp::Decrypt, 1001),
            Err(Denial::Op { .. })
        ));
        assert!(matches!(
            g.allows("c", TokenOp::Encrypt, 1001),
            Err(Denial::Key { .. })
        ));
        assert!(matches!(
            g.allows("a", TokenOp::Encrypt, 1100),
            Err(Denial::Expired(_))
        ));
        assert!(g.allows_list(1001).is_err());
        assert!(back.lookup(b"rst.other").is_none());
        let mut s2 = back.clone();
        assert_eq!(s2.revoke(&g.accessor), 1);
        let g2 = s2
            .lookup(t.expose_secret().as_bytes())
            .unwrap_or_else(|| panic!("lookup"));
        assert!(matches!(
            g2.allows("a", TokenOp::Encrypt, 1001),
            Err(Denial::Revoked(_))
        ));
        let bad = s.issue(
            GrantRequest {
                name: "x".into(),
                role: Role::User,
                keys: vec!["a".into()],
                ops: vec![TokenOp::Create],
                ttl_secs: None,
                ceremony: None,
            },
            &[3; 32],
            &[4; 8],
            0,
        );
        assert!(bad.is_err());
    }

    #[test]
    fn grant_from_ceremony_params() {
        let p = |kv: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let g = GrantRequest::from_params(
            &p(&[
                ("role", "user"),
                ("keys", "autounseal"),
                ("ops", "decrypt,encrypt"),
            ]),
            "c1",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.name, "user-autounseal");
        assert_eq!(g.ceremony.as_deref(), Some("c1"));
        assert!(g.is_seal_grant("autounseal"));
        assert!(!g.is_seal_grant("other"));
        let wider = GrantRequest::from_params(
            &p(&[
                ("role", "user"),
                ("keys", "autounseal"),
                ("ops", "encrypt,decrypt,rewrap"),
            ]),
            "c2",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!wider.is_seal_grant("autounseal"));
        for bad in [
            p(&[("role", "so"), ("keys", "a"), ("ops", "encrypt")]),
            p(&[("role", "user"), ("keys", "a"), ("ops", "rotate")]),
            p(&[("role", "user"), ("keys", ""), ("ops", "encrypt")]),
            p(&[("role", "user"), ("keys", "a"), ("ops", "explode")]),
            p(&[
                ("role", "user"),
                ("keys", "a"),
                ("ops", "encrypt"),
                ("ttl_secs", "x"),
            ]),
        ] {
            assert!(GrantRequest::from_params(&bad, "c").is_err(), "{bad:?}");
        }
    }
}

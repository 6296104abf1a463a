//! rootseal: a hardware-rooted key hierarchy for HashiCorp Vault and OpenBao.
//!
//! This crate is the `rootseal` binary's library: the HTTP face that speaks Vault's transit API
//! ([`routes`]), the bulk-seal engine ([`bulk`]), the OpenBao KMS plugin face ([`goplugin`],
//! [`kms`]) and the CLI ([`cli`]). All of them call [`rootseal_hsm::Keyring`].
#![forbid(unsafe_code)]

pub mod bulk;
pub mod cli;
pub mod goplugin;
pub mod kms;
pub mod routes;
pub mod server;
pub mod telemetry;

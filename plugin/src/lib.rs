//! rootseal: a hardware-rooted key hierarchy for HashiCorp Vault and OpenBao.
//!
//! This crate is the `rootseal` binary's library: the HTTP face that speaks Vault's transit API
//! and the bulk-seal endpoints of [`rootseal_bulk`] ([`routes`]), the OpenBao KMS plugin face
//! ([`goplugin`], [`kms`]) and the CLI ([`cli`]). All of them call [`rootseal_hsm::Keyring`].
#![forbid(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod goplugin;
pub mod kms;
pub mod routes;
pub mod server;
pub mod telemetry;

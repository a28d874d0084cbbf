//! smime-pickup: S/MIME sign and encrypt spooled messages for an MTA.
//!
//! The flow, one module each: `message` parses an input into envelope, outer headers and a canonical
//! inner entity; `smime` holds keys, certificates and the CMS operations; `seal` turns one input into
//! sealed copies; `cli` wires them to commands. Everything is synchronous.
//!
//! Unsafe code is denied everywhere except `ffi`, the one module of calls the safe bindings lack.
#![deny(unsafe_code)]

pub mod buffers;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod demo;
pub mod dirs;
pub mod failed;
mod ffi;
pub mod finish;
pub mod harvest;
pub mod keyring;
pub mod layout;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod seal;
pub mod smime;
pub mod spool;

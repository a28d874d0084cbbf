//! The one module with `unsafe`: calls the safe bindings (openssl, rustix) do not offer. Unsafe
//! code is denied everywhere else in the crate. Each call has its own file and a `SAFETY` comment:
//! - `oaep`: OpenSSL's lower-level CMS calls, for RSA-OAEP key transport;
//! - `lease`: `fcntl(F_SETLEASE)`, which asks the kernel whether a file is open for writing;
//! - `sign`: OpenSSL's lower-level CMS calls, to sign with the capabilities attribute encoded once;
//! - `malloc`: `mallopt`, so freed memory is not handed back to the kernel after every few messages;
//! - `fatal`: `sigaction`, so a crash leaves a note that tells it from an outside `kill -9`.
#![allow(unsafe_code)]

pub mod fatal;
pub mod lease;
pub mod malloc;
pub mod oaep;
pub mod sign;

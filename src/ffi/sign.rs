//! CMS signing with the S/MIME capabilities attribute encoded once per process.
//!
//! `CMS_sign` builds the SMIMECapabilities signed attribute anew for every signature: a list of
//! ciphers and digests, each looked up in the providers, then DER-encoded. That was 2 % of a drain's
//! CPU, and the result never changes within a process. So `standard_smimecap` encodes OpenSSL's own
//! list once (`CMS_add_standard_smimecap`, `i2d_X509_ALGORS`), and `sign` asks `CMS_sign` for a
//! partial structure without it (`CMS_PARTIAL | CMS_NOSMIMECAP`), adds the stored bytes to the signer
//! exactly as `CMS_add_smimecap` does (`CMS_signed_add1_attr_by_NID`), and finalises (`CMS_final`).
//! Signed attributes are a DER SET: encoded sorted, whatever order they were added in, so the output
//! is what `CMS_sign` alone makes. openssl-sys declares none of these calls but `CMS_sign`.
use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::error::ErrorStack;
use openssl::pkey::{PKeyRef, Private};
use openssl::stack::StackRef;
use openssl::x509::{X509, X509Ref};
use openssl_sys as ffi;
use std::os::raw::{c_int, c_void};

use super::oaep::CMS_final;

/// `STACK_OF(X509_ALGOR)`, `STACK_OF(CMS_SignerInfo)` and `CMS_SignerInfo`: used through pointers only.
#[allow(non_camel_case_types)]
enum OPENSSL_STACK {}
#[allow(non_camel_case_types)]
enum CMS_SignerInfo {}

/// `NID_SMIMECapabilities` and `V_ASN1_SEQUENCE` (obj_mac.h, asn1.h)
const NID_SMIME_CAPABILITIES: c_int = 167;
const V_ASN1_SEQUENCE: c_int = 16;

unsafe extern "C" {
    fn CMS_add_standard_smimecap(smcap: *mut *mut OPENSSL_STACK) -> c_int;
    fn i2d_X509_ALGORS(algs: *const OPENSSL_STACK, out: *mut *mut u8) -> c_int;
    fn X509_ALGOR_free(alg: *mut c_void);
    fn OPENSSL_sk_pop_free(st: *mut OPENSSL_STACK, free: unsafe extern "C" fn(*mut c_void));
    fn CMS_get0_SignerInfos(cms: *mut ffi::CMS_ContentInfo) -> *mut OPENSSL_STACK;
    fn OPENSSL_sk_value(st: *const OPENSSL_STACK, i: c_int) -> *mut c_void;
    fn CMS_signed_add1_attr_by_NID(
        si: *mut CMS_SignerInfo,
        nid: c_int,
        kind: c_int,
        bytes: *const c_void,
        len: c_int,
    ) -> c_int;
}

/// The DER of OpenSSL's standard S/MIME capabilities (a SEQUENCE of algorithm identifiers), the
/// value `CMS_sign` would give the SMIMECapabilities attribute.
pub fn standard_smimecap() -> Result<Vec<u8>, ErrorStack> {
    // SAFETY: the stack is created by OpenSSL here, only read by `i2d_X509_ALGORS`, and freed with
    // its elements on every path. The second `i2d` call writes exactly the length the first one
    // returned into a buffer of that length (it advances its own copy of the pointer).
    unsafe {
        let mut stack: *mut OPENSSL_STACK = std::ptr::null_mut();
        let made = CMS_add_standard_smimecap(&mut stack);
        let der = (|| {
            if made <= 0 || stack.is_null() {
                return Err(ErrorStack::get());
            }
            let len = i2d_X509_ALGORS(stack, std::ptr::null_mut());
            let size = usize::try_from(len).map_err(|_| ErrorStack::get())?;
            if size == 0 {
                return Err(ErrorStack::get());
            }
            let mut der = vec![0u8; size];
            let mut at = der.as_mut_ptr();
            if i2d_X509_ALGORS(stack, &mut at) != len {
                return Err(ErrorStack::get());
            }
            Ok(der)
        })();
        if !stack.is_null() {
            OPENSSL_sk_pop_free(stack, X509_ALGOR_free);
        }
        der
    }
}

/// `CmsContentInfo::sign(Some(cert), Some(key), Some(chain), Some(data), flags)`, with the
/// capabilities attribute taken from `smimecap` (see `standard_smimecap`) instead of built again.
pub fn sign(
    cert: &X509Ref,
    key: &PKeyRef<Private>,
    chain: &StackRef<X509>,
    data: &[u8],
    flags: CMSOptions,
    smimecap: &[u8],
) -> Result<CmsContentInfo, ErrorStack> {
    let data_len = c_int::try_from(data.len()).map_err(|_| ErrorStack::get())?;
    let cap_len = c_int::try_from(smimecap.len()).map_err(|_| ErrorStack::get())?;
    let partial = flags.bits() | ffi::CMS_PARTIAL | ffi::CMS_NOSMIMECAP;
    // SAFETY: `cert`, `key` and `chain` are live wrappers borrowed for the calls; `CMS_sign` takes
    // its own references. The CMS structure goes into `CmsContentInfo` at once, which frees it on
    // every path. The signer info is borrowed from that structure while it lives; the attribute call
    // copies `smimecap`. The memory BIO only borrows `data`, which outlives it, and is freed before
    // returning.
    unsafe {
        let cms = ffi::CMS_sign(
            cert.as_ptr(),
            key.as_ptr(),
            chain.as_ptr(),
            std::ptr::null_mut(),
            partial,
        );
        if cms.is_null() {
            return Err(ErrorStack::get());
        }
        let cms = CmsContentInfo::from_ptr(cms);
        let signers = CMS_get0_SignerInfos(cms.as_ptr());
        let si = if signers.is_null() {
            std::ptr::null_mut()
        } else {
            OPENSSL_sk_value(signers, 0).cast::<CMS_SignerInfo>()
        };
        if si.is_null()
            || CMS_signed_add1_attr_by_NID(
                si,
                NID_SMIME_CAPABILITIES,
                V_ASN1_SEQUENCE,
                smimecap.as_ptr().cast(),
                cap_len,
            ) <= 0
        {
            return Err(ErrorStack::get());
        }
        let bio = ffi::BIO_new_mem_buf(data.as_ptr().cast(), data_len);
        if bio.is_null() {
            return Err(ErrorStack::get());
        }
        let done = CMS_final(cms.as_ptr(), bio, std::ptr::null_mut(), flags.bits());
        ffi::BIO_free_all(bio);
        if done <= 0 {
            return Err(ErrorStack::get());
        }
        Ok(cms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> (openssl::pkey::PKey<Private>, X509) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
        let pem = std::fs::read(dir.join("keys/alice@example.com.pem")).unwrap();
        let key = openssl::pkey::PKey::private_key_from_pem(&pem).unwrap();
        (key, X509::from_pem(&pem).unwrap())
    }

    /// The stored attribute is the one `CMS_sign` makes itself, byte for byte, and both
    /// signatures carry the same signed attributes but the signing time.
    #[test]
    fn the_stored_capabilities_are_the_ones_openssl_adds() {
        let (key, cert) = alice();
        let chain = openssl::stack::Stack::<X509>::new().unwrap();
        let cap = standard_smimecap().unwrap();
        assert_eq!(cap[0], 0x30, "a SEQUENCE");
        assert!(cap.len() > 20, "{cap:02x?}");
        let flags = CMSOptions::BINARY | CMSOptions::DETACHED;
        let theirs = CmsContentInfo::sign(Some(&cert), Some(&key), Some(&chain), Some(b"x"), flags)
            .unwrap()
            .to_der()
            .unwrap();
        let ours = sign(&cert, &key, &chain, b"x", flags, &cap)
            .unwrap()
            .to_der()
            .unwrap();
        let has = |der: &[u8]| der.windows(cap.len()).any(|w| w == cap);
        assert!(has(&theirs) && has(&ours));
        // same length: the same attributes, certificates and structure (the signature and the
        // signing time differ in value only)
        assert_eq!(ours.len(), theirs.len());
    }

    /// Without the stored bytes the attribute is absent: the test above cannot pass by accident.
    #[test]
    fn without_the_stored_bytes_there_is_no_capabilities_attribute() {
        let (key, cert) = alice();
        let chain = openssl::stack::Stack::<X509>::new().unwrap();
        let cap = standard_smimecap().unwrap();
        let flags = CMSOptions::BINARY | CMSOptions::DETACHED | CMSOptions::NOSMIMECAP;
        let bare = CmsContentInfo::sign(Some(&cert), Some(&key), Some(&chain), Some(b"x"), flags)
            .unwrap()
            .to_der()
            .unwrap();
        assert!(!bare.windows(cap.len()).any(|w| w == cap));
    }
}

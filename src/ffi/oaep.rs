//! CMS encryption with RSA-OAEP key transport.
//!
//! The `openssl` crate's `CmsContentInfo::encrypt` always uses RSA PKCS#1 v1.5 for the key transport.
//! OAEP needs each recipient's key-transport context, which only OpenSSL's lower-level CMS calls reach
//! (`CMS_add1_recipient_cert`, `CMS_RecipientInfo_get0_pkey_ctx`, `CMS_final`); openssl-sys does not
//! declare them, so they are declared here. The sequence is OpenSSL's documented one: create a partial
//! structure with `CMS_PARTIAL | CMS_KEY_PARAM`, add recipients, set the padding on each, finalise.
//! OAEP parameters are the RFC 3560 defaults (SHA-1, MGF1-SHA-1), the ones every OAEP reader accepts.
use foreign_types::ForeignType;
use openssl::cms::CmsContentInfo;
use openssl::error::ErrorStack;
use openssl::symm::Cipher;
use openssl::x509::X509;
use openssl_sys as ffi;
use std::os::raw::{c_int, c_uint, c_void};

#[allow(non_camel_case_types)]
enum CMS_RecipientInfo {}

unsafe extern "C" {
    fn CMS_add1_recipient_cert(
        cms: *mut ffi::CMS_ContentInfo,
        recip: *mut ffi::X509,
        flags: c_uint,
    ) -> *mut CMS_RecipientInfo;
    fn CMS_RecipientInfo_get0_pkey_ctx(ri: *mut CMS_RecipientInfo) -> *mut ffi::EVP_PKEY_CTX;
    /// also used by `sign`
    pub(super) fn CMS_final(
        cms: *mut ffi::CMS_ContentInfo,
        data: *mut ffi::BIO,
        dcont: *mut ffi::BIO,
        flags: c_uint,
    ) -> c_int;
}

/// Encrypts `data` for `recipients` with `cipher`, wrapping the content key with RSA-OAEP; returns DER.
pub fn encrypt_oaep(
    recipients: &[&X509],
    data: &[u8],
    cipher: Cipher,
) -> Result<Vec<u8>, ErrorStack> {
    let len = c_int::try_from(data.len()).map_err(|_| ErrorStack::get())?;
    let partial = ffi::CMS_PARTIAL | ffi::CMS_KEY_PARAM | ffi::CMS_BINARY;
    // OAEP is a padding of RSA: an EC recipient keeps its key agreement (ECDH)
    let rsa: Vec<bool> = recipients
        .iter()
        .map(|c| Ok(c.public_key()?.id() == openssl::pkey::Id::RSA))
        .collect::<Result<_, ErrorStack>>()?;
    // SAFETY: every pointer passed below is either freshly created here and checked for NULL, or
    // borrowed from a live Rust wrapper (`X509`, `Cipher`) for the duration of the call. The CMS
    // structure is handed to `CmsContentInfo` right away, which frees it on every path; the memory BIO
    // only borrows `data`, which outlives it, and is freed before returning.
    unsafe {
        let cms = ffi::CMS_encrypt(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            cipher.as_ptr(),
            partial,
        );
        if cms.is_null() {
            return Err(ErrorStack::get());
        }
        let cms = CmsContentInfo::from_ptr(cms);
        for (cert, rsa) in recipients.iter().zip(rsa) {
            let ri = CMS_add1_recipient_cert(cms.as_ptr(), cert.as_ptr(), ffi::CMS_KEY_PARAM);
            if ri.is_null() {
                return Err(ErrorStack::get());
            }
            if !rsa {
                continue;
            }
            let ctx = CMS_RecipientInfo_get0_pkey_ctx(ri);
            if ctx.is_null()
                || ffi::EVP_PKEY_CTX_set_rsa_padding(ctx, ffi::RSA_PKCS1_OAEP_PADDING) <= 0
            {
                return Err(ErrorStack::get());
            }
        }
        let bio = ffi::BIO_new_mem_buf(data.as_ptr() as *const c_void, len);
        if bio.is_null() {
            return Err(ErrorStack::get());
        }
        let ok = CMS_final(cms.as_ptr(), bio, std::ptr::null_mut(), ffi::CMS_BINARY);
        ffi::BIO_free_all(bio);
        if ok != 1 {
            return Err(ErrorStack::get());
        }
        cms.to_der()
    }
}

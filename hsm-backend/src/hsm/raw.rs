//! The PKCS#11 calls `cryptoki` 0.12 does not wrap: attributes whose value is itself an attribute
//! template (`CKA_UNWRAP_TEMPLATE`, PKCS#11 v2.40 §4.4 "array attributes"), and array attributes
//! read without a null-`pValue` length query (which p11-kit's RPC cannot carry for them). Written against the
//! raw function list of the module `cryptoki` has already loaded and initialised in this process
//! (`dlopen` of the same path returns the same, reference-counted library), on a session that
//! `cryptoki` owns. This is the only `unsafe` code in rootseal.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::{Mutex, OnceLock};

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, Rv};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::{
    CKA_ALLOWED_MECHANISMS, CKA_UNWRAP_TEMPLATE, CKR_OK, CK_ATTRIBUTE, CK_FUNCTION_LIST,
    CK_MECHANISM, CK_MECHANISM_TYPE, CK_OBJECT_HANDLE, CK_RV, CK_ULONG, CK_UNAVAILABLE_INFORMATION,
};

use crate::error::{Error, Result};

/// Most attributes an unwrap template read back may hold (rootseal's has 7).
const MAX_TEMPLATE: usize = 64;
/// Largest value of one attribute inside a template read back.
const MAX_VALUE: usize = 1024;

/// The function list of `module`, with the library kept loaded while it is used.
struct Functions {
    _lib: libloading::Library,
    list: *const CK_FUNCTION_LIST,
}

fn module_error(module: &Path, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{}: {e}", module.display()))
}

fn functions(module: &Path) -> Result<Functions> {
    // SAFETY: this is the PKCS#11 module cryptoki already loaded in this process: its
    // initialisers have run, and dlopen only takes another reference to it.
    let lib = unsafe { libloading::Library::new(module) }.map_err(|e| module_error(module, e))?;
    let list = {
        // SAFETY: `C_GetFunctionList` has this signature in every PKCS#11 module (v2.40 §5.2).
        let get: libloading::Symbol<'_, unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV> =
            unsafe { lib.get(b"C_GetFunctionList\0") }.map_err(|e| module_error(module, e))?;
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: `list` is a valid out-pointer; the module fills it with a pointer to its static
        // function table, valid while the library is loaded.
        let rv = unsafe { get(&mut list) };
        check(rv, Function::GetFunctionList)?;
        if list.is_null() {
            return Err(module_error(module, "C_GetFunctionList returned no list"));
        }
        list
    };
    Ok(Functions { _lib: lib, list })
}

/// Whether `C_GetFunctionList` of `module` hands back the instance `cryptoki` initialised, so
/// that the calls here may use `session`. SoftHSM2 and most modules keep one instance per
/// process; p11-kit's client module makes a new, uninitialised one (its own connection to the
/// server) on each call, where every call here would answer `CKR_CRYPTOKI_NOT_INITIALIZED`.
/// Tested once per module path with `C_GetSessionInfo` on `session`; an answer other than
/// those two is not remembered.
pub(crate) fn shares_instance(module: &Path, session: &Session) -> bool {
    static SHARED: OnceLock<Mutex<HashMap<PathBuf, bool>>> = OnceLock::new();
    let cache = SHARED.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(v) = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(module)
    {
        return *v;
    }
    let Ok(f) = functions(module) else {
        return true;
    };
    // SAFETY: `f.list` points at the module's static function table (see `functions`).
    let Some(info) = (unsafe { (*f.list).C_GetSessionInfo }) else {
        return true;
    };
    let mut out = std::mem::MaybeUninit::<cryptoki_sys::CK_SESSION_INFO>::zeroed();
    // SAFETY: `out` is a valid out-pointer for one CK_SESSION_INFO; the handle is cryptoki's.
    let rv = unsafe { info(session.handle(), out.as_mut_ptr()) };
    let shared = match rv {
        CKR_OK => true,
        cryptoki_sys::CKR_CRYPTOKI_NOT_INITIALIZED => false,
        _ => return true,
    };
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(module.to_path_buf(), shared);
    shared
}

/// The error for a call here on a module that does not share its instance.
fn not_shared(module: &Path) -> Error {
    Error::TokenState(format!(
        "{} makes a new instance per C_GetFunctionList (p11-kit's client module): attribute \
         arrays cannot be made or read through it",
        module.display()
    ))
}

fn check(rv: CK_RV, function: Function) -> Result<()> {
    if rv == CKR_OK {
        return Ok(());
    }
    Rv::from(rv).into_result(function).map_err(Error::from)
}

/// `C_GenerateKey` with `template` plus `CKA_UNWRAP_TEMPLATE = unwrap`, on `session` of `module`.
pub(crate) fn generate_key_with_unwrap_template(
    module: &Path,
    session: &Session,
    mechanism: CK_MECHANISM_TYPE,
    template: &[Attribute],
    unwrap: &[Attribute],
) -> Result<ObjectHandle> {
    if !shares_instance(module, session) {
        return Err(not_shared(module));
    }
    let f = functions(module)?;
    // SAFETY: `f.list` points at the module's static function table (see `functions`).
    let generate =
        unsafe { (*f.list).C_GenerateKey }.ok_or(Error::Pkcs11(CkError::NullFunctionPointer))?;
    // Both arrays borrow from `template` and `unwrap`, which outlive the call.
    let mut inner: Vec<CK_ATTRIBUTE> = unwrap.iter().map(CK_ATTRIBUTE::from).collect();
    let mut outer: Vec<CK_ATTRIBUTE> = template.iter().map(CK_ATTRIBUTE::from).collect();
    outer.push(CK_ATTRIBUTE {
        type_: CKA_UNWRAP_TEMPLATE,
        pValue: inner.as_mut_ptr().cast(),
        ulValueLen: CK_ULONG::try_from(inner.len() * std::mem::size_of::<CK_ATTRIBUTE>())
            .map_err(|_| Error::Internal("unwrap template too large".into()))?,
    });
    let mut mech = CK_MECHANISM {
        mechanism,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    };
    let mut handle: CK_OBJECT_HANDLE = 0;
    let count = CK_ULONG::try_from(outer.len())
        .map_err(|_| Error::Internal("template too large".into()))?;
    // SAFETY: every pointer is valid for the call: the mechanism, the template array (whose
    // entries point into `template`, `unwrap` and `inner`, all alive here) and the out-handle;
    // the session handle belongs to a live cryptoki `Session` of this module.
    let rv = unsafe {
        generate(
            session.handle(),
            &mut mech,
            outer.as_mut_ptr(),
            count,
            &mut handle,
        )
    };
    check(rv, Function::GenerateKey)?;
    // SAFETY: the handle was just returned by C_GenerateKey on this session.
    Ok(unsafe { ObjectHandle::new_from_raw(handle) })
}

/// The `CKA_UNWRAP_TEMPLATE` of `object`: `None` when the object has none.
///
/// No length query with a null `pValue` is made: p11-kit's RPC (the module reached over a socket,
/// `p11-kit server`) cannot carry one for an array attribute (0.24 serialises a null array and
/// its server process dies of SIGSEGV; 0.25 answers `CKR_DEVICE_ERROR` for
/// `CKA_ALLOWED_MECHANISMS`). The read starts with an array of [`MAX_TEMPLATE`] entries whose
/// `pValue`s are null, which the token fills with the type and length of each entry (PKCS#11
/// v2.40 §4.4), and sets the outer length to the bytes used.
pub(crate) fn unwrap_template(
    module: &Path,
    session: &Session,
    object: ObjectHandle,
) -> Result<Option<Vec<Attribute>>> {
    if !shares_instance(module, session) {
        return Err(not_shared(module));
    }
    let f = functions(module)?;
    // SAFETY: `f.list` points at the module's static function table (see `functions`).
    let get = unsafe { (*f.list).C_GetAttributeValue }
        .ok_or(Error::Pkcs11(CkError::NullFunctionPointer))?;
    let call = |attr: &mut CK_ATTRIBUTE| -> CK_RV {
        // SAFETY: `attr` is a valid attribute whose pValue is null or points at a buffer of
        // ulValueLen bytes owned by the caller for the duration of the call.
        unsafe { get(session.handle(), object.handle(), attr, 1) }
    };
    // 1. The type and length of each entry, into an array of MAX_TEMPLATE entries.
    let mut inner: Vec<CK_ATTRIBUTE> = (0..MAX_TEMPLATE)
        .map(|_| CK_ATTRIBUTE {
            type_: 0,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        })
        .collect();
    let mut outer = CK_ATTRIBUTE {
        type_: CKA_UNWRAP_TEMPLATE,
        pValue: inner.as_mut_ptr().cast(),
        ulValueLen: CK_ULONG::try_from(MAX_TEMPLATE * std::mem::size_of::<CK_ATTRIBUTE>())
            .map_err(|_| Error::Internal("unwrap template buffer too large".into()))?,
    };
    let rv = call(&mut outer);
    if rv == cryptoki_sys::CKR_ATTRIBUTE_TYPE_INVALID
        || outer.ulValueLen == CK_UNAVAILABLE_INFORMATION
            && rv != cryptoki_sys::CKR_BUFFER_TOO_SMALL
    {
        return Ok(None);
    }
    if rv == cryptoki_sys::CKR_BUFFER_TOO_SMALL {
        return Err(Error::TokenState(format!(
            "unwrap template of more than {MAX_TEMPLATE} attributes"
        )));
    }
    check(rv, Function::GetAttributeValue)?;
    let bytes = usize::try_from(outer.ulValueLen).unwrap_or(usize::MAX);
    let n = bytes / std::mem::size_of::<CK_ATTRIBUTE>();
    if n == 0 {
        return Ok(None);
    }
    if n > MAX_TEMPLATE || bytes % std::mem::size_of::<CK_ATTRIBUTE>() != 0 {
        return Err(Error::TokenState(format!(
            "unwrap template of {bytes} bytes"
        )));
    }
    inner.truncate(n);
    outer.pValue = inner.as_mut_ptr().cast();
    // 2. The values.
    let mut buffers: Vec<Vec<u8>> = Vec::with_capacity(n);
    for a in &mut inner {
        let len = usize::try_from(a.ulValueLen).unwrap_or(usize::MAX);
        if len > MAX_VALUE {
            return Err(Error::TokenState(format!(
                "unwrap template value of {len} bytes"
            )));
        }
        let mut buf = vec![0u8; len];
        a.pValue = buf.as_mut_ptr().cast();
        buffers.push(buf);
    }
    check(call(&mut outer), Function::GetAttributeValue)?;
    let mut out = Vec::with_capacity(n);
    for a in inner {
        // Entries of a type cryptoki does not know are skipped; the custody check only looks for
        // the ones rootseal sets. The conversion reads from `buffers`, still alive here.
        if let Ok(attr) = Attribute::try_from(a) {
            out.push(attr);
        }
    }
    drop(buffers);
    Ok(Some(out))
}

/// Most mechanisms a `CKA_ALLOWED_MECHANISMS` read back may list.
const MAX_MECHANISMS: usize = 64;

/// What `CKA_ALLOWED_MECHANISMS` of an object holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AllowedMechanisms {
    /// The token does not know the attribute (`CKR_ATTRIBUTE_TYPE_INVALID`).
    Unsupported,
    /// The list (empty: any mechanism), as the token's raw values (a type `cryptoki` does not
    /// know is kept, not dropped).
    List(Vec<CK_MECHANISM_TYPE>),
    /// More than [`MAX_MECHANISMS`] entries.
    TooMany,
}

/// The `CKA_ALLOWED_MECHANISMS` of `object`, read into a buffer of [`MAX_MECHANISMS`] entries
/// at once: a length query with a null `pValue` is what p11-kit's RPC cannot carry for this
/// attribute (its server writes the count without the entries, the client misparses the reply
/// and answers `CKR_DEVICE_ERROR`), and one call is also one round trip less.
pub(crate) fn allowed_mechanisms(
    module: &Path,
    session: &Session,
    object: ObjectHandle,
) -> Result<AllowedMechanisms> {
    if !shares_instance(module, session) {
        return Err(not_shared(module));
    }
    let f = functions(module)?;
    // SAFETY: `f.list` points at the module's static function table (see `functions`).
    let get = unsafe { (*f.list).C_GetAttributeValue }
        .ok_or(Error::Pkcs11(CkError::NullFunctionPointer))?;
    let mut buf: Vec<CK_MECHANISM_TYPE> = vec![0; MAX_MECHANISMS];
    let mut attr = CK_ATTRIBUTE {
        type_: CKA_ALLOWED_MECHANISMS,
        pValue: buf.as_mut_ptr().cast(),
        ulValueLen: CK_ULONG::try_from(MAX_MECHANISMS * std::mem::size_of::<CK_MECHANISM_TYPE>())
            .map_err(|_| Error::Internal("mechanism buffer too large".into()))?,
    };
    // SAFETY: `attr.pValue` points at `buf`, `ulValueLen` bytes long, alive for the call.
    let rv = unsafe { get(session.handle(), object.handle(), &mut attr, 1) };
    match rv {
        cryptoki_sys::CKR_ATTRIBUTE_TYPE_INVALID => return Ok(AllowedMechanisms::Unsupported),
        cryptoki_sys::CKR_BUFFER_TOO_SMALL => return Ok(AllowedMechanisms::TooMany),
        _ => check(rv, Function::GetAttributeValue)?,
    }
    if attr.ulValueLen == CK_UNAVAILABLE_INFORMATION {
        return Ok(AllowedMechanisms::Unsupported);
    }
    let bytes = usize::try_from(attr.ulValueLen).unwrap_or(usize::MAX);
    let n = bytes / std::mem::size_of::<CK_MECHANISM_TYPE>();
    if n > MAX_MECHANISMS || bytes % std::mem::size_of::<CK_MECHANISM_TYPE>() != 0 {
        return Err(Error::TokenState(format!(
            "CKA_ALLOWED_MECHANISMS of {bytes} bytes"
        )));
    }
    buf.truncate(n);
    Ok(AllowedMechanisms::List(buf))
}

//! `cuGetProcAddress`: our own entry points by name, CUDA version and flags.

use crate::state::{R, entry};
use abi::cuda::*;
use std::ffi::{CStr, CString, c_void};
use std::os::raw::{c_char, c_int};
use std::sync::OnceLock;

/// Names this library implements (the rest are not-supported stubs), from the build.
fn implemented(name: &str) -> bool {
    static SET: OnceLock<std::collections::HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        include_str!(concat!(env!("OUT_DIR"), "/coverage.tsv"))
            .lines()
            .filter_map(|l| l.strip_prefix("implemented\t"))
            .collect()
    })
    .contains(name)
}

/// Not implemented, yet handed out (as the not-supported stubs they are): PyTorch's
/// expandable segments fetch every entry point of their table at the first allocation and
/// stop unless each resolves, though they call these two only to share memory with
/// another process.
const RESOLVED_STUBS: &[&str] = &["cuMemExportToShareableHandle", "cuMemImportFromShareableHandle"];

/// Whether a request may be answered with `name`.
fn handed_out(name: &str) -> bool {
    implemented(name) || RESOLVED_STUBS.contains(&name)
}

/// The exported names a request for `name` at `version` may mean, best first. The header
/// of each CUDA release maps a plain name to one versioned entry point; these are the
/// mappings that changed over time.
pub fn candidates(name: &str, version: c_int) -> Vec<String> {
    let pick = |v13: &str, v12: &str| if version >= 13000 { v13.to_string() } else { v12.to_string() };
    let since = |v2: c_int| if version >= v2 { format!("{name}_v2") } else { name.to_string() };
    let special = match name {
        "cuCtxCreate" => Some(pick("cuCtxCreate_v4", "cuCtxCreate_v2")),
        "cuStreamGetCaptureInfo" => Some(pick("cuStreamGetCaptureInfo_v3", "cuStreamGetCaptureInfo_v2")),
        "cuEventElapsedTime" => Some(pick("cuEventElapsedTime_v2", "cuEventElapsedTime")),
        "cuCtxGetDevice" => Some(pick("cuCtxGetDevice_v2", "cuCtxGetDevice")),
        // Names whose `_v2` takes other arguments than the plain form, from the release
        // given on: an older caller gets the plain form (or nothing), never the `_v2`.
        "cuStreamGetCtx" => Some(since(12050)),
        "cuGetProcAddress" => Some(since(12000)),
        "cuGraphExecUpdate" => Some(since(12000)),
        "cuStreamBeginCapture" => Some(since(10010)),
        "cuGraphInstantiate" if version >= 12000 => Some("cuGraphInstantiateWithFlags".to_string()),
        _ => None,
    };
    match special {
        Some(s) => vec![s],
        None => vec![format!("{name}_v2"), name.to_string()],
    }
}

fn lookup(name: &str) -> *mut c_void {
    static SELF: OnceLock<usize> = OnceLock::new();
    let h = *SELF.get_or_init(|| unsafe {
        // Our own handle: the file that holds this very function.
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(cuGetProcAddress_v2 as *const c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return 0;
        }
        libc::dlopen(info.dli_fname, libc::RTLD_NOW | libc::RTLD_NOLOAD) as usize
    });
    if h == 0 {
        return std::ptr::null_mut();
    }
    let Ok(c) = CString::new(name) else { return std::ptr::null_mut() };
    unsafe { libc::dlsym(h as *mut c_void, c.as_ptr()) }
}

fn resolve(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    status: *mut CUdriverProcAddressQueryResult,
) -> Result<(), R> {
    if symbol.is_null() || pfn.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let name = unsafe { CStr::from_ptr(symbol) }.to_string_lossy();
    let found = candidates(&name, version).into_iter().find(|c| handed_out(c)).map(|c| lookup(&c));
    let set_status = |s: CUdriverProcAddressQueryResult| {
        if !status.is_null() {
            unsafe { *status = s };
        }
    };
    match found {
        Some(p) if !p.is_null() => {
            unsafe { *pfn = p };
            set_status(CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SUCCESS);
            Ok(())
        }
        _ => {
            // As the driver answers: success, no function, and why in the status. An error
            // here would stay in NVIDIA's runtime as the application's last error (PyTorch
            // looks up optional entry points at its first allocation, then reads it).
            client::trace_note(|| format!("cuGetProcAddress {name} (version {version}): not found"));
            unsafe { *pfn = std::ptr::null_mut() };
            set_status(CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
            Ok(())
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetProcAddress_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    _flags: cuuint64_t,
    status: *mut CUdriverProcAddressQueryResult,
) -> R {
    entry(|| resolve(symbol, pfn, version, status))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetProcAddress(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    _flags: cuuint64_t,
) -> R {
    entry(|| resolve(symbol, pfn, version, std::ptr::null_mut()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_names() {
        assert_eq!(candidates("cuMemAlloc", 12000), vec!["cuMemAlloc_v2", "cuMemAlloc"]);
        assert_eq!(candidates("cuCtxCreate", 12090), vec!["cuCtxCreate_v2"]);
        assert_eq!(candidates("cuCtxCreate", 13000), vec!["cuCtxCreate_v4"]);
        assert_eq!(candidates("cuStreamGetCtx", 9020), vec!["cuStreamGetCtx"]);
        assert_eq!(candidates("cuStreamGetCtx", 12050), vec!["cuStreamGetCtx_v2"]);
        assert_eq!(candidates("cuGetProcAddress", 11030), vec!["cuGetProcAddress"]);
        assert_eq!(candidates("cuGraphExecUpdate", 12000), vec!["cuGraphExecUpdate_v2"]);
        assert!(implemented("cuMemAlloc_v2"));
        assert!(!implemented("cuGLMapBufferObject_v2"));
        assert!(handed_out("cuMemExportToShareableHandle") && !implemented("cuMemExportToShareableHandle"));
        assert!(!handed_out("cuGLMapBufferObject_v2"));
    }
}

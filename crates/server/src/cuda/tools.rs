//! The driver's private "tools context" table (`21318C60…`), which NVIDIA's cuBLAS asks before
//! its first GEMM in some programs (CuPy's): slot 51 gives an object for the context, slot 39
//! a value of it. What they mean is not public, so the server asks its own driver and hands
//! the answer back (docs/export-tables.md); the object never leaves the server.

use super::{CudaSession, INVALID_VALUE, NOT_SUPPORTED, R};
use abi::cuda::{CUcontext, CUuuid};
use std::ffi::c_void;

const TOOLS_CONTEXT: [u8; 16] = 0x21318C60_9714_3248_8CA6_41FF7324C8F2u128.to_be_bytes();
/// The table's slots in driver 580: 93 (a size and 92 entries).
const SLOTS_NEEDED: usize = 52;

/// Slot 51: (context, selector, out object); slot 39: (context, object, out value).
type ObjectOf = unsafe extern "C" fn(CUcontext, u64, *mut u64) -> u32;
type ValueOf = unsafe extern "C" fn(CUcontext, u64, *mut u64) -> u32;

impl CudaSession {
    /// Slots 51 and 39 of the table for the current context: the 8 bytes slot 39 leaves in
    /// `out` (given as the caller had them: it may write fewer). Only the selector seen
    /// called (0) is passed on; the driver would read other values we cannot vouch for.
    pub(super) fn tools_context_query(&mut self, selector: u64, out: [u8; 8]) -> R<[u8; 8]> {
        if selector != 0 {
            return Err(NOT_SUPPORTED);
        }
        let mut table: *const c_void = std::ptr::null();
        let id = CUuuid { bytes: TOOLS_CONTEXT.map(|b| b as std::os::raw::c_char) };
        cu!(self.lib, cuGetExportTable(&mut table, &id))?;
        let table = table.cast::<usize>();
        // Slot 0: the table's size in bytes.
        if table.is_null() || unsafe { *table } < SLOTS_NEEDED * 8 {
            return Err(NOT_SUPPORTED);
        }
        let (object_of, value_of) = unsafe { (*table.add(51), *table.add(39)) };
        if object_of == 0 || value_of == 0 {
            return Err(NOT_SUPPORTED);
        }
        // SAFETY: non-null slots of the driver's table, with the signatures seen called.
        let object_of = unsafe { std::mem::transmute::<usize, ObjectOf>(object_of) };
        let value_of = unsafe { std::mem::transmute::<usize, ValueOf>(value_of) };
        let ctx = self.current as CUcontext;
        if ctx.is_null() {
            return Err(INVALID_VALUE);
        }
        let mut object = 0u64;
        super::check(unsafe { object_of(ctx, selector, &mut object) })?;
        let mut value = u64::from_le_bytes(out);
        super::check(unsafe { value_of(ctx, object, &mut value) })?;
        Ok(value.to_le_bytes())
    }
}

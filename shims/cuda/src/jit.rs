//! The application's JIT options (`protocol::jit`): read from its arrays, sent with the
//! call, and what the server's driver left (logs, log lengths, wall time, thread count)
//! written back into the application's buffers and value slots.
//!
//! numba passes both log buffers to every load and link and puts the error log in its
//! exception; `CU_JIT_MAX_REGISTERS` and the like change the code the driver makes.

use crate::route;
use crate::state::R;
use abi::cuda::{CUjit_option, CUresult};
use protocol::jit::{self, INFO_LOG, JitOut, Travel};
use std::ffi::c_void;
use std::os::raw::c_uint;

/// A log buffer of the application's: address and size.
#[derive(Debug, Clone, Copy, Default)]
struct Buffer(usize, usize);

/// Options as read from the application (addresses as integers: a link keeps them, across
/// threads, until it is destroyed).
#[derive(Debug, Default)]
pub struct AppJit {
    /// What travels.
    pub sent: Vec<(u32, u64)>,
    /// Where each sent option's value lives in the application's array.
    slots: Vec<usize>,
    info: Option<Buffer>,
    error: Option<Buffer>,
}

impl AppJit {
    /// Read `n` options and values. Options that name memory of the application other than
    /// the logs are refused (`CUDA_ERROR_NOT_SUPPORTED`) or, where only an LTO link's pruning
    /// depends on them, left out.
    ///
    /// # Safety
    /// `options` and `values` hold `n` entries each (or `n` is 0); log buffers are as large
    /// as their size options say.
    pub unsafe fn read(n: c_uint, options: *const CUjit_option, values: *mut *mut c_void) -> Result<AppJit, R> {
        let mut j = AppJit::default();
        if n == 0 {
            return Ok(j);
        }
        if options.is_null() || values.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let options = unsafe { std::slice::from_raw_parts(options, n as usize) };
        let given: Vec<(u32, u64)> =
            (0..n as usize).map(|i| (options[i].0, unsafe { *values.add(i) } as usize as u64)).collect();
        for (i, &(o, v)) in given.iter().enumerate() {
            let value = match jit::travel(o) {
                Travel::Value => v,
                Travel::Log => {
                    let buffer = Some(Buffer(v as usize, jit::log_size(&given, o)));
                    if o == INFO_LOG {
                        j.info = buffer
                    } else {
                        j.error = buffer
                    }
                    0
                }
                Travel::Dropped => {
                    shim_support::log_once!(
                        "jit-dropped",
                        "vgpu: JIT option {o} (names an LTO link keeps) is left out"
                    );
                    continue;
                }
                Travel::Refused => {
                    shim_support::log_once!(
                        "jit-refused",
                        "vgpu: JIT option {o} (host symbol addresses) is not supported"
                    );
                    return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
                }
            };
            j.sent.push((o, value));
            j.slots.push(unsafe { values.add(i) } as usize);
        }
        Ok(j)
    }

    /// Whether the driver writes anything back for these options.
    pub fn wants_out(&self) -> bool {
        self.info.is_some() || self.error.is_some() || self.sent.iter().any(|o| jit::is_output(o.0))
    }

    /// Fetch what the driver left for these options (`link`'s, or with 0 the session's last
    /// load or link input with options of its own) and write it back. Best effort: the
    /// call's own result matters more than its logs.
    pub fn fetch(&self, t: route::Target, link: u64) {
        if self.wants_out()
            && let Ok(out) = route::call(t, &protocol::ops::jit_out { link })
        {
            unsafe { self.give(&out) }
        }
    }

    /// Write `out` into the application's slots and log buffers.
    ///
    /// # Safety
    /// The arrays and buffers `read` saw are still the application's to write.
    pub unsafe fn give(&self, out: &JitOut) {
        for ((o, _), (&slot, &v)) in self.sent.iter().zip(self.slots.iter().zip(&out.values)) {
            if jit::is_output(*o) {
                unsafe { *(slot as *mut u64) = v };
            }
        }
        for (buffer, text) in [(self.info, &out.info_log), (self.error, &out.error_log)] {
            if let Some(Buffer(at, size)) = buffer
                && at != 0
                && size > 0
            {
                // As much as fits, with its NUL.
                let n = text.len().min(size - 1);
                unsafe {
                    std::ptr::copy_nonoverlapping(text.as_ptr(), at as *mut u8, n);
                    *(at as *mut u8).add(n) = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::jit::{ERROR_LOG, ERROR_LOG_SIZE, INFO_LOG_SIZE};

    #[test]
    fn the_header_numbers_match_the_protocols() {
        use CUjit_option as O;
        assert_eq!(O::CU_JIT_THREADS_PER_BLOCK.0, jit::THREADS_PER_BLOCK);
        assert_eq!(O::CU_JIT_WALL_TIME.0, jit::WALL_TIME);
        assert_eq!(O::CU_JIT_INFO_LOG_BUFFER.0, INFO_LOG);
        assert_eq!(O::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES.0, INFO_LOG_SIZE);
        assert_eq!(O::CU_JIT_ERROR_LOG_BUFFER.0, ERROR_LOG);
        assert_eq!(O::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES.0, ERROR_LOG_SIZE);
        assert_eq!(O::CU_JIT_GLOBAL_SYMBOL_NAMES.0, jit::GLOBAL_SYMBOL_NAMES);
        assert_eq!(O::CU_JIT_GLOBAL_SYMBOL_ADDRESSES.0, jit::GLOBAL_SYMBOL_ADDRESSES);
        assert_eq!(O::CU_JIT_REFERENCED_KERNEL_NAMES.0, jit::REFERENCED_KERNEL_NAMES);
        assert_eq!(O::CU_JIT_REFERENCED_VARIABLE_NAMES.0, jit::REFERENCED_VARIABLE_NAMES);
    }

    fn opts(o: &[u32]) -> Vec<CUjit_option> {
        o.iter().map(|&o| CUjit_option(o)).collect()
    }

    #[test]
    fn logs_travel_as_sizes_and_come_back_into_the_applications_buffers() {
        let mut info = [0xffu8; 8];
        let mut error = [0xffu8; 64];
        let o = opts(&[INFO_LOG, INFO_LOG_SIZE, ERROR_LOG, ERROR_LOG_SIZE, 0, 25]);
        let mut v: Vec<*mut c_void> = vec![
            info.as_mut_ptr().cast(),
            std::ptr::without_provenance_mut(8),
            error.as_mut_ptr().cast(),
            std::ptr::without_provenance_mut(64),
            std::ptr::without_provenance_mut(40),
            std::ptr::without_provenance_mut(0x1234),
        ];
        let j = unsafe { AppJit::read(6, o.as_ptr(), v.as_mut_ptr()) }.unwrap();
        // The names (25) stay behind; the buffers' addresses do not travel.
        assert_eq!(j.sent, [(INFO_LOG, 0), (INFO_LOG_SIZE, 8), (ERROR_LOG, 0), (ERROR_LOG_SIZE, 64), (0, 40)]);
        assert!(j.wants_out());
        let out = JitOut {
            values: vec![7, 20, 9, 0, 40],
            info_log: b"a longer log than fits".to_vec(),
            error_log: b"".to_vec(),
        };
        unsafe { j.give(&out) };
        assert_eq!(&info, b"a longe\0");
        assert_eq!(error[0], 0);
        // Sizes written back; the buffers' pointers and other values untouched.
        assert_eq!(v[1] as usize, 20);
        assert_eq!(v[3] as usize, 0);
        assert_eq!(v[0], info.as_mut_ptr().cast());
        assert_eq!(v[4] as usize, 40);
    }

    #[test]
    fn no_options_want_nothing_and_symbol_addresses_are_refused() {
        let j = unsafe { AppJit::read(0, std::ptr::null(), std::ptr::null_mut()) }.unwrap();
        assert!(!j.wants_out() && j.sent.is_empty());
        let o = opts(&[0]);
        let mut v: Vec<*mut c_void> = vec![std::ptr::without_provenance_mut(32)];
        let j = unsafe { AppJit::read(1, o.as_ptr(), v.as_mut_ptr()) }.unwrap();
        assert!(!j.wants_out());
        let o = opts(&[jit::GLOBAL_SYMBOL_ADDRESSES]);
        let r = unsafe { AppJit::read(1, o.as_ptr(), v.as_mut_ptr()) };
        assert_eq!(r.unwrap_err(), CUresult::CUDA_ERROR_NOT_SUPPORTED);
        assert_eq!(
            unsafe { AppJit::read(1, std::ptr::null(), v.as_mut_ptr()) }.unwrap_err(),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
    }
}

//! The application's JIT options for this side's driver (`protocol::jit`): values as sent,
//! log buffers of our own in place of the application's, and what the driver wrote back
//! returned as a [`JitOut`].

use super::{INVALID_VALUE, R};
use abi::cuda::CUjit_option;
use protocol::jit::{self, ERROR_LOG, ERROR_LOG_SIZE, INFO_LOG, INFO_LOG_SIZE, JitOut, Travel};
use std::ffi::c_void;

/// Options and values as the driver takes them. A link's stay alive as long as the link:
/// its driver writes the logs and values during later calls.
#[derive(Debug)]
pub struct Jit {
    options: Vec<CUjit_option>,
    /// Pointer-sized values (a log's: its buffer here).
    values: Vec<usize>,
    /// How many options the client sent; those after them are the log sizes added here.
    sent: usize,
    info: Box<[u8]>,
    error: Box<[u8]>,
}

impl Jit {
    pub fn new(given: &[(u32, u64)]) -> R<Jit> {
        // At least one byte each, so that a log's pointer is a real buffer.
        let mut info = vec![0u8; jit::log_size(given, INFO_LOG).max(1)].into_boxed_slice();
        let mut error = vec![0u8; jit::log_size(given, ERROR_LOG).max(1)].into_boxed_slice();
        let mut options = Vec::with_capacity(given.len() + 2);
        let mut values = Vec::with_capacity(given.len() + 2);
        for &(o, v) in given {
            let value = match (jit::travel(o), o) {
                (Travel::Log, INFO_LOG) => info.as_mut_ptr() as usize,
                (Travel::Log, _) => error.as_mut_ptr() as usize,
                // The buffer's size here, which is at most what the application has.
                (_, INFO_LOG_SIZE) => jit::log_size(given, INFO_LOG),
                (_, ERROR_LOG_SIZE) => jit::log_size(given, ERROR_LOG),
                (Travel::Value, _) => v as usize,
                // The client never sends these.
                (Travel::Dropped | Travel::Refused, _) => return Err(INVALID_VALUE),
            };
            options.push(CUjit_option(o));
            values.push(value);
        }
        // A log without its size would leave the size to the driver's guess.
        for log in [INFO_LOG, ERROR_LOG] {
            let size = jit::size_option(log);
            if given.iter().any(|o| o.0 == log) && !given.iter().any(|o| o.0 == size) {
                options.push(CUjit_option(size));
                values.push(0);
            }
        }
        Ok(Jit { options, values, sent: given.len(), info, error })
    }

    pub fn len(&self) -> u32 {
        self.options.len() as u32
    }

    pub fn options(&mut self) -> *mut CUjit_option {
        if self.options.is_empty() { std::ptr::null_mut() } else { self.options.as_mut_ptr() }
    }

    pub fn values(&mut self) -> *mut *mut c_void {
        // usize and a pointer have one layout; the driver reads and writes them as `void *`.
        if self.values.is_empty() { std::ptr::null_mut() } else { self.values.as_mut_ptr().cast() }
    }

    pub fn out(&self) -> JitOut {
        JitOut {
            values: self.values[..self.sent].iter().map(|&v| v as u64).collect(),
            info_log: JitOut::log_text(&self.info),
            error_log: JitOut::log_text(&self.error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_get_buffers_of_the_size_given_and_values_pass_as_sent() {
        let given = [(0, 32), (INFO_LOG, 0xdead), (INFO_LOG_SIZE, 64), (12, 1)];
        let mut j = Jit::new(&given).unwrap();
        assert_eq!(j.len(), 4);
        assert_eq!(j.values[0], 32);
        assert_eq!(j.values[1], j.info.as_ptr() as usize);
        assert_eq!(j.info.len(), 64);
        assert_eq!(j.values[2], 64);
        assert!(!j.options().is_null() && !j.values().is_null());
        // What a driver would write: the log and its length.
        j.info[..5].copy_from_slice(b"done\0");
        j.values[2] = 5;
        let out = j.out();
        assert_eq!(out.values, [32, j.info.as_ptr() as u64, 5, 1]);
        assert_eq!(out.info_log, b"done");
        assert_eq!(out.error_log, b"");
    }

    #[test]
    fn a_log_without_its_size_gets_size_zero_and_pointer_options_are_errors() {
        let j = Jit::new(&[(ERROR_LOG, 0)]).unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(j.options[1], CUjit_option(ERROR_LOG_SIZE));
        assert_eq!(j.values[1], 0);
        assert_eq!(j.out().values.len(), 1);
        assert!(Jit::new(&[(jit::GLOBAL_SYMBOL_ADDRESSES, 1)]).is_err());
        let mut none = Jit::new(&[]).unwrap();
        assert!(none.options().is_null() && none.values().is_null());
    }

    #[test]
    fn a_huge_size_is_capped() {
        let j = Jit::new(&[(INFO_LOG, 0), (INFO_LOG_SIZE, 1 << 31)]).unwrap();
        assert_eq!(j.info.len(), jit::LOG_MAX as usize);
        assert_eq!(j.values[1], jit::LOG_MAX as usize);
    }
}

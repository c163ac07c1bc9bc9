//! JIT options (`CUjit_option` and its value) across the wire.
//!
//! The application passes options as `(option, pointer-sized value)` pairs. Most values are
//! numbers and travel as they are. The two log buffers point into the application's memory:
//! they travel as their sizes, the server passes buffers of its own to its driver, and the
//! logs come back ([`JitOut`]) to be copied into the application's buffers. The driver also
//! writes some values back (the logs' lengths, the wall time, the thread count it compiled
//! for); those come back too. Numbers are the header's (`shims/cuda` tests them against the
//! bindings).

use serde::{Deserialize, Serialize};

/// `CU_JIT_THREADS_PER_BLOCK`: in and out.
pub const THREADS_PER_BLOCK: u32 = 1;
/// `CU_JIT_WALL_TIME`: out (a `float` in the value's slot).
pub const WALL_TIME: u32 = 2;
/// `CU_JIT_INFO_LOG_BUFFER`: the application's buffer.
pub const INFO_LOG: u32 = 3;
/// `CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES`: the buffer's size in; the log's length out.
pub const INFO_LOG_SIZE: u32 = 4;
/// `CU_JIT_ERROR_LOG_BUFFER`.
pub const ERROR_LOG: u32 = 5;
/// `CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES`.
pub const ERROR_LOG_SIZE: u32 = 6;
/// `CU_JIT_GLOBAL_SYMBOL_NAMES` and `_ADDRESSES`: arrays of the application's pointers.
pub const GLOBAL_SYMBOL_NAMES: u32 = 17;
pub const GLOBAL_SYMBOL_ADDRESSES: u32 = 18;
/// `CU_JIT_REFERENCED_KERNEL_NAMES` and `CU_JIT_REFERENCED_VARIABLE_NAMES`: arrays of names.
pub const REFERENCED_KERNEL_NAMES: u32 = 25;
pub const REFERENCED_VARIABLE_NAMES: u32 = 27;

/// The largest log a server keeps for one call: the driver's logs of a large module run to
/// kilobytes; a larger buffer the application offers gets this much.
pub const LOG_MAX: u64 = 1 << 20;

/// How an option's value travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Travel {
    /// A number, as it is.
    Value,
    /// A log buffer: its size travels (from its size option), the server passes its own.
    Log,
    /// Names that only prune what an LTO link keeps: left out, the link keeps everything,
    /// which changes no result.
    Dropped,
    /// Pointers into the application's memory that change the result: refused.
    Refused,
}

pub fn travel(option: u32) -> Travel {
    match option {
        INFO_LOG | ERROR_LOG => Travel::Log,
        REFERENCED_KERNEL_NAMES | REFERENCED_VARIABLE_NAMES => Travel::Dropped,
        GLOBAL_SYMBOL_NAMES | GLOBAL_SYMBOL_ADDRESSES => Travel::Refused,
        _ => Travel::Value,
    }
}

/// Whether the driver writes `option`'s value back.
pub fn is_output(option: u32) -> bool {
    matches!(option, THREADS_PER_BLOCK | WALL_TIME | INFO_LOG_SIZE | ERROR_LOG_SIZE)
}

/// The option that gives log `log`'s (`INFO_LOG` or `ERROR_LOG`) buffer size.
pub fn size_option(log: u32) -> u32 {
    if log == INFO_LOG { INFO_LOG_SIZE } else { ERROR_LOG_SIZE }
}

/// The size the server gives log `log` (`INFO_LOG` or `ERROR_LOG`) among `options`: its size
/// option's value, at most [`LOG_MAX`].
pub fn log_size(options: &[(u32, u64)], log: u32) -> usize {
    let size = options.iter().rev().find(|o| o.0 == size_option(log)).map_or(0, |o| o.1 & 0xffff_ffff);
    size.min(LOG_MAX) as usize
}

/// What a JIT call left behind: every option's value after it, in the order sent (the
/// driver wrote some of them), and the two logs' text without their NUL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JitOut {
    pub values: Vec<u64>,
    pub info_log: Vec<u8>,
    pub error_log: Vec<u8>,
}

impl JitOut {
    /// A log as the driver left it in `buffer`: up to its first NUL.
    pub fn log_text(buffer: &[u8]) -> Vec<u8> {
        buffer.iter().position(|&b| b == 0).map_or(buffer, |n| &buffer[..n]).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_travel_as_sizes_and_pointers_do_not_travel() {
        assert_eq!(travel(INFO_LOG), Travel::Log);
        assert_eq!(travel(ERROR_LOG), Travel::Log);
        assert_eq!(travel(INFO_LOG_SIZE), Travel::Value);
        assert_eq!(travel(0), Travel::Value); // CU_JIT_MAX_REGISTERS
        assert_eq!(travel(REFERENCED_KERNEL_NAMES), Travel::Dropped);
        assert_eq!(travel(GLOBAL_SYMBOL_ADDRESSES), Travel::Refused);
    }

    #[test]
    fn log_size_is_the_last_size_given_capped_and_32_bit() {
        assert_eq!(log_size(&[(INFO_LOG, 0), (INFO_LOG_SIZE, 4096)], INFO_LOG), 4096);
        assert_eq!(log_size(&[(INFO_LOG_SIZE, 4096)], ERROR_LOG), 0);
        assert_eq!(log_size(&[(ERROR_LOG_SIZE, 1 << 40 | 77)], ERROR_LOG), 77);
        assert_eq!(log_size(&[(ERROR_LOG_SIZE, 1 << 30)], ERROR_LOG), LOG_MAX as usize);
        assert_eq!(log_size(&[(INFO_LOG_SIZE, 1), (INFO_LOG_SIZE, 9)], INFO_LOG), 9);
    }

    #[test]
    fn log_text_stops_at_the_nul() {
        assert_eq!(JitOut::log_text(b"ptxas info\0junk"), b"ptxas info");
        assert_eq!(JitOut::log_text(b"no nul"), b"no nul");
        assert_eq!(JitOut::log_text(b""), b"");
    }

    #[test]
    fn outputs_are_the_four_the_driver_writes() {
        let out: Vec<u32> = (0..35).filter(|&o| is_output(o)).collect();
        assert_eq!(out, [THREADS_PER_BLOCK, WALL_TIME, INFO_LOG_SIZE, ERROR_LOG_SIZE]);
    }
}

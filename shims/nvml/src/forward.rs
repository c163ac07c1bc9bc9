//! NVML functions forwarded to the server, generated from `protocol::nvml_functions!`.
//!
//! Output buffers travel both ways (a versioned struct carries its version to the server);
//! what the real call wrote comes back and is copied into the caller's memory.

use crate::devices;
use abi::nvml::*;
use protocol::ops;
use shim_support::guard;
use std::os::raw::{c_char, c_int, c_uint};

const UNKNOWN: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_UNKNOWN;

/// One caller buffer: where it is and how long.
pub struct Buf(pub *mut u8, pub usize);

/// Forward `name` for device handle `dev` (or none), with the caller's buffers.
/// Returns the NVML code and the auxiliary count.
pub unsafe fn call(name: &str, dev: Option<nvmlDevice_t>, args: [u64; 3], bufs: &[Buf]) -> (nvmlReturn_t, u64) {
    let Some(func) = protocol::nvml::index_of(name) else { return (UNKNOWN, 0) };
    let (sess, device) = match dev {
        Some(h) => match devices::device(h) {
            Ok((s, _, d)) => (s, Some(d)),
            Err(e) => return (e, 0),
        },
        None => match crate::local::session() {
            Ok(s) => (s, None),
            Err(e) => return (e, 0),
        },
    };
    if bufs.iter().any(|b| b.0.is_null() && b.1 > 0) {
        return (nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT, 0);
    }
    let mut data = Vec::with_capacity(bufs.iter().map(|b| b.1).sum());
    for b in bufs {
        if b.1 > 0 {
            data.extend_from_slice(unsafe { std::slice::from_raw_parts(b.0, b.1) });
        }
    }
    let mut back = vec![0u8; data.len()];
    let (server, index) = device.map_or((0, 0), |d| (d.server as usize, d.nvml_index));
    let r = sess.call(server, 0, &ops::nvml_call { func, device: index, args }, &[&data], Some(&mut back));
    match r {
        Ok(out) => {
            if out.ret == 0 || out.ret == nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE.0 {
                let mut at = 0;
                for b in bufs {
                    if b.1 > 0 {
                        unsafe { std::ptr::copy_nonoverlapping(back[at..].as_ptr(), b.0, b.1) };
                    }
                    at += b.1;
                }
            }
            (nvmlReturn_t(out.ret), out.aux)
        }
        Err(client::Error::Api(code)) => (nvmlReturn_t(code), 0),
        Err(_) => (nvmlReturn_t::NVML_ERROR_GPU_IS_LOST, 0),
    }
}

fn buf<T>(p: *mut T) -> Buf {
    Buf(p.cast(), if p.is_null() { 0 } else { size_of::<T>() })
}

/// A `DevOuts` call: the NULL outputs (no bytes) named by a mask, as NVML takes them.
unsafe fn outs(name: &str, dev: nvmlDevice_t, bufs: &[Buf]) -> nvmlReturn_t {
    let nulls = bufs.iter().enumerate().filter(|(_, b)| b.0.is_null()).fold(0u64, |m, (i, _)| m | 1 << i);
    unsafe { call(name, Some(dev), [nulls, 0, 0], bufs).0 }
}

/// A call whose count goes in and out (`DevArray`, `DevArgCountArray`): the caller's count
/// travels as `args[at]`, 0 where `arr` is NULL (NVML asked for the count alone), and the
/// count the server's NVML left is written back.
///
/// # Safety
/// `count` is valid; `arr`, unless NULL, holds `*count` elements of `elem` bytes.
unsafe fn counted(
    name: &str,
    dev: nvmlDevice_t,
    mut args: [u64; 3],
    at: usize,
    count: *mut c_uint,
    arr: *mut u8,
    elem: usize,
) -> nvmlReturn_t {
    let n = if arr.is_null() { 0 } else { unsafe { *count as usize } };
    args[at] = n as u64;
    let (r, aux) = unsafe { call(name, Some(dev), args, &[Buf(arr, n * elem)]) };
    unsafe { *count = aux as c_uint };
    r
}

macro_rules! forward_one {
    (DevOut $name:ident ($t:ty)) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dev: nvmlDevice_t, out: *mut $t) -> nvmlReturn_t {
            if out.is_null() {
                return nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
            }
            guard(UNKNOWN, || unsafe { call(stringify!($name), Some(dev), [0; 3], &[buf(out)]).0 })
        }
    };
    (DevOuts $name:ident ($t:ty, $u:ty)) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dev: nvmlDevice_t, a: *mut $t, b: *mut $u) -> nvmlReturn_t {
            guard(UNKNOWN, || unsafe { outs(stringify!($name), dev, &[buf(a), buf(b)]) })
        }
    };
    (DevOuts $name:ident ($t:ty, $u:ty, $v:ty)) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dev: nvmlDevice_t, a: *mut $t, b: *mut $u, c: *mut $v) -> nvmlReturn_t {
            guard(UNKNOWN, || unsafe { outs(stringify!($name), dev, &[buf(a), buf(b), buf(c)]) })
        }
    };
    (DevOuts $name:ident ($t:ty, $u:ty, $v:ty, $w:ty)) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            dev: nvmlDevice_t,
            a: *mut $t,
            b: *mut $u,
            c: *mut $v,
            d: *mut $w,
        ) -> nvmlReturn_t {
            guard(UNKNOWN, || unsafe { outs(stringify!($name), dev, &[buf(a), buf(b), buf(c), buf(d)]) })
        }
    };
    (DevArgOut $name:ident ($t:ty)) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dev: nvmlDevice_t, a0: c_uint, out: *mut $t) -> nvmlReturn_t {
            if out.is_null() {
                return nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
            }
            guard(UNKNOWN, || unsafe { call(stringify!($name), Some(dev), [a0 as u64, 0, 0], &[buf(out)]).0 })
        }
    };
    (DevArg2Out $name:ident ($t:ty)) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dev: nvmlDevice_t, a0: c_uint, a1: c_uint, out: *mut $t) -> nvmlReturn_t {
            if out.is_null() {
                return nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
            }
            guard(UNKNOWN, || unsafe { call(stringify!($name), Some(dev), [a0 as u64, a1 as u64, 0], &[buf(out)]).0 })
        }
    };
    (DevArg3Out $name:ident ($t:ty)) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            dev: nvmlDevice_t,
            a0: c_uint,
            a1: c_uint,
            a2: c_uint,
            out: *mut $t,
        ) -> nvmlReturn_t {
            if out.is_null() {
                return nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
            }
            guard(UNKNOWN, || unsafe {
                call(stringify!($name), Some(dev), [a0 as u64, a1 as u64, a2 as u64], &[buf(out)]).0
            })
        }
    };
    (DevBuf $name:ident) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dev: nvmlDevice_t, s: *mut c_char, len: c_uint) -> nvmlReturn_t {
            if s.is_null() {
                return nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
            }
            guard(UNKNOWN, || unsafe {
                call(stringify!($name), Some(dev), [len as u64, 0, 0], &[Buf(s.cast(), len as usize)]).0
            })
        }
    };
    (DevArgBuf $name:ident) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dev: nvmlDevice_t, a0: c_uint, s: *mut c_char, len: c_uint) -> nvmlReturn_t {
            if s.is_null() {
                return nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
            }
            guard(UNKNOWN, || unsafe {
                call(stringify!($name), Some(dev), [a0 as u64, len as u64, 0], &[Buf(s.cast(), len as usize)]).0
            })
        }
    };
    (DevArray $name:ident ($t:ty)) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dev: nvmlDevice_t, count: *mut c_uint, arr: *mut $t) -> nvmlReturn_t {
            if count.is_null() {
                return nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
            }
            guard(UNKNOWN, || unsafe { counted(stringify!($name), dev, [0; 3], 0, count, arr.cast(), size_of::<$t>()) })
        }
    };
    (DevArgCountArray $name:ident ($t:ty)) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            dev: nvmlDevice_t,
            a0: c_uint,
            count: *mut c_uint,
            arr: *mut $t,
        ) -> nvmlReturn_t {
            if count.is_null() {
                return nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
            }
            guard(UNKNOWN, || unsafe {
                counted(stringify!($name), dev, [a0 as u64, 0, 0], 1, count, arr.cast(), size_of::<$t>())
            })
        }
    };
    (DevArgArray $name:ident ($t:ty)) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dev: nvmlDevice_t, count: c_int, arr: *mut $t) -> nvmlReturn_t {
            if arr.is_null() || count < 0 {
                return nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
            }
            guard(UNKNOWN, || unsafe {
                let n = count as usize;
                call(stringify!($name), Some(dev), [n as u64, 0, 0], &[Buf(arr.cast(), n * size_of::<$t>())]).0
            })
        }
    };
    (SysOut $name:ident ($t:ty)) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(out: *mut $t) -> nvmlReturn_t {
            if out.is_null() {
                return nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
            }
            guard(UNKNOWN, || unsafe { call(stringify!($name), None, [0; 3], &[buf(out)]).0 })
        }
    };
}

macro_rules! forward_all {
    ( $( $class:ident fn $name:ident $( ( $($t:ty),* ) )? ; )* ) => {
        $( forward_one!($class $name $( ($($t),*) )?); )*
    };
}

protocol::nvml_functions!(forward_all);

#[cfg(test)]
mod tests {
    //! Every table entry's class must take as many arguments as the real function: a class
    //! with one argument too many (a length the function does not take) would let the server
    //! hand the real NVML a buffer of the caller's invented size.

    use abi::nvml::NvmlLib;

    trait Arity {
        const N: usize;
    }
    macro_rules! arity {
        ($($n:literal: $($a:ident)*;)*) => {$(
            impl<R, $($a),*> Arity for unsafe extern "C" fn($($a),*) -> R {
                const N: usize = $n;
            }
        )*};
    }
    arity! { 1: A; 2: A B; 3: A B C; 4: A B C D; 5: A B C D E; 6: A B C D E F; }

    fn arity<F: Arity, E>(_: *const Result<F, E>) -> usize {
        F::N
    }

    /// Arguments a class takes; `outputs`: how many output types its entry names.
    fn class_arity(class: &str, outputs: usize) -> usize {
        match class {
            "SysOut" => 1,
            "DevOuts" => 1 + outputs,
            "DevOut" => 2,
            "DevArgOut" | "DevBuf" | "DevArray" | "DevArgArray" => 3,
            "DevArg2Out" | "DevArgBuf" | "DevArgCountArray" => 4,
            "DevArg3Out" => 5,
            other => panic!("unknown class {other}"),
        }
    }

    macro_rules! check_all {
        ( $( $class:ident fn $name:ident $( ( $($t:ty),* ) )? ; )* ) => {
            #[test]
            fn classes_match_the_real_signatures() {
                let lib = std::mem::MaybeUninit::<NvmlLib>::uninit();
                let p = lib.as_ptr();
                let mut wrong = Vec::new();
                $(
                    // SAFETY: only the field's address is taken, to learn its type.
                    let real = arity(unsafe { &raw const (*p).$name });
                    let outputs = <[&str]>::len(&[$($(stringify!($t)),*)?]);
                    let class = class_arity(stringify!($class), outputs);
                    if real != class {
                        wrong.push(format!("{} takes {real} arguments, class {} has {class}", stringify!($name), stringify!($class)));
                    }
                )*
                assert!(wrong.is_empty(), "{wrong:#?}");
            }
        };
    }
    protocol::nvml_functions!(check_all);
}

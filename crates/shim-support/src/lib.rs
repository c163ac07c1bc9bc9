//! Runtime helpers linked into every vgpu shim (`libcuda.so.1`, `libcudart.so.N`, ...).
//!
//! Everything here runs inside someone else's process, so nothing may panic across the C
//! boundary, block forever (a lock held by a thread that did not survive `fork` stays held in
//! the child), or assume that `main` ran.
//!
//! * [`unsupported`] — called by every generated stub: logs `vgpu: NAME is not implemented
//!   (returns not-supported)` once per name.
//! * [`guard`] — runs a closure, turning a panic into the API's error code.
//! * [`init_logging`] — the lazily installed logger honouring `VGPU_LOG` (a tracing filter,
//!   default `warn`), writing to stderr.
//! * [`first_time`] / [`log_once!`] — lock-free "has this key been seen" for one-shot messages.

mod logging;
mod once;

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use logging::init_logging;
pub use once::OnceSet;

#[doc(hidden)]
pub use tracing as __tracing;

/// Process-wide set behind [`first_time`]: 4096 slots, enough for every exported name of the
/// largest library (libcublas, 757) several times over.
static SEEN: OnceSet<4096> = OnceSet::new();

/// `true` the first time `key` is passed in this process (per shim: each cdylib has its own
/// copy), `false` afterwards. Lock-free, never blocks, never panics, safe after `fork`.
/// If the table is crowded it may answer `true` again for a key (a repeated message is the
/// worst outcome).
pub fn first_time(key: &str) -> bool {
    SEEN.insert(key)
}

/// Called by every generated stub (an exported entry point we do not implement): logs
/// `vgpu: NAME is not implemented (returns not-supported)` at `warn`, once per name.
/// Never panics and never blocks.
pub fn unsupported(name: &'static str) {
    if first_time(name) {
        quietly(|| {
            init_logging();
            tracing::warn!(target: "vgpu", "vgpu: {name} is not implemented (returns not-supported)");
        });
    }
}

/// Run `f`; if it panics, log the panic (once per distinct message) and return `on_panic`
/// instead of letting the unwind reach C (which would abort the host process).
///
/// ```
/// let r = shim_support::guard(999u32, || 0u32);
/// assert_eq!(r, 0);
/// ```
pub fn guard<R>(on_panic: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = panic_message(&*payload);
            // A payload whose Drop panics must not escape either.
            if catch_unwind(AssertUnwindSafe(move || drop(payload))).is_err() {
                // The second payload is leaked on purpose: dropping it could panic again.
            }
            if first_time(&msg) {
                quietly(|| {
                    init_logging();
                    tracing::error!(target: "vgpu", "vgpu: internal error (panic caught at the C boundary): {msg}");
                });
            }
            on_panic
        }
    }
}

/// Log `$($arg)+` at `warn` (target `vgpu`) only the first time `$key` (a `&str`) is seen.
///
/// ```
/// shim_support::log_once!("doc-example", "vgpu: something odd happened: {}", 42);
/// ```
#[macro_export]
macro_rules! log_once {
    ($key:expr, $($arg:tt)+) => {
        if $crate::first_time($key) {
            $crate::init_logging();
            $crate::__tracing::warn!(target: "vgpu", $($arg)+);
        }
    };
}

/// Zero-initialised storage for an exported data object (the `cudbg*` debugger variables of
/// `libcuda.so.1`): `N` bytes, 8-byte aligned so that a debugger's 32- or 64-bit accesses
/// are aligned. Generated stubs declare `static mut NAME: DataObject<N>`.
#[repr(C, align(8))]
pub struct DataObject<const N: usize>(pub [u8; N]);

impl<const N: usize> DataObject<N> {
    /// All zero.
    pub const fn zeroed() -> Self {
        Self([0; N])
    }
}

/// Text of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}

/// Run a logging closure, swallowing any panic from it (a subscriber writing to a closed
/// stderr, say). The payload is leaked rather than dropped, for the same reason as in [`guard`].
fn quietly(f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        std::mem::forget(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_objects_are_aligned_and_sized() {
        assert_eq!(std::mem::size_of::<DataObject<8>>(), 8);
        assert_eq!(std::mem::align_of::<DataObject<8>>(), 8);
        assert_eq!(std::mem::size_of::<DataObject<4096>>(), 4096);
        assert!(DataObject::<16>::zeroed().0.iter().all(|b| *b == 0));
    }

    #[test]
    fn first_time_is_true_once() {
        assert!(first_time("shim-support-test-key"));
        assert!(!first_time("shim-support-test-key"));
        assert!(first_time("shim-support-test-key-2"));
    }

    #[test]
    fn unsupported_never_panics_and_records_the_name() {
        unsupported("cuShimSupportTestName");
        unsupported("cuShimSupportTestName");
        assert!(!first_time("cuShimSupportTestName"));
    }

    #[test]
    fn guard_passes_values_through() {
        assert_eq!(guard(7u32, || 3u32), 3);
    }

    #[test]
    fn guard_turns_panics_into_the_error_code() {
        assert_eq!(guard(801u32, || panic!("boom {}", 1)), 801);
        assert_eq!(guard(801u32, || panic!("static boom")), 801);
        assert_eq!(guard(5i32, || std::panic::panic_any(17u8)), 5);
        // the message was logged once, keyed by its text
        assert!(!first_time("boom 1"));
    }

    #[test]
    fn guard_survives_a_payload_whose_drop_panics() {
        struct Nasty;
        impl Drop for Nasty {
            fn drop(&mut self) {
                panic!("drop panics too");
            }
        }
        assert_eq!(guard(1u8, || std::panic::panic_any(Nasty)), 1);
    }

    #[test]
    fn log_once_macro_compiles_and_dedupes() {
        log_once!("log-once-test", "vgpu: test message {}", 1);
        assert!(!first_time("log-once-test"));
    }

    #[test]
    fn init_logging_is_idempotent() {
        init_logging();
        init_logging();
        tracing::warn!(target: "vgpu", "vgpu: logger works");
    }

    #[test]
    fn concurrent_first_time_answers_true_exactly_once() {
        let set: &'static OnceSet<64> = Box::leak(Box::new(OnceSet::new()));
        let hits: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(|| usize::from(set.insert("same")))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(hits, 1);
    }
}

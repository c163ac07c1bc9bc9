//! The logger: installed on first use, filtered by `VGPU_LOG` (default `warn`), to stderr.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, Ordering};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const DONE: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);

/// Install this shim's tracing subscriber if nobody did yet. Honours `VGPU_LOG` (any
/// `tracing_subscriber::EnvFilter` directive, e.g. `debug` or `vgpu=trace`); the default is
/// `warn`. Never panics and never waits: a caller that races with another thread's
/// initialisation returns at once (its message may then be dropped), and a subscriber that is
/// already set (by the host, or a test harness) is left in place.
pub fn init_logging() {
    if STATE.load(Ordering::Acquire) == DONE {
        return;
    }
    if STATE.compare_exchange(UNINIT, BUSY, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return;
    }
    if let Err(payload) = std::panic::catch_unwind(install) {
        std::mem::forget(payload);
    }
    STATE.store(DONE, Ordering::Release);
}

fn install() {
    let spec = std::env::var("VGPU_LOG").unwrap_or_default();
    let filter = EnvFilter::builder().with_default_directive(LevelFilter::WARN.into()).parse_lossy(spec.trim());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .finish();
    // Err means someone already installed a global subscriber: keep theirs.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

//! `vgpu serve`: accepts clients and gives each session its own worker process, in which a
//! backend performs the forwarded calls: `cuda` (the real driver, NVML and cuBLAS) or
//! `sim` (a CPU stand-in for machines with no GPU).

mod blobs;
mod cachedir;
pub mod cublas;
pub mod cuda;
/// Decoding of untrusted bytes, for the fuzz targets and the bounded run in the tests.
#[doc(hidden)]
pub mod fuzzing;
pub mod gpus;
pub mod host_funcs;
mod listener;
mod pages;
pub mod sim;
mod worker;

pub use listener::{ServeOptions, TlsFiles, serve, spawn_worker_for};
pub use worker::{HANDSHAKE_DEADLINE, SessionConfig, run_session};

use device_model::Snapshot;
use protocol::Backend;

/// Which backend performs the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Cuda,
    Sim,
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cuda" => Ok(BackendKind::Cuda),
            "sim" => Ok(BackendKind::Sim),
            _ => Err(format!("unknown backend {s:?} (cuda or sim)")),
        }
    }
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cuda => "cuda",
            BackendKind::Sim => "sim",
        }
    }
}

/// Largest bulk a backend gives a place of its own before the bytes arrive
/// ([`Session::bulk_place`]); the shims send copies in 1 MiB frames.
pub const BULK_PLACE_MAX: usize = 4 << 20;

/// Frames whose bulk is an asynchronous host-to-device copy's bytes, with the arguments
/// `(dst, stream)` of `cuMemcpyHtoDAsync_v2` (`htod_keep` has the same), which a backend
/// may land in pinned memory ([`Session::bulk_place`]).
pub fn lands_htod(op: u32) -> bool {
    op == protocol::Op::cuMemcpyHtoDAsync_v2 as u32 || op == protocol::Op::htod_keep as u32
}

/// A few threads of this worker's own for work on a MiB and more that would otherwise hold
/// up its frames: kept chunks read and checked (`blobs`; one thread copies out of the page
/// cache and hashes at a few GB/s, slower than the links the chunks would otherwise cross)
/// and the faulting in of a page store's memory ahead of its use (`pages`).
pub(crate) fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(4).thread_name(|_| "vgpu-pool".into()).build().ok())
        .as_ref()
}

/// A wait run on a helper thread (see [`Session::wait_job`]): its result answers the call.
pub type WaitJob = Box<dyn FnOnce() -> Result<(), u32> + Send>;

/// What a backend offers beyond the forwarded calls.
pub trait Session: Backend {
    /// Make `ctx` (a context id from this session, 0 for none) current for the next call.
    fn set_context(&mut self, ctx: u64) {
        let _ = ctx;
    }
    /// Other sessions use the GPU too (`transport::crowd`), or no longer: while they do, the
    /// session waits for the GPU without spinning a core (each waiter's turn comes after
    /// the others' work anyway).
    fn share_gpu(&mut self, shared: bool) {
        let _ = shared;
    }
    /// Release everything the session holds (its worker is about to exit).
    fn close(&mut self) {}
    /// Finish work deferred in order (before a synchronous call is answered); an error it
    /// met, or one met earlier by deferred work, answers that call.
    fn flush(&mut self) -> Option<u32> {
        None
    }
    /// An error met by deferred work while another call ran (reported like a one-way
    /// call's).
    fn take_async_error(&mut self) -> Option<u32> {
        None
    }
    /// Where the `len` bulk bytes of the frame about to be read (opcode `op`, encoded
    /// arguments `args`, its context already set) should land, when the backend wants them
    /// somewhere other than the worker's buffer: pinned memory that an asynchronous copy
    /// can start from without copying them again. `None`: the worker's buffer.
    ///
    /// Contract (the worker reads into it, unsafely): the `len` bytes at the pointer stay
    /// valid, and nothing but that read touches them, until the frame's call has been
    /// dispatched; the call then finds them as its `Io::bulk_in`.
    fn bulk_place(&mut self, op: u32, args: &[u8], len: usize) -> Option<std::ptr::NonNull<u8>> {
        let _ = (op, args, len);
        None
    }
    /// For a synchronous call that would block for a while waiting for the GPU (a
    /// synchronize of a stream or event still busy): the wait, to be run on a helper thread
    /// that answers the call, so that the session goes on executing other application
    /// threads' calls meanwhile (DESIGN, Threads). `None`: run the call here, as usual.
    fn wait_job(&mut self, op: u32, args: &[u8]) -> Option<WaitJob> {
        let _ = (op, args);
        None
    }
    /// The reply's bulk bytes when the call left them in the backend's own memory (pinned
    /// memory a device-to-host copy landed in) rather than in `Io::bulk_out`, which is then
    /// empty; taken after every synchronous call.
    fn reply_bulk(&mut self) -> Option<&[u8]> {
        None
    }
    /// Device memory this session's allocations hold, all devices together (bytes), for
    /// `vgpu sessions`.
    fn memory_used(&self) -> u64 {
        0
    }
    /// Take the shared-memory segment the client passed (`shm:` addresses): the `shm_*`
    /// copies name offsets in it.
    fn attach_segment(&mut self, segment: transport::Segment) -> Result<(), String> {
        let _ = segment;
        Err("this backend has no shared-memory data plane".into())
    }
    /// Where the session's host functions run (`launch_host_func`): the client's, through
    /// its host-function connection once that joined.
    fn set_host_funcs(&mut self, funcs: std::sync::Arc<host_funcs::HostFuncs>) {
        let _ = funcs;
    }
}

/// Describe the host's GPUs for the handshake.
pub fn snapshot(kind: BackendKind, sim_devices: u32, sim_seed: u8) -> Result<Snapshot, String> {
    match kind {
        BackendKind::Sim => Ok(sim::snapshot(sim_devices, sim_seed)),
        BackendKind::Cuda => cuda::snapshot(),
    }
}

/// Make the backend for one session.
pub fn open_backend(
    kind: BackendKind,
    snapshot: &Snapshot,
    memory_limit: Option<u64>,
) -> Result<Box<dyn Session>, String> {
    match kind {
        BackendKind::Sim => Ok(Box::new(sim::Sim::new(snapshot.clone(), memory_limit))),
        BackendKind::Cuda => Ok(Box::new(cuda::CudaSession::open(snapshot, memory_limit)?)),
    }
}

//! Host functions on streams (`cuLaunchHostFunc`, `cuStreamAddCallback`). The function is
//! the application's, so it runs in the client's process; its place in the stream is the
//! server's to keep. The server queues a stand-in with its own driver, which, when the
//! stream reaches it, asks the client to run function `id` and holds the stream until the
//! client says it returned, as the driver holds it natively while the function runs.
//!
//! Both messages travel on a connection of their own (joined as `hello::Role::HostFuncs`),
//! not the session's: the session's worker may itself be waiting for that stream (a
//! context synchronize), and would never read the answer that releases it.

use serde::{Deserialize, Serialize};

/// The server's request (opcode `frame::OP_HOST_FUNC`): run function `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: u64,
    /// The stream's status, passed to a `cuStreamAddCallback` callback (0: success).
    pub status: u32,
    /// Whether this is the function's only run: a function captured into a graph runs at
    /// every launch of it, and the client keeps it.
    pub last: bool,
}

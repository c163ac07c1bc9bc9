//! The handshake: the first frame each way (opcode `OP_HELLO`), postcard-encoded.

use device_model::Snapshot;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    pub wire_hash: u64,
    pub pid: u32,
    pub host: String,
    pub program: String,
    /// Empty where the transport needs none (unix sockets rely on file permissions).
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Welcome {
    Accepted {
        session: u64,
        server_version: String,
        snapshot: Snapshot,
        /// Extra connections the client may open for bulk bytes (`None`: this listener
        /// offers none, as a `tls://` one).
        lanes: Option<LaneOffer>,
    },
    Refused {
        reason: String,
    },
}

/// What a client needs to open lanes to its session: they connect to the same address
/// and present the session and its key in an `OP_JOIN` frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneOffer {
    /// A secret of this session, told only over its own (authenticated) connection.
    pub key: [u8; 32],
    /// Most lanes the session takes.
    pub max: u32,
}

/// The first frame on an extra connection of a session: a lane, or its host-function
/// connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Join {
    pub session: u64,
    pub key: [u8; 32],
    pub role: Role,
}

/// What an extra connection of a session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Which of the client's lanes this is (0, 1, ...): a reply's chunk `i` goes on lane `i`.
    Lane(u32),
    /// The connection on which the server asks the client to run its host functions
    /// (`host_funcs`).
    HostFuncs,
}

/// Who a session's client is, as its worker tells its server once the client is admitted
/// (over the channel the server passes the session's lanes down).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub pid: u32,
    pub host: String,
    pub program: String,
}

/// What a worker tells its server up the lane channel, one datagram each (`vgpu sessions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkerNote {
    /// The client, once admitted.
    Client(ClientInfo),
    /// Device memory the session's allocations hold now, all devices together (bytes).
    Memory(u64),
}

/// One session, as `vgpu sessions` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub session: u64,
    /// The worker process serving it (what `nvidia-smi` on the GPU host lists).
    pub worker_pid: u32,
    /// The listener it came through (`tls://0.0.0.0:7443`).
    pub listener: String,
    /// Its peer: a TCP address, or a local process by its credentials.
    pub peer: String,
    /// When it connected, in seconds since the Unix epoch.
    pub since: u64,
    /// `None` until its worker has admitted the client.
    pub client: Option<ClientInfo>,
    /// Device memory its allocations hold (bytes; told by its worker twice a second at
    /// most). The context and libraries' own memory come on top: `nvidia-smi` shows the
    /// worker's whole share.
    pub memory: u64,
}

impl Hello {
    /// Why a server with `(version, hash)` must refuse this client, if it must.
    pub fn mismatch(&self, version: u32, hash: u64) -> Option<String> {
        if self.protocol_version != version {
            return Some(format!(
                "protocol version mismatch: client speaks {}, server speaks {}",
                self.protocol_version, version
            ));
        }
        if self.wire_hash != hash {
            return Some(format!(
                "wire table mismatch: client {:016x}, server {:016x} (client and server come from different vgpu builds)",
                self.wire_hash, hash
            ));
        }
        None
    }
}

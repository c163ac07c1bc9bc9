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
    Accepted { session: u64, server_version: String, snapshot: Snapshot },
    Refused { reason: String },
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

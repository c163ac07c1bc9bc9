//! The fixed frame header that starts every message in both directions.
//!
//! A frame is `Header`, then `args_len` bytes of postcard-encoded arguments (or a reply value),
//! then `bulk_len` raw bytes (copy payloads, module images), which never pass through a
//! serializer.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `VGP1` in little-endian order.
pub const MAGIC: u32 = u32::from_le_bytes(*b"VGP1");
/// Arguments are small; anything big travels as bulk.
pub const MAX_ARGS: u32 = 1 << 20;
/// Largest bulk payload in one frame; copies larger than this are split by the sender.
pub const MAX_BULK: u64 = 1 << 30;
/// Copies are streamed in chunks of this size so that neither end buffers a whole large copy.
pub const CHUNK: usize = 8 << 20;

/// The caller does not wait for a reply; an error is kept and returned by the next sync call.
pub const FLAG_ONEWAY: u32 = 1;
/// This frame answers the request with the same `seq`.
pub const FLAG_REPLY: u32 = 2;
/// The server is alive and still working on the caller's request.
pub const FLAG_HEARTBEAT: u32 = 4;
/// This frame's `bulk_len` bytes do not follow it: they arrive striped over the session's
/// lanes, in [`OP_LANE`] chunks that name this frame's `seq` (a request's or, when it
/// asked with [`FLAG_REPLY_LANES`], a reply's).
pub const FLAG_LANES: u32 = 8;
/// Requests: the client reads its lanes for this request's reply (`status` says how many
/// lanes it has); a reply with large bulk may come with [`FLAG_LANES`], chunk `i` on lane `i`.
pub const FLAG_REPLY_LANES: u32 = 16;
/// An [`OP_LANE`] chunk whose `bulk_len` bytes are coded by [`crate::dequant`]; its 8
/// argument bytes are the decoded length (little-endian), which is what it fills.
pub const FLAG_CODED: u32 = 32;
/// Replies: other sessions share the server's GPU now, so the client's lane threads should
/// not poll for work (see `transport::crowd`).
pub const FLAG_CROWDED: u32 = 64;

/// Opcode of the handshake messages.
pub const OP_HELLO: u32 = u32::MAX;
/// Opcode of the one-way frame that may precede the handshake on a unix socket: it passes a
/// shared-memory segment (its descriptor rides along as SCM_RIGHTS; the arguments are its
/// length, a postcard `u64`). See `transport::Segment`.
pub const OP_SHM: u32 = u32::MAX - 1;
/// Opcode of the first frame on a lane, an extra connection that carries bulk bytes for a
/// session (see `transport::lanes`); the arguments are a postcard `hello::Join`.
pub const OP_JOIN: u32 = u32::MAX - 2;
/// Opcode of a chunk on a lane: `seq` names the frame whose bulk it is part of, `ctx` is
/// the chunk's offset in that bulk, `bulk_len` its length (unless [`FLAG_CODED`]).
pub const OP_LANE: u32 = u32::MAX - 3;
/// Opcode of the request that moves a `shm:` session's frames into rings in its segment
/// (see `transport::ring`); the arguments are the rings' offset and data bytes each way,
/// a postcard `(u64, u64)`. Answered on the socket; both sides use the rings from then on.
pub const OP_RING: u32 = u32::MAX - 4;
/// Opcode of the one-way frame that may precede the handshake on any transport: the client
/// maps part of a file the server can map too (a VM's shared memory, which the host keeps in
/// a file) and has written a random nonce at that part's start; the arguments are the
/// part's offset and length and that nonce, a postcard `(u64, u64, [u8; 32])`. The server
/// maps that part of the one of its `--shm-file`s that holds the nonce. See
/// `transport::Segment::open_file`.
pub const OP_SHM_FILE: u32 = u32::MAX - 5;
/// Opcode of a request for the server's sessions (`vgpu sessions`), the first and only
/// frame of its connection, answered by the listener itself (not a worker) and only on a
/// unix socket, whose file permissions say who may ask: a postcard
/// `Result<Vec<hello::SessionInfo>, String>`.
pub const OP_SESSIONS: u32 = u32::MAX - 6;
/// Opcode of the frames on a session's host-function connection (see `host_funcs`): the
/// server's request to run one (a postcard `host_funcs::Run`), and the client's answer
/// that it returned (a postcard `u64`, its id).
pub const OP_HOST_FUNC: u32 = u32::MAX - 7;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Header {
    pub magic: u32,
    pub op: u32,
    pub flags: u32,
    pub seq: u32,
    /// Requests: the client's current CUDA context for this call (0 = none).
    pub ctx: u64,
    pub args_len: u32,
    /// Replies: the API status code (0 = success); the value follows only on success.
    /// Requests with [`FLAG_REPLY_LANES`]: the client's number of lanes; else 0.
    pub status: u32,
    pub bulk_len: u64,
}

pub const HEADER_LEN: usize = core::mem::size_of::<Header>();

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("bad magic {0:#010x}: not a vgpu peer, or the stream lost its framing")]
    BadMagic(u32),
    #[error("{what} length {len} exceeds the limit {limit}")]
    TooLarge { what: &'static str, len: u64, limit: u64 },
    #[error("unknown opcode {0}")]
    UnknownOp(u32),
    #[error("truncated frame")]
    Truncated,
    #[error("undecodable arguments for {op}: {msg}")]
    Decode { op: &'static str, msg: String },
}

impl Header {
    pub fn request(op: u32, seq: u32, ctx: u64, oneway: bool, args_len: usize, bulk_len: usize) -> Self {
        Header {
            magic: MAGIC,
            op,
            flags: if oneway { FLAG_ONEWAY } else { 0 },
            seq,
            ctx,
            args_len: args_len as u32,
            status: 0,
            bulk_len: bulk_len as u64,
        }
    }

    pub fn reply(op: u32, seq: u32, status: u32, args_len: usize, bulk_len: usize) -> Self {
        Header {
            magic: MAGIC,
            op,
            flags: FLAG_REPLY,
            seq,
            ctx: 0,
            args_len: args_len as u32,
            status,
            bulk_len: bulk_len as u64,
        }
    }

    pub fn heartbeat() -> Self {
        Header { magic: MAGIC, flags: FLAG_HEARTBEAT, ..Default::default() }
    }

    /// Decode and check a header from exactly `HEADER_LEN` bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let h = Header::read_from_bytes(bytes).map_err(|_| FrameError::Truncated)?;
        h.check()?;
        Ok(h)
    }

    pub fn check(&self) -> Result<(), FrameError> {
        if self.magic != MAGIC {
            return Err(FrameError::BadMagic(self.magic));
        }
        if self.args_len > MAX_ARGS {
            return Err(FrameError::TooLarge { what: "args", len: self.args_len as u64, limit: MAX_ARGS as u64 });
        }
        if self.bulk_len > MAX_BULK {
            return Err(FrameError::TooLarge { what: "bulk", len: self.bulk_len, limit: MAX_BULK });
        }
        Ok(())
    }

    pub fn is_oneway(&self) -> bool {
        self.flags & FLAG_ONEWAY != 0
    }
    pub fn is_heartbeat(&self) -> bool {
        self.flags & FLAG_HEARTBEAT != 0
    }
    pub fn on_lanes(&self) -> bool {
        self.flags & FLAG_LANES != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let h = Header::request(7, 9, 0xdead, true, 12, 34);
        let b = h.as_bytes();
        assert_eq!(b.len(), HEADER_LEN);
        assert_eq!(HEADER_LEN, 40);
        assert_eq!(Header::decode(b).unwrap(), h);
        assert!(h.is_oneway());
    }

    #[test]
    fn header_rejects_garbage() {
        let mut h = Header::request(1, 1, 0, false, 0, 0);
        h.magic = 0x1234;
        assert_eq!(Header::decode(h.as_bytes()), Err(FrameError::BadMagic(0x1234)));
        let mut h = Header::request(1, 1, 0, false, 0, 0);
        h.bulk_len = MAX_BULK + 1;
        assert!(matches!(Header::decode(h.as_bytes()), Err(FrameError::TooLarge { .. })));
        h.bulk_len = 0;
        h.args_len = MAX_ARGS + 1;
        assert!(matches!(Header::decode(h.as_bytes()), Err(FrameError::TooLarge { .. })));
        assert_eq!(Header::decode(&[0u8; 3]), Err(FrameError::Truncated));
    }
}

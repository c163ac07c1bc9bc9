//! Moving vgpu frames: addresses, streams (TLS included), framing, the client's connection
//! and the server's listener. Blocking std sockets only: the client side lives inside someone
//! else's process, where no async runtime may be started.

mod addr;
pub mod coding;
mod conn;
pub mod crowd;
mod fdpass;
mod framing;
pub mod lanes;
pub mod park;
pub mod ring;
mod shm;
mod spin;
mod tls;
mod watch;
mod writelog;

pub use addr::{Address, Listener, Stream, socket_domain};
pub use conn::{Conn, Error, Sent, Timeouts};
pub use fdpass::{recv as recv_fd, send as send_fd};
pub use framing::{Frame, Unbuffered, read_exact_into, read_frame, read_header, write_frame};
pub use lanes::{LaneSet, Lanes};
pub use ring::RingStream;
pub use shm::{
    FdReader, MAX_SEGMENT, NONCE_LEN, Segment, page_size, part_claim_path, random_nonce, send_segment,
    send_segment_file,
};
pub use spin::{CLIENT_SPIN, DEFAULT_SPIN, spin_budget, wait_readable};
pub use tls::{PLAIN_REFUSAL, TlsError, TlsServer, TlsStream, TlsTarget, is_tls_error};
pub use writelog::monotonic_micros;

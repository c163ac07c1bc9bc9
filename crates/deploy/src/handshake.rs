//! The doctor's handshake with a server: the same first frame a shim sends (through
//! `transport`'s addresses and framing), with every way it can go wrong told apart.

use device_model::Snapshot;
use protocol::frame::{Header, OP_HELLO};
use protocol::hello::{Hello, Welcome};
use std::io::ErrorKind;
use std::time::Duration;
use transport::{Address, read_frame, write_frame};

#[derive(Clone, Debug)]
pub enum Outcome {
    Accepted {
        server_version: String,
        snapshot: Box<Snapshot>,
    },
    /// The server answered with a refusal (wrong token, protocol mismatch, ...).
    Refused(String),
    /// Nothing accepts connections there.
    ConnectFailed(String),
    /// Connected, but TLS failed: the server's certificate does not check out against the
    /// CA (or name) configured, no CA is configured, or the server does not speak TLS.
    Tls(String),
    /// Connected, but no answer came.
    NoReply(String),
    /// Something answered that does not speak vgpu's framing.
    NotVgpu(String),
    /// A vgpu frame came back that this build cannot read (another version).
    BadReply(String),
}

/// Why a server refused, as a doctor finding code.
pub fn refusal_code(reason: &str) -> &'static str {
    if reason == transport::PLAIN_REFUSAL {
        "tls-required"
    } else if reason.contains("mismatch") {
        "protocol-mismatch"
    } else if reason.contains("requires a token") {
        "token-missing"
    } else if reason.contains("wrong token") {
        "wrong-token"
    } else if reason.contains("backend failed") {
        "server-backend-failed"
    } else {
        "server-refused"
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer outlives the call and its length is passed.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Shake hands with `addr` as protocol `version`/`wire_hash` (normally this build's
/// `PROTOCOL_VERSION`/`WIRE_HASH`), presenting `token`.
pub fn handshake(addr: &Address, token: &str, version: u32, wire_hash: u64, timeout: Duration) -> Outcome {
    let mut s = match addr.connect(timeout) {
        Ok(s) => s,
        Err(e) if transport::is_tls_error(&e) => return Outcome::Tls(e.to_string()),
        Err(e) => return Outcome::ConnectFailed(e.to_string()),
    };
    if let Err(e) = s.set_timeouts(Some(timeout), Some(timeout)) {
        return Outcome::ConnectFailed(e.to_string());
    }
    let hello = Hello {
        protocol_version: version,
        wire_hash,
        pid: std::process::id(),
        host: hostname(),
        program: "vgpu doctor".into(),
        token: token.to_string(),
    };
    let args = match postcard::to_allocvec(&hello) {
        Ok(a) => a,
        Err(e) => return Outcome::BadReply(e.to_string()),
    };
    if let Err(e) = write_frame(&mut s, &Header::request(OP_HELLO, 1, 0, false, args.len(), 0), &args, &[]) {
        return Outcome::NoReply(format!("the connection broke while sending the handshake: {e}"));
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    loop {
        match read_frame(&mut s, &mut a, &mut b) {
            Ok(h) if h.is_heartbeat() => continue,
            Ok(h) if h.op != OP_HELLO => {
                return Outcome::BadReply(format!("the first reply is op {:#x}, not the handshake", h.op));
            }
            Ok(_) => {
                return match postcard::from_bytes::<Welcome>(&a) {
                    Ok(Welcome::Accepted { server_version, snapshot, .. }) => {
                        Outcome::Accepted { server_version, snapshot: Box::new(snapshot) }
                    }
                    Ok(Welcome::Refused { reason }) => Outcome::Refused(reason),
                    Err(e) => Outcome::BadReply(format!("the handshake reply cannot be decoded: {e}")),
                };
            }
            Err(e) => {
                return match e.kind() {
                    ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                        Outcome::NoReply(format!("no answer within {}s", timeout.as_secs_f32()))
                    }
                    ErrorKind::UnexpectedEof => {
                        Outcome::NoReply("the server closed the connection without answering".into())
                    }
                    ErrorKind::InvalidData => Outcome::NotVgpu(e.to_string()),
                    _ => Outcome::NoReply(e.to_string()),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_apart() {
        assert_eq!(refusal_code("wrong token"), "wrong-token");
        assert_eq!(refusal_code("this server requires a token (set VGPU_TOKEN or VGPU_TOKEN_FILE)"), "token-missing");
        assert_eq!(refusal_code("protocol version mismatch: client speaks 2, server speaks 1"), "protocol-mismatch");
        assert_eq!(refusal_code("wire table mismatch: client 1, server 2"), "protocol-mismatch");
        assert_eq!(refusal_code("backend failed to start: x"), "server-backend-failed");
        assert_eq!(refusal_code(transport::PLAIN_REFUSAL), "tls-required");
    }

    #[test]
    fn nobody_listening_is_a_connect_failure() {
        let t = tempfile::tempdir().unwrap();
        let addr: Address = format!("unix:{}/none.sock", t.path().display()).parse().unwrap();
        let o = handshake(&addr, "", 1, 1, Duration::from_secs(1));
        assert!(matches!(o, Outcome::ConnectFailed(_)), "{o:?}");
    }

    #[test]
    fn a_silent_peer_is_no_reply_and_a_foreign_one_is_not_vgpu() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("s.sock");
        let l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        let th = std::thread::spawn(move || {
            let (c1, _) = l.accept().unwrap(); // says nothing
            let (mut c2, _) = l.accept().unwrap(); // speaks HTTP
            std::io::Write::write_all(&mut c2, &[b'H'; 128]).unwrap();
            std::thread::sleep(Duration::from_millis(500));
            drop(c1);
        });
        let addr: Address = format!("unix:{}", p.display()).parse().unwrap();
        let o = handshake(&addr, "", 1, 1, Duration::from_millis(200));
        assert!(matches!(o, Outcome::NoReply(_)), "{o:?}");
        let o = handshake(&addr, "", 1, 1, Duration::from_millis(200));
        assert!(matches!(o, Outcome::NotVgpu(_)), "{o:?}");
        th.join().unwrap();
    }
}

//! Reach: over a unix socket the worker copies large frames' bytes from the client's memory,
//! and large replies into it, itself; every byte arrives, memory the client does not have is
//! an API error that leaves the session working, and a session that did not agree to it
//! takes no reached frame.

mod common;
use common::*;
use protocol::frame::{FLAG_REACH, FLAG_REACH_OUT, HEADER_LEN, Header, OP_HELLO, Piece, REACH_FAULT};
use protocol::hello::Welcome;
use protocol::ops;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn connect(address: &str, reach: bool) -> (transport::Conn, Welcome) {
    let addr: transport::Address = address.parse().unwrap();
    let t = transport::Timeouts { silence: Duration::from_secs(4), ..Default::default() };
    let hello = protocol::hello::Hello { reach: reach.then(transport::reach::probe), ..hello("") };
    transport::Conn::connect(&addr, &hello, t).unwrap()
}

#[test]
fn large_copies_are_copied_by_the_worker_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    let (conn, welcome) = connect(&server.address, true);
    assert!(matches!(welcome, Welcome::Accepted { reach: true, .. }), "{welcome:?}");
    assert!(conn.reaches());
    copies_come_back(&conn);
    // Four sizes of 256 KiB and more, each copied in twice and out twice.
    assert_eq!(conn.reached(), 4 * 4, "frames reached");
    assert!(conn.lanes_if_open().is_none(), "no lanes needed");

    // Without the probe the same copies go over the socket.
    let (plain, welcome) = connect(&server.address, false);
    assert!(matches!(welcome, Welcome::Accepted { reach: false, .. }));
    copies_come_back(&plain);
    assert_eq!(plain.reached(), 0);
}

fn frame(op: u32, flags: u32, status: u32, args: &[u8], bulk_len: usize, trailer: &[u8]) -> Vec<u8> {
    let mut h = Header::request(op, 7, 0, flags & protocol::frame::FLAG_ONEWAY != 0, args.len(), bulk_len);
    h.flags = flags;
    h.status = status;
    let mut v = Vec::new();
    transport::write_frame(&mut v, &h, args, &[trailer]).unwrap();
    v
}

fn read_reply(s: &mut UnixStream) -> (Header, Vec<u8>) {
    loop {
        let mut h = [0u8; HEADER_LEN];
        s.read_exact(&mut h).unwrap();
        let h = Header::decode(&h).unwrap();
        let mut body = vec![0u8; h.args_len as usize];
        s.read_exact(&mut body).unwrap();
        if !h.is_heartbeat() {
            return (h, body);
        }
    }
}

/// A raw session over `address`, with or without the probe.
fn raw_session(address: &str, reach: bool) -> UnixStream {
    let mut s = UnixStream::connect(address.strip_prefix("unix:").unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let hello = protocol::hello::Hello { reach: reach.then(transport::reach::probe), ..hello("") };
    s.write_all(&frame(OP_HELLO, 0, 0, &postcard::to_allocvec(&hello).unwrap(), 0, &[])).unwrap();
    let (_, body) = read_reply(&mut s);
    let w: Welcome = postcard::from_bytes(&body).unwrap();
    assert!(matches!(w, Welcome::Accepted { reach: r, .. } if r == reach), "{w:?}");
    s
}

#[test]
fn memory_the_client_does_not_have_fails_the_call_not_the_session() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    let mut s = raw_session(&server.address, true);
    let copy = postcard::to_allocvec(&ops::cuMemcpyHtoDAsync_v2 { dst: 0, stream: 0 }).unwrap();
    let op = protocol::Op::cuMemcpyHtoDAsync_v2 as u32;
    let bogus = Piece { addr: 4096, len: 1 << 20 };
    let oneway = protocol::frame::FLAG_ONEWAY | FLAG_REACH;
    s.write_all(&frame(op, oneway, 1, &copy, 1 << 20, zerocopy::IntoBytes::as_bytes(&bogus))).unwrap();
    let (h, _) = read_reply(&mut s);
    assert_eq!((h.seq, h.status), (7, REACH_FAULT), "the copy is refused");
    // A reply's bytes written into memory the client does not have: refused too.
    let dtoh = postcard::to_allocvec(&ops::cuMemcpyDtoH_v2 { src: 0, size: 1 << 20 }).unwrap();
    let op = protocol::Op::cuMemcpyDtoH_v2 as u32;
    s.write_all(&frame(op, FLAG_REACH_OUT, 0, &dtoh, 0, zerocopy::IntoBytes::as_bytes(&bogus))).unwrap();
    let (h, _) = read_reply(&mut s);
    assert_eq!(h.seq, 7);
    assert_ne!(h.status, 0, "no copy into memory the client does not have");
    // The session goes on.
    let retain = postcard::to_allocvec(&ops::cuDevicePrimaryCtxRetain { dev: 0 }).unwrap();
    s.write_all(&frame(protocol::Op::cuDevicePrimaryCtxRetain as u32, 0, 0, &retain, 0, &[])).unwrap();
    let (h, _) = read_reply(&mut s);
    assert_eq!((h.seq, h.status), (7, 0), "the session still answers");

    // A session that did not agree to reach takes no reached frame: it is closed.
    let mut plain = raw_session(&server.address, false);
    let here = [0u8; 4096];
    let piece = Piece { addr: here.as_ptr() as u64, len: 4096 };
    let op = protocol::Op::cuMemcpyHtoDAsync_v2 as u32;
    plain.write_all(&frame(op, oneway, 1, &copy, 4096, zerocopy::IntoBytes::as_bytes(&piece))).unwrap();
    let mut rest = Vec::new();
    let _ = plain.read_to_end(&mut rest);
    assert!(rest.chunks(HEADER_LEN).all(|c| Header::decode(c).is_ok_and(|h| h.is_heartbeat())), "{rest:02x?}");
}

/// The driver shim's copies (64 MiB both ways) through a C program over a unix socket go
/// reached, with no lanes; `VGPU_REACH=0` turns it off.
#[test]
fn the_driver_shim_copies_are_reached() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("driver_basic", tmp.path(), &lib, &["libcuda.so.1"]);
    let server = Server::sim_quiet(tmp.path(), &[]);
    let count = |stderr: &str| {
        stderr
            .lines()
            .find(|l| l.contains("copied by the server itself"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
    };
    for reach in ["1", "0"] {
        let out = run(&exe, &lib, &server.address, &[("VGPU_REACH", reach), ("VGPU_TRACE", "summary")]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("roundtrip 64MiB ok"), "{stdout}");
        if reach == "1" {
            // 64 MiB in 4 MiB frames in, 8 MiB chunks out, and the program's other copies.
            assert!(count(&stderr).is_some_and(|n| n >= 16 + 8), "{stderr}");
            assert!(!stderr.contains("lanes"), "{stderr}");
        } else {
            assert_eq!(count(&stderr), None, "{stderr}");
        }
    }
}

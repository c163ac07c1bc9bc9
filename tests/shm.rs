//! The shared-memory data plane (`shm:` addresses) against `vgpu serve --backend sim`:
//! byte-exact copies through the segment, the same program over the plain socket, and a
//! server that refuses forged offsets and unsafe segments without harm.

mod common;
use common::*;
use protocol::ops;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::Duration;
use transport::part_claim_path as part_claim;
use transport::{Conn, Error, Segment, Timeouts};

use common::trace_calls as calls;

#[test]
fn copies_through_the_segment_are_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("shm_copy", tmp.path(), &lib, &["libcuda.so.1"]);
    let server = Server::sim(tmp.path(), &[]);
    let shm = server.address.replacen("unix:", "shm:", 1);
    let trace = ("VGPU_TRACE", "summary");

    let out = run(&exe, &lib, &shm, &[trace]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("72 copies ok") && stdout.contains("shm copy done"), "{stdout}");
    for op in ["shm_htod", "shm_dtoh", "shm_wait"] {
        assert!(calls(&stderr, op) > 0, "{op} unused:\n{stderr}");
    }
    assert!(stderr.contains("frames through rings in the shared segment"), "{stderr}");
    // Only pageable downloads below the ring's threshold (32 KiB) used the socket: 3 sizes
    // x 2 sources, plus the program's final check.
    assert_eq!(calls(&stderr, "cuMemcpyDtoH_v2"), 7, "{stderr}");
    assert_eq!(calls(&stderr, "cuMemcpyDtoHAsync_v2"), 6, "{stderr}");
    // Synchronous uploads of 32 KiB and more go through the segment too (pinned: read where
    // they are; pageable: through the ring): only 1 B, 7 B and 4 KiB went with their bytes.
    assert_eq!(calls(&stderr, "cuMemcpyHtoD_v2"), 12, "{stderr}");

    // The same program over the socket alone: a unix: address, and shm: without a segment.
    for (addr, env) in [(server.address.as_str(), ("VGPU_SHM_MB", "256")), (shm.as_str(), ("VGPU_SHM_MB", "0"))] {
        let out = run(&exe, &lib, addr, &[trace, env]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stdout.contains("72 copies ok"), "{addr}:\n{stdout}\n{stderr}");
        assert_eq!(calls(&stderr, "shm_htod") + calls(&stderr, "shm_dtoh"), 0, "{addr}:\n{stderr}");
        assert!(calls(&stderr, "cuMemcpyDtoH_v2") > 11, "{addr}:\n{stderr}");
        assert!(!stderr.contains("through rings"), "{addr}:\n{stderr}");
    }
    // A segment too small for the program's pinned buffers (64 MiB each): they come from
    // ordinary memory, the copies still come out right, and the user is told what to raise.
    let out = run(&exe, &lib, &shm, &[trace, ("VGPU_SHM_MB", "32")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("72 copies ok"), "{stderr}");
    assert_eq!(stderr.matches("raise VGPU_SHM_MB").count(), 1, "said once:\n{stderr}");
    // Segment copies with the frames on the socket (`VGPU_SHM_RING=0`).
    let out = run(&exe, &lib, &shm, &[trace, ("VGPU_SHM_RING", "0")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("72 copies ok"), "{stderr}");
    assert!(calls(&stderr, "shm_htod") > 0 && !stderr.contains("through rings"), "{stderr}");
}

#[test]
fn forged_offsets_are_refused_and_the_session_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    let len = 1u64 << 20;
    let seg = Segment::create(len as usize).unwrap();
    let conn = session_with(&server.address, seg.fd(), len);
    assert_eq!(conn.call(0, &ops::shm_attached {}, &[], None).unwrap(), len);
    let ctx = conn.call(0, &ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    let d = conn.call(ctx, &ops::cuMemAlloc_v2 { bytesize: 8192 }, &[], None).unwrap();

    // In range: the bytes go to the device and come back elsewhere in the segment.
    let put =
        |off: u64, b: &[u8]| unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), seg.range(off, 1).unwrap(), b.len()) };
    let get = |off: u64, n: usize| unsafe { std::slice::from_raw_parts(seg.range(off, n as u64).unwrap(), n).to_vec() };
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    put(len - 8192, &data);
    conn.call(ctx, &ops::shm_htod { dst: d, offset: len - 8192, len: 8192, stream: 0, ticket: 0 }, &[], None).unwrap();
    conn.call(ctx, &ops::shm_dtoh { src: d, offset: 4096, len: 8192, stream: 0, ticket: 1 }, &[], None).unwrap();
    conn.call(ctx, &ops::shm_wait { ticket: 1 }, &[], None).unwrap();
    assert_eq!(get(4096, 8192), data);

    // Outside the segment (or the allocation): each one-way copy fails, and its error comes
    // back with the next synchronous call.
    let bad =
        [(len, 1, d), (len - 10, 11, d), (u64::MAX, 2, d), (u64::MAX - 4095, 4096, d), (0, 8193, d), (0, 16, 0x10)];
    for (offset, n, dev) in bad {
        for to_device in [true, false] {
            let r = if to_device {
                conn.call(ctx, &ops::shm_htod { dst: dev, offset, len: n, stream: 0, ticket: 0 }, &[], None)
            } else {
                conn.call(ctx, &ops::shm_dtoh { src: dev, offset, len: n, stream: 0, ticket: 0 }, &[], None)
            };
            assert!(r.is_ok(), "one-way");
            let r = conn.call(ctx, &ops::cuCtxSynchronize {}, &[], None);
            assert!(matches!(r, Err(Error::Api(1))), "offset {offset:#x} len {n} dev {dev:#x}: {r:?}");
        }
    }
    // Nothing was written where it should not have been, and the session still works.
    assert_eq!(get(4096, 8192), data);
    conn.call(ctx, &ops::cuCtxSynchronize {}, &[], None).unwrap();
    conn.call(ctx, &ops::cuMemFree_v2 { dptr: d }, &[], None).unwrap();
}

#[test]
fn unsafe_segments_are_refused_and_the_session_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    // A memfd that could shrink under the server's mapping, a sealed one of another size
    // than announced, and something that is not a memory file at all.
    let raw = unsafe { libc::memfd_create(c"unsealed".as_ptr(), libc::MFD_CLOEXEC) };
    let unsealed = unsafe { OwnedFd::from_raw_fd(raw) };
    assert_eq!(unsafe { libc::ftruncate(raw, 1 << 20) }, 0);
    let sealed = Segment::create(1 << 20).unwrap();
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let cases: [(std::os::fd::BorrowedFd<'_>, u64); 3] =
        [(unsealed.as_fd(), 1 << 20), (sealed.fd(), 2 << 20), (sock.as_fd(), 1 << 20)];
    for (i, (fd, len)) in cases.into_iter().enumerate() {
        let conn = session_with(&server.address, fd, len);
        let r = conn.call(0, &ops::shm_attached {}, &[], None);
        assert!(matches!(r, Err(Error::Api(801))), "case {i}: {r:?}");
        let ctx = conn.call(0, &ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
        let d = conn.call(ctx, &ops::cuMemAlloc_v2 { bytesize: 16 }, &[], None).unwrap();
        conn.call(ctx, &ops::shm_htod { dst: d, offset: 0, len: 16, stream: 0, ticket: 0 }, &[], None).unwrap();
        assert!(conn.call(ctx, &ops::cuCtxSynchronize {}, &[], None).is_err(), "case {i}: no segment to copy from");
        conn.call(ctx, &ops::cuMemFree_v2 { dptr: d }, &[], None).unwrap();
    }
    let ended = wait_until(Duration::from_secs(10), || server.workers().is_empty());
    assert!(ended.is_some(), "every worker ends with its session: {:?}", server.workers());
}

/// Frame rings the server cannot check (outside the segment, a size that is no power of
/// two, no segment at all, asked for twice) are refused and the session goes on over what
/// it had; good ones carry every frame from then on, and the session ends with the client.
#[test]
fn frame_rings_are_checked_and_then_carry_the_session() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    let len = 4u64 << 20;
    let seg = std::sync::Arc::new(Segment::create(len as usize).unwrap());
    let ask = |conn: &Conn, offset: u64, cap: u64| {
        let args = postcard::to_allocvec(&(offset, cap)).unwrap();
        conn.roundtrip(protocol::frame::OP_RING, 0, &args, &[], None)
    };
    let works = |conn: &Conn| {
        let ctx = conn.call(0, &ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
        let d = conn.call(ctx, &ops::cuMemAlloc_v2 { bytesize: 300_000 }, &[], None).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 + 5) as u8).collect();
        conn.call(ctx, &ops::cuMemcpyHtoD_v2 { dst: d }, &[&data], None).unwrap();
        let mut back = vec![0u8; 300_000];
        conn.call(ctx, &ops::cuMemcpyDtoH_v2 { src: d, size: 300_000 }, &[], Some(&mut back)).unwrap();
        assert!(back == data);
        conn.call(ctx, &ops::cuMemFree_v2 { dptr: d }, &[], None).unwrap();
    };

    let plain = Conn::connect(&server.address.parse().unwrap(), &hello(""), Timeouts::default()).unwrap().0;
    assert!(matches!(ask(&plain, 0, 1 << 20), Err(Error::Api(801))), "no segment");
    works(&plain);

    let conn = session_with(&server.address, seg.fd(), len);
    assert_eq!(conn.call(0, &ops::shm_attached {}, &[], None).unwrap(), len);
    for (offset, cap) in [(len, 4096), (len - 4096, 4096), (0, 5000), (0, 1 << 40), (100, 4096)] {
        assert!(matches!(ask(&conn, offset, cap), Err(Error::Api(801))), "offset {offset} cap {cap}");
    }
    works(&conn);
    conn.use_ring(seg.clone(), 1 << 20, 1 << 20).unwrap();
    assert!(conn.on_ring());
    works(&conn);
    assert!(matches!(ask(&conn, 1 << 20, 1 << 20), Err(Error::Api(801))), "asked twice");
    works(&conn);
    drop((conn, plain));
    let ended = wait_until(Duration::from_secs(10), || server.workers().is_empty());
    assert!(ended.is_some(), "every worker ends with its session: {:?}", server.workers());
}

/// A session at the TCP `address` whose client names the first `len` bytes of a shared file
/// by `nonce` (as a client in a VM does; it wrote the nonce into the file, or not).
fn session_with_file(address: &str, token: &str, len: u64, nonce: &[u8; transport::NONCE_LEN]) -> Conn {
    let addr: transport::Address = address.parse().unwrap();
    let t = Timeouts { silence: Duration::from_secs(4), ..Default::default() };
    let mut stream = addr.connect(t.connect).unwrap();
    transport::send_segment_file(&mut stream, 0, len, nonce).unwrap();
    Conn::handshake(stream, &addr, &hello(token), t).unwrap().0
}

/// A quiet sim server at the TCP `address` (token "t0ken", its file in `dir`) that shares
/// `files` (`--shm-file`).
fn tcp_server_sharing(dir: &std::path::Path, address: &str, files: &[&std::path::Path]) -> Server {
    let token_file = token_file(dir, "t0ken");
    let mut args = vec!["--token-file".to_string(), token_file.display().to_string()];
    for f in files {
        args.extend(["--shm-file".to_string(), f.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_env(address, &["--backend", "sim"], &args, &[("VGPU_LOG", "error")])
}

/// What a VM's shared memory looks like to both sides, a file each maps, over TCP: the
/// same byte-exact copies through it as through a passed segment; a client must prove it
/// maps the file (its nonce at the start, spent once used), and a file serves one session
/// at a time (the next falls back to the connection, and gets it once the first ends).
#[test]
fn a_shared_file_carries_copies_over_tcp() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("shm_copy", tmp.path(), &lib, &["libcuda.so.1"]);
    let (file, other) = (tmp.path().join("vm1.shm"), tmp.path().join("vm2.shm"));
    let len = 256u64 << 20;
    for f in [&file, &other] {
        std::fs::File::create(f).unwrap().set_len(len).unwrap();
    }
    let address = free_tcp_address();
    let server = tcp_server_sharing(tmp.path(), &address, &[&other, &file]);
    let envs = [("VGPU_TRACE", "summary"), ("VGPU_TOKEN", "t0ken"), ("VGPU_SHM_FILE", file.to_str().unwrap())];

    let out = run(&exe, &lib, &address, &envs);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("72 copies ok"), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for op in ["shm_htod", "shm_dtoh", "shm_wait"] {
        assert!(calls(&stderr, op) > 0, "{op} unused:\n{stderr}");
    }
    assert_eq!(calls(&stderr, "cuMemcpyDtoH_v2"), 7, "{stderr}");
    assert!(stderr.contains("frames through rings in the shared segment"), "{stderr}");
    // VGPU_SHM_MB=0 turns it off.
    let out = run(&exe, &lib, &address, &[envs[0], envs[1], envs[2], ("VGPU_SHM_MB", "0")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && calls(&stderr, "shm_htod") == 0, "{stderr}");

    // A nonce that is not in the file proves nothing; the one that is takes the file (once
    // the program's session has let go of it).
    assert!(wait_until(Duration::from_secs(10), || server.workers().is_empty()).is_some());
    let nonce = transport::random_nonce().unwrap();
    let forged = session_with_file(&address, "t0ken", len, &nonce);
    assert!(matches!(forged.call(0, &ops::shm_attached {}, &[], None), Err(Error::Api(801))));
    let seg = Segment::open_file(&file, 0, None).unwrap();
    seg.write_nonce(&nonce).unwrap();
    let holder = session_with_file(&address, "t0ken", len, &nonce);
    assert_eq!(holder.call(0, &ops::shm_attached {}, &[], None).unwrap(), len);

    // While it holds the file, the program's session falls back to the connection.
    let out = run(&exe, &lib, &address, &envs);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("72 copies ok"), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(calls(&stderr, "shm_htod") + calls(&stderr, "shm_dtoh"), 0, "{stderr}");
    assert!(stderr.contains("did not map the shared segment"), "{stderr}");

    drop((holder, forged));
    let freed = wait_until(Duration::from_secs(10), || {
        let out = run(&exe, &lib, &address, &envs);
        out.status.success() && calls(&String::from_utf8_lossy(&out.stderr), "shm_htod") > 0
    });
    assert!(freed.is_some(), "the file serves the next session once its holder has gone");

    // The server spent the nonce when it took the file: replayed, it takes nothing.
    assert!(wait_until(Duration::from_secs(10), || server.workers().is_empty()).is_some());
    let nonce = transport::random_nonce().unwrap();
    seg.write_nonce(&nonce).unwrap();
    let holder = session_with_file(&address, "t0ken", len, &nonce);
    assert_eq!(holder.call(0, &ops::shm_attached {}, &[], None).unwrap(), len);
    drop(holder);
    assert!(wait_until(Duration::from_secs(10), || server.workers().is_empty()).is_some());
    let replay = session_with_file(&address, "t0ken", len, &nonce);
    assert!(matches!(replay.call(0, &ops::shm_attached {}, &[], None), Err(Error::Api(801))));
    drop((replay, server));

    // A server that shares no file: the client says so and copies over the connection.
    let bare = tcp_server_sharing(tmp.path(), &address, &[]);
    let out = run(&exe, &lib, &bare.address, &envs);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("72 copies ok"), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(calls(&stderr, "shm_htod"), 0, "{stderr}");
    let _ = std::fs::remove_file(part_claim(&file, 0));
}

/// Several processes of one VM share one file: each takes a part of its own (`VGPU_SHM_MB`
/// each), claimed among them by lock files in /dev/shm, and all copy through the file. Part
/// 0 is held here (claimed, and taken on the server by a session of this test), so the
/// programs must find the others.
#[test]
fn processes_take_parts_of_a_shared_file() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("shm_copy", tmp.path(), &lib, &["libcuda.so.1"]);
    let file = tmp.path().join("vm.shm");
    let part = 256u64 << 20;
    std::fs::File::create(&file).unwrap().set_len(3 * part).unwrap();
    let server = tcp_server_sharing(tmp.path(), &free_tcp_address(), &[&file]);
    let claim = std::fs::File::create(part_claim(&file, 0)).unwrap();
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&claim), libc::LOCK_EX) }, 0);
    let nonce = transport::random_nonce().unwrap();
    Segment::open_file(&file, 0, Some(part)).unwrap().write_nonce(&nonce).unwrap();
    let holder = session_with_file(&server.address, "t0ken", part, &nonce);
    assert_eq!(holder.call(0, &ops::shm_attached {}, &[], None).unwrap(), part);

    let spawn = || {
        std::process::Command::new(&exe)
            .env("LD_LIBRARY_PATH", &lib)
            .env("VGPU_SERVER", &server.address)
            .env("VGPU_CONFIG", "/nonexistent")
            .env("VGPU_TOKEN", "t0ken")
            .env("VGPU_SHM_FILE", &file)
            .env("VGPU_SHM_MB", "256")
            .env("VGPU_TRACE", "summary")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for p in [a, b] {
        let out = p.wait_with_output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && stdout.contains("72 copies ok"), "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(calls(&stderr, "shm_htod") > 0, "both through the file:\n{stderr}");
    }
    drop((holder, claim));
    for i in 0..3 {
        let _ = std::fs::remove_file(part_claim(&file, i));
    }
}

/// A synchronize after a pageable upload through the segment's staging ring is a one-way
/// barrier, as after a copy over the socket, not a wait for the GPU. The buffer reused after
/// each synchronize spoils no copy; an upload from pinned memory, which the server's DMA
/// reads later, still waits.
#[test]
fn synchronizes_after_ring_uploads_are_barriers() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("shm_sync", tmp.path(), &lib, &["libcuda.so.1"]);
    let server = Server::sim(tmp.path(), &[]);
    let shm = server.address.replacen("unix:", "shm:", 1);
    let out = run(&exe, &lib, &shm, &[("VGPU_TRACE", "summary")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("staged uploads ok"), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(calls(&stderr, "shm_htod"), 21, "twenty through the ring, one from pinned memory\n{stderr}");
    assert_eq!(calls(&stderr, "stream_barrier"), 20, "{stderr}");
    assert_eq!(calls(&stderr, "cuStreamSynchronize"), 1, "only the pinned upload's\n{stderr}");
    assert!(calls(&stderr, "shm_wait") > 0, "slots were reused after their copies\n{stderr}");
}

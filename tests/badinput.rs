//! Bad input: whatever bytes a peer sends, the server answers with an error or closes that
//! session, never crashes, and every other session keeps working. Handles and addresses
//! from one session mean nothing in another.

mod common;
use common::*;
use protocol::frame::{Header, MAX_ARGS, MAX_BULK, OP_HELLO};
use protocol::{Op, ops};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use transport::Error;

// ---------------------------------------------------------------------------------------
// The decoders, a bounded run in the normal suite (the same code the fuzz targets run).

/// xorshift64*: deterministic, so a failure names an input that can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() % (max as u64 + 1)) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A header's 40 bytes as they travel.
fn hdr(h: &Header) -> Vec<u8> {
    let mut v = Vec::new();
    transport::write_frame(&mut v, h, &[], &[]).unwrap();
    v
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert!(!v.is_empty(), "empty seed corpus {}", dir.display());
    v.sort();
    v
}

/// Run `f` on the seed corpus, then on `n` inputs made from it and from random bytes
/// (mutated seeds reach deeper than noise). A panic names the input.
fn run_bounded(target: &str, n: usize, max: usize, f: fn(&[u8])) {
    let seeds = corpus(target);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    let mut inputs: Vec<Vec<u8>> = seeds.clone();
    for i in 0..n {
        let input = if i % 2 == 0 {
            rng.bytes(max)
        } else {
            let mut s = seeds[(rng.next() as usize) % seeds.len()].clone();
            for _ in 0..1 + rng.next() % 8 {
                match rng.next() % 4 {
                    0 if !s.is_empty() => {
                        let at = rng.next() as usize % s.len();
                        s[at] = rng.next() as u8;
                    }
                    1 if !s.is_empty() => {
                        let at = rng.next() as usize % s.len();
                        s.truncate(at);
                    }
                    2 => {
                        let at = if s.is_empty() { 0 } else { rng.next() as usize % s.len() };
                        let extra = rng.bytes(16);
                        s.splice(at..at, extra);
                    }
                    _ => s.extend(rng.bytes(32)),
                }
            }
            s
        };
        inputs.push(input);
    }
    for input in inputs {
        if std::panic::catch_unwind(|| f(&input)).is_err() {
            panic!("{target}: panic on input {input:02x?}");
        }
    }
}

#[test]
fn decoders_survive_10k_random_inputs_each() {
    run_bounded("frame", 10_000, 256, server::fuzzing::frame);
    run_bounded("handshake", 10_000, 256, server::fuzzing::handshake);
    run_bounded("dispatch", 10_000, 1024, server::fuzzing::dispatch);
}

#[test]
fn header_decode_checks_every_limit() {
    let ok = Header::request(Op::cuMemAlloc_v2 as u32, 1, 0, false, 8, 0);
    assert!(Header::decode(&hdr(&ok)).is_ok());
    for bad in [
        Header { magic: 0x3150_4756 ^ 1, ..ok },
        Header { args_len: MAX_ARGS + 1, ..ok },
        Header { bulk_len: MAX_BULK + 1, ..ok },
        Header { bulk_len: u64::MAX, ..ok },
    ] {
        assert!(Header::decode(&hdr(&bad)).is_err(), "{bad:?}");
    }
    for n in 0..protocol::frame::HEADER_LEN {
        assert!(Header::decode(&hdr(&ok)[..n]).is_err(), "truncated to {n}");
    }
}

// ---------------------------------------------------------------------------------------
// A live server fed bad frames over raw sockets.

fn raw(server: &Server) -> UnixStream {
    let path = server.address.strip_prefix("unix:").unwrap();
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn frame(op: u32, flags: u32, args: &[u8], bulk: &[u8]) -> Vec<u8> {
    let mut h = Header::request(op, 1, 0, false, args.len(), bulk.len());
    h.flags = flags;
    let mut v = Vec::new();
    transport::write_frame(&mut v, &h, args, &[bulk]).unwrap();
    v
}

/// A raw connection that has completed the handshake.
fn raw_session(server: &Server) -> UnixStream {
    let mut s = raw(server);
    let args = postcard::to_allocvec(&hello("")).unwrap();
    s.write_all(&frame(OP_HELLO, 0, &args, &[])).unwrap();
    let mut h = [0u8; protocol::frame::HEADER_LEN];
    s.read_exact(&mut h).unwrap();
    let h = Header::decode(&h).unwrap();
    let mut body = vec![0u8; h.args_len as usize];
    s.read_exact(&mut body).unwrap();
    let w: protocol::hello::Welcome = postcard::from_bytes(&body).unwrap();
    assert!(matches!(w, protocol::hello::Welcome::Accepted { .. }), "{w:?}");
    s
}

/// The server closed the connection within 5 s without answering: EOF (or a reset), with
/// at most heartbeats before it (the worker was busy with the frame when it gave up).
fn assert_closed(mut s: UnixStream, what: &str) {
    let t = Instant::now();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: expected the session to be closed, got {e} after {:?}", t.elapsed()),
    }
    let heartbeats = got.chunks(protocol::frame::HEADER_LEN).all(|c| Header::decode(c).is_ok_and(|h| h.is_heartbeat()));
    assert!(heartbeats, "{what}: expected no answer, got {got:02x?}");
}

/// The witness session still works: allocate, copy in, copy out, compare.
fn assert_works(c: &transport::Conn, ctx: u64, what: &str) {
    let p = c.call(ctx, &ops::cuMemAlloc_v2 { bytesize: 256 }, &[], None).unwrap_or_else(|e| panic!("{what}: {e}"));
    let data: Vec<u8> = (0..=255).collect();
    c.call(ctx, &ops::cuMemcpyHtoD_v2 { dst: p }, &[&data], None).unwrap();
    let mut back = vec![0u8; 256];
    c.call(ctx, &ops::cuMemcpyDtoH_v2 { src: p, size: 256 }, &[], Some(&mut back)).unwrap();
    assert_eq!(back, data, "{what}");
    c.call(ctx, &ops::cuMemFree_v2 { dptr: p }, &[], None).unwrap();
}

fn primary(c: &transport::Conn) -> u64 {
    c.call(0, &ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap()
}

#[test]
fn malformed_frames_close_only_their_session() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    let witness = rust_client(&server.address, "").unwrap();
    let wctx = primary(&witness);
    let alloc = postcard::to_allocvec(&ops::cuMemAlloc_v2 { bytesize: 64 }).unwrap();
    let hello_args = postcard::to_allocvec(&hello("")).unwrap();

    let mut cases: Vec<(&str, bool, Vec<u8>, bool)> = Vec::new(); // (what, handshake first, bytes, close write)
    let mut bad_magic = frame(Op::cuMemAlloc_v2 as u32, 0, &alloc, &[]);
    bad_magic[..4].copy_from_slice(b"HTTP");
    cases.push(("bad magic before the handshake", false, bad_magic.clone(), false));
    cases.push(("bad magic after the handshake", true, bad_magic, false));
    let mut big = Header::request(Op::cuMemAlloc_v2 as u32, 1, 0, false, 0, 0);
    big.args_len = MAX_ARGS + 1;
    cases.push(("oversized args_len", true, hdr(&big), false));
    big.args_len = 0;
    big.bulk_len = MAX_BULK + 1;
    cases.push(("oversized bulk_len", true, hdr(&big), false));
    let mut big_hello = Header::request(OP_HELLO, 1, 0, false, 0, 0);
    big_hello.args_len = MAX_ARGS; // within frame limits, far beyond any real Hello
    cases.push(("oversized handshake (not buffered before auth)", false, hdr(&big_hello), false));
    big_hello.args_len = 8;
    big_hello.bulk_len = 1 << 20;
    cases.push(("handshake with bulk bytes", false, hdr(&big_hello), false));
    let mut truncated = frame(Op::cuMemAlloc_v2 as u32, 0, &[0u8; 100], &[]);
    truncated.truncate(protocol::frame::HEADER_LEN + 10);
    cases.push(("truncated arguments", true, truncated, true));
    cases.push(("truncated header", true, frame(Op::cuMemAlloc_v2 as u32, 0, &alloc, &[])[..20].to_vec(), true));
    cases.push(("truncated handshake", false, frame(OP_HELLO, 0, &hello_args, &[])[..50].to_vec(), true));
    let mut bulk_short = hdr(&Header::request(Op::cuMemcpyHtoD_v2 as u32, 1, 0, false, 1, 4096));
    bulk_short.extend_from_slice(&[0, 1, 2, 3]);
    cases.push(("truncated bulk", true, bulk_short, true));
    // An asynchronous copy's bulk is read into the backend's own buffer (`bulk_place`): cut
    // short there, past the size that gets one, or with arguments that do not decode.
    let h2d = postcard::to_allocvec(&ops::cuMemcpyHtoDAsync_v2 { dst: 0, stream: 0 }).unwrap();
    for (what, len) in [
        ("truncated bulk of an asynchronous copy", 1 << 20),
        ("truncated bulk past the landing size", server::BULK_PLACE_MAX + 1),
    ] {
        let mut short = hdr(&Header::request(Op::cuMemcpyHtoDAsync_v2 as u32, 1, 0, true, h2d.len(), len));
        short.extend_from_slice(&h2d);
        short.extend_from_slice(&[7u8; 100_000]);
        cases.push((what, true, short, true));
    }
    let mut garbled = hdr(&Header::request(Op::cuMemcpyHtoDAsync_v2 as u32, 1, 0, true, 3, 65536));
    garbled.extend_from_slice(&[0xff; 3]);
    garbled.extend_from_slice(&[1u8; 65536]);
    cases.push(("undecodable arguments of an asynchronous copy", true, garbled, false));
    let htod = postcard::to_allocvec(&ops::cuMemcpyHtoDAsync_v2 { dst: 0, stream: 0 }).unwrap();
    let mut on_lanes = Header::request(Op::cuMemcpyHtoDAsync_v2 as u32, 1, 0, true, htod.len(), 1 << 20);
    on_lanes.flags |= protocol::frame::FLAG_LANES;
    cases.push(("bulk announced on lanes the session has none of", true, [hdr(&on_lanes), htod].concat(), false));
    let rings = postcard::to_allocvec(&(0u64, 1u64 << 20)).unwrap();
    cases.push((
        "frame rings asked for with bulk bytes",
        true,
        frame(protocol::frame::OP_RING, 0, &rings, &[7; 64]),
        false,
    ));
    cases.push(("unknown opcode", true, frame(0x00ab_cdef, 0, &alloc, &[]), false));
    cases.push(("opcode one past the table", true, frame(protocol::OP_NAMES.len() as u32, 0, &[], &[]), false));
    cases.push(("undecodable arguments", true, frame(Op::cuModuleGetFunction as u32, 0, &[0xff; 3], &[]), false));
    cases.push(("one-way call sent as a request", true, frame(Op::cuLaunchKernel as u32, 0, &[], &[]), false));
    cases.push(("first frame is not a handshake", false, frame(Op::cuMemAlloc_v2 as u32, 0, &alloc, &[]), false));
    cases.push(("undecodable handshake", false, frame(OP_HELLO, 0, &[0xff; 40], &[]), false));
    cases.push(("garbage instead of a frame", false, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(4), false));

    for (what, handshake, bytes, close_write) in cases {
        let mut s = if handshake { raw_session(&server) } else { raw(&server) };
        s.write_all(&bytes).unwrap();
        if close_write {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        assert_closed(s, what);
        assert_works(&witness, wctx, what);
        // A newcomer is served too: the server itself is unharmed.
        let fresh = rust_client(&server.address, "").unwrap_or_else(|e| panic!("after {what}: {e}"));
        assert_works(&fresh, primary(&fresh), what);
    }
    // No worker was left behind by the closed sessions (the witness's is the only one).
    assert!(wait_until(Duration::from_secs(3), || server.workers().len() == 1).is_some(), "{:?}", server.workers());
}

#[test]
fn slow_handshake_is_dropped_after_the_deadline() {
    // A peer that trickles a handshake byte by byte cannot hold a worker for long.
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    let mut s = raw(&server);
    let bytes = frame(OP_HELLO, 0, &postcard::to_allocvec(&hello("")).unwrap(), &[]);
    let t = Instant::now();
    for b in &bytes {
        if s.write_all(&[*b]).is_err() || t.elapsed() > Duration::from_secs(15) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let elapsed = t.elapsed();
    assert!(elapsed < Duration::from_secs(13), "still connected after {elapsed:?}");
    assert_closed(s, "trickled handshake");
    // A random stream of bytes after a good handshake: closed, server fine.
    let mut rng = Rng(42);
    for _ in 0..20 {
        let mut s = raw_session(&server);
        let _ = s.write_all(&rng.bytes(4096));
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let c = rust_client(&server.address, "").unwrap();
    assert_works(&c, primary(&c), "after random streams");
}

// ---------------------------------------------------------------------------------------
// Forged handles and foreign addresses: API errors, and the session goes on.

#[test]
fn forged_handles_are_api_errors_and_the_session_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    let c = rust_client(&server.address, "").unwrap();
    let ctx = primary(&c);
    let forged = 0x0bad_f00d_u64;
    let api = |r: Result<(), Error>| match r {
        Err(Error::Api(code)) => code,
        other => panic!("expected an API error, got {other:?}"),
    };
    // Streams, events, modules, graphs: CUDA_ERROR_INVALID_HANDLE (400).
    assert_eq!(api(c.call(ctx, &ops::cuStreamSynchronize { stream: forged }, &[], None)), 400);
    assert_eq!(api(c.call(ctx, &ops::cuStreamDestroy_v2 { stream: forged }, &[], None)), 400);
    assert_eq!(api(c.call(ctx, &ops::cuEventSynchronize { event: forged }, &[], None)), 400);
    assert_eq!(api(c.call(ctx, &ops::cuEventDestroy_v2 { event: forged }, &[], None)), 400);
    let f = c.call(ctx, &ops::cuModuleGetFunction { module: forged, name: "k".into() }, &[], None);
    assert!(matches!(f, Err(Error::Api(400))), "{f:?}");
    assert_eq!(api(c.call(ctx, &ops::cuModuleUnload { module: forged }, &[], None)), 400);
    assert_eq!(api(c.call(ctx, &ops::cuGraphDestroy { graph: forged }, &[], None)), 400);
    // A one-way call with a forged handle: its error answers the next synchronous call.
    c.call(ctx, &ops::cuEventRecord { event: forged, stream: 0 }, &[], None).unwrap();
    assert_eq!(api(c.call(ctx, &ops::cuCtxSynchronize {}, &[], None)), 400);
    c.call(ctx, &ops::cuCtxSynchronize {}, &[], None).unwrap();
    // A forged context: CUDA_ERROR_INVALID_CONTEXT (201).
    let r = c.call(forged, &ops::cuMemAlloc_v2 { bytesize: 64 }, &[], None);
    assert!(matches!(r, Err(Error::Api(201))), "{r:?}");
    // Freeing what was never allocated: CUDA_ERROR_INVALID_VALUE.
    assert_eq!(api(c.call(ctx, &ops::cuMemFree_v2 { dptr: forged }, &[], None)), 1);
    // A forged cuBLAS handle: CUBLAS_STATUS_NOT_INITIALIZED in the value.
    let st = c.call(ctx, &ops::cublasDestroy_v2 { handle: forged }, &[], None).unwrap();
    assert_eq!(st, protocol::cublas::status::NOT_INITIALIZED);
    // Packed runs that do not fill their copy, or overrun it: CUDA_ERROR_INVALID_VALUE from
    // the next synchronous call, and nothing written.
    let p = c.call(ctx, &ops::cuMemAlloc_v2 { bytesize: 1 << 16 }, &[], None).unwrap();
    let good = protocol::runs::pack(&[7u8; 1 << 16], usize::MAX).unwrap();
    for (len, bulk) in [(1u64 << 16, &good[..good.len() - 1]), (1 << 15, &good[..]), (1 << 16, &[0u8; 4][..])] {
        c.call(ctx, &ops::htod_runs { dst: p, stream: 0, len }, &[bulk], None).unwrap();
        assert_eq!(api(c.call(ctx, &ops::cuCtxSynchronize {}, &[], None)), 1, "{len} {bulk:?}");
    }
    // Beyond the allocation: refused before anything is unpacked.
    c.call(ctx, &ops::htod_runs { dst: p, stream: 0, len: u64::MAX }, &[&good], None).unwrap();
    assert_eq!(api(c.call(ctx, &ops::cuCtxSynchronize {}, &[], None)), 1);
    let mut back = vec![1u8; 1 << 16];
    c.call(ctx, &ops::cuMemcpyDtoH_v2 { src: p, size: 1 << 16 }, &[], Some(&mut back)).unwrap();
    assert!(back.iter().all(|&b| b == 0), "malformed runs wrote nothing");
    c.call(ctx, &ops::htod_runs { dst: p, stream: 0, len: 1 << 16 }, &[&good], None).unwrap();
    c.call(ctx, &ops::cuMemcpyDtoH_v2 { src: p, size: 1 << 16 }, &[], Some(&mut back)).unwrap();
    assert!(back.iter().all(|&b| b == 7), "a well-formed packed copy lands");
    // Real handles still work after all that.
    let s = c.call(ctx, &ops::cuStreamCreate { flags: 0 }, &[], None).unwrap();
    c.call(ctx, &ops::cuStreamSynchronize { stream: s }, &[], None).unwrap();
    c.call(ctx, &ops::cuStreamDestroy_v2 { stream: s }, &[], None).unwrap();
    assert_works(&c, ctx, "after forged handles");
}

#[test]
fn sessions_cannot_reach_each_others_memory_or_handles() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    let a = rust_client(&server.address, "").unwrap();
    let b = rust_client(&server.address, "").unwrap();
    let (actx, bctx) = (primary(&a), primary(&b));
    let api = |r: Result<(), Error>| match r {
        Err(Error::Api(code)) => code,
        other => panic!("expected an API error, got {other:?}"),
    };

    // A's allocation, its stream and event, and a known pattern in its memory.
    let x = a.call(actx, &ops::cuMemAlloc_v2 { bytesize: 4096 }, &[], None).unwrap();
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    a.call(actx, &ops::cuMemcpyHtoD_v2 { dst: x }, &[&pattern], None).unwrap();
    let astream = a.call(actx, &ops::cuStreamCreate { flags: 0 }, &[], None).unwrap();
    let aevent = a.call(actx, &ops::cuEventCreate { flags: 0 }, &[], None).unwrap();

    // B, with nothing allocated, aims at A's address: refused before any byte moves
    // (CUDA_ERROR_INVALID_VALUE), reads included.
    assert_eq!(api(b.call(bctx, &ops::cuMemcpyHtoD_v2 { dst: x }, &[&[0xee; 4096]], None)), 1);
    assert_eq!(api(b.call(bctx, &ops::cuMemcpyHtoD_v2 { dst: x + 100 }, &[&[0xee; 8]], None)), 1);
    let mut stolen = vec![0u8; 4096];
    assert_eq!(api(b.call(bctx, &ops::cuMemcpyDtoH_v2 { src: x, size: 4096 }, &[], Some(&mut stolen))), 1);
    assert!(stolen.iter().all(|&v| v == 0), "no byte of A's memory reached B");
    b.call(bctx, &ops::memset { dst: x, value: 0xee, elem: 1, width: 4096, height: 1, pitch: 0, stream: 0 }, &[], None)
        .unwrap();
    assert_eq!(api(b.call(bctx, &ops::cuCtxSynchronize {}, &[], None)), 1, "the one-way memset's error");
    // A's stream and event are not B's.
    assert_eq!(api(b.call(bctx, &ops::cuStreamSynchronize { stream: astream }, &[], None)), 400);
    assert_eq!(api(b.call(bctx, &ops::cuEventSynchronize { event: aevent }, &[], None)), 400);

    // B's own allocation may even have the same number as A's (each session has its own
    // address space in the sim); writing it changes B's memory only.
    let y = b.call(bctx, &ops::cuMemAlloc_v2 { bytesize: 4096 }, &[], None).unwrap();
    b.call(bctx, &ops::cuMemcpyHtoD_v2 { dst: y }, &[&[0x55; 4096]], None).unwrap();
    // Straddling the end of B's allocation, or copying device to device from it into A's
    // address beyond it, is refused too.
    assert_eq!(api(b.call(bctx, &ops::cuMemcpyHtoD_v2 { dst: y + 4095 }, &[&[1, 2]], None)), 1);
    b.call(bctx, &ops::cuMemcpyDtoD_v2 { dst: y + 4096, src: y, size: 16 }, &[], None).unwrap();
    assert_eq!(api(b.call(bctx, &ops::cuCtxSynchronize {}, &[], None)), 1);

    let mut back = vec![0u8; 4096];
    a.call(actx, &ops::cuMemcpyDtoH_v2 { src: x, size: 4096 }, &[], Some(&mut back)).unwrap();
    assert_eq!(back, pattern, "A's memory is unchanged");
    a.call(actx, &ops::cuStreamSynchronize { stream: astream }, &[], None).unwrap();
    assert_works(&b, bctx, "B after its refused copies");
}

// ---------------------------------------------------------------------------------------
// The per-session memory quota.

#[test]
fn memory_quota_is_reported_and_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("quota", tmp.path(), &lib, &["libcuda.so.1", "libnvidia-ml.so.1"]);
    let server = Server::sim_quiet(tmp.path(), &["--memory-limit", "64MiB"]);
    let out = run(&exe, &lib, &server.address, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    const Q: u64 = 64 << 20;
    let line = |k: &str| stdout.lines().find(|l| l.starts_with(k)).unwrap_or_else(|| panic!("{k}: {stdout}"));
    let field = |k: &str, f: &str| -> u64 {
        line(k).split(&format!(" {f}=")).nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    // NVML (v1 and v2), cuDeviceTotalMem and cuMemGetInfo all tell the same story.
    assert_eq!((field("nvml ", "total"), field("nvml ", "free"), field("nvml ", "used")), (Q, Q, 0), "{stdout}");
    assert!(line("nvml_v2 ").starts_with("nvml_v2 0 "), "{stdout}");
    assert_eq!((field("nvml_v2 ", "total"), field("nvml_v2 ", "free"), field("nvml_v2 ", "used")), (Q, Q, 0));
    assert_eq!((field("cuda ", "devtotal"), field("cuda ", "total"), field("cuda ", "free")), (Q, Q, Q));
    // Allocations up to the quota succeed, past it CUDA_ERROR_OUT_OF_MEMORY (2); free
    // memory follows.
    assert_eq!(line("alloc half -> "), "alloc half -> 0");
    assert_eq!((field("after half", "free"), field("after half", "total")), (Q / 2, Q));
    assert_eq!(line("alloc rest+1 -> "), "alloc rest+1 -> 2");
    assert_eq!(line("alloc rest -> "), "alloc rest -> 0");
    assert_eq!(field("when full", "free"), 0);
    assert_eq!(line("alloc 1 more -> "), "alloc 1 more -> 2");
    assert_eq!(line("free both -> "), "free both -> 0 0");
    assert_eq!(line("alloc all -> "), "alloc all -> 0");
    assert_eq!(line("alloc past -> "), "alloc past -> 2");
    assert_eq!((field("at end", "free"), field("at end", "total")), (Q, Q));
    // The quota is per session: a second session has all of it while the first holds some.
    let a = rust_client(&server.address, "").unwrap();
    let b = rust_client(&server.address, "").unwrap();
    let (actx, bctx) = (primary(&a), primary(&b));
    a.call(actx, &ops::cuMemAlloc_v2 { bytesize: Q }, &[], None).unwrap();
    assert!(matches!(a.call(actx, &ops::cuMemAlloc_v2 { bytesize: 1 }, &[], None), Err(Error::Api(2))));
    assert_eq!(b.call(bctx, &ops::cuMemGetInfo_v2 {}, &[], None).unwrap(), (Q, Q));
    b.call(bctx, &ops::cuMemAlloc_v2 { bytesize: Q }, &[], None).unwrap();
}

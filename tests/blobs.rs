//! Weights kept by content: a model's second load over a link sends hashes, not its bytes
//! (`client::blobs` offers, `server::blobs` keeps), and every byte lands either way.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

/// The kept files (not those still being written, under temporary names).
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(subs) = std::fs::read_dir(dir) else { return Vec::new() };
    subs.flatten()
        .flat_map(|s| std::fs::read_dir(s.path()).into_iter().flatten().flatten().map(|e| e.path()))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect()
}

struct Load {
    cached: u64,
    kept: u64,
    plain: u64,
}

fn load(exe: &Path, lib: &Path, address: &str, seed: &str, envs: &[(&str, &str)]) -> Load {
    let mut env = vec![("VGPU_TRACE", "summary"), ("VGPU_TOKEN", "t0ken")];
    env.extend_from_slice(envs);
    let out = run_args(exe, lib, address, &[seed], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("weights ok"), "{address} seed {seed}\n{stdout}\n{stderr}");
    let n = |op| trace_calls(&stderr, op);
    Load { cached: n("htod_cached"), kept: n("htod_keep"), plain: n("cuMemcpyHtoDAsync_v2") }
}

#[test]
fn a_second_load_sends_hashes_and_lands_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("weights_load", tmp.path(), &lib, &["libcuda.so.1"]);
    let blobs = tmp.path().join("blobs");
    let token = token_file(tmp.path(), "t0ken");
    let server = Server::start_env(
        &free_tcp_address(),
        &["--backend", "sim"],
        &["--token-file", token.to_str().unwrap()],
        &[("VGPU_BLOB_DIR", blobs.to_str().unwrap())],
    );
    let kept_files = |n: usize| {
        // Written by the worker's own thread, at the latest as its session ends.
        wait_until(Duration::from_secs(10), || files(&blobs).len() >= n);
        files(&blobs).len()
    };
    for lanes in ["4", "0"] {
        let _ = std::fs::remove_dir_all(&blobs);
        // Loopback TCP stands in for a link here; by default it offers nothing (below).
        let go = |seed| load(&exe, &lib, &server.address, seed, &[("VGPU_LANES", lanes), ("VGPU_BLOBS", "1")]);
        // First load: the 9 MiB tensor (three chunks), six 128 KiB pieces and the batch's
        // first inputs are offered and sent to be kept; the batch's later inputs go plain.
        let first = go("1");
        assert_eq!((first.cached, first.kept, first.plain), (8, 10, 2), "lanes {lanes}");
        assert_eq!(kept_files(10), 10);
        // Second load of the same model: only the batch's inputs, new in every run, are sent.
        let second = go("1");
        assert_eq!((second.cached, second.kept, second.plain), (8, 1, 2), "lanes {lanes}");
        assert_eq!(kept_files(11), 11);
        // A damaged file is not used: its chunk is sent again (and kept again).
        let mut damaged = None;
        for f in files(&blobs) {
            if std::fs::metadata(&f).unwrap().len() == 128 << 10 {
                std::fs::write(&f, vec![0u8; 128 << 10]).unwrap();
                damaged = Some(f);
                break;
            }
        }
        let again = go("1");
        assert_eq!((again.cached, again.kept), (8, 2), "lanes {lanes}");
        let damaged = damaged.unwrap();
        wait_until(Duration::from_secs(10), || std::fs::read(&damaged).is_ok_and(|b| b.iter().any(|&x| x != 0)));
        let rewritten = std::fs::read(&damaged).unwrap();
        assert!(rewritten.len() == 128 << 10 && rewritten.iter().any(|&x| x != 0), "written again whole");
        // Another model: nothing found; after eight offers in vain asking becomes occasional.
        let other = go("2");
        assert_eq!((other.cached, other.kept), (8, 10), "lanes {lanes}");
    }
    // Over TLS too, whose lanes carry the chunks to keep.
    let tls_blobs = tmp.path().join("tls-blobs");
    let (tls, _, pki) = tls_sim_server(tmp.path(), "t0ken", &[("VGPU_BLOB_DIR", s(&tls_blobs))]);
    let over_tls = |seed| {
        load(&exe, &lib, &tls.address, seed, &[("VGPU_BLOBS", "1"), ("VGPU_TLS_CA", s(&pki.ca)), ("VGPU_LANES", "4")])
    };
    let first = over_tls("3");
    assert_eq!((first.cached, first.kept), (8, 10), "tls");
    wait_until(Duration::from_secs(10), || files(&tls_blobs).len() >= 10);
    let second = over_tls("3");
    assert_eq!((second.cached, second.kept), (8, 1), "tls");
    // The server's options: where to keep, and keeping nothing.
    for (cap, kept) in [("64M", 10), ("0", 0)] {
        let dir = tmp.path().join(format!("opt-{cap}"));
        let srv = Server::start(
            &free_tcp_address(),
            &["--backend", "sim"],
            &["--token-file", token.to_str().unwrap(), "--blob-dir", s(&dir), "--blob-cache", cap],
        );
        let l = load(&exe, &lib, &srv.address, "1", &[("VGPU_BLOBS", "1")]);
        assert_eq!((l.cached, l.kept), (8, 10), "--blob-cache {cap}");
        wait_until(Duration::from_secs(10), || files(&dir).len() >= kept);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(files(&dir).len(), kept, "--blob-cache {cap}");
    }
    // Off by request, and by default over a unix socket or TCP to this host's loopback
    // address (no link to spare).
    let off = load(&exe, &lib, &server.address, "1", &[("VGPU_BLOBS", "0")]);
    assert_eq!((off.cached, off.kept), (0, 0));
    let loopback = load(&exe, &lib, &server.address, "1", &[]);
    assert_eq!((loopback.cached, loopback.kept), (0, 0));
    // `blobs = true` in the client's file does what VGPU_BLOBS=1 does (services see no shell).
    let file = tmp.path().join("client.toml");
    std::fs::write(&file, "blobs = true\n").unwrap();
    let by_file = load(&exe, &lib, &server.address, "1", &[("VGPU_CONFIG", s(&file))]);
    assert_eq!(by_file.cached, 8);
    let unix = Server::sim(tmp.path(), &[]);
    let local = load(&exe, &lib, &unix.address, "1", &[]);
    assert_eq!((local.cached, local.kept), (0, 0));
}

/// The server checks what a client offers: a chunk size larger than a frame, hashes that
/// do not match the copy's length, or a range outside the session's memory are refused
/// without touching memory; a kept chunk is stored under the hash of its bytes, whatever
/// the client believes it to be.
#[test]
fn offers_are_checked_and_kept_bytes_are_named_by_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let blobs = tmp.path().join("blobs");
    let sock = tmp.path().join("v.sock");
    let server = Server::start_env(
        &format!("unix:{}", sock.display()),
        &["--backend", "sim"],
        &[],
        &[("VGPU_BLOB_DIR", blobs.to_str().unwrap()), ("VGPU_LOG", "error")],
    );
    let c = rust_client(&server.address, "").unwrap();
    let ctx = c.call(0, &protocol::ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    let p = c.call(ctx, &protocol::ops::cuMemAlloc_v2 { bytesize: 1 << 20 }, &[], None).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let hash = *blake3::hash(&data).as_bytes();
    let offer = |dst, len, chunk, hashes: Vec<[u8; 32]>| {
        c.call(ctx, &protocol::ops::htod_cached { dst, stream: 0, len, chunk, hashes }, &[], None)
    };
    assert_eq!(offer(p, 300_000, 300_000, vec![hash]).unwrap(), vec![false]);
    c.call(ctx, &protocol::ops::htod_keep { dst: p, stream: 0 }, &[&data], None).unwrap();
    drop(c);
    wait_until(Duration::from_secs(10), || files(&blobs).len() == 1);
    let name = files(&blobs)[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(name, blake3::hash(&data).to_hex().as_str());

    let c = rust_client(&server.address, "").unwrap();
    let ctx = c.call(0, &protocol::ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    let q = c.call(ctx, &protocol::ops::cuMemAlloc_v2 { bytesize: 1 << 20 }, &[], None).unwrap();
    let offer = |dst, len, chunk, hashes: Vec<[u8; 32]>| {
        c.call(ctx, &protocol::ops::htod_cached { dst, stream: 0, len, chunk, hashes }, &[], None)
    };
    let refused = |r: Result<Vec<bool>, transport::Error>| match r {
        Err(transport::Error::Api(code)) => code,
        other => panic!("accepted: {other:?}"),
    };
    assert_eq!(refused(offer(q, 300_000, 16 << 20, vec![hash])), 1, "chunks larger than a frame");
    assert_eq!(refused(offer(q, 300_000, 100_000, vec![hash])), 1, "three chunks, one hash");
    assert_eq!(refused(offer(q + (1 << 20) - 10, 300_000, 300_000, vec![hash])), 1, "outside the allocation");
    assert_eq!(offer(q, 300_001, 300_001, vec![hash]).unwrap(), vec![false], "another length");
    assert_eq!(offer(q, 300_000, 300_000, vec![hash]).unwrap(), vec![true]);
    let mut back = vec![0u8; data.len()];
    c.call(ctx, &protocol::ops::cuMemcpyDtoH_v2 { src: q, size: data.len() as u64 }, &[], Some(&mut back)).unwrap();
    assert_eq!(back, data, "another session's copy came from the kept bytes");
}

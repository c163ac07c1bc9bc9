//! Repeated copies in pieces the server keeps: over a link, the rows of a prompt batch sent
//! before are named by their slot (`client::pages`, `server::pages`), and every byte lands.

mod common;
use common::*;
use std::path::Path;

struct Run {
    paged: u64,
    plain: u64,
    named: u64,
    pieces: u64,
}

/// `paged_copy` (two threads, prompt batches of rows of one table) against `address`.
fn batches(exe: &Path, lib: &Path, address: &str, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut env = vec![("VGPU_TRACE", "summary"), ("VGPU_TOKEN", "t0ken"), ("VGPU_BLOBS", "0"), ("VGPU_LANES", "4")];
    env.extend_from_slice(envs);
    let out = run_args(exe, lib, address, args, &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("paged ok"), "{address} {envs:?}\n{stdout}\n{stderr}");
    let (named, pieces) = stderr
        .lines()
        .find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = w.iter().position(|&x| x == "pieces")?;
            Some((w.get(at.checked_sub(3)?)?.parse().ok()?, w.get(at - 1)?.parse().ok()?))
        })
        .unwrap_or((0, 0));
    Run {
        paged: trace_calls(&stderr, "htod_pages"),
        plain: trace_calls(&stderr, "cuMemcpyHtoDAsync_v2"),
        named,
        pieces,
    }
}

/// 4096 rows of 512 floats (2 KiB, two pieces), 1536 tokens a batch (3 MiB), 10 batches per
/// thread: with lanes one frame a batch, without them three.
const ARGS: [&str; 4] = ["4096", "512", "10", "1536"];

#[test]
fn rows_sent_before_are_named_and_every_byte_lands() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("paged_copy", tmp.path(), &lib, &["libcuda.so.1"]);
    let token = token_file(tmp.path(), "t0ken");
    let tcp = |extra: &[&str]| {
        let mut args = vec!["--token-file", s(&token)];
        args.extend_from_slice(extra);
        Server::start(&free_tcp_address(), &["--backend", "sim"], &args)
    };
    let server = tcp(&[]);
    let mut whole = 0;
    // A first batch (a first write to its place) goes as it is. The last batch is 7 bytes
    // longer: with lanes one frame of another length, which goes as it is too; without them
    // three 1 MiB frames like the others', and one of 7 bytes.
    for (lanes, paged, plain, pieces) in [("4", 2 * 8, 2 * 2, 2 * 8 * 3072), ("0", 2 * 9 * 3, 2 * 4, 2 * 9 * 3 * 1024)]
    {
        // Loopback TCP stands in for a link here; by default it pages nothing (below).
        let r = batches(&exe, &lib, &server.address, &ARGS, &[("VGPU_PAGES", "1"), ("VGPU_LANES", lanes)]);
        assert_eq!((r.paged, r.plain, r.pieces), (paged, plain, pieces), "lanes {lanes}");
        // 70% of the tokens come from 257 rows: most pieces are named after the first batches.
        assert!(r.named * 10 > r.pieces * 6, "lanes {lanes}: {} of {} named", r.named, r.pieces);
        whole = r.named;
    }
    // A store smaller than the table (1 MiB: 1024 slots for 8 MiB of rows, room for the
    // often-used ones): the others are evicted and sent again, and still every byte lands.
    let small = tcp(&["--page-cache", "1M"]);
    let r = batches(&exe, &lib, &small.address, &ARGS, &[("VGPU_PAGES", "1")]);
    assert_eq!(r.paged, 16);
    assert!(r.named * 2 > r.pieces && r.named < whole, "{} of {} named, {whole} with room", r.named, r.pieces);
    // A server that keeps nothing: copies go as they are.
    let none = tcp(&["--page-cache", "0"]);
    let r = batches(&exe, &lib, &none.address, &ARGS, &[("VGPU_PAGES", "1")]);
    assert_eq!((r.paged, r.plain), (0, 20));
    // Over TLS, whose lanes carry the pieces sent.
    let (tls, _, pki) = tls_sim_server(tmp.path(), "t0ken", &[]);
    let r = batches(&exe, &lib, &tls.address, &ARGS, &[("VGPU_PAGES", "1"), ("VGPU_TLS_CA", s(&pki.ca))]);
    assert_eq!((r.paged, r.plain), (16, 4), "tls");
    // Off by request, and by default over TCP to this host's loopback address and over a
    // unix socket (no link to spare); `pages = true` in the client's file turns it on.
    for envs in [&[("VGPU_PAGES", "0")][..], &[]] {
        let r = batches(&exe, &lib, &server.address, &ARGS, envs);
        assert_eq!((r.paged, r.plain), (0, 20), "{envs:?}");
    }
    let unix = Server::sim(tmp.path(), &[]);
    let r = batches(&exe, &lib, &unix.address, &ARGS, &[]);
    assert_eq!(r.paged, 0, "unix");
    let file = tmp.path().join("client.toml");
    std::fs::write(&file, "pages = true\n").unwrap();
    let r = batches(&exe, &lib, &server.address, &ARGS, &[("VGPU_CONFIG", s(&file))]);
    assert_eq!(r.paged, 16, "client.toml");
}

/// The server checks the pieces a client names: a slot past its store, a slot kept twice in
/// one copy, or sent bytes that do not add up fail the copy, and the store is closed, so
/// that no later copy reads what was not kept.
#[test]
fn pieces_are_checked_and_a_bad_copy_closes_the_store() {
    use protocol::Piece::*;
    use protocol::ops;
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_env(
        &format!("unix:{}", tmp.path().join("v.sock").display()),
        &["--backend", "sim"],
        &[],
        &[("VGPU_PAGE_CACHE_MB", "1"), ("VGPU_LOG", "error")],
    );
    let c = rust_client(&server.address, "").unwrap();
    let ctx = c.call(0, &ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    let p = c.call(ctx, &ops::cuMemAlloc_v2 { bytesize: 1 << 20 }, &[], None).unwrap();
    assert_eq!(c.call(ctx, &ops::pages_open { piece: 1024, slots: 1 << 20 }, &[], None).unwrap(), 1024, "capped");
    let a = vec![1u8; 1024];
    let b = vec![2u8; 1024];
    let copy = |pieces: Vec<protocol::Piece>, bulk: &[&[u8]]| {
        let len = pieces.len() as u64 * 1024;
        c.call(ctx, &ops::htod_pages { dst: p, stream: 0, len, pieces }, bulk, None).unwrap();
        c.call(ctx, &ops::cuCtxSynchronize {}, &[], None)
    };
    let back = |n: usize| {
        let mut out = vec![0u8; n];
        c.call(ctx, &ops::cuMemcpyDtoH_v2 { src: p, size: n as u64 }, &[], Some(&mut out)).unwrap();
        out
    };
    copy(vec![Keep(0), Keep(1023), Sent], &[&a, &b, &a]).unwrap();
    copy(vec![Kept(1023), Kept(0), Kept(1023)], &[]).unwrap();
    assert_eq!(back(3072), [b.clone(), a.clone(), b.clone()].concat());
    let refused = |r: Result<(), transport::Error>, what: &str| {
        assert!(matches!(r, Err(transport::Error::Api(1))), "{what}: {r:?}");
    };
    refused(copy(vec![Keep(1024)], &[&a]), "a slot past the store");
    // Closed: even a slot that was kept is not read again.
    refused(copy(vec![Kept(0)], &[]), "after a refusal");
    assert_eq!(c.call(ctx, &ops::pages_open { piece: 1024, slots: 8 }, &[], None).unwrap(), 8);
    refused(copy(vec![Kept(0)], &[]), "reopened: empty");
    assert_eq!(c.call(ctx, &ops::pages_open { piece: 1024, slots: 8 }, &[], None).unwrap(), 8);
    refused(copy(vec![Keep(1), Keep(1)], &[&a, &b]), "kept twice in one copy");
    assert_eq!(c.call(ctx, &ops::pages_open { piece: 1024, slots: 8 }, &[], None).unwrap(), 8);
    refused(copy(vec![Keep(1), Sent], &[&a]), "sent bytes short");
    assert_eq!(c.call(ctx, &ops::pages_open { piece: 1000, slots: 8 }, &[], None).unwrap(), 0, "not a power of two");
    assert_eq!(back(3072), [b.clone(), a.clone(), b].concat(), "refused copies wrote nothing");
}

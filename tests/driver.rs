//! The driver API end to end against `vgpu serve --backend sim`.

mod common;
use common::*;

#[test]
fn driver_api_round_trip_on_sim() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("driver_basic", tmp.path(), &lib, &["libcuda.so.1"]);
    let server = Server::sim(tmp.path(), &[]);
    let out = run(&exe, &lib, &server.address, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("roundtrip 64MiB ok"), "{stdout}");
    assert!(stdout.contains("streams ok"), "{stdout}");
    assert!(stdout.contains("done"), "{stdout}");

    // One story: the driver API and NVML describe the same device.
    let nvml = compile_c("nvml_basic", tmp.path(), &lib, &["libnvidia-ml.so.1"]);
    let n = run(&nvml, &lib, &server.address, &[]);
    let ns = String::from_utf8_lossy(&n.stdout);
    let field =
        |s: &str, k: &str| s.split(&format!("{k}=")).nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let drv = stdout.lines().next().unwrap();
    let dev0 = ns.lines().nth(1).unwrap();
    assert_eq!(field(drv, "total"), field(dev0, "total"));
    assert!(drv.contains("name=NVIDIA H100 80GB HBM3"), "{drv}");
    assert!(dev0.contains("name=NVIDIA H100 80GB HBM3"), "{dev0}");
    assert_eq!(field(drv, "bus").to_ascii_uppercase(), field(dev0, "bus")[4..].to_string());
}

#[test]
fn cuinit_without_server_reports_no_device() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("driver_basic", tmp.path(), &lib, &["libcuda.so.1"]);
    let out = run(&exe, &lib, &format!("unix:{}/none.sock", tmp.path().display()), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cuInit(0) -> 100 CUDA_ERROR_NO_DEVICE"), "{stdout}");
}

/// Synchronizes with nothing to wait for are answered by the client, with small copies
/// only a one-way barrier, after device work a real round trip; `VGPU_ELIDE=0` sends all.
#[test]
fn synchronizes_are_answered_locally_when_nothing_is_pending() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("sync_elide", tmp.path(), &lib, &["libcuda.so.1"]);
    let server = Server::sim(tmp.path(), &[]);
    let calls = trace_calls;
    // The bad copy's error: from the next synchronous call (the barrier does not wait for
    // it), or from the synchronize itself.
    for (elide, barriers, real, local, error) in [("1", 101, 1, 3, "sync 0 then 1"), ("0", 0, 103, 0, "sync 1 then 0")]
    {
        let out = run(&exe, &lib, &server.address, &[("VGPU_TRACE", "summary"), ("VGPU_ELIDE", elide)]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stdout.contains("elided ok"), "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains(error), "VGPU_ELIDE={elide}: {stdout}");
        assert!(stdout.contains("occupancy 8 8 2"), "{stdout}");
        // The sim's SM holds 2048 threads: 1024-thread blocks fill one (2 of them, on 132 SMs);
        // at most 200 threads: 200 (10 blocks, 2000 threads) until 128 (16) fills one.
        assert!(stdout.contains("potential 264 1024, at most 200: 2112 128"), "{stdout}");
        // Two questions asked directly, then the search's: its 1024 was asked already, and
        // 200, 192, 160 and 128 (with the callback's shared memory) are new.
        assert_eq!(calls(&stderr, "cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags"), 6, "{stderr}");
        let local_syncs = stderr
            .lines()
            .filter(|l| l.contains("answered locally"))
            .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
            .sum::<u64>();
        assert_eq!(calls(&stderr, "stream_barrier"), barriers, "VGPU_ELIDE={elide}\n{stderr}");
        assert_eq!(calls(&stderr, "cuStreamSynchronize"), real, "VGPU_ELIDE={elide}\n{stderr}");
        assert_eq!(local_syncs, local, "VGPU_ELIDE={elide}\n{stderr}");
    }
}

/// Pinned memory is the application's again once a synchronize after a copy from it has
/// returned, and may be freed right after queueing one: the server copies the bytes as they
/// were (a guard for any path that would send such memory by reference; session 7 tried
/// one, measured it slower and took it out).
#[test]
fn pinned_memory_is_reusable_after_a_synchronize() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("pinned_reuse", tmp.path(), &lib, &["libcuda.so.1"]);
    let server = Server::sim(tmp.path(), &[]);
    // Lanes never set aside for lagging: the count below is exact.
    let envs = [("VGPU_TRACE", "summary"), ("VGPU_LANES", "4"), ("VGPU_LANE_LAG_US", "0")];
    let out = run(&exe, &lib, &server.address, &envs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("pinned reuse ok"), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("21 frames' bulk over 4 lanes"), "{stderr}");
}

/// A copy captured into a graph copies, at each launch, what its pinned source holds then:
/// over a socket the client sends those bytes again before each launch (the sim keeps
/// captured copies as the GPU server does). Copies beside the capture run as usual.
#[test]
fn captured_copies_read_pinned_memory_at_each_launch() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("capture_side_copy", tmp.path(), &lib, &["libcuda.so.1"]);
    let server = Server::sim(tmp.path(), &[]);
    let out = run(&exe, &lib, &server.address, &[("VGPU_TRACE", "summary")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("capture side copy ok"), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(trace_calls(&stderr, "refresh_captured"), 3, "{stderr}");
    assert_eq!(trace_calls(&stderr, "captured_copies"), 1, "{stderr}");
}

/// Device-to-host copies into pinned memory return before their bytes arrive over a socket;
/// a stream synchronize, a query, an event waited for in another thread, another
/// synchronous call, or freeing the memory finds them in place; a failed copy is reported.
/// Over TCP (one connection and lanes), a unix socket, shared memory (which never defers),
/// and TLS with lanes, where the copies' 128 KiB replies come back over the lanes (as a
/// decoding LLM's logits do there).
#[test]
fn copies_to_pinned_memory_land_before_anything_says_they_completed() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("later_copy", tmp.path(), &lib, &["libcuda.so.1", "libpthread.so.0"]);
    let unix = Server::sim(tmp.path(), &[]);
    let token = token_file(tmp.path(), "t0ken");
    let tcp = Server::start(&free_tcp_address(), &["--backend", "sim"], &["--token-file", token.to_str().unwrap()]);
    let (tls, _, pki) = tls_sim_server(tmp.path(), "t0ken", &[]);
    let shm = unix.address.replacen("unix:", "shm:", 1);
    let cases = [(&tcp.address, "0"), (&tcp.address, "4"), (&unix.address, "4"), (&shm, "0"), (&tls.address, "4")];
    for (address, lanes) in cases {
        // Lanes never set aside for lagging: TLS's replies below all come over them.
        let envs = [
            ("VGPU_TOKEN", "t0ken"),
            ("VGPU_LANES", lanes),
            ("VGPU_LANE_LAG_US", "0"),
            ("VGPU_TRACE", "summary"),
            ("VGPU_TLS_CA", s(&pki.ca)),
        ];
        let out = run(&exe, &lib, address, &envs);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let case = format!("{address} VGPU_LANES={lanes}");
        assert!(out.status.success() && stdout.contains("later copies ok"), "{case}\n{stdout}\n{stderr}");
        assert!(stdout.contains("failed copy reported: yes"), "{case}\n{stdout}");
        assert_eq!(stdout.matches("event in another thread ok").count(), 3, "{case}\n{stdout}");
        if address.starts_with("tls:") {
            assert!(replies_back_over_lanes(&stderr) >= 3, "{case}: replies over lanes: {stderr}");
        }
    }
}

/// Copies that are runs of a word (attention masks) go packed over TCP and land byte for
/// byte, at odd offsets and lengths too; varied bytes go as they are. Over a unix socket
/// and TCP to the loopback address (this test's) nothing is packed unless `VGPU_PACK=1`;
/// `VGPU_PACK=0` packs nothing anywhere.
#[test]
fn runs_of_a_word_are_sent_packed() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("packed_copy", tmp.path(), &lib, &["libcuda.so.1"]);
    let unix = Server::sim(tmp.path(), &[]);
    let token = token_file(tmp.path(), "t0ken");
    let tcp = Server::start(&free_tcp_address(), &["--backend", "sim"], &["--token-file", token.to_str().unwrap()]);
    for (server, pack, lanes, packed) in [
        (&unix, "", "4", 0),
        (&unix, "1", "0", 6),
        (&unix, "1", "4", 6),
        (&tcp, "", "4", 0),
        (&tcp, "1", "4", 6),
        (&tcp, "0", "4", 0),
    ] {
        let env = [
            ("VGPU_TRACE", "summary"),
            ("VGPU_PACK", pack),
            ("VGPU_LANES", lanes),
            ("VGPU_TOKEN", "t0ken"),
            ("VGPU_BLOBS", "0"),
        ];
        let out = run(&exe, &lib, &server.address, &env);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let case = format!("{} VGPU_PACK={pack} VGPU_LANES={lanes}", server.address);
        assert!(out.status.success() && stdout.contains("packed copies ok"), "{case}\n{stdout}\n{stderr}");
        assert_eq!(trace_calls(&stderr, "htod_runs"), packed, "{case}\n{stderr}");
        // Over one connection frames are 1 MiB: the copies of 1 MiB + 3 bytes end in a
        // frame of 3 bytes, which goes as it is.
        let plain = if lanes == "0" { 5 } else { 7 - packed };
        assert_eq!(trace_calls(&stderr, "cuMemcpyHtoDAsync_v2"), plain, "{case}\n{stderr}");
    }
}

/// A process that forks after using the GPU: the child starts its own session and both go
/// on (over the socket, and over shm: with a segment and frame rings each).
#[test]
fn parent_and_forked_child_both_use_the_gpu() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("fork", tmp.path(), &lib, &["libcuda.so.1"]);
    let server = Server::sim(tmp.path(), &[]);
    for addr in [server.address.clone(), server.address.replacen("unix:", "shm:", 1)] {
        let out = run(&exe, &lib, &addr, &[("VGPU_TRACE", "summary")]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{addr}: stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains("child ok") && stdout.contains("fork ok"), "{addr}: {stdout}\n{stderr}");
        // Each prints its summary once (the child's counts start from the parent's at the
        // fork); over shm: each had rings of its own.
        assert_eq!(stderr.matches("vgpu-trace summary").count(), 2, "{stderr}");
        if addr.starts_with("shm:") {
            assert_eq!(stderr.matches("frames through rings").count(), 2, "{stderr}");
        }
    }
}

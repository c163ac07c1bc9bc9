//! Many clients at once: 32 processes × 1000 allocate/copy/verify/free cycles through the
//! shims (`tests/c/stress.c`), no byte lost or corrupted, every worker gone afterwards, and
//! the `vgpu serve` process no bigger than before; then 32 × 200 over `shm:`.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLIENTS: usize = 32;
const CYCLES: u32 = 1000;

fn round(exe: &std::path::Path, lib: &std::path::Path, server: &Server, cycles: u32) {
    round_at(exe, lib, server, &server.address, cycles)
}

fn round_at(exe: &std::path::Path, lib: &std::path::Path, server: &Server, address: &str, cycles: u32) {
    let children: Vec<_> = (0..CLIENTS)
        .map(|i| {
            Command::new(exe)
                .args([cycles.to_string(), (i + 1).to_string()])
                .env("LD_LIBRARY_PATH", lib)
                .env("VGPU_SERVER", address)
                .env("VGPU_CONFIG", "/nonexistent")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with(&format!("ok cycles={cycles} ")),
            "client {i}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every session's worker exits with its client.
    assert!(
        wait_until(Duration::from_secs(5), || server.workers().is_empty()).is_some(),
        "workers left: {:?}",
        server.workers()
    );
}

#[test]
fn many_clients_many_cycles_no_byte_lost_no_growth() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("stress", tmp.path(), &lib, &["libcuda.so.1"]);
    let server = Server::sim_quiet(tmp.path(), &[]);
    // A short round first, so that what the server sets up once (threads' memory, the
    // allocator's pools) is in the baseline.
    round(&exe, &lib, &server, 10);
    let before = rss_kib(server.pid());
    let t = Instant::now();
    round(&exe, &lib, &server, CYCLES);
    let took = t.elapsed();
    let after = rss_kib(server.pid());
    eprintln!("{CLIENTS} clients x {CYCLES} cycles in {took:?}; server RSS {before} -> {after} KiB");
    assert!(after <= before + 1024, "server RSS grew from {before} to {after} KiB");
    // The same through shared memory: segments, their copies and frames in rings.
    let t = Instant::now();
    round_at(&exe, &lib, &server, &server.address.replacen("unix:", "shm:", 1), CYCLES / 5);
    eprintln!("{CLIENTS} shm clients x {} cycles in {:?}", CYCLES / 5, t.elapsed());
}

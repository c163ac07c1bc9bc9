//! DESIGN, Threads: a synchronize that waits in one application thread holds up neither
//! the other threads' calls on the client (replies are read by whoever waits, and handed
//! to their owners) nor their execution on the server (the wait runs on a helper thread);
//! and a wait longer than the client's silence limit is kept alive by heartbeats. Each test
//! runs over the socket, with the frames in shared-memory rings, and over TLS (whose
//! connection's handles share one TLS state).

mod common;
use common::*;
use protocol::ops;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the sim takes to synchronize a stream here: longer than the client's silence
/// limit (4 s), so only heartbeats sent during the helper's wait keep the client waiting.
const SYNC_MS: u64 = 4500;

#[test]
fn a_waiting_synchronize_does_not_hold_up_other_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = format!("unix:{}", tmp.path().join("t.sock").display());
    let sync_ms = SYNC_MS.to_string();
    let server = Server::start_env(&addr, &["--backend", "sim"], &[], &[("VGPU_SIM_SYNC_MS", sync_ms.as_str())]);
    // Over the socket, and through shared-memory rings (heartbeats come through them too).
    let (ringed, _seg) = ring_client(&server.address);
    let (_tls, address, _pki) = tls_sim_server(tmp.path(), "t0k", &[("VGPU_SIM_SYNC_MS", sync_ms.as_str())]);
    for conn in [rust_client(&server.address, "").unwrap(), ringed, tls_client(&address)] {
        waiting_synchronize_with_others(Arc::new(conn));
    }
}

/// A client of the TLS server (token `t0k`), with the tests' silence limit.
fn tls_client(address: &transport::Address) -> transport::Conn {
    let t = transport::Timeouts { silence: Duration::from_secs(4), ..Default::default() };
    transport::Conn::connect(address, &hello("t0k"), t).unwrap().0
}

fn waiting_synchronize_with_others(conn: Arc<transport::Conn>) {
    let ctx = conn.call(0, &ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    let stream = conn.call(ctx, &ops::cuStreamCreate { flags: 0 }, &[], None).unwrap();

    let t0 = Instant::now();
    let waiter = {
        let conn = conn.clone();
        std::thread::spawn(move || {
            conn.call(ctx, &ops::cuStreamSynchronize { stream }, &[], None).map(|()| t0.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    // Another thread's synchronous calls, a device-to-host copy among them (its bytes may be
    // read by the waiting thread and handed over).
    let dptr = conn.call(ctx, &ops::cuMemAlloc_v2 { bytesize: 4096 }, &[], None).unwrap();
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    conn.call(ctx, &ops::cuMemcpyHtoD_v2 { dst: dptr }, &[&data], None).unwrap();
    for _ in 0..50 {
        conn.call(ctx, &ops::cuMemGetInfo_v2 {}, &[], None).unwrap();
        let mut back = vec![0u8; 4096];
        conn.call(ctx, &ops::cuMemcpyDtoH_v2 { src: dptr, size: 4096 }, &[], Some(&mut back)).unwrap();
        assert_eq!(back, data);
    }
    let others = t0.elapsed();
    let waited = waiter.join().unwrap().expect("the waiting synchronize succeeds, kept alive by heartbeats");

    assert!(
        others < Duration::from_millis(SYNC_MS / 2),
        "another thread's 100 calls took {others:?}: they waited for the synchronize"
    );
    assert!(waited >= Duration::from_millis(SYNC_MS), "the synchronize returned after {waited:?}");
    // The connection is still good for everyone.
    conn.call(ctx, &ops::cuMemGetInfo_v2 {}, &[], None).unwrap();
}

#[test]
fn replies_reach_their_own_threads() {
    // Eight threads' synchronous calls interleave on one connection; whichever thread reads
    // a reply hands it to its owner, bulk bytes included.
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    let (ringed, _seg) = ring_client(&server.address);
    let (_tls, address, _pki) = tls_sim_server(tmp.path(), "t0k", &[]);
    for conn in [rust_client(&server.address, "").unwrap(), ringed, tls_client(&address)] {
        replies_to_owners(Arc::new(conn));
    }
}

fn replies_to_owners(conn: Arc<transport::Conn>) {
    let ctx = conn.call(0, &ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let conn = conn.clone();
            std::thread::spawn(move || {
                let size = 1000 + 4096 * t as usize;
                let data: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(t)).collect();
                let dptr = conn.call(ctx, &ops::cuMemAlloc_v2 { bytesize: size as u64 }, &[], None).unwrap();
                conn.call(ctx, &ops::cuMemcpyHtoD_v2 { dst: dptr }, &[&data], None).unwrap();
                for _ in 0..200 {
                    let mut back = vec![0u8; size];
                    conn.call(ctx, &ops::cuMemcpyDtoH_v2 { src: dptr, size: size as u64 }, &[], Some(&mut back))
                        .unwrap();
                    assert!(back == data, "thread {t} got another thread's bytes");
                    let (free, total) = conn.call(ctx, &ops::cuMemGetInfo_v2 {}, &[], None).unwrap();
                    assert!(free <= total);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

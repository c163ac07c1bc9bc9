//! `vgpu sessions`: on the GPU host, the server lists its sessions on its unix socket, each
//! with its worker process (what `nvidia-smi` shows there) and who its client is; other
//! transports are told to ask on the unix socket.

mod common;
use common::*;
use protocol::frame::{HEADER_LEN, Header, OP_SESSIONS};
use protocol::hello::SessionInfo;
use std::io::{Read, Write};
use std::time::Duration;

fn listing(address: &str) -> String {
    let out = vgpu(&["sessions", "--server", address], &[]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sessions_name_their_workers_and_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    assert!(listing(&server.address).contains("(no sessions)"));

    let client = rust_client(&server.address, "").unwrap();
    let me = format!("trust-test (pid {}) on test", std::process::id());
    let seen = wait_until(Duration::from_secs(5), || listing(&server.address).contains(&me));
    let table = listing(&server.address);
    assert!(seen.is_some(), "{table}");
    // Its worker, by the pid the host's tools show, and its peer, by its credentials.
    let workers = server.workers();
    assert_eq!(workers.len(), 1, "{workers:?}");
    let row = table.lines().find(|l| l.contains(&me)).unwrap();
    assert!(row.split_whitespace().nth(1) == Some(workers[0].to_string().as_str()), "{row}");
    assert!(row.contains(&format!("local pid {}", std::process::id())), "{row}");
    assert!(row.contains(&format!("via {}", server.address)), "{row}");

    // The device memory its allocations hold, told within a second or so.
    let ctx = client.call(0, &protocol::ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    let p = client.call(ctx, &protocol::ops::cuMemAlloc_v2 { bytesize: 48 << 20 }, &[], None).unwrap();
    let shown = wait_until(Duration::from_secs(5), || {
        listing(&server.address).lines().any(|l| l.contains(&me) && l.contains(" 48 MiB "))
    });
    assert!(shown.is_some(), "{}", listing(&server.address));
    client.call(ctx, &protocol::ops::cuMemFree_v2 { dptr: p }, &[], None).unwrap();
    let freed = wait_until(Duration::from_secs(5), || {
        listing(&server.address).lines().any(|l| l.contains(&me) && l.contains(" 0 MiB "))
    });
    assert!(freed.is_some(), "{}", listing(&server.address));

    // The same as JSON, for scripts.
    let out = vgpu(&["sessions", "--server", &server.address, "--json"], &[]);
    let list: Vec<SessionInfo> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].worker_pid, workers[0]);
    assert_eq!(list[0].client.as_ref().map(|c| (c.pid, c.program.as_str())), Some((std::process::id(), "trust-test")));
    assert_eq!(list[0].memory, 0);

    drop(client);
    let gone = wait_until(Duration::from_secs(5), || listing(&server.address).contains("(no sessions)"));
    assert!(gone.is_some(), "{}", listing(&server.address));
}

#[test]
fn sessions_are_listed_only_on_the_unix_socket() {
    let tcp = Server::start_env(&free_tcp_address(), &["--backend", "sim"], &[], &[("VGPU_TOKEN", "t0k")]);
    // The command says where to ask.
    let out = vgpu(&["sessions", "--server", &tcp.address], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unix socket"), "{out:?}");
    // The server, asked over TCP anyway, says so too, and lists nothing.
    let mut s = std::net::TcpStream::connect(tcp.address.trim_start_matches("tcp://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut f = Vec::new();
    transport::write_frame(&mut f, &Header::request(OP_SESSIONS, 1, 0, false, 0, 0), &[], &[]).unwrap();
    s.write_all(&f).unwrap();
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).unwrap();
    let h = Header::decode(&h).unwrap();
    let mut body = vec![0u8; h.args_len as usize];
    s.read_exact(&mut body).unwrap();
    let answer: Result<Vec<SessionInfo>, String> = postcard::from_bytes(&body).unwrap();
    assert!(answer.is_err_and(|e| e.contains("unix socket")));
}

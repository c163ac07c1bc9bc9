//! Lanes: large copies striped over extra connections of the session arrive whole and in
//! order, both ways, over unix sockets, TCP and TLS; a lane must present its session's key
//! (over TLS inside TLS, after a join in clear that only routes it).

mod common;
use common::*;
use protocol::frame::{HEADER_LEN, Header, OP_JOIN};
use protocol::hello::{Join, Welcome};
use protocol::ops;
use std::io::{Read, Write};
use std::time::Duration;

const TOKEN: &str = "lane-test-token";

fn connect(address: &str, token: &str) -> (transport::Conn, Welcome) {
    connect_to(&address.parse().unwrap(), token)
}

fn connect_to(addr: &transport::Address, token: &str) -> (transport::Conn, Welcome) {
    let t = transport::Timeouts { silence: Duration::from_secs(4), ..Default::default() };
    transport::Conn::connect(addr, &hello(token), t).unwrap()
}

/// Copies of several sizes (below, at and above the lane threshold, odd lengths, bulk in
/// two pieces) through `conn` and back; every byte must come back.
fn copies_come_back(conn: &transport::Conn) {
    let ctx = conn.call(0, &ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    let stream = conn.call(ctx, &ops::cuStreamCreate { flags: 0 }, &[], None).unwrap();
    for (i, len) in [4096usize, (256 << 10) - 1, 256 << 10, 1 << 20, (3 << 20) + 4097, 8 << 20].into_iter().enumerate()
    {
        let p = conn.call(ctx, &ops::cuMemAlloc_v2 { bytesize: len as u64 }, &[], None).unwrap();
        let data: Vec<u8> = (0..len).map(|j| (j * 13 + i * 7 + (j >> 12)) as u8).collect();
        let (a, b) = data.split_at(len / 3);
        // Asynchronous (one-way), then synchronous, copies of the same bytes.
        conn.call(ctx, &ops::cuMemcpyHtoDAsync_v2 { dst: p, stream }, &[a, b], None).unwrap();
        let mut back = vec![0u8; len];
        conn.call(ctx, &ops::cuMemcpyDtoHAsync_v2 { src: p, size: len as u64, stream }, &[], Some(&mut back)).unwrap();
        assert!(back == data, "asynchronous copy of {len} bytes");
        let m = ops::memset { dst: p, value: 0, elem: 1, width: len as u64, height: 1, pitch: 0, stream: 0 };
        conn.call(ctx, &m, &[], None).unwrap();
        conn.call(ctx, &ops::cuMemcpyHtoD_v2 { dst: p }, &[&data], None).unwrap();
        back.fill(0);
        conn.call(ctx, &ops::cuMemcpyDtoH_v2 { src: p, size: len as u64 }, &[], Some(&mut back)).unwrap();
        assert!(back == data, "synchronous copy of {len} bytes");
        conn.call(ctx, &ops::cuMemFree_v2 { dptr: p }, &[], None).unwrap();
    }
}

#[test]
fn large_copies_travel_on_lanes_over_unix_tcp_and_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sim_servers_on_every_socket(tmp.path(), TOKEN);
    for (address, token) in [(s.unix.clone(), ""), (s.tcp.clone(), TOKEN), (s.tls.clone(), TOKEN)] {
        let (conn, welcome) = connect_to(&address, token);
        let Welcome::Accepted { lanes: Some(offer), .. } = welcome else { panic!("{address}: no lanes offered") };
        assert!(offer.max >= 4);
        conn.set_lanes(4);
        // Never set aside for lagging (a loaded test host's helpers may wait for cores):
        // the counts below are exact.
        conn.set_lane_lag(None);
        copies_come_back(&conn);
        let lanes = conn.lanes().expect("lanes opened");
        assert_eq!(lanes.len(), 4, "{address}");
        // The four sizes of 256 KiB and more (over TLS five: from 64 KiB on), each copied in
        // twice (the transport does not split frames; the shims send copies in frames of
        // 1 MiB).
        let n = if address.is_tls() { 5 } else { 4 };
        assert_eq!(lanes.striped(), 2 * n, "{address}: frames striped");
        // And their replies, asynchronous and synchronous, back.
        assert_eq!(lanes.gathered(), 2 * n, "{address}: replies gathered");
    }
}

/// Lanes whose helpers lag (here: any delay counts) step aside after two copies, and the
/// copies after them go over the session's connection, landing whole all the same.
#[test]
fn lagging_lanes_step_aside_and_copies_still_land() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sim_servers_on_every_socket(tmp.path(), TOKEN);
    for (address, token) in [(s.unix.clone(), ""), (s.tcp.clone(), TOKEN)] {
        let (conn, _) = connect_to(&address, token);
        conn.set_lanes(4);
        conn.set_lane_lag(Some(Duration::ZERO));
        copies_come_back(&conn);
        let lanes = conn.lanes().expect("lanes opened");
        assert_eq!(lanes.striped() + lanes.gathered() + lanes.passed(), 16, "{address}: every large copy counted");
        assert!(lanes.asides() >= 1 && lanes.passed() >= 1, "{address}: set aside, copies passed them");
        // The first two (a copy in and its reply) lag, which sets the lanes aside.
        assert!(lanes.striped() >= 1 && lanes.gathered() >= 1, "{address}");
    }
}

/// Threads copying both ways at once over the same lanes: a reply read by another caller's
/// thread is gathered and parked for its owner; every byte comes back to its own thread.
#[test]
fn threads_share_the_lanes_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    let (conn, _) = connect(&server.address, "");
    threads_copy_both_ways(conn);
}

/// The same over TLS, whose connections' handles share one TLS state: one thread reads
/// while others write, on the session's connection and on every lane.
#[test]
fn threads_share_tls_lanes_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, address, _pki) = tls_sim_server(tmp.path(), TOKEN, &[]);
    let (conn, _) = connect_to(&address, TOKEN);
    threads_copy_both_ways(conn);
}

fn threads_copy_both_ways(conn: transport::Conn) {
    conn.set_lanes(4);
    conn.set_lane_lag(None);
    let conn = std::sync::Arc::new(conn);
    let ctx = conn.call(0, &protocol::ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    let workers: Vec<_> = (0..4usize)
        .map(|t| {
            let conn = conn.clone();
            std::thread::spawn(move || {
                let len = (1 << 20) + t * 777_777;
                let p = conn.call(ctx, &protocol::ops::cuMemAlloc_v2 { bytesize: len as u64 }, &[], None).unwrap();
                for round in 0..10usize {
                    let data: Vec<u8> = (0..len).map(|j| (j * 31 + t * 7 + round) as u8).collect();
                    conn.call(ctx, &protocol::ops::cuMemcpyHtoD_v2 { dst: p }, &[&data], None).unwrap();
                    let mut back = vec![0u8; len];
                    let get = protocol::ops::cuMemcpyDtoH_v2 { src: p, size: len as u64 };
                    conn.call(ctx, &get, &[], Some(&mut back)).unwrap();
                    assert!(back == data, "thread {t} round {round}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let lanes = conn.lanes().unwrap();
    assert_eq!((lanes.striped(), lanes.gathered()), (40, 40));
}

#[test]
fn without_lanes_the_same_copies_go_over_one_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    let (conn, _) = connect(&server.address, "");
    copies_come_back(&conn);
    assert!(conn.lanes().is_none(), "lanes are opened only when asked for");
}

/// A lane's join frame.
fn join_frame(session: u64, key: [u8; 32], lane: u32) -> Vec<u8> {
    let args = postcard::to_allocvec(&Join { session, key, role: protocol::hello::Role::Lane(lane) }).unwrap();
    let mut f = Vec::new();
    transport::write_frame(&mut f, &Header::request(OP_JOIN, 0, 0, false, args.len(), 0), &args, &[]).unwrap();
    f
}

/// A join frame for `session` with `key`, sent on a fresh connection; whether the server
/// acknowledged it.
fn join(address: &str, session: u64, key: [u8; 32]) -> bool {
    let path = address.strip_prefix("unix:").unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&join_frame(session, key, 0)).unwrap();
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).is_ok_and(|()| Header::decode(&h).is_ok_and(|h| h.op == OP_JOIN && h.status == 0))
}

#[test]
fn a_lane_needs_its_sessions_key() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    let (conn, welcome) = connect(&server.address, "");
    let Welcome::Accepted { session, lanes: Some(offer), .. } = welcome else { panic!("no lanes offered") };
    let mut wrong = offer.key;
    wrong[0] ^= 1;
    assert!(!join(&server.address, session, wrong), "a wrong key is refused");
    assert!(!join(&server.address, session + 100, offer.key), "an unknown session is refused");
    assert!(join(&server.address, session, offer.key), "the right key is taken");
    // The session is unharmed by the refused joins.
    conn.set_lanes(2);
    copies_come_back(&conn);
}

/// A lane for `session` on a `tls://` server: joined in clear with `route_key` (the
/// client sends zeros), then inside TLS with `key`; whether the server acknowledged it.
fn tls_join(address: &transport::Address, session: u64, route_key: [u8; 32], key: [u8; 32]) -> bool {
    let Ok(mut s) = address.connect_routed(Duration::from_secs(5), &join_frame(session, route_key, 0)) else {
        return false;
    };
    s.set_timeouts(Some(Duration::from_secs(5)), Some(Duration::from_secs(5))).unwrap();
    s.write_all(&join_frame(session, key, 0)).unwrap();
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).is_ok_and(|()| Header::decode(&h).is_ok_and(|h| h.op == OP_JOIN && h.status == 0))
}

#[test]
fn a_tls_lane_needs_its_sessions_key_inside_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, address, _pki) = tls_sim_server(tmp.path(), TOKEN, &[]);
    let (conn, welcome) = connect_to(&address, TOKEN);
    let Welcome::Accepted { session, lanes: Some(offer), .. } = welcome else { panic!("no lanes offered over TLS") };
    let mut wrong = offer.key;
    wrong[0] ^= 1;
    // The key in clear counts for nothing: only the one inside TLS does.
    assert!(!tls_join(&address, session, offer.key, wrong), "a wrong key inside TLS is refused");
    assert!(!tls_join(&address, session + 100, [0; 32], offer.key), "an unknown session is refused");
    assert!(tls_join(&address, session, [0; 32], offer.key), "the right key inside TLS is taken");
    // A plain join with the right key reaches the worker, which expects TLS on it: refused.
    let plain = transport::Address::Tcp(address.to_string().replace("tls://", ""));
    let mut s = plain.connect_routed(Duration::from_secs(5), &join_frame(session, offer.key, 1)).unwrap();
    // (Bytes that are not TLS: the worker gives up at once, not at its handshake deadline.)
    s.write_all(&[0u8; 64]).unwrap();
    s.set_timeouts(Some(Duration::from_secs(15)), None).unwrap();
    let mut h = [0u8; HEADER_LEN];
    assert!(s.read_exact(&mut h).is_err(), "a lane in clear for a TLS session is not acknowledged");
    // The session is unharmed by the refused joins.
    conn.set_lanes(2);
    copies_come_back(&conn);
    assert_eq!(conn.lanes().map(|l| l.len()), Some(2));
}

/// The driver shim's copies (64 MiB both ways, in 4 MiB frames over lanes) through a C
/// program, over unix, TCP and TLS, lanes asked for whatever the machine's cores.
#[test]
fn the_driver_shim_copies_over_lanes() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("driver_basic", tmp.path(), &lib, &["libcuda.so.1"]);
    let unix = Server::sim_quiet(tmp.path(), &[]);
    let tcp = Server::start_env(&free_tcp_address(), &["--backend", "sim"], &[], &[("VGPU_TOKEN", TOKEN)]);
    let (tls, _, pki) = tls_sim_server(tmp.path(), TOKEN, &[]);
    for server in [&unix, &tcp, &tls] {
        // Lanes never set aside for lagging: the counts below are exact.
        let envs = [
            ("VGPU_LANES", "4"),
            ("VGPU_LANE_LAG_US", "0"),
            ("VGPU_TOKEN", TOKEN),
            ("VGPU_TRACE", "summary"),
            ("VGPU_TLS_CA", s(&pki.ca)),
        ];
        let out = run(&exe, &lib, &server.address, &envs);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{}: {stdout}\n{stderr}", server.address);
        assert!(stdout.contains("roundtrip 64MiB ok"), "{}: {stdout}", server.address);
        // 64 MiB in 4 MiB frames, and the program's other copies of 256 KiB and more.
        let striped =
            stderr.lines().find_map(|l| l.split("frames' bulk over 4 lanes").next().filter(|_| l.contains("lanes")));
        let n: u64 = striped.and_then(|p| p.rsplit(' ').nth(1)?.parse().ok()).unwrap_or(0);
        assert!(n >= 16, "{}: frames over lanes: {stderr}", server.address);
        // 64 MiB back in 8 MiB replies.
        assert!(replies_back_over_lanes(&stderr) >= 8, "{}: replies over lanes: {stderr}", server.address);
    }
}

/// One lane is opened only where its chunks would go coded (a link): over a unix socket,
/// and TCP to the host's own loopback address, large copies stay on the connection.
#[test]
fn one_lane_is_not_opened_where_nothing_is_coded() {
    let tmp = tempfile::tempdir().unwrap();
    let unix = Server::sim_quiet(tmp.path(), &[]);
    let tcp = Server::start_env(&free_tcp_address(), &["--backend", "sim"], &[], &[("VGPU_TOKEN", TOKEN)]);
    for (address, token) in [(unix.address.as_str(), ""), (tcp.address.as_str(), TOKEN)] {
        let (conn, _) = connect(address, token);
        conn.set_lanes(1);
        copies_come_back(&conn);
        assert!(conn.lanes().is_none(), "{address}: a lane was opened");
    }
}

//! Coded rows end to end: dequantized rows striped over lanes go coded (`set_coding`, as
//! `VGPU_CODE=1` does, forces it over every socket) and the server lands exactly the bytes sent, over unix
//! sockets, TCP (four lanes and one) and TLS; bytes that are not such rows go as they are.

mod common;
use common::*;
use protocol::ops;
use std::time::Duration;

const TOKEN: &str = "coded-test-token";

/// 4 MiB of rows as llama.cpp's CPU `get_rows` makes them from a Q8_0 table: each block of
/// 32 values a scale (here a power of two) times -127..=127, one of them ±127.
fn q8_rows() -> Vec<u8> {
    (0..(4usize << 20) / 4)
        .flat_map(|i| {
            let q = if i % 32 == 7 { -127 } else { (i * 53 % 255) as i32 - 127 };
            (q as f32 * 2f32.powi(-(((i / 32) % 11) as i32) - 2)).to_le_bytes()
        })
        .collect()
}

/// 2 MiB of rows from an F16 table: every value an `f16`.
fn f16_rows() -> Vec<u8> {
    (0..(2usize << 20) / 4).flat_map(|i| (((i * 29 % 2001) as f32 - 1000.0) / 64.0).to_le_bytes()).collect()
}

#[test]
fn rows_go_coded_and_land_exactly_over_unix_tcp_and_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sim_servers_on_every_socket(tmp.path(), TOKEN);
    let noise: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    // One lane too (a small VM's default): opened because its chunks go coded.
    for (address, token, n) in
        [(s.unix.clone(), "", 4), (s.tcp.clone(), TOKEN, 4), (s.tcp.clone(), TOKEN, 1), (s.tls.clone(), TOKEN, 4)]
    {
        let t = transport::Timeouts { silence: Duration::from_secs(4), ..Default::default() };
        let (conn, _) = transport::Conn::connect(&address, &hello(token), t).unwrap();
        conn.set_lanes(n);
        conn.set_coding(Some(true));
        // Never set aside for lagging: every copy below goes over the lanes.
        conn.set_lane_lag(None);
        let ctx = conn.call(0, &ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
        let stream = conn.call(ctx, &ops::cuStreamCreate { flags: 0 }, &[], None).unwrap();
        let mut coded = 0;
        for (what, data, codes) in
            [("Q8_0 rows", q8_rows(), true), ("F16 rows", f16_rows(), true), ("noise", noise.clone(), false)]
        {
            let len = data.len();
            let p = conn.call(ctx, &ops::cuMemAlloc_v2 { bytesize: len as u64 }, &[], None).unwrap();
            conn.call(ctx, &ops::cuMemcpyHtoDAsync_v2 { dst: p, stream }, &[&data], None).unwrap();
            let mut back = vec![0u8; len];
            conn.call(ctx, &ops::cuMemcpyDtoHAsync_v2 { src: p, size: len as u64, stream }, &[], Some(&mut back))
                .unwrap();
            assert!(back == data, "{address}: {what} came back changed");
            let lanes = conn.lanes().expect("lanes opened");
            assert_eq!(lanes.len(), n, "{address}");
            assert_eq!(lanes.coded() > coded, codes, "{address}: {what} coded ({} chunks so far)", lanes.coded());
            coded = lanes.coded();
            conn.call(ctx, &ops::cuMemFree_v2 { dptr: p }, &[], None).unwrap();
        }
    }
}

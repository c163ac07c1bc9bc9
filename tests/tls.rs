//! TLS on TCP: `vgpu serve --listen tls://...` with a certificate signed by a test CA made
//! here. Clients (the C programs through the shims, `vgpu doctor`) that trust that CA and
//! present the token are served; a wrong CA, a wrong name, no CA, a missing token, a plain
//! tcp:// client on the TLS port and a TLS client on a plain port are refused at once,
//! saying why.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

#[test]
fn tls_clients_need_the_right_ca_name_and_token() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let lib = lib_dir(tmp.path());
    let nvml = compile_c("nvml_basic", tmp.path(), &lib, &["libnvidia-ml.so.1"]);
    let driver = compile_c("driver_basic", tmp.path(), &lib, &["libcuda.so.1"]);
    let tok = token_file(tmp.path(), "correct horse battery staple");
    let tls = free_tls_address();
    let tcp = free_tcp_address();
    // One server, two listeners: TLS and plain TCP, the same token for both.
    let server = Server::start_env(
        &tls,
        &["--backend", "sim"],
        &["--listen", &tcp, "--token-file", s(&tok), "--tls-cert", s(&pki.cert), "--tls-key", s(&pki.key)],
        &[("VGPU_LOG", "error")],
    );
    let good = [("VGPU_TLS_CA", s(&pki.ca)), ("VGPU_TOKEN_FILE", s(&tok))];

    // Served: NVML, and the driver API's 64 MiB round trip, byte-exact through TLS.
    let out = run(&nvml, &lib, &tls, &good);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out = run(&driver, &lib, &tls, &good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("roundtrip 64MiB ok") && stdout.contains("done"), "{stdout}");
    // The name checked can be set apart from the address.
    let out = run(&nvml, &lib, &tls, &[good[0], good[1], ("VGPU_TLS_NAME", "localhost")]);
    assert!(out.status.success(), "VGPU_TLS_NAME=localhost: {}", String::from_utf8_lossy(&out.stderr));
    // The config file's tls_ca, as a service would be set up.
    let cfg = tmp.path().join("client.toml");
    std::fs::write(&cfg, format!("server = \"{tls}\"\ntls_ca = \"{}\"\ntoken_file = \"{}\"\n", s(&pki.ca), s(&tok)))
        .unwrap();
    let out = std::process::Command::new(&nvml)
        .env("LD_LIBRARY_PATH", &lib)
        .env("VGPU_CONFIG", &cfg)
        .env_remove("VGPU_SERVER")
        .output()
        .unwrap();
    assert!(out.status.success(), "config file: {}", String::from_utf8_lossy(&out.stderr));

    // Refused, at once, saying why and naming the server.
    let refused = |address: &str, envs: &[(&str, &str)], why: &str| {
        let t0 = Instant::now();
        let out = run(&nvml, &lib, address, envs);
        let took = t0.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "nvmlInit_v2 must fail ({envs:?}): {stdout}{stderr}");
        assert!(stdout.contains("init failed 9"), "NVML_ERROR_DRIVER_NOT_LOADED: {stdout}");
        assert!(stderr.contains(why), "{envs:?}: says why ({why}): {stderr}");
        assert!(stderr.contains(address), "names the server: {stderr}");
        assert!(took < Duration::from_secs(3), "{envs:?}: took {took:?}");
        stderr.into_owned()
    };
    let e = refused(&tls, &[("VGPU_TLS_CA", s(&pki.other_ca)), good[1]], "invalid peer certificate");
    assert!(e.contains(s(&pki.other_ca)), "names the CA file: {e}");
    refused(&tls, &[good[1]], "VGPU_TLS_CA");
    refused(&tls, &[good[0], good[1], ("VGPU_TLS_NAME", "gpu.elsewhere")], "not valid for name");
    let missing = tmp.path().join("missing-ca.pem");
    refused(&tls, &[("VGPU_TLS_CA", s(&missing)), good[1]], "missing-ca.pem");
    // TLS says who the server is; the token still says who the client is.
    refused(&tls, &[good[0]], "requires a token");
    refused(&tls, &[good[0], ("VGPU_TOKEN", "guess")], "wrong token");
    // A plain client on the TLS port is told to use TLS, in its own protocol.
    let plain_on_tls = tls.replace("tls://", "tcp://");
    refused(&plain_on_tls, &good, "this listener speaks TLS");
    // A TLS client on the plain port.
    let tls_on_plain = tcp.replace("tcp://", "tls://");
    refused(&tls_on_plain, &good, "is its listener tls://");

    // The plain listener of the same server still works, and nothing is left behind.
    let out = run(&nvml, &lib, &tcp, &[good[1]]);
    assert!(out.status.success(), "tcp: {}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_until(Duration::from_secs(3), || server.workers().is_empty()).is_some(), "{:?}", server.workers());
}

#[test]
fn a_client_that_never_completes_the_tls_handshake_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let tok = token_file(tmp.path(), "t0ken");
    let tls = free_tls_address();
    let server = Server::start_env(
        &tls,
        &["--backend", "sim"],
        &["--token-file", s(&tok), "--tls-cert", s(&pki.cert), "--tls-key", s(&pki.key)],
        &[("VGPU_LOG", "error")],
    );
    // Connects and says nothing: the listener waits for its first bytes (a TLS ClientHello,
    // or a lane's join) up to the handshake deadline (10 s), with no worker started for
    // it, then hangs up.
    let connected = std::time::Instant::now();
    let mut silent = std::net::TcpStream::connect(tls.trim_start_matches("tls://")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(wait_until(Duration::from_secs(5), || server.workers().is_empty()).is_some(), "{:?}", server.workers());
    silent.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let got = std::io::Read::read(&mut silent, &mut [0u8; 16]);
    assert!(
        matches!(got, Ok(0)) || got.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{got:?}"
    );
    let gone = connected.elapsed();
    assert!(gone > Duration::from_secs(5) && gone < Duration::from_secs(15), "{gone:?}");
    assert!(server.workers().is_empty());
}

#[test]
fn serve_checks_its_tls_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let tok = token_file(tmp.path(), "t0ken");
    let tls = free_tls_address();
    let serve = |listen: &str, extra: &[&str]| {
        let mut args = vec!["serve", "--backend", "sim", "--listen", listen, "--token-file", s(&tok)];
        args.extend_from_slice(extra);
        let out = vgpu(&args, &[]);
        assert!(!out.status.success(), "vgpu serve {listen} {extra:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = serve(&tls, &[]);
    assert!(e.contains("needs --tls-cert and --tls-key"), "{e}");
    let e = serve(&free_tcp_address(), &["--tls-cert", s(&pki.cert), "--tls-key", s(&pki.key)]);
    assert!(e.contains("for tls:// listeners"), "{e}");
    let e = serve(&tls, &["--tls-cert", s(&pki.cert)]);
    assert!(e.contains("--tls-key"), "{e}");
    let e = serve(&tls, &["--tls-cert", s(&pki.key), "--tls-key", s(&pki.key)]);
    assert!(e.contains("TLS certificate") && e.contains("no certificate"), "{e}");
    let e = serve(&tls, &["--tls-cert", s(&pki.cert), "--tls-key", s(&pki.ca)]);
    assert!(e.contains("TLS key"), "{e}");
    std::fs::set_permissions(&pki.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = serve(&tls, &["--tls-cert", s(&pki.cert), "--tls-key", s(&pki.key)]);
    assert!(e.contains("readable by others") && e.contains("chmod 600"), "{e}");
    // A tls:// listener needs the token as tcp:// does.
    std::fs::set_permissions(&pki.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = vgpu(
        &["serve", "--backend", "sim", "--listen", &tls, "--tls-cert", s(&pki.cert), "--tls-key", s(&pki.key)],
        &[],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a token"), "{out:?}");
}

#[test]
fn doctor_names_tls_problems() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let tok = token_file(tmp.path(), "t0ken");
    let tls = free_tls_address();
    let _server = Server::start_env(
        &tls,
        &["--backend", "sim"],
        &["--token-file", s(&tok), "--tls-cert", s(&pki.cert), "--tls-key", s(&pki.key)],
        &[("VGPU_LOG", "error")],
    );
    let absent = tmp.path().join("absent.toml");
    let doctor = |server: &str, envs: &[(&str, &str)]| {
        let mut all = vec![("VGPU_SERVER", server), ("VGPU_CONFIG", s(&absent)), ("VGPU_TOKEN_FILE", s(&tok))];
        all.extend_from_slice(envs);
        String::from_utf8_lossy(&vgpu(&["doctor"], &all).stdout).into_owned()
    };
    let finding =
        |text: &str, code: &str| text.lines().any(|l| l.starts_with("FAIL") && l.ends_with(&format!("[{code}]")));

    let d = doctor(&tls, &[("VGPU_TLS_CA", s(&pki.ca))]);
    assert!(d.contains(&format!("OK   server: {tls}: vgpu")), "{d}");
    assert!(d.contains(&format!("TLS CA {}", s(&pki.ca))), "{d}");
    let d = doctor(&tls, &[("VGPU_TLS_CA", s(&pki.other_ca))]);
    assert!(finding(&d, "tls-failed") && d.contains("invalid peer certificate"), "{d}");
    let d = doctor(&tls, &[]);
    assert!(finding(&d, "tls-ca-missing"), "{d}");
    let d = doctor(&tls, &[("VGPU_TLS_CA", s(&tmp.path().join("nope.pem")))]);
    assert!(finding(&d, "tls-ca-unreadable"), "{d}");
    let d = doctor(&tls.replace("tls://", "tcp://"), &[]);
    assert!(finding(&d, "tls-required"), "{d}");
}

/// Bytes that are not TLS records, written under an established TLS session, end that
/// session only; a lane that joins in clear and never starts its handshake holds up neither
/// the session nor its other lanes.
#[test]
fn broken_tls_ends_only_its_own_session() {
    use protocol::ops;
    let tmp = tempfile::tempdir().unwrap();
    let (_server, address, _pki) = tls_sim_server(tmp.path(), "t0k", &[]);
    let t = transport::Timeouts { silence: Duration::from_secs(4), ..Default::default() };
    let connect = || transport::Conn::connect(&address, &hello("t0k"), t).unwrap();

    // A session whose record layer is then broken from outside TLS (through a second
    // handle on its socket).
    let stream = address.connect(Duration::from_secs(5)).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let keep = stream.try_clone().unwrap();
    let (victim, welcome) = transport::Conn::handshake(stream, &address, &hello("t0k"), t).unwrap();
    let protocol::hello::Welcome::Accepted { session, .. } = welcome else { panic!("refused") };
    let (other, _) = connect();
    let ctx = other.call(0, &ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();

    // A lane routed in clear to the victim's session that then says nothing more: its
    // worker waits for that handshake on a thread of its own.
    let host_port = address.to_string().replace("tls://", "");
    let mut stalled = std::net::TcpStream::connect(&host_port).unwrap();
    let args =
        postcard::to_allocvec(&protocol::hello::Join { session, key: [0; 32], role: protocol::hello::Role::Lane(0) })
            .unwrap();
    let mut f = Vec::new();
    let h = protocol::frame::Header::request(protocol::frame::OP_JOIN, 0, 0, false, args.len(), 0);
    transport::write_frame(&mut f, &h, &args, &[]).unwrap();
    std::io::Write::write_all(&mut stalled, &f).unwrap();

    // The victim's session still works, lanes included, while that lane stalls.
    victim.set_lanes(2);
    let vctx = victim.call(0, &ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    let p = victim.call(vctx, &ops::cuMemAlloc_v2 { bytesize: 1 << 20 }, &[], None).unwrap();
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 249) as u8).collect();
    victim.call(vctx, &ops::cuMemcpyHtoD_v2 { dst: p }, &[&data], None).unwrap();
    let mut back = vec![0u8; data.len()];
    victim.call(vctx, &ops::cuMemcpyDtoH_v2 { src: p, size: back.len() as u64 }, &[], Some(&mut back)).unwrap();
    assert!(back == data);
    assert_eq!(victim.lanes().map(|l| l.len()), Some(2), "its lanes joined past the stalled one");

    // Garbage under TLS: the victim's calls fail within seconds, the other session goes on.
    let junk = [0x17u8, 0x03, 0x03, 0x00, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
    // SAFETY: a send on the victim's own TCP socket, from a local buffer.
    unsafe { libc::send(fd, junk.as_ptr().cast(), junk.len(), libc::MSG_NOSIGNAL) };
    let t0 = Instant::now();
    let failed = loop {
        match victim.call(vctx, &ops::cuMemGetInfo_v2 {}, &[], None) {
            Err(e) => break e,
            Ok(_) if t0.elapsed() > Duration::from_secs(10) => panic!("the broken session still answers"),
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert!(t0.elapsed() < Duration::from_secs(6), "{failed:?} after {:?}", t0.elapsed());
    other.call(ctx, &ops::cuMemGetInfo_v2 {}, &[], None).unwrap();
    let (third, _) = connect();
    third.call(0, &ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    drop((keep, stalled));
}

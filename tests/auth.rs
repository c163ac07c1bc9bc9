//! Authentication: TCP needs a token (from a private file), clients without it or with a
//! wrong one are refused with a message saying why, builds that do not match are refused
//! at the handshake naming both sides; unix sockets and vsock carry the same protocol.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn token_file(dir: &std::path::Path, token: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.join(format!("token-{mode:o}"));
    std::fs::write(&p, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn serve_refuses_tcp_without_a_private_nonempty_token() {
    let tmp = tempfile::tempdir().unwrap();
    let tcp = free_tcp_address();
    let serve = |extra: &[&str], envs: &[(&str, &str)]| {
        let mut args = vec!["serve", "--backend", "sim", "--listen", &tcp];
        args.extend_from_slice(extra);
        let out = vgpu(&args, envs);
        assert!(!out.status.success(), "vgpu serve {extra:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = serve(&[], &[]);
    assert!(e.contains("needs a token"), "{e}");
    let e = serve(&[], &[("VGPU_TOKEN", "")]);
    assert!(e.contains("needs a token"), "empty VGPU_TOKEN: {e}");
    let empty = token_file(tmp.path(), "", 0o600);
    let e = serve(&["--token-file", empty.to_str().unwrap()], &[]);
    assert!(e.contains("needs a token"), "empty token file: {e}");
    for mode in [0o644, 0o640, 0o604] {
        let open = token_file(tmp.path(), "s3cret", mode);
        let e = serve(&["--token-file", open.to_str().unwrap()], &[]);
        assert!(e.contains("readable by others") && e.contains("chmod 600"), "mode {mode:o}: {e}");
    }
    let e = serve(&["--token-file", tmp.path().join("missing").to_str().unwrap()], &[]);
    assert!(e.contains("token file"), "{e}");
}

#[test]
fn tcp_clients_need_the_right_token() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("nvml_basic", tmp.path(), &lib, &["libnvidia-ml.so.1"]);
    let tok = token_file(tmp.path(), "correct horse battery staple", 0o600);
    let tcp = free_tcp_address();
    let sock = format!("unix:{}/auth.sock", tmp.path().display());
    // One server, two listeners: TCP (token) and a unix socket (file permissions).
    let server = Server::start_env(
        &tcp,
        &["--backend", "sim"],
        &["--listen", &sock, "--token-file", tok.to_str().unwrap()],
        &[("VGPU_LOG", "error")],
    );

    let refused = |envs: &[(&str, &str)], why: &str| {
        let out = run(&exe, &lib, &server.address, envs);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "nvmlInit_v2 must fail: {stdout}{stderr}");
        assert!(stdout.contains("init failed 9"), "NVML_ERROR_DRIVER_NOT_LOADED: {stdout}");
        assert!(stderr.contains("refused this client") && stderr.contains(why), "says why: {stderr}");
        assert!(stderr.contains(&server.address), "names the server: {stderr}");
    };
    refused(&[], "requires a token");
    refused(&[("VGPU_TOKEN", "correct horse battery stapler")], "wrong token");
    refused(&[("VGPU_TOKEN", "x")], "wrong token");
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "guess\n").unwrap();
    refused(&[("VGPU_TOKEN_FILE", wrong.to_str().unwrap())], "wrong token");

    for envs in [vec![("VGPU_TOKEN_FILE", tok.to_str().unwrap())], vec![("VGPU_TOKEN", "correct horse battery staple")]]
    {
        let out = run(&exe, &lib, &server.address, &envs);
        assert!(
            out.status.success(),
            "{envs:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The unix listener of the same server needs no token.
    let out = run(&exe, &lib, &sock, &[]);
    assert!(out.status.success(), "unix: {}", String::from_utf8_lossy(&out.stderr));
    // The Rust client sees a refusal, not a lost connection.
    match rust_client(&server.address, "nope") {
        Err(transport::Error::Refused(r)) => assert_eq!(r, "wrong token"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Refused sessions leave no worker behind.
    assert!(wait_until(Duration::from_secs(3), || server.workers().is_empty()).is_some(), "{:?}", server.workers());
}

#[test]
fn mismatched_builds_are_refused_naming_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    let addr: transport::Address = server.address.parse().unwrap();
    let refusal = |h: protocol::hello::Hello| match transport::Conn::connect(&addr, &h, Default::default()) {
        Err(transport::Error::Refused(r)) => r,
        other => panic!("{:?}", other.map(|_| ())),
    };
    let v = protocol::PROTOCOL_VERSION;
    let r = refusal(protocol::hello::Hello { protocol_version: v + 1, ..hello("") });
    assert!(r.contains(&format!("client speaks {}", v + 1)) && r.contains(&format!("server speaks {v}")), "{r}");
    let other = protocol::WIRE_HASH ^ 0x0123_4567_89ab_cdef;
    let r = refusal(protocol::hello::Hello { wire_hash: other, ..hello("") });
    assert!(r.contains(&format!("{other:016x}")) && r.contains(&format!("{:016x}", protocol::WIRE_HASH)), "{r}");
    assert!(r.contains("different vgpu builds"), "{r}");
}

/// vsock streams are carried as unix-domain stream sockets (the same `Stream::Unix`): the
/// whole protocol over a socketpair, with the worker taking its end as an inherited fd as
/// `vgpu worker` does; and over real vsock loopback where the host offers it.
#[test]
fn protocol_over_a_socketpair_and_vsock() {
    use std::os::fd::IntoRawFd;
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = a.into_raw_fd();
    let worker = std::thread::spawn(move || {
        // SAFETY: `fd` was just detached from its owner.
        let stream = unsafe { transport::Stream::from_fd(fd) };
        let cfg = server::SessionConfig {
            backend: server::BackendKind::Sim,
            token: None,
            memory_limit: Some(1 << 20),
            session_id: 1,
            lane_control: None,
            board: None,
            shm_files: Vec::new(),
            tls: None,
        };
        server::run_session(stream, &cfg, server::snapshot(server::BackendKind::Sim, 1, 0).unwrap())
    });
    let vsock: transport::Address = "vsock://3:7070".parse().unwrap();
    let (c, welcome) =
        transport::Conn::handshake(transport::Stream::Unix(b), &vsock, &hello(""), Default::default()).unwrap();
    let protocol::hello::Welcome::Accepted { snapshot, .. } = welcome else { panic!("refused") };
    assert_eq!(snapshot.devices[0].total_mem, 1 << 20, "the quota is the device's memory");
    let ctx = c.call(0, &protocol::ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    let p = c.call(ctx, &protocol::ops::cuMemAlloc_v2 { bytesize: 300_000 }, &[], None).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    c.call(ctx, &protocol::ops::cuMemcpyHtoD_v2 { dst: p }, &[&data], None).unwrap();
    let mut back = vec![0u8; data.len()];
    c.call(ctx, &protocol::ops::cuMemcpyDtoH_v2 { src: p, size: data.len() as u64 }, &[], Some(&mut back)).unwrap();
    assert_eq!(back, data);
    drop(c);
    worker.join().unwrap().unwrap();

    // Real vsock, if this host has a loopback transport (most CI containers do not).
    let port = 20_000 + std::process::id() % 10_000;
    let addr = format!("vsock://1:{port}");
    match addr.parse::<transport::Address>().unwrap().bind() {
        Err(e) => {
            eprintln!("vsock loopback unavailable here ({e}); covered by the socketpair above")
        }
        Ok(l) => {
            drop(l);
            let tmp = tempfile::tempdir().unwrap();
            let lib = lib_dir(tmp.path());
            let exe = compile_c("nvml_basic", tmp.path(), &lib, &["libnvidia-ml.so.1"]);
            let envs = [("VGPU_LOG", "error"), ("VGPU_TOKEN", "vsock-token")];
            let server = Server::start_env(&addr, &["--backend", "sim"], &[], &envs);
            let out = run(&exe, &lib, &server.address, &[("VGPU_TOKEN", "vsock-token")]);
            assert!(out.status.success(), "vsock: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

//! `vgpu install ollama|system` and `vgpu uninstall`: on fake trees, never the real system.
//! Installing twice equals installing once; uninstalling restores every file, symlink and
//! mode byte for byte.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

fn ok(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn ollama_install_twice_equals_once_and_uninstall_restores_the_tree() {
    let t = tempfile::tempdir().unwrap();
    let o = fake_ollama(t.path());
    let lib = fake_dist_lib(t.path(), &all_names());
    let before = tree_listing(&o);

    let out = ok(&vgpu(&["install", "ollama", "--ollama-dir", s(&o), "--lib-dir", s(&lib)], &[]));
    assert!(out.contains("replaced"), "{out}");
    // The SONAME links stay; the files they point at are vgpu's now.
    for (dir, rt, major) in [("cuda_v12", "12.8.90", "12"), ("cuda_v13", "13.0.96", "13")] {
        let d = o.join(dir);
        assert_eq!(
            fs::read_link(d.join(format!("libcudart.so.{major}"))).unwrap().to_str().unwrap(),
            format!("libcudart.so.{rt}")
        );
        for name in
            [format!("libcudart.so.{major}"), format!("libcublas.so.{major}"), format!("libcublasLt.so.{major}")]
        {
            assert_eq!(fs::read(d.join(&name)).unwrap(), fs::read(lib.join(&name)).unwrap(), "{dir}/{name}");
        }
        for name in ["libcuda.so.1", "libnvidia-ml.so.1"] {
            assert_eq!(fs::read(d.join(name)).unwrap(), fs::read(lib.join(name)).unwrap(), "{dir}/{name}");
            assert_eq!(fs::metadata(d.join(name)).unwrap().mode() & 0o777, 0o755);
        }
        assert!(!d.join("libcudart.so.12.8.90").exists() || dir == "cuda_v12");
    }
    // A replaced file keeps its mode (0644 and 0700 in the fake tree).
    assert_eq!(fs::metadata(o.join("cuda_v12/libcudart.so.12.8.90")).unwrap().mode() & 0o777, 0o644);
    assert_eq!(fs::metadata(o.join("cuda_v13/libcublasLt.so.13")).unwrap().mode() & 0o777, 0o700);
    // Nothing outside the CUDA folders changed, and the originals are kept.
    assert_eq!(fs::read(o.join("llama-server")).unwrap(), b"fake llama-server");
    let manifest = fs::read_to_string(o.join(".vgpu-backup/manifest.json")).unwrap();
    assert!(manifest.contains("\"cuda_v13/libcudart.so.13.0.96\""), "{manifest}");
    assert_eq!(fs::read(o.join(".vgpu-backup/files/cuda_v13/libcudart.so.13.0.96")).unwrap(), b"NVIDIA cudart 13.0.96");

    let once = tree_listing(&o);
    let out = ok(&vgpu(&["install", "ollama", "--ollama-dir", s(&o), "--lib-dir", s(&lib)], &[]));
    assert!(!out.contains("replaced") && !out.contains("added"), "a second install changes nothing:\n{out}");
    assert_eq!(tree_listing(&o), once, "install twice == install once");

    let out = ok(&vgpu(&["uninstall", "ollama", "--ollama-dir", s(&o)], &[]));
    assert!(out.contains("restored") && out.contains("removed"), "{out}");
    assert_eq!(tree_listing(&o), before, "uninstall restores the tree byte for byte");
    let out = ok(&vgpu(&["uninstall", "ollama", "--ollama-dir", s(&o)], &[]));
    assert!(out.contains("nothing to undo"), "{out}");
}

#[test]
fn ollama_found_next_to_the_binary_on_path() {
    let t = tempfile::tempdir().unwrap();
    let o = fake_ollama(t.path());
    let lib = fake_dist_lib(t.path(), &all_names());
    fs::set_permissions(t.path().join("ollama/bin/ollama"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("/usr/bin:/bin:{}", t.path().join("ollama/bin").display());
    let out = ok(&vgpu(&["install", "ollama", "--lib-dir", s(&lib)], &[("PATH", &path)]));
    assert!(out.contains(o.to_str().unwrap()), "{out}");
    assert!(o.join(".vgpu-backup/manifest.json").exists());
    ok(&vgpu(&["uninstall", "ollama"], &[("PATH", &path)]));
    assert!(!o.join(".vgpu-backup").exists());
}

/// What an Ollama upgrade extracted over the tree does: a new cudart, the link re-pointed.
fn upgrade(o: &Path) {
    fs::write(o.join("cuda_v13/libcudart.so.13.0.99"), "NVIDIA cudart 13.0.99").unwrap();
    fs::remove_file(o.join("cuda_v13/libcudart.so.13")).unwrap();
    symlink("libcudart.so.13.0.99", o.join("cuda_v13/libcudart.so.13")).unwrap();
}

#[test]
fn ollama_upgrade_then_reinstall_keeps_the_new_originals() {
    let t = tempfile::tempdir().unwrap();
    let o = fake_ollama(&t.path().join("a"));
    let lib = fake_dist_lib(t.path(), &all_names());
    ok(&vgpu(&["install", "ollama", "--ollama-dir", s(&o), "--lib-dir", s(&lib)], &[]));
    upgrade(&o);
    ok(&vgpu(&["install", "ollama", "--ollama-dir", s(&o), "--lib-dir", s(&lib)], &[]));
    assert_eq!(fs::read(o.join("cuda_v13/libcudart.so.13")).unwrap(), fs::read(lib.join("libcudart.so.13")).unwrap());
    // The entry no longer linked (13.0.96) got its original back at once.
    assert_eq!(fs::read(o.join("cuda_v13/libcudart.so.13.0.96")).unwrap(), b"NVIDIA cudart 13.0.96");
    ok(&vgpu(&["uninstall", "ollama", "--ollama-dir", s(&o)], &[]));
    // The result is the upgraded tree as if vgpu had never been there.
    let reference = fake_ollama(&t.path().join("b"));
    upgrade(&reference);
    assert_eq!(tree_listing(&o), tree_listing(&reference));
}

#[test]
fn ollama_install_refuses_libraries_that_are_not_vgpus() {
    let t = tempfile::tempdir().unwrap();
    let o = fake_ollama(t.path());
    let nvidia = t.path().join("nvidia-lib");
    fs::create_dir(&nvidia).unwrap();
    for name in all_names() {
        cc_shared(&nvidia.join(name), name, "int cuInit(unsigned f) { return 100; }\n");
    }
    let before = tree_listing(&o);
    let out = vgpu(&["install", "ollama", "--ollama-dir", s(&o), "--lib-dir", s(&nvidia)], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a vgpu library"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree_listing(&o), before, "nothing touched");
}

#[test]
fn ollama_install_skips_a_folder_vgpu_has_no_runtime_for() {
    let t = tempfile::tempdir().unwrap();
    let o = fake_ollama(t.path());
    let lib = fake_dist_lib(
        t.path(),
        &["libcuda.so.1", "libnvidia-ml.so.1", "libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12"],
    );
    let out = ok(&vgpu(&["install", "ollama", "--ollama-dir", s(&o), "--lib-dir", s(&lib)], &[]));
    assert!(out.contains("skipped cuda_v13"), "{out}");
    assert_eq!(fs::read(o.join("cuda_v13/libcudart.so.13")).unwrap(), b"NVIDIA cudart 13.0.96");
    assert!(!o.join("cuda_v13/libcuda.so.1").exists());
}

/// A fake system: a driver package's `libcuda.so.580.82.07` behind its SONAME link in the
/// multiarch directory, a container image's `/usr/local/nvidia/lib64/libnvidia-ml.so.1`, a
/// 32-bit-style directory that must be left alone.
fn fake_system(root: &Path) {
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    };
    w("etc/ld.so.conf", b"include /etc/ld.so.conf.d/*.conf\n");
    w("etc/ld.so.conf.d/x86_64-linux-gnu.conf", b"/usr/local/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n");
    cc_shared(
        &root.join("usr/lib/x86_64-linux-gnu/libcuda.so.580.82.07"),
        "libcuda.so.1",
        "const char *v = \"NVIDIA 580\";\n",
    );
    symlink("libcuda.so.580.82.07", root.join("usr/lib/x86_64-linux-gnu/libcuda.so.1")).unwrap();
    cc_shared(
        &root.join("usr/local/nvidia/lib64/libnvidia-ml.so.1"),
        "libnvidia-ml.so.1",
        "const char *v = \"NVIDIA nvml\";\n",
    );
    fs::set_permissions(root.join("usr/local/nvidia/lib64/libnvidia-ml.so.1"), fs::Permissions::from_mode(0o644))
        .unwrap();
    w("usr/lib/x86_64-linux-gnu/libz.so.1", b"unrelated");
}

#[test]
fn system_install_twice_equals_once_and_uninstall_restores_the_root() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fake_system(&root);
    let lib = fake_dist_lib(t.path(), &all_names());
    let before = tree_listing(&root);

    let out = ok(&vgpu(&["install", "system", "--root", s(&root), "--lib-dir", s(&lib)], &[]));
    assert!(!out.contains("ldconfig"), "ldconfig is not run under another root:\n{out}");
    let own = root.join("usr/local/lib/vgpu");
    for name in ["libcuda.so.1", "libnvidia-ml.so.1"] {
        assert_eq!(fs::read(own.join(name)).unwrap(), fs::read(lib.join(name)).unwrap());
        // The link-time name (Triton links its launcher with -lcuda).
        assert_eq!(fs::read(own.join(name.trim_end_matches(".1"))).unwrap(), fs::read(lib.join(name)).unwrap());
    }
    assert_eq!(
        fs::read_to_string(root.join("etc/ld.so.conf.d/000-vgpu.conf")).unwrap().lines().last(),
        Some("/usr/local/lib/vgpu")
    );
    // The SONAME link becomes a regular file (ldconfig would re-point a symlink); NVIDIA's
    // versioned file stays.
    let soname = root.join("usr/lib/x86_64-linux-gnu/libcuda.so.1");
    assert!(fs::symlink_metadata(&soname).unwrap().is_file());
    assert_eq!(fs::read(&soname).unwrap(), fs::read(lib.join("libcuda.so.1")).unwrap());
    assert!(
        fs::read(root.join("usr/lib/x86_64-linux-gnu/libcuda.so.580.82.07"))
            .unwrap()
            .windows(6)
            .any(|w| w == b"NVIDIA")
    );
    let nv = root.join("usr/local/nvidia/lib64/libnvidia-ml.so.1");
    assert_eq!(fs::read(&nv).unwrap(), fs::read(lib.join("libnvidia-ml.so.1")).unwrap());
    assert_eq!(fs::metadata(&nv).unwrap().mode() & 0o777, 0o644, "keeps the original's mode");
    assert!(root.join("var/lib/vgpu/system/manifest.json").exists());

    let once = tree_listing(&root);
    ok(&vgpu(&["install", "system", "--root", s(&root), "--lib-dir", s(&lib)], &[]));
    assert_eq!(tree_listing(&root), once, "install twice == install once");

    ok(&vgpu(&["uninstall", "system", "--root", s(&root)], &[]));
    assert_eq!(tree_listing(&root), before, "uninstall restores the root byte for byte");
}

#[test]
fn system_install_without_any_nvidia_library_adds_its_own_directory() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/ld.so.conf"), "include /etc/ld.so.conf.d/*.conf\n").unwrap();
    let lib = fake_dist_lib(t.path(), &all_names());
    let before = tree_listing(&root);
    let out = ok(&vgpu(&["install", "system", "--root", s(&root), "--lib-dir", s(&lib)], &[]));
    assert!(out.contains("000-vgpu.conf"), "{out}");
    assert!(root.join("usr/local/lib/vgpu/libcuda.so.1").is_file());
    ok(&vgpu(&["uninstall", "system", "--root", s(&root)], &[]));
    assert_eq!(tree_listing(&root), before);
}

//! `vgpu install system`: vgpu's `libcuda.so.1` and `libnvidia-ml.so.1` for every program
//! on the machine.
//!
//! * Both are copied to `/usr/local/lib/vgpu`, which `/etc/ld.so.conf.d/000-vgpu.conf` puts
//!   ahead of the other ld.so.conf directories (ldconfig lists a name's copies in
//!   ld.so.conf order, and the loader takes the first).
//! * Wherever the loader's directories already hold a `libcuda.so.1`/`libnvidia-ml.so.1`
//!   (a leftover driver package, `/usr/local/nvidia/lib64` of a container image, which is
//!   often on `LD_LIBRARY_PATH`), that entry is replaced by a **regular file**, the original
//!   kept: `ldconfig` re-points a SONAME *symlink* at the newest `libcuda.so.<version>` in
//!   its directory, so a symlink to vgpu would be undone by the next `ldconfig` run.
//! * Its directory also gets the link-time names (`libcuda.so`, `libnvidia-ml.so`), as a
//!   driver package installs them: Triton (`torch.compile`) builds its launcher with
//!   `-lcuda` in the directories where `ldconfig` lists `libcuda.so.1`.
//! * `ldconfig` is run (only when the root is `/`).

use crate::elf::{self, Origin};
use crate::fsops::{self, Action, Target};
use crate::loader::Loader;
use crate::root::Root;
use std::path::{Path, PathBuf};

pub const OWN_DIR: &str = "/usr/local/lib/vgpu";
pub const CONF_FILE: &str = "/etc/ld.so.conf.d/000-vgpu.conf";
pub const STATE_DIR: &str = "/var/lib/vgpu/system";
pub const LIBRARIES: [&str; 2] = ["libcuda.so.1", "libnvidia-ml.so.1"];
/// Present on a machine with an NVIDIA GPU and driver of its own (a GPU host).
pub const GPU_DEVICE: &str = "/dev/nvidiactl";

/// Directories where containers and drivers put these libraries outside ld.so.conf.
pub const EXTRA_DIRS: &[&str] = &["/usr/local/nvidia/lib64", "/usr/local/nvidia/lib"];

fn rel(p: &str) -> PathBuf {
    PathBuf::from(p.trim_start_matches('/'))
}

/// Existing copies of `name` in the loader's directories (host paths), other than vgpu's own
/// directory, that the loader could use on this machine.
pub fn system_copies(root: &Root, name: &str) -> Vec<PathBuf> {
    let loader = Loader::new(root);
    let own = std::fs::canonicalize(root.join(OWN_DIR)).ok();
    let mut dirs = loader.dirs();
    for d in EXTRA_DIRS {
        let host = root.join(d);
        if host.is_dir() && !dirs.iter().any(|x| same(x, &host)) {
            dirs.push(host);
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        if own.as_ref().is_some_and(|o| std::fs::canonicalize(&d).ok().as_ref() == Some(o)) {
            continue;
        }
        let p = d.join(name);
        if std::fs::symlink_metadata(&p).is_err() {
            continue;
        }
        // A dangling link is replaced too; another architecture's library is left alone.
        if p.exists() && elf::inspect(&p).origin == Origin::WrongArch {
            continue;
        }
        out.push(p);
    }
    out
}

fn same(a: &Path, b: &Path) -> bool {
    std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok()
}

/// `vgpu install system`. Refused on a machine with a GPU of its own unless `force`:
/// `vgpu serve` loads `libcuda.so.1` by name and would get vgpu's instead of the driver.
pub fn install(root: &Root, lib_dir: &Path, force: bool) -> Result<Vec<Action>, String> {
    let mut skipped = Vec::new();
    if !force && root.join(GPU_DEVICE).exists() {
        return Err(format!(
            "this machine has an NVIDIA GPU ({GPU_DEVICE}): vgpu's libcuda.so.1 in place of the driver's would \
             make `vgpu serve` here load vgpu instead of the GPU. Install on clients; for a client program on \
             this machine use LD_LIBRARY_PATH (vgpu env) or `vgpu install ollama`. (--force overrides.)"
        ));
    }
    let mut targets = Vec::new();
    for name in LIBRARIES {
        let src = lib_dir.join(name);
        let info = elf::inspect(&src);
        if !info.is_vgpu() {
            return Err(format!("{} is {}, not a vgpu library", src.display(), info.summary()));
        }
        targets.push(Target { path: rel(OWN_DIR).join(name), library: name.into(), source: src.clone(), mode: 0o755 });
        // `libcuda.so.1` → `libcuda.so`: not a SONAME, so ldconfig leaves it as it is.
        let link_name = name.trim_end_matches(".1");
        targets.push(Target {
            path: rel(OWN_DIR).join(link_name),
            library: name.into(),
            source: src.clone(),
            mode: 0o755,
        });
        for p in system_copies(root, name) {
            // A read-only copy (a driver mounted into a container) is reported, not replaced.
            if p.parent().is_some_and(|d| fsops::writable(d).is_err()) {
                skipped.push(Action { path: p, what: "read-only" });
                continue;
            }
            let r = root.relative(&p).ok_or_else(|| format!("{}: outside {}", p.display(), root.path().display()))?;
            if !targets.iter().any(|t| t.path == r) {
                targets.push(Target { path: r, library: name.into(), source: src.clone(), mode: 0o755 });
            }
        }
    }
    // The ld.so.conf.d file, from a temporary source so that fsops records it like a library.
    let conf_src = std::env::temp_dir().join(format!("vgpu-000-vgpu.conf.{}", std::process::id()));
    std::fs::write(&conf_src, format!("# vgpu: its libcuda.so.1 and libnvidia-ml.so.1 come first\n{OWN_DIR}\n"))
        .map_err(|e| format!("{}: {e}", conf_src.display()))?;
    targets.push(Target { path: rel(CONF_FILE), library: "ld.so.conf".into(), source: conf_src.clone(), mode: 0o644 });
    let created = [rel(OWN_DIR), rel("/etc/ld.so.conf.d"), rel(STATE_DIR)];
    let r = fsops::apply("system", root.path(), &root.join(STATE_DIR), &targets, &created);
    let _ = std::fs::remove_file(&conf_src);
    let mut actions = r?;
    actions.extend(skipped);
    if root.is_system() {
        actions.push(ldconfig()?);
    }
    Ok(actions)
}

/// `vgpu uninstall system`.
pub fn uninstall(root: &Root) -> Result<Vec<Action>, String> {
    let mut actions = fsops::revert(&root.join(STATE_DIR))?;
    if root.is_system() && !actions.is_empty() {
        actions.push(ldconfig()?);
    }
    Ok(actions)
}

fn ldconfig() -> Result<Action, String> {
    for exe in ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"] {
        match std::process::Command::new(exe).output() {
            Ok(o) if o.status.success() => {
                return Ok(Action { path: PathBuf::from(exe), what: "ran" });
            }
            Ok(o) => {
                return Err(format!("{exe} failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
            }
            Err(_) => continue,
        }
    }
    Err("ldconfig not found: run it by hand so the loader cache lists /usr/local/lib/vgpu".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_gpu_host_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("dev")).unwrap();
        std::fs::write(t.path().join("dev/nvidiactl"), b"").unwrap();
        let e = install(&Root::new(t.path()), t.path(), false).unwrap_err();
        assert!(e.contains("vgpu serve"), "{e}");
    }

    #[test]
    fn copies_are_found_once_per_directory() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        let exe = fs::read(std::env::current_exe().unwrap()).unwrap();
        fs::create_dir_all(t.path().join("usr/lib/x86_64-linux-gnu")).unwrap();
        fs::create_dir_all(t.path().join("usr/local/nvidia/lib64")).unwrap();
        fs::create_dir_all(t.path().join("etc")).unwrap();
        fs::write(t.path().join("etc/ld.so.conf"), "/usr/lib/x86_64-linux-gnu\n").unwrap();
        fs::write(t.path().join("usr/lib/x86_64-linux-gnu/libcuda.so.580.82.07"), &exe).unwrap();
        std::os::unix::fs::symlink("libcuda.so.580.82.07", t.path().join("usr/lib/x86_64-linux-gnu/libcuda.so.1"))
            .unwrap();
        fs::write(t.path().join("usr/local/nvidia/lib64/libcuda.so.1"), &exe).unwrap();
        let found = system_copies(&root, "libcuda.so.1");
        assert_eq!(
            found,
            vec![
                t.path().join("usr/lib/x86_64-linux-gnu/libcuda.so.1"),
                t.path().join("usr/local/nvidia/lib64/libcuda.so.1")
            ]
        );
        assert!(system_copies(&root, "libnvidia-ml.so.1").is_empty());
    }
}

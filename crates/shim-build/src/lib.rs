//! Build-script library for the vgpu shims.
//!
//! Each shim's `build.rs` is one call:
//!
//! ```no_run
//! shim_build::Shim {
//!     soname: "libcudart.so.13",
//!     versioned: true,
//!     exports: "libcudart.so.13.exports",
//!     stub_return: "801",
//!     stub_type: "u32",
//!     sources: &["src", "../common"],
//!     ..Default::default()
//! }
//! .build();
//! ```
//!
//! It
//! 1. passes the link arguments that give the cdylib the real library's shape: GNU ld
//!    (`-fuse-ld=bfd`), `-soname`, and for versioned libraries `--default-symver` (every
//!    export tagged `@@<SONAME>`; rust-lld would silently drop versions);
//! 2. scans the shim's sources for the exported names defined by hand (`fn NAME`,
//!    `static NAME`, `static mut NAME`, or a `// shim-build: defines NAME ...` comment) and
//!    writes `$OUT_DIR/stubs.rs` with a not-supported stub for every other exported name
//!    (the shim's `lib.rs` does `include!(concat!(env!("OUT_DIR"), "/stubs.rs"));`);
//! 3. records the configuration and the implemented/stub split in `$OUT_DIR` for the
//!    shared tests (`shim_tests!`, feature `check`) and `docs/coverage.md`.

pub mod coverage;
pub mod exports;
pub mod scan;
pub mod stubs;

#[cfg(feature = "check")]
pub mod check;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use exports::ExportList;

/// Name prefix of the private C ABI between sibling shims (`vgpu_*`, see `include/vgpu.h`).
/// Such exports are allowed on top of the real list and are never stubbed.
pub const PRIVATE_PREFIX: &str = "vgpu_";

/// File name, in `$OUT_DIR`, of the generated stubs.
pub const STUBS_FILE: &str = "stubs.rs";
/// File name, in `$OUT_DIR`, of the recorded configuration (read by the tests).
pub const CONFIG_FILE: &str = "shim-config.txt";
/// File name, in `$OUT_DIR`, of the implemented/stub split (read by the tests).
pub const COVERAGE_FILE: &str = "coverage.tsv";

/// One shim library, as described by its `build.rs`.
#[derive(Clone, Debug, Default)]
pub struct Shim<'a> {
    /// The real library's SONAME, e.g. `libcudart.so.13`; also the version node when
    /// `versioned`.
    pub soname: &'a str,
    /// Whether every export carries the version node `@@<soname>` (cudart, cublas, cublasLt)
    /// or none (libcuda, NVML).
    pub versioned: bool,
    /// The export list: a file name looked up in `crates/abi/exports/`, or a path (absolute,
    /// or relative to the shim package).
    pub exports: &'a str,
    /// Rust expression every function stub returns, e.g. `"801"`.
    pub stub_return: &'a str,
    /// Rust return type of the function stubs, e.g. `"u32"` (all the status enums are
    /// `unsigned int`-sized).
    pub stub_type: &'a str,
    /// Directories (relative to the shim package) whose `.rs` files are scanned for
    /// hand-written definitions; default `["src"]`.
    pub sources: &'a [&'a str],
    /// Exported names that are data objects rather than functions, with their size in bytes.
    /// Unless defined by hand, each becomes a zeroed, 8-byte-aligned
    /// `static mut NAME: shim_support::DataObject<size>`. Every name must be in the list.
    pub data: &'a [(&'a str, usize)],
}

/// The configuration a build records for its tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub package: String,
    /// Rust library name (`shim_cudart13`): the cdylib is `lib<lib>.so`.
    pub lib: String,
    pub soname: String,
    pub versioned: bool,
    /// Absolute path of the export list.
    pub exports: PathBuf,
    /// The export list's path relative to the workspace root (for documents).
    pub exports_rel: String,
    pub stub_return: String,
    pub stub_type: String,
    /// `(name, size)` of data exports.
    pub data: Vec<(String, usize)>,
}

impl Recorded {
    fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "package={}", self.package);
        let _ = writeln!(s, "lib={}", self.lib);
        let _ = writeln!(s, "soname={}", self.soname);
        let _ = writeln!(s, "versioned={}", self.versioned);
        let _ = writeln!(s, "exports={}", self.exports.display());
        let _ = writeln!(s, "exports_rel={}", self.exports_rel);
        let _ = writeln!(s, "stub_return={}", self.stub_return);
        let _ = writeln!(s, "stub_type={}", self.stub_type);
        for (p, n) in &self.data {
            let _ = writeln!(s, "data={p}:{n}");
        }
        s
    }

    /// Parse what [`Shim::build`] wrote to `$OUT_DIR/shim-config.txt`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut r = Recorded {
            package: String::new(),
            lib: String::new(),
            soname: String::new(),
            versioned: false,
            exports: PathBuf::new(),
            exports_rel: String::new(),
            stub_return: String::new(),
            stub_type: String::new(),
            data: Vec::new(),
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once('=').ok_or_else(|| format!("bad config line {line:?}"))?;
            match k {
                "package" => r.package = v.into(),
                "lib" => r.lib = v.into(),
                "soname" => r.soname = v.into(),
                "versioned" => r.versioned = v == "true",
                "exports" => r.exports = v.into(),
                "exports_rel" => r.exports_rel = v.into(),
                "stub_return" => r.stub_return = v.into(),
                "stub_type" => r.stub_type = v.into(),
                "data" => {
                    let (p, n) = v.rsplit_once(':').ok_or_else(|| format!("bad data entry {v:?}"))?;
                    r.data.push((p.into(), n.parse().map_err(|e| format!("bad data size {n:?}: {e}"))?));
                }
                _ => return Err(format!("unknown config key {k:?}")),
            }
        }
        if r.soname.is_empty() || r.lib.is_empty() {
            return Err("config lacks soname or lib".into());
        }
        Ok(r)
    }

    /// Size of the data object `name`, if it is one.
    pub fn data_size(&self, name: &str) -> Option<usize> {
        data_size(self.data.iter().map(|(p, n)| (p.as_str(), *n)), name)
    }
}

fn data_size<'a>(mut data: impl Iterator<Item = (&'a str, usize)>, name: &str) -> Option<usize> {
    data.find(|(n, _)| *n == name).map(|(_, size)| size)
}

/// The workspace root (this crate lives in `<root>/crates/shim-build`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().and_then(Path::parent).unwrap_or(here).to_path_buf()
}

/// Where the committed export lists live.
pub fn exports_dir() -> PathBuf {
    workspace_root().join("crates/abi/exports")
}

/// Resolve [`Shim::exports`]: a bare file name is looked up in `crates/abi/exports/`, then in
/// `../shared/abi/` next to the workspace; anything else is relative to `package_dir`.
pub fn resolve_exports(exports: &str, package_dir: &Path) -> PathBuf {
    let p = Path::new(exports);
    if p.components().count() == 1 {
        let ours = exports_dir().join(p);
        if ours.exists() {
            return ours;
        }
        let shared = workspace_root().join("../shared/abi").join(p);
        if shared.exists() {
            return shared;
        }
        return ours;
    }
    package_dir.join(p)
}

impl Shim<'_> {
    /// Run from a shim's `build.rs`: emit link arguments, generate `$OUT_DIR/stubs.rs` and
    /// the records the tests read. Panics (failing the build) on a missing or bad list.
    pub fn build(&self) {
        let env = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| panic!("shim-build: {k} is not set; call Shim::build from build.rs"))
        };
        let out_dir = PathBuf::from(env("OUT_DIR"));
        let package_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
        let package = env("CARGO_PKG_NAME");
        // The shims keep cargo's default library name: the package name with `_` for `-`.
        let lib = package.replace('-', "_");

        for line in self.link_args() {
            println!("{line}");
        }
        let major = self.soname.rsplit('.').next().unwrap_or_default();
        println!("cargo::rustc-check-cfg=cfg(vgpu_major, values(\"1\", \"12\", \"13\"))");
        println!("cargo::rustc-cfg=vgpu_major=\"{major}\"");

        let list_path = resolve_exports(self.exports, &package_dir);
        if !list_path.starts_with(workspace_root()) {
            println!("cargo::warning=shim-build: using {} (copy it to crates/abi/exports/)", list_path.display());
        }
        println!("cargo::rerun-if-changed={}", list_path.display());
        println!("cargo::rerun-if-changed=build.rs");
        let sources: Vec<&str> = if self.sources.is_empty() { vec!["src"] } else { self.sources.to_vec() };
        for s in &sources {
            println!("cargo::rerun-if-changed={s}");
        }

        let text = std::fs::read_to_string(&list_path)
            .unwrap_or_else(|e| panic!("shim-build: cannot read export list {}: {e}", list_path.display()));
        let list = ExportList::parse(&text, self.soname)
            .unwrap_or_else(|e| panic!("shim-build: {}: {e}", list_path.display()));
        if list.versioned() != self.versioned {
            panic!(
                "shim-build: {} says versioned={} but the list {} {}",
                self.soname,
                self.versioned,
                list_path.display(),
                if list.versioned() { "has version nodes" } else { "has no version node" }
            );
        }

        for (name, _) in self.data {
            if !list.names().contains(*name) {
                panic!("shim-build: data object {name:?} is not in {}", list_path.display());
            }
        }
        let defined =
            scan::scan_dirs(sources.iter().map(|s| package_dir.join(s))).unwrap_or_else(|e| panic!("shim-build: {e}"));
        let plan = stubs::Plan::new(&list, &defined, self.data);
        let code = plan.render(self.soname, &list_path.display().to_string(), self.stub_type, self.stub_return);
        write_if_changed(&out_dir.join(STUBS_FILE), &code);
        write_if_changed(&out_dir.join(COVERAGE_FILE), &plan.render_tsv());

        let root = workspace_root();
        let rec = Recorded {
            package,
            lib,
            soname: self.soname.into(),
            versioned: self.versioned,
            exports_rel: list_path
                .strip_prefix(&root)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| list_path.display().to_string()),
            exports: list_path,
            stub_return: self.stub_return.into(),
            stub_type: self.stub_type.into(),
            data: self.data.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect(),
        };
        write_if_changed(&out_dir.join(CONFIG_FILE), &rec.render());
    }

    /// The `cargo::` lines that set the linker, SONAME and symbol versions.
    pub fn link_args(&self) -> Vec<String> {
        let mut v = vec![
            // rust-lld (the default since Rust 1.90 on x86_64-linux-gnu) has no
            // --default-symver and silently drops version scripts' nodes: use GNU ld.
            "cargo::rustc-cdylib-link-arg=-fuse-ld=bfd".to_owned(),
            format!("cargo::rustc-cdylib-link-arg=-Wl,-soname,{}", self.soname),
        ];
        if self.versioned {
            // Every exported symbol gets the version node named after the SONAME, plus the
            // ABS node symbol itself: exactly NVIDIA's layout.
            v.push("cargo::rustc-cdylib-link-arg=-Wl,--default-symver".to_owned());
        }
        v
    }
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return;
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("shim-build: cannot write {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_args_versioned_and_not() {
        let v = Shim { soname: "libcudart.so.13", versioned: true, ..Default::default() }.link_args();
        assert_eq!(
            v,
            [
                "cargo::rustc-cdylib-link-arg=-fuse-ld=bfd",
                "cargo::rustc-cdylib-link-arg=-Wl,-soname,libcudart.so.13",
                "cargo::rustc-cdylib-link-arg=-Wl,--default-symver"
            ]
        );
        let u = Shim { soname: "libcuda.so.1", ..Default::default() }.link_args();
        assert_eq!(u.len(), 2);
        assert!(u[1].ends_with("-soname,libcuda.so.1"));
    }

    #[test]
    fn recorded_round_trips() {
        let r = Recorded {
            package: "shim-cuda".into(),
            lib: "shim_cuda".into(),
            soname: "libcuda.so.1".into(),
            versioned: false,
            exports: "/x/libcuda.so.1.exports".into(),
            exports_rel: "crates/abi/exports/libcuda.so.1.exports".into(),
            stub_return: "801".into(),
            stub_type: "u32".into(),
            data: vec![("cudbgInjectionPath".into(), 4096), ("cudbgSessionId".into(), 8)],
        };
        let back = Recorded::parse(&r.render()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.data_size("cudbgInjectionPath"), Some(4096));
        assert_eq!(back.data_size("cudbgSessionId"), Some(8));
        assert_eq!(back.data_size("cuInit"), None);
    }

    #[test]
    fn every_committed_list_parses() {
        let dir = exports_dir();
        let Ok(rd) = std::fs::read_dir(&dir) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(soname) = name.strip_suffix(".exports") else { continue };
            let text = std::fs::read_to_string(e.path()).unwrap();
            let list = ExportList::parse(&text, soname).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(list.names().len() > 100, "{name}");
        }
    }
}

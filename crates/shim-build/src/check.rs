//! Shared tests for the shims (feature `check`, used as a dev-dependency): each shim's
//! `tests/exports.rs` is just [`shim_tests!`](crate::shim_tests).
//!
//! * [`exports`]: the built `.so`'s SONAME, defined dynamic symbols, their types and their
//!   version (`@@node`, or none) equal the real library's list exactly: nothing missing,
//!   nothing extra (a leaked `#[no_mangle]` from a dependency fails here). Only `vgpu_*`
//!   (the private ABI between shims) may be added.
//! * [`dlopen`]: the `.so` loads with `RTLD_NOW`, every listed name resolves (`dlvsym` with
//!   the node for versioned libraries), data objects are zeroed, and a stub answers the
//!   API's not-supported code.
//! * [`coverage_doc`]: the library's section of `docs/coverage.md` is current.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{Dyn as _, ElfFile64, FileHeader as _, Sym as _};

use crate::stubs::Plan;
use crate::{ExportList, PRIVATE_PREFIX, Recorded};

/// Expands to the three shared tests of one shim package.
#[macro_export]
macro_rules! shim_tests {
    () => {
        fn __shim_info() -> $crate::check::ShimInfo {
            $crate::check::ShimInfo::load(env!("OUT_DIR"))
        }

        #[test]
        fn exports_match_the_real_library() {
            $crate::check::exports(&__shim_info());
        }

        #[test]
        fn dlopen_resolves_every_name_and_stubs_answer_not_supported() {
            $crate::check::dlopen(&__shim_info());
        }

        #[test]
        fn coverage_doc_is_current() {
            $crate::check::coverage_doc(&__shim_info());
        }
    };
}

/// What a shim's build recorded, plus its export list.
#[derive(Clone, Debug)]
pub struct ShimInfo {
    pub rec: Recorded,
    pub plan: Plan,
    pub list: ExportList,
}

impl ShimInfo {
    /// Read the records [`crate::Shim::build`] left in `out_dir`.
    pub fn load(out_dir: &str) -> Self {
        let out = Path::new(out_dir);
        let read =
            |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_else(|e| panic!("{}: {e}", out.join(f).display()));
        let rec = Recorded::parse(&read(crate::CONFIG_FILE)).unwrap_or_else(|e| panic!("{e}"));
        let plan = Plan::parse_tsv(&read(crate::COVERAGE_FILE)).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&rec.exports).unwrap_or_else(|e| panic!("{}: {e}", rec.exports.display()));
        let list = ExportList::parse(&text, &rec.soname).unwrap_or_else(|e| panic!("{e}"));
        Self { rec, plan, list }
    }

    /// The built cdylib (`lib<lib>.so`) next to the running test: `target/<profile>/deps/`
    /// first (where `cargo test` builds it), else `target/<profile>/`.
    pub fn library_path(&self) -> PathBuf {
        let file = format!("lib{}.so", self.rec.lib);
        let exe = std::env::current_exe().expect("current_exe");
        let deps = exe.parent().expect("test binary has a directory");
        let candidates = [deps.join(&file), deps.parent().map(|p| p.join(&file)).unwrap_or_default()];
        candidates
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .unwrap_or_else(|| panic!("{file} not found in {candidates:?}: is crate-type cdylib set?"))
    }
}

/// Kind of a dynamic symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymKind {
    Func,
    Object,
    Other(u8),
}

/// One defined dynamic symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynSym {
    pub name: String,
    pub kind: SymKind,
    /// `SHN_ABS` (the version node's own symbol).
    pub abs: bool,
    /// Name of its version definition (`None` for unversioned / global).
    pub version: Option<String>,
    /// `name@node` rather than `name@@node`.
    pub hidden: bool,
}

/// A version definition (`.gnu.version_d`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerDef {
    pub index: u16,
    pub flags: u16,
    pub name: String,
}

/// What a shared library exports, as the dynamic loader sees it.
#[derive(Clone, Debug, Default)]
pub struct ElfExports {
    pub soname: Option<String>,
    pub needed: Vec<String>,
    pub verdefs: Vec<VerDef>,
    pub defined: Vec<DynSym>,
}

/// Read SONAME, NEEDED, version definitions and the defined dynamic symbols of `path`.
pub fn read_elf(path: &Path) -> Result<ElfExports, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let err = |e: object::Error| format!("{}: {e}", path.display());
    let file = ElfFile64::<object::Endianness>::parse(&*data).map_err(err)?;
    let endian = file.endian();
    let header = file.elf_header();
    let sections = header.sections(endian, &*data).map_err(err)?;
    let mut out = ElfExports::default();

    if let Some((dyns, link)) = sections.dynamic(endian, &*data).map_err(err)? {
        let strings = sections.strings(endian, &*data, link).map_err(err)?;
        for d in dyns {
            let tag = d.tag32(endian);
            if tag == Some(elf::DT_SONAME) || tag == Some(elf::DT_NEEDED) {
                let s = String::from_utf8_lossy(d.string(endian, strings).map_err(err)?).into_owned();
                if tag == Some(elf::DT_SONAME) {
                    out.soname = Some(s);
                } else {
                    out.needed.push(s);
                }
            }
        }
    }

    if let Some((mut defs, link)) = sections.gnu_verdef(endian, &*data).map_err(err)? {
        let strings = sections.strings(endian, &*data, link).map_err(err)?;
        while let Some((def, mut aux)) = defs.next().map_err(err)? {
            let name = match aux.next().map_err(err)? {
                Some(a) => String::from_utf8_lossy(a.name(endian, strings).map_err(err)?).into_owned(),
                None => String::new(),
            };
            out.verdefs.push(VerDef { index: def.vd_ndx.get(endian), flags: def.vd_flags.get(endian), name });
        }
    }

    let symbols = sections.symbols(endian, &*data, elf::SHT_DYNSYM).map_err(err)?;
    let versions = sections.versions(endian, &*data).map_err(err)?;
    for (i, sym) in symbols.iter().enumerate() {
        if sym.is_undefined(endian) {
            continue;
        }
        let name = String::from_utf8_lossy(sym.name(endian, symbols.strings()).map_err(err)?).into_owned();
        if name.is_empty() || sym.st_type() == elf::STT_SECTION {
            continue;
        }
        let (version, hidden) = match &versions {
            Some(v) => {
                let idx = v.version_index(endian, object::SymbolIndex(i));
                let name = v.version(idx).map_err(err)?.map(|ver| String::from_utf8_lossy(ver.name()).into_owned());
                (name, idx.is_hidden())
            }
            None => (None, false),
        };
        let kind = match sym.st_type() {
            elf::STT_FUNC => SymKind::Func,
            elf::STT_OBJECT => SymKind::Object,
            t => SymKind::Other(t),
        };
        out.defined.push(DynSym { name, kind, abs: sym.st_shndx(endian) == elf::SHN_ABS, version, hidden });
    }
    Ok(out)
}

/// Every way `elf` differs from the real library described by `rec` and `list`.
pub fn verify(rec: &Recorded, list: &ExportList, elf: &ElfExports) -> Vec<String> {
    let mut problems = Vec::new();
    let soname = rec.soname.as_str();
    if elf.soname.as_deref() != Some(soname) {
        problems.push(format!("SONAME is {:?}, want {soname:?}", elf.soname));
    }

    let node = list.node();
    match node {
        Some(node) => {
            let want = vec![
                VerDef { index: 1, flags: elf::VER_FLG_BASE, name: soname.to_owned() },
                VerDef { index: 2, flags: 0, name: node.to_owned() },
            ];
            if elf.verdefs != want {
                problems.push(format!("version definitions are {:?}, want BASE {soname} and node {node}", elf.verdefs));
            }
            match elf.defined.iter().find(|s| s.name == node) {
                Some(s) if s.abs && s.kind == SymKind::Object && s.version.as_deref() == Some(node) && !s.hidden => {}
                Some(s) => problems.push(format!("node symbol {node} is {s:?}, want an ABS OBJECT {node}@@{node}")),
                None if list.has_node_symbol() => problems.push(format!("node symbol {node} is missing")),
                None => {}
            }
        }
        None => {
            if !elf.verdefs.is_empty() {
                problems.push(format!("has version definitions {:?}; the real library has none", elf.verdefs));
            }
        }
    }

    let mut seen = BTreeSet::new();
    let mut extra = Vec::new();
    for s in &elf.defined {
        if Some(s.name.as_str()) == node {
            continue;
        }
        let listed = list.names().contains(&s.name);
        if !listed && !s.name.starts_with(PRIVATE_PREFIX) {
            extra.push(s.name.clone());
            continue;
        }
        seen.insert(s.name.clone());
        match (node, &s.version) {
            (Some(n), Some(v)) if v == n && !s.hidden => {}
            (Some(n), v) => {
                problems.push(format!("{} has version {v:?} (hidden: {}), want {}@@{n}", s.name, s.hidden, s.name))
            }
            (None, None) => {}
            (None, Some(v)) => problems.push(format!("{} has version {v}, want none", s.name)),
        }
        if listed {
            let want = if rec.data_size(&s.name).is_some() { SymKind::Object } else { SymKind::Func };
            if s.kind != want {
                problems.push(format!("{} is {:?}, want {want:?}", s.name, s.kind));
            }
        }
    }
    let missing: Vec<&String> = list.names().iter().filter(|n| !seen.contains(*n)).collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{} listed names are not exported: {}",
            missing.len(),
            abbreviate(missing.iter().map(|s| s.as_str()))
        ));
    }
    if !extra.is_empty() {
        problems.push(format!(
            "{} exported names are not in the real library (a #[no_mangle] item leaked, or a list out of date): {}",
            extra.len(),
            abbreviate(extra.iter().map(|s| s.as_str()))
        ));
    }
    problems
}

fn abbreviate<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.len() <= 40 { v.join(" ") } else { format!("{} ... and {} more", v[..40].join(" "), v.len() - 40) }
}

/// The export test: panics listing every difference from the real library.
pub fn exports(info: &ShimInfo) {
    let path = info.library_path();
    let elf = read_elf(&path).unwrap_or_else(|e| panic!("{e}"));
    let problems = verify(&info.rec, &info.list, &elf);
    assert!(
        problems.is_empty(),
        "{} differs from the real {} (list {}):\n  {}",
        path.display(),
        info.rec.soname,
        info.rec.exports_rel,
        problems.join("\n  ")
    );
    // The split the build recorded covers exactly the list.
    let planned: BTreeSet<&str> = info
        .plan
        .implemented
        .iter()
        .chain(&info.plan.stubs)
        .map(String::as_str)
        .chain(info.plan.data.iter().map(|(n, _)| n.as_str()))
        .collect();
    let listed: BTreeSet<&str> = info.list.names().iter().map(String::as_str).collect();
    assert_eq!(planned, listed, "coverage records disagree with the list: rebuild");
}

/// The loader test: `dlopen` with `RTLD_NOW`, every name resolvable (with its version), data
/// objects zeroed, one stub called.
pub fn dlopen(info: &ShimInfo) {
    let path = info.library_path();
    let lib = unsafe { libloading::os::unix::Library::open(Some(&path), libc::RTLD_NOW | libc::RTLD_LOCAL) }
        .unwrap_or_else(|e| panic!("dlopen {}: {e}", path.display()));

    if let Some(stub) = info.plan.stubs.iter().find(|n| !n.starts_with('_')).or(info.plan.stubs.first()) {
        let want = parse_int(&info.rec.stub_return)
            .unwrap_or_else(|| panic!("stub_return {:?} is not an integer literal", info.rec.stub_return));
        // SAFETY: generated stubs take no arguments and return a 32-bit status.
        let f = unsafe { lib.get::<unsafe extern "C" fn() -> u32>(stub.as_bytes()) }
            .unwrap_or_else(|e| panic!("{stub}: {e}"));
        for _ in 0..2 {
            let got = unsafe { f() };
            assert_eq!(got, want as u32, "stub {stub} returned {got}, want {}", info.rec.stub_return);
        }
    }

    let handle = lib.into_raw();
    let node = info.list.node().map(|n| CString::new(n).unwrap());
    let mut unresolved = Vec::new();
    for name in info.list.names() {
        let c = CString::new(name.as_str()).unwrap();
        // SAFETY: a handle from dlopen and NUL-terminated names.
        let p = unsafe {
            match &node {
                Some(n) => libc::dlvsym(handle, c.as_ptr(), n.as_ptr()),
                None => libc::dlsym(handle, c.as_ptr()),
            }
        };
        if p.is_null() {
            unresolved.push(name.as_str());
            continue;
        }
        if let Some((_, size)) = info.plan.data.iter().find(|(n, _)| n == name) {
            // SAFETY: the symbol is our zero-initialised static of `size` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, *size) };
            assert!(bytes.iter().all(|b| *b == 0), "data object {name} is not zeroed");
        }
    }
    if let Some(n) = &node {
        // A version that does not exist must not resolve (catches unversioned exports, which
        // glibc would accept for any version only when the library has no version info).
        let any = info.list.names().iter().next().unwrap();
        let c = CString::new(any.as_str()).unwrap();
        let wrong = CString::new(format!("{}.0", n.to_str().unwrap())).unwrap();
        let p = unsafe { libc::dlvsym(handle, c.as_ptr(), wrong.as_ptr()) };
        assert!(p.is_null(), "{any} resolved with a bogus version");
    }
    // SAFETY: closing the handle we opened; nothing from it is used afterwards.
    drop(unsafe { libloading::os::unix::Library::from_raw(handle) });
    assert!(
        unresolved.is_empty(),
        "{} names do not resolve{}: {}",
        unresolved.len(),
        node.as_ref().map(|n| format!(" with version {}", n.to_str().unwrap())).unwrap_or_default(),
        abbreviate(unresolved.into_iter())
    );
}

/// An integer literal, with an optional type suffix (`801`, `801u32`, `0x10`, `-1i32`).
fn parse_int(s: &str) -> Option<i64> {
    let mut s = s.trim().replace('_', "");
    for suffix in ["u32", "i32", "u64", "i64", "usize", "isize"] {
        if let Some(t) = s.strip_suffix(suffix) {
            s = t.to_owned();
        }
    }
    if let Some(h) = s.strip_prefix("0x") { i64::from_str_radix(h, 16).ok() } else { s.parse().ok() }
}

/// The document test: this library's section of `docs/coverage.md` equals what its build
/// recorded (`VGPU_BLESS=1` rewrites it).
pub fn coverage_doc(info: &ShimInfo) {
    let section = crate::coverage::section(&info.rec, &info.plan);
    if let Err(e) = crate::coverage::check_or_bless(&info.rec.soname, &info.rec.package, &section) {
        panic!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check the checker against a real NVIDIA library (never committed):
    /// `VGPU_REAL_LIB=/path/libcublasLt.so.12 cargo test -p shim-build --features check -- --ignored`
    #[test]
    #[ignore]
    fn real_library_matches_its_list() {
        let Ok(path) = std::env::var("VGPU_REAL_LIB") else { return };
        let path = PathBuf::from(path);
        let soname = path.file_name().unwrap().to_string_lossy().into_owned();
        let list_path = crate::exports_dir().join(format!("{soname}.exports"));
        let list = ExportList::parse(&std::fs::read_to_string(&list_path).unwrap(), &soname).unwrap();
        let rec = Recorded {
            package: "real".into(),
            lib: "real".into(),
            soname: soname.clone(),
            versioned: list.versioned(),
            exports: list_path,
            exports_rel: String::new(),
            stub_return: "0".into(),
            stub_type: "u32".into(),
            data: Vec::new(),
        };
        let elf = read_elf(&path).unwrap();
        let problems = verify(&rec, &list, &elf);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn parse_int_forms() {
        assert_eq!(parse_int("801"), Some(801));
        assert_eq!(parse_int("0x10"), Some(16));
        assert_eq!(parse_int("-1"), Some(-1));
        assert_eq!(parse_int("801u32"), Some(801));
        assert_eq!(parse_int("FOO"), None);
    }

    #[test]
    fn verify_reports_differences() {
        let list = ExportList::parse("libx.so.13\na@@libx.so.13\nb@@libx.so.13\n", "libx.so.13").unwrap();
        let rec = Recorded {
            package: "p".into(),
            lib: "p".into(),
            soname: "libx.so.13".into(),
            versioned: true,
            exports: PathBuf::new(),
            exports_rel: String::new(),
            stub_return: "1".into(),
            stub_type: "u32".into(),
            data: vec![],
        };
        let sym = |name: &str, version: Option<&str>| DynSym {
            name: name.into(),
            kind: SymKind::Func,
            abs: false,
            version: version.map(Into::into),
            hidden: false,
        };
        let good = ElfExports {
            soname: Some("libx.so.13".into()),
            needed: vec![],
            verdefs: vec![
                VerDef { index: 1, flags: elf::VER_FLG_BASE, name: "libx.so.13".into() },
                VerDef { index: 2, flags: 0, name: "libx.so.13".into() },
            ],
            defined: vec![
                sym("a", Some("libx.so.13")),
                sym("b", Some("libx.so.13")),
                sym("vgpu_private", Some("libx.so.13")),
                DynSym {
                    name: "libx.so.13".into(),
                    kind: SymKind::Object,
                    abs: true,
                    version: Some("libx.so.13".into()),
                    hidden: false,
                },
            ],
        };
        assert_eq!(verify(&rec, &list, &good), Vec::<String>::new());

        let mut bad = good.clone();
        bad.soname = Some("libfoo.so".into());
        bad.defined[1] = sym("b", None);
        bad.defined.push(sym("rust_leak", Some("libx.so.13")));
        bad.defined.remove(0);
        let p = verify(&rec, &list, &bad);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(p[0].contains("SONAME"));
        assert!(p.iter().any(|s| s.contains("b has version None")));
        assert!(p.iter().any(|s| s.contains("not exported: a")));
        assert!(p.iter().any(|s| s.contains("rust_leak")));
    }
}
